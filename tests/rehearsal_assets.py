"""Tiny stand-ins for every real model the presets name, so that a test can REHEARSE a preset on CPU in seconds:
the preset's own code path (model names, file resolution, strict loading, reward factories), with the
architectures shrunk.

    env = build_assets(root)          # a few MB of random weights under root, the env vars that point at them
    shrink()                          # in the process that loads them: the shrunk LlamaGen / HPS / MANIQA sizes
    rc, record, out, err = rehearse("stage.py", ["--preset", "geneval_paper", ...], cwd=tmp, env=env)

What is written (all random, seeded, deterministic):
- Janus-Pro-1B / 7B: a tiny transformers Janus (common/janus.py) in a genuine Hugging Face hub cache layout
  (hub/models--deepseek-community--Janus-Pro-1B/refs/main + snapshots/<commit>/...), found by
  `load_model("janus-pro-1b")` through HF_HUB_CACHE, offline. The real token grid (24 x 24 = 576 tokens);
  images of JANUS_IMAGE_SIZE px (the real 384 px decoder costs ~0.5 s per image on one CPU thread).
- LlamaGen: every file of common.llamagen.LLAMAGEN_CHECKPOINTS (iterated, so new entries are covered) in the
  release's format ({"model": state_dict}, official key names) in $LLAMAGEN_DIR, a tiny `flan-t5-xl` folder
  (word-level tokenizer + T5 encoder, save_pretrained) and `imagenet_classes.txt` (1000 names). The files
  match SHRUNK_GPT / SHRUNK_VQ, which `shrink_llamagen()` installs (load_model builds the OFFICIAL sizes).
- rewards: every model-backed reward of rewards.REWARDS (MODEL_REWARDS below). Each model is written in the
  hub cache under its REAL hub id (so the default, variable-free resolution finds it too) and the returned
  env vars point at those snapshot folders / files (the documented override path):
      GENEVAL_MASK2FORMER, GENEVAL_CLIP, CLIP_MODEL, HPS_CHECKPOINT, HPS_TOKENIZER, GIT_VQA_MODEL, GDINO_MODEL,
      MANIQA_WEIGHTS, QWEN_JUDGE.
  HPS (rewards/hps.py builds open_clip ViT-H-14 from `vit_h14_config()`) and MANIQA (rewards/maniqa.py builds
  `MANIQA()` at the KonIQ size) have their architecture fixed in code: `shrink_rewards()` patches those two
  names so the tiny files load strictly. OCR uses RapidOCR's bundled models (nothing to write).
  The tiny reward models are tuned to be cheap and to give finite, mostly image-dependent scores: CLIP, HPS,
  GIT and MANIQA (scores about 0.4-0.7) vary continuously; Mask2Former has peaked class logits so that it
  detects something, but what it detects is set by its queries more than by the image (on tiny-Janus samples:
  chair, tv, laptop, bear, hot dog, teddy bear, ... with counts varying by one), so GenEval rewards vary within
  a group only for prompts on those classes (partial credit, e.g. "a photo of a hot dog") and are nearly
  constant under the strict rules; the colour classifier gives one colour per class; RapidOCR finds no text
  in random images (ocr = 0); the Qwen2.5-VL judge is a programmed bigram model whose greedy reply is
  `{"score":1}` (a valid answer in one attempt, score 1 for every image).

Use in tests (pytest-xdist: each worker builds its own copy, ~3-6 s):

    from rehearsal_assets import rehearsal_env, rehearse, param_delta  # noqa: F401  (rehearsal_env: fixture)

    def test_x(rehearsal_env, tmp_path):
        rc, record, out, err = rehearse("gcpo.py", ["--preset", "janus1b_hps_paper", ...], cwd=tmp_path, env=rehearsal_env)

In-process (no subprocess): `apply_env(monkeypatch, env)` then `shrink(monkeypatch)`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Callable

import torch

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from common.llamagen import VQConfig  # noqa: E402  (torch only)

ASSETS_VERSION = 1

# ----------------------------------------------------------------------------------------------------
# The shrunk architectures (defined once; the files and the patches both read these)

T5_DIM = 16  # d_model of the tiny FLAN-T5 = caption_dim of the shrunk t2i GPTs
SHRUNK_GPT = dict(dim=32, n_head=2, multiple_of=16, vocab_size=64, caption_dim=T5_DIM)
# one depth per official preset, so that a file of the wrong size (B loaded as XL, ...) fails strict loading
SHRUNK_LAYERS = {"B": 1, "L": 2, "XL": 3, "XXL": 4, "3B": 5}
# VQ-16 (5 levels: 16x downsampling, so image_size / 16 is still the token grid), 8 channels: 256 / 384 px
# images decode in a few tens of ms each on one CPU thread
SHRUNK_VQ = VQConfig(codebook_size=64, codebook_embed_dim=4, z_channels=8, ch=8, ch_mult=(1, 1, 1, 1, 1),
                     num_res_blocks=1, norm_groups=4)
assert SHRUNK_VQ.codebook_size == SHRUNK_GPT["vocab_size"]

# Janus: the real 24 x 24 token grid; the VQ decoder upsamples 8x (4 levels) -> 192 px images (5 levels would
# give the real 384 px, ~4x slower). GroupNorm(32) in transformers' Janus VQ forces >= 32 channels.
JANUS_GRID = 24
JANUS_VQ_LEVELS = 4
JANUS_IMAGE_SIZE = JANUS_GRID * 2 ** (JANUS_VQ_LEVELS - 1)
JANUS_LAYERS = {"janus-pro-1b": 1, "janus-pro-7b": 2}

# HPS: open_clip ViT-H-14 shrunk (vit_h14_config overrides; the tokenizer's ids are filled in by build_assets)
SHRUNK_HPS = dict(text_config=dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2),
                  vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                     num_hidden_layers=2, num_attention_heads=2),
                  projection_dim=16)
# MANIQA: same structure, 224-px crops (as the real model), patch 28 -> an 8 x 8 grid, 4 x 4 windows
SHRUNK_MANIQA = dict(embed_dim=16, dim_mlp=16, patch_size=28, img_size=224, window_size=4, num_heads=(2, 2),
                     vit_dim=16, vit_depth=10, vit_heads=2)

# rewards.REWARDS names whose factory loads weights (all written here), and those that need nothing
MODEL_REWARDS = ("clip", "hps", "geneval_coco", "geneval_coco_strict", "git_vqa", "gdino", "hps_git_gdino",
                 "maniqa", "qwen_label", "qwen_fake", "qwen_weird")
NO_ASSET_REWARDS = ("color", "geneval", "geneval_strict", "shapeworld_quality", "ocr")  # ocr: RapidOCR's own models

# every environment variable build_assets may set; rehearse() drops inherited values of these
ENV_VARS = ("HF_HUB_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "LLAMAGEN_DIR",
            "LLAMAGEN_CLASS_NAMES", "LLAMAGEN_TRUST_PICKLE", "GENEVAL_MASK2FORMER", "GENEVAL_CLIP", "CLIP_MODEL",
            "HPS_CHECKPOINT", "HPS_ROOT", "HPS_TOKENIZER", "GIT_VQA_MODEL", "GDINO_MODEL", "MANIQA_WEIGHTS",
            "QWEN_JUDGE")

# real hub ids of the reward models (the default each loader falls back to)
HUB = {"mask2former": "facebook/mask2former-swin-small-coco-instance",
       "geneval_clip": "openai/clip-vit-large-patch14",
       "clip": "openai/clip-vit-base-patch32",
       "hps": "xswu/HPSv2", "hps_tokenizer": "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
       "git": "microsoft/git-large-vqav2",
       "gdino": "IDEA-Research/grounding-dino-tiny",
       "maniqa": "chaofengc/IQA-PyTorch-Weights",
       "qwen": "Qwen/Qwen2.5-VL-3B-Instruct"}


def shrunk_gpt(preset: str) -> dict:
    """GPTConfig overrides of the shrunk official preset `preset` (B, L, XL, ...)."""
    return dict(SHRUNK_GPT, n_layer=SHRUNK_LAYERS.get(preset, 2))


# ----------------------------------------------------------------------------------------------------
# Patches (in the process that loads the files)


class _Patcher:
    """setattr / setitem through pytest's monkeypatch when given (undone at teardown), else directly; the
    returned undo() restores everything in reverse order."""

    def __init__(self, monkeypatch=None):
        self.mp, self.undo_log = monkeypatch, []

    def setattr(self, obj, name, value):
        if self.mp is not None:
            self.mp.setattr(obj, name, value)
        else:
            self.undo_log.append((setattr, obj, name, getattr(obj, name)))
            setattr(obj, name, value)

    def setitem(self, d, key, value):
        if self.mp is not None:
            self.mp.setitem(d, key, value)
        else:
            self.undo_log.append((dict.__setitem__, d, key, d[key]))
            d[key] = value

    def undo(self):
        while self.undo_log:
            fn, obj, key, old = self.undo_log.pop()
            fn(obj, key, old)


def _replace_everywhere(p: _Patcher, module, name: str, new):
    """Patch module.name and every by-value copy (`from module import name`) in already imported repository
    modules (the scripts import later, so they pick up the patched attribute)."""
    old = getattr(module, name)
    for mod in list(sys.modules.values()):
        f = getattr(mod, "__file__", None)
        if mod is not module and not (isinstance(f, str) and os.path.abspath(f).startswith(REPO + os.sep)
                                      and os.sep + ".venv" + os.sep not in os.path.abspath(f)):
            continue
        if getattr(mod, "__dict__", {}).get(name) is old:
            p.setattr(mod, name, new)


def shrink_llamagen(monkeypatch=None) -> Callable[[], None]:
    """Make `load_model("llamagen-*")` build the shrunk architecture the files of build_assets have:
    common.llamagen.GPT_PRESETS entries get SHRUNK_GPT (shared dicts, so every by-value import sees them) and
    load_official_vq defaults to SHRUNK_VQ (patched in common.llamagen and its by-value copies, e.g.
    common.models). Idempotent. -> undo() (with `monkeypatch`, pytest undoes it instead)."""
    import common.llamagen as lg
    import common.models  # noqa: F401  (imported so its by-value copy of load_official_vq is patched)

    p = _Patcher(monkeypatch)
    for preset, cfg in list(lg.GPT_PRESETS.items()):
        p.setitem(lg.GPT_PRESETS, preset, {**cfg, **shrunk_gpt(preset)})
    if not getattr(lg.load_official_vq, "_rehearsal", False):
        orig = lg.load_official_vq

        def load_official_vq(path, cfg=None, *args, **kwargs):
            return orig(path, cfg or SHRUNK_VQ, *args, **kwargs)

        load_official_vq._rehearsal = True
        _replace_everywhere(p, lg, "load_official_vq", load_official_vq)
    return p.undo


def shrink_rewards(monkeypatch=None) -> Callable[[], None]:
    """The two reward models whose architecture is fixed in code: rewards.hps.vit_h14_config -> SHRUNK_HPS
    (plus the tiny tokenizer's ids), rewards.maniqa.MANIQA -> SHRUNK_MANIQA defaults. -> undo()."""
    import rewards.hps as hps
    import rewards.maniqa as mq

    p = _Patcher(monkeypatch)
    if not getattr(hps.vit_h14_config, "_rehearsal", False):
        orig_cfg = hps.vit_h14_config

        def vit_h14_config(**overrides):
            shr = _hps_overrides()
            text = {**shr["text_config"], **overrides.pop("text_config", {})}
            vision = {**shr["vision_config"], **overrides.pop("vision_config", {})}
            return orig_cfg(text_config=text, vision_config=vision,
                            projection_dim=overrides.pop("projection_dim", shr["projection_dim"]), **overrides)

        vit_h14_config._rehearsal = True
        _replace_everywhere(p, hps, "vit_h14_config", vit_h14_config)
    if not getattr(mq.MANIQA, "_rehearsal", False):
        base = mq.MANIQA

        class MANIQA(base):
            _rehearsal = True

            def __init__(self, **kw):
                super().__init__(**{**SHRUNK_MANIQA, **kw})

        MANIQA.__qualname__ = MANIQA.__name__ = "MANIQA"
        _replace_everywhere(p, mq, "MANIQA", MANIQA)
    return p.undo


def shrink(monkeypatch=None) -> Callable[[], None]:
    """shrink_llamagen + shrink_rewards. -> undo()."""
    u1, u2 = shrink_llamagen(monkeypatch), shrink_rewards(monkeypatch)

    def undo():
        u2()
        u1()

    return undo


def apply_env(monkeypatch, env: dict[str, str]):
    """Set `env` in THIS process for in-process loading: monkeypatch.setenv, plus huggingface_hub's constants,
    which are read from the environment once at import (HF_HUB_CACHE, HF_HUB_OFFLINE)."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    try:
        from huggingface_hub import constants
    except ImportError:
        return
    if "HF_HUB_CACHE" in env:
        monkeypatch.setattr(constants, "HF_HUB_CACHE", env["HF_HUB_CACHE"])
    if env.get("HF_HUB_OFFLINE") == "1":
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


# ----------------------------------------------------------------------------------------------------
# Writers


def hub_snapshot(cache: str, repo_id: str) -> str:
    """A snapshot folder of `repo_id` in a Hugging Face hub cache (models--org--name/refs/main ->
    snapshots/<commit>/), created empty; the commit is a fixed hash of the id. -> the snapshot folder."""
    folder = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(f"rehearsal:{repo_id}".encode()).hexdigest()
    snap = os.path.join(folder, "snapshots", commit)
    os.makedirs(snap, exist_ok=True)
    os.makedirs(os.path.join(folder, "refs"), exist_ok=True)
    with open(os.path.join(folder, "refs", "main"), "w") as f:
        f.write(commit)
    return snap


def _words() -> list[str]:
    """Vocabulary of the tiny word-level tokenizers: GenEval classes and colours, T2I-R1 / prompt words."""
    from common.coco_prompts import GENEVAL_CLASSES, GENEVAL_COLORS, NUMBER_WORDS

    words = ["a", "an", "the", "photo", "of", "and", "with", "on", "in", "to", "is", "left", "right", "above",
             "below", "top", "bottom", "side", "next", "near", "yes", "no", "image", "picture", "object",
             "colored", "-", "sign", "says", "text", "written", "big", "small", "one", "five", "class"]
    words += list(GENEVAL_COLORS) + list(NUMBER_WORDS.values())
    for c in GENEVAL_CLASSES:
        words += c.split()
    from common.coco_prompts import plural

    words += [plural(c).split()[-1] for c in GENEVAL_CLASSES]
    return list(dict.fromkeys(w.lower() for w in words))


def _fast_tokenizer(vocab: list[str], unk: str, *, pre="whitespace", lowercase=True, template=None,
                    special: tuple = (), **named):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    ids = {w: i for i, w in enumerate(vocab)}
    tk = Tokenizer(models.WordLevel(ids, unk_token=unk))
    if lowercase:
        tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace() if pre == "whitespace" else pre_tokenizers.WhitespaceSplit()
    if template:
        toks = sorted({t for t in template.split() if t in ids})
        tk.post_processor = processors.TemplateProcessing(single=template, special_tokens=[(t, ids[t]) for t in toks])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token=unk, **named)
    if special:
        tok.add_special_tokens({"additional_special_tokens": list(special)})
    return tok


def _sharpen(module, std: float):
    for m in module.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
            torch.nn.init.normal_(m.weight, std=std)


def write_llamagen(folder: str) -> None:
    """Every LLAMAGEN_CHECKPOINTS file (shrunk), flan-t5-xl, imagenet_classes.txt."""
    from common.llamagen import GPT, VQModel, official_gpt_config
    from common.llamagen import CLASS_NAMES_FILE, LLAMAGEN_CHECKPOINTS, T5_DIR

    os.makedirs(folder, exist_ok=True)
    written: dict[str, tuple] = {}
    for name, ck in LLAMAGEN_CHECKPOINTS.items():
        key = (ck.task, ck.preset)
        if written.get(ck.gpt_file, key) != key:
            raise ValueError(f"{ck.gpt_file} is named by two checkpoints of different architectures ({name})")
        if ck.gpt_file not in written:
            gpt = GPT(official_gpt_config(ck.preset, ck.task, ck.image_size, **shrunk_gpt(ck.preset)))
            _sharpen(gpt, 0.3)  # sharp, non-degenerate logits, as tests/test_llamagen_ckpt.random_gpt
            torch.save({"model": gpt.state_dict()}, os.path.join(folder, ck.gpt_file))
            written[ck.gpt_file] = key
        if ck.vq_file not in written:
            torch.save({"model": VQModel(SHRUNK_VQ).state_dict()}, os.path.join(folder, ck.vq_file))
            written[ck.vq_file] = ("vq",)
    write_t5(os.path.join(folder, T5_DIR))
    with open(os.path.join(folder, CLASS_NAMES_FILE), "w") as f:
        f.writelines(f"imagenet class {i}, synonym {i}\n" for i in range(1000))


def write_t5(folder: str) -> None:
    """A random 1-layer T5 encoder (d_model T5_DIM) and a word-level tokenizer that appends </s>, saved in the
    layout of a google/flan-t5-xl snapshot."""
    from transformers import T5Config, T5EncoderModel

    vocab = ["<pad>", "</s>", "<unk>"] + _words()
    tok = _fast_tokenizer(vocab, "<unk>", template="$A </s>", pad_token="<pad>", eos_token="</s>")
    cfg = T5Config(vocab_size=len(vocab), d_model=T5_DIM, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    T5EncoderModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)


def write_janus(cache: str) -> None:
    """Tiny Janus-Pro-1B / 7B in the hub cache under their hub ids."""
    from transformers import GenerationConfig, JanusForConditionalGeneration

    from common.janus import HUB_IDS, JanusT2I, tiny_janus_config, tiny_tokenizer

    for i, (name, repo_id) in enumerate(HUB_IDS.items()):
        torch.manual_seed(100 + i)
        cfg = tiny_janus_config(image_size=16 * JANUS_GRID, patch_size=16, layers=JANUS_LAYERS.get(name, 2))
        cfg.vq_config.channel_multiplier = [1] * JANUS_VQ_LEVELS
        model = JanusForConditionalGeneration(cfg)
        for m in model.model.modules():  # as common.janus.tiny_janus: sharper logits
            if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
                torch.nn.init.normal_(m.weight, std=0.3)
        model.generation_config = GenerationConfig(bos_token_id=0, pad_token_id=1, eos_token_id=2)
        model.generation_config.generation_kwargs = {"boi_token_id": 3}
        JanusT2I(model, tiny_tokenizer()).save(hub_snapshot(cache, repo_id))


def _clip_tokenizer(words):
    """CLIP-like: end-of-text has the largest id (open_clip pools at argmax id; transformers at the first EOS)."""
    vocab = ["<pad>", "<unk>"] + words + ["<|startoftext|>", "<|endoftext|>"]
    tok = _fast_tokenizer(vocab, "<unk>", template="<|startoftext|> $A <|endoftext|>", pad_token="<pad>",
                          bos_token="<|startoftext|>", eos_token="<|endoftext|>")
    return tok, dict(vocab_size=len(vocab), bos_token_id=len(vocab) - 2, eos_token_id=len(vocab) - 1, pad_token_id=0)


def _hps_overrides() -> dict:
    """SHRUNK_HPS with the token ids of the tiny CLIP tokenizer (77-token context as ViT-H-14)."""
    _, ids = _clip_tokenizer(_words())
    return {**SHRUNK_HPS, "text_config": {**SHRUNK_HPS["text_config"], **ids}}


def _bert_tokenizer(words):
    """bert-base-uncased's special ids ([PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103, '.' 1012,
    '?' 1029: GroundingDINO hard-codes its delimiters), our words from 1040."""
    vocab = [f"[unused{i}]" for i in range(1040)]
    vocab[0], vocab[100], vocab[101], vocab[102], vocab[103], vocab[1012], vocab[1029] = (
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?")
    vocab += [w for w in words if w not in vocab]
    return _fast_tokenizer(vocab, "[UNK]", template="[CLS] $A [SEP]", pad_token="[PAD]", cls_token="[CLS]",
                           sep_token="[SEP]", mask_token="[MASK]")


def tiny_gdino_config(vocab_size: int):
    """A GroundingDINO of a few hundred thousand parameters (Swin-T layout, one-layer BERT text tower)."""
    import transformers as tf

    return tf.GroundingDinoConfig(
        backbone_config=dict(model_type="swin", embed_dim=8, depths=[1] * 4, num_heads=[1] * 4, window_size=4,
                             image_size=128, out_indices=[2, 3, 4]),
        text_config=dict(model_type="bert", vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32),
        d_model=32, encoder_layers=1, decoder_layers=2, num_queries=12, num_feature_levels=4, encoder_n_points=2,
        decoder_n_points=2, max_text_len=32, encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2,
        decoder_attention_heads=2)


def write_rewards(cache: str, words: list[str]) -> dict[str, str]:
    """Every model-backed reward, in the hub cache under its real id. -> env vars pointing at them."""
    import transformers as tf

    env = {}

    # CLIP (clip reward; GenEval colours): transformers CLIPModel + tokenizer
    tok, ids = _clip_tokenizer(words)
    for key, var in (("clip", "CLIP_MODEL"), ("geneval_clip", "GENEVAL_CLIP")):
        torch.manual_seed(1 if key == "clip" else 2)
        cfg = tf.CLIPConfig(text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=2, max_position_embeddings=77, **ids),
                            vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=2, num_attention_heads=2), projection_dim=16)
        snap = hub_snapshot(cache, HUB[key])
        tf.CLIPModel(cfg).save_pretrained(snap)
        tok.save_pretrained(snap)
        env[var] = snap

    # HPSv2.1: an open_clip-layout checkpoint {"state_dict": ...} (mapped from a random transformers CLIPModel of
    # the shrunk ViT-H-14 config), and the CLIP tokenizer in its own repo
    from rewards.hps import vit_h14_config

    torch.manual_seed(3)
    shr = _hps_overrides()
    hf_clip = tf.CLIPModel(vit_h14_config(**{k: dict(v) if isinstance(v, dict) else v for k, v in shr.items()}))
    snap = hub_snapshot(cache, HUB["hps"])
    torch.save({"state_dict": hf_to_open_clip(hf_clip.state_dict())}, os.path.join(snap, "HPS_v2.1_compressed.pt"))
    env["HPS_CHECKPOINT"] = os.path.join(snap, "HPS_v2.1_compressed.pt")
    snap = hub_snapshot(cache, HUB["hps_tokenizer"])
    tok.save_pretrained(snap)
    env["HPS_TOKENIZER"] = snap

    # Mask2Former (COCO instance, 80 classes)
    torch.manual_seed(4)
    backbone = tf.SwinConfig(embed_dim=8, depths=[1] * 4, num_heads=[1] * 4, window_size=4, image_size=64,
                             out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = tf.Mask2FormerConfig(backbone_config=backbone, feature_size=32, mask_feature_size=32, hidden_dim=32,
                               encoder_feedforward_dim=32, dim_feedforward=32, encoder_layers=1, decoder_layers=2,
                               num_attention_heads=2, num_queries=16, num_labels=80)
    m2f = tf.Mask2FormerForUniversalSegmentation(cfg)
    with torch.no_grad():  # peaked class scores and confident masks: a few detections per image
        m2f.class_predictor.weight.mul_(40.0)
        embedder = m2f.model.transformer_module.decoder.mask_predictor.mask_embedder
        [m for m in embedder.modules() if isinstance(m, torch.nn.Linear)][-1].weight.mul_(20.0)
    snap = hub_snapshot(cache, HUB["mask2former"])
    m2f.save_pretrained(snap)
    env["GENEVAL_MASK2FORMER"] = snap

    # GIT VQA: GitForCausalLM + GitProcessor (CLIP image processor, BERT tokenizer)
    bert = _bert_tokenizer(words)
    torch.manual_seed(5)
    cfg = tf.GitConfig(vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=32,
                                          num_hidden_layers=1, num_attention_heads=2),
                       hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                       vocab_size=len(bert), bos_token_id=101, eos_token_id=102, pad_token_id=0)
    git = tf.GitForCausalLM(cfg)
    with torch.no_grad():
        for p in git.output.parameters():  # yes/no probabilities away from 0.5
            p.mul_(20)
    snap = hub_snapshot(cache, HUB["git"])
    git.save_pretrained(snap)
    ip = tf.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    tf.GitProcessor(image_processor=ip, tokenizer=bert).save_pretrained(snap)
    env["GIT_VQA_MODEL"] = snap

    # GroundingDINO (Swin-T layout, BERT text tower)
    torch.manual_seed(6)
    gd = tf.GroundingDinoForObjectDetection(tiny_gdino_config(len(bert)))
    snap = hub_snapshot(cache, HUB["gdino"])
    gd.save_pretrained(snap)
    bert.save_pretrained(snap)
    env["GDINO_MODEL"] = snap

    # MANIQA: a bare state dict of the shrunk structure
    from rewards.maniqa import MANIQA

    torch.manual_seed(7)
    mq = MANIQA(**SHRUNK_MANIQA)  # PyTorch's default init; score bias 0.5: scores about 0.4-0.7, as KonIQ's
    torch.nn.init.constant_(mq.fc_score[3].bias, 0.5)
    torch.nn.init.constant_(mq.fc_weight[3].bias, 0.0)
    snap = hub_snapshot(cache, HUB["maniqa"])
    torch.save({"params": mq.state_dict()}, os.path.join(snap, "ckpt_koniq10k.pt"))
    env["MANIQA_WEIGHTS"] = os.path.join(snap, "ckpt_koniq10k.pt")

    # Qwen2.5-VL judge
    snap = hub_snapshot(cache, HUB["qwen"])
    write_qwen(snap)
    env["QWEN_JUDGE"] = snap
    return env


REPLY = '{"score":1}'  # the tiny judge's greedy reply, one word-level token


def write_qwen(folder: str) -> None:
    """A tiny Qwen2.5-VL-3B-Instruct stand-in: model, tokenizer, image processor config.

    The language model is a programmed bigram model: every attention / MLP output projection is zero, so the
    last hidden state is the current token's embedding (one-hot); lm_head maps "assistant" (the last prompt
    token, from "<|im_start|>assistant\\n") to the token REPLY and everything else to <|im_end|> (EOS). Greedy
    decoding therefore replies `{"score":1}` in two steps, whatever the image (whose tower still runs)."""
    import transformers as tf

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
               "<|image_pad|>", "<|video_pad|>"]
    vocab = ["<unk>"] + special + [REPLY, "user", "assistant", "system", "you", "are", "helpful", "assistant."]
    vocab += [w for w in _words() if w not in vocab]
    ids = {w: i for i, w in enumerate(vocab)}
    tok = _fast_tokenizer(vocab, "<unk>", pre="whitespace_split", lowercase=False, special=tuple(special[1:]),
                          pad_token="<|endoftext|>", eos_token="<|im_end|>")
    hidden = len(vocab) + (-len(vocab)) % 16  # one-hot embeddings need hidden >= vocab; 4 heads, even halves
    mrope = [hidden // 16, hidden // 16, hidden // 8 - 2 * (hidden // 16)]  # sums to head_dim / 2
    cfg = tf.Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=ids["<|endoftext|>"],
                         eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], tie_word_embeddings=False,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": mrope}),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=32, num_heads=2, out_hidden_size=hidden,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[0]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False)
    torch.manual_seed(8)
    model = tf.Qwen2_5_VLForConditionalGeneration(cfg)
    lm = model.model.language_model
    with torch.no_grad():
        for layer in lm.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = lm.embed_tokens.weight
        emb.zero_()
        emb[:, : len(vocab)] = torch.eye(len(vocab))
        head = model.lm_head.weight  # (vocab, hidden): logits = head @ rmsnorm(one-hot)
        head.zero_()
        head[ids["<|im_end|>"], : len(vocab)] = 1.0
        head[ids["<|im_end|>"], ids["assistant"]] = 0.0
        head[ids[REPLY], ids["assistant"]] = 1.0
    model.generation_config = tf.GenerationConfig(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                                                  pad_token_id=ids["<|endoftext|>"], repetition_penalty=1.05)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    # the real repo's preprocessor (patch 14, merge 2), with a small pixel budget: 56x56 .. 112x112
    tf.Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112).save_pretrained(folder)
    _retag_image_processor(folder, "Qwen2VLImageProcessor")


def _retag_image_processor(folder: str, cls: str):
    """Name the image processor class as the real repo does (the PIL variant is what loads without torchvision)."""
    path = os.path.join(folder, "preprocessor_config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["image_processor_type"] = cls
    with open(path, "w") as f:
        json.dump(cfg, f, indent=1)


def hf_to_open_clip(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers CLIPModel state dict -> open_clip layout (the inverse of rewards.hps.open_clip_to_hf)."""
    out = {}

    def block(src, dst):
        q, k, v = (sd[f"{src}.self_attn.{n}_proj.weight"] for n in "qkv")
        qb, kb, vb = (sd[f"{src}.self_attn.{n}_proj.bias"] for n in "qkv")
        out[f"{dst}.attn.in_proj_weight"] = torch.cat([q, k, v])
        out[f"{dst}.attn.in_proj_bias"] = torch.cat([qb, kb, vb])
        for s, d in {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
                     "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}.items():
            out[f"{dst}.{d}.weight"], out[f"{dst}.{d}.bias"] = sd[f"{src}.{s}.weight"], sd[f"{src}.{s}.bias"]

    for tower, dst in (("vision_model", "visual.transformer.resblocks"), ("text_model", "transformer.resblocks")):
        n = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith(f"{tower}.encoder.layers."))
        for i in range(n):
            block(f"{tower}.encoder.layers.{i}", f"{dst}.{i}")
    out["visual.class_embedding"] = sd["vision_model.embeddings.class_embedding"]
    out["visual.conv1.weight"] = sd["vision_model.embeddings.patch_embedding.weight"]
    out["visual.positional_embedding"] = sd["vision_model.embeddings.position_embedding.weight"]
    for s, d in (("visual.ln_pre", "vision_model.pre_layrnorm"), ("visual.ln_post", "vision_model.post_layernorm"),
                 ("ln_final", "text_model.final_layer_norm")):
        out[f"{s}.weight"], out[f"{s}.bias"] = sd[f"{d}.weight"], sd[f"{d}.bias"]
    out["visual.proj"] = sd["visual_projection.weight"].t().contiguous()
    out["text_projection"] = sd["text_projection.weight"].t().contiguous()
    out["token_embedding.weight"] = sd["text_model.embeddings.token_embedding.weight"]
    out["positional_embedding"] = sd["text_model.embeddings.position_embedding.weight"]
    out["logit_scale"] = sd["logit_scale"]
    return {k: v.clone() for k, v in out.items()}


