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
    elif corrupt == "shapes":  # torch's own error is a line per key (34 lines)
        cfg = json.loads((d / "config.json").read_text())
        cfg["gpt"]["dim"] = 64
        (d / "config.json").write_text(json.dumps(cfg))
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
    "config that does not fit its weights": (lambda t: ["--model", _toy_dir(t, "shapes")],
                                             "gpt.safetensors does not fit"),
    "reward module raises at import": (lambda t: ["--reward", "bad_import:make"],
                                       "importing module 'bad_import' raised RuntimeError: no GPU here (" ),
    "reward module with a syntax error": (lambda t: ["--reward", "bad_syntax:make"], "bad_syntax.py:2: syntax error"),
    "exp-name climbing out of --out-dir": (lambda t: ["--exp-name", "../escape"], "must be one path component"),
    "absolute exp-name": (lambda t: ["--exp-name", str(t / "abs")], "must be one path component"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_line(case, tmp_path):
    flags, message = CASES[case]
    (tmp_path / "user_rewards.py").write_text(USER_REWARDS)
    (tmp_path / "bad_import.py").write_text("import os\nraise RuntimeError('no GPU here')\n")
    (tmp_path / "bad_syntax.py").write_text("def make(device='cpu'):\n    return lambda images, prompts, metadata:\n")
    (tmp_path / "two.jsonl").write_text("".join(json.dumps({"prompt": f"a photo of a red circle {i}", "include": [
        {"class": "circle", "count": 1}]}) + "\n" for i in range(2)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}"}
    cmd = [sys.executable, "grpo_vanilla.py", "--model", "tiny", "--num-steps", "1", "--prompts-per-step", "4",
           "--group-size", "2", "--eval-samples", "0", "--out-dir", str(tmp_path / "runs"), *flags(tmp_path)]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    last = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""
    assert p.returncode != 0 and last.startswith("error:") and message in last, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "escape_s0").exists() and not (tmp_path / "abs_s0").exists()  # nothing outside --out-dir


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
    (["stage.py", "--preset", "geneval_paper", "--lrr", "1"], "error: Unrecognized options: --lrr, 1; perhaps --lr"),
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


RENAMED = [  # a paper preset's old name (#22): one line naming <name>_paper and, where the release has one, _release
    (["stage.py", "--preset", "geneval"],
     "error: --preset geneval: renamed; use geneval_paper (the paper's settings) or geneval_release (the release's "
     "script)"),
    (["gcpo.py", "--preset=janus7b_hps", "--print-preset"],
     "error: --preset janus7b_hps: renamed; use janus7b_hps_paper (the paper's settings)"),
]


@pytest.mark.parametrize("argv, message", RENAMED, ids=[" ".join(a) for a, _ in RENAMED])
def test_renamed_preset_is_one_line(argv, message):
    p = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 1 and p.stdout == "" and p.stderr.strip() == message, p.stderr


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


# --------------------------------------------------------------------------- a run directory has one owner (#24)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
TINY_RUN = [sys.executable, "grpo_vanilla.py", "--model", "tiny", "--prompts-per-step", "2", "--group-size", "2",
            "--eval-samples", "0", "--image-every", "0"]


def _run(*flags, check=True, **kw):
    p = subprocess.run([*TINY_RUN, *map(str, flags)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300,
                       **kw)
    assert not check or p.returncode == 0, p.stderr[-2000:]
    return p


def _one_line(p, *needles):
    lines = [line for line in p.stderr.strip().splitlines() if "it/s]" not in line]  # progress bars aside
    assert p.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), p.stderr[-2000:]
    assert all(n in lines[0] for n in needles) and "Traceback" not in p.stderr, lines[0]
    return lines[0]


def _steps(run_dir):
    return [json.loads(line)["step"] for line in open(os.path.join(run_dir, "metrics.jsonl"))]


def _latest(run_dir):
    return (run_dir / "checkpoints" / "latest").read_text().strip()


@pytest.mark.slow
def test_resume_never_writes_into_another_run_and_records_what_it_read(tmp_path):
    """--resume A --exp-name B, B holding a run: refused, B intact (today: B loses step 2 and its `latest` names A's
    checkpoint). A new --exp-name forks, recording its parent; no --exp-name continues A in place. A changed prompt
    file stops the resume unless --allow-changed-prompts (today: trains silently, or an IndexError when shrunk)."""
    out, prompts = tmp_path / "runs", tmp_path / "train.jsonl"
    shutil.copy(os.path.join(REPO, "data", "shapeworld", "train.jsonl"), prompts)
    _run("--out-dir", out, "--exp-name", "A", "--num-steps", 1, "--prompts", prompts)
    _run("--out-dir", out, "--exp-name", "B", "--num-steps", 2, "--prompts", prompts)
    p = _run("--out-dir", out, "--exp-name", "B", "--num-steps", 3, "--prompts", prompts, "--resume", out / "A_s0",
             check=False)
    _one_line(p, "B_s0, which holds another run")
    assert _steps(out / "B_s0") == [1, 2] and _latest(out / "B_s0") == "step_000002"
    _run("--exp-name", "C", "--num-steps", 2, "--prompts", prompts, "--resume", out / "A_s0")  # fork, next to A
    assert json.loads((out / "C_s0" / "run.json").read_text())["parent"].endswith(os.path.join("A_s0", "checkpoints",
                                                                                               "step_000001"))
    assert _steps(out / "C_s0") == [2] and _steps(out / "A_s0") == [1]
    prompts.write_text("".join(prompts.read_text().splitlines(keepends=True)[:5]))  # shrunk: 5 prompts are left
    p = _run("--num-steps", 2, "--prompts", prompts, "--resume", out / "A_s0", check=False)
    _one_line(p, f"the prompt file {prompts} changed since the checkpoint", "--allow-changed-prompts")
    _run("--num-steps", 2, "--prompts", prompts, "--resume", out / "A_s0", "--allow-changed-prompts")
    assert _steps(out / "A_s0") == [1, 2] and _latest(out / "A_s0") == "step_000002"  # continued in its own directory

    # a diverged checkpoint is refused where it is read: resume, evaluate, export (today: evaluate scores it)
    from safetensors.torch import load_file, save_file

    weights = out / "A_s0" / "checkpoints" / "step_000002" / "policy.safetensors"
    save_file({k: v.fill_(float("nan")) for k, v in load_file(weights).items()}, weights)
    for cmd in ([*TINY_RUN, "--num-steps", "3", "--prompts", str(prompts), "--allow-changed-prompts", "--resume",
                 str(out / "A_s0")],
                [sys.executable, "evaluate.py", "--checkpoint", str(out / "A_s0"), "--no-baseline", "--n", "1",
                 "--out", str(tmp_path / "eval")],
                [sys.executable, "-m", "common.export", str(out / "A_s0"), "--out", str(tmp_path / "export")]):
        p = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
        assert p.returncode != 0 and "holds non-finite weights" in p.stderr and "Traceback" not in p.stderr, \
            p.stderr[-1500:]
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr


@pytest.mark.slow
def test_two_writers_of_one_run_directory(tmp_path):
    """Two fresh runs started together into one run directory: one runs, the other stops in one line naming the
    holder (today: both exit 0 and the metrics hold every step twice)."""
    cmd = [*TINY_RUN, "--num-steps", "2", "--out-dir", str(tmp_path)]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    refused = next(err for code, err in results if code == 1)
    lines = [line for line in refused.strip().splitlines() if "it/s]" not in line]
    assert len(lines) == 1 and "is in use by pid" in lines[0] and "Traceback" not in refused, refused
    assert _steps(tmp_path / "grpo_vanilla_s0") == [1, 2]
    assert not (tmp_path / "grpo_vanilla_s0" / "run.lock").exists()  # released at the end


def test_lock_names_its_holder_and_takes_over_a_stale_one(tmp_path, capsys):
    import socket

    from common import rundir

    lock = tmp_path / "run.lock"
    lock.write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "started": "then"}))  # init: alive
    with pytest.raises(RuntimeError, match=f"in use by pid 1 on {socket.gethostname()}"):
        rundir.acquire(str(tmp_path))
    lock.write_text(json.dumps({"pid": os.getpid(), "host": "elsewhere", "started": "then"}))  # cannot be checked
    with pytest.raises(RuntimeError, match="in use by pid .* on elsewhere"):
        rundir.acquire(str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "then"}))
    rundir.acquire(str(tmp_path))
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert f"pid {dead.pid} on this host, is no longer running" in capsys.readouterr().err
    rundir.release()
    assert not lock.exists()


