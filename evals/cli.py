"""evaluate.py's body: presets, checks (all before any model is built), the models to compare, the loop, the table."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re

import torch

import evals
from evals import official, runner

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# fields that change what is generated or how it is scored (the output folder's name hashes them)
PINNED = ("benchmark", "prompts", "n", "seed", "cfg_scale", "temperature", "top_k", "top_p", "dtype", "template",
          "detector", "metrics", "eval_size", "ref_stats", "precision_recall",
          "ocr_engine")  # not: batch size, ranks, out, export


def fail(msg: str):
    from common.errors import fail as one_line

    one_line(msg)


def with_preset(args_cls, args):
    """Parse again with the preset's values as defaults, so flags given explicitly still win."""
    from common.cli import parse

    if not args.preset:
        return args
    try:
        values = evals.preset(args.preset)
    except ValueError as e:
        fail(str(e))
    return parse(args_cls, default=dataclasses.replace(args_cls(), **values))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "model"


def models_to_run(args) -> list[tuple[str, str, dict | None, str]]:
    """[(label, base model name, policy state dict or None, where it came from)]: the base model first when a
    checkpoint or export is compared with it."""
    from common.export import base_model_name, read_checkpoint, train_args

    if not args.checkpoint:
        return [(f"base: {args.model}", args.model, None, args.model)]
    step_dir, info, sd = read_checkpoint(args.checkpoint)
    base = args.model or base_model_name(info, step_dir)
    if "seed" in train_args(info):  # a random base ("tiny") is rebuilt as the run built it (load_backend seeds)
        args.build_seed = int(train_args(info)["seed"])
    run = os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(step_dir))))
    trained = (f"{run}/{os.path.basename(step_dir)}", base, sd, step_dir)
    return ([(f"base: {base}", base, None, base)] if args.baseline else []) + [trained]


def main(args) -> dict[str, dict]:
    """-> {model label: summary}. Bad input: one line on stderr, before any image is generated."""
    from common.export import load_trained_policy, policy_mismatch
    from common.models import MODELS
    from common.prompts import load_prompts
    from common.run import check_args

    from common import errors

    errors.install(interrupted="run the same command again to resume: finished images are kept")
    if problem := check_args(args):
        fail(problem)
    try:
        bench = evals.benchmark(args.benchmark)
        for flag, value in (("--n", args.n), ("--batch-size", args.batch_size)):
            if value < 1:
                raise ValueError(f"{flag} {value}: must be >= 1")
        if args.dtype not in DTYPES:
            raise ValueError(f"--dtype {args.dtype!r}: choose {' or '.join(DTYPES)}")
        exports = official.parse(args.export)
        args.prompts = args.prompts or bench.DEFAULT_PROMPTS
        rows = load_prompts(args.prompts)
        bench.check(rows, args)
        args.model = args.model or ("" if args.checkpoint else "toy")
        if args.model and args.model not in MODELS and not os.path.isdir(args.model):
            raise ValueError(f"unknown model {args.model!r}; known: {', '.join(MODELS)} or a weights directory")
        todo = models_to_run(args)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError, OSError) as e:
        fail(str(e).splitlines()[0])

    config = {k: getattr(args, k) for k in PINNED if k != "ocr_engine" or args.benchmark == "ocr"}  # old runs resume
    out_root = args.out or os.path.join("runs", "eval", f"{args.benchmark}-"
                                        f"{hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]}")
    errors.check_writable(out_root, f"--out {out_root}: cannot write there")  # before any model is built
    errors.install(out_root, resume=lambda: "run the same command again to resume",
                   interrupted="run the same command again to resume: finished images are kept")
    rank, world_size, device = _distributed(args.device)
    try:
        scorer = build_scorer(bench, args, device)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError, OSError) as e:
        fail(str(e).splitlines()[0])
    summaries, records = {}, []
    try:  # one backend: the base model's; a checkpoint's policy must fit it before any image is generated
        bk = load_backend(todo[0][1], device, args)
        for _, name, sd, source in todo:
            if sd is not None and (mismatch := policy_mismatch(bk, sd)):
                raise ValueError(f"{source} does not fit base model {name!r}: {mismatch} (was the run trained from "
                                 f"another --model? pass that one with --model)")
        outs = [os.path.join(out_root, _slug(label.removeprefix("base: ") if sd is None else label))
                for label, _, sd, _ in todo]
        for out, (_, name, _, source) in zip(outs, todo):
            runner.check_config(out, {**config, "model": name, "weights": source}, rank)
        if hasattr(scorer, "texts"):
            scorer.texts = bk.reward_prompts
    except (ValueError, FileNotFoundError, ImportError, RuntimeError, OSError) as e:
        fail(str(e).splitlines()[0])
    for out, (label, name, sd, source) in zip(outs, todo):
        if sd is not None:
            load_trained_policy(bk, sd, source, name)
        records, arrays, images, captions = runner.run(
            bk, rows, scorer, out, n=args.n, seed=args.seed, cfg_scale=args.cfg_scale, temperature=args.temperature,
            top_k=args.top_k, top_p=args.top_p, batch_size=args.batch_size, rank=rank, world_size=world_size,
            progress=args.progress, image_dir=os.path.join(out, "images") if args.save_images or exports else "")
        summaries[label] = scorer.summarize(records, arrays)
        if rank == 0:
            with open(os.path.join(out, "summary.json"), "w") as f:
                json.dump(summaries[label], f, indent=1)
            if len(images):
                from common.utils import save_image_grid

                for path in (os.path.join(out, "grid.png"), args.grid):  # this invocation's first images
                    if path:
                        save_image_grid(images, captions, path)
    if rank == 0:
        print(scorer.table(summaries, records))
        print(f"per-image results, summaries and grids: {out_root}")
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    if rank == 0 and exports:  # after the ranks are released: 50,000 PNGs take minutes to pack
        try:
            for out in outs:
                export(exports, out, rows, args.n)
        except (ValueError, OSError) as e:
            fail(str(e).splitlines()[0])
    return summaries


