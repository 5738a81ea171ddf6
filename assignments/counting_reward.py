"""Exercise 09: a new ShapeWorld reward for one GenEval tag, `counting` (assignments/ex09.md).

GenEval's counting rule is binary: an image of "a photo of three circles" is correct when the detector finds at
least three circles and fewer than four, counting only detections with confidence above 0.9 (GenEval's threshold
for counting prompts, `common.geneval.filter_detections`). A binary reward gives a group of images no signal when
they all fail, so this reward is dense: with n confident detections of the asked class and N asked,

    r = max(0, 1 − |n − N| / N)         1 exactly when n = N (= GenEval-correct), 0 when n = 0 or n ≥ 2N.

Use it like any reward (docs/rewards.md, "your own reward"):
    python grpo_vanilla.py --reward assignments.counting_reward:make_counting_reward --prompts <counting prompts>
"""
from __future__ import annotations

import torch

from toy.detector import detect

COUNT_THRESHOLD = 0.9  # GenEval keeps a detection of a counting prompt when its score is > 0.9


def count_objects(detections: list[dict], cls: str, threshold: float = COUNT_THRESHOLD) -> int:
    """The number of detections {"class", "box", "score", "color"} of class `cls` whose score is > threshold."""
    # BEGIN SOLUTION ex09
    return sum(1 for d in detections if d["class"] == cls and d["score"] > threshold)
    # END SOLUTION


def counting_score(n: int, count: int) -> float:
    """r = max(0, 1 − |n − N| / N) for n objects found and N = count asked (N ≥ 1)."""
    # BEGIN SOLUTION ex09
    return max(0.0, 1.0 - abs(n - count) / count)
    # END SOLUTION


class CountingReward:
    """The reward callable: (images (B, 3, H, W) in [0, 1], prompts, metadata) -> FloatTensor (B,)."""

    def __call__(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> torch.Tensor:
        """Per image: detect its objects (toy.detector.detect), count the class of the row's first "include"
        clause, score the count against the clause's "count". A float32 tensor (B,) on the images' device."""
        # BEGIN SOLUTION ex09
        asked = [meta["include"][0] for meta in metadata]
        scores = [counting_score(count_objects(detect(image), req["class"]), int(req["count"]))
                  for image, req in zip(images, asked)]
        return torch.tensor(scores, device=images.device).float()
        # END SOLUTION


def validate(metadata: list[dict]) -> None:
    """Every row must be a GenEval `counting` row (checked before training: rewards.check_reward)."""
    for meta in metadata:
        if meta.get("tag") != "counting" or not meta.get("include"):
            raise ValueError(f"the counting reward scores only GenEval 'counting' rows, not {meta.get('prompt')!r}")


def make_counting_reward(device="cpu") -> CountingReward:
    """The factory `--reward assignments.counting_reward:make_counting_reward` builds (CPU; `device` is unused)."""
    return CountingReward()
