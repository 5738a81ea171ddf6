"""Benchmark (prints figures, asserts nothing): sampler tokens/s with the KV cache vs naive recompute,
and one GRPO step's time split into sampling / reward / update, measured side by side in one run.

    python bench.py                      # the toy model on CPU
    python bench.py --model tiny --device cuda
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from common.cli import parse
from common.models import load_model
from common.prompts import load_prompts
from common.sampling import cond_repeat, sample, score
from rewards import get_reward


@dataclass
class Args:
    model: str = "toy"
    """backend name or weights directory"""
    device: str = "cpu"
    """cpu or cuda"""
    dtype: str = "float32"
    """float32 or bfloat16"""
    prompts: str = "data/shapeworld/train.jsonl"
    """prompt file"""
    reward: str = "geneval"
    """reward for the step-time split"""
    batch: int = 64
    """images per measurement (prompts x group size)"""
    group_size: int = 8
    """G"""
    cfg_scale: float = 3.0
    """CFG scale (doubles the sampled batch)"""
    repeats: int = 3
    """timed repetitions (the first, warm-up, run is discarded)"""


def timed(fn, repeats, device):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return min(times), out


if __name__ == "__main__":
    args = parse(Args)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    bk = load_model(args.model, args.device, dtype)
    metas = load_prompts(args.prompts)[: args.batch // args.group_size]
    texts = [m["prompt"] for m in metas for _ in range(args.group_size)]
    cond = cond_repeat(bk.cond([m["prompt"] for m in metas]), args.group_size)
    uncond = bk.uncond(cond)
    B, T = len(texts), bk.num_tokens
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    print(f"model={args.model} device={args.device} dtype={args.dtype} B={B} T={T} cfg={args.cfg_scale}")

    t_cache, (tokens, _, _) = timed(lambda: sample(bk.policy, cond, uncond, T, args.cfg_scale, generator=g()),
                                    args.repeats, args.device)
    t_naive, _ = timed(lambda: sample(bk.policy, cond, uncond, T, args.cfg_scale, generator=g(), use_cache=False),
                       max(1, args.repeats // 2), args.device)
    print(f"sampler, KV cache : {B * T / t_cache:10.0f} tokens/s  ({B / t_cache:.1f} images/s)")
    print(f"sampler, recompute: {B * T / t_naive:10.0f} tokens/s  ({B / t_naive:.1f} images/s)")
    print(f"KV cache speed-up : {t_naive / t_cache:.1f}x")

    reward_fn = get_reward(args.reward, args.device)
    t_decode, images = timed(lambda: bk.decode(tokens), args.repeats, args.device)
    t_reward, _ = timed(lambda: reward_fn(images, texts, [m for m in metas for _ in range(args.group_size)]),
                        args.repeats, args.device)

    def update():
        logp, _ = score(bk.policy, cond, tokens)
        (-logp.mean()).backward()
        bk.policy.zero_grad(set_to_none=True)

    t_update, _ = timed(update, args.repeats, args.device)
    total = t_cache + t_decode + t_reward + t_update
    print(f"one GRPO step on {B} images: {total:.2f} s = sampling {t_cache:.2f} ({t_cache / total:.0%}) + decode "
          f"{t_decode:.2f} ({t_decode / total:.0%}) + reward {t_reward:.2f} ({t_reward / total:.0%}) + update "
          f"(forward+backward) {t_update:.2f} ({t_update / total:.0%})")
