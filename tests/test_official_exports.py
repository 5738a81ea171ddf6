"""evaluate.py --export: the samples in the layouts the official evaluators read (evals/official.py).

- GenEval (djghosh13/geneval, `evaluation/evaluate_images.py` and its README): `<IMAGE_FOLDER>/<5-digit prompt
  index>/metadata.jsonl` holding that prompt's line of evaluation_metadata.jsonl as one JSON object (read with
  `json.load`), and `samples/<n>.png` (names matching `\\d+\\.png`); only digit-named folders are read.
- OpenAI's FID suite (openai/guided-diffusion `evaluations/evaluator.py`, copied as AR-GRPO's `fid_evaluation.py`):
  a .npz whose `arr_0.npy` member it streams: `np.lib.format.read_magic`, a 1.0 or 2.0 header, then raw rows;
  uint8 (N, H, W, 3) at the sampler's native size, 8 bits by truncation (AR-GRPO's test.py).
"""
import json
import os
import re
import zipfile

import numpy as np
import pytest
import torch

import evals
from evals import official, runner
from test_evaluate import TinyInception, _args, _tiny_c2i, _toy_rows


def read_like_geneval(imagedir):
    """The folders and files GenEval's evaluate_images.py main() would score: [(metadata, image path)]."""
    out = []
    for sub in sorted(os.listdir(imagedir)):
        folder = os.path.join(imagedir, sub)
        if not os.path.isdir(folder) or not sub.isdigit():
            continue
        with open(os.path.join(folder, "metadata.jsonl")) as f:
            meta = json.load(f)
        for name in sorted(os.listdir(os.path.join(folder, "samples"))):
            path = os.path.join(folder, "samples", name)
            if os.path.isfile(path) and re.match(r"\d+\.png", name):
                out.append((meta, path))
    return out


def read_like_adm(path):
    """arr_0 read as the ADM evaluator streams it (header 1.0 / 2.0, then raw rows)."""
    with zipfile.ZipFile(path) as zf, zf.open("arr_0.npy") as f:
        version = np.lib.format.read_magic(f)
        assert version in ((1, 0), (2, 0))
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        assert not fortran and dtype == np.uint8
        return np.frombuffer(f.read(), dtype=dtype).reshape(shape)


def test_geneval_and_adm_layouts_from_the_toy(tmp_path):
    from evals.cli import main

    rows = _toy_rows(3)
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    main(_args(prompts=str(path), n=2, out=str(tmp_path / "out"), export="geneval,adm"))
    model_dir = tmp_path / "out" / "toy"
    found = read_like_geneval(model_dir / "images")
    assert [m for m, _ in found] == [dict(r) for r in rows for _ in range(2)]  # each prompt's own metadata line
    assert [os.path.relpath(p, model_dir / "images") for _, p in found] == [
        os.path.join(f"{p:05d}", "samples", f"{j:04d}.png") for p in range(3) for j in range(2)]
    arr = read_like_adm(model_dir / "samples.npz")
    assert arr.shape == (6, 64, 64, 3)  # the toy's native 64 px
    np.testing.assert_array_equal(arr, np.load(model_dir / "samples.npz")["arr_0"])
    from PIL import Image

    for k, (_, p) in enumerate(found):  # row order: prompt-major, as the PNGs
        np.testing.assert_array_equal(arr[k], np.asarray(Image.open(p)))


def test_ar_grpo_c2i_release_rehearsal_native_truncated(tmp_path):
    """The release preset's path on a shrunk c2i model in float16: native-size samples, truncated to uint8."""
    from evals.imagenet import Scorer

    preset = evals.PRESETS["ar_grpo_c2i_release"]
    bk = _tiny_c2i()
    bk.policy.to(torch.float16)
    rows = [{"prompt": str(c)} for c in range(3)]
    scorer = Scorer(features=TinyInception(), reference={"mu": np.zeros(6), "sigma": np.eye(6)},
                    eval_size=preset["eval_size"])
    images_dir = str(tmp_path / "images")
    _, _, images, _ = runner.run(bk, rows, scorer, str(tmp_path), n=2, seed=preset["seed"],
                                 cfg_scale=preset["cfg_scale"], top_k=preset["top_k"], top_p=preset["top_p"],
                                 progress=False, image_dir=images_dir)
    shape = official.write_adm_npz(images_dir, 3, 2, str(tmp_path / "samples.npz"))
    arr = read_like_adm(tmp_path / "samples.npz")
    assert shape == arr.shape == (6, bk.image_size, bk.image_size, 3)
    truncated = (images.float().clamp(0, 1) * 255).permute(0, 2, 3, 1).numpy().astype(np.uint8)  # test.py's cast
    np.testing.assert_array_equal(arr, truncated)
    assert (arr != np.round(images.float().clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255)).any()


