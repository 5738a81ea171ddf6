"""LlamaGen: the GPT image-token transformer and the VQ tokenizer, in one checkpoint-compatible module.

Every model of the LlamaGen family in this project is a configuration of the classes below: the tiny
random test model, the ShapeWorld toy, and the official LlamaGen checkpoints (GPT-B/L/XL/XXL/3B, VQ-16).
Facts (configs, 2D RoPE with zero rotation at the condition positions, null class / null caption, VQ
layout, state-dict key names) follow the LlamaGen release (docs/models.md), written from scratch.

Differences from the released LlamaGen code, all deliberate for RL:
- no dropout / drop-path / label dropout modules (RL needs deterministic teacher forcing; the keys of
  the official checkpoints are unchanged because dropout has no parameters);
- the KV cache is an explicit object returned by `prefill` and passed to `decode`, never stored on the
  module, so no stale cache can leak from sampling into teacher-forced scoring;
- `forward(cond, tokens)` is always the teacher-forced pass (no train/eval-mode switch).

The official checkpoints: LLAMAGEN_CHECKPOINTS names the release's files, `official_files` finds them in
$LLAMAGEN_DIR, and `load_official_gpt` / `load_official_vq` read the `.pt` files with strict key and shape
checks (the release itself loads with strict=False, which would hide a mismatch). The backends built on them
are in common/models.py (load_llamagen).
"""
from __future__ import annotations

import argparse
import math
import os
import pickle
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.utils import state_dict_mismatch, unwrap_state_dict


def find_multiple(n: int, k: int) -> int:
    return n if n % k == 0 else n + k - (n % k)


# ----------------------------------------------------------------------------------------------------
# GPT


@dataclass
class GPTConfig:
    dim: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int | None = None  # None = multi-head attention (every LlamaGen preset)
    multiple_of: int = 256  # SwiGLU hidden size is rounded up to a multiple of this
    ffn_dim_multiplier: float | None = None
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    vocab_size: int = 16384  # image codebook size
    block_size: int = 256  # number of image tokens, a square grid
    cls_token_num: int = 1  # condition positions: 1 (class) or 120 (T5 caption)
    model_type: str = "c2i"  # "c2i" (class-conditional) or "t2i" (text-conditional)
    num_classes: int = 1000  # c2i: the null class is index num_classes
    caption_dim: int = 2048  # t2i: width of the caption features (FLAN-T5-XL)


