"""Exercise 03: the clipped token-mean GRPO loss, L = 1/(G·T) Σ_i Σ_t [−min(ρA, clip(ρ, 1±ε)A) + β·k3]
(assignments/ex03.md). kl_k3 is replaced by an exact k3 here, so that this exercise is graded on its own."""
import math

import pytest
import torch

D = torch.float64
B, T = 3, 4


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    logp = (-torch.rand(B, T, generator=g, dtype=D) * 2).requires_grad_(True)
    ref = logp.detach() + 0.3 * torch.randn(B, T, generator=g, dtype=D)
    adv = torch.tensor([1.5, -0.5, -1.0], dtype=D)
    return logp, ref, adv


@pytest.mark.points(2)
def test_on_policy_value(vanilla, exact_k3):
    """on-policy (ρ ≡ 1) the loss value is −mean A + β·mean k3 (the token mean)"""
    mod = exact_k3(vanilla)
    logp, ref, adv = inputs()
    loss, stats = mod.grpo_loss(logp, logp.detach(), ref, adv, 0.2, 0.1)
    d = ref - logp.detach()
    k3 = (d.exp() - d - 1).mean().item()
    want = -adv.mean().item() + 0.1 * k3
    got = loss.item()
    assert loss.dim() == 0, f"the loss must be a scalar, got shape {tuple(loss.shape)}"
    if abs(got - (-adv.mean().item() - 0.1 * k3)) < 1e-9:
        raise AssertionError("the KL term enters with the wrong sign: the loss adds + β·k3 (a penalty)")
    if abs(got - T * want) < 1e-9:
        raise AssertionError("each image's tokens are summed (a sequence-level loss), not averaged: the loss is the "
                             "token mean 1/(G·T) Σ_i Σ_t")
    assert abs(got - want) < 1e-9, f"on-policy loss should be −mean A + β·mean k3 = {want:.6f}, got {got:.6f}"


@pytest.mark.points(3)
def test_on_policy_gradient(vanilla, exact_k3):
    """on-policy gradient w.r.t. log π_θ(o_i,t) is −A_i/(G·T) (β = 0): the ratio carries the gradient"""
    mod = exact_k3(vanilla)
    logp, ref, adv = inputs()
    loss, _ = mod.grpo_loss(logp, logp.detach(), None, adv, 0.2, 0.0)
    assert loss.requires_grad, "no gradient flows: the ratio must be exp(log π_θ − log π_old) with only π_old detached"
    loss.backward()
    want = (-adv[:, None] / (B * T)).expand(B, T)
    g = logp.grad
    if torch.allclose(g, want * T, atol=1e-12):
        raise AssertionError("the gradient is T times too large: tokens summed per image, or one ratio per image "
                             "(sequence-level), instead of the token mean 1/(G·T) of per-token ratios")
    if torch.allclose(g, want * B, atol=1e-12):
        raise AssertionError("the gradient is G too large: the images are summed instead of averaged")
    if torch.allclose(g, -want, atol=1e-12):
        raise AssertionError("the gradient has the wrong sign: the loss is −min(ρA, clip(ρ)A) (we minimise it)")
    assert torch.allclose(g, want, atol=1e-12), \
        f"d L/d log π_θ should be −A_i/(G·T) on-policy; got {g[:, 0].tolist()} for the first token of each image"


@pytest.mark.points(2.5)
def test_clipping_off_policy(vanilla, exact_k3):
    """off-policy ratios: the pessimistic min(ρA, clip(ρ, 1±ε)A) gives zero gradient exactly where clipping binds"""
    mod = exact_k3(vanilla)
    rho = torch.tensor([[1.5, 0.5, 1.1, 1.0]], dtype=D).repeat(2, 1)  # (2, 4) ratios π_θ/π_old
    adv = torch.tensor([2.0, -2.0], dtype=D)
    logp = torch.zeros(2, 4, dtype=D, requires_grad=True)
    old = -rho.log()
    loss, stats = mod.grpo_loss(logp, old, None, adv, 0.2, 0.0)
    loss.backward()
    n = rho.numel()
    surrogate = torch.minimum(rho * adv[:, None], rho.clamp(0.8, 1.2) * adv[:, None])
    want_value = (-surrogate).mean().item()
    # A > 0: ρ = 1.5 clipped (no gradient), ρ = 0.5 not (gradient −Aρ/n); A < 0: ρ = 0.5 clipped, ρ = 1.5 not
    want_grad = torch.tensor([[0.0, -2 * 0.5, -2 * 1.1, -2 * 1.0], [2 * 1.5, 0.0, 2 * 1.1, 2 * 1.0]], dtype=D) / n
    g = logp.grad
    if abs(loss.item() - (-rho * adv[:, None]).mean().item()) < 1e-9:
        raise AssertionError("ratios outside [1 − ε, 1 + ε] are not clipped")
    if torch.allclose(g, torch.tensor([[-2 * 1.5, 0.0, -2 * 1.1, -2.0], [0.0, 2 * 0.5, 2 * 1.1, 2.0]], dtype=D) / n):
        raise AssertionError("min and max swapped: the surrogate is the pessimistic min(ρA, clip(ρ)A), so the loss "
                             "is max(−ρA, −clip(ρ)A)")
    if g[0, 1].abs().item() < 1e-12 or g[1, 0].abs().item() < 1e-12:
        raise AssertionError("the unclipped term is missing: a ratio that makes the objective worse (A > 0, ρ < 1 − ε "
                             "or A < 0, ρ > 1 + ε) must keep its gradient")
    assert abs(loss.item() - want_value) < 1e-9, f"off-policy loss should be {want_value:.6f}, got {loss.item():.6f}"
    assert torch.allclose(g, want_grad, atol=1e-12), \
        f"off-policy gradient should be {want_grad.tolist()}, got {g.tolist()} (a ratio per token, not per image?)"


