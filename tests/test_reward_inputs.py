"""Rewards read their inputs as the original scorers do (docs/rewards.md, "Inputs as the originals read them").

- HPSv2.1: open_clip's text cleaning, checked against hpsv2's own tokenizer module (fixture
  tests/data/open_clip_clean.json, made by tests/data/make_open_clip_clean.py from the hpsv2 1.2.0 wheel), and
  HPSv2's `preprocess_val` order on an 8-bit image: ToTensor, float resize with no clamp, pad to a square.
- CLIP score: the image truncated to 8 bits first (AR-GRPO's `to_pil_image`).
- OCR: the engine gets (H, W, 3) uint8 RGB arrays, x * 255 truncated (STAGE's `reward_ocr.py`: `np.array(PIL)`);
  evaluate.py's OCR benchmark takes --ocr-engine.
Each test builds the reward through the code path a user gets (make_hps, CLIPScore, OCRReward, evaluate.py).
"""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO

transformers = pytest.importorskip("transformers")

from rewards.clip import OPENAI_MEAN, OPENAI_STD, CLIPEncoder, CLIPScore, clip_pixels  # noqa: E402

CLEAN = json.load(open(os.path.join(REPO, "tests", "data", "open_clip_clean.json"), encoding="utf-8"))["rows"]


class RecordingTokenizer:
    """Records the texts it is given; every text becomes [bos, one token per character class..., eos]."""

    def __init__(self):
        self.seen = []

    def __call__(self, texts, padding=True, truncation=True, max_length=16, return_tensors="pt"):
        self.seen += list(texts)
        rows = [[2] + [4 + (ord(c) % 20) for c in t][: max_length - 2] + [3] for t in texts]
        n = max(map(len, rows))
        ids = torch.tensor([r + [0] * (n - len(r)) for r in rows])
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def tiny_clip():
    """A tiny random CLIPModel whose get_image_features records the pixel values it is given."""
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=24, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=2, eos_token_id=3,
                         pad_token_id=0),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2), projection_dim=8)
    model = transformers.CLIPModel(cfg).eval()
    model.pixels = []
    inner = model.get_image_features

    def recording(pixel_values=None, **kw):
        model.pixels.append(pixel_values.clone())
        return inner(pixel_values=pixel_values, **kw)

    model.get_image_features = recording
    return model


