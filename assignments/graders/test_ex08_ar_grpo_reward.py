"""Exercise 08: AR-GRPO's quantised multi-faceted reward, r = λ_C·Σ(5s + Q(s)) + λ_I·2q + λ_R·Σ s/4
(ar_grpo.py quantise, multi_reward, Eqs. 7–10 and App. D; assignments/ex08.md)."""
import pytest
import torch

D = torch.float64


def q(s):
    return -1.0 if s < 0 else 0.5 if s < 0.3 else 1.0 if s < 0.6 else 1.5


@pytest.mark.points(3)
def test_quantise_bins_and_edges(ar_grpo):
    """Q(s): −1 for s < 0, 0.5 on [0, 0.3), 1 on [0.3, 0.6), 1.5 for s ≥ 0.6 (left-closed bins; s ≥ 1 stays 1.5)"""
    s = torch.tensor([-0.5, -1e-9, 0.0, 0.1, 0.2999, 0.3, 0.45, 0.5999, 0.6, 0.9, 1.0, 1.7], dtype=D)
    got = ar_grpo.quantise(s)
    assert got.shape == s.shape, f"quantise is elementwise: shape {tuple(s.shape)}, got {tuple(got.shape)}"
    want = [q(x) for x in s.tolist()]
    edges = {0.0: 0.5, 0.3: 1.0, 0.6: 1.5}
    for x, g, w in zip(s.tolist(), got.tolist(), want):
        if x in edges and g != w:
            raise AssertionError(f"Q({x}) = {g}, expected {w}: the bins are left-closed, [0, 0.3), [0.3, 0.6), "
                                 f"[0.6, ∞) (< where you wrote ≤?)")
    assert got.tolist() == want, f"Q({s.tolist()}) should be {want}, got {got.tolist()}"


@pytest.mark.points(3)
def test_multi_reward(ar_grpo):
    """r_C = Σ_align (5s + Q(s)), r_I = 2·quality, r_R = Σ_realism s/4, r = λ_C r_C + λ_I r_I + λ_R r_R"""
    clip = torch.tensor([0.31, 0.25, -0.1], dtype=D)
    hps = torch.tensor([0.28, 0.7, 0.3], dtype=D)
    quality = torch.tensor([0.4, 0.9, 0.1], dtype=D)
    real = [torch.tensor([1.0, -1.0, 0.0], dtype=D), torch.tensor([0.5, 0.5, -0.5], dtype=D)]
    r, parts = ar_grpo.multi_reward([clip, hps], quality, real, 1.0, 0.5, 2.0)
    r_c = torch.tensor([5 * a + q(a) + 5 * b + q(b) for a, b in zip(clip.tolist(), hps.tolist())], dtype=D)
    r_i = 2 * quality
    r_r = (real[0] + real[1]) / 4
    assert set(parts) >= {"r_C", "r_I", "r_R"}, f"the terms dict needs r_C, r_I, r_R, got {sorted(parts)}"
    if torch.allclose(parts["r_C"], 5 * clip + 5 * hps, atol=1e-9):
        raise AssertionError("r_C misses the quantised term: r_C = Σ (5·s + Q(s))")
    if torch.allclose(parts["r_C"], torch.tensor([q(a) + q(b) for a, b in zip(clip.tolist(), hps.tolist())],
                                                 dtype=D), atol=1e-9):
        raise AssertionError("r_C is only the quantised score: r_C = Σ (5·s + Q(s)) keeps the raw score too")
    assert torch.allclose(parts["r_C"], r_c, atol=1e-9), f"r_C should be {r_c.tolist()}, got {parts['r_C'].tolist()}"
    if torch.allclose(parts["r_I"], quality, atol=1e-9):
        raise AssertionError("r_I = 2·quality (Eq. 8): the factor 2 is missing")
    assert torch.allclose(parts["r_I"], r_i, atol=1e-9), f"r_I should be 2·quality = {r_i.tolist()}"
    if torch.allclose(parts["r_R"], real[0] + real[1], atol=1e-9):
        raise AssertionError("r_R = Σ s/4 (Eq. 9): the division by 4 is missing")
    assert torch.allclose(parts["r_R"], r_r, atol=1e-9), f"r_R should be Σ s/4 = {r_r.tolist()}"
    want = 1.0 * r_c + 0.5 * r_i + 2.0 * r_r
    assert torch.allclose(r, want, atol=1e-9), f"r = λ_C r_C + λ_I r_I + λ_R r_R = {want.tolist()}, got {r.tolist()}"


@pytest.mark.points(1)
def test_absent_terms(ar_grpo):
    """an absent kind of reward (no alignment scores, quality None, no realism judges) contributes 0"""
    clip = torch.tensor([0.31, 0.65], dtype=D)
    r, parts = ar_grpo.multi_reward([clip], None, [], 1.0, 1.0, 1.0)
    assert torch.equal(parts["r_I"], torch.zeros(2, dtype=D)) and torch.equal(parts["r_R"], torch.zeros(2, dtype=D)), \
        "absent terms must be zero tensors of shape (B,)"
    assert torch.allclose(r, 5 * clip + torch.tensor([1.0, 1.5], dtype=D), atol=1e-9), \
        "with alignment scores only, r = λ_C·Σ (5·s + Q(s)) (absent terms add 0)"
    quality = torch.tensor([0.2, 0.3], dtype=D)
    r, parts = ar_grpo.multi_reward([], quality, [], 1.0, 1.0, 1.0)
    assert torch.allclose(r, 2 * quality, atol=1e-12), "with quality only, r = λ_I·2·quality"