def test_pruning_counts_only_the_runs_own_complete_checkpoints(tmp_path):
    """An export (or anything else) named like a checkpoint is not counted (today: it pushes a real one out)."""
    import torch

    from common import checkpoint

    class A:
        seed = 0

    policy = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(policy.parameters())
    root = tmp_path / "checkpoints"
    checkpoint.save(str(root), 1, policy, opt, None, {}, A(), keep_last=2)
    (root / "step_999999").mkdir()
    (root / "step_999999" / "config.json").write_text("{}")
    checkpoint.save(str(root), 2, policy, opt, None, {}, A(), keep_last=2)
    assert sorted(os.listdir(root)) == ["latest", "step_000001", "step_000002", "step_999999"]
    checkpoint.save(str(root), 3, policy, opt, None, {}, A(), keep_last=2)
    assert sorted(os.listdir(root)) == ["latest", "step_000002", "step_000003", "step_999999"]


def test_duplicate_json_keys_stop(tmp_path):
    from common.prompts import load_prompts

    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a red circle"}\n{"prompt": "a red circle", "include": [], "prompt": "a blue square"}\n')
    with pytest.raises(ValueError, match=r"p.jsonl:2: duplicate key 'prompt'"):
        load_prompts(str(f))
    f = tmp_path / "p.json"
    f.write_text('[{"prompt": "a", "tag": "colors", "tag": "counting"}]')
    with pytest.raises(ValueError, match="duplicate key 'tag'"):
        load_prompts(str(f))


