"""Direction of the policy update: a short seeded run of each algorithm script must RAISE an easy reward.

Each script runs end to end (its own rollout, advantages, loss and optimizer step) on the shipped ShapeWorld
toy with a dense reward that is easy to climb: the mean pixel value of the image (`brightness` below; the toy
draws flat shapes on a light background, so fewer, smaller or lighter shapes score higher). The test compares
the last 10 of 30 steps with step 1 (the rollouts of the initial policy): their mean must be higher by a margin
and each of them higher.

A sign error anywhere on the path from reward to gradient (the advantage in the loss, the group-normalised
advantage, STAGE's masked advantages, GCPO's critical-token loss with its dynamic weight, AR-GRPO's combined
reward) makes the reward fall or stall instead, and the test fails. Settings per script (SETTINGS) keep each
paper's algorithm as is: STAGE keeps its similarity mask, KL reweighting and entropy reward; GCPO updates only
its 28% critical tokens, with the dynamic weight; AR-GRPO sums three reward terms (r_C, r_I, r_R). Only the
learning rate is raised. Seeds 0-5, rise of the last-10 mean over step 1 (brightness; AR-GRPO: its total r):
correct code +0.029..+0.053 (AR-GRPO +0.17..+0.46), advantage sign flipped in the loss -0.16..+0.001
(AR-GRPO -1.6..-0.9). Not caught, as it keeps the direction: a wrong choice of GCPO's critical tokens.

DIRECTION_TEST_REPO=<checkout> runs the scripts of another checkout (e.g. a copy with a deliberate sign flip,
to see this test fail); the default is this repository.
"""
import json
import os
import subprocess
import sys

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("DIRECTION_TEST_REPO") or os.path.dirname(TESTS)
REWARD = "test_direction:brightness"  # imported by the scripts from PYTHONPATH (this file's folder)

COMMON = ["--model", "toy", "--prompts-per-step", "4", "--group-size", "4", "--num-steps", "30", "--eval-samples", "0",
          "--image-every", "0"]
# script -> (its reward and learning-rate flags, the least rise of the reward)
SETTINGS = {
    "grpo_vanilla.py": (["--reward", REWARD, "--lr", "5e-4"], 0.015),
    # STAGE's mask M = clip((1 - Sim)/2) is ~0 on the background tokens that every sample of a group shares
    # (stage/mask_mean ~0.1 at step 1, ~0.03 over the run), so its policy term is weak next to the KL: a larger lr.
    "stage.py": (["--reward", REWARD, "--lr", "1e-3"], 0.015),
    "gcpo.py": (["--reward", REWARD, "--lr", "5e-4"], 0.015),
    # r = r_C + r_I + r_R = (5·b + Q(b)) + 2·palette cleanliness + b/4 (b: brightness): the rise is ~5x larger
    "ar_grpo.py": (["--align-rewards", REWARD, "--quality-reward", "shapeworld_quality", "--realism-rewards", REWARD,
                    "--lr", "5e-4"], 0.08),
}


def brightness(device="cpu"):
    """Reward factory (`module:factory`): the mean pixel value of each image in [0, 1], (B,)."""
    return lambda images, prompts, metadata: images.float().mean(dim=(1, 2, 3))


def train(script: str, out_dir, seed: int = 0) -> list[dict]:
    """Run `script` of ROOT with its SETTINGS; -> the rows of its metrics.jsonl, one per step."""
    flags, _ = SETTINGS[script]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([ROOT, TESTS])}
    cmd = [sys.executable, script, *COMMON, *flags, "--seed", str(seed), "--out-dir", str(out_dir)]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    with open(os.path.join(out_dir, f"{script[:-3]}_s{seed}", "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def rise(rows: list[dict], key: str = "charts/reward_mean") -> tuple[float, float, float]:
    """(reward of step 1, mean and min reward of the last 10 steps)."""
    r = [row[key] for row in rows]
    return r[0], sum(r[-10:]) / 10, min(r[-10:])


@pytest.mark.slow
@pytest.mark.parametrize("script", list(SETTINGS))
def test_reward_rises(script, tmp_path):
    rows = train(script, tmp_path)
    assert [r["step"] for r in rows] == list(range(1, 31))
    first, mean, low = rise(rows)
    margin = SETTINGS[script][1]
    msg = f"{script}: reward {first:.4f} at step 1 -> mean {mean:.4f}, min {low:.4f} over the last 10 steps"
    assert mean > first + margin, f"{msg}; expected a rise of more than {margin}: does the update go the wrong way?"
    assert low > first, f"{msg}; expected every one of the last 10 steps above step 1"
    if script == "ar_grpo.py":  # each raw reward AR-GRPO combines rises too (a term with a wrong sign: often caught)
        for key in [k for k in rows[0] if k.startswith("rewards/")]:
            first, mean, _ = rise(rows, key)
            assert mean > first, f"{script}: {key} {first:.4f} at step 1 -> mean {mean:.4f} over the last 10 steps"
