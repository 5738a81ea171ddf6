"""The assignment kit: solution regions, the student tree, grading, the Gradescope results, the self-check.

A solution region is the body of a function between two comment lines, `# BEGIN SOLUTION exNN` and
`# END SOLUTION` (each alone on its line, at the body's indentation), in the real scripts and modules (the reference runs with the markers in place). `make` copies the repository without
its tests and the kit's private parts, and replaces every region by
    raise NotImplementedError("Exercise NN: see assignments/exNN.md")
at the region's indentation, so signatures and docstrings stay. `grade` runs the pytest graders of assignments/graders
against a tree and sums their points. `selfcheck` verifies the kit (assignments/README.md).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

KIT = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(KIT)
GRADERS = os.path.join(KIT, "graders")

EXERCISES = {
    "01": "group advantages",
    "02": "the k3 KL and its direction",
    "03": "the clipped token-mean GRPO loss",
    "04": "CFG, temperature, top-k, top-p",
    "05": "STAGE similarity, mask, masked advantages",
    "06": "STAGE entropy reward",
    "07": "GCPO critical tokens and dynamic weight",
    "08": "AR-GRPO quantised multi-reward",
    "09": "a toy reward for GenEval counting",
    "10": "outcome: a short run learns",
}
OUTCOME = "10"

BEGIN = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION ex(?P<ex>\d\d)[ \t]*$")
END = re.compile(r"^[ \t]*# END SOLUTION[ \t]*$")
SKIP_DIRS = {".git", ".venv", "venv", "runs", "__pycache__", ".pytest_cache", ".carry", "shared", "tests"}
SKIP_PATHS = {os.path.join("assignments", "private"), os.path.join("weights", "llamagen"),
              os.path.join("weights", "fid")}
SKIP_SUFFIXES = (".pyc",)


# ----------------------------------------------------------------------------- regions


def regions(text: str, where: str = "") -> list[dict]:
    """The solution regions of a file's text: [{"ex", "indent", "begin", "end" (line indices of the markers),
    "body" (the lines between)}]. Unbalanced or nested markers raise ValueError naming the line."""
    out, open_ = [], None
    lines = text.split("\n")
    for i, line in enumerate(lines):
        m = BEGIN.match(line)
        if m:
            if open_ is not None:
                raise ValueError(f"{where}:{i + 1}: BEGIN SOLUTION inside the region opened at line {open_['begin'] + 1}")
            open_ = {"ex": m["ex"], "indent": m["indent"], "begin": i}
        elif END.match(line):
            if open_ is None:
                raise ValueError(f"{where}:{i + 1}: END SOLUTION without a BEGIN SOLUTION")
            open_["end"] = i
            open_["body"] = lines[open_["begin"] + 1: i]
            out.append(open_)
            open_ = None
    if open_ is not None:
        raise ValueError(f"{where}:{open_['begin'] + 1}: BEGIN SOLUTION ex{open_['ex']} is never closed")
    return out


def stub(ex: str) -> str:
    return f'raise NotImplementedError("Exercise {ex}: see assignments/ex{ex}.md")'


def strip_solutions(text: str, where: str = "") -> str:
    """The student's version of a file: every region (markers included) becomes one `raise NotImplementedError`."""
    lines = text.split("\n")
    for r in reversed(regions(text, where)):
        lines[r["begin"]: r["end"] + 1] = [r["indent"] + stub(r["ex"])]
    return "\n".join(lines)


def repo_files(root: str = REPO) -> list[str]:
    """Relative paths of the files a student tree is built from: the repository minus tests/, the kit's private
    parts, run outputs, caches and virtual environments."""
    out = []
    for d, dirs, files in os.walk(root):
        rel_d = os.path.relpath(d, root)
        dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS and not x.startswith(".")
                         and os.path.normpath(os.path.join(rel_d, x)) not in SKIP_PATHS)
        for f in sorted(files):
            if f.endswith(SKIP_SUFFIXES) or ".tmp" in f:
                continue
            out.append(os.path.normpath(os.path.join(rel_d, f)))
    return out


def marked_files(root: str = REPO) -> dict[str, list[dict]]:
    """{relative path: its regions} for every .py file of the repository that has solution regions."""
    out = {}
    for rel in repo_files(root):
        if rel.endswith(".py"):
            text = open(os.path.join(root, rel), encoding="utf-8").read()
            if "# BEGIN SOLUTION" in text:
                out[rel] = regions(text, rel)
    return out


LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")
CODE_PATH = re.compile(r"`([A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)+)`")
ELSEWHERE = " (in the full repository, not in the student tree)"


def _target(md_rel: str, ref: str, root: str) -> str | None:
    """The repository path a doc reference names (a link relative to the doc, a code span relative to the root or
    the doc), or None for a URL, an anchor or a path the repository does not hold either."""
    ref = ref.split("#")[0]
    if not ref or "://" in ref or ref.startswith("mailto:"):
        return None
    for base in (os.path.dirname(md_rel), ""):
        rel = os.path.normpath(os.path.join(base, ref))
        if not rel.startswith("..") and os.path.exists(os.path.join(root, rel)):
            return rel
    return None


def _missing(rel: str, files: set[str]) -> bool:
    return rel not in files and not any(f.startswith(rel + os.sep) for f in files)


def student_doc(text: str, md_rel: str, files: set[str], root: str = REPO) -> str:
    """A doc as the student tree holds it: a link to a repository file the tree lacks (tests/, the kit's private
    parts) becomes its text, and a code span naming one is marked as being in the full repository only."""
    def link(m):
        rel = _target(md_rel, m.group(2), root)
        return m.group(1) + ELSEWHERE if rel is not None and _missing(rel, files) else m.group(0)

    def code(m):
        rel = _target(md_rel, m.group(1), root)
        return m.group(0) + ELSEWHERE if rel is not None and _missing(rel, files) else m.group(0)

    return CODE_PATH.sub(code, LINK.sub(link, text))


def missing_refs(student: str, root: str = REPO) -> list[str]:
    """References in the student tree's docs to repository files the tree lacks, not marked as such -> problems."""
    problems = []
    files = set(repo_files(student))
    for rel in sorted(files):
        if not rel.endswith(".md"):
            continue
        text = open(os.path.join(student, rel), encoding="utf-8").read()
        for m in LINK.finditer(text):
            t = _target(rel, m.group(2), root)
            if t is not None and _missing(t, files):
                problems.append(f"{rel}: links to {m.group(2)}, which the student tree lacks")
        for m in CODE_PATH.finditer(text):
            t = _target(rel, m.group(1), root)
            if t is not None and _missing(t, files) and not text[m.end():].startswith(ELSEWHERE):
                problems.append(f"{rel}: names {m.group(1)}, which the student tree lacks")
    return problems


