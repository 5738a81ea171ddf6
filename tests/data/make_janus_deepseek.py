"""Make tests/data/janus_deepseek/ (and janus_deepseek_full_size.json, see full_size_shapes): a tiny Janus-Pro checkpoint in DeepSeek's original layout, written by DeepSeek's
own code (deepseek-ai/Janus, `janus.models.MultiModalityCausalLM.save_pretrained`), and what that code computes
from it (expected.safetensors). tests/test_convert_janus.py converts the checkpoint with `common.convert_janus`
and checks that transformers' Janus classes compute the same from the result.

Made once; re-run only to change the fixture. DeepSeek's code needs transformers 4.x, so it runs in a virtual
environment of its own, outside the project's (commit 1daa72f of deepseek-ai/Janus was used):

    python3 -m venv VENV
    VENV/bin/pip install torch==2.13.0 transformers==4.48.3 einops attrdict pillow numpy safetensors pyyaml
    VENV/bin/pip install --no-deps timm==0.9.16     # its torchvision dependency would pull a CUDA torch
    git clone <deepseek-ai/Janus on GitHub> JANUS
    JANUS_REPO=JANUS VENV/bin/python tests/data/make_janus_deepseek.py

What this script adds around their code, and why:
- a stand-in `torchvision` module: timm imports `torchvision.ops.misc.FrozenBatchNorm2d` and Janus's image
  processor imports `torchvision.transforms`; the PyPI torchvision does not load beside the CPU torch wheel. None
  of it runs here (no image preprocessing, no frozen batch norm).
- a tiny SigLIP entry in their `SigLIP_MODEL_CONFIG` ("siglip_tiny_patch8_32": width 32, 2 blocks, 4 heads), as
  their `create_siglip_vit` takes the vision tower's sizes from that table by name only.
- a tiny "VQ-16": their `MultiModalityCausalLM` builds the VQ model as `VQ_models["VQ-16"]()`, with no arguments
  (the full-size 16384-code model), so the entry is replaced by their own `VQModel` with small `ModelArgs`
  (32 codes, 16 latent channels, two resolutions) and their `Encoder` / `Decoder` with `ch=32`, one residual
  block per level.
- random weights of a useful scale (the defaults would give near-constant logits), stored in bfloat16 like the
  released checkpoints, and a tiny word-level tokenizer (`common.janus.tiny_tokenizer`).
The reference outputs are computed in float32 from the checkpoint as their `from_pretrained` reloads it.
"""
import functools
import json
import os
import sys
import types

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "janus_deepseek")
REPO = os.path.dirname(os.path.dirname(HERE))


