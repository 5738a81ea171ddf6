"""The evaluation loop every benchmark shares: sharding over ranks, resumption, per-image JSONL, seeds.

Rows: the benchmark's prompts, each repeated `n` times: row k = prompt k // n, image k % n (GenEval's
`<prompt>/<image>` layout). The sampler's uniforms for row k are row k of torch.rand(N, T) drawn from a generator
seeded with `seed` (N = prompts x n, T = tokens per image: the draw common/evaluation.geneval_eval has always made),
so an image depends only on (seed, prompt index, image index, n), never on the number of ranks, the batch it is in
or whether the run was interrupted.

Rank r takes rows r, r + W, ... of those not yet done. Every scored batch is appended at once to
`<out>/results.rank<r>.jsonl` (one record per image: id, prompt index, image index, prompt, the benchmark's fields)
and, for benchmarks that keep per-image arrays (Inception features), to `<out>/arrays/rank<r>-<first id>.npz`,
written before the JSONL lines: an image counts as done once its record is in a JSONL file. A re-run with the same
--out reads every results*.jsonl there and only generates what is missing, whatever the number of ranks before.
`<out>/config.json` pins the settings: resuming with other ones is refused in one line.
"""
from __future__ import annotations

import glob
import json
import os

import numpy as np
import torch
from tqdm import tqdm

from common.sampling import sample
from common.utils import make_generator


def row_noise(seed: int, n_rows: int, num_tokens: int) -> torch.Tensor:
    """(n_rows, T) uniforms; row k feeds image k (prompt k // n, image k % n)."""
    return torch.rand(n_rows, num_tokens, generator=make_generator(seed))


