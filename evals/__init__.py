"""Evaluation behind evaluate.py: the benchmarks, the papers' sampling recipes as presets, and the shared loop.

BENCHMARKS: name -> module (evals/<name>.py) with DEFAULT_PROMPTS, check(rows, opts) (one-line ValueError, no model
built) and Scorer (score(images, rows) -> (per-image records, arrays or None), summarize, table, caption).
evals/runner.py samples, shards, resumes and writes the per-image JSONL; evals/cli.py ties them to the command line.

PRESETS: the sampling recipe of each paper table (flags given explicitly still win). "cite" names the paper's
section; docs/evaluation.md gives the command behind every table.
"""
from __future__ import annotations

import importlib

BENCHMARKS = {
    "geneval": "evals.geneval",  # GenEval's rules over Mask2Former + CLIP colours, or the toy's detector
    "ocr": "evals.ocr",  # Flow-GRPO's OCR test prompts: mean edit-distance reward and exact match
    "prefs": "evals.prefs",  # HPSv2.1, CLIP score, MANIQA, Qwen judge: mean ± standard error
    "imagenet": "evals.imagenet",  # class-conditional FID / IS (/ precision, recall) against ADM's reference batch
}

_JANUS = dict(dtype="bfloat16", cfg_scale=5.0, temperature=1.0, top_k=0, n=4, template="train", seed=0,
              benchmark="geneval", prompts="data/geneval/evaluation_metadata.jsonl", detector="coco")
_AR_T2I = dict(model="llamagen-t2i-xl", cfg_scale=2.0, temperature=1.0, top_k=2000, n=4, seed=0)

PRESETS: dict[str, dict] = {
    # today's toy evaluation (the defaults): ShapeWorld's 55 held-out prompts x 4, the toy's detector
    "toy": dict(model="toy", benchmark="geneval", prompts="data/shapeworld/eval.jsonl", detector="shapeworld",
                cfg_scale=3.0, temperature=1.0, top_k=0, n=4, seed=1234, dtype="float32"),
    # STAGE §4.1 and App. B.1: Janus-Pro-7B, 384x384, CFG 5 ("the official Janus-Pro configuration"), T 1; GenEval's
    # 553 prompts x 4 (the release's reason_inference_geneval.py). The paper gives no evaluation seed: 0 here.
    "stage_janus7b_geneval": dict(_JANUS, model="janus-pro-7b"),
    # STAGE §4.1 and App. B.1, OCR reward: Flow-GRPO's 1018 OCR test prompts, one image each (cal_ocr_score.py)
    "stage_janus7b_ocr": dict(_JANUS, model="janus-pro-7b", benchmark="ocr", prompts="data/ocr/test_ocr.txt", n=1,
                              detector="shapeworld"),
    # GCPO §6.1 and App. A.1: Janus-Pro-7B / 1B, CFG 5, T 1, 384x384; GenEval 553 x 4
    "gcpo_janus7b_geneval": dict(_JANUS, model="janus-pro-7b"),
    "gcpo_janus1b_geneval": dict(_JANUS, model="janus-pro-1b"),
    # AR-GRPO §4.1 and Table 2: LlamaGen c2i XL-384, CFG 2.0, top-k 0, top-p 1, T 1, 50 images per class (50k),
    # 384 outputs resized to 256 for FID/IS (the release's test.py: seed 0)
    "ar_grpo_c2i": dict(model="llamagen-c2i-xl", benchmark="imagenet", prompts="data/imagenet/class_ids.txt",
                        cfg_scale=2.0, temperature=1.0, top_k=0, n=50, seed=0, eval_size=256, dtype="bfloat16"),
    # the AR-GRPO release's ImageNet protocol (test.py, test.sh, collect_fid.sh, fid_evaluation.py): the same
    # sampling (seed 0, CFG 2.0, top-k 0, top-p 1, 50 per class) in fp16, samples kept at native 384 px, truncated to
    # uint8 and handed to OpenAI's TensorFlow evaluator as one .npz against VIRTUAL_imagenet256_labeled.npz
    "ar_grpo_c2i_release": dict(model="llamagen-c2i-xl", benchmark="imagenet", prompts="data/imagenet/class_ids.txt",
                                cfg_scale=2.0, temperature=1.0, top_k=0, top_p=1.0, n=50, seed=0, eval_size=0,
                                dtype="float16", export="adm"),
    # AR-GRPO §4.2 (Table 3): LlamaGen t2i XL-256 stage I, CFG 2 ("train and inference 2.0"), top-k 2000
    # (test_t2i.py), GenEval 553 x 4 (the release's script samples at CFG 4.0: the paper's 2.0 is pinned here)
    "ar_grpo_t2i_geneval": dict(_AR_T2I, benchmark="geneval", prompts="data/geneval/evaluation_metadata.jsonl",
                                detector="coco", dtype="bfloat16"),
    # AR-GRPO §4.2 (Table 4): DrawBench as the release runs it (test_t2i_rewards_drawbench.sh): its
    # benchmark/drawbench/drawbench_test_1000.json (200 prompts x 5 rows) x --sample_num 4 = 20 images per prompt;
    # the same sampling; HPSv2.1 and CLIP score (B/32, as its reward)
    "ar_grpo_t2i_drawbench": dict(_AR_T2I, benchmark="prefs", prompts="data/drawbench/drawbench_test_1000.json",
                                  metrics="hps,clip", dtype="bfloat16"),
}


def benchmark(name: str):
    """The module of benchmark `name`, or ValueError in one line."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return importlib.import_module(BENCHMARKS[name])


def preset(name: str) -> dict:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]
