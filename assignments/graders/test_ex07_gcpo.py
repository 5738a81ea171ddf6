"""Exercise 07: GCPO's critical tokens (Eq. 6), dynamic advantage weight (Eq. 7) and loss on the critical tokens
(Eq. 8) (gcpo.py critical_tokens, dynamic_weight, gcpo_loss; assignments/ex07.md). The helpers local_mean,
entropy_gradient and group_similarity are given."""
import math

import pytest
import torch

D = torch.float64
GRID = (4, 5)
T = 20


def setup(seed=0, P=2, G=3):
    g = torch.Generator().manual_seed(seed)
    ent = torch.rand(P * G, T, generator=g, dtype=D) * 3
    sim = torch.rand(P, T, generator=g, dtype=D)
    sim[0, 12] = sim[0, 15]  # a tie
    return ent, sim


def kit_entropy_gradient(ent):
    """The given helper, from the kit's gcpo.py (not the graded tree's copy)."""
    import gcpo

    return gcpo.entropy_gradient(ent)


def expected_sets(gcpo, ent, sim, frac, highest=False):
    """Independent selection with Python sorts: (init, grad, low) as lists of position sets per row."""
    B = ent.shape[0]
    k = int(T * frac)
    lo, hi = k, min(k + int(T * 0.8), T)
    grad = kit_entropy_gradient(ent.view(B, *GRID)).view(B, T).tolist()
    G = B // sim.shape[0]
    out = []
    for b in range(B):
        init = set(range(k))
        window = sorted(range(lo, hi), key=lambda t: (-grad[b][t], t))
        gsel = set(window[:k])
        s = sim[b // G].tolist()
        rest = sorted((t for t in range(T) if t not in init | gsel), key=lambda t: (-s[t] if highest else s[t], t))
        out.append((init, gsel, set(rest[:k])))
    return out


def as_sets(masks):
    return [tuple(set(torch.nonzero(masks[j, b]).flatten().tolist()) for j in range(3)) for b in range(masks.shape[1])]


@pytest.mark.points(2)
def test_critical_sets_sizes_and_disjoint(gcpo):
    """(3, B, T) bool: initial, entropy-gradient, low-similarity sets, k = int(frac·T) tokens each, disjoint"""
    ent, sim = setup()
    m = gcpo.critical_tokens(ent, sim, GRID, 0.15)
    assert m.shape == (3, 6, T) and m.dtype == torch.bool, \
        f"critical_tokens returns a (3, B, T) bool tensor, got {tuple(m.shape)} {m.dtype}"
    k = int(0.15 * T)
    counts = m.sum(-1)
    assert (counts == k).all(), f"each set holds k = int(frac·T) = {k} tokens per image, got {counts.tolist()}"
    assert (m.sum(0) <= 1).all(), "the sets overlap: the low-similarity set must skip tokens already chosen by the " \
                                  "initial and entropy-gradient sets"


@pytest.mark.points(1)
def test_initial_tokens(gcpo):
    """the initial set is the first k tokens of every image"""
    ent, sim = setup(1)
    m = gcpo.critical_tokens(ent, sim, GRID, 0.2)
    k = int(0.2 * T)
    assert m[0, :, :k].all() and not m[0, :, k:].any(), f"the initial set must be exactly positions 0..{k - 1}"


@pytest.mark.points(2)
def test_entropy_gradient_tokens(gcpo):
    """the entropy-gradient set: the k largest |∇Ē| inside the window [k, k + int(0.8T)), ties to the lower position"""
    ent, sim = setup(2)
    got = as_sets(gcpo.critical_tokens(ent, sim, GRID, 0.15))
    want = expected_sets(gcpo, ent, sim, 0.15)
    k = int(0.15 * T)
    for (_, g, _), (_, w, _) in zip(got, want):
        if any(t < k for t in g):
            raise AssertionError("the entropy-gradient set includes the first k tokens: its window is "
                                 "[k, k + int(0.8·T))")
        if g != w:
            raise AssertionError(f"entropy-gradient set {sorted(g)}, expected {sorted(w)}: the LARGEST gradients of "
                                 f"the local-mean entropy (entropy_gradient) inside the window")


@pytest.mark.points(2)
def test_low_similarity_tokens(gcpo):
    """the low-similarity set: the k lowest group similarities among the remaining tokens, ties to the lower position"""
    ent, sim = setup(3)
    got = as_sets(gcpo.critical_tokens(ent, sim, GRID, 0.15))
    want = expected_sets(gcpo, ent, sim, 0.15)
    high = expected_sets(gcpo, ent, sim, 0.15, highest=True)
    if [x[2] for x in got] == [x[2] for x in high]:
        raise AssertionError("the similarity set takes the HIGHEST similarities: critical tokens are the ones "
                             "where the group's images differ (lowest similarity)")
    for b, ((_, _, l), (_, _, w)) in enumerate(zip(got, want)):
        if l != w:
            raise AssertionError(f"image {b}: low-similarity set {sorted(l)}, expected {sorted(w)} (the k lowest "
                                 f"sim of its group among tokens not already chosen)")


@pytest.mark.points(2)
def test_dynamic_weight_values(gcpo):
    """w_n = 1/(n+1) Σ_{t≤n} exp(clip(log π_θ − log π_ref, −c, c)): a running (causal) mean over positions"""
    logp = torch.tensor([[-1.0, -2.0, -0.5, -3.0]], dtype=D)
    ref = torch.tensor([[-1.5, -1.0, -0.5, -0.5]], dtype=D)
    c = 1.0
    e = [math.exp(max(-c, min(c, a - b))) for a, b in zip(logp[0].tolist(), ref[0].tolist())]
    want = [sum(e[: n + 1]) / (n + 1) for n in range(4)]
    got = gcpo.dynamic_weight(logp, ref, c)[0].tolist()
    assert len(got) == 4, "the weight has shape (B, T)"
    if all(abs(g - sum(e[: n + 1])) < 1e-9 for n, g in enumerate(got)):
        raise AssertionError("the weight is a running SUM: divide by n + 1 (a running mean)")
    e_rev = [math.exp(max(-c, min(c, b - a))) for a, b in zip(logp[0].tolist(), ref[0].tolist())]
    if all(abs(g - sum(e_rev[: n + 1]) / (n + 1)) < 1e-9 for n, g in enumerate(got)):
        raise AssertionError("the ratio is reversed: exp(log π_θ − log π_ref), the policy over the reference")
    e_nc = [math.exp(a - b) for a, b in zip(logp[0].tolist(), ref[0].tolist())]
    if all(abs(g - sum(e_nc[: n + 1]) / (n + 1)) < 1e-9 for n, g in enumerate(got)):
        raise AssertionError("the log-ratio is not clipped to [−c, c] before the exp")
    if all(abs(g - sum(e) / 4) < 1e-9 for g in got):
        raise AssertionError("the weight averages over ALL positions: w_n averages positions t ≤ n only (cumsum)")
    assert all(abs(g - w) < 1e-9 for g, w in zip(got, want)), f"expected w = {want}, got {got}"


@pytest.mark.points(1)
def test_dynamic_weight_detached(gcpo):
    """detach=True (the paper, default): no gradient through w; detach=False (the release) keeps it in the graph"""
    logp = torch.tensor([[-1.0, -2.0, -0.5]], dtype=D, requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0, -0.5]], dtype=D)
    w = gcpo.dynamic_weight(logp, ref, 1.0)
    assert not w.requires_grad, "the GCPO weight is not detached: with detach=True, w is a constant of the update " \
                                "(tokens before a critical one would otherwise get gradient)"
    w2 = gcpo.dynamic_weight(logp, ref, 1.0, detach=False)
    assert w2.requires_grad, "detach=False (the release) must keep the weight in the graph"


