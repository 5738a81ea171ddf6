"""Prompt files, in the formats the releases use:
- .jsonl: one JSON object per line with a "prompt" (GenEval metadata and other keys are kept);
- .json: a JSON array of objects (or of strings), or JSON lines under a .json name (STAGE's
  `evaluation_metadata_flow_grpo.json`, `train_ocr_tag.json`, `geneval_and_t2i_data_final.json`);
- .txt: one prompt per line (OCR `test_ocr.txt`, HPS `test.txt`).
An object without "prompt" but with "caption" (LlamaGen's `train_data.json`) uses the caption as its prompt, and one
with "conversations" (AR-GRPO's `coco_captions_30000.json`) the first turn's "value".

The presets name their files under data/; SOURCES says how to get each one, and a missing one is reported with it.
"""

from __future__ import annotations

import json
import os

EXTENSIONS = (".jsonl", ".json", ".txt")

_GENEVAL_EVAL = "data/geneval/evaluation_metadata.jsonl"
SOURCES = {  # files the presets name -> how to make or fetch them
    _GENEVAL_EVAL: "download GenEval's prompts/evaluation_metadata.jsonl (553 prompts, github.com/djghosh13/geneval)",
    "data/geneval/stage_train.jsonl": "python -m common.coco_prompts --n 50000 --ratio stage --exclude "
                                      f"{_GENEVAL_EVAL} --out data/geneval/stage_train.jsonl (STAGE App. B.1 ratio)",
    "data/geneval/train.jsonl": "Flow-GRPO's 50k GenEval training metadata, or: python -m common.coco_prompts --n "
                                f"50000 --ratio uniform --exclude {_GENEVAL_EVAL} --out data/geneval/train.jsonl",
    "data/t2i_r1/geneval_and_t2i_data_final.json": "the STAGE / T2I-R1 release's geneval_and_t2i_data_final.json "
                                                    "(7223 rows with task_type, nouns, spatial_info, numeracy_info)",
    "data/ocr/train_ocr_tag.json": "the STAGE release's train_ocr_tag.json (Flow-GRPO's ~20k OCR training prompts, "
                                   "each with its target text in double quotes)",
    "data/hps/hps_train_metadata.json": "a JSON list of {\"prompt\": ...} (GCPO's Janus HPS training prompts; the file "
                                        "is not in its public release: HPDv2's training prompts are the usual choice)",
    "data/hps/train_data.json": "the GCPO release's llamaGen/data/train_data.json (15,000 {\"caption\": ...} rows)",
    "data/coco/coco_captions_30000.json": "the AR-GRPO release's dataset/coco_captions_30000.json (30k COCO captions)",
    "data/ocr/test_ocr.txt": "Flow-GRPO's OCR test prompts (its dataset/ocr/test.txt, 1018 lines, each quoting the "
                             "text to render)",
    "data/drawbench/prompts.txt": "DrawBench's 200 prompts (Imagen, Saharia et al. 2022), one per line",
    "data/imagenet/train_images.txt": "python -m common.imagenet_prompts --train-dir IMAGENET/train --out "
                                      "data/imagenet/train_images.txt (one class id per training image)",
}


def unique_keys(pairs: list[tuple]) -> dict:
    """json's object_pairs_hook that refuses an object with a key twice (json keeps the last one silently)."""
    seen = {}
    for k, v in pairs:
        if k in seen:
            raise ValueError(f"duplicate key {k!r} in one JSON object")
        seen[k] = v
    return seen


def _row(obj, where: str) -> dict:
    if isinstance(obj, str):
        obj = {"prompt": obj}
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "prompt" not in obj and isinstance(obj.get("caption"), str):
        obj = {**obj, "prompt": obj["caption"]}
    turns = obj.get("conversations")
    if "prompt" not in obj and isinstance(turns, list) and turns and isinstance(turns[0], dict):
        obj = {**obj, "prompt": turns[0].get("value")}
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{where}: missing or empty \"prompt\" string")
    return obj


class Prompts(list):
    """The rows of a prompt file; .where[i] names row i's origin ("file:line") for error messages."""

    where: list[str]


def _json_lines(path: str, lines) -> list[dict]:
    rows, where = Prompts(), []
    for lineno, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line, object_pairs_hook=unique_keys)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
        except ValueError as e:  # a key twice: which value was meant?
            raise ValueError(f"{path}:{lineno}: {e}") from None
        rows.append(_row(obj, f"{path}:{lineno}"))
        where.append(f"{path}:{lineno}")
    rows.where = where
    return rows


def load_prompts(path: str) -> list[dict]:
    """Rows {"prompt": str, ...other metadata kept}; raises with a one-line message."""
    if not os.path.isfile(path):
        how = SOURCES.get(os.path.normpath(path).replace(os.sep, "/"))
        raise FileNotFoundError(f"prompt file not found: {path}" + (f"; get it: {how}" if how else ""))
    ext = os.path.splitext(path)[1].lower()
    if ext not in EXTENSIONS:
        raise ValueError(f"unsupported prompt file {path}: use .jsonl (one JSON object per line), .json (a JSON "
                         f"array or JSON lines) or .txt (one prompt per line)")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if ext == ".txt":
        rows = Prompts({"prompt": line.strip()} for line in text.splitlines() if line.strip())
        rows.where = [f"{path}:{n}" for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    elif ext == ".json" and text.lstrip().startswith("["):
        try:
            data = json.loads(text, object_pairs_hook=unique_keys)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        rows = Prompts(_row(obj, f"{path}: item {i}") for i, obj in enumerate(data))
        rows.where = [f"{path}: item {i}" for i in range(len(data))]
    else:
        rows = _json_lines(path, text.splitlines())
    if not rows:
        raise ValueError(f"prompt file {path} contains no prompts")
    return rows
