r"""Convert GenEval's detector, an mmdetection 2.x Mask2Former checkpoint, to transformers' Mask2Former layout.

    python -m rewards.convert_mask2former mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth \
        --out weights/geneval_mask2former
    export GENEVAL_MASK2FORMER=weights/geneval_mask2former   # (also found there without the variable)

GenEval (Ghosh et al., 2023) scores images with that checkpoint (its evaluation/download_models.sh) through mmdet;
this converter lets rewards/mask2former.py run the same weights with transformers' Mask2FormerForUniversalSegmentation,
no mmcv or mmdet needed. The architecture's sizes come from the checkpoint itself: mmdet's training stores the whole
config text in checkpoint["meta"]["config"] (a checkpoint without it takes --config, the dumped config text), and
every tensor's shape is checked against the model that config builds. The output folder holds transformers' files
(config.json, model.safetensors) and mmdet_pipeline.json, the config's test pipeline (resize to fit 1333x800,
pad to a multiple of 32 with 128, normalise), which rewards/mask2former.py applies.

The two architectures match module for module; besides renaming, three steps change tensors:
- Swin's fused window-attention `qkv` and the decoder self-attention's fused `in_proj` are split into q, k, v (rows
  in that order; the decoder's cross-attention keeps nn.MultiheadAttention's fused layout in both);
- Swin's PatchMerging: mmdet gathers each 2x2 patch with nn.Unfold, channel c*4 + p with p = 2*dy + dx, while
  transformers concatenates the patches (dy, dx) = (0,0), (1,0), (0,1), (1,1), channel b*C + c: the reduction's
  input columns and the norm's channels are permuted (the inverse of mmdet's correct_unfold_reduction_order);
- mmdet's `relative_position_index` buffers are checked against transformers' own and dropped.
tests/test_geneval_detector.py checks the conversion against outputs of mmdet 2.28.2's own code (a small random
model of the same config, tests/data/geneval_mask2former/make_fixture.py) and that every key of the real Swin-S
config is mapped.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import sys

import torch

PIPELINE_FILE = "mmdet_pipeline.json"
GENEVAL_CHECKPOINT = "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth"
DEFAULT_OUT = os.path.join("weights", "geneval_mask2former")

BACKBONE = "model.pixel_level_module.encoder."
SWIN = BACKBONE + "swin."
PIXEL_DECODER = "model.pixel_level_module.decoder."
TRANSFORMER = "model.transformer_module."
# transformers' PatchMerging patch b = (dy, dx) in (0,0), (1,0), (0,1), (1,1) is nn.Unfold's kernel position 2*dy + dx
UNFOLD_POSITION = (0, 2, 1, 3)


class ConversionError(ValueError):
    """The checkpoint or its config is not a Mask2Former that transformers can run: one line saying why."""


# ----------------------------------------------------------------------------- mmdet's config text


def parse_config(text: str) -> dict:
    """mmcv's Config.pretty_text (`name = dict(...)` lines of literals) -> {name: value}, evaluated without running
    any code: only literals, dict(...) calls and names assigned earlier in the text are accepted."""
    try:
        tree = ast.parse(text)
    except SyntaxError as e:
        raise ConversionError(f"the config text does not parse as Python (line {e.lineno}: {e.msg})") from e
    out: dict = {}

    def value(node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(n) for n in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Dict):
            return {value(k): value(v) for k, v in zip(node.keys, node.values)}
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" \
                and len(node.args) <= 1 and all(kw.arg for kw in node.keywords):  # dict(a=1) or dict({'a.b': 1})
            base = value(node.args[0]) if node.args else {}
            if not isinstance(base, dict):
                raise ConversionError(f"config line {node.lineno}: dict() of a non-dict")
            return {**base, **{kw.arg: value(kw.value) for kw in node.keywords}}
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = value(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.Name) and node.id in out:
            return out[node.id]
        raise ConversionError(f"config line {node.lineno}: {ast.unparse(node)[:60]!r} is not a literal (pass the "
                              f"config as mmcv's Config.pretty_text / a dumped config, not a file with _base_)")

    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            out[stmt.targets[0].id] = value(stmt.value)
        elif not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):  # docstrings are fine
            raise ConversionError(f"config line {stmt.lineno}: only `name = value` lines are expected")
    return out


def read_checkpoint(path: str, config: str | None = None, trust_pickle: bool = False) -> tuple[dict, dict, list]:
    """-> (state dict, parsed config, class names or []). The config text: `config` (a file), else meta["config"]."""
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: no such checkpoint file (GenEval's is {GENEVAL_CHECKPOINT}, from its "
                              f"evaluation/download_models.sh)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as e:
        hint = "" if trust_pickle else "; if you trust the file, pass --trust-pickle"
        raise ConversionError(f"{path}: cannot be read ({type(e).__name__}: {str(e).strip().splitlines()[0]}){hint}")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict", ckpt), dict):
        raise ConversionError(f"{path}: not an mmdet checkpoint (a dict with 'state_dict' and 'meta')")
    sd = ckpt.get("state_dict", ckpt)
    meta = ckpt.get("meta") or {}
    if config:
        with open(config, encoding="utf-8") as f:
            text = f.read()
    elif isinstance(meta.get("config"), str):
        text = meta["config"]
    else:
        raise ConversionError(f"{path}: its meta holds no config text; pass the model's dumped mmdet config with "
                              f"--config")
    return sd, parse_config(text), list(meta.get("CLASSES") or [])


# ----------------------------------------------------------------------------- architecture: config -> transformers


def _require(ok: bool, what: str):
    if not ok:
        raise ConversionError(f"unsupported mmdet config: {what} (transformers' Mask2Former cannot run it)")


def _layer_cfg(cfg: dict, key: str) -> dict:
    v = cfg[key]
    return v[0] if isinstance(v, (list, tuple)) else v


def hf_config(cfg: dict, classes: list | None = None):
    """transformers.Mask2FormerConfig for the mmdet config's model (Swin backbone, Mask2FormerHead, instances)."""
    import transformers

    model = cfg.get("model") or {}
    _require(model.get("type") == "Mask2Former", f"model type {model.get('type')!r}, expected 'Mask2Former'")
    bb, head = model["backbone"], model["panoptic_head"]
    _require(bb.get("type") == "SwinTransformer", f"backbone {bb.get('type')!r}, expected 'SwinTransformer'")
    _require(not bb.get("use_abs_pos_embed", False) and bb.get("patch_norm", True) and bb.get("qkv_bias", True)
             and tuple(bb.get("out_indices", (0, 1, 2, 3))) == (0, 1, 2, 3) and bb.get("qk_scale") is None,
             "Swin with absolute position embedding, no patch norm, no qkv bias, qk_scale or other outputs")
    depths = list(bb.get("depths", (2, 2, 6, 2)))
    backbone = transformers.SwinConfig(
        embed_dim=bb.get("embed_dims", 96), depths=depths, num_heads=list(bb.get("num_heads", (3, 6, 12, 24))),
        window_size=bb.get("window_size", 7), mlp_ratio=bb.get("mlp_ratio", 4), patch_size=bb.get("patch_size", 4),
        image_size=bb.get("pretrain_img_size", 224), qkv_bias=True, drop_path_rate=0.0, hidden_act="gelu",
        layer_norm_eps=1e-5, out_features=[f"stage{i + 1}" for i in range(len(depths))])

    _require(head.get("type") == "Mask2FormerHead", f"head {head.get('type')!r}, expected 'Mask2FormerHead'")
    pd, dec = head["pixel_decoder"], head["transformer_decoder"]
    enc_layer, dec_layer = pd["encoder"]["transformerlayers"], dec["transformerlayers"]
    enc_attn, dec_attn = _layer_cfg(enc_layer, "attn_cfgs"), _layer_cfg(dec_layer, "attn_cfgs")
    enc_ffn, dec_ffn = _layer_cfg(enc_layer, "ffn_cfgs"), _layer_cfg(dec_layer, "ffn_cfgs")
    feat = head.get("feat_channels", 256)
    _require(pd.get("type") == "MSDeformAttnPixelDecoder", f"pixel decoder {pd.get('type')!r}")
    _require(head.get("num_transformer_feat_level", 3) == 3 and enc_attn.get("num_levels", 4) == 3
             and enc_attn.get("num_points", 4) == 4, "deformable attention other than 3 levels x 4 points")
    _require(pd.get("norm_cfg", {}).get("num_groups") == 32, "GroupNorm with other than 32 groups")
    _require(enc_attn.get("num_heads", 8) == dec_attn.get("num_heads", 8),
             "different head counts in the pixel decoder and the transformer decoder")
    _require(tuple(enc_layer.get("operation_order", ())) == ("self_attn", "norm", "ffn", "norm"),
             f"pixel decoder layer order {enc_layer.get('operation_order')}")
    _require(tuple(dec_layer.get("operation_order", ())) == ("cross_attn", "norm", "self_attn", "norm", "ffn", "norm"),
             f"decoder layer order {dec_layer.get('operation_order')}")
    for name, pe in (("pixel decoder", pd.get("positional_encoding", {})), ("head", head["positional_encoding"])):
        _require(pe.get("type") == "SinePositionalEncoding" and pe.get("normalize") and pe.get("num_feats") * 2 == feat
                 and pe.get("offset", 0.0) == 0.0, f"{name} positional encoding {pe}")
    for name, ffn in (("pixel decoder", enc_ffn), ("decoder", dec_ffn)):
        _require(ffn.get("act_cfg", {"type": "ReLU"}).get("type") == "ReLU" and ffn.get("num_fcs", 2) == 2,
                 f"{name} FFN {ffn}")
    widths = (enc_attn.get("embed_dims", 256), dec_attn.get("embed_dims", 256), head.get("out_channels", 256))
    _require(all(w == feat for w in widths), "feat_channels, out_channels and the attention widths differ")
    n_things, n_stuff = head.get("num_things_classes", 80), head.get("num_stuff_classes", 53)
    _require(n_stuff == 0, f"{n_stuff} stuff classes (a panoptic model; GenEval uses the instance one)")
    class_weight = head.get("loss_cls", {}).get("class_weight") or [1.0] * n_things + [0.1]
    names = [str(c) for c in classes] if classes and len(classes) == n_things else \
        [f"class_{i}" for i in range(n_things)]
    return transformers.Mask2FormerConfig(
        backbone_config=backbone, feature_size=feat, mask_feature_size=head.get("out_channels", 256), hidden_dim=feat,
        encoder_feedforward_dim=enc_ffn.get("feedforward_channels", 1024),
        dim_feedforward=dec_ffn.get("feedforward_channels", 2048), activation_function="relu",
        encoder_layers=pd["encoder"]["num_layers"], decoder_layers=dec["num_layers"] + 1,
        num_attention_heads=dec_attn.get("num_heads", 8), dropout=0.0, pre_norm=False,
        enforce_input_projection=bool(head.get("enforce_decoder_input_project", False)), common_stride=4,
        feature_strides=list(head.get("strides", (4, 8, 16, 32))), num_queries=head.get("num_queries", 100),
        no_object_weight=float(class_weight[-1]), num_labels=n_things,
        id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})