# ----------------------------------------------------------------------------------------------------
# build_assets


def _stamp() -> dict:
    from common.llamagen import LLAMAGEN_CHECKPOINTS

    return {"version": ASSETS_VERSION, "llamagen": {k: list(v) for k, v in LLAMAGEN_CHECKPOINTS.items()},
            "gpt": SHRUNK_GPT, "layers": SHRUNK_LAYERS, "vq": repr(SHRUNK_VQ), "janus": [JANUS_GRID, JANUS_VQ_LEVELS],
            "hps": SHRUNK_HPS, "maniqa": repr(SHRUNK_MANIQA)}


def build_assets(root: str, *, janus: bool = True, llamagen: bool = True, rewards: bool = True) -> dict[str, str]:
    """Write the tiny stand-ins under `root` (seeded; reused if `root` already holds a complete build of the same
    version) and return the environment variables that make the real loaders find them:
    HF_HUB_CACHE, HF_HOME, HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE, LLAMAGEN_DIR and the reward variables (see
    the module doc).
    The process that loads the files also needs `shrink()` (rehearse_run.py calls it)."""
    root = os.path.abspath(root)
    done = os.path.join(root, "assets.json")
    stamp = {**_stamp(), "parts": [janus, llamagen, rewards]}
    if os.path.isfile(done):
        with open(done) as f:
            saved = json.load(f)
        if saved.get("stamp") == json.loads(json.dumps(stamp)):
            return saved["env"]
    cache, home = os.path.join(root, "hub"), os.path.join(root, "hf_home")
    os.makedirs(cache, exist_ok=True)
    os.makedirs(home, exist_ok=True)
    # HF_HOME too: huggingface_hub otherwise reads the user's ~/.cache/huggingface (its token file) at load time
    env = {"HF_HUB_CACHE": cache, "HF_HOME": home, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    from transformers.utils import logging as tf_logging

    bars = tf_logging.is_progress_bar_enabled()
    tf_logging.disable_progress_bar()  # "Writing model shards" bars
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if llamagen:
            env["LLAMAGEN_DIR"] = os.path.join(root, "llamagen")
            write_llamagen(env["LLAMAGEN_DIR"])
        if janus:
            write_janus(cache)
        if rewards:
            env.update(write_rewards(cache, _words()))
    if bars:
        tf_logging.enable_progress_bar()
    tmp = f"{done}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"stamp": stamp, "env": env}, f, indent=1)
    os.replace(tmp, done)
    return env


try:
    import pytest

    @pytest.fixture(scope="session")
    def rehearsal_env(tmp_path_factory) -> dict[str, str]:
        """build_assets once per test session (per xdist worker) -> its env vars."""
        return build_assets(str(tmp_path_factory.mktemp("rehearsal_assets")))
except ImportError:  # the runner's process does not need pytest
    pass


# ----------------------------------------------------------------------------------------------------
# Running a script under the recorder


def rehearse(script: str, args=(), cwd=None, env: dict[str, str] | None = None, timeout: float = 600):
    """Run `python tests/rehearse_run.py RECORD script args...` in a subprocess, in `cwd`, with `env` (from
    build_assets) over the current environment (inherited values of ENV_VARS dropped, so nothing outside leaks
    in), OMP_NUM_THREADS=1, CPU only, PYTHONPATH=<repo>:<repo>/tests. `script` is relative to the repository
    root unless absolute. -> (returncode, record dict ({} if none was written), stdout, stderr); a timeout gives
    returncode 124."""
    cwd = os.path.abspath(str(cwd or os.getcwd()))
    script = script if os.path.isabs(script) else os.path.join(REPO, script)
    record_dir = tempfile.mkdtemp(prefix="rehearsal-")  # not in cwd, which may be the repository
    record_path = os.path.join(record_dir, "record.json")
    full = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    full.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                 "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                 "PYTHONPATH": os.pathsep.join([REPO, TESTS]), "PYTHONUNBUFFERED": "1"})
    full.update({k: str(v) for k, v in (env or {}).items()})
    cmd = [sys.executable, os.path.join(TESTS, "rehearse_run.py"), record_path, script, *map(str, args)]
    try:
        p = subprocess.run(cmd, cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        def text(b):
            return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        rc, out, err = 124, text(e.stdout), text(e.stderr) + f"\n[rehearse] timed out after {timeout} s"
    record = {}
    if os.path.isfile(record_path):
        with open(record_path) as f:
            record = json.load(f)
    shutil.rmtree(record_dir, ignore_errors=True)
    return rc, record, out, err


def param_delta(run_dir: str, a: int, b: int) -> float:
    """L2 norm (float64) of the difference of the policy weights between checkpoints step a and step b
    (<run_dir>/checkpoints/step_NNNNNN/policy.safetensors); the two must hold the same tensors."""
    from safetensors.torch import load_file

    def load(step):
        path = os.path.join(run_dir, "checkpoints", f"step_{step:06d}", "policy.safetensors")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no checkpoint {path}")
        return load_file(path)

    sa, sb = load(a), load(b)
    if sa.keys() != sb.keys():
        raise ValueError(f"checkpoints {a} and {b} hold different tensors: {sorted(sa.keys() ^ sb.keys())[:4]}")
    total = torch.zeros((), dtype=torch.float64)
    for k in sa:
        if sa[k].is_floating_point():
            total += (sa[k].double() - sb[k].double()).pow(2).sum()
    return float(total.sqrt())


if __name__ == "__main__":  # python tests/rehearsal_assets.py ROOT: build and print the env (timing)
    t0 = time.time()
    e = build_assets(sys.argv[1] if len(sys.argv) > 1 else "rehearsal_assets")
    print(json.dumps(e, indent=1))
    print(f"built in {time.time() - t0:.1f} s", file=sys.stderr)
