"""Run a training script under a recorder, with the rehearsal's shrunk architectures.

    python tests/rehearse_run.py RECORD_JSON SCRIPT.py [script args...]

(normally through tests/rehearsal_assets.rehearse, which sets the environment from build_assets). It
- calls rehearsal_assets.shrink() (LlamaGen GPT presets / VQ, HPS ViT-H-14 config, MANIQA size);
- records every reward call through `rewards.compute_rewards` and every evaluation through
  `common.evaluation.geneval_eval` (both patched BEFORE the script runs, since the scripts import them by name);
- records every file the process opens: `open` audit events (builtins.open, os.open, io.open_code, so torch.load,
  numpy, PIL, json ...) plus safetensors' Rust-side reads and writes (safe_open / load_file / save_file) and
  torch.save's C++ writes, which raise no audit event; files of the Python installation, imported modules
  (.py/.pyc/.so) and /proc, /sys, /dev are left out;
- runs the script with runpy as __main__ (sys.argv = [script, *args], sys.path[0] = the script's folder),
  keeps its exit code (SystemExit, or 1 with the traceback for an exception), writes the record atomically and
  exits with that code.

Record (JSON):
    script, argv, cwd, exit_code, error (None or "Type: message"), traceback (None or text), duration_s,
    rewards:  [{name, n, image_shape, prompts (first 4), metadata_keys, metadata0, values, error}]
    evals:    [{args (bound arguments except bk / metadata), explicit (keywords passed), n_metadata, prompt0,
                summary, error}]
    opened:   [absolute paths, in first-open order]     written: [those opened for writing]
"""
from __future__ import annotations

import inspect
import json
import os
import runpy
import sys
import time
import traceback

_STATE = {"active": False}
_RECORD: dict = {"rewards": [], "evals": [], "opened": [], "written": []}
_SEEN: set[str] = set()
_SEEN_W: set[str] = set()
_SKIP_PREFIXES = tuple({os.path.realpath(p) + os.sep for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}) + (
    "/proc/", "/sys/", "/dev/")
_SKIP_SUFFIXES = (".py", ".pyc", ".pyd", ".so", ".pth")


def _note(path, write: bool = False):
    if not _STATE["active"] or isinstance(path, int):
        return
    try:
        p = os.path.abspath(os.fsdecode(path))
    except Exception:
        return
    if p.endswith(_SKIP_SUFFIXES) or os.path.realpath(p).startswith(_SKIP_PREFIXES) or p.startswith(_SKIP_PREFIXES):
        return
    if p not in _SEEN:
        _SEEN.add(p)
        _RECORD["opened"].append(p)
    if write and p not in _SEEN_W:
        _SEEN_W.add(p)
        _RECORD["written"].append(p)


def _audit(event, args):
    if event == "open" and _STATE["active"]:
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        write = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)))
        _note(path, write)


def _jsonable(x, depth=0):
    """Plain JSON values; tensors and arrays as lists when small, else a short description."""
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if depth > 6:
        return repr(x)[:200]
    if isinstance(x, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in x]
    if hasattr(x, "tolist") and hasattr(x, "shape"):  # torch / numpy
        n = 1
        for s in x.shape:
            n *= int(s)
        return x.tolist() if n <= 4096 else f"<{type(x).__name__} shape {tuple(x.shape)}>"
    return repr(x)[:200]


def _patch_safetensors():
    """safetensors reads/writes in Rust (no audit event): wrap its entry points before anything imports them."""
    try:
        import safetensors
        import safetensors.torch as st
    except ImportError:
        return
    orig_open = safetensors.safe_open

    def safe_open(filename, *args, **kwargs):
        _note(filename)
        return orig_open(filename, *args, **kwargs)

    safetensors.safe_open = safe_open
    st.safe_open = safe_open  # load_file looks it up in safetensors.torch
    orig_save = st.save_file

    def save_file(tensors, filename, *args, **kwargs):
        _note(filename, write=True)
        return orig_save(tensors, filename, *args, **kwargs)

    st.save_file = save_file


