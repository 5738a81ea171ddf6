"""Export a training run's checkpoint as a model in its own ecosystem's format.

    python -m common.export runs/grpo_vanilla_s0 --out exported/my-model [--dtype keep|float32|bfloat16]

A checkpoint (common/checkpoint.py) holds only the trained policy (policy.safetensors) and, in state.json,
the arguments of the run, among them the base model it started from ("model"). The export rebuilds that
base backend on the CPU with `load_model`, loads the trained policy into it strictly, and writes a model
that loads like the base did, with no trace of this project's checkpoint layout. The checkpoint of a LoRA run
holds only its adapters: they are added to the base policy, loaded strictly and merged into its weights
(common/lora.py), so the export is a full model of the usual format, as if trained without LoRA:

- Janus-Pro ("janus-pro-1b|7b" or a transformers Janus directory): a complete transformers Janus directory
  (config, weights, generation config, tokenizer) of the full JanusForConditionalGeneration, the trained
  language model inside. Load it with `JanusForConditionalGeneration.from_pretrained(OUT)` or `--model OUT`.
- Official LlamaGen (a name of LLAMAGEN_CHECKPOINTS): a folder laid out like $LLAMAGEN_DIR. The trained GPT
  is written under the release's file name (e.g. c2i_B_256.pt) in the release's layout, {"model": state
  dict} with the release's key names; the frozen files it needs come from the folder the base was loaded
  from ($LLAMAGEN_DIR, default weights/llamagen): the VQ .pt, for text-to-image the flan-t5-xl directory,
  and for class-conditional models the class names (imagenet_classes.txt) when the base had them. Frozen
  files are hard-linked by default (no extra disk space; a symbolic link where the filesystem refuses),
  or symlinked / copied with --frozen. Load it with `LLAMAGEN_DIR=OUT ... --model <the same name>`.
- The toy format ("tiny", "toy" or a directory of that format): config.json + gpt / vq / text safetensors,
  as `LlamaGenT2I.save` writes them. Load it with `--model OUT`. ("tiny" is a random base: it is rebuilt
  with the run's seed, as the training scripts build it, so its frozen VQ and text encoder match the run.)

Every export also holds export.json: the base model, step, format and dtype it came from.

--dtype keep (default) writes the trained weights in the checkpoint's dtype: float32 for runs with --dtype
float32 or bfloat16 (whose master weights are fp32), bfloat16 for bfloat16-pure; float32 or bfloat16 casts them. For Janus the whole model is written in that dtype (as `load_janus` loads it); for
LlamaGen only the GPT is (the frozen VQ and text encoder stay as they are).

The output is written into a temporary sibling directory and renamed into place when complete. An existing
non-empty --out is refused unless --force. Bad input (no checkpoint, no base weights, an --out in the way)
is one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections import Counter

import torch

from common import checkpoint, errors, lora
from common.llamagen import CLASS_NAMES_FILE, LLAMAGEN_CHECKPOINTS, LLAMAGEN_DEFAULT_DIR, LLAMAGEN_DIR_ENV, T5_DIR
from common.models import LlamaGenC2I, LlamaGenT2I, load_model
from common.utils import atomic_dir, check_out_dir, load_safetensors, seed_everything, state_dict_mismatch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
FROZEN_MODES = ("link", "symlink", "copy")


# -- reading the checkpoint ---------------------------------------------------------------------------
class AdapterStateDict(dict):
    """The state dict of a LoRA checkpoint: its adapters, and in `.lora` their configuration (rank, alpha, targets)."""

    def __init__(self, sd: dict, meta: dict):
        super().__init__(sd)
        self.lora = meta


def read_checkpoint(path: str) -> tuple[str, dict, dict[str, torch.Tensor]]:
    """A run / checkpoints / step directory -> (step directory, state.json contents, policy state dict)."""
    step_dir = checkpoint.resolve(path)
    state_path = os.path.join(step_dir, "state.json")
    try:
        with open(state_path) as f:
            info = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{state_path} is not valid JSON ({e})") from None
    if not isinstance(info, dict):
        raise ValueError(f"{state_path} is not a checkpoint's state (a JSON object with 'step' and 'args')")
    policy_path = os.path.join(step_dir, "policy.safetensors")
    try:
        sd = load_safetensors(policy_path)
        meta = lora.read_meta(policy_path)
    except FileNotFoundError:
        raise
    except Exception as e:  # safetensors raises its own error type on a damaged file
        raise ValueError(f"cannot read {policy_path}: {e}") from None
    checkpoint.finite_or_raise(sd, policy_path)  # a diverged run's weights: nothing to evaluate or export
    return step_dir, info, (AdapterStateDict(sd, meta) if meta else sd)


def train_args(info: dict) -> dict:
    """The run's arguments recorded in state.json ({} when absent)."""
    args = info.get("args")
    return args if isinstance(args, dict) else {}