def pipeline(cfg: dict) -> dict:
    """The config's test pipeline as rewards/mask2former.Mask2FormerDetector's arguments."""
    steps = cfg.get("data", {}).get("test", {}).get("pipeline") or cfg.get("test_pipeline")
    _require(bool(steps), "no test pipeline")
    aug = next((s for s in steps if s.get("type") == "MultiScaleFlipAug"), None)
    _require(aug is not None and not aug.get("flip", False), "test pipeline without MultiScaleFlipAug (or with flip)")
    scale = aug.get("img_scale")
    _require(isinstance(scale, (list, tuple)) and len(scale) == 2 and isinstance(scale[0], int),
             f"test scale {scale!r} (one (w, h) scale expected)")
    by_type = {s.get("type"): s for s in aug["transforms"]}
    types = [s.get("type") for s in aug["transforms"]]
    _require(types[:4] == ["Resize", "RandomFlip", "Pad", "Normalize"] and by_type["Resize"].get("keep_ratio"),
             f"test transforms {types} (expected Resize(keep_ratio), RandomFlip, Pad, Normalize)")
    pad, norm = by_type["Pad"], by_type["Normalize"]
    pad_val = pad.get("pad_val", 0)
    pad_val = pad_val.get("img", 0) if isinstance(pad_val, dict) else pad_val
    pad_val = list(pad_val) if isinstance(pad_val, (list, tuple)) else [pad_val] * 3
    _require(pad.get("size_divisor") is not None and len(set(pad_val)) == 1, f"Pad {pad}")
    test_cfg = cfg["model"].get("test_cfg") or {}
    return {"scale": list(scale), "size_divisor": pad["size_divisor"], "pad_value": float(pad_val[0]),
            "mean": [float(v) for v in norm["mean"]], "std": [float(v) for v in norm["std"]],
            "to_rgb": bool(norm.get("to_rgb", True)), "max_per_image": int(test_cfg.get("max_per_image", 100))}


