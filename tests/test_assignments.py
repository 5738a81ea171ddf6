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
                       text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=1800)
    assert p.returncode == 0 and "all checks pass" in p.stdout, p.stdout[-4000:] + p.stderr[-2000:]


def test_student_docs_name_no_missing_file(tmp_path):
    """the student tree's docs do not link to (or name, unmarked) repository files the tree lacks (tests/, the kit's
    private parts)"""
    kit.make(str(tmp_path / "student"))
    assert kit.missing_refs(str(tmp_path / "student")) == []
    readme = open(tmp_path / "student" / "assignments" / "README.md", encoding="utf-8").read()
    assert "`tests/test_assignments.py`" + kit.ELSEWHERE in readme
    text = kit.student_doc("see [the test](../tests/test_assignments.py) and [grpo](../docs/grpo.md)",
                           "assignments/README.md", {"docs/grpo.md"})
    assert text == "see the test" + kit.ELSEWHERE + " and [grpo](../docs/grpo.md)"


def test_every_grader_assert_has_a_message():
    """a failing assert's message is the student's feedback: none may be bare"""
    import ast
    import glob

    bare = []
    for path in sorted(glob.glob(os.path.join(REPO, "assignments", "graders", "test_*.py"))):
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Assert) and node.msg is None:
                bare.append(f"{os.path.basename(path)}:{node.lineno}")
    assert bare == []


@pytest.mark.parametrize("argv, message", [
    (["make", "--out", "."], "is the repository"),
    (["make", "--out", ".", "--force"], "is the repository"),
    (["grade", ".", "--only", "01", "--json", "no_such_folder_25/r.json"], "not a writable folder"),
    (["grade", "no_such_tree_25"], "is not a folder"),
    (["gradescope", "--out", "z.zip", "--visibility", "10=later"], "visibility is one of"),
])
def test_cli_answers_in_one_line(argv, message):
    """bad input: one line on stderr naming the flag, exit 2, nothing written (issue #24's cases included)"""
    p = subprocess.run([sys.executable, "-m", "assignments", *argv], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2 and message in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not os.path.exists(os.path.join(REPO, "no_such_folder_25")) and not os.path.exists(os.path.join(REPO, "z.zip"))
