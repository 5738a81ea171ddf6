"""evaluate.py and evals/: every benchmark path on tiny random models (GenEval with the toy's detector and with
Mask2Former + CLIP colours, OCR, preference metrics, FID/IS against an independent computation), resumption,
sharding (2 processes == 1), the toy's numbers, and one-line errors before any image is generated."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO

import evals  # noqa: E402
from evals import imagenet, runner  # noqa: E402


def _args(**kw):
    from evaluate import Args

    return Args(**{"device": "cpu", "progress": False, **kw})


def _records(path):
    recs = {}
    for f in sorted(os.listdir(path)):
        if f.startswith("results") and f.endswith(".jsonl"):
            for line in open(os.path.join(path, f)):
                r = json.loads(line)
                recs[r["id"]] = r
    return [recs[k] for k in sorted(recs)]


class Counting:
    """Wraps a scorer and counts the images it scores."""

    def __init__(self, inner):
        self.inner, self.scored = inner, 0

    def score(self, images, rows):
        self.scored += len(rows)
        return self.inner.score(images, rows)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _toy_rows(k=6):
    from common.prompts import load_prompts

    return load_prompts(os.path.join(REPO, "data", "shapeworld", "eval.jsonl"))[:k]


# ----------------------------------------------------------------------------- the toy, GenEval


@pytest.mark.slow
def test_toy_numbers_unchanged(tmp_path):
    """The default evaluation (toy, 55 prompts x 4, seed 1234, CFG 3) gives the numbers evaluate.py printed before
    evals/ existed."""
    from evals.cli import main

    s = main(_args(out=str(tmp_path)))["base: toy"]
    expected = {"single_object": 0.6667, "two_object": 0.5417, "counting": 0.3611, "colors": 0.3333,
                "position": 0.1250, "color_attr": 0.0938, "overall": 0.3536}
    assert {k: round(v, 4) for k, v in s.items()} == expected
    recs = _records(tmp_path / "toy")
    assert len(recs) == 220 and {"tag", "correct", "reason", "detections"} <= set(recs[0])
    assert (tmp_path / "toy" / "grid.png").is_file() and (tmp_path / "toy" / "summary.json").is_file()


def test_runner_matches_common_evaluation(tmp_path):
    """Same seed, same images: the runner agrees image by image with common.evaluation.geneval_eval."""
    from common.evaluation import geneval_eval
    from common.models import load_model
    from evals.geneval import Scorer
    from rewards.geneval import GenEvalJudge

    bk, rows = load_model("toy"), _toy_rows(8)
    summary, _, _ = geneval_eval(bk, rows, GenEvalJudge("shapeworld"), 3, seed=7, cfg_scale=3.0)
    recs, _, _, _ = runner.run(bk, rows, Scorer(), str(tmp_path), n=3, seed=7, cfg_scale=3.0, progress=False)
    assert Scorer.summarize(recs, {}) == {k: v for k, v in summary.items() if k != "quality"}


def test_geneval_real_detector_and_colours(tmp_path, tiny, encoder):
    """The "coco" path: Mask2Former post-processing (stub network) + CLIP zero-shot colours (tiny random CLIP)."""
    from evals.geneval import Scorer
    from rewards.geneval import GenEvalReward
    from rewards.geneval_color import CLIPColorClassifier
    from rewards.mask2former import Mask2FormerDetector
    from test_rewards_models import StubMask2Former

    reward = GenEvalReward(strict=True, detector=Mask2FormerDetector(StubMask2Former(), scale=(64, 64)),
                           colors=CLIPColorClassifier(encoder))
    rows = [{"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a photo of a cat"},
            {"tag": "colors", "include": [{"class": "cat", "count": 1, "color": "red"}], "prompt": "a photo of a red cat"},
            {"tag": "two_object", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1}],
             "prompt": "a photo of a cat and a dog"}]
    recs, _, _, _ = runner.run(tiny, rows, Scorer(reward=reward), str(tmp_path), n=2, seed=0, progress=False)
    assert [r["correct"] for r in recs[:2]] == [True, True]  # the stub always sees one cat
    assert all(not r["correct"] and "dog" in r["reason"] for r in recs[4:])
    colours = [d["color"] for r in recs[2:4] for d in r["detections"]["cat"]]
    assert len(colours) == 2 and all(c in __import__("common.coco_prompts").coco_prompts.GENEVAL_COLORS for c in colours)
    assert all(r["detections"]["cat"][0]["color"] is None for r in recs[:2])  # colour only asked where the prompt asks
    s = Scorer.summarize(recs, {})
    assert s["single_object"] == 1.0 and s["two_object"] == 0.0


# fixtures of the reward tests: tiny CLIP tokenizer and model
from test_rewards_models import clip_model, clip_tok, encoder  # noqa: E402, F401


# ----------------------------------------------------------------------------- OCR


class FakeOCR:
    """Reads back a fixed text for every image."""

    def __init__(self, texts):
        self.texts, self.i = texts, 0

    def lines(self, image):
        assert image.dtype == np.uint8 and image.shape[2] == 3
        t = self.texts[self.i % len(self.texts)]
        self.i += 1
        return [(t, 0.9)]


def test_ocr(tmp_path, tiny):
    from common.prompts import load_prompts
    from evals.ocr import Scorer

    p = tmp_path / "test_ocr.txt"
    p.write_text('a sign that says "Hello World"\na mug with "OK" on it\n')
    rows = load_prompts(str(p))
    evals.benchmark("ocr").check(rows, None)
    scorer = Scorer(engine=FakeOCR(["hello world", "HELLO W0RLD!", "ok", "xx"]))
    recs, _, _, _ = runner.run(tiny, rows, scorer, str(tmp_path / "out"), n=2, seed=0, progress=False)
    assert [r["reward"] for r in recs] == pytest.approx([1.0, 0.8, 1.0, 0.0])
    assert [r["exact"] for r in recs] == [True, False, True, False]
    s = scorer.summarize(recs, {})
    assert s["reward"] == pytest.approx(0.7) and s["exact_match"] == 0.5
    assert s["reward_se"] == pytest.approx(np.std([1, .8, 1, 0], ddof=1) / 2)
    assert "0.7000" in scorer.table({"base: tiny": s}, recs)


# ----------------------------------------------------------------------------- preference metrics


def test_prefs_hps_and_clip(tmp_path, tiny, encoder):
    from evals.prefs import Scorer
    from rewards.clip import CLIPScore
    from rewards.hps import HPSReward

    rows = [{"prompt": "a red cat"}, {"prompt": "a blue dog"}, {"prompt": "a green apple"}]
    scorer = Scorer(metrics={"hps": HPSReward(encoder), "clip": CLIPScore(encoder)})
    recs, _, images, _ = runner.run(tiny, rows, scorer, str(tmp_path), n=2, seed=0, progress=False)
    assert len(recs) == 6 and all(-1 <= r["hps"] <= 1 and -1 <= r["clip"] <= 1 for r in recs)
    direct = CLIPScore(encoder)(images, [r["prompt"] for r in recs], rows).tolist()
    assert [r["clip"] for r in recs] == pytest.approx(direct, abs=1e-5)
    s = scorer.summarize(recs, {})
    assert s["clip"] == pytest.approx(np.mean(direct), abs=1e-5)
    assert s["clip_se"] == pytest.approx(np.std(direct, ddof=1) / np.sqrt(6), abs=1e-5)


# ----------------------------------------------------------------------------- ImageNet: FID, IS, P/R


def _fid_independent(x, y):
    """FID from the eigenvalues of S1 S2 (not scipy's sqrtm)."""
    m1, m2, s1, s2 = x.mean(0), y.mean(0), np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    ev = np.linalg.eigvals(s1 @ s2)
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(ev.clip(0)).real.sum())


