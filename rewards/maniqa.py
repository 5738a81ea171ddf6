"""MANIQA reward (AR-GRPO's image-quality reward, AR-GRPO §3.3): the KonIQ-10k MANIQA model
(`ckpt_koniq10k.pt`), written here as a plain torch module, so neither timm, pyiqa nor torchvision is needed
(timm and pyiqa import torchvision, which cannot load beside a CPU-only torch build).

Architecture (official MANIQA, IIGROUP/MANIQA `models/maniqa.py` + `models/swin.py`; the KonIQ-10k
config): a ViT-B/8 at 224 px (timm `vit_base_patch8_224` layout, LayerNorm eps 1e-6, exact GELU); the
patch tokens (class token dropped) after blocks 6, 7, 8 and 9 (0-based) are concatenated -> 3072 channels on
the 28x28 grid; stage 1: 2 TABlocks (attention across channels, q/k/v Linear over the 784 token positions),
1x1 conv 3072 -> 768, a "scale-Swin" stage (2 BasicLayers of depth 2, 4 heads, window 4, MLP 768, each
followed by a 3x3 conv + ReLU, added back as x = 0.8 * layer(x) + x); stage 2: 2 TABlocks, 1x1 conv 768 -> 384,
a second scale-Swin stage at 384 channels; head: per token a score f (Linear-ReLU-Linear-ReLU) and a weight w
(Linear-ReLU-Linear-Sigmoid), image score = sum(f * w) / sum(w). Quirks kept as in the official code: TABlock's
`(attn @ v).transpose(1, 2).reshape(B, C, N)` (a reshape, not a transpose back) and an unused stride-2 conv
`downsample` in each Swin stage (its weights are in the checkpoint). The ViT's final norm, classifier head and
blocks 10-11 are in the checkpoint but do not affect the score, so they are not run.

NOT VERIFIED OFFLINE: the official code and checkpoint cannot be fetched here, so the state-dict key names and
shapes (see `MANIQA.state_dict()`, listed in tests/test_rewards_arg.py) are written from our knowledge of the
MANIQA and timm code, not checked against the real file. Loading is strict for every tensor that affects the
score: a missing, unexpected or mis-shaped key stops with one line naming a few of them. Only keys the score
does not depend on are tolerated when absent (the recomputable Swin buffers `relative_position_index` /
`attn_mask`, the unused `downsample` convs, `vit.norm`, `vit.head`).

Reward (AR-GRPO's `MANIQAReward`): per image, 20 random 224x224 crops; offsets top, left uniform in
[0, H-224) and [0, W-224) (exclusive, as `np.random.randint`; 0 when the side is exactly 224, where numpy
would raise), drawn from a `torch.Generator` seeded by the factory's `seed` (the release used numpy's global
RNG: same distribution, not the same numbers; successive calls continue the generator, so the reward stays
stochastic but is reproducible from the seed); each crop normalised (x - 0.5) / 0.5; the 20 scores averaged.
Images first go through 8 bits by truncation, as the release's `to_pil_image` (`quantize=False` skips it).
Images whose shorter side is below 224 are resized up (bicubic, aspect kept, shorter side 224) before
cropping; the release had no resize and would fail on them. The reward is the RAW score, roughly in [0, 1]
(KonIQ MOS min-max normalised; never negative: the score head ends in ReLU); AR-GRPO trains on 2 x this,
a weight that belongs to the training script.

Weights: `ckpt_koniq10k.pt` from the hub repo chaofengc/IQA-PyTorch-Weights (pyiqa's copy of the official
release), or the file named by $MANIQA_WEIGHTS (or the factory's `checkpoint`). The ImageNet ViT weights the
release downloads through timm are not needed: the checkpoint holds the fine-tuned ViT.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.utils import state_dict_mismatch, unwrap_state_dict

from rewards.clip import resize, truncate_8bit
from rewards.hub import hub_file

MANIQA_REPO, MANIQA_FILE, MANIQA_ENV = "chaofengc/IQA-PyTorch-Weights", "ckpt_koniq10k.pt", "MANIQA_WEIGHTS"
FEATURE_BLOCKS = (6, 7, 8, 9)


# ----------------------------------------------------------------------------- ViT (timm VisionTransformer layout)


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch_size, patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class ViTAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(head_dim)) v
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ViTAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """timm `vit_base_patch8_224` parameter layout (class token, learned position embedding incl. the class
    slot, pre-norm blocks, final norm, 1000-class head). Only `features` is used by MANIQA."""

    def __init__(self, img_size: int = 224, patch_size: int = 8, dim: int = 768, depth: int = 12, heads: int = 12,
                 num_classes: int = 1000):
        super().__init__()
        n = (img_size // patch_size) ** 2
        self.patch_embed = PatchEmbed(patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(ViTBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def features(self, x: torch.Tensor, blocks: Sequence[int]) -> list[torch.Tensor]:
        """Outputs (with the class token) of the given blocks, in that order; later blocks are not run."""
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
        out = {}
        for i, blk in enumerate(self.blocks[:max(blocks) + 1]):
            x = blk(x)
            out[i] = x
        return [out[i] for i in blocks]


# ----------------------------------------------------------------------------- MANIQA heads


class TABlock(nn.Module):
    """Transposed attention block: q, k, v are Linear maps over the token axis of (B, C, N); the attention is
    (B, C, C) across channels. The output reshape is the official code's (a scramble, kept for the weights)."""

    def __init__(self, dim: int):
        super().__init__()
        self.c_q = nn.Linear(dim, dim)
        self.c_k = nn.Linear(dim, dim)
        self.c_v = nn.Linear(dim, dim)
        self.norm_fact = dim ** -0.5

    def forward(self, x):
        b, c, n = x.shape
        q, k, v = self.c_q(x), self.c_k(x), self.c_v(x)
        attn = (q @ k.transpose(-2, -1) * self.norm_fact).softmax(dim=-1)
        return (attn @ v).transpose(1, 2).reshape(b, c, n) + x


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    b = int(windows.shape[0] / (h * w / ws / ws))
    x = windows.view(b, h // ws, w // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1)


class WindowAttention(nn.Module):
    """Swin window attention with a relative position bias table."""

    def __init__(self, dim: int, ws: int, heads: int):
        super().__init__()
        self.heads, self.ws = heads, ws
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.randn((2 * ws - 1) ** 2, heads) * 0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
        rel[:, :, 0] += ws - 1
        rel[:, :, 1] += ws - 1
        rel[:, :, 0] *= 2 * ws - 1
        self.register_buffer("relative_position_index", rel.sum(-1))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, mask=None):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b // nw, nw, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, n, n)
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(x)


