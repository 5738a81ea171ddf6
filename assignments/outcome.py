"""Exercise 10, the outcome check: exercises 01–03 inside grpo_vanilla.py must make a short real run learn.

The graded run is `grpo_vanilla.py` on the ShapeWorld toy in the graded tree, shortened to STEPS steps, on one thread
(deterministic on a given CPU). Its held-out strict GenEval score (55 prompts x 8 samples, judged exactly from the
pixels) is printed before and after training; the gain after − before earns tiered credit (TIERS).

The tiers come from reference runs of exactly this command over several seeds (assignments/README.md, "The outcome
exercise"): the full-credit tier sits below the reference's worst seed with a margin, because scores differ across
CPUs and a correct implementation written differently (another order of floating-point operations) follows another
trajectory, like another seed. A wrong sign or a constant advantage does not learn and falls below the lowest tier.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time

STEPS = 60
SEED = 0
TIME_LIMIT = 540  # seconds; the run takes ~2 min here and at most ~5 min on a slow 2-core laptop
# (minimum gain, fraction of the points); the first tier reached counts
TIERS = ((0.045, 1.0), (0.035, 0.6), (0.025, 0.3))


def command(out_dir: str, seed: int = SEED) -> list[str]:
    """The exact command the grader (and the calibration) runs, from the tree's root."""
    return [sys.executable, "grpo_vanilla.py", "--num-steps", str(STEPS), "--seed", str(seed), "--out-dir", out_dir,
            "--exp-name", "outcome", "--image-every", "0"]


def run(tree: str, seed: int = SEED, timeout: float = TIME_LIMIT) -> dict:
    """Run the short training in `tree` -> {"before", "after", "gain", "seconds"}; raises RuntimeError with the last
    lines of the output if the run fails or prints no score."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=os.path.abspath(tree))
    env.pop("ASSIGN_RESULTS", None)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.time()
        try:
            p = subprocess.run(command(out, seed), cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"the training run took longer than {timeout:.0f} s") from None
        seconds = time.time() - t0
    text = p.stdout + p.stderr
    m = re.search(r"held-out strict GenEval overall: before ([0-9.]+) -> after ([0-9.]+)", text)
    if p.returncode != 0 or m is None:
        tail = [ln for ln in text.strip().splitlines() if ln.strip()][-3:]
        raise RuntimeError(f"the training run failed (exit {p.returncode}): " + " | ".join(tail))
    before, after = float(m.group(1)), float(m.group(2))
    return {"before": before, "after": after, "gain": after - before, "seconds": seconds}


def tier(gain: float) -> tuple[float, str]:
    """(fraction of the points, feedback) for a held-out gain."""
    for threshold, fraction in TIERS:
        if gain >= threshold:
            return fraction, f"held-out gain {gain:+.3f} ≥ {threshold:.3f}: {fraction:.0%} of the points"
    lowest = TIERS[-1][0]
    return 0.0, (f"held-out gain {gain:+.3f} is below {lowest:.3f}: the run did not learn (check the sign of the "
                 f"advantages, the loss's sign and that the gradient flows through log π_θ)")
