"""Model backends. Every backend has the same attributes and methods (plain duck typing):

    policy                  nn.Module, the trainable AR transformer; see common/sampling.py for its
                            forward / prefill / decode contract
    num_tokens, grid        image tokens per image T and their (h, w) raster grid
    cond(prompts)           list[str] -> condition dict (batch = len(prompts))
    uncond(cond)            the matching unconditional (CFG) condition dict
    codebook(ids)           (B, T) ids -> (B, T, C) VQ codebook vectors (L2-normalised)
    decode(ids)             (B, T) ids -> (B, 3, H, W) images in [0, 1]
    reward_prompts(prompts) list[str] -> the text a reward model compares images with (the caption for
                            t2i, "a photo of <class names>" for c2i, whose prompts are class ids like "207")

`load_model(name)` builds one. Names: "tiny" (random weights, for tests), "toy" (the shipped ShapeWorld
model), "llamagen-c2i-b|l|xl" and "llamagen-t2i-xl" (the official LlamaGen .pt files in $LLAMAGEN_DIR,
see load_llamagen), "janus-pro-1b|7b" or a transformers Janus directory (common/janus.py: transformers is
imported only when one is built).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict

import torch
import torch.nn as nn

from common.llamagen import (
    CLASS_NAMES_ENV, CLASS_NAMES_FILE, GPT, LLAMAGEN_CHECKPOINTS, LLAMAGEN_DIR_ENV, GPTConfig, VQConfig, VQModel,
    load_official_gpt, load_official_vq, official_files, official_gpt_config, official_gpt_weights, read_class_names,
)
from common.t5 import load_t5_encoder
from toy.model import TOY_DIR, WordEncoder, toy_config


class LlamaGenBackend:
    """What every LlamaGen backend shares: a GPT policy and a frozen VQ decoder on an (h, w) token grid."""

    def __init__(self, gpt: GPT, vq: VQModel, image_size: int):
        self.policy, self.vq = gpt, vq.eval().requires_grad_(False)
        self.image_size = image_size
        g = image_size // vq.downsample
        self.grid, self.num_tokens = (g, g), g * g
        assert self.num_tokens == gpt.cfg.block_size, "GPT block_size must match the VQ grid"

    weights = None  # with the policy on the meta device: its files (common/weights.py), which `shard` reads

    @property
    def device(self):
        return self.vq.post_quant_conv.weight.device  # frozen, whole on every rank (the policy may be on meta)

    def uncond(self, cond: dict) -> dict:
        return self.policy.null_cond(cond)

    def reward_prompts(self, prompts: list[str]) -> list[str]:
        """The text a reward model compares images with (the caption itself for text-to-image)."""
        return list(prompts)

    @torch.no_grad()
    def codebook(self, ids):
        return self.vq.codebook_vectors(ids)

    @torch.no_grad()
    def decode(self, ids):
        return ((self.vq.decode(ids, self.grid).float() + 1) / 2).clamp(0, 1)


class LlamaGenC2I(LlamaGenBackend):
    """Class-conditional LlamaGen. A prompt is a class id, as a string ("207") or an int; the CFG null
    class is index num_classes. With `class_names` (index order), `reward_prompts` gives the release's
    reward text "a photo of <names>" (docs/ar_grpo.md)."""

    def __init__(self, gpt: GPT, vq: VQModel, image_size: int, class_names: list[str] | None = None):
        super().__init__(gpt, vq, image_size)
        if class_names is not None and len(class_names) != gpt.cfg.num_classes:
            raise ValueError(f"{len(class_names)} class names for a model with {gpt.cfg.num_classes} classes")
        self.class_names = class_names

    def labels(self, prompts: list[str | int]) -> torch.Tensor:
        """Prompts -> (B,) class ids, checked to lie in [0, num_classes)."""
        n, out = self.policy.cfg.num_classes, []
        for p in prompts:
            try:
                label = int(str(p).strip())
            except ValueError:
                label = -1
            if not 0 <= label < n:
                raise ValueError(f"class-conditional prompts are class ids 0..{n - 1}, got {p!r}")
            out.append(label)
        return torch.tensor(out, dtype=torch.long)

    def cond(self, prompts: list[str | int]) -> dict:
        return {"label": self.labels(prompts).to(self.device)}

    def class_name(self, label: int) -> str:
        if self.class_names is None:
            raise RuntimeError(
                f"no class names loaded: put {CLASS_NAMES_FILE} (one name per line, class-index order) in "
                f"${LLAMAGEN_DIR_ENV}, or set {CLASS_NAMES_ENV} to such a file"
            )
        return self.class_names[label]

    def reward_prompts(self, prompts: list[str | int]) -> list[str]:
        return ["a photo of " + self.class_name(int(i)) for i in self.labels(prompts)]


class LlamaGenT2I(LlamaGenBackend):
    """Text-to-image LlamaGen backend: frozen text encoder -> GPT policy -> frozen VQ decoder. The text
    encoder is the toy's WordEncoder (toy/model.py) or FLAN-T5 (common/t5.py): anything with
    encode(prompts) -> (features (B, L, caption_dim), mask (B, L) bool)."""

    def __init__(self, gpt: GPT, vq: VQModel, text: nn.Module, image_size: int):
        super().__init__(gpt, vq, image_size)
        self.text = text.eval().requires_grad_(False)
        # The null caption is never reached by the conditional-only loss; keep it fixed during RL.
        gpt.cls_embedding.uncond_embedding.requires_grad_(False)

    def cond(self, prompts: list[str]) -> dict:
        emb, mask = self.text.encode(list(prompts))
        return {"emb": emb.to(self.device, self.policy.tok_embeddings.weight.dtype), "mask": mask.to(self.device)}

    @property
    def toy_format(self) -> bool:
        """True for the toy's format (a WordEncoder; config.json + safetensors, see save), False for FLAN-T5."""
        return isinstance(self.text, WordEncoder)

    def save(self, out_dir: str):
        """Write config.json + safetensors weights (atomically) to out_dir (WordEncoder backends only)."""
        from common.utils import save_safetensors

        if not self.toy_format:
            raise TypeError("save() writes the toy format (WordEncoder); official LlamaGen weights stay .pt files")

        os.makedirs(out_dir, exist_ok=True)
        config = {
            "gpt": asdict(self.policy.cfg),
            "vq": {**asdict(self.vq.cfg), "ch_mult": list(self.vq.cfg.ch_mult)},
            "text": {"vocab": self.text.vocab, "max_len": self.text.max_len, "dim": self.text.tok.embedding_dim},
            "image_size": self.image_size,
        }
        save_safetensors(self.policy.state_dict(), os.path.join(out_dir, "gpt.safetensors"))
        save_safetensors(self.vq.state_dict(), os.path.join(out_dir, "vq.safetensors"))
        save_safetensors(self.text.state_dict(), os.path.join(out_dir, "text.safetensors"))
        tmp = os.path.join(out_dir, "config.json.tmp")
        with open(tmp, "w") as f:
            json.dump(config, f, indent=1)
        os.replace(tmp, os.path.join(out_dir, "config.json"))