class SwinBlock(nn.Module):
    def __init__(self, dim: int, resolution: tuple[int, int], heads: int, ws: int, shift: int, dim_mlp: int):
        super().__init__()
        self.resolution = resolution
        if min(resolution) <= ws:  # as Swin: one window covers the grid, no shift
            ws, shift = min(resolution), 0
        self.ws, self.shift = ws, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, ws, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim_mlp)
        if shift > 0:
            h, w = resolution
            img = torch.zeros(1, h, w, 1)
            cnt = 0
            for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
                for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
                    img[:, hs, wsl, :] = cnt
                    cnt += 1
            mw = window_partition(img, ws).view(-1, ws * ws)
            mask = mw.unsqueeze(1) - mw.unsqueeze(2)
            self.register_buffer("attn_mask", mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0))
        else:
            self.attn_mask = None

    def forward(self, x):
        h, w = self.resolution
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        if self.shift > 0:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        win = window_partition(y, self.ws).view(-1, self.ws * self.ws, c)
        win = self.attn(win, mask=self.attn_mask).view(-1, self.ws, self.ws, c)
        y = window_reverse(win, self.ws, h, w)
        if self.shift > 0:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class BasicLayer(nn.Module):
    def __init__(self, dim: int, resolution: tuple[int, int], depth: int, heads: int, ws: int, dim_mlp: int):
        super().__init__()
        self.resolution = resolution
        self.blocks = nn.ModuleList(SwinBlock(dim, resolution, heads, ws, 0 if i % 2 == 0 else ws // 2, dim_mlp)
                                    for i in range(depth))
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        h, w = self.resolution
        x = x.transpose(1, 2).reshape(len(x), -1, h, w)
        return F.relu(self.conv(x)).flatten(2).transpose(1, 2)


class SwinTransformer(nn.Module):
    """MANIQA's scale-Swin stage: (B, C, H, W) -> (B, C, H, W), each layer added back as scale * layer(x) + x."""

    def __init__(self, resolution: tuple[int, int], depths: Sequence[int], heads: Sequence[int], dim: int, ws: int,
                 dim_mlp: int, scale: float):
        super().__init__()
        self.resolution, self.scale = resolution, scale
        self.downsample = nn.Conv2d(dim, dim, 3, 2, 1)  # defined, never used, as in the official code
        self.layers = nn.ModuleList(BasicLayer(dim, resolution, d, h, ws, dim_mlp) for d, h in zip(depths, heads))

    def forward(self, x):
        b, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        for layer in self.layers:
            x = self.scale * layer(x) + x
        return x.transpose(1, 2).reshape(b, c, h, w)


def _head(dim: int, out: nn.Module) -> nn.Sequential:
    # indices 0..4 as the official nn.Sequential (Linear, ReLU, Dropout, Linear, act): keys .0.* and .3.*
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(0.1), nn.Linear(dim, 1), out)


