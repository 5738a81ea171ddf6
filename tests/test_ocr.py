"""OCR reward: a worked example (STAGE App. B.1: 1 - edit distance / target length) via the pure functions, then a few checks with the real RapidOCR engine."""
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from rewards import REWARDS, check_reward
from rewards.ocr import levenshtein, ocr_score, ocr_target

PROMPT = 'New York Skyline with "Hello World" written with fireworks on the sky'


# ---- the worked example ----------------------------------------------------------------------------------------

def test_target():
    assert ocr_target(PROMPT) == "Hello World"
    assert ocr_target('a "first" and "second"') == "first"


def test_example_d_edit_distance():  # rec = hellow0rld!, dist 2
    assert ocr_score(ocr_target(PROMPT), [("HELLO W0RLD!", 0.9)]) == pytest.approx(0.8)


def test_example_d_substring_case_space_folding():
    assert ocr_score("Hello World", [("Big", 0.8), ("hello world", 0.95), ("2024", 0.7)]) == 1.0
    assert ocr_score("Hello World", [("HeLLo", 0.9), ("WORLD", 0.9)]) == 1.0  # lines joined, no separator


def test_example_d_unrelated_text_capped():  # dist = min(10, 10)
    assert ocr_score("Hello World", [("xx", 0.5)]) == 0.0
    assert ocr_score("ab", [("xyzxyzxyz", 0.9)]) == 0.0  # raw distance 9 > len 2, capped


def test_example_d_conf0_line_dropped():  # rec = hel, dist 7
    assert ocr_score("Hello World", [("Hel", 0.9), ("lo", 0.0)]) == pytest.approx(0.3)


def test_example_d_no_detection():
    assert ocr_score("Hello World", []) == 0.0


def test_only_ascii_space_removed():
    assert ocr_score("a b", [("a\tb", 0.9)]) == pytest.approx(0.5)  # "a\tb" vs "ab": one deletion


def test_levenshtein():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == levenshtein("abc", "") == 3
    assert levenshtein("flaw", "lawn") == 2


@pytest.mark.parametrize("prompt", ["a cat with no quotes", 'one "unmatched quote', 'empty "" target', 'blank "  " one'])
def test_bad_prompts(prompt):
    with pytest.raises(ValueError, match="ocr"):
        ocr_target(prompt)


def test_missing_engine_message(monkeypatch):
    import sys
    from rewards.ocr import OCRReward
    monkeypatch.setitem(sys.modules, "rapidocr", None)  # import fails as if not installed
    with pytest.raises(ImportError, match="requirements-rewards.txt"):
        OCRReward()


def test_registry_and_validate():
    assert REWARDS["ocr"] == "rewards.ocr:make_ocr"
    check_reward("ocr", [{"prompt": PROMPT}])
    with pytest.raises(ValueError, match="a dog"):
        check_reward("ocr", [{"prompt": PROMPT}, {"prompt": "a dog"}])


# ---- real engine (skipped without requirements-rewards.txt) ----------------------------------------------------

def font(size=32):
    try:  # Pillow finds system fonts by file name
        return ImageFont.truetype("DejaVuSans-Bold.ttf", size)
    except OSError:
        return ImageFont.load_default(size=size)


def render(text: str, size=256) -> torch.Tensor:
    """Black text on white, (3, size, size) float in [0, 1]."""
    img = Image.new("RGB", (size, size), "white")
    if text:
        ImageDraw.Draw(img).text((16, size // 2 - 20), text, fill="black", font=font())
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255


@pytest.fixture(scope="module")
def ocr():
    pytest.importorskip("rapidocr")
    pytest.importorskip("onnxruntime")
    from rewards import get_reward
    return get_reward("ocr")


def test_engine_batch(ocr):
    prompts = ['a sign that says "Hello World"', 'a sign that says "Hello World"', 'a poster reading "GRPO"']
    images = torch.stack([render("Hello World"), render("Hallo Wor"), render("GRPO 2025")])
    r = ocr(images, prompts)
    assert r.shape == (3,) and r.dtype == torch.float32
    assert r[0] == pytest.approx(1.0)  # exact
    assert 0.3 < r[1] < 1.0  # wrong word: partial credit
    assert r[2] == pytest.approx(1.0)  # target is a substring of the recognised text


def test_engine_blank(ocr):
    assert ocr(render("")[None], ['a "Hello" sign']).tolist() == [0.0]


def test_engine_failure_names_prompt(ocr, monkeypatch):
    def boom(image):
        raise RuntimeError("engine broke")
    monkeypatch.setattr(ocr, "lines", boom)
    with pytest.raises(RuntimeError, match="quoted"):
        ocr(render("x")[None], ['a "quoted" prompt'])
