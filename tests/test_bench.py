"""`python bench.py --suite paper --random-weights` at a shrunk shape on the CPU: every paper model's GRPO step runs
through the same code as on a GPU, and the JSON holds each model's figures beside the planner's prediction."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_paper_suite_runs_shrunk_on_cpu(tmp_path):
    out = tmp_path / "paper.json"
    p = subprocess.run([sys.executable, "bench.py", "--suite", "paper", "--random-weights", "--shrink", "--device",
                        "cpu", "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert [r["model"] for r in results] == ["janus-pro-7b", "janus-pro-1b", "llamagen-c2i-xl", "llamagen-t2i-xl"]
    for r in results:
        assert "error" not in r, r
        assert r["sample_s"] > 0 and r["update_s"] > 0 and r["images_per_s"] > 0
        assert r["predicted_gib"]["update"] > 0 and r["images"] >= 1
    assert "total" in p.stdout


def test_paper_suite_needs_random_weights():
    p = subprocess.run([sys.executable, "bench.py", "--suite", "paper", "--device", "cpu"], cwd=REPO,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode != 0 and "--random-weights" in p.stderr
