"""Official LlamaGen checkpoints: tiny random `.pt` files in the release's format, loaded strictly through
the real path resolution (load_llamagen / load_model), and the backends built from them (c2i class ids,
FLAN-T5 caption padding, CFG with the null class / caption, decode). Offline: the T5 is a tiny random
T5EncoderModel with a locally built tokenizer."""
import argparse
import fractions

import pytest
import torch

from common.llamagen import VQModel
from common.models import LlamaGenC2I, LlamaGenT2I, load_llamagen, load_model
from common.sampling import sample, score
from helpers import C2I, IMAGE_SIZE, T2I, TINY_VQ, random_gpt, write_tiny_t5


@pytest.fixture(scope="module")
def official_dir(tmp_path_factory):
    """A folder laid out like $LLAMAGEN_DIR, with tiny random weights under the official file names."""
    d = tmp_path_factory.mktemp("llamagen")
    torch.manual_seed(0)
    gpts = {"c2i": random_gpt("c2i"), "t2i": random_gpt("t2i")}
    vq = VQModel(TINY_VQ)
    # the release's wrapping: weights under "model", next to training metadata (an argparse.Namespace)
    torch.save({"model": gpts["c2i"].state_dict(), "steps": 0, "args": argparse.Namespace(gpt_model="GPT-B")},
               d / "c2i_B_256.pt")
    torch.save({"model": gpts["t2i"].state_dict()}, d / "t2i_XL_stage1_256.pt")
    for f in ("vq_ds16_c2i.pt", "vq_ds16_t2i.pt"):
        torch.save({"model": vq.state_dict()}, d / f)
    write_tiny_t5(d / "flan-t5-xl")
    (d / "imagenet_classes.txt").write_text("".join(f"name {i}\n" for i in range(10)))
    return d, gpts, vq


def load(name, folder, **kw):
    over = C2I if "c2i" in name else T2I
    return load_llamagen(name, weights_dir=str(folder), gpt_overrides=over, vq_config=TINY_VQ, image_size=IMAGE_SIZE,
                         **kw)


def same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", ["llamagen-c2i-b", "llamagen-t2i-xl"])
def test_official_format_loads_strictly(official_dir, name):
    d, gpts, vq = official_dir
    bk = load(name, d)
    assert isinstance(bk, LlamaGenC2I if "c2i" in name else LlamaGenT2I)
    assert same_state(bk.policy, gpts["c2i" if "c2i" in name else "t2i"]) and same_state(bk.vq, vq)
    assert bk.num_tokens == 16 and bk.grid == (4, 4)
    assert not any(isinstance(m, torch.nn.Dropout) for m in bk.policy.modules())  # RL numerics = eval numerics
    assert all(p.requires_grad for n, p in bk.policy.named_parameters() if "uncond_embedding" not in n)
    assert not any(p.requires_grad for p in bk.vq.parameters())


