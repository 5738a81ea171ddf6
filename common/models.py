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
import re
from dataclasses import asdict
from typing import NamedTuple

import torch
import torch.nn as nn

from common.llamagen import GPT, GPTConfig, VQConfig, VQModel, load_official_gpt, load_official_vq, official_gpt_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY_DIR = os.path.join(REPO, "weights", "shapeworld")


class WordEncoder(nn.Module):
    """The toy's frozen stand-in for FLAN-T5: prompt words -> (B, L, caption_dim) contextual features.

    Word + position embeddings, then one residual MLP over the whole (flattened) caption, so that, as
    with T5, every caption slot carries information about the entire prompt. (LlamaGen's condition
    positions get no rotary position, and image queries have zero logits to them, so image tokens see
    a uniform average of the slots: context in each slot is what makes word order recoverable.)
    Prompts are lower-cased and split into words; unknown words map to <unk>. Captions are LEFT-padded
    with zeroed features and a False mask, as in LlamaGen's text-to-image pre-training.
    """

    def __init__(self, vocab: list[str], max_len: int, dim: int, hidden: int = 512):
        super().__init__()
        assert vocab[:2] == ["<pad>", "<unk>"], "vocab must start with <pad>, <unk>"
        self.vocab, self.max_len = list(vocab), max_len
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.tok = nn.Embedding(len(vocab), dim)
        self.pos = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        self.mix = nn.Sequential(nn.Linear(max_len * dim, hidden), nn.GELU(), nn.Linear(hidden, max_len * dim))

    def tokenize(self, prompts: list[str]):
        ids = torch.zeros(len(prompts), self.max_len, dtype=torch.long)
        for b, p in enumerate(prompts):
            words = [self.index.get(w, 1) for w in re.findall(r"[a-z0-9]+", p.lower())][-self.max_len :]
            if words:
                ids[b, self.max_len - len(words) :] = torch.tensor(words)
        return ids.to(self.pos.device), (ids != 0).to(self.pos.device)

    def forward(self, ids, mask):
        x = (self.tok(ids) + self.pos) * mask[..., None]  # (B, L, D)
        x = x + self.mix(x.flatten(1)).view_as(x)
        return x * mask[..., None]

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The text-encoder interface of LlamaGenT2I: -> features (B, L, D), mask (B, L) bool."""
        ids, mask = self.tokenize(prompts)
        return self(ids, mask), mask


def left_pad(feats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded features (B, L, D) with prefix mask (B, L) -> the valid rows moved to the END of the L
    slots, padded slots zeroed, and the matching mask (LlamaGen's pre-training layout)."""
    L = mask.shape[1]
    src = torch.arange(L, device=mask.device)[None] - (L - mask.sum(1))[:, None]  # (B, L) source row
    valid = src >= 0
    out = feats.gather(1, src.clamp(min=0)[..., None].expand_as(feats))
    return out * valid[..., None].to(feats.dtype), valid


