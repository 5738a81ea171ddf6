"""FSDP2's CPU offload (--cpu-offload, torch's CPUOffloadPolicy): 2 gloo ranks give the same update as FSDP2 without
it, and the flag without --dist fsdp2 stops in one line."""
import os
import subprocess
import sys

import pytest

from conftest import REPO
from helpers import assert_same_update, policy, run, tiny_args


@pytest.mark.slow
def test_cpu_offload_matches_fsdp2(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "grpo_vanilla.py",
                *tiny_args("grpo_vanilla.py"), "--num-steps", "1", "--image-every", "0", "--dist", "fsdp2"]
    run(torchrun, tmp_path / "fsdp")
    run(torchrun + ["--cpu-offload"], tmp_path / "offload")
    assert_same_update(policy(tmp_path / "fsdp", "grpo_vanilla"), policy(tmp_path / "offload", "grpo_vanilla"),
                       "grpo_vanilla.py", rel=1e-4)


def test_cpu_offload_needs_fsdp2(tmp_path):
    p = subprocess.run([sys.executable, "grpo_vanilla.py", "--model", "tiny", "--cpu-offload", "--out-dir",
                        str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO})
    assert p.returncode != 0
    assert p.stderr.strip().splitlines() == ["error: --cpu-offload: needs --dist fsdp2 (it offloads FSDP2's shards)"]
