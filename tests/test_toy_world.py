"""ShapeWorld rendering, prompts, scenes, detector and the GenEval reward on top of it."""

import json
import os

import numpy as np
import pytest
import torch
from scipy import ndimage

from common.geneval import filter_detections, relative_position, strict_correct
from rewards.geneval import GenEvalReward, make_geneval, make_geneval_strict
from toy import world as sw
from toy.detector import check, detect

GENEVAL_COLORS = {"red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"}
SPACE_SIZES = {"single_object": 3, "two_object": 6, "counting": 9, "colors": 18, "position": 24, "color_attr": 180}


def judge(image, meta):
    return strict_correct(filter_detections(detect(image), meta["tag"]), meta)[0]


def prompt_of(tag, text):
    return next(p for p in sw.all_prompts(tag) if p["prompt"] == text)


# ----------------------------------------------------------------------------- world


def test_constants():
    assert (sw.IMAGE_SIZE, sw.CELL, sw.GRID) == (64, 8, 8)
    assert len(sw.COLORS) == 6 and set(sw.COLORS) <= GENEVAL_COLORS
    assert sw.BACKGROUND not in sw.COLORS.values()


def test_render_and_boxes():
    objs = [{"class": "square", "color": "red", "cell": (0, 0)},
            {"class": "circle", "color": "blue", "cell": (3, 3)},
            {"class": "triangle", "color": "green", "cell": (6, 6)}]
    img = sw.render(objs)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert tuple(img[0, 0]) == sw.BACKGROUND  # margin
    assert tuple(img[8, 8]) == sw.COLORS["red"]  # centre of the first block
    areas = {cls: int(m.sum()) for cls, m in sw.SHAPE_MASKS.items()}
    assert areas["square"] == 144 and 105 < areas["circle"] < 120 and 65 < areas["triangle"] < 80
    for obj in objs:
        x0, y0, x1, y1 = map(int, sw.object_box(obj))
        color_mask = np.all(img == sw.COLORS[obj["color"]], axis=-1)
        ys, xs = np.nonzero(color_mask)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
        assert (x1 - x0, y1 - y0) == (12, 12)
        assert x0 == obj["cell"][1] * 8 + 2 and y0 == obj["cell"][0] * 8 + 2
    # triangle points up: its top row is narrower than its bottom row
    tri = sw.SHAPE_MASKS["triangle"]
    assert tri[2].sum() < tri[13].sum() == 12
    with pytest.raises(ValueError):
        sw.render([{"class": "square", "color": "red", "cell": (7, 0)}])


# ----------------------------------------------------------------------------- prompts


@pytest.mark.parametrize("tag", sw.TAGS)
def test_prompt_space(tag):
    space = sw.all_prompts(tag)
    assert len(space) == SPACE_SIZES[tag]
    assert len({p["prompt"] for p in space}) == len(space)
    assert space == sw.all_prompts(tag)  # deterministic
    for p in space:
        keys = ["tag", "include", "exclude", "prompt"] if tag == "counting" else ["tag", "include", "prompt"]
        assert list(p) == keys
        assert p["tag"] == tag and p["prompt"].startswith("a photo of ")
        inc = p["include"]
        classes = [r["class"] for r in inc]
        assert set(classes) <= set(sw.CLASSES) and len(set(classes)) == len(classes)
        if tag == "single_object":
            assert inc == [{"class": classes[0], "count": 1}] and p["prompt"] == f"a photo of a {classes[0]}"
        elif tag == "two_object":
            assert p["prompt"] == f"a photo of a {classes[0]} and a {classes[1]}"
        elif tag == "counting":
            n = inc[0]["count"]
            assert n in (2, 3, 4) and p["exclude"] == [{"class": classes[0], "count": n + 1}]
            assert p["prompt"] == f"a photo of {sw.NUMBERS[n]} {classes[0]}s"
        elif tag == "colors":
            assert set(inc[0]) == {"class", "count", "color"} and inc[0]["color"] in sw.COLORS
            assert p["prompt"].endswith(f"{inc[0]['color']} {classes[0]}")
        elif tag == "position":
            target, obj = inc
            assert target == {"class": target["class"], "count": 1}
            rel = obj["position"][0]
            assert obj["position"] == [rel, 0] and rel in sw.RELATIONS
            assert p["prompt"] == f"a photo of a {obj['class']} {rel} a {target['class']}"
        elif tag == "color_attr":
            assert inc[0]["color"] != inc[1]["color"]
            a = lambda w: ("an " if w[0] in "aeiou" else "a ") + w  # noqa: E731
            expected = f"a photo of {a(inc[0]['color'])} {classes[0]} and {a(inc[1]['color'])} {classes[1]}"
            assert p["prompt"] == expected


def test_articles():
    # GenEval writes "an" before vowels ("a photo of an orange cow and a purple sandwich")
    assert prompt_of("colors", "a photo of an orange circle")["include"][0]["color"] == "orange"


