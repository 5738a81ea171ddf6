"""Prompt data for the papers' rewards: the GenEval-style COCO training-metadata generator and the prompt-file
formats of the releases (GenEval metadata .jsonl, STAGE's JSON-lines-in-.json, JSON arrays, OCR .txt)."""
import json

import pytest

from common import coco_prompts as cp
from common.prompts import load_prompts
from common.geneval import TAGS
from rewards.geneval import validate
from common.geneval import partial_score, strict_correct


def test_class_and_colour_lists():
    assert len(cp.GENEVAL_CLASSES) == 80 == len(set(cp.GENEVAL_CLASSES))
    assert cp.GENEVAL_CLASSES[64:67] == ("computer mouse", "tv remote", "computer keyboard")  # COCO order
    from rewards.color import PALETTE

    assert cp.GENEVAL_COLORS == tuple(PALETTE)  # one list of GenEval's ten colours, same order


def test_plural():
    assert [cp.plural(c) for c in ("bus", "person", "sheep", "wine glass", "computer mouse", "knife", "cat",
                                   "skis", "sandwich", "tv")] == \
           ["buses", "people", "sheep", "wine glasses", "computer mice", "knives", "cats", "skis", "sandwiches", "tvs"]


def test_rows_follow_geneval_templates_and_metadata():
    rows = cp.generate(600, "uniform", seed=3)
    validate(rows)
    assert {r["tag"] for r in rows} == set(TAGS)
    for r in rows:
        inc, tag, p = r["include"], r["tag"], r["prompt"]
        assert all(i["class"] in cp.GENEVAL_CLASSES for i in inc) and p.startswith("a photo of ")
        if tag == "single_object":
            assert inc == [{"class": inc[0]["class"], "count": 1}] and p.endswith(" " + inc[0]["class"])
        elif tag == "two_object":
            assert len(inc) == 2 and inc[0]["class"] != inc[1]["class"]
        elif tag == "counting":
            n = inc[0]["count"]
            assert 2 <= n <= 4 and r["exclude"] == [{"class": inc[0]["class"], "count": n + 1}]
            assert p == f"a photo of {cp.NUMBER_WORDS[n]} {cp.plural(inc[0]['class'])}"
        elif tag == "colors":
            assert inc[0]["color"] in cp.GENEVAL_COLORS and p.endswith(f"{inc[0]['color']} {inc[0]['class']}")
        elif tag == "position":
            rel, target = inc[1]["position"]
            assert target == 0 and p == f"a photo of {cp.with_article(inc[1]['class'])} {rel} " \
                                         f"{cp.with_article(inc[0]['class'])}"
        else:
            assert inc[0]["color"] != inc[1]["color"] and inc[0]["class"] != inc[1]["class"]
    articles = {r["prompt"].split()[3] for r in rows if r["tag"] == "colors" and r["include"][0]["color"] == "orange"}
    assert articles == {"an"}  # GenEval's correct article: "a photo of an orange car"


def test_generated_rows_score_with_the_rules():
    row = next(r for r in cp.generate(200, "stage", seed=0) if r["tag"] == "position")
    below, above = {"box": (0, 50, 10, 60), "score": 0.9}, {"box": (0, 0, 10, 10), "score": 0.9}
    target, obj = row["include"][0]["class"], row["include"][1]["class"]
    rel = row["include"][1]["position"][0]
    boxes = {"left of": ((0, 0, 10, 10), (50, 0, 60, 10)), "right of": ((50, 0, 60, 10), (0, 0, 10, 10)),
             "above": (above["box"], below["box"]), "below": (below["box"], above["box"])}[rel]
    det = {obj: [{"class": obj, "box": boxes[0], "score": 0.9}], target: [{"class": target, "box": boxes[1], "score": 0.9}]}
    assert strict_correct(det, row)[0] and partial_score(det, row) == 1.0


