"""Draw docs/img/what_to_watch.png: the metrics docs/grpo.md says to watch, for runs given as LABEL=RUN_DIR.

The picture in docs/grpo.md comes from three runs of grpo_vanilla.py on the toy (one thread each):

    OMP_NUM_THREADS=1 python grpo_vanilla.py --exp-name healthy --eval-samples 0 --image-every 0
    OMP_NUM_THREADS=1 python grpo_vanilla.py --exp-name high_lr --lr 1e-3 --eval-samples 0 --image-every 0
    OMP_NUM_THREADS=1 python grpo_vanilla.py --exp-name flat --reward flat_reward:const --num-steps 40 \\
        --eval-samples 0 --image-every 0       # flat_reward.py on PYTHONPATH: const() returns zeros(len(images))
    python docs/img/what_to_watch.py "healthy=runs/healthy_s0" "lr 1e-3=runs/high_lr_s0" \\
        "flat reward=runs/flat_s0" --out docs/img/what_to_watch.png
"""
from __future__ import annotations

import argparse
import json
import os

PANELS = [("charts/reward_mean", "training reward (mean)"), ("charts/reward_std", "reward std"),
          ("charts/frac_zero_std_groups", "groups with equal rewards"), ("losses/kl", "KL to the reference (k3)"),
          ("losses/entropy", "policy entropy (nats/token)"), ("losses/grad_norm", "gradient norm (before clipping)")]


def read(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if "charts/reward_mean" in r]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR, one per run")
    parser.add_argument("--out", default="what_to_watch.png")
    parser.add_argument("--smooth", type=int, default=5, help="moving mean over this many steps")
    a = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(2, 3, figsize=(12, 6))
    for spec in a.runs:
        label, _, run_dir = spec.partition("=")
        rows = read(run_dir)
        steps = np.array([r["step"] for r in rows])
        for ax, (key, title) in zip(axes.flat, PANELS):
            y = np.array([r[key] for r in rows], dtype=float)
            k = min(a.smooth, len(y))
            ys = np.convolve(y, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1 :], ys, label=label)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=8)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"grpo_vanilla.py on the toy: what to watch ({a.smooth}-step moving means)", fontsize=11)
    fig.tight_layout()
    fig.savefig(a.out, dpi=90)
    print(a.out)


if __name__ == "__main__":
    main()
