"""The graders' pytest plugin: points per test, one-line feedback, a time limit per test, the graded tree on sys.path.

Run through `python -m assignments grade DIR` (assignments/kit.py), which sets
    ASSIGN_TREE     the tree under grade (a student's or the reference); its modules are imported, never the kit's
    ASSIGN_RESULTS  where this plugin writes one JSON record per test: exercise, name, points, score, feedback.
A test declares its points with `@pytest.mark.points(n)`; it scores n when it passes, 0 otherwise, unless it calls
the `credit(fraction, feedback)` fixture (tiered credit: the outcome run). A failing test's feedback is the first
line of its assertion message, which names the likely mistake.
"""
from __future__ import annotations

import importlib
import json
import os
import re
import sys

import pytest

TREE = os.path.abspath(os.environ.get("ASSIGN_TREE", os.getcwd()))
UNIT_TIMEOUT = 30  # seconds per unit test (each takes well under 10 s on a 2-core laptop)
if sys.path[:1] != [TREE]:
    sys.path.insert(0, TREE)

_records: list[dict] = []
TIMED_OUT = re.compile(r"Timeout \(?>\d")
TOO_SLOW = "took longer than the time limit (an endless loop, or a Python loop over every element?)"


def pytest_configure(config):
    config.addinivalue_line("markers", "points(n): what the test is worth")
    import torch

    torch.set_num_threads(1)  # the same float64 sums whatever the machine's cores


def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT))


def load(name: str):
    """Import a module of the graded tree (e.g. "grpo_vanilla", "common.sampling"), checking it comes from the tree."""
    try:
        mod = importlib.import_module(name)
    except Exception as e:  # a syntax error in the student's file: say which file
        raise AssertionError(f"cannot import {name} from the graded tree: {type(e).__name__}: {e}") from e
    path = os.path.abspath(getattr(mod, "__file__", "") or "")
    if not path.startswith(TREE + os.sep):
        raise AssertionError(f"{name} was imported from {path}, not from the graded tree {TREE}")
    return mod


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
    if isinstance(v, AssertionError):
        text = str(v).split("\nassert ")[0].strip() or "assertion failed"
        return " ".join(text.split("\n")[:3])
    return f"{e.typename}: {str(v).splitlines()[0] if str(v) else ''} (wrong shapes or dtypes?)"


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
def exact_k3(monkeypatch):
    """Replace kl_k3 in a script by an independent k3, so that a loss exercise is graded apart from exercise 02."""
    import torch

    def k3(logp, ref_logp):
        d = ref_logp - logp
        return torch.exp(d) - d - 1

    def patch(module):
        monkeypatch.setattr(module, "kl_k3", k3)
        return module

    return patch


@pytest.fixture
def tree_import():
    """load(name): import a module of the graded tree."""
    return load


@pytest.fixture
def outcome():
    """The KIT's assignments/outcome.py (its command and tiers), not the graded tree's copy."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "outcome.py")
    spec = importlib.util.spec_from_file_location("assignments_kit_outcome", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