def test_ratio_determinism_and_exclusion():
    a, b = cp.generate(300, "stage", seed=1), cp.generate(300, "stage", seed=1)
    assert a == b and a != cp.generate(300, "stage", seed=2)
    counts = {t: sum(r["tag"] == t for r in a) for t in TAGS}
    assert counts["single_object"] == 0 and counts["counting"] > counts["color_attr"] > counts["two_object"]
    space = {f"a photo of {cp.with_article(c)}" for c in cp.GENEVAL_CLASSES}
    keep = "a photo of a cat"
    rows = cp.generate(20, "1:0:0:0:0:0", seed=0, exclude=space - {keep})
    assert {r["prompt"] for r in rows} == {keep}
    assert cp.parse_ratio("geneval").round(4).tolist() == [round(x / 553, 4) for x in (80, 99, 80, 94, 100, 100)]
    for bad in ("1:2", "nope", "0:0:0:0:0:0", "-1:1:1:1:1:1"):
        with pytest.raises(ValueError, match="tag ratio"):
            cp.parse_ratio(bad)


def test_cli_writes_loadable_jsonl(tmp_path, capsys):
    ev = tmp_path / "evaluation_metadata.jsonl"
    ev.write_text(json.dumps({"tag": "single_object", "include": [{"class": "cat", "count": 1}],
                              "prompt": "a photo of a cat"}) + "\n")
    out = tmp_path / "coco" / "train.jsonl"
    cp.main(["--n", "50", "--ratio", "1:1:0:0:0:0", "--seed", "4", "--exclude", str(ev), "--out", str(out)])
    rows = load_prompts(str(out))
    assert len(rows) == 50 and "a photo of a cat" not in {r["prompt"] for r in rows}
    assert rows == cp.generate(50, "1:1:0:0:0:0", seed=4, exclude={"a photo of a cat"})
    assert "wrote 50 rows" in capsys.readouterr().out


# ----------------------------------------------------------------------------- release file formats


def test_release_formats(tmp_path):
    # GenEval evaluation_metadata.jsonl / STAGE's flow_grpo .json (JSON lines under a .json name), with the
    # string counts and position indices such files may hold; the rules cast them
    row = {"tag": "position", "include": [{"class": "dog", "count": "1"},
                                          {"class": "cat", "count": "1", "position": ["left of", "0"]}],
           "prompt": "a photo of a cat left of a dog"}
    p = tmp_path / "evaluation_metadata_flow_grpo.json"
    p.write_text(json.dumps(row) + "\n" + json.dumps({**row, "prompt": "x"}) + "\n")
    rows = load_prompts(str(p))
    assert rows[0] == row and len(rows) == 2
    det = {"cat": [{"class": "cat", "box": (0, 0, 10, 10), "score": 0.9}],
           "dog": [{"class": "dog", "box": (50, 0, 60, 10), "score": 0.9}]}
    assert strict_correct(det, rows[0])[0] and partial_score(det, rows[0]) == 1.0
    # JSON arrays: HPS metadata (objects with "prompt"), LlamaGen train_data.json ("caption"), plain strings
    arr = tmp_path / "hps_train_metadata.json"
    arr.write_text(json.dumps([{"prompt": "a cat"}, {"caption": "the woman is wearing an indian sari"}, "a dog"]))
    assert [r["prompt"] for r in load_prompts(str(arr))] == ["a cat", "the woman is wearing an indian sari", "a dog"]
    # OCR test_ocr.txt: one prompt per line, quotes kept
    txt = tmp_path / "test_ocr.txt"
    txt.write_text('A sign that says "OPEN"\n\nNew York skyline with "Hello World" written on it\n')
    assert [r["prompt"] for r in load_prompts(str(txt))][1] == 'New York skyline with "Hello World" written on it'
    # T2I-R1 rows keep every field
    t2i = tmp_path / "geneval_and_t2i_data_final.json"
    t2i.write_text(json.dumps({"prompt": "two dogs", "nouns": ["dog"], "task_type": "numeracy",
                               "numeracy_info": [{"obj_name": "dog", "num": 2}]}) + "\n")
    assert load_prompts(str(t2i))[0]["numeracy_info"] == [{"obj_name": "dog", "num": 2}]


@pytest.mark.parametrize("name, text, match", [
    ("a.json", "[{\"prompt\": \"ok\"}, ", r"a.json: invalid JSON"),
    ("a.json", "[{\"prompt\": \"ok\"}, {\"tag\": 1}]", r"a.json: item 1: missing or empty"),
    ("a.json", "[3]", r"a.json: item 0: expected a JSON object"),
    ("a.json", "[]", "no prompts"),
])
def test_json_errors_are_one_line(tmp_path, name, text, match):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(ValueError, match=match) as e:
        load_prompts(str(p))
    assert "\n" not in str(e.value)
