"""ShapeWorld: a tiny procedural world of coloured shapes with GenEval-style prompts.

Images are 64x64 RGB. The image is an 8x8 grid of 8-pixel cells (one cell = one VQ
token). Every object fills a 2x2-cell block (16x16 px) and is drawn, filled and in one
solid colour, inside that block with a 2 px margin. Blocks of different objects never
touch: their top-left cells are at Chebyshev distance >= 3.

Prompts and metadata follow GenEval's evaluation_metadata.jsonl format and templates
for its six tags (common/geneval.py), so the same rules score both this world and
real GenEval.

Write the prompt files with `python -m toy write --out data/shapeworld` (toy/__main__.py).
"""

from __future__ import annotations

import functools
import itertools
import json
import os
from collections import OrderedDict
from typing import Any

import numpy as np

from common.geneval import RELATIONS, TAGS, geneval_row, relative_position, with_article

IMAGE_SIZE = 64
CELL = 8  # pixels per cell (= per VQ token)
GRID = IMAGE_SIZE // CELL  # cells per side
OBJ_CELLS = 2  # an object occupies OBJ_CELLS x OBJ_CELLS cells
MARGIN = 2  # pixels between the block border and the drawn shape
MIN_GAP = OBJ_CELLS + 1  # min Chebyshev distance between top-left cells (blocks never touch)
MAX_POS = GRID - OBJ_CELLS  # top-left row/col lie in 0..MAX_POS

CLASSES = ("circle", "square", "triangle")
# Six of GenEval's ten colour names; values chosen so that every colour/background
# blend stays far (> 85 RGB units) from every other palette colour.
COLORS: "OrderedDict[str, tuple[int, int, int]]" = OrderedDict(
    [
        ("red", (215, 35, 35)),
        ("orange", (240, 120, 0)),
        ("yellow", (240, 220, 0)),
        ("green", (40, 160, 60)),
        ("blue", (40, 80, 215)),
        ("purple", (140, 50, 170)),
    ]
)
BACKGROUND = (235, 235, 235)

NUMBERS = {2: "two", 3: "three", 4: "four"}
TRAIN_PER_TAG = 64  # training prompts per tag (tag-balanced; small tags repeat)
EVAL_PER_TAG = 16  # tags with a larger prompt space get this many held-out eval prompts
EVAL_SEED = 0
# A position scene must still satisfy its relation under this stricter box-shrink
# threshold (GenEval uses 0.1), so that small box errors of a detector do not flip it.
ROBUST_POSITION_THRESHOLD = 0.25

Obj = dict[str, Any]  # {"class": str, "color": str, "cell": (row, col)}


# ----------------------------------------------------------------------------- shapes


def _shape_mask(cls: str) -> np.ndarray:
    """Boolean (16,16) mask of a shape inside its block (supersampled, coverage >= 0.5)."""
    s = CELL * OBJ_CELLS - 2 * MARGIN  # drawn extent: 12 px
    k = 8  # supersampling factor
    y, x = (np.mgrid[0 : s * k, 0 : s * k] + 0.5) / k
    c = s / 2
    if cls == "circle":
        inside = (x - c) ** 2 + (y - c) ** 2 <= c**2
    elif cls == "square":
        inside = np.ones_like(x, dtype=bool)
    elif cls == "triangle":  # upward isosceles; apex half a pixel above so the top row is drawn
        apex = -0.5
        inside = np.abs(x - c) <= c * (y - apex) / (s - apex)
    else:
        raise ValueError(f"unknown class {cls!r}; known: {', '.join(CLASSES)}")
    small = inside.reshape(s, k, s, k).mean(axis=(1, 3)) >= 0.5
    block = np.zeros((CELL * OBJ_CELLS, CELL * OBJ_CELLS), dtype=bool)
    block[MARGIN : MARGIN + s, MARGIN : MARGIN + s] = small
    return block


SHAPE_MASKS: dict[str, np.ndarray] = {cls: _shape_mask(cls) for cls in CLASSES}


