"""Prompt files, in the formats the releases use:
- .jsonl: one JSON object per line with a "prompt" (GenEval metadata and other keys are kept);
- .json: a JSON array of objects (or of strings), or JSON lines under a .json name (STAGE's
  `evaluation_metadata_flow_grpo.json`, `train_ocr_tag.json`, `geneval_and_t2i_data_final.json`);
- .txt: one prompt per line (OCR `test_ocr.txt`, HPS `test.txt`).
An object without "prompt" but with "caption" (LlamaGen's `train_data.json`) uses the caption as its prompt.
"""

from __future__ import annotations

import json
import os

EXTENSIONS = (".jsonl", ".json", ".txt")


def _row(obj, where: str) -> dict:
    if isinstance(obj, str):
        obj = {"prompt": obj}
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "prompt" not in obj and isinstance(obj.get("caption"), str):
        obj = {**obj, "prompt": obj["caption"]}
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{where}: missing or empty \"prompt\" string")
    return obj


def _json_lines(path: str, lines) -> list[dict]:
    rows = []
    for lineno, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
        rows.append(_row(obj, f"{path}:{lineno}"))
    return rows


def load_prompts(path: str) -> list[dict]:
    """Rows {"prompt": str, ...other metadata kept}; raises with a one-line message."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"prompt file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext not in EXTENSIONS:
        raise ValueError(f"unsupported prompt file {path}: use .jsonl (one JSON object per line), .json (a JSON "
                         f"array or JSON lines) or .txt (one prompt per line)")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if ext == ".txt":
        rows = [{"prompt": line.strip()} for line in text.splitlines() if line.strip()]
    elif ext == ".json" and text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
        rows = [_row(obj, f"{path}: item {i}") for i, obj in enumerate(data)]
    else:
        rows = _json_lines(path, text.splitlines())
    if not rows:
        raise ValueError(f"prompt file {path} contains no prompts")
    return rows
