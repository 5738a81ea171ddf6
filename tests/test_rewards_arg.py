"""AR-GRPO's MANIQA and Qwen2.5-VL judge rewards (AR-GRPO §3.3, App. C) without weights: MANIQA on a tiny
configuration of the same structure (crops, batching, determinism, checkpoint loading) plus the full-size
state-dict layout; the judge's reply parsing, retries and clipping through an injected generate callable, and
its input building / batched greedy generation on a tiny random Qwen2.5-VL with a locally built tokenizer."""
import numpy as np
import pytest
import torch

from rewards.maniqa import MANIQA, MANIQAReward, load_maniqa_state_dict, read_checkpoint
from rewards.qwen_judge import (FAKE_PROMPT, LABEL_PROMPT, WEIRD_PROMPT, QwenJudge, QwenJudgeReward, parse_score,
                                question, to_pil)

# ============================================================================= MANIQA

TINY = dict(embed_dim=16, dim_mlp=16, img_size=64, num_heads=(2, 2), vit_dim=16, vit_depth=10, vit_heads=2)


@pytest.fixture(scope="module")
def maniqa():
    torch.manual_seed(0)
    m = MANIQA(**TINY)
    for p in m.parameters():  # larger random weights so the scores are not degenerate
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.2)
    torch.nn.init.constant_(m.fc_score[3].bias, 0.5)
    torch.nn.init.constant_(m.fc_weight[3].bias, 0.0)
    return m.eval()


def test_maniqa_reward_shape_range_batching_determinism(maniqa):
    images = torch.rand(3, 3, 80, 72)
    r = MANIQAReward(maniqa, num_crops=5, seed=1, batch_size=4)(images, ["a"] * 3, [{}] * 3)
    assert r.shape == (3,) and r.dtype == torch.float32 and torch.isfinite(r).all() and (r >= 0).all()
    assert r.std() > 0
    again = MANIQAReward(maniqa, num_crops=5, seed=1)(images, ["a"] * 3, [{}] * 3)
    torch.testing.assert_close(r, again)  # same seed, same crops
    other = MANIQAReward(maniqa, num_crops=5, seed=2)(images, ["a"] * 3, [{}] * 3)
    assert not torch.allclose(r, other)
    one_by_one = MANIQAReward(maniqa, num_crops=5, seed=1)  # the generator is consumed image after image
    single = torch.cat([one_by_one(images[i:i + 1], ["a"], [{}]) for i in range(3)])
    torch.testing.assert_close(r, single, atol=1e-5, rtol=1e-5)


def test_maniqa_crops_are_numpy_style_offsets(maniqa):
    """Mean of the model over 20 crops at offsets in [0, H-S) x [0, W-S), normalised (x - 0.5) / 0.5."""
    img = torch.floor(torch.rand(1, 3, 70, 90) * 255) / 255  # already 8-bit: quantize is a no-op
    reward = MANIQAReward(maniqa, seed=3)
    g = torch.Generator().manual_seed(3)
    tops = torch.randint(0, 70 - 64, (20,), generator=g).tolist()
    lefts = torch.randint(0, 90 - 64, (20,), generator=g).tolist()
    assert max(tops) < 6 and max(lefts) < 26
    crops = torch.stack([img[0, :, t:t + 64, l:l + 64] for t, l in zip(tops, lefts)])
    with torch.no_grad():
        expected = maniqa((crops - 0.5) / 0.5).mean()
    torch.testing.assert_close(reward(img)[0], expected, atol=1e-5, rtol=1e-5)


def test_maniqa_exact_and_small_images(maniqa):
    img = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        direct = maniqa((torch.floor(img * 255) / 255 - 0.5) / 0.5)
    torch.testing.assert_close(MANIQAReward(maniqa)(img), direct, atol=1e-5, rtol=1e-5)  # offsets all 0
    small = MANIQAReward(maniqa, num_crops=3)
    assert small.crops(torch.rand(3, 40, 50)).shape == (3, 3, 64, 64)  # resized up, shorter side to 64
    assert torch.isfinite(small(torch.rand(2, 3, 32, 48))).all()


