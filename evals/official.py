"""Hand the samples to the official evaluators (evaluate.py --export): GenEval's own scorer and OpenAI's FID suite.

Both read the PNGs the loop saves as it goes (`<out>/<model>/images/<prompt:05>/samples/<image:04>.png`, 8-bit by
truncating x * 255, as the releases save their samples: AR-GRPO's test.py `mul_(255)` then `astype(uint8)`, Janus's
float-to-uint8 cast), so an interrupted evaluation resumes and any number of ranks can write them.

- "geneval": GenEval's `<IMAGE_FOLDER>` layout (djghosh13/geneval README, read by its
  `evaluation/evaluate_images.py`): one folder per prompt named by its 5-digit index, holding `metadata.jsonl`, the
  prompt's line of `evaluation_metadata.jsonl` as one JSON object, and `samples/` with the images (`<j:04>.png`).
  The folder is `<out>/<model>/images/`.
- "adm": `<out>/<model>/samples.npz`, one array `arr_0` of uint8 (N, H, W, 3) at the model's native resolution in
  row order (prompt-major), the sample batch of OpenAI's evaluator (openai/guided-diffusion
  `evaluations/evaluator.py`; AR-GRPO's `fid_evaluation.py` is a copy). It is written image by image into the
  zip member (no 50,000-image array in memory), as a .npy the evaluator streams (`read_magic`, header 1.0).
"""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np

EXPORTS = ("geneval", "adm")


def parse(spec: str) -> list[str]:
    """'geneval,adm' -> ['geneval', 'adm'], or ValueError naming --export."""
    names = [s for s in spec.split(",") if s]
    bad = [s for s in names if s not in EXPORTS]
    if bad:
        raise ValueError(f"--export {spec!r}: choose from {', '.join(EXPORTS)} (comma-separated)")
    return names


def png_path(image_dir: str, p: int, j: int) -> str:
    return os.path.join(image_dir, f"{p:05d}", "samples", f"{j:04d}.png")


def missing_pngs(image_dir: str, n_prompts: int, n: int) -> list[tuple[int, int]]:
    return [(p, j) for p in range(n_prompts) for j in range(n) if not os.path.isfile(png_path(image_dir, p, j))]


def _check_complete(image_dir: str, n_prompts: int, n: int) -> None:
    missing = missing_pngs(image_dir, n_prompts, n)
    if missing:
        p, j = missing[0]
        raise ValueError(f"{len(missing)} of {n_prompts * n} images have no PNG under {image_dir} (first: prompt {p}, "
                         f"image {j}): they were scored by a run without --save-images or --export; evaluate into "
                         f"another --out to export them")


def write_geneval(image_dir: str, prompts: list[dict], n: int) -> str:
    """metadata.jsonl beside each prompt's samples/ -> the folder to pass to GenEval's evaluate_images.py."""
    _check_complete(image_dir, len(prompts), n)
    for p, row in enumerate(prompts):
        path = os.path.join(image_dir, f"{p:05d}", "metadata.jsonl")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(dict(row), f)
        os.replace(path + ".tmp", path)
    return image_dir


def write_adm_npz(image_dir: str, n_prompts: int, n: int, path: str) -> tuple[int, ...]:
    """Every PNG, in row order, as arr_0 (N, H, W, 3) uint8 of `path`; -> the array's shape."""
    from PIL import Image

    _check_complete(image_dir, n_prompts, n)
    with Image.open(png_path(image_dir, 0, 0)) as im:
        h, w = im.height, im.width
    shape = (n_prompts * n, h, w, 3)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape}
    tmp = path + ".tmp"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("arr_0.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, header)
            for p in range(n_prompts):
                for j in range(n):
                    with Image.open(png_path(image_dir, p, j)) as im:
                        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
                    if arr.shape != (h, w, 3):
                        raise ValueError(f"{png_path(image_dir, p, j)} is {arr.shape[1]}x{arr.shape[0]}, the first "
                                         f"image {w}x{h}: one .npz holds images of one size")
                    f.write(arr.tobytes())
    os.replace(tmp, path)
    return shape
