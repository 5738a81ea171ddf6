"""COCO instance detector for the GenEval reward on real images (STAGE App. B.1): Mask2Former Swin-S run by
transformers. GenEval's own weights are mmdet's `mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco` checkpoint:
`python -m rewards.convert_mask2former CKPT` converts it (rewards/convert_mask2former.py) into a folder that
$GENEVAL_MASK2FORMER points at (default folder: weights/geneval_mask2former). Without it, Meta's Swin-S COCO-instance
weights (facebook/mask2former-swin-small-coco-instance) stand in, with a note that scores are then not comparable
with GenEval's.

Inference is mmdet 2.28.2's for that config (its test pipeline, MaskFormerFusionHead's instance post-processing),
checked against mmdet's own outputs (tests/test_geneval_detector.py):
- resize the 8-bit image keeping its aspect ratio so that it fits 1333x800 (mmcv's rule; bilinear, rounded back to
  8 bits as OpenCV's resize of a uint8 image), pad bottom/right to a multiple of 32 with 128, THEN normalise
  (mean 123.675/116.28/103.53, std 58.395/57.12/57.375, RGB); the padded strip is part of the input;
- scores = softmax over the 80 classes + "no object" (dropped); the top 100 (query, class) pairs over all
  queries x classes; each pair's mask = its query's mask logits, bilinearly upsampled to the padded input,
  cropped to the resized image, bilinearly resized to the original image; binary mask = logit > 0;
- detection score = class score x mean sigmoid inside the binary mask; box = the binary mask's extent.
A converted folder's mmdet_pipeline.json carries these numbers from the checkpoint's own config.
Detections with score <= min_score (0.3, GenEval's lowest threshold) are dropped early; this cannot change
GenEval's result since common.geneval keeps only scores > 0.3 (> 0.9 for counting).

Labels are mapped by index to GenEval's names of the 80 COCO classes (common/coco_prompts.py).
"""
from __future__ import annotations

import json
import os
import sys
from typing import Sequence

import torch
import torch.nn.functional as F

from common.coco_prompts import GENEVAL_CLASSES
from rewards.convert_mask2former import DEFAULT_OUT, PIPELINE_FILE
from rewards.hub import pretrained, require

MODEL_ID = "facebook/mask2former-swin-small-coco-instance"
ENV = "GENEVAL_MASK2FORMER"
MEAN = (123.675, 116.28, 103.53)  # GenEval's config (img_norm_cfg), on 0..255 RGB
STD = (58.395, 57.12, 57.375)
_noted: set = set()


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N, 4) float boxes (x0, y0, x1, y1), x1/y1 exclusive; empty masks give zeros."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros(0, 4, device=masks.device)
    xs, ys = masks.any(dim=1), masks.any(dim=2)  # (N, W), (N, H)
    x0 = xs.int().argmax(dim=1)
    x1 = w - xs.flip(1).int().argmax(dim=1)
    y0 = ys.int().argmax(dim=1)
    y1 = h - ys.flip(1).int().argmax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return boxes * xs.any(dim=1, keepdim=True)


