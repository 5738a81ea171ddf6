"""Benchmark (prints figures): images/s of the project's sampler (common/sampling.sample on the Janus policy)
vs transformers' `JanusForConditionalGeneration.generate(generation_mode="image")`, at equal batch, CFG scale,
temperature (1, sampling) and image size. Also checks that both give the same greedy tokens.

    python bench_janus.py                                   # tiny random Janus on CPU (no download)
    python bench_janus.py --model janus-pro-1b-random --device cuda --dtype bfloat16   # Janus-Pro-1B shapes
    python bench_janus.py --model janus-pro-1b --device cuda --dtype bfloat16          # real weights (local)
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import torch

from common.cli import parse
from common.janus import JanusT2I, janus_pro_config, tiny_janus, tiny_tokenizer
from common.sampling import sample


@dataclass
class Args:
    model: str = "tiny"
    """'tiny' (random, CPU-sized), 'janus-pro-1b-random' / 'janus-pro-7b-random' (random weights with the real
    architecture), or anything load_model accepts (janus-pro-1b, janus-pro-7b, a local directory)"""
    device: str = "cpu"
    """cpu or cuda"""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """model dtype"""
    batch: int = 8
    """images per measurement (the CFG batch is twice that)"""
    cfg_scale: float = 5.0
    """CFG scale (> 1: transformers' generate cannot run without CFG)"""
    grid: int = 24
    """'tiny' only: image tokens per side (24 -> 576 tokens, as Janus-Pro at 384 px)"""
    cache: Literal["dynamic", "static", "both"] = "both"
    """KV cache of the project's sampler: transformers' DynamicCache, StaticCache (what generate uses), or both"""
    repeats: int = 3
    """timed rounds, interleaved (the best is reported; a warm-up round is discarded)"""
    seed: int = 0
    """seed of the random weights and of the sampling"""


def build(args: Args) -> JanusT2I:
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    if args.model == "tiny":
        bk = tiny_janus(args.seed, image_size=8 * args.grid, patch_size=8)
        bk.model.to(args.device, dtype)  # the policy shares the model's modules
        return bk
    if args.model.endswith("-random"):
        from transformers import GenerationConfig, JanusForConditionalGeneration

        torch.manual_seed(args.seed)
        with torch.device(args.device):
            model = JanusForConditionalGeneration(janus_pro_config(args.model.split("-")[2])).to(dtype)
        model.generation_config = GenerationConfig(bos_token_id=0, pad_token_id=1, eos_token_id=2)
        model.generation_config.generation_kwargs = {"boi_token_id": 3}
        return JanusT2I(model, tiny_tokenizer())
    from common.models import load_model

    return load_model(args.model, args.device, dtype)


def timed(fns: dict, repeats: int, device: str) -> dict:
    """Best wall time of each function over `repeats` rounds, run interleaved (round-robin) so that load
    from other processes hits all of them alike. A first, warm-up round is discarded."""
    best = {name: float("inf") for name in fns}
    for r in range(repeats + 1):
        for name, fn in fns.items():
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            if r > 0:
                best[name] = min(best[name], time.perf_counter() - t)
    return best


if __name__ == "__main__":
    args = parse(Args)
    assert args.cfg_scale > 1, "--cfg-scale must be > 1 (generate always doubles the batch for CFG)"
    torch.set_grad_enabled(False)
    bk = build(args)
    words = ["a photo of a red cat", "two blue dogs and a green car", "a yellow cup left of the square", "a circle"]
    cond = bk.cond([words[i % len(words)] for i in range(args.batch)])
    uncond = bk.uncond(cond)
    B, T = args.batch, bk.num_tokens
    n_params = sum(p.numel() for p in bk.model.parameters())
    print(f"model={args.model} ({n_params / 1e6:.2f}M params) device={args.device} dtype={args.dtype} B={B} "
          f"T={T} image={bk.decode(torch.zeros(1, T, dtype=torch.long, device=bk.device)).shape[-1]}px "
          f"cfg={args.cfg_scale} threads={torch.get_num_threads()}")

    def ours(temperature: float = 1.0):
        g = torch.Generator(device=bk.device).manual_seed(args.seed)
        return sample(bk.policy, cond, uncond, T, args.cfg_scale, temperature=temperature, generator=g)[0]

    def generate(do_sample: bool = True):
        torch.manual_seed(args.seed)
        return bk.model.generate(cond["input_ids"], attention_mask=cond["attention_mask"], generation_mode="image",
                                 do_sample=do_sample, guidance_scale=args.cfg_scale)

    def with_cache(impl: str):
        def run():
            bk.policy.cache_implementation = impl
            return ours()
        return run

    impls = ("dynamic", "static") if args.cache == "both" else (args.cache,)
    best = timed({"generate": generate} | {impl: with_cache(impl) for impl in impls}, args.repeats, args.device)
    t_gen = best["generate"]
    print(f"transformers generate (StaticCache) : {B / t_gen:8.2f} images/s  ({B * T / t_gen:9.0f} tokens/s)")
    for impl in impls:
        t = best[impl]
        print(f"project sampler, {impl:7s} KV cache  : {B / t:8.2f} images/s  ({B * T / t:9.0f} tokens/s)  "
              f"{t_gen / t:.2f}x generate")
    same = torch.equal(ours(temperature=0.0), generate(do_sample=False))
    print(f"greedy tokens identical to generate: {same}")