# ----------------------------------------------------------------------------- weights: mmdet -> transformers


def swin_relative_position_index(window: int) -> torch.Tensor:
    """transformers' (and the Swin paper's) relative position index of a window x window attention window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def patch_merging_order(channels: int) -> torch.Tensor:
    """transformers' PatchMerging input channel b*C + c reads mmdet's nn.Unfold channel c*4 + UNFOLD_POSITION[b]."""
    return torch.tensor([c * 4 + UNFOLD_POSITION[b] for b in range(4) for c in range(channels)])


def split_qkv(prefix: str, weight: torch.Tensor, bias: torch.Tensor, names=("q_proj", "k_proj", "v_proj")) -> dict:
    """A fused (3C, C) projection, rows q, k, v, -> three (C, C) projections."""
    out = {}
    for name, w, b in zip(names, weight.chunk(3, 0), bias.chunk(3, 0)):
        out[f"{prefix}{name}.weight"], out[f"{prefix}{name}.bias"] = w, b
    return out


RENAMES = [  # (mmdet key pattern, transformers key template): plain renames, tensors unchanged
    (r"backbone\.patch_embed\.projection\.(weight|bias)", SWIN + r"embeddings.patch_embeddings.projection.\1"),
    (r"backbone\.patch_embed\.norm\.(weight|bias)", SWIN + r"embeddings.norm.\1"),
    (r"backbone\.stages\.(\d+)\.blocks\.(\d+)\.norm1\.(weight|bias)",
     SWIN + r"encoder.layers.\1.blocks.\2.layernorm_before.\3"),
    (r"backbone\.stages\.(\d+)\.blocks\.(\d+)\.norm2\.(weight|bias)",
     SWIN + r"encoder.layers.\1.blocks.\2.layernorm_after.\3"),
    (r"backbone\.stages\.(\d+)\.blocks\.(\d+)\.attn\.w_msa\.relative_position_bias_table",
     SWIN + r"encoder.layers.\1.blocks.\2.attention.relative_position_bias.relative_position_bias_table"),
    (r"backbone\.stages\.(\d+)\.blocks\.(\d+)\.attn\.w_msa\.proj\.(weight|bias)",
     SWIN + r"encoder.layers.\1.blocks.\2.attention.o_proj.\3"),
    (r"backbone\.stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.0\.0\.(weight|bias)",
     SWIN + r"encoder.layers.\1.blocks.\2.mlp.fc1.\3"),
    (r"backbone\.stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.1\.(weight|bias)",
     SWIN + r"encoder.layers.\1.blocks.\2.mlp.fc2.\3"),
    (r"panoptic_head\.pixel_decoder\.input_convs\.(\d+)\.conv\.(weight|bias)",
     PIXEL_DECODER + r"input_projections.\1.0.\2"),
    (r"panoptic_head\.pixel_decoder\.input_convs\.(\d+)\.gn\.(weight|bias)",
     PIXEL_DECODER + r"input_projections.\1.1.\2"),
    (r"panoptic_head\.pixel_decoder\.encoder\.layers\.(\d+)\.attentions\.0\."
     r"(sampling_offsets|attention_weights|value_proj|output_proj)\.(weight|bias)",
     PIXEL_DECODER + r"encoder.layers.\1.self_attn.\2.\3"),
    (r"panoptic_head\.pixel_decoder\.encoder\.layers\.(\d+)\.ffns\.0\.layers\.0\.0\.(weight|bias)",
     PIXEL_DECODER + r"encoder.layers.\1.fc1.\2"),
    (r"panoptic_head\.pixel_decoder\.encoder\.layers\.(\d+)\.ffns\.0\.layers\.1\.(weight|bias)",
     PIXEL_DECODER + r"encoder.layers.\1.fc2.\2"),
    (r"panoptic_head\.pixel_decoder\.encoder\.layers\.(\d+)\.norms\.0\.(weight|bias)",
     PIXEL_DECODER + r"encoder.layers.\1.self_attn_layer_norm.\2"),
    (r"panoptic_head\.pixel_decoder\.encoder\.layers\.(\d+)\.norms\.1\.(weight|bias)",
     PIXEL_DECODER + r"encoder.layers.\1.final_layer_norm.\2"),
    (r"panoptic_head\.pixel_decoder\.level_encoding\.weight", PIXEL_DECODER + "level_embed"),
    (r"panoptic_head\.pixel_decoder\.mask_feature\.(weight|bias)", PIXEL_DECODER + r"mask_projection.\1"),
    (r"panoptic_head\.transformer_decoder\.layers\.(\d+)\.attentions\.0\.attn\.(in_proj_weight|in_proj_bias)",
     TRANSFORMER + r"decoder.layers.\1.cross_attn.\2"),
    (r"panoptic_head\.transformer_decoder\.layers\.(\d+)\.attentions\.0\.attn\.out_proj\.(weight|bias)",
     TRANSFORMER + r"decoder.layers.\1.cross_attn.out_proj.\2"),
    (r"panoptic_head\.transformer_decoder\.layers\.(\d+)\.attentions\.1\.attn\.out_proj\.(weight|bias)",
     TRANSFORMER + r"decoder.layers.\1.self_attn.out_proj.\2"),
    (r"panoptic_head\.transformer_decoder\.layers\.(\d+)\.ffns\.0\.layers\.0\.0\.(weight|bias)",
     TRANSFORMER + r"decoder.layers.\1.fc1.\2"),
    (r"panoptic_head\.transformer_decoder\.layers\.(\d+)\.ffns\.0\.layers\.1\.(weight|bias)",
     TRANSFORMER + r"decoder.layers.\1.fc2.\2"),
    (r"panoptic_head\.transformer_decoder\.layers\.(\d+)\.norms\.0\.(weight|bias)",
     TRANSFORMER + r"decoder.layers.\1.cross_attn_layer_norm.\2"),
    (r"panoptic_head\.transformer_decoder\.layers\.(\d+)\.norms\.1\.(weight|bias)",
     TRANSFORMER + r"decoder.layers.\1.self_attn_layer_norm.\2"),
    (r"panoptic_head\.transformer_decoder\.layers\.(\d+)\.norms\.2\.(weight|bias)",
     TRANSFORMER + r"decoder.layers.\1.final_layer_norm.\2"),
    (r"panoptic_head\.transformer_decoder\.post_norm\.(weight|bias)", TRANSFORMER + r"decoder.layernorm.\1"),
    (r"panoptic_head\.decoder_input_projs\.(\d+)\.(weight|bias)", TRANSFORMER + r"input_projections.\1.\2"),
    (r"panoptic_head\.query_embed\.weight", TRANSFORMER + "queries_embedder.weight"),
    (r"panoptic_head\.query_feat\.weight", TRANSFORMER + "queries_features.weight"),
    (r"panoptic_head\.level_embed\.weight", TRANSFORMER + "level_embed.weight"),
    (r"panoptic_head\.cls_embed\.(weight|bias)", r"class_predictor.\1"),
]
_RENAMES = [(re.compile(p + "$"), t) for p, t in RENAMES]


def _fpn_rename(key: str) -> str | None:
    """The pixel decoder's FPN levels: lateral_convs.i / output_convs.i -> adapter_{i+1} / layer_{i+1}, conv -> .0,
    GroupNorm -> .1; mask_embed.{0,2,4} (Linear, ReLU, Linear, ReLU, Linear) -> mask_embedder.{0,1,2}.0."""
    m = re.fullmatch(r"panoptic_head\.pixel_decoder\.(lateral|output)_convs\.(\d+)\.(conv|gn)\.(weight|bias)", key)
    if m:
        name = "adapter" if m[1] == "lateral" else "layer"
        return f"{PIXEL_DECODER}{name}_{int(m[2]) + 1}.{0 if m[3] == 'conv' else 1}.{m[4]}"
    m = re.fullmatch(r"panoptic_head\.mask_embed\.(\d+)\.(weight|bias)", key)
    if m and int(m[1]) % 2 == 0:
        return f"{TRANSFORMER}decoder.mask_predictor.mask_embedder.{int(m[1]) // 2}.0.{m[2]}"
    return None


def convert_state_dict(sd: dict, config) -> dict:
    """mmdet Mask2Former state dict -> transformers' Mask2FormerForUniversalSegmentation state dict. Raises
    ConversionError naming the first mmdet key it has no rule for. Works on meta tensors (no values read then)."""
    out, left = {}, []
    for key, t in sd.items():
        if m := re.fullmatch(r"backbone\.stages\.(\d+)\.blocks\.(\d+)\.attn\.w_msa\.qkv\.weight", key):
            prefix = f"{SWIN}encoder.layers.{m[1]}.blocks.{m[2]}.attention."
            out.update(split_qkv(prefix, t, sd[key[:-len("weight")] + "bias"]))
        elif m := re.fullmatch(r"panoptic_head\.transformer_decoder\.layers\.(\d+)\.attentions\.1\.attn\."
                               r"in_proj_weight", key):
            prefix = f"{TRANSFORMER}decoder.layers.{m[1]}.self_attn."
            out.update(split_qkv(prefix, t, sd[key[:-len("weight")] + "bias"]))
        elif key.endswith(("attn.w_msa.qkv.bias", "attentions.1.attn.in_proj_bias")):
            continue  # split with its weight
        elif m := re.fullmatch(r"backbone\.stages\.(\d+)\.downsample\.(reduction|norm)\.(weight|bias)", key):
            order = patch_merging_order(t.shape[-1] // 4)
            out[f"{SWIN}encoder.layers.{m[1]}.downsample.{m[2]}.{m[3]}"] = t[..., order]
        elif m := re.fullmatch(r"backbone\.norm(\d+)\.(weight|bias)", key):
            out[f"{BACKBONE}hidden_states_norms.stage{int(m[1]) + 1}.{m[2]}"] = t
        elif key.endswith("attn.w_msa.relative_position_index"):
            window = int(round(t.shape[0] ** 0.5))
            if not t.is_meta and not torch.equal(t.long(), swin_relative_position_index(window)):
                raise ConversionError(f"{key}: not the Swin relative position index transformers computes")
        elif (new := _fpn_rename(key)) is not None:
            out[new] = t
        else:
            for pattern, template in _RENAMES:
                if pattern.match(key):
                    out[pattern.sub(template, key)] = t
                    break
            else:
                left.append(key)
    if left:
        raise ConversionError(f"{len(left)} checkpoint tensors have no transformers counterpart, first {left[0]!r}")
    # not in mmdet's checkpoint: Swin's final norm (transformers' backbone path never uses it) and the
    # classification loss's class weights, from the config (they only matter for training)
    width = config.backbone_config.embed_dim * 2 ** (len(config.backbone_config.depths) - 1)
    dtype = next(iter(sd.values())).dtype
    device = next(iter(sd.values())).device
    out[SWIN + "layernorm.weight"] = torch.ones(width, dtype=dtype, device=device)
    out[SWIN + "layernorm.bias"] = torch.zeros(width, dtype=dtype, device=device)
    empty = torch.ones(config.num_labels + 1, dtype=dtype, device=device)
    if not empty.is_meta:
        empty[-1] = config.no_object_weight
    out["criterion.empty_weight"] = empty
    return out


def check_against_model(converted: dict, model) -> None:
    """Every key of the transformers model is filled with a tensor of its shape, and nothing else is."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in converted]
    extra = [k for k in converted if k not in expected]
    if missing or extra:
        raise ConversionError(f"key mismatch: {len(missing)} missing (first {missing[:1]}), {len(extra)} unexpected "
                              f"(first {extra[:1]})")
    for k, v in expected.items():
        if tuple(converted[k].shape) != tuple(v.shape):
            raise ConversionError(f"{k}: checkpoint shape {tuple(converted[k].shape)}, the config's model "
                                  f"{tuple(v.shape)} (the config text does not describe these weights)")


