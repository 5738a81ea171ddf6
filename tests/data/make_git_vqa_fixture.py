"""Writes tests/data/git_vqa_release/: a tiny random GIT VQA model (a transformers folder: config, weights,
processor) and the rewards the STAGE release's own scorer gives with it (krennic999/STAGE,
`src/grpo/src/utils/reward_git.py`, class `GIT`), in `cases.json` with the images in `images.npy`.

The release's class runs unchanged on CPU: it loads the processor and config from the folder and the weights from
its `pytorch_model.bin` (written to a temporary copy), and is called with PIL images and T2I-R1 metadata
(`task_type`, `nouns`, `attr_nouns`). Needs only transformers. Re-run:

    python tests/data/make_git_vqa_fixture.py STAGE/src/grpo/src/utils/reward_git.py

tests/test_reward_originals.py loads the folder with rewards.git_vqa.load_git_vqa and compares.
"""
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import types

import numpy as np
import torch

WORDS = ["yes", "no", "a", "an", "red", "blue", "green", "cat", "dog", "car", "photo", "of", "two", "?", "big"]
ROWS = [
    {"prompt": "a red cat and a blue dog", "task_type": "color_attr", "nouns": ["cat", "dog"],
     "attr_nouns": ["a red cat", "a blue dog"]},
    {"prompt": "a photo of a car", "task_type": "object", "nouns": ["car"], "attr_nouns": None},
    {"prompt": "a green dog", "task_type": "color", "nouns": ["dog"], "attr_nouns": ["a green dog"]},
    {"prompt": "a cat left of a dog", "task_type": "spatial", "nouns": ["cat", "dog"], "attr_nouns": None},
    {"prompt": "two cats", "task_type": "numeracy", "nouns": ["cat"], "attr_nouns": None},
    {"prompt": "a photo", "task_type": "object", "nouns": [], "attr_nouns": None},
    {"prompt": "a big blue car", "task_type": "complex", "nouns": ["car", "dog"], "attr_nouns": None},
]


def build(folder: str) -> None:
    import transformers

    torch.manual_seed(0)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "vocab.txt"), "w") as f:
            f.write("\n".join(vocab) + "\n")
        tok = transformers.BertTokenizerFast(os.path.join(tmp, "vocab.txt"))
    ip = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    transformers.GitProcessor(image_processor=ip, tokenizer=tok).save_pretrained(folder)
    cfg = transformers.GitConfig(
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2),
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=len(vocab),
        bos_token_id=2, eos_token_id=3, pad_token_id=0)
    model = transformers.GitForCausalLM(cfg).eval()
    for p in model.output.parameters():  # sharper next-token logits, so the yes/no ratio is not ~0.5 everywhere
        p.data.mul_(20)
    model.save_pretrained(folder)


def main(release_py: str) -> None:
    from PIL import Image

    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "git_vqa_release")
    shutil.rmtree(folder, ignore_errors=True)
    build(folder)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(len(ROWS), 32, 32, 3), dtype=np.uint8)
    np.save(os.path.join(folder, "images.npy"), images)
    spec = importlib.util.spec_from_file_location("reward_git", release_py)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(folder, tmp, dirs_exist_ok=True)
        weights = transformers.GitForCausalLM.from_pretrained(folder).state_dict()
        torch.save(weights, os.path.join(tmp, "pytorch_model.bin"))
        scorer = mod.GIT(types.SimpleNamespace(git_ckpt_path=tmp))
        scorer.load_to_device("cpu")
        keys = ("task_type", "nouns", "attr_nouns")
        scores = scorer([r["prompt"] for r in ROWS], [Image.fromarray(im) for im in images],
                        **{k: [r[k] for r in ROWS] for k in keys})
    with open(os.path.join(folder, "cases.json"), "w") as f:
        json.dump({"source": "krennic999/STAGE src/grpo/src/utils/reward_git.py GIT.__call__",
                   "rows": ROWS, "release_scores": [float(s) for s in scores]}, f, indent=1)
    print(f"wrote {folder}: {len(ROWS)} rows, release scores {[round(float(s), 6) for s in scores]}")


if __name__ == "__main__":
    main(sys.argv[1])
