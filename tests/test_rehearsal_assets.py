"""The rehearsal infrastructure (tests/rehearsal_assets.py, tests/rehearse_run.py): the tiny stand-ins load through
the REAL loaders (reward factories by name, load_model by name) with the returned environment, and a training
script runs end to end under the recorder."""
import json
import os

import pytest
import torch

from common.llamagen import LLAMAGEN_CHECKPOINTS
from common.models import load_model
from rehearsal_assets import (JANUS_GRID, JANUS_IMAGE_SIZE, MODEL_REWARDS, NO_ASSET_REWARDS, SHRUNK_GPT,  # noqa: F401
                              apply_env, build_assets, param_delta, rehearsal_env, rehearse, shrink, shrink_llamagen)
from rewards import MIXES, REWARDS, check_reward, compute_rewards, get_reward

GENEVAL_ROWS = [
    {"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a photo of a cat"},
    {"tag": "colors", "include": [{"class": "dog", "count": 1, "color": "red"}], "prompt": "a photo of a red dog"},
]
T2I_R1_ROWS = [
    {"prompt": "a red cat", "nouns": ["cat"], "attr_nouns": ["red cat"], "task_type": "color"},
    {"prompt": "a cat left of a dog", "nouns": ["cat", "dog"], "task_type": "spatial",
     "spatial_info": {"obj1": "cat", "obj2": "dog", "locality": "on the left of"}},
]


def metadata_for(name: str) -> list[dict]:
    if name.startswith("geneval"):
        return GENEVAL_ROWS
    if name in ("git_vqa", "gdino", "hps_git_gdino"):
        return T2I_R1_ROWS
    if name == "ocr":
        return [{"prompt": 'a sign that says "hello"'}, {"prompt": 'a poster with the text "open"'}]
    return [{"prompt": r["prompt"]} for r in GENEVAL_ROWS]


@pytest.fixture
def loaded_env(rehearsal_env, monkeypatch):
    """rehearsal_env set in this process, with the shrunk architectures (all undone after the test)."""
    apply_env(monkeypatch, rehearsal_env)
    shrink(monkeypatch)
    return rehearsal_env


def test_layout_env_and_reuse(rehearsal_env):
    env = rehearsal_env
    for var in ("HF_HUB_CACHE", "HF_HOME", "LLAMAGEN_DIR", "CLIP_MODEL", "GENEVAL_CLIP", "GENEVAL_MASK2FORMER",
                "HPS_CHECKPOINT", "HPS_TOKENIZER", "GIT_VQA_MODEL", "GDINO_MODEL", "MANIQA_WEIGHTS", "QWEN_JUDGE"):
        assert os.path.exists(env[var]), var
    assert env["HF_HUB_OFFLINE"] == "1"
    for repo_id in ("deepseek-community/Janus-Pro-1B", "deepseek-community/Janus-Pro-7B"):  # genuine hub cache
        folder = os.path.join(env["HF_HUB_CACHE"], "models--" + repo_id.replace("/", "--"))
        with open(os.path.join(folder, "refs", "main")) as f:
            commit = f.read()
        assert os.path.isfile(os.path.join(folder, "snapshots", commit, "config.json"))
    for ck in LLAMAGEN_CHECKPOINTS.values():  # every official file, incl. entries added later
        for f in (ck.gpt_file, ck.vq_file):
            assert torch.load(os.path.join(env["LLAMAGEN_DIR"], f), weights_only=True).keys() == {"model"}
    assert os.path.isfile(os.path.join(env["LLAMAGEN_DIR"], "flan-t5-xl", "config.json"))
    with open(os.path.join(env["LLAMAGEN_DIR"], "imagenet_classes.txt")) as f:
        assert len(f.read().splitlines()) == 1000
    # a second build in the same root reuses the files
    root = os.path.dirname(env["LLAMAGEN_DIR"])
    assert build_assets(root) == env


