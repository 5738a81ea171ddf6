"""Held-out GenEval-style evaluation: N samples per prompt with fixed seeds, scored by the strict rules.

    python evaluate.py                                # the shipped toy model on ShapeWorld's held-out prompts
    python evaluate.py --checkpoint runs/grpo_vanilla_s0 --n 8   # a run's latest checkpoint

Prints GenEval's per-tag table and the overall score (the mean of the tag scores) and saves a grid.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

import torch
import tyro

from common import checkpoint
from common.evaluation import check_eval, geneval_eval
from common.models import load_model, load_policy_checkpoint
from common.prompts import load_prompts
from common.utils import save_image_grid
from rewards.geneval_rules import format_table, tag_counts


@dataclass
class Args:
    model: str = "toy"
    """backend name or weights directory"""
    checkpoint: str = ""
    """a run directory, its checkpoints/ or one checkpoints/step_* directory ('' = the base model)"""
    prompts: str = "data/shapeworld/eval.jsonl"
    """GenEval-format evaluation prompts (.jsonl)"""
    n: int = 4
    """samples per prompt"""
    seed: int = 1234
    """seed of the sampling noise (the same seed gives the same draws)"""
    cfg_scale: float = 3.0
    """classifier-free guidance scale"""
    temperature: float = 1.0
    """sampling temperature"""
    grid: str = "runs/eval_grid.png"
    """where to save a grid of one sample per prompt ('' = none)"""
    device: Literal["cpu", "cuda"] = "cpu"
    """cpu or cuda"""


if __name__ == "__main__":
    args = tyro.cli(Args)
    try:
        if args.n < 1:
            raise ValueError(f"--n {args.n}: must be >= 1")
        if args.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is visible to torch")
        metas = load_prompts(args.prompts)
        check_eval(metas, "shapeworld")
        bk = load_model(args.model, args.device)
        if args.checkpoint:
            load_policy_checkpoint(bk, checkpoint.resolve(args.checkpoint))
    except (ValueError, FileNotFoundError, ImportError, RuntimeError, OSError) as e:
        sys.exit(f"error: {e}")
    summary, images, captions = geneval_eval(bk, metas, args.n, args.seed, args.cfg_scale, args.temperature)
    counts = tag_counts([(m["tag"], True) for m in metas for _ in range(args.n)])
    print(format_table(summary, counts))
    if args.grid:
        save_image_grid(images[:: args.n][:64], captions[:: args.n][:64], args.grid)
        print(f"grid: {args.grid}")
