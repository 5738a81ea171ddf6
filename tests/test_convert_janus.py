"""common/convert_janus.py against DeepSeek's own code: tests/data/janus_deepseek is a tiny Janus-Pro checkpoint
that deepseek-ai/Janus's `MultiModalityCausalLM.save_pretrained` wrote, with the image head's logits, the VQ
decode, the text logits and the vision features their code computed from it (tests/data/make_janus_deepseek.py).
Converted, transformers' Janus classes must compute the same."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import REPO

pytest.importorskip("transformers.models.janus")

from common.convert_janus import ConversionError, convert, main  # noqa: E402

FIXTURE = os.path.join(REPO, "tests", "data", "janus_deepseek")
HEADS = 4  # the tiny SigLIP's heads: its name is not one DeepSeek's code ships, so the table has no entry


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("convert") / "janus")
    convert(FIXTURE, out, vision_heads=HEADS)
    return out


@pytest.fixture(scope="module")
def expected() -> dict:
    from safetensors.torch import load_file

    return load_file(os.path.join(FIXTURE, "expected.safetensors"))


def outputs(model_dir: str, e: dict) -> dict:
    """What the fixture recorded, computed by transformers' Janus through common/janus.py's backend."""
    from common.janus import load_janus

    bk = load_janus(model_dir)
    ids, tokens = e["prompt_ids"], e["image_tokens"]
    with torch.no_grad():
        return {
            "gen_logits": bk.policy({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, tokens),  # as trained
            "images": bk.model.decode_image_tokens(tokens).permute(0, 3, 1, 2),
            "text_logits": bk.model(input_ids=ids).logits,
            "vision_features": bk.model.model.get_image_features(pixel_values=e["pixels"]).pooler_output,
        }


def assert_same_outputs(model_dir: str, e: dict):
    got = outputs(model_dir, e)
    for k, v in got.items():
        assert e[k].float().std() > 0.3, k  # the reference is not degenerate
        torch.testing.assert_close(v, e[k], atol=1e-5, rtol=1e-5, msg=lambda m: f"{k}: {m}")


def test_converted_model_computes_what_deepseeks_code_computed(converted, expected):
    assert_same_outputs(converted, expected)


def test_every_tensor_has_its_place_and_the_config_its_sizes(converted):
    from safetensors import safe_open
    from transformers import JanusConfig, JanusForConditionalGeneration

    with safe_open(os.path.join(FIXTURE, "model.safetensors"), "pt") as f:
        src = {k: f.get_tensor(k) for k in f.keys()}
    with safe_open(os.path.join(converted, "model.safetensors"), "pt") as f:
        out = {k: f.get_tensor(k) for k in f.keys()}
    cfg = JanusConfig.from_pretrained(converted)
    assert set(out) == set(JanusForConditionalGeneration(cfg).state_dict())  # lm_head untied: written
    dropped = {"gen_vision_model.quantize.codebook_used"} | {k for k in src if ".attn_pool." in k}
    assert len(out) == len(src) - len(dropped) + 2 * 2 * 2  # 2 blocks' fused qkv weight and bias: 3 tensors each
    assert all(v.dtype == torch.bfloat16 for v in out.values())  # the source's dtype, as released
    qkv = src["vision_model.vision_tower.blocks.1.attn.qkv.weight"]
    assert torch.equal(out["model.vision_model.encoder.layers.1.self_attn.k_proj.weight"], qkv[32:64])
    assert torch.equal(out["model.vision_model.embeddings.position_embedding.weight"],
                       src["vision_model.vision_tower.pos_embed"][0])
    assert torch.equal(out["model.vqmodel.decoder.up.1.block.1.conv2.weight"],
                       src["gen_vision_model.decoder.conv_blocks.1.res.1.conv2.weight"])
    v, q, t = cfg.vision_config, cfg.vq_config, cfg.text_config
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads, v.patch_size, v.image_size, v.mlp_ratio,
            v.projection_dim, v.depth) == (32, 2, HEADS, 8, 32, 2, 32, 2)
    assert (q.num_embeddings, q.embed_dim, q.base_channels, list(q.channel_multiplier), q.num_res_blocks,
            q.latent_channels, q.projection_dim, q.image_token_embed_dim, q.num_patches) == (32, 8, 32, [1, 1], 1,
                                                                                             16, 32, 32, 4)
    assert (t.vocab_size, t.hidden_size, t.num_hidden_layers, t.num_key_value_heads) == (64, 32, 2, 2)
    assert t.bos_token_id == 0 and not cfg.tie_word_embeddings
    gen = json.load(open(os.path.join(converted, "generation_config.json")))
    assert gen["generation_kwargs"] == {"boi_token_id": 3} and gen["pad_token_id"] == 1


def test_full_size_janus_pro_shapes_convert():
    """Key coverage and shapes at Janus-Pro-7B's sizes, from the modules DeepSeek's code builds for its config.json
    (tests/data/janus_deepseek_full_size.json; language model cut to 2 layers): the sizes read from the shapes are
    the defaults transformers' converter assumes for the official weights."""
    from transformers import JanusVisionConfig, JanusVQVAEConfig

    from common.convert_janus import plan
    from common.janus import tiny_tokenizer

    with open(os.path.join(REPO, "tests", "data", "janus_deepseek_full_size.json")) as f:
        full = json.load(f)
    source = {k: torch.empty(s, dtype=torch.bfloat16, device="meta") for k, s in full["shapes"].items()}
    config, converted = plan(full["config"], source, tiny_tokenizer())  # raises unless every tensor has its place
    v, q = config.vision_config, config.vq_config
    for cfg, default, fields in (
        (v, JanusVisionConfig(), ("hidden_size", "num_hidden_layers", "num_attention_heads", "image_size", "patch_size",
                                  "mlp_ratio", "num_image_tokens", "depth")),
        (q, JanusVQVAEConfig(), ("embed_dim", "num_embeddings", "latent_channels", "base_channels", "num_res_blocks",
                                 "num_hidden_layers")),
    ):
        assert {f: getattr(cfg, f) for f in fields} == {f: getattr(default, f) for f in fields}
    assert list(q.channel_multiplier) == [1, 1, 2, 2, 4] and q.num_patches == 24  # 576 tokens, 384 px
    assert v.projection_dim == q.projection_dim == q.image_token_embed_dim == config.text_config.hidden_size == 4096
    assert converted["model.generation_head.vision_head.weight"] == (16384, 4096)
    assert config.dtype == torch.bfloat16


