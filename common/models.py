"""Model backends. Every backend has the same attributes and methods (plain duck typing):

    policy                  nn.Module, the trainable AR transformer; see common/sampling.py for its
                            forward / prefill / decode contract
    num_tokens, grid        image tokens per image T and their (h, w) raster grid
    cond(prompts)           list[str] -> condition dict (batch = len(prompts))
    uncond(cond)            the matching unconditional (CFG) condition dict
    codebook(ids)           (B, T) ids -> (B, T, C) VQ codebook vectors (L2-normalised)
    decode(ids)             (B, T) ids -> (B, 3, H, W) images in [0, 1]

`load_model(name)` builds one. Names: "tiny" (random weights, for tests), "toy" (the shipped ShapeWorld
model). Later backends (Janus-Pro, official LlamaGen) plug in here without touching the scripts.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict

import torch
import torch.nn as nn

from common.llamagen import GPT, GPTConfig, VQConfig, VQModel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY_DIR = os.path.join(REPO, "weights", "shapeworld")


class WordEncoder(nn.Module):
    """The toy's frozen stand-in for FLAN-T5: prompt words -> (B, L, caption_dim) contextual features.

    Word + position embeddings, then one residual MLP over the whole (flattened) caption, so that, as
    with T5, every caption slot carries information about the entire prompt. (LlamaGen's condition
    positions get no rotary position, and image queries have zero logits to them, so image tokens see
    a uniform average of the slots: context in each slot is what makes word order recoverable.)
    Prompts are lower-cased and split into words; unknown words map to <unk>. Captions are LEFT-padded
    with zeroed features and a False mask, as in LlamaGen's text-to-image pre-training.
    """

    def __init__(self, vocab: list[str], max_len: int, dim: int, hidden: int = 512):
        super().__init__()
        assert vocab[:2] == ["<pad>", "<unk>"], "vocab must start with <pad>, <unk>"
        self.vocab, self.max_len = list(vocab), max_len
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.tok = nn.Embedding(len(vocab), dim)
        self.pos = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        self.mix = nn.Sequential(nn.Linear(max_len * dim, hidden), nn.GELU(), nn.Linear(hidden, max_len * dim))

    def tokenize(self, prompts: list[str]):
        ids = torch.zeros(len(prompts), self.max_len, dtype=torch.long)
        for b, p in enumerate(prompts):
            words = [self.index.get(w, 1) for w in re.findall(r"[a-z0-9]+", p.lower())][-self.max_len :]
            if words:
                ids[b, self.max_len - len(words) :] = torch.tensor(words)
        return ids.to(self.pos.device), (ids != 0).to(self.pos.device)

    def forward(self, ids, mask):
        x = (self.tok(ids) + self.pos) * mask[..., None]  # (B, L, D)
        x = x + self.mix(x.flatten(1)).view_as(x)
        return x * mask[..., None]


class LlamaGenT2I:
    """Text-to-image LlamaGen backend: frozen text encoder -> GPT policy -> frozen VQ decoder."""

    def __init__(self, gpt: GPT, vq: VQModel, text: WordEncoder, image_size: int):
        self.policy, self.vq, self.text = gpt, vq.eval().requires_grad_(False), text.eval().requires_grad_(False)
        # The null caption is never reached by the conditional-only loss; keep it fixed during RL.
        gpt.cls_embedding.uncond_embedding.requires_grad_(False)
        self.image_size = image_size
        g = image_size // vq.downsample
        self.grid, self.num_tokens = (g, g), g * g
        assert self.num_tokens == gpt.cfg.block_size, "GPT block_size must match the VQ grid"

    @property
    def device(self):
        return self.policy.tok_embeddings.weight.device

    def cond(self, prompts: list[str]) -> dict:
        ids, mask = self.text.tokenize(prompts)
        ids, mask = ids.to(self.device), mask.to(self.device)
        with torch.no_grad():
            emb = self.text(ids, mask)
        return {"emb": emb.to(self.policy.tok_embeddings.weight.dtype), "mask": mask}

    def uncond(self, cond: dict) -> dict:
        return self.policy.null_cond(cond)

    @torch.no_grad()
    def codebook(self, ids):
        return self.vq.codebook_vectors(ids)

    @torch.no_grad()
    def decode(self, ids):
        return ((self.vq.decode(ids, self.grid).float() + 1) / 2).clamp(0, 1)

    def save(self, out_dir: str):
        """Write config.json + safetensors weights (atomically) to out_dir."""
        from common.utils import save_safetensors

        os.makedirs(out_dir, exist_ok=True)
        config = {
            "gpt": asdict(self.policy.cfg),
            "vq": {**asdict(self.vq.cfg), "ch_mult": list(self.vq.cfg.ch_mult)},
            "text": {"vocab": self.text.vocab, "max_len": self.text.max_len, "dim": self.text.tok.embedding_dim},
            "image_size": self.image_size,
        }
        save_safetensors(self.policy.state_dict(), os.path.join(out_dir, "gpt.safetensors"))
        save_safetensors(self.vq.state_dict(), os.path.join(out_dir, "vq.safetensors"))
        save_safetensors(self.text.state_dict(), os.path.join(out_dir, "text.safetensors"))
        tmp = os.path.join(out_dir, "config.json.tmp")
        with open(tmp, "w") as f:
            json.dump(config, f, indent=1)
        os.replace(tmp, os.path.join(out_dir, "config.json"))


def build_t2i(config: dict) -> LlamaGenT2I:
    """Randomly initialised backend from a config dict (the format of weights/*/config.json)."""
    gpt = GPT(GPTConfig(**config["gpt"])).init_weights()
    vq = VQModel(VQConfig(**{**config["vq"], "ch_mult": tuple(config["vq"]["ch_mult"])}))
    t = config["text"]
    return LlamaGenT2I(gpt, vq, WordEncoder(t["vocab"], t["max_len"], t["dim"]), config["image_size"])


def toy_vocab() -> list[str]:
    from common import shapeworld as sw

    words = ["a", "an", "photo", "of", "and", "left", "right", "above", "below", "two", "three", "four"]
    words += [w for c in sw.CLASSES for w in (c, c + "s")] + list(sw.COLORS)
    return ["<pad>", "<unk>"] + words


def toy_config(scale: str = "toy") -> dict:
    """The ShapeWorld architecture ("toy") or a much smaller one for fast tests ("tiny").
    64x64 images, 8x downsampling -> 8x8 = 64 image tokens."""
    if scale == "tiny":
        gpt = dict(dim=32, n_layer=2, n_head=2, multiple_of=16, vocab_size=64, block_size=64, cls_token_num=12)
        vq = dict(codebook_size=64, codebook_embed_dim=4, z_channels=16, ch=8, ch_mult=[1, 1, 1, 2], num_res_blocks=1,
                  norm_groups=4)
    else:
        gpt = dict(dim=128, n_layer=4, n_head=4, multiple_of=32, vocab_size=128, block_size=64, cls_token_num=12)
        vq = dict(codebook_size=128, codebook_embed_dim=8, z_channels=32, ch=16, ch_mult=[1, 1, 2, 2],
                  num_res_blocks=1, norm_groups=8)
    gpt.update(model_type="t2i", caption_dim=64)
    return {"gpt": gpt, "vq": vq, "text": {"vocab": toy_vocab(), "max_len": 12, "dim": 64}, "image_size": 64}


MODELS = ("tiny", "toy")


def load_model(name: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """Build a backend by name. 'tiny' = random weights (tests); 'toy' = shipped ShapeWorld weights.
    A directory path holding config.json + *.safetensors (as written by `save`) also works."""
    if name == "tiny":
        bk = build_t2i(toy_config("tiny"))
    elif name == "toy" or os.path.isdir(name):
        path = TOY_DIR if name == "toy" else name
        cfg_path = os.path.join(path, "config.json")
        if not os.path.exists(cfg_path):
            raise FileNotFoundError(
                f"no model weights at {path}: for 'toy' run `python train_toy.py` to regenerate them"
            )
        from common.utils import load_safetensors

        with open(cfg_path) as f:
            bk = build_t2i(json.load(f))
        for mod, file in ((bk.policy, "gpt"), (bk.vq, "vq"), (bk.text, "text")):
            mod.load_state_dict(load_safetensors(os.path.join(path, f"{file}.safetensors")), strict=True)
    else:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)} or a directory with config.json")
    for m in (bk.policy, bk.vq, bk.text):
        m.to(device)
    bk.policy.to(dtype)
    return bk


def load_policy_checkpoint(bk, ckpt_dir: str):
    """Load a training run's policy.safetensors (see common/utils.save_checkpoint) into bk.policy, strictly."""
    from common.utils import load_safetensors

    sd = load_safetensors(os.path.join(ckpt_dir, "policy.safetensors"), bk.device)
    bk.policy.load_state_dict(sd, strict=True)
    return bk
