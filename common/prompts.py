"""Prompt files: .jsonl (one JSON object per line, GenEval metadata allowed) or .txt."""

from __future__ import annotations

import json
import os


def load_prompts(path: str) -> list[dict]:
    """Rows {"prompt": str, ...other metadata kept}; raises with a one-line message."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"prompt file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".jsonl", ".txt"):
        raise ValueError(f"unsupported prompt file {path}: use .jsonl (one JSON object per line) or .txt")
    rows: list[dict] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            if ext == ".txt":
                rows.append({"prompt": line})
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            prompt = row.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"{path}:{lineno}: missing or empty \"prompt\" string")
            rows.append(row)
    if not rows:
        raise ValueError(f"prompt file {path} contains no prompts")
    return rows
