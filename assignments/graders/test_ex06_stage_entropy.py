"""Exercise 06: STAGE's entropy reward, R' = R + λ·1[R = max_g R]·R_ent, R_ent = 1/(1 + (H_ref − H_θ)²)
(stage.py entropy_reward, Eqs. 11–12; assignments/ex06.md)."""
import pytest
import torch

D = torch.float64

R = torch.tensor([[0.2, 0.9, 0.9, 0.1], [0.5, 0.4, 0.3, 0.7]], dtype=D)
HP = torch.tensor([[1.0, 2.0, 1.5, 3.0], [2.0, 2.0, 2.0, 1.0]], dtype=D)
HR = torch.tensor([[1.5, 1.5, 1.5, 1.5], [2.0, 2.0, 2.0, 3.0]], dtype=D)


def bonus(hp, hr):
    return 1 / (1 + (hr - hp) ** 2)


@pytest.mark.points(2)
def test_worked_example_with_ties(stage):
    """the best sample(s) of each group get λ·R_ent; a tie for the best gives every tied sample the bonus"""
    got = stage.entropy_reward(R, HP, HR, lam=0.4)
    want = R.clone()
    want[0, 1] += 0.4 * bonus(2.0, 1.5)
    want[0, 2] += 0.4 * bonus(1.5, 1.5)
    want[1, 3] += 0.4 * bonus(1.0, 3.0)
    assert got.shape == R.shape, f"R' has the rewards' shape (P, G), got {tuple(got.shape)}"
    one_tie = want.clone()
    one_tie[0, 2] = R[0, 2]
    if torch.allclose(got, one_tie, atol=1e-12):
        raise AssertionError("only one of the tied best samples got the bonus (argmax): every sample with "
                             "R = max_g R gets it")
    every = R + 0.4 * bonus(HP, HR)
    if torch.allclose(got, every, atol=1e-12):
        raise AssertionError("every sample got the entropy bonus: only the group's best (R = max_g R) do")
    if torch.allclose(got, R + 0.4 * (R == R.max()).to(D) * bonus(HP, HR), atol=1e-12):
        raise AssertionError("the best sample is taken over the whole batch: it is per group (max over dim 1)")
    assert torch.allclose(got, want, atol=1e-12), f"expected R' = {want.tolist()}, got {got.tolist()}"


@pytest.mark.points(2)
def test_entropy_term(stage):
    """R_ent = 1/(1 + (H_ref − H_θ)²) ∈ (0, 1]: 1 when the entropies match, 0.5 when they differ by 1"""
    r = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], dtype=D)
    hp = torch.tensor([[2.0, 0.0], [2.5, 0.0], [0.0, 0.0]], dtype=D)
    hr = torch.tensor([[2.0, 0.0], [1.5, 0.0], [3.0, 0.0]], dtype=D)
    got = (stage.entropy_reward(r, hp, hr, lam=1.0) - r)[:, 0]
    want = torch.tensor([1.0, 0.5, 0.1], dtype=D)
    if torch.allclose(got, torch.tensor([1.0, 0.5, 0.25], dtype=D)):
        raise AssertionError("R_ent uses |H_ref − H_θ|: the difference is SQUARED, 1/(1 + (H_ref − H_θ)²)")
    if torch.allclose(got, 1 - want):
        raise AssertionError("R_ent is reversed: it is largest (1) when the policy keeps the reference's entropy")
    assert torch.allclose(got, want, atol=1e-12), f"R_ent for ΔH = 0, 1, 3 should be {want.tolist()}, got {got.tolist()}"
    got2 = (stage.entropy_reward(r, hp, hr, lam=0.25) - r)[:, 0]
    assert torch.allclose(got2, 0.25 * want, atol=1e-12), "the bonus is scaled by λ"


@pytest.mark.points(2)
def test_centred_release(stage):
    """centred=True (the release): R_ent minus its mean over the group's TOP samples (so it sums to 0 over them)"""
    got = stage.entropy_reward(R, HP, HR, lam=0.4, centred=True)
    b = bonus(HP, HR)
    top = (R == R.max(dim=1, keepdim=True).values).to(D)
    mean_top = (b * top).sum(1, keepdim=True) / top.sum(1, keepdim=True)
    want = R + 0.4 * top * (b - mean_top)
    over_group = R + 0.4 * top * (b - b.mean(1, keepdim=True))
    if torch.allclose(got, over_group, atol=1e-12):
        raise AssertionError("centred: the mean is over the group's top samples, not over the whole group")
    assert torch.allclose(got, want, atol=1e-12), f"centred R' should be {want.tolist()}, got {got.tolist()}"
    assert torch.allclose(((got - R) * top).sum(1), torch.zeros(2, dtype=D), atol=1e-12), \
        "centred bonuses must sum to 0 over each group's top samples"
