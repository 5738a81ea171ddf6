"""Resumable training checkpoints, written atomically, the same for one process, DDP and FSDP2.

Layout of a run directory:

    checkpoints/step_000100/policy.safetensors   full (unsharded) policy weights: what evaluate.py loads; of a
                                                 LoRA run (common/lora.py) only the adapters, with their
                                                 configuration in the file's metadata
    checkpoints/step_000100/optimizer.pt         full optimizer state (of the trainable parameters), keyed by name
    checkpoints/step_000100/trainer.pt           step, LR scheduler, prompt order, RNG states of every rank
    checkpoints/step_000100/state.json           step, arguments, metrics, the run's id and what it read
    checkpoints/latest                           the name of the newest COMPLETE step directory

A checkpoint is written into `step_000100.tmp-<pid>/` and renamed into place only when every file is
on disk; `latest` is then replaced atomically. A run killed while saving leaves at worst a `.tmp-*`
directory, never a corrupt `latest`. Only the newest `keep_last` step directories are kept; pruning counts only
complete checkpoints this run wrote (state.json's run_id, common/rundir.py), never a directory merely named step_*.

state.json's "inputs" records what the run read: a content hash of the training prompt file, the identity of the
reward (a user module's source hash) and of the model (a weights directory's files). A resume whose files changed
stops in one line naming what changed (--allow-changed-prompts accepts a changed prompt file). Non-finite weights
are refused when a checkpoint is read (`finite_or_raise`).

Saving and loading are collective under torch.distributed (FSDP2 gathers the shards): call them on
every rank. Rank 0 writes; every rank reads (a shared filesystem, as torchrun jobs usually have).
"""
from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import os
import random
import re
import shutil
import sys

import numpy as np
import torch
from safetensors import SafetensorError
import torch.distributed as dist

from common.lora import has_lora, lora_meta
from common.prompts import unique_keys
from common.rundir import run_id
from common.utils import state_dict_mismatch, write_atomic, load_safetensors, save_safetensors

FILES = ("policy.safetensors", "optimizer.pt", "trainer.pt", "state.json")


def _world():
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _reshard(policy) -> bool:
    """FSDP2 keeps the root module gathered after a forward; state dicts are built from the shards.
    -> whether `policy` is FSDP2-sharded."""
    from torch.distributed.fsdp import FSDPModule

    if isinstance(policy, FSDPModule):
        policy.reshard()
        return True
    return False


