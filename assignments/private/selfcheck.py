"""`python -m assignments selfcheck`: the kit checks itself (private: not in the student tree).

1. the markers are balanced, every exercise 01–09 has regions and a handout, every grader file has points;
2. `make` builds the student tree, and no solution text, marker or private file is left in it;
3. the reference scores full marks (the outcome run once, unless --quick);
4. the blank student tree scores 0 on every graded test, each failure saying "not implemented";
5. every mutant (private/mutants.py), applied to a copy of the reference, loses points on its exercise with the
   expected message.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from assignments import kit
from assignments.private.mutants import MUTANTS


def apply(mutant: dict, tree: str) -> None:
    """Patch the mutant's file inside `tree` (the file's regions of the mutant's exercise only)."""
    path = os.path.join(tree, mutant["file"])
    text = open(path, encoding="utf-8").read()
    lines = text.split("\n")
    regs = [r for r in kit.regions(text, mutant["file"]) if r["ex"] == mutant["ex"]]
    if not regs:
        raise RuntimeError(f"mutant {mutant['name']!r}: {mutant['file']} has no ex{mutant['ex']} region")
    for old, new in mutant["patches"]:
        hits = [r for r in regs if "\n".join(r["body"]).count(old) == 1]
        total = sum("\n".join(r["body"]).count(old) for r in regs)
        if total != 1:
            raise RuntimeError(f"mutant {mutant['name']!r}: {old!r} occurs {total} times in the ex{mutant['ex']} "
                               f"regions of {mutant['file']} (the reference changed: update private/mutants.py)")
        r = hits[0]
        body = "\n".join(r["body"]).replace(old, new)
        lines[r["begin"] + 1: r["end"]] = body.split("\n")
        text = "\n".join(lines)
        regs = [q for q in kit.regions(text, mutant["file"]) if q["ex"] == mutant["ex"]]
        lines = text.split("\n")
    os.remove(path)  # the tree's copy may be a link to the reference: never write through it
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def overlay(tree: str, root: str = kit.REPO) -> None:
    """A cheap copy of the reference: every file of the student file list linked (symlinks), so a mutant replaces
    one link with a patched file."""
    for rel in kit.repo_files(root):
        dst = os.path.join(tree, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.symlink(os.path.join(root, rel), dst)


def structure() -> list[str]:
    problems = []
    marked = kit.marked_files()
    found = {r["ex"] for regs in marked.values() for r in regs}
    for ex in kit.EXERCISES:
        if not os.path.exists(os.path.join(kit.KIT, f"ex{ex}.md")):
            problems.append(f"assignments/ex{ex}.md (the handout) is missing")
        if not kit.grader_files({ex}):
            problems.append(f"ex{ex} has no grader in assignments/graders")
        if ex != kit.OUTCOME and ex not in found:
            problems.append(f"ex{ex} has no solution region")
    declared = kit.declared_points()
    for path in kit.grader_files():
        ex = os.path.basename(path)[7:9]
        if not any(e == ex for e, _ in declared):
            problems.append(f"{os.path.basename(path)} declares no points")
    for ex in kit.EXERCISES:
        if ex != kit.OUTCOME and not [mu for mu in MUTANTS if mu["ex"] == ex]:
            problems.append(f"ex{ex} has no mutant")
    return problems


def selfcheck(quick: bool = False, keep: str | None = None, jobs: int = 0) -> int:
    jobs = jobs or min(2, os.cpu_count() or 1)
    t0 = time.time()
    failures: list[str] = []

    def check(ok: bool, what: str):
        print(f"  {'ok  ' if ok else 'FAIL'} {what}", flush=True)
        if not ok:
            failures.append(what)

    print("1. structure", flush=True)
    problems = structure()
    check(not problems, "markers, handouts, graders, points, mutants" + ("" if not problems else ": " + "; ".join(problems)))
    work = tempfile.mkdtemp(prefix="assignments_selfcheck_")
    try:
        student = os.path.join(work, "student")
        print("2. student tree", flush=True)
        n = kit.make(student)
        check(n > 0, f"make replaced {n} regions")
        problems = kit.leaks(student)
        check(not problems, "no solution text, marker or private file in the student tree"
              + ("" if not problems else ": " + "; ".join(problems[:5])))
        problems = kit.missing_refs(student)
        check(not problems, "the student tree's docs name no file it lacks unmarked"
              + ("" if not problems else ": " + "; ".join(problems[:5])))

        print(f"3. the reference scores full marks{' (without the outcome run: --quick)' if quick else ''}", flush=True)
        t = time.time()
        ref = kit.grade(kit.REPO, outcome=not quick)
        total, mx = sum(r["score"] for r in ref), sum(r["points"] for r in ref)
        check(total == mx, f"reference {kit.fmt(total)} / {kit.fmt(mx)} ({time.time() - t:.0f} s)"
              + "".join(f"\n         ex{r['exercise']} {r['test']}: {r['feedback']}" for r in ref
                        if r["score"] < r["points"]))
        for r in ref:
            if r["exercise"] == kit.OUTCOME:
                print(f"         ex{kit.OUTCOME}: {r['feedback']}", flush=True)
        slow = [r for r in ref if r["exercise"] != kit.OUTCOME and r["duration"] > 10]
        check(not slow, "every unit test under 10 s" + "".join(f"; {r['test']} {r['duration']} s" for r in slow))

        print("4. the blank student tree scores 0 on every graded test", flush=True)
        blank = kit.grade(student, outcome=True)
        bad = [r for r in blank if r["score"] > 0 or "not implemented" not in r["feedback"]]
        check(not bad, f"{len(blank)} tests, all 0, all 'not implemented'"
              + "".join(f"\n         ex{r['exercise']} {r['test']}: {r['score']} {r['feedback']}" for r in bad))

        print(f"5. mutants ({len(MUTANTS)}, {jobs} at a time)", flush=True)
        full = {ex: (s, m) for ex, s, m, _ in kit.summary(ref)}

        def run(i: int):
            mu = MUTANTS[i]
            tree = os.path.join(work, f"mutant{i:02d}")
            overlay(tree)
            try:
                apply(mu, tree)
            except RuntimeError as e:
                return False, str(e)
            recs = kit.grade(tree, exercises={mu["ex"]}, outcome=False)
            shutil.rmtree(tree, ignore_errors=True)
            score = sum(r["score"] for r in recs)
            fb = " | ".join(r["feedback"] for r in recs if r["score"] < r["points"])
            ok = score < full[mu["ex"]][1] and mu["expect"] in fb
            return ok, (f"ex{mu['ex']} {mu['name']}: {kit.fmt(score)} / {kit.fmt(full[mu['ex']][1])}"
                        + ("" if ok else f" (expected a message with {mu['expect']!r}; got: {fb or 'none'})"))

        with ThreadPoolExecutor(jobs) as pool:  # each grade is its own pytest process
            for ok, what in pool.map(run, range(len(MUTANTS))):
                check(ok, what)
    finally:
        if keep:
            shutil.copytree(os.path.join(work, "student"), keep, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"selfcheck: {'FAILED ' + str(len(failures)) + ' check(s)' if failures else 'all checks pass'} "
          f"({time.time() - t0:.0f} s)")
    return 1 if failures else 0
