"""Run plumbing shared by the algorithm scripts, that nobody reads a script to learn: argument validation.

`check_args(args)` walks every field of a script's Args that has a range in RANGES (fields a script does not have
are skipped) and returns the first problem as one line naming the flag and what it accepts, or "". The scripts
call it first, before torch.distributed is set up or any model is built.
"""
from __future__ import annotations

import math
from typing import Callable


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# field -> (accepts the value?, what it accepts)
RANGES: dict[str, tuple[Callable, str]] = {
    "num_steps": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "prompts_per_step": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "group_size": (lambda v: _int(v) and v >= 2, "an integer >= 2 (advantages compare samples within a group)"),
    "num_inner_epochs": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "micro_batch_size": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0 = the whole rank batch)"),
    "sample_chunk": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0 = the whole batch)"),
    "lr": (lambda v: _num(v) and v > 0, "a number > 0"),
    "lr_decay_steps": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0 = --num-steps)"),
    "weight_decay": (lambda v: _num(v) and v >= 0, "a number >= 0"),
    "adam_betas": (lambda v: len(v) == 2 and all(_num(b) and 0 <= b < 1 for b in v), "two numbers in [0, 1)"),
    "max_grad_norm": (lambda v: _num(v) and v > 0, "a number > 0"),
    "clip_eps": (lambda v: _num(v) and v > 0, "a number > 0"),
    "beta": (lambda v: _num(v) and v >= 0, "a number >= 0 (0 = no KL term)"),
    "adv_eps": (lambda v: _num(v) and v > 0, "a number > 0 (a group of equal rewards has std 0)"),
    "cfg_scale": (lambda v: _num(v) and v >= 0, "a number >= 0 (1 = no guidance)"),
    "temperature": (lambda v: _num(v) and v >= 0, "a number >= 0 (0 = greedy)"),
    "top_k": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0 = all tokens)"),
    "top_p": (lambda v: _num(v) and 0 < v <= 1, "a number in (0, 1] (1 = off)"),
    "eval_samples": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0 = no evaluation)"),
    "image_every": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0 = never)"),
    "save_every": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0 = only at the end)"),
    "keep_last": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "device": (lambda v: v in ("auto", "cpu", "cuda"), "auto, cpu or cuda"),
    "critical_frac": (lambda v: _num(v) and 0 < v <= 1 / 3, "a number in (0, 1/3] (three disjoint sets)"),
    "weight_clip": (lambda v: _num(v) and v > 0, "a number > 0"),
    "lambda_c": (lambda v: _num(v) and v >= 0, "a number >= 0"),
    "lambda_i": (lambda v: _num(v) and v >= 0, "a number >= 0"),
    "lambda_r": (lambda v: _num(v) and v >= 0, "a number >= 0"),
}


def check_args(args) -> str:
    """The first out-of-range field of `args` as one line ("" when all are valid)."""
    for name, value in vars(args).items():
        if name in RANGES:
            ok, accepts = RANGES[name]
            try:
                good = bool(ok(value))
            except TypeError:
                good = False
            if not good:
                return f"--{name.replace('_', '-')} {value!r}: must be {accepts}"
    if getattr(args, "device", "auto") == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "--device cuda: no CUDA device is visible to torch (use --device cpu, or a CUDA build of torch)"
    return ""
