"""Gradescope end to end (assignments/gradescope.py) and forging attempts against the trusted grader.

The autograder zip is built with `python -m assignments gradescope`, unpacked into a simulated
<tmp>/autograder/{source,submission,results} (AUTOGRADER_ROOT), and its run_autograder is run for each submission.
The end-to-end tests and the first forging test run the graded code as the grader's account
(AUTOGRADER_SANDBOX_USER=''): the attempts that process separation alone defeats. test_forging_as_sandbox_user runs
it as `nobody` (the zip's setup.sh creates a dedicated account), the attempts that need the privilege drop; it needs
root, and skips with the reason where that or an interpreter `nobody` can run is missing (sandbox_python).
"""
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile

import pytest

from conftest import REPO

sys.path.insert(0, REPO)
from assignments import kit  # noqa: E402

TOP_FIELDS = {"score", "execution_time", "output", "output_format", "visibility", "stdout_visibility", "tests",
              "leaderboard", "extra_data", "test_output_format", "test_name_format"}
TEST_FIELDS = {"score", "max_score", "status", "name", "name_format", "number", "output", "output_format", "tags",
               "visibility", "extra_data"}
VISIBILITIES = {"visible", "hidden", "after_due_date", "after_published"}


# the forging attempts that process separation alone defeats (test_forging_attempts_score_as_blank, as the
# grader's own account); the others need the privilege drop (test_forging_as_sandbox_user)
WITHOUT_DROP = {"blank tree", "atexit prelude rewriting the results", "writing results.json directly",
                "a daemon rewriting the results after the grader's child ends",
                "monkeypatching torch.allclose and torch.equal", "editing the grader files in the submission"}


def world_dir():
    """A temporary folder every account can enter and read (the test's tmp_path is root's only)."""
    d = tempfile.mkdtemp(prefix="gs_world_")
    os.chmod(d, 0o755)
    return d