class T5CaptionEncoder(nn.Module):
    """FLAN-T5 encoder features for text-to-image LlamaGen, behind WordEncoder's interface:
    encode(prompts) -> features (B, max_len, d_model), mask (B, max_len) bool.

    Captions are lower-cased with whitespace collapsed (the part of the DeepFloyd `clean_caption` routine,
    which the release applies, that matters for plain captions), tokenised with EOS, truncated to max_len
    (120), and encoded with the attention mask. Padding (ar_grpo.md §1.9 item 4, §4):
    - default, LlamaGen's pre-training: valid features at the END of the slots, padded slots zero (left padding);
    - right_pad=True, the AR-GRPO release: T5's right padding, padded slots keep their non-zero encoder outputs.
    Padded slots are masked either way. `template` wraps the cleaned caption (the GCPO release feeds T5
    "<|t2i|>A photo of {caption}<|soi|>"). Both attributes are read at every call, so they can be set after loading.
    """

    def __init__(self, encoder: nn.Module, tokenizer, max_len: int = 120, right_pad: bool = False,
                 template: str = "{}"):
        super().__init__()
        self.encoder, self.tokenizer, self.max_len, self.right_pad = encoder, tokenizer, max_len, right_pad
        self.template = template
        self.tokenizer.padding_side = "right"

    @staticmethod
    def clean(text: str) -> str:
        return " ".join(str(text).lower().split())

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> ids (B, max_len), mask (B, max_len) bool, right-padded (what T5 expects)."""
        t = self.tokenizer([self.template.format(self.clean(p)) for p in prompts], max_length=self.max_len,
                           padding="max_length",
                           truncation=True, return_tensors="pt")
        device = next(self.encoder.parameters()).device
        return t["input_ids"].to(device), t["attention_mask"].to(device).bool()

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, L, d_model)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenize(prompts)
        feats = self(ids, mask)
        return (feats, mask) if self.right_pad else left_pad(feats, mask)


class LlamaGenBackend:
    """What every LlamaGen backend shares: a GPT policy and a frozen VQ decoder on an (h, w) token grid."""

    def __init__(self, gpt: GPT, vq: VQModel, image_size: int):
        self.policy, self.vq = gpt, vq.eval().requires_grad_(False)
        self.image_size = image_size
        g = image_size // vq.downsample
        self.grid, self.num_tokens = (g, g), g * g
        assert self.num_tokens == gpt.cfg.block_size, "GPT block_size must match the VQ grid"

    @property
    def device(self):
        return self.policy.tok_embeddings.weight.device

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
    reward text "a photo of <names>" (ar_grpo.md §3.2)."""

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
    encoder is the toy's WordEncoder or FLAN-T5 (T5CaptionEncoder): anything with
    encode(prompts) -> (features (B, L, caption_dim), mask (B, L) bool)."""

    def __init__(self, gpt: GPT, vq: VQModel, text: nn.Module, image_size: int):
        super().__init__(gpt, vq, image_size)
        self.text = text.eval().requires_grad_(False)
        # The null caption is never reached by the conditional-only loss; keep it fixed during RL.
        gpt.cls_embedding.uncond_embedding.requires_grad_(False)

    def cond(self, prompts: list[str]) -> dict:
        emb, mask = self.text.encode(list(prompts))
        return {"emb": emb.to(self.device, self.policy.tok_embeddings.weight.dtype), "mask": mask.to(self.device)}

    def save(self, out_dir: str):
        """Write config.json + safetensors weights (atomically) to out_dir (WordEncoder backends only)."""
        from common.utils import save_safetensors

        if not isinstance(self.text, WordEncoder):
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


def build_t2i(config: dict) -> LlamaGenT2I:
    """Randomly initialised backend from a config dict (the format of weights/*/config.json)."""
    gpt = GPT(GPTConfig(**config["gpt"])).init_weights()
    vq = VQModel(VQConfig(**{**config["vq"], "ch_mult": tuple(config["vq"]["ch_mult"])}))
    t = config["text"]
    return LlamaGenT2I(gpt, vq, WordEncoder(t["vocab"], t["max_len"], t["dim"]), config["image_size"])


def toy_vocab() -> list[str]:
    from common import shapeworld as sw

    words = ["a", "an", "photo", "of", "and", "left", "right", "above", "below", "two", "three", "four"]
    words += [w for c in sw.CLASSES for w in (c, c + "s")] + list(sw.COLORS)
    return ["<pad>", "<unk>"] + words


def toy_config(scale: str = "toy") -> dict:
    """The ShapeWorld architecture ("toy") or a much smaller one for fast tests ("tiny").
    64x64 images, 8x downsampling -> 8x8 = 64 image tokens."""
    if scale == "tiny":
        gpt = dict(dim=32, n_layer=2, n_head=2, multiple_of=16, vocab_size=64, block_size=64, cls_token_num=12)
        vq = dict(codebook_size=64, codebook_embed_dim=4, z_channels=16, ch=8, ch_mult=[1, 1, 1, 2], num_res_blocks=1,
                  norm_groups=4)
    else:
        gpt = dict(dim=128, n_layer=4, n_head=4, multiple_of=32, vocab_size=128, block_size=64, cls_token_num=12)
        vq = dict(codebook_size=128, codebook_embed_dim=8, z_channels=32, ch=16, ch_mult=[1, 1, 2, 2],
                  num_res_blocks=1, norm_groups=8)
    gpt.update(model_type="t2i", caption_dim=64)
    return {"gpt": gpt, "vq": vq, "text": {"vocab": toy_vocab(), "max_len": 12, "dim": 64}, "image_size": 64}


# -- official LlamaGen checkpoints ----------------------------------------------------------------
# The release's .pt files are not on a model hub that `from_pretrained` reads: they are resolved in a local
# folder, $LLAMAGEN_DIR (default weights/llamagen), under their official names (ar_grpo.md §1.8).

LLAMAGEN_DIR_ENV = "LLAMAGEN_DIR"
LLAMAGEN_DEFAULT_DIR = os.path.join(REPO, "weights", "llamagen")
CLASS_NAMES_ENV = "LLAMAGEN_CLASS_NAMES"  # a class-names file elsewhere than $LLAMAGEN_DIR/imagenet_classes.txt
CLASS_NAMES_FILE = "imagenet_classes.txt"
T5_DIR = "flan-t5-xl"  # a Hugging Face snapshot of google/flan-t5-xl (config, tokenizer, weights)
T5_URL = "https://huggingface.co/google/flan-t5-xl"
_C2I_URL = "https://huggingface.co/FoundationVision/LlamaGen/resolve/main/"
_T2I_URL = "https://huggingface.co/peizesun/llamagen_t2i/resolve/main/"


class LlamaGenCheckpoint(NamedTuple):
    task: str  # "c2i" or "t2i"
    preset: str  # GPT_PRESETS key
    image_size: int
    gpt_file: str
    vq_file: str
    url: str  # download prefix of both files


LLAMAGEN_CHECKPOINTS = {
    "llamagen-c2i-b": LlamaGenCheckpoint("c2i", "B", 256, "c2i_B_256.pt", "vq_ds16_c2i.pt", _C2I_URL),
    "llamagen-c2i-l": LlamaGenCheckpoint("c2i", "L", 256, "c2i_L_256.pt", "vq_ds16_c2i.pt", _C2I_URL),
    "llamagen-c2i-b-384": LlamaGenCheckpoint("c2i", "B", 384, "c2i_B_384.pt", "vq_ds16_c2i.pt", _C2I_URL),
    "llamagen-c2i-l-384": LlamaGenCheckpoint("c2i", "L", 384, "c2i_L_384.pt", "vq_ds16_c2i.pt", _C2I_URL),
    "llamagen-c2i-xl": LlamaGenCheckpoint("c2i", "XL", 384, "c2i_XL_384.pt", "vq_ds16_c2i.pt", _C2I_URL),
    "llamagen-t2i-xl": LlamaGenCheckpoint("t2i", "XL", 256, "t2i_XL_stage1_256.pt", "vq_ds16_t2i.pt", _T2I_URL),
}


def read_class_names(path: str) -> list[str]:
    """Class names in class-index order: a .txt with one name per line (ImageNet names contain commas,
    e.g. "tench, Tinca tinca"), or a .json list of names / dict {index: name or [wnid, name]}."""
    if path.endswith(".json"):
        with open(path) as f:
            data = json.load(f)
        if isinstance(data, dict):
            data = [data[k] for k in sorted(data, key=int)]
        return [v[-1] if isinstance(v, list) else v for v in data]
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def load_t5_encoder(path: str, max_len: int, right_pad: bool, device: str | torch.device) -> T5CaptionEncoder:
    """FLAN-T5 encoder + tokenizer from a local snapshot (never the hub). bf16 on CUDA as the release,
    fp32 elsewhere (T5 overflows in fp16)."""
    import transformers
    from packaging.version import Version
    from transformers import AutoTokenizer, T5EncoderModel

    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    dtype_kw = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    encoder = T5EncoderModel.from_pretrained(path, local_files_only=True, **{dtype_kw: dtype}).to(device, dtype)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return T5CaptionEncoder(encoder, tokenizer, max_len=max_len, right_pad=right_pad)


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
) -> LlamaGenC2I | LlamaGenT2I:
    """An official LlamaGen backend (a name of LLAMAGEN_CHECKPOINTS) from the release's files, strictly loaded.

    weights_dir     folder holding the files; default $LLAMAGEN_DIR, else weights/llamagen
    right_pad       t2i: the AR-GRPO release's right padding instead of LlamaGen's left padding (also
                    settable later as bk.text.right_pad)
    trust_pickle    allow non-weights pickles in the .pt files; default: $LLAMAGEN_TRUST_PICKLE == "1"
    gpt_overrides, vq_config, image_size    replace the official configuration (tiny models in tests)
    c2i: class names come from $LLAMAGEN_CLASS_NAMES, else <weights_dir>/imagenet_classes.txt (required: checked
    with the weights, before anything is built).
    """
    ck = LLAMAGEN_CHECKPOINTS[name]
    folder = weights_dir or os.environ.get(LLAMAGEN_DIR_ENV) or LLAMAGEN_DEFAULT_DIR
    names_path = os.environ.get(CLASS_NAMES_ENV) or os.path.join(folder, CLASS_NAMES_FILE)
    needed = [ck.gpt_file, ck.vq_file] + ([T5_DIR] if ck.task == "t2i" else [])
    missing = [f for f in needed if not os.path.exists(os.path.join(folder, f))]
    if missing:
        urls = " ".join(T5_URL if f == T5_DIR else ck.url + f for f in missing)
        raise FileNotFoundError(f"{name} needs {', '.join(missing)} in {folder} (set ${LLAMAGEN_DIR_ENV} to the "
                                f"folder that holds them); download: {urls}")
    if ck.task == "c2i" and not os.path.isfile(names_path):  # every reward reads "a photo of <class names>"
        raise FileNotFoundError(f"{name} needs the 1000 ImageNet class names, one per line in class-index order, in "
                                f"{names_path} (or set ${CLASS_NAMES_ENV} to such a file)")
    if trust_pickle is None:
        trust_pickle = os.environ.get("LLAMAGEN_TRUST_PICKLE") == "1"
    size = image_size or ck.image_size
    cfg = official_gpt_config(ck.preset, ck.task, size, **(gpt_overrides or {}))
    gpt = load_official_gpt(os.path.join(folder, ck.gpt_file), cfg, trust_pickle).to(device, dtype)
    vq = load_official_vq(os.path.join(folder, ck.vq_file), vq_config, trust_pickle).to(device)
    if ck.task == "c2i":
        return LlamaGenC2I(gpt, vq, size, read_class_names(names_path))
    text = load_t5_encoder(os.path.join(folder, T5_DIR), cfg.cls_token_num, right_pad, device)
    return LlamaGenT2I(gpt, vq, text, size)


JANUS_MODELS = ("janus-pro-1b", "janus-pro-7b")
MODELS = ("tiny", "toy", *LLAMAGEN_CHECKPOINTS, *JANUS_MODELS)


def load_model(name: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, **janus_kwargs):
    """Build a backend by name. 'tiny' = random weights (tests); 'toy' = shipped ShapeWorld weights.
    A directory path holding config.json + *.safetensors (as written by `save`) also works.
    Janus-Pro names or directories go to common.janus.load_janus (janus_kwargs: template, download)."""
    from common.janus import is_janus_dir, load_janus  # torch only; transformers is imported when building one

    if name in JANUS_MODELS or (os.path.isdir(name) and is_janus_dir(name)):
        return load_janus(name, device, dtype, **janus_kwargs)
    if name in LLAMAGEN_CHECKPOINTS:
        return load_llamagen(name, device, dtype)
    if name == "tiny":
        bk = build_t2i(toy_config("tiny"))
    elif name == "toy" or os.path.isdir(name):
        path = TOY_DIR if name == "toy" else name
        cfg_path = os.path.join(path, "config.json")
        if not os.path.exists(cfg_path):
            raise FileNotFoundError(
                f"no model weights at {path}: for 'toy' run `python train_toy.py` to regenerate them"
            )
        from common.utils import load_safetensors

        try:
            with open(cfg_path) as f:
                bk = build_t2i(json.load(f))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{cfg_path}: not a toy-format model config ({type(e).__name__}: {e})") from None
        for mod, file in ((bk.policy, "gpt"), (bk.vq, "vq"), (bk.text, "text")):
            mod.load_state_dict(load_safetensors(os.path.join(path, f"{file}.safetensors")), strict=True)
    else:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)} or a directory with config.json")
    for m in (bk.policy, bk.vq, bk.text):
        m.to(device)
    bk.policy.to(dtype)
    return bk


def load_policy_checkpoint(bk, ckpt_dir: str):
    """Load a training run's policy.safetensors (see common/utils.save_checkpoint) into bk.policy, strictly."""
    from common.utils import load_safetensors

    sd = load_safetensors(os.path.join(ckpt_dir, "policy.safetensors"), bk.device)
    bk.policy.load_state_dict(sd, strict=True)
    return bk
