"""End-to-end runs of the algorithm scripts (subprocesses, tiny random model, CPU)."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO

SCRIPTS = ["grpo_vanilla.py", "stage.py", "gcpo.py", "ar_grpo.py"]


def reward_flags(script: str, name: str) -> list[str]:
    """Train with the single reward `name`: ar_grpo.py takes it as its only (alignment) reward term."""
    return ["--align-rewards", name, "--quality-reward", ""] if script == "ar_grpo.py" else ["--reward", name]
TINY = ["--model", "tiny", "--prompts-per-step", "4", "--group-size", "4", "--eval-samples", "0", "--image-every", "1",
        "--lr", "1e-3", "--beta", "0.05"]


def run(cmd, tmp_path, check=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    p = subprocess.run(cmd + ["--out-dir", str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600)
    if check:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


def policy(tmp_path, name):
    from common.utils import load_safetensors

    from common.checkpoint import resolve

    return load_safetensors(os.path.join(resolve(os.path.join(tmp_path, f"{name}_s0")), "policy.safetensors"))


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
def test_torchrun_two_processes_match_one(script, tmp_path):
    """2 ranks x 2 prompts == 1 rank x 4 prompts: same rollouts (noise is seeded per group), gradients
    averaged by DDP, so the parameters agree up to float summation order; ranks stay identical."""
    name = script[:-3]
    args = [*TINY, "--num-steps", "3"]
    p = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script, *args],
            tmp_path / "ddp")
    assert "parameters identical on all 2 ranks" in p.stdout
    run([sys.executable, script, *args], tmp_path / "single")
    a, b = policy(tmp_path / "ddp", name), policy(tmp_path / "single", name)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4, msg=k)
    init = __import__("common.models", fromlist=["x"]).load_model("tiny").policy.state_dict()
    assert any((a[k] - init[k]).abs().max() > 1e-4 for k in a)  # training actually moved the weights


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "nope"], "unknown model"),
        ("nope", "unknown reward"),
        (["--group-size", "1"], "--group-size must be >= 2"),
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
                        "--n", "1", "--grid", ""], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and "overall" in p.stdout, p.stderr[-2000:]
    p = subprocess.run([sys.executable, "evaluate.py", "--model", "tiny", "--checkpoint", str(tmp_path / "nope")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode != 0 and p.stderr.strip().splitlines()[-1].startswith("error: no complete checkpoint")
