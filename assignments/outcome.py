"""Exercise 10, the outcome check: exercises 01–03 inside grpo_vanilla.py must make a short real run learn.

The graded run is `grpo_vanilla.py` on the ShapeWorld toy in the graded tree, shortened to STEPS steps, on one thread
(deterministic on a given CPU), in the child's account (assignments/sandbox.py). The grader then scores the run's
checkpoint itself, with the kit's own copy of the evaluation (the kit's model code, sampler, held-out prompts and
judge; the weights read from policy.safetensors, a format without code): the held-out strict GenEval score (55
prompts x 8 samples, judged exactly from the pixels) of the shipped toy weights ("before") and of the checkpoint
("after"). The gain after − before earns tiered credit (TIERS). Nothing the run prints or logs is read.

The tiers come from reference runs of exactly this command over several seeds (assignments/README.md, "The outcome
exercise"): the full-credit tier sits below the reference's worst seed with a margin, because scores differ across
CPUs and a correct implementation written differently (another order of floating-point operations) follows another
trajectory, like another seed. A wrong sign or a constant advantage does not learn and falls below the lowest tier.
"""
from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STEPS = 60
SEED = 0
TIME_LIMIT = 540  # seconds; the run takes ~2 min here and at most ~5 min on a slow 2-core laptop
# (minimum gain, fraction of the points); the first tier reached counts
TIERS = ((0.045, 1.0), (0.035, 0.6), (0.025, 0.3))


def command(out_dir: str, seed: int = SEED) -> list[str]:
    """The exact command the grader (and the calibration) runs, from the tree's root. The run evaluates nothing
    itself (--eval-samples 0): the grader scores its checkpoint."""
    from assignments.sandbox import child_python

    return [child_python(), "grpo_vanilla.py", "--num-steps", str(STEPS), "--seed", str(seed), "--out-dir", out_dir,
            "--exp-name", "outcome", "--image-every", "0", "--eval-samples", "0"]


def checkpoint(out_dir: str, seed: int = SEED) -> str:
    """Where the run's last checkpoint's weights are (common/run.py run_dir, common/checkpoint.py)."""
    return os.path.join(out_dir, f"outcome_s{seed}", "checkpoints", f"step_{STEPS:06d}", "policy.safetensors")


def score(policy: str | None = None) -> float:
    """The held-out strict GenEval score ("overall") of the shipped toy weights, or of the policy weights in
    `policy` (a safetensors file: every tensor of the toy's policy, same shapes, finite), evaluated with the kit's
    code and grpo_vanilla.py's default evaluation settings. Raises ValueError naming what is wrong with the file."""
    import torch

    from common.evaluation import geneval_eval
    from common.models import load_model
    from common.prompts import load_prompts
    from common.utils import load_safetensors
    from rewards.geneval import GenEvalJudge

    a = _defaults()
    torch.set_num_threads(1)
    bk = load_model("toy", "cpu", torch.float32)
    if policy is not None:
        sd, want = load_safetensors(policy), bk.policy.state_dict()
        if set(sd) != set(want):
            raise ValueError(f"the checkpoint's tensors are not the toy policy's ({len(set(sd) ^ set(want))} names "
                             f"differ)")
        for k, v in sd.items():
            if v.shape != want[k].shape or not torch.isfinite(v.float()).all():
                raise ValueError(f"the checkpoint's {k} has the wrong shape or non-finite values")
        bk.policy.load_state_dict({k: v.to(want[k].dtype) for k, v in sd.items()}, strict=True)
    bk.policy.eval()
    judge = GenEvalJudge(a.eval_detector)
    rows = load_prompts(os.path.join(REPO, a.eval_prompts))
    summary, _, _ = geneval_eval(bk, rows, judge, a.eval_samples, cfg_scale=a.cfg_scale, temperature=a.temperature,
                                 top_k=a.top_k, top_p=a.top_p)
    return float(summary["overall"])


def unchanged(policy: str) -> bool:
    """Whether the weights in `policy` are exactly the shipped toy policy's (a run that did not move them)."""
    import torch

    from common.models import load_model
    from common.utils import load_safetensors

    try:
        sd = load_safetensors(policy)
    except ValueError:
        return False
    base = load_model("toy", "cpu", torch.float32).policy.state_dict()
    return set(sd) == set(base) and all(sd[k].shape == base[k].shape and torch.equal(sd[k].to(base[k].dtype), base[k])
                                        for k in sd)


@functools.lru_cache(maxsize=1)
def _before() -> float:
    return score(None)


def _defaults():
    """grpo_vanilla.py's Args defaults, from the KIT's copy (its evaluation settings)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("assignments_kit_grpo_vanilla", os.path.join(REPO, "grpo_vanilla.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop(spec.name, None)
    return mod.Args()


def run(tree: str, seed: int = SEED, timeout: float = TIME_LIMIT, box=None) -> dict:
    """Run the short training in `tree` (in `box`'s account: assignments/sandbox.py; a local one if None) and score
    its checkpoint here -> {"before", "after", "gain", "seconds"}; raises RuntimeError with the last lines of the
    output if the run fails, runs too long or leaves no usable checkpoint."""
    from assignments.sandbox import Sandbox

    own = box is None
    if own:
        scratch = tempfile.mkdtemp(prefix="assignments_outcome_")
        box = Sandbox(tree, scratch=scratch)
    try:
        out = os.path.join(box.scratch, f"outcome_{seed}")
        t0 = time.time()
        code, text = box.spawn(command(out, seed), timeout)
        seconds = time.time() - t0
        if code is None:
            raise RuntimeError(f"the training run took longer than {timeout:.0f} s")
        if code != 0:
            tail = [ln for ln in text.strip().splitlines() if ln.strip()][-3:]
            raise RuntimeError(f"the training run failed (exit {code}): " + " | ".join(tail))
        path = checkpoint(out, seed)
        if not os.path.isfile(path):
            raise RuntimeError(f"the training run exited 0 but wrote no checkpoint of step {STEPS}")
        if unchanged(path):  # nothing learned, nothing to evaluate
            return {"before": None, "after": None, "gain": 0.0, "seconds": seconds}
        try:
            after = score(path)
        except ValueError as e:
            raise RuntimeError(f"the run's checkpoint cannot be evaluated: {e}") from None
        before = _before()
    finally:
        if own:
            shutil.rmtree(box.scratch, ignore_errors=True)
    return {"before": before, "after": after, "gain": after - before, "seconds": seconds}


def tier(gain: float) -> tuple[float, str]:
    """(fraction of the points, feedback) for a held-out gain."""
    for threshold, fraction in TIERS:
        if gain >= threshold:
            return fraction, f"held-out gain {gain:+.3f} ≥ {threshold:.3f}: {fraction:.0%} of the points"
    lowest = TIERS[-1][0]
    return 0.0, (f"held-out gain {gain:+.3f} is below {lowest:.3f}: the run did not learn (check the sign of the "
                 f"advantages, the loss's sign and that the gradient flows through log π_θ)")