def make(out: str, root: str = REPO, force: bool = False) -> int:
    """Build the student tree in `out` -> the number of regions replaced."""
    if os.path.exists(out) and os.listdir(out) and not force:
        raise SystemExit(f"{out} exists and is not empty; give an empty or new folder (or --force)")
    n = 0
    files = repo_files(root)
    for rel in files:
        src, dst = os.path.join(root, rel), os.path.join(out, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if rel.endswith(".md"):
            with open(dst, "w", encoding="utf-8") as f:
                f.write(student_doc(open(src, encoding="utf-8").read(), rel, set(files), root))
            continue
        if rel.endswith(".py"):
            text = open(src, encoding="utf-8").read()
            if "# BEGIN SOLUTION" in text:
                n += len(regions(text, rel))
                with open(dst, "w", encoding="utf-8") as f:
                    f.write(strip_solutions(text, rel))
                continue
        shutil.copy2(src, dst)
    return n


def leaks(student: str, root: str = REPO, min_len: int = 12) -> list[str]:
    """Solution text left in a student tree: markers, private files, or any line of a region's body (a code line
    of at least `min_len` characters, not a block header such as `with torch.no_grad():`) found in any text file of
    the tree. -> problems, [] when clean."""
    problems = []
    for rel in SKIP_PATHS | {"tests"}:
        if os.path.exists(os.path.join(student, rel)):
            problems.append(f"{rel} is in the student tree")
    lines: dict[str, str] = {}
    for rel in repo_files(student):
        try:
            text = open(os.path.join(student, rel), encoding="utf-8").read()
        except (UnicodeDecodeError, OSError):
            continue
        if any(BEGIN.match(line) or END.match(line) for line in text.split("\n")):
            problems.append(f"{rel}: a solution marker is left")
        for line in text.split("\n"):
            lines.setdefault(line.strip(), rel)
    for rel, regs in marked_files(root).items():
        for r in regs:
            for line in r["body"]:
                code = line.split("  #")[0].strip()
                if len(code) >= min_len and not code.startswith("#") and not code.endswith(":"):  # not `with ...:`
                    hit = [where for text, where in lines.items() if code in text]
                    if hit:
                        problems.append(f"ex{r['ex']} solution line of {rel} found in {hit[0]}: {code}")
    return problems


# ----------------------------------------------------------------------------- grading


def grader_files(exercises=None) -> list[str]:
    files = sorted(f for f in os.listdir(GRADERS) if f.startswith("test_ex") and f.endswith(".py"))
    return [os.path.join(GRADERS, f) for f in files if exercises is None or f[7:9] in exercises]


def declared_points() -> dict[tuple[str, str], float]:
    """{(exercise, test name): points} read from the graders' source, so that a test that never ran still counts
    in the maximum."""
    out = {}
    for path in grader_files():
        ex = os.path.basename(path)[7:9]
        points = None
        for line in open(path, encoding="utf-8"):
            m = re.match(r"@pytest\.mark\.points\(([0-9.]+)\)", line.strip())
            if m:
                points = float(m.group(1))
            m = re.match(r"def (test_\w+)\(", line)
            if m and points is not None:
                out[(ex, m.group(1))] = points
                points = None
    return out


def exercise_files(root: str = REPO) -> list[str]:
    """The files a student edits: those with solution regions (grpo_vanilla.py, ..., common/sampling.py, ...)."""
    return sorted(rel for rel, regs in marked_files(root).items() if regs)


def find_submission(sub: str, follow_links: bool = True) -> tuple[dict[str, str], list[str]]:
    """Locate the exercise files in a submission -> ({relative path in the tree: file in the submission}, notes).
    Accepts a whole tree, a tree zipped as one folder (sub/handout/...), or only the edited files (flat, as
    Gradescope stores files uploaded one by one): each exercise file is taken from the tree's root if there is one,
    else from the one file of that name in the submission. Links are not followed unless follow_links."""
    sub = os.path.abspath(sub)
    found: dict[str, list[str]] = {}
    for d, dirs, files in os.walk(sub, followlinks=False):
        dirs[:] = sorted(x for x in dirs if not x.startswith((".", "__MACOSX")) and x not in SKIP_DIRS - {"tests"})
        if os.path.relpath(d, sub).count(os.sep) > 6:
            dirs[:] = []
        for f in files:
            found.setdefault(f, []).append(os.path.join(d, f))
    roots = sorted((os.path.dirname(p) for p in found.get("grpo_vanilla.py", [])), key=lambda p: (p.count(os.sep), p))
    root = roots[0] if roots else None
    taken, notes = {}, []
    for rel in exercise_files():
        cands = [os.path.join(root, rel)] if root and os.path.lexists(os.path.join(root, rel)) else []
        if not cands:
            named = found.get(os.path.basename(rel), [])
            cands = [p for p in named if p.endswith(os.sep + rel)] or named
        if len(cands) > 1:
            notes.append(f"{rel}: {len(cands)} files of that name in the submission; none taken")
            continue
        if not cands:
            continue
        path = cands[0]
        if os.path.islink(path) and not follow_links:
            notes.append(f"{rel}: a link in the submission; not taken")
            continue
        if os.path.isfile(path):
            taken[rel] = path
    return taken, notes


def build_graded_tree(sub: str, out: str, follow_links: bool = True) -> tuple[dict[str, str], list[str]]:
    """The tree that is graded: a fresh student tree built from this kit, with the submission's exercise files
    copied over it. Nothing else of the submission is used (not its graders, weights, data or common/ modules)."""
    make(out, force=True)
    taken, notes = find_submission(sub, follow_links)
    for rel, path in taken.items():
        with open(path, "rb") as f:
            data = f.read()
        with open(os.path.join(out, rel), "wb") as f:
            f.write(data)
    return taken, notes


def grade(tree: str, exercises=None, outcome: bool = True, quiet: bool = True, user: str | None = None) -> list[dict]:
    """Grade a submission (a tree, a folder holding one, or the edited files) -> one record per test: exercise,
    test, name, points, score, feedback. The graders run here (a pytest process of the kit's code); the
    submission's code runs only in their child process (assignments/sandbox.py), as `user` if given."""
    from assignments.sandbox import hand_over, sandbox_user

    ids = sandbox_user(user)
    if exercises is not None:
        exercises = set(exercises)
    if not outcome:
        exercises = (exercises or set(EXERCISES)) - {OUTCOME}
    files = grader_files(exercises)
    work = tempfile.mkdtemp(prefix="assignments_grade_")
    private = tempfile.mkdtemp(prefix="assignments_results_")  # the grader's only: the child cannot reach it
    try:
        graded = os.path.join(work, "tree")
        taken, notes = build_graded_tree(tree, graded, follow_links=ids is None)
        scratch = os.path.join(work, "scratch")
        os.makedirs(scratch)
        if ids is not None:
            os.chmod(work, 0o711)
            hand_over(graded, ids)
            hand_over(scratch, ids)
        results = os.path.join(private, "results.json")
        env = dict(os.environ, ASSIGN_TREE=graded, ASSIGN_SCRATCH=scratch, ASSIGN_RESULTS=results,
                   ASSIGN_USER=user or "", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=REPO,
                   PYTHONDONTWRITEBYTECODE="1")
        cmd = [sys.executable, "-m", "pytest", *files, "-q", "-p", "no:cacheprovider", "--import-mode=importlib",
               "-c", os.path.join(GRADERS, "pytest.ini"), "--rootdir", GRADERS, "--tb=no", "-rN"]
        # the graders' process is a subreaper that kills whatever the graded code left before it writes the results
        # (graders/conftest.py); nothing is reaped here, where other grades may run at the same time (selfcheck)
        p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=quiet, text=True)
        records = json.load(open(results, encoding="utf-8")) if os.path.exists(results) else []
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(private, ignore_errors=True)
    ran = {(r["exercise"], r["test"]) for r in records}
    declared = declared_points()
    for (ex, test), points in declared.items():
        if (ex, test) not in ran and (exercises is None or ex in exercises):
            why = (p.stdout or "").strip().splitlines()[-1:] if quiet else []
            records.append({"exercise": ex, "test": test, "name": test, "points": points, "score": 0.0,
                            "feedback": f"the grader did not run ({' '.join(why) or 'collection error'})",
                            "duration": 0.0})
    order = {key: i for i, key in enumerate(declared)}  # the graders' order
    return sorted(records, key=lambda r: (r["exercise"], order.get((r["exercise"], r["test"]), len(order))))


