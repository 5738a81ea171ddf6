"""Held-out GenEval-style evaluation: N samples per prompt with fixed seeds, scored by the strict rules.

The detector is the toy's ("shapeworld", CPU) or the real-image one ("coco": Mask2Former + CLIP colours,
GenEval's recipe). Under torch.distributed every rank samples and scores its share of the rows and the
verdicts are gathered, so a 553-prompt GenEval pass over 8 GPUs takes 1/8 of the time on each.
"""
from __future__ import annotations

import functools

import torch

from common.sampling import sample
from common.utils import make_generator

DETECTORS = ("shapeworld", "coco")
_STRICT_REWARD = {"shapeworld": "geneval_strict", "coco": "geneval_coco_strict"}  # the same rules as a reward


def check_eval(metadata: list[dict], detector: str) -> None:
    """Raise ValueError in one line if `metadata` is not GenEval metadata this detector can judge (its classes,
    colours, positions). Cheap: call it before any model is built."""
    from rewards import check_reward

    if detector not in DETECTORS:
        raise ValueError(f"unknown GenEval detector {detector!r}; known: {', '.join(DETECTORS)}")
    check_reward(_STRICT_REWARD[detector], metadata)


@functools.lru_cache(maxsize=2)
def _judge(detector: str, device: str):
    from rewards.geneval import GenEvalReward

    return GenEvalReward(strict=True, detector=detector, device=device)


@torch.no_grad()
def geneval_eval(bk, metadata: list[dict], n_per_prompt: int = 4, seed: int = 1234, cfg_scale: float = 1.0,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, batch_size: int = 256,
                 detector: str = "shapeworld", rank: int = 0, world_size: int = 1):
    """-> (summary {tag: accuracy, ..., "overall": mean over tags}, images (n, 3, H, W), captions) where the
    summary covers every row of every rank and the images/captions are this rank's share (rank 0: the first
    rows). Each row's random draws depend only on `seed` and its index, so before/after comparisons are paired
    and the result does not depend on the world size. Collective under torch.distributed: call on every rank."""
    import torch.distributed as dist

    from rewards.geneval_rules import summarize

    judge = _judge(detector, str(bk.device))
    rows = [m for m in metadata for _ in range(n_per_prompt)]
    noise = torch.rand(len(rows), bk.num_tokens, generator=make_generator(seed))  # (N, T) uniforms, every row
    mine = list(range(rank, len(rows), world_size))
    results, images, captions = [], [], []
    for i in range(0, len(mine), batch_size):
        idx = mine[i : i + batch_size]
        metas = [rows[j] for j in idx]
        cond = bk.cond([m["prompt"] for m in metas])
        tokens, _, _ = sample(bk.policy, cond, bk.uncond(cond), bk.num_tokens, cfg_scale, temperature, top_k, top_p,
                              noise=noise[idx])
        imgs = bk.decode(tokens)
        res = judge.evaluate(imgs, metas)
        results += res
        images.append(imgs.float().cpu())
        captions += [f"{'OK' if ok else 'x'} {m['prompt']}" for m, (_, ok) in zip(metas, res)]
    if world_size > 1:
        every = [None] * world_size
        dist.all_gather_object(every, results)
        results = [r for part in every for r in part]
    images = torch.cat(images) if images else torch.zeros(0, 3, 1, 1)
    return summarize(results), images, captions
