"""Offline-first loading of reward-model weights, with one-line errors that say how to provide them.

Every model-backed reward names a Hugging Face hub id (the model the papers used) and an environment variable
that overrides it with a local copy. Resolution order:
1. the factory's explicit argument, else the environment variable, else the hub id;
2. an existing local path is used as is;
3. a hub id is looked up in the local Hugging Face cache first (no network);
4. only if it is not cached and HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is not set, it is downloaded.
Any failure raises RuntimeError in one line naming the model or file and the variable to set.
"""
from __future__ import annotations

import importlib
import os
from typing import Any, Callable

INSTALL_HINT = "pip install -r requirements.txt -r requirements-rewards.txt"


def offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def require(module: str, reward: str, package: str | None = None):
    """Import `module` or raise ImportError naming the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"reward {reward!r} needs the Python package {package or module!r} "
                          f"({type(e).__name__}: {e}); install it: {INSTALL_HINT}") from e


def source(explicit: str | None, env: str, default: str) -> str:
    """The model id or path to use: the explicit argument, else $env, else the default hub id."""
    return explicit or os.environ.get(env) or default


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _fail(reward: str, what: str, src: str, env: str, err: Exception) -> RuntimeError:
    if os.path.exists(src):
        return RuntimeError(f"reward {reward!r} could not load {what} from {src!r} ({_first_line(err)}); set {env} "
                            f"to a folder with the model's files (as saved by save_pretrained or downloaded from the hub)")
    why = "offline mode is on (HF_HUB_OFFLINE)" if offline() else f"download failed: {_first_line(err)}"
    return RuntimeError(f"reward {reward!r} needs {what} {src!r}, which is not in the local Hugging Face cache "
                        f"({why}); download it where the hub is reachable (`hf download {src}`) and reuse that "
                        f"HF_HOME cache, or set {env}=/path/to/a/local/copy")


def pretrained(load: Callable[..., Any], src: str, *, reward: str, what: str, env: str, **kwargs) -> Any:
    """`load(src, **kwargs)` for a `from_pretrained`-style loader: local path, then cache, then download."""
    if os.path.exists(src):
        try:
            return load(src, **kwargs)
        except Exception as e:
            raise _fail(reward, what, src, env, e) from e
    try:
        return load(src, local_files_only=True, **kwargs)
    except Exception as e:
        err = e
    if not offline():
        try:
            return load(src, **kwargs)
        except Exception as e:
            err = e
    raise _fail(reward, what, src, env, err) from err


def hub_file(repo_id: str, filename: str, *, reward: str, env: str, explicit: str | None = None,
             extra_dirs: tuple[str, ...] = ()) -> str:
    """Path of one file: explicit or $env path, else `filename` in one of `extra_dirs`, else the hub cache
    of `repo_id`, else a download (unless offline)."""
    path = explicit or os.environ.get(env)
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"reward {reward!r}: {path!r} (from {'the argument' if explicit else env}) "
                                    f"is not a file; it should be {filename} from the hub repo {repo_id}")
        return path
    for d in extra_dirs:
        if d and os.path.isfile(os.path.join(d, filename)):
            return os.path.join(d, filename)
    hf = require("huggingface_hub", reward)
    try:
        return hf.hf_hub_download(repo_id, filename, local_files_only=True)
    except Exception as e:
        err = e
    if not offline():
        try:
            return hf.hf_hub_download(repo_id, filename)
        except Exception as e:
            err = e
    why = "offline mode is on (HF_HUB_OFFLINE)" if offline() else f"download failed: {_first_line(err)}"
    raise FileNotFoundError(f"reward {reward!r} needs {filename} from the hub repo {repo_id}, which is not in the "
                            f"local Hugging Face cache ({why}); download it (`hf download {repo_id} {filename}`) "
                            f"or set {env}=/path/to/{filename}")
