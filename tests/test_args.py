"""Every Args field with a range is checked before anything is built: one line naming the flag (common/run.py)."""
import dataclasses
import os
import subprocess
import sys

import pytest

from common.run import RANGES, check_args
from conftest import REPO

SCRIPTS = ["grpo_vanilla", "stage", "gcpo", "ar_grpo"]
BAD = {  # an out-of-range value for every field of RANGES
    "num_steps": 0, "prompts_per_step": 0, "group_size": 1, "num_inner_epochs": 0, "micro_batch_size": -1,
    "sample_chunk": -1, "lr": -1.0, "lr_decay_steps": -5, "lr_warmup_ratio": 1.0, "lr_min_ratio": -0.1,
    "weight_decay": -0.1, "adam_betas": (0.9, 1.0),
    "max_grad_norm": -1.0, "clip_eps": 0.0, "beta": -0.01, "adv_eps": 0.0, "cfg_scale": -1.0, "temperature": -0.5,
    "top_k": -1, "top_p": 1.5, "eval_samples": -1, "eval_every": -1, "image_every": -1, "save_every": -1, "keep_last": 0,
    "stop_on_flat": -1, "device": "tpu", "critical_frac": 0.5, "weight_clip": 0.0, "lambda_c": -1.0, "lambda_i": -1.0,
    "lambda_r": -1.0, "lora_rank": -1, "lora_alpha": 0.0,
}


def test_every_range_has_a_bad_value():
    assert set(BAD) == set(RANGES)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_field_with_a_range_is_checked(script):
    args_cls = __import__(script).Args
    default = args_cls()
    assert check_args(default) == ""
    fields = [f.name for f in dataclasses.fields(args_cls) if f.name in RANGES]
    assert {"num_steps", "lr", "beta", "top_p", "device"} <= set(fields)
    for name in fields:
        problem = check_args(dataclasses.replace(default, **{name: BAD[name]}))
        flag = "--" + name.replace("_", "-")
        assert problem.startswith(f"{flag} {BAD[name]!r}: must be"), (name, problem)
    for name in ("top_p", "temperature"):  # the edges that are allowed
        assert check_args(dataclasses.replace(default, **{name: 1.0 if name == "top_p" else 0.0})) == ""


@pytest.mark.parametrize("extra, message", [
    (["--max-grad-norm", "-1"], "--max-grad-norm -1.0: must be a number > 0"),
    (["--num-steps", "0"], "--num-steps 0: must be an integer >= 1"),
    (["--device", "tpu"], "--device 'tpu': must be auto, cpu or cuda"),
    (["--top-p", "0"], "--top-p 0.0: must be a number in (0, 1] (1 = off)"),
])
def test_out_of_range_flags_stop_in_one_line(extra, message, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    p = subprocess.run([sys.executable, "grpo_vanilla.py", "--model", "tiny", *extra, "--out-dir", str(tmp_path)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    lines = p.stderr.strip().splitlines()
    assert p.returncode != 0 and lines == [f"error: {message}"], p.stderr[-1500:]
    assert not os.listdir(tmp_path)  # nothing was built or written


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_script_checks_its_args_first(script, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    p = subprocess.run([sys.executable, f"{script}.py", "--lr", "-1", "--out-dir", str(tmp_path)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and p.stderr.strip().splitlines() == ["error: --lr -1.0: must be a number > 0"]
