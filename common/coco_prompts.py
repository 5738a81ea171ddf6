"""GenEval-style training prompts over the 80 COCO classes (the Flow-GRPO / STAGE GenEval training recipe).

Each row is GenEval metadata (the format of data/shapeworld/*.jsonl and of GenEval's evaluation_metadata.jsonl):
{"tag", "include": [{"class", "count", "color"?, "position"?: [relation, target_index]}], "exclude"?, "prompt"},
built with GenEval's six tags and templates:
- single_object  "a photo of a bench"                        include [bench x1]
- two_object     "a photo of a cat and a dog"                two distinct classes
- counting       "a photo of three buses"                    count 2-4, exclude [bus x (count+1)]
- colors         "a photo of a pink car"                     one of GenEval's ten colours
- position       "a photo of a cat left of a dog"            include [dog, cat with position [rel, 0]]
- color_attr     "a photo of a red cat and a blue dog"       two classes, two distinct colours
Classes are GenEval's names of the 80 COCO classes (COCO order; "computer mouse", "tv remote" and
"computer keyboard" replace COCO's "mouse", "remote", "keyboard"), the order the COCO detector's labels use.

Tags are drawn with a ratio: "uniform", "geneval" (the 553-prompt evaluation set: 80:99:80:94:100:100) or
"stage" (STAGE App. B.1: 0:1:7:1:4:5), or explicit "a:b:c:d:e:f" in the tag order above. Objects are drawn
uniformly, with replacement across rows (small tags repeat, as in a 50k-prompt training set); prompts that
appear in `--exclude` files (e.g. the evaluation metadata) are never produced.

CLI:
    python -m common.coco_prompts --n 50000 --ratio stage --exclude evaluation_metadata.jsonl --out data/coco/train.jsonl
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from common.geneval import RELATIONS, TAGS, geneval_row, with_article

GENEVAL_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock",
    "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)
GENEVAL_COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
NUMBER_WORDS = {2: "two", 3: "three", 4: "four"}
RATIOS = {
    "uniform": (1, 1, 1, 1, 1, 1),
    "geneval": (80, 99, 80, 94, 100, 100),
    "stage": (0, 1, 7, 1, 4, 5),
}
_IRREGULAR = {"person": "people", "sheep": "sheep", "skis": "skis", "scissors": "scissors",
              "computer mouse": "computer mice", "knife": "knives"}


def plural(name: str) -> str:
    if name in _IRREGULAR:
        return _IRREGULAR[name]
    if name.endswith(("s", "x", "z", "ch", "sh")):
        return name + "es"
    return name + "s"


def parse_ratio(ratio: str | tuple) -> np.ndarray:
    """Tag probabilities (in TAGS order) from a name in RATIOS or "a:b:c:d:e:f"."""
    if isinstance(ratio, str):
        if ratio in RATIOS:
            ratio = RATIOS[ratio]
        else:
            try:
                ratio = tuple(float(x) for x in ratio.split(":"))
            except ValueError:
                ratio = ()
    w = np.asarray(ratio, dtype=np.float64)
    if w.shape != (len(TAGS),) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"tag ratio must be one of {', '.join(RATIOS)} or six non-negative numbers "
                         f"'a:b:c:d:e:f' for {':'.join(TAGS)}; got {ratio!r}")
    return w / w.sum()


def sample_row(rng: np.random.Generator, tag: str, max_count: int = 4) -> dict:
    """One GenEval metadata row of `tag` with uniformly drawn classes, colours, counts and relations."""

    def classes(k):
        return [GENEVAL_CLASSES[i] for i in rng.choice(len(GENEVAL_CLASSES), size=k, replace=False)]

    def colors(k):
        return [GENEVAL_COLORS[i] for i in rng.choice(len(GENEVAL_COLORS), size=k, replace=False)]

    if tag == "single_object":
        (a,) = classes(1)
        return geneval_row(tag, [{"class": a, "count": 1}], f"a photo of {with_article(a)}")
    if tag == "two_object":
        a, b = classes(2)
        return geneval_row(tag, [{"class": a, "count": 1}, {"class": b, "count": 1}],
                           f"a photo of {with_article(a)} and {with_article(b)}")
    if tag == "counting":
        (a,) = classes(1)
        n = int(rng.integers(2, max_count + 1))
        word = NUMBER_WORDS.get(n, str(n))
        return geneval_row(tag, [{"class": a, "count": n}], f"a photo of {word} {plural(a)}",
                           [{"class": a, "count": n + 1}])
    if tag == "colors":
        (a,), (c,) = classes(1), colors(1)
        return geneval_row(tag, [{"class": a, "count": 1, "color": c}], f"a photo of {with_article(c)} {a}")
    if tag == "position":
        a, b = classes(2)
        rel = RELATIONS[int(rng.integers(len(RELATIONS)))]
        return geneval_row(tag, [{"class": b, "count": 1}, {"class": a, "count": 1, "position": [rel, 0]}],
                           f"a photo of {with_article(a)} {rel} {with_article(b)}")
    if tag == "color_attr":
        (a, b), (ca, cb) = classes(2), colors(2)
        return geneval_row(tag, [{"class": a, "count": 1, "color": ca}, {"class": b, "count": 1, "color": cb}],
                           f"a photo of {with_article(ca)} {a} and {with_article(cb)} {b}")
    raise ValueError(f"unknown GenEval tag {tag!r}; known: {', '.join(TAGS)}")


def generate(n: int, ratio="uniform", seed: int = 0, exclude: set[str] | None = None,
             max_count: int = 4, max_tries: int = 1000) -> list[dict]:
    """n rows, deterministic for a seed; prompts in `exclude` are redrawn (same tag)."""
    probs = parse_ratio(ratio)
    rng = np.random.default_rng(seed)
    exclude = exclude or set()
    tags = rng.choice(len(TAGS), size=n, p=probs)
    rows = []
    for t in tags:
        for _ in range(max_tries):
            row = sample_row(rng, TAGS[t], max_count)
            if row["prompt"] not in exclude:
                break
        else:
            raise ValueError(f"could not draw a {TAGS[t]} prompt outside the excluded set in {max_tries} tries")
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="GenEval-style COCO training metadata (JSON lines)")
    p.add_argument("--n", type=int, default=50000, help="number of rows (STAGE/Flow-GRPO: about 50k)")
    p.add_argument("--ratio", default="uniform",
                   help=f"tag ratio: {', '.join(RATIOS)} or 'a:b:c:d:e:f' for {':'.join(TAGS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-count", type=int, default=4, help="counting prompts use counts 2..max-count")
    p.add_argument("--exclude", nargs="*", default=[], help="prompt files whose prompts must not appear")
    p.add_argument("--out", default="data/coco/train.jsonl")
    args = p.parse_args(argv)
    from common import errors
    from common.prompts import load_prompts
    from common.utils import write_atomic

    errors.install(interrupted=f"nothing was written to {args.out}")

    try:
        if args.n < 1 or args.max_count < 2:
            raise ValueError(f"--n {args.n} must be >= 1 and --max-count {args.max_count} >= 2")
        exclude = {row["prompt"] for path in args.exclude for row in load_prompts(path)}
        rows = generate(args.n, args.ratio, args.seed, exclude, args.max_count)

        def write(tmp):
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(row) + "\n" for row in rows)

        write_atomic(args.out, write)
    except (ValueError, OSError) as e:
        errors.fail(str(e))
    counts = {t: sum(r["tag"] == t for r in rows) for t in TAGS}
    print(f"wrote {len(rows)} rows to {args.out}: " + ", ".join(f"{t} {c}" for t, c in counts.items()))


if __name__ == "__main__":
    main()