def test_fid_is_pr_math():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 8)), rng.normal(0.3, 1.2, size=(150, 8))
    assert imagenet.frechet_distance(*imagenet.statistics(x), *imagenet.statistics(y)) == \
        pytest.approx(_fid_independent(x, y), rel=1e-6)
    assert imagenet.frechet_distance(*imagenet.statistics(x), *imagenet.statistics(x)) == pytest.approx(0, abs=1e-6)
    logits = rng.normal(size=(30, 5)) * 3
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    splits = [p[i : i + 10] for i in range(0, 30, 10)]
    ref_is = np.mean([np.exp(np.mean((s * (np.log(s) - np.log(s.mean(0)))).sum(1))) for s in splits])
    assert imagenet.inception_score(logits, split_size=10) == pytest.approx(ref_is, rel=1e-9)
    d_rr = np.linalg.norm(x[:, None] - x[None], axis=-1)
    d_ff = np.linalg.norm(y[:, None] - y[None], axis=-1)
    d_fr = np.linalg.norm(y[:, None] - x[None], axis=-1)
    r_real, r_fake = np.sort(d_rr, 1)[:, 3], np.sort(d_ff, 1)[:, 3]
    prec, rec = (d_fr <= r_real[None]).any(1).mean(), (d_fr.T <= r_fake[None]).any(1).mean()
    assert imagenet.precision_recall(x, y, k=3) == pytest.approx((prec, rec))