def read_done(out: str) -> dict[int, dict]:
    """Every complete record under `out` (results*.jsonl of any rank), by id. A torn last line (a killed process)
    is ignored: that image is generated again."""
    done = {}
    for path in sorted(glob.glob(os.path.join(out, "results*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                done[int(rec["id"])] = rec
    return done


def read_arrays(out: str, ids: set[int]) -> dict[str, dict[int, np.ndarray]]:
    """{array name: {id: vector}} for the done ids, from every arrays/*.npz under `out`."""
    arrays: dict[str, dict[int, np.ndarray]] = {}
    for path in sorted(glob.glob(os.path.join(out, "arrays", "*.npz"))):
        with np.load(path) as z:
            keep = [(i, int(k)) for i, k in enumerate(z["ids"]) if int(k) in ids]
            for name in z.files:
                if name != "ids":
                    arrays.setdefault(name, {}).update({k: z[name][i] for i, k in keep})
    return arrays


def check_config(out: str, config: dict, rank: int = 0) -> None:
    """Write <out>/config.json, or check that the one there asks for the same evaluation (ValueError otherwise)."""
    path = os.path.join(out, "config.json")
    config = json.loads(json.dumps(config, default=str))
    if os.path.isfile(path):
        with open(path) as f:
            saved = json.load(f)
        for k in sorted(set(saved) | set(config)):
            if saved.get(k) != config.get(k):
                raise ValueError(f"--out {out} holds an evaluation with {k} = {saved.get(k)!r}, this one asks for "
                                 f"{config.get(k)!r}: use the same settings to resume it, or another --out")
    elif rank == 0:
        os.makedirs(out, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(config, f, indent=1)
        os.replace(tmp, path)


@torch.no_grad()
def run(bk, prompts: list[dict], scorer, out: str, *, n: int, seed: int, cfg_scale: float = 1.0,
        temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, batch_size: int = 64, rank: int = 0,
        world_size: int = 1, progress: bool = True, keep_images: int = 64, image_dir: str = ""):
    """Sample the rows of `prompts` x n not yet in `out`, score them with `scorer.score(images, rows)` ->
    (records, arrays or None) and append them. Collective under torch.distributed (call on every rank).
    -> (records of every row sorted by id, {array name: (N, D) stacked by id}, images kept, captions) on every rank;
    the images are this invocation's first `keep_images` of this rank (for the grid)."""
    import torch.distributed as dist

    rows = [(p, j) for p in range(len(prompts)) for j in range(n)]
    done = read_done(out)
    todo = [k for k in range(len(rows)) if k not in done]
    if world_size > 1 and dist.is_initialized():
        dist.barrier()  # every rank has read the same done set before any rank appends to it
    mine = todo[rank::world_size]
    noise = row_noise(seed, len(rows), bk.num_tokens) if mine else None
    os.makedirs(out, exist_ok=True)
    new, kept, captions = [], [], []
    bar = tqdm(total=len(todo), disable=not progress or rank != 0, desc=os.path.basename(out.rstrip("/")),
               initial=0, unit="img")
    path = os.path.join(out, f"results.rank{rank}.jsonl")
    if os.path.isfile(path) and os.path.getsize(path):  # a killed run may have torn the last line: end it
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
        if torn:
            with open(path, "a", encoding="utf-8") as f:
                f.write("\n")
    with open(path, "a", encoding="utf-8") as log:
        for i in range(0, len(mine), batch_size):
            idx = mine[i : i + batch_size]
            metas = [prompts[rows[k][0]] for k in idx]
            cond = bk.cond([m["prompt"] for m in metas])
            tokens, _, _ = sample(bk.policy, cond, bk.uncond(cond), bk.num_tokens, cfg_scale, temperature, top_k,
                                  top_p, noise=noise[idx])
            images = bk.decode(tokens).float()
            records, arrays = scorer.score(images, metas)
            if image_dir:
                _save_pngs(images, [rows[k] for k in idx], image_dir)
            if arrays:
                os.makedirs(os.path.join(out, "arrays"), exist_ok=True)
                path = os.path.join(out, "arrays", f"rank{rank}-{idx[0]:08d}.npz")
                with open(path + ".tmp", "wb") as f:
                    np.savez(f, ids=np.asarray(idx), **{k: np.asarray(v) for k, v in arrays.items()})
                os.replace(path + ".tmp", path)
            for k, rec in zip(idx, records):
                p, j = rows[k]
                rec = {"id": k, "prompt_index": p, "image_index": j, "prompt": prompts[p]["prompt"], **rec}
                log.write(json.dumps(rec) + "\n")
                new.append(rec)
            log.flush()
            os.fsync(log.fileno())
            if len(kept) < keep_images:
                kept.append(images[: keep_images - len(kept)].cpu())
                captions += [scorer.caption(r) for r in new[-len(idx):]][: keep_images - len(captions)]
            bar.update(len(idx) * world_size)
    bar.close()
    if world_size > 1 and dist.is_initialized():
        dist.barrier()  # every rank's records and arrays are on disk
    records = read_done(out)
    missing = [k for k in range(len(rows)) if k not in records]
    if missing:
        raise RuntimeError(f"{len(missing)} rows missing from {out} after the evaluation (first id {missing[0]}): "
                           f"is --out on a filesystem every rank shares?")
    records = [records[k] for k in range(len(rows))]
    arrays = read_arrays(out, set(range(len(rows))))
    stacked = {name: np.stack([vals[k] for k in range(len(rows))]) for name, vals in arrays.items()}
    images = torch.cat(kept) if kept else torch.zeros(0, 3, 1, 1)
    return records, stacked, images, captions


def _save_pngs(images: torch.Tensor, rows: list[tuple[int, int]], image_dir: str) -> None:
    """GenEval's layout: <image_dir>/<prompt index:05>/samples/<image index:04>.png, 8 bits by truncating x * 255
    as the releases save their samples (evals/official.py)."""
    from PIL import Image

    from evals.official import png_path

    u8 = (images.float().clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # the cast truncates
    for im, (p, j) in zip(u8, rows):
        path = png_path(image_dir, p, j)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(im).save(path + ".tmp", format="PNG")
        os.replace(path + ".tmp", path)


def mean_stderr(values) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std / sqrt(n); 0 for a single value)."""
    x = np.asarray(list(values), dtype=np.float64)
    if len(x) == 0:
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0