def convert(sd: dict, cfg: dict, classes: list | None = None):
    """-> (transformers Mask2FormerForUniversalSegmentation in eval mode, pipeline dict)."""
    import transformers

    config = hf_config(cfg, classes)
    converted = convert_state_dict(sd, config)
    with torch.device("meta"):
        check_against_model(converted, transformers.Mask2FormerForUniversalSegmentation(config))
    model = transformers.Mask2FormerForUniversalSegmentation(config)
    model.load_state_dict({k: v.float() for k, v in converted.items()}, strict=True)
    return model.eval(), pipeline(cfg)


def save(model, pipe: dict, out: str, source: str) -> None:
    """Write transformers' files and mmdet_pipeline.json into `out` (staged in out/.partial, then moved: an
    interrupted run leaves no folder that looks converted)."""
    if os.path.isdir(out) and os.listdir(out) and not os.path.exists(os.path.join(out, PIPELINE_FILE)):
        raise ConversionError(f"--out {out}: folder exists and is not a previous conversion; choose another")
    stage = os.path.join(out, ".partial")
    shutil.rmtree(stage, ignore_errors=True)
    os.makedirs(stage)
    model.save_pretrained(stage)
    with open(os.path.join(stage, PIPELINE_FILE), "w") as f:
        json.dump({**pipe, "converted_from": os.path.basename(source)}, f, indent=1)
    if os.path.exists(os.path.join(out, PIPELINE_FILE)):
        os.remove(os.path.join(out, PIPELINE_FILE))
    for name in sorted(os.listdir(stage), key=lambda n: n == PIPELINE_FILE):  # the pipeline file last
        os.replace(os.path.join(stage, name), os.path.join(out, name))
    os.rmdir(stage)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rewards.convert_mask2former", description=__doc__.split("\n\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help=f"mmdet checkpoint (GenEval's: {GENEVAL_CHECKPOINT})")
    ap.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    ap.add_argument("--config", default=None, help="mmdet config text, if the checkpoint's meta has none")
    ap.add_argument("--trust-pickle", action="store_true", help="allow a checkpoint that safe loading refuses")
    args = ap.parse_args(argv)
    try:
        sd, cfg, classes = read_checkpoint(args.checkpoint, args.config, args.trust_pickle)
        model, pipe = convert(sd, cfg, classes)
        save(model, pipe, args.out, args.checkpoint)
    except (ConversionError, OSError, KeyError) as e:
        sys.exit(f"error: {e if not isinstance(e, KeyError) else f'config lacks {e}'}")
    n = sum(p.numel() for p in model.parameters())
    print(f"converted {len(sd)} mmdet tensors -> {args.out} ({n:,} parameters); "
          f"use it: export GENEVAL_MASK2FORMER={args.out}")
    return 0


if __name__ == "__main__":
    main()
