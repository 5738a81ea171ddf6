"""Prompt files, in the formats the releases use:
- .jsonl: one JSON object per line with a "prompt" (GenEval metadata and other keys are kept);
- .json: a JSON array of objects (or of strings), or JSON lines under a .json name (STAGE's
  `evaluation_metadata_flow_grpo.json`, `train_ocr_tag.json`, `geneval_and_t2i_data_final.json`);
- .txt: one prompt per line (OCR `test_ocr.txt`, HPS `test.txt`).
An object without "prompt" but with "caption" (LlamaGen's `train_data.json`) uses the caption as its prompt, and one
with "conversations" (AR-GRPO's `coco_captions_30000.json`) the first turn's "value".

The presets name their files under data/, each the release's own file where the release ships one; SOURCES names
the file's path in its release and its download address (or how to make a fallback), and a missing file is
reported with it.
"""

from __future__ import annotations

import json
import os

EXTENSIONS = (".jsonl", ".json", ".txt")

_GENEVAL_EVAL = "data/geneval/evaluation_metadata.jsonl"
_STAGE = "https://github.com/krennic999/STAGE/raw/main/"
_GCPO = "https://github.com/zghhui/GCPO/raw/master/"
_AR_GRPO = "https://github.com/Kwai-Klear/AR-GRPO/raw/main/"
SOURCES = {  # files the presets name -> where the release keeps them (download it as the preset names it), or how
    # to make a fallback
    _GENEVAL_EVAL: "download GenEval's prompts/evaluation_metadata.jsonl (553 prompts, github.com/djghosh13/geneval)",
    "data/geneval/evaluation_metadata_flow_grpo.json": f"the STAGE release's data/janus_geneval_prompts/"
        f"evaluation_metadata_flow_grpo.json ({_STAGE}data/janus_geneval_prompts/evaluation_metadata_flow_grpo.json); "
        "fallback: python -m common.coco_prompts --n 50000 --ratio stage --exclude "
        f"{_GENEVAL_EVAL} --out data/geneval/evaluation_metadata_flow_grpo.json (App. B.1's tag ratio)",
    "data/geneval/geneval_train_metadata.jsonl": f"the GCPO release's janus/data/geneval_train_metadata.jsonl "
        f"({_GCPO}janus/data/geneval_train_metadata.jsonl); fallback: python -m common.coco_prompts --n 50000 "
        f"--ratio uniform --exclude {_GENEVAL_EVAL} --out data/geneval/geneval_train_metadata.jsonl",
    "data/t2i_r1/geneval_and_t2i_data_final.json": f"the STAGE release's data/geneval_and_t2i_data_final.json "
        f"({_STAGE}data/geneval_and_t2i_data_final.json, 7223 rows with task_type, nouns, spatial_info, numeracy_info)",
    "data/ocr/train_ocr_tag.json": f"the STAGE release's data/train_ocr_tag.json ({_STAGE}data/train_ocr_tag.json: "
        "Flow-GRPO's ~20k OCR training prompts, each with its target text in double quotes)",
    "data/hps/hps_train_metadata.json": f"the GCPO release's janus/data/hps_train_metadata.json "
        f"({_GCPO}janus/data/hps_train_metadata.json, rows with a \"prompt\")",
    "data/hps/train_data.json": f"the GCPO release's llamaGen/data/train_data.json ({_GCPO}llamaGen/data/"
        "train_data.json, 15,000 {\"caption\": ...} rows)",
    "data/coco/coco_captions_30000.json": f"the AR-GRPO release's dataset/coco_captions_30000.json "
        f"({_AR_GRPO}dataset/coco_captions_30000.json, 30k COCO captions)",
    "data/ocr/test_ocr.txt": f"the STAGE release's data/test_ocr.txt ({_STAGE}data/test_ocr.txt: Flow-GRPO's OCR "
        "test prompts, 1018 lines, each quoting the text to render)",
    "data/drawbench/drawbench_test_1000.json": f"the AR-GRPO release's benchmark/drawbench/drawbench_test_1000.json "
        f"({_AR_GRPO}benchmark/drawbench/drawbench_test_1000.json: DrawBench's 200 prompts x 5 rows)",
    "data/drawbench/prompts.txt": "DrawBench's 200 prompts (Imagen, Saharia et al. 2022), one per line",
    "data/imagenet/train_images.txt": "python -m common.imagenet_prompts (writes it from the shipped "
                                      "data/imagenet/train_counts.tsv: one class id per ImageNet training image, "
                                      "1,281,167 lines; or --devkit-meta DEVKIT/data/meta.mat, --train-dir "
                                      "IMAGENET/train)",
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
