"""GenEval in pure Python, shared by the prompt generators (toy/world.py, common/coco_prompts.py), the rewards
(rewards/geneval.py) and the held-out evaluation (common/evaluation.py); no detector lives here.

A detection is a dict {"class": str, "box": (x0, y0, x1, y1) pixels, "score": float,
"color": str | None}. Metadata is one row of GenEval's evaluation_metadata.jsonl:
{"tag", "include": [{"class", "count", "color"?, "position"?: [relation, target_index]}],
"exclude"?: [{"class", "count"}], "prompt"}.

- TAGS, RELATIONS, with_article, geneval_row: GenEval's six tags, four relations and prompt templates;
- validate: the metadata check (names the first bad row);
- filter_detections: GenEval's post-processing (score thresholds, max objects per class);
- strict_correct: GenEval's binary evaluate();
- partial_score: the Flow-GRPO/STAGE partial-credit training reward (STAGE App. B.1; docs/rewards.md),
  with the intended semantics: a null "color"/"position" key counts as absent;
- tag_counts, summarize, format_table: the per-tag report.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

Det = dict[str, Any]
Detected = dict[str, list[Det]]

TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")  # GenEval's tag order
RELATIONS = ("left of", "right of", "above", "below")  # GenEval's four relations


# ----------------------------------------------------------------------------- prompts


def with_article(word: str) -> str:
    """'a circle', 'an orange circle' (GenEval's templates use the correct article)."""
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def geneval_row(tag: str, include: list[dict], prompt: str, exclude: list[dict] | None = None) -> dict:
    """A metadata row with GenEval's key order: tag, include, exclude (if any), prompt."""
    row: dict[str, Any] = {"tag": tag, "include": include}
    if exclude is not None:
        row["exclude"] = exclude
    row["prompt"] = prompt
    return row


def validate(metadata: list[dict], classes=None, colors=None) -> None:
    """Raise ValueError naming the first row that is not GenEval metadata: a non-empty "include" list of
    {class, count (int >= 1), optional color, optional position [relation, index of an earlier include]}.
    classes / colors: the names the detector can see (None: not checked)."""
    for meta in metadata:
        prompt = meta.get("prompt") if isinstance(meta, dict) else meta
        where = f"prompt {prompt!r}"
        inc = meta.get("include") if isinstance(meta, dict) else None
        if not (isinstance(inc, list) and inc and all(isinstance(r, dict) and "class" in r and "count" in r
                                                      for r in inc)):
            raise ValueError(f"GenEval reward needs metadata with an 'include' list of {{class, count}} for every "
                             f"prompt; {where} has none (use a GenEval-format .jsonl prompt file)")
        for j, r in enumerate(inc + list(meta.get("exclude") or [])):
            if not isinstance(r.get("count"), int) or isinstance(r["count"], bool) or r["count"] < 1:
                raise ValueError(f"GenEval metadata {where}: count {r.get('count')!r} of {r.get('class')!r} "
                                 f"is not a positive integer")
            if classes is not None and r["class"] not in classes:
                raise ValueError(f"GenEval metadata {where}: class {r['class']!r} is not one this detector knows "
                                 f"({len(classes)} classes, e.g. {', '.join(list(classes)[:4])}); is the prompt "
                                 f"file meant for another detector?")
            if colors is not None and r.get("color") is not None and r["color"] not in colors:
                raise ValueError(f"GenEval metadata {where}: unknown colour {r['color']!r}; known: {', '.join(colors)}")
            pos = r.get("position")
            if pos is not None and not (isinstance(pos, (list, tuple)) and len(pos) == 2 and pos[0] in RELATIONS
                                        and isinstance(pos[1], int) and 0 <= pos[1] < len(inc) and pos[1] != j):
                raise ValueError(f"GenEval metadata {where}: position {pos!r} must be [relation, index of another "
                                 f"include] with relation one of {', '.join(RELATIONS)}")


# ----------------------------------------------------------------------------- rules


def filter_detections(
    dets: Iterable[Det],
    tag: str,
    threshold: float = 0.3,
    counting_threshold: float = 0.9,
    max_objects: int = 16,
) -> Detected:
    """Per class: keep score > threshold, sort by descending score, keep <= max_objects.

    No NMS (GenEval's default max_overlap=1.0 disables it). Empty classes are omitted.
    """
    thr = counting_threshold if tag == "counting" else threshold
    by_class: Detected = {}
    for det in dets:
        if det["score"] > thr:
            by_class.setdefault(det["class"], []).append(det)
    return {
        cls: sorted(ds, key=lambda d: -d["score"])[:max_objects] for cls, ds in by_class.items()
    }


def relative_position(box_a: Any, box_b: Any, threshold: float = 0.1) -> set[str]:
    """Relations of box A relative to box B (GenEval's rule; image y points down)."""
    a = np.asarray(box_a, dtype=np.float64)[:4].reshape(2, 2)
    b = np.asarray(box_b, dtype=np.float64)[:4].reshape(2, 2)
    offset = a.mean(axis=0) - b.mean(axis=0)
    size_a, size_b = np.abs(a[1] - a[0]), np.abs(b[1] - b[0])
    revised = np.maximum(np.abs(offset) - threshold * (size_a + size_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    rels = set()
    if dx < -0.5:
        rels.add("left of")
    if dx > 0.5:
        rels.add("right of")
    if dy < -0.5:
        rels.add("above")
    if dy > 0.5:
        rels.add("below")
    return rels


def _parse_req(req: dict) -> tuple[str, int, str | None, tuple[str, int] | None]:
    """(class, count, color or None, (relation, target) or None); null keys are absent."""
    color = req.get("color")
    pos = req.get("position")
    if pos is not None:
        pos = (str(pos[0]), int(pos[1]))
    return req["class"], int(req["count"]), color, pos


def strict_correct(detected: Detected, metadata: dict) -> tuple[bool, str]:
    """GenEval's evaluate(): (all include/exclude clauses hold, reasons for failure)."""
    correct = True
    reasons: list[str] = []
    matched_groups: list[list[Det] | None] = []
    for req in metadata.get("include") or []:
        cls, count, color, pos = _parse_req(req)
        matched = True
        found = detected.get(cls, [])[:count]
        if len(found) < count:
            correct = matched = False
            reasons.append(f"expected {cls}>={count}, found {len(found)}")
        else:
            if color is not None:
                n_color = sum(d.get("color") == color for d in found)
                if n_color < count:
                    correct = matched = False
                    got = ", ".join(str(d.get("color")) for d in found)
                    reasons.append(f"expected {color} {cls}>={count}, found {n_color} {color} ({got})")
            if pos is not None and matched:
                rel, target = pos
                if matched_groups[target] is None:
                    correct = matched = False
                    reasons.append(f"no target for {cls} to be {rel}")
                else:
                    for obj in found:
                        for tgt in matched_groups[target]:
                            rels = relative_position(obj["box"], tgt["box"])
                            if rel not in rels:
                                correct = matched = False
                                reasons.append(
                                    f"expected {cls} {rel} target, found "
                                    f"{' and '.join(sorted(rels)) or 'no relation to'} target"
                                )
                                break
                        if not matched:
                            break
        matched_groups.append(found if matched else None)
    for req in metadata.get("exclude") or []:
        cls, count = req["class"], int(req["count"])
        n = len(detected.get(cls, []))
        if n >= count:
            correct = False
            reasons.append(f"expected {cls}<{count}, found {n}")
    return correct, "; ".join(reasons)


def partial_clauses(detected: Detected, metadata: dict) -> list[float]:
    """The list of clause scores whose mean is the partial-credit reward (STAGE App. B.1)."""
    clauses: list[float] = []
    matched_groups: list[list[Det] | None] = []
    for req in metadata.get("include") or []:
        cls, count, color, pos = _parse_req(req)
        matched = True
        found = detected.get(cls, [])  # all kept detections, not just the first `count`
        clauses.append(1 - abs(count - len(found)) / count)  # not clipped: can be negative
        if len(found) != count:
            matched = False
            if color is not None or pos is not None:
                clauses.append(0.0)  # only one, even with both colour and position
        else:
            if color is not None:
                n_color = sum(d.get("color") == color for d in found)
                clauses.append(1 - abs(count - n_color) / count)
                if n_color != count:
                    matched = False
            if pos is not None and matched:
                rel, target = pos
                if matched_groups[target] is None:
                    matched = False
                    clauses.append(0.0)
                else:
                    for obj in found:
                        for tgt in matched_groups[target]:
                            if rel not in relative_position(obj["box"], tgt["box"]):
                                matched = False
                                clauses.append(0.0)
                                break
                        if not matched:
                            break
                    clauses.append(1.0)  # appended unconditionally: Flow-GRPO's {0, 1} quirk
        matched_groups.append(found if matched else None)
    return clauses  # exclude clauses never affect the reward


def partial_score(detected: Detected, metadata: dict) -> float:
    """Mean of the clause scores, 0 if there are none."""
    clauses = partial_clauses(detected, metadata)
    return sum(clauses) / len(clauses) if clauses else 0.0


# ----------------------------------------------------------------------------- report


def _tag_key(tag: str) -> tuple[int, str]:
    return (TAGS.index(tag) if tag in TAGS else len(TAGS), tag)


def tag_counts(results: Iterable[tuple[str, bool]]) -> dict[str, int]:
    """Number of results per tag (GenEval tag order first)."""
    counts: dict[str, int] = {}
    for tag, _ in results:
        counts[tag] = counts.get(tag, 0) + 1
    return {t: counts[t] for t in sorted(counts, key=_tag_key)}


def summarize(results: Iterable[tuple[str, bool]]) -> dict[str, float]:
    """{tag: accuracy, ..., "overall": mean of the per-tag accuracies} (GenEval's overall)."""
    per: dict[str, list[bool]] = {}
    for tag, ok in results:
        per.setdefault(tag, []).append(bool(ok))
    summary = {t: sum(per[t]) / len(per[t]) for t in sorted(per, key=_tag_key)}
    summary["overall"] = float(np.mean(list(summary.values()))) if summary else 0.0
    return summary


def format_table(summary: dict[str, float], counts: dict[str, int] | None = None) -> str:
    """A small text table: tag, n (if counts are given), accuracy; overall last."""
    counts = counts or {}
    lines = [f"{'tag':<14} {'n':>6} {'accuracy':>9}"]
    for tag, acc in summary.items():
        if tag != "overall":
            lines.append(f"{tag:<14} {counts.get(tag, '-'):>6} {acc:>9.4f}")
    total = sum(counts.values()) if counts else "-"
    lines.append(f"{'overall':<14} {total:>6} {summary.get('overall', 0.0):>9.4f}")
    return "\n".join(lines)
