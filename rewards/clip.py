"""CLIP plumbing shared by the CLIP-based rewards (CLIP score, HPSv2.1, GenEval colours, GIT's image input),
and the `clip` reward itself: the raw image-text cosine (AR-GRPO's CLIP score, AR-GRPO §3.3).

Images are preprocessed as tensors (no torchvision, no PIL round trip), on the model's device:
- "crop" (CLIP / open_clip validation transform): shortest side to `size` with bicubic, centre crop;
- "pad" (HPSv2's `ResizeMaxSize`): longest side to `size` with bicubic, pad to a square with 0 (black);
then the mean/std normalisation. Bicubic uses torch's antialiased kernel (a = -0.5, as PIL's). Two options make
the encoder read its input as a given original does:
- `clamp`: the resized image is clamped to [0, 1], as a resize done by PIL on an 8-bit image is (transformers'
  CLIP processor); HPSv2's `preprocess_val` resizes the float tensor after `ToTensor` and does not clamp
  (`clamp=False`, rewards/hps.py);
- `clean_text`: applied to every text before the tokenizer (open_clip's cleaning for HPSv2).
The rewards built on it (CLIP score, HPSv2.1) first truncate the image to 8 bits, `truncate_8bit`: the releases
hand their scorers 8-bit images made by truncation (torchvision's `to_pil_image` of a float image in AR-GRPO;
Janus's float-to-uint8 cast in STAGE and GCPO).
PIL's resize rounds to 8 bits, so values differ from the PIL pipelines by that rounding only (about 1e-2 on a
pixel, less after the model). Square inputs are simply resized in both modes.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from rewards.hub import pretrained, require, source

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_SCORE_MODEL = "openai/clip-vit-base-patch32"  # AR-GRPO's CLIP score model (AR-GRPO §3.3)


def truncate_8bit(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> the same values truncated to 8 bits, floor(x * 255) / 255 (`to_pil_image`, uint8 casts)."""
    return torch.floor(images.float().clamp(0, 1) * 255) / 255


def resize(image: torch.Tensor, hw: tuple[int, int], clamp: bool = True) -> torch.Tensor:
    """(..., 3, H, W) float -> (..., 3, h, w), bicubic antialiased; clamped to [0, 1] like an 8-bit image unless
    `clamp` is False (a float tensor resized by torchvision, as HPSv2's transform)."""
    if tuple(image.shape[-2:]) == tuple(hw):
        return image
    batched = image.dim() == 4
    x = image if batched else image.unsqueeze(0)
    x = F.interpolate(x.float(), size=hw, mode="bicubic", antialias=True, align_corners=False)
    x = x.clamp(0, 1) if clamp else x
    return x if batched else x[0]


def resize_crop(image: torch.Tensor, size: int, clamp: bool = True) -> torch.Tensor:
    """torchvision Resize(size) (shortest side; the long side truncated) then CenterCrop(size)."""
    h, w = image.shape[-2:]
    short, long = (h, w) if h <= w else (w, h)
    new_long = int(size * long / short)
    nh, nw = (size, new_long) if h <= w else (new_long, size)
    x = resize(image, (nh, nw), clamp)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    return x[..., top:top + size, left:left + size]


def resize_pad(image: torch.Tensor, size: int, fill: float = 0.0, clamp: bool = True) -> torch.Tensor:
    """open_clip ResizeMaxSize(size): longest side to `size` (rounded), centred on a `fill` square."""
    h, w = image.shape[-2:]
    scale = size / max(h, w)
    if scale == 1.0:
        return image
    nh, nw = round(h * scale), round(w * scale)
    x = resize(image, (nh, nw), clamp)
    pad_h, pad_w = size - nh, size - nw
    return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=fill)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - m) / s


def clip_pixels(images: torch.Tensor | list[torch.Tensor], size: int, mode: str = "crop",
                mean: Sequence[float] = OPENAI_MEAN, std: Sequence[float] = OPENAI_STD,
                clamp: bool = True) -> torch.Tensor:
    """(B,3,H,W) in [0,1], or a list of (3,H_i,W_i) crops of any sizes -> normalised (B,3,size,size)."""
    if mode not in ("crop", "pad"):
        raise ValueError(f"unknown CLIP preprocessing mode {mode!r}; use 'crop' or 'pad'")
    fn = resize_crop if mode == "crop" else resize_pad
    if isinstance(images, torch.Tensor):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        x = fn(images.float(), size, clamp=clamp)
    else:
        x = torch.stack([fn(im.float(), size, clamp=clamp) for im in images])
    return normalize(x, mean, std)


