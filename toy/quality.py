"""CPU-only, no-reference image-quality reward for the ShapeWorld toy (the toy's stand-in for MANIQA).

ShapeWorld images are drawn with a flat background and six flat palette colours, so every pixel of a
clean render lies on one of seven colours. Decoding artefacts (blur, ringing, off-palette blotches) move
pixels away from all of them. The score is the fraction of pixels within `radius` (Euclidean RGB distance,
images in [0, 1]) of the nearest of those seven colours: 1 for a clean render, lower with artefacts.
It ignores the prompt, as a no-reference quality model does.
"""
from __future__ import annotations

import torch

from toy.world import BACKGROUND, COLORS


class PaletteCleanliness:
    def __init__(self, device="cpu", radius: float = 0.1):
        self.radius = radius
        self.colors = torch.tensor([BACKGROUND, *COLORS.values()], dtype=torch.float32) / 255  # (7, 3)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: list[str] | None = None, metadata: list[dict] | None = None):
        x = images.float().cpu().permute(0, 2, 3, 1)[..., None, :]  # (B, H, W, 1, 3)
        nearest = (x - self.colors).norm(dim=-1).min(dim=-1).values  # (B, H, W)
        return (nearest < self.radius).float().mean(dim=(1, 2))  # (B,)
