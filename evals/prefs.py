"""Preference and quality metrics on a prompt file (DrawBench-style: .txt, .json or .jsonl prompts): any of
HPSv2.1 ("hps", raw cosine), CLIP score ("clip", raw cosine), MANIQA ("maniqa") and the Qwen judge ("qwen_label",
"qwen_fake", "qwen_weird"), each the project's reward of that name (rewards/). Per image: every metric; table:
mean ± standard error per metric."""
from __future__ import annotations

DEFAULT_PROMPTS = "data/drawbench/prompts.txt"
METRICS = ("hps", "clip", "maniqa", "qwen_label", "qwen_fake", "qwen_weird")


def check(rows: list[dict], opts) -> None:
    from rewards import check_reward

    metrics = [m for m in opts.metrics.split(",") if m]
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise ValueError(f"--metrics {opts.metrics!r}: choose from {', '.join(METRICS)} (comma-separated)")
    for m in metrics:
        check_reward(m, rows)


class Scorer:
    """`metrics`: {name: reward callable (images, prompts, metadata) -> (B,)}; by default built by name.
    `texts`: prompts -> the text the metrics compare with (the backend's reward_prompts)."""

    def __init__(self, names: str = "hps,clip", device="cpu", metrics=None, texts=None):
        if metrics is None:
            from rewards import get_reward

            metrics = {m: get_reward(m, device) for m in names.split(",") if m}
        self.metrics, self.texts = metrics, texts or (lambda ps: list(ps))

    def score(self, images, rows):
        from rewards import compute_rewards

        texts = self.texts([r["prompt"] for r in rows])
        cols = {m: compute_rewards(fn, m, images, texts, rows).tolist() for m, fn in self.metrics.items()}
        return [{m: cols[m][i] for m in cols} for i in range(len(rows))], None

    def caption(self, rec) -> str:
        return " ".join(f"{m} {rec[m]:.3f}" for m in self.metrics)

    def summarize(self, records, arrays) -> dict[str, float]:
        from evals.runner import mean_stderr

        out = {}
        for m in self.metrics:
            out[m], out[m + "_se"] = mean_stderr(r[m] for r in records)
        return out

    def table(self, summaries, records) -> str:
        width = max(12, *(len(m) for m in summaries))
        lines = [f"{'model':<{width}} " + " ".join(f"{m:>19}" for m in self.metrics) + f"   ({len(records)} images)"]
        for name, s in summaries.items():
            lines.append(f"{name:<{width}} " + " ".join(f"{s[m]:>10.4f} ± {s[m + '_se']:.4f}" for m in self.metrics))
        return "\n".join(lines)
