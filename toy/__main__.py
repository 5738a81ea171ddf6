"""The toy's command line: ShapeWorld's prompt files, and the detector's accuracy on ground-truth renders.

    python -m toy write --out data/shapeworld
    python -m toy check --prompts data/shapeworld/eval.jsonl --n 8

(The toy model is trained by `python -m toy.train`.)
"""
from __future__ import annotations

import argparse

from toy.detector import check
from toy.world import write_prompt_files


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m toy", description="ShapeWorld prompt files and detector check")
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="write train.jsonl and eval.jsonl")
    w.add_argument("--out", default="data/shapeworld")
    c = sub.add_parser("check", help="detector strict accuracy on ground-truth renders")
    c.add_argument("--prompts", default="data/shapeworld/eval.jsonl")
    c.add_argument("--n", type=int, default=8, help="renders per prompt")
    c.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        if args.cmd == "write":
            write_prompt_files(args.out)
        elif args.n < 1:
            raise ValueError(f"--n {args.n}: must be >= 1")
        else:
            check(args.prompts, args.n, args.seed)
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
