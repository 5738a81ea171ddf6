"""The floor plan, read from the source: every .py file of the repository is parsed with `ast`, and every import in
it, at module level or inside a function (lazy imports count), becomes an edge between the project's modules.

The rule enforced:
1. no import cycle: the graph of project modules has no strongly connected component of more than one module;
2. common/ is the ground floor: no module in common/ imports rewards/, a top-level script or the tests, and the only
   import of toy/ from common/ is common/models.py importing toy.model (the toy model's word encoder, config and
   weights folder, which load_model("tiny" | "toy") builds);
3. toy/ sits on common/: no module in toy/ imports rewards/, a top-level script or the tests, except toy/train.py,
   itself a script (it scores its model with the GenEval judge of rewards/geneval.py);
4. rewards/ may import common/ and toy/, never a top-level script or the tests;
5. nor by name: no module of common/, rewards/ or toy/ hands a top-level script's module name to
   importlib.import_module, __import__, importlib.util.find_spec or runpy (common/memory.py once read the scripts'
   presets that way, a circle through common.run that the graph did not see).
An import names the most specific project module it reaches (`from common import checkpoint` is common.checkpoint);
a package's __init__ is not added for its submodules; other strings handed to importlib (the rewards registry) are
not edges of the graph.
"""
import ast
import os
import re

from conftest import REPO

PACKAGES = ("common", "rewards", "toy")
SKIP_DIRS = {".venv", ".git", "runs", "data", "weights", "docs", "__pycache__", ".pytest_cache", "shared"}


def project_modules() -> dict[str, str]:
    """module name -> path: the packages' modules, the top-level scripts, and tests/*.py (importable by bare name,
    as pytest puts tests/ on sys.path)."""
    modules = {}
    for root, dirs, files in os.walk(REPO):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(root, f), REPO)[:-3].split(os.sep)
            if rel[0] == "tests":
                rel = rel[1:]
            elif rel[-1] == "__init__":
                rel = rel[:-1]
            modules[".".join(rel)] = os.path.join(root, f)
    return modules


def imports(path: str, name: str, modules: dict[str, str]) -> set[str]:
    """The project modules that the file imports anywhere (module level, functions, classes)."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package, up level - 1
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(p for p in [*parts, base] if p)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # the most specific project module it names
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
                break  # `from a.b import c`: c (a module) or else a.b, not both
    return found


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports(path, name, modules) for name, path in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def floor(module: str) -> str:
    """common, rewards, toy, or "script" (top-level files) / "tests"."""
    top = module.split(".")[0]
    if top in PACKAGES:
        return top
    return "script" if os.path.exists(os.path.join(REPO, f"{top}.py")) else "tests"


def test_the_graph_is_read():
    """The reader sees module-level, lazy (inside a function) and `from package import module` imports."""
    g = graph()
    assert "common.llamagen" in g["common.models"]  # module level
    assert "toy.detector" in g["rewards.geneval"]  # lazy, inside a function
    assert "common.checkpoint" in g["common.run"]  # from common import checkpoint
    assert {"common.models", "rewards.geneval", "toy.model"} <= set(g) and "helpers" in g


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_floors():
    bad = []
    for module, targets in graph().items():
        for target in sorted(targets):
            here, there = floor(module), floor(target)
            if here == "common" and (there in ("rewards", "script", "tests")
                                     or (there == "toy" and (module, target) != ("common.models", "toy.model"))):
                bad.append(f"{module} -> {target}")
            if here == "toy" and there in ("rewards", "script", "tests") and module != "toy.train":
                bad.append(f"{module} -> {target}")
            if here in ("rewards", "toy") and there in ("script", "tests"):
                bad.append(f"{module} -> {target}")
    assert bad == [], "imports against the floor plan (see this file's docstring): " + ", ".join(sorted(set(bad)))


def test_cycles_are_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


BY_NAME = {"import_module", "__import__", "find_spec", "run_module", "spec_from_file_location"}


def imported_by_name(path: str, scripts: set[str]) -> set[str]:
    """The top-level scripts a file may import by name: the literal first argument of its importlib.import_module /
    __import__ / find_spec / runpy calls; for a computed argument (a loop over a tuple of names, an f-string) every
    string constant of the file that is a script's module name (the test follows no data flow, so it counts them
    all)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    found = set()
    for call in ast.walk(tree):
        if not (isinstance(call, ast.Call) and getattr(call.func, "attr", getattr(call.func, "id", None)) in BY_NAME):
            continue
        first = call.args[0] if call.args else None
        names = {first.value} if isinstance(first, ast.Constant) and isinstance(first.value, str) else strings
        for name in names:
            if re.fullmatch(r"\w+(\.\w+)*", name) and name.split(".")[0] in scripts and not name.endswith(".py"):
                found.add(name.split(".")[0])
    return found


def test_packages_never_import_a_script():
    """Rules 2-5: common/, rewards/ and toy/ import no top-level script, by an import statement or by name."""
    modules = project_modules()
    scripts = {m for m in modules if floor(m) == "script"}
    assert {"stage", "gcpo", "ar_grpo", "grpo_vanilla", "bench", "evaluate"} <= scripts
    bad = []
    for module, path in modules.items():
        if floor(module) in PACKAGES:
            bad += [f"{module} -> {t}" for t in sorted(imports(path, module, modules)) if floor(t) == "script"]
            bad += [f"{module} -> {t} (by name)" for t in sorted(imported_by_name(path, scripts))]
    assert bad == [], "a package imports a top-level script (see this file's docstring): " + ", ".join(bad)


def test_imports_by_name_are_found(tmp_path):
    """The reader sees a literal name, a name from a loop over a tuple, and __import__; a package's own module and a
    string that only mentions a script's file are no script import."""
    f = tmp_path / "m.py"
    f.write_text("import importlib\nSCRIPTS = ('stage', 'gcpo')\n"
                 "mods = [importlib.import_module(s) for s in SCRIPTS]\nx = __import__('ar_grpo.sub')\n")
    assert imported_by_name(str(f), {"stage", "gcpo", "ar_grpo", "bench"}) == {"stage", "gcpo", "ar_grpo"}
    f.write_text("import importlib\nHELP = 'see bench.py'\nNAME = 'bench.py'\n"
                 "m = importlib.import_module('common.x')\n")
    assert imported_by_name(str(f), {"bench"}) == set()
