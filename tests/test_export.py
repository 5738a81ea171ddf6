"""common/export.py: a run's checkpoint -> a model in its own format (toy, official LlamaGen, transformers Janus),
reloaded through the normal loaders with the checkpoint's weights (identical teacher-forced logits), and the
CLI's one-line errors. Tiny random models, CPU, offline."""
import argparse
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from helpers import C2I, IMAGE_SIZE, T2I, TINY_VQ, random_gpt, write_tiny_t5

from common import checkpoint
from common.export import export
from common.llamagen import VQModel
from common.models import load_llamagen, load_model
from common.utils import load_safetensors, seed_everything

PROMPTS = ["a red cat", "two blue dogs", "photo"]


def perturb(policy: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Stand-in for training: noise on every trainable parameter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g).to(p.dtype))
    return policy


def make_run(root, policy: torch.nn.Module, model: str, step: int = 3, **args) -> str:
    """A run directory with one checkpoint of `policy`, written by common.checkpoint as the scripts do."""
    opt = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=0.1)
    ns = argparse.Namespace(**{"model": model, "dtype": "float32", "seed": 0, **args})
    checkpoint.save(os.path.join(root, "checkpoints"), step, policy, opt, None, {}, ns)
    return str(root)


def state(module: torch.nn.Module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def logits(bk, prompts, seed: int = 0) -> torch.Tensor:
    """Teacher-forced logits on fixed random image tokens."""
    tokens = torch.randint(0, 32, (len(prompts), bk.num_tokens), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return bk.policy(bk.cond(prompts), tokens)


def no_leftovers(out):
    parent, name = os.path.split(str(out).rstrip(os.sep))
    assert [e for e in os.listdir(parent) if name in e and e != name] == []  # no .tmp / .old directories


# -- toy format ----------------------------------------------------------------------------------------
def tiny_base():
    seed_everything(0)  # what the scripts do before load_model: "tiny" is random
    return load_model("tiny")


def test_toy_export_reloads_with_trained_weights(tmp_path):
    base = tiny_base()
    trained = perturb(tiny_base().policy)
    run = make_run(tmp_path / "run", trained, "tiny")
    out = tmp_path / "exported"
    lines = export(run, str(out))  # the CLI path: the base is rebuilt by load_model from state.json
    assert any(f"--model {out}" in line for line in lines)
    assert sorted(os.listdir(out)) == ["config.json", "export.json", "gpt.safetensors", "text.safetensors",
                                       "vq.safetensors"]
    meta = json.loads((out / "export.json").read_text())
    assert meta["base_model"] == "tiny" and meta["format"] == "toy" and meta["step"] == 3 and meta["dtype"] == "float32"
    no_leftovers(out)

    bk = load_model(str(out))
    assert same(state(bk.policy), state(trained)) and not same(state(bk.policy), state(base.policy))
    assert same(state(bk.vq), state(base.vq)) and same(state(bk.text), state(base.text))  # the run's frozen parts
    base.policy = trained
    assert torch.equal(logits(bk, PROMPTS), logits(base, PROMPTS))


def test_toy_export_dtypes(tmp_path):
    trained = perturb(tiny_base().policy).to(torch.bfloat16)  # a --dtype bfloat16 run
    run = make_run(tmp_path / "run", trained, "tiny", dtype="bfloat16")
    export(run, str(tmp_path / "keep"))
    export(run, str(tmp_path / "f32"), "float32")
    keep = load_safetensors(str(tmp_path / "keep" / "gpt.safetensors"))
    f32 = load_safetensors(str(tmp_path / "f32" / "gpt.safetensors"))
    assert {v.dtype for v in keep.values()} == {torch.bfloat16} and {v.dtype for v in f32.values()} == {torch.float32}
    sd = trained.state_dict()
    assert all(torch.equal(keep[k], sd[k]) and torch.equal(f32[k], sd[k].float()) for k in sd)  # bf16 -> fp32 exact
    bk = load_model(str(tmp_path / "keep"), dtype=torch.bfloat16)
    ref = tiny_base()
    ref.policy = trained
    assert torch.equal(logits(bk, PROMPTS), logits(ref, PROMPTS))


def test_out_dir_refused_replaced_with_force_and_protected(tmp_path):
    run = make_run(tmp_path / "run", perturb(tiny_base().policy), "tiny")
    out = tmp_path / "exported"
    out.mkdir()  # an empty directory is fine
    export(run, str(out))
    with pytest.raises(ValueError, match="not empty.*--force"):
        export(run, str(out))
    (out / "stale.txt").write_text("x")
    export(run, str(out), force=True)
    assert not (out / "stale.txt").exists() and (out / "gpt.safetensors").exists()
    no_leftovers(out)
    with pytest.raises(ValueError, match="which is being read"):
        export(run, run, force=True)  # --force must never delete the checkpoint itself
    assert os.path.isdir(os.path.join(run, "checkpoints"))


# -- official LlamaGen layout ----------------------------------------------------------------------------
CLASS_NAMES = [f"class {i}, synonym {i}" for i in range(C2I["num_classes"])]


@pytest.fixture(scope="module")
def official_dir(tmp_path_factory):
    """A $LLAMAGEN_DIR-like folder of tiny random weights under the release's file names."""
    d = tmp_path_factory.mktemp("llamagen")
    torch.manual_seed(0)
    torch.save({"model": random_gpt("c2i").state_dict()}, d / "c2i_B_256.pt")
    torch.save({"model": random_gpt("t2i").state_dict()}, d / "t2i_XL_stage1_256.pt")
    for f in ("vq_ds16_c2i.pt", "vq_ds16_t2i.pt"):
        torch.save({"model": VQModel(TINY_VQ).state_dict()}, d / f)
    (d / "imagenet_classes.txt").write_text("".join(n + "\n" for n in CLASS_NAMES))
    write_tiny_t5(d / "flan-t5-xl")
    return d


def tiny_official(name, folder=None):
    """load_model(name) with a tiny configuration; folder None = $LLAMAGEN_DIR, as the CLI resolves it."""
    over = C2I if "c2i" in name else T2I
    return load_llamagen(name, weights_dir=str(folder) if folder else None, gpt_overrides=over, vq_config=TINY_VQ,
                         image_size=IMAGE_SIZE)


@pytest.mark.parametrize("name, frozen", [("llamagen-c2i-b", "link"), ("llamagen-c2i-b", "symlink"),
                                          ("llamagen-c2i-b", "copy"), ("llamagen-t2i-xl", "link")])
def test_official_llamagen_export(official_dir, tmp_path, monkeypatch, name, frozen):
    from common.llamagen import LLAMAGEN_CHECKPOINTS

    ck = LLAMAGEN_CHECKPOINTS[name]
    base_sd = state(tiny_official(name, official_dir).policy)
    trained = perturb(tiny_official(name, official_dir).policy)
    run = make_run(tmp_path / "run", trained, name)
    out = tmp_path / "exported"
    lines = export(run, str(out), bk=tiny_official(name, official_dir), source_dir=str(official_dir), frozen=frozen)
    assert any(f"LLAMAGEN_DIR={out}" in line and f"--model {name}" in line for line in lines)

    # the trained GPT in the release's layout and key names; the frozen files from the source folder
    obj = torch.load(out / ck.gpt_file, map_location="cpu", weights_only=True)
    original = torch.load(official_dir / ck.gpt_file, map_location="cpu", weights_only=True)["model"]
    assert list(obj) == ["model"] and obj["model"].keys() == original.keys()
    frozen_files = {ck.vq_file: ck.vq_file}  # what is placed -> a file inside it
    if ck.task == "t2i":
        frozen_files["flan-t5-xl"] = "flan-t5-xl/model.safetensors"
    for top, f in frozen_files.items():
        assert os.path.islink(out / top) == (frozen == "symlink")
        assert os.path.samefile(out / f, official_dir / f) == (frozen != "copy")  # links share the data
    no_leftovers(out)

    monkeypatch.setenv("LLAMAGEN_DIR", str(out))  # LLAMAGEN_DIR=OUT --model NAME
    bk = tiny_official(name)
    assert same(state(bk.policy), state(trained)) and not same(state(bk.policy), base_sd)
    ref = tiny_official(name, official_dir)
    assert same(state(bk.vq), state(ref.vq))
    if ck.task == "c2i":
        assert bk.class_names == CLASS_NAMES
        prompts = ["3", "7", "0"]
    else:
        prompts = ["a red cube", "two blue balls", "a photo of a ball"]
        c1, c2 = bk.cond(prompts), ref.cond(prompts)
        assert all(torch.equal(c1[k], c2[k]) for k in c1)  # the same (linked) FLAN-T5
    ref.policy = trained
    assert torch.equal(logits(bk, prompts), logits(ref, prompts))


def test_hard_links_fall_back_to_symlinks(tmp_path, monkeypatch):
    from common.export import place_frozen

    src = tmp_path / "src"
    (src / "t5").mkdir(parents=True)
    (src / "t5" / "w.bin").write_text("w")
    (src / "vq.pt").write_text("v")
    out = tmp_path / "out"
    out.mkdir()

    def refuse(*a, **k):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", refuse)  # as across filesystems
    for f in ("t5", "vq.pt"):
        assert place_frozen(str(src / f), str(out / f)) == "symlinked"
        assert os.path.islink(out / f) and os.path.samefile(out / f, src / f)
    assert (out / "t5" / "w.bin").read_text() == "w"


# -- Janus ----------------------------------------------------------------------------------------------
def test_janus_export_is_a_transformers_directory(tmp_path):
    pytest.importorskip("transformers.models.janus")
    from transformers import JanusForConditionalGeneration

    from common.janus import JanusT2I, tiny_janus

    model_dir = tmp_path / "tiny-janus"
    tiny_janus(seed=0).save(str(model_dir))
    base = load_model(str(model_dir))
    trained = load_model(str(model_dir))
    perturb(trained.policy)  # the language model only: the generation embedding / aligner / head are frozen
    run = make_run(tmp_path / "run", trained.policy, str(model_dir))
    out = tmp_path / "exported"
    export(run, str(out))  # base rebuilt from the directory named in state.json
    no_leftovers(out)

    full = JanusForConditionalGeneration.from_pretrained(str(out))
    exported, want = full.state_dict(), trained.model.state_dict()
    assert exported.keys() == want.keys() and all(torch.equal(exported[k], want[k]) for k in want)
    changed = {k for k, v in base.model.state_dict().items() if not torch.equal(v, exported[k])}
    tied = trained.model.lm_head.weight is trained.model.model.language_model.embed_tokens.weight  # tiny config
    assert changed and all(k.startswith("model.language_model.") or (tied and k == "lm_head.weight") for k in changed)

    bk = load_model(str(out))  # --model OUT: tokenizer and generation config came along
    assert isinstance(bk, JanusT2I) and (bk.bos_id, bk.pad_id, bk.boi_id) == (base.bos_id, base.pad_id, base.boi_id)
    assert torch.equal(logits(bk, PROMPTS), logits(trained, PROMPTS))


@pytest.mark.slow
def test_janus_trained_by_script_exported_by_cli_trains_again(tmp_path):
    """grpo_vanilla.py on a tiny Janus directory -> `python -m common.export` -> grpo_vanilla.py --model OUT."""
    pytest.importorskip("transformers.models.janus")
    from common.janus import tiny_janus

    model_dir = tmp_path / "tiny-janus"
    tiny_janus(seed=0).save(str(model_dir))
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    train = [sys.executable, "grpo_vanilla.py", "--prompts", str(tmp_path / "prompts.txt"), "--reward",
             "test_janus:brightness", "--eval-samples", "0", "--prompts-per-step", "2", "--group-size", "2",
             "--num-steps", "1", "--lr", "1e-2", "--beta", "0"]
    p = run_cli([*train, "--model", str(model_dir), "--out-dir", str(tmp_path / "runs")])
    assert p.returncode == 0, p.stderr[-3000:]
    run = tmp_path / "runs" / "grpo_vanilla_s0"
    out = tmp_path / "exported"
    p = run_cli([sys.executable, "-m", "common.export", str(run), "--out", str(out), "--dtype", "bfloat16"])
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"--model {out}" in p.stdout
    (weights,) = [f for f in os.listdir(out) if f.endswith(".safetensors")]
    assert {v.dtype for v in load_safetensors(str(out / weights)).values()} == {torch.bfloat16}
    bk = load_model(str(out), dtype=torch.bfloat16)
    ckpt = load_safetensors(os.path.join(checkpoint.resolve(str(run)), "policy.safetensors"))
    assert all(torch.equal(v, ckpt[k].to(torch.bfloat16)) for k, v in bk.policy.state_dict().items())
    p = run_cli([*train, "--model", str(out), "--out-dir", str(tmp_path / "runs2")])
    assert p.returncode == 0, p.stderr[-3000:]


# -- CLI errors -----------------------------------------------------------------------------------------
def run_cli(cmd, env=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([REPO, os.path.join(REPO, "tests")]),
           **(env or {})}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    return make_run(root, perturb(tiny_base().policy), "tiny")


def edit_state(run, **args):
    """Rewrite the run's state.json args (None removes a key)."""
    path = os.path.join(checkpoint.resolve(run), "state.json")
    info = json.load(open(path))
    info["args"] = {k: v for k, v in {**info["args"], **args}.items() if v is not None}
    json.dump(info, open(path, "w"))


@pytest.mark.parametrize("case, message", [
    ("missing", "no complete checkpoint at"),
    ("no_model", "names no base model"),
    ("out_exists", "exists and is not empty"),
    ("no_weights", "needs c2i_B_256.pt, vq_ds16_c2i.pt in"),
    ("unknown", "unknown model 'nope'"),
    ("mismatch", "does not fit base model 'toy'"),
])
def test_cli_errors_are_one_line(tiny_run, tmp_path, case, message):
    import shutil

    run = str(tmp_path / "run")
    shutil.copytree(tiny_run, run)
    out, env = tmp_path / "out", {"LLAMAGEN_DIR": str(tmp_path / "nowhere")}
    if case == "missing":
        run = str(tmp_path / "no-such-run")
    elif case == "no_model":
        edit_state(run, model=None)
    elif case == "out_exists":
        out.mkdir()
        (out / "x").write_text("x")
    elif case == "no_weights":
        edit_state(run, model="llamagen-c2i-b")
    elif case == "unknown":
        edit_state(run, model="nope")
    elif case == "mismatch":
        edit_state(run, model="toy")  # the shipped ShapeWorld model: another architecture
    p = run_cli([sys.executable, "-m", "common.export", run, "--out", str(out)], env)
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.startswith("error: ") and message in p.stderr, p.stderr
    if case != "out_exists":
        assert not out.exists()
