"""Exercise 10, the outcome: exercises 01–03 inside grpo_vanilla.py make a short ShapeWorld run learn
(assignments/outcome.py runs it in the graded code's account and scores its checkpoint here; assignments/ex10.md)."""
import pytest
import torch


@pytest.mark.points(20)
@pytest.mark.timeout(600)
def test_short_run_learns(vanilla, sandbox, outcome, credit):
    """a 60-step run of grpo_vanilla.py raises the held-out strict GenEval score (tiered credit)"""
    r = torch.tensor([[0.0, 1.0, 0.5, 0.5]])
    vanilla.group_advantages(r, 1e-4)  # any NotImplementedError stops here, before a run of minutes
    vanilla.kl_k3(torch.zeros(1, 2), torch.zeros(1, 2))
    vanilla.grpo_loss(torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(4), 0.2, 0.01)
    try:
        result = outcome.run(sandbox.tree, box=sandbox)
    except RuntimeError as e:
        raise AssertionError(str(e)) from None
    fraction, feedback = outcome.tier(result["gain"])
    if result["after"] is None:
        raise AssertionError(f"the run left the policy's weights unchanged: {feedback}")
    credit(fraction, f"{feedback} (before {result['before']:.3f}, after {result['after']:.3f}, "
                     f"{result['seconds']:.0f} s)")
