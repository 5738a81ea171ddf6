"""GenEval's colour classifier for detected objects (STAGE App. B.1): CLIP ViT-L/14 (OpenAI weights) zero-shot
over GenEval's ten colours.

Per object: the image is composited through the object's mask onto a #999 grey background and cropped to the
object's box (PIL crop semantics: coordinates rounded); the crop goes through CLIP's validation transform
(shortest side to 224, bicubic, centre crop). Per class, the classifier is the mean of the L2-normalised text
embeddings of three templates ("a photo of a {c} {cls}", "a photo of a {c}-colored {cls}",
"a photo of a {c} object"), renormalised; the colour is the argmax of the cosine.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from common.coco_prompts import GENEVAL_COLORS
from rewards.clip import CLIPEncoder, load_clip
from rewards.hub import source

MODEL_ID = "openai/clip-vit-large-patch14"  # = open_clip ViT-L-14 "openai", GenEval's colour model
ENV = "GENEVAL_CLIP"
TEMPLATES = ("a photo of a {c} {cls}", "a photo of a {c}-colored {cls}", "a photo of a {c} object")
BACKGROUND = 0x99 / 255  # "#999"


class CLIPColorClassifier:
    """(uint8 images (B,3,H,W), [(image index, detection with "box" and optional "mask")]) -> colour names."""

    def __init__(self, encoder: CLIPEncoder, colors: Sequence[str] = GENEVAL_COLORS,
                 templates: Sequence[str] = TEMPLATES):
        self.encoder, self.colors, self.templates = encoder, list(colors), list(templates)
        self._classifiers: dict[str, torch.Tensor] = {}

    def classifier(self, cls: str) -> torch.Tensor:
        """(D, n_colours) zero-shot weights for objects of class `cls` (cached)."""
        if cls not in self._classifiers:
            texts = [t.format(c=c, cls=cls) for c in self.colors for t in self.templates]
            feats = self.encoder.text_features(texts).view(len(self.colors), len(self.templates), -1)
            self._classifiers[cls] = F.normalize(feats.mean(dim=1), dim=-1).t()
        return self._classifiers[cls]

    @staticmethod
    def crop(image: torch.Tensor, det: dict) -> torch.Tensor:
        """(3,H,W) float in [0,1] -> the object on #999 grey (if it has a mask), cropped to its box."""
        h, w = image.shape[-2:]
        mask = det.get("mask")
        if mask is not None:
            image = torch.where(mask.to(image.device)[None], image, torch.full_like(image, BACKGROUND))
        x0, y0, x1, y1 = (int(round(float(v))) for v in det["box"][:4])
        x0, y0 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
        x1, y1 = min(max(x1, x0 + 1), w), min(max(y1, y0 + 1), h)
        return image[:, y0:y1, x0:x1]

    @torch.no_grad()
    def __call__(self, images_u8: torch.Tensor, objects: list[tuple[int, dict]]) -> list[str]:
        if not objects:
            return []
        dev = self.encoder.device
        crops = [self.crop(images_u8[b].to(dev).float() / 255, det) for b, det in objects]
        feats = self.encoder.image_features(crops, mode="crop")
        out = []
        for f, (_, det) in zip(feats, objects):
            out.append(self.colors[int((f @ self.classifier(det["class"])).argmax())])
        return out


def load_color_classifier(device="cpu", model: str | None = None) -> CLIPColorClassifier:
    """Classifier with `model`, else $GENEVAL_CLIP, else openai/clip-vit-large-patch14."""
    src = source(model, ENV, MODEL_ID)
    return CLIPColorClassifier(load_clip(src, reward="geneval_coco", env=ENV, device=device))
