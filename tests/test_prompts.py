"""load_prompts: good files and one-line errors for bad ones."""

import os

import pytest

from common.prompts import load_prompts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_jsonl_keeps_metadata(tmp_path):
    path = write(tmp_path, "p.jsonl", '{"tag": "colors", "include": [{"class": "cat", "count": 1}], '
                 '"prompt": "a photo of a cat"}\n\n{"prompt": "x"}\n')
    rows = load_prompts(path)
    assert rows == [{"tag": "colors", "include": [{"class": "cat", "count": 1}], "prompt": "a photo of a cat"},
                    {"prompt": "x"}]


def test_txt_skips_blank_lines(tmp_path):
    path = write(tmp_path, "p.txt", "a red circle\n\n   \n two squares \n")
    assert load_prompts(path) == [{"prompt": "a red circle"}, {"prompt": "two squares"}]


def test_shapeworld_files_load():
    path = os.path.join(REPO, "data", "shapeworld", "eval.jsonl")
    if not os.path.exists(path):
        pytest.skip("run: python -m common.shapeworld write --out data/shapeworld")
    assert len(load_prompts(path)) == 55


@pytest.mark.parametrize(
    "name, text, match",
    [
        ("p.csv", "a,b\n", "unsupported"),
        ("p.jsonl", '{"prompt": "ok"}\n{"prompt": broken}\n', r"p.jsonl:2: invalid JSON"),
        ("p.jsonl", '{"prompt": "ok"}\n{"tag": "x"}\n', r"p.jsonl:2: missing or empty"),
        ("p.jsonl", '{"prompt": "  "}\n', r"p.jsonl:1: missing or empty"),
        ("p.jsonl", '{"prompt": 3}\n', r"p.jsonl:1: missing or empty"),
        ("p.jsonl", '["a photo"]\n', r"p.jsonl:1: expected a JSON object"),
        ("p.jsonl", "\n\n", "no prompts"),
        ("p.txt", "", "no prompts"),
    ],
)
def test_errors(tmp_path, name, text, match):
    with pytest.raises(ValueError, match=match) as e:
        load_prompts(write(tmp_path, name, text))
    assert "\n" not in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_prompts(str(tmp_path / "nope.jsonl"))