def _features(out) -> torch.Tensor:
    """get_*_features returns a tensor (transformers 4.x) or an output whose pooler_output is projected (5.x)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class CLIPEncoder:
    """A transformers CLIPModel + tokenizer: L2-normalised image and text features, batched, no grad.
    `clamp`, `clean_text`: see the module's docstring."""

    def __init__(self, model, tokenizer, *, mode: str = "crop", image_size: int | None = None,
                 mean: Sequence[float] = OPENAI_MEAN, std: Sequence[float] = OPENAI_STD, max_length: int | None = None,
                 batch_size: int = 64, amp: bool = True, clamp: bool = True,
                 clean_text: Callable[[str], str] | None = None):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.mode, self.mean, self.std = mode, tuple(mean), tuple(std)
        self.clamp, self.clean_text = clamp, clean_text
        self.image_size = image_size or model.config.vision_config.image_size
        self.max_length = max_length or model.config.text_config.max_position_embeddings
        self.batch_size = batch_size
        self.amp = amp  # fp16 autocast on CUDA, as the releases' open_clip "amp" precision

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _autocast(self):
        on = self.amp and self.device.type == "cuda"
        return torch.autocast("cuda", dtype=torch.float16, enabled=on) if on else torch.autocast("cpu", enabled=False)

    @torch.no_grad()
    def image_features(self, images: torch.Tensor | list[torch.Tensor], mode: str | None = None) -> torch.Tensor:
        """(B,3,H,W) in [0,1] or a list of (3,h,w) crops -> (B, D) float32, unit norm."""
        feats = []
        for i in range(0, len(images), self.batch_size):
            chunk = images[i:i + self.batch_size]
            chunk = chunk.to(self.device) if isinstance(chunk, torch.Tensor) else [c.to(self.device) for c in chunk]
            pix = clip_pixels(chunk, self.image_size, mode or self.mode, self.mean, self.std, clamp=self.clamp)
            with self._autocast():
                feats.append(_features(self.model.get_image_features(pixel_values=pix)).float())
        return F.normalize(torch.cat(feats), dim=-1)

    @torch.no_grad()
    def text_features(self, texts: list[str]) -> torch.Tensor:
        """(N,) strings -> (N, D) float32, unit norm (truncated to the model's context, 77 for CLIP)."""
        if self.clean_text is not None:
            texts = [self.clean_text(t) for t in texts]
        feats = []
        for i in range(0, len(texts), self.batch_size):
            tok = self.tokenizer(list(texts[i:i + self.batch_size]), padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            with self._autocast():
                out = self.model.get_text_features(input_ids=tok["input_ids"].to(self.device),
                                                   attention_mask=tok["attention_mask"].to(self.device))
            feats.append(_features(out).float())
        return F.normalize(torch.cat(feats), dim=-1)

    def cosine(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Per-pair cosine of image i and text i: (B,) float32 on the CPU."""
        if len(texts) != len(images):
            raise ValueError(f"{len(images)} images but {len(texts)} prompts")
        return (self.image_features(images) * self.text_features(texts)).sum(-1).cpu()


def load_clip(name_or_path: str, *, reward: str, env: str, device="cpu", mode: str = "crop") -> CLIPEncoder:
    """CLIPEncoder for a transformers CLIP checkpoint (hub id or local folder), offline-first."""
    tf = require("transformers", reward)
    model = pretrained(tf.CLIPModel.from_pretrained, name_or_path, reward=reward, what="the CLIP model", env=env)
    tok = pretrained(tf.AutoTokenizer.from_pretrained, name_or_path, reward=reward, what="the CLIP tokenizer", env=env)
    return CLIPEncoder(model.to(device), tok, mode=mode)


class CLIPScore:
    """Reward: raw cosine between the CLIP embeddings of the image and its prompt, in [-1, 1] (about 0.2-0.35
    for matching pairs). AR-GRPO uses 5 x this with openai/clip-vit-base-patch32; weight it in the trainer.
    The image is read as the release reads it: truncated to 8 bits (`to_pil_image` of the float image in
    AR-GRPO's `img_gen_grpo_rewards.py`) before transformers' CLIP preprocessing."""

    def __init__(self, encoder: CLIPEncoder):
        self.encoder = encoder

    def __call__(self, images: torch.Tensor, prompts: list[str], metadata: list[dict] | None = None) -> torch.Tensor:
        return self.encoder.cosine(truncate_8bit(images), prompts)


def make_clip(device="cpu", model: str | None = None) -> CLIPScore:
    """`clip` reward. Model: `model`, else $CLIP_MODEL, else openai/clip-vit-base-patch32."""
    src = source(model, "CLIP_MODEL", CLIP_SCORE_MODEL)
    return CLIPScore(load_clip(src, reward="clip", env="CLIP_MODEL", device=device))
