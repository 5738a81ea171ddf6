"""HPSv2.1 in transformers' CLIPModel: the open_clip -> transformers key map against an independent forward
written here directly from the open_clip state-dict layout (fused in_proj qkv, ln_1/ln_2, mlp.c_fc/c_proj,
`visual.proj` / `text_projection` matrices used as x @ W, argmax-EOT pooling, causal text mask, exact GELU),
on a tiny random model; plus the HPS preprocessing, the reward's range/batching and the checkpoint errors."""
import math

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

from rewards.clip import CLIPEncoder, clip_pixels, resize_pad  # noqa: E402
from rewards.hps import HPSReward, hps_model, load_open_clip_checkpoint, open_clip_to_hf, vit_h14_config  # noqa: E402

# Tiny ViT-H-14-like open_clip layout: vision width 32 (2 heads, 2 layers, patch 8, 32 px), text width 24
# (2 heads, 2 layers, 16 tokens, vocab 50), embedding 16.
VW, VL, VH, PATCH, IMG = 32, 2, 2, 8, 32
TW, TL, TH, CTX, VOCAB = 24, 2, 2, 16, 50
EMB = 16
EOT = VOCAB - 1  # open_clip pools at argmax(token id): the end-of-text token has the largest id


def random_open_clip_state_dict(seed=0, vw=VW, vl=VL, patch=PATCH, img=IMG, tw=TW, tl=TL, ctx=CTX, vocab=VOCAB,
                                emb=EMB, device="cpu"):
    """An open_clip CLIP state dict (standard ViT, built-in text tower), random; shapes only on "meta"."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, std=0.1, mean=0.0):
        if device == "meta":
            return torch.empty(*shape, device="meta")
        return torch.randn(*shape, generator=g) * std + mean

    sd = {}

    def blocks(prefix, width, layers):
        for i in range(layers):
            p = f"{prefix}.{i}."
            sd[p + "ln_1.weight"], sd[p + "ln_1.bias"] = r(width, mean=1.0), r(width)
            sd[p + "attn.in_proj_weight"], sd[p + "attn.in_proj_bias"] = r(3 * width, width, std=0.3), r(3 * width)
            sd[p + "attn.out_proj.weight"], sd[p + "attn.out_proj.bias"] = r(width, width, std=0.3), r(width)
            sd[p + "ln_2.weight"], sd[p + "ln_2.bias"] = r(width, mean=1.0), r(width)
            sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"] = r(4 * width, width, std=0.3), r(4 * width)
            sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"] = r(width, 4 * width, std=0.3), r(width)

    sd["positional_embedding"] = r(ctx, tw)
    sd["text_projection"] = r(tw, emb, std=0.3)
    sd["logit_scale"] = torch.tensor(math.log(1 / 0.07), device=device)
    sd["visual.class_embedding"] = r(vw)
    sd["visual.positional_embedding"] = r((img // patch) ** 2 + 1, vw)
    sd["visual.proj"] = r(vw, emb, std=0.3)
    sd["visual.conv1.weight"] = r(vw, 3, patch, patch)
    sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"] = r(vw, mean=1.0), r(vw)
    blocks("visual.transformer.resblocks", vw, vl)
    sd["visual.ln_post.weight"], sd["visual.ln_post.bias"] = r(vw, mean=1.0), r(vw)
    sd["token_embedding.weight"] = r(vocab, tw)
    blocks("transformer.resblocks", tw, tl)
    sd["ln_final.weight"], sd["ln_final.bias"] = r(tw, mean=1.0), r(tw)
    return sd


def _ln(x, sd, p):
    return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], eps=1e-5)


def _resblock(x, sd, p, heads, causal):
    b, n, w = x.shape
    h = _ln(x, sd, p + "ln_1")
    q, k, v = (h @ sd[p + "attn.in_proj_weight"].t() + sd[p + "attn.in_proj_bias"]).split(w, dim=-1)
    q, k, v = (t.reshape(b, n, heads, w // heads).transpose(1, 2) for t in (q, k, v))
    att = q @ k.transpose(-1, -2) / math.sqrt(w // heads)
    if causal:
        att = att.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    o = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, n, w)
    x = x + o @ sd[p + "attn.out_proj.weight"].t() + sd[p + "attn.out_proj.bias"]
    h = _ln(x, sd, p + "ln_2")
    h = F.gelu(h @ sd[p + "mlp.c_fc.weight"].t() + sd[p + "mlp.c_fc.bias"])  # exact GELU (ViT-H-14)
    return x + h @ sd[p + "mlp.c_proj.weight"].t() + sd[p + "mlp.c_proj.bias"]


def reference_encode_image(sd, pixels, layers=VL, heads=VH):
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=sd["visual.conv1.weight"].shape[-1])
    x = x.flatten(2).transpose(1, 2)
    cls = sd["visual.class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + sd["visual.positional_embedding"]
    x = _ln(x, sd, "visual.ln_pre")
    for i in range(layers):
        x = _resblock(x, sd, f"visual.transformer.resblocks.{i}.", heads, causal=False)
    return _ln(x[:, 0], sd, "visual.ln_post") @ sd["visual.proj"]


def reference_encode_text(sd, ids, layers=TL, heads=TH):
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"][: ids.shape[1]]
    for i in range(layers):
        x = _resblock(x, sd, f"transformer.resblocks.{i}.", heads, causal=True)
    x = _ln(x, sd, "ln_final")
    return x[torch.arange(len(ids)), ids.argmax(-1)] @ sd["text_projection"]


def tiny_config():
    return vit_h14_config(
        text_config=dict(vocab_size=VOCAB, hidden_size=TW, intermediate_size=4 * TW, num_hidden_layers=TL,
                         num_attention_heads=TH, max_position_embeddings=CTX, bos_token_id=VOCAB - 2,
                         eos_token_id=EOT, pad_token_id=0),
        vision_config=dict(image_size=IMG, patch_size=PATCH, hidden_size=VW, intermediate_size=4 * VW,
                           num_hidden_layers=VL, num_attention_heads=VH),
        projection_dim=EMB)


class IdTokenizer:
    """Stands in for the CLIP BPE tokenizer: words are ids already ("3 7 9" -> [bos, 3, 7, 9, eot, pad...])."""

    def __call__(self, texts, padding=True, truncation=True, max_length=CTX, return_tensors="pt"):
        rows = [[VOCAB - 2] + [int(w) for w in t.split()][: max_length - 2] + [EOT] for t in texts]
        n = max(map(len, rows))
        ids = torch.tensor([r + [0] * (n - len(r)) for r in rows])
        return {"input_ids": ids, "attention_mask": (torch.arange(n) < torch.tensor([len(r) for r in rows])[:, None]).long()}


@pytest.fixture(scope="module")
def sd():
    return random_open_clip_state_dict()


@pytest.fixture(scope="module")
def model(sd):
    return hps_model(sd, tiny_config())


def test_image_features_match_open_clip_layout(sd, model):
    pixels = torch.randn(3, 3, IMG, IMG)
    ref = reference_encode_image(sd, pixels)
    with torch.no_grad():
        ours = model.get_image_features(pixel_values=pixels)
    ours = ours if isinstance(ours, torch.Tensor) else ours.pooler_output
    assert ours.shape == (3, EMB)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)


def test_text_features_match_open_clip_layout(sd, model):
    # open_clip pads to the full context with 0 and pools at argmax (EOT); transformers pools at the first EOT
    ids = torch.zeros(2, CTX, dtype=torch.long)
    ids[0, :5] = torch.tensor([VOCAB - 2, 3, 17, 5, EOT])
    ids[1, :8] = torch.tensor([VOCAB - 2, 40, 2, 9, 9, 31, 12, EOT])
    ref = reference_encode_text(sd, ids)
    with torch.no_grad():
        ours = model.get_text_features(input_ids=ids)
    ours = ours if isinstance(ours, torch.Tensor) else ours.pooler_output
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
    assert torch.equal(model.logit_scale.detach(), sd["logit_scale"])


def test_map_rejects_unknown_and_missing_keys(sd):
    with pytest.raises(ValueError, match="does not handle"):
        open_clip_to_hf({**sd, "visual.extra_head.weight": torch.zeros(1)})
    broken = dict(sd)
    del broken["visual.proj"]
    with pytest.raises(KeyError):
        open_clip_to_hf(broken)
    # DDP "module." prefixes and old open_clip's saved attn_mask buffer are accepted
    wrapped = {"module." + k: v for k, v in sd.items()}
    wrapped["module.attn_mask"] = torch.zeros(CTX, CTX)
    assert open_clip_to_hf(wrapped).keys() == open_clip_to_hf(sd).keys()


def test_full_size_config_is_vit_h14():
    cfg = vit_h14_config()
    v, t = cfg.vision_config, cfg.text_config
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads, v.patch_size, v.image_size) == (1280, 32, 16, 14, 224)
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.vocab_size) == (1024, 24, 16, 49408)
    assert cfg.projection_dim == 1024 and v.hidden_act == t.hidden_act == "gelu"


def test_full_size_map_fits_vit_h14_shapes():
    """Every ViT-H-14 open_clip tensor (widths 1280/1024, 32/24 layers, patch 14, 77 tokens) lands on a
    transformers parameter of the same shape (shapes only: meta tensors, no memory)."""
    from transformers import CLIPModel

    sd = random_open_clip_state_dict(vw=1280, vl=32, patch=14, img=224, tw=1024, tl=24, ctx=77, vocab=49408,
                                     emb=1024, device="meta")
    with torch.device("meta"):
        model = CLIPModel(vit_h14_config())
    model.load_state_dict(open_clip_to_hf(sd), strict=True, assign=True)
    assert sum(p.numel() for p in model.parameters()) == sum(v.numel() for v in sd.values())


def test_hps_preprocessing_pads_the_long_side():
    img = torch.rand(1, 3, 48, 96)
    out = resize_pad(img, 32)
    assert out.shape == (1, 3, 32, 32)
    assert torch.all(out[:, :, :8] == 0) and torch.all(out[:, :, 24:] == 0)  # 16 rows of image, centred
    assert out[:, :, 8:24].abs().sum() > 0
    square = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(clip_pixels(square, 32, "pad"), clip_pixels(square, 32, "crop"))


def test_reward_range_batching_and_scale(model):
    torch.manual_seed(0)
    reward = HPSReward(CLIPEncoder(model, IdTokenizer(), mode="pad", batch_size=2))
    images = torch.rand(5, 3, 40, 56)
    prompts = ["3 4 5", "7", "10 11 12 13", "3 4 5", "1 2"]
    r = reward(images, prompts, [{}] * 5)
    assert r.shape == (5,) and r.dtype == torch.float32
    assert torch.all(r.abs() <= 1 + 1e-6)
    one = torch.stack([reward(images[i:i + 1], prompts[i:i + 1], [{}])[0] for i in range(5)])
    torch.testing.assert_close(r, one, atol=1e-5, rtol=1e-5)
    assert torch.allclose(HPSReward(reward.encoder, scale=100)(images, prompts), 100 * r, atol=1e-4)


def test_checkpoint_loading(tmp_path, sd):
    path = tmp_path / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": {"module." + k: v.half() for k, v in sd.items()}}, path)
    model = hps_model(load_open_clip_checkpoint(str(path)), tiny_config())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": {"foo": torch.zeros(1)}}, bad)
    with pytest.raises(RuntimeError, match="not an open_clip ViT checkpoint"):
        load_open_clip_checkpoint(str(bad))


def test_missing_checkpoint_is_one_actionable_line(monkeypatch, tmp_path):
    from rewards.hps import make_hps

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    monkeypatch.delenv("HPS_CHECKPOINT", raising=False)
    monkeypatch.delenv("HPS_ROOT", raising=False)
    with pytest.raises(FileNotFoundError) as e:
        make_hps()
    msg = str(e.value)
    assert "\n" not in msg and "HPS_v2.1_compressed.pt" in msg and "HPS_CHECKPOINT" in msg
    monkeypatch.setenv("HPS_CHECKPOINT", str(tmp_path / "nope.pt"))
    with pytest.raises(FileNotFoundError, match="is not a file"):
        make_hps()
