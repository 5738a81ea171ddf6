"""Trusted grading, the grader's side: the student's code runs only in a child process; the grader sends it
inputs and gets plain data back (assignments/sandbox_child.py is the child).

    box = Sandbox(tree, user="student")     # user: drop to this unprivileged account (needs root), or None
    vanilla = box.module("grpo_vanilla")    # imports it in the child; vanilla.group_advantages(r, 1e-4) -> tensor
    box.spawn([...], timeout=540)           # a whole program (the outcome run), in the child's account

A call's tensors go over a pipe in safetensors; what comes back is data (tensors, numbers, strings, lists,
tuples, dicts) or a handle to an object that stays in the child (a student's class instance, callable through the
handle). Gradients: a returned tensor that depends on an input with requires_grad comes back with its Jacobian and
is rebuilt in the grader as value + J·(x − x.detach()), so `.backward()` in the grader gives the student's
first-order gradient. An input the student's code modified in place is modified in the grader too. An exception
in the child comes back as StudentError (or NotImplementedError), a hang past the time limit or a crash as an
AssertionError naming it, and the child is restarted for the next call.

The child's interpreter is this one, or $ASSIGN_SANDBOX_PYTHON (child_python). The sandbox account must be able to
run it and import the requirements with it: setup.sh's virtual environment is world-readable, but an interpreter
under a folder only its owner can enter (a pyenv in a home folder) is not, and then ASSIGN_SANDBOX_PYTHON names one
that is, with the same Python version and the same packages, e.g. a venv of the system Python whose site-packages
holds a .pth file naming this environment's site-packages (tests/test_assignments_gradescope.py builds one).
"""
from __future__ import annotations

import os
import pwd
import select
import shutil
import signal
import struct
import subprocess
import sys
import time

from assignments import sandbox_child as wire

CHILD_SOURCE = open(wire.__file__, encoding="utf-8").read()
CALL_TIMEOUT = 25.0  # seconds per call (pytest-timeout's 30 s per test is the backstop)
PYTHON_ENV = "ASSIGN_SANDBOX_PYTHON"  # the child's interpreter, if not this one (child_python)
STARTUP_TIMEOUT = 120.0  # seconds for the child to import torch and answer (a loaded machine)
BUILTIN_ERRORS = {c.__name__: c for c in (ValueError, TypeError, RuntimeError, IndexError, KeyError, AttributeError,
                                          ZeroDivisionError, ImportError, ModuleNotFoundError, OverflowError,
                                          AssertionError, LookupError, ArithmeticError, FileNotFoundError, OSError)}


class StudentError(Exception):
    """An exception raised by the student's code in the child (its type name in .typename)."""

    typename = "Exception"
    where = ""


_ERROR_TYPES: dict[str, type] = {}


def student_error(name: str, message: str, where: str = "") -> Exception:
    base = BUILTIN_ERRORS.get(name, RuntimeError)
    cls = _ERROR_TYPES.get(name)
    if cls is None:
        cls = _ERROR_TYPES[name] = type(f"Student{name}", (StudentError, base), {"typename": name})
    e = cls(message)
    e.where = where
    return e


def child_python() -> str:
    """The interpreter that runs the graded code (the child, the outcome run): $ASSIGN_SANDBOX_PYTHON, else this one."""
    return os.environ.get(PYTHON_ENV) or sys.executable


REQUIRED = ("torch", "numpy", "safetensors")
PROBE = ("import importlib.util as u, sys; "
         f"sys.exit(0 if all(u.find_spec(m) for m in {REQUIRED!r}) else 3)")


