"""Pretrain the ShapeWorld toy text-to-image model from scratch (the weights shipped in weights/shapeworld).

Two stages, both on the procedural world of toy/world.py:
1. the VQ tokenizer (LlamaGen VQ architecture, tiny config): 64x64 images -> 8x8 = 64 codes, trained
   with a reconstruction loss plus the codebook/commitment loss, restarting dead codes;
2. the AR model (LlamaGen GPT, text-conditional, tiny config) and its frozen-later word encoder:
   next-token cross-entropy on (prompt, tokens of a scene that satisfies the prompt), with 10% of the
   captions replaced by the learned null caption so classifier-free guidance works.

    python -m toy.train                        # the recipe on the CPU, into runs/toy: about 40 minutes on 2 cores,
                                               # not bit-identical; then: python evaluate.py --model runs/toy
    python -m toy.train --device cuda --out-dir weights/shapeworld   # how the shipped weights were made (about 2
                                               # minutes on one H100); only an explicit --out-dir replaces them

It ends by printing the tokenizer round-trip detector accuracy and the held-out strict GenEval score.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from common import errors
from common.cli import parse
from common.errors import fail
from common.evaluation import geneval_eval
from common.models import build_t2i
from common.prompts import load_prompts
from common.utils import seed_everything
from rewards.geneval import GenEvalJudge
from toy import world as sw
from toy.model import toy_config


@dataclass
class Args:
    out_dir: str = "runs/toy"
    """where config.json and the safetensors weights are written (the shipped ones: weights/shapeworld)"""
    seed: int = 0
    """seed of the whole run"""
    vq_steps: int = 1000
    """tokenizer optimisation steps"""
    vq_batch: int = 16
    """tokenizer batch size"""
    vq_lr: float = 2e-3
    """tokenizer learning rate"""
    num_scenes: int = 40000
    """(prompt, scene) pairs tokenised for the AR stage"""
    ar_steps: int = 3000
    """AR model optimisation steps"""
    ar_batch: int = 48
    """AR batch size"""
    ar_lr: float = 1e-3
    """AR peak learning rate (cosine decay to 10%)"""
    null_prob: float = 0.1
    """probability of replacing a caption by the null caption (enables CFG)"""
    eval_prompts: str = "data/shapeworld/eval.jsonl"
    """held-out prompts for the final report"""
    eval_samples: int = 4
    """samples per held-out prompt in the final report"""
    eval_cfg: float = 3.0
    """CFG scale of the final report"""
    device: Literal["cpu", "cuda"] = "cpu"
    """cpu or cuda (the shipped weights were trained with --device cuda)"""


def scenes(rng: np.random.Generator, n: int):
    """n random prompts (all six tags) with a rendered scene that satisfies each. -> metas, (n, 3, 64, 64) in [-1, 1]."""
    metas = [sw.sample_prompt(rng) for _ in range(n)]
    imgs = np.stack([sw.render(sw.sample_scene(m, rng)) for m in metas])
    return metas, torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1


def train_vq(vq, args, rng):
    opt = torch.optim.Adam(vq.parameters(), lr=args.vq_lr)
    K = vq.cfg.codebook_size
    dev = vq.quant_conv.weight.device
    usage = torch.zeros(K, device=dev)
    for step in (bar := tqdm(range(1, args.vq_steps + 1), desc="vq")):
        _, x = scenes(rng, args.vq_batch)
        x = x.to(dev)
        z = vq.quant_conv(vq.encoder(x))
        zq, ids, vq_loss = vq.quantize(z)
        rec = vq.decoder(vq.post_quant_conv(zq))
        loss = F.mse_loss(rec, x) + vq_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for g in opt.param_groups:  # cosine decay
            g["lr"] = args.vq_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.vq_steps)))
        usage += torch.bincount(ids.flatten(), minlength=K).float()
        if step % 50 == 0 and step < 0.8 * args.vq_steps:  # restart dead codes on current encoder outputs
            dead = (usage == 0).nonzero().flatten()
            if len(dead):
                zf = F.normalize(z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1]), dim=-1)
                pick = torch.randint(0, zf.shape[0], (len(dead),), device=dev)
                vq.quantize.embedding.weight.data[dead] = zf[pick] + 0.01 * torch.randn_like(zf[pick])
            bar.set_postfix(mse=f"{F.mse_loss(rec, x).item():.4f}", used=int((usage > 0).sum()), dead=len(dead))
            usage.zero_()


@torch.no_grad()
def roundtrip_accuracy(vq, metas, grid):
    """Detector strict accuracy on encode -> decode of ground-truth renders of the given prompts."""
    rng = np.random.default_rng(123)
    x = torch.from_numpy(np.stack([sw.render(sw.sample_scene(m, rng)) for m in metas])).permute(0, 3, 1, 2)
    x = x.float().to(vq.quant_conv.weight.device) / 127.5 - 1
    rec = ((vq.decode(vq.encode(x), grid) + 1) / 2).clamp(0, 1)
    ok = [c for _, c in GenEvalJudge("shapeworld").evaluate(rec, metas)]
    return sum(ok) / len(ok)


if __name__ == "__main__":
    args = parse(Args)
    errors.install(interrupted="nothing was saved")
    try:  # bad input stops here, in one line, before any training
        for k in ("vq_steps", "vq_batch", "num_scenes", "ar_steps", "ar_batch", "eval_samples"):
            if getattr(args, k) < 1:
                raise ValueError(f"--{k.replace('_', '-')} {getattr(args, k)}: must be >= 1")
        for k in ("vq_lr", "ar_lr"):
            if not getattr(args, k) > 0:
                raise ValueError(f"--{k.replace('_', '-')} {getattr(args, k)}: must be > 0")
        if not 0 <= args.null_prob < 1 or args.eval_cfg < 0:
            raise ValueError(f"--null-prob {args.null_prob} must be in [0, 1) and --eval-cfg {args.eval_cfg} >= 0")
        if args.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is visible to torch")
        eval_metas = load_prompts(args.eval_prompts)
        judge = GenEvalJudge("shapeworld")
        judge.validate(eval_metas)
    except (ValueError, OSError) as e:
        fail(str(e))
    errors.check_writable(args.out_dir, f"--out-dir {args.out_dir}: cannot write there")  # before, not after, training
    errors.install(args.out_dir, interrupted="nothing was saved; run the command again to train from the start")
    seed_everything(args.seed)
    rng = np.random.default_rng(args.seed)
    bk = build_t2i(toy_config("toy"))
    gpt, vq, text = bk.policy.to(args.device), bk.vq.to(args.device), bk.text.to(args.device)
    t_start = time.time()

    # Stage 1: tokenizer
    vq.train().requires_grad_(True)
    train_vq(vq, args, rng)
    vq.eval().requires_grad_(False)
    print(f"tokenizer round-trip strict accuracy on held-out prompts: "
          f"{roundtrip_accuracy(vq, [m for m in eval_metas for _ in range(4)], bk.grid):.3f}")

    # Stage 2: tokenise a dataset of (prompt, scene) pairs
    prompts, codes = [], []
    with torch.no_grad():
        for _ in tqdm(range(0, args.num_scenes, 500), desc="tokenise"):
            metas, x = scenes(rng, 500)
            prompts += [m["prompt"] for m in metas]
            codes.append(vq.encode(x.to(args.device)))
    codes = torch.cat(codes)  # (N, 64)
    ids, mask = text.tokenize(prompts)  # (N, L)
    ids, mask = ids.to(args.device), mask.to(args.device)

    # Stage 3: AR model + word encoder, next-token cross-entropy with caption dropout
    text.train().requires_grad_(True)
    gpt.cls_embedding.uncond_embedding.requires_grad_(True)
    params = list(gpt.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=args.ar_lr, betas=(0.9, 0.95), weight_decay=0.05)
    warmup = 100
    for step in (bar := tqdm(range(1, args.ar_steps + 1), desc="ar")):
        lr = args.ar_lr * min(1.0, step / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.ar_steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        b = torch.randint(0, len(codes), (args.ar_batch,), device=args.device)
        emb = text(ids[b], mask[b])  # (B, L, caption_dim)
        drop = torch.rand(args.ar_batch, device=args.device) < args.null_prob
        null = gpt.cls_embedding.uncond_embedding.expand_as(emb)
        cond = {"emb": torch.where(drop[:, None, None], null, emb), "mask": mask[b]}
        logits = gpt(cond, codes[b][:, :-1])  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes[b].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.1e}")
    text.eval().requires_grad_(False)
    gpt.eval()

    bk.save(args.out_dir)
    print(f"saved to {args.out_dir} after {(time.time() - t_start) / 60:.1f} min")
    summary, _, _ = geneval_eval(bk, eval_metas, judge, args.eval_samples, cfg_scale=args.eval_cfg)
    print("held-out strict GenEval of the base model: " + " | ".join(f"{k} {v:.3f}" for k, v in summary.items()))