def _split_qkv(prefix_out: str, qkv_w, qkv_b, out: dict):
    for name, w, b in zip(("q_proj", "k_proj", "v_proj"), qkv_w.chunk(3), qkv_b.chunk(3)):
        out[f"{prefix_out}.{name}.weight"], out[f"{prefix_out}.{name}.bias"] = w, b


def test_maniqa_vit_features_match_transformers_vit(maniqa):
    """Our timm-layout ViT against transformers' ViTModel (same weights, fused qkv split): block outputs."""
    transformers = pytest.importorskip("transformers")
    vit = maniqa.vit
    cfg = transformers.ViTConfig(hidden_size=16, num_hidden_layers=10, num_attention_heads=2, intermediate_size=64,
                                 image_size=64, patch_size=8, layer_norm_eps=1e-6, hidden_act="gelu")
    ref = transformers.ViTModel(cfg, add_pooling_layer=False).eval()
    sd = {"embeddings.cls_token": vit.cls_token, "embeddings.position_embeddings": vit.pos_embed,
          "embeddings.patch_embeddings.projection.weight": vit.patch_embed.proj.weight,
          "embeddings.patch_embeddings.projection.bias": vit.patch_embed.proj.bias,
          "layernorm.weight": vit.norm.weight, "layernorm.bias": vit.norm.bias}
    for i, blk in enumerate(vit.blocks):
        p = f"layers.{i}."
        _split_qkv(p + "attention", blk.attn.qkv.weight, blk.attn.qkv.bias, sd)
        for a, b in (("attention.o_proj", blk.attn.proj), ("layernorm_before", blk.norm1),
                     ("layernorm_after", blk.norm2), ("mlp.fc1", blk.mlp.fc1), ("mlp.fc2", blk.mlp.fc2)):
            sd[p + a + ".weight"], sd[p + a + ".bias"] = b.weight, b.bias
    ref.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        hidden = ref(pixel_values=x, output_hidden_states=True).hidden_states  # [embeddings, block 0, ...]
        ours = vit.features(x, (0, 6, 9))
    for got, i in zip(ours, (0, 6, 9)):
        torch.testing.assert_close(got, hidden[i + 1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("shift", [0, 2])
def test_maniqa_swin_block_matches_transformers_swin(shift):
    """Our Swin block (window 4, relative position bias, cyclic shift with the -100 mask) against transformers'
    SwinLayer with the same weights, on an 8x8 grid."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.swin.modeling_swin import SwinLayer

    from rewards.maniqa import SwinBlock

    torch.manual_seed(0)
    ours = SwinBlock(16, (8, 8), heads=2, ws=4, shift=shift, dim_mlp=32).eval()
    for prm in ours.parameters():
        torch.nn.init.normal_(prm, std=0.3)
    cfg = transformers.SwinConfig(window_size=4, mlp_ratio=2.0, layer_norm_eps=1e-5, hidden_act="gelu")
    ref = SwinLayer(cfg, 16, (8, 8), 2, shift_size=shift).eval()
    sd = {"attention.relative_position_bias.relative_position_bias_table": ours.attn.relative_position_bias_table}
    _split_qkv("attention", ours.attn.qkv.weight, ours.attn.qkv.bias, sd)
    for a, b in (("attention.o_proj", ours.attn.proj), ("layernorm_before", ours.norm1),
                 ("layernorm_after", ours.norm2), ("mlp.fc1", ours.mlp.fc1), ("mlp.fc2", ours.mlp.fc2)):
        sd[a + ".weight"], sd[a + ".bias"] = b.weight, b.bias
    ref.load_state_dict(sd, strict=True)
    x = torch.randn(2, 64, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x, (8, 8))[0], atol=1e-5, rtol=1e-5)


def _full_maniqa_keys() -> dict[str, tuple]:
    """The official MANIQA (KonIQ) state-dict layout as we know it (not checked against the real file)."""
    keys = {"vit.cls_token": (1, 1, 768), "vit.pos_embed": (1, 785, 768),
            "vit.patch_embed.proj.weight": (768, 3, 8, 8), "vit.patch_embed.proj.bias": (768,),
            "vit.norm.weight": (768,), "vit.norm.bias": (768,), "vit.head.weight": (1000, 768),
            "vit.head.bias": (1000,)}
    for i in range(12):  # timm Block naming
        p = f"vit.blocks.{i}."
        keys.update({p + "norm1.weight": (768,), p + "norm1.bias": (768,), p + "attn.qkv.weight": (2304, 768),
                     p + "attn.qkv.bias": (2304,), p + "attn.proj.weight": (768, 768), p + "attn.proj.bias": (768,),
                     p + "norm2.weight": (768,), p + "norm2.bias": (768,), p + "mlp.fc1.weight": (3072, 768),
                     p + "mlp.fc1.bias": (3072,), p + "mlp.fc2.weight": (768, 3072), p + "mlp.fc2.bias": (768,)})
    for t in ("tablock1", "tablock2"):
        for i in range(2):
            for q in ("c_q", "c_k", "c_v"):
                keys[f"{t}.{i}.{q}.weight"], keys[f"{t}.{i}.{q}.bias"] = (784, 784), (784,)
    keys.update({"conv1.weight": (768, 3072, 1, 1), "conv1.bias": (768,), "conv2.weight": (384, 768, 1, 1),
                 "conv2.bias": (384,)})
    for s, c in (("swintransformer1", 768), ("swintransformer2", 384)):
        keys[f"{s}.downsample.weight"], keys[f"{s}.downsample.bias"] = (c, c, 3, 3), (c,)
        for layer in range(2):
            lp = f"{s}.layers.{layer}."
            keys[lp + "conv.weight"], keys[lp + "conv.bias"] = (c, c, 3, 3), (c,)
            for b in range(2):
                p = f"{lp}blocks.{b}."
                keys.update({p + "norm1.weight": (c,), p + "norm1.bias": (c,),
                             p + "attn.relative_position_bias_table": (49, 4),
                             p + "attn.relative_position_index": (16, 16),
                             p + "attn.qkv.weight": (3 * c, c), p + "attn.qkv.bias": (3 * c,),
                             p + "attn.proj.weight": (c, c), p + "attn.proj.bias": (c,),
                             p + "norm2.weight": (c,), p + "norm2.bias": (c,), p + "mlp.fc1.weight": (768, c),
                             p + "mlp.fc1.bias": (768,), p + "mlp.fc2.weight": (c, 768), p + "mlp.fc2.bias": (c,)})
                if b == 1:  # shifted windows (shift 2) on the 28x28 grid: 49 windows of 16
                    keys[p + "attn_mask"] = (49, 16, 16)
    for h in ("fc_score", "fc_weight"):
        keys.update({f"{h}.0.weight": (384, 384), f"{h}.0.bias": (384,), f"{h}.3.weight": (1, 384),
                     f"{h}.3.bias": (1,)})
    return keys


def test_maniqa_full_size_state_dict_layout():
    with torch.device("meta"):
        full = MANIQA()
    got = {k: tuple(v.shape) for k, v in full.state_dict().items()}
    expected = _full_maniqa_keys()
    assert {k.split(".")[0] for k in got} == {"vit", "tablock1", "conv1", "swintransformer1", "tablock2", "conv2",
                                             "swintransformer2", "fc_score", "fc_weight"}
    assert set(got) == set(expected), (sorted(set(got) - set(expected))[:5], sorted(set(expected) - set(got))[:5])
    assert got == expected


def test_maniqa_checkpoint_loading_and_errors(maniqa, tmp_path):
    sd = maniqa.state_dict()
    path = tmp_path / "ckpt_koniq10k.pt"
    torch.save({"params": {"module." + k: v for k, v in sd.items()}}, path)
    fresh = load_maniqa_state_dict(MANIQA(**TINY), read_checkpoint(str(path)))
    img = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(img), maniqa(img))
    # keys the score does not depend on may be absent
    optional = {k: v for k, v in sd.items() if "downsample" not in k and "relative_position_index" not in k
                and "attn_mask" not in k and not k.startswith(("vit.head", "vit.norm"))}
    with torch.no_grad():
        torch.testing.assert_close(load_maniqa_state_dict(MANIQA(**TINY), optional).eval()(img), maniqa(img))
    for bad, what in (({k: v for k, v in sd.items() if k != "conv1.weight"}, "missing 1: conv1.weight"),
                      ({**sd, "extra.weight": torch.zeros(1)}, "unexpected 1: extra.weight"),
                      ({**sd, "conv2.bias": torch.zeros(3)}, "wrong shape (file vs model) 1: conv2.bias")):
        with pytest.raises(ValueError) as e:
            load_maniqa_state_dict(MANIQA(**TINY), bad)
        assert what in str(e.value) and "\n" not in str(e.value)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="cannot read"):
        read_checkpoint(str(junk))


def test_maniqa_missing_weights_is_one_actionable_line(monkeypatch, tmp_path):
    from rewards import get_reward

    hub = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    monkeypatch.delenv("MANIQA_WEIGHTS", raising=False)
    with pytest.raises(FileNotFoundError) as e:
        get_reward("maniqa")
    msg = str(e.value)
    assert "\n" not in msg and "ckpt_koniq10k.pt" in msg and "chaofengc/IQA-PyTorch-Weights" in msg
    assert "MANIQA_WEIGHTS" in msg
    monkeypatch.setenv("MANIQA_WEIGHTS", str(tmp_path / "nope.pt"))
    with pytest.raises(FileNotFoundError, match="is not a file"):
        get_reward("maniqa")


# ============================================================================= Qwen judge: parsing


@pytest.mark.parametrize("text, score", [
    ('{"description": "a cat", "score": 3.5, "explanation": "ok"}', 3.5),
    ('Here you go:\n```json\n{\n  "description": "x",\n  "score": 4,\n  "explanation": "y"\n}\n```\nDone.', 4.0),
    ('Like {"score": 5} but\n```json\n{"score": 2}\n```', 2.0),  # the fenced block wins
    ('```json\n{\n  "score": 0,\n}\n```', 0.0),  # trailing comma (the fake/weird prompts' own example)
    ('{"description": "a dog", "score": 4.5, "explanation": "the text was cut', 4.5),  # truncated: no brace
    ('```json\n{"score": 1,', 1.0),  # truncated inside an unclosed fence
    ("{'score': 1, 'explanation': 'the dog's face'}", 1.0),  # single quotes
    ("{score: 3, ok: True, note: None}", 3.0),  # bare keys, Python literals
    ('{"score": 3, "explanation": "the "dog" looks odd"}', 3.0),  # unescaped quotes: read from the text
    ('{"a": 1} then {"score": 2}', 2.0),
    ('{"score": "3.5"}', 3.5),  # float(str) as the release
    ('{"score": 7}', 7.0),  # out of range passes through (no clipping)
    ('{"score": -1.5e0}', -1.5),
])
def test_parse_score_valid_and_repairable(text, score):
    assert parse_score(text) == score


@pytest.mark.parametrize("text", [
    "", "The image is fine, I would give it a 4.", '{"description": "no score here"}', '{"score": "high"}',
    '{"score": null}', '{"score": [1]}', '{"score": NaN}', '{"score": ', "```json\n\n```", None,
])
def test_parse_score_failures(text):
    assert parse_score(text) is None


def test_prompts():
    label = question("label", "a photo of tench, Tinca tinca")
    assert 'generate image: "a photo of tench, Tinca tinca"' in label and LABEL_PROMPT.count("{}") == 1
    assert '"description", "score", "explanation"' in label and "between 0 and 5" in label
    assert parse_score(label) == 3.5  # the worked example in the prompt is itself a valid reply
    assert question("fake", "anything") == FAKE_PROMPT and "AI-generated" in FAKE_PROMPT
    assert question("weird", "anything") == WEIRD_PROMPT and "strange feature" in WEIRD_PROMPT
    assert parse_score(FAKE_PROMPT) == 0.0 and parse_score(WEIRD_PROMPT) == 0.0
    with pytest.raises(ValueError, match="unknown Qwen judge prompt"):
        question("beauty", "x")


# ============================================================================= Qwen judge: retries, batching


class ScriptedGenerate:
    """generate(images, texts) -> replies from a script: per call, a list of replies (or an exception)."""

    def __init__(self, script):
        self.script, self.calls = list(script), []

    def __call__(self, images, texts):
        self.calls.append(list(texts))
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step if isinstance(step, list) else [step] * len(texts)


def _reward(script, kind="fake", **kw):
    gen = ScriptedGenerate(script)
    return QwenJudgeReward(QwenJudge(generate=gen), kind, **kw), gen


def test_retries_then_success_and_zero_after_three_failures():
    images = torch.rand(1, 3, 16, 16)
    reward, gen = _reward(["no json", "{'score':", '```json\n{"score": 1}\n```'])
    assert reward(images, ["p"], [{}]).tolist() == [1.0] and len(gen.calls) == 3
    reward, gen = _reward(["no json"] * 3)
    assert reward(images, ["p"], [{}]).tolist() == [0.0] and len(gen.calls) == 3
    assert reward.last_replies == ["no json"]
    reward, gen = _reward(["x", "x", "x", '{"score": 1}'], attempts=4)
    assert reward(images, ["p"], [{}]).tolist() == [1.0] and len(gen.calls) == 4
    reward, gen = _reward(["x", '{"score": 1}'], attempts=1)
    assert reward(images, ["p"], [{}]).tolist() == [0.0] and len(gen.calls) == 1


def test_only_failed_images_are_asked_again():
    images = torch.rand(3, 3, 16, 16)
    reward, gen = _reward([['{"score": 4}', "??", '{"score": 2.5}'], ['{"score": 1}']], kind="label")
    assert reward(images, ["a cat", "a dog", "a cow"], [{}] * 3).tolist() == [4.0, 1.0, 2.5]
    assert len(gen.calls) == 2 and len(gen.calls[1]) == 1 and '"a dog"' in gen.calls[1][0]
    assert '"a cat"' in gen.calls[0][0] and '"a cow"' in gen.calls[0][2]


def test_generation_errors_are_retried_then_raised():
    images = torch.rand(2, 3, 16, 16)
    reward, gen = _reward([RuntimeError("CUDA OOM"), RuntimeError("CUDA OOM"), '{"score": 1}'])
    assert reward(images, ["p", "q"], [{}, {}]).tolist() == [1.0, 1.0] and len(gen.calls) == 3
    reward, gen = _reward([RuntimeError("CUDA OOM")] * 3)
    with pytest.raises(RuntimeError, match="CUDA OOM"):
        reward(images, ["p", "q"], [{}, {}])


def test_clip_scores_option():
    images = torch.rand(2, 3, 16, 16)
    reward, _ = _reward([['{"score": 7}', '{"score": -1}']], kind="label")
    assert reward(images, ["a", "b"], [{}, {}]).tolist() == [7.0, -1.0]  # raw, as the release
    reward, _ = _reward([['{"score": 7}', '{"score": -1}']], kind="label", clip_scores=True)
    assert reward(images, ["a", "b"], [{}, {}]).tolist() == [5.0, 0.0]
    reward, _ = _reward([['{"score": 2}', '{"score": 0.5}']], kind="weird", clip_scores=True)
    assert reward(images, ["a", "b"], [{}, {}]).tolist() == [1.0, 0.5]


def test_judge_batches_in_chunks():
    gen = ScriptedGenerate(['{"score": 1}'] * 5)
    reward = QwenJudgeReward(QwenJudge(generate=gen, batch_size=2), "fake")
    assert reward(torch.rand(5, 3, 16, 16), list("abcde"), [{}] * 5).tolist() == [1.0] * 5
    assert [len(c) for c in gen.calls] == [2, 2, 1]
    reward = QwenJudgeReward(reward.judge, "weird", batch_size=4)  # per-reward chunk size on a shared judge
    assert reward(torch.rand(5, 3, 16, 16), list("abcde"), [{}] * 5).tolist() == [1.0] * 5
    assert [len(c) for c in gen.calls[3:]] == [4, 1]


def test_to_pil_truncates_and_jpeg_round_trip():
    img = torch.full((3, 8, 12), 0.999)
    img[0] = 1.0
    pil = to_pil(img, jpeg=False)
    assert pil.size == (12, 8) and pil.getpixel((0, 0)) == (255, 254, 254)  # x * 255 truncated
    smooth = torch.linspace(0, 1, 64).repeat(3, 64, 1)
    j = torch.from_numpy(np.array(to_pil(smooth, jpeg=True))).float()
    raw = torch.from_numpy(np.array(to_pil(smooth, jpeg=False))).float()
    assert j.shape == raw.shape and 0 < (j - raw).abs().max() < 16


def test_rewards_share_one_judge(monkeypatch):
    from rewards import qwen_judge

    judge = QwenJudge(generate=ScriptedGenerate([]))
    monkeypatch.setattr(qwen_judge, "_JUDGES", {("local-judge", "cpu", torch.float32): judge})
    rewards = [qwen_judge.make_qwen_label(model="local-judge"), qwen_judge.make_qwen_fake(model="local-judge"),
               qwen_judge.make_qwen_weird(model="local-judge", attempts=2, clip_scores=True)]
    assert all(r.judge is judge for r in rewards) and [r.kind for r in rewards] == ["label", "fake", "weird"]
    assert rewards[2].attempts == 2 and rewards[2].clip_scores and rewards[2].jpeg
    assert not qwen_judge.make_qwen_fake(model="local-judge", jpeg=False).jpeg and rewards[1].jpeg


def test_missing_judge_model_is_one_actionable_line(monkeypatch, tmp_path):
    pytest.importorskip("transformers")
    hub = pytest.importorskip("huggingface_hub.constants")
    from rewards import get_reward

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("QWEN_JUDGE", raising=False)
    with pytest.raises(RuntimeError) as e:
        get_reward("qwen_weird")
    msg = str(e.value)
    assert "\n" not in msg and "Qwen/Qwen2.5-VL-3B-Instruct" in msg and "QWEN_JUDGE" in msg


def test_modules_import_no_heavy_library():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, rewards.maniqa, rewards.qwen_judge; print(sorted(m for m in ('transformers', "
            "'huggingface_hub', 'PIL', 'torchvision', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parents[1]))
    assert out.stdout.strip() == "[]"


# ============================================================================= Qwen judge: tiny real model

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
           "<|video_pad|>"]
WORDS = ["<unk>"] + SPECIAL + ["{", "}", '"score":', "```json", "```", "0", "1", "2", "3", "3.5", "a", "photo",
                               "of", "cat", "dog", "user", "assistant", "system", "You", "are", "helpful"]


@pytest.fixture(scope="module")
def tiny_qwen():
    """A random Qwen2.5-VL with a word-level tokenizer and the PIL image processor."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    vocab = {w: i for i, w in enumerate(WORDS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<|endoftext|>",
                                               eos_token="<|im_end|>")
    tok.add_special_tokens({"additional_special_tokens": SPECIAL[1:]})
    ip = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56 * 4)
    ids = {"image_token_id": vocab["<|image_pad|>"], "video_token_id": vocab["<|video_pad|>"],
           "vision_start_token_id": vocab["<|vision_start|>"], "vision_end_token_id": vocab["<|vision_end|>"]}
    cfg = transformers.Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=vocab["<|endoftext|>"],
                         eos_token_id=vocab["<|im_end|>"], pad_token_id=vocab["<|endoftext|>"],
                         rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [1, 1, 2]}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[1]), **ids)
    torch.manual_seed(0)
    model = transformers.Qwen2_5_VLForConditionalGeneration(cfg).eval()
    return model, tok, ip