@pytest.mark.points(1.5)
def test_gcpo_loss(gcpo, exact_k3):
    """the loss is the mean over the CRITICAL tokens of −min(ρ·A·w, clip(ρ)·A·w) + β·k3"""
    mod = exact_k3(gcpo)
    logp = torch.tensor([[-1.0, -2.0, -0.5, -1.0], [-0.3, -1.0, -2.0, -1.5]], dtype=D, requires_grad=True)
    ref = logp.detach() + torch.tensor([[0.1, -0.2, 0.0, 0.3], [0.2, 0.0, -0.1, 0.1]], dtype=D)
    adv = torch.tensor([1.0, -2.0], dtype=D)
    mask = torch.tensor([[True, False, True, False], [False, False, True, True]])
    w = torch.tensor([[1.0, 2.0, 0.5, 1.0], [1.5, 1.0, 1.0, 0.8]], dtype=D)
    loss, stats = mod.gcpo_loss(logp, logp.detach(), ref, adv, mask, w, 0.2, 0.1)
    d = ref - logp.detach()
    per = -adv[:, None] * w + 0.1 * (d.exp() - d - 1)
    want = per[mask].mean().item()
    if abs(loss.item() - per.mean().item()) < 1e-9:
        raise AssertionError("the loss averages over all tokens: it is the mean over the critical tokens (mask)")
    if abs(loss.item() - (-adv[:, None] + 0.1 * (d.exp() - d - 1))[mask].mean().item()) < 1e-9:
        raise AssertionError("the dynamic weight is missing: the token advantage is A·w")
    assert abs(loss.item() - want) < 1e-9, f"on-policy GCPO loss should be {want:.6f}, got {loss.item():.6f}"
    loss.backward()
    assert (logp.grad[~mask] == 0).all(), "non-critical tokens must get no gradient"


@pytest.mark.points(0.5)
def test_gcpo_clipfrac(gcpo, exact_k3):
    """stats['clipfrac'] is over the CRITICAL tokens: the fraction of them whose ratio is outside [1 − ε, 1 + ε]"""
    mod = exact_k3(gcpo)
    rho = torch.tensor([[1.5, 1.0, 1.0, 0.5], [1.0, 1.3, 1.0, 1.0]], dtype=D)
    mask = torch.tensor([[True, True, False, False], [False, True, True, True]])
    logp = torch.zeros(2, 4, dtype=D, requires_grad=True)
    _, stats = mod.gcpo_loss(logp, -rho.log(), None, torch.tensor([1.0, -1.0], dtype=D), mask, torch.ones(2, 4, dtype=D),
                             0.2, 0.0)
    got = float(stats["clipfrac"])
    if abs(got - 3 / 8) < 1e-6:
        raise AssertionError("clipfrac is over all tokens: it is the fraction of the critical tokens (mask) whose "
                             "ratio is clipped")
    assert abs(got - 2 / 5) < 1e-6, f"clipfrac over the critical tokens should be 2/5 here, got {got}"
