"""GenEval reward: detector backend + GenEval's rules (common/geneval.py, shared unchanged by all backends).

strict=False gives the Flow-GRPO/STAGE partial-credit training score (STAGE App. B.1; docs/rewards.md);
strict=True gives GenEval's binary correctness as 1.0 / 0.0.

Backends (`detector=`):
- "shapeworld": the toy's hand-written ShapeWorld detector (toy/detector.py; CPU, colours from the palette);
- "coco": real images. Mask2Former Swin-S COCO instance segmentation (rewards/mask2former.py: GenEval's own
  weights once converted, see rewards/convert_mask2former.py) and, for objects whose prompt asks for a colour,
  CLIP ViT-L/14 zero-shot colours (rewards/geneval_color.py);
- a folder made by `python -m rewards.convert_mask2former`: "coco" with that detector.
A detector is a callable uint8 images (B,3,H,W) -> per image a list of detections {"class", "box", "score",
"color" (None: ask the colour classifier), optional "mask"}; a detector object and a colour classifier can be
passed directly (tests use tiny random models).

GenEvalJudge is the held-out evaluation's judge (common/evaluation.py): the strict rules with a named detector.
"""

from __future__ import annotations

import os
from typing import Callable

import torch

from common.geneval import Detected, filter_detections, partial_score, strict_correct, validate


def _shapeworld(device):
    from toy.detector import ShapeWorldDetector

    return ShapeWorldDetector(), None


def _coco(device, model: str | None = None):
    from rewards.geneval_color import load_color_classifier
    from rewards.mask2former import load_mask2former

    return load_mask2former(device=device, model=model), load_color_classifier(device=device)


# name -> function(device) -> (detector, colour classifier or None)
DETECTORS: dict[str, Callable] = {"shapeworld": _shapeworld, "coco": _coco}


def detector_kind(detector: str) -> str:
    """A DETECTORS name as is; a folder (a converted Mask2Former) is "coco". ValueError in one line otherwise."""
    if detector in DETECTORS:
        return detector
    if os.path.isdir(detector):
        return "coco"
    raise ValueError(f"unknown GenEval detector {detector!r}; known: {', '.join(DETECTORS)}, or a folder made by "
                     f"python -m rewards.convert_mask2former")


def _build(detector: str, device):
    kind = detector_kind(detector)
    return DETECTORS[kind](device) if kind == detector else _coco(device, model=detector)


def _color_classes(meta: dict) -> list[str]:
    """Classes whose colour the rules will read (a non-null "color" key, as common/geneval.py treats it), in order."""
    return list(dict.fromkeys(r["class"] for r in meta.get("include") or [] if r.get("color") is not None))