def build_t2i(config: dict, policy_on_meta: bool = False) -> LlamaGenT2I:
    """Randomly initialised backend from a config dict (the format of weights/*/config.json); policy_on_meta: the
    GPT is built on the meta device (no weights allocated), the VQ and text encoder are real."""
    with torch.device("meta" if policy_on_meta else "cpu"):
        gpt = GPT(GPTConfig(**config["gpt"])).init_weights()
    vq = VQModel(VQConfig(**{**config["vq"], "ch_mult": tuple(config["vq"]["ch_mult"])}))
    t = config["text"]
    return LlamaGenT2I(gpt, vq, WordEncoder(t["vocab"], t["max_len"], t["dim"]), config["image_size"])


def load_llamagen(
    name: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    weights_dir: str | None = None,
    right_pad: bool = False,
    trust_pickle: bool | None = None,
    gpt_overrides: dict | None = None,
    vq_config: VQConfig | None = None,
    image_size: int | None = None,
    policy_on_meta: bool = False,
) -> LlamaGenC2I | LlamaGenT2I:
    """An official LlamaGen backend (a name of LLAMAGEN_CHECKPOINTS) from the release's files, strictly loaded.

    weights_dir     folder holding the files; default $LLAMAGEN_DIR, else weights/llamagen
    right_pad       t2i: the AR-GRPO release's right padding instead of LlamaGen's left padding (also
                    settable later as bk.text.right_pad)
    trust_pickle    allow non-weights pickles in the .pt files; default: $LLAMAGEN_TRUST_PICKLE == "1"
    gpt_overrides, vq_config, image_size    replace the official configuration (tiny models in tests)
    policy_on_meta  the GPT stays on the meta device and bk.weights maps it to its .pt file, memory-mapped (FSDP2 reads
                    each rank's shard from it, common/distributed.py)
    c2i: class names come from $LLAMAGEN_CLASS_NAMES, else <weights_dir>/imagenet_classes.txt (required: checked
    with the weights, before anything is built).
    """
    ck = LLAMAGEN_CHECKPOINTS[name]
    files = official_files(name, weights_dir)  # all there, before anything is built
    if trust_pickle is None:
        trust_pickle = os.environ.get("LLAMAGEN_TRUST_PICKLE") == "1"
    size = image_size or ck.image_size
    cfg = official_gpt_config(ck.preset, ck.task, size, **(gpt_overrides or {}))
    if policy_on_meta:
        gpt, weights = official_gpt_weights(files["gpt"], cfg, trust_pickle)
        gpt.to(dtype)
    else:
        gpt, weights = load_official_gpt(files["gpt"], cfg, trust_pickle).to(device, dtype), None
    vq = load_official_vq(files["vq"], vq_config, trust_pickle).to(device)
    if ck.task == "c2i":
        bk = LlamaGenC2I(gpt, vq, size, read_class_names(files["class_names"]))
    else:
        bk = LlamaGenT2I(gpt, vq, load_t5_encoder(files["t5"], cfg.cls_token_num, right_pad, device), size)
    bk.weights = weights
    return bk


