"""The shipped ShapeWorld toy model: loading, sampling, and a short seeded RL run that raises the reward."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO


def test_load_shipped_toy_and_sample():
    from common.evaluation import geneval_eval
    from common.models import load_model
    from common.prompts import load_prompts
    from rewards.geneval import GenEvalJudge

    bk = load_model("toy")
    n_params = sum(p.numel() for p in bk.policy.parameters())
    size = sum(os.path.getsize(os.path.join(REPO, "weights", "shapeworld", f)) for f in
               os.listdir(os.path.join(REPO, "weights", "shapeworld")))
    assert size < 20 * 2**20 and n_params > 100_000
    metas = [m for m in load_prompts(os.path.join(REPO, "data", "shapeworld", "eval.jsonl"))
             if m["tag"] == "single_object"]
    summary, images, _ = geneval_eval(bk, metas, GenEvalJudge("shapeworld"), n_per_prompt=8, cfg_scale=3.0)
    assert images.shape == (24, 3, 64, 64)
    assert summary["single_object"] > 0.3  # a random model scores 0 here


@pytest.mark.slow
def test_short_rl_run_raises_reward(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    cmd = [sys.executable, "grpo_vanilla.py", "--num-steps", "30", "--prompts-per-step", "8", "--eval-samples", "0",
           "--image-every", "0", "--out-dir", str(tmp_path), "--seed", "0"]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    r = [json.loads(line)["charts/reward_mean"] for line in open(tmp_path / "grpo_vanilla_s0" / "metrics.jsonl")]
    first, last = sum(r[:10]) / 10, sum(r[-10:]) / 10
    assert last > first + 0.02, (first, last)
