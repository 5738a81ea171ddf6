"""load_prompts: good files and one-line errors for bad ones."""

import json
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
        pytest.skip("run: python -m toy write --out data/shapeworld")
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


def test_conversations_schema_and_sources_hint(tmp_path, monkeypatch):
    """AR-GRPO's coco_captions_30000.json rows; a preset's missing file names how to get it."""
    import json

    path = write(tmp_path, "c.json", json.dumps([{"id": 0, "conversations": [{"from": "human", "value": "a cat"},
                                                                              {"from": "gpt", "value": ""}]}]))
    assert load_prompts(path)[0]["prompt"] == "a cat"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="evaluation_metadata_flow_grpo.json; get it: the STAGE release's "
                       "data/janus_geneval_prompts/evaluation_metadata_flow_grpo.json .*fallback: python -m "
                       "common.coco_prompts .*--ratio stage"):
        load_prompts("data/geneval/evaluation_metadata_flow_grpo.json")


def test_imagenet_prompts_one_class_id_per_image(tmp_path, capsys):
    """Classes in sorted-synset order, each repeated once per image: the release's image-weighted class draw."""
    from common.imagenet_prompts import main

    train = tmp_path / "train"
    for wnid, n in (("n02", 3), ("n01", 2), ("n03", 1)):
        (train / wnid).mkdir(parents=True)
        for i in range(n):
            (train / wnid / f"{i}.JPEG").write_bytes(b"")
    (train / "n01" / "notes.txt").write_text("not an image")
    out = tmp_path / "ids.txt"
    main(["--train-dir", str(train), "--out", str(out)])
    assert [r["prompt"] for r in load_prompts(str(out))] == ["0", "0", "1", "1", "1", "2"]
    assert "6 lines, 3 classes" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="not a directory"):
        main(["--train-dir", str(tmp_path / "nope"), "--out", str(out)])


# classes of fastai's Imagenette and Imagewoof (github.com/fastai/imagenette, noisy_imagenette.csv and
# noisy_imagewoof.csv at ba8db39): the images of each whose names are ImageNet training files (<wnid>_<n>.JPEG),
# counted. An independent source for 20 rows of the shipped table, the two below 1300 among them.
IMAGENETTE_TRAIN = {"n01440764": 1300, "n02102040": 1300, "n02979186": 1300, "n03000684": 1194, "n03028079": 1300,
                    "n03394916": 1300, "n03417042": 1300, "n03425413": 1300, "n03445777": 1300, "n03888257": 1300,
                    "n02086240": 1300, "n02087394": 1300, "n02088364": 1300, "n02089973": 754, "n02093754": 1300,
                    "n02096294": 1300, "n02099601": 1300, "n02105641": 1300, "n02111889": 1300, "n02115641": 1300}


def test_shipped_imagenet_train_counts():
    """data/imagenet/train_counts.tsv against what is known of ILSVRC2012's training set: 1000 classes, the first and
    last WNIDs, 1,281,167 images, 732 to 1300 per class, the 20 Imagenette/Imagewoof classes; and the class names
    file lists the same classes in the same order."""
    from common.imagenet_prompts import SHIPPED_COUNTS, table_counts

    counts = table_counts(SHIPPED_COUNTS)
    wnids, n = [w for w, _ in counts], [c for _, c in counts]
    assert len(set(wnids)) == 1000 and wnids[0] == "n01440764" and wnids[-1] == "n15075141"
    assert sum(n) == 1_281_167 and min(n) == 732 and max(n) == 1300
    assert {w: c for w, c in counts if w in IMAGENETTE_TRAIN} == IMAGENETTE_TRAIN


def test_imagenet_prompts_from_the_shipped_counts(tmp_path, capsys):
    """With no source flag, the shipped table: class i once per training image; a bad table fails on its line."""
    from collections import Counter

    from common.imagenet_prompts import SHIPPED_COUNTS, main, table_counts

    out = tmp_path / "train_images.txt"
    main(["--out", str(out)])
    ids = Counter(out.read_text().split())
    table = table_counts(SHIPPED_COUNTS)
    assert sum(ids.values()) == 1_281_167 and ids == {str(i): c for i, (_, c) in enumerate(table)}
    foxhound = [w for w, _ in table].index("n02089973")  # English foxhound, 754 images
    assert ids[str(foxhound)] == 754
    assert "1281167 lines, 1000 classes" in capsys.readouterr().out
    small = tmp_path / "t.tsv"
    small.write_text("n02\t3\nn01\t2\n")
    main(["--counts", str(small), "--out", str(out)])
    assert out.read_text().split() == ["0", "0", "1", "1", "1"]
    small.write_text("n01\t2\nn01 x\n")
    with pytest.raises(SystemExit, match="t.tsv:2: expected"):
        main(["--counts", str(small), "--out", str(out)])


