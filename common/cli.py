"""tyro's command-line parsing, with its parse errors in one line.

tyro reports a bad flag (unknown, missing value, wrong type, invalid choice) in a boxed panel of several lines:
a title, the message, the flag's help and a pointer to --help. `parse` keeps the message and tyro's "perhaps you
meant" suggestions and prints them as one line, `error: ...`, with exit status 2 (argparse's). --help and every
successful parse are untouched.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys


def one_line(panel: str, prog: str) -> str:
    """tyro's error panel -> `error: <message>[; perhaps --flag, ...] (see <prog> --help)`."""
    rows = []
    for line in panel.splitlines():  # the frame off (unicode sides, or none in ASCII), the indent kept
        line = line.rstrip().rstrip("│╮╯").rstrip()
        if line.lstrip()[:1] in ("│", "╭", "╰"):
            line = line.lstrip()[1:]
        rows.append((len(line) - len(line.lstrip()), line.strip().strip("─").strip()))
    rows = [(indent, text) for indent, text in rows if text and not set(text) <= set("-─")]  # rules (unicode, ASCII)
    lines = [text for _, text in rows]
    message = lines[1] if len(lines) > 1 else (lines[0] if lines else "cannot parse the command line")
    suggestions = []
    if "Perhaps you meant:" in lines:  # the suggested flags are the least indented lines below it, their help deeper
        below = [(indent, text) for indent, text in rows[lines.index("Perhaps you meant:") + 1 :]
                 if text.startswith("-")]
        top = min((indent for indent, _ in below), default=0)
        suggestions = [word for indent, text in below if indent == top
                       for word in text.replace(",", " ").split() if word.startswith("-")]
    hint = f"; perhaps {', '.join(dict.fromkeys(suggestions))}" if suggestions else ""
    return f"error: {message}{hint} (see {prog} --help)"


def _prog() -> str:
    """How this program was started: `python X.py` or `python -m package.module`."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return f"python -m {spec.name}" if spec is not None else f"python {os.path.basename(sys.argv[0])}"


def parse(args_cls, **kwargs):
    """tyro.cli(args_cls, **kwargs); a parse error exits 2 with one line on stderr (see the module docstring)."""
    import tyro  # here, so that importing a script needs no tyro (the paper benchmark runs where it is missing)

    panel = io.StringIO()
    try:
        with contextlib.redirect_stderr(panel):
            args = tyro.cli(args_cls, **kwargs)
    except SystemExit as e:
        if e.code in (0, None):  # --help
            sys.stderr.write(panel.getvalue())
            raise
        print(one_line(panel.getvalue(), _prog()), file=sys.stderr)
        sys.exit(2)
    sys.stderr.write(panel.getvalue())  # tyro's warnings, if any
    return args
