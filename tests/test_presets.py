"""Every preset of stage.py, gcpo.py and ar_grpo.py rehearsed end to end on CPU.

A rehearsal runs the preset's own code path (`--preset NAME`: its model name, dtype, prompt file, rewards and
evaluation) for 2 steps, with the architectures shrunk (tests/rehearsal_assets.py: a tiny random Janus in a
Hugging Face cache under the real hub ids, tiny official-layout LlamaGen .pt files and FLAN-T5 in $LLAMAGEN_DIR,
tiny random reward models behind the real loaders' environment variables) and only the batch shrunk on the
command line. The working directory is a fresh folder holding just the preset's files, so a fall-back to the
toy's relative paths would fail, and the runner records every file opened. Each rehearsal asserts what would
otherwise fail silently:
- the run exits 0 and the parameters move;
- under `--dtype bfloat16` (mixed precision) they move by a comparable amount to float32 (ratio of the step-1 ->
  step-2 update norms >= 0.8); the pure-bf16 preset (AR-GRPO t2i release) moves too (by less: that is what pure bf16
  does at lr 1e-5). This check depends on the script, the model and the precision only: mixed precision keeps
  float32 master weights, so neither the learning rate nor its schedule changes the ratio; pure bf16 rounds each
  update into bf16 weights, so there the learning rate and schedule count too. It runs once per such key
  (PRECISION_CASE), on the first of its presets, and the others of the key only check that they move;
- the rewards the preset names were called, with the preset file's metadata;
- the evaluation ran with the real-image GenEval detector where the preset evaluates, and not at all elsewhere;
- no ShapeWorld file was read.
"""
from __future__ import annotations

import json
import os

import pytest

from common.prompts import load_prompts
from rehearsal_assets import param_delta, rehearse, rehearsal_env  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

# GenEval rows on classes the tiny random Mask2Former finds in some images and not in others (one or two hot dogs,
# teddy bears; scissors, a bear), so that the partial (STAGE) and strict (GCPO) GenEval rewards vary within a group
# and the update is not zero. (Tags other than "counting" keep detections above 0.3; counting needs 0.9.)
GENEVAL_ROWS = [
    {"tag": "two_object", "include": [{"class": "hot dog", "count": 2}], "prompt": "a photo of two hot dogs"},
    {"tag": "two_object", "include": [{"class": "teddy bear", "count": 2}], "prompt": "a photo of two teddy bears"},
    {"tag": "single_object", "include": [{"class": "scissors", "count": 1}], "prompt": "a photo of a pair of scissors"},
    {"tag": "two_object", "include": [{"class": "bear", "count": 1}, {"class": "scissors", "count": 1}],
     "prompt": "a photo of a bear and a pair of scissors"},
]
T2I_R1_ROWS = [
    {"prompt": "a red cat", "nouns": ["cat"], "attr_nouns": ["red cat"], "task_type": "color"},
    {"prompt": "a cat left of a dog", "nouns": ["cat", "dog"], "task_type": "spatial",
     "spatial_info": {"obj1": "cat", "obj2": "dog", "locality": "on the left of"}},
    {"prompt": "two dogs", "nouns": ["dog"], "task_type": "numeracy", "numeracy_info": [{"obj_name": "dog", "num": 2}]},
    {"prompt": "a cup and a car", "nouns": ["cup", "car"], "task_type": "complex"},
]
OCR_ROWS = [{"prompt": 'a sign that says "Hello"', "tag": "ocr"}, {"prompt": 'a cup with "OPEN" on it', "tag": "ocr"},
            {"prompt": 'a poster reading "red cat"', "tag": "ocr"}, {"prompt": 'a car labelled "TAXI"', "tag": "ocr"}]
CAPTIONS = ["a red cat on a car", "two dogs and a cup", "a blue cup left of a cat", "a green car"]


def _jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


