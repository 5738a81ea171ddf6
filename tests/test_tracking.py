"""Logging as CleanRL does (common/utils.Logger): metrics.jsonl always, TensorBoard when installed, Weights & Biases
with --track (wandb imported only then, never required; one line when it is missing)."""
import json
import os
import subprocess
import sys
import types

import pytest

from conftest import REPO
from helpers import TINY

MISSING = "error: --track logs to Weights & Biases, which is not installed: pip install wandb"


def _env(tmp_path, **extra):
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO, **extra}


def test_track_without_wandb_fails_in_one_line(tmp_path):
    """A wandb that cannot be imported (a package on PYTHONPATH that raises ImportError): one line, before anything
    is built or written."""
    fake = tmp_path / "no_wandb" / "wandb"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("No module named \'wandb\'")\n')
    out = tmp_path / "runs"
    env = _env(tmp_path, PYTHONPATH=f"{fake.parent}{os.pathsep}{REPO}")
    p = subprocess.run([sys.executable, "grpo_vanilla.py", *TINY, "--num-steps", "1", "--track", "--out-dir", str(out)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    lines = p.stderr.strip().splitlines()
    assert p.returncode != 0 and len(lines) == 1 and lines[0].startswith(MISSING), p.stderr[-2000:]
    assert not out.exists()


def test_missing_wandb_in_process(tmp_path, monkeypatch):
    """The same message from the Logger and from the command-line check, with the import monkeypatched away."""
    import grpo_vanilla
    from common.run import cli
    from common.utils import Logger

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now raises ImportError
    with pytest.raises(ImportError, match="pip install wandb"):
        Logger(str(tmp_path / "run"), {}, wandb_project="grpo-ar")
    monkeypatch.setattr(sys, "argv", ["grpo_vanilla.py", "--track", "--out-dir", str(tmp_path)])
    with pytest.raises(SystemExit) as e:
        cli(grpo_vanilla.Args)
    assert str(e.value.code).startswith(MISSING)
    # without --track wandb is never imported
    Logger(str(tmp_path / "plain"), {"lr": 1.0}).close()
    assert sys.modules["wandb"] is None


def test_logger_sends_every_row_to_wandb_and_keeps_its_run_id(tmp_path, monkeypatch):
    """A recording stand-in for wandb: init once per Logger with the run's name, config and a run id kept in the run
    directory (a resumed run continues the same W&B run); every logged row with its step; finish on close."""
    from common.utils import Logger

    calls = []

    class FakeRun:
        def log(self, metrics, step):
            calls.append(("log", step, dict(metrics)))

        def finish(self):
            calls.append(("finish",))

    def init(**kw):
        calls.append(("init", kw))
        return FakeRun()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    run_dir = str(tmp_path / "grpo_vanilla_s0")
    logger = Logger(run_dir, {"lr": 1e-3}, wandb_project="my-project")
    logger.log(1, {"charts/reward_mean": 0.5})
    logger.log(2, {"charts/reward_mean": 0.7})
    logger.close()
    kw = calls[0][1]
    assert kw["project"] == "my-project" and kw["name"] == "grpo_vanilla_s0" and kw["config"] == {"lr": 1e-3}
    assert kw["dir"] == run_dir and kw["resume"] == "allow" and kw["id"]
    assert calls[1:] == [("log", 1, {"charts/reward_mean": 0.5}), ("log", 2, {"charts/reward_mean": 0.7}), ("finish",)]
    assert [json.loads(line)["step"] for line in open(os.path.join(run_dir, "metrics.jsonl"))] == [1, 2]
    Logger(run_dir, {"lr": 1e-3}, resume_step=1, wandb_project="my-project").close()  # a resumed run: the same id
    assert calls[-2][0] == "init" and calls[-2][1]["id"] == kw["id"]
    # rank > 0 (enabled=False) never touches wandb
    Logger(str(tmp_path / "rank1"), {}, enabled=False, wandb_project="my-project").close()
    assert sum(c[0] == "init" for c in calls) == 2


def test_track_offline_run_and_resume(tmp_path):
    """--track with WANDB_MODE=offline: the run logs to an offline W&B run in its run directory, and a resumed run
    continues the same W&B run id."""
    pytest.importorskip("wandb")
    wandb_home = tmp_path / "wandb_home"
    env = _env(tmp_path, WANDB_MODE="offline", WANDB_SILENT="true", WANDB_CONFIG_DIR=str(wandb_home / "config"),
               WANDB_CACHE_DIR=str(wandb_home / "cache"), WANDB_DATA_DIR=str(wandb_home / "data"))
    out = tmp_path / "runs"
    cmd = [sys.executable, "grpo_vanilla.py", *TINY, "--image-every", "0", "--track", "--out-dir", str(out)]
    for extra in (["--num-steps", "2"], ["--num-steps", "3", "--resume", str(out / "grpo_vanilla_s0")]):
        p = subprocess.run(cmd + extra, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
    run_dir = out / "grpo_vanilla_s0"
    run_id = (run_dir / "wandb_id").read_text().strip()
    runs = sorted(d for d in os.listdir(run_dir / "wandb") if d.startswith("offline-run-"))
    assert len(runs) == 2 and all(d.endswith(f"-{run_id}") for d in runs), runs
    for d in runs:
        data = (run_dir / "wandb" / d / f"run-{run_id}.wandb").read_bytes()
        assert b"charts/reward_mean" in data and b"losses/kl" in data
    assert [json.loads(line)["step"] for line in open(run_dir / "metrics.jsonl")] == [1, 2, 3]
