"""The toy model's own parts: its frozen word encoder (the stand-in for FLAN-T5) and its configuration.

The rest of the toy model is LlamaGen's GPT and VQ tokenizer (common/llamagen.py) behind the text-to-image backend
(common/models.LlamaGenT2I), built by common/models.build_t2i from a toy_config() dict (or a saved config.json);
the shipped weights are in weights/shapeworld (TOY_DIR, trained by `python -m toy.train`).
"""
from __future__ import annotations

import os
import re

import torch
import torch.nn as nn

from toy import world

TOY_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights", "shapeworld")


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

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The text-encoder interface of LlamaGenT2I: -> features (B, L, D), mask (B, L) bool."""
        ids, mask = self.tokenize(prompts)
        return self(ids, mask), mask


def toy_vocab() -> list[str]:
    words = ["a", "an", "photo", "of", "and", "left", "right", "above", "below", "two", "three", "four"]
    words += [w for c in world.CLASSES for w in (c, c + "s")] + list(world.COLORS)
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
