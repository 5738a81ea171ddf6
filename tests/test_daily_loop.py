"""The researcher's loop between runs: sample.py, captioned grids beside the curves (TensorBoard, W&B), weighted sums
of rewards with their parts logged, and the flat-reward guard."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO
from helpers import COLOR_PROMPTS, TINY, tiny_args

CONST_REWARD = '''
import torch

def const(device="cpu"):
    return lambda images, prompts, metadata: torch.full((len(images),), 0.5)

CALLS = []

def counted(device="cpu"):
    def reward(images, prompts, metadata):
        CALLS.append(len(images))
        with open("calls.txt", "a") as f:
            f.write(f"{len(images)}\\n")
        return images.mean(dim=(1, 2, 3))
    return reward
'''


def _env(tmp_path, **extra):
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}", **extra}


def _sample(tmp_path, *flags, cwd=REPO):
    return subprocess.run([sys.executable, os.path.join(REPO, "sample.py"), *flags], cwd=cwd, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=300)


def _pngs(folder) -> dict[str, np.ndarray]:
    from PIL import Image

    return {f: np.asarray(Image.open(os.path.join(folder, f))) for f in sorted(os.listdir(folder))
            if f.startswith("p") and f.endswith(".png")}


# ----------------------------------------------------------------------------- sample.py


def test_sample_is_deterministic_for_a_seed(tmp_path):
    """The same seed draws the same images whatever the batch size; another seed draws others. Outputs: a PNG per
    image, the captioned grid, and samples.jsonl naming prompt, file and settings."""
    import sample

    prompts = ("a photo of a red circle", "a photo of two blue squares")
    a = sample.main(sample.Args(prompt=prompts, model="tiny", n=3, batch_size=6, out=str(tmp_path / "a")))
    b = sample.main(sample.Args(prompt=prompts, model="tiny", n=3, batch_size=2, out=str(tmp_path / "b")))
    c = sample.main(sample.Args(prompt=prompts, model="tiny", n=3, seed=1, out=str(tmp_path / "c")))
    ia, ib, ic = _pngs(a), _pngs(b), _pngs(c)
    assert len(ia) == 6 and ia.keys() == ib.keys() == ic.keys()
    assert all(np.array_equal(ia[k], ib[k]) for k in ia)
    assert not all(np.array_equal(ia[k], ic[k]) for k in ia)
    assert os.path.isfile(os.path.join(a, "grid.png"))
    rows = [json.loads(line) for line in open(os.path.join(a, "samples.jsonl"))]
    assert [r["prompt"] for r in rows] == [prompts[0]] * 3 + [prompts[1]] * 3
    assert rows[0]["model"] == "tiny" and rows[0]["cfg_scale"] == 3.0 and rows[4]["file"] == "p001_01.png"


@pytest.mark.parametrize("flags, message", [
    ([], "no prompt: give --prompt"),
    (["--prompt", "x", "-n", "0"], "-n 0"),
    (["--prompt", "x", "--model", "nope"], "--model 'nope': unknown"),
    (["--prompt", "x", "--top-p", "0"], "--top-p 0.0: must be"),
    (["--prompts", "nope.txt"], "nope.txt"),
    (["--prompt", "x", "--checkpoint", "nowhere"], "nowhere"),
])
def test_sample_bad_input_one_line(tmp_path, flags, message):
    p = _sample(tmp_path, *flags, "--out", str(tmp_path / "out"), cwd=str(tmp_path))
    lines = p.stderr.strip().splitlines()
    assert p.returncode != 0 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], p.stderr
    assert not (tmp_path / "out" / "samples.jsonl").exists()


@pytest.mark.slow
def test_sample_from_a_checkpoint_uses_the_run(tmp_path):
    """--checkpoint RUN: the run's trained policy on its base model, with the run's sampling settings; an --out that
    holds samples is refused (one line) unless --overwrite."""
    runs = tmp_path / "runs"
    p = subprocess.run([sys.executable, "grpo_vanilla.py", *tiny_args("grpo_vanilla.py"), "--num-steps", "2",
                        "--lr", "1e-2", "--image-every", "0", "--cfg-scale", "2.5", "--out-dir", str(runs)], cwd=REPO,
                       env=_env(tmp_path),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    out = tmp_path / "s"
    flags = ["--checkpoint", str(runs / "grpo_vanilla_s0"), "--prompt", "a photo of a red circle", "-n", "2",
             "--out", str(out)]
    p = _sample(tmp_path, *flags)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [json.loads(line) for line in open(out / "samples.jsonl")]
    assert rows[0]["cfg_scale"] == 2.5 and rows[0]["model"] == "tiny" and "step_" in rows[0]["checkpoint"]
    trained = _pngs(out)
    p = _sample(tmp_path, *flags)
    assert p.returncode != 0 and "already holds samples" in p.stderr and "Traceback" not in p.stderr
    base = tmp_path / "base"  # the same noise through the untrained base: the policy was loaded, not the base
    p = _sample(tmp_path, "--model", "tiny", "--cfg-scale", "2.5", "--prompt", "a photo of a red circle", "-n", "2",
                "--out", str(base))
    assert p.returncode == 0, p.stderr[-2000:]
    assert not all(np.array_equal(trained[k], v) for k, v in _pngs(base).items())


# ----------------------------------------------------------------------------- grids with whole captions


def test_grid_captions_are_whole():
    """A long prompt is wrapped under its image, not cut: the caption band grows with the lines, and its last
    line is drawn."""
    from common.utils import grid_image

    long = "a photo of a purple triangle to the left of two yellow circles and a green square"
    images = torch.rand(2, 3, 64, 64)
    short_grid, long_grid = grid_image(images, ["ok", "ok"]), grid_image(images, [long, "x"])
    assert long_grid.size[0] == short_grid.size[0] and long_grid.size[1] > short_grid.size[1] + 30
    band = np.asarray(long_grid.convert("L"))[-12:, :128]  # the last text line under the first image
    assert (band < 128).any(), "the caption's last line is missing"


# ----------------------------------------------------------------------------- weighted sums of rewards


def test_reward_sum_parsing_and_errors():
    from rewards import check_reward_name, parse_mix

    assert parse_mix("color") is None
    assert parse_mix("hps=1.0, clip=0.5") == [("hps", 1.0), ("clip", 0.5)]
    assert parse_mix("color=-1") == [("color", -1.0)]
    for bad, msg in (("hps=1,clip", "'clip' is not 'name=number'"), ("hps=x", "'hps=x' is not"),
                     ("hps=1,hps=2", "'hps' appears twice"), ("hps_git_gdino=1,clip=1", "is itself a sum"),
                     ("hps=nan", "is not 'name=number'")):
        with pytest.raises(ValueError, match=msg):
            parse_mix(bad)
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        check_reward_name("color=1,nope=2")


def test_reward_sum_scores_each_part_once(tmp_path, monkeypatch):
    """Σ w·r, each component called once per batch, its raw scores kept in .last."""
    from rewards import compute_rewards, get_reward

    (tmp_path / "user_rewards.py").write_text(CONST_REWARD)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    import user_rewards

    mix = get_reward("color=2.0,user_rewards:counted=-0.5")
    images = torch.rand(4, 3, 16, 16)
    meta = [{"prompt": "a photo of a red circle", "include": [{"class": "circle", "count": 1, "color": "red"}]}] * 4
    r = compute_rewards(mix, "mix", images, [m["prompt"] for m in meta], meta)
    assert user_rewards.CALLS == [4] and set(mix.last) == {"color", "user_rewards:counted"}
    torch.testing.assert_close(r, 2.0 * mix.last["color"] - 0.5 * images.mean(dim=(1, 2, 3)))


@pytest.mark.slow
def test_reward_sum_trains_and_logs_parts(tmp_path):
    """--reward "color=1.0,geneval=0.5" in a script: the reward is the weighted sum and each part is logged as
    rewards/<name>."""
    runs = tmp_path / "runs"
    p = subprocess.run([sys.executable, "grpo_vanilla.py", *TINY, "--num-steps", "2", "--image-every", "0",
                        "--prompts", COLOR_PROMPTS, "--reward", "color=1.0,geneval=0.5", "--out-dir", str(runs)],
                       cwd=REPO, env=_env(tmp_path),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [json.loads(line) for line in open(runs / "grpo_vanilla_s0" / "metrics.jsonl")]
    for row in rows:
        expect = row["rewards/color"] + 0.5 * row["rewards/geneval"]
        assert abs(row["charts/reward_mean"] - expect) < 1e-5, row


# ----------------------------------------------------------------------------- the flat-reward guard


@pytest.mark.slow
def test_flat_reward_stops_after_saving(tmp_path):
    """A reward that returns the same value for every image: after --stop-on-flat K steps the run saves and stops
    in one line naming the reward and the last rewards seen (exit 1); a varying reward never trips it."""
    (tmp_path / "user_rewards.py").write_text(CONST_REWARD)
    runs = tmp_path / "runs"
    p = subprocess.run([sys.executable, "grpo_vanilla.py", *TINY, "--num-steps", "6", "--image-every", "0",
                        "--reward", "user_rewards:const", "--stop-on-flat", "2", "--out-dir", str(runs)], cwd=REPO,
                       env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    last = p.stderr.strip().splitlines()[-1]
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert last.startswith("error: reward 'user_rewards:const' was flat for 2 steps") and "[0.5, 0.5" in last, last
    run = runs / "grpo_vanilla_s0"
    assert sorted(os.listdir(run / "checkpoints")) == ["latest", "step_000002"]  # saved before stopping
    assert [json.loads(line)["step"] for line in open(run / "metrics.jsonl")] == [1, 2]


def test_presets_turn_the_guard_on(tmp_path, monkeypatch):
    """Every --preset stops on a flat reward after 20 steps unless the preset or the command line says otherwise;
    the toy default never stops."""
    import stage
    from common.run import cli

    for argv, expect in ((["--preset", "geneval_paper"], 20), (["--preset", "geneval_paper", "--stop-on-flat", "0"], 0),
                         ([], 0)):
        monkeypatch.setattr(sys, "argv", ["stage.py", *argv, "--out-dir", str(tmp_path / str(len(argv)))])
        assert cli(stage.Args, stage.PRESETS).stop_on_flat == expect


# ----------------------------------------------------------------------------- images beside the curves


@pytest.mark.slow
def test_grids_reach_tensorboard_and_wandb(tmp_path):
    """Rollout grids (every --image-every steps) and the held-out before/after grids are logged as images to
    TensorBoard (read back with its event reader) and to an offline W&B run (its media files)."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    home = tmp_path / "wandb_home"
    env = _env(tmp_path, WANDB_MODE="offline", WANDB_SILENT="true", WANDB_CONFIG_DIR=str(home / "config"),
               WANDB_CACHE_DIR=str(home / "cache"), WANDB_DATA_DIR=str(home / "data"))
    rows = tmp_path / "eval.jsonl"
    rows.write_text("".join(open(os.path.join(REPO, "data", "shapeworld", "eval.jsonl")).readlines()[:4]))
    runs = tmp_path / "runs"
    p = subprocess.run([sys.executable, "grpo_vanilla.py", *TINY, "--num-steps", "2", "--image-every", "1",
                        "--eval-samples", "1", "--eval-prompts", str(rows), "--track", "--out-dir", str(runs)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    run = runs / "grpo_vanilla_s0"
    events = EventAccumulator(str(run), size_guidance={IMAGES: 0})
    events.Reload()
    steps = {tag: [e.step for e in events.Images(tag)] for tag in events.Tags()[IMAGES]}
    assert steps == {"images/rollouts": [1, 2], "images/eval_before": [0], "images/eval_after": [2]}, steps
    media = [f for _, _, files in os.walk(run / "wandb") for f in files if f.endswith(".png")]
    assert any(f.startswith("images") for f in media) or media, "no image in the offline W&B run"
    data = b"".join(open(os.path.join(d, f), "rb").read() for d, _, files in os.walk(run / "wandb")
                    for f in files if f.endswith(".wandb"))
    assert b"images/rollouts" in data and b"images/eval_after" in data