def export(names: list[str], out: str, rows: list[dict], n: int) -> None:
    """Write the official evaluators' inputs from <out>/images and print where they are (docs/evaluation.md)."""
    images = os.path.join(out, "images")
    if "geneval" in names:
        official.write_geneval(images, rows, n)
        print(f"GenEval's layout: {images} (python evaluation/evaluate_images.py {images} --outfile "
              f"{os.path.join(out, 'geneval_results.jsonl')} --model-path <detector folder>)")
    if "adm" in names:
        shape = official.write_adm_npz(images, len(rows), n, os.path.join(out, "samples.npz"))
        print(f"ADM sample batch {tuple(shape)}: {os.path.join(out, 'samples.npz')} (python evaluations/evaluator.py "
              f"VIRTUAL_imagenet256_labeled.npz {os.path.join(out, 'samples.npz')})")


def build_scorer(bench, args, device):
    if bench is evals.benchmark("geneval"):
        return bench.Scorer(args.detector, device)
    if bench is evals.benchmark("ocr"):
        return bench.Scorer(device, args.ocr_engine)
    if bench is evals.benchmark("prefs"):
        return bench.Scorer(args.metrics, device)
    return bench.Scorer(args.ref_stats, args.inception_weights, args.eval_size, args.precision_recall, device)


def load_backend(name: str, device, args):
    from common.models import load_model
    from common.utils import seed_everything

    seed_everything(getattr(args, "build_seed", args.seed))  # a random model ("tiny") is the same on every run
    bk = load_model(name, device, DTYPES[args.dtype], template=args.template)
    if hasattr(bk.policy, "eval"):
        bk.policy.eval()
    return bk


def _distributed(device: str):
    """(rank, world size, device); under torchrun the process group is set up here (gloo on CPU, nccl on CUDA)."""
    import torch.distributed as dist

    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if int(os.environ.get("RANK", -1)) == -1:
        return 0, 1, torch.device("cuda" if use_cuda else "cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", 0))
    if use_cuda:
        torch.cuda.set_device(local)
    return dist.get_rank(), dist.get_world_size(), torch.device(f"cuda:{local}" if use_cuda else "cpu")
