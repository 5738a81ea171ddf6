"""GroundingDINO reward of the T2I-R1 mix (STAGE §4.1, App. B.1), with transformers' GroundingDinoForObjectDetection
and IDEA-Research/grounding-dino-tiny (Swin-T, the release's `groundingdino_swint_ogc`).

Per image, the phrases are the row's `nouns` (plus the spatial / numeracy objects if missing) and the caption
is `" . ".join(phrases) + "."`, lowercased. Each phrase's token span is its first word, plus its last word for
multi-word phrases (T2I-R1's `make_detection_prompt`). A query's score for a phrase is the mean sigmoid logit
over the span's tokens (GroundingDINO's normalised positive map); boxes whose score > 0.3 (box threshold) are
the phrase's detections, in pixels of the input image. Image preprocessing: shortest side to 800 (longest at
most 1333), bilinear, ImageNet mean/std.

Scores by `task_type`:
- "spatial" ({obj1, obj2, locality}): 0.2 per object detected; with both, + position/2 from each object's
  most confident box: left/right/top/bottom hold when the centre offset points that way and dominates the
  other axis, giving 1 if the boxes' IoU < 0.1 else 0.1/IoU (0 if the relation does not hold); "near"-type
  relations (near, next to, on side of, ...) give min(1, 150 / max(|dx|, |dy|)) (pixels). At most 0.9.
- "numeracy" ([{obj_name, num}]): the mean over objects of 1 if the number of boxes after NMS (IoU 0.5)
  equals num, 0.2 if it differs, 0 if none is detected;
- any other task: the fraction of nouns detected (1 if there are none).
Assumptions where the paper is silent: numeracy terms are weighted 1/len(numeracy_info) (so the maximum is 1,
like the other tasks), the near-type score is capped at 1 (the maximum of 0.9 above implies it) and uses the
larger axis offset.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from rewards.clip import normalize
from rewards.hub import pretrained, require, source

MODEL_ID = "IDEA-Research/grounding-dino-tiny"
ENV = "GDINO_MODEL"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def detection_prompt(phrases: list[str]) -> tuple[str, list[list[tuple[int, int]]]]:
    """Caption and, per phrase, its character spans (first word; and last word if several), T2I-R1 style."""
    spans, pointer = [], 0
    for p in phrases:
        words = p.split(" ")
        if len(words) == 1:
            spans.append([(pointer, pointer + len(p))])
        else:
            spans.append([(pointer, pointer + len(words[0])), (pointer + len(p) - len(words[-1]), pointer + len(p))])
        pointer += len(p) + 3  # " . "
    return " . ".join(phrases) + ".", spans


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,4) x (M,4) xyxy -> (N,M) IoU."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt, rb = torch.max(a[:, None, :2], b[None, :, :2]), torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def nms_count(boxes: torch.Tensor, scores: torch.Tensor, iou: float = 0.5) -> int:
    """Number of boxes kept by greedy NMS (a box is dropped if its IoU with a kept one is > iou)."""
    order = scores.argsort(descending=True)
    ious = box_iou(boxes, boxes)
    kept: list[int] = []
    for i in order.tolist():
        if all(ious[i, k] <= iou for k in kept):
            kept.append(i)
    return len(kept)


def _relation(locality: str) -> str:
    loc = locality.lower()
    for key, words in (("left", ("left",)), ("right", ("right",)), ("top", ("top", "above", "over")),
                       ("bottom", ("bottom", "below", "under", "beneath"))):
        if any(w in loc for w in words):
            return key
    return "near"


def position_score(locality: str, box1, box2, iou_threshold: float = 0.1, distance: float = 150.0) -> float:
    """Score of "obj1 {locality} obj2" from one box each (pixels, xyxy, y down)."""
    b1, b2 = torch.as_tensor(box1, dtype=torch.float64), torch.as_tensor(box2, dtype=torch.float64)
    dx = float((b2[0] + b2[2]) / 2 - (b1[0] + b1[2]) / 2)
    dy = float((b2[1] + b2[3]) / 2 - (b1[1] + b1[3]) / 2)
    rel = _relation(locality)
    if rel == "near":
        far = max(abs(dx), abs(dy))
        return 1.0 if far <= distance else distance / far
    holds = {"left": dx > 0 and abs(dx) > abs(dy), "right": dx < 0 and abs(dx) > abs(dy),
             "top": dy > 0 and abs(dy) > abs(dx), "bottom": dy < 0 and abs(dy) > abs(dx)}[rel]
    if not holds:
        return 0.0
    iou = float(box_iou(b1[None], b2[None])[0, 0])
    return 1.0 if iou < iou_threshold else iou_threshold / iou


def phrases(meta: dict) -> list[str]:
    out = [n.strip() for n in meta.get("nouns") or []]
    extra = []
    if meta.get("task_type") == "spatial" and meta.get("spatial_info"):
        extra = [meta["spatial_info"]["obj1"], meta["spatial_info"]["obj2"]]
    elif meta.get("task_type") == "numeracy":
        extra = [it["obj_name"] for it in meta.get("numeracy_info") or []]
    for e in extra:
        if e.strip() not in out:
            out.append(e.strip())
    return out


def task_score(meta: dict, found: dict[str, tuple[torch.Tensor, torch.Tensor]], nms_iou: float = 0.5) -> float:
    """Reward of one image from its detections {phrase: (scores (n,), boxes (n,4) pixels)}."""
    task = meta.get("task_type")
    if task == "spatial":
        info = meta["spatial_info"]
        s1, b1 = found[info["obj1"].strip()]
        s2, b2 = found[info["obj2"].strip()]
        score = 0.2 * (len(s1) > 0) + 0.2 * (len(s2) > 0)
        if len(s1) and len(s2):
            score += position_score(info["locality"], b1[s1.argmax()], b2[s2.argmax()]) / 2
        return score
    if task == "numeracy":
        items = meta.get("numeracy_info") or []
        total = 0.0
        for it in items:
            s, b = found[it["obj_name"].strip()]
            if len(s):
                total += 1.0 if nms_count(b, s, nms_iou) == int(it["num"]) else 0.2
        return total / len(items) if items else 1.0
    nouns = [n.strip() for n in meta.get("nouns") or []]
    return sum(len(found[n][0]) > 0 for n in nouns) / len(nouns) if nouns else 1.0


class GroundingDinoReward:
    def __init__(self, model, tokenizer, box_threshold: float = 0.3, scale: tuple[int, int] = (1333, 800),
                 batch_size: int = 8):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.box_threshold, self.scale, self.batch_size = box_threshold, scale, batch_size
        self.max_text_len = model.config.max_text_len

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        s = min(min(self.scale) / min(h, w), max(self.scale) / max(h, w))
        x = F.interpolate(images.float(), size=(round(h * s), round(w * s)), mode="bilinear", align_corners=False)
        return normalize(x, IMAGENET_MEAN, IMAGENET_STD)

    def _positive_map(self, enc, i: int, spans: list[list[tuple[int, int]]], width: int) -> torch.Tensor:
        pos = torch.zeros(len(spans), width)
        for j, phrase_spans in enumerate(spans):
            for beg, end in phrase_spans:
                b = next((t for t in (enc.char_to_token(i, c) for c in (beg, beg + 1, beg + 2)) if t is not None), None)
                e = next((t for t in (enc.char_to_token(i, c) for c in (end - 1, end - 2, end - 3) if c >= 0)
                          if t is not None), None)
                if b is not None and e is not None and b < width:
                    pos[j, b:min(e, width - 1) + 1] = 1
        return pos / (pos.sum(-1, keepdim=True) + 1e-6)

    @torch.no_grad()
    def detect(self, images: torch.Tensor, phrase_lists: list[list[str]]) -> list[dict]:
        """Per image {phrase: (scores (n,), boxes (n,4) xyxy pixels)} of the boxes above the box threshold."""
        h, w = images.shape[-2:]
        out: list[dict] = [{} for _ in images]
        todo = [i for i, p in enumerate(phrase_lists) if p]
        for k in range(0, len(todo), self.batch_size):
            idx = todo[k:k + self.batch_size]
            captions, spans = zip(*(detection_prompt([p.lower() for p in phrase_lists[i]]) for i in idx))
            enc = self.tokenizer(list(captions), padding=True, truncation=True, max_length=self.max_text_len,
                                 return_tensors="pt")
            pixels = self.preprocess(images[idx].to(self.device))
            res = self.model(pixel_values=pixels, input_ids=enc["input_ids"].to(self.device),
                             attention_mask=enc["attention_mask"].to(self.device))
            probs = res.logits.float().sigmoid().cpu()  # (n, queries, max_text_len)
            boxes = res.pred_boxes.float().cpu()  # (n, queries, 4) cx, cy, w, h in [0, 1]
            xyxy = torch.cat([boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2], -1)
            xyxy = xyxy * torch.tensor([w, h, w, h], dtype=torch.float32)
            for n, i in enumerate(idx):
                per_phrase = self._positive_map(enc, n, spans[n], probs.shape[-1]) @ probs[n].t()  # (P, queries)
                for phrase, sc in zip(phrase_lists[i], per_phrase):
                    keep = sc > self.box_threshold
                    out[i][phrase] = (sc[keep], xyxy[n][keep])
        return out

    def __call__(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> torch.Tensor:
        if len(metadata) != len(images):
            raise ValueError(f"reward 'gdino': {len(images)} images but {len(metadata)} metadata rows")
        plists = [phrases(m) for m in metadata]
        found = self.detect(images, plists)
        return torch.tensor([task_score(m, f) for m, f in zip(metadata, found)], dtype=torch.float32)


def load_gdino(device="cpu", model: str | None = None) -> GroundingDinoReward:
    """GroundingDINO with `model`, else $GDINO_MODEL, else IDEA-Research/grounding-dino-tiny."""
    tf = require("transformers", "gdino")
    src = source(model, ENV, MODEL_ID)
    net = pretrained(tf.GroundingDinoForObjectDetection.from_pretrained, src, reward="gdino",
                     what="the GroundingDINO model", env=ENV)
    tok = pretrained(tf.AutoTokenizer.from_pretrained, src, reward="gdino", what="the GroundingDINO tokenizer", env=ENV)
    return GroundingDinoReward(net.to(device), tok)


def validate(metadata: list[dict]) -> None:
    """T2I-R1 rows (rewards.git_vqa.validate); spatial rows need spatial_info, numeracy rows numeracy_info."""
    from rewards.git_vqa import validate as validate_rows

    validate_rows(metadata)
    for m in metadata:
        where = f"prompt {m.get('prompt')!r}"
        if m["task_type"] == "spatial":
            info = m.get("spatial_info")
            if not isinstance(info, dict) or not {"obj1", "obj2", "locality"} <= set(info):
                raise ValueError(f"reward 'gdino': a spatial row needs 'spatial_info' {{obj1, obj2, locality}}; {where}")
        if m["task_type"] == "numeracy":
            items = m.get("numeracy_info")
            if not isinstance(items, list) or not all(isinstance(t, dict) and {"obj_name", "num"} <= set(t)
                                                      for t in items):
                raise ValueError(f"reward 'gdino': a numeracy row needs 'numeracy_info' [{{obj_name, num}}]; {where}")
