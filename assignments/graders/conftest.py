"""The graders' pytest plugin: points per test, one-line feedback, a time limit per test, the graded code in a child.

Run through `python -m assignments grade DIR` (assignments/kit.py), which sets
    ASSIGN_TREE     the graded tree (a fresh student tree with the submission's exercise files)
    ASSIGN_SCRATCH  the child's scratch folder (its HOME; the outcome run's output)
    ASSIGN_USER     the unprivileged account the child runs as ('' = the grader's own)
    ASSIGN_RESULTS  where this plugin writes one JSON record per test: exercise, name, points, score, feedback.
This process imports only the kit's code. The graded tree's modules are imported in a child process
(assignments/sandbox.py): a fixture such as `vanilla` is a proxy whose functions run there on the inputs a test
sends, and return data that the test compares here. A test declares its points with `@pytest.mark.points(n)`; it
scores n when it passes, 0 otherwise, unless it calls the `credit(fraction, feedback)` fixture (tiered credit: the
outcome run). A failing test's feedback is the first line of its assertion message, which names the likely mistake.
"""
from __future__ import annotations

import json
import os
import re
import sys

import pytest

TREE = os.path.abspath(os.environ.get("ASSIGN_TREE", os.getcwd()))
UNIT_TIMEOUT = 30  # seconds per unit test (each takes well under 10 s on a 2-core laptop)
KIT_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if KIT_REPO not in sys.path:
    sys.path.insert(0, KIT_REPO)  # the kit's own modules (the sandbox, the evaluation), never the graded tree's
from assignments.sandbox import Sandbox, StudentError, become_subreaper, kill_descendants  # noqa: E402

_records: list[dict] = []
TIMED_OUT = re.compile(r"Timeout \(?>\d")
TOO_SLOW = "took longer than the time limit (an endless loop, or a Python loop over every element?)"


def pytest_configure(config):
    config.addinivalue_line("markers", "points(n): what the test is worth")
    import torch

    torch.set_num_threads(1)  # the same float64 sums whatever the machine's cores


def pytest_sessionstart(session):
    if os.environ.get("ASSIGN_TREE"):
        become_subreaper()  # a daemon of the graded code cannot outlive the grading (kill_descendants)
        box().start()  # the child's imports (torch) before any test's time limit starts


def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT))


_box: Sandbox | None = None


def box() -> Sandbox:
    """The child process that runs the graded code (started once, restarted after a crash or a time-out)."""
    global _box
    if _box is None:
        _box = Sandbox(TREE, user=os.environ.get("ASSIGN_USER") or None,
                       scratch=os.environ.get("ASSIGN_SCRATCH") or None)
    return _box


def load(name: str):
    """A module of the graded tree (e.g. "grpo_vanilla", "common.sampling"), imported in the child: a proxy."""
    try:
        return box().module(name)
    except StudentError as e:  # a syntax error in the student's file: say which file
        raise AssertionError(f"cannot import {name} from the graded tree: {e.typename}: {e}") from None


class _Credit:
    def __init__(self):
        self.fraction, self.feedback = None, ""

    def __call__(self, fraction: float, feedback: str = ""):
        self.fraction, self.feedback = max(0.0, min(1.0, float(fraction))), feedback


@pytest.fixture
def credit(request):
    c = _Credit()
    request.node._credit = c
    return c


def _feedback(call) -> str:
    e = call.excinfo
    if e is None:
        return ""
    v = e.value
    if isinstance(v, NotImplementedError):
        return f"not implemented yet ({v})"
    if e.typename == "Failed" and TIMED_OUT.search(str(v)):
        return TOO_SLOW
    if isinstance(v, StudentError):
        first = str(v).splitlines()[0] if str(v) else ""
        return f"your code raised {v.typename}" + (f" at {v.where}" if v.where else "") + (f": {first}" if first else "")
    if isinstance(v, AssertionError):
        text = str(v).split("\nassert ")[0].strip() or "assertion failed"
        return " ".join(text.split("\n")[:3])
    return f"{e.typename} in the grader: {str(v).splitlines()[0] if str(v) else ''}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "setup" and rep.passed:
        return
    if rep.when == "teardown" and rep.passed:
        return
    if rep.when == "call" or rep.failed:
        marker = item.get_closest_marker("points")
        points = float(marker.args[0]) if marker else 0.0
        module = item.module.__name__.rpartition(".")[2]
        exercise = module[7:9] if module.startswith("test_ex") else module
        doc = (item.function.__doc__ or item.name).strip().splitlines()[0]
        c = getattr(item, "_credit", None)
        if rep.passed:
            frac = c.fraction if c is not None and c.fraction is not None else 1.0
            feedback = c.feedback if c is not None else ""
        else:
            frac, feedback = 0.0, _feedback(call)
            if TIMED_OUT.search(rep.longreprtext or ""):  # pytest-timeout: "Timeout (>30.0s)"
                feedback = TOO_SLOW
        rec = {"exercise": exercise, "test": item.name, "name": doc, "points": points,
               "score": round(points * frac, 4), "feedback": feedback, "duration": round(rep.duration, 2)}
        _records[:] = [r for r in _records if r["test"] != item.name or r["exercise"] != exercise] + [rec]


def pytest_sessionfinish(session):
    if _box is not None:
        _box.close()
    if os.environ.get("ASSIGN_TREE"):
        kill_descendants()  # before the results exist: nothing of the graded code is left to touch them
    path = os.environ.get("ASSIGN_RESULTS")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(_records, f, indent=1)


@pytest.fixture
def vanilla():
    return load("grpo_vanilla")


@pytest.fixture
def stage():
    return load("stage")


@pytest.fixture
def gcpo():
    return load("gcpo")


@pytest.fixture
def ar_grpo():
    return load("ar_grpo")


@pytest.fixture
def sampling():
    return load("common.sampling")


@pytest.fixture
def exact_k3():
    """Replace kl_k3 in a script by an independent k3 (in the child, during each call), so that a loss exercise is
    graded apart from exercise 02."""
    return lambda module: module.patched(kl_k3="exact_k3")


@pytest.fixture
def sandbox():
    """The child process running the graded code (its tree, its account: Sandbox.spawn runs a program there)."""
    return box()


@pytest.fixture
def tree_import():
    """load(name): import a module of the graded tree."""
    return load


@pytest.fixture
def outcome():
    """The KIT's assignments/outcome.py (its command, tiers and evaluation), never the graded tree's copy."""
    from assignments import outcome as mod

    return mod
