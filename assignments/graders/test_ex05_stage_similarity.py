"""Exercise 05: STAGE's similarity-aware advantages: Sim (Eqs. 5–6), the mask M (Eq. 7), Ã = M·A (Eq. 8)
(stage.py similarity, advantage_mask, masked_advantages; assignments/ex05.md)."""
import math

import pytest
import torch

D = torch.float64


def cos(u, v):
    return sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))


def sim_loops(q, adv, *, strict=False, self_cos=False, across=False):
    """Independent reference (and its usual mistakes): q nested lists (P, G, T, C), adv (P, G)."""
    P, G, T = len(q), len(q[0]), len(q[0][0])
    flat = [(p, i) for p in range(P) for i in range(G)]
    out = [[[0.0] * T for _ in range(G)] for _ in range(P)]
    for p in range(P):
        for i in range(G):
            for t in range(T):
                pool = flat if across else [(p, j) for j in range(G)]
                S = [(pp, j) for pp, j in pool if (adv[p][i] * adv[pp][j] < 0 if strict else adv[p][i] * adv[pp][j] <= 0)]
                if not S:
                    out[p][i][t] = 1.0
                    continue
                vals = [(cos(q[p][i][t], q[pp][j][t]) if (pp, j) != (p, i) or self_cos else 0.0) for pp, j in S]
                out[p][i][t] = sum(vals) / len(vals)
    return torch.tensor(out, dtype=D)


def example():
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 4, 3, 5, generator=g, dtype=D)
    q[0, 1] = 2.5 * q[0, 0]  # a scaled copy: cosine 1, dot product not
    adv = torch.tensor([[1.0, -1.0, 0.0, 0.5], [0.3, 0.7, 1.2, -2.0]], dtype=D)
    return q, adv


@pytest.mark.points(4)
def test_similarity_worked_example(stage):
    """Sim_i,t = mean cosine to the SAME group's samples j with A_i·A_j ≤ 0 (cos(i, i) := 0; empty set -> 1)"""
    q, adv = example()
    got = stage.similarity(q, adv)
    ql, al = q.tolist(), adv.tolist()
    assert got.shape == (2, 4, 3), f"Sim has shape (P, G, T) = (2, 4, 3), got {tuple(got.shape)}"
    checks = [
        (sim_loops(ql, al, across=True), "similarity compared samples across groups: only the same group's samples "
                                         "j count (the einsum over G inside each prompt)"),
        (sim_loops(ql, al, strict=True), "the opposite-advantage set uses A_i·A_j < 0: it is A_i·A_j ≤ 0 (samples "
                                         "with A = 0 belong to every set)"),
        (sim_loops(ql, al, self_cos=True), "cos(i, i) = 1 was counted: set it to 0 (i is in its own set only when "
                                           "A_i = 0, and then contributes 0)"),
    ]
    want = sim_loops(ql, al)
    if not torch.allclose(got, want, atol=1e-9):
        for wrong, message in checks:
            if torch.allclose(got, wrong, atol=1e-9):
                raise AssertionError(message)
        qs = q.clone()
        qs[0, 1] = q[0, 0]
        if not torch.allclose(stage.similarity(qs, adv), got, atol=1e-9):
            raise AssertionError("similarity depends on the embeddings' norms: use cosines (normalise q over C)")
        raise AssertionError(f"Sim differs from Eqs. 5–6 (first group: expected {want[0, :, 0].tolist()}, got "
                             f"{got[0, :, 0].tolist()} at t = 0)")


@pytest.mark.points(1)
def test_similarity_empty_set(stage):
    """a sample with no opposite-advantage sample in its group gets Sim = 1"""
    g = torch.Generator().manual_seed(4)
    q = torch.randn(1, 3, 2, 4, generator=g, dtype=D)
    adv = torch.tensor([[1.0, 2.0, 0.5]], dtype=D)  # all positive: every set is empty
    got = stage.similarity(q, adv)
    assert torch.isfinite(got).all(), "an empty opposite-advantage set gave NaN: define Sim := 1 there (no 0/0)"
    assert torch.allclose(got, torch.ones_like(got)), f"an empty set gives Sim := 1, got {got.flatten().tolist()}"


@pytest.mark.points(2)
def test_mask(stage):
    """M = Norm(1 − Sim) = clip((1 − Sim)/2, 0, 1): Sim = 1 -> 0, Sim = 0 -> 0.5, Sim = −1 -> 1"""
    sim = torch.tensor([[[1.0, 0.0, -1.0, 0.5, -0.2]]], dtype=D)
    got = stage.advantage_mask(sim)
    want = torch.tensor([[[0.0, 0.5, 1.0, 0.25, 0.6]]], dtype=D)
    if torch.allclose(got, 1 - sim):
        raise AssertionError("the mask is 1 − Sim without the normalisation: M = clip((1 − Sim)/2, 0, 1) in [0, 1]")
    if torch.allclose(got, sim.clamp(0, 1)) or torch.allclose(got, (1 + sim) / 2):
        raise AssertionError("the mask grows with similarity: tokens SHARED with opposite-advantage samples "
                             "(high Sim) must get LESS gradient, M = (1 − Sim)/2")
    assert torch.allclose(got, want, atol=1e-12), f"expected M = {want.flatten().tolist()}, got {got.flatten().tolist()}"


@pytest.mark.points(2)
def test_masked_advantages(stage):
    """Ã = M·A broadcast over tokens (P, G, T); release=True rescales per group by G·T / (Σ_group M + 1e-6)"""
    adv = torch.tensor([[1.0, -2.0], [0.5, 0.0]], dtype=D)
    mask = torch.tensor([[[1.0, 0.5, 0.0], [0.2, 0.2, 0.2]], [[1.0, 1.0, 1.0], [0.0, 0.5, 0.5]]], dtype=D)
    got = stage.masked_advantages(adv, mask)
    assert got.shape == (2, 2, 3), f"Ã has shape (P, G, T), got {tuple(got.shape)}"
    assert torch.allclose(got, adv[..., None] * mask, atol=1e-12), "Ã = M·A: each token's mask times its image's A"
    rel = stage.masked_advantages(adv, mask, release=True)
    want = adv[..., None] * mask * 6 / (mask.sum(dim=(1, 2), keepdim=True) + 1e-6)
    whole = adv[..., None] * mask * 6 / (mask.sum() + 1e-6)
    if torch.allclose(rel, whole, atol=1e-9):
        raise AssertionError("release normalisation summed M over the whole batch: it is per group (Σ over G, T)")
    assert torch.allclose(rel, want, atol=1e-9), \
        "release=True: Ã = M·A·G·T / (Σ_group M + 1e-6), whose token mean over a group is Σ M·A / (Σ M + 1e-6)"
