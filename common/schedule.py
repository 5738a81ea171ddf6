"""Learning-rate schedules as the releases ran them: the Hugging Face Trainer's, as multipliers of --lr.

`lr_factor(schedule, total, warmup_ratio, min_ratio)` is the `lr_lambda` of a torch LambdaLR, called with the
number of optimizer steps already taken (0 for the first step), exactly as the Trainer's schedulers are:
- warm-up (any schedule): the first W = ceil(warmup_ratio·total) steps use i/W (step 1 uses 0: the Trainer's
  warm-up starts at 0, so the first update of a warmed-up run changes nothing);
- "constant": 1 after the warm-up (transformers' constant_with_warmup);
- "linear": (total − i)/(total − W), linear decay to 0 at `total` (the Trainer's default `lr_scheduler_type`, which
  the STAGE, GCPO-Janus and AR-GRPO releases keep);
- "cosine_with_min_lr": min_ratio + (1 − min_ratio)·½(1 + cos(π·(i − W)/(total − W))), half a cosine from 1
  down to min_ratio (the GCPO LlamaGen release: `cosine_with_min_lr`, `min_lr_rate: 0.1`, `warmup_ratio: 0.1`).
These equal transformers' `get_constant_schedule_with_warmup`, `get_linear_schedule_with_warmup` and
`get_cosine_with_min_lr_schedule_with_warmup` (tests/test_schedule.py compares them step by step).
"""
from __future__ import annotations

import functools
import math

SCHEDULES = ("constant", "linear", "cosine_with_min_lr")


def warmup_steps(total: int, warmup_ratio: float) -> int:
    """The Trainer's warm-up length: ceil(warmup_ratio · total)."""
    return math.ceil(total * warmup_ratio)


def _factor(i: int, schedule: str, total: int, warmup: int, min_ratio: float) -> float:
    if i < warmup:
        return i / max(1, warmup)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return max(0.0, (total - i) / max(1, total - warmup))
    progress = (i - warmup) / max(1, total - warmup)
    return max(0.0, min_ratio + (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def lr_factor(schedule: str, total: int, warmup_ratio: float = 0.0, min_ratio: float = 0.0):
    """LambdaLR's lr_lambda: i (optimizer steps taken) -> multiplier of the base LR (see the module docstring)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown LR schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    return functools.partial(_factor, schedule=schedule, total=total, warmup=warmup_steps(total, warmup_ratio),
                             min_ratio=min_ratio)


def lr_at(step: int, lr: float, schedule: str, total: int, warmup_ratio: float = 0.0, min_ratio: float = 0.0):
    """The learning rate the optimizer uses at step `step` (1-based, as the scripts count and log them)."""
    return lr * lr_factor(schedule, total, warmup_ratio, min_ratio)(step - 1)
