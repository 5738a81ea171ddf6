"""CPU-only toy reward: the fraction of pixels close to the colour named in the prompt.

Works with any image generator, including random tiny models (rewards are small but non-zero and
vary across samples). The first of GenEval's ten colour words found in the prompt is the target.
"""
from __future__ import annotations

import torch

# GenEval's ten colour names with a representative sRGB value in [0, 1].
PALETTE = {
    "red": (0.86, 0.16, 0.16), "orange": (0.96, 0.55, 0.12), "yellow": (0.94, 0.82, 0.16),
    "green": (0.16, 0.67, 0.24), "blue": (0.16, 0.31, 0.86), "purple": (0.55, 0.24, 0.71),
    "pink": (0.96, 0.6, 0.75), "brown": (0.55, 0.35, 0.17), "black": (0.0, 0.0, 0.0), "white": (1.0, 1.0, 1.0),
}


class ColorFraction:
    def __init__(self, device="cpu", radius: float = 0.35):
        self.radius = radius  # Euclidean RGB distance that counts as "this colour"

    @staticmethod
    def target(prompt: str) -> str:
        words = prompt.lower().replace(",", " ").split()
        for w in words:
            if w in PALETTE:
                return w
        raise ValueError(f"reward 'color' needs one of {', '.join(PALETTE)} in every prompt; got {prompt!r}")

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: list[str], metadata: list[dict] | None = None):
        rgb = torch.tensor([PALETTE[self.target(p)] for p in prompts], device=images.device)  # (B, 3)
        dist = (images.float() - rgb[:, :, None, None]).norm(dim=1)  # (B, H, W)
        return (dist < self.radius).float().mean(dim=(1, 2)).cpu()


def validate(metadata: list[dict]):
    for m in metadata:
        ColorFraction.target(m["prompt"])
