"""Class-conditional training prompts weighted as ImageNet is: one class id per training image.

The AR-GRPO release draws its c2i "prompts" by shuffling the ImageNet-1k training images and keeping only
their labels, so a class appears in proportion to its image count (732 to 1300 images). A prompt file with
one line per image reproduces that exactly: the scripts shuffle the file each epoch. Class ids are the
indices of the synset folders in sorted order (torchvision's ImageFolder / DatasetFolder convention, which
LlamaGen's class-conditional checkpoints were trained with). `data/imagenet/class_ids.txt` (0..999 once
each) is the uniform alternative.

CLI:
    python -m common.imagenet_prompts --train-dir IMAGENET/train --out data/imagenet/train_images.txt
"""
from __future__ import annotations

import argparse
import os
import sys

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def class_counts(train_dir: str) -> list[tuple[str, int]]:
    """[(synset folder, number of images)] in class-index (sorted folder) order."""
    if not os.path.isdir(train_dir):
        raise FileNotFoundError(f"--train-dir {train_dir}: not a directory (the ImageNet train/ folder of synsets)")
    folders = sorted(e.name for e in os.scandir(train_dir) if e.is_dir())
    if not folders:
        raise ValueError(f"--train-dir {train_dir} holds no class folders (expected n01440764/ ... n15075141/)")
    return [(f, sum(1 for e in os.scandir(os.path.join(train_dir, f))
                    if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))) for f in folders]


def write_prompts(counts: list[tuple[str, int]], out: str) -> int:
    """Write class index i once per image of class i (atomically). -> number of lines."""
    from common.utils import write_atomic

    lines = "".join(f"{i}\n" * n for i, (_, n) in enumerate(counts))
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(lines)

    write_atomic(out, write)
    return sum(n for _, n in counts)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="one class id per ImageNet training image (AR-GRPO's c2i prompt draw)")
    p.add_argument("--train-dir", required=True, help="ImageNet-1k train/ folder with one sub-folder per synset")
    p.add_argument("--out", default="data/imagenet/train_images.txt")
    args = p.parse_args(argv)
    from common import errors

    errors.install(interrupted=f"nothing was written to {args.out}")
    try:
        counts = class_counts(args.train_dir)
        n = write_prompts(counts, args.out)
    except (OSError, ValueError) as e:
        errors.fail(str(e))
    empty = [f for f, c in counts if c == 0]
    print(f"{args.out}: {n} lines, {len(counts)} classes" + (f"; {len(empty)} empty: {empty[:3]}" if empty else ""))
    if len(counts) != 1000:
        print(f"warning: {len(counts)} class folders, LlamaGen's c2i models have 1000 classes", file=sys.stderr)


if __name__ == "__main__":
    main()