def summary(records: list[dict]) -> list[tuple[str, float, float, str]]:
    """[(exercise, score, max, feedback)] per exercise."""
    rows = []
    for ex in sorted({r["exercise"] for r in records}):
        rs = [r for r in records if r["exercise"] == ex]
        fb = list(dict.fromkeys(r["feedback"] for r in rs if r["feedback"] and r["score"] < r["points"]))
        if not fb:
            fb = [r["feedback"] for r in rs if r["feedback"]] or ["all checks pass"]
        rows.append((ex, sum(r["score"] for r in rs), sum(r["points"] for r in rs), "; ".join(fb)))
    return rows


def fmt(x: float) -> str:
    return f"{x:g}"


def table(records: list[dict], width: int = 118) -> str:
    rows = summary(records)
    out = [f"{'exercise':<48} {'points':>9}  feedback"]
    for ex, score, mx, fb in rows:
        name = f"ex{ex} {EXERCISES.get(ex, '')}"
        first, rest = fb, ""
        limit = width - 61
        if len(fb) > limit:
            cut = fb.rfind(" ", 0, limit)
            first, rest = fb[:cut], fb[cut + 1:]
        out.append(f"{name:<48} {fmt(score) + ' / ' + fmt(mx):>9}  {first}")
        while rest:
            cut = rest.rfind(" ", 0, limit) if len(rest) > limit else len(rest)
            cut = cut if cut > 0 else len(rest)
            out.append(" " * 61 + rest[:cut])
            rest = rest[cut + 1:]
    total, mx = sum(r[1] for r in rows), sum(r[2] for r in rows)
    out.append(f"total: {fmt(round(total, 4))} / {fmt(mx)}")
    return "\n".join(out)


def gradescope(records: list[dict], seconds: float) -> dict:
    """Gradescope's autograder results (results.json): one entry per test, the total as "score"."""
    tests = []
    for i, r in enumerate(records):
        tests.append({"name": f"ex{r['exercise']} {EXERCISES.get(r['exercise'], '')}: {r['name']}",
                      "number": f"{int(r['exercise'])}.{sum(1 for q in records[:i] if q['exercise'] == r['exercise']) + 1}",
                      "score": r["score"], "max_score": r["points"],
                      "output": r["feedback"] or "passed", "visibility": "visible"})
    total = round(sum(r["score"] for r in records), 4)
    return {"score": total, "execution_time": round(seconds, 1), "visibility": "visible",
            "output": f"total: {fmt(total)} / {fmt(sum(r['points'] for r in records))}", "tests": tests}
