"""Seeding, image grids, metrics logging and safetensors I/O. All files are written atomically."""
from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = True):
    """Seed python, numpy and torch (every rank with the same seed, so initialisations agree)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = deterministic


def make_generator(seed: int, device="cpu") -> torch.Generator:
    """An explicit generator seeded with `seed` (rollout_noise makes one per (seed, step, global group index), so
    rollouts depend on neither the rank nor the number of ranks)."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def rollout_noise(seed: int, step: int, group_ids: list[int], group_size: int, num_tokens: int) -> torch.Tensor:
    """Uniform noise (len(group_ids) * group_size, num_tokens) for the sampler, seeded per
    (seed, step, global group index): every group gets its own stream, different on every rank, and a
    run gives the same rollouts whatever the number of ranks."""
    rows = []
    for k in group_ids:
        g = make_generator(seed * 1_000_003 + step * 10_007 + k)
        rows.append(torch.rand(group_size, num_tokens, generator=g))
    return torch.cat(rows)


def write_atomic(path: str, write):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    write(tmp)
    os.replace(tmp, path)


def _inside(path: str, root: str) -> bool:
    path, root = os.path.realpath(path), os.path.realpath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def check_out_dir(out: str, force: bool = False, protected: tuple[str, ...] = ()):
    """Refuse an output folder that is a file, a non-empty directory (unless force), or holds one of `protected`
    (the inputs being read). Raises ValueError with the one line the user sees."""
    for p in protected:
        if p and os.path.exists(p) and _inside(p, out):
            raise ValueError(f"--out {out} holds {p}, which is being read: choose another --out")
    if os.path.lexists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} exists and is not a directory")
    if os.path.isdir(out) and os.listdir(out) and not force:
        raise ValueError(f"--out {out} exists and is not empty: choose another directory, or pass --force to "
                         f"replace it")


@contextlib.contextmanager
def atomic_dir(out: str, still_free=lambda: None):
    """Write a directory atomically: yields a fresh temporary sibling of `out` to fill; when the body returns,
    `still_free()` runs (it raises if `out` was taken meanwhile), and the temporary directory replaces `out` (an
    existing `out` is moved aside first and removed after). On any error nothing of the temporary remains and `out`
    is untouched."""
    out = out.rstrip(os.sep) or out
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(out)}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
        still_free()
        old = None
        if os.path.isdir(out):
            old = f"{out}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_safetensors(state_dict: dict, path: str, metadata: dict | None = None):
    from safetensors.torch import save_file

    sd = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    write_atomic(path, lambda p: save_file(sd, p, metadata=metadata))


def load_safetensors(path: str, device="cpu") -> dict:
    from safetensors.torch import load_file

    if not os.path.exists(path):
        raise FileNotFoundError(f"missing weights file {path}")
    try:
        return load_file(path, device=str(device))
    except Exception as e:  # safetensors' own error type: a truncated or corrupted file
        raise ValueError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0] if str(e) else e!r})") \
            from None


def unwrap_state_dict(obj, keys=("model", "module", "state_dict", "params")) -> dict | None:
    """The tensors of a loaded checkpoint: the dict under the first of `keys` present, else `obj` itself when
    it is a dict of tensors; None when there is none."""
    if isinstance(obj, dict):
        for key in keys:
            if isinstance(obj.get(key), dict):
                return obj[key]
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    return None


def state_dict_mismatch(expected: dict, sd: dict, optional: tuple[str, ...] = ()) -> str:
    """'' when `sd` has every key of `expected` (a key containing one of `optional` may be absent), no other
    key and the same shapes; otherwise one line naming a few missing / unexpected / wrongly shaped keys."""
    def few(ks, n=4):
        return ", ".join(ks[:n]) + (f", ... (+{len(ks) - n} more)" if len(ks) > n else "")

    missing = sorted(k for k in expected if k not in sd and not any(o in k for o in optional))
    unexpected = sorted(k for k in sd if k not in expected)
    wrong = [f"{k} {tuple(sd[k].shape)} vs {tuple(expected[k].shape)}" for k in sorted(set(sd) & set(expected))
             if tuple(sd[k].shape) != tuple(expected[k].shape)]
    return "; ".join(f"{name} {len(ks)}: {few(ks)}" for name, ks in
                     (("missing", missing), ("unexpected", unexpected), ("wrong shape (file vs model)", wrong)) if ks)


