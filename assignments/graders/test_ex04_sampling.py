"""Exercise 04: the sampling distribution, CFG on the logits then temperature, top-k and top-p
(common/sampling.py log_probs; assignments/ex04.md)."""
import math

import pytest
import torch

D = torch.float64


def softmax(xs):
    m = max(x for x in xs if x != -math.inf)
    e = [math.exp(x - m) if x != -math.inf else 0.0 for x in xs]
    s = sum(e)
    return [v / s for v in e]


LC = [2.0, 1.0, 0.5, -1.0, 0.0]  # conditional logits
LU = [1.0, 1.5, 0.5, 0.0, -0.5]  # unconditional logits


def t(xs):
    return torch.tensor([xs], dtype=D)


def probs(lp):
    return lp.exp()[0].tolist()


@pytest.mark.points(1)
def test_conditional_only(sampling):
    """without CFG (no uncond, or s = 1) and at temperature 1: log-softmax of the conditional logits"""
    lp = sampling.log_probs(t(LC))
    assert lp.shape == (1, 5), f"log-probabilities keep the logits' shape (..., V), got {tuple(lp.shape)}"
    want = softmax(LC)
    assert all(abs(a - b) < 1e-6 for a, b in zip(probs(lp), want)), \
        "without CFG the distribution is softmax(l_c): log-softmax, not softmax or raw logits?"
    lp1 = sampling.log_probs(t(LC), t(LU), cfg_scale=1.0)
    assert all(abs(a - b) < 1e-6 for a, b in zip(probs(lp1), want)), "s = 1 must give the conditional distribution"


@pytest.mark.points(3)
def test_cfg_on_logits(sampling):
    """CFG combines the LOGITS: l = l_u + s·(l_c − l_u), then softmax"""
    s = 3.0
    lp = sampling.log_probs(t(LC), t(LU), cfg_scale=s)
    got = probs(lp)
    want = softmax([u + s * (c - u) for c, u in zip(LC, LU)])
    swapped = softmax([c + s * (u - c) for c, u in zip(LC, LU)])
    pc, pu = softmax(LC), softmax(LU)
    on_probs = [u + s * (c - u) for c, u in zip(pc, pu)]
    if all(abs(a - b) < 1e-6 for a, b in zip(got, swapped)):
        raise AssertionError("conditional and unconditional logits swapped: l = l_u + s·(l_c − l_u)")
    clamped = [max(x, 1e-12) for x in on_probs]
    clamped = [x / sum(clamped) for x in clamped]
    if any(not math.isfinite(x) for x in got) or min(got) < 0 \
            or any(all(abs(a - b) < 1e-6 for a, b in zip(got, w)) for w in (on_probs, clamped)):
        raise AssertionError("CFG applied to probabilities: it combines the raw logits, l_u + s·(l_c − l_u), "
                             "before the softmax")
    assert abs(sum(got) - 1) < 1e-6, "the result must be normalised log-probabilities (log-softmax at the end)"
    assert all(abs(a - b) < 1e-6 for a, b in zip(got, want)), \
        f"CFG with s = {s}: expected p = {[round(x, 5) for x in want]}, got {[round(x, 5) for x in got]}"


@pytest.mark.points(1)
def test_temperature(sampling):
    """temperature divides the guided logits (τ < 1 sharpens); τ = 0 is greedy (a point mass on the argmax)"""
    for tau in (0.5, 2.0):
        got = probs(sampling.log_probs(t(LC), t(LU), cfg_scale=2.0, temperature=tau))
        want = softmax([(u + 2 * (c - u)) / tau for c, u in zip(LC, LU)])
        inverse = softmax([(u + 2 * (c - u)) * tau for c, u in zip(LC, LU)])
        if all(abs(a - b) < 1e-6 for a, b in zip(got, inverse)):
            raise AssertionError("temperature multiplies the logits: divide them by τ (τ < 1 sharpens)")
        assert all(abs(a - b) < 1e-6 for a, b in zip(got, want)), \
            f"temperature {tau}: p ∝ exp(l/τ) with l the guided logits; expected {want}, got {got}"
    greedy = probs(sampling.log_probs(t(LC), temperature=0.0))
    assert greedy == [1.0, 0.0, 0.0, 0.0, 0.0], f"temperature 0 is greedy (all mass on the argmax), got {greedy}"


