"""Every preset against a table written from the papers and the release scripts (not from the presets).

Per preset: prompts per optimizer step P, group size G, the number of steps, the learning rate the optimizer uses at
step 1, at the middle step ceil(N/2) and at the last step N, and TF32. `_release` presets are the release's training
script; `_paper` presets are the paper's text, which states no LR schedule (constant here) and no TF32 (off). Paths and
line numbers are inside the releases: krennic999/STAGE, zghhui/GCPO (branch master), Kwai-Klear/AR-GRPO.

How the releases' numbers combine (the HF Trainer and TRL conventions they run on):
- STAGE and GCPO-Janus: prompts per step = GPUs x per_device_train_batch_size x gradient_accumulation_steps (their
  trainers count prompts per device and sample `new_generations_image` images of each).
- GCPO LlamaGen and AR-GRPO (newer TRL): per_device_train_batch_size counts completions; the sampler draws
  GPUs x per_device x accumulation // num_generations prompts (GCPO llamaGen/trl/trainer/gcpo_llama_trainer.py
  l.556-567; AR-GRPO modified_grpo_trainer.py l.814).
- No lr_scheduler_type: the Trainer's default, linear from the LR to 0 over max_steps, no warm-up, so step k uses
  LR·(N − k + 1)/N. `cosine_with_min_lr` with warmup_ratio r: W = ceil(r·N) warm-up steps from 0, then half a cosine
  down to min_lr_rate·LR (transformers 4.50, the GCPO LlamaGen release's pin; tests/test_schedule.py).
"""
from __future__ import annotations

import dataclasses
import math

import pytest

from common.experiment import resolved

LINEAR_MID = 801 / 1600  # linear to 0 over 1600 steps: step 800 uses (1600 − 799)/1600
LINEAR_LAST = 1 / 1600  # ... and step 1600 uses 1/1600


def _cosine(i, warmup=188, total=1875, floor=0.1):  # transformers' cosine_with_min_lr at i steps taken
    if i < warmup:
        return i / warmup
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (i - warmup) / (total - warmup)))


