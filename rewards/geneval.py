"""GenEval reward: detector backend + GenEval rules (rewards/geneval_rules.py).

strict=False gives the Flow-GRPO/STAGE partial-credit training score (stage.md §6.1);
strict=True gives GenEval's binary correctness as 1.0 / 0.0.
Detector backends map one image to a list of detections; only "shapeworld" exists now,
a COCO Mask2Former backend can be added to DETECTORS later without touching the rules.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from rewards.geneval_rules import filter_detections, partial_score, strict_correct


def _shapeworld_detect(image: np.ndarray) -> list[dict]:
    from rewards.shapeworld_detector import detect

    return detect(image)


# name -> function(uint8 image (H, W, 3)) -> list of detections
DETECTORS: dict[str, Callable[[np.ndarray], list[dict]]] = {"shapeworld": _shapeworld_detect}


def validate(metadata: list[dict]) -> None:
    """Raise ValueError if any row is not GenEval metadata (needs a non-empty "include")."""
    for i, meta in enumerate(metadata):
        inc = meta.get("include") if isinstance(meta, dict) else None
        ok = isinstance(inc, list) and len(inc) > 0
        ok = ok and all(isinstance(r, dict) and "class" in r and "count" in r for r in inc)
        if not ok:
            prompt = meta.get("prompt") if isinstance(meta, dict) else meta
            raise ValueError(
                f"GenEval reward needs metadata with an 'include' list of {{class, count}} for every "
                f"prompt; row {i} ({prompt!r}) has none (use a GenEval-format .jsonl prompt file)"
            )


class GenEvalReward:
    """Callable reward: (images (B,3,H,W) in [0,1], prompts, metadata) -> FloatTensor (B,)."""

    def __init__(self, strict: bool = False, detector: str = "shapeworld"):
        if detector not in DETECTORS:
            raise ValueError(f"unknown GenEval detector {detector!r}; known: {', '.join(DETECTORS)}")
        self.strict = strict
        self.detect = DETECTORS[detector]

    def _detected(self, images: torch.Tensor, metadata: list[dict]) -> list[dict]:
        if len(images) != len(metadata):
            raise ValueError(f"{len(images)} images but {len(metadata)} metadata rows")
        validate(metadata)
        arr = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
        arr = arr.permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)
        return [filter_detections(self.detect(img), meta.get("tag", "")) for img, meta in zip(arr, metadata)]

    def __call__(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> torch.Tensor:
        scores = []
        for det, meta in zip(self._detected(images, metadata), metadata):
            scores.append(float(strict_correct(det, meta)[0]) if self.strict else partial_score(det, meta))
        return torch.tensor(scores, dtype=torch.float32, device=images.device)

    def evaluate(self, images: torch.Tensor, metadata: list[dict]) -> list[tuple[str, bool]]:
        """[(tag, strictly correct)] per image, for rewards.geneval_rules.summarize."""
        dets = self._detected(images, metadata)
        return [(meta.get("tag", ""), strict_correct(d, meta)[0]) for d, meta in zip(dets, metadata)]


def make_geneval(device=None) -> GenEvalReward:
    """Partial-credit GenEval reward (the training reward). `device` is unused (CPU detector)."""
    return GenEvalReward(strict=False)


def make_geneval_strict(device=None) -> GenEvalReward:
    """Binary GenEval reward: 1.0 if the image is strictly correct, else 0.0."""
    return GenEvalReward(strict=True)