def render(objects: list[Obj]) -> np.ndarray:
    """Draw objects on the background; returns uint8 (64, 64, 3)."""
    img = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    img[:] = BACKGROUND
    for obj in objects:
        r, c = obj["cell"]
        if not (0 <= r <= MAX_POS and 0 <= c <= MAX_POS):
            raise ValueError(f"cell {obj['cell']} out of range 0..{MAX_POS}")
        y0, x0 = r * CELL, c * CELL
        block = img[y0 : y0 + CELL * OBJ_CELLS, x0 : x0 + CELL * OBJ_CELLS]
        block[SHAPE_MASKS[obj["class"]]] = COLORS[obj["color"]]
    return img


def object_box(obj: Obj) -> tuple[float, float, float, float]:
    """Ground-truth pixel box (x0, y0, x1, y1) of the drawn shape (x1, y1 exclusive)."""
    ys, xs = np.nonzero(SHAPE_MASKS[obj["class"]])
    r, c = obj["cell"]
    return (
        float(c * CELL + xs.min()),
        float(r * CELL + ys.min()),
        float(c * CELL + xs.max() + 1),
        float(r * CELL + ys.max() + 1),
    )


# ----------------------------------------------------------------------------- prompts


@functools.lru_cache(maxsize=None)
def _all_prompts_json(tag: str) -> tuple[str, ...]:
    rows: list[dict] = []
    if tag == "single_object":
        for cls in CLASSES:
            rows.append(geneval_row(tag, [{"class": cls, "count": 1}], f"a photo of {with_article(cls)}"))
    elif tag == "two_object":
        for a, b in itertools.permutations(CLASSES, 2):
            inc = [{"class": a, "count": 1}, {"class": b, "count": 1}]
            rows.append(geneval_row(tag, inc, f"a photo of {with_article(a)} and {with_article(b)}"))
    elif tag == "counting":
        for cls in CLASSES:
            for n, word in NUMBERS.items():
                inc = [{"class": cls, "count": n}]
                exc = [{"class": cls, "count": n + 1}]
                rows.append(geneval_row(tag, inc, f"a photo of {word} {cls}s", exc))
    elif tag == "colors":
        for cls in CLASSES:
            for color in COLORS:
                inc = [{"class": cls, "count": 1, "color": color}]
                rows.append(geneval_row(tag, inc, f"a photo of {with_article(color)} {cls}"))
    elif tag == "position":
        for a, b in itertools.permutations(CLASSES, 2):
            for rel in RELATIONS:
                inc = [{"class": b, "count": 1}, {"class": a, "count": 1, "position": [rel, 0]}]
                rows.append(geneval_row(tag, inc, f"a photo of {with_article(a)} {rel} {with_article(b)}"))
    elif tag == "color_attr":
        for a, b in itertools.permutations(CLASSES, 2):
            for ca, cb in itertools.permutations(COLORS, 2):
                inc = [
                    {"class": a, "count": 1, "color": ca},
                    {"class": b, "count": 1, "color": cb},
                ]
                rows.append(geneval_row(tag, inc, f"a photo of {with_article(ca)} {a} and {with_article(cb)} {b}"))
    else:
        raise ValueError(f"unknown tag {tag!r}; known: {', '.join(TAGS)}")
    return tuple(json.dumps(r) for r in rows)


def all_prompts(tag: str) -> list[dict]:
    """Every prompt of a tag, in a fixed order (fresh dicts, safe to mutate)."""
    return [json.loads(s) for s in _all_prompts_json(tag)]


def sample_prompt(rng: np.random.Generator, tag: str | None = None) -> dict:
    """A uniformly random prompt of `tag` (a uniformly random tag if None)."""
    if tag is None:
        tag = TAGS[rng.integers(len(TAGS))]
    space = _all_prompts_json(tag)
    return json.loads(space[rng.integers(len(space))])


# ----------------------------------------------------------------------------- scenes


