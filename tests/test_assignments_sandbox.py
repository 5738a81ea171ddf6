"""Trusted grading's transport (assignments/sandbox.py, sandbox_child.py): the graded code runs in a child process
and only data comes back; gradients, in-place writes, errors, hangs and crashes are reported as the grader needs."""
import math
import os
import sys

import numpy as np
import pytest
import torch

from conftest import REPO

sys.path.insert(0, REPO)
from assignments import sandbox_child as wire  # noqa: E402
from assignments.sandbox import Sandbox, StudentError, sandbox_user  # noqa: E402

STUDENT = '''
import os, sys, time, torch

def k3(logp, ref):
    d = ref - logp
    return torch.exp(d) - d - 1

def k3_detached(logp, ref):
    d = ref - logp.detach()
    return torch.exp(d) - d - 1

def loss(logp, adv):
    return (-(adv[:, None] * logp)).mean(), {"kl": logp.mean().detach(), "n": 3, "name": "x", "t": (1, 2.5)}

def in_place(r):
    r.sub_(1.0)
    return r.sum()

def pid():
    return os.getpid(), os.getuid()

def fails():
    raise ValueError("bad input")

def todo():
    raise NotImplementedError("Exercise 01: see assignments/ex01.md")

def hang():
    while True:
        pass

def die():
    os._exit(3)

def array():
    import numpy as np
    return np.arange(4.0)

class Reward:
    def __init__(self, scale):
        self.scale = scale
    def __call__(self, x):
        return x * self.scale

def make(scale):
    return Reward(scale)

def patched_k3(logp, ref):
    return kl_k3(logp, ref)

def kl_k3(logp, ref):
    return logp * 0 + 42.0
'''


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    tree = tmp_path_factory.mktemp("tree")
    (tree / "student.py").write_text(STUDENT)
    b = Sandbox(str(tree), scratch=str(tmp_path_factory.mktemp("scratch")), timeout=5)
    yield b
    b.close()


def test_codec_carries_data_only():
    """tensors (any dtype), numpy arrays, tuples, dicts, numbers and strings round-trip; an object is refused"""
    t = [torch.arange(6, dtype=torch.float64).reshape(2, 3), torch.tensor([True, False]), torch.zeros(0, 2)]
    obj = {"a": t[0], "b": (t[1], 1, 2.5, "s", None), 3: [t[2], np.arange(3)]}
    tensors = []
    doc = wire.pack(obj, tensors)
    header, data = wire.decode(wire.encode({"d": doc}, tensors)[8:])
    back = wire.unpack(header["d"], data)
    assert torch.equal(back["a"], t[0]) and back["a"].dtype == torch.float64
    assert torch.equal(back["b"][0], t[1]) and back["b"][1:] == (1, 2.5, "s", None)
    assert back[3][0].shape == (0, 2) and isinstance(back[3][1], np.ndarray)
    with pytest.raises(TypeError, match="cannot send"):
        wire.pack(object(), [])


def test_calls_run_in_another_process(box):
    """the student's function runs in the child (another pid); values come back as tensors"""
    st = box.module("student")
    child_pid, _ = st.pid()
    assert child_pid != os.getpid()
    logp = torch.tensor([[-1.0, -2.0]], dtype=torch.float64)
    out = st.k3(logp, logp + 0.5)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    assert torch.allclose(out, torch.full((1, 2), math.exp(0.5) - 1.5, dtype=torch.float64))


def test_gradients_come_back(box):
    """a differentiable output is rebuilt with the child's Jacobian: backward() here gives the student's gradient;
    a detached one comes back without requires_grad"""
    st = box.module("student")
    logp = torch.tensor([[-1.0, -2.0, -0.5]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-1.0, -1.0, -1.5]], dtype=torch.float64)
    k = st.k3(logp, ref)
    k.sum().backward()
    assert torch.allclose(logp.grad, 1 - (ref - logp.detach()).exp())
    assert not st.k3_detached(logp, ref).requires_grad
    adv = torch.tensor([1.0, -2.0], dtype=torch.float64)
    lp = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    value, stats = st.loss(lp, adv)
    value.backward()
    assert torch.allclose(lp.grad, (-adv[:, None] / 6).expand(2, 3))
    assert not stats["kl"].requires_grad and stats["n"] == 3 and stats["t"] == (1, 2.5)


def test_in_place_writes_show(box):
    r = torch.ones(2, 2, dtype=torch.float64)
    box.module("student").in_place(r)
    assert torch.equal(r, torch.zeros(2, 2, dtype=torch.float64))