def test_toy_train_never_writes_over_the_shipped_weights_and_checks_its_folder_first(tmp_path):
    """Its default output is under runs/ (today: weights/shapeworld, a tracked folder), and a folder it cannot
    write stops it before training (today: after it, with a traceback)."""
    from toy.train import Args

    assert Args().out_dir.startswith("runs")
    (tmp_path / "afile").write_text("x")
    p = subprocess.run([sys.executable, "-m", "toy.train", "--out-dir", str(tmp_path / "afile"), "--vq-steps", "1",
                        "--num-scenes", "1", "--ar-steps", "1", "--eval-samples", "1"], cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and p.stderr.strip().splitlines() == [p.stderr.strip()], p.stderr[-1500:]
    assert "--out-dir" in p.stderr and "cannot write there" in p.stderr


ONE_LINE_SNIPPETS = [  # the shared handler (common/errors.py): the real errors, raised where a program would meet them
    ("from common.errors import fail; fail('first line\\nsecond line\\nthird')", "error: first line (full message: "),
    ("import torch; from common import errors; errors.install(oom=lambda asked: 'lower --group-size'); "
     "torch.empty(2 ** 60, dtype=torch.uint8)", "error: out of memory: tried to allocate"),
    ("from common import errors; errors.install(interrupted='run it again to resume'); raise KeyboardInterrupt",
     "error: interrupted (Ctrl-C); run it again to resume"),
    ("import errno; from common import errors; errors.install('out'); "
     "raise OSError(errno.EROFS, 'Read-only file system', 'out/summary.json')",
     "error: writing out failed: Read-only file system (out/summary.json)"),
]


@pytest.mark.parametrize("snippet, message", ONE_LINE_SNIPPETS, ids=["multi-line", "allocator", "ctrl-c", "erofs"])
def test_shared_handler_answers_in_one_line(snippet, message, tmp_path):
    p = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode != 0 and p.stderr.strip().splitlines() == [p.stderr.strip()], p.stderr[-1500:]
    assert p.stderr.startswith(message) and "Traceback" not in p.stderr  # (Ctrl-C: killed by SIGINT, as Python does)
    if "full message" in p.stderr:
        assert open(p.stderr.split("full message: ")[1].rstrip(")\n")).read() == "first line\nsecond line\nthird\n"


def test_allocator_advice_names_the_flag_that_fits(monkeypatch):
    from types import SimpleNamespace

    from common import errors
    from common.run import _oom_advice

    monkeypatch.setattr(errors, "available_bytes", lambda: 10 * 2 ** 30)
    advice = _oom_advice(SimpleNamespace(group_size=64, sample_chunk=0, micro_batch_size=0))(80 * 2 ** 30)
    assert advice.startswith("--group-size 4 would fit (now 64)") and "--sample-chunk" in advice


def test_a_peer_rank_stays_silent_after_another_rank_failed(monkeypatch):
    """Under torchrun, the healthy rank's collective error (gloo: "Connection closed by peer") is one short line, not a
    traceback (today: 52 lines around the failing rank's one). Outside torchrun the same error keeps its traceback."""
    from common import errors

    error = RuntimeError("[gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:29500. This may "
                         "indicate a possible application crash on rank 0 or a network set up issue.")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert errors.describe(error) == ("rank 0 stopped with its job: a collective failed, most likely because another "
                                      "rank ended (its error is above): Connection closed by peer [127.0.0.1]:29500")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert errors.describe(error) is None


RANK_REWARD = """
import os


def fail_on_rank1(device="cpu"):
    def fn(images, prompts, metadata):
        if os.environ.get("RANK") == "1":
            raise ValueError("detector crashed on rank 1")
        return images.float().mean(dim=(1, 2, 3))
    return fn
"""


@pytest.mark.slow
def test_torchrun_job_with_a_failing_rank_is_two_lines_of_ours(tmp_path):
    """End to end under torchrun: the reward raises on rank 1 only. Rank 1 prints its one line naming the reward and
    the prompt; rank 0, whose next collective then fails, one short line pointing at it; neither prints a traceback
    (what torchrun itself prints after them is the launcher's)."""
    (tmp_path / "rank_reward.py").write_text(RANK_REWARD)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "grpo_vanilla.py",
           "--model", "tiny", "--reward", "rank_reward:fail_on_rank1", "--num-steps", "2", "--prompts-per-step", "2",
           "--group-size", "2", "--eval-samples", "0", "--image-every", "0", "--out-dir", str(tmp_path / "runs")]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={**ENV, "PYTHONPATH": os.pathsep.join([REPO, str(tmp_path)])})
    assert p.returncode != 0
    # each rank's line, without torchrun's "[rank0]: " prefix, or rank 0's progress bar: both ranks write to one
    # stderr, and rank 1's line can follow the bar rank 0 has drawn (a bar ends without a newline)
    ours = [line[line.index("error: "):] for line in p.stderr.splitlines() if "error: " in line]
    failed = [line for line in ours if "detector crashed on rank 1" in line]
    assert len(failed) == 1 and failed[0].startswith("error: reward 'rank_reward:fail_on_rank1' raised ValueError: "
                                                     "detector crashed on rank 1 (prompt '"), p.stderr[-3000:]
    # rank 0 reaches its next collective before torchrun stops it (as a rule: it says so in one line)
    peer = [line for line in ours if line not in failed]
    assert len(peer) <= 1 and all(line.startswith("error: rank 0 stopped with its job: a collective failed, most "
                                                  "likely because another rank ended (its error is above): ")
                                  for line in peer), p.stderr[-3000:]
    assert "grpo_vanilla.py\", line" not in p.stderr and "common" + os.sep not in p.stderr, p.stderr[-3000:]


