"""Writes tests/data/ocr_release.json: OCR rewards computed by the STAGE release's own scorer (krennic999/STAGE,
`src/grpo/src/utils/reward_ocr.py`, class `OcrScorer`) on scripted OCR results.

The release's `OcrScorer.__call__` runs unchanged with the real `Levenshtein` package; PaddleOCR is replaced by a
stand-in that returns a scripted PaddleOCR 2.x result (`[[[box, (text, confidence)], ...]]`, or `[None]` for no
text) and records the array it is given; `paddle` (imported, unused by the scoring) is a placeholder module. Each
case: the prompt, the OCR lines, and the release's reward. Re-run:

    pip install --target SITE Levenshtein
    python tests/data/make_ocr_release_fixture.py STAGE/src/grpo/src/utils/reward_ocr.py SITE

tests/test_reward_originals.py checks rewards.ocr (ocr_target + ocr_score) against this file.
"""
import importlib.util
import json
import os
import sys
import types

import numpy as np

CASES = [
    ('New York skyline with "Hello World" written with fireworks', [("HELLO W0RLD!", 0.9)]),
    ('a sign that says "Hello World"', [("Big", 0.8), ("hello world", 0.95), ("2024", 0.7)]),
    ('a sign that says "Hello World"', [("HeLLo", 0.9), ("WORLD", 0.9)]),
    ('a sign that says "Hello World"', [("xx", 0.5)]),
    ('a mug with "ab" on it', [("xyzxyzxyz", 0.9)]),
    ('a sign that says "Hello World"', [("Hel", 0.9), ("lo", 0.0)]),
    ('a sign that says "Hello World"', []),
    ('a sign "a b" here', [("a\tb", 0.9)]),
    ('a poster reading "OPEN 24 HOURS" and "closed"', [("OPEN 24", 0.8), ("HOURS", 0.6)]),
    ('the word "Caf\u00e9" in neon', [("CAFE", 0.9)]),
    ('the word "Caf\u00e9" in neon', [("caf\u00e9", 0.9)]),
    ('a label "Lorem ipsum dolor"', [("Lorem ipsun dolor sit amet", 0.7)]),
    ('text "AAAA"', [("AAA", 0.9), ("A", 0.2)]),
    ('text "abc"', [("cba", 0.9)]),
    ('text "Deep   Learning"', [("deeplearning", 0.99)]),
    ('book cover "THE END"', [("THE", 0.9), ("", 0.5), ("END", 0.9)]),
    ('sign "x"', [("y", 0.1)]),
    ('sign "12345"', [("1234", -0.1), ("12345", 0.0)]),
]


class FakePaddleOCR:
    def __init__(self, **kw):
        self.results, self.seen = [], []

    def ocr(self, img, cls=False):
        self.seen.append(np.asarray(img).shape)
        lines = self.results.pop(0)
        box = [[0, 0], [1, 0], [1, 1], [0, 1]]
        return [[[box, (t, c)] for t, c in lines]] if lines else [None]


def main(release_py: str, site: str) -> None:
    sys.path.insert(0, site)
    sys.modules["paddle"] = types.ModuleType("paddle")
    sys.modules["paddleocr"] = types.SimpleNamespace(PaddleOCR=FakePaddleOCR)
    spec = importlib.util.spec_from_file_location("reward_ocr", release_py)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    scorer = mod.OcrScorer(types.SimpleNamespace(ocr_base_root="models"))
    scorer.load_to_device()
    scorer.ocr.results = [lines for _, lines in CASES]
    images = [np.zeros((8, 8, 3), np.uint8) for _ in CASES]
    rewards = scorer(images, [p for p, _ in CASES], metadatas=None)
    rows = [{"prompt": p, "lines": lines, "reward": float(r)} for (p, lines), r in zip(CASES, rewards)]
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ocr_release.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"source": "krennic999/STAGE src/grpo/src/utils/reward_ocr.py OcrScorer, Levenshtein 0.27.5",
                   "cases": rows}, f, indent=1)
    print(f"wrote {out}: {len(rows)} cases")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
