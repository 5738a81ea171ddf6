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
