"""Held-out GenEval-style evaluation: N samples per prompt with fixed seeds, scored by a judge.

The judge is passed in by the caller (rewards/geneval.GenEvalJudge: GenEval's strict rules with the toy's detector
or the real-image one): any object with
    validate(metadata)         ValueError in one line if it cannot judge these rows (cheap: call it before any model
                               is built)
    evaluate(images, metadata) images (B, 3, H, W) in [0, 1] -> [(tag, strictly correct)] per image
    quality(images)            optional: a no-reference quality score per image (B,), or None; its mean over every
                               image joins the summary as "quality" (the toy's palette cleanliness: does RL keep the
                               renders clean while it chases the verdicts?)
Under torch.distributed every rank samples and scores its share of the rows and the verdicts are gathered, so a
553-prompt GenEval pass over 8 GPUs takes 1/8 of the time on each.
"""
from __future__ import annotations

import torch

from common.geneval import summarize
from common.sampling import sample
from common.utils import make_generator


@torch.no_grad()
def geneval_eval(bk, metadata: list[dict], judge, n_per_prompt: int = 4, seed: int = 1234, cfg_scale: float = 1.0,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, batch_size: int = 256,
                 rank: int = 0, world_size: int = 1):
    """`judge` scores the samples (see the module docstring).
    -> (summary {tag: accuracy, ..., "overall": mean over tags[, "quality": mean quality]}, images (n, 3, H, W),
    captions) where the summary covers every row of every rank and the images/captions are this rank's share
    (rank 0: the first rows). Each row's random draws depend only on `seed` and its index, so before/after
    comparisons are paired and the result does not depend on the world size. Collective under torch.distributed:
    call on every rank."""
    import torch.distributed as dist

    rows = [m for m in metadata for _ in range(n_per_prompt)]
    noise = torch.rand(len(rows), bk.num_tokens, generator=make_generator(seed))  # (N, T) uniforms, every row
    mine = list(range(rank, len(rows), world_size))
    results, images, captions, quality = [], [], [], []
    scorer = getattr(judge, "quality", None)
    for i in range(0, len(mine), batch_size):
        idx = mine[i : i + batch_size]
        metas = [rows[j] for j in idx]
        cond = bk.cond([m["prompt"] for m in metas])
        tokens, _, _ = sample(bk.policy, cond, bk.uncond(cond), bk.num_tokens, cfg_scale, temperature, top_k, top_p,
                              noise=noise[idx])
        imgs = bk.decode(tokens)
        res = judge.evaluate(imgs, metas)
        results += res
        q = scorer(imgs) if scorer is not None else None
        if q is not None:
            quality += [float(v) for v in q]
        images.append(imgs.float().cpu())
        captions += [f"{'OK' if ok else 'x'} {m['prompt']}" for m, (_, ok) in zip(metas, res)]
    if world_size > 1:
        every = [None] * world_size
        dist.all_gather_object(every, (results, quality))
        results = [r for part, _ in every for r in part]
        quality = [q for _, part in every for q in part]
    images = torch.cat(images) if images else torch.zeros(0, 3, 1, 1)
    summary = summarize(results)
    if quality:
        summary["quality"] = sum(quality) / len(quality)
    return summary, images, captions
