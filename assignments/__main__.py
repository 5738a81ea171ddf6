"""python -m assignments make --out DIR | grade DIR [--json FILE] | gradescope --out ZIP | selfcheck [--quick]
(assignments/README.md)"""
from __future__ import annotations

import argparse
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
    gr.add_argument("--sandbox-user", metavar="NAME", default="",
                    help="run the graded code as this unprivileged account (the grader must be root; the account "
                         "must be able to run the interpreter: else set ASSIGN_SANDBOX_PYTHON, assignments/README.md)")
    gs = sub.add_parser("gradescope", help="build Gradescope's autograder zip: setup.sh, run_autograder, the source")
    gs.add_argument("--out", required=True, help="the zip to write, e.g. autograder.zip")
    gs.add_argument("--visibility", default="", metavar="NN=V[,NN=V]",
                    help="per exercise: visible (default), after_due_date, hidden or after_published, "
                         "e.g. 10=after_due_date")
    gs.add_argument("--only", metavar="NN[,NN]", help="grade only these exercises (e.g. a week: 01,02,03,04)")
    gs.add_argument("--sandbox-user", default="gs_student", metavar="NAME",
                    help="the unprivileged account setup.sh creates and the graded code runs as")
    gr_run = sub.add_parser("gradescope-run", help="what run_autograder does (Gradescope's /autograder layout)")
    gr_run.add_argument("--root", default=os.environ.get("AUTOGRADER_ROOT", "/autograder"))
    sc = sub.add_parser("selfcheck", help="verify the kit: reference full marks, blank tree 0, every mutant caught")
    sc.add_argument("--quick", action="store_true", help="everything except the outcome run (what CI runs)")
    sc.add_argument("--keep", metavar="DIR", help="keep the student tree it builds in DIR")
    sc.add_argument("--jobs", type=int, default=0, help="mutants graded at once (default: 2, or 1 on one core)")
    a = p.parse_args(argv)

    if a.cmd == "make":
        out, repo = os.path.realpath(a.out), os.path.realpath(kit.REPO)
        if out == repo or repo.startswith(out + os.sep):
            print(f"--out {a.out} is the repository (or holds it): give a new folder, e.g. --out handout/",
                  file=sys.stderr)
            return 2
        if os.path.exists(a.out) and not os.path.isdir(a.out):
            print(f"--out {a.out} is a file: give an empty or new folder", file=sys.stderr)
            return 2
        if os.path.isdir(a.out) and os.listdir(a.out) and not a.force:
            print(f"--out {a.out} exists and is not empty: give an empty or new folder (or --force)", file=sys.stderr)
            return 2
        try:
            n = kit.make(a.out, force=a.force)
        except OSError as e:
            print(f"--out {a.out}: cannot write the student tree ({e.strerror or e})", file=sys.stderr)
            return 2
        print(f"student tree in {a.out}: {n} solution regions replaced; hand it out, grade it with "
              f"`python -m assignments grade {a.out}`")
        return 0
    if a.cmd == "grade":
        if not os.path.isdir(a.tree):
            print(f"{a.tree} is not a folder: give a student tree, a folder holding one, or the edited files",
                  file=sys.stderr)
            return 2
        if not kit.find_submission(a.tree)[0]:
            print(f"{a.tree} holds none of the exercise files ({', '.join(kit.exercise_files())})", file=sys.stderr)
            return 2
        if a.json:
            parent = os.path.dirname(os.path.abspath(a.json))
            if not os.path.isdir(parent) or not os.access(parent, os.W_OK) or os.path.isdir(a.json):
                print(f"--json {a.json}: {parent} is not a writable folder (create it first)"
                      if not os.path.isdir(a.json) else f"--json {a.json} is a folder: give a file name",
                      file=sys.stderr)
                return 2
        from assignments.sandbox import sandbox_user

        try:
            sandbox_user(a.sandbox_user)
        except SystemExit as e:
            print(e, file=sys.stderr)
            return 2
        only = set(a.only.split(",")) if a.only else None
        if only and not only <= set(kit.EXERCISES):
            print(f"--only {a.only}: exercises are {', '.join(kit.EXERCISES)}", file=sys.stderr)
            return 2
        t0 = time.time()
        records = kit.grade(a.tree, exercises=only, outcome=not a.no_outcome, quiet=not a.verbose,
                            user=a.sandbox_user or None)
        print(kit.table(records))
        if a.json:
            from assignments.gradescope import write_json

            write_json(a.json, kit.gradescope(records, time.time() - t0))
        return 0
    if a.cmd == "gradescope":
        from assignments import gradescope

        try:
            vis = gradescope.parse_visibility(a.visibility)
        except ValueError as e:
            print(e, file=sys.stderr)
            return 2
        parent = os.path.dirname(os.path.abspath(a.out))
        if not os.path.isdir(parent) or os.path.isdir(a.out):
            print(f"--out {a.out}: give a zip file name in an existing folder", file=sys.stderr)
            return 2
        only = sorted(set(a.only.split(","))) if a.only else None
        if only and not set(only) <= set(kit.EXERCISES):
            print(f"--only {a.only}: exercises are {', '.join(kit.EXERCISES)}", file=sys.stderr)
            return 2
        n = gradescope.build(a.out, vis, a.sandbox_user, only)
        print(f"{a.out}: setup.sh, run_autograder and {n - 2} source files; upload it as the autograder "
              f"(visibility: {', '.join(f'ex{k} {v}' for k, v in sorted(vis.items())) or 'all visible'})")
        return 0
    if a.cmd == "gradescope-run":
        from assignments import gradescope

        return gradescope.run(a.root)
    try:
        from assignments.private.selfcheck import selfcheck
    except ImportError:
        print("selfcheck needs the reference kit (assignments/private/ is not in a student tree)", file=sys.stderr)
        return 2
    return selfcheck(quick=a.quick, keep=a.keep, jobs=a.jobs)


if __name__ == "__main__":
    sys.exit(main())
