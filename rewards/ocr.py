"""OCR reward (STAGE release `reward_ocr.py`; STAGE App. B.1; docs/rewards.md): how well the text quoted in the prompt
is rendered in the image.

For a prompt like `New York skyline with "Hello World" written on it`:
- target = the text between the first pair of ASCII double quotes (`Hello World`);
- recognised = the OCR lines with confidence > 0, concatenated with no separator;
- both are normalised by removing ASCII spaces (only ' ', not tabs/newlines) and lowercasing;
- d = 0 if the target is a substring of the recognised text (extra text is never penalised), otherwise the
  Levenshtein distance between the two, capped at len(target);
- r = 1 - d / len(target), in [0, 1] (len counts the normalised target, i.e. without spaces).

Engines (CPU only, so `device` is ignored). Images go to the engine as the release passes them: (H, W, 3) uint8
RGB arrays, `np.array` of the trainer's PIL image, whose 8 bits come from truncating x * 255 (Janus's
float-to-uint8 cast). OpenCV-based engines read an array as BGR, so the release's engine saw red and blue
swapped; the reward reproduces that input, not the engine's documented one.
- "rapidocr" (default): RapidOCR 3.x with the PP-OCRv6 small ONNX models that ship inside its wheel, so it
  works offline (`pip install -r requirements-rewards.txt`). The release used PaddleOCR (PP-OCRv3 det,
  PP-OCRv4 en rec), so absolute scores differ somewhat. As in the release, no angle classifier is used and
  the engine's own default line-score threshold (0.5) applies before the confidence > 0 rule.
- "paddleocr" (optional): PaddleOCR(lang="en", use_angle_cls=False), the release's engine; it downloads its
  models on first use, so it needs network access (or models already in its cache).

Differences from the release, on purpose:
- An exception inside the OCR call raises RuntimeError naming the prompt. The release catches every
  exception and gives r = 0, which would silently turn a broken engine into a zero reward.
- A prompt without a pair of double quotes, or whose quoted target is empty after removing spaces, raises
  ValueError naming the prompt (the release crashes with IndexError or ZeroDivisionError; a single
  unmatched quote, which the release would read to the end of the prompt, is also an error here).
"""
from __future__ import annotations

import os

import numpy as np
import torch

ENGINES = ("rapidocr", "paddleocr")
INSTALL_HINT = "pip install -r requirements-rewards.txt"


def _normalise(text: str) -> str:
    return text.replace(" ", "").lower()


def ocr_target(prompt: str) -> str:
    """The text between the first pair of ASCII double quotes (not normalised)."""
    parts = prompt.split('"')
    if len(parts) < 3:
        raise ValueError(f'reward \'ocr\' needs the text to render in double quotes ("...") in every prompt; '
                         f"got {prompt!r}")
    target = parts[1]
    if not _normalise(target):
        raise ValueError(f"reward 'ocr' got an empty quoted target in prompt {prompt!r}")
    return target


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions all cost 1); two-row DP."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def ocr_score(target: str, lines: list[tuple[str, float]]) -> float:
    """Reward for one image: `target` as returned by `ocr_target`, `lines` = [(text, confidence), ...]."""
    t = _normalise(target)
    if not t:
        raise ValueError("reward 'ocr': empty target")
    rec = _normalise("".join(text for text, conf in lines if conf > 0))
    d = 0 if t in rec else min(levenshtein(rec, t), len(t))
    return 1.0 - d / len(t)


def to_rgb_uint8(images: torch.Tensor) -> list[np.ndarray]:
    """(B,3,H,W) float in [0,1] -> list of (H,W,3) uint8 RGB arrays, x * 255 truncated (the release's input)."""
    x = (images.detach().float().clamp(0, 1) * 255).to(torch.uint8).cpu()  # the cast truncates
    return [np.ascontiguousarray(im.permute(1, 2, 0).numpy()) for im in x]


class OCRReward:
    def __init__(self, engine: str = "rapidocr", device=None, num_threads: int | None = None):
        if engine not in ENGINES:
            raise ValueError(f"unknown OCR engine {engine!r}; known: {', '.join(ENGINES)}")
        self.engine_name = engine
        if num_threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
            num_threads = int(os.environ["OMP_NUM_THREADS"])  # be a good neighbour on a shared CPU
        self.engine = self._load_rapidocr(num_threads) if engine == "rapidocr" else self._load_paddleocr()

    @staticmethod
    def _load_rapidocr(num_threads):
        try:
            from rapidocr import RapidOCR
        except ImportError as e:
            raise ImportError(f"reward 'ocr' needs rapidocr and onnxruntime: {INSTALL_HINT}") from e
        params = {"Global.use_cls": False, "Global.log_level": "error"}
        if num_threads:
            params["EngineConfig.onnxruntime.intra_op_num_threads"] = num_threads
            params["EngineConfig.onnxruntime.inter_op_num_threads"] = 1
        return RapidOCR(params=params)

    @staticmethod
    def _load_paddleocr():
        try:
            from paddleocr import PaddleOCR
            return PaddleOCR(lang="en", use_angle_cls=False)
        except Exception as e:
            raise RuntimeError(f"OCR engine 'paddleocr' could not start ({type(e).__name__}: {e}); it needs "
                               "paddleocr installed and its models downloaded (network access on first use); "
                               "the default engine 'rapidocr' works offline") from e

    def lines(self, image: np.ndarray) -> list[tuple[str, float]]:
        """[(text, confidence), ...] for one (H,W,3) uint8 image (`to_rgb_uint8`); [] when nothing is detected."""
        if self.engine_name == "rapidocr":
            out = self.engine(image)
            return list(zip(out.txts or (), out.scores or ()))
        if hasattr(self.engine, "predict"):  # PaddleOCR 3.x
            res = self.engine.predict(image)
            return [(t, float(s)) for r in res for t, s in zip(r["rec_texts"], r["rec_scores"])]
        res = self.engine.ocr(image, cls=False)  # PaddleOCR 2.x: [[ [box, (text, score)], ... ] or None]
        return [(t, float(s)) for page in res if page for _, (t, s) in page]

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: list[str], metadata: list[dict] | None = None):
        if len(prompts) != images.shape[0]:
            raise ValueError(f"reward 'ocr': {images.shape[0]} images but {len(prompts)} prompts")
        targets = [ocr_target(p) for p in prompts]  # check every prompt before running the engine
        rewards = []
        for im, prompt, target in zip(to_rgb_uint8(images), prompts, targets):
            try:
                lines = self.lines(im)
            except Exception as e:
                raise RuntimeError(f"OCR engine {self.engine_name!r} failed on an image for prompt {prompt!r}: "
                                   f"{type(e).__name__}: {e}") from e
            rewards.append(ocr_score(target, lines))
        return torch.tensor(rewards, dtype=torch.float32)


def make_ocr(device=None, engine: str = "rapidocr"):
    return OCRReward(engine, device=device)


def validate(metadata: list[dict]):
    for m in metadata:
        ocr_target(m["prompt"])