def base_model_name(info: dict, step_dir: str) -> str:
    """The base model a run started from: its "model" argument."""
    name = train_args(info).get("model")
    if not name:
        raise ValueError(f"{os.path.join(step_dir, 'state.json')} names no base model (no 'model' in its args): "
                         f"pass --model NAME_OR_DIR, the --model the run was trained from")
    return str(name)


def checkpoint_dtype(sd: dict[str, torch.Tensor]) -> torch.dtype:
    """The dtype of the checkpoint's floating tensors (the most common one, should they differ)."""
    counts = Counter(v.dtype for v in sd.values() if v.is_floating_point())
    return counts.most_common(1)[0][0] if counts else torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def target_dtype(dtype: str, sd: dict[str, torch.Tensor]) -> torch.dtype:
    if dtype == "keep":
        return checkpoint_dtype(sd)
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be keep, float32 or bfloat16, got {dtype!r}")
    return DTYPES[dtype]


def policy_mismatch(bk, sd: dict[str, torch.Tensor]) -> str:
    """'' when the checkpoint's weights `sd` fit bk.policy, else one line (adapters: checked when loaded)."""
    return "" if isinstance(sd, AdapterStateDict) else state_dict_mismatch(bk.policy.state_dict(), sd)


def load_trained_policy(bk, sd: dict[str, torch.Tensor], source: str, base: str):
    """Load the checkpoint's policy weights into bk.policy, strictly (one-line error on a mismatch). A LoRA
    checkpoint's adapters are merged into the base weights (bk.policy keeps its own state-dict keys)."""
    if isinstance(sd, AdapterStateDict):
        try:
            lora.load_merged(bk.policy, sd, sd.lora, source)
        except ValueError as e:
            raise ValueError(f"{e} (was the run trained from another --model? pass that one with --model)") from None
        return bk
    mismatch = policy_mismatch(bk, sd)
    if mismatch:
        raise ValueError(f"{source} does not fit base model {base!r}: {mismatch} (was the run trained from another "
                         f"--model? pass that one with --model)")
    bk.policy.load_state_dict(sd, strict=True)  # copies, cast to the module's dtype
    return bk


# -- the three output formats --------------------------------------------------------------------------
def export_format(bk, name: str) -> str:
    """-> "janus", "llamagen" (the official release's files) or "toy"."""
    from common.janus import JanusT2I  # torch only: transformers is imported when a Janus model is built

    if isinstance(bk, JanusT2I):
        return "janus"
    if isinstance(bk, LlamaGenT2I) and bk.toy_format:
        return "toy"
    if isinstance(bk, (LlamaGenC2I, LlamaGenT2I)):
        if name not in LLAMAGEN_CHECKPOINTS:
            raise ValueError(f"an official LlamaGen backend needs its release name to be exported (one of "
                             f"{', '.join(LLAMAGEN_CHECKPOINTS)}), got {name!r}")
        return "llamagen"
    raise ValueError(f"no export format for a {type(bk).__name__} backend ({name!r})")


