"""A run directory has one owner: the lock, the run's identity and where a --resume writes.

`<out_dir>/<exp_name>_s<seed>/` holds one run, and only the process that owns it writes there:

    run.lock    {"pid", "host", "started"}: taken when the run starts (O_EXCL), held until it ends. A second writer
                stops in one line naming the holder; a lock left by a dead process of this host is taken over with a
                message; one of another host is never taken over (its process cannot be checked from here).
    run.json    {"id", "parent"}: the run's identity, kept by a continued run. Its checkpoints record the id, so pruning and
                `latest` consider only checkpoints this run wrote; "parent" names the checkpoint a fork started from.

--exp-name is one path component, so a run directory is always directly under --out-dir. `resume_target` decides
where a --resume writes: into the checkpoint's own run directory (continuing it), or, when --exp-name (or --out-dir)
names another one, into a fresh directory that records the checkpoint as its parent; never into a directory that
holds another run.
"""
from __future__ import annotations

import atexit
import json
import os
import socket
import sys
import time
import uuid

LOCK, RUN_INFO = "run.lock", "run.json"
_held: list[str] = []  # lock files this process holds


def name_problem(exp_name: str) -> str:
    """'' when --exp-name is one path component; otherwise one line saying why not."""
    seps = {os.sep, os.altsep or os.sep, "/"}
    if not exp_name or exp_name in (".", "..") or any(s in exp_name for s in seps) or "\0" in exp_name:
        return (f"--exp-name {exp_name!r}: must be one path component (no '/', not '.' or '..'): the run directory "
                f"is <out-dir>/<exp-name>_s<seed>")
    return ""


def holds_run(directory: str) -> bool:
    """Whether `directory` holds a run: its metrics or checkpoints (a run that failed before its first step, leaving
    only run.json, may be started again)."""
    return any(os.path.exists(os.path.join(directory, f)) for f in ("metrics.jsonl", "checkpoints"))


def given(flag: str, argv: list[str] | None = None) -> bool:
    """Whether --flag (either spelling, with or without =value) is on the command line."""
    names = {flag, flag.replace("-", "_").replace("__", "--", 1)}
    return any(a.split("=", 1)[0] in names for a in (sys.argv[1:] if argv is None else argv))


def resume_target(step_dir: str, exp_name: str, out_dir: str, seed: int,
                  argv: list[str] | None = None) -> tuple[str, str, str | None]:
    """Where a run resumed from checkpoint `step_dir` writes. --exp-name / --out-dir not given: the checkpoint's own
    run's. -> (exp_name, out_dir, parent): parent is None when the run continues in its own directory, else the
    checkpoint a fresh directory forks from. Raises ValueError in one line when the target holds another run."""
    own = os.path.dirname(os.path.dirname(os.path.abspath(step_dir)))
    suffix = f"_s{seed}"
    if not given("--exp-name", argv):
        if not os.path.basename(own).endswith(suffix):
            raise ValueError(f"--resume {step_dir}: its run directory {own} is not named <exp-name>{suffix}; pass "
                             f"--exp-name to continue in a fresh run directory")
        exp_name = os.path.basename(own)[: -len(suffix)]
    if not given("--out-dir", argv):
        out_dir = os.path.dirname(own)
    target = os.path.join(out_dir, f"{exp_name}{suffix}")
    if os.path.realpath(target) == os.path.realpath(own):
        return exp_name, out_dir, None
    if holds_run(target):
        raise ValueError(f"--resume {step_dir} would write into {target}, which holds another run: continue the "
                         f"checkpoint's own run (drop --exp-name and --out-dir) or fork into a fresh --exp-name")
    return exp_name, out_dir, step_dir


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _read_lock(path: str) -> dict | None:
    """The lock's holder; a lock being written right now (empty) is retried briefly. None: no lock."""
    for _ in range(20):
        try:
            with open(path) as f:
                text = f.read()
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(text)
            if isinstance(holder, dict) and isinstance(holder.get("pid"), int):
                return holder
        except json.JSONDecodeError:
            pass
        time.sleep(0.05)
    return {"pid": -1, "host": "?", "started": "?"}  # unreadable: treated as held, never taken over


def acquire(directory: str) -> None:
    """Take `directory`'s lock for this process (released at exit, or by release()). Raises RuntimeError in one
    line naming the holder when another live process holds it; a stale lock of this host is taken over."""
    path = os.path.join(directory, LOCK)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(5):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            if holder is None:  # released meanwhile
                continue
            if holder.get("pid") == os.getpid() and holder.get("host") == me["host"]:
                return
            if holder.get("host") != me["host"] or holder["pid"] < 0 or _pid_alive(holder["pid"]):
                raise RuntimeError(f"{directory} is in use by pid {holder['pid']} on {holder.get('host')} (since "
                                   f"{holder.get('started')}; lock {path}): wait for that run, or use another "
                                   f"--exp-name, --seed or --out-dir; if that process is gone, remove {path}")
            aside = f"{path}.stale-{os.getpid()}"
            try:  # take over atomically: only one process can move the stale lock aside
                os.replace(path, aside)
            except FileNotFoundError:
                continue
            moved = _read_lock(aside) or {}
            if moved.get("pid") != holder["pid"] and _pid_alive(moved.get("pid", -1)):  # a fresh lock: put it back
                os.replace(aside, path)
                continue
            os.remove(aside)
            print(f"warning: taking over the lock of {directory}: its holder, pid {holder['pid']} on this host, is "
                  f"no longer running", file=sys.stderr)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        if not _held:
            atexit.register(release)
        _held.append(path)
        return
    raise RuntimeError(f"cannot take the lock {path}: other processes keep taking it")


def live_holder(directory: str) -> dict | None:
    """The holder of `directory`'s lock when it may be running (this host's live process, or another host's), else
    None (no lock, or a stale one)."""
    holder = _read_lock(os.path.join(directory, LOCK))
    if holder is None:
        return None
    if holder.get("host") == socket.gethostname() and holder["pid"] >= 0 and not _pid_alive(holder["pid"]):
        return None
    return holder


def release() -> None:
    """Remove the locks this process holds (only while they still name this process)."""
    while _held:
        path = _held.pop()
        holder = _read_lock(path) or {}
        if holder.get("pid") == os.getpid():
            try:
                os.remove(path)
            except FileNotFoundError:
                pass


def identify(directory: str, new: bool, parent: str | None = None) -> str:
    """Give `directory` (locked by this process) its identity, run.json: a new one for a fresh run or a fork
    (new=True), the one it has for a continued run. -> the run's id."""
    path = os.path.join(directory, RUN_INFO)
    if new or not os.path.isfile(path):
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump({"id": uuid.uuid4().hex, "parent": parent}, f, indent=1)
        os.replace(tmp, path)
    return run_id(directory)


def run_id(directory: str) -> str | None:
    """The id in `directory`/run.json (None: a directory without one, e.g. written before run.json existed)."""
    try:
        with open(os.path.join(directory, RUN_INFO)) as f:
            return json.load(f).get("id")
    except (OSError, ValueError, AttributeError):
        return None
