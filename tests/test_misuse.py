"""Misuse of a run ends in one actionable line naming the flag or file, a non-zero exit and no traceback."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

USER_REWARDS = '''
def returns_none(device="cpu"):
    return lambda images, prompts, metadata: None

def factory_raises(device="cpu"):
    raise KeyError("threshold")
'''


def _toy_dir(tmp_path, corrupt):
    """A copy of the shipped toy model with one file broken."""
    d = tmp_path / "model"
    shutil.copytree(os.path.join(REPO, "weights", "shapeworld"), d)
    if corrupt == "weights":
        data = (d / "gpt.safetensors").read_bytes()
        (d / "gpt.safetensors").write_bytes(data[: len(data) // 2])
    else:
        cfg = json.loads((d / "config.json").read_text())
        del cfg["vq"]
        (d / "config.json").write_text(json.dumps(cfg))
    return str(d)


CASES = {
    "reward returns None": (lambda t: ["--reward", "user_rewards:returns_none"], "returned NoneType"),
    "reward factory raises": (lambda t: ["--reward", "user_rewards:factory_raises"],
                              "reward 'user_rewards:factory_raises': its factory raised KeyError"),
    "malformed reward spec": (lambda t: ["--reward", "user_rewards:a:b"], "write your own reward as 'module:factory'"),
    "too few prompts": (lambda t: ["--prompts", str(t / "two.jsonl")], "holds 2 prompts, fewer than --prompts-per-step"),
    "truncated weights": (lambda t: ["--model", _toy_dir(t, "weights")], "is not a readable safetensors file"),
    "config without a key": (lambda t: ["--model", _toy_dir(t, "config")], "not a toy-format model config (KeyError"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_line(case, tmp_path):
    flags, message = CASES[case]
    (tmp_path / "user_rewards.py").write_text(USER_REWARDS)
    (tmp_path / "two.jsonl").write_text("".join(json.dumps({"prompt": f"a photo of a red circle {i}", "include": [
        {"class": "circle", "count": 1}]}) + "\n" for i in range(2)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}"}
    cmd = [sys.executable, "grpo_vanilla.py", "--model", "tiny", "--num-steps", "1", "--prompts-per-step", "4",
           "--group-size", "2", "--eval-samples", "0", "--out-dir", str(tmp_path / "runs"), *flags(tmp_path)]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    last = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""
    assert p.returncode != 0 and last.startswith("error:") and message in last, p.stderr[-2000:]
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("cmd, message", [
    (["evaluate.py", "--n", "0"], "--n 0: must be >= 1"),
    (["evaluate.py", "--prompts", "data/imagenet/class_ids.txt"], "class_ids.txt:1: GenEval reward needs metadata"),
    (["-m", "common.coco_prompts", "--ratio", "1:2"], "tag ratio must be one of"),
    (["-m", "common.coco_prompts", "--n", "-5"], "--n -5 must be >= 1"),
    (["-m", "common.coco_prompts", "--exclude", "nope.jsonl"], "prompt file not found: nope.jsonl"),
    (["-m", "toy", "check", "--prompts", "nope.jsonl"], "prompt file not found: nope.jsonl"),
    (["-m", "toy", "check", "--n", "0"], "--n 0: must be >= 1"),
    (["-m", "toy.train", "--ar-steps", "0"], "--ar-steps 0: must be >= 1"),
    (["-m", "toy.train", "--eval-prompts", "nope.jsonl"], "prompt file not found: nope.jsonl"),
])
def test_helper_commands_one_line(cmd, message, tmp_path):
    """The helper commands check their input first (python -m toy.train before its 40 minutes of training)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    out = ["--out", str(tmp_path / "x.jsonl")] if "common.coco_prompts" in cmd else []
    p = subprocess.run([sys.executable, *cmd, *out], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and p.stderr.strip().splitlines() == [f"error: {p.stderr.strip()[7:]}"], p.stderr[-1500:]
    assert message in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
def test_out_dir_on_a_file_and_a_truncated_optimizer_state(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    base = [sys.executable, "grpo_vanilla.py", "--model", "tiny", "--num-steps", "1", "--prompts-per-step", "2",
            "--group-size", "2", "--eval-samples", "0", "--image-every", "0"]
    (tmp_path / "afile").write_text("x")
    p = subprocess.run(base + ["--out-dir", str(tmp_path / "afile")], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode != 0 and p.stderr.strip().splitlines()[-1].startswith("error: --out-dir") and \
        "cannot write the run directory" in p.stderr and "Traceback" not in p.stderr, p.stderr[-1500:]
    out = tmp_path / "runs"
    subprocess.run(base + ["--out-dir", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                   check=True)
    opt = out / "grpo_vanilla_s0" / "checkpoints" / "step_000001" / "optimizer.pt"
    opt.write_bytes(opt.read_bytes()[:100])
    p = subprocess.run(base + ["--num-steps", "2", "--out-dir", str(out), "--resume", str(out / "grpo_vanilla_s0")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    last = p.stderr.strip().splitlines()[-1]
    assert p.returncode != 0 and last.startswith("error: --resume") and "optimizer.pt is not a readable" in last, \
        p.stderr[-1500:]
    assert "Traceback" not in p.stderr


@pytest.mark.slow
def test_full_disk_mid_run_is_one_line(tmp_path, monkeypatch):
    """A checkpoint that cannot be written leaves no partial directory and `latest` naming the last good step;
    the uncaught disk error is one line naming how to continue."""
    import torch

    from common import checkpoint

    class A:
        seed = 0

    policy = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(policy.parameters())
    root = tmp_path / "run" / "checkpoints"
    checkpoint.save(str(root), 1, policy, opt, None, {}, A())

    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match="could not write checkpoint .*step_000002.*is the disk full"):
        checkpoint.save(str(root), 2, policy, opt, None, {}, A())
    assert sorted(os.listdir(root)) == ["latest", "step_000001"]

    snippet = ("import errno, sys; from common.run import stop_on_disk_errors; stop_on_disk_errors(sys.argv[1]); "
               "raise OSError(errno.ENOSPC, 'No space left on device', 'metrics.jsonl')")
    env = {**os.environ, "PYTHONPATH": REPO}
    p = subprocess.run([sys.executable, "-c", snippet, str(tmp_path / "run")], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and p.stderr.strip().splitlines() == [p.stderr.strip()] and "Traceback" not in p.stderr
    assert "No space left on device (metrics.jsonl)" in p.stderr
    assert f"--resume {root / 'step_000001'}" in p.stderr
    p = subprocess.run([sys.executable, "-c", snippet.replace("errno.ENOSPC", "errno.ENOENT"), str(tmp_path)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "Traceback" in p.stderr  # other errors keep their traceback


PARSE_ERRORS = [  # tyro's boxed parse errors become one line naming the flag (common/cli.py)
    (["grpo_vanilla.py", "--lr", "x"], "error: Error parsing --lr: could not convert string to float: 'x'"),
    (["stage.py", "--preset", "geneval", "--lrr", "1"], "error: Unrecognized options: --lrr, 1; perhaps --lr"),
    (["gcpo.py", "--dtype", "float8"], "error: invalid choice 'float8' for argument '--dtype'"),
    (["evaluate.py", "--nn", "3"], "perhaps --images-per-prompt, --n (see python evaluate.py --help)"),
    (["study.py", "--study"], "error: Missing value for argument '--study'"),
    (["-m", "toy.train", "--stepz", "3"], "(see python -m toy.train --help)"),
]


@pytest.mark.parametrize("argv, message", PARSE_ERRORS, ids=[" ".join(a) for a, _ in PARSE_ERRORS])
def test_parse_errors_are_one_line(argv, message):
    p = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": REPO})
    assert p.returncode == 2 and p.stdout == "", p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and message in p.stderr, p.stderr


def test_parse_error_panel_in_either_drawing():
    """tyro draws its panel in unicode on a terminal and may fall back to ASCII rules: both read the same."""
    from common.cli import one_line

    unicode = ("╭─ Unrecognized options ─────────╮\n│ Unrecognized options: --lrr, 3 │\n│ ────────────── │\n"
               "│ Perhaps you meant:             │\n│     --lr FLOAT                 │\n"
               "│         --lr-schedule decays it (default: 1.0) │\n│ ────────────── │\n"
               "│ For full helptext, run x.py --help │\n╰────────────────╯\n")
    ascii_ = (" Unrecognized options \n ---------------------- \n  Unrecognized options: --lrr, 3  \n  ---------\n"
              "  Perhaps you meant:  \n      --lr FLOAT  \n          --lr-schedule decays it (default: 1.0)  \n"
              "  For full helptext, run x.py --help  \n")
    for panel in (unicode, ascii_):
        assert one_line(panel, "python x.py") == \
            "error: Unrecognized options: --lrr, 3; perhaps --lr (see python x.py --help)"
    assert one_line("", "python x.py") == "error: cannot parse the command line (see python x.py --help)"
