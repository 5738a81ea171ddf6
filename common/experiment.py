"""`--print-preset`: the experiment a command line resolves to, printed before anything is built.

Every Args field with its value and where the value comes from (the preset, the command line, or the script's
default), then what the fields imply and a reader would otherwise compute by hand: prompts and images per optimizer
step, the length of the run and of its LR schedule, the LR at the first, middle and last step, and TF32.
"""
from __future__ import annotations

import dataclasses

from common.schedule import lr_at, warmup_steps


def resolved(args) -> dict:
    """What the Args imply per optimizer step: {prompts_per_step, group_size, images_per_step, num_steps,
    lr_steps1, lr_mid, lr_last, warmup_steps, tf32}; lr_* are the learning rates of steps 1, ceil(N/2) and N."""
    total = args.lr_decay_steps or args.num_steps
    sched = (args.lr_schedule, total, args.lr_warmup_ratio, args.lr_min_ratio)
    n = args.num_steps
    return {"prompts_per_step": args.prompts_per_step, "group_size": args.group_size,
            "images_per_step": args.prompts_per_step * args.group_size, "num_steps": n,
            "lr_step1": lr_at(1, args.lr, *sched), "lr_mid": lr_at((n + 1) // 2, args.lr, *sched),
            "lr_last": lr_at(n, args.lr, *sched), "warmup_steps": warmup_steps(total, args.lr_warmup_ratio),
            "tf32": args.tf32}


def describe(args, preset: dict, explicit: set[str]) -> str:
    """The resolved experiment as text: one `--flag value  (source)` line per field, then resolved(args).
    preset: the preset's values; explicit: the fields given on the command line."""
    default = type(args)()
    lines = [f"# {type(args).__module__}.py --preset {getattr(args, 'preset', 'toy')}: the resolved experiment"]
    for f in dataclasses.fields(args):
        value = getattr(args, f.name)
        source = ("command line" if f.name in explicit else "preset" if f.name in preset
                  else "default" if value == getattr(default, f.name) else "")
        lines.append(f"--{f.name.replace('_', '-'):28s} {value!r:40s} ({source})")
    r = resolved(args)
    total = args.lr_decay_steps or args.num_steps
    lines += [
        "# per optimizer step",
        f"prompts x G = {r['prompts_per_step']} x {r['group_size']} = {r['images_per_step']} images",
        f"steps: {r['num_steps']}; LR schedule: {args.lr_schedule} over {total} steps, warm-up {r['warmup_steps']}",
        f"LR at step 1 / {(r['num_steps'] + 1) // 2} / {r['num_steps']}: "
        f"{r['lr_step1']:.4g} / {r['lr_mid']:.4g} / {r['lr_last']:.4g}",
        f"TF32: {'on' if r['tf32'] else 'off'}",
    ]
    return "\n".join(lines)


def explicit_fields(args_cls, argv: list[str]) -> set[str]:
    """The Args fields a command line names (`--foo-bar v`, `--foo-bar=v`, `--no-foo`)."""
    names = {f.name for f in dataclasses.fields(args_cls)}
    found = set()
    for tok in argv:
        if tok.startswith("--"):
            name = tok[2:].split("=")[0].replace("-", "_")
            found.add(name if name in names else name[3:])  # --no-foo -> foo
    return found & names