# the release's ImageNet protocol, file by file (Kwai-Klear/AR-GRPO)
AR_GRPO_RELEASE = {
    "cfg_scale": 2.0,  # test.sh: cfg=2.0 when not given
    "seed": 0,  # test.py: seed = 0
    "top_k": 0, "top_p": 1.0, "temperature": 1.0,  # test.py: model.generate(..., top_p=1.0, top_k=0)
    "n": 50,  # test.py: B = 50 images for every class of range(1000)
    "dtype": "float16",  # test.py: from_pretrained(torch_dtype=torch.float16), fp16 autocast
    "eval_size": 0,  # test.py saves the decoder's native size; fid_evaluation.py resizes nothing
    "export": "adm",  # test.py save_npz: arr_0 of uint8 samples -> fid_evaluation.py (ADM's evaluator)
    "benchmark": "imagenet", "prompts": "data/imagenet/class_ids.txt",
}


def test_ar_grpo_c2i_release_preset_is_the_release():
    preset = evals.PRESETS["ar_grpo_c2i_release"]
    assert {k: preset[k] for k in AR_GRPO_RELEASE} == AR_GRPO_RELEASE
    assert preset["model"] == evals.PRESETS["ar_grpo_c2i"]["model"]


def test_missing_pngs_and_bad_export_are_one_line(tmp_path, monkeypatch):
    from evals import cli

    (tmp_path / "images" / "00000" / "samples").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"2 of 2 images have no PNG .*prompt 0, image 0"):
        official.write_adm_npz(str(tmp_path / "images"), 1, 2, str(tmp_path / "s.npz"))
    assert not (tmp_path / "s.npz").exists()
    monkeypatch.setattr(cli.runner, "run", lambda *a, **k: pytest.fail("an image was generated"))
    with pytest.raises(SystemExit) as e:
        cli.main(_args(export="fid", out=str(tmp_path / "o")))
    msg = str(e.value.code)
    assert msg.startswith("error: ") and "\n" not in msg and "--export 'fid'" in msg, msg


@pytest.mark.slow
def test_export_under_torchrun_equals_one_process(tmp_path):
    """Two ranks write their PNGs; rank 0 packs them after the process group is gone: the same .npz as one."""
    import subprocess
    import sys

    from conftest import REPO

    rows = tmp_path / "p.jsonl"
    rows.write_text("\n".join(json.dumps(r) for r in _toy_rows(3)) + "\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    common = ["evaluate.py", "--prompts", str(rows), "--images-per-prompt", "2", "--device", "cpu", "--batch-size", "2",
              "--no-progress", "--export", "geneval,adm"]
    for name, launcher in (("one", [sys.executable]), ("two", [sys.executable, "-m", "torch.distributed.run",
                                                              "--nproc-per-node", "2"])):
        p = subprocess.run([*launcher, *common, "--out", str(tmp_path / name)], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
    one = read_like_adm(tmp_path / "one" / "toy" / "samples.npz").astype(int)
    two = read_like_adm(tmp_path / "two" / "toy" / "samples.npz").astype(int)
    # the same images up to float rounding: batches of other rows give the decoder last-bit differences, which the
    # truncation turns into one 8-bit level on a few pixels (measured: 1.4e-5 of the values)
    assert one.shape == two.shape and np.abs(one - two).max() <= 1 and (one != two).mean() < 1e-3
    assert len(read_like_geneval(tmp_path / "two" / "toy" / "images")) == 6