def import_timm_parts_only():
    """Their ViT needs `timm.layers` and `timm.models._manipulate`. The `timm` and `timm.models` packages are
    registered without running their __init__ (which imports every model and timm.data, i.e. torchvision), and
    `torchvision.ops.misc.FrozenBatchNorm2d` (imported by timm.layers) and `torchvision.transforms.Normalize`
    (imported by their clip_encoder, used only with pixel_mean / pixel_std) are stand-ins that are never built."""
    import importlib.util

    root = os.path.dirname(importlib.util.find_spec("timm").origin)
    for name, path in (("timm", root), ("timm.models", os.path.join(root, "models"))):
        pkg = types.ModuleType(name)
        pkg.__path__ = [path]
        sys.modules[name] = pkg

    class FrozenBatchNorm2d(torch.nn.Module):
        def __init__(self, *a, **k):
            raise RuntimeError("torchvision stand-in: not available in the fixture script")

    for name in ("torchvision", "torchvision.ops", "torchvision.ops.misc", "torchvision.transforms"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["torchvision.ops.misc"].FrozenBatchNorm2d = FrozenBatchNorm2d
    sys.modules["torchvision.transforms"].Normalize = FrozenBatchNorm2d  # clip_encoder: only with pixel_mean


def import_deepseek_model_code():
    """janus.models.modeling_vlm and what it imports, without the package's image processor (torchvision)."""
    for name in ("janus", "janus.models"):
        pkg = types.ModuleType(name)
        pkg.__path__ = [os.path.join(os.environ["JANUS_REPO"], *name.split("."))]
        sys.modules[name] = pkg
    import collections.abc

    import collections
    for name in collections.abc.__all__:  # attrdict needs the pre-3.10 aliases (janus/__init__.py adds them too)
        setattr(collections, name, getattr(collections.abc, name))
    from janus.models import modeling_vlm, siglip_vit, vq_model

    return modeling_vlm, siglip_vit, vq_model


def full_size_shapes(MultiModalityCausalLM, MultiModalityConfig):
    """janus_deepseek_full_size.json: the names and shapes of the tensors their code builds for Janus-Pro-7B's
    config.json (SigLIP-L/16 at 384 px, the full VQ-16, 4096-wide aligners and head), with the language model cut to
    2 of its 30 layers to keep the file small. Only the shapes are kept."""
    config = MultiModalityConfig(
        vision_config=dict(cls="CLIPVisionTower", params=dict(image_size=384, model_name="siglip_large_patch16_384",
                                                              select_feature="same", select_layer=-1)),
        aligner_config=dict(cls="MlpProjector", params=dict(depth=2, input_dim=1024, n_embed=4096,
                                                            projector_type="mlp_gelu")),
        gen_vision_config=dict(cls="VQ-16", params=dict(image_token_size=16384, n_embed=8)),
        gen_aligner_config=dict(cls="MlpProjector", params=dict(depth=2, input_dim=8, n_embed=4096,
                                                                projector_type="mlp_gelu")),
        gen_head_config=dict(cls="vision_head", params=dict(image_token_embed=4096, image_token_size=16384,
                                                            n_embed=4096)),
        language_config=dict(hidden_size=4096, intermediate_size=11008, max_position_embeddings=16384,
                             model_type="llama", num_attention_heads=32, num_hidden_layers=2, num_key_value_heads=32,
                             torch_dtype="bfloat16", vocab_size=102400),
        torch_dtype="bfloat16",
    )
    torch.set_default_dtype(torch.bfloat16)  # built on the CPU (their ViT calls .item() at init, which meta lacks)
    model = MultiModalityCausalLM(config)
    torch.set_default_dtype(torch.float32)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    del model
    with open(os.path.join(HERE, "janus_deepseek_full_size.json"), "w") as f:
        json.dump({"config": json.loads(config.to_json_string()), "shapes": shapes}, f, indent=0)


def main():
    sys.path[:0] = [os.environ["JANUS_REPO"], REPO]
    import transformers  # noqa: F401  (first: it probes for torchvision, which the stand-in would confuse)

    import_timm_parts_only()
    modeling_vlm, siglip_vit, vq_model = import_deepseek_model_code()
    MultiModalityCausalLM, MultiModalityConfig = modeling_vlm.MultiModalityCausalLM, modeling_vlm.MultiModalityConfig

    from common.janus import tiny_tokenizer

    full_size_shapes(MultiModalityCausalLM, MultiModalityConfig)  # before the tiny VQ-16 replaces the real one
    siglip_vit.SigLIP_MODEL_CONFIG["siglip_tiny_patch8_32"] = dict(
        image_size=32, patch_size=8, width=32, layers=2, heads=4, mlp_ratio=2, global_pool="map", use_checkpoint=False)
    vq_model.Encoder = functools.partial(vq_model.Encoder, ch=32, num_res_blocks=1)
    vq_model.Decoder = functools.partial(vq_model.Decoder, ch=32, num_res_blocks=1)
    vq_model.VQ_models["VQ-16"] = lambda: vq_model.VQModel(vq_model.ModelArgs(
        codebook_size=32, codebook_embed_dim=8, encoder_ch_mult=[1, 1], decoder_ch_mult=[1, 1], z_channels=16))

    hidden = 32
    config = MultiModalityConfig(
        vision_config=dict(cls="CLIPVisionTower", params=dict(image_size=32, model_name="siglip_tiny_patch8_32",
                                                              select_feature="same", select_layer=-1)),
        aligner_config=dict(cls="MlpProjector", params=dict(depth=2, input_dim=32, n_embed=hidden,
                                                            projector_type="mlp_gelu")),
        gen_vision_config=dict(cls="VQ-16", params=dict(image_token_size=32, n_embed=8)),
        gen_aligner_config=dict(cls="MlpProjector", params=dict(depth=2, input_dim=8, n_embed=hidden,
                                                                projector_type="mlp_gelu")),
        gen_head_config=dict(cls="vision_head", params=dict(image_token_embed=hidden, image_token_size=32,
                                                            n_embed=hidden)),
        language_config=dict(hidden_size=hidden, intermediate_size=2 * hidden, max_position_embeddings=128,
                             model_type="llama", num_attention_heads=4, num_hidden_layers=2, num_key_value_heads=2,
                             torch_dtype="bfloat16", vocab_size=64),
        torch_dtype="bfloat16",
    )
    torch.manual_seed(0)
    model = MultiModalityCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:  # fan-in scaled normal; embeddings and codebook included
                p.normal_(0, p[0].numel() ** -0.5)
            else:  # biases and norm scales: perturbed, so a swapped or dropped one shows in the outputs
                p.add_(0.2 * torch.randn_like(p))
    model.to(torch.bfloat16).save_pretrained(OUT, safe_serialization=True)
    tiny_tokenizer().save_pretrained(OUT)

    ref = MultiModalityCausalLM.from_pretrained(OUT, torch_dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(1)
    B, grid = 2, 4  # vision 32 px / patch 8 = a 4 x 4 token grid; the VQ decodes it to 8 x 8 pixels
    prompt_ids = torch.cat([torch.zeros(B, 1, dtype=torch.long), torch.randint(7, 64, (B, 5), generator=g),
                            torch.full((B, 1), 3)], dim=1)  # BOS, five words, <begin_of_image>
    image_tokens = torch.randint(0, 32, (B, grid * grid), generator=g)
    pixels = torch.rand(B, 3, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        # the image head on [prompt; image tokens], as their generation_inference.py runs it step by step
        embeds = torch.cat([ref.language_model.get_input_embeddings()(prompt_ids),
                            ref.prepare_gen_img_embeds(image_tokens)], dim=1)
        h = ref.language_model.model(inputs_embeds=embeds).last_hidden_state
        gen_logits = ref.gen_head(h[:, prompt_ids.shape[1] - 1:])  # (B, 1 + n, codes): predicts x_0 .. x_n
        images = ref.gen_vision_model.decode_code(image_tokens, shape=[B, 8, grid, grid])  # (B, 3, 8, 8)
        text_logits = ref.language_model(input_ids=prompt_ids).logits
        vision = ref.aligner(ref.vision_model(pixels))  # understanding path: SigLIP + aligner
    save_file({"prompt_ids": prompt_ids, "image_tokens": image_tokens, "pixels": pixels, "gen_logits": gen_logits,
               "images": images, "text_logits": text_logits, "vision_features": vision},
              os.path.join(OUT, "expected.safetensors"), metadata={"janus_commit": "1daa72f"})
    with open(os.path.join(OUT, "config.json")) as f:
        print(json.dumps(json.load(f), indent=1)[:400])
    print({k: round(os.path.getsize(os.path.join(OUT, k)) / 1024, 1) for k in sorted(os.listdir(OUT))})


if __name__ == "__main__":
    main()