def _linear_taps(src: int, dst: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV's bilinear source positions along one axis: (integer part, fraction), computed as cv::resize does
    (double scale 1 / (dst / src), position (d + 0.5) * scale - 0.5 rounded to float32)."""
    pos = ((torch.arange(dst, dtype=torch.float64, device=device) + 0.5) * (1.0 / (dst / src)) - 0.5).float()
    i0 = pos.floor()
    return i0.long(), pos - i0


def _fixed(frac: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """11-bit fixed-point weights of the two taps, each rounded on its own (they need not sum to 2048)."""
    return ((1 - frac) * 2048).round().int(), (frac * 2048).round().int()


def resize_u8(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bit-exact torch version of OpenCV's cv2.resize(INTER_LINEAR) of 8-bit images, which mmdet's test pipeline
    applies (mmcv.imrescale): (B,C,H,W) uint8-valued -> (B,C,h,w) float with integer values. OpenCV computes it in
    fixed point: a horizontal pass with 11-bit weights (columns outside the image take the edge pixel), then a
    vertical one that drops 4 bits of each row sum, keeps the high 16 bits of each product and rounds off the last
    2 bits; an exact 2x reduction is a rounded 2x2 average instead."""
    x = images.int()  # int32 holds every intermediate: a row sum is <= 255 x 2049, a product after >> 4 < 2^27
    (h, w), (nh, nw) = x.shape[-2:], size
    if (nh, nw) == (h, w):
        return x.float()
    if (2 * nh, 2 * nw) == (h, w):  # cv::resize switches INTER_LINEAR to INTER_AREA for an exact halving
        return ((x[..., 0::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 0::2] + x[..., 1::2, 1::2] + 2) >> 2).float()
    x0, fx = _linear_taps(w, nw, x.device)
    outside = (x0 < 0) | (x0 >= w - 1)
    fx, x0 = torch.where(outside, 0.0, fx), x0.clamp(0, w - 1)
    a0, a1 = _fixed(fx)
    rows = x[..., x0] * a0 + x[..., (x0 + 1).clamp(max=w - 1)] * a1  # (B, C, H, nw), scale 2048
    y0, fy = _linear_taps(h, nh, x.device)
    b0, b1 = _fixed(fy)
    top, bottom = rows[..., y0.clamp(0, h - 1), :] >> 4, rows[..., (y0 + 1).clamp(0, h - 1), :] >> 4
    out = (((b0[:, None] * top) >> 16) + ((b1[:, None] * bottom) >> 16) + 2) >> 2
    return out.clamp(0, 255).float()


class Mask2FormerDetector:
    """uint8 images (B,3,H,W) -> per image a list of {"class", "box", "score", "mask", "color": None}."""

    def __init__(self, model, class_names: Sequence[str] = GENEVAL_CLASSES, scale: Sequence[int] = (1333, 800),
                 size_divisor: int = 32, pad_value: float = 128.0, mean: Sequence[float] = MEAN,
                 std: Sequence[float] = STD, to_rgb: bool = True, max_per_image: int = 100, min_score: float = 0.3,
                 batch_size: int = 8):
        n_labels = model.config.num_labels
        if n_labels != len(class_names):
            raise ValueError(f"the Mask2Former model predicts {n_labels} classes, expected {len(class_names)} "
                             f"(COCO instance weights: {MODEL_ID})")
        self.model = model.eval().requires_grad_(False)
        self.class_names = list(class_names)
        self.scale, self.size_divisor, self.pad_value = tuple(scale), size_divisor, pad_value
        self.mean, self.std, self.to_rgb = torch.tensor(mean), torch.tensor(std), to_rgb
        self.max_per_image, self.min_score, self.batch_size = max_per_image, min_score, batch_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def resized_size(self, h: int, w: int) -> tuple[int, int]:
        """mmcv rescale: the largest scale with long side <= max(scale) and short side <= min(scale)."""
        s = min(max(self.scale) / max(h, w), min(self.scale) / min(h, w))
        return int(h * s + 0.5), int(w * s + 0.5)

    def preprocess(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B,3,H,W) RGB 0..255 (uint8 or float) -> (model input (B,3,Hp,Wp), (resized h, resized w))."""
        x = images.float()
        nh, nw = self.resized_size(*x.shape[-2:])
        x = resize_u8(x, (nh, nw))
        if not self.to_rgb:  # the config's model reads BGR
            x = x.flip(1)
        d = self.size_divisor
        x = F.pad(x, (0, (-nw) % d, 0, (-nh) % d), value=self.pad_value)  # padded before normalising, as mmdet
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        if not self.to_rgb:
            mean, std = mean.flip(0), std.flip(0)
        return (x - mean[:, None, None]) / std[:, None, None], (nh, nw)

    @torch.no_grad()
    def __call__(self, images_u8: torch.Tensor) -> list[list[dict]]:
        out = []
        for i in range(0, len(images_u8), self.batch_size):
            out += self._detect(images_u8[i:i + self.batch_size].to(self.device))
        return out

    def postprocess(self, cls_logits: torch.Tensor, mask_logits: torch.Tensor, padded: tuple[int, int],
                    resized: tuple[int, int], size: tuple[int, int]) -> list[dict]:
        """One image's last-layer logits (Q, C+1), (Q, h/4, w/4) -> its detections (mmdet's instance_postprocess)."""
        n_cls = cls_logits.shape[-1] - 1
        scores = cls_logits.softmax(-1)[:, :-1].flatten()  # (Q * C)
        top, idx = scores.topk(min(self.max_per_image, scores.numel()))
        keep = top > self.min_score  # det score = class score x mask score <= class score
        top, idx = top[keep], idx[keep]
        queries, labels = idx // n_cls, idx % n_cls
        uq, inv = queries.unique(return_inverse=True)
        m = F.interpolate(mask_logits[uq][None], size=padded, mode="bilinear", align_corners=False)
        m = F.interpolate(m[..., :resized[0], :resized[1]], size=size, mode="bilinear", align_corners=False)[0]
        binary = m > 0
        mask_score = (m.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
        score = top * mask_score[inv]
        boxes = masks_to_boxes(binary)[inv]
        return [{"class": self.class_names[int(labels[j])], "box": tuple(boxes[j].tolist()), "score": float(score[j]),
                 "mask": binary[inv[j]], "color": None}
                for j in torch.nonzero(score > self.min_score).flatten().tolist()]

    def _detect(self, images: torch.Tensor) -> list[list[dict]]:
        pixels, resized = self.preprocess(images)
        res = self.model(pixel_values=pixels.to(next(self.model.parameters()).dtype))
        cls_logits, mask_logits = res.class_queries_logits.float(), res.masks_queries_logits.float()
        return [self.postprocess(cls_logits[b], mask_logits[b], tuple(pixels.shape[-2:]), resized,
                                 tuple(images.shape[-2:])) for b in range(len(images))]


def pipeline_of(folder: str) -> dict | None:
    """A converted folder's test pipeline (mmdet_pipeline.json, see rewards/convert_mask2former.py), else None."""
    path = os.path.join(folder, PIPELINE_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        pipe = json.load(f)
    return {k: pipe[k] for k in ("scale", "size_divisor", "pad_value", "mean", "std", "to_rgb", "max_per_image")}


def detector_source(model: str | None = None) -> str:
    """`model`, else $GENEVAL_MASK2FORMER, else weights/geneval_mask2former if converted, else Meta's weights."""
    if model or os.environ.get(ENV):
        return model or os.environ[ENV]
    return DEFAULT_OUT if pipeline_of(DEFAULT_OUT) is not None else MODEL_ID


def load_mask2former(device="cpu", model: str | None = None) -> Mask2FormerDetector:
    """The detector from detector_source(model); a folder from rewards.convert_mask2former brings its pipeline."""
    tf = require("transformers", "geneval_coco")
    src = detector_source(model)
    net = pretrained(tf.Mask2FormerForUniversalSegmentation.from_pretrained, src, reward="geneval_coco",
                     what="the Mask2Former COCO detector", env=ENV)
    pipe = pipeline_of(src) if os.path.isdir(src) else None
    if pipe is None and src not in _noted:
        _noted.add(src)
        print(f"note: GenEval detector {src} is not GenEval's mmdet checkpoint: scores are not comparable with "
              f"GenEval's; convert that one (python -m rewards.convert_mask2former, docs/rewards.md)", file=sys.stderr)
    return Mask2FormerDetector(net.to(device), **(pipe or {}))