def test_eval_resize_384_to_256():
    x = torch.rand(2, 3, 384, 384)
    u8 = imagenet.to_eval_u8(x, 256)
    assert u8.shape == (2, 3, 256, 256) and u8.dtype == torch.uint8
    assert imagenet.to_eval_u8(x, 0).shape == (2, 3, 384, 384)
    assert torch.equal(imagenet.to_eval_u8(torch.full((1, 3, 4, 4), 0.5), 4), torch.full((1, 3, 4, 4), 128,
                                                                                         dtype=torch.uint8))


class TinyInception(torch.nn.Module):
    """A random stand-in for the Inception network: uint8 images -> (pool (B, 6), logits (B, 4))."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.fc = torch.nn.Conv2d(3, 6, 3), torch.nn.Linear(6, 4)

    @torch.no_grad()
    def forward(self, u8):
        pool = self.conv(u8.float() / 255).mean((2, 3))
        return pool.double().numpy(), self.fc(pool).double().numpy()


def _tiny_c2i():
    from common.llamagen import GPT, GPTConfig, VQConfig, VQModel
    from common.models import LlamaGenC2I, toy_config

    torch.manual_seed(0)
    cfg = toy_config("tiny")
    gpt = GPT(GPTConfig(**{**cfg["gpt"], "model_type": "c2i", "cls_token_num": 1, "num_classes": 10})).init_weights()
    vq = VQModel(VQConfig(**{**cfg["vq"], "ch_mult": tuple(cfg["vq"]["ch_mult"])}))
    return LlamaGenC2I(gpt, vq, cfg["image_size"])


def test_imagenet_path_on_tiny_c2i(tmp_path):
    from evals.imagenet import Scorer

    bk, net = _tiny_c2i(), TinyInception()
    ref_feats = np.random.default_rng(1).normal(size=(40, 6)) * 0.05
    ref = {"mu": ref_feats.mean(0), "sigma": np.cov(ref_feats, rowvar=False), "features": ref_feats}
    rows = [{"prompt": str(c)} for c in range(5)]
    scorer = Scorer(features=net, reference=ref, eval_size=32, precision_recall=True)
    recs, arrays, _, _ = runner.run(bk, rows, scorer, str(tmp_path), n=4, seed=0, cfg_scale=2.0, progress=False)
    assert [r["class"] for r in recs] == [c for c in range(5) for _ in range(4)]
    assert arrays["pool"].shape == (20, 6) and arrays["logits"].shape == (20, 4)
    s = scorer.summarize(recs, arrays)
    # independent: features recomputed here from the same images
    noise = runner.row_noise(0, 20, bk.num_tokens)
    from common.sampling import sample

    cond = bk.cond([r["prompt"] for r in rows for _ in range(4)])
    tokens, _, _ = sample(bk.policy, cond, bk.uncond(cond), bk.num_tokens, 2.0, noise=noise)
    pool, logits = net(imagenet.to_eval_u8(bk.decode(tokens), 32))
    assert np.allclose(pool, arrays["pool"], atol=1e-6)
    assert s["fid"] == pytest.approx(_fid_independent(pool, ref_feats), rel=1e-5)
    assert s["is"] == pytest.approx(imagenet.inception_score(logits), rel=1e-6) and 1 <= s["is"] <= 4
    assert 0 <= s["precision"] <= 1 and 0 <= s["recall"] <= 1


def test_torch_fidelity_inception_loads_offline(tmp_path):
    """The real loading path: torch-fidelity's FeatureExtractorInceptionV3 from a local weights file (random weights
    here), without torchvision and without a download."""
    if importlib.util.find_spec("torch_fidelity") is None:
        pytest.skip("torch-fidelity is not installed (pip install --no-deps -r requirements-eval.txt)")
    cls = imagenet._fidelity_inception_class()

    class RandomInit(cls):  # the real architecture, its weights left random (load_state_dict skipped)
        def load_state_dict(self, *a, **k):
            return None

    empty = tmp_path / "empty.pth"
    torch.save({}, empty)
    torch.manual_seed(0)
    path = tmp_path / imagenet.INCEPTION_FILE
    torch.save(RandomInit("x", ["2048"], feature_extractor_weights_path=str(empty)).state_dict(), path)
    features = imagenet.load_inception(str(path))
    pool, logits = features(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert pool.shape == (2, 2048) and logits.shape == (2, 1008) and np.isfinite(pool).all()


# ----------------------------------------------------------------------------- resumption and sharding


def test_resume_generates_only_what_is_missing(tmp_path, tiny):
    from evals.geneval import Scorer

    rows = _toy_rows(5)
    full, _, _, _ = runner.run(tiny, rows, Scorer(), str(tmp_path / "a"), n=2, seed=3, batch_size=4, progress=False)
    out = tmp_path / "b"
    runner.run(tiny, rows, Scorer(), str(out), n=2, seed=3, batch_size=4, progress=False)
    log = out / "results.rank0.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:3]) + "\n" + lines[3][:25])  # interrupted: 3 records and a torn line
    again = Counting(Scorer())
    resumed, _, _, _ = runner.run(tiny, rows, again, str(out), n=2, seed=3, batch_size=4, progress=False)
    assert again.scored == 7 and resumed == full
    done = Counting(Scorer())
    runner.run(tiny, rows, done, str(out), n=2, seed=3, progress=False)
    assert done.scored == 0


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    rows = tmp_path / "p.jsonl"
    rows.write_text("\n".join(json.dumps(r) for r in _toy_rows(5)) + "\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    common = ["evaluate.py", "--prompts", str(rows), "--images-per-prompt", "3", "--device", "cpu", "--batch-size", "4",
              "--no-progress"]
    one = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", *common, "--out",
                          str(tmp_path / "two")], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    assert os.path.isfile(tmp_path / "two" / "toy" / "results.rank1.jsonl")
    assert _records(tmp_path / "one" / "toy") == _records(tmp_path / "two" / "toy")
    assert one.stdout.splitlines()[-2] == two.stdout.splitlines()[-2]  # the same table row


# ----------------------------------------------------------------------------- command line and bad input


def test_help_lists_benchmarks_and_presets():
    p = subprocess.run([sys.executable, "evaluate.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0
    text = " ".join(p.stdout.split())
    for name in [*evals.BENCHMARKS, *evals.PRESETS]:
        assert name in text, name


def test_presets_cite_and_parse():
    from evaluate import Args

    fields = set(Args.__dataclass_fields__)
    src = open(os.path.join(REPO, "evals", "__init__.py")).read()
    for name, values in evals.PRESETS.items():
        assert set(values) <= fields, name
        assert values["benchmark"] in evals.BENCHMARKS
    assert evals.PRESETS["ar_grpo_c2i"]["cfg_scale"] == 2.0 and evals.PRESETS["ar_grpo_c2i"]["eval_size"] == 256
    assert evals.PRESETS["ar_grpo_t2i_geneval"]["top_k"] == 2000
    assert evals.PRESETS["stage_janus7b_geneval"]["cfg_scale"] == 5.0
    assert all(s in src for s in ("STAGE §4.1", "GCPO §6.1", "AR-GRPO §4.1", "AR-GRPO §4.2"))


def _ckpt_of_tiny(tmp_path):
    """A checkpoint whose state.json says it was trained from the toy, holding a tiny model's policy."""
    from common.models import load_model
    from common.utils import save_safetensors

    d = tmp_path / "run" / "checkpoints" / "step_00001"
    d.mkdir(parents=True)
    save_safetensors(load_model("tiny").policy.state_dict(), str(d / "policy.safetensors"))
    (d / "optimizer.pt").write_bytes(b"")
    (d / "trainer.pt").write_bytes(b"")
    (d / "state.json").write_text(json.dumps({"step": 1, "args": {"model": "toy"}}))
    return str(d)


