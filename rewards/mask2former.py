"""COCO instance detector for the GenEval reward on real images (STAGE App. B.1): transformers' Mask2Former with
the Swin-S COCO-instance weights (facebook/mask2former-swin-small-coco-instance), the closest public match to
GenEval's mmdet `mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco`.

Inference follows mmdet's Mask2Former instance path, not transformers' post-processing (which assumes a
384x384 input):
- resize keeping the aspect ratio so the image fits 1333x800 (mmdet's test scale), bilinear; ImageNet
  mean/std; zero-pad (after normalisation) to a multiple of 32;
- scores = softmax over the 80 classes + "no object" (dropped); the top 100 (query, class) pairs over all
  queries x classes; each pair's mask = its query's mask logits, bilinearly upsampled to the padded input,
  cropped to the resized image, bilinearly resized to the original image; binary mask = logit > 0;
- detection score = class score x mean sigmoid inside the binary mask; box = the binary mask's extent.
Detections with score <= min_score (0.3, GenEval's lowest threshold) are dropped early; this cannot change
GenEval's result since common.geneval keeps only scores > 0.3 (> 0.9 for counting).

Labels are mapped by index to GenEval's names of the 80 COCO classes (common/coco_prompts.py).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from common.coco_prompts import GENEVAL_CLASSES
from rewards.clip import normalize
from rewards.hub import pretrained, require, source

MODEL_ID = "facebook/mask2former-swin-small-coco-instance"
ENV = "GENEVAL_MASK2FORMER"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


class Mask2FormerDetector:
    """uint8 images (B,3,H,W) -> per image a list of {"class", "box", "score", "mask", "color": None}."""

    def __init__(self, model, class_names: Sequence[str] = GENEVAL_CLASSES, scale: tuple[int, int] = (1333, 800),
                 size_divisor: int = 32, max_per_image: int = 100, min_score: float = 0.3, batch_size: int = 8):
        n_labels = model.config.num_labels
        if n_labels != len(class_names):
            raise ValueError(f"the Mask2Former model predicts {n_labels} classes, expected {len(class_names)} "
                             f"(COCO instance weights: {MODEL_ID})")
        self.model = model.eval().requires_grad_(False)
        self.class_names = list(class_names)
        self.scale, self.size_divisor = scale, size_divisor
        self.max_per_image, self.min_score, self.batch_size = max_per_image, min_score, batch_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def resized_size(self, h: int, w: int) -> tuple[int, int]:
        """mmcv rescale: the largest scale with long side <= max(scale) and short side <= min(scale)."""
        s = min(max(self.scale) / max(h, w), min(self.scale) / min(h, w))
        return int(h * s + 0.5), int(w * s + 0.5)

    def preprocess(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B,3,H,W) float in [0,1] -> (normalised, zero-padded pixels, (resized h, resized w))."""
        nh, nw = self.resized_size(*images.shape[-2:])
        x = F.interpolate(images, size=(nh, nw), mode="bilinear", align_corners=False)
        x = normalize(x, IMAGENET_MEAN, IMAGENET_STD)
        d = self.size_divisor
        return F.pad(x, (0, (-nw) % d, 0, (-nh) % d)), (nh, nw)

    @torch.no_grad()
    def __call__(self, images_u8: torch.Tensor) -> list[list[dict]]:
        out = []
        for i in range(0, len(images_u8), self.batch_size):
            out += self._detect(images_u8[i:i + self.batch_size].to(self.device).float() / 255)
        return out

    def _detect(self, images: torch.Tensor) -> list[list[dict]]:
        h, w = images.shape[-2:]
        pixels, (nh, nw) = self.preprocess(images)
        res = self.model(pixel_values=pixels)
        cls_logits, mask_logits = res.class_queries_logits.float(), res.masks_queries_logits.float()
        n_cls = cls_logits.shape[-1] - 1
        dets = []
        for b in range(len(images)):
            scores = cls_logits[b].softmax(-1)[:, :-1].flatten()  # (Q * C)
            top, idx = scores.topk(min(self.max_per_image, scores.numel()))
            keep = top > self.min_score  # det score = class score x mask score <= class score
            top, idx = top[keep], idx[keep]
            queries, labels = idx // n_cls, idx % n_cls
            uq, inv = queries.unique(return_inverse=True)
            m = F.interpolate(mask_logits[b, uq][None], size=pixels.shape[-2:], mode="bilinear", align_corners=False)
            m = F.interpolate(m[..., :nh, :nw], size=(h, w), mode="bilinear", align_corners=False)[0]
            binary = m > 0
            mask_score = (m.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
            score = top * mask_score[inv]
            boxes = masks_to_boxes(binary)[inv]
            image_dets = []
            for j in torch.nonzero(score > self.min_score).flatten().tolist():
                image_dets.append({"class": self.class_names[int(labels[j])], "box": tuple(boxes[j].tolist()),
                                   "score": float(score[j]), "mask": binary[inv[j]], "color": None})
            dets.append(image_dets)
        return dets


def load_mask2former(device="cpu", model: str | None = None) -> Mask2FormerDetector:
    """Detector with `model`, else $GENEVAL_MASK2FORMER, else facebook/mask2former-swin-small-coco-instance."""
    tf = require("transformers", "geneval_coco")
    src = source(model, ENV, MODEL_ID)
    net = pretrained(tf.Mask2FormerForUniversalSegmentation.from_pretrained, src, reward="geneval_coco",
                     what="the Mask2Former COCO detector", env=ENV)
    return Mask2FormerDetector(net.to(device))
