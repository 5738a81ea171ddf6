"""Held-out GenEval-style evaluation: N samples per prompt with fixed seeds, scored by the strict rules."""
from __future__ import annotations

import torch

from common.sampling import sample
from common.utils import make_generator


@torch.no_grad()
def geneval_eval(bk, metadata: list[dict], n_per_prompt: int = 4, seed: int = 1234, cfg_scale: float = 1.0,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, batch_size: int = 256,
                 detector: str = "shapeworld"):
    """-> (summary {tag: accuracy, ..., "overall": mean over tags}, images (N, 3, H, W), captions).
    The same seed gives the same random draws, so before/after comparisons are paired."""
    from rewards.geneval import GenEvalReward
    from rewards.geneval_rules import summarize

    judge = GenEvalReward(strict=True, detector=detector)
    rows = [m for m in metadata for _ in range(n_per_prompt)]
    gen = make_generator(seed)
    results, images, captions = [], [], []
    for i in range(0, len(rows), batch_size):
        metas = rows[i : i + batch_size]
        cond = bk.cond([m["prompt"] for m in metas])
        tokens, _, _ = sample(bk.policy, cond, bk.uncond(cond), bk.num_tokens, cfg_scale, temperature, top_k, top_p,
                              generator=gen)
        imgs = bk.decode(tokens)
        res = judge.evaluate(imgs, metas)
        results += res
        images.append(imgs.cpu())
        captions += [f"{'OK' if ok else 'x'} {m['prompt']}" for m, (_, ok) in zip(metas, res)]
    return summarize(results), torch.cat(images), captions