def rng_state() -> dict:
    """This process's RNG states as plain Python values and tensors (safe for torch.load(weights_only=True))."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict):
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(root: str, step: int, policy: torch.nn.Module, optimizer, scheduler, train_state: dict, args,
         metrics: dict | None = None, keep_last: int = 2) -> str:
    """Write checkpoint `step` under `root` (collective). policy: the module the optimizer was built on
    (plain, DDP-wrapped or fully_shard-ed). train_state: small picklable values (prompt order, ...).
    -> the checkpoint directory."""
    rank, world = _world()
    lora = has_lora(policy)  # LoRA: the adapters only (the frozen base is the run's --model)
    if _reshard(policy) or rank == 0:  # FSDP2: a collective gather (rank 0 keeps it); DDP: rank 0's full copy
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                             get_optimizer_state_dict)  # lazy: ~1 s to import

        full = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=lora)
        model_sd = get_model_state_dict(policy, options=full)
        optim_sd = get_optimizer_state_dict(policy, optimizer, options=full)
    rngs = [None] * world
    if world > 1:
        dist.all_gather_object(rngs, rng_state())
    else:
        rngs = [rng_state()]
    name = f"step_{step:06d}"
    final = os.path.join(root, name)
    if rank == 0:
        tmp = os.path.join(root, f"{name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            os.makedirs(tmp)
            save_safetensors(model_sd, os.path.join(tmp, "policy.safetensors"), metadata=lora_meta(policy))
            torch.save(optim_sd, os.path.join(tmp, "optimizer.pt"))
            torch.save({"step": step, "world_size": world, "rng": rngs, **train_state,
                        "scheduler": scheduler.state_dict() if scheduler is not None else None},
                       os.path.join(tmp, "trainer.pt"))
            info = {"step": step, "script": os.path.basename(sys.argv[0]), "args": dict(vars(args)),
                    "metrics": metrics or {}, "run_id": run_id(os.path.dirname(os.path.abspath(root))),
                    "inputs": inputs(args)}
            with open(os.path.join(tmp, "state.json"), "w") as f:
                json.dump(info, f, indent=1, default=str)
        except (OSError, RuntimeError, SafetensorError) as e:  # a full disk (torch.save: "unexpected pos"): free it
            shutil.rmtree(tmp, ignore_errors=True)
            full = shutil.disk_usage(root).free < 2 ** 20 or getattr(e, "errno", None) == errno.ENOSPC
            why = getattr(e, "strerror", None) or str(e).splitlines()[0]
            why += "" if "space" in why else ": is the disk full?"
            raise OSError(errno.ENOSPC if full else errno.EIO, f"could not write checkpoint {final} ({why})") from e
        old = f"{final}.old-{os.getpid()}"
        if os.path.isdir(final):  # re-saving a step (e.g. after a resume): set the old one aside until replaced
            os.replace(final, old)  # (a crash right here leaves `latest` naming a missing step: resolve() falls
        os.replace(tmp, final)  # back to the set-aside copy); the checkpoint exists only once it is complete
        write_atomic(os.path.join(root, "latest"), lambda p: _write_text(p, name + "\n"))
        shutil.rmtree(old, ignore_errors=True)
        _prune(root, keep_last, keep=name)
    if world > 1:
        dist.barrier()
    return final


def _write_text(path: str, text: str):
    with open(path, "w") as f:
        f.write(text)


def _own(root: str, name: str, rid) -> bool:
    """A complete checkpoint written by the run `rid` (the id in its state.json)."""
    path = os.path.join(root, name)
    if not (re.fullmatch(r"step_\d{6,}", name) and _complete(path)):
        return False
    try:
        with open(os.path.join(path, "state.json")) as f:
            return json.load(f).get("run_id") == rid
    except (OSError, ValueError, AttributeError):
        return False


def _prune(root: str, keep_last: int, keep: str):
    """Remove all but the newest keep_last complete checkpoints this run wrote (the run of `keep`), and leftovers
    of its interrupted saves. Anything else in root (another run's checkpoint, an export named step_*) is left."""
    entries = sorted(os.listdir(root))
    rid = run_id(os.path.dirname(os.path.abspath(root)))
    done = [e for e in entries if _own(root, e, rid)]
    for e in done[: max(len(done) - keep_last, 0)]:
        if e != keep:
            shutil.rmtree(os.path.join(root, e), ignore_errors=True)
    for e in entries:
        if re.fullmatch(r"step_\d{6,}\.(tmp|old)-\d+", e) and not e.endswith(f"-{os.getpid()}"):
            shutil.rmtree(os.path.join(root, e), ignore_errors=True)


# -- what the run read: prompt files, reward, model -------------------------------------------------------------
def file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dir_identity(path: str) -> str:
    """A weights directory: the names and sizes of its files, and the content of its small ones (configs)."""
    h = hashlib.sha256()
    for base, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(base, name)
            size = os.path.getsize(full)
            h.update(f"{os.path.relpath(full, path)}:{size}\n".encode())
            if size < 1 << 20:
                h.update(file_hash(full).encode())
    return h.hexdigest()


def _reward_specs(args) -> list[str]:
    specs = []
    for k, v in vars(args).items():
        if "reward" in k:
            specs += [x for x in ([v] if isinstance(v, str) else v if isinstance(v, (list, tuple)) else [])
                      if isinstance(x, str) and ":" in x]
    return specs


def inputs(args) -> dict:
    """{"prompts": {path: sha256}, "reward": {module: sha256 of its source}, "model": identity} of `args`."""
    out: dict = {"prompts": {}, "reward": {}, "model": getattr(args, "model", None)}
    for k, v in vars(args).items():  # the training prompt files (eval_prompts may change on resume)
        if k.endswith("prompts") and k not in RESUMABLE_CHANGES and isinstance(v, str) and os.path.isfile(v):
            out["prompts"][v] = file_hash(v)
    for spec in _reward_specs(args):
        module = spec.split(":")[0]
        try:
            origin = importlib.util.find_spec(module).origin
        except (ImportError, AttributeError, ValueError):
            origin = None
        if origin and os.path.isfile(origin):
            out["reward"][module] = file_hash(origin)
    model = getattr(args, "model", None)
    if isinstance(model, str) and os.path.isdir(model):
        out["model"] = {model: dir_identity(model)}
    return out


def check_inputs(path: str, saved: dict, args) -> None:
    """ValueError in one line when a file the checkpoint's run read has changed since (see the module docstring)."""
    now = inputs(args)
    for file, digest in (saved.get("prompts") or {}).items():
        if now["prompts"].get(file, digest) != digest and not getattr(args, "allow_changed_prompts", False):
            raise ValueError(f"--resume {path}: the prompt file {file} changed since the checkpoint (sha256 "
                             f"{digest[:12]} then, {now['prompts'][file][:12]} now); restore it, or pass "
                             f"--allow-changed-prompts to train on the new content")
    for module, digest in (saved.get("reward") or {}).items():
        if now["reward"].get(module, digest) != digest:
            raise ValueError(f"--resume {path}: the reward module {module} changed since the checkpoint (sha256 "
                             f"{digest[:12]} then, {now['reward'][module][:12]} now); restore it, or start a new run")
    if isinstance(saved.get("model"), dict) and isinstance(now["model"], dict) and saved["model"] != now["model"]:
        raise ValueError(f"--resume {path}: the model directory {getattr(args, 'model', '')} changed since the "
                         f"checkpoint (its files differ); restore it, or start a new run")


def finite_or_raise(sd: dict, source: str) -> None:
    """ValueError in one line when a state dict holds NaN or infinite values (a diverged run's weights)."""
    for k, v in sd.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).sum())
            raise ValueError(f"{source} holds non-finite weights ({bad} of {v.numel()} values of {k} are NaN or "
                             f"inf): the run diverged before this checkpoint; use an earlier one")


