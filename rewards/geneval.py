"""GenEval reward: detector backend + GenEval rules (rewards/geneval_rules.py, shared unchanged by all backends).

strict=False gives the Flow-GRPO/STAGE partial-credit training score (stage.md §6.1);
strict=True gives GenEval's binary correctness as 1.0 / 0.0.

Backends (`detector=`):
- "shapeworld": the hand-written ShapeWorld detector (CPU, colours from the palette);
- "coco": real images. Mask2Former Swin-S COCO instance segmentation (rewards/mask2former.py) and, for
  objects whose prompt asks for a colour, CLIP ViT-L/14 zero-shot colours (rewards/geneval_color.py).
A detector is a callable uint8 images (B,3,H,W) -> per image a list of detections {"class", "box", "score",
"color" (None: ask the colour classifier), optional "mask"}; a detector object and a colour classifier can be
passed directly (tests use tiny random models).
"""

from __future__ import annotations

from typing import Callable

import torch

from rewards.geneval_rules import Detected, filter_detections, partial_score, strict_correct


class ShapeWorldDetector:
    def __call__(self, images_u8: torch.Tensor) -> list[list[dict]]:
        from rewards.shapeworld_detector import detect

        return [detect(img) for img in images_u8.permute(0, 2, 3, 1).cpu().numpy()]


def _shapeworld(device):
    return ShapeWorldDetector(), None


def _coco(device):
    from rewards.geneval_color import load_color_classifier
    from rewards.mask2former import load_mask2former

    return load_mask2former(device=device), load_color_classifier(device=device)


# name -> function(device) -> (detector, colour classifier or None)
DETECTORS: dict[str, Callable] = {"shapeworld": _shapeworld, "coco": _coco}


def validate(metadata: list[dict], classes=None, colors=None) -> None:
    """Raise ValueError naming the first row that is not GenEval metadata: a non-empty "include" list of
    {class, count (int >= 1), optional color, optional position [relation, index of an earlier include]}.
    classes / colors: the names the detector can see (None: not checked)."""
    from rewards.geneval_rules import RELATIONS

    for meta in metadata:
        prompt = meta.get("prompt") if isinstance(meta, dict) else meta
        where = f"prompt {prompt!r}"
        inc = meta.get("include") if isinstance(meta, dict) else None
        if not (isinstance(inc, list) and inc and all(isinstance(r, dict) and "class" in r and "count" in r
                                                      for r in inc)):
            raise ValueError(f"GenEval reward needs metadata with an 'include' list of {{class, count}} for every "
                             f"prompt; {where} has none (use a GenEval-format .jsonl prompt file)")
        for j, r in enumerate(inc + list(meta.get("exclude") or [])):
            if not isinstance(r.get("count"), int) or isinstance(r["count"], bool) or r["count"] < 1:
                raise ValueError(f"GenEval metadata {where}: count {r.get('count')!r} of {r.get('class')!r} "
                                 f"is not a positive integer")
            if classes is not None and r["class"] not in classes:
                raise ValueError(f"GenEval metadata {where}: class {r['class']!r} is not one this detector knows "
                                 f"({len(classes)} classes, e.g. {', '.join(list(classes)[:4])}); is the prompt "
                                 f"file meant for another detector?")
            if colors is not None and r.get("color") is not None and r["color"] not in colors:
                raise ValueError(f"GenEval metadata {where}: unknown colour {r['color']!r}; known: {', '.join(colors)}")
            pos = r.get("position")
            if pos is not None and not (isinstance(pos, (list, tuple)) and len(pos) == 2 and pos[0] in RELATIONS
                                        and isinstance(pos[1], int) and 0 <= pos[1] < len(inc) and pos[1] != j):
                raise ValueError(f"GenEval metadata {where}: position {pos!r} must be [relation, index of another "
                                 f"include] with relation one of {', '.join(RELATIONS)}")


def _color_classes(meta: dict) -> list[str]:
    """Classes whose colour the rules will read (a non-null "color" key, as geneval_rules treats it), in order."""
    return list(dict.fromkeys(r["class"] for r in meta.get("include") or [] if r.get("color") is not None))


class GenEvalReward:
    """Callable reward: (images (B,3,H,W) in [0,1], prompts, metadata) -> FloatTensor (B,)."""

    def __init__(self, strict: bool = False, detector="shapeworld", colors=None, device="cpu"):
        if isinstance(detector, str):
            if detector not in DETECTORS:
                raise ValueError(f"unknown GenEval detector {detector!r}; known: {', '.join(DETECTORS)}")
            detector, default_colors = DETECTORS[detector](device)
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
        """[(tag, strictly correct)] per image, for rewards.geneval_rules.summarize."""
        dets = self._detected(images, metadata)
        return [(meta.get("tag", ""), strict_correct(d, meta)[0]) for d, meta in zip(dets, metadata)]


def _validate_shapeworld(metadata: list[dict]) -> None:
    from common.shapeworld import CLASSES, COLORS

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