@pytest.mark.points(2)
def test_top_k(sampling):
    """top-k keeps the k most likely tokens of the GUIDED distribution (others −inf) and renormalises"""
    s = 3.0
    guided = [u + s * (c - u) for c, u in zip(LC, LU)]  # [4, 0, 0.5, -3, 1]: top-2 = tokens 0, 4 (l_c: 0, 1)
    for k in (1, 2, 3):
        lp = sampling.log_probs(t(LC), t(LU), cfg_scale=s, top_k=k)
        kept = [i for i, v in enumerate(lp[0].tolist()) if v != -math.inf]
        order = sorted(range(5), key=lambda i: -guided[i])[:k]
        by_cond = sorted(range(5), key=lambda i: -LC[i])[:k]
        if sorted(kept) == sorted(by_cond) and sorted(order) != sorted(by_cond):
            raise AssertionError("top-k chosen on the conditional logits: filter the guided logits (after CFG)")
        assert len(kept) == k, f"top-k = {k} must keep {k} tokens here (no ties at the k-th value; the rest −inf), " \
                               f"kept {len(kept)}"
        assert sorted(kept) == sorted(order), f"top-k = {k} must keep tokens {sorted(order)}, kept {sorted(kept)}"
        want = softmax([g if i in order else -math.inf for i, g in enumerate(guided)])
        assert all(abs(a - b) < 1e-6 for a, b in zip(probs(lp), want)), "top-k must renormalise over the kept tokens"
    lp = sampling.log_probs(t(LC), t(LU), cfg_scale=s, top_k=0)
    assert torch.isfinite(lp).all(), "top_k = 0 means no filtering"


@pytest.mark.points(2)
def test_top_p(sampling):
    """top-p keeps the most likely tokens until their mass exceeds p (strictly), the crossing token included"""
    logits = [math.log(x) for x in (0.1, 0.4, 0.3, 0.15, 0.05)]  # sorted: 0.4, 0.3, 0.15, 0.1, 0.05
    cases = {0.5: [1, 2], 0.69: [1, 2], 0.71: [1, 2, 3], 0.3: [1], 0.99: [0, 1, 2, 3, 4]}
    for p, want_kept in cases.items():
        lp = sampling.log_probs(t(logits), top_p=p)
        kept = sorted(i for i, v in enumerate(lp[0].tolist()) if v != -math.inf)
        if p == 0.5 and kept == [1]:
            raise AssertionError("top-p drops the token that crosses p: keep tokens until their mass exceeds p, "
                                 "the crossing token included")
        if p == 0.3 and not kept:
            raise AssertionError("top-p removed every token: the most likely token is always kept")
        assert kept == want_kept, f"top-p = {p} on p = (0.1, 0.4, 0.3, 0.15, 0.05): keep {want_kept}, kept {kept}"
        mass = sum([0.1, 0.4, 0.3, 0.15, 0.05][i] for i in want_kept)
        want = [([0.1, 0.4, 0.3, 0.15, 0.05][i] / mass if i in want_kept else 0.0) for i in range(5)]
        assert all(abs(a - b) < 1e-6 for a, b in zip(probs(lp), want)), "top-p must renormalise over the kept tokens"


@pytest.mark.points(1)
def test_batched_and_combined(sampling):
    """works on (B, T, V) batches; top-k first, then top-p on the renormalised top-k distribution"""
    # p = (0.4, 0.3, 0.15, 0.1, 0.05), top-k 2 keeps 0.4, 0.3 -> 0.571, 0.429: top-p 0.5 keeps only the first. On
    # the probabilities before top-k (or with top-p first) the mass 0.4 < 0.5 would keep the second token too.
    logits = [math.log(x) for x in (0.05, 0.4, 0.15, 0.3, 0.1)]
    kept = [i for i, v in enumerate(sampling.log_probs(t(logits), top_k=2, top_p=0.5)[0].tolist()) if v != -math.inf]
    if kept == [1, 3]:
        raise AssertionError("top-p measured the mass before top-k (on the unfiltered probabilities, or applied "
                             "before top-k): filter top-k first, then top-p on the renormalised top-k distribution")
    assert kept == [1], f"top-k 2 then top-p 0.5 on p = (0.05, 0.4, 0.15, 0.3, 0.1) keeps token 1 only, kept {kept}"
    g = torch.Generator().manual_seed(0)
    lc, lu = torch.randn(2, 3, 7, generator=g, dtype=D), torch.randn(2, 3, 7, generator=g, dtype=D)
    lp = sampling.log_probs(lc, lu, cfg_scale=2.5, temperature=0.7, top_k=4, top_p=0.8)
    assert lp.shape == (2, 3, 7), f"log_probs must keep the shape (..., V), got {tuple(lp.shape)}"
    for row_c, row_u, row in zip(lc.reshape(-1, 7).tolist(), lu.reshape(-1, 7).tolist(), lp.reshape(-1, 7).tolist()):
        x = [(u + 2.5 * (c - u)) / 0.7 for c, u in zip(row_c, row_u)]
        top = sorted(range(7), key=lambda i: -x[i])[:4]
        p = softmax([x[i] if i in top else -math.inf for i in range(7)])
        order, keep, cum = sorted(range(7), key=lambda i: -p[i]), [], 0.0
        for i in order:
            if p[i] == 0:
                break
            keep.append(i)
            cum += p[i]
            if cum > 0.8:
                break
        want = softmax([x[i] if i in keep else -math.inf for i in range(7)])
        got = [math.exp(v) for v in row]
        assert all(abs(a - b) < 1e-6 for a, b in zip(got, want)), \
            "CFG, temperature, top-k and top-p combined (in this order, every row independently) disagree"
