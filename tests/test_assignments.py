"""The course assignments (assignments/README.md): the student tree, and the kit's self-check (slow: CI runs it)."""
import os
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, REPO)
from assignments import kit  # noqa: E402


def test_regions_replaced_keeping_signatures(tmp_path):
    """make: every region becomes one raise at its indentation; signatures and docstrings stay; nothing leaks."""
    n = kit.make(str(tmp_path / "student"))
    assert n == sum(len(r) for r in kit.marked_files().values()) >= 20
    text = open(tmp_path / "student" / "grpo_vanilla.py", encoding="utf-8").read()
    assert "def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:" in text
    assert "Eq. 2: A = (R − mean_g R) / (std_g R + ε)" in text
    assert '    raise NotImplementedError("Exercise 01: see assignments/ex01.md")' in text
    assert not os.path.exists(tmp_path / "student" / "tests")
    assert not os.path.exists(tmp_path / "student" / "assignments" / "private")
    assert kit.leaks(str(tmp_path / "student")) == []


def test_region_markers_are_checked():
    with pytest.raises(ValueError, match="never closed"):
        kit.regions("def f():\n    # BEGIN SOLUTION ex01\n    return 1\n", "f.py")
    with pytest.raises(ValueError, match="without a BEGIN"):
        kit.regions("def f():\n    return 1\n    # END SOLUTION\n", "f.py")
    assert kit.strip_solutions("def f():\n    '''doc'''\n    # BEGIN SOLUTION ex07\n    return 1\n    # END SOLUTION\n") \
        == "def f():\n    '''doc'''\n    raise NotImplementedError(\"Exercise 07: see assignments/ex07.md\")\n"


@pytest.mark.slow
def test_selfcheck():
    """`python -m assignments selfcheck`: the reference scores full marks (the outcome run included), the blank
    student tree 0 everywhere, every mutant is caught with its message, no solution leaks (about 4 minutes on 2
    cores)."""
    p = subprocess.run([sys.executable, "-m", "assignments", "selfcheck"], cwd=REPO, capture_output=True,
                       text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=900)
    assert p.returncode == 0 and "all checks pass" in p.stdout, p.stdout[-4000:] + p.stderr[-2000:]