def test_every_reward_is_covered():
    assert set(REWARDS) | set(MIXES) == set(MODEL_REWARDS) | set(NO_ASSET_REWARDS), \
        "a reward was added to rewards.REWARDS or MIXES: give it a tiny stand-in in tests/rehearsal_assets.py"


@pytest.mark.parametrize("name", MODEL_REWARDS)
def test_model_rewards_load_through_env(loaded_env, name):
    meta = metadata_for(name)
    check_reward(name, meta)
    reward = get_reward(name)
    torch.manual_seed(0)
    images = torch.rand(2, 3, 256, 256)
    r = compute_rewards(reward, name, images, [m["prompt"] for m in meta], meta)  # finite (B,) or RewardError
    assert r.shape == (2,) and torch.isfinite(r).all()


def test_qwen_judge_replies_a_score(loaded_env):
    from rewards.qwen_judge import make_qwen_label

    reward = make_qwen_label(attempts=1)
    r = reward(torch.rand(2, 3, 64, 80), ["a photo of a cat", "a red dog"], [{}, {}])
    assert reward.last_replies == ['{"score":1}'] * 2 and r.tolist() == [1.0, 1.0]


def test_ocr_reward_runs(loaded_env):
    pytest.importorskip("rapidocr")
    meta = metadata_for("ocr")
    r = compute_rewards(get_reward("ocr"), "ocr", torch.rand(2, 3, 256, 256), [m["prompt"] for m in meta], meta)
    assert r.shape == (2,) and torch.isfinite(r).all()


@pytest.mark.parametrize("name", ["janus-pro-1b", "janus-pro-7b", *LLAMAGEN_CHECKPOINTS])
def test_load_model_by_name(loaded_env, name):
    bk = load_model(name)
    ck = LLAMAGEN_CHECKPOINTS.get(name)
    if ck is None:
        assert bk.grid == (JANUS_GRID, JANUS_GRID)
        size, prompts = JANUS_IMAGE_SIZE, ["a photo of a cat", "two dogs"]
    else:
        g = ck.image_size // 16
        assert bk.grid == (g, g) and bk.policy.cfg.dim == SHRUNK_GPT["dim"]
        size = ck.image_size
        prompts = ["1", "207"] if ck.task == "c2i" else ["a photo of a cat", "two red dogs"]
        assert bk.reward_prompts(prompts)[0] == ("a photo of imagenet class 1, synonym 1" if ck.task == "c2i"
                                                 else "a photo of a cat")
    with torch.no_grad():
        cond = bk.cond(prompts)
        logits, cache = bk.policy.prefill(cond, 2)
        tok = logits.argmax(-1)
        logits, cache = bk.policy.decode(tok, cache)
        assert logits.shape[0] == 2 and torch.isfinite(logits).all()
        ids = torch.randint(0, logits.shape[-1], (1, bk.num_tokens))
        img = bk.decode(ids)
    assert img.shape == (1, 3, size, size) and 0 <= img.min() and img.max() <= 1


def test_llamagen_files_are_strictly_the_shrunk_size(rehearsal_env, monkeypatch):
    apply_env(monkeypatch, rehearsal_env)
    with pytest.raises(ValueError, match="does not match"):  # the official size does not fit the tiny file
        load_model("llamagen-c2i-b")
    undo = shrink_llamagen()
    try:
        assert load_model("llamagen-c2i-b").policy.cfg.n_layer == 1
    finally:
        undo()
    with pytest.raises(ValueError, match="does not match"):  # undo() restored the official size
        load_model("llamagen-c2i-b")