def saturated_images(h=40, w=56):
    """Sharp 0/1 bands (a bicubic resize overshoots [0, 1]), and values between two 8-bit levels."""
    x = torch.zeros(2, 3, h, w)
    x[:, :, :, (torch.arange(w) // 7) % 2 == 0] = 1.0
    x[1] = 0.5 + 0.7 / 255 * torch.rand(3, h, w)
    return x


def hpsv2_preprocess_val(images, size):
    """HPSv2's transform, step by step: the 8-bit image, ToTensor, ResizeMaxSize on the float tensor (no clamp;
    torchvision's bicubic, antialiased), pad with 0 (left/top get the floor half), Normalize."""
    x = torch.floor(images * 255) / 255
    h, w = x.shape[-2:]
    nh, nw = round(h * size / max(h, w)), round(w * size / max(h, w))
    x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
    ph, pw = size - nh, size - nw
    x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=0.0)
    return (x - torch.tensor(OPENAI_MEAN).view(3, 1, 1)) / torch.tensor(OPENAI_STD).view(3, 1, 1)


@pytest.fixture
def hps(monkeypatch, tmp_path):
    """make_hps, the `hps` reward a user gets, with a tiny model and a recording tokenizer in place of the files."""
    import rewards.hps as hps_mod

    model, tok = tiny_clip(), RecordingTokenizer()
    ckpt = tmp_path / "HPS_v2.1_compressed.pt"
    ckpt.write_bytes(b"")
    monkeypatch.setattr(hps_mod, "load_open_clip_checkpoint", lambda path: {})
    monkeypatch.setattr(hps_mod, "hps_model", lambda sd, config=None: model)
    monkeypatch.setattr(hps_mod, "pretrained", lambda *a, **k: tok)
    return hps_mod.make_hps(checkpoint=str(ckpt)), model, tok


def test_hps_text_cleaning_is_open_clips(hps):
    reward, _, tok = hps
    prompts = [r["prompt"] for r in CLEAN]
    reward(torch.rand(len(prompts), 3, 32, 32), prompts)
    assert tok.seen == [r["cleaned"] for r in CLEAN]  # hpsv2's whitespace_clean(basic_clean(text)), per prompt


def test_hps_image_transform_is_hpsv2s(hps):
    reward, model, _ = hps
    images = saturated_images()
    reward(images, ["a", "b"])
    seen = model.pixels[-1]
    torch.testing.assert_close(seen, hpsv2_preprocess_val(images, 32), atol=1e-5, rtol=0)
    top = (1 - torch.tensor(OPENAI_MEAN)) / torch.tensor(OPENAI_STD)
    assert (seen.amax(dim=(0, 2, 3)) > top + 0.01).all()  # the resize's overshoot above 1 is kept, not clamped


def test_clip_score_truncates_to_8_bits():
    model = tiny_clip()
    images = saturated_images(32, 32)
    CLIPScore(CLIPEncoder(model, RecordingTokenizer()))(images, ["a", "b"])
    truncated = torch.floor(images * 255) / 255  # torchvision's to_pil_image: x * 255 cast to uint8
    torch.testing.assert_close(model.pixels[-1], clip_pixels(truncated, 32), atol=1e-6, rtol=0)
    assert (model.pixels[-1] - clip_pixels(images, 32)).abs().max() > 1e-3


class RecordingEngine:
    """Stands in for RapidOCR: records the arrays it is given and reads nothing."""

    def __init__(self):
        self.seen = []

    def __call__(self, image):
        self.seen.append(image.copy())
        return type("Out", (), {"txts": ("hello",), "scores": (0.9,)})()


def release_input(images):
    """What STAGE's reward_ocr.py hands PaddleOCR: np.array of the trainer's PIL image, built by casting
    clip(x * 255) to uint8 (a truncation), channels in RGB order."""
    from PIL import Image

    arr = np.clip(images.permute(0, 2, 3, 1).numpy() * 255, 0, 255).astype(np.uint8)
    return [np.array(Image.fromarray(a)) for a in arr]


def test_ocr_engine_gets_the_releases_rgb_arrays(monkeypatch):
    from rewards.ocr import OCRReward

    engine = RecordingEngine()
    monkeypatch.setattr(OCRReward, "_load_rapidocr", staticmethod(lambda threads: engine))
    images = torch.rand(2, 3, 8, 12)
    images[0, 0] = 1.0  # a red first image: RGB order puts it in channel 0
    images[0, 1:] = 0.0
    r = OCRReward()(images, ['a "hello" sign', 'say "hello"'])
    assert r.tolist() == [1.0, 1.0] and len(engine.seen) == 2
    for got, want in zip(engine.seen, release_input(images)):
        assert got.dtype == np.uint8 and got.shape == (8, 12, 3)
        np.testing.assert_array_equal(got, want)
    assert engine.seen[0][..., 0].min() == 255 and engine.seen[0][..., 2].max() == 0


def test_evaluate_ocr_benchmark_passes_rgb_and_takes_ocr_engine(monkeypatch):
    import evals
    import rewards.ocr
    from evals import cli
    from evals.ocr import Scorer
    from test_evaluate import _args

    made = []
    monkeypatch.setattr(rewards.ocr, "OCRReward", lambda engine, device=None: made.append(engine) or RecordingEngine())
    cli.build_scorer(evals.benchmark("ocr"), _args(benchmark="ocr", ocr_engine="paddleocr"), "cpu")
    assert made == ["paddleocr"]

    class Lines:
        seen = []

        def lines(self, image):
            self.seen.append(image)
            return [("hello", 0.9)]

    images = torch.rand(1, 3, 8, 8)
    Scorer(engine=Lines()).score(images, [{"prompt": 'a "hello" sign'}])
    np.testing.assert_array_equal(Lines.seen[0], release_input(images)[0])


def test_unknown_ocr_engine_is_one_line(tmp_path, monkeypatch):
    from evals import cli
    from test_evaluate import _args

    monkeypatch.setattr(cli.runner, "run", lambda *a, **k: pytest.fail("an image was generated"))
    prompts = tmp_path / "ocr.txt"
    prompts.write_text('a sign that says "hello"\n')
    with pytest.raises(SystemExit) as e:
        cli.main(_args(benchmark="ocr", prompts=str(prompts), ocr_engine="tesseract", out=str(tmp_path / "o")))
    msg = str(e.value.code)
    assert msg.startswith("error: ") and "\n" not in msg and "--ocr-engine 'tesseract'" in msg, msg
