"""The documentation's links resolve: docs/<page>.md references (in .py files, README.md and docs/*.md) name pages that
exist, with anchors that match a heading; relative Markdown links point at existing files; nothing cites material
outside the repository; README.md stays a front door. Plain file reads, no imports of the project."""
from __future__ import annotations

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_DIRS = {".git", ".venv", "venv", "runs", "weights", "data", "__pycache__", "node_modules", ".pytest_cache"}
OUTSIDE = ("../" + "shared", "shared" + "/specs")  # split so this file does not match itself
README_MAX_LINES = 220

DOC_REF = re.compile(r"(?<![\w./-])docs/([\w.-]+\.md)(#[\w-]+)?")
MD_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _py_files() -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".")]
        out += [os.path.join(dirpath, f) for f in filenames if f.endswith(".py")]
    return sorted(out)


def _md_files() -> list[str]:
    docs = os.path.join(ROOT, "docs")
    pages = sorted(os.path.join(docs, f) for f in os.listdir(docs) if f.endswith(".md")) if os.path.isdir(docs) else []
    return [os.path.join(ROOT, "README.md")] + pages


def _rel(path: str) -> str:
    return os.path.relpath(path, ROOT)


def _slug(heading: str) -> str:
    """GitHub's heading anchor: lowercase, punctuation dropped (letters, digits, '_', '-' and spaces kept),
    spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", _read(path)).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _check_target(target_file: str, anchor: str | None, where: str) -> str | None:
    if not os.path.exists(target_file):
        return f"{where}: {_rel(target_file)} does not exist"
    if anchor and target_file.endswith(".md") and anchor not in _anchors(target_file):
        return f"{where}: no heading for #{anchor} in {_rel(target_file)}"
    return None


def test_docs_page_references_exist():
    """Every `docs/<page>.md[#anchor]` named in a .py file, README.md or a docs page exists (and the anchor is a
    heading of that page)."""
    problems = []
    for path in _py_files() + _md_files():
        for lineno, line in enumerate(_read(path).splitlines(), 1):
            for m in DOC_REF.finditer(line):
                anchor = m.group(2)[1:] if m.group(2) else None
                p = _check_target(os.path.join(ROOT, "docs", m.group(1)), anchor, f"{_rel(path)}:{lineno}")
                if p:
                    problems.append(p)
    assert not problems, "\n".join(problems)


def test_markdown_links_resolve():
    """Relative links (and images) in README.md and docs/*.md point at existing files and headings."""
    problems = []
    for path in _md_files():
        text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), _read(path))
        for lineno, line in enumerate(text.splitlines(), 1):
            for m in MD_LINK.finditer(line):
                target = m.group(1).strip("<>")
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                    continue
                file_part, _, anchor = target.partition("#")
                target_file = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
                if not target_file.startswith(ROOT):
                    problems.append(f"{_rel(path)}:{lineno}: {target} leaves the repository")
                    continue
                p = _check_target(target_file, anchor or None, f"{_rel(path)}:{lineno}")
                if p:
                    problems.append(p)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("kind", ["markdown", "python"])
def test_no_citations_outside_the_repository(kind):
    files = _md_files() if kind == "markdown" else _py_files()
    problems = [f"{_rel(path)}:{lineno}: {line.strip()[:100]}"
                for path in files
                for lineno, line in enumerate(_read(path).splitlines(), 1)
                if any(s in line for s in OUTSIDE)]
    assert not problems, "cites files outside the repository:\n" + "\n".join(problems)


def test_no_machine_paths_in_docs():
    """No absolute path of a particular machine (home, root, temporary or mount folders) in the docs."""
    machine = re.compile(r"(?<![\w.:/])/(home|root|Users|tmp|mnt|work)/")
    problems = [f"{_rel(path)}:{lineno}" for path in _md_files()
                for lineno, line in enumerate(_read(path).splitlines(), 1) if machine.search(line)]
    assert not problems, "absolute machine paths in the docs:\n" + "\n".join(problems)


def test_readme_is_a_front_door():
    n = len(_read(os.path.join(ROOT, "README.md")).splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}: move reference to docs/)"