@pytest.mark.slow
def test_runner_end_to_end(rehearsal_env, tmp_path):
    with open(tmp_path / "prompts.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in [
            {"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"},
            {"tag": "colors", "include": [{"class": "square", "count": 1, "color": "red"}],
             "prompt": "a photo of a red square"}])
    args = ["--model", "tiny", "--num-steps", "2", "--prompts-per-step", "2", "--group-size", "2", "--eval-samples",
            "0", "--image-every", "0", "--save-every", "1", "--keep-last", "3", "--out-dir", "runs",
            "--prompts", "prompts.jsonl"]
    rc, record, out, err = rehearse("grpo_vanilla.py", args, cwd=tmp_path, env=rehearsal_env, timeout=300)
    assert rc == 0 and record["exit_code"] == 0, err[-3000:]
    assert [r["name"] for r in record["rewards"]] == ["geneval", "geneval"]
    first = record["rewards"][0]
    assert first["n"] == 4 and first["image_shape"] == [4, 3, 64, 64] and len(first["values"]) == 4
    assert first["metadata_keys"] == ["include", "prompt", "tag"] and first["metadata0"]["prompt"] in first["prompts"]
    assert record["evals"] == []
    opened = record["opened"]
    assert str(tmp_path / "prompts.jsonl") in opened
    assert any("policy.safetensors" in p for p in record["written"])
    assert not any(f"{os.sep}shapeworld{os.sep}" in p for p in opened)  # neither data/ nor weights/shapeworld
    run_dir = tmp_path / "runs" / "grpo_vanilla_s0"
    assert param_delta(str(run_dir), 1, 2) > 0
    assert param_delta(str(run_dir), 2, 2) == 0


@pytest.mark.slow
def test_runner_keeps_exit_code_and_records_evaluation(rehearsal_env, tmp_path):
    # a failing argument check: exit code 1 and the message, recorded
    rc, record, out, err = rehearse("grpo_vanilla.py", ["--model", "tiny", "--group-size", "1"], cwd=tmp_path,
                                    env=rehearsal_env, timeout=300)
    assert rc == 1 and record["exit_code"] == 1 and "--group-size" in err and "group-size" in record["error"]
    # the toy defaults (relative paths) read data/shapeworld from the cwd: recorded, with the evaluation call
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rc, record, out, err = rehearse("grpo_vanilla.py", ["--model", "tiny", "--num-steps", "1", "--prompts-per-step",
                                                        "2", "--group-size", "2", "--eval-samples", "1",
                                                        "--image-every", "0", "--out-dir", str(tmp_path / "runs")],
                                    cwd=repo, env=rehearsal_env, timeout=300)
    assert rc == 0, err[-3000:]
    assert os.path.join(repo, "data", "shapeworld", "train.jsonl") in record["opened"]
    ev = record["evals"]
    assert len(ev) == 2 and ev[0]["args"]["judge"] == "GenEvalJudge('shapeworld')" and ev[0]["n_metadata"] > 0
    assert "overall" in ev[0]["summary"]


def test_prefs_suite_scores_every_metric(loaded_env, tiny, tmp_path):
    """evaluate.py's prefs suite with every metric it offers (HPS, CLIP, MANIQA, the three Qwen judges), each built
    by name through the environment as a user's evaluation builds it: one finite value per image and metric, and the
    table's mean is the mean of the images' values."""
    from types import SimpleNamespace

    import numpy as np

    from evals import runner
    from evals.prefs import METRICS, Scorer, check

    rows = [{"prompt": "a red cat"}, {"prompt": "a blue dog"}]
    check(rows, SimpleNamespace(metrics=",".join(METRICS)))
    scorer = Scorer(",".join(METRICS))
    recs, _, _, _ = runner.run(tiny, rows, scorer, str(tmp_path), n=2, seed=0, progress=False)
    assert len(recs) == 4
    summary = scorer.summarize(recs, {})
    for m in METRICS:
        values = [r[m] for r in recs]
        assert all(np.isfinite(values)), m
        assert summary[m] == pytest.approx(np.mean(values), abs=1e-6), m
    assert [r["qwen_label"] for r in recs] == [1.0] * 4  # the tiny judge replies {"score":1}
