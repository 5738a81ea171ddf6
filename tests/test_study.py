"""study.py end to end on its tiny study (2 runs x 2 steps on the tiny random model): the runs, the report (table,
curves, grids), then a second call that skips the finished runs."""
import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_tiny_study_runs_reports_and_skips_finished_runs(tmp_path):
    cmd = [sys.executable, "study.py", "--study", "tiny", "--runs", str(tmp_path / "runs"), "--out",
           str(tmp_path / "docs"), "--jobs", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:] + p.stdout[-2000:]
    assert "2 of 2 runs to do" in p.stdout
    report = tmp_path / "docs" / "tiny"
    table = (report / "README.md").read_text()
    assert "| peak |" in table and "| quality before | quality after |" in table
    for config in ("grpo_vanilla", "stage"):
        row = next(line for line in table.splitlines() if line.startswith(f"| `{config}`"))
        assert row.count("(n=1)") == 16, row  # before, after, change, peak, 6 tags, quality x2, KL, entropy, wall, step
        rows = (tmp_path / "runs" / "tiny" / f"{config}_s0" / "metrics.jsonl").read_text().splitlines()
        assert [r.split(",")[0] for r in rows] == ['{"step": 0', '{"step": 1', '{"step": 2']  # eval at 0, 1, 2
    assert (report / "curves.png").stat().st_size > 1000 and (report / "grids.png").stat().st_size > 1000
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and "all 2 runs are done" in p.stdout, p.stderr[-2000:]
    p = subprocess.run(cmd[:3] + ["nope"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and p.stderr.strip() == \
        "error: --study 'nope': unknown; known: standard, stress, search, lora, tiny"


def test_help_lists_the_studies():
    p = subprocess.run([sys.executable, "study.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0
    for name in ("standard (6 configurations x 5 seeds)", "stress (8 configurations x 3 seeds)",
                 "search (3 configurations x 3 seeds)", "lora (1 configurations x 5 seeds)", "tiny"):
        assert f"  {name}" in p.stdout, name