JANUS_MODELS = ("janus-pro-1b", "janus-pro-7b")
MODELS = ("tiny", "toy", *LLAMAGEN_CHECKPOINTS, *JANUS_MODELS)


def load_model(name: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
               policy_on_meta: bool = False, **janus_kwargs):
    """Build a backend by name. 'tiny' = random weights (tests); 'toy' = shipped ShapeWorld weights.
    A directory path holding config.json + *.safetensors (as written by `save`) also works.
    Janus-Pro names or directories go to common.janus.load_janus (janus_kwargs: template, download).
    policy_on_meta (FSDP2): the policy of a model loaded from files is built on the meta device and not read;
    bk.weights says where its weights are, and `common.distributed.shard` reads each rank's shard from there. The
    frozen parts (VQ, text or vision encoders) are loaded whole. A random model ('tiny') is built whole."""
    from common.convert_janus import deepseek_layout_message, is_deepseek_janus_dir
    from common.janus import is_janus_dir, load_janus  # torch only; transformers is imported when building one

    if os.path.isdir(name) and is_deepseek_janus_dir(name):  # a released STAGE / GCPO checkpoint: convert it first
        raise ValueError(deepseek_layout_message(name))
    if name in JANUS_MODELS or (os.path.isdir(name) and is_janus_dir(name)):
        return load_janus(name, device, dtype, policy_on_meta=policy_on_meta, **janus_kwargs)
    if name in LLAMAGEN_CHECKPOINTS:
        return load_llamagen(name, device, dtype, policy_on_meta=policy_on_meta)
    if name == "tiny":
        bk = build_t2i(toy_config("tiny"))
    elif name == "toy" or os.path.isdir(name):
        path = TOY_DIR if name == "toy" else name
        cfg_path = os.path.join(path, "config.json")
        if not os.path.exists(cfg_path):
            raise FileNotFoundError(
                f"no model weights at {path}: for 'toy' run `python -m toy.train --out-dir weights/shapeworld` to "
                f"regenerate them"
            )
        from common.utils import load_safetensors, state_dict_mismatch

        try:
            with open(cfg_path) as f:
                bk = build_t2i(json.load(f), policy_on_meta)
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{cfg_path}: not a toy-format model config ({type(e).__name__}: {e})") from None
        for mod, file in ((bk.policy, "gpt"), (bk.vq, "vq"), (bk.text, "text")):
            if mod is bk.policy and policy_on_meta:  # read later, each rank its shard
                bk.weights = toy_weights(os.path.join(path, "gpt.safetensors"), bk.policy)
                continue
            sd = load_safetensors(os.path.join(path, f"{file}.safetensors"))
            if mismatch := state_dict_mismatch(mod.state_dict(), sd):  # one line, not torch's line per key
                raise ValueError(f"{path}/{file}.safetensors does not fit {cfg_path}: {mismatch} (do the config and "
                                 f"the weights belong together?)")
            mod.load_state_dict(sd, strict=True)
    else:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)} or a directory with config.json")
    for m in (bk.vq, bk.text) if bk.weights is not None else (bk.policy, bk.vq, bk.text):
        m.to(device)
    bk.policy.to(dtype)
    return bk


def toy_weights(path: str, gpt: GPT):
    """The toy format's gpt.safetensors as the GPT's weight source (common/weights.py), its keys and shapes checked."""
    from common.utils import state_dict_mismatch
    from common.weights import Weights

    if not os.path.exists(path):
        raise FileNotFoundError(f"missing weights file {path}")
    weights = Weights.from_safetensors(path)
    shapes = {n: torch.empty(weights.shape(n), device="meta") for n in weights.names()}
    if mismatch := state_dict_mismatch(gpt.state_dict(), shapes):
        raise ValueError(f"{path} does not fit its config.json: {mismatch}")
    return weights


def load_policy_checkpoint(bk, ckpt_dir: str):
    """Load a training run's policy.safetensors (written by common/checkpoint.save) into bk.policy, strictly."""
    from common.utils import load_safetensors

    sd = load_safetensors(os.path.join(ckpt_dir, "policy.safetensors"), bk.device)
    bk.policy.load_state_dict(sd, strict=True)
    return bk
