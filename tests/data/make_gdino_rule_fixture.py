"""Writes tests/data/gdino_rule_release.json: the GroundingDINO reward's scoring rule as the STAGE release computes
it (krennic999/STAGE, `src/grpo/src/utils/reward_gdino.py`, class `GDino`), on scripted detections.

Only the rule is run (the model cannot be: the release's GroundingDINO and transformers' port have different weight
layouts and no converter ships with either wheel). `GDino.__init__` builds the model, so the methods are called on
an instance made without it: `make_prompt`, `get_spatial_score` (with `determine_position` and `get_nms_boxes`),
`get_numeracy_score` and `get_object_score`, given what `get_grounding_output` returns: boxes in the model's
normalised (cx, cy, w, h), one phrase string per box (the span words joined by a space) and the per-phrase scores.
The `groundingdino` imports are placeholder modules (unused by these methods); `torchvision.ops.nms`, which does not
import beside the CPU torch build here, is replaced by a greedy NMS with torchvision's documented semantics (highest
score first, a box suppressed when its IoU with a kept one is > the threshold). Re-run:

    python tests/data/make_gdino_rule_fixture.py STAGE/src/grpo/src/utils/reward_gdino.py

tests/test_reward_originals.py compares rewards/gdino.py's rule with this file.
"""
import importlib.util
import json
import os
import sys
import types

import torch

# one image per case: the nouns, the task, and per phrase its detections [(score, (cx, cy, w, h) normalised)]
CASES = [
    {"task_type": "object", "nouns": ["cat", "dog"], "det": {"cat": [(0.6, (0.3, 0.5, 0.2, 0.2))], "dog": []}},
    {"task_type": "object", "nouns": ["red car", "tree"],
     "det": {"red car": [(0.5, (0.5, 0.5, 0.4, 0.3))], "tree": [(0.4, (0.2, 0.2, 0.1, 0.3))]}},
    {"task_type": "object", "nouns": ["a big red car"], "det": {"a big red car": [(0.7, (0.5, 0.5, 0.4, 0.3))]}},
    {"task_type": "numeracy", "nouns": ["cat"], "numeracy_info": [{"obj_name": "cat", "num": 2}],
     "det": {"cat": [(0.9, (0.2, 0.5, 0.2, 0.2)), (0.8, (0.7, 0.5, 0.2, 0.2)), (0.5, (0.21, 0.5, 0.2, 0.2))]}},
    {"task_type": "numeracy", "nouns": ["cat", "dog"],
     "numeracy_info": [{"obj_name": "cat", "num": 3}, {"obj_name": "dog", "num": 1}],
     "det": {"cat": [(0.9, (0.2, 0.5, 0.2, 0.2))], "dog": []}},
    {"task_type": "spatial", "nouns": ["cat", "dog"],
     "spatial_info": {"obj1": "cat", "obj2": "dog", "locality": "left of"},
     "det": {"cat": [(0.9, (0.2, 0.5, 0.2, 0.2))], "dog": [(0.8, (0.7, 0.5, 0.2, 0.2))]}},
    {"task_type": "spatial", "nouns": ["cat", "dog"],
     "spatial_info": {"obj1": "cat", "obj2": "dog", "locality": "on the right of"},
     "det": {"cat": [(0.9, (0.2, 0.5, 0.2, 0.2))], "dog": [(0.8, (0.7, 0.5, 0.2, 0.2))]}},
    {"task_type": "spatial", "nouns": ["cat", "dog"],
     "spatial_info": {"obj1": "cat", "obj2": "dog", "locality": "left of"},
     "det": {"cat": [(0.9, (0.40, 0.5, 0.4, 0.4))], "dog": [(0.8, (0.55, 0.52, 0.4, 0.4))]}},
    {"task_type": "spatial", "nouns": ["cat", "dog"],
     "spatial_info": {"obj1": "cat", "obj2": "dog", "locality": "below"},
     "det": {"cat": [(0.9, (0.5, 0.8, 0.2, 0.2))], "dog": [(0.8, (0.5, 0.2, 0.2, 0.2))]}},
    {"task_type": "spatial", "nouns": ["cat", "dog"],
     "spatial_info": {"obj1": "cat", "obj2": "dog", "locality": "above"},
     "det": {"cat": [(0.9, (0.5, 0.2, 0.2, 0.2))], "dog": [(0.8, (0.5, 0.8, 0.2, 0.2))]}},
    {"task_type": "spatial", "nouns": ["cat", "dog"],
     "spatial_info": {"obj1": "cat", "obj2": "dog", "locality": "on the top of"},
     "det": {"cat": [(0.9, (0.5, 0.2, 0.2, 0.2))], "dog": [(0.8, (0.5, 0.8, 0.2, 0.2))]}},
    {"task_type": "spatial", "nouns": ["cat", "dog"],
     "spatial_info": {"obj1": "cat", "obj2": "dog", "locality": "near"},
     "det": {"cat": [(0.9, (0.1, 0.1, 0.1, 0.1))], "dog": [(0.8, (0.9, 0.9, 0.1, 0.1))]}},
    {"task_type": "spatial", "nouns": ["cat", "dog"],
     "spatial_info": {"obj1": "cat", "obj2": "dog", "locality": "left of"},
     "det": {"cat": [(0.9, (0.2, 0.5, 0.2, 0.2))], "dog": []}},
]
SIZE = (384, 384)  # (W, H) of the image the boxes are scaled to for the project's rule (pixels)