# (script, preset): (P, G, steps, LR at step 1, LR at step ceil(N/2), LR at step N, TF32)
TABLE = {
    # STAGE paper App. B.1 / §B: 8 prompts x G 8, lr 5e-6 (GenEval) or 1e-6 (HPS mix, OCR), 1600 steps; the HPS mix
    # uses gradient accumulation 2 (16 prompts per optimizer step).
    ("stage", "geneval_paper"): (8, 8, 1600, 5e-6, 5e-6, 5e-6, False),
    ("stage", "hps_mix_paper"): (16, 8, 1600, 1e-6, 1e-6, 1e-6, False),
    ("stage", "ocr_paper"): (8, 8, 1600, 1e-6, 1e-6, 1e-6, False),
    # STAGE src/scripts/run_training_geneval.py: --nproc_per_node=8 (l.15), per_device_train_batch_size 1 (l.31),
    # gradient_accumulation_steps 1 (l.32), new_generations_image 8 (l.41), max_steps 1600 (l.38), tf32 true (l.47),
    # learning_rate 5e-6 (l.48), no lr_scheduler_type (linear to 0).
    ("stage", "geneval_release"): (8, 8, 1600, 5e-6, 5e-6 * LINEAR_MID, 5e-6 * LINEAR_LAST, True),
    # run_training_hps.py: the same, gradient_accumulation_steps 2 (l.33), tf32 (l.48), learning_rate 1e-6 (l.49)
    ("stage", "hps_mix_release"): (16, 8, 1600, 1e-6, 1e-6 * LINEAR_MID, 1e-6 * LINEAR_LAST, True),
    # run_training_ocr.py: gradient_accumulation_steps 1 (l.32), tf32 (l.48), learning_rate 1e-6 (l.49)
    ("stage", "ocr_release"): (8, 8, 1600, 1e-6, 1e-6 * LINEAR_MID, 1e-6 * LINEAR_LAST, True),
    # GCPO paper App. A.1 (batch size x gradient accumulation x the 4 GPUs of the release scripts), constant LR
    ("gcpo", "llamagen_hps_paper"): (16, 8, 900, 1e-5, 1e-5, 1e-5, False),
    ("gcpo", "janus1b_geneval_paper"): (8, 4, 1600, 3e-6, 3e-6, 3e-6, False),
    ("gcpo", "janus1b_hps_paper"): (8, 4, 1600, 1e-6, 1e-6, 1e-6, False),
    ("gcpo", "janus7b_geneval_paper"): (8, 4, 1600, 3e-6, 3e-6, 3e-6, False),
    ("gcpo", "janus7b_hps_paper"): (16, 8, 1600, 1e-6, 1e-6, 1e-6, False),
    # GCPO janus/src/scripts/run_gcpo_geneval.sh: learning_rate=3e-6 (l.16), --nproc_per_node 4 (l.20),
    # per_device_train_batch_size 2 (l.34), gradient_accumulation_steps 1 (l.35), max_steps 1600 (l.42),
    # new_generations_image 4 (l.45), tf32 true (l.50), no lr_scheduler_type (linear to 0)
    ("gcpo", "janus1b_geneval_release"): (8, 4, 1600, 3e-6, 3e-6 * LINEAR_MID, 3e-6 * LINEAR_LAST, True),
    # run_gcpo_hps.sh: learning_rate=1e-6 (l.16), 4 GPUs (l.21), 2 per device (l.35), accumulation 1 (l.36),
    # max_steps 1600 (l.43), new_generations_image 4 (l.46), tf32 true (l.51)
    ("gcpo", "janus1b_hps_release"): (8, 4, 1600, 1e-6, 1e-6 * LINEAR_MID, 1e-6 * LINEAR_LAST, True),
    # llamaGen/scripts/rl_gcpo_hps.sh: --num_processes 4 (l.18); llamaGen/simpar/configs/config_grpo_hps.yaml:
    # gradient_accumulation_steps 1 (l.22), learning_rate 1e-5 (l.26), lr_scheduler_type cosine_with_min_lr (l.32),
    # min_lr_rate 0.1 (l.34), num_generations 8 (l.40), num_train_epochs 1 (l.41), per_device_train_batch_size 16
    # completions (l.44), warmup_ratio 0.1 (l.61), no tf32; llamaGen/data/train_data.json: 15,000 captions, so
    # 16 x 4 // 8 = 8 prompts per step and 15000 / 8 = 1875 steps, ceil(0.1 x 1875) = 188 warm-up steps.
    ("gcpo", "llamagen_hps_release"): (8, 8, 1875, 0.0, 1e-5 * _cosine(937), 1e-5 * _cosine(1874), False),
    # AR-GRPO paper §4.1: total batch 64 (8 prompts x G 8), lr 1e-5, checkpoints at 100 (c2i) and 300 (t2i) steps
    ("ar_grpo", "c2i_paper"): (8, 8, 100, 1e-5, 1e-5, 1e-5, False),
    ("ar_grpo", "t2i_paper"): (8, 8, 300, 1e-5, 1e-5, 1e-5, False),
    # AR-GRPO run_c2i_train.sh: 4 GPUs (l.1), steps=400 (l.5, --exit_step l.49), num_generations 8 (l.28),
    # learning_rate 1e-5 (l.37), per_device_train_batch_size 8 completions (l.38), num_train_epochs 20 (l.45), no
    # tf32: 8 x 4 // 8 = 4 prompts per step; linear to 0 over 20 epochs of ImageNet's 1,281,167 images at 4 per step.
    ("ar_grpo", "c2i_release"): (4, 8, 400, 1e-5, 1e-5 * (1 - 199 / 6405835), 1e-5 * (1 - 399 / 6405835), False),
    # run_t2i_train.sh: steps=600 (l.5), num_generations 8 (l.28), learning_rate 1e-5 (l.37),
    # per_device_train_batch_size 16 (l.38), num_train_epochs 20 (l.46), no tf32; dataset/coco_captions_30000.json:
    # 16 x 4 // 8 = 8 prompts per step, 20 epochs of 30,000 captions = 75,000 steps of linear decay.
    ("ar_grpo", "t2i_release"): (8, 8, 600, 1e-5, 1e-5 * (1 - 299 / 75000), 1e-5 * (1 - 599 / 75000), False),
}


def _args(script, preset):
    module = __import__(script)
    return dataclasses.replace(module.Args(), **module.PRESETS[preset])


def test_every_preset_has_a_row():
    import ar_grpo
    import gcpo
    import stage

    names = {(m.__name__, p) for m in (stage, gcpo, ar_grpo) for p in m.PRESETS if p != "toy"}
    assert names == set(TABLE)