@pytest.mark.parametrize("row, match", [
    ({"include": [{"class": "cat", "count": "three"}]}, "count 'three'"),
    ({"include": [{"class": "cat", "count": 0}]}, "count 0"),
    ({"include": [{"class": "cat", "count": 2.7}]}, "count 2.7"),
    ({"include": [{"class": "cat", "count": 1, "position": ["left of", 3]}]}, "position"),
    ({"include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1, "position": ["beside", 0]}]}, "position"),
    ({"include": [{"class": "cat", "count": 1, "color": "teal"}]}, "unknown colour 'teal'"),
    ({"include": [{"class": "square", "count": 1}]}, "class 'square' is not one this detector knows"),
])
def test_geneval_metadata_checked_against_the_detector(row, match):
    from rewards import check_reward

    with pytest.raises(ValueError, match=match):
        check_reward("geneval_coco", [{"prompt": "p", "tag": "single_object", **row}])
    check_reward("geneval", [{"prompt": "p", "include": [{"class": "square", "count": 2}]}])  # the toy's classes


def test_metadata_errors_name_the_file_and_line(tmp_path):
    """A bad row of a prompt file is named by file:line (blank lines counted), for .jsonl and .txt files."""
    from rewards import check_reward

    good = '{"prompt": "a photo of a cat", "include": [{"class": "cat", "count": 1}]}'
    bad = '{"prompt": "three dogs", "include": [{"class": "dog", "count": "three"}]}'
    path = tmp_path / "g.jsonl"
    path.write_text(f"{good}\n\n{good}\n{bad}\n")
    with pytest.raises(ValueError, match=r"g\.jsonl:4: .*'three dogs'.*count 'three'"):
        check_reward("geneval_coco", load_prompts(str(path)))
    txt = tmp_path / "t.txt"
    txt.write_text("a red square\n\na photo of a cat\n")
    with pytest.raises(ValueError, match=r"t\.txt:1: .*has none"):
        check_reward("geneval", load_prompts(str(txt)))
    with pytest.raises(ValueError, match=r"prompt row 1: .*count 'three'"):  # rows not read from a file
        check_reward("geneval_coco", [json.loads(good), json.loads(bad)])


def test_class_names_from_the_ar_grpo_release_file(tmp_path):
    """AR-GRPO's reward_utils/imagenet_names.py is read as it is (its dict literal parsed, never executed)."""
    from common.llamagen import read_class_names

    path = tmp_path / "imagenet_names.py"
    path.write_text("IMAGENET_NAMES={0: 'tench, Tinca tinca',\n 2: 'great white shark',\n 1: 'goldfish'}\n"
                    "raise SystemExit('never run')\n")
    assert read_class_names(str(path)) == ["tench, Tinca tinca", "goldfish", "great white shark"]
    (tmp_path / "other.py").write_text("NAMES = {}\n")
    with pytest.raises(ValueError, match="no IMAGENET_NAMES"):
        read_class_names(str(tmp_path / "other.py"))


def test_imagenet_prompts_from_the_devkit_meta(tmp_path, capsys):
    """The devkit's meta.mat (synsets: WNID, num_children, num_train_images) instead of the 150 GB train folder:
    leaf classes only, in sorted-WNID order, each id once per training image."""
    import numpy as np
    from scipy.io import savemat

    from common.imagenet_prompts import main

    fields = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O"), ("num_train_images", "O")]
    synsets = np.array([(1, "n03", "c", 0, 2), (2, "n01", "a", 0, 3), (3, "n00", "inner node", 2, 5),
                        (4, "n02", "b", 0, 1)], dtype=fields)
    meta = tmp_path / "meta.mat"
    savemat(str(meta), {"synsets": synsets})
    out = tmp_path / "train_images.txt"
    main(["--devkit-meta", str(meta), "--out", str(out)])
    assert out.read_text().split() == ["0", "0", "0", "1", "2", "2"]  # n01 x3, n02 x1, n03 x2
    with pytest.raises(SystemExit, match="not found"):
        main(["--devkit-meta", str(tmp_path / "nope.mat")])