def _random_cells(n: int, rng: np.random.Generator, tries: int = 100) -> list[tuple[int, int]]:
    """n top-left cells whose 2x2 blocks pairwise do not touch."""
    all_cells = [(r, c) for r in range(MAX_POS + 1) for c in range(MAX_POS + 1)]
    for _ in range(tries):
        cells: list[tuple[int, int]] = []
        for _ in range(n):
            free = [
                p for p in all_cells
                if all(max(abs(p[0] - q[0]), abs(p[1] - q[1])) >= MIN_GAP for q in cells)
            ]
            if not free:
                break
            cells.append(free[rng.integers(len(free))])
        if len(cells) == n:
            return cells
    raise RuntimeError(f"could not place {n} non-touching objects")


def _req(req: dict, key: str) -> Any:
    """A requirement field, treating a null value as absent."""
    return req.get(key) if req.get(key) is not None else None


def sample_scene(metadata: dict, rng: np.random.Generator, max_tries: int = 1000) -> list[Obj]:
    """A random scene with exactly the objects the prompt's `include` list asks for.

    Unspecified colours are random; position relations hold under GenEval's rule with a
    safety margin (checked on ground-truth boxes). Raises RuntimeError if it fails.
    """
    reqs = metadata["include"]
    for _ in range(max_tries):
        objects: list[Obj] = []
        groups: list[list[Obj]] = []
        for req in reqs:
            color = _req(req, "color")
            group = [
                {"class": req["class"], "color": color or list(COLORS)[rng.integers(len(COLORS))]}
                for _ in range(int(req["count"]))
            ]
            groups.append(group)
            objects.extend(group)
        cells = _random_cells(len(objects), rng)
        for obj, cell in zip(objects, cells):
            obj["cell"] = (int(cell[0]), int(cell[1]))
        ok = True
        for req, group in zip(reqs, groups):
            pos = _req(req, "position")
            if pos is None:
                continue
            rel, target = pos[0], int(pos[1])
            for obj in group:
                for tgt in groups[target]:
                    for thr in (0.1, ROBUST_POSITION_THRESHOLD):
                        if rel not in relative_position(object_box(obj), object_box(tgt), thr):
                            ok = False
        if ok:
            return objects
    raise RuntimeError(f"could not sample a scene for {metadata.get('prompt')!r}")


# ----------------------------------------------------------------------------- files


def _held_out_size(n: int) -> int:
    """Held-out prompts of a tag whose space has n prompts: none of it is held out when n <= 9 (too
    small to split; those prompts appear in both files), else min(EVAL_PER_TAG, n // 2)."""
    return 0 if n <= 9 else min(EVAL_PER_TAG, n // 2)


def eval_prompts() -> list[dict]:
    """Eval split: the whole space of small tags, a seeded held-out sample of the larger ones."""
    rows: list[dict] = []
    for tag in TAGS:
        space = all_prompts(tag)
        k = _held_out_size(len(space))
        if k:
            rng = np.random.default_rng(EVAL_SEED)
            space = [space[i] for i in sorted(rng.choice(len(space), size=k, replace=False).tolist())]
        rows.extend(space)
    return rows


def train_prompts() -> list[dict]:
    """Train split, tag-balanced: TRAIN_PER_TAG prompts per tag, cycling through the tag's prompts
    (minus its held-out eval prompts) in a seeded order, so small tags repeat evenly."""
    held_out = {p["prompt"] for p in eval_prompts() if _held_out_size(len(all_prompts(p["tag"])))}
    rng = np.random.default_rng(EVAL_SEED + 1)
    rows = []
    for tag in TAGS:
        space = [p for p in all_prompts(tag) if p["prompt"] not in held_out]
        order = rng.permutation(len(space)).tolist()
        rows += [space[order[i % len(space)]] for i in range(TRAIN_PER_TAG)]
    return rows


def write_prompt_files(out_dir: str) -> None:
    """Write train.jsonl and eval.jsonl (GenEval metadata format) into out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    for name, rows in (("train.jsonl", train_prompts()), ("eval.jsonl", eval_prompts())):
        with open(os.path.join(out_dir, name), "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        print(f"wrote {len(rows)} prompts to {os.path.join(out_dir, name)}")