# preset -> the files it names, with content its reward can score (written relative to the working directory)
FILES = {
    "geneval_train": ("data/geneval/evaluation_metadata_flow_grpo.json", _jsonl(GENEVAL_ROWS)),  # JSON lines
    "gcpo_geneval_train": ("data/geneval/geneval_train_metadata.jsonl", _jsonl(GENEVAL_ROWS)),
    "geneval_eval": ("data/geneval/evaluation_metadata.jsonl", _jsonl(GENEVAL_ROWS[:2])),
    "t2i_r1": ("data/t2i_r1/geneval_and_t2i_data_final.json", _jsonl(T2I_R1_ROWS)),  # JSON lines under .json
    "ocr": ("data/ocr/train_ocr_tag.json", _jsonl(OCR_ROWS)),
    "janus_hps": ("data/hps/hps_train_metadata.json", json.dumps([{"prompt": c} for c in CAPTIONS])),
    "llamagen_hps": ("data/hps/train_data.json", json.dumps([{"caption": c} for c in CAPTIONS])),
    "imagenet": ("data/imagenet/train_images.txt", "".join(f"{i}\n" for i in (0, 0, 1, 7, 7, 7, 999))),
    "coco_captions": ("data/coco/coco_captions_30000.json", json.dumps(
        [{"id": i, "conversations": [{"from": "human", "value": c}, {"from": "gpt", "value": ""}]}
         for i, c in enumerate(CAPTIONS)])),
}
GENEVAL_MODEL = ("geneval_coco",)
PAPER = {"clip", "hps", "maniqa", "qwen_label", "qwen_fake", "qwen_weird"}
# (script, preset): (files, reward names, evaluates with the COCO detector)
CASES = {
    ("stage.py", "geneval_paper"): (["geneval_train", "geneval_eval"], {"geneval_coco"}, True),
    ("stage.py", "hps_mix_paper"): (["t2i_r1"], {"hps_git_gdino"}, False),
    ("stage.py", "ocr_paper"): (["ocr"], {"ocr"}, False),
    ("gcpo.py", "llamagen_hps_paper"): (["llamagen_hps"], {"hps"}, False),
    ("gcpo.py", "janus1b_geneval_paper"): (["gcpo_geneval_train", "geneval_eval"], {"geneval_coco_strict"}, True),
    ("gcpo.py", "janus1b_hps_paper"): (["janus_hps"], {"hps"}, False),
    ("gcpo.py", "janus7b_geneval_paper"): (["gcpo_geneval_train", "geneval_eval"], {"geneval_coco_strict"}, True),
    ("gcpo.py", "janus7b_hps_paper"): (["janus_hps"], {"hps"}, False),
    ("stage.py", "geneval_release"): (["geneval_train", "geneval_eval"], {"geneval_coco"}, True),
    ("stage.py", "hps_mix_release"): (["t2i_r1"], {"hps_git_gdino"}, False),
    ("stage.py", "ocr_release"): (["ocr"], {"ocr"}, False),
    ("gcpo.py", "llamagen_hps_release"): (["llamagen_hps"], {"hps"}, False),
    ("gcpo.py", "janus1b_geneval_release"): (["gcpo_geneval_train", "geneval_eval"], {"geneval_coco_strict"}, True),
    ("gcpo.py", "janus1b_hps_release"): (["janus_hps"], {"hps"}, False),
    ("ar_grpo.py", "c2i_paper"): (["imagenet"], PAPER, False),
    ("ar_grpo.py", "c2i_release"): (["imagenet"], PAPER, False),
    ("ar_grpo.py", "t2i_paper"): (["coco_captions"], PAPER, False),
    ("ar_grpo.py", "t2i_release"): (["coco_captions"], PAPER, False),
}
# RapidOCR's real models read no text in a random model's images: the OCR reward is 0 for every image, so the
# advantages are 0 and the weights cannot move. Its movement and bf16 checks train on the tiny HPS model instead.
CONSTANT_ON_TINY = {("stage.py", "ocr_paper"): ["--reward", "hps"], ("stage.py", "ocr_release"): ["--reward", "hps"]}


def _precision_key(script: str, preset: str) -> tuple:
    """What the bf16-vs-float32 movement check depends on (see the module doc)."""
    a = __import__(script[:-3]).Args(**__import__(script[:-3]).PRESETS[preset])
    key = (script, a.model, a.dtype)
    return key + (a.lr, a.lr_schedule, a.lr_warmup_ratio, a.lr_min_ratio) if a.dtype == "bfloat16-pure" else key