# Official presets (the release's gpt.py; docs/models.md). Parameter counts are for c2i with one class token.
GPT_PRESETS = {
    "B": dict(n_layer=12, n_head=12, dim=768),  # 111 M
    "L": dict(n_layer=24, n_head=16, dim=1024),  # 343 M
    "XL": dict(n_layer=36, n_head=20, dim=1280),  # 775 M
    "XXL": dict(n_layer=48, n_head=24, dim=1536),  # 1.4 B
    "3B": dict(n_layer=24, n_head=32, dim=3200),  # 3.1 B
}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # statistic in fp32, cast back, then scale (as LlamaGen)
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        hidden = int(2 * 4 * cfg.dim / 3)
        if cfg.ffn_dim_multiplier is not None:
            hidden = int(cfg.ffn_dim_multiplier * hidden)
        hidden = find_multiple(hidden, cfg.multiple_of)
        self.w1 = nn.Linear(cfg.dim, hidden, bias=False)
        self.w3 = nn.Linear(cfg.dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, cfg.dim, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def apply_rotary_emb(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs. x: (B, S, H, D); freqs: (S, D/2, 2) holding (cos, sin)."""
    xs = x.float().reshape(*x.shape[:-1], -1, 2)  # (B, S, H, D/2, 2)
    f = freqs.view(1, xs.size(1), 1, xs.size(3), 2)
    out = torch.stack(
        [xs[..., 0] * f[..., 0] - xs[..., 1] * f[..., 1], xs[..., 1] * f[..., 0] + xs[..., 0] * f[..., 1]], dim=-1
    )
    return out.flatten(3).type_as(x)


def rope_2d_table(grid: int, head_dim: int, base: float, cls_token_num: int) -> torch.Tensor:
    """(cls_token_num + grid², head_dim/2, 2) table of (cos, sin).

    Image token t = r·grid + c gets angles [r·f_0..r·f_{d/4-1}, c·f_0..c·f_{d/4-1}], f_k = base^(-2k/(d/2)).
    The condition rows are ALL ZERO (cos and sin), which zeroes q and k there: LlamaGen's convention,
    required for checkpoint compatibility (docs/models.md).
    """
    half = head_dim // 2
    cpu = torch.device("cpu")  # explicit, so a model built under `with torch.device("meta")` still gets a real table
    freqs = 1.0 / (base ** (torch.arange(0, half, 2, device=cpu)[: half // 2].float() / half))  # (d/4,)
    t = torch.arange(grid, dtype=torch.float32, device=cpu)
    f = torch.outer(t, freqs)  # (grid, d/4)
    f2d = torch.cat([f[:, None, :].expand(-1, grid, -1), f[None, :, :].expand(grid, -1, -1)], dim=-1)  # (g, g, d/2)
    table = torch.stack([torch.cos(f2d), torch.sin(f2d)], dim=-1).flatten(0, 1)  # (g², d/2, 2)
    return torch.cat([torch.zeros(cls_token_num, half, 2, device=cpu), table])


class KVCache:
    """Preallocated keys/values for every layer, for one batch of sequences. Lives outside the model."""

    def __init__(self, cfg: GPTConfig, batch: int, max_len: int, key_valid: torch.Tensor, dtype, device):
        n_kv = cfg.n_kv_head or cfg.n_head
        hd = cfg.dim // cfg.n_head
        self.k = [torch.zeros(batch, n_kv, max_len, hd, dtype=dtype, device=device) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(batch, n_kv, max_len, hd, dtype=dtype, device=device) for _ in range(cfg.n_layer)]
        self.key_valid = key_valid  # (B, max_len) bool: False at padded condition positions
        self.pos = 0  # number of positions already written


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.n_kv_head = cfg.n_head, cfg.n_kv_head or cfg.n_head
        self.head_dim = cfg.dim // cfg.n_head
        self.wqkv = nn.Linear(cfg.dim, (self.n_head + 2 * self.n_kv_head) * self.head_dim, bias=False)
        self.wo = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x, freqs, mask, cache: KVCache | None = None, layer: int = 0):
        B, S, _ = x.shape
        q, k, v = self.wqkv(x).split(
            [self.n_head * self.head_dim, self.n_kv_head * self.head_dim, self.n_kv_head * self.head_dim], dim=-1
        )
        q = apply_rotary_emb(q.view(B, S, self.n_head, self.head_dim), freqs).transpose(1, 2)  # (B, H, S, hd)
        k = apply_rotary_emb(k.view(B, S, self.n_kv_head, self.head_dim), freqs).transpose(1, 2)
        v = v.view(B, S, self.n_kv_head, self.head_dim).transpose(1, 2)
        if cache is not None:  # write this chunk, then attend over everything written so far
            p = cache.pos
            cache.k[layer][:, :, p : p + S] = k
            cache.v[layer][:, :, p : p + S] = v
            k, v = cache.k[layer][:, :, : p + S], cache.v[layer][:, :, : p + S]
        if self.n_kv_head != self.n_head:
            k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
            v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, S, hd)
        return self.wo(y.transpose(1, 2).reshape(B, S, -1))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.attention = Attention(cfg)
        self.feed_forward = FeedForward(cfg)
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)

    def forward(self, x, freqs, mask, cache=None, layer=0):
        h = x + self.attention(self.attention_norm(x), freqs, mask, cache, layer)
        return h + self.feed_forward(self.ffn_norm(h))


class LabelEmbedder(nn.Module):
    """c2i condition: one embedding per class, plus the null class (index num_classes) for CFG."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    def forward(self, labels):  # (B,) -> (B, 1, dim)
        return self.embedding_table(labels).unsqueeze(1)


class CaptionMLP(nn.Module):
    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, dim, bias=False)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(dim, dim, bias=False)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class CaptionEmbedder(nn.Module):
    """t2i condition: caption features (B, L, caption_dim) -> (B, L, dim). The null caption is the
    learned `uncond_embedding` in feature space, projected like any caption."""

    def __init__(self, caption_dim: int, dim: int, token_num: int):
        super().__init__()
        self.cap_proj = CaptionMLP(caption_dim, dim)
        self.uncond_embedding = nn.Parameter(torch.randn(token_num, caption_dim) / caption_dim**0.5)

    def forward(self, feats):
        return self.cap_proj(feats)


class GPT(nn.Module):
    """LlamaGen's Transformer. A condition is a dict: {"label": (B,)} for c2i, or
    {"emb": (B, L, caption_dim), "mask": (B, L) bool} for t2i (mask False = padded caption slot)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.model_type == "c2i":
            self.cls_embedding = LabelEmbedder(cfg.num_classes, cfg.dim)
        elif cfg.model_type == "t2i":
            self.cls_embedding = CaptionEmbedder(cfg.caption_dim, cfg.dim, cfg.cls_token_num)
        else:
            raise ValueError(f"model_type must be 'c2i' or 't2i', got {cfg.model_type!r}")
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        grid = int(math.isqrt(cfg.block_size))
        assert grid * grid == cfg.block_size, "block_size must be a square number of image tokens"
        # a plain attribute, not a buffer: not part of the state dict (as in LlamaGen)
        self.freqs_cis = rope_2d_table(grid, cfg.dim // cfg.n_head, cfg.rope_base, cfg.cls_token_num)

    def init_weights(self, std: float = 0.02):
        """Fresh initialisation as LlamaGen: N(0, 0.02) everywhere, zero output head."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=std)
        nn.init.zeros_(self.output.weight)
        return self

    # -- condition handling ------------------------------------------------------------------------
    def null_cond(self, cond: dict) -> dict:
        """The unconditional (CFG) input matching `cond`: the null class, or the null caption with the
        same key mask (LlamaGen's sampler uses the caption's mask for both halves)."""
        if self.cfg.model_type == "c2i":
            return {"label": torch.full_like(cond["label"], self.cfg.num_classes)}
        emb = self.cls_embedding.uncond_embedding.to(cond["emb"].dtype)
        return {"emb": emb.expand_as(cond["emb"]).clone(), "mask": cond["mask"].clone()}

    def _cond_embeddings(self, cond: dict):
        """-> (B, L, dim) condition embeddings and (B, L) key-validity mask (or None)."""
        if self.cfg.model_type == "c2i":
            return self.cls_embedding(cond["label"]), None
        x = self.cls_embedding(cond["emb"][:, : self.cfg.cls_token_num])
        return x, cond["mask"][:, : self.cfg.cls_token_num]

    @staticmethod
    def _mask(key_valid, q_start: int, q_len: int, k_len: int, device):
        """Boolean (B or 1, 1, q_len, k_len) mask, True = may attend: causal, padded condition keys
        hidden, and the diagonal always visible (as LlamaGen's sampler)."""
        qpos = torch.arange(q_start, q_start + q_len, device=device)[:, None]
        kpos = torch.arange(k_len, device=device)[None, :]
        m = kpos <= qpos  # (q, k)
        if key_valid is None:
            return m[None, None]
        m = m[None] & key_valid[:, None, :k_len]
        return (m | (kpos == qpos)[None])[:, None]

    def _run(self, x, start: int, key_valid, cache: KVCache | None):
        S = x.shape[1]
        freqs = self.freqs_cis[start : start + S].to(x.device)
        k_len = start + S
        mask = self._mask(key_valid, start, S, k_len, x.device)
        for i, layer in enumerate(self.layers):
            x = layer(x, freqs, mask, cache, i)
        return self.output(self.norm(x)).float()

    # -- the three entry points ---------------------------------------------------------------------
    def forward(self, cond: dict, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing. tokens (B, n) image ids x_0..x_{n-1} -> logits (B, n+1, V) predicting x_0..x_n."""
        c, cmask = self._cond_embeddings(cond)
        x = torch.cat([c, self.tok_embeddings(tokens)], dim=1)
        L = c.shape[1]
        key_valid = None
        if cmask is not None:
            key_valid = torch.cat([cmask, torch.ones_like(tokens, dtype=torch.bool)], dim=1)
        return self._run(x, 0, key_valid, None)[:, L - 1 :]

    @torch.no_grad()
    def prefill(self, cond: dict, max_new_tokens: int):
        """Run the condition through a fresh KV cache. -> (logits (B, V) for x_0, cache)."""
        c, cmask = self._cond_embeddings(cond)
        B, L, _ = c.shape
        max_len = L + max_new_tokens
        key_valid = torch.ones(B, max_len, dtype=torch.bool, device=c.device)
        if cmask is not None:
            key_valid[:, :L] = cmask
        cache = KVCache(self.cfg, B, max_len, key_valid, c.dtype, c.device)
        logits = self._run(c, 0, key_valid, cache)
        cache.pos = L
        return logits[:, -1], cache

    @torch.no_grad()
    def decode(self, token: torch.Tensor, cache: KVCache):
        """Feed one image token per row (B,). -> (logits (B, V) for the next token, cache)."""
        x = self.tok_embeddings(token[:, None])
        logits = self._run(x, cache.pos, cache.key_valid, cache)
        cache.pos += 1
        return logits[:, -1], cache


# ----------------------------------------------------------------------------------------------------
# VQ tokenizer


@dataclass
class VQConfig:
    codebook_size: int = 16384
    codebook_embed_dim: int = 8
    codebook_l2_norm: bool = True
    z_channels: int = 256
    ch: int = 128
    ch_mult: tuple = (1, 1, 2, 2, 4)  # downsampling factor 2^(len-1)
    num_res_blocks: int = 2
    norm_groups: int = 32  # GroupNorm groups (32 in every official checkpoint)
    commit_beta: float = 0.25  # only used when training a tokenizer


def _norm(c, groups):
    return nn.GroupNorm(groups, c, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout, groups):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin, groups), nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2, self.conv2 = _norm(cout, groups), nn.Conv2d(cout, cout, 3, 1, 1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1, 1, 0)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    def __init__(self, c, groups):
        super().__init__()
        self.norm = _norm(c, groups)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.norm(x)
        q = self.q(h).flatten(2).transpose(1, 2)  # (B, HW, C)
        k, v = self.k(h).flatten(2).transpose(1, 2), self.v(h).flatten(2).transpose(1, 2)
        y = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]  # single head
        return x + self.proj_out(y.transpose(1, 2).reshape(B, C, H, W))


class Downsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 2, 0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Module):
    def __init__(self, cfg: VQConfig):
        super().__init__()
        ch, mult, g = cfg.ch, cfg.ch_mult, cfg.norm_groups
        self.conv_in = nn.Conv2d(3, ch, 3, 1, 1)
        self.conv_blocks = nn.ModuleList()
        cin = ch
        for i, m in enumerate(mult):
            blk = nn.Module()
            blk.res, blk.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                blk.res.append(ResnetBlock(cin, ch * m, g))
                cin = ch * m
                if i == len(mult) - 1:
                    blk.attn.append(AttnBlock(cin, g))
            if i != len(mult) - 1:
                blk.downsample = Downsample(cin)
            self.conv_blocks.append(blk)
        self.mid = nn.ModuleList([ResnetBlock(cin, cin, g), AttnBlock(cin, g), ResnetBlock(cin, cin, g)])
        self.norm_out = _norm(cin, g)
        self.conv_out = nn.Conv2d(cin, cfg.z_channels, 3, 1, 1)

    def forward(self, x):
        h = self.conv_in(x)
        for blk in self.conv_blocks:
            for j, res in enumerate(blk.res):
                h = res(h)
                if len(blk.attn) > 0:
                    h = blk.attn[j](h)
            if hasattr(blk, "downsample"):
                h = blk.downsample(h)
        for m in self.mid:
            h = m(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: VQConfig):
        super().__init__()
        ch, mult, g = cfg.ch, cfg.ch_mult, cfg.norm_groups
        cin = ch * mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, cin, 3, 1, 1)
        self.mid = nn.ModuleList([ResnetBlock(cin, cin, g), AttnBlock(cin, g), ResnetBlock(cin, cin, g)])
        self.conv_blocks = nn.ModuleList()
        for i, m in enumerate(reversed(mult)):
            blk = nn.Module()
            blk.res, blk.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                blk.res.append(ResnetBlock(cin, ch * m, g))
                cin = ch * m
                if i == 0:
                    blk.attn.append(AttnBlock(cin, g))
            if i != len(mult) - 1:
                blk.upsample = Upsample(cin)
            self.conv_blocks.append(blk)
        self.norm_out = _norm(cin, g)
        self.conv_out = nn.Conv2d(cin, 3, 3, 1, 1)

    def forward(self, z):
        h = self.conv_in(z)
        for m in self.mid:
            h = m(h)
        for blk in self.conv_blocks:
            for j, res in enumerate(blk.res):
                h = res(h)
                if len(blk.attn) > 0:
                    h = blk.attn[j](h)
            if hasattr(blk, "upsample"):
                h = blk.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.l2_norm = cfg.codebook_l2_norm
        self.beta = cfg.commit_beta
        self.embedding = nn.Embedding(cfg.codebook_size, cfg.codebook_embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / cfg.codebook_size, 1.0 / cfg.codebook_size)
        self.register_buffer("codebook_used", torch.zeros(65536))  # a key of the official checkpoints

    def codebook(self) -> torch.Tensor:
        w = self.embedding.weight
        return F.normalize(w, dim=-1) if self.l2_norm else w

    def forward(self, z):
        """z (B, C, h, w) -> (straight-through z_q, ids (B, h*w), codebook loss + commitment loss)."""
        z = z.permute(0, 2, 3, 1)  # (B, h, w, C)
        if self.l2_norm:
            z = F.normalize(z, dim=-1)
        e = self.codebook()
        d = z.pow(2).sum(-1, keepdim=True) - 2 * z @ e.t() + e.pow(2).sum(-1)  # (B, h, w, K)
        ids = d.argmin(-1)
        zq = e[ids]
        loss = F.mse_loss(zq, z.detach()) + self.beta * F.mse_loss(zq.detach(), z)
        zq = z + (zq - z).detach()
        return zq.permute(0, 3, 1, 2), ids.flatten(1), loss


class VQModel(nn.Module):
    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = VectorQuantizer(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.codebook_embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.codebook_embed_dim, cfg.z_channels, 1)

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.cfg.ch_mult) - 1)

    def forward(self, x):
        """Autoencode x in [-1, 1] (for tokenizer training). -> (reconstruction, ids, vq loss)."""
        zq, ids, loss = self.quantize(self.quant_conv(self.encoder(x)))
        return self.decoder(self.post_quant_conv(zq)), ids, loss

    @torch.no_grad()
    def encode(self, x) -> torch.Tensor:
        """x (B, 3, H, W) in [-1, 1] -> ids (B, h*w), raster order."""
        return self.quantize(self.quant_conv(self.encoder(x)))[1]

    def codebook_vectors(self, ids) -> torch.Tensor:
        """ids (B, T) -> (B, T, C) codebook rows (L2-normalised when codebook_l2_norm)."""
        return self.quantize.codebook()[ids]

    def decode(self, ids, grid: tuple[int, int]) -> torch.Tensor:
        """ids (B, h*w) -> images (B, 3, H, W), roughly in [-1, 1]."""
        h, w = grid
        z = self.codebook_vectors(ids).view(ids.shape[0], h, w, -1).permute(0, 3, 1, 2)
        return self.decoder(self.post_quant_conv(z))


# ----------------------------------------------------------------------------------------------------
# Official checkpoints (.pt files of the LlamaGen release)

VQ_DOWNSAMPLE = 16  # VQ-16: one image token per 16x16 pixels


def official_gpt_config(preset: str, model_type: str, image_size: int, **overrides) -> GPTConfig:
    """GPTConfig of an official checkpoint: preset B/L/XL/XXL/3B, "c2i" (1 class token, 1000 classes) or
    "t2i" (120 FLAN-T5-XL caption tokens of width 2048), block_size (image_size / 16)² (docs/models.md).
    `overrides` replace any field (tests use it for tiny configurations)."""
    if preset not in GPT_PRESETS:
        raise ValueError(f"unknown GPT preset {preset!r}; known: {', '.join(GPT_PRESETS)}")
    if model_type not in ("c2i", "t2i"):
        raise ValueError(f"model_type must be 'c2i' or 't2i', got {model_type!r}")
    grid = image_size // VQ_DOWNSAMPLE
    base = dict(GPT_PRESETS[preset], block_size=grid * grid, model_type=model_type,
                cls_token_num=1 if model_type == "c2i" else 120)
    return GPTConfig(**{**base, **overrides})


def read_official_state_dict(path: str, trust_pickle: bool = False, mmap: bool = False) -> dict[str, torch.Tensor]:
    """The weights of a LlamaGen `.pt` file: the state dict under "model" (the release's GPT and VQ files),
    else "module" or "state_dict", else the file itself when it is a bare state dict.

    Loaded with `weights_only=True` (argparse.Namespace allowed: LlamaGen's training scripts save their
    args next to the weights). `trust_pickle=True` lifts that restriction; use it only for files you trust.
    mmap: the tensors are the file's pages mapped into memory (read when touched), not copies.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"LlamaGen checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle, mmap=mmap)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RuntimeError(
            f"{path}: safe (weights_only) loading refused it ({reason}); if you trust the file, "
            f"set LLAMAGEN_TRUST_PICKLE=1 (or pass trust_pickle=True)"
        ) from None
    sd = unwrap_state_dict(obj, ("model", "module", "state_dict"))
    if sd is not None:
        return sd
    top = list(obj)[:6] if isinstance(obj, dict) else type(obj).__name__
    raise ValueError(f"{path}: no 'model', 'module' or 'state_dict' entry holding the weights (found: {top})")


def load_state_dict_strict(module: nn.Module, sd: dict[str, torch.Tensor], source: str, what: str) -> nn.Module:
    """Load `sd` into `module` with strict key AND shape matching, assigning the tensors (so `module` may
    live on the meta device). Floating tensors are cast to the module's dtype. A mismatch raises ONE line
    naming a few missing / unexpected / wrongly shaped keys."""
    expected = module.state_dict()
    mismatch = state_dict_mismatch(expected, sd)
    if mismatch:
        raise ValueError(f"{source} does not match {what}: {mismatch} (wrong model name/preset, or not a LlamaGen "
                         f"checkpoint?)")
    sd = {k: v.to(expected[k].dtype) if v.is_floating_point() else v for k, v in sd.items()}
    module.load_state_dict(sd, strict=True, assign=True)
    return module


def load_official_gpt(path: str, cfg: GPTConfig, trust_pickle: bool = False) -> GPT:
    """GPT with the weights of an official LlamaGen `.pt` file (e.g. c2i_B_256.pt, t2i_XL_stage1_256.pt),
    loaded strictly. Built on the meta device, so no time or memory goes into a throw-away initialisation."""
    with torch.device("meta"):
        gpt = GPT(cfg)
    what = f"GPT-{cfg.model_type} (dim {cfg.dim}, {cfg.n_layer} layers, {cfg.cls_token_num} condition tokens)"
    return load_state_dict_strict(gpt, read_official_state_dict(path, trust_pickle), path, what)


def official_gpt_weights(path: str, cfg: GPTConfig, trust_pickle: bool = False):
    """(GPT on the meta device, its weight source): the official `.pt` file memory-mapped, keys and shapes checked
    strictly, nothing read (FSDP2 reads each rank's shard from it, common/weights.py)."""
    from common.weights import Weights

    with torch.device("meta"):
        gpt = GPT(cfg)
    sd = read_official_state_dict(path, trust_pickle, mmap=True)
    what = f"GPT-{cfg.model_type} (dim {cfg.dim}, {cfg.n_layer} layers, {cfg.cls_token_num} condition tokens)"
    if mismatch := state_dict_mismatch(gpt.state_dict(), sd):
        raise ValueError(f"{path} does not match {what}: {mismatch} (wrong model name/preset, or not a LlamaGen "
                         f"checkpoint?)")
    return gpt, Weights(tensors=sd)


def load_official_vq(path: str, cfg: VQConfig | None = None, trust_pickle: bool = False) -> VQModel:
    """VQModel (VQ-16 by default) with the weights of vq_ds16_c2i.pt / vq_ds16_t2i.pt, loaded strictly."""
    cfg = cfg or VQConfig()
    with torch.device("meta"):
        vq = VQModel(cfg)
    what = f"VQ (codebook {cfg.codebook_size}x{cfg.codebook_embed_dim}, ch_mult {tuple(cfg.ch_mult)})"
    return load_state_dict_strict(vq, read_official_state_dict(path, trust_pickle), path, what)


# The release's .pt files are not on a model hub that `from_pretrained` reads: they are resolved in a local
# folder, $LLAMAGEN_DIR (default weights/llamagen), under their official names (docs/models.md).

LLAMAGEN_DIR_ENV = "LLAMAGEN_DIR"
LLAMAGEN_DEFAULT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights",
                                    "llamagen")
CLASS_NAMES_ENV = "LLAMAGEN_CLASS_NAMES"  # a class-names file elsewhere than $LLAMAGEN_DIR/imagenet_classes.txt
CLASS_NAMES_FILE = "imagenet_classes.txt"
T5_DIR = "flan-t5-xl"  # a Hugging Face snapshot of google/flan-t5-xl (config, tokenizer, weights)
T5_URL = "https://huggingface.co/google/flan-t5-xl"
_C2I_URL = "https://huggingface.co/FoundationVision/LlamaGen/resolve/main/"
_T2I_URL = "https://huggingface.co/peizesun/llamagen_t2i/resolve/main/"


class LlamaGenCheckpoint(NamedTuple):
    task: str  # "c2i" or "t2i"
    preset: str  # GPT_PRESETS key
    image_size: int
    gpt_file: str
    vq_file: str
    url: str  # download prefix of both files


LLAMAGEN_CHECKPOINTS = {
    "llamagen-c2i-b": LlamaGenCheckpoint("c2i", "B", 256, "c2i_B_256.pt", "vq_ds16_c2i.pt", _C2I_URL),
    "llamagen-c2i-l": LlamaGenCheckpoint("c2i", "L", 256, "c2i_L_256.pt", "vq_ds16_c2i.pt", _C2I_URL),
    "llamagen-c2i-b-384": LlamaGenCheckpoint("c2i", "B", 384, "c2i_B_384.pt", "vq_ds16_c2i.pt", _C2I_URL),
    "llamagen-c2i-l-384": LlamaGenCheckpoint("c2i", "L", 384, "c2i_L_384.pt", "vq_ds16_c2i.pt", _C2I_URL),
    "llamagen-c2i-xl": LlamaGenCheckpoint("c2i", "XL", 384, "c2i_XL_384.pt", "vq_ds16_c2i.pt", _C2I_URL),
    "llamagen-t2i-xl": LlamaGenCheckpoint("t2i", "XL", 256, "t2i_XL_stage1_256.pt", "vq_ds16_t2i.pt", _T2I_URL),
}


IMAGENET_NAMES_SOURCE = ("the AR-GRPO release's reward_utils/imagenet_names.py (https://github.com/Kwai-Klear/AR-GRPO/"
                         "raw/main/reward_utils/imagenet_names.py), read as it is")


def read_class_names(path: str) -> list[str]:
    """Class names in class-index order: a .txt with one name per line (ImageNet names contain commas,
    e.g. "tench, Tinca tinca"), a .json list of names / dict {index: name or [wnid, name]}, or the AR-GRPO
    release's reward_utils/imagenet_names.py (its `IMAGENET_NAMES = {0: 'tench, Tinca tinca', ...}` literal, parsed,
    never run)."""
    if path.endswith(".py"):
        import ast

        with open(path) as f:
            tree = ast.parse(f.read(), path)
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "IMAGENET_NAMES" for t in node.targets):
                data = ast.literal_eval(node.value)
                return [data[k] for k in sorted(data)]
        raise ValueError(f"{path}: no IMAGENET_NAMES = {{index: name}} literal (as in {IMAGENET_NAMES_SOURCE})")
    if path.endswith(".json"):
        with open(path) as f:
            data = json.load(f)
        if isinstance(data, dict):
            data = [data[k] for k in sorted(data, key=int)]
        return [v[-1] if isinstance(v, list) else v for v in data]
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def official_files(name: str, weights_dir: str | None = None) -> dict[str, str]:
    """The local files of LLAMAGEN_CHECKPOINTS[name], checked to exist before anything is loaded (one line naming
    what is missing and where to download it): {"gpt", "vq", and "t5" (t2i) or "class_names" (c2i)}.
    weights_dir: default $LLAMAGEN_DIR, else weights/llamagen; c2i class names: $LLAMAGEN_CLASS_NAMES, else
    <weights_dir>/imagenet_classes.txt (every reward reads "a photo of <class names>")."""
    ck = LLAMAGEN_CHECKPOINTS[name]
    folder = weights_dir or os.environ.get(LLAMAGEN_DIR_ENV) or LLAMAGEN_DEFAULT_DIR
    names_path = os.environ.get(CLASS_NAMES_ENV) or os.path.join(folder, CLASS_NAMES_FILE)
    needed = [ck.gpt_file, ck.vq_file] + ([T5_DIR] if ck.task == "t2i" else [])
    missing = [f for f in needed if not os.path.exists(os.path.join(folder, f))]
    if missing:
        urls = " ".join(T5_URL if f == T5_DIR else ck.url + f for f in missing)
        raise FileNotFoundError(f"{name} needs {', '.join(missing)} in {folder} (set ${LLAMAGEN_DIR_ENV} to the "
                                f"folder that holds them); download: {urls}")
    if ck.task == "c2i" and not os.path.isfile(names_path):
        raise FileNotFoundError(f"{name} needs the 1000 ImageNet class names, one per line in class-index order, in "
                                f"{names_path} (or set ${CLASS_NAMES_ENV} to such a file, or to "
                                f"{IMAGENET_NAMES_SOURCE})")
    files = {"gpt": os.path.join(folder, ck.gpt_file), "vq": os.path.join(folder, ck.vq_file)}
    if ck.task == "t2i":
        return {**files, "t5": os.path.join(folder, T5_DIR)}
    return {**files, "class_names": names_path}
