"""GenEval rules on hand-made detections (no detector involved)."""

import pytest

from common.geneval import (
    filter_detections,
    format_table,
    partial_clauses,
    partial_score,
    relative_position,
    strict_correct,
    summarize,
    tag_counts,
)


def det(cls, box=(0, 0, 10, 10), score=0.99, color=None):
    return {"class": cls, "box": box, "score": score, "color": color}


def at(cls, x, y, color=None, score=0.99, size=10):
    """A detection whose box has its top-left corner at (x, y)."""
    return det(cls, (x, y, x + size, y + size), score, color)


def group(*dets):
    """detected dict as filter_detections would build it (non-counting tag)."""
    return filter_detections(list(dets), "two_object")


POSITION = {
    "tag": "position",
    "include": [{"class": "cup", "count": 1}, {"class": "dog", "count": 1, "position": ["left of", 0]}],
    "prompt": "a photo of a dog left of a cup",
}


# ----------------------------------------------------------------------------- filtering


def test_filter_threshold_is_strict_and_sorted():
    dets = [det("cat", score=0.3), det("cat", score=0.31), det("cat", score=0.8), det("dog", score=0.1)]
    out = filter_detections(dets, "single_object")
    assert list(out) == ["cat"]  # classes with nothing kept are omitted
    assert [d["score"] for d in out["cat"]] == [0.8, 0.31]


def test_counting_uses_threshold_09():
    dets = [det("cat", score=0.95), det("cat", score=0.9), det("cat", score=0.5)]
    assert len(filter_detections(dets, "counting")["cat"]) == 1
    assert len(filter_detections(dets, "two_object")["cat"]) == 3
    meta = {"tag": "counting", "include": [{"class": "cat", "count": 2}],
            "exclude": [{"class": "cat", "count": 3}], "prompt": "a photo of two cats"}
    assert not strict_correct(filter_detections(dets, "counting"), meta)[0]  # only one confident cat
    dets[1]["score"] = 0.91
    assert strict_correct(filter_detections(dets, "counting"), meta)[0]


def test_max_16_per_class():
    dets = [det("cat", score=0.4 + i * 0.01) for i in range(20)]
    out = filter_detections(dets, "single_object")["cat"]
    assert len(out) == 16 and out[0]["score"] == pytest.approx(0.59)
    assert len(filter_detections(dets, "single_object", max_objects=5)["cat"]) == 5


def test_no_nms_keeps_identical_boxes():
    assert len(filter_detections([det("cat"), det("cat")], "two_object")["cat"]) == 2


# ----------------------------------------------------------------------------- relative position


@pytest.mark.parametrize(
    "offset, expected",
    [((-30, 0), {"left of"}), ((30, 0), {"right of"}), ((0, -30), {"above"}), ((0, 30), {"below"}),
     ((-30, -30), {"left of", "above"}), ((30, 5), {"right of"})],
)
def test_relations(offset, expected):
    a = (50 + offset[0], 50 + offset[1], 60 + offset[0], 60 + offset[1])
    assert relative_position(a, (50, 50, 60, 60)) == expected


def test_threshold_edges():
    # two 10x10 boxes: the offset is shrunk by 0.1 * (10 + 10) = 2 px per axis
    b = (50, 50, 60, 60)
    shifted = lambda dx: (50 + dx, 50, 60 + dx, 60)  # noqa: E731
    assert relative_position(shifted(-2.0), b) == set()  # fully absorbed: no relation at all
    assert relative_position(shifted(-4.0), b) == set()  # dx = -(4-2)/4 = -0.5, not < -0.5
    assert relative_position(shifted(-4.2), b) == {"left of"}  # just outside the dead zone
    assert relative_position(shifted(4.2), b) == {"right of"}
    assert relative_position(shifted(-4.0), b, threshold=0.0) == {"left of"}  # the 0.1 matters
    # vertical twin of the same edge, and size-dependence: bigger boxes need a larger offset
    assert relative_position((50, 45.8, 60, 55.8), b) == {"above"}
    assert relative_position((50, 45.8, 70, 75.8), (50, 50, 70, 80)) == set()


