"""End-to-end runs of the algorithm scripts (subprocesses, tiny random model, CPU)."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from helpers import SCRIPTS, TINY, assert_same_update, policy, reward_flags, run, tiny_args


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_smoke(script, tmp_path):
    name = script[:-3]
    run([sys.executable, script, *TINY, "--num-steps", "2", "--micro-batch-size", "8"], tmp_path)
    rows = [json.loads(line) for line in open(tmp_path / f"{name}_s0" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("charts/reward_mean", "losses/kl", "losses/entropy", "losses/grad_norm", "perf/images_per_sec",
                "perf/peak_mem_gb", "charts/frac_zero_std_groups"):
        assert all(torch.isfinite(torch.tensor(r[key])) for r in rows), key
    assert (tmp_path / f"{name}_s0" / "rollouts_00002.png").exists()
    assert (tmp_path / f"{name}_s0" / "checkpoints" / "step_000002" / "state.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_torchrun_two_processes_match_one_and_fsdp2(script, tmp_path):
    """2 DDP ranks x 2 prompts == 1 rank x 4 prompts: same rollouts (noise is seeded per group), gradients averaged
    by DDP, so the updates agree up to float summation order; ranks stay identical. And 2 FSDP2 ranks (sharded,
    activation checkpointing, 2 micro-batches) == the 2 DDP ranks, parameters after 2 steps."""
    name = script[:-3]
    args = [*tiny_args(script), "--num-steps", "2"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script, *args]
    p = run(torchrun, tmp_path / "ddp")
    assert "parameters identical on all 2 ranks" in p.stdout
    run([sys.executable, script, *args], tmp_path / "single")
    assert_same_update(policy(tmp_path / "ddp", name), policy(tmp_path / "single", name), script)
    # the reward std is over every image of the step, not a mean of per-rank stds
    std = [[json.loads(line)["charts/reward_std"] for line in open(tmp_path / d / f"{name}_s0" / "metrics.jsonl")]
           for d in ("ddp", "single")]
    assert std[0][0] == pytest.approx(std[1][0], rel=1e-5) and std[0][0] > 0
    run(torchrun + ["--dist", "fsdp2", "--activation-checkpointing", "--micro-batch-size", "4"], tmp_path / "fsdp")
    assert_same_update(policy(tmp_path / "ddp", name), policy(tmp_path / "fsdp", name), script)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "nope"], "unknown model"),
        ("nope", "unknown reward"),
        (["--group-size", "1"], "--group-size 1: must be an integer >= 2"),
        (["--prompts", "missing.jsonl"], "missing.jsonl"),
        (["--micro-batch-size", "3"], "must divide"),
    ],
)
@pytest.mark.parametrize("script", SCRIPTS)
def test_bad_input_fails_fast_with_one_line(script, extra, message, tmp_path):
    extra = reward_flags(script, extra) if isinstance(extra, str) else extra
    p = run([sys.executable, script, *TINY, "--num-steps", "1", *extra], tmp_path, check=False)
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    assert message in last and last.startswith("error:"), p.stderr[-2000:]


def test_malformed_prompt_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a photo of a circle"}\n{not json\n')
    p = run([sys.executable, "grpo_vanilla.py", *TINY, "--prompts", str(bad)], tmp_path, check=False)
    assert p.returncode != 0 and "bad.jsonl:2" in p.stderr.strip().splitlines()[-1]


def test_indivisible_prompts_per_step_under_torchrun(tmp_path):
    p = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "grpo_vanilla.py",
             *TINY, "--prompts-per-step", "3"], tmp_path, check=False)
    assert p.returncode != 0 and "not divisible by world size 2" in p.stderr


def test_evaluate_loads_a_runs_latest_checkpoint(tmp_path):
    run([sys.executable, "grpo_vanilla.py", *TINY, "--num-steps", "1"], tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    p = subprocess.run([sys.executable, "evaluate.py", "--model", "tiny", "--checkpoint", str(tmp_path / "grpo_vanilla_s0"),
                        "--n", "1", "--grid", "", "--out", str(tmp_path / "eval")], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and "overall" in p.stdout, p.stderr[-2000:]
    p = subprocess.run([sys.executable, "evaluate.py", "--model", "tiny", "--checkpoint", str(tmp_path / "nope")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode != 0 and p.stderr.strip().splitlines()[-1].startswith("error: no complete checkpoint")


@pytest.mark.parametrize("script", SCRIPTS)
def test_guided_logprobs_with_top_k_stay_finite(script, tmp_path):
    """--guided-logprobs scores under CFG and temperature without the top-k filter: a sampled token the filter drops
    after an update (or under π_ref) would otherwise get log p = −inf, k3 = inf, and stop the run."""
    # two inner epochs: the second scores the rollout under an updated policy whose top 3 has changed
    p = run([sys.executable, script, *tiny_args(script), "--num-steps", "3", "--guided-logprobs",
             "--num-inner-epochs", "2", "--top-k", "3", "--cfg-scale", "3", "--lr", "1e-2"], tmp_path)
    rows = [json.loads(line) for line in open(tmp_path / f"{script[:-3]}_s0" / "metrics.jsonl")]
    assert len(rows) == 3 and all(0 < r["losses/kl"] < float("inf") for r in rows), p.stdout[-2000:]
