"""One-line errors at every entry point: the shared handler of the scripts, evaluate.py, study.py, common.export,
toy.train, common.coco_prompts and common.imagenet_prompts.

`install(directory=..., resume=..., oom=...)` at the start of a program answers, instead of a traceback:
- Ctrl-C (KeyboardInterrupt) outside the training loop: `error: interrupted (Ctrl-C)` and what to run next;
- a disk error in any writer (full disk, quota, read-only volume, I/O error): the file and how to continue;
- an allocator error (CPU or CUDA out of memory): how much was asked for and available, and the flag to change;
- under torchrun, a peer's collective error after another rank failed (gloo/NCCL "connection closed"): one short
  line saying so, no traceback (the failing rank has printed the line that matters).
Every other exception keeps its traceback: it is a bug to report.

`fail(msg)` stops with `error: <first line>`, exit status 1; a message of several lines (a library's error) is
written whole to <directory>/error.log (the output folder given to install, else the system's temporary folder),
and the line says where.
"""
from __future__ import annotations

import errno
import os
import re
import sys
import tempfile
from typing import Callable

# a write that fails for want of space or a writable disk
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}

_state: dict = {"directory": None, "resume": None, "oom": None, "interrupted": None}


def fail(msg: str):
    """Stop with one line on stderr, `error: <first line of msg>`, and exit status 1 (see the module docstring). The
    line is printed as the interpreter exits (SystemExit), after progress bars have closed."""
    msg = str(msg).strip() or "failed"
    first, _, rest = msg.partition("\n")
    if rest.strip():
        where = _write_log(msg)
        first = f"{first.rstrip()} (full message: {where})" if where else first
    raise SystemExit(f"error: {first}")


def check_writable(folder: str, what: str) -> None:
    """Create `folder` and write a probe file there, before any work; else fail(f"{what} (the reason)")."""
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        fail(f"{what} ({e.strerror or e})")


def _write_log(text: str) -> str:
    for folder in (_state["directory"], tempfile.gettempdir()):
        if not folder:
            continue
        path = os.path.join(folder, "error.log" if folder == _state["directory"] else f"error-{os.getpid()}.log")
        try:
            with open(path, "w") as f:
                f.write(text + "\n")
            return path
        except OSError:
            continue
    return ""


def install(directory: str | None = None, resume: Callable[[], str] | None = None,
            oom: Callable[[int | None], str] | None = None, interrupted: str | Callable[[], str] | None = None):
    """Answer the errors of the module docstring in one line. directory: the program's output folder (named in disk
    errors, holds error.log); resume(): what to run to continue after a disk error; oom(bytes asked or None): the flag
    advice after an allocator error; interrupted: what to run after Ctrl-C. Calling it again updates the values."""
    _state.update(directory=directory, resume=resume, oom=oom, interrupted=interrupted)
    if getattr(sys.excepthook, "_one_line", False):
        return
    previous = sys.excepthook

    def hook(kind, error, tb):
        line = describe(error)
        if line is None:
            return previous(kind, error, tb)
        sys.stderr.write(f"error: {line}\n")

    hook._one_line = True
    sys.excepthook = hook


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def requested_bytes(message: str) -> int | None:
    """The size an allocator error asked for, from torch's CPU or CUDA message."""
    if m := re.search(r"tried to allocate (\d+) bytes", message, re.I):
        return int(m.group(1))
    if m := re.search(r"tried to allocate ([\d.]+) (KiB|MiB|GiB|TiB)", message, re.I):
        return int(float(m.group(1)) * 2 ** (10 * ("KMGT".index(m.group(2)[0].upper()) + 1)))
    return None


def available_bytes() -> int | None:
    """Memory available now: the GPU's free memory when CUDA is in use, else the system's MemAvailable."""
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return torch.cuda.mem_get_info()[0]
    except Exception:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def is_oom(error: BaseException) -> bool:
    name = type(error).__name__
    text = str(error)
    return name == "OutOfMemoryError" or isinstance(error, MemoryError) or (
        isinstance(error, RuntimeError) and ("can't allocate memory" in text or "not enough memory" in text
                                             or "CUDA out of memory" in text))


def _peer_failed(error: BaseException) -> bool:
    """A collective that failed because another rank of this torchrun job ended."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    text = str(error)
    return type(error).__name__ == "DistBackendError" or (isinstance(error, RuntimeError) and any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer", "gloo", "NCCL", "Broken pipe")))


def describe(error: BaseException) -> str | None:
    """The one line for `error`, or None: not one of ours, keep the traceback."""
    d = _state["directory"]
    if isinstance(error, KeyboardInterrupt):
        then = _state["interrupted"]
        then = then() if callable(then) else then
        return "interrupted (Ctrl-C)" + (f"; {then}" if then else "")
    if isinstance(error, OSError) and error.errno in DISK_ERRORS:
        what = f" ({error.filename})" if error.filename else ""
        then = ""
        if _state["resume"] is not None:
            try:
                then = f", then {_state['resume']()}"
            except Exception:
                then = ""
        where = f"choose another --out-dir" if d else "choose another output folder"
        return f"writing {d or 'the output'} failed: {error.strerror or error}{what}; free space or {where}{then}"
    if is_oom(error):
        asked, free = requested_bytes(str(error)), available_bytes()
        size = (f": tried to allocate {_gib(asked)}" if asked else "") + (f", {_gib(free)} available" if free else "")
        advice = _state["oom"](asked) if _state["oom"] is not None else "use smaller batches"
        return f"out of memory{size}; {advice}"
    if _peer_failed(error):  # short: the rank that failed first has printed the line that matters
        first = (str(error).splitlines() or [""])[0]
        first = re.sub(r"^\[[^\]]*\]\s*", "", first).split(". ")[0][:120]  # without gloo's source location
        return (f"rank {os.environ.get('RANK', '?')} stopped with its job: a collective failed, most likely because "
                f"another rank ended (its error is above): {first}")
    return None