@pytest.mark.points(0.5)
def test_clipfrac(vanilla, exact_k3):
    """stats['clipfrac'] is the fraction of the tokens whose ratio is outside [1 − ε, 1 + ε] (logged only)"""
    mod = exact_k3(vanilla)
    rho = torch.tensor([[1.5, 0.5, 1.1, 1.0], [1.3, 1.0, 0.9, 0.7], [1.0, 1.0, 1.0, 2.0]], dtype=D)
    logp = torch.zeros(3, 4, dtype=D, requires_grad=True)
    _, stats = mod.grpo_loss(logp, -rho.log(), None, torch.tensor([1.0, -1.0, 0.5], dtype=D), 0.2, 0.0)
    got = float(stats["clipfrac"])
    assert abs(got - 5 / 12) < 1e-6, \
        f"clipfrac is the fraction of the B·T ratios with |ρ − 1| > ε: 5/12 here, got {got}"


@pytest.mark.points(1)
def test_beta_zero_and_stats(vanilla, exact_k3):
    """β = 0 works with ref_logp None; stats['kl'] is the mean k3 (logged, no gradient)"""
    mod = exact_k3(vanilla)
    logp, ref, adv = inputs(1)
    loss, stats = mod.grpo_loss(logp, logp.detach(), None, adv, 0.2, 0.0)
    assert math.isfinite(loss.item()), "β = 0 must work with ref_logp None (no reference model)"
    loss, stats = mod.grpo_loss(logp, logp.detach(), ref, adv, 0.2, 0.05)
    d = ref - logp.detach()
    assert set(stats) >= {"kl", "clipfrac"}, f"stats must hold 'kl' and 'clipfrac', got {sorted(stats)}"
    assert abs(float(stats["kl"]) - (d.exp() - d - 1).mean().item()) < 1e-9, "stats['kl'] must be the mean k3"
    assert not torch.as_tensor(stats["kl"]).requires_grad, "stats['kl'] must be detached (it is only logged)"


@pytest.mark.points(1)
def test_copies_in_the_other_scripts(stage, ar_grpo, exact_k3):
    """ar_grpo.py's grpo_loss is the same; stage.py's takes Ã (B, T) and an optional KL weight β'/β (B, T)"""
    logp, ref, adv = inputs(2)
    want, _ = exact_k3(ar_grpo).grpo_loss(logp, logp.detach(), ref, adv, 0.2, 0.1)
    d = ref - logp.detach()
    k3 = d.exp() - d - 1
    assert abs(want.item() - (-adv.mean().item() + 0.1 * k3.mean().item())) < 1e-9, \
        "ar_grpo.py's grpo_loss differs from Eq. 3 (see ex03.md)"
    mod = exact_k3(stage)
    a_tok = adv[:, None] * torch.linspace(0.5, 1.5, T, dtype=D)
    w = torch.full((B, T), 0.75, dtype=D)
    loss, _ = mod.grpo_loss(logp, logp.detach(), ref, a_tok, 0.2, 0.1, w)
    good = -a_tok.mean().item() + 0.1 * (w * k3).mean().item()
    assert abs(loss.item() - good) < 1e-9, \
        "stage.py's grpo_loss: with Ã (B, T) and kl_w, the loss is mean(−Ã·ρ) + β·mean(kl_w·k3) on-policy"
    loss, _ = mod.grpo_loss(logp, logp.detach(), ref, adv, 0.2, 0.1)
    assert abs(loss.item() - want.item()) < 1e-9, "stage.py's grpo_loss with A (B,) and no kl_w must equal Eq. 3"