@pytest.mark.parametrize("script, preset", sorted(TABLE))
def test_preset_matches_its_table(script, preset):
    P, G, steps, lr1, lr_mid, lr_last, tf32 = TABLE[(script, preset)]
    r = resolved(_args(script, preset))
    assert (r["prompts_per_step"], r["group_size"], r["num_steps"], r["tf32"]) == (P, G, steps, tf32)
    got = (r["lr_step1"], r["lr_mid"], r["lr_last"])
    assert got == pytest.approx((lr1, lr_mid, lr_last), rel=1e-9, abs=1e-15), got


def test_the_scripts_scheduler_gives_the_tabled_learning_rates():
    """The LambdaLR the scripts build (common.schedule.lr_factor) steps through the LRs resolved() reports."""
    import torch

    from common.schedule import lr_factor

    args = _args("gcpo", "llamagen_hps_release")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(args.lr_schedule, args.lr_decay_steps or args.num_steps,
                                                             args.lr_warmup_ratio, args.lr_min_ratio))
    used = []
    for _ in range(args.num_steps):
        used.append(opt.param_groups[0]["lr"])  # the LR of this optimizer step
        opt.step()
        sched.step()
    r = resolved(args)
    assert (used[0], used[(args.num_steps + 1) // 2 - 1], used[-1]) == pytest.approx(
        (r["lr_step1"], r["lr_mid"], r["lr_last"]), rel=1e-12, abs=1e-18)
    assert used[188] == pytest.approx(args.lr) and used[187] < args.lr  # the warm-up ends at step 189


@pytest.mark.slow  # a subprocess that imports torch and the script (about 10 s on 2 busy cores)
def test_print_preset_shows_the_resolved_experiment(tmp_path):
    """`--print-preset`: every field with its source, then P x G, the LR at steps 1 / mid / last and TF32; exit 0,
    nothing built, nothing written."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    p = subprocess.run([sys.executable, os.path.join(REPO, "stage.py"), "--preset", "geneval_release", "--lr", "1e-6",
                        "--print-preset"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.splitlines()
    assert any(line.startswith("--lr-schedule") and "'linear'" in line and "(preset)" in line for line in lines)
    assert any(line.startswith("--lr ") and "(command line)" in line for line in lines)
    assert any(line.startswith("--prompts ") and "evaluation_metadata_flow_grpo.json" in line for line in lines)
    assert "prompts x G = 8 x 8 = 64 images" in lines
    assert "LR at step 1 / 800 / 1600: 1e-06 / 5.006e-07 / 6.25e-10" in lines and "TF32: on" in lines
    assert os.listdir(tmp_path) == []  # no run directory


def test_docs_name_presets_that_exist():
    """Every `stage.py / gcpo.py / ar_grpo.py ... --preset NAME` in README.md, docs/ and the scripts' docstrings names
    a preset of that script (the paper presets are NAME_paper since #22), and every `--plan-memory NxGB` there is a
    setup the memory planner reads."""
    import glob
    import os
    import re

    import ar_grpo
    import gcpo
    import stage
    from common.memory import parse_setup

    from conftest import REPO

    presets = {m.__name__: set(m.PRESETS) for m in (stage, gcpo, ar_grpo)}
    command = re.compile(r"\b(stage|gcpo|ar_grpo)\.py\b[^|`\n]*?--preset[ =](\w+)")
    setup = re.compile(r"--plan-memory[ =]([\w.]+)")
    files = [os.path.join(REPO, "README.md"), *sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))]
    files += [os.path.join(REPO, f"{name}.py") for name in presets]
    found, unknown = 0, []
    for path in files:
        for n, line in enumerate(open(path, encoding="utf-8"), 1):
            for script, name in command.findall(line):
                found += 1
                if name not in presets[script] and not name.isupper():  # P, NAME: placeholders
                    unknown.append(f"{os.path.relpath(path, REPO)}:{n}: --preset {name}")
            for value in setup.findall(line):
                try:
                    parse_setup(value)
                except ValueError:
                    if value not in ("NxGB", "NxM"):  # placeholders
                        unknown.append(f"{os.path.relpath(path, REPO)}:{n}: --plan-memory {value}")
    assert found > 20 and not unknown, unknown