def can_run(python: str, ids: tuple[int, int]) -> bool:
    """Whether the account (uid, gid) can start `python` in isolated mode and find the requirements with it."""
    try:
        return subprocess.run([python, "-I", "-c", PROBE], user=ids[0], group=ids[1], extra_groups=[], cwd="/",
                              env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def sandbox_user(name: str | None) -> tuple[int, int] | None:
    """(uid, gid) of the unprivileged account the child runs as; None = the grader's own account. Refuses root, an
    unknown account, and an account that cannot run the child's interpreter with the requirements, in one line."""
    if not name:
        return None
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise SystemExit(f"--sandbox-user {name}: no such account (setup.sh creates it: useradd)") from None
    if pw.pw_uid == 0:
        raise SystemExit(f"--sandbox-user {name} is root: the graded code must run unprivileged")
    if os.geteuid() != 0:
        raise SystemExit(f"--sandbox-user {name} needs the grader to run as root (to drop to that account)")
    ids = pw.pw_uid, pw.pw_gid
    python = child_python()
    if not can_run(python, ids):
        raise SystemExit(f"--sandbox-user {name} cannot run {python} with {', '.join(REQUIRED)} (a folder above it "
                         f"closed to that account?): set {PYTHON_ENV} to an interpreter it can run, with the same "
                         "packages (assignments/sandbox.py)")
    return ids


def hand_over(path: str, ids: tuple[int, int] | None) -> None:
    """Give the child's account a folder (the graded tree, its scratch space): chown -R."""
    if ids is None:
        return
    for d, dirs, files in os.walk(path):
        os.chown(d, *ids)
        for f in files:
            os.lchown(os.path.join(d, f), *ids)


def child_env(home: str) -> dict:
    """The child's whole environment: nothing of the grader's (no results path, no kit path)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
           "MPLCONFIGDIR": os.path.join(home, ".mpl")}
    return env


def become_subreaper() -> None:
    """Linux: orphaned descendants (a daemon the graded code forked, setsid or not) are re-parented to this
    process instead of init, so kill_descendants() finds them. A no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read().decode("utf-8", "replace")
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def kill_descendants() -> int:
    """SIGKILL every process below this one (with become_subreaper, orphans included) -> how many."""
    n = 0
    for _ in range(100):
        kids = _children(os.getpid())
        if not kids:
            break
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in kids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        n += len(kids)
    return n


def _kill(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.kill()
    except ProcessLookupError:
        pass
    p.wait()


class Remote:
    """A name in the child: a module's attribute or a handle; calling it runs the call in the child."""

    def __init__(self, box: "Sandbox", target: dict, patch: dict | None = None, label: str = ""):
        self._box, self._target, self._patch, self._label = box, target, patch or {}, label

    def __call__(self, *args, **kwargs):
        return self._box.call(self._target, args, kwargs, self._patch, self._label)

    def __getattr__(self, name):
        raise AttributeError(f"{self._label}.{name}: only calls reach the graded code")


class Module:
    """A module of the graded tree, seen from the grader: attribute access gives callables that run in the child."""

    def __init__(self, box: "Sandbox", name: str, patch: dict | None = None):
        self._box, self._name, self._patch = box, name, patch or {}
        self.__file__ = os.path.join(box.tree, box.request({"op": "import", "module": name})["file"])

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return Remote(self._box, {"module": self._name, "attr": attr}, self._patch, f"{self._name}.{attr}")

    def patched(self, **patch) -> "Module":
        """The same module with attributes replaced, in the child, during each call (e.g. kl_k3="exact_k3")."""
        m = object.__new__(Module)
        m._box, m._name, m._patch, m.__file__ = self._box, self._name, {**self._patch, **patch}, self.__file__
        return m


class Sandbox:
    def __init__(self, tree: str, user: str | None = None, scratch: str | None = None, timeout: float = CALL_TIMEOUT):
        self.tree = os.path.abspath(tree)
        self.ids = sandbox_user(user)
        self.scratch = scratch or os.path.join(os.path.dirname(self.tree), "scratch")
        os.makedirs(self.scratch, exist_ok=True)
        hand_over(self.scratch, self.ids)
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.log = os.path.join(self.scratch, "child.log")

    # --------------------------------------------------------------- processes in the child's account

    def _popen(self, cmd: list[str], **kw) -> subprocess.Popen:
        extra = {}
        if self.ids is not None:
            extra = dict(user=self.ids[0], group=self.ids[1], extra_groups=[])
        return subprocess.Popen(cmd, cwd=self.tree, env=child_env(self.scratch), start_new_session=True,
                                umask=0o077, **extra, **kw)

    def start(self) -> None:
        """Start the child and wait until it is ready (its imports do not count against a call's time limit)."""
        err = open(self.log, "ab")
        self.proc = self._popen([child_python(), "-I", "-c", CHILD_SOURCE, self.tree], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err)
        err.close()
        self.request({"op": "ping"}, timeout=STARTUP_TIMEOUT)

    def close(self) -> None:
        if self.proc is not None:
            _kill(self.proc)
            self.proc = None

    def spawn(self, cmd: list[str], timeout: float) -> tuple[int, str]:
        """Run a program in the graded tree as the child's account -> (exit code, the last lines of its output);
        exit code None when it ran past `timeout` (killed, with its whole process group)."""
        out_path = os.path.join(self.scratch, "spawn.log")
        with open(out_path, "wb") as out:
            p = self._popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
            try:
                p.wait(timeout)
                code = p.returncode
            except subprocess.TimeoutExpired:
                code = None
            _kill(p)  # and anything it left running in its session
        with open(out_path, "rb") as f:
            f.seek(max(0, os.path.getsize(out_path) - 4000))
            tail = f.read().decode("utf-8", "replace")
        return code, tail

    # --------------------------------------------------------------- requests

    def _tail(self) -> str:
        try:
            with open(self.log, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log) - 2000))
                lines = [ln for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
            return lines[-1][:300] if lines else ""
        except OSError:
            return ""

    def _read_exact(self, n: int, deadline: float) -> bytes:
        fd, chunks, got = self.proc.stdout.fileno(), [], 0
        while got < n:
            left = deadline - time.time()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.close()
                raise AssertionError("took longer than the time limit (an endless loop, or a Python loop over every "
                                     "element?)")
            chunk = os.read(fd, min(n - got, 1 << 20))
            if not chunk:
                code = self.proc.poll() if self.proc.poll() is not None else self.proc.wait(5)
                tail = self._tail()
                self.close()
                raise AssertionError(f"the graded code ended its process (exit {code})"
                                     + (f": {tail}" if tail else ""))
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def request(self, req: dict, tensors: list | None = None, timeout: float | None = None) -> dict:
        tensors = tensors or []
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        try:
            self.proc.stdin.write(wire.encode(req, tensors))
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            tail = self._tail()
            self.close()
            raise AssertionError("the graded code's process is gone" + (f": {tail}" if tail else "")) from None
        deadline = time.time() + (timeout or self.timeout)
        (n,) = struct.unpack(">Q", self._read_exact(8, deadline))
        if n > wire.MAX_MESSAGE:
            self.close()
            raise AssertionError(f"the graded code answered {n} bytes (more than {wire.MAX_MESSAGE})")
        header, data = wire.decode(self._read_exact(n, deadline))
        if "error" in header:
            msg = header["message"]
            if header.get("not_implemented"):
                raise NotImplementedError(msg)
            raise student_error(header["error"], msg, header.get("where", ""))
        header["$data"] = data
        return header

    def module(self, name: str) -> Module:
        return Module(self, name)

    def call(self, target: dict, args: tuple, kwargs: dict, patch: dict, label: str = ""):
        import torch

        tensors: list = []
        doc_args = wire.pack(list(args), tensors, self._handle_arg)
        doc_kwargs = wire.pack(kwargs, tensors, self._handle_arg)
        sent = list(tensors)
        grad = [bool(isinstance(t, torch.Tensor) and t.requires_grad) for t in sent]
        ans = self.request({"op": "call", "target": target, "args": doc_args, "kwargs": doc_kwargs, "grad": grad,
                            "patch": patch}, sent)
        data = ans["$data"]
        leaves = [t for t, g in zip(sent, grad) if g]
        for i, j in ans["changed"].items():  # the student's code wrote into an input: so does the call here
            t = sent[int(i)]
            new = data[f"t{j}"]
            if isinstance(t, torch.Tensor) and not t.requires_grad and new.shape == t.shape:
                with torch.no_grad():
                    t.copy_(new)
        for i, js in ans["jac"].items():  # differentiable outputs: value + J·(x − x.detach())
            v = data[f"t{i}"]
            out = v
            for leaf, j in zip(leaves, js):
                J = data[f"t{j}"].to(leaf.dtype)
                out = out + (J @ (leaf - leaf.detach()).reshape(-1)).reshape(v.shape).to(v.dtype)
            data[f"t{i}"] = out
        return wire.unpack(ans["result"], data, lambda doc: Remote(self, {"handle": doc["$h"]}, None,
                                                                   f"<{doc.get('type', 'object')}>"))

    @staticmethod
    def _handle_arg(obj):
        if isinstance(obj, Remote) and "handle" in obj._target:
            return {"$h": obj._target["handle"]}
        raise TypeError(f"cannot send a {type(obj).__name__} to the graded code")


def copy_tree(src: str, dst: str) -> None:
    """A plain copy of a tree (links followed), for the child's account to own."""
    shutil.copytree(src, dst, symlinks=False, dirs_exist_ok=True)