class MANIQA(nn.Module):
    """MANIQA (num_outputs 1). Input (B, 3, img_size, img_size) normalised with (x - 0.5) / 0.5 -> (B,) scores.

    Defaults are the KonIQ-10k release; `vit_dim`, `vit_depth`, `vit_heads` size the
    backbone (ViT-B: 768, 12, 12) so that tests can build a tiny model with the same structure.
    """

    def __init__(self, embed_dim: int = 768, dim_mlp: int = 768, patch_size: int = 8, img_size: int = 224,
                 window_size: int = 4, depths: Sequence[int] = (2, 2), num_heads: Sequence[int] = (4, 4),
                 num_tab: int = 2, scale: float = 0.8, vit_dim: int = 768, vit_depth: int = 12, vit_heads: int = 12,
                 feature_blocks: Sequence[int] = FEATURE_BLOCKS):
        super().__init__()
        if vit_depth <= max(feature_blocks):
            raise ValueError(f"MANIQA needs ViT blocks {tuple(feature_blocks)}; vit_depth={vit_depth} is too small")
        self.img_size, self.patch_size = img_size, patch_size
        self.input_size = img_size // patch_size
        self.feature_blocks = tuple(feature_blocks)
        res = (self.input_size, self.input_size)
        n = self.input_size ** 2
        self.vit = ViT(img_size, patch_size, vit_dim, vit_depth, vit_heads)
        self.tablock1 = nn.ModuleList(TABlock(n) for _ in range(num_tab))
        self.conv1 = nn.Conv2d(vit_dim * len(self.feature_blocks), embed_dim, 1, 1, 0)
        self.swintransformer1 = SwinTransformer(res, depths, num_heads, embed_dim, window_size, dim_mlp, scale)
        self.tablock2 = nn.ModuleList(TABlock(n) for _ in range(num_tab))
        self.conv2 = nn.Conv2d(embed_dim, embed_dim // 2, 1, 1, 0)
        self.swintransformer2 = SwinTransformer(res, depths, num_heads, embed_dim // 2, window_size, dim_mlp, scale)
        self.fc_score = _head(embed_dim // 2, nn.ReLU())
        self.fc_weight = _head(embed_dim // 2, nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.input_size
        feats = [f[:, 1:] for f in self.vit.features(x, self.feature_blocks)]
        x = torch.cat(feats, dim=2).transpose(1, 2)  # (B, 4*vit_dim, N)
        for tab in self.tablock1:
            x = tab(x)
        x = self.swintransformer1(self.conv1(x.reshape(len(x), -1, s, s)))
        x = x.flatten(2)
        for tab in self.tablock2:
            x = tab(x)
        x = self.swintransformer2(self.conv2(x.reshape(len(x), -1, s, s)))
        x = x.flatten(2).transpose(1, 2)  # (B, N, C)
        f, w = self.fc_score(x), self.fc_weight(x)
        return (f * w).sum(dim=(1, 2)) / w.sum(dim=(1, 2))


# ----------------------------------------------------------------------------- weights

# Keys the score does not depend on: recomputable buffers and modules the forward never runs.
_OPTIONAL = ("relative_position_index", "attn_mask", "swintransformer1.downsample.", "swintransformer2.downsample.",
             "vit.norm.", "vit.head.")


def load_maniqa_state_dict(model: MANIQA, state_dict: dict[str, torch.Tensor], source: str = "the checkpoint"):
    """Load `state_dict` (a `module.` prefix is stripped) into `model`; every tensor that affects the score must
    be present with the right shape and no unknown key may appear, else a one-line ValueError names a few."""
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    mismatch = state_dict_mismatch(model.state_dict(), sd, _OPTIONAL)
    if mismatch:
        raise ValueError(f"reward 'maniqa': {source} does not fit the MANIQA (KonIQ) layout; {mismatch} "
                         f"(expected {MANIQA_FILE} from the hub repo {MANIQA_REPO})")
    model.load_state_dict(sd, strict=False)
    return model


def read_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """The state dict in a MANIQA checkpoint (a bare state dict, or one under 'params' / 'state_dict' / 'model'),
    read with weights_only=True."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise RuntimeError(f"reward 'maniqa': cannot read {path!r} as a PyTorch state dict with weights_only=True "
                           f"({type(e).__name__}: {first}); use {MANIQA_FILE} from the hub repo {MANIQA_REPO}") from e
    ckpt = unwrap_state_dict(ckpt, ("params", "state_dict", "model"))
    if ckpt is None:
        raise RuntimeError(f"reward 'maniqa': {path!r} is not a state dict of tensors "
                           f"(use {MANIQA_FILE} from the hub repo {MANIQA_REPO})")
    return ckpt


# ----------------------------------------------------------------------------- reward


class MANIQAReward:
    """Reward: mean MANIQA score over `num_crops` random crops per image (RAW, roughly [0, 1]; see module doc)."""

    def __init__(self, model: MANIQA, *, num_crops: int = 20, seed: int = 0, batch_size: int = 20,
                 quantize: bool = True):
        self.model = model.eval().requires_grad_(False)
        self.num_crops, self.batch_size, self.quantize = num_crops, batch_size, quantize
        self.crop = model.img_size
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def reset(self, seed: int | None = None):
        """Restart the crop generator (at `seed`, else the constructor's)."""
        self.generator = torch.Generator().manual_seed(self.seed if seed is None else seed)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def crops(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) in [0, 1] -> (num_crops, 3, S, S) normalised crops (S = the model's img_size)."""
        s = self.crop
        h, w = image.shape[-2:]
        if min(h, w) < s:  # resize up, shorter side to S, aspect kept
            k = s / min(h, w)
            h, w = max(s, round(h * k)), max(s, round(w * k))
            image = resize(image, (h, w))
        tops = torch.randint(0, max(h - s, 1), (self.num_crops,), generator=self.generator).tolist()
        lefts = torch.randint(0, max(w - s, 1), (self.num_crops,), generator=self.generator).tolist()
        out = torch.stack([image[:, t:t + s, l:l + s] for t, l in zip(tops, lefts)])
        return (out - 0.5) / 0.5

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: list[str] | None = None,
                 metadata: list[dict] | None = None) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"reward 'maniqa': expected images (B, 3, H, W), got {tuple(images.shape)}")
        x = images.detach().float().clamp(0, 1)
        if self.quantize:  # the release's to_pil_image: x * 255 truncated to uint8
            x = truncate_8bit(x)
        crops = torch.cat([self.crops(im) for im in x])
        scores = torch.cat([self.model(crops[i:i + self.batch_size].to(self.device)).float().cpu()
                            for i in range(0, len(crops), self.batch_size)])
        return scores.view(len(images), self.num_crops).mean(1)


def make_maniqa(device="cpu", checkpoint: str | None = None, seed: int = 0, num_crops: int = 20,
                batch_size: int = 20) -> MANIQAReward:
    """`maniqa` reward. Checkpoint: `checkpoint`, else $MANIQA_WEIGHTS, else `ckpt_koniq10k.pt` in the hub cache
    of chaofengc/IQA-PyTorch-Weights (downloaded unless HF_HUB_OFFLINE). Crops drawn from a generator seeded
    with `seed`."""
    path = hub_file(MANIQA_REPO, MANIQA_FILE, reward="maniqa", env=MANIQA_ENV, explicit=checkpoint)
    sd = read_checkpoint(path)
    with torch.device("meta"):
        model = MANIQA()
    model = model.to_empty(device="cpu")
    for t in model.parameters():  # defined values for the few unused tensors a checkpoint may lack
        t.data.zero_()
    _rebuild_buffers(model)
    load_maniqa_state_dict(model, sd, source=repr(path))
    return MANIQAReward(model.to(device), num_crops=num_crops, seed=seed, batch_size=batch_size)


def _rebuild_buffers(model: MANIQA):
    """Recompute the Swin buffers after `to_empty` (they are derived from the config, not learned)."""
    for m in model.modules():
        if isinstance(m, WindowAttention):
            m.relative_position_index.copy_(WindowAttention(1, m.ws, 1).relative_position_index)
        if isinstance(m, SwinBlock) and m.attn_mask is not None:
            ref = SwinBlock(1, m.resolution, 1, m.ws, m.shift, 1)
            m.attn_mask.copy_(ref.attn_mask)


__all__ = ["MANIQA", "MANIQAReward", "load_maniqa_state_dict", "make_maniqa", "read_checkpoint"]