def test_diagonal_ambiguity():
    # offset (-10, -4): revised (-8, -2) / 10.77 -> dx = -0.74, dy = -0.19: only "left of"
    assert relative_position((40, 46, 50, 56), (50, 50, 60, 60)) == {"left of"}


# ----------------------------------------------------------------------------- strict rules


def test_single_and_two_object():
    meta = {"tag": "two_object", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1}],
            "prompt": "a photo of a cat and a dog"}
    assert strict_correct(group(det("cat"), det("dog")), meta) == (True, "")
    ok, reason = strict_correct(group(det("cat")), meta)
    assert not ok and "dog" in reason
    assert strict_correct(group(det("cat"), det("dog"), det("dog")), meta)[0]  # extras are fine


def test_counting_exclude():
    meta = {"tag": "counting", "include": [{"class": "cat", "count": 2}],
            "exclude": [{"class": "cat", "count": 3}], "prompt": "a photo of two cats"}
    cats = lambda n: filter_detections([det("cat") for _ in range(n)], "counting")  # noqa: E731
    assert strict_correct(cats(2), meta)[0]
    assert not strict_correct(cats(1), meta)[0]
    ok, reason = strict_correct(cats(3), meta)
    assert not ok and "cat<3" in reason


def test_colors_checked_on_most_confident_only():
    meta = {"tag": "colors", "include": [{"class": "cat", "count": 1, "color": "red"}],
            "prompt": "a photo of a red cat"}
    assert strict_correct(group(det("cat", color="red")), meta)[0]
    assert not strict_correct(group(det("cat", color="blue")), meta)[0]
    # a red cat exists, but only the most confident cat (blue) is checked
    assert not strict_correct(group(det("cat", color="blue", score=0.9), det("cat", color="red", score=0.8)), meta)[0]
    assert strict_correct(group(det("cat", color="blue", score=0.8), det("cat", color="red", score=0.9)), meta)[0]


@pytest.mark.parametrize("rel, dog_xy", [("left of", (10, 50)), ("right of", (90, 50)),
                                         ("above", (50, 10)), ("below", (50, 90))])
def test_each_relation(rel, dog_xy):
    meta = {**POSITION, "include": [POSITION["include"][0], {"class": "dog", "count": 1, "position": [rel, 0]}]}
    assert strict_correct(group(at("cup", 50, 50), at("dog", *dog_xy)), meta)[0]
    opposite = (100 - dog_xy[0], 100 - dog_xy[1])
    ok, reason = strict_correct(group(at("cup", 50, 50), at("dog", *opposite)), meta)
    assert not ok and f"expected dog {rel}" in reason


def test_position_target_unmatched():
    ok, reason = strict_correct(group(at("dog", 10, 50)), POSITION)
    assert not ok and "no target for dog" in reason


def test_position_uses_all_pairs():
    meta = {"tag": "position", "include": [{"class": "cup", "count": 2},
                                           {"class": "dog", "count": 1, "position": ["left of", 0]}], "prompt": "-"}
    assert strict_correct(group(at("cup", 50, 50), at("cup", 80, 10), at("dog", 10, 50)), meta)[0]
    assert not strict_correct(group(at("cup", 50, 50), at("cup", 0, 80), at("dog", 10, 50)), meta)[0]


def test_null_keys_are_absent_and_strings_cast():
    meta = {"tag": "position",
            "include": [{"class": "cup", "count": "1", "color": None, "position": None},
                        {"class": "dog", "count": "1", "color": None, "position": ["left of", "0"]}],
            "exclude": None, "prompt": "a photo of a dog left of a cup"}
    detected = group(at("cup", 50, 50), at("dog", 10, 50))
    assert strict_correct(detected, meta)[0]
    assert partial_clauses(detected, meta) == [1.0, 1.0, 1.0]  # no phantom colour clause
    assert not strict_correct(group(at("cup", 50, 50), at("dog", 90, 50)), meta)[0]