def test_tiny_qwen_inputs(tiny_qwen):
    model, tok, ip = tiny_qwen
    judge = QwenJudge(model, tok, ip)
    images = [to_pil(torch.rand(3, 56, 56)), to_pil(torch.rand(3, 84, 112))]
    batch = judge.inputs(images, ["a cat", "a photo of a dog dog dog"])
    grid = batch["image_grid_thw"]
    assert grid.tolist() == [[1, 4, 4], [1, 6, 8]] and batch["pixel_values"].shape[0] == int(grid.prod(-1).sum())
    n_img = (batch["input_ids"] == model.config.image_token_id).sum(1).tolist()
    assert n_img == [4, 12]  # t*h*w / merge_size^2
    assert torch.equal(batch["mm_token_type_ids"].bool(), batch["input_ids"] == model.config.image_token_id)
    mask = batch["attention_mask"]
    assert mask[1].all() and not mask[0, 0] and mask[0, -1]  # left padding
    text = judge.chat_text("Q")
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nQ")
    assert text.endswith("<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\n")


def test_tiny_qwen_batched_generation_matches_single(tiny_qwen):
    model, tok, ip = tiny_qwen
    judge = QwenJudge(model, tok, ip, max_new_tokens=6)
    images = torch.rand(3, 3, 56, 70)
    texts = ["a cat", "a photo of a dog dog dog dog", "cat"]
    batched = judge.replies(list(images), texts)
    single = [judge.replies([images[i]], [texts[i]])[0] for i in range(3)]
    assert batched == single and all(isinstance(r, str) for r in batched)
    r = QwenJudgeReward(judge, "label", attempts=2)(images, texts, [{}] * 3)  # random replies: unparseable -> 0
    assert r.shape == (3,) and torch.isfinite(r).all()