def llamagen_source_dir(source_dir: str | None = None) -> str:
    """The folder load_model reads official LlamaGen files from: $LLAMAGEN_DIR, else weights/llamagen."""
    return source_dir or os.environ.get(LLAMAGEN_DIR_ENV) or LLAMAGEN_DEFAULT_DIR


def place_frozen(src: str, dst: str, mode: str = "link") -> str:
    """Put a frozen file or directory at dst: "link" = hard links (a symbolic link where the filesystem
    refuses them), "symlink", or "copy". -> how it was placed."""
    if mode not in FROZEN_MODES:
        raise ValueError(f"--frozen must be one of {', '.join(FROZEN_MODES)}, got {mode!r}")
    src = os.path.realpath(src)
    if mode == "link":
        try:
            if os.path.isdir(src):
                shutil.copytree(src, dst, copy_function=os.link)
            else:
                os.link(src, dst)
            return "hard-linked"
        except OSError:  # another filesystem, or links not supported: undo a partial tree, then symlink
            if os.path.isdir(dst):
                shutil.rmtree(dst)
            mode = "symlink"
    if mode == "symlink":
        os.symlink(src, dst, target_is_directory=os.path.isdir(src))
        return "symlinked"
    if os.path.isdir(src):
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)
    return "copied"


def write_janus(bk, out_dir: str, dtype: torch.dtype):
    """The full JanusForConditionalGeneration (trained language model inside) + tokenizer + generation config."""
    bk.model.to(dtype)
    bk.save(out_dir)


def write_toy(bk, out_dir: str, dtype: torch.dtype):
    """config.json + gpt / vq / text safetensors (LlamaGenT2I.save); only the GPT is cast."""
    bk.policy.to(dtype)
    bk.save(out_dir)


def write_llamagen(bk, name: str, out_dir: str, dtype: torch.dtype, source_dir: str | None = None,
                   frozen: str = "link") -> list[str]:
    """A $LLAMAGEN_DIR-style folder: the trained GPT as the release's .pt, the frozen files from source_dir.
    -> one line per file, saying how it got there."""
    ck = LLAMAGEN_CHECKPOINTS[name]
    src = llamagen_source_dir(source_dir)
    needed = [ck.vq_file] + ([T5_DIR] if ck.task == "t2i" else [])
    missing = [f for f in needed if not os.path.exists(os.path.join(src, f))]
    if missing:
        raise FileNotFoundError(f"{name}'s frozen files {', '.join(missing)} are not in {src} (set "
                                f"${LLAMAGEN_DIR_ENV} to the folder the base model was loaded from)")
    sd = {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
          for k, v in bk.policy.state_dict().items()}
    torch.save({"model": sd}, os.path.join(out_dir, ck.gpt_file))  # the release's layout and key names
    done = [f"{ck.gpt_file}: trained GPT ({dtype_name(dtype)})"]
    for f in needed:
        done.append(f"{f}: {place_frozen(os.path.join(src, f), os.path.join(out_dir, f), frozen)}")
    if isinstance(bk, LlamaGenC2I) and bk.class_names is not None:  # what the base used, wherever it came from
        with open(os.path.join(out_dir, CLASS_NAMES_FILE), "w") as fh:
            fh.write("".join(n + "\n" for n in bk.class_names))
        done.append(f"{CLASS_NAMES_FILE}: {len(bk.class_names)} class names")
    return done


