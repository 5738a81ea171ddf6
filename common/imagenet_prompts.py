"""Class-conditional training prompts weighted as ImageNet is: one class id per training image.

The AR-GRPO release draws its c2i "prompts" by shuffling the ImageNet-1k training images and keeping only
their labels, so a class appears in proportion to its image count (732 to 1300 images). A prompt file with
one line per image reproduces that exactly: the scripts shuffle the file each epoch. Class ids are the
indices of the synset folders in sorted order (torchvision's ImageFolder / DatasetFolder convention, which
LlamaGen's class-conditional checkpoints were trained with). `data/imagenet/class_ids.txt` (0..999 once
each) is the uniform alternative.

The counts come, by default, from the table the project ships, `data/imagenet/train_counts.tsv` (`wnid<TAB>images`,
1000 lines, 1,281,167 images; where it comes from and how it is checked: data/imagenet/derive_train_counts.py and
docs/presets.md). The ImageNet train folder itself (`--train-dir`) or the ILSVRC2012 devkit's `data/meta.mat`
(`--devkit-meta`, 2.5 MB, ILSVRC2012_devkit_t12.tar.gz from image-net.org: its `synsets` records hold each class's
WNID and `num_train_images`) give the same numbers from the original.

CLI:
    python -m common.imagenet_prompts                        # from the shipped data/imagenet/train_counts.tsv
    python -m common.imagenet_prompts --train-dir IMAGENET/train --out data/imagenet/train_images.txt
    python -m common.imagenet_prompts --devkit-meta DEVKIT/data/meta.mat --out data/imagenet/train_images.txt
"""
from __future__ import annotations

import argparse
import os
import sys

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SHIPPED_COUNTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "imagenet",
                              "train_counts.tsv")


def table_counts(path: str) -> list[tuple[str, int]]:
    """[(WNID, images)] from a `wnid<TAB>images` table (one class per line), in class-index (sorted WNID) order."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--counts {path}: not found (a table of lines `wnid<TAB>images`)")
    rows = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit():
                raise ValueError(f"{path}:{lineno}: expected `wnid<TAB>images`, got {line.strip()[:60]!r}")
            if parts[0] in rows:
                raise ValueError(f"{path}:{lineno}: {parts[0]} listed twice")
            rows[parts[0]] = int(parts[1])
    if not rows:
        raise ValueError(f"--counts {path} lists no classes")
    return sorted(rows.items())


def class_counts(train_dir: str) -> list[tuple[str, int]]:
    """[(synset folder, number of images)] in class-index (sorted folder) order."""
    if not os.path.isdir(train_dir):
        raise FileNotFoundError(f"--train-dir {train_dir}: not a directory (the ImageNet train/ folder of synsets)")
    folders = sorted(e.name for e in os.scandir(train_dir) if e.is_dir())
    if not folders:
        raise ValueError(f"--train-dir {train_dir} holds no class folders (expected n01440764/ ... n15075141/)")
    return [(f, sum(1 for e in os.scandir(os.path.join(train_dir, f))
                    if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))) for f in folders]


def devkit_counts(meta_path: str) -> list[tuple[str, int]]:
    """[(WNID, num_train_images)] of the 1000 leaf classes (num_children 0) of the devkit's meta.mat, in class-index
    (sorted WNID) order."""
    from scipy.io import loadmat

    if not os.path.isfile(meta_path):
        raise FileNotFoundError(f"--devkit-meta {meta_path}: not found (ILSVRC2012_devkit_t12/data/meta.mat)")
    try:
        synsets = loadmat(meta_path, squeeze_me=True)["synsets"]
        rows = [(str(w), int(n)) for w, c, n in zip(synsets["WNID"], synsets["num_children"],
                                                      synsets["num_train_images"]) if int(c) == 0]
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"--devkit-meta {meta_path}: not the ILSVRC2012 devkit's meta.mat (synsets with WNID, "
                         f"num_children, num_train_images): {e}") from None
    return sorted(rows)


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
    src = p.add_mutually_exclusive_group()
    src.add_argument("--counts", help="a `wnid<TAB>images` table (default: the shipped data/imagenet/train_counts.tsv)")
    src.add_argument("--train-dir", help="ImageNet-1k train/ folder with one sub-folder per synset")
    src.add_argument("--devkit-meta", help="the ILSVRC2012 devkit's data/meta.mat (its num_train_images per class)")
    p.add_argument("--out", default="data/imagenet/train_images.txt")
    args = p.parse_args(argv)
    from common import errors

    errors.install(interrupted=f"nothing was written to {args.out}")
    try:
        counts = (class_counts(args.train_dir) if args.train_dir else devkit_counts(args.devkit_meta)
                  if args.devkit_meta else table_counts(args.counts or SHIPPED_COUNTS))
        n = write_prompts(counts, args.out)
    except (OSError, ValueError) as e:
        errors.fail(str(e))
    empty = [f for f, c in counts if c == 0]
    print(f"{args.out}: {n} lines, {len(counts)} classes" + (f"; {len(empty)} empty: {empty[:3]}" if empty else ""))
    if len(counts) != 1000:
        print(f"warning: {len(counts)} class folders, LlamaGen's c2i models have 1000 classes", file=sys.stderr)


if __name__ == "__main__":
    main()
