"""Evaluate any model the scripts train, a base model by name, a run's checkpoint or an export, on a benchmark.

    python evaluate.py                                         # the toy on ShapeWorld's held-out GenEval prompts
    python evaluate.py --checkpoint runs/grpo_vanilla_s0       # a run's latest checkpoint, next to its base model
    python evaluate.py --preset stage_janus7b_geneval --prompts evaluation_metadata.jsonl --device cuda
    torchrun --nproc-per-node 8 evaluate.py --preset ar_grpo_c2i --ref-stats VIRTUAL_imagenet256_labeled.npz

Benchmarks (--benchmark): geneval (GenEval's per-tag table), ocr (edit-distance reward, exact match), prefs
(HPSv2.1, CLIP score, MANIQA, Qwen judge: mean ± s.e.), imagenet (FID, IS, precision/recall).
Presets (--preset, the papers' sampling recipes; explicit flags win): toy, stage_janus7b_geneval, stage_janus7b_ocr,
gcpo_janus7b_geneval, gcpo_janus1b_geneval, ar_grpo_c2i, ar_grpo_c2i_release, ar_grpo_t2i_geneval,
ar_grpo_t2i_drawbench.
Per-image results go to <out>/<model>/results.rank*.jsonl as they are scored: run the same command again to resume.
--export geneval / adm also writes the samples for GenEval's own scorer and OpenAI's FID suite (docs/evaluation.md).
See docs/evaluation.md for each protocol and the command behind each paper table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import tyro

from common.cli import parse
from evals.cli import main, with_preset


@dataclass
class Args:
    preset: str = ""
    """a paper's sampling recipe (listed above; '' = none); explicit flags override its values"""
    benchmark: str = "geneval"
    """geneval, ocr, prefs or imagenet"""
    model: str = ""
    """backend name or weights/export directory ('' = toy, or the checkpoint's base model)"""
    checkpoint: str = ""
    """a run directory, its checkpoints/ or one checkpoints/step_* directory ('' = the base model only)"""
    baseline: bool = True
    """with --checkpoint: also evaluate the base model, the first row of the table"""
    prompts: str = ""
    """the benchmark's prompt / metadata file ('' = its default)"""
    n: Annotated[int, tyro.conf.arg(aliases=("--images-per-prompt",))] = 4
    """images per prompt (per class for imagenet); under torchrun spell it --images-per-prompt"""
    seed: int = 1234
    """seed of the sampling noise: image j of prompt p is the same on any number of ranks"""
    cfg_scale: float = 3.0
    """classifier-free guidance scale (1 = none)"""
    temperature: float = 1.0
    """sampling temperature"""
    top_k: int = 0
    """top-k filtering (0 = all tokens)"""
    top_p: float = 1.0
    """top-p filtering (1 = off)"""
    dtype: str = "float32"
    """policy dtype: float32, bfloat16 or float16"""
    template: str = "train"
    """Janus-Pro prompt template (common/janus.py TEMPLATES)"""
    detector: str = "shapeworld"
    """geneval: shapeworld (the toy's), coco (Mask2Former + CLIP colours) or a folder from rewards.convert_mask2former"""
    metrics: str = "hps,clip"
    """prefs: comma-separated hps, clip, maniqa, qwen_label, qwen_fake, qwen_weird"""
    ref_stats: str = "weights/fid/VIRTUAL_imagenet256_labeled.npz"
    """imagenet: ADM's reference batch (mu, sigma; arr_0 for precision/recall)"""
    inception_weights: str = ""
    """imagenet: torch-fidelity's Inception .pth ('' = $FID_INCEPTION_WEIGHTS or weights/fid/)"""
    eval_size: int = 256
    """imagenet: resize images to this size before the Inception network (0 = keep)"""
    precision_recall: bool = False
    """imagenet: also precision and recall (k = 3) against the reference images"""
    ocr_engine: str = "rapidocr"
    """ocr: rapidocr (offline, PP-OCRv6 ONNX) or paddleocr (the STAGE release's engine; downloads its models)"""
    export: str = ""
    """also hand the samples to an official evaluator (comma-separated; implies --save-images): geneval (images/ in
    GenEval's layout for its evaluate_images.py) or adm (samples.npz, arr_0 uint8 NxHxWx3, for OpenAI's FID suite)"""
    batch_size: int = 64
    """images sampled at once per rank"""
    out: str = ""
    """output folder ('' = runs/eval/<benchmark>-<hash of the settings>: the same command resumes)"""
    grid: str = ""
    """also copy the last model's grid of samples to this path ('' = only <out>/<model>/grid.png)"""
    save_images: bool = False
    """also write every image as PNG (<out>/<model>/images/<prompt>/samples/<image>.png)"""
    progress: bool = True
    """show a progress bar"""
    device: str = "auto"
    """auto, cpu or cuda"""


if __name__ == "__main__":
    main(with_preset(Args, parse(Args, description=__doc__)))