def test_tiny_qwen_reply_decoding_end_to_end(tiny_qwen, monkeypatch):
    """The real input/generate/decode path, with the new tokens replaced by scripted replies."""
    model, tok, ip = tiny_qwen
    replies = ['```json { "score": 3.5 } ```', "cat dog", '{ "score": 1 }']
    script = [tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in replies]
    seen = {}

    def scripted(**kw):  # as generate: the prompt ids followed by the new tokens (padded after EOS)
        seen.update(kw)
        width = max(map(len, script))
        new = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in script[:len(kw["input_ids"])]])
        return torch.cat([kw["input_ids"], new], dim=1)

    monkeypatch.setattr(model, "generate", scripted)
    judge = QwenJudge(model, tok, ip)
    assert judge.replies(list(torch.rand(3, 3, 56, 56)), ["a", "b", "c"]) == ['```json { "score": 3.5 } ```',
                                                                              "cat dog", '{ "score": 1 }']
    r = QwenJudgeReward(judge, "label", attempts=1)(torch.rand(3, 3, 56, 56), ["a", "b", "c"], [{}] * 3)
    assert r.tolist() == [3.5, 0.0, 1.0]
    assert seen["max_new_tokens"] == 256 and seen["do_sample"] is False
    assert seen["pixel_values"].dtype == torch.float32 and "mm_token_type_ids" in seen
