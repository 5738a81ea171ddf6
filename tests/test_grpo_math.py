"""The pure maths of grpo_vanilla.py."""
import torch

from grpo_vanilla import grpo_loss, group_advantages, kl_k3


def test_advantages_zero_mean_per_group():
    r = torch.rand(5, 8)
    a = group_advantages(r)
    torch.testing.assert_close(a.mean(1), torch.zeros(5), atol=1e-6, rtol=0)
    torch.testing.assert_close(a.std(1), torch.ones(5) * r.std(1) / (r.std(1) + 1e-4), atol=1e-5, rtol=0)


def test_equal_rewards_give_zero_advantages():
    a = group_advantages(torch.full((3, 4), 0.7))
    assert torch.isfinite(a).all() and (a == 0).all()


def test_on_policy_gradient_is_reinforce():
    B, T = 6, 5
    logp = (torch.rand(B, T) * -3).requires_grad_()
    adv = torch.randn(B)
    loss, _ = grpo_loss(logp, logp.detach(), None, adv, clip_eps=0.2, beta=0.0)
    assert abs(loss.item() + adv.mean().item()) < 1e-5  # value: -mean(A) (≈ 0 for centred A)
    loss.backward()
    torch.testing.assert_close(logp.grad, -adv[:, None].expand(B, T) / (B * T))


def test_clipping_activates_outside_range():
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1, 0.9]])).requires_grad_()
    old = torch.zeros(1, 4)
    for a, zero_grad in ((1.0, [True, False, False, False]), (-1.0, [False, True, False, False])):
        logp.grad = None
        loss, st = grpo_loss(logp, old, None, torch.tensor([a]), clip_eps=0.2, beta=0.0)
        loss.backward()
        assert [bool(g == 0) for g in logp.grad[0]] == zero_grad
        assert st["clipfrac"].item() == 0.5


def test_k3_nonnegative_and_zero_at_equality():
    logp, ref = torch.rand(4, 7).log(), torch.rand(4, 7).log()
    assert (kl_k3(logp, ref) >= 0).all()
    assert (kl_k3(logp, logp) == 0).all()


def test_kl_term_gradient():
    logp = torch.rand(2, 3).log().requires_grad_()
    ref = torch.rand(2, 3).log()
    loss, st = grpo_loss(logp, logp.detach(), ref, torch.zeros(2), clip_eps=0.2, beta=0.5)
    loss.backward()
    torch.testing.assert_close(logp.grad, 0.5 * (1 - torch.exp(ref - logp.detach())) / 6)
