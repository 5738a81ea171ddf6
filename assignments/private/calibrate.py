"""Calibrate the outcome exercise's tiers (private): run the grader's exact command on the reference over seeds.

    nice -n 5 python -m assignments.private.calibrate --seeds 0 1 2 3 4 5 [--mutant "sign flipped"]

Runs are sequential, one thread each (assignments/outcome.py sets OMP_NUM_THREADS=1), and print before, after,
gain and wall time per seed, then the mean ± standard error. With --mutant, the named ex01–03 mutant of
private/mutants.py is applied first (a broken implementation must stay below the lowest tier). The figures of
the shipped tiers are in assignments/README.md ("The outcome exercise").
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile

from assignments import kit, outcome
from assignments.private.mutants import MUTANTS
from assignments.private.selfcheck import apply, overlay


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--mutant", default="", help="the name of an ex01–03 mutant to apply first")
    p.add_argument("--json", default="", help="also write the runs to this file")
    a = p.parse_args()
    tree, work = kit.REPO, None
    if a.mutant:
        mu = next(m for m in MUTANTS if m["name"] == a.mutant)
        work = tempfile.mkdtemp(prefix="calibrate_")
        overlay(work)
        apply(mu, work)
        tree = work
    runs = []
    try:
        for seed in a.seeds:
            r = outcome.run(tree, seed=seed, timeout=3600)
            r["seed"] = seed
            runs.append(r)
            print(f"seed {seed}: before {r['before']:.3f} after {r['after']:.3f} gain {r['gain']:+.3f} "
                  f"{r['seconds']:.0f} s; tier {outcome.tier(r['gain'])[0]:.0%}", flush=True)
    finally:
        if work:
            shutil.rmtree(work, ignore_errors=True)
    g = [r["gain"] for r in runs]
    mean = sum(g) / len(g)
    se = math.sqrt(sum((x - mean) ** 2 for x in g) / (len(g) - 1) / len(g)) if len(g) > 1 else float("nan")
    print(f"gain {mean:+.3f} ± {se:.3f} (s.e., n = {len(g)}); min {min(g):+.3f}, max {max(g):+.3f}; "
          f"time {min(r['seconds'] for r in runs):.0f}–{max(r['seconds'] for r in runs):.0f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(runs, f, indent=1)


if __name__ == "__main__":
    main()