def test_checkpoint_next_to_its_base_model(tmp_path):
    """A run's checkpoint is evaluated after its base model (the table's first row), with the same images' seeds."""
    from common.models import load_model
    from common.utils import save_safetensors
    from evals.cli import main

    d = tmp_path / "run" / "checkpoints" / "step_00002"
    d.mkdir(parents=True)
    sd = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v
          for k, v in load_model("toy").policy.state_dict().items()}
    save_safetensors(sd, str(d / "policy.safetensors"))
    for f in ("optimizer.pt", "trainer.pt"):
        (d / f).write_bytes(b"")
    (d / "state.json").write_text(json.dumps({"step": 2, "args": {"model": "toy"}}))
    (d.parent / "latest").write_text("step_00002")
    rows = tmp_path / "p.jsonl"
    rows.write_text("\n".join(json.dumps(r) for r in _toy_rows(3)) + "\n")
    out = main(_args(checkpoint=str(tmp_path / "run"), prompts=str(rows), n=2, out=str(tmp_path / "out")))
    assert list(out) == ["base: toy", "run/step_00002"]
    assert (tmp_path / "out" / "toy" / "results.rank0.jsonl").is_file()
    assert len(_records(tmp_path / "out" / "run_step_00002")) == 6


def _npz(tmp_path, **arrays):
    p = tmp_path / "ref.npz"
    np.savez(p, **arrays)
    return str(p)