def release_inputs(case):
    """What get_grounding_output returns, in the release's phrase order (the nouns' order)."""
    g = GDINO
    _, spans = g.make_prompt(case["nouns"])
    caption = " . ".join(case["nouns"]) + "."
    boxes, phrases, logits = [], [], []
    for noun, span in zip(case["nouns"], spans):
        phrase = " ".join(caption[s:e] for s, e in span)
        dets = case["det"].get(noun, [])
        boxes += [torch.tensor(b, dtype=torch.float32) for _, b in dets]
        phrases += [phrase] * len(dets)
        logits.append(torch.tensor([s for s, _ in dets], dtype=torch.float32))
    boxes = torch.stack(boxes) if boxes else torch.zeros(0, 4)
    return boxes, phrases, logits


def release_score(case):
    boxes, phrases, logits = release_inputs(case)
    if case["task_type"] == "spatial":
        try:
            return GDINO.get_spatial_score(boxes.clone(), phrases, logits, case["nouns"], case["spatial_info"])
        except Exception:  # the release's __call__: any failure scores 0
            return 0
    if case["task_type"] == "numeracy":
        return GDINO.get_numeracy_score(boxes, phrases, logits, case["nouns"], case["numeracy_info"])
    return GDINO.get_object_score(boxes, phrases, logits, case["nouns"])


def greedy_nms(boxes, scores, iou):
    order, keep = scores.argsort(descending=True).tolist(), []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for i in order:
        ok = True
        for k in keep:
            lt, rb = torch.max(boxes[i, :2], boxes[k, :2]), torch.min(boxes[i, 2:], boxes[k, 2:])
            inter = (rb - lt).clamp(min=0).prod()
            if inter / (area[i] + area[k] - inter) > iou:
                ok = False
        if ok:
            keep.append(i)
    return torch.tensor(keep, dtype=torch.long)


GDINO = None


def main(release_py: str) -> None:
    global GDINO
    for name in ("groundingdino", "groundingdino.datasets", "groundingdino.datasets.transforms",
                 "groundingdino.models", "groundingdino.util", "groundingdino.util.box_ops",
                 "groundingdino.util.slconfig", "groundingdino.util.utils", "groundingdino.util.vl_utils"):
        stub = types.ModuleType(name)
        stub.__path__ = []  # a package, so `import groundingdino.datasets.transforms as T` resolves
        for attr in ("build_model", "SLConfig", "clean_state_dict", "get_phrases_from_posmap",
                     "create_positive_map_from_span"):
            setattr(stub, attr, None)
        sys.modules[name] = stub
    for name in ("groundingdino", "groundingdino.datasets", "groundingdino.util"):
        for child in [m for m in sys.modules if m.startswith(name + ".") and m.count(".") == name.count(".") + 1]:
            setattr(sys.modules[name], child.rsplit(".", 1)[1], sys.modules[child])
    sys.modules["torchvision"] = types.ModuleType("torchvision")
    sys.modules["torchvision.ops"] = types.SimpleNamespace(nms=greedy_nms)
    spec = importlib.util.spec_from_file_location("reward_gdino", release_py)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    GDINO = object.__new__(mod.GDino)
    GDINO.device = "cpu"
    rows = []
    for case in CASES:
        caption, spans = GDINO.make_prompt(case["nouns"])
        rows.append({**case, "release_caption": caption, "release_spans": spans,
                     "release_score": float(release_score(case))})
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gdino_rule_release.json")
    with open(out, "w") as f:
        json.dump({"source": "krennic999/STAGE src/grpo/src/utils/reward_gdino.py GDino (rule only)",
                   "image_size": SIZE, "cases": rows}, f, indent=1)
    print(f"wrote {out}: {[r['release_score'] for r in rows]}")


if __name__ == "__main__":
    main(sys.argv[1])