@pytest.mark.parametrize("wrap", ["module", "state_dict", None])
def test_other_wrappings_and_error_messages(official_dir, tmp_path, monkeypatch, wrap):
    d, gpts, vq = official_dir
    sd = gpts["c2i"].state_dict()
    torch.save(sd if wrap is None else {wrap: sd}, tmp_path / "c2i_B_256.pt")
    torch.save({"model": vq.state_dict()}, tmp_path / "vq_ds16_c2i.pt")
    (tmp_path / "imagenet_classes.txt").write_text((d / "imagenet_classes.txt").read_text())
    assert same_state(load("llamagen-c2i-b", tmp_path).policy, gpts["c2i"])

    # renamed and missing keys: one actionable line
    bad = dict(sd)
    bad["tok_embedding.weight"] = bad.pop("tok_embeddings.weight")
    del bad["norm.weight"]
    torch.save({"model": bad}, tmp_path / "c2i_B_256.pt")
    with pytest.raises(ValueError) as e:
        load("llamagen-c2i-b", tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "c2i_B_256.pt" in msg
    assert "missing 2: norm.weight, tok_embeddings.weight" in msg and "unexpected 1: tok_embedding.weight" in msg

    # a checkpoint of another size: shapes named
    with pytest.raises(ValueError, match=r"GPT-c2i \(dim 48.*wrong shape .*embedding_table.weight \(11, 32\) vs \(11, 48\)"):
        load_llamagen("llamagen-c2i-b", weights_dir=str(d), gpt_overrides=dict(C2I, dim=48), vq_config=TINY_VQ,
                      image_size=IMAGE_SIZE)

    # no files: names them, where to get them, and the env var
    monkeypatch.setenv("LLAMAGEN_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError) as e:
        load_model("llamagen-c2i-xl")
    msg = str(e.value)
    assert "\n" not in msg and "$LLAMAGEN_DIR" in msg
    assert "huggingface.co/FoundationVision/LlamaGen/resolve/main/c2i_XL_384.pt" in msg and "vq_ds16_c2i.pt" in msg
    with pytest.raises(FileNotFoundError, match="t2i_XL_stage1_256.pt.*flan-t5-xl.*peizesun/llamagen_t2i"):
        load_model("llamagen-t2i-xl")


def test_pickled_objects_need_trust(official_dir, tmp_path):
    d, gpts, vq = official_dir
    torch.save({"model": gpts["c2i"].state_dict(), "extra": fractions.Fraction(1, 3)}, tmp_path / "c2i_B_256.pt")
    torch.save({"model": vq.state_dict()}, tmp_path / "vq_ds16_c2i.pt")
    (tmp_path / "imagenet_classes.txt").write_text((d / "imagenet_classes.txt").read_text())
    with pytest.raises(RuntimeError, match="LLAMAGEN_TRUST_PICKLE=1"):
        load("llamagen-c2i-b", tmp_path)
    assert same_state(load("llamagen-c2i-b", tmp_path, trust_pickle=True).policy, gpts["c2i"])


def test_c2i_class_ids_null_class_and_reward_text(official_dir, tmp_path, monkeypatch):
    d, _, _ = official_dir
    bk = load("llamagen-c2i-b", d)
    cond = bk.cond(["3", 7, " 0 "])
    assert cond["label"].tolist() == [3, 7, 0]
    assert bk.uncond(cond)["label"].tolist() == [10, 10, 10]  # the null class is index num_classes
    for bad in ("cat", "10", "-1"):
        with pytest.raises(ValueError, match="class ids 0..9"):
            bk.cond([bad])
    assert bk.reward_prompts(["3"]) == ["a photo of name 3"]
    bare = tmp_path / "bare"  # no class names: stop at loading, before any model is built, naming the file
    bare.mkdir()
    for f in ("c2i_B_256.pt", "vq_ds16_c2i.pt"):
        (bare / f).symlink_to(d / f)
    with pytest.raises(FileNotFoundError, match="imagenet_classes.txt.*LLAMAGEN_CLASS_NAMES"):
        load("llamagen-c2i-b", bare)
    names = tmp_path / "names.txt"
    names.write_text("".join(f"class {i}, synonym {i}\n" for i in range(10)))
    monkeypatch.setenv("LLAMAGEN_CLASS_NAMES", str(names))
    assert load("llamagen-c2i-b", d).reward_prompts(["3", 7]) == ["a photo of class 3, synonym 3",
                                                                 "a photo of class 7, synonym 7"]


def test_t5_padding_left_by_default_right_as_flag(official_dir):
    d, _, _ = official_dir
    bk = load("llamagen-t2i-xl", d)
    assert not bk.text.training and not bk.text.right_pad
    prompts = ["A  Red\tcube", "photo of two blue balls"]  # cleaned to lower case; "balls" is <unk>
    ids, raw_mask = bk.text.tokenize(prompts)  # T5 sees right-padded ids
    assert ids[0, :4].tolist() == [3, 4, 6, 1] and raw_mask.sum(1).tolist() == [4, 6]
    raw = bk.text(ids, raw_mask)  # (2, 8, 16) encoder outputs, pads included

    left = bk.cond(prompts)
    assert left["mask"].tolist() == [[False] * 4 + [True] * 4, [False] * 2 + [True] * 6]
    assert (left["emb"][~left["mask"]] == 0).all()  # padded slots zeroed
    torch.testing.assert_close(left["emb"][0, 4:], raw[0, :4])
    torch.testing.assert_close(left["emb"][1, 2:], raw[1, :6])

    bk.text.right_pad = True  # the AR-GRPO release
    right = bk.cond(prompts)
    assert torch.equal(right["mask"], raw_mask)
    torch.testing.assert_close(right["emb"], raw)
    assert (right["emb"][0, 4:].abs().sum(-1) > 0).all()  # pads keep their non-zero T5 outputs
    null = bk.uncond(right)
    assert torch.equal(null["mask"], right["mask"])
    torch.testing.assert_close(null["emb"][1], bk.policy.cls_embedding.uncond_embedding)


@pytest.mark.parametrize("name", ["llamagen-c2i-b", "llamagen-t2i-xl"])
def test_cfg_sampling_equals_teacher_forcing_and_decodes(official_dir, name):
    """KV-cache CFG sampling (null class / null caption) draws from exactly the distribution that
    teacher-forced guided scoring recomputes; the null condition changes the logits; no cache leaks."""
    d, _, _ = official_dir
    bk = load(name, d)
    prompts = ["3", "7"] if "c2i" in name else ["a red cube", "two blue balls"]
    cond = bk.cond(prompts)
    uncond = bk.uncond(cond)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 64, (2, bk.num_tokens), generator=g)
    before = bk.policy(cond, tokens[:, :-1])
    assert not torch.allclose(bk.policy(uncond, tokens[:, :-1]), before)

    out, logp, _ = sample(bk.policy, cond, uncond, bk.num_tokens, cfg_scale=3.0, generator=g)
    ref, _ = score(bk.policy, cond, out, uncond, cfg_scale=3.0)
    torch.testing.assert_close(logp, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(bk.policy(cond, tokens[:, :-1]), before)  # nothing stale after sampling

    images = bk.decode(out)
    assert images.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
