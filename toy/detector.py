"""A hand-written object detector for ShapeWorld images (toy/world.py).

1. Each pixel goes to the nearest palette colour or the background (Euclidean RGB),
   where "nearest" also accepts blends of a colour with the background (what blur
   makes at shape edges): a pixel at least half-way to a colour belongs to it. Pixels
   farther than MAX_COLOR_DIST from every colour/background blend are ignored.
2. Connected components (8-connectivity) per colour; holes filled; tiny ones dropped.
3. Class from the component's shape: fill ratio area/box-area (square ~1.0,
   circle ~pi/4, triangle ~0.5), vertical centroid (an upward triangle is bottom-heavy),
   aspect ratio and size. The score in [0, 1] says how well the best class prototype
   matches: clean renders score 1.0, blurry or irregular blobs less.

Works on any image size: areas and sizes scale with the image relative to 64x64.

`check` measures the detector with GenEval's strict rules on ground-truth renders (`python -m toy check`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from common.geneval import filter_detections, format_table, strict_correct, summarize, tag_counts
from common.prompts import load_prompts
from toy.world import BACKGROUND, CELL, COLORS, IMAGE_SIZE, MARGIN, OBJ_CELLS, render, sample_scene

MAX_COLOR_DIST = 60.0  # RGB distance beyond which a pixel matches nothing
MIN_AREA = 20  # px at 64x64
NOMINAL_SIDE = CELL * OBJ_CELLS - 2 * MARGIN  # drawn shape side at 64x64 (12 px)

# Per class: (fill ratio, its slack, vertical centroid, its slack). Fill ratio is
# area / box area; the centroid is a fraction of the box height from the top. Slacks
# cover discretisation and blur (a blurred triangle loses its apex: fill up to ~0.66).
PROTOTYPES = {
    "square": (1.0, 0.06, 0.5, 0.04),
    "circle": (np.pi / 4, 0.06, 0.5, 0.04),
    "triangle": (0.58, 0.1, 0.63, 0.04),
}
FILL_TOL = 0.08  # beyond the slack, the fill term falls linearly to 0 over this
CENTROID_TOL = 0.06  # same for the vertical and horizontal centroid terms
ASPECT_SLACK, ASPECT_TOL = 0.25, 0.35  # on |log(w / h)|
SIZE_RANGE = (0.55, 1.6)  # side / nominal side without penalty
SIZE_ZERO = (0.3, 2.5)  # score reaches 0 here

_PALETTE = np.array(list(COLORS.values()) + [BACKGROUND], dtype=np.float32)
_NAMES = list(COLORS)


def _ramp(err: float, slack: float, tol: float) -> float:
    """1 for err <= slack, falling linearly to 0 at slack + tol."""
    return float(np.clip(1.0 - max(err - slack, 0.0) / tol, 0.0, 1.0))


def _size_term(ratio: float) -> float:
    lo, hi = SIZE_RANGE
    zlo, zhi = SIZE_ZERO
    if ratio < lo:
        return float(np.clip((ratio - zlo) / (lo - zlo), 0.0, 1.0))
    if ratio > hi:
        return float(np.clip((zhi - ratio) / (zhi - hi), 0.0, 1.0))
    return 1.0


def _to_hwc_uint8(image: Any) -> np.ndarray:
    """Accept np.uint8 (H,W,3) or a float tensor/array (3,H,W) in [0,1]."""
    if hasattr(image, "detach"):  # torch tensor
        image = image.detach().float().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim != 3:
        raise ValueError(f"expected an image of shape (H,W,3) or (3,H,W), got {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.shape[0] == 3 and arr.shape[-1] != 3:
            arr = arr.transpose(1, 2, 0)
        arr = (np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if arr.shape[-1] != 3:
        raise ValueError(f"expected 3 colour channels, got shape {arr.shape}")
    return arr


def score_shape(mask: np.ndarray, image_side: float = IMAGE_SIZE) -> tuple[str, float]:
    """Best (class, score) for a boolean component mask cropped to its box."""
    h, w = mask.shape
    fill = mask.sum() / float(h * w)
    rows, cols = np.nonzero(mask)
    cy, cx = (rows.mean() + 0.5) / h, (cols.mean() + 0.5) / w
    common = (
        _ramp(abs(cx - 0.5), 0.04, CENTROID_TOL)  # all shapes are left-right symmetric
        * _ramp(abs(np.log(w / h)), ASPECT_SLACK, ASPECT_TOL)
        * _size_term(np.sqrt(h * w) / (NOMINAL_SIDE * image_side / IMAGE_SIZE))
    )
    best_cls, best = "square", -1.0
    for cls, (p_fill, fill_slack, p_cy, cy_slack) in PROTOTYPES.items():
        s = (
            _ramp(abs(fill - p_fill), fill_slack, FILL_TOL)
            * _ramp(abs(cy - p_cy), cy_slack, CENTROID_TOL)
            * common
        )
        if s > best:
            best_cls, best = cls, s
    return best_cls, best


def label_pixels(img: np.ndarray) -> np.ndarray:
    """Palette index per pixel (-1 for background or unmatched), blur-aware.

    A pixel is compared with every blend bg + t * (colour - bg), t in [0, 1], i.e. the
    nearest palette colour or the background, also allowing the mixed pixels that blur
    produces at shape edges. It belongs to the colour whose blend line is nearest (within
    MAX_COLOR_DIST) if it is at least half that colour (t >= 0.5): the mask edge sits at
    the 50% contour, so blurred shapes keep their size.
    """
    bg = _PALETTE[-1]
    dirs = _PALETTE[:-1] - bg  # (C,3)
    diff = img.astype(np.float32) - bg  # (H,W,3)
    t = np.clip(diff @ dirs.T / (dirs**2).sum(axis=1), 0.0, 1.0)  # (H,W,C)
    resid = np.linalg.norm(diff[:, :, None, :] - t[..., None] * dirs, axis=-1)  # (H,W,C)
    best = resid.argmin(axis=-1)
    t_best = np.take_along_axis(t, best[..., None], axis=-1)[..., 0]
    keep = (resid.min(axis=-1) <= MAX_COLOR_DIST) & (t_best >= 0.5)
    return np.where(keep, best, -1)


def detect(image: Any) -> list[dict]:
    """Detections [{"class", "box": (x0,y0,x1,y1), "score", "color"}] of one image."""
    img = _to_hwc_uint8(image)
    H, W = img.shape[:2]
    label = label_pixels(img)
    min_area = MIN_AREA * (H * W) / IMAGE_SIZE**2
    image_side = float(np.sqrt(H * W))
    eight = np.ones((3, 3), dtype=bool)
    dets: list[dict] = []
    for ci, name in enumerate(_NAMES):
        comps, _ = ndimage.label(label == ci, structure=eight)
        for k, sl in enumerate(ndimage.find_objects(comps), start=1):
            if sl is None:
                continue
            mask = ndimage.binary_fill_holes(comps[sl] == k)
            if mask.sum() < min_area:
                continue
            cls, score = score_shape(mask, image_side)
            box = (float(sl[1].start), float(sl[0].start), float(sl[1].stop), float(sl[0].stop))
            dets.append({"class": cls, "box": box, "score": score, "color": name})
    return dets


class ShapeWorldDetector:
    """The GenEval reward's detector interface (rewards/geneval.py): uint8 images (B, 3, H, W) -> per image a list of
    detections, colours included (no colour classifier needed)."""

    def __call__(self, images_u8) -> list[list[dict]]:
        return [detect(img) for img in images_u8.permute(0, 2, 3, 1).cpu().numpy()]


def check(prompts_path: str, n: int, seed: int = 0) -> dict:
    """Detector + strict rules on n ground-truth renders per prompt; prints the table (`python -m toy check`)."""
    rng = np.random.default_rng(seed)
    results: list[tuple[str, bool]] = []
    for meta in load_prompts(prompts_path):
        for _ in range(n):
            image = render(sample_scene(meta, rng))
            detected = filter_detections(detect(image), meta["tag"])
            results.append((meta["tag"], strict_correct(detected, meta)[0]))
    summary = summarize(results)
    print(format_table(summary, tag_counts(results)))
    return summary
