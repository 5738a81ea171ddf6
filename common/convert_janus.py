"""Convert a Janus-Pro checkpoint from DeepSeek's original layout into transformers' Janus layout.

    python -m common.convert_janus SRC --out DIR [--tokenizer TOKENIZER_DIR] [--vision-heads N] [--force]

SRC is what `MultiModalityCausalLM.save_pretrained` of DeepSeek's code (deepseek-ai/Janus) writes: the released
deepseek-ai/Janus-Pro-1B / -7B and the checkpoints the STAGE and GCPO releases fine-tune and save. A config.json
with model_type "multi_modality" and weights as model.safetensors or pytorch_model.bin, one file or shards with
an index, whose names start with language_model., vision_model., aligner., gen_vision_model., gen_aligner.,
gen_embed. and gen_head.; the tokenizer files too, or --tokenizer names a folder that has them.

DIR becomes a transformers Janus directory (`JanusForConditionalGeneration.from_pretrained(DIR)`, `--model DIR`
of the scripts and evaluate.py): config.json, generation_config.json, the weights as safetensors in the source's
dtype (one output file per source file) and the tokenizer.

The tensors are renamed as transformers' own converter renames the official weights (its
src/transformers/models/janus/convert_janus_weights_to_hf.py, which is not in the wheel):

    language_model.model.*              -> model.language_model.*        language_model.lm_head -> lm_head
    gen_embed                           -> model.generation_embeddings
    gen_aligner.layers.0 / .2           -> model.generation_aligner.fc1 / .hidden_layers.0  (aligner: model.aligner)
    gen_head.output_mlp_projector       -> model.generation_head.proj_out  (gen_head.vision_head keeps its name)
    gen_vision_model.*                  -> model.vqmodel.*, with encoder.conv_blocks -> encoder.down,
                                           decoder.conv_blocks -> decoder.up, res -> block,
                                           mid.0 / mid.1 / mid.2 -> mid.block_1 / mid.attn_1 / mid.block_2
    vision_model.vision_tower.*         -> model.vision_model.*: patch_embed.proj -> embeddings.patch_embedding,
                                           pos_embed -> embeddings.position_embedding.weight (leading 1 dropped),
                                           blocks.N -> encoder.layers.N (attn -> self_attn, attn.qkv split into
                                           q_proj / k_proj / v_proj, attn.proj -> projection_layer, norm1 / norm2
                                           -> layer_norm1 / layer_norm2), norm -> post_layernorm
    dropped                             gen_vision_model.quantize.codebook_used (VQ training statistics) and
                                        vision_model.vision_tower.attn_pool.* (SigLIP's pooling head, unused)

The configuration comes from SRC's config.json (language model: all of language_config) and the tensors' shapes
(vision tower, aligners, VQ model, generation head), where transformers' converter takes transformers' defaults,
which are Janus-Pro's. Two facts no shape holds: the vision tower's heads, from the SigLIP name in config.json
(DeepSeek's `SigLIP_MODEL_CONFIG`) or --vision-heads; and the token ids, from the tokenizer.

Before anything is written, every tensor of SRC is renamed and checked to fill exactly the tensors, with their
shapes, of the model the new config describes. The output is written into a temporary sibling folder and
renamed into place when complete. Bad input is one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections import Counter

import torch

from common.utils import atomic_dir, check_out_dir

DEEPSEEK_MODEL_TYPE = "multi_modality"  # DeepSeek's MultiModalityConfig.model_type
# Attention heads of the vision towers DeepSeek's code knows by name (SigLIP_MODEL_CONFIG in janus/models/siglip_vit.py)
SIGLIP_HEADS = {"siglip_large_patch16_384": 16, "siglip_so400m_patch14_384": 16, "siglip_so400m_patch14_224": 16}
PAD_TOKEN = "<｜▁pad▁｜>"  # Janus-Pro's pad token (DeepSeek's VLChatProcessor pads and builds CFG rows with it)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


class ConversionError(ValueError):
    """Bad input: the message is the one line the user sees."""


# -- what SRC is -----------------------------------------------------------------------------------
def read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ConversionError(f"{path}: unreadable ({type(e).__name__}: {e})") from None


def is_deepseek_janus_dir(path: str) -> bool:
    """A directory holding a config.json of DeepSeek's original Janus layout (model_type "multi_modality")."""
    cfg = os.path.join(path, "config.json")
    if not os.path.isfile(cfg):
        return False
    try:
        with open(cfg) as f:
            return json.load(f).get("model_type") == DEEPSEEK_MODEL_TYPE
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def deepseek_layout_message(path: str) -> str:
    """The one line `--model DIR` gives for a checkpoint in DeepSeek's layout."""
    return (f"{path} holds a Janus checkpoint in DeepSeek's original layout (model_type {DEEPSEEK_MODEL_TYPE!r}); "
            f"convert it once with `python -m common.convert_janus {path} --out NEW_DIR`, then pass --model NEW_DIR")


