"""GenEval (Ghosh et al., 2023): GenEval's own evaluation_metadata.jsonl (553 prompts; the toy's 55 by default),
N images per prompt, scored by GenEval's strict rules (common/geneval.py) over a detector's output:
"coco" = Mask2Former Swin-S + CLIP ViT-L/14 colours (rewards/geneval.py; GenEval's own detector once converted by
rewards/convert_mask2former.py, found through $GENEVAL_MASK2FORMER or weights/geneval_mask2former), a converted
folder = "coco" with that detector, "shapeworld" = the toy's detector. Per image: tag, verdict, GenEval's failure
reasons and the filtered detections; the table is GenEval's per-tag accuracy and overall (the mean of the tags)."""
from __future__ import annotations

import numpy as np

DEFAULT_PROMPTS = "data/shapeworld/eval.jsonl"
DETECTORS = ("shapeworld", "coco")  # or a folder made by python -m rewards.convert_mask2former


def check(rows: list[dict], opts) -> None:
    """ValueError in one line (file:line) if the detector cannot judge these rows. No model is built."""
    from rewards.geneval import GenEvalJudge

    GenEvalJudge(opts.detector).validate(rows)


def _plain(v):
    if isinstance(v, (list, tuple)) or hasattr(v, "tolist"):
        v = v.tolist() if hasattr(v, "tolist") else v
        return [round(float(x), 2) for x in v]
    return v


class Scorer:
    """score(images, rows) -> per-image records {tag, correct, reason, detections}. `reward`: a strict
    rewards.geneval.GenEvalReward (tests pass one with tiny models); by default built for `detector`."""

    def __init__(self, detector: str = "shapeworld", device="cpu", reward=None):
        if reward is None:
            from rewards.geneval import GenEvalReward

            reward = GenEvalReward(strict=True, detector=detector, device=device)
        self.reward = reward

    def score(self, images, rows):
        from common.geneval import strict_correct

        records = []
        for det, meta in zip(self.reward._detected(images, rows), rows):
            ok, reason = strict_correct(det, meta)
            dets = {cls: [{"box": _plain(d["box"]), "score": round(float(d["score"]), 4), "color": d.get("color")}
                          for d in ds] for cls, ds in det.items()}
            records.append({"tag": meta.get("tag", ""), "correct": bool(ok), "reason": reason, "detections": dets})
        return records, None

    @staticmethod
    def caption(rec) -> str:
        return f"{'OK' if rec['correct'] else 'x'} {rec['prompt']}"

    @staticmethod
    def summarize(records, arrays) -> dict[str, float]:
        from common.geneval import summarize

        return summarize((r["tag"], r["correct"]) for r in records)

    @staticmethod
    def table(summaries: dict[str, dict[str, float]], records) -> str:
        """Rows = models (the base model first), columns = GenEval's tags and overall."""
        from common.geneval import tag_counts

        counts = tag_counts((r["tag"], True) for r in records)
        cols = [t for t in next(iter(summaries.values())) if t != "overall"] + ["overall"]
        width = max(12, *(len(m) for m in summaries))
        head = f"{'model':<{width}} " + " ".join(f"{c:>13}" for c in cols)
        ns = f"{'n images':<{width}} " + " ".join(f"{counts.get(c, sum(counts.values())):>13}" for c in cols)
        lines = [head, ns]
        for name, s in summaries.items():
            lines.append(f"{name:<{width}} " + " ".join(f"{s.get(c, np.nan):>13.4f}" for c in cols))
        return "\n".join(lines)