# -- the export ----------------------------------------------------------------------------------------
def export_backend(bk, name: str, out: str, dtype: torch.dtype, *, info: dict | None = None, force: bool = False,
                   source_dir: str | None = None, frozen: str = "link", protected: tuple[str, ...] = ()) -> list[str]:
    """Write backend `bk` (base `name`, trained weights already loaded) to `out` in its format, atomically.
    info: provenance for export.json. -> a few lines describing what was written."""
    fmt = export_format(bk, name)
    if fmt == "llamagen":
        protected = (*protected, llamagen_source_dir(source_dir))
    check_out_dir(out, force, protected)
    with atomic_dir(out, lambda: check_out_dir(out, force, protected)) as tmp:  # still free after the long write
        if fmt == "janus":
            write_janus(bk, tmp, dtype)
            done = [f"transformers Janus directory ({dtype_name(dtype)})"]
            usage = f"--model {out}"
        elif fmt == "toy":
            write_toy(bk, tmp, dtype)
            done = [f"toy format: config.json, gpt / vq / text safetensors (GPT {dtype_name(dtype)})"]
            usage = f"--model {out}"
        else:
            done = write_llamagen(bk, name, tmp, dtype, source_dir, frozen)
            usage = f"{LLAMAGEN_DIR_ENV}={out} ... --model {name}"
        meta = {"base_model": name, "format": fmt, "dtype": dtype_name(dtype), **(info or {})}
        with open(os.path.join(tmp, "export.json"), "w") as f:
            json.dump(meta, f, indent=1, default=str)
    return done + [f"load it with: {usage}"]


def export(path: str, out: str, dtype: str = "keep", *, model: str | None = None, force: bool = False,
           frozen: str = "link", bk=None, source_dir: str | None = None) -> list[str]:
    """Export checkpoint `path` (a run, checkpoints/ or step directory) to `out`.

    model       the base model (default: the run's "model" argument in state.json)
    bk          a prebuilt base backend instead of load_model(model) (tests: tiny official-layout models)
    source_dir  official LlamaGen: the folder holding the base's frozen files (default $LLAMAGEN_DIR)
    -> a few lines describing what was written."""
    if dtype != "keep" and dtype not in DTYPES:
        raise ValueError(f"--dtype must be keep, float32 or bfloat16, got {dtype!r}")
    if frozen not in FROZEN_MODES:
        raise ValueError(f"--frozen must be one of {', '.join(FROZEN_MODES)}, got {frozen!r}")
    check_out_dir(out, force)  # fail before loading anything
    step_dir, info, sd = read_checkpoint(path)
    name = model or base_model_name(info, step_dir)
    target = target_dtype(dtype, sd)
    protected = (step_dir, name if os.path.isdir(name) else "")
    check_out_dir(out, force, protected)
    if bk is None:
        args = train_args(info)
        if "seed" in args:  # the scripts seed right before load_model: "tiny"'s random frozen parts match the run
            seed_everything(int(args["seed"]))
        bk = load_model(name, "cpu", target)
    load_trained_policy(bk, sd, os.path.join(step_dir, "policy.safetensors"), name)
    del sd  # copied into the backend: free it before writing (a second copy of a 7B model)
    prov = {"step": info.get("step"), "checkpoint": step_dir, "train_args": train_args(info)}
    return export_backend(bk, name, out, target, info=prov, force=force, source_dir=source_dir, frozen=frozen,
                          protected=protected)


def main(argv: list[str] | None = None):
    p = argparse.ArgumentParser(prog="python -m common.export", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a run directory, its checkpoints/ directory or one checkpoints/step_* directory")
    p.add_argument("--out", required=True, help="the directory to write (must not exist or be empty, unless --force)")
    p.add_argument("--dtype", default="keep", choices=["keep", *DTYPES],
                   help="weights dtype: keep (the checkpoint's), float32 or bfloat16 (default: keep)")
    p.add_argument("--model", default=None,
                   help="base model name or directory (default: the run's --model, from state.json)")
    p.add_argument("--frozen", default="link", choices=FROZEN_MODES,
                   help="official LlamaGen: how the frozen VQ / FLAN-T5 files get into --out: hard links (a "
                        "symbolic link where impossible), symbolic links or copies (default: link)")
    p.add_argument("--force", action="store_true", help="replace an existing non-empty --out")
    args = p.parse_args(argv)
    errors.install(interrupted=f"nothing was written to {args.out}")
    try:
        lines = export(args.checkpoint, args.out, args.dtype, model=args.model, force=args.force, frozen=args.frozen)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError, OSError) as e:
        msg = " ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
    print(f"exported {args.checkpoint} -> {args.out}")
    for line in lines:
        print("  " + line)


if __name__ == "__main__":
    main()