# Arguments a resumed run may change: they do not change the experiment (its length, cadence, logging, evaluation,
# memory layout). Any other difference is refused, naming the field.
RESUMABLE_CHANGES = {"num_steps", "save_every", "keep_last", "resume", "allow_changed_prompts", "image_every",
                     "out_dir", "exp_name", "device", "eval_samples", "eval_prompts", "eval_detector", "eval_every",
                     "stop_on_flat", "sample_chunk", "micro_batch_size", "activation_checkpointing", "dist",
                     "cpu_offload", "reward_device", "track", "wandb_project"}


def _complete(path: str) -> bool:
    return all(os.path.isfile(os.path.join(path, f)) for f in FILES)


def resolve(path: str, args=None) -> str:
    """A step directory, a checkpoints/ directory (-> its latest) or a run directory (-> its latest)
    -> the complete step directory. Raises FileNotFoundError with a one-line message.
    args: the resuming run's arguments; a ValueError names the first field that would change the experiment
    (or another algorithm script's checkpoint)."""
    for root in (path, os.path.join(path, "checkpoints")):
        if os.path.isfile(os.path.join(root, "latest")):
            with open(os.path.join(root, "latest")) as f:
                name = f.read().strip()
            path = os.path.join(root, name)
            if not _complete(path):  # a crash while re-saving `name`: its set-aside copy is complete
                aside = sorted(e for e in os.listdir(root) if e.startswith(f"{name}.old-"))
                path = os.path.join(root, aside[-1]) if aside and _complete(os.path.join(root, aside[-1])) else path
            break
    missing = [f for f in FILES if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise FileNotFoundError(f"no complete checkpoint at {path} (missing {', '.join(missing)}); pass a "
                                f"checkpoints/step_* directory, its checkpoints/ parent or the run directory")
    if args is not None:
        check_resume_args(path, args)
    return path


def check_resume_args(path: str, args) -> None:
    """ValueError in one line when `args` would change the experiment saved at `path`."""
    with open(os.path.join(path, "state.json")) as f:
        info = json.load(f, object_pairs_hook=unique_keys)
    saved, now = info.get("args", {}), json.loads(json.dumps(dict(vars(args)), default=str))
    script = os.path.basename(sys.argv[0])
    if info.get("script", script) != script or set(saved) - RESUMABLE_CHANGES != set(now) - RESUMABLE_CHANGES:
        raise ValueError(f"--resume {path}: a checkpoint of {info.get('script', 'another script')}, not of {script}")
    for k in sorted(set(now) - RESUMABLE_CHANGES):
        if saved[k] != now[k]:
            raise ValueError(f"--resume {path}: the checkpoint was trained with --{k.replace('_', '-')} {saved[k]!r}, "
                             f"this run asks for {now[k]!r}; resume with the same value (or start a new run)")
    check_inputs(path, info.get("inputs") or {}, args)


def _torch_load(path: str):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or corrupted: one line naming the file
        raise ValueError(f"{path} is not a readable checkpoint file ({str(e).splitlines()[0][:200]})") from None


def load(path: str, policy: torch.nn.Module, optimizer, scheduler) -> dict:
    """Restore policy, optimizer, scheduler and this rank's RNG states from a checkpoint (collective).
    -> the train_state dict given to `save`, plus "step"."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         set_model_state_dict, set_optimizer_state_dict)

    path = resolve(path)
    rank, world = _world()
    _reshard(policy)
    lora = has_lora(policy)
    sd = load_safetensors(os.path.join(path, "policy.safetensors"))
    finite_or_raise(sd, os.path.join(path, "policy.safetensors"))
    adapters = get_model_state_dict(policy, options=StateDictOptions(ignore_frozen_params=True)) if lora else {}
    if lora and (mismatch := state_dict_mismatch(adapters, sd)):
        raise ValueError(f"{path}: its adapters do not fit this run's LoRA policy: {mismatch}")
    set_model_state_dict(policy, sd, options=StateDictOptions(full_state_dict=True, strict=not lora))
    optim_sd = _torch_load(os.path.join(path, "optimizer.pt"))
    set_optimizer_state_dict(policy, optimizer, optim_sd, options=StateDictOptions(full_state_dict=True))
    state = _torch_load(os.path.join(path, "trainer.pt"))
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if state["world_size"] == world:
        set_rng_state(state["rng"][rank])
    elif rank == 0:
        print(f"warning: checkpoint written by {state['world_size']} ranks, resuming on {world}: "
              f"global RNG states not restored (rollouts are seeded per step and group, so they still match)")
    return state
