"""common/llamagen.py is checkpoint-compatible with the official LlamaGen state dicts (spec key list),
and its KV-cache path equals teacher forcing for both condition types."""
import os
import re

import pytest
import torch

from common.llamagen import GPT, GPT_PRESETS, GPTConfig, VQConfig, VQModel

SPEC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "shared", "specs",
                    "ar_grpo_state_dict_keys.txt")


def spec_sections():
    """-> {section number: {key: shape}}, expanding the per-layer keys listed for layer 0 only."""
    sections, cur = {}, None
    for line in open(SPEC):
        m = re.match(r"# Section (\d+)", line)
        if m:
            cur = sections.setdefault(int(m.group(1)), {})
        elif line.strip() and not line.startswith("#"):
            k, shape = line.rstrip("\n").split("\t")
            cur[k] = tuple(int(x) for x in re.findall(r"\d+", shape))
    return sections


def shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def expand_layers(keys: dict, n_layer: int):
    out = {}
    for k, s in keys.items():
        if k.startswith("layers.0."):
            for i in range(n_layer):
                out[k.replace("layers.0.", f"layers.{i}.", 1)] = s
        else:
            out[k] = s
    return out


@pytest.mark.skipif(not os.path.exists(SPEC), reason="spec key list not available")
def test_state_dict_keys_match_official_checkpoints():
    sec = spec_sections()
    with torch.device("meta"):
        b = GPT(GPTConfig(**GPT_PRESETS["B"], block_size=256, cls_token_num=1, model_type="c2i"))
        xl = GPT(GPTConfig(**GPT_PRESETS["XL"], block_size=256, cls_token_num=120, model_type="t2i"))
        vq = VQModel(VQConfig())
    assert shapes(b) == expand_layers(sec[1], 12)
    assert shapes(xl) == expand_layers(sec[2], 36)
    assert shapes(vq) == sec[3]
    assert round(sum(p.numel() for p in b.parameters()) / 1e6, 2) == 110.89  # GPT-B, c2i (docs/models.md)
    assert round(sum(p.numel() for p in xl.parameters()) / 1e6, 2) == 777.92


@pytest.mark.parametrize("model_type", ["c2i", "t2i"])
def test_kv_cache_logits_equal_teacher_forcing(model_type):
    torch.manual_seed(0)
    cfg = GPTConfig(dim=64, n_layer=2, n_head=4, vocab_size=50, block_size=16, model_type=model_type,
                    cls_token_num=1 if model_type == "c2i" else 6, num_classes=10, caption_dim=24)
    gpt = GPT(cfg)
    for m in gpt.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
            torch.nn.init.normal_(m.weight, std=0.3)
    if model_type == "c2i":
        cond = {"label": torch.tensor([3, 7])}
    else:  # left-padded caption: first two slots of row 0 are padding
        cond = {"emb": torch.randn(2, 6, 24), "mask": torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6]).bool()}
    null = gpt.null_cond(cond)
    if model_type == "c2i":
        assert (null["label"] == 10).all()  # the null class is index num_classes
    tokens = torch.randint(0, 50, (2, 16))
    full = gpt(cond, tokens[:, :-1])  # (2, 16, 50)
    step, cache = gpt.prefill(cond, 16)
    steps = [step]
    for t in range(15):
        step, cache = gpt.decode(tokens[:, t], cache)
        steps.append(step)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(gpt(null, tokens[:, :-1]), full)  # CFG has something to contrast


def test_condition_positions_carry_no_rotation():
    from common.llamagen import rope_2d_table

    table = rope_2d_table(grid=4, head_dim=16, base=10000, cls_token_num=3)
    assert table.shape == (3 + 16, 8, 2)
    assert (table[:3] == 0).all()  # zero cos AND sin: q, k vanish at condition positions
    torch.testing.assert_close(table[3 + 4, 0], torch.tensor([torch.cos(torch.tensor(1.0)), torch.sin(torch.tensor(1.0))]))


def test_vq_roundtrip_shapes():
    vq = VQModel(VQConfig(codebook_size=32, codebook_embed_dim=4, z_channels=16, ch=8, ch_mult=(1, 2), num_res_blocks=1,
                          norm_groups=4))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    ids = vq.encode(x)
    assert ids.shape == (2, 64)
    assert vq.decode(ids, (8, 8)).shape == (2, 3, 16, 16)
    torch.testing.assert_close(vq.codebook_vectors(ids).norm(dim=-1), torch.ones(2, 64))


@pytest.mark.skipif(not os.path.exists(SPEC), reason="spec key list not available")
def test_official_configs_match_spec_and_load_strictly():
    """The configs `--model llamagen-*` builds have the spec's keys; the strict loader accepts a full-size
    state dict of them (all on the meta device: no memory)."""
    from common.llamagen import load_state_dict_strict, official_gpt_config

    sec = spec_sections()
    b = official_gpt_config("B", "c2i", 256)
    xl = official_gpt_config("XL", "t2i", 256)
    assert (b.cls_token_num, b.block_size, xl.cls_token_num, xl.block_size) == (1, 256, 120, 256)
    assert official_gpt_config("XL", "c2i", 384).block_size == 576
    with torch.device("meta"):
        gb, gxl = GPT(b), GPT(xl)
        target = GPT(xl)
    assert shapes(gb) == expand_layers(sec[1], 12) and shapes(gxl) == expand_layers(sec[2], 36)
    load_state_dict_strict(target, gxl.state_dict(), "t2i_XL_stage1_256.pt", "GPT-XL")
    with pytest.raises(ValueError, match="missing 1: cls_embedding.embedding_table.weight; unexpected 171: cls_embedding.cap_proj"):
        load_state_dict_strict(gb, gxl.state_dict(), "t2i_XL_stage1_256.pt", "GPT-B c2i")