# precision key -> the rehearsal that runs the check for every preset of that key: one whose reward varies on the
# tiny models, preferably one without the GenEval evaluation (the cheapest to run twice)
PRECISION_CASE = {}
for _case in sorted(CASES, key=lambda c: (c in CONSTANT_ON_TINY, CASES[c][2], c)):
    PRECISION_CASE.setdefault(_precision_key(*_case), _case)
# only the prompts per step and the run length are shrunk (and micro-batches off); everything else is the preset's
SMALL = ["--num-steps", "2", "--prompts-per-step", "2", "--micro-batch-size", "0", "--eval-samples", "1",
         "--image-every", "0", "--save-every", "1", "--keep-last", "3", "--out-dir", "runs"]


def _workdir(tmp_path, files):
    for key in files:
        rel, text = FILES[key]
        os.makedirs(tmp_path / os.path.dirname(rel), exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_every_preset_is_rehearsed():
    import ar_grpo
    import gcpo
    import stage

    names = {(f"{m.__name__}.py", p) for m in (stage, gcpo, ar_grpo) for p in m.PRESETS if p != "toy"}
    assert names == set(CASES)


def _run(script, preset, dtype, cfg, cwd, env, extra=()):
    args = ["--preset", preset, *SMALL, *extra] + ([] if dtype == cfg["dtype"] else ["--dtype", dtype])
    code, rec, out, err = rehearse(script, args, cwd=str(cwd), env=env, timeout=900)
    assert code == 0, f"{preset} {dtype}: exit {code}\n{err[-3000:]}"
    return rec, param_delta(str(cwd / "runs" / f"{script[:-3]}_s0"), 1, 2)


@pytest.mark.parametrize("script, preset", sorted(CASES))
def test_preset_rehearsal(script, preset, rehearsal_env, tmp_path):
    files, reward_names, evaluates = CASES[(script, preset)]
    if "ocr" in reward_names:  # RapidOCR is an optional install (requirements-rewards.txt)
        pytest.importorskip("rapidocr")
    cfg = __import__(script[:-3]).PRESETS[preset]

    # the preset itself, in its own dtype
    cwd = _workdir(tmp_path / "preset", files)
    rec, delta = _run(script, preset, cfg["dtype"], cfg, cwd, rehearsal_env)
    # the preset's rewards, fed the rows of the preset's own training file
    assert {r["name"] for r in rec["rewards"]} == reward_names
    rows = load_prompts(str(cwd / FILES[files[0]][0]))
    assert all(r["metadata0"] in rows for r in rec["rewards"]), [r["metadata0"] for r in rec["rewards"]]
    # the preset's evaluation: the real-image detector before and after training, or none
    if evaluates:
        assert [e["args"]["judge"] for e in rec["evals"]] == ["GenEvalJudge('coco')"] * 2
        assert all(e["n_metadata"] == 2 for e in rec["evals"])
    else:
        assert rec["evals"] == []
    # never a ShapeWorld file (prompts, evaluation prompts, weights)
    toy = [p for p in rec["opened"] if f"{os.sep}shapeworld" in p]
    assert not toy, toy

    # the weights move, by a comparable amount in bf16 mixed precision and in float32
    extra = CONSTANT_ON_TINY.get((script, preset), [])
    if extra:
        assert all(v == 0 for r in rec["rewards"] for v in r["values"]) and delta == 0
    if PRECISION_CASE[_precision_key(script, preset)] != (script, preset):  # that rehearsal checks this precision
        assert extra or delta > 0, "the parameters did not move"
        return
    deltas = {}
    for dtype in ("bfloat16", "float32"):
        if dtype == cfg["dtype"] and not extra:
            deltas[dtype] = delta
        else:
            deltas[dtype] = _run(script, preset, dtype, cfg, _workdir(tmp_path / dtype, files), rehearsal_env,
                                 [*extra, "--eval-samples", "0"])[1]  # the evaluation does not change the update
    assert deltas["float32"] > 0, "the parameters did not move in float32"
    ratio = deltas["bfloat16"] / deltas["float32"]
    assert ratio >= 0.8, f"bf16 mixed precision moved the parameters {ratio:.3f}x as much as float32"
    if cfg["dtype"] == "bfloat16-pure":  # the AR-GRPO t2i release: updates at lr 1e-5 mostly round away
        assert delta > 0
