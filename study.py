"""The four algorithms side by side on the toy: a grid of (configuration, seed) runs, then a table and plots.

    python study.py --study standard              # runs what is missing (one thread per run), then the report
    python study.py --study stress --jobs 2       # at most 2 runs at a time (default: the number of cores)
    python study.py --study standard --report-only  # the report from the runs already there
    python study.py --help                        # the studies

Every run is an ordinary command, `python <script> <flags> --seed S --exp-name <config> --out-dir <runs>/<study>`,
with OMP_NUM_THREADS=1, so the study is as reproducible as its runs (RL on the toy is chaotic: the same seed gives
different figures on another CPU or thread count; compare seeds, not single runs). A finished run (its newest
checkpoint completed the last step) is skipped; one stopped by a signal (it saves and exits 0, as schedulers expect)
is reported as interrupted, and the next call continues it from its newest checkpoint (--resume). A run that fails
is named in one line at the end, after the report of the finished ones (exit status 1). The report goes to
docs/results/<study>/: README.md (the table: held-out strict GenEval before, after and at its peak, per tag, the
toy's image quality before and after, KL and entropy over the last 25 steps, wall time and step time; mean ±
standard error over seeds with n), curves.png (training reward, KL, entropy, the held-out score and image quality
over steps: mean and a band of ± one standard error over seeds) and grids.png (seed 0's held-out grids before and
after, one row per configuration).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from common import errors, rundir
from common.cli import parse
from common.errors import fail
from common.geneval import TAGS


@dataclass(frozen=True)
class Study:
    configs: dict[str, list[str]]  # name -> command line (script and flags)
    seeds: int  # seeds 0 .. seeds-1
    doc: str


EVAL = ["--eval-every", "25", "--image-every", "0"]  # held-out strict GenEval every 25 steps (8 samples per prompt)
# Stress: 3x the steps, 4x the learning rate, a tenth of the KL (STAGE's Fig. 1a regime: large LR, weak KL).
STRESS = ["--num-steps", "300", "--lr", "2e-4", "--beta", "0.001", "--eval-every", "25", "--image-every", "0"]
STUDIES: dict[str, Study] = {
    "standard": Study(
        {"grpo_vanilla": ["grpo_vanilla.py", *EVAL],
         "stage": ["stage.py", *EVAL],
         "stage_release": ["stage.py", "--release-mask-normalisation", "--release-entropy-centring", *EVAL],
         "gcpo": ["gcpo.py", *EVAL],
         "gcpo_attached": ["gcpo.py", "--no-detach-weight", *EVAL],
         "ar_grpo": ["ar_grpo.py", *EVAL]},
        seeds=5, doc="the four scripts at their defaults (100 steps, lr 5e-5), STAGE's release flags, and GCPO with "
                     "its weight not detached"),
    "stress": Study(
        {"grpo_vanilla": ["grpo_vanilla.py", *STRESS],
         "stage": ["stage.py", *STRESS],
         "stage_release": ["stage.py", "--release-mask-normalisation", "--release-entropy-centring", *STRESS],
         # Table 4's ablations (docs/stage.md); its "w/o Ent (Baseline)" row is grpo_vanilla above
         "stage_wo_reweight": ["stage.py", "--no-reweight", "--no-kl-reweight", *STRESS],
         "stage_wo_kl": ["stage.py", "--no-reweight", "--no-kl-reweight", "--wo-kl", *STRESS],
         "stage_wo_ent_kl": ["stage.py", "--no-reweight", "--no-kl-reweight", "--no-entropy-reward", "--wo-kl",
                             *STRESS],
         "gcpo": ["gcpo.py", *STRESS],
         "ar_grpo": ["ar_grpo.py", *STRESS]},
        seeds=3, doc="long runs with a large learning rate and weak KL (300 steps, lr 2e-4, beta 0.001): vanilla, "
                     "STAGE (paper, release flags, Table 4's ablations), GCPO and AR-GRPO"),
    "search": Study(  # issue #17's question: do other defaults raise the main job's held-out score by >= 0.20?
        {"grpo_vanilla_lr1e-4": ["grpo_vanilla.py", "--lr", "1e-4", "--num-steps", "150", *EVAL],
         "grpo_vanilla_200steps": ["grpo_vanilla.py", "--num-steps", "200", *EVAL],
         "grpo_vanilla_300steps": ["grpo_vanilla.py", "--num-steps", "300", *EVAL]},
        seeds=3, doc="other defaults for the main job: twice the learning rate (150 steps), or two and three times the "
                     "steps at the default learning rate (the held-out score every 25 steps gives every shorter budget "
                     "too)"),
    "lora": Study(  # issue #26: LoRA GRPO learns; compare with the standard study's grpo_vanilla (the same seeds)
        # vanilla GRPO training LoRA adapters only (r = 8, α = 32) at four times the learning rate; π_ref = adapters off
        {"lora": ["grpo_vanilla.py", "--lora-rank", "8", "--lr", "2e-4", *EVAL]},
        seeds=5, doc="vanilla GRPO with LoRA (rank 8, alpha 32, lr 2e-4; 100 steps), beside the standard study's full "
                     "fine-tuning"),
    "tiny": Study(  # the test's study: two runs of two steps on the tiny random model
        {"grpo_vanilla": ["grpo_vanilla.py", "--model", "tiny", "--num-steps", "2", "--prompts-per-step", "2",
                          "--group-size", "2", "--eval-every", "1", "--eval-samples", "1", "--image-every", "0"],
         "stage": ["stage.py", "--model", "tiny", "--num-steps", "2", "--prompts-per-step", "2", "--group-size", "2",
                   "--eval-every", "1", "--eval-samples", "1", "--image-every", "0"]},
        seeds=1, doc="a smoke test: two runs of two steps on the tiny random model"),
}


@dataclass
class Args:
    study: str = "standard"
    """which study: standard, stress, search, lora or tiny (see STUDIES in study.py)"""
    seeds: int = 0
    """number of seeds (0 = the study's own)"""
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    """runs at a time (each uses one thread)"""
    runs: str = "runs/study"
    """where the runs go (<runs>/<study>/<config>_s<seed>)"""
    out: str = "docs/results"
    """where the report goes (<out>/<study>/)"""
    report_only: bool = False
    """skip the runs: the report from what is there"""


def run_dir(args: Args, config: str, seed: int) -> str:
    return os.path.join(args.runs, args.study, f"{config}_s{seed}")


def read_rows(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def num_steps(cmd: list[str]) -> int:
    return int(cmd[cmd.index("--num-steps") + 1]) if "--num-steps" in cmd else 100


def completed_steps(directory: str) -> int:
    """The steps a run completed: the step of its newest complete checkpoint (0 when none). A run stopped by a signal
    saves and exits 0, as schedulers expect, so only this tells it from a finished one."""
    from common import checkpoint

    try:
        with open(os.path.join(checkpoint.resolve(directory), "state.json")) as f:
            return int(json.load(f).get("step", 0))
    except (FileNotFoundError, ValueError, OSError):
        return 0


def finished(directory: str, steps: int) -> bool:
    return completed_steps(directory) >= steps


def launch(args: Args, config: str, cmd: list[str], seed: int) -> tuple[str, int, float, str]:
    """One run to completion (continuing an interrupted one). -> (config, seed, wall seconds of this launch, status):
    status "done", "interrupted at step k of N" (stopped by a signal: the next call resumes it) or "failed (...)"."""
    directory = run_dir(args, config, seed)
    resume = ["--resume", directory] if os.path.isdir(os.path.join(directory, "checkpoints")) else []
    if not resume and os.path.isdir(directory) and not rundir.live_holder(directory):  # never checkpointed: again
        shutil.rmtree(directory)
    full = [sys.executable, *cmd, "--seed", str(seed), "--exp-name", config, "--out-dir",
            os.path.join(args.runs, args.study), "--save-every", "25", *resume]
    os.makedirs(directory, exist_ok=True)
    t0 = time.time()
    with open(os.path.join(directory, "stdout.log"), "a") as log:
        p = subprocess.run(full, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.time() - t0
    if p.returncode != 0:
        return config, seed, wall, f"failed (exit {p.returncode}; see {directory}/stdout.log)"
    with open(os.path.join(directory, "wall.json"), "a") as f:  # one line per launch: a resumed run adds up
        f.write(json.dumps({"wall_s": wall}) + "\n")
    done, steps = completed_steps(directory), num_steps(cmd)
    return config, seed, wall, "done" if done >= steps else f"interrupted at step {done} of {steps}"


def mean_se(xs: list[float]) -> tuple[float, float]:
    n = len(xs)
    m = sum(xs) / n
    return m, (math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1) / n) if n > 1 else float("nan"))


def fmt(xs: list[float], digits: int = 3) -> str:
    if not xs:
        return "–"
    m, se = mean_se(xs)
    return f"{m:.{digits}f} ± {se:.{digits}f} (n={len(xs)})" if len(xs) > 1 else f"{m:.{digits}f} (n=1)"


def report(args: Args, study: Study, seeds: int):
    """docs/results/<study>/: README.md (table), curves.png, grids.png."""
    out = os.path.join(args.out, args.study)
    os.makedirs(out, exist_ok=True)
    runs = {c: [read_rows(os.path.join(run_dir(args, c, s), "metrics.jsonl")) for s in range(seeds)]
            for c in study.configs}
    runs = {c: [rows for rows in rs if rows and finished_rows(rows, num_steps(study.configs[c]))]
            for c, rs in runs.items()}
    seen = {k[5:] for rs in runs.values() for rows in rs for r in rows for k in r if k.startswith("eval/")}
    tags = [t for t in TAGS if t in seen]
    quality = ["quality before", "quality after"] if "quality" in seen else []
    lines = [f"# Study `{args.study}`", "", study.doc + ".", "",
             f"Reproduce: `python study.py --study {args.study}` (one thread per run, {args.jobs} at a time).", "",
             "Held-out strict GenEval on the toy's 55 held-out prompts; mean ± standard error over seeds (n seeds). "
             "`peak`: each run's best held-out score at any evaluation (step 0 included); KL (k3 to the reference) "
             "and entropy (of the policy's next-token distribution along the sampled images): each run's mean over "
             "its last 25 steps"
             + ("; `quality`: the toy's palette cleanliness of the held-out samples (1 = clean renders)." if quality
                else "."), "",
             "| configuration | before | after | change | peak | " + " | ".join(tags + quality) +
             " | KL, last 25 steps | entropy, last 25 steps | wall min | step s |",
             "|" + "---|" * (9 + len(tags) + len(quality))]
    for c, rs in runs.items():
        before = [first_eval(rows)["eval/overall"] for rows in rs]
        after = [last_eval(rows)["eval/overall"] for rows in rs]
        change = [a - b for a, b in zip(after, before)]
        peak = [max(r["eval/overall"] for r in rows if "eval/overall" in r) for rows in rs]
        per_tag = [fmt([last_eval(rows)[f"eval/{t}"] for rows in rs if f"eval/{t}" in last_eval(rows)]) for t in tags]
        if quality:
            per_tag += [fmt([pick(rows)["eval/quality"] for rows in rs if "eval/quality" in pick(rows)])
                        for pick in (first_eval, last_eval)]
        walls = [sum(r["wall_s"] for r in read_rows(os.path.join(run_dir(args, c, s), "wall.json"))) / 60
                 for s in range(seeds) if os.path.isfile(os.path.join(run_dir(args, c, s), "wall.json"))]
        step_s = [sum(r.get("perf/sample_s", 0) + r.get("perf/reward_s", 0) + r.get("perf/update_s", 0)
                      for r in rows if "perf/update_s" in r) / max(1, sum("perf/update_s" in r for r in rows))
                  for rows in rs]
        lines.append(f"| `{c}` | {fmt(before)} | {fmt(after)} | {fmt(change)} | {fmt(peak)} | " + " | ".join(per_tag) +
                     f" | {fmt(late(rs, 'losses/kl'))} | {fmt(late(rs, 'losses/entropy'), 2)} | {fmt(walls, 1)} |"
                     f" {fmt(step_s, 2)} |")
    unfinished = [f"`{c}` seed {s} (step {completed_steps(run_dir(args, c, s))} of {num_steps(cmd)})"
                  for c, cmd in study.configs.items() for s in range(seeds)
                  if not finished(run_dir(args, c, s), num_steps(cmd))]
    if unfinished:
        lines += ["", f"Not finished, so not in the table (`python study.py --study {args.study}` continues them): "
                      + ", ".join(unfinished) + "."]
    lines += ["", "Commands (seed S): " + "; ".join(f"`{c}`: `python {' '.join(cmd)} --seed S`"
                                                  for c, cmd in study.configs.items()), ""]
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
    plot_curves(runs, os.path.join(out, "curves.png"), with_quality=bool(quality))
    grids(args, list(runs), os.path.join(out, "grids.png"))
    print(f"report: {out}/")


def grids(args: Args, configs: list[str], path: str, width: int = 300):
    """Seed 0's held-out grids before | after, one row per configuration, each grid scaled to `width` pixels."""
    from PIL import Image, ImageDraw

    rows = []
    for c in configs:
        pair = [os.path.join(run_dir(args, c, 0), f"eval_{t}.png") for t in ("before", "after")]
        if all(os.path.isfile(p) for p in pair):
            ims = [Image.open(p).convert("RGB") for p in pair]
            ims = [im.crop((0, 0, im.width, im.height // 4)) for im in ims]  # the first rows of each grid
            ims = [im.resize((width, max(1, round(im.height * width / im.width)))) for im in ims]
            row = Image.new("RGB", (2 * width, max(im.height for im in ims) + 14), "white")
            for i, im in enumerate(ims):
                row.paste(im, (i * width, 14))
            ImageDraw.Draw(row).text((4, 1), f"{c}: before | after (seed 0, first prompts)", fill="black")
            rows.append(row)
    if rows:
        sheet = Image.new("RGB", (2 * width, sum(r.height for r in rows)), "white")
        y = 0
        for r in rows:
            sheet.paste(r, (0, y))
            y += r.height
        sheet.quantize(colors=64).save(path, optimize=True)  # small enough to commit


def finished_rows(rows: list[dict], steps: int) -> bool:
    return any(r.get("step") == steps and "eval/overall" in r for r in rows)


def late(rs: list[list[dict]], key: str, window: int = 25) -> list[float]:
    """Per run, the mean of `key` over its last `window` logged steps (where the run has drifted to)."""
    values = [[r[key] for r in rows if key in r][-window:] for rows in rs]
    return [sum(v) / len(v) for v in values if v]


def first_eval(rows: list[dict]) -> dict:
    return min((r for r in rows if "eval/overall" in r), key=lambda r: r["step"])


def last_eval(rows: list[dict]) -> dict:
    return max((r for r in rows if "eval/overall" in r), key=lambda r: r["step"])


def smooth(rows: list[dict], key: str, window: int) -> dict[int, float]:
    """{step: mean of `key` over the last `window` logged steps}; every script logs the GenEval reward it trains
    on as charts/reward_mean, except AR-GRPO (a weighted sum of rewards), whose GenEval part is rewards/geneval."""
    if key == "rewards/geneval" and not any(key in r for r in rows):
        key = "charts/reward_mean"
    points = [(r["step"], r[key]) for r in rows if key in r]
    return {s: sum(v for _, v in points[max(0, i - window + 1) : i + 1]) / len(points[max(0, i - window + 1) : i + 1])
            for i, (s, _) in enumerate(points)}


def plot_curves(runs: dict[str, list[list[dict]]], path: str, with_quality: bool = False):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("rewards/geneval", "training GenEval reward (rollouts)"), ("losses/kl", "KL (k3), 5-step mean"),
            ("losses/entropy", "entropy, 5-step mean"), ("eval/overall", "held-out strict GenEval")]
    keys += [("eval/quality", "held-out image quality (palette)")] if with_quality else []
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4))
    for ax, (key, title) in zip(axes, keys):
        for c, rs in runs.items():
            series = [smooth(rows, key, 1 if key.startswith("eval/") else 5) for rows in rs]  # per seed
            steps = sorted(set.intersection(*(set(x) for x in series))) if series else []
            if not steps:
                continue
            stats = [mean_se([x[s] for x in series]) for s in steps]
            m = [x for x, _ in stats]
            se = [0.0 if math.isnan(e) else e for _, e in stats]
            ax.plot(steps, m, label=c, lw=1.2)
            ax.fill_between(steps, [a - b for a, b in zip(m, se)], [a + b for a, b in zip(m, se)], alpha=0.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0.1, 1, 1))  # the legend below the panels, clear of the curves
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8) or 1, fontsize=8, frameon=False)
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    studies = "\n".join(f"  {name} ({len(st.configs)} configurations x {st.seeds} seeds): {st.doc}"
                        for name, st in STUDIES.items())
    args = parse(Args, description=__doc__.split("\n\n")[0] + "\n\nStudies:\n" + studies)
    errors.install(interrupted="run the same command again: finished runs are kept, interrupted ones resume")
    if args.study not in STUDIES:
        fail(f"--study {args.study!r}: unknown; known: {', '.join(STUDIES)}")
    if args.jobs < 1 or args.seeds < 0:
        fail("--jobs must be >= 1 and --seeds >= 0")
    study = STUDIES[args.study]
    seeds = args.seeds or study.seeds
    todo = [(c, cmd, s) for s in range(seeds) for c, cmd in study.configs.items()
            if not finished(run_dir(args, c, s), num_steps(cmd))]
    if not todo:
        print(f"study {args.study}: all {len(study.configs) * seeds} runs are done")
    if not args.report_only and todo:
        print(f"study {args.study}: {len(todo)} of {len(study.configs) * seeds} runs to do, {args.jobs} at a time")
        t0 = time.time()
        unfinished = []
        with ThreadPoolExecutor(args.jobs) as pool:
            for config, seed, wall, status in pool.map(lambda t: launch(args, *t), todo):
                print(f"{status} {config} seed {seed} ({wall / 60:.1f} min)", flush=True)
                if status != "done":
                    unfinished.append(f"{config} seed {seed}: {status}")
        print(f"study {args.study}: {len(todo)} runs in {(time.time() - t0) / 60:.1f} min of wall time")
        report(args, study, seeds)
        if unfinished:  # interrupted runs resume, failed ones start again, on the next call
            fail(f"{len(unfinished)} of {len(todo)} runs did not finish ({'; '.join(unfinished)}); the report holds "
                 f"the finished ones; run the same command again to continue the rest")
    else:
        report(args, study, seeds)
