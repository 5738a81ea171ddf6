"""HPSv2.1 reward (STAGE §4.1, GCPO §6.1, AR-GRPO §3.3): the cosine between the HPS image and text
embeddings, i.e. open_clip ViT-H-14 with the `HPS_v2.1_compressed.pt` weights.

The score is the raw cosine (about 0.2-0.35), as in training in all three releases; evaluation tables report
it x 100. The model runs in transformers' CLIPModel: `open_clip_to_hf` maps the open_clip state dict onto it
(tests/test_rewards_hps.py proves the map against an independent open_clip-layout forward), so neither
open_clip, hpsv2 nor torchvision is needed (hpsv2 1.2.0 fails at import and open_clip needs torchvision).

Inputs are read as the originals read them:
- image: truncated to 8 bits (the releases pass PIL images made by truncation: AR-GRPO's `to_pil_image`,
  Janus's float-to-uint8 cast in STAGE and GCPO), then HPSv2's `preprocess_val` in its order: `ToTensor`, the
  float tensor's longest side resized to 224 (bicubic, antialiased) with no clamp to [0, 1], padded to a square
  with black, OpenAI mean/std (`preprocess="pad"`: hpsv2's `light_augmentation=True`, which STAGE's
  `reward_hps.py` and AR-GRPO's `reward_utils/hpsv2.py` both pass); `preprocess="crop"` gives the shortest side +
  centre crop of `light_augmentation=False`. Both are the same for square images.
- text: open_clip's cleaning as hpsv2's tokenizer does it (`open_clip_clean`: `ftfy.fix_text`, `html.unescape`
  twice, whitespace runs to one space, stripped), then CLIP BPE (lowercased), 77 tokens, truncated. Without
  it "Tom &amp; Jerry" and curly quotes tokenize differently.

Files: `HPS_v2.1_compressed.pt` from the hub repo xswu/HPSv2 (or $HPS_CHECKPOINT, or $HPS_ROOT as hpsv2 uses),
the tokenizer of laion/CLIP-ViT-H-14-laion2B-s32B-b79K (or $HPS_TOKENIZER: any CLIP BPE tokenizer folder).
"""
from __future__ import annotations

import html
import os

import torch

from rewards.clip import CLIPEncoder, truncate_8bit
from rewards.hub import hub_file, pretrained, require, source

HPS_REPO, HPS_FILE = "xswu/HPSv2", "HPS_v2.1_compressed.pt"
HPS_TOKENIZER = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


def vit_h14_config(**overrides):
    """transformers CLIPConfig of open_clip's ViT-H-14 (exact GELU, LayerNorm eps 1e-5, 224 px, patch 14)."""
    from transformers import CLIPConfig

    text = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5,
                bos_token_id=49406, eos_token_id=49407, pad_token_id=0)
    vision = dict(image_size=224, patch_size=14, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                  num_attention_heads=16, hidden_act="gelu", layer_norm_eps=1e-5)
    text.update(overrides.pop("text_config", {}))
    vision.update(overrides.pop("vision_config", {}))
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=overrides.pop("projection_dim", 1024),
                      **overrides)


def _block(src: str, dst: str, sd: dict, out: dict) -> None:
    """One residual block: open_clip (fused qkv, ln_1/ln_2, mlp.c_fc/c_proj) -> transformers CLIP layer."""
    q, k, v = sd[f"{src}.attn.in_proj_weight"].chunk(3, dim=0)
    qb, kb, vb = sd[f"{src}.attn.in_proj_bias"].chunk(3, dim=0)
    for name, w, b in (("q", q, qb), ("k", k, kb), ("v", v, vb)):
        out[f"{dst}.self_attn.{name}_proj.weight"], out[f"{dst}.self_attn.{name}_proj.bias"] = w, b
    pairs = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
             "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for s, d in pairs.items():
        out[f"{dst}.{d}.weight"], out[f"{dst}.{d}.bias"] = sd[f"{src}.{s}.weight"], sd[f"{src}.{s}.bias"]


