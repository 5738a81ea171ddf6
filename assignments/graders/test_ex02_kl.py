"""Exercise 02: the k3 estimator of KL(π_θ ‖ π_ref) and its direction (assignments/ex02.md)."""
import math

import pytest
import torch

D = torch.float64


def k3(logp, ref_logp):
    d = ref_logp - logp
    return math.exp(d) - d - 1


@pytest.mark.points(2)
def test_zero_and_nonnegative(vanilla):
    """k3 is 0 where π_θ = π_ref and ≥ 0 everywhere, with the inputs' shape (B, T)"""
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(3, 7, generator=g, dtype=D) * 3
    ref = logp + torch.randn(3, 7, generator=g, dtype=D)
    k = vanilla.kl_k3(logp, ref)
    assert k.shape == logp.shape, f"k3 is per token: shape (B, T) = {tuple(logp.shape)}, got {tuple(k.shape)}"
    assert torch.equal(vanilla.kl_k3(logp, logp), torch.zeros_like(logp)), \
        "k3 must be exactly 0 when the policy equals the reference (a missing − 1?)"
    assert (k >= 0).all(), "k3 must be ≥ 0 for every token: k1 = log π_θ − log π_ref (can be negative) instead of k3?"


@pytest.mark.points(3)
def test_worked_example_and_direction(vanilla):
    """worked example: k3 = exp(Δ) − Δ − 1 with Δ = log π_ref − log π_θ (this direction, not the reverse)"""
    logp = torch.tensor([[math.log(0.5), math.log(0.1)]], dtype=D)
    ref = torch.tensor([[math.log(0.25), math.log(0.4)]], dtype=D)
    got = vanilla.kl_k3(logp, ref)[0].tolist()
    want = [k3(a, b) for a, b in zip(logp[0].tolist(), ref[0].tolist())]
    reverse = [k3(b, a) for a, b in zip(logp[0].tolist(), ref[0].tolist())]
    k2 = [0.5 * (b - a) ** 2 for a, b in zip(logp[0].tolist(), ref[0].tolist())]
    if all(abs(g - r) < 1e-9 for g, r in zip(got, reverse)):
        raise AssertionError("KL direction reversed: Δ = log π_ref − log π_θ (k3 estimates KL(π_θ ‖ π_ref)), "
                             "not log π_θ − log π_ref")
    if all(abs(g - r) < 1e-9 for g, r in zip(got, k2)):
        raise AssertionError("that is k2 = ½Δ², not k3 = exp(Δ) − Δ − 1")
    assert all(abs(g - w) < 1e-9 for g, w in zip(got, want)), f"expected k3 = {want}, got {got}"


@pytest.mark.points(2)
def test_unbiased_for_the_forward_kl(vanilla):
    """E_{x~π_θ}[k3(x)] = KL(π_θ ‖ π_ref) exactly (computed over a whole small vocabulary)"""
    p = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=D)
    q = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=D)
    k = vanilla.kl_k3(p.log()[None], q.log()[None])[0]
    expectation = (p * k).sum().item()
    forward = (p * (p / q).log()).sum().item()
    reverse = (p * ((p / q) - (p / q).log() - 1)).sum().item()  # E_π_θ of k3 with Δ reversed
    if abs(expectation - reverse) < 1e-9:
        raise AssertionError(f"E_π_θ[k3] = {expectation:.5f}, not KL(π_θ‖π_ref) = {forward:.5f}: the KL direction "
                             f"is reversed (Δ = log π_ref − log π_θ)")
    assert abs(expectation - forward) < 1e-9, \
        f"E_π_θ[k3] = {expectation:.5f} must equal KL(π_θ‖π_ref) = {forward:.5f} (k3 is unbiased for it; k1 " \
        f"and k2 are other estimators)"


@pytest.mark.points(1)
def test_gradient(vanilla):
    """d k3 / d log π_θ = 1 − π_ref/π_θ (zero at π_θ = π_ref, pulls log π_θ toward log π_ref)"""
    logp = torch.tensor([[-1.0, -2.0, -0.5]], dtype=D, requires_grad=True)
    ref = torch.tensor([[-1.0, -1.0, -1.5]], dtype=D)
    k = vanilla.kl_k3(logp, ref)
    assert k.requires_grad, "no gradient flows through k3: log π_θ is detached inside kl_k3 (the KL penalty must " \
                            "pull log π_θ toward log π_ref; only the reference is a constant)"
    k.sum().backward()
    want = 1 - (ref - logp.detach()).exp()
    assert torch.allclose(logp.grad, want, atol=1e-9), \
        f"gradient of k3 w.r.t. log π_θ should be 1 − π_ref/π_θ = {want.tolist()}, got {logp.grad.tolist()} " \
        f"(a detach, or the direction reversed?)"


@pytest.mark.points(2)
def test_copies_in_the_other_scripts(stage, gcpo, ar_grpo):
    """the copies of kl_k3 in stage.py, gcpo.py and ar_grpo.py are the same k3"""
    logp = torch.tensor([[math.log(0.5), math.log(0.1), -3.0]], dtype=D)
    ref = torch.tensor([[math.log(0.25), math.log(0.4), -2.0]], dtype=D)
    want = torch.tensor([[k3(a, b) for a, b in zip(logp[0].tolist(), ref[0].tolist())]], dtype=D)
    for name, mod in (("stage.py", stage), ("gcpo.py", gcpo), ("ar_grpo.py", ar_grpo)):
        assert torch.allclose(mod.kl_k3(logp, ref), want, atol=1e-9), f"{name}'s kl_k3 is not k3 (see ex02.md)"