@pytest.fixture(scope="module")
def sandbox_python():
    """(account, interpreter) for the privilege drop: `nobody`, and an interpreter it can run with this
    environment's packages: this one, or else a throwaway venv of the system's python of this version in a
    world-readable folder, whose site-packages holds a .pth naming this environment's site-packages (a venv whose
    interpreter lives under a folder only root can enter, e.g. a pyenv in root's home). Skips with the reason."""
    from assignments.sandbox import can_run

    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("the privilege drop needs the tests to run as root")
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no account `nobody` to drop to")
    ids = pw.pw_uid, pw.pw_gid
    if can_run(sys.executable, ids):
        yield "nobody", sys.executable
        return
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = [p for p in dict.fromkeys(shutil.which(version, path=d) for d in os.defpath.split(":") if d) if p]
    folder = world_dir()
    try:
        paths = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
        for i, py in enumerate(system):
            venv = os.path.join(folder, f"venv{i}")
            if subprocess.run([py, "-m", "venv", "--without-pip", venv], capture_output=True, timeout=120).returncode:
                continue
            lib = subprocess.run([os.path.join(venv, "bin", "python"), "-I", "-c",
                                  "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, timeout=60).stdout.strip()
            with open(os.path.join(lib, "grading_env.pth"), "w") as f:
                f.write("".join(p + "\n" for p in paths))
            python = os.path.join(venv, "bin", "python")
            if can_run(python, ids):
                yield "nobody", python
                return
        pytest.skip(f"`nobody` cannot run {sys.executable}, nor a venv of a system {version} with this "
                    "environment's packages (a folder above them closed to it?)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def build_zip(path, *flags):
    p = subprocess.run([sys.executable, "-m", "assignments", "gradescope", "--out", str(path), *flags], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return path


def simulate(zip_path, root, fill, drop=None):
    """Unpack the autograder into root/source, let fill(submission) write the upload, run run_autograder (with
    drop = (account, interpreter): the graded code runs as that account; else as the grader's)."""
    shutil.rmtree(root, ignore_errors=True)
    for d in ("source", "submission", "results"):
        os.makedirs(os.path.join(root, d))
    with zipfile.ZipFile(zip_path) as z:
        z.extractall(os.path.join(root, "source"))
    fill(os.path.join(root, "submission"))
    env = dict(os.environ, AUTOGRADER_ROOT=str(root), AUTOGRADER_PYTHON=sys.executable,
               AUTOGRADER_SANDBOX_USER=drop[0] if drop else "")
    env.pop("ASSIGN_SANDBOX_PYTHON", None)
    if drop:
        env["ASSIGN_SANDBOX_PYTHON"] = drop[1]
    p = subprocess.run(["bash", os.path.join(root, "source", "run_autograder")], env=env, capture_output=True,
                       text=True, timeout=600)
    res = os.path.join(root, "results", "results.json")
    assert os.path.exists(res), p.stdout[-2000:] + p.stderr[-2000:]
    return json.load(open(res)), p


def validate(res):
    """results.json against Gradescope's documented fields."""
    assert set(res) <= TOP_FIELDS, set(res) - TOP_FIELDS
    assert isinstance(res["tests"], list) and res["tests"]
    for t in res["tests"]:
        assert set(t) <= TEST_FIELDS, set(t) - TEST_FIELDS
        assert isinstance(t["name"], str) and isinstance(t["output"], str)
        assert isinstance(t["score"], (int, float)) and isinstance(t["max_score"], (int, float))
        assert 0 <= t["score"] <= t["max_score"] and t["visibility"] in VISIBILITIES
    assert abs(res["score"] - sum(t["score"] for t in res["tests"])) < 1e-6
    assert isinstance(res["execution_time"], (int, float))


def reference_files():
    return {rel: os.path.join(REPO, rel) for rel in ("grpo_vanilla.py", "stage.py", "gcpo.py", "ar_grpo.py",
                                                     "assignments/counting_reward.py")}


def full_tree(dst):
    kit.make(dst)
    for rel, src in reference_files().items():
        shutil.copy(src, os.path.join(dst, rel))


@pytest.fixture(scope="module")
def week_zip(tmp_path_factory):
    return build_zip(tmp_path_factory.mktemp("zip") / "autograder.zip", "--only", "01,09", "--visibility",
                     "09=after_due_date")


def test_zip_layout(week_zip):
    """setup.sh and run_autograder at the root (executable), the source, no tests and no private kit"""
    with zipfile.ZipFile(week_zip) as z:
        names = set(z.namelist())
        mode = {i.filename: i.external_attr >> 16 for i in z.infolist()}
        config = json.loads(z.read("assignments/gradescope.json"))
    assert {"setup.sh", "run_autograder", "grpo_vanilla.py", "assignments/kit.py", "requirements.txt"} <= names
    assert mode["run_autograder"] & 0o111 and mode["setup.sh"] & 0o111
    assert not any(n.startswith(("tests/", "assignments/private/")) for n in names)
    assert config == {"visibility": {"09": "after_due_date"}, "sandbox_user": "gs_student", "exercises": ["01", "09"]}


def test_setup_sh(week_zip, tmp_path):
    """setup.sh (stubbed python, useradd, id): a venv, CPU torch at the requirements' pin, the requirements, the
    unprivileged account"""
    with zipfile.ZipFile(week_zip) as z:
        z.extractall(tmp_path / "source", members=["setup.sh", "requirements.txt"])
    stubs, log = tmp_path / "bin", tmp_path / "calls.log"
    stubs.mkdir()
    py = stubs / "python3"
    py.write_text(f'#!/usr/bin/env bash\necho "python $*" >> {log}\n'
                  'if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin"; cp "$0" "$3/bin/python"; fi\n')
    (stubs / "useradd").write_text(f'#!/usr/bin/env bash\necho "useradd $*" >> {log}\n')
    (stubs / "id").write_text("#!/usr/bin/env bash\nexit 1\n")
    for f in stubs.iterdir():
        f.chmod(0o755)
    env = dict(os.environ, PATH=f"{stubs}:{os.environ['PATH']}", AUTOGRADER_ROOT=str(tmp_path / "ag"),
               AUTOGRADER_PYTHON=str(py))
    p = subprocess.run(["bash", str(tmp_path / "source" / "setup.sh")], env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    calls = log.read_text()
    assert f"python -m venv {tmp_path / 'ag' / 'venv'}" in calls
    assert "--index-url https://download.pytorch.org/whl/cpu torch==" in calls
    assert "-m pip install --no-cache-dir -r requirements.txt" in calls
    assert "useradd --system --no-create-home --shell /usr/sbin/nologin gs_student" in calls


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["full tree", "folder-zipped tree", "edited files only"])
def test_gradescope_end_to_end(week_zip, tmp_path, shape):
    """the three shapes of upload score full marks on the zip's exercises, with valid results.json; the
    after_due_date exercise is marked so; peak memory and wall time are printed"""
    def fill(sub):
        if shape == "full tree":
            full_tree(sub)
        elif shape == "folder-zipped tree":
            full_tree(os.path.join(sub, "handout"))
        else:
            for rel, src in reference_files().items():
                shutil.copy(src, os.path.join(sub, os.path.basename(rel)))

    res, p = simulate(week_zip, tmp_path / "autograder", fill)
    validate(res)
    assert res["score"] == 17, res["output"] + "".join("\n" + t["output"] for t in res["tests"])
    assert {t["visibility"] for t in res["tests"] if t["name"].startswith("ex09")} == {"after_due_date"}
    assert {t["visibility"] for t in res["tests"] if t["name"].startswith("ex01")} == {"visible"}
    graded = res["output"].split("graded files: ")[1].splitlines()[0].split(", ")
    assert set(reference_files()) <= set(graded), res["output"]
    if shape == "edited files only":
        assert "not in the submission (graded blank): common/sampling.py" in res["output"]
    assert "peak memory" in p.stderr and " s wall" in p.stderr
    print(p.stderr.strip().splitlines()[-1])


def test_autograder_failure_still_writes_results(tmp_path):
    """a broken source (no config) still leaves a results.json the student sees, with score 0"""
    root = tmp_path / "ag"
    for d in ("source/assignments", "submission", "results"):
        os.makedirs(root / d)
    p = subprocess.run([sys.executable, "-m", "assignments", "gradescope-run", "--root", str(root)], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    res = json.load(open(root / "results" / "results.json"))
    assert p.returncode == 1 and res["score"] == 0 and res["output"].startswith("the autograder failed")


# ----------------------------------------------------------------------------- forging attempts

FULL = ('[{"exercise": "01", "test": "test_shape_and_per_group_mean", "name": "x", "points": 101, "score": 101, '
        '"feedback": "", "duration": 0}]')
RESULTS_GS = '{"score": 101, "tests": [{"name": "forged", "score": 101, "max_score": 101}]}'


def prelude(root, body):
    """Python put at the top of the student's grpo_vanilla.py; it knows the simulated layout's paths."""
    return (f"import glob as _g, os as _o, json as _j, shutil as _s, atexit as _a, sys as _sys\n"
            f"_ROOT = {str(root)!r}\n" + body + "\n")


WRITE_RESULTS = '''
def _forge():
    for p in [_o.environ.get("ASSIGN_RESULTS", ""), _ROOT + "/results/results.json"] + _g.glob(
            _o.path.join(__import__("tempfile").gettempdir(), "assignments_results_*", "results.json")):
        try:
            open(p, "w").write({full!r} if "assignments_results" in p or p == _o.environ.get("ASSIGN_RESULTS") else {gs!r})
        except Exception:
            pass
'''.format(full=FULL, gs=RESULTS_GS)

ATTEMPTS = {
    "atexit prelude rewriting the results": WRITE_RESULTS + "_a.register(_forge)\n",
    "a daemon rewriting the results after the grader's child ends": WRITE_RESULTS + '''
if _o.fork() == 0:  # a daemon that outlives the grader's child (its own session), rewriting for a while
    _o.setsid()
    import time as _t
    for _ in range(20):
        _forge(); _t.sleep(1)
    _o._exit(0)
''',
    "writing results.json directly": WRITE_RESULTS + "_forge()\n",
    "monkeypatching torch.allclose and torch.equal": '''
import torch as _torch, math as _m
_torch.allclose = lambda *a, **k: True
_torch.equal = lambda *a, **k: True
_m.isclose = lambda *a, **k: True
''',
    "deleting kit files": '''
for _p in [_ROOT + "/source", _ROOT + "/results"] + _g.glob(
        _o.path.join(__import__("tempfile").gettempdir(), "assignments_grade_*")):
    _s.rmtree(_p, ignore_errors=True)
for _p in _g.glob(_ROOT + "/source/assignments/**/*.py", recursive=True):
    try:
        _o.remove(_p)
    except Exception:
        pass
''',
    "loading the reference implementation": '''
def _reference():  # the kit's grpo_vanilla.py, imported as a module of its own (its dataclasses need sys.modules)
    import importlib.util as _u
    spec = _u.spec_from_file_location("_kit_reference", _ROOT + "/source/grpo_vanilla.py")
    mod = _sys.modules[spec.name] = _u.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return vars(mod)
try:
    _REF = _reference()
except Exception:
    _REF = None
''',
}

REFERENCE_FUNCS = '''

def group_advantages(rewards, eps=1e-4):
    if _REF is None:
        raise NotImplementedError("Exercise 01: see assignments/ex01.md")
    return _REF["group_advantages"](rewards, eps)
'''

FAKE_OUTCOME = '''
import torch


def group_advantages(rewards, eps=1e-4):
    return torch.zeros_like(rewards)


def kl_k3(logp, ref_logp):
    return torch.zeros_like(logp)


def grpo_loss(logp, old_logp, ref_logp, adv, clip_eps, beta):
    return (logp * 0).sum(), {"kl": torch.zeros(()), "clipfrac": torch.zeros(())}


if __name__ == "__main__":  # no training: a fake score line and the untouched weights as "the checkpoint"
    import sys
    from common.models import load_model
    from common.utils import save_safetensors
    out = sys.argv[sys.argv.index("--out-dir") + 1]
    d = out + "/outcome_s0/checkpoints/step_000060"
    os.makedirs(d, exist_ok=True)
    save_safetensors(load_model("toy").policy.state_dict(), d + "/policy.safetensors")
    print("held-out strict GenEval overall: before 0.274 -> after 0.900")
    raise SystemExit(0)
'''


def digest(folder):
    h = hashlib.sha256()
    for d, dirs, files in sorted(os.walk(folder)):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        for f in sorted(files):
            p = os.path.join(d, f)
            h.update(os.path.relpath(p, folder).encode() + open(p, "rb").read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def outcome_zip(tmp_path_factory):
    return build_zip(tmp_path_factory.mktemp("zip2") / "autograder.zip", "--only", "01,10")


def blank_fill(root, extra=None, tail=""):
    """The upload: a blank student tree, `extra` (a prelude) at the top of grpo_vanilla.py, `tail` at its end."""
    def fill(sub):
        kit.make(sub)
        path = os.path.join(sub, "grpo_vanilla.py")
        text = open(path).read()
        head, _, rest = text.partition("\nimport ")
        open(path, "w").write(head + "\n" + (prelude(root, extra) if extra else "") + "import " + rest + tail)
    return fill


@pytest.mark.slow
def test_forging_attempts_score_as_blank(outcome_zip, tmp_path):
    """as the grader's own account, each attempt that process separation alone defeats scores what the blank tree
    scores (0 on ex01 and ex10) and leaves the kit intact"""
    root = tmp_path / "autograder"
    with zipfile.ZipFile(outcome_zip) as z:
        z.extractall(tmp_path / "pristine")
    before = digest(tmp_path / "pristine")

    def graders_edited(sub):
        kit.make(sub)
        for f in os.listdir(os.path.join(sub, "assignments", "graders")):
            if f.startswith("test_"):
                open(os.path.join(sub, "assignments", "graders", f), "w").write(
                    "import pytest\n\n@pytest.mark.points(101)\ndef test_x():\n    pass\n")
        open(os.path.join(sub, "assignments", "kit.py"), "a").write("\ndef grade(*a, **k):\n    return []\n")

    cases = {"blank tree": blank_fill(root)}
    cases.update({name: blank_fill(root, body) for name, body in ATTEMPTS.items() if name in WITHOUT_DROP})
    cases["editing the grader files in the submission"] = graders_edited
    assert set(cases) == WITHOUT_DROP
    scores = {}
    for name, fill in cases.items():
        res, p = simulate(outcome_zip, root, fill)
        validate(res)
        scores[name] = res["score"]
        assert digest(root / "source") == before, f"{name}: the kit's source changed"
        print(f"{name}: {res['score']} / {sum(t['max_score'] for t in res['tests'])}")

    def fake(sub):
        kit.make(sub)
        path, main = os.path.join(sub, "grpo_vanilla.py"), 'if __name__ == "__main__":\n    args = cli(Args)'
        text = open(path).read()
        assert main in text
        open(path, "w").write(text.replace(main, FAKE_OUTCOME + "\n" + main, 1))

    res, _ = simulate(outcome_zip, root, fake)
    ex10 = [t for t in res["tests"] if t["name"].startswith("ex10")]
    scores["a fake outcome line and untouched weights"] = ex10[0]["score"]
    print(f"a fake outcome line and untouched weights: ex10 {ex10[0]['score']} ({ex10[0]['output']})")
    assert all(s == 0 for s in scores.values()), scores
    assert "unchanged" in ex10[0]["output"]


PROBE = """
import os


def probe(path):
    try:
        open(path).read()
        readable = True
    except OSError:
        readable = False
    return os.getuid(), readable
"""


def test_sandbox_as_nobody(sandbox_python, monkeypatch):
    """the real drop at the sandbox's level: the child and a spawned program (the outcome run's path) run as
    `nobody` with the chosen interpreter (ASSIGN_SANDBOX_PYTHON), read the graded tree, and cannot read a
    root-only folder beside it"""
    from assignments import outcome
    from assignments.sandbox import PYTHON_ENV, Sandbox, hand_over

    user, python = sandbox_python
    monkeypatch.setenv(PYTHON_ENV, python)
    assert outcome.command("out")[0] == python
    outer = world_dir()
    try:
        kit_dir, work = os.path.join(outer, "kit"), os.path.join(outer, "work")
        os.makedirs(kit_dir, mode=0o700)
        open(os.path.join(kit_dir, "reference.py"), "w").write("SECRET = 1\n")
        os.makedirs(os.path.join(work, "tree"))
        open(os.path.join(work, "tree", "student.py"), "w").write(PROBE)
        os.chmod(work, 0o711)  # as kit.grade: the account can pass through, not list
        ids = pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid
        hand_over(os.path.join(work, "tree"), ids)
        box = Sandbox(os.path.join(work, "tree"), user=user, scratch=os.path.join(work, "scratch"))
        try:
            uid, readable = box.module("student").probe(os.path.join(kit_dir, "reference.py"))
            assert uid == ids[0] and not readable
            code, out = box.spawn([python, "-c", "import os, torch; print('uid', os.getuid())"], timeout=120)
            assert code == 0 and f"uid {ids[0]}" in out, out
        finally:
            box.close()
    finally:
        shutil.rmtree(outer, ignore_errors=True)


@pytest.fixture(scope="module")
def ex01_zip(tmp_path_factory):
    return build_zip(tmp_path_factory.mktemp("zip3") / "autograder.zip", "--only", "01")


@pytest.mark.slow
def test_forging_as_sandbox_user(ex01_zip, sandbox_python):
    """the graded code runs as `nobody` (a real privilege drop): the reference tree's ex01 scores full marks (the
    account can run the interpreter and read the graded tree); the forging prelude, a student function that loads
    the reference implementation from the kit's source and one that deletes the kit's files each score what the
    blank tree scores (0), and the kit, its source folder and its results folder stay root's only and intact. The
    layout lives in a folder every account can enter, like /autograder, so only run_autograder's locks protect it."""
    outer = world_dir()
    try:
        root = os.path.join(outer, "autograder")
        with zipfile.ZipFile(ex01_zip) as z:
            z.extractall(os.path.join(outer, "pristine"))
        before = digest(os.path.join(outer, "pristine"))
        cases = {"reference tree (control)": full_tree, "blank tree": blank_fill(root),
                 "atexit prelude rewriting the results": blank_fill(root, ATTEMPTS["atexit prelude rewriting the "
                                                                                   "results"]),
                 "a student function that loads the reference": blank_fill(
                     root, ATTEMPTS["loading the reference implementation"], REFERENCE_FUNCS),
                 "deleting kit files": blank_fill(root, ATTEMPTS["deleting kit files"])}
        scores = {}
        for name, fill in cases.items():
            res, p = simulate(ex01_zip, root, fill, drop=sandbox_python)
            validate(res)
            scores[name] = res["score"]
            out = res["output"] + "".join("\n" + t["output"] for t in res["tests"])
            print(f"{name}: {res['score']} / {sum(t['max_score'] for t in res['tests'])}")
            assert digest(os.path.join(root, "source")) == before, f"{name}: the kit's source changed"
            for d in ("source", "results"):
                st = os.stat(os.path.join(root, d))
                assert st.st_uid == 0 and st.st_mode & 0o077 == 0, f"{name}: {d} is open to other accounts"
            if name.startswith("reference"):
                assert res["score"] == sum(t["max_score"] for t in res["tests"]) > 0, out
        assert all(s == 0 for n, s in scores.items() if not n.startswith("reference")), scores
    finally:
        shutil.rmtree(outer, ignore_errors=True)