def read_source(src: str) -> tuple[dict, list[str]]:
    """-> (config.json contents, weight files). Checks SRC is DeepSeek's layout."""
    if not os.path.isdir(src):
        raise ConversionError(f"{src}: not a directory (SRC is the folder of a DeepSeek-layout Janus checkpoint)")
    config_path = os.path.join(src, "config.json")
    if not os.path.isfile(config_path):
        raise ConversionError(f"{src}: no config.json (SRC is the folder DeepSeek's `save_pretrained` wrote)")
    config = read_json(config_path)
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type == "janus":
        raise ConversionError(f"{src} is already in transformers' Janus layout: pass it as --model {src} directly")
    if model_type != DEEPSEEK_MODEL_TYPE:
        raise ConversionError(f"{config_path}: model_type {model_type!r}, not DeepSeek's Janus layout "
                              f"({DEEPSEEK_MODEL_TYPE!r})")
    for index, single in (("model.safetensors.index.json", "model.safetensors"),
                          ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        if os.path.isfile(os.path.join(src, index)):
            weight_map = read_json(os.path.join(src, index)).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ConversionError(f"{os.path.join(src, index)}: no weight_map")
            files = [os.path.join(src, f) for f in sorted(set(weight_map.values()))]
            missing = [f for f in files if not os.path.isfile(f)]
            if missing:
                raise ConversionError(f"{missing[0]}: missing ({len(missing)} of the {len(files)} shards {index} "
                                      f"names are absent; download them all)")
            return config, files
        if os.path.isfile(os.path.join(src, single)):
            return config, [os.path.join(src, single)]
    raise ConversionError(f"{src}: no weights (model.safetensors, pytorch_model.bin, or their sharded .index.json)")


def load_weights(path: str, meta: bool = False) -> dict[str, torch.Tensor]:
    """One weight file -> its tensors (meta=True: only names, shapes and dtypes, nothing read)."""
    try:
        if path.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, "pt") as f:
                if not meta:
                    return {k: f.get_tensor(k) for k in f.keys()}
                out = {}
                for k in f.keys():
                    s = f.get_slice(k)
                    out[k] = torch.empty(s.get_shape(), dtype=_SAFETENSORS_DTYPES.get(s.get_dtype()), device="meta")
                return out
        try:  # weights_only: tensors only, never code; mmap: read lazily (zip-format files, torch >= 1.6)
            sd = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged file surfaces as whatever the reader raises
        raise ConversionError(f"{path}: unreadable weights ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ConversionError(f"{path}: not a state dict of tensors")
    return {k: v.to("meta") for k, v in sd.items()} if meta else sd


_SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
                       "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8, "BOOL": torch.bool}


# -- the renaming ----------------------------------------------------------------------------------
GEN_HEAD = {"output_mlp_projector": "proj_out", "vision_head": "vision_head"}
VQ_MID = {"0": "block_1", "1": "attn_1", "2": "block_2"}
VISION_BLOCK = {"attn.proj": "self_attn.projection_layer", "norm1": "layer_norm1", "norm2": "layer_norm2",
                "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}


def convert_tensor(key: str, t: torch.Tensor) -> dict[str, torch.Tensor]:
    """One tensor of DeepSeek's layout -> its tensor(s) in transformers' layout ({} for the dropped ones)."""
    head, _, rest = key.partition(".")
    if key == "gen_vision_model.quantize.codebook_used" or key.startswith("vision_model.vision_tower.attn_pool."):
        return {}
    if head == "language_model":
        if rest == "lm_head.weight":
            return {"lm_head.weight": t}
        if rest.startswith("model."):
            return {"model.language_model." + rest[len("model."):]: t}
    elif head == "gen_embed" and rest == "weight":
        return {"model.generation_embeddings.weight": t}
    elif head in ("aligner", "gen_aligner"):  # MlpProjector.layers: Linear, GELU, Linear, ... (or one Linear)
        m = re.fullmatch(r"layers\.(?:(\d+)\.)?(weight|bias)", rest)
        if m and int(m[1] or 0) % 2 == 0:
            i = int(m[1] or 0) // 2
            name = "fc1" if i == 0 else f"hidden_layers.{i - 1}"
            return {f"model.{'generation_aligner' if head == 'gen_aligner' else 'aligner'}.{name}.{m[2]}": t}
    elif head == "gen_head":
        sub, _, param = rest.partition(".")
        if sub in GEN_HEAD:
            return {f"model.generation_head.{GEN_HEAD[sub]}.{param}": t}
    elif head == "gen_vision_model":
        parts = rest.split(".")
        if parts[0] in ("encoder", "decoder") and len(parts) > 2:
            if parts[1] == "conv_blocks":
                parts[1] = "down" if parts[0] == "encoder" else "up"
                parts = [("block" if p == "res" and i == 3 else p) for i, p in enumerate(parts)]
            elif parts[1] == "mid" and parts[2] in VQ_MID:
                parts[2:3] = [VQ_MID[parts[2]]]
        return {"model.vqmodel." + ".".join(parts): t}
    elif key.startswith("vision_model.vision_tower."):
        return _convert_vision(key[len("vision_model.vision_tower."):], t)
    raise ConversionError(f"tensor {key!r} has no place in transformers' Janus layout (is SRC a Janus-Pro "
                          f"checkpoint of DeepSeek's code?)")


def _convert_vision(rest: str, t: torch.Tensor) -> dict[str, torch.Tensor]:
    pre = "model.vision_model."
    if rest == "pos_embed":  # (1, N, D) -> the (N, D) table of an nn.Embedding
        return {pre + "embeddings.position_embedding.weight": t.squeeze(0)}
    if rest.startswith("patch_embed.proj."):
        return {pre + "embeddings.patch_embedding." + rest[len("patch_embed.proj."):]: t}
    if rest.startswith("norm."):
        return {pre + "post_layernorm." + rest[len("norm."):]: t}
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)\.(weight|bias)", rest)
    if m:
        layer, module, param = f"{pre}encoder.layers.{m[1]}.", m[2], m[3]
        if module == "attn.qkv":  # fused (3D, ...) -> q, k, v
            q, k, v = t.chunk(3, dim=0)  # cloned: a file cannot hold three views of one storage
            return {f"{layer}self_attn.{n}_proj.{param}": x.clone() for n, x in zip("qkv", (q, k, v))}
        if module in VISION_BLOCK:
            return {f"{layer}{VISION_BLOCK[module]}.{param}": t}
    raise ConversionError(f"tensor 'vision_model.vision_tower.{rest}' has no place in transformers' Janus layout")


# -- the configuration -----------------------------------------------------------------------------
LANGUAGE_BOOKKEEPING = ("torch_dtype", "dtype", "transformers_version", "architectures", "_name_or_path",
                        "_attn_implementation_autoset", "model_type")


def _count(shapes: dict, prefix: str) -> int:
    """How many numbered children `prefix.N.` the names hold."""
    return len({k[len(prefix):].split(".")[0] for k in shapes if k.startswith(prefix)})


def _shape(shapes: dict, key: str) -> tuple[int, ...]:
    if key not in shapes:
        raise ConversionError(f"tensor {key!r} is missing from SRC (an incomplete or not a Janus-Pro checkpoint)")
    return tuple(shapes[key])


def _mlp_projector(shapes: dict, name: str) -> tuple[int, int]:
    """-> (output width, number of Linear layers) of DeepSeek's MlpProjector `name`."""
    if f"{name}.layers.weight" in shapes:
        return _shape(shapes, f"{name}.layers.weight")[0], 1
    return _shape(shapes, f"{name}.layers.0.weight")[0], _count(shapes, f"{name}.layers.")


def build_config(src_config: dict, shapes: dict, tokenizer, vision_heads: int | None = None, dtype=None):
    """DeepSeek's config.json + the source tensors' shapes + the tokenizer -> a transformers JanusConfig."""
    from transformers import JanusConfig

    lang = dict(src_config.get("language_config") or {})
    if not lang:
        raise ConversionError("config.json has no language_config")
    for k in LANGUAGE_BOOKKEEPING:
        lang.pop(k, None)
    vocab, hidden = _shape(shapes, "language_model.model.embed_tokens.weight")
    if (lang.get("vocab_size", vocab), lang.get("hidden_size", hidden)) != (vocab, hidden):
        raise ConversionError(f"config.json's language_config (vocab_size {lang.get('vocab_size')}, hidden_size "
                              f"{lang.get('hidden_size')}) does not match the embedding table {vocab} x {hidden}")
    tie = bool(lang.get("tie_word_embeddings", False))  # LlamaConfig's default in DeepSeek's code
    vocab_ids = tokenizer.get_vocab()
    for token in ("<begin_of_image>", "<image_placeholder>"):
        if token not in vocab_ids:
            raise ConversionError(f"the tokenizer has no {token} token: pass --tokenizer with Janus-Pro's tokenizer")
    text_config = {**lang, "model_type": "llama", "vocab_size": vocab, "hidden_size": hidden,
                   "tie_word_embeddings": tie, "bos_token_id": tokenizer.bos_token_id,
                   "eos_token_id": tokenizer.eos_token_id, "pad_token_id": pad_token_id(tokenizer)}

    vt = "vision_model.vision_tower."
    width, channels, patch, _ = _shape(shapes, vt + "patch_embed.proj.weight")
    positions = _shape(shapes, vt + "pos_embed")[-2]
    params = (src_config.get("vision_config") or {}).get("params") or {}
    image_size = int(params.get("image_size") or round(positions ** 0.5) * patch)
    if (image_size // patch) ** 2 != positions:
        raise ConversionError(f"vision image_size {image_size} / patch {patch} does not give the {positions} "
                              f"position embeddings of {vt}pos_embed")
    heads = vision_heads or SIGLIP_HEADS.get(params.get("model_name"))
    if not heads:
        raise ConversionError(f"unknown vision tower {params.get('model_name')!r} in config.json: pass its number of "
                              f"attention heads with --vision-heads N (known: {', '.join(SIGLIP_HEADS)})")
    if width % heads:
        raise ConversionError(f"--vision-heads {heads} does not divide the vision width {width}")
    mlp = _shape(shapes, vt + "blocks.0.mlp.fc1.weight")[0]
    projection, depth = _mlp_projector(shapes, "aligner")
    vision_config = dict(hidden_size=width, num_hidden_layers=_count(shapes, vt + "blocks."), num_attention_heads=heads,
                         num_channels=channels, image_size=image_size, patch_size=patch,
                         mlp_ratio=mlp // width if mlp % width == 0 else mlp / width,
                         attention_bias=vt + "blocks.0.attn.qkv.bias" in shapes, projection_dim=projection,
                         depth=depth, num_image_tokens=positions)

    vq = "gen_vision_model."
    codes, code_dim = _shape(shapes, vq + "quantize.embedding.weight")
    base, in_channels = _shape(shapes, vq + "encoder.conv_in.weight")[:2]
    levels = _count(shapes, vq + "encoder.conv_blocks.")
    multipliers = [_shape(shapes, f"{vq}encoder.conv_blocks.{i}.res.0.conv2.weight")[0] // base for i in range(levels)]
    latent = _shape(shapes, vq + "quant_conv.weight")[1]
    gen_projection, gen_depth = _mlp_projector(shapes, "gen_aligner")
    head_out, head_in = _shape(shapes, "gen_head.output_mlp_projector.weight")
    if head_out != gen_projection:  # transformers has one projection_dim for the generation aligner and head
        raise ConversionError(f"gen_head's width {head_out} differs from gen_aligner's {gen_projection}: "
                              f"transformers' Janus layout cannot hold this checkpoint")
    vq_config = dict(embed_dim=code_dim, num_embeddings=codes,
                     double_latent=_shape(shapes, vq + "encoder.conv_out.weight")[0] == 2 * latent,
                     latent_channels=latent, in_channels=in_channels, base_channels=base,
                     channel_multiplier=multipliers, num_res_blocks=_count(shapes, vq + "encoder.conv_blocks.0.res."),
                     out_channels=_shape(shapes, vq + "decoder.conv_out.weight")[0], projection_dim=gen_projection,
                     num_hidden_layers=gen_depth, image_token_embed_dim=head_in)
    config = JanusConfig(text_config=text_config, vision_config=vision_config, vq_config=vq_config,
                         image_token_id=vocab_ids["<image_placeholder>"], tie_word_embeddings=tie)
    if dtype is not None:
        config.dtype = dtype
    return config


def pad_token_id(tokenizer) -> int | None:
    """Janus-Pro's pad token where the tokenizer has it (as transformers' converter sets it), else its pad token."""
    return tokenizer.get_vocab().get(PAD_TOKEN, tokenizer.pad_token_id)


def generation_config(tokenizer):
    from transformers import GenerationConfig

    gen = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=pad_token_id(tokenizer))
    gen.generation_kwargs = {"boi_token_id": tokenizer.convert_tokens_to_ids("<begin_of_image>")}
    return gen


def load_tokenizer(path: str, src: str, given: bool):
    from transformers import AutoTokenizer

    if not any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES):
        where = f"--tokenizer {path}" if given else f"{src} (SRC)"
        raise ConversionError(f"no tokenizer files in {where}: pass --tokenizer DIR, a folder with Janus-Pro's "
                              f"tokenizer (e.g. a download of deepseek-ai/Janus-Pro-7B)")
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # not the warning that SRC's config.json is no transformers model type
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as e:  # noqa: BLE001  (a broken tokenizer folder raises many kinds)
        why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        raise ConversionError(f"{path}: the tokenizer does not load ({why}); pass --tokenizer DIR, a folder with "
                              f"Janus-Pro's complete tokenizer files") from None
    finally:
        logging.set_verbosity(verbosity)


# -- checking and writing --------------------------------------------------------------------------
def expected_shapes(config) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors `JanusForConditionalGeneration(config).save_pretrained` writes."""
    from transformers import JanusForConditionalGeneration

    with torch.device("meta"):
        model = JanusForConditionalGeneration(config)
    out = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        out.pop("lm_head.weight", None)
    return out


def check_coverage(converted: dict[str, tuple], expected: dict[str, tuple], src: str):
    missing = sorted(set(expected) - set(converted))
    extra = sorted(set(converted) - set(expected))
    wrong = sorted(k for k in set(expected) & set(converted) if tuple(expected[k]) != tuple(converted[k]))
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensor(s) missing, e.g. {missing[0]}")
        if extra:
            parts.append(f"{len(extra)} without a place, e.g. {extra[0]}")
        if wrong:
            parts.append(f"{len(wrong)} of another shape, e.g. {wrong[0]} {tuple(converted[wrong[0]])} where the "
                         f"config gives {tuple(expected[wrong[0]])}")
        raise ConversionError(f"{src} does not convert to a complete Janus model: {'; '.join(parts)} (an "
                              f"incomplete download, or not a Janus-Pro checkpoint?)")


def plan(src_config: dict, source: dict[str, torch.Tensor], tokenizer, vision_heads: int | None = None,
         src: str = "SRC") -> tuple:
    """DeepSeek's config.json and its tensors (meta tensors will do) -> (the JanusConfig, {converted name: shape}),
    checked to fill exactly the tensors of that model."""
    shapes = {k: tuple(t.shape) for k, t in source.items()}
    floats = Counter(t.dtype for t in source.values() if t.dtype.is_floating_point)
    config = build_config(src_config, shapes, tokenizer, vision_heads, floats.most_common(1)[0][0] if floats else None)
    converted = {}
    for k, t in source.items():
        for name, x in convert_tensor(k, t.to("meta")).items():
            if name in converted:
                raise ConversionError(f"two tensors of {src} map to {name}")
            converted[name] = tuple(x.shape)
    check_coverage(converted, expected_shapes(config), src)
    return config, converted


def check_out(out: str, force: bool, src: str):
    try:
        check_out_dir(out, force, (src,))
    except ValueError as e:
        raise ConversionError(str(e)) from None


def convert(src: str, out: str, *, tokenizer: str | None = None, vision_heads: int | None = None,
            force: bool = False) -> list[str]:
    """Convert SRC (DeepSeek's layout) into OUT (transformers' Janus layout). -> lines describing what was done."""
    from safetensors.torch import save_file

    check_out(out, force, src)
    src_config, files = read_source(src)
    tok = load_tokenizer(tokenizer or src, src, tokenizer is not None)
    source = {}  # every source tensor, as a meta tensor (name, shape, dtype): nothing is read yet
    for path in files:
        source.update(load_weights(path, meta=True))
    config, converted = plan(src_config, source, tok, vision_heads, src)

    with atomic_dir(out, lambda: check_out(out, force, src)) as tmp:  # out still free after the (long) write
        weight_map, total = {}, 0
        for i, path in enumerate(files):  # one source file at a time: peak memory is one shard
            name = "model.safetensors" if len(files) == 1 else f"model-{i + 1:05d}-of-{len(files):05d}.safetensors"
            shard = {}
            for k, t in load_weights(path).items():
                for new, x in convert_tensor(k, t).items():
                    shard[new] = x.contiguous()
            if config.tie_word_embeddings:
                shard.pop("lm_head.weight", None)
            save_file(shard, os.path.join(tmp, name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, name))
            total += sum(x.numel() * x.element_size() for x in shard.values())
            del shard
        if len(files) > 1:
            with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
                json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f,
                          indent=1)
        config.save_pretrained(tmp)
        generation_config(tok).save_pretrained(tmp)
        tok.save_pretrained(tmp)
    n = sum(math.prod(t.shape) for t in source.values())
    return [f"{len(source)} tensors ({n / 1e6:,.1f}M parameters, {str(config.dtype).replace('torch.', '')}) -> "
            f"{len(converted)} in transformers' Janus layout",
            f"load it with: --model {out}"]


def main(argv: list[str] | None = None):
    p = argparse.ArgumentParser(prog="python -m common.convert_janus", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", metavar="SRC", help="folder of a Janus-Pro checkpoint in DeepSeek's original layout")
    p.add_argument("--out", required=True, help="the folder to write (must not exist or be empty, unless --force)")
    p.add_argument("--tokenizer", default=None, help="folder with Janus-Pro's tokenizer files (default: SRC)")
    p.add_argument("--vision-heads", type=int, default=None,
                   help="attention heads of the vision tower, for a SigLIP name DeepSeek's code does not list")
    p.add_argument("--force", action="store_true", help="replace an existing non-empty --out")
    args = p.parse_args(argv)
    try:
        lines = convert(args.src, args.out, tokenizer=args.tokenizer, vision_heads=args.vision_heads, force=args.force)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError, OSError) as e:
        msg = " ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
    print(f"converted {args.src} -> {args.out}")
    for line in lines:
        print("  " + line)


if __name__ == "__main__":
    main()
