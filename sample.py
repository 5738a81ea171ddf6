"""Look at what a model draws for your own prompts: PNGs plus one captioned grid, on the CPU or a GPU.

    python sample.py --prompt "a photo of a red circle"                       # the toy base model, 8 images
    python sample.py --checkpoint runs/grpo_vanilla_s0 --prompt "a photo of two blue squares" -n 8
    python sample.py --checkpoint runs/grpo_vanilla_s0 --prompts data/shapeworld/eval.jsonl --max-prompts 4
    python sample.py --model janus-pro-7b --device cuda --dtype bfloat16 --cfg-scale 5 --prompt "a cat on a sofa"

Any model the scripts train: a backend name (toy, tiny, llamagen-*, janus-pro-*), an exported directory, or a run's
checkpoint (--checkpoint: a run directory, its checkpoints/ or one checkpoints/step_* directory; its base model and
sampling settings are the run's unless given here). Image j of prompt p depends only on --seed, p and j (not on the
batch size or the device count), so the same command draws the same images again. Outputs go to --out (default
samples/<model>_s<seed>): p<prompt>_<image>.png, grid.png (every image captioned with its whole prompt) and
samples.jsonl (prompt, file and settings of every image). An --out that already holds samples is refused unless
--overwrite.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Annotated, Literal

import torch
import tyro


@dataclass
class Args:
    prompt: tuple[str, ...] = ()
    """one or more prompts (class ids such as "207" for class-conditional LlamaGen)"""
    prompts: str = ""
    """a prompt file (.txt, one per line; .jsonl/.json GenEval metadata) whose prompts follow --prompt's"""
    max_prompts: int = 0
    """use only the first K prompts of --prompts (0 = all)"""
    checkpoint: str = ""
    """a run directory, its checkpoints/ or one checkpoints/step_* directory ('' = --model's own weights)"""
    model: str = ""
    """backend name or weights/export directory ('' = the checkpoint's base model, or toy)"""
    n: Annotated[int, tyro.conf.arg(aliases=("-n",))] = 8
    """images per prompt"""
    seed: int = 0
    """seed of the sampling noise: image j of prompt p is the same for any batch size"""
    cfg_scale: float | None = None
    """classifier-free guidance scale (default: the checkpoint run's, else 3.0)"""
    temperature: float | None = None
    """sampling temperature (default: the checkpoint run's, else 1.0)"""
    top_k: int | None = None
    """keep the k most likely tokens (default: the checkpoint run's, else 0 = all)"""
    top_p: float | None = None
    """nucleus threshold (default: the checkpoint run's, else 1.0 = off)"""
    template: str = "train"
    """Janus-Pro prompt template (common/janus.py TEMPLATES)"""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """model dtype"""
    device: str = "auto"
    """'auto' (cuda if available, else cpu), 'cpu' or 'cuda'"""
    batch_size: int = 32
    """images sampled at once (does not change the images)"""
    out: str = ""
    """output folder ('' = samples/<model>_s<seed>)"""
    overwrite: bool = False
    """replace the samples of an --out that already holds some"""


SAMPLING_DEFAULTS = {"cfg_scale": 3.0, "temperature": 1.0, "top_k": 0, "top_p": 1.0}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(os.path.normpath(text))).strip("_") or "model"


def main(args: Args) -> str:
    """Sample and write the outputs; -> the output folder. Bad input: one line on stderr, exit status 1."""
    from common.export import base_model_name, load_trained_policy, read_checkpoint, train_args
    from common.models import MODELS, load_model
    from common.prompts import load_prompts
    from common.run import check_args, fail
    from common.sampling import sample
    from common.utils import save_image_grid, seed_everything, write_atomic
    from evals.runner import row_noise

    # everything that can be wrong with the command line, before a model is built
    texts = list(args.prompt)
    try:
        if args.prompts:
            texts += [m["prompt"] for m in load_prompts(args.prompts)][: args.max_prompts or None]
        if not texts:
            raise ValueError("no prompt: give --prompt TEXT [TEXT ...] or --prompts FILE")
        if args.n < 1 or args.batch_size < 1 or args.max_prompts < 0:
            raise ValueError(f"-n {args.n}, --batch-size {args.batch_size}: must be >= 1 (--max-prompts >= 0)")
        sd, run_args, source = None, {}, args.model or "toy"
        if args.checkpoint:
            step_dir, info, sd = read_checkpoint(args.checkpoint)
            run_args, source = train_args(info), step_dir
            args.model = args.model or base_model_name(info, step_dir)
        args.model = args.model or "toy"
        if args.model not in MODELS and not os.path.isdir(args.model):
            raise ValueError(f"--model {args.model!r}: unknown; known: {', '.join(MODELS)} or a weights directory")
        kw = {k: getattr(args, k) if getattr(args, k) is not None else run_args.get(k, d)
              for k, d in SAMPLING_DEFAULTS.items()}
        if problem := check_args(SimpleNamespace(device=args.device, **kw)):
            raise ValueError(problem)
        run_name = (os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(source)))) + "-" +
                    os.path.basename(source)) if sd is not None else _slug(args.model)
        out = args.out or os.path.join("samples", f"{run_name}_s{args.seed}")
        if os.path.isfile(os.path.join(out, "samples.jsonl")) and not args.overwrite:
            raise ValueError(f"--out {out} already holds samples: choose another --out, or pass --overwrite")
        os.makedirs(out, exist_ok=True)
    except (ValueError, FileNotFoundError, OSError) as e:
        fail(str(e).splitlines()[0])

    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    try:
        # the scripts seed right before load_model: a random "tiny" base is rebuilt as the run (or --seed 0) built it
        seed_everything(int(run_args.get("seed", 0)))
        bk = load_model(args.model, device, dtype, template=args.template)
        if sd is not None:
            load_trained_policy(bk, sd, source, args.model)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError, OSError) as e:
        fail(str(e).splitlines()[0])
    bk.policy.eval()

    # image k = prompt k // n, image k % n: its noise is row k of one seeded (rows, T) draw, so batches don't matter
    rows = [(p, j) for p in range(len(texts)) for j in range(args.n)]
    noise = row_noise(args.seed, len(rows), bk.num_tokens)
    images = []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        for i in range(0, len(rows), args.batch_size):
            idx = list(range(i, min(i + args.batch_size, len(rows))))
            cond = bk.cond([texts[rows[k][0]] for k in idx])
            tokens, _, _ = sample(bk.policy, cond, bk.uncond(cond), bk.num_tokens, noise=noise[idx].to(device), **kw)
            images.append(bk.decode(tokens).float().cpu())
    images = torch.cat(images)

    from PIL import Image

    u8 = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    records = []
    for k, (p, j) in enumerate(rows):
        name = f"p{p:03d}_{j:02d}.png"
        write_atomic(os.path.join(out, name), lambda path, a=u8[k]: Image.fromarray(a).save(path, format="PNG"))
        records.append({"file": name, "prompt": texts[p], "prompt_index": p, "image_index": j})
    save_image_grid(images, [texts[p] for p, _ in rows], os.path.join(out, "grid.png"), ncol=args.n)
    settings = {"model": args.model, "checkpoint": source if sd is not None else "", "seed": args.seed,
                "dtype": args.dtype, "template": args.template, **kw}

    def write_index(path):
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps({**r, **settings}) + "\n" for r in records)

    write_atomic(os.path.join(out, "samples.jsonl"), write_index)  # last: its presence marks a complete folder
    print(f"{len(rows)} images of {len(texts)} prompt(s) from {source}: {out}/grid.png")
    return out


if __name__ == "__main__":
    from common.cli import parse

    main(parse(Args))