def grid_image(images: torch.Tensor, captions: list[str], ncol: int = 8, scale: int = 2):
    """images (N, 3, H, W) in [0, 1] -> a PIL image: the images in rows of `ncol`, each with its whole caption
    wrapped under it (tiles at least 128 px wide, so a line holds about 20 characters)."""
    import textwrap

    from PIL import Image, ImageDraw
    N, _, H, W = images.shape
    ncol = max(1, min(ncol, N))
    nrow = (N + ncol - 1) // ncol
    scale = max(scale, -(-128 // W))
    w, h, line_h = W * scale, H * scale, 11
    width = max(1, (w - 4) // 6)  # PIL's default bitmap font: 6 px a character
    lines = [textwrap.wrap(captions[i] if i < len(captions) else "", width, break_long_words=True) for i in range(N)]
    cap = 4 + line_h * max([len(ls) for ls in lines] + [1])
    canvas = Image.new("RGB", (ncol * w, nrow * (h + cap)), "white")
    draw = ImageDraw.Draw(canvas)
    arr = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    for i in range(N):
        r, c = divmod(i, ncol)
        tile = Image.fromarray(arr[i]).resize((w, h), Image.NEAREST)
        canvas.paste(tile, (c * w, r * (h + cap)))
        for j, line in enumerate(lines[i]):
            draw.text((c * w + 2, r * (h + cap) + h + 2 + j * line_h), line, fill="black")
    return canvas


def save_image_grid(images: torch.Tensor, captions: list[str], path: str, ncol: int = 8, scale: int = 2):
    """images (N, 3, H, W) in [0, 1] -> one PNG (`grid_image`): every caption whole, wrapped under its image."""
    canvas = grid_image(images, captions, ncol, scale)
    write_atomic(path, lambda p: canvas.save(p, format="PNG"))
    return canvas


def import_wandb():
    """wandb, imported only for --track; an ImportError in one line when it is not installed."""
    try:
        import wandb
    except ImportError:
        raise ImportError("--track logs to Weights & Biases, which is not installed: pip install wandb "
                          "(WANDB_MODE=offline logs without an account)") from None
    return wandb


class Logger:
    """Metrics to <out_dir>/metrics.jsonl (always), TensorBoard (when installed) and Weights & Biases (when
    wandb_project is given: the scripts' --track; WANDB_MODE=offline works offline), as CleanRL does. Master rank
    only. resume_step > 0: a resumed run; rows after that step (logged by the interrupted run after its last
    checkpoint) are dropped first, so the file holds each step once. The W&B run id is kept in <out_dir>/wandb_id,
    so a resumed run continues the same W&B run (which ignores the steps it already has)."""

    def __init__(self, out_dir: str, config: dict, enabled: bool = True, resume_step: int = 0,
                 wandb_project: str | None = None):
        self.enabled = enabled
        self.writer = self.wandb = None
        if not enabled:
            return
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, "metrics.jsonl")
        if resume_step > 0 and os.path.isfile(path):
            with open(path) as f:
                kept = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= resume_step]

            def write(tmp):
                with open(tmp, "w") as f:
                    f.writelines(kept)

            write_atomic(path, write)
        self.file = open(path, "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(out_dir)
            rows = "\n".join(f"|{k}|{v}|" for k, v in config.items())
            self.writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{rows}")
        except ImportError:
            pass
        if wandb_project is not None:
            wandb = import_wandb()
            id_path = os.path.join(out_dir, "wandb_id")
            if not os.path.isfile(id_path):

                def write_id(tmp):
                    with open(tmp, "w") as f:
                        f.write(secrets.token_hex(4) + "\n")

                write_atomic(id_path, write_id)
            with open(id_path) as f:
                run_id = f.read().strip()
            self.wandb = wandb.init(project=wandb_project, name=os.path.basename(os.path.normpath(out_dir)),
                                    config=config, dir=out_dir, id=run_id, resume="allow")

    def log(self, step: int, metrics: dict):
        if not self.enabled:
            return
        self.file.write(json.dumps({"step": step, **metrics}) + "\n")
        self.file.flush()
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def log_image(self, step: int, tag: str, image, caption: str = ""):
        """A PIL image (a captioned grid) beside the curves: TensorBoard's `add_image` and W&B's `wandb.Image`
        (the PNG files themselves are written by the caller)."""
        if not self.enabled:
            return
        if self.writer is not None:
            import numpy as np

            self.writer.add_image(tag, np.asarray(image.convert("RGB")), step, dataformats="HWC")
            if caption:
                self.writer.add_text(f"{tag}/caption", caption, step)
        if self.wandb is not None:
            import wandb

            self.wandb.log({tag: wandb.Image(image, caption=caption or None)}, step=step)

    def close(self):
        if self.enabled:
            self.file.close()
            if self.writer is not None:
                self.writer.close()
            if self.wandb is not None:
                self.wandb.finish()
