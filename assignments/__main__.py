"""python -m assignments make --out DIR | grade DIR [--json FILE] | selfcheck [--quick]   (assignments/README.md)"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from assignments import kit


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m assignments", description="GRPO course assignments (assignments/README.md)")
    sub = p.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make", help="build the student tree: the repository with every solution region replaced")
    mk.add_argument("--out", required=True, help="an empty or new folder")
    mk.add_argument("--force", action="store_true", help="write into a non-empty folder")
    gr = sub.add_parser("grade", help="run the graders against a tree and print the points")
    gr.add_argument("tree", help="the tree to grade (a student's, or the reference: .)")
    gr.add_argument("--json", metavar="FILE", help="also write Gradescope's results.json to FILE")
    gr.add_argument("--only", metavar="NN[,NN]", help="grade only these exercises, e.g. 01,03")
    gr.add_argument("--no-outcome", action="store_true", help="skip exercise 10's training run (~2–5 min)")
    gr.add_argument("--verbose", action="store_true", help="show pytest's own output")
    sc = sub.add_parser("selfcheck", help="verify the kit: reference full marks, blank tree 0, every mutant caught")
    sc.add_argument("--quick", action="store_true", help="everything except the outcome run (what CI runs)")
    sc.add_argument("--keep", metavar="DIR", help="keep the student tree it builds in DIR")
    sc.add_argument("--jobs", type=int, default=0, help="mutants graded at once (default: 2, or 1 on one core)")
    a = p.parse_args(argv)

    if a.cmd == "make":
        n = kit.make(a.out, force=a.force)
        print(f"student tree in {a.out}: {n} solution regions replaced; hand it out, grade it with "
              f"`python -m assignments grade {a.out}`")
        return 0
    if a.cmd == "grade":
        if not os.path.isfile(os.path.join(a.tree, "grpo_vanilla.py")):
            print(f"{a.tree} is not a tree of this project (no grpo_vanilla.py)", file=sys.stderr)
            return 2
        only = set(a.only.split(",")) if a.only else None
        if only and not only <= set(kit.EXERCISES):
            print(f"--only {a.only}: exercises are {', '.join(kit.EXERCISES)}", file=sys.stderr)
            return 2
        t0 = time.time()
        records = kit.grade(a.tree, exercises=only, outcome=not a.no_outcome, quiet=not a.verbose)
        print(kit.table(records))
        if a.json:
            with open(a.json, "w", encoding="utf-8") as f:
                json.dump(kit.gradescope(records, time.time() - t0), f, indent=1, ensure_ascii=False)
        return 0
    try:
        from assignments.private.selfcheck import selfcheck
    except ImportError:
        print("selfcheck needs the reference kit (assignments/private/ is not in a student tree)", file=sys.stderr)
        return 2
    return selfcheck(quick=a.quick, keep=a.keep, jobs=a.jobs)


if __name__ == "__main__":
    sys.exit(main())