def _patch_torch_save():
    """torch.save to a path writes from C++ (no audit event; torch.load's reads are audited)."""
    import torch

    orig = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, bytes, os.PathLike)):
            _note(f, write=True)
        return orig(obj, f, *args, **kwargs)

    save.__wrapped__ = orig
    torch.save = save


def _patch_rewards():
    import rewards

    orig = rewards.compute_rewards
    sig = inspect.signature(orig)

    def compute_rewards(*args, **kwargs):
        entry: dict = {"name": None, "n": None, "error": None}
        try:
            b = sig.bind(*args, **kwargs).arguments
            images, prompts, metadata = b.get("images"), list(b.get("prompts") or []), list(b.get("metadata") or [])
            keys = sorted({k for m in metadata if isinstance(m, dict) for k in m})
            entry.update(name=b.get("name"), n=len(prompts), image_shape=list(getattr(images, "shape", []) or []),
                         prompts=prompts[:4], metadata_keys=keys,
                         metadata0=_jsonable(metadata[0]) if metadata else None)
        except Exception as e:  # a changed signature must not break the script
            entry["record_error"] = f"{type(e).__name__}: {e}"
        _RECORD["rewards"].append(entry)
        try:
            out = orig(*args, **kwargs)
        except BaseException as e:
            entry["error"] = f"{type(e).__name__}: {e}"
            raise
        entry["values"] = _jsonable(out.detach().float().cpu()) if hasattr(out, "detach") else _jsonable(out)
        return out

    compute_rewards.__wrapped__ = orig
    rewards.compute_rewards = compute_rewards


def _patch_evaluation():
    import common.evaluation as ev

    orig = ev.geneval_eval
    sig = inspect.signature(orig)

    def geneval_eval(*args, **kwargs):
        entry: dict = {"error": None}
        try:
            bound = sig.bind(*args, **kwargs)
            metadata = list(bound.arguments.get("metadata") or [])
            bound.apply_defaults()
            entry.update(args={k: _jsonable(v) for k, v in bound.arguments.items() if k not in ("bk", "metadata")},
                         explicit=sorted(kwargs), n_metadata=len(metadata),
                         prompt0=metadata[0].get("prompt") if metadata and isinstance(metadata[0], dict) else None)
        except Exception as e:
            entry["record_error"] = f"{type(e).__name__}: {e}"
        _RECORD["evals"].append(entry)
        try:
            out = orig(*args, **kwargs)
        except BaseException as e:
            entry["error"] = f"{type(e).__name__}: {e}"
            raise
        if isinstance(out, tuple) and out:
            entry["summary"] = _jsonable(out[0])
        return out

    geneval_eval.__wrapped__ = orig
    ev.geneval_eval = geneval_eval


def _write_record(path: str):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(_RECORD, f, indent=1, default=repr)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python tests/rehearse_run.py RECORD_JSON SCRIPT.py [script args...]", file=sys.stderr)
        return 2
    record_path, script, args = os.path.abspath(argv[0]), os.path.abspath(argv[1]), argv[2:]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _RECORD.update(script=script, argv=list(args), cwd=os.getcwd(), exit_code=None, error=None, traceback=None)
    sys.addaudithook(_audit)
    _patch_safetensors()
    _patch_torch_save()

    from rehearsal_assets import shrink

    shrink()
    _patch_rewards()
    _patch_evaluation()

    sys.argv = [script, *args]
    sys.path[0] = os.path.dirname(script)
    code: int = 0
    t0 = time.time()
    _STATE["active"] = True
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:  # sys.exit("message"): Python prints it and exits with 1
            print(e.code, file=sys.stderr)
            code = 1
            _RECORD["error"] = f"SystemExit: {e.code}"
    except BaseException as e:  # noqa: BLE001  (KeyboardInterrupt included: record it, exit non-zero)
        traceback.print_exc()
        code = 1
        _RECORD["error"] = f"{type(e).__name__}: {e}"
        _RECORD["traceback"] = traceback.format_exc()[-4000:]
    finally:
        _STATE["active"] = False
        _RECORD["exit_code"] = code
        _RECORD["duration_s"] = round(time.time() - t0, 3)
        sys.stdout.flush()
        sys.stderr.flush()
        _write_record(record_path)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