def open_clip_to_hf(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an open_clip CLIP state dict (standard ViT + built-in text tower, as ViT-H-14) to CLIPModel keys.

    Raises KeyError on a missing key and ValueError on keys it does not know (nothing is silently dropped,
    except the non-learned `attn_mask` buffer that old open_clip versions saved).
    """
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    sd = {k: v for k, v in sd.items() if not k.endswith("attn_mask")}
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(k):
        used.add(k)
        return sd[k]

    n_vis = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith("visual.transformer.resblocks."))
    n_txt = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("transformer.resblocks."))
    for i in range(n_vis):
        src = f"visual.transformer.resblocks.{i}"
        _block(src, f"vision_model.encoder.layers.{i}", sd, out)
        used.update(k for k in sd if k.startswith(src + "."))
    for i in range(n_txt):
        src = f"transformer.resblocks.{i}"
        _block(src, f"text_model.encoder.layers.{i}", sd, out)
        used.update(k for k in sd if k.startswith(src + "."))
    out["vision_model.embeddings.class_embedding"] = take("visual.class_embedding")
    out["vision_model.embeddings.patch_embedding.weight"] = take("visual.conv1.weight")
    out["vision_model.embeddings.position_embedding.weight"] = take("visual.positional_embedding")
    for s, d in (("visual.ln_pre", "vision_model.pre_layrnorm"), ("visual.ln_post", "vision_model.post_layernorm"),
                 ("ln_final", "text_model.final_layer_norm")):
        out[f"{d}.weight"], out[f"{d}.bias"] = take(f"{s}.weight"), take(f"{s}.bias")
    out["visual_projection.weight"] = take("visual.proj").t().contiguous()  # open_clip: x @ proj
    out["text_projection.weight"] = take("text_projection").t().contiguous()
    out["text_model.embeddings.token_embedding.weight"] = take("token_embedding.weight")
    out["text_model.embeddings.position_embedding.weight"] = take("positional_embedding")
    out["logit_scale"] = take("logit_scale")
    unknown = sorted(set(sd) - used)
    if unknown:
        raise ValueError(f"open_clip state dict has keys this map does not handle: {unknown[:5]}"
                         f"{' ...' if len(unknown) > 5 else ''}")
    return out


def load_open_clip_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """The `state_dict` of an HPS checkpoint (or a bare state dict), loaded with weights_only=True."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(f"reward 'hps': cannot read {path!r} as a PyTorch checkpoint "
                           f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict) or "visual.proj" not in {k.removeprefix("module.") for k in sd}:
        raise RuntimeError(f"reward 'hps': {path!r} is not an open_clip ViT checkpoint (expected a 'state_dict' "
                           f"with 'visual.proj'; use {HPS_FILE} from {HPS_REPO})")
    return sd


def hps_model(state_dict: dict[str, torch.Tensor], config=None):
    """transformers CLIPModel holding the open_clip weights (config: ViT-H-14 unless given), float32.

    Built on the meta device and filled with assign=True, so the 1B-parameter model is not randomly
    initialised first; the non-persistent position_ids buffers are then rebuilt.
    """
    from transformers import CLIPModel

    mapped = open_clip_to_hf(state_dict)
    with torch.device("meta"):
        model = CLIPModel(config or vit_h14_config())
    model.load_state_dict(mapped, strict=True, assign=True)
    for emb in (model.vision_model.embeddings, model.text_model.embeddings):
        n = emb.position_embedding.num_embeddings
        emb.register_buffer("position_ids", torch.arange(n).expand((1, -1)), persistent=False)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"reward 'hps': tensors left uninitialised after loading: {left[:5]}")
    return model.float().eval()


def open_clip_clean(text: str) -> str:
    """The text cleaning of open_clip's tokenizer (hpsv2's `basic_clean` then `whitespace_clean`)."""
    try:
        import ftfy
        import regex
    except ImportError as e:
        raise ImportError(f"reward 'hps' needs ftfy and regex (open_clip's text cleaning): pip install -r "
                          f"requirements.txt ({e})") from e
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip()


def hps_encoder(model, tokenizer, preprocess: str = "pad", **kw) -> CLIPEncoder:
    """The HPS model and tokenizer reading their inputs as hpsv2 does (see the module docstring)."""
    return CLIPEncoder(model, tokenizer, mode=preprocess, clamp=False, clean_text=open_clip_clean, **kw)


class HPSReward:
    """Reward: HPSv2.1 score, the raw cosine in [-1, 1] (x 100 in the papers' tables: pass scale=100). The
    images are truncated to 8 bits first; build the encoder with `hps_encoder`."""

    def __init__(self, encoder: CLIPEncoder, scale: float = 1.0):
        self.encoder, self.scale = encoder, scale

    def __call__(self, images: torch.Tensor, prompts: list[str], metadata: list[dict] | None = None) -> torch.Tensor:
        return self.scale * self.encoder.cosine(truncate_8bit(images), prompts)


def make_hps(device="cpu", checkpoint: str | None = None, tokenizer: str | None = None,
             preprocess: str = "pad") -> HPSReward:
    """`hps` reward. Checkpoint: `checkpoint`, $HPS_CHECKPOINT, $HPS_ROOT/HPS_v2.1_compressed.pt, or the hub
    cache of xswu/HPSv2. Tokenizer: `tokenizer`, $HPS_TOKENIZER, or laion/CLIP-ViT-H-14-laion2B-s32B-b79K."""
    tf = require("transformers", "hps")
    path = hub_file(HPS_REPO, HPS_FILE, reward="hps", env="HPS_CHECKPOINT", explicit=checkpoint,
                    extra_dirs=(os.environ.get("HPS_ROOT", ""),))
    tok_src = source(tokenizer, "HPS_TOKENIZER", HPS_TOKENIZER)
    tok = pretrained(tf.AutoTokenizer.from_pretrained, tok_src, reward="hps", what="the CLIP tokenizer",
                     env="HPS_TOKENIZER")
    model = hps_model(load_open_clip_checkpoint(path)).to(device)
    return HPSReward(hps_encoder(model, tok, preprocess))