class GenEvalReward:
    """Callable reward: (images (B,3,H,W) in [0,1], prompts, metadata) -> FloatTensor (B,)."""

    def __init__(self, strict: bool = False, detector="shapeworld", colors=None, device="cpu"):
        if isinstance(detector, str):
            detector, default_colors = _build(detector, device)
            colors = colors or default_colors
        self.strict = strict
        self.detect = detector
        self.colors = colors  # (images_u8, [(image index, detection)]) -> colour names, or None

    def _detected(self, images: torch.Tensor, metadata: list[dict]) -> list[Detected]:
        if len(images) != len(metadata):
            raise ValueError(f"{len(images)} images but {len(metadata)} metadata rows")
        validate(metadata)
        u8 = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)  # what GenEval sees: 8-bit
        detected = [filter_detections(d, meta.get("tag", "")) for d, meta in zip(self.detect(u8), metadata)]
        if self.colors is not None:  # one batched call for every object whose colour a prompt asks about
            todo = [(b, det) for b, (dets, meta) in enumerate(zip(detected, metadata))
                    for cls in _color_classes(meta) for det in dets.get(cls, [])]
            for (_, det), color in zip(todo, self.colors(u8, todo)):
                det["color"] = color
        return detected

    def __call__(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> torch.Tensor:
        scores = []
        for det, meta in zip(self._detected(images, metadata), metadata):
            scores.append(float(strict_correct(det, meta)[0]) if self.strict else partial_score(det, meta))
        return torch.tensor(scores, dtype=torch.float32, device=images.device)

    def evaluate(self, images: torch.Tensor, metadata: list[dict]) -> list[tuple[str, bool]]:
        """[(tag, strictly correct)] per image, for common.geneval.summarize."""
        dets = self._detected(images, metadata)
        return [(meta.get("tag", ""), strict_correct(d, meta)[0]) for d, meta in zip(dets, metadata)]


def _validate_shapeworld(metadata: list[dict]) -> None:
    from toy.world import CLASSES, COLORS

    validate(metadata, CLASSES, tuple(COLORS))


def _validate_coco(metadata: list[dict]) -> None:
    from common.coco_prompts import GENEVAL_CLASSES, GENEVAL_COLORS

    validate(metadata, GENEVAL_CLASSES, GENEVAL_COLORS)


# checked before any model is built (rewards.check_reward): the classes and colours the detector knows
VALIDATORS = {"shapeworld": _validate_shapeworld, "coco": _validate_coco}


def make_geneval(device=None) -> GenEvalReward:
    """Partial-credit GenEval reward on ShapeWorld (the toy's training reward). `device` is unused (CPU)."""
    return GenEvalReward(strict=False)


def make_geneval_strict(device=None) -> GenEvalReward:
    """Binary GenEval reward on ShapeWorld: 1.0 if the image is strictly correct, else 0.0."""
    return GenEvalReward(strict=True)


def make_geneval_coco(device="cpu") -> GenEvalReward:
    """Partial-credit GenEval reward on real images (Mask2Former + CLIP colours): STAGE's training reward."""
    return GenEvalReward(strict=False, detector="coco", device=device)


def make_geneval_coco_strict(device="cpu") -> GenEvalReward:
    """Binary GenEval reward on real images: GCPO's training reward and GenEval's evaluation."""
    return GenEvalReward(strict=True, detector="coco", device=device)


for _factory, _detector in ((make_geneval, "shapeworld"), (make_geneval_strict, "shapeworld"),
                            (make_geneval_coco, "coco"), (make_geneval_coco_strict, "coco")):
    _factory.validate = VALIDATORS[_detector]


STRICT_REWARDS = {"shapeworld": "geneval_strict", "coco": "geneval_coco_strict"}  # the evaluation's rules as rewards
QUALITY_REWARDS = {"shapeworld": "shapeworld_quality"}  # a cheap no-reference quality score logged beside the verdicts


class GenEvalJudge:
    """The judge of the held-out evaluation (common/evaluation.geneval_eval): GenEval's strict rules with a named
    detector (or a converted Mask2Former folder). validate(metadata) is cheap (no model is built: call it before
    anything is loaded); the detector is built at the first evaluate(), on the images' device, and kept."""

    def __init__(self, detector: str = "shapeworld"):
        self.kind = detector_kind(detector)
        self.detector, self._rewards, self._quality = detector, {}, {}

    def __repr__(self):
        return f"GenEvalJudge({self.detector!r})"

    def validate(self, metadata: list[dict]) -> None:
        """ValueError in one line (naming the prompt file and line) if this detector cannot judge `metadata`."""
        from rewards import check_reward

        check_reward(STRICT_REWARDS[self.kind], metadata)

    def evaluate(self, images: torch.Tensor, metadata: list[dict]) -> list[tuple[str, bool]]:
        """[(tag, strictly correct)] per image."""
        device = str(images.device)
        if device not in self._rewards:
            self._rewards[device] = GenEvalReward(strict=True, detector=self.detector, device=device)
        return self._rewards[device].evaluate(images, metadata)

    def quality(self, images: torch.Tensor) -> torch.Tensor | None:
        """A no-reference image-quality score per image (B,), the evaluation's `quality`: the toy's palette
        cleanliness (toy/quality.py) with the ShapeWorld detector; None with real images (evaluate.py's `prefs`
        suite scores those with HPS/CLIP/MANIQA)."""
        if self.kind not in QUALITY_REWARDS:
            return None
        from rewards import get_reward

        device = str(images.device)
        if device not in self._quality:
            self._quality[device] = get_reward(QUALITY_REWARDS[self.kind], device=device)
        return self._quality[device](images).float().cpu()