def test_sample_prompt():
    a = [sw.sample_prompt(np.random.default_rng(3)) for _ in range(2)]
    assert a[0] == a[1]
    rng = np.random.default_rng(0)
    tags = {sw.sample_prompt(rng)["tag"] for _ in range(200)}
    assert tags == set(sw.TAGS)
    assert sw.sample_prompt(rng, "position")["tag"] == "position"
    with pytest.raises(ValueError):
        sw.sample_prompt(rng, "nope")


def test_prompt_files(tmp_path):
    sw.write_prompt_files(str(tmp_path))
    rows = {name: [json.loads(line) for line in open(tmp_path / f"{name}.jsonl")] for name in ("train", "eval")}
    ev, tr = rows["eval"], rows["train"]
    per_tag = lambda rs: {t: sum(r["tag"] == t for r in rs) for t in sw.TAGS}  # noqa: E731
    held = {t: 0 if n <= 9 else min(16, n // 2) for t, n in SPACE_SIZES.items()}
    assert per_tag(ev) == {t: held[t] or n for t, n in SPACE_SIZES.items()}
    assert per_tag(tr) == {t: sw.TRAIN_PER_TAG for t in sw.TAGS}  # tag-balanced
    for t, n in SPACE_SIZES.items():  # no prompt is repeated before all are used
        assert len({r["prompt"] for r in tr if r["tag"] == t}) == min(sw.TRAIN_PER_TAG, n - held[t])
    assert [r["tag"] for r in ev] == sorted((r["tag"] for r in ev), key=sw.TAGS.index)  # grouped by tag
    held_out = {r["prompt"] for r in ev if held[r["tag"]]}
    assert not held_out & {r["prompt"] for r in tr}
    assert list(ev[0]) == ["tag", "include", "prompt"]
    sw.write_prompt_files(str(tmp_path / "again"))
    assert (tmp_path / "eval.jsonl").read_text() == (tmp_path / "again" / "eval.jsonl").read_text()
    assert (tmp_path / "train.jsonl").read_text() == (tmp_path / "again" / "train.jsonl").read_text()
    # the checked-in files under data/shapeworld must be what the generator writes
    data = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "shapeworld")
    for name in ("train.jsonl", "eval.jsonl"):
        if os.path.exists(os.path.join(data, name)):
            assert open(os.path.join(data, name)).read() == (tmp_path / name).read_text(), name


# ----------------------------------------------------------------------------- scenes


@pytest.mark.parametrize("tag", sw.TAGS)
def test_sample_scene_is_strictly_correct(tag):
    rng = np.random.default_rng(123)
    for i in range(40):
        meta = sw.sample_prompt(rng, tag)
        objs = sw.sample_scene(meta, rng)
        assert len(objs) == sum(r["count"] for r in meta["include"])  # no distractors
        for r in meta["include"]:
            same = [o for o in objs if o["class"] == r["class"]]
            assert len(same) == r["count"]
            if "color" in r:
                assert all(o["color"] == r["color"] for o in same)
        cells = [o["cell"] for o in objs]
        for a in range(len(cells)):
            for b in range(a):
                assert max(abs(cells[a][0] - cells[b][0]), abs(cells[a][1] - cells[b][1])) >= 3
        if tag == "position":
            target, obj = meta["include"]
            box = lambda c: sw.object_box(next(o for o in objs if o["class"] == c))  # noqa: E731
            assert obj["position"][0] in relative_position(box(obj["class"]), box(target["class"]))
        assert judge(sw.render(objs), meta), (meta["prompt"], objs)


def test_sample_scene_accepts_null_keys():
    meta = {"tag": "two_object", "include": [{"class": "circle", "count": "2", "color": None, "position": None},
                                             {"class": "square", "count": 1, "color": "red", "position": None}],
            "exclude": None, "prompt": "-"}
    objs = sw.sample_scene(meta, np.random.default_rng(0))
    assert sorted(o["class"] for o in objs) == ["circle", "circle", "square"]


# ----------------------------------------------------------------------------- detector


def test_detector_clean_scores():
    rng = np.random.default_rng(0)
    for _ in range(20):
        objs = sw.sample_scene(sw.sample_prompt(rng, "counting"), rng)
        dets = detect(sw.render(objs))
        assert len(dets) == len(objs)
        assert all(d["score"] > 0.95 for d in dets)
        got = sorted((d["class"], d["color"], d["box"]) for d in dets)
        assert got == sorted((o["class"], o["color"], sw.object_box(o)) for o in objs)


def test_detector_failures_are_caught():
    two = prompt_of("counting", "a photo of two circles")
    circle = lambda r, c, col="red": {"class": "circle", "color": col, "cell": (r, c)}  # noqa: E731
    assert judge(sw.render([circle(0, 0), circle(4, 4)]), two)
    assert not judge(sw.render([circle(0, 0)]), two)  # too few
    assert not judge(sw.render([circle(0, 0), circle(4, 4), circle(0, 4)]), two)  # exclude: three circles
    assert not judge(sw.render([circle(0, 0), {"class": "square", "color": "red", "cell": (4, 4)}]), two)

    red = prompt_of("colors", "a photo of a red triangle")
    tri = lambda col: [{"class": "triangle", "color": col, "cell": (2, 2)}]  # noqa: E731
    assert judge(sw.render(tri("red")), red)
    assert not judge(sw.render(tri("orange")), red)  # wrong colour

    left = prompt_of("position", "a photo of a circle left of a square")
    sq = {"class": "square", "color": "blue", "cell": (3, 4)}
    assert judge(sw.render([circle(3, 0), sq]), left)
    assert not judge(sw.render([circle(3, 0)]), left)  # missing target
    sq_left = {**sq, "cell": (3, 0)}
    assert not judge(sw.render([circle(3, 4), sq_left]), left)  # wrong side
    assert not judge(sw.render([circle(0, 4), {**sq, "cell": (4, 4)}]), left)  # above, not left

    attr = prompt_of("color_attr", "a photo of a red circle and a blue square")
    assert judge(sw.render([circle(0, 0), {**sq, "cell": (4, 4)}]), attr)
    assert not judge(sw.render([circle(0, 0, "blue"), {**sq, "color": "red", "cell": (4, 4)}]), attr)  # swapped


def test_detector_rejects_non_shapes():
    img = np.full((64, 64, 3), sw.BACKGROUND, dtype=np.uint8)
    img[10:14, 10:30] = sw.COLORS["red"]  # thin bar
    img[30:60, 30:60] = sw.COLORS["blue"]  # far too large
    tri = sw.SHAPE_MASKS["triangle"][::-1]  # upside-down triangle
    img[40:56, 0:16][tri] = sw.COLORS["green"]
    img[2:5, 50:53] = sw.COLORS["yellow"]  # speck below the area threshold
    dets = detect(img)
    assert len(dets) == 3 and all(d["score"] < 0.3 for d in dets)


def blur_noise(img, sigma, noise, rng):
    out = ndimage.gaussian_filter(img.astype(np.float32), (sigma, sigma, 0)) if sigma else img.astype(np.float32)
    return np.clip(out + rng.normal(0, noise, img.shape), 0, 255).round().astype(np.uint8)


@pytest.mark.parametrize("sigma, noise", [(0.8, 0), (1.0, 0), (0, 10), (0.8, 6)])
def test_detector_robust_to_blur_and_noise(sigma, noise):
    rng = np.random.default_rng(7)
    for tag in sw.TAGS:
        for _ in range(8):
            meta = sw.sample_prompt(rng, tag)
            img = blur_noise(sw.render(sw.sample_scene(meta, rng)), sigma, noise, rng)
            assert judge(img, meta), (sigma, noise, meta["prompt"])


def test_detector_input_formats_and_sizes():
    rng = np.random.default_rng(1)
    objs = sw.sample_scene(sw.sample_prompt(rng, "color_attr"), rng)
    img = sw.render(objs)
    ref = detect(img)
    as_tensor = detect(torch.from_numpy(img).permute(2, 0, 1).float() / 255)
    assert as_tensor == ref
    big = np.repeat(np.repeat(img, 3, axis=0), 3, axis=1)  # 192x192
    dets = detect(big)
    assert sorted((d["class"], d["color"]) for d in dets) == sorted((d["class"], d["color"]) for d in ref)
    assert all(d["score"] > 0.95 for d in dets)
    assert sorted(d["box"] for d in dets) == sorted(tuple(3 * v for v in d["box"]) for d in ref)


# ----------------------------------------------------------------------------- reward callable


def test_geneval_reward():
    rng = np.random.default_rng(5)
    metas = [sw.sample_prompt(rng, t) for t in sw.TAGS]
    imgs = [sw.render(sw.sample_scene(m, rng)) for m in metas]
    imgs[0] = sw.render([])  # empty image for the single_object prompt: score 0
    batch = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255
    prompts = [m["prompt"] for m in metas]
    partial, strict = make_geneval()(batch, prompts, metas), make_geneval_strict()(batch, prompts, metas)
    assert partial.shape == strict.shape == (6,) and partial.dtype == torch.float32
    assert strict.tolist() == [0, 1, 1, 1, 1, 1] and partial.tolist() == [0, 1, 1, 1, 1, 1]
    assert GenEvalReward(strict=True).evaluate(batch, metas) == [(m["tag"], i > 0) for i, m in enumerate(metas)]


def test_geneval_reward_errors():
    with pytest.raises(ValueError, match="known: shapeworld"):
        GenEvalReward(detector="mask2former_typo")
    img = torch.zeros(1, 3, 64, 64)
    with pytest.raises(ValueError, match="a red circle"):
        make_geneval()(img, ["a red circle"], [{"prompt": "a red circle"}])


def test_check_cli(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(sw.all_prompts(t)[0]) + "\n" for t in sw.TAGS))
    summary = check(str(path), n=2)
    assert summary["overall"] == 1.0 and "overall" in capsys.readouterr().out