@pytest.mark.slow
def test_errors_hangs_and_crashes(box):
    """an exception keeps its type (NotImplementedError, or a StudentError subclass of the builtin); a hang or a
    crash is an AssertionError naming it, and the next call gets a fresh child"""
    st = box.module("student")
    with pytest.raises(NotImplementedError, match="Exercise 01"):
        st.todo()
    with pytest.raises(ValueError, match="bad input") as e:
        st.fails()
    assert isinstance(e.value, StudentError) and e.value.typename == "ValueError" and "student.py" in e.value.where
    box.timeout = 1
    with pytest.raises(AssertionError, match="time limit"):
        st.hang()
    box.timeout = 5
    with pytest.raises(AssertionError, match="exit 3"):
        st.die()
    assert isinstance(st.array(), np.ndarray)


def test_handles_and_patches(box):
    """an object stays in the child and is called through a handle; a patch replaces a name during one call"""
    st = box.module("student")
    reward = st.make(3.0)
    assert callable(reward)
    assert torch.equal(reward(torch.ones(2)), torch.full((2,), 3.0))
    logp = torch.zeros(1, 2)
    assert torch.equal(st.patched_k3(logp, logp), torch.full((1, 2), 42.0))
    assert torch.equal(st.patched(kl_k3="exact_k3").patched_k3(logp, logp), torch.zeros(1, 2))
    assert torch.equal(st.patched_k3(logp, logp), torch.full((1, 2), 42.0)), "the patch outlived its call"


def test_sandbox_user_checks():
    """the account must exist and not be root; without root the grader cannot drop to it (one line each)"""
    assert sandbox_user(None) is None and sandbox_user("") is None
    with pytest.raises(SystemExit, match="no such account"):
        sandbox_user("no_such_user_here_25")
    with pytest.raises(SystemExit, match="is root"):
        sandbox_user("root")


def test_child_python(monkeypatch, tmp_path):
    """the child's interpreter is this one unless ASSIGN_SANDBOX_PYTHON names another; as root, an account that
    cannot run it is refused in one line naming the variable (the real drop: test_assignments_gradescope.py)"""
    import assignments.sandbox as sb

    monkeypatch.delenv(sb.PYTHON_ENV, raising=False)
    assert sb.child_python() == sys.executable
    monkeypatch.setenv(sb.PYTHON_ENV, str(tmp_path / "no_python_here"))
    assert sb.child_python() == str(tmp_path / "no_python_here")
    if os.geteuid() != 0:
        pytest.skip("refusing an account needs root")
    try:
        import pwd

        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no account `nobody`")
    with pytest.raises(SystemExit, match=f"cannot run .*no_python_here.*set {sb.PYTHON_ENV}"):
        sandbox_user("nobody")


def test_privilege_drop_path(tmp_path, monkeypatch):
    """with an account, the child is started as that uid and gid with no supplementary groups, in its own session,
    with an environment of its own (stubbed account lookup and Popen: dropping needs root and an interpreter the
    account can run)"""
    import assignments.sandbox as sb

    seen = {}

    class Fake:
        def __init__(self, cmd, **kw):
            seen.update(kw, cmd=cmd)
            raise OSError("stop here")

    monkeypatch.setattr(sb, "sandbox_user", lambda name: (4242, 4343))
    monkeypatch.setattr(sb, "hand_over", lambda path, ids: seen.setdefault("owned", []).append((path, ids)))
    monkeypatch.setattr(sb.subprocess, "Popen", Fake)
    monkeypatch.setenv(sb.PYTHON_ENV, "/opt/course/python")
    box = sb.Sandbox(str(tmp_path), user="student", scratch=str(tmp_path / "s"))
    with pytest.raises(OSError, match="stop here"):
        box.start()
    assert seen["user"] == 4242 and seen["group"] == 4343 and seen["extra_groups"] == []
    assert seen["start_new_session"] and seen["umask"] == 0o077
    assert seen["owned"] == [(str(tmp_path / "s"), (4242, 4343))]
    assert set(seen["env"]) >= {"HOME", "PATH"} and not any(k.startswith("ASSIGN") for k in seen["env"])
    assert seen["cmd"][1:3] == ["-I", "-c"], "the child's code comes from the grader, not from a kit file"
    assert seen["cmd"][0] == "/opt/course/python", "ASSIGN_SANDBOX_PYTHON chooses the child's interpreter"