def test_study_tells_an_interrupted_run_from_a_finished_one(tmp_path):
    """A run stopped by a signal saves and exits 0; study.py counts its checkpoint's steps, reports it as interrupted
    and continues it on the next call (today: "done", and an empty row in the report)."""
    import study

    fake = tmp_path / "fake_script.py"  # stops after step 1 of 2, as a preempted run does: a checkpoint, exit 0
    fake.write_text(
        "import json, os, sys\n"
        "a = sys.argv\n"
        "d = os.path.join(a[a.index('--out-dir') + 1], a[a.index('--exp-name') + 1] + '_s' + a[a.index('--seed') + 1])\n"
        "c = os.path.join(d, 'checkpoints', 'step_000001')\n"
        "os.makedirs(c, exist_ok=True)\n"
        "for f in ('policy.safetensors', 'optimizer.pt', 'trainer.pt'):\n"
        "    open(os.path.join(c, f), 'w').close()\n"
        "json.dump({'step': 1}, open(os.path.join(c, 'state.json'), 'w'))\n"
        "open(os.path.join(d, 'checkpoints', 'latest'), 'w').write('step_000001')\n")
    args = study.Args(study="tiny", runs=str(tmp_path / "runs"))
    config, seed, wall, status = study.launch(args, "fake", [str(fake), "--num-steps", "2"], 0)
    assert status == "interrupted at step 1 of 2"
    assert not study.finished(study.run_dir(args, "fake", 0), 2) and study.finished(study.run_dir(args, "fake", 0), 1)


@pytest.mark.slow
def test_study_names_a_failed_run_in_one_line(tmp_path):
    """A run that fails (here: its directory is locked by a live process) ends the study in one line naming it
    (today: a RuntimeError traceback out of the thread pool)."""
    import socket

    runs = tmp_path / "runs"
    for config in ("grpo_vanilla", "stage"):
        (runs / "tiny" / f"{config}_s0").mkdir(parents=True)
        (runs / "tiny" / f"{config}_s0" / "run.lock").write_text(json.dumps(
            {"pid": 1, "host": socket.gethostname(), "started": "then"}))
    p = subprocess.run([sys.executable, "study.py", "--study", "tiny", "--runs", str(runs), "--out",
                        str(tmp_path / "report"), "--jobs", "1"], cwd=REPO, env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 1 and p.stderr.strip().splitlines() == [p.stderr.strip()], p.stderr[-1500:]
    assert "2 of 2 runs did not finish" in p.stderr and "grpo_vanilla seed 0: failed (exit 1" in p.stderr


@pytest.mark.slow
def test_evaluate_builds_the_same_model_every_time(tmp_path):
    """The tiny random base is seeded (today: two identical commands sample from two different models)."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(open(os.path.join(REPO, "data", "shapeworld", "eval.jsonl")).readlines()[:2]))
    grids = []
    for k in range(2):
        subprocess.run([sys.executable, "evaluate.py", "--model", "tiny", "--prompts", str(prompts), "--n", "2",
                        "--out", str(tmp_path / f"e{k}"), "--no-progress"], cwd=REPO, env=ENV, check=True,
                       capture_output=True, timeout=300)
        grids.append((tmp_path / f"e{k}" / "tiny" / "grid.png").read_bytes())
    assert grids[0] == grids[1]