BAD = {
    "unknown benchmark": (lambda t: dict(benchmark="drawbench"), "unknown benchmark 'drawbench'"),
    "unknown model": (lambda t: dict(model="sd3"), "unknown model 'sd3'"),
    "geneval metadata for another detector": (lambda t: dict(detector="coco"), "not one this detector knows"),
    "geneval on a plain prompt list": (lambda t: dict(prompts=os.path.join(REPO, "data", "imagenet", "class_ids.txt")),
                                       "'include' list"),
    "ocr prompts without quotes": (lambda t: dict(benchmark="ocr", prompts=os.path.join(REPO, "data", "shapeworld",
                                                                                          "eval.jsonl")),
                                   "double quotes"),
    "prefs unknown metric": (lambda t: dict(benchmark="prefs", metrics="fid", prompts=os.path.join(
        REPO, "data", "shapeworld", "eval.jsonl")), "--metrics 'fid'"),
    "imagenet prompts not class ids": (lambda t: dict(benchmark="imagenet", prompts=os.path.join(
        REPO, "data", "shapeworld", "eval.jsonl")), "class ids"),
    "missing reference statistics": (lambda t: dict(benchmark="imagenet", ref_stats=str(t / "none.npz")),
                                     "reference statistics not found"),
    "reference file without mu/sigma": (lambda t: dict(benchmark="imagenet", ref_stats=_npz(t, x=np.zeros(2))),
                                        "not the reference statistics mu and sigma"),
    "missing Inception weights": (lambda t: dict(benchmark="imagenet", inception_weights=str(t / "none.pth"),
                                                 ref_stats=_npz(t, mu=np.zeros(2), sigma=np.eye(2))),
                                  "Inception weights not found"),
    "checkpoint of another model": (lambda t: dict(checkpoint=_ckpt_of_tiny(t)), "does not fit base model 'toy'"),
    "not a checkpoint": (lambda t: dict(checkpoint=str(t)), "no complete checkpoint"),
    "bad n": (lambda t: dict(n=0), "--n 0"),
    "bad top-p": (lambda t: dict(top_p=0.0), "--top-p 0.0"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_one_line_before_any_image(case, tmp_path, monkeypatch, capsys):
    from evals import cli

    kw, expected = BAD[case]
    monkeypatch.setattr(cli.runner, "run", lambda *a, **k: pytest.fail("an image was generated"))
    with pytest.raises(SystemExit) as e:
        cli.main(_args(out=str(tmp_path / "out"), **kw(tmp_path)))
    msg = str(e.value.code)
    assert msg.startswith("error: ") and "\n" not in msg and expected in msg, msg


def test_unknown_preset_and_changed_settings_one_line(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "evaluate.py", "--preset", "dalle"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 1 and p.stderr.strip().splitlines() == [
        f"error: unknown preset 'dalle'; known: {', '.join(evals.PRESETS)}"]
    runner.check_config(str(tmp_path), {"n": 4})
    with pytest.raises(ValueError, match="holds an evaluation with n = 4, this one asks for 8"):
        runner.check_config(str(tmp_path), {"n": 8})
