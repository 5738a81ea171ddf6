"""Scale and robustness of the algorithm scripts: gradient accumulation == one batch,
interrupt (SIGTERM) + resume == an uninterrupted run, atomic checkpoints, failing rewards and NaNs."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO
from helpers import SCRIPTS, TINY, assert_same_update, initial_policy, moved, policy, reward_flags, run, tiny_args

# A user-defined reward (--reward module:factory), imported by the scripts from PYTHONPATH.
REWARD_MODULE = '''
import torch

def raises(device="cpu"):
    calls = []
    def fn(images, prompts, metadata):
        calls.append(1)
        if len(calls) > 1 and any("two" in p for p in prompts):
            raise ValueError("detector crashed")
        return images.mean(dim=(1, 2, 3))
    return fn

def nan(device="cpu"):
    def fn(images, prompts, metadata):
        r = images.mean(dim=(1, 2, 3))
        r[-1] = float("nan")
        return r
    return fn

def brightness(device="cpu"):
    return lambda images, prompts, metadata: images.mean(dim=(1, 2, 3))
'''


def metrics(run_dir):
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    return {r["step"]: {k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows}


def user_reward(tmp_path, factory, script, extra=()):
    (tmp_path / "my_rewards.py").write_text(REWARD_MODULE)
    env_path = f"{REPO}{os.pathsep}{tmp_path}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": env_path}
    cmd = [sys.executable, script, *TINY, "--num-steps", "3", "--save-every", "1",
           *reward_flags(script, f"my_rewards:{factory}"), "--out-dir", str(tmp_path), *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("script", SCRIPTS)
def test_gradient_accumulation_equals_one_batch(script, tmp_path):
    """4 micro-batches of 4 images (gradients accumulated) == one batch of 16, after 2 optimizer steps."""
    name = script[:-3]
    run([sys.executable, script, *tiny_args(script), "--num-steps", "2"], tmp_path / "one")
    run([sys.executable, script, *tiny_args(script), "--num-steps", "2", "--micro-batch-size", "4"], tmp_path / "acc")
    assert_same_update(policy(tmp_path / "one", name), policy(tmp_path / "acc", name), script)


# FSDP2 == DDP for each script: tests/test_scripts.py test_torchrun_two_processes_match_one_and_fsdp2 (it shares
# the DDP run with the one-process comparison).


@pytest.mark.parametrize("script", SCRIPTS)
def test_sigterm_then_resume_equals_uninterrupted(script, tmp_path):
    name = script[:-3]
    args = [*tiny_args(script), "--num-steps", "6", "--image-every", "0"]
    run([sys.executable, script, *args], tmp_path / "full")

    # interrupted: SIGTERM once two steps are logged; the script finishes its step, saves and exits 0
    out = tmp_path / "cut"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    p = subprocess.Popen([sys.executable, script, *args, "--out-dir", str(out)], cwd=REPO, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / f"{name}_s0" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 2):
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr[-2000:]
    stopped = len(log.read_text().splitlines())
    assert stopped < 6, "the run ended before the signal arrived"
    assert f"stopped by a signal after step {stopped}" in stdout
    run([sys.executable, script, *args, "--resume", str(out / f"{name}_s0")], out)  # same run directory

    full, cut = metrics(tmp_path / "full" / f"{name}_s0"), metrics(out / f"{name}_s0")
    assert sorted(cut) == list(range(1, 7))
    for step in range(1, 7):
        assert cut[step] == full[step], step
    a, b = policy(tmp_path / "full", name), policy(out, name)
    assert all(torch.equal(a[k], b[k]) for k in a) and moved(a, script) > 1e-4


def test_checkpoint_killed_while_saving_keeps_latest(tmp_path, monkeypatch, tiny):
    from common import checkpoint

    opt = torch.optim.AdamW(tiny.policy.parameters(), lr=1e-3)
    args = type("A", (), {"x": 1})()
    state = {"perm": torch.arange(4), "cursor": 0, "order_gen": torch.Generator().get_state()}
    first = checkpoint.save(str(tmp_path), 1, tiny.policy, opt, None, state, args)
    before = {k: v.clone() for k, v in tiny.policy.state_dict().items()}

    def killed(*a, **k):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(checkpoint, "save_safetensors", killed)
    with torch.no_grad():
        for p in tiny.policy.parameters():
            p.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(str(tmp_path), 2, tiny.policy, opt, None, state, args)
    monkeypatch.undo()
    assert checkpoint.resolve(str(tmp_path)) == first  # latest still names the complete step 1
    loaded = checkpoint.load(str(tmp_path), tiny.policy, opt, None)
    assert loaded["step"] == 1 and torch.equal(loaded["perm"], torch.arange(4))
    assert all(torch.equal(v, before[k]) for k, v in tiny.policy.state_dict().items())
    # the next complete save cleans the leftover of the killed one and keeps keep_last checkpoints
    for step in (2, 3, 4):
        checkpoint.save(str(tmp_path), step, tiny.policy, opt, None, state, args, keep_last=2)
    assert sorted(os.listdir(tmp_path)) == ["latest", "step_000003", "step_000004"]
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        checkpoint.resolve(str(tmp_path / "step_000001"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_reward_that_raises_names_prompt_and_keeps_checkpoint(script, tmp_path):
    p = user_reward(tmp_path, "raises", script)
    assert p.returncode != 0
    msg = p.stderr.strip().splitlines()[-1]
    assert msg.startswith("error: reward 'my_rewards:raises' raised ValueError: detector crashed (prompt '")
    assert "two" in msg.split("(prompt ")[1] and "at step 2" in msg and "step_000001" in msg
    assert os.path.isfile(tmp_path / f"{script[:-3]}_s0" / "checkpoints" / "step_000001" / "policy.safetensors")


def test_reward_returning_nan_names_prompt(tmp_path):
    p = user_reward(tmp_path, "nan", "grpo_vanilla.py")
    assert p.returncode != 0
    assert "reward 'my_rewards:nan' returned nan for prompt '" in p.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("script", SCRIPTS)
def test_nan_loss_stops_with_message_and_intact_checkpoint(script, tmp_path):
    """A diverging learning rate: step 1's update overflows the weights, so step 2's loss is NaN."""
    p = user_reward(tmp_path, "brightness", script, ["--lr", "1e37"])
    assert p.returncode != 0
    msg = p.stderr.strip().splitlines()[-1]
    assert msg.startswith("error: non-finite loss or gradient at step 2 (the update was not applied)"), msg
    assert "step_000001" in msg
    from common.checkpoint import resolve

    ckpt = resolve(str(tmp_path / f"{script[:-3]}_s0"))
    assert ckpt.endswith("step_000001")
    from common.utils import load_safetensors

    assert all(torch.isfinite(v).all() for v in load_safetensors(os.path.join(ckpt, "policy.safetensors")).values())


@pytest.mark.parametrize("dtype, master", [("bfloat16", torch.float32), ("bfloat16-pure", torch.bfloat16)])
def test_bf16_mixed_precision_keeps_fp32_master_state(dtype, master, tmp_path):
    """--dtype bfloat16: fp32 weights and AdamW moments (the releases' DeepSpeed bf16); bfloat16-pure: all bf16."""
    run([sys.executable, "grpo_vanilla.py", *tiny_args("grpo_vanilla.py"), "--num-steps", "1", "--dtype", dtype], tmp_path)
    from common.checkpoint import resolve

    step = resolve(str(tmp_path / "grpo_vanilla_s0"))
    assert {v.dtype for v in policy(tmp_path, "grpo_vanilla").values() if v.is_floating_point()} == {master}
    state = torch.load(os.path.join(step, "optimizer.pt"), weights_only=True)["state"]
    moments = {v.dtype for s in state.values() for k, v in s.items() if k in ("exp_avg", "exp_avg_sq")}
    assert moments == {master}


@pytest.mark.slow
def test_fsdp2_mixed_precision_matches_ddp(tmp_path):
    """2 ranks, --dtype bfloat16: FSDP2's MixedPrecisionPolicy (bf16 all-gather, fp32 reduce-scatter) and DDP under
    autocast compute in bf16 from the same fp32 master weights: the same first update up to bf16 rounding (AdamW's
    first step is about lr·sign(g), so a gradient element near 0 whose sign the rounding flips moves by 2·lr: measured
    0.09 of the update's norm)."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "grpo_vanilla.py",
                *tiny_args("grpo_vanilla.py"), "--num-steps", "1", "--dtype", "bfloat16", "--image-every", "0"]
    run(torchrun, tmp_path / "ddp")
    run(torchrun + ["--dist", "fsdp2"], tmp_path / "fsdp")
    a, b = policy(tmp_path / "ddp", "grpo_vanilla"), policy(tmp_path / "fsdp", "grpo_vanilla")
    base = initial_policy("grpo_vanilla.py")
    update = torch.cat([(a[k] - base[k]).flatten() for k in a]).norm()
    diff = torch.cat([(a[k] - b[k]).flatten() for k in a]).norm()
    assert a[next(iter(a))].dtype == torch.float32 and update > 0
    print(f"|update| {update:.4g}, |FSDP2 - DDP| {diff:.4g}")
    assert diff < 0.2 * update, f"FSDP2 and DDP updates differ by {diff / update:.3f} of the update"


def test_crash_while_resaving_the_latest_step_leaves_a_complete_checkpoint(tmp_path, monkeypatch, tiny):
    """Re-saving the step `latest` names (after a resume): killed between setting the old copy aside and renaming
    the new one in, `latest` names a missing directory; resolve() falls back to the set-aside complete copy."""
    from common import checkpoint

    opt = torch.optim.AdamW(tiny.policy.parameters(), lr=1e-3)
    args = type("A", (), {"x": 1})()
    state = {"perm": torch.arange(4), "cursor": 0, "order_gen": torch.Generator().get_state()}
    checkpoint.save(str(tmp_path), 1, tiny.policy, opt, None, state, args)
    real_replace = os.replace

    def killed_after_first_rename(src, dst):
        if ".tmp-" in os.path.basename(src) and os.path.basename(dst) == "step_000001":  # the new one moving in:
            raise KeyboardInterrupt("killed")  # the old one is already set aside
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", killed_after_first_rename)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(str(tmp_path), 1, tiny.policy, opt, None, state, args)
    monkeypatch.undo()
    assert not (tmp_path / "step_000001").exists()
    path = checkpoint.resolve(str(tmp_path))
    assert ".old-" in path and checkpoint.load(str(tmp_path), tiny.policy, opt, None)["step"] == 1
    checkpoint.save(str(tmp_path), 1, tiny.policy, opt, None, state, args)  # the next save cleans up
    assert sorted(os.listdir(tmp_path)) == ["latest", "step_000001"]


def _metrics_steps(run_dir):
    return [json.loads(line)["step"] for line in open(os.path.join(run_dir, "metrics.jsonl"))]


def test_run_directory_resume_arguments_and_metrics_once(tmp_path):
    """A fresh run never writes into an existing run; --resume refuses arguments that change the experiment (or
    another script's checkpoint) in one line, accepts a new length; after a crash the metrics hold each step once."""
    args = [*tiny_args("grpo_vanilla.py"), "--num-steps", "3", "--save-every", "2", "--image-every", "0"]
    run([sys.executable, "grpo_vanilla.py", *args], tmp_path)
    run_dir = tmp_path / "grpo_vanilla_s0"
    p = run([sys.executable, "grpo_vanilla.py", *args], tmp_path, check=False)
    last = p.stderr.strip().splitlines()[-1]
    assert p.returncode != 0 and last.startswith("error:") and "already holds a run" in last and "--resume" in last
    for extra, message in ((["--group-size", "2"], "--group-size 4"), (["--lr", "1e-4"], "--lr 0.001"),
                           (["--dtype", "bfloat16"], "--dtype 'float32'")):
        p = run([sys.executable, "grpo_vanilla.py", *args, *extra, "--resume", str(run_dir)], tmp_path, check=False)
        last = p.stderr.strip().splitlines()[-1]
        assert p.returncode != 0 and last.startswith("error:") and message in last, p.stderr[-1500:]
    p = run([sys.executable, "stage.py", *tiny_args("stage.py"), "--resume", str(run_dir)], tmp_path, check=False)
    assert p.returncode != 0 and "a checkpoint of grpo_vanilla.py, not of stage.py" in p.stderr.strip().splitlines()[-1]
    # a crash after step 3 was logged but before its checkpoint: latest is step 2; resume to 4 steps
    ckpts = run_dir / "checkpoints"
    import shutil

    shutil.rmtree(ckpts / "step_000003")
    (ckpts / "latest").write_text("step_000002\n")
    assert _metrics_steps(run_dir) == [1, 2, 3]
    run([sys.executable, "grpo_vanilla.py", *tiny_args("grpo_vanilla.py"), "--num-steps", "4", "--save-every", "2",
         "--image-every", "0", "--resume", str(run_dir)], tmp_path)
    assert _metrics_steps(run_dir) == [1, 2, 3, 4]
