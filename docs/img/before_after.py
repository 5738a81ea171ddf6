"""Draw docs/img/grpo_vanilla_before_after.png: a run's held-out grids before and after training, side by side,
titled with the held-out strict GenEval score from its metrics.jsonl.

    OMP_NUM_THREADS=1 python grpo_vanilla.py --out-dir runs --exp-name pictured
    python docs/img/before_after.py runs/pictured_s0 --out docs/img/grpo_vanilla_before_after.png
"""
from __future__ import annotations

import argparse
import json
import os


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run directory holding eval_before.png, eval_after.png and metrics.jsonl")
    parser.add_argument("--out", default="before_after.png")
    parser.add_argument("--title", default="python grpo_vanilla.py")
    a = parser.parse_args()
    from PIL import Image, ImageDraw, ImageFont

    with open(os.path.join(a.run, "metrics.jsonl")) as f:
        scores = [(r["step"], r["eval/overall"]) for r in map(json.loads, f) if "eval/overall" in r]
    (_, before), (_, after) = min(scores), max(scores)
    grids = [Image.open(os.path.join(a.run, f"eval_{t}.png")).convert("RGB") for t in ("before", "after")]
    titles = [f"before: held-out strict GenEval {before:.3f}", f"after {a.title}: {after:.3f}"]
    try:
        font = ImageFont.load_default(size=22)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    gap, head = 24, 40
    w, h = grids[0].size
    canvas = Image.new("RGB", (2 * w + gap, h + head), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (grid, title) in enumerate(zip(grids, titles)):
        canvas.paste(grid, (i * (w + gap), head))
        draw.text((i * (w + gap) + 4, 8), title, fill="black", font=font)
    canvas.save(a.out)
    print(a.out, titles)


if __name__ == "__main__":
    main()
