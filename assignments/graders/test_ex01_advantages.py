"""Exercise 01: group-normalised advantages, A = (R − mean_g R) / (std_g R + ε) (assignments/ex01.md)."""
import math

import pytest
import torch

D = torch.float64


def expected(rows, eps):
    """Independent float64 reference: per row, unbiased std."""
    out = []
    for row in rows:
        g = len(row)
        m = sum(row) / g
        s = math.sqrt(sum((r - m) ** 2 for r in row) / (g - 1))
        out.append([(r - m) / (s + eps) for r in row])
    return torch.tensor(out, dtype=D)


ROWS = [[1.0, 0.0, 0.5, 0.5], [0.2, 0.9, 0.9, 0.0]]


@pytest.mark.points(2)
def test_shape_and_per_group_mean(vanilla):
    """advantages have the rewards' shape (P, G) and zero mean inside every group"""
    r = torch.tensor([[1.0, 2.0, 3.0], [10.0, 20.0, 60.0]], dtype=D)
    a = vanilla.group_advantages(r, 1e-4)
    assert a.shape == r.shape, f"advantages must keep the rewards' shape (P, G) = {tuple(r.shape)}, got {tuple(a.shape)}"
    assert a.dtype == D, "advantages must keep the rewards' dtype (no .float() inside)"
    assert torch.allclose(a.mean(dim=1), torch.zeros(2, dtype=D), atol=1e-9), \
        "advantages do not average to 0 inside each group: statistics over the whole batch, not per group (dim=1)?"
    b = vanilla.group_advantages(torch.tensor([[1.0, 2.0, 3.0], [11.0, 12.0, 13.0]], dtype=D), 0.0)
    assert torch.allclose(b[0], b[1], atol=1e-9), \
        "shifting one group's rewards changes its advantages: the mean is over the whole batch, not per group"


@pytest.mark.points(3)
def test_worked_example(vanilla):
    """a worked example in float64: per-group mean, unbiased std (divisor G − 1), ε added to the std"""
    r = torch.tensor(ROWS, dtype=D)
    a = vanilla.group_advantages(r, 1e-4)
    want = expected(ROWS, 1e-4)
    if torch.allclose(a, -want, atol=1e-8):
        raise AssertionError("advantages have the wrong sign: A = R − mean, not mean − R")
    biased = [[(x - sum(row) / 4) / (math.sqrt(sum((y - sum(row) / 4) ** 2 for y in row) / 4) + 1e-4) for x in row]
              for row in ROWS]
    if torch.allclose(a, torch.tensor(biased, dtype=D), atol=1e-6):
        raise AssertionError("biased std (divisor G) instead of the unbiased one (divisor G − 1, torch's default)")
    assert torch.allclose(a, want, atol=1e-8), \
        f"worked example {ROWS} with ε = 1e-4: expected {want.tolist()}, got {a.tolist()}"


@pytest.mark.points(2)
def test_epsilon(vanilla):
    """ε is added to the std (not under a square root); equal rewards give A = 0 exactly"""
    a = vanilla.group_advantages(torch.full((2, 5), 0.7, dtype=D), 1e-4)
    assert torch.isfinite(a).all() and (a == 0).all(), \
        "a group whose rewards are all equal must get A = 0 exactly (no NaN: add ε to the std)"
    for eps in (1e-4, 0.5):
        r = torch.tensor([[0.0, 1.0]], dtype=D)  # std = 1/√2; a fresh tensor each call (in place is graded apart)
        a = vanilla.group_advantages(r, eps)
        want = 0.5 / (math.sqrt(0.5) + eps)
        assert abs(a[0, 1].item() - want) < 1e-9, \
            f"with ε = {eps}: A = (R − mean)/(std + ε) = {want:.6f}, got {a[0, 1].item():.6f} (ε under the sqrt, " \
            f"or ignored?)"


@pytest.mark.points(1)
def test_no_side_effects(vanilla):
    """the rewards tensor is not modified in place"""
    r = torch.tensor(ROWS, dtype=D)
    before = r.clone()
    vanilla.group_advantages(r, 1e-4)
    assert torch.equal(r, before), "group_advantages modified the rewards in place"


@pytest.mark.points(2)
def test_copies_in_the_other_scripts(stage, gcpo, ar_grpo):
    """the copies in gcpo.py and ar_grpo.py agree; stage.py's gives A = 0 exactly for groups with std ≤ 1e-6"""
    r = torch.tensor(ROWS, dtype=D)
    want = expected(ROWS, 1e-4)
    for name, mod in (("gcpo.py", gcpo), ("ar_grpo.py", ar_grpo), ("stage.py", stage)):
        a = mod.group_advantages(r, 1e-4)
        assert torch.allclose(a, want, atol=1e-8), f"{name}'s group_advantages differs from Eq. 2 (see ex01.md)"
    tiny = torch.tensor([[0.5, 0.5 + 1e-8, 0.5], [0.0, 1.0, 0.0]], dtype=D)
    a = stage.group_advantages(tiny, 1e-4)
    assert (a[0] == 0).all(), "stage.py: a group whose std is ≤ 1e-6 must get A = 0 exactly (torch.where)"
    assert torch.allclose(a[1], expected([[0.0, 1.0, 0.0]], 1e-4)[0], atol=1e-8), \
        "stage.py: groups with std > 1e-6 keep Eq. 2's advantages"
