"""OCR (Flow-GRPO's text-rendering test set, `test_ocr.txt`, 1018 prompts; the OCR reward of docs/rewards.md):
every prompt quotes the text to render. Per image: the recognised text, the reward r = 1 − min(edit distance, len) / len after
removing spaces and lower-casing (rewards/ocr.py, the STAGE release's scorer; r = 1 when the target is contained in
the recognised text), and exact match (the recognised text, normalised the same way, equals the target).
Table: mean reward ± standard error and the exact-match rate."""
from __future__ import annotations

DEFAULT_PROMPTS = "data/ocr/test_ocr.txt"


def check(rows: list[dict], opts) -> None:
    from rewards import check_reward
    from rewards.ocr import ENGINES

    engine = getattr(opts, "ocr_engine", ENGINES[0])
    if engine not in ENGINES:
        raise ValueError(f"--ocr-engine {engine!r}: choose {' or '.join(ENGINES)}")
    check_reward("ocr", rows)  # every prompt quotes its target (file:line of the first that does not)


class Scorer:
    """`engine`: a name in rewards.ocr.ENGINES ("rapidocr": offline; "paddleocr": the STAGE release's engine) or
    anything with lines(RGB uint8 (H, W, 3)) -> [(text, confidence)]."""

    def __init__(self, device="cpu", engine="rapidocr"):
        if isinstance(engine, str):
            from rewards.ocr import OCRReward

            engine = OCRReward(engine, device=device)
        self.engine = engine

    def score(self, images, rows):
        from rewards.ocr import _normalise, ocr_score, ocr_target, to_rgb_uint8

        records = []
        for im, meta in zip(to_rgb_uint8(images), rows):
            target = ocr_target(meta["prompt"])
            lines = self.engine.lines(im)
            text = "".join(t for t, conf in lines if conf > 0)
            records.append({"target": target, "recognised": text, "reward": ocr_score(target, lines),
                            "exact": _normalise(text) == _normalise(target)})
        return records, None

    @staticmethod
    def caption(rec) -> str:
        return f"{rec['reward']:.2f} {rec['recognised'][:20]!r}"

    @staticmethod
    def summarize(records, arrays) -> dict[str, float]:
        from evals.runner import mean_stderr

        mean, se = mean_stderr(r["reward"] for r in records)
        return {"reward": mean, "reward_se": se, "exact_match": sum(r["exact"] for r in records) / len(records)}

    @staticmethod
    def table(summaries, records) -> str:
        width = max(12, *(len(m) for m in summaries))
        lines = [f"{'model':<{width}} {'reward':>18} {'exact match':>12}   ({len(records)} images)"]
        for name, s in summaries.items():
            lines.append(f"{name:<{width}} {s['reward']:>9.4f} ± {s['reward_se']:.4f} {s['exact_match']:>12.4f}")
        return "\n".join(lines)