def test_sharded_pytorch_bin_source(tmp_path, expected):
    """The released Janus-Pro-7B's form: pytorch_model-0000k-of-0000n.bin shards and their index."""
    from safetensors.torch import load_file

    src = tmp_path / "src"
    shutil.copytree(FIXTURE, src, ignore=shutil.ignore_patterns("*.safetensors"))
    sd = load_file(os.path.join(FIXTURE, "model.safetensors"))
    keys = sorted(sd)
    halves = {"pytorch_model-00001-of-00002.bin": keys[: len(keys) // 2],
              "pytorch_model-00002-of-00002.bin": keys[len(keys) // 2:]}
    for legacy, (name, ks) in enumerate(halves.items()):  # the second in torch's pre-1.6 format (no mmap)
        torch.save({k: sd[k] for k in ks}, src / name, _use_new_zipfile_serialization=not legacy)
    weight_map = {k: name for name, ks in halves.items() for k in ks}
    (src / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    out = tmp_path / "out"
    convert(str(src), str(out), vision_heads=HEADS)
    assert sorted(p.name for p in out.glob("*.safetensors")) == [f"model-0000{i}-of-00002.safetensors" for i in (1, 2)]
    assert (out / "model.safetensors.index.json").exists()
    assert_same_outputs(str(out), expected)


def _copy(tmp_path, drop: str = "", config: dict | None = None) -> str:
    """A copy of the fixture, with file `drop` removed or config.json's fields replaced."""
    src = tmp_path / "src"
    shutil.copytree(FIXTURE, src)
    if drop:
        os.remove(src / drop)
    if config:
        c = json.loads((src / "config.json").read_text())
        (src / "config.json").write_text(json.dumps({**c, **config}))
    return str(src)


def _missing_tensor(tmp_path) -> str:
    from safetensors.torch import load_file, save_file

    src = _copy(tmp_path)
    sd = load_file(os.path.join(src, "model.safetensors"))
    del sd["gen_head.vision_head.bias"]
    save_file(sd, os.path.join(src, "model.safetensors"), metadata={"format": "pt"})
    return src


def _corrupt(tmp_path) -> str:
    src = _copy(tmp_path)
    with open(os.path.join(src, "model.safetensors"), "r+b") as f:
        f.write(b"\xff" * 64)
    return src


BAD = {  # case -> (SRC, extra arguments, what the one line says)
    "not a folder": (lambda t: str(t / "nope"), {}, "not a directory"),
    "no config.json": (lambda t: _copy(t, drop="config.json"), {}, "no config.json"),
    "another model": (lambda t: _copy(t, config={"model_type": "llava"}), {}, "not DeepSeek's Janus layout"),
    "no weights": (lambda t: _copy(t, drop="model.safetensors"), {}, "no weights"),
    "unreadable weights": (_corrupt, {}, "unreadable weights"),
    "a tensor missing": (_missing_tensor, {}, "missing, e.g. model.generation_head.vision_head.bias"),
    "unknown SigLIP": (lambda t: _copy(t), {"vision_heads": None}, "--vision-heads"),
    "no tokenizer": (lambda t: _copy(t, drop="tokenizer.json"), {}, "--tokenizer"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_actionable_line(tmp_path, case, capsys):
    make, kwargs, says = BAD[case]
    src = make(tmp_path)
    kwargs = {"vision_heads": HEADS, **kwargs}
    with pytest.raises(ConversionError, match=says.replace("(", r"\(")) as e:
        convert(src, str(tmp_path / "out"), **kwargs)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))  # nothing written
    argv = [src, "--out", str(tmp_path / "out")] + (["--vision-heads", str(HEADS)] if kwargs["vision_heads"] else [])
    with pytest.raises(SystemExit) as stop:  # the command line: the same line on stderr, exit status 2
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and says in err[0]


def test_out_in_the_way_and_already_converted(tmp_path, converted):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(ConversionError, match="--force"):
        convert(FIXTURE, str(tmp_path / "out"), vision_heads=HEADS)
    assert (tmp_path / "out" / "keep.txt").read_text() == "x"
    with pytest.raises(ConversionError, match=f"pass it as --model {converted}"):
        convert(converted, str(tmp_path / "out2"), vision_heads=HEADS)


def test_model_dir_in_deepseek_layout_names_the_converter():
    from common.models import load_model

    with pytest.raises(ValueError, match=r"python -m common\.convert_janus .*janus_deepseek --out NEW_DIR"):
        load_model(FIXTURE)


def _run(cmd):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([REPO, os.path.join(REPO, "tests")])}
    return subprocess.run([sys.executable, *cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_train_and_evaluate_from_converted_checkpoint(tmp_path, converted):
    """`--model DIR` trains one step from the converted checkpoint and evaluate.py scores it; the unconverted
    checkpoint stops a script in one line, before its run folder is made."""
    (tmp_path / "prompts.txt").write_text("a red cat\ntwo blue dogs\n")
    with open(os.path.join(REPO, "data", "shapeworld", "eval.jsonl")) as f:
        (tmp_path / "rows.jsonl").write_text("".join(f.readlines()[:2]))
    train = ["grpo_vanilla.py", "--prompts", str(tmp_path / "prompts.txt"), "--reward", "test_janus:brightness",
             "--eval-samples", "0", "--prompts-per-step", "2", "--group-size", "2", "--num-steps", "1"]
    score = ["evaluate.py", "--prompts", str(tmp_path / "rows.jsonl"), "--images-per-prompt", "1", "--device", "cpu",
             "--no-progress"]
    p = _run(train + ["--model", converted, "--out-dir", str(tmp_path / "runs")])
    assert p.returncode == 0, p.stderr[-3000:]
    assert list((tmp_path / "runs" / "grpo_vanilla_s0").glob("checkpoint*/**/policy.safetensors"))
    p = _run(score + ["--model", converted, "--out", str(tmp_path / "eval")])
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"base: {converted}" in p.stdout
    p = _run(train + ["--out-dir", str(tmp_path / "runs2"), "--model", FIXTURE])  # evaluate.py: load_model's test
    assert p.returncode != 0 and "common.convert_janus" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs2").exists()