# ----------------------------------------------------------------------------- partial score (Example E)

CLOCKS = {"tag": "counting", "include": [{"class": "clock", "count": 2}],
          "exclude": [{"class": "clock", "count": 3}], "prompt": "a photo of two clocks"}
TWO = {"tag": "two_object", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1}],
       "prompt": "a photo of a cat and a dog"}
CUP_RIGHT_OF_DOG = {"tag": "position",
                    "include": [{"class": "dog", "count": 1},
                                {"class": "cup", "count": 1, "position": ["right of", 0]}],
                    "prompt": "a photo of a cup right of a dog"}
ATTR = {"tag": "color_attr", "include": [{"class": "bus", "count": 1, "color": "red"},
                                         {"class": "cat", "count": 1, "color": "blue"}],
        "prompt": "a photo of a red bus and a blue cat"}


@pytest.mark.parametrize(
    "meta, detected, clauses, reward",
    [
        (CLOCKS, [det("clock")] * 3, [0.5], 0.5),
        (CLOCKS, [det("clock")] * 5, [-0.5], -0.5),
        (TWO, [det("cat"), det("dog")], [1, 1], 1.0),
        (TWO, [det("cat")], [1, 0], 0.5),
        (POSITION, [at("cup", 50, 50), at("dog", 10, 50)], [1, 1, 1], 1.0),
        (POSITION, [at("cup", 50, 50), at("dog", 90, 50)], [1, 1, 0, 1], 0.75),
        (CUP_RIGHT_OF_DOG, [at("dog", 10, 50), at("cup", 50, 50), at("cup", 90, 50)], [1, 0, 0], 1 / 3),
        (ATTR, [det("bus", color="red"), det("cat", color="green")], [1, 1, 1, 0], 0.75),
        (ATTR, [det("cat", color="blue")], [0, 0, 1, 1], 0.5),
    ],
)
def test_example_e(meta, detected, clauses, reward):
    d = filter_detections(detected, meta["tag"])
    assert partial_clauses(d, meta) == pytest.approx(clauses)
    assert partial_score(d, meta) == pytest.approx(reward)


def test_partial_target_unmatched_and_empty():
    # target cup missing: [0 (cup), 1 (dog count), 0 (no target)]
    assert partial_clauses(group(at("dog", 10, 50)), POSITION) == [0.0, 1.0, 0.0]
    assert partial_score({}, {"tag": "x", "include": [], "prompt": "-"}) == 0.0


def test_partial_one_extra_zero_and_exclude_ignored():
    meta = {"tag": "x", "include": [{"class": "cup", "count": 1},
                                    {"class": "dog", "count": 1, "color": "red", "position": ["left of", 0]}],
            "exclude": [{"class": "cup", "count": 1}], "prompt": "-"}
    # dog missing: one 0.0 even though it has colour and position; exclude does not count
    assert partial_clauses(group(at("cup", 50, 50)), meta) == [1.0, 0.0, 0.0]


def test_partial_colour_proportional():
    meta = {"tag": "x", "include": [{"class": "cat", "count": 2, "color": "red"}], "prompt": "-"}
    assert partial_clauses(group(det("cat", color="red"), det("cat", color="blue")), meta) == [1.0, 0.5]


# ----------------------------------------------------------------------------- summaries


def test_summarize_and_table():
    results = [("colors", True), ("colors", False), ("single_object", True), ("counting", False)]
    s = summarize(results)
    assert list(s) == ["single_object", "counting", "colors", "overall"]
    assert s["colors"] == 0.5 and s["overall"] == pytest.approx((1 + 0 + 0.5) / 3)
    table = format_table(s, tag_counts(results))
    assert "colors" in table and "overall" in table and table.splitlines()[-1].split()[1] == "4"
    assert summarize([]) == {"overall": 0.0}
