"""Benchmark (prints figures, asserts nothing): sampler tokens/s with the KV cache vs naive recompute,
and one GRPO step's time split into sampling / reward / update, measured side by side in one run.

    python bench.py                      # the toy model on CPU
    python bench.py --model tiny --device cuda
    python bench.py --suite paper --random-weights --device cuda --out paper_bench.json
    python bench.py --memory-table       # the memory planner on every preset and five GPU setups (docs/models.md)

`--suite paper` builds each paper model at its real shape with random weights, directly on the device (Janus-Pro-7B
and -1B from transformers' Janus config, LlamaGen c2i-XL and t2i-XL from common/llamagen.py, FLAN-T5-XL's encoder for
t2i; no download), and runs one GRPO step at its preset's settings on one GPU: the preset's dtype, β (a reference
copy), CFG and G, at the largest share of the per-GPU batch of the paper's run that the memory planner
(common/memory.py) says fits, with the flags it picks (activation checkpointing, micro-batch, sample chunk, LoRA
through peft when full fine-tuning cannot fit one GPU). It prints per model sample / reward / update seconds,
images/s and the peak memory of each phase beside the planner's prediction, and writes them to --out as JSON (after
every model). The reward is a stand-in (the colour fraction): the presets' reward models need their weights; the
planner's `rewards` line gives their memory. `--shrink` runs the same code at a CPU size (tests/test_bench.py).
Needs torch and transformers (peft for LoRA); tyro is optional here (a plain argparse reads the flags without it).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, fields

import torch
import torch.nn as nn

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
    suite: str = "step"  # a plain str (not Literal): the argparse fallback reads it
    """'step' (the sampler and step split above) or 'paper' (each paper model at its real shape, one GRPO step)"""
    random_weights: bool = False
    """--suite paper: build the models with random weights (required: the suite never loads checkpoints)"""
    models: str = "all"
    """--suite paper: comma-separated subset of janus-pro-7b, janus-pro-1b, llamagen-c2i-xl, llamagen-t2i-xl"""
    gpu_gb: float = 0.0
    """--suite paper: GPU memory the planner plans for (0 = the device's total)"""
    shrink: bool = False
    """--suite paper: the same architectures at a CPU size (the test)"""
    out: str = ""
    """--suite paper: write the figures to this JSON file"""
    memory_table: bool = False
    """print the memory planner's markdown table (common/memory.py) of every preset of stage.py, gcpo.py and
    ar_grpo.py on 1x24, 1x80, 2x80, 8x40 and 8x80 GB, and exit (the table in docs/models.md)"""


def parse_args() -> Args:
    """tyro (common.cli) where installed; else argparse over the same fields (the GPU machine may lack tyro)."""
    try:
        import tyro  # noqa: F401
    except ImportError:
        import argparse

        ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        for f in fields(Args):
            flag = "--" + f.name.replace("_", "-")
            if f.type in (bool, "bool"):
                ap.add_argument(flag, action="store_true", default=f.default)
            else:
                kind = {"int": int, "float": float}.get(str(f.type), str)
                ap.add_argument(flag, type=kind, default=f.default)
        return Args(**vars(ap.parse_args()))
    from common.cli import parse

    return parse(Args)


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


# ---------------------------------------------------------------------------------------------------
# --suite paper: one GRPO step of each paper model at its real shape, random weights, on one GPU

# model -> (its preset, the GPUs its release trained on: the per-GPU batch is P x G / GPUs, whole groups)
PAPER = {"janus-pro-7b": ("geneval_paper", 8), "janus-pro-1b": ("janus1b_geneval_paper", 4),
         "llamagen-c2i-xl": ("c2i_release", 8), "llamagen-t2i-xl": ("t2i_paper", 8)}


def preset_runs() -> dict[str, tuple[str, object]]:
    """preset -> (its script's module name, the script's Args with the preset applied, as `--preset` applies it) for
    every preset of stage.py, gcpo.py and ar_grpo.py but the toy. bench.py is a top-level script and may import the
    others; common/ never does (common/memory.py takes a run's resolved Args)."""
    import ar_grpo
    import gcpo
    import stage
    from common.run import preset_defaults

    return {preset: (script.__name__, preset_defaults(script.Args, script.PRESETS, preset))
            for script in (stage, gcpo, ar_grpo) for preset in script.PRESETS if preset != "toy"}


WORDS = ["a photo of a red cat", "two blue dogs and a green car", "a yellow cup left of the square", "a circle"]


class RandomCaptions(nn.Module):
    """FLAN-T5 encoder at its real shape fed token ids hashed from the words (no tokenizer download): the text
    encoder's compute and memory, not its meaning. encode(prompts) -> (features (B, 120, 2048), mask (B, 120))."""

    def __init__(self, encoder: nn.Module, max_len: int = 120):
        super().__init__()
        self.encoder, self.max_len = encoder, max_len

    @torch.no_grad()
    def encode(self, prompts):
        from common.t5 import left_pad

        dev = next(self.encoder.parameters()).device
        ids = torch.zeros(len(prompts), self.max_len, dtype=torch.long)
        mask = torch.zeros(len(prompts), self.max_len, dtype=torch.bool)
        for b, p in enumerate(prompts):
            row = [hash(w) % 32000 + 3 for w in str(p).split()][: self.max_len - 1] + [1]
            ids[b, : len(row)], mask[b, : len(row)] = torch.tensor(row), True
        ids, mask = ids.to(dev), mask.to(dev)
        feats = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        return left_pad(feats, mask)


def paper_model(name: str, device, storage: torch.dtype, shrink: bool):
    """(backend, frozen rules for the planner) of a paper model with random weights, created on `device` (meta for
    the planner's twin). shrink: the same architecture at a CPU size (the test)."""
    from common.llamagen import GPT, LLAMAGEN_CHECKPOINTS, VQConfig, VQModel, official_gpt_config
    from common.models import LlamaGenC2I, LlamaGenT2I

    with torch.device(device):
        if name.startswith("janus"):
            from transformers import GenerationConfig, JanusForConditionalGeneration

            from common.janus import JanusT2I, janus_pro_config, tiny_janus_config, tiny_tokenizer

            cfg = tiny_janus_config() if shrink else janus_pro_config(name.rsplit("-", 1)[-1])
            model = JanusForConditionalGeneration(cfg).to(storage)
            model.generation_config = GenerationConfig(bos_token_id=0, pad_token_id=1, eos_token_id=2)
            model.generation_config.generation_kwargs = {"boi_token_id": 3}
            bk = JanusT2I(model, tiny_tokenizer())
            inside = {id(t) for t in list(bk.policy.parameters()) + list(bk.policy.buffers())}
            from common.memory import _Rest

            rest = _Rest([t for t in list(model.parameters()) + list(model.buffers()) if id(t) not in inside])
            return bk, [(rest, "policy")]
        ck = LLAMAGEN_CHECKPOINTS[name]
        small = dict(dim=64, n_layer=2, n_head=4, vocab_size=64, block_size=16, caption_dim=32, cls_token_num=8)
        if ck.task == "c2i":
            small.pop("cls_token_num"), small.pop("caption_dim")
        size = 64 if shrink else ck.image_size
        gpt = GPT(official_gpt_config(ck.preset, ck.task, size, **(small if shrink else {}))).init_weights()
        gpt.to(storage)
        vq = VQModel(VQConfig(codebook_size=64, z_channels=16, ch=8, ch_mult=(1, 1, 1, 1, 1), num_res_blocks=1,
                              norm_groups=4) if shrink else VQConfig())
        if ck.task == "c2i":
            return LlamaGenC2I(gpt, vq, size), [(vq, "fp32")]
        from transformers import T5Config, T5EncoderModel

        from common.t5 import flan_t5_xl_config

        t5cfg = T5Config(d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16, vocab_size=32128,
                         is_encoder_decoder=False, use_cache=False) if shrink else flan_t5_xl_config()
        t5 = T5EncoderModel(t5cfg).to(torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32)
        return LlamaGenT2I(gpt, vq, RandomCaptions(t5, gpt.cfg.cls_token_num), size), [(vq, "fp32"), (t5, "t5")]


def phase(fn, device):
    """Run fn; -> (its output, seconds, peak GiB allocated during it on a GPU, else None)."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return out, time.perf_counter() - t, (torch.cuda.max_memory_allocated() / 2**30 if cuda else None)


def grpo_step(name: str, args: Args, log) -> dict:
    """One GRPO step of `name` at its preset's settings (the planner's flags for one GPU of args.gpu_gb)."""
    import copy
    import functools

    from common.distributed import activation_checkpointing
    from common.memory import GIB, LORA_TARGETS, find_fit, flags, peft_lora, shapes
    from rewards.color import ColorFraction

    preset, paper_gpus = PAPER[name]
    script, pa = preset_runs()[preset]
    storage = torch.bfloat16 if pa.dtype == "bfloat16-pure" else torch.float32
    mixed = pa.dtype == "bfloat16"
    dev = torch.device(args.device)
    per_gpu = max(1, pa.prompts_per_step // paper_gpus) * pa.group_size
    gpu_gb = args.gpu_gb or (torch.cuda.get_device_properties(dev).total_memory / GIB if dev.type == "cuda" else 24)
    twin = paper_model(name, "meta", storage, args.shrink)
    result = {"model": name, "preset": f"{script}.py --preset {preset}", "dtype": pa.dtype, "beta": pa.beta,
              "per_gpu_batch_paper": per_gpu, "gpu_gb": round(gpu_gb, 1)}
    share = pa.group_size if args.shrink else per_gpu  # the CPU test: one group
    while share >= pa.group_size:
        fit = find_fit(pa, 1, gpu_gb, model=twin, batch=share, with_rewards=False, allow_offload=False)
        if fit.ok:
            break
        share //= 2
    share = max(share, pa.group_size)
    fit = find_fit(pa, 1, gpu_gb, model=twin, batch=share, with_rewards=False, allow_offload=False)
    s = fit.setting
    result.update(images=share, planner_fits=fit.ok, flags=flags(fit, pa, share),
                  predicted_gib={"static": fit.plan.static / GIB, "rollout": fit.plan.rollout / GIB,
                                 "update": fit.plan.update / GIB})
    log(f"[{name}] {result['preset']}: {share} of the paper's {per_gpu} images per GPU; planner: "
        f"{'fits' if fit.ok else 'no fit'} with {result['flags'] or 'the preset as is'}")
    t0 = time.perf_counter()
    torch.manual_seed(0)
    bk, _ = paper_model(name, dev, storage, args.shrink)
    if fit.setting.lora_rank:
        peft_lora(bk.policy, s.lora_rank, LORA_TARGETS[shapes(bk).kind])
        bk.policy.to(dev)
    policy = bk.policy
    ref = copy.deepcopy(policy).requires_grad_(False) if pa.beta > 0 and not s.lora_rank else None
    if fit.checkpointing:
        activation_checkpointing(policy)
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6)
    result["build_s"] = time.perf_counter() - t0
    result["trainable_params"] = sum(p.numel() for p in params)
    log(f"[{name}] built in {result['build_s']:.1f} s ({result['trainable_params'] / 1e9:.2f}B trainable)")
    amp = functools.partial(torch.autocast, dev.type, dtype=torch.bfloat16, enabled=mixed)
    G = pa.group_size
    prompts = [str(207 + i) if name.startswith("llamagen-c2i") else WORDS[i % len(WORDS)] for i in range(share // G)]
    cond = cond_repeat(bk.cond(prompts), G)
    uncond = bk.uncond(cond)
    gen = torch.Generator(device=dev).manual_seed(0)

    def rollout():
        with torch.no_grad(), amp():
            tokens = sample(policy, cond, uncond, bk.num_tokens, pa.cfg_scale, temperature=pa.temperature,
                            chunk_size=fit.chunk if fit.chunk != share else 0, generator=gen)[0]
        return tokens, bk.decode(tokens)

    (tokens, images), result["sample_s"], result["sample_peak_gib"] = phase(rollout, dev)
    log(f"[{name}] sample {result['sample_s']:.1f} s, peak {result['sample_peak_gib']} GiB")
    reward = ColorFraction()  # a stand-in: the preset's reward models need their weights (planner: their memory)
    texts = ["a red circle"] * share
    rewards, result["reward_s"], result["reward_peak_gib"] = phase(lambda: reward(images, texts, None).to(dev), dev)
    adv = (rewards.view(-1, G) - rewards.view(-1, G).mean(1, keepdim=True)).view(-1)
    mb = fit.micro_batch or share

    def update():
        slices = [slice(i, i + mb) for i in range(0, share, mb)]
        for sl in slices:
            c = {k: v[sl] for k, v in cond.items()}
            ref_logp = None
            if ref is not None:
                with torch.no_grad(), amp():
                    ref_logp = score(ref, c, tokens[sl])[0]
            with amp():
                logp = score(policy, c, tokens[sl])[0]
            loss = -(adv[sl, None] * logp).mean()
            if ref_logp is not None:
                d = ref_logp - logp
                loss = loss + pa.beta * (torch.exp(d) - d - 1).mean()
            (loss * len(range(sl.start, min(sl.stop, share))) / share).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    _, result["update_s"], result["update_peak_gib"] = phase(update, dev)
    total = result["sample_s"] + result["reward_s"] + result["update_s"]
    result["images_per_s"] = share / total
    log(f"[{name}] reward {result['reward_s']:.2f} s (stand-in), update {result['update_s']:.1f} s, peak "
        f"{result['update_peak_gib']} GiB; {result['images_per_s']:.2f} images/s")
    return result


def paper_suite(args: Args):
    import gc
    import json
    import os

    def log(msg):
        print(msg, flush=True)

    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda: no CUDA device is visible to torch")
    if not args.random_weights:
        sys.exit("error: --suite paper builds the paper models with random weights: pass --random-weights")
    names = list(PAPER) if args.models == "all" else args.models.split(",")
    if unknown := [n for n in names if n not in PAPER]:
        sys.exit(f"error: --models: unknown {', '.join(unknown)}; known: {', '.join(PAPER)}")
    results, start = [], time.perf_counter()
    for name in names:
        try:
            results.append(grpo_step(name, args, log))
        except torch.cuda.OutOfMemoryError as e:
            log(f"[{name}] out of memory: {str(e).splitlines()[0]}")
            results.append({"model": name, "error": "out of memory: " + str(e).splitlines()[0]})
        except Exception as e:  # one model's failure must not cost the others' figures
            log(f"[{name}] failed: {type(e).__name__}: {e}")
            results.append({"model": name, "error": f"{type(e).__name__}: {e}"})
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if args.out:  # after every model, so a run cut short keeps what it measured
            tmp = args.out + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                           "shrink": args.shrink, "results": results}, f, indent=1)
            os.replace(tmp, args.out)
    log(f"\n{'model':18s} {'images':>6s} {'sample s':>9s} {'reward s':>9s} {'update s':>9s} {'img/s':>7s} "
        f"{'rollout GiB (pred)':>19s} {'update GiB (pred)':>18s}  flags")
    for r in results:
        if "error" in r:
            log(f"{r['model']:18s} {r['error']}")
            continue
        pr = r["predicted_gib"]

        def mem(x):
            return "-" if x is None else f"{x:.1f}"

        log(f"{r['model']:18s} {r['images']:6d} {r['sample_s']:9.2f} {r['reward_s']:9.2f} {r['update_s']:9.2f} "
            f"{r['images_per_s']:7.2f} {mem(r['sample_peak_gib']):>9s} ({pr['rollout']:5.1f}) "
            f"{mem(r['update_peak_gib']):>8s} ({pr['update']:5.1f})  {r['flags'] or '-'}")
    log(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    args = parse_args()
    if args.memory_table:
        from common.memory import table

        print(table(preset_runs().values()))
        sys.exit(0)
    if args.suite == "paper":
        paper_suite(args)
        sys.exit(0)
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
