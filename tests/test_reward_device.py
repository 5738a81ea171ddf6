"""--reward-device: each reward model is built on the device the flag names (one for all, or NAME=DEVICE), bad specs
stop in one line before anything is built."""
import dataclasses
import os
import subprocess
import sys
import types

import pytest
import torch

from common.run import check_args
from conftest import REPO
from rewards import get_reward, reward_device


@pytest.fixture
def probe(monkeypatch):
    """A reward module 'probe_reward:make' whose factory records the device it was given."""
    seen = []
    mod = types.ModuleType("probe_reward")
    mod.make = lambda device: seen.append(device) or (lambda images, prompts, metadata: torch.zeros(len(prompts)))
    monkeypatch.setitem(sys.modules, "probe_reward", mod)
    return seen


@pytest.mark.parametrize("spec, expected", [("", "cuda:0"), ("cpu", "cpu"), ("cuda:3", "cuda:3"),
                                            ("probe_reward:make=cpu", "cpu"), ("hps=cpu", "cuda:0")])
def test_each_reward_is_built_where_the_flag_says(probe, spec, expected):
    get_reward("probe_reward:make", torch.device("cuda:0"), spec)
    assert str(probe[-1]) == expected


@pytest.mark.parametrize("spec, message", [
    ("tpu", "'tpu' is not a device"), ("=cpu", "write NAME=DEVICE"), ("cpu,hps=cpu", "one device for every reward")])
def test_malformed_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        reward_device("hps", spec, "cpu")


def test_checked_before_anything_is_built(tmp_path):
    import grpo_vanilla

    args = dataclasses.replace(grpo_vanilla.Args(), reward_device="qwen_label=cuda:1")
    assert check_args(args).startswith("--reward-device 'qwen_label=cuda:1': qwen_label is not a reward of this run")
    assert check_args(dataclasses.replace(args, reward_device="geneval=cpu")) == ""
    p = subprocess.run([sys.executable, "grpo_vanilla.py", "--reward-device", "cuda:x", "--out-dir", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO})
    assert p.returncode != 0 and p.stderr.strip().splitlines()[-1].startswith("error: --reward-device 'cuda:x'")


SHARED_WORKER = r'''
import json, os, sys
import torch, torch.distributed as dist
sys.path.insert(0, os.environ["REPO"])
from rewards import RewardError, compute_rewards, get_reward
dist.init_process_group("gloo")
rank = dist.get_rank()
fn = get_reward("probe_shared:make", torch.device("cpu"), "cpu")
images = torch.full((3, 3, 4, 4), float(rank + 1))
prompts = [f"r{rank} p{i}" for i in range(3)]
ok = compute_rewards(fn, "probe", images, prompts, [{}] * 3).tolist()
bad = [f"r{rank} p{i}" for i in range(2)] + (["boom"] if rank == 1 else ["fine"])
try:
    compute_rewards(fn, "probe", images[:3], bad, [{}] * 3)
    err = None
except RewardError as e:
    err = str(e)
print("RESULT " + json.dumps({"rank": rank, "ok": ok, "err": err}), flush=True)
dist.destroy_process_group()
'''

PROBE = r'''
import os
def make(device):
    with open(os.environ["BUILDS"], "a") as f:
        f.write(f"{os.getpid()} {device}\n")
    def reward(images, prompts, metadata):
        if "boom" in prompts:
            raise ValueError("boom")
        return images.flatten(1).mean(1) * 10 + torch.arange(len(prompts))
    import torch
    return reward
'''


@pytest.mark.slow
def test_fixed_device_reward_is_built_once_per_node(tmp_path):
    """2 gloo ranks, --reward-device cpu: one build (local rank 0), each rank gets its own images' rewards, and a
    failure on rank 1's prompt stops both ranks with the same message naming it."""
    import json

    (tmp_path / "worker.py").write_text(SHARED_WORKER)
    (tmp_path / "probe_shared.py").write_text(PROBE)
    builds = tmp_path / "builds.txt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REPO": REPO, "PYTHONPATH": f"{REPO}:{tmp_path}",
           "BUILDS": str(builds)}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(tmp_path / "worker.py")], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    # both ranks print to one pipe: a line can hold both results (the first one's newline written after the other)
    out = {r["rank"]: r for r in (json.JSONDecoder().raw_decode(chunk)[0] for chunk in p.stdout.split("RESULT ")[1:])}
    assert len(builds.read_text().splitlines()) == 1
    for rank in (0, 1):  # the node's copy scored all 6 images; each rank got its own 3 back
        assert out[rank]["ok"] == pytest.approx([10.0 * (rank + 1) + 3 * rank + i for i in range(3)])
        assert out[rank]["err"] == "reward 'probe_shared:make' raised ValueError: boom (prompt 'boom')"


@pytest.mark.slow
def test_node_shared_reward_trains_like_per_rank_rewards(tmp_path):
    """grpo_vanilla.py on 2 gloo ranks: --reward-device cpu (one copy for the node) gives the update of the default."""
    from helpers import assert_same_update, policy, run, tiny_args

    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "grpo_vanilla.py",
                *tiny_args("grpo_vanilla.py"), "--num-steps", "1", "--image-every", "0"]
    run(torchrun, tmp_path / "own")
    run(torchrun + ["--reward-device", "cpu"], tmp_path / "shared")
    assert_same_update(policy(tmp_path / "own", "grpo_vanilla"), policy(tmp_path / "shared", "grpo_vanilla"),
                       "grpo_vanilla.py", rel=1e-5)
