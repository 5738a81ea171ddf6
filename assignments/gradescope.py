"""Gradescope: the autograder zip (`python -m assignments gradescope --out autograder.zip`) and what its
run_autograder does (`python -m assignments gradescope-run`).

Gradescope's layout (its documentation): the zip is unpacked into /autograder/source and setup.sh runs there once
when the image is built; for each submission it runs /autograder/source/run_autograder as root, with the student's
upload in /autograder/submission (as uploaded: a whole tree, one folder, or single files), and reads
/autograder/results/results.json: `tests[]` with name, score, max_score, output, visibility (visible, hidden,
after_due_date, after_published), a top-level score, output, execution_time.

setup.sh installs the requirements into a virtual environment (CPU torch) and creates the unprivileged account
SANDBOX_USER. run_autograder locks /autograder/source and /autograder/results (root only), grades the submission
(assignments/kit.py grade: a fresh student tree with the submission's exercise files; the graded code runs as
SANDBOX_USER) and always writes results.json, an autograder failure included. AUTOGRADER_ROOT moves /autograder
(tests simulate the layout), AUTOGRADER_PYTHON the interpreter, AUTOGRADER_SANDBOX_USER the account ('' = none),
ASSIGN_SANDBOX_PYTHON the graded code's interpreter (default: the grader's, setup.sh's world-readable venv;
assignments/sandbox.py).
"""
from __future__ import annotations

import json
import os
import re
import resource
import stat
import sys
import time
import zipfile

from assignments import kit

SANDBOX_USER = "gs_student"
VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")
CONFIG = os.path.join("assignments", "gradescope.json")

SETUP = """#!/usr/bin/env bash
# Gradescope runs this once, as root, in /autograder/source, when it builds the autograder's image.
set -euo pipefail
cd "$(dirname "$0")"
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
PY="${{AUTOGRADER_PYTHON:-python3}}"
if ! command -v "$PY" >/dev/null 2>&1; then apt-get update && apt-get install -y python3 python3-venv python3-pip; fi
"$PY" -m venv "$ROOT/venv"
"$ROOT/venv/bin/python" -m pip install --no-cache-dir --upgrade pip
"$ROOT/venv/bin/python" -m pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "{torch}"
"$ROOT/venv/bin/python" -m pip install --no-cache-dir -r requirements.txt
chmod -R a+rX "$ROOT/venv"
# the account the graded code runs as: no home, no shell, no group of the grader's
id -u {user} >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin {user}
"""

RUN = """#!/usr/bin/env bash
# Gradescope runs this, as root, for each submission; it always leaves /autograder/results/results.json.
set -u
ROOT="${AUTOGRADER_ROOT:-/autograder}"
PY="${AUTOGRADER_PYTHON:-$ROOT/venv/bin/python}"
export PYTHONDONTWRITEBYTECODE=1
cd "$ROOT/source" || exit 1
exec "$PY" -m assignments gradescope-run --root "$ROOT"
"""


def parse_visibility(spec: str) -> dict[str, str]:
    """'10=after_due_date,07=hidden' -> {"10": "after_due_date", "07": "hidden"}; ValueError in one line."""
    out = {}
    for part in filter(None, (p.strip() for p in (spec or "").split(","))):
        ex, _, vis = part.partition("=")
        ex = ex.strip().removeprefix("ex").zfill(2)
        if ex not in kit.EXERCISES:
            raise ValueError(f"--visibility {part}: exercises are {', '.join(kit.EXERCISES)}")
        if vis not in VISIBILITIES:
            raise ValueError(f"--visibility {part}: visibility is one of {', '.join(VISIBILITIES)}")
        out[ex] = vis
    return out


def torch_requirement() -> str:
    for line in open(os.path.join(kit.REPO, "requirements.txt"), encoding="utf-8"):
        m = re.match(r"\s*(torch\s*[=<>!~][^#\s]*)", line)
        if m:
            return m.group(1).replace(" ", "")
    return "torch"


def build(out: str, visibility: dict[str, str], user: str = SANDBOX_USER, exercises: list[str] | None = None) -> int:
    """Write the autograder zip -> the number of files. Its root: setup.sh, run_autograder and the repository
    (the reference and the kit, without tests/ and assignments/private/), plus assignments/gradescope.json."""
    config = {"visibility": visibility, "sandbox_user": user, "exercises": exercises or sorted(kit.EXERCISES)}
    files = kit.repo_files(kit.REPO)
    tmp = out + ".tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in (("setup.sh", SETUP.format(torch=torch_requirement(), user=user)),
                           ("run_autograder", RUN)):
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFREG | 0o755) << 16
            z.writestr(info, text)
        for rel in files:
            if rel != CONFIG:
                z.write(os.path.join(kit.REPO, rel), rel)
        z.writestr(CONFIG, json.dumps(config, indent=1))
    os.replace(tmp, out)
    return len(files) + 2


def results(records: list[dict], seconds: float, visibility: dict[str, str], notes: list[str]) -> dict:
    """Gradescope's results.json: one test per graded check, each with its exercise's visibility."""
    res = kit.gradescope(records, seconds)
    for r, t in zip(records, res["tests"]):
        t["visibility"] = visibility.get(r["exercise"], "visible")
    shown = [(r, t) for r, t in zip(records, res["tests"]) if t["visibility"] == "visible"]
    got, mx = sum(r["score"] for r, _ in shown), sum(r["points"] for r, _ in shown)
    hidden = len(records) - len(shown)
    res["output"] = (f"visible checks: {kit.fmt(round(got, 4))} / {kit.fmt(mx)}"
                     + (f" ({hidden} more checks are shown later)" if hidden else "")
                     + "".join(f"\n{n}" for n in notes))
    return res


def write_json(path: str, doc: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
    os.replace(tmp, path)


def run(root: str) -> int:
    """run_autograder's work: grade /autograder/submission, write /autograder/results/results.json (always)."""
    t0 = time.time()
    source, sub, out = (os.path.join(root, d) for d in ("source", "submission", "results"))
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "results.json")
    try:
        config = json.load(open(os.path.join(source, CONFIG), encoding="utf-8"))
        user = os.environ.get("AUTOGRADER_SANDBOX_USER", config.get("sandbox_user", SANDBOX_USER)) or None
        visibility = config.get("visibility", {})
        if user:
            for d in (source, out):  # the graded code's account cannot read the kit or the results
                os.chown(d, 0, 0)
                os.chmod(d, 0o700)
        taken, notes = kit.find_submission(sub, follow_links=False)
        graded = ", ".join(sorted(taken)) or "none"
        missing = [rel for rel in kit.exercise_files() if rel not in taken]
        notes = [f"graded files: {graded}"] + ([f"not in the submission (graded blank): {', '.join(missing)}"]
                                               if missing else []) + notes
        records = kit.grade(sub, exercises=config.get("exercises"), user=user)
        doc = results(records, time.time() - t0, visibility, notes)
        code = 0
    except BaseException as e:  # noqa: BLE001 — the student must see a result, never an autograder failure
        doc = {"score": 0.0, "execution_time": round(time.time() - t0, 1), "tests": [],
               "output": f"the autograder failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
        code = 1
    write_json(path, doc)
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(f"autograder: {doc.get('score', 0)} points in {time.time() - t0:.1f} s wall; peak memory "
          f"{peak / 1024:.0f} MiB (largest process); results in {path}", file=sys.stderr)
    return code
