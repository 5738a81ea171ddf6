"""How data/imagenet/train_counts.tsv was made (run once; kept so that anyone can re-derive and check it).

No public file lists ImageNet-1k's training images per class keyed by WNID. The counts come from two public
repositories of one lab (UNIST OMNIA), read at fixed commits:
- omnia-unist/Miro @ 8c5f20d77dacfa1d1da1c1e14b91aadd23d0778a, lib/swap_manager.py: a dict `IMG1000_INDEX`
  {k: images of class k} whose keys are positions in that code's "fixed" class order;
- the same commit, evaluation/test_imagenet1000.py: that order, `class_order = [54, 7, 894, ...]` (position k ->
  ImageNet label id);
- omnia-unist/CarM @ c595f66cb8d201f5309897ece0ceedfb3c2322c8, data/imagenet-1000/val.txt: 50,000 lines
  `val/<wnid>/ILSVRC2012_val_XXXXXXXX.JPEG <label id>`, which tie each label id to its WNID (label i is the i-th WNID
  in sorted order).

    git -C Miro show 8c5f20d7:lib/swap_manager.py > swap_manager.py
    git -C Miro show 8c5f20d7:evaluation/test_imagenet1000.py > test_imagenet1000.py
    git -C CarM show c595f66c:data/imagenet-1000/val.txt > val.txt
    python data/imagenet/derive_train_counts.py swap_manager.py test_imagenet1000.py val.txt > train_counts.tsv

The files are read as data (literals parsed with ast.literal_eval, nothing executed). tests/test_prompts.py checks
the shipped table against facts from other sources: 1000 WNIDs, 1,281,167 images in all, 732 to 1300 per class,
and classes counted in fastai's Imagenette and Imagewoof file lists.
"""
import ast
import re
import sys


def literal(path: str, pattern: str):
    """The Python literal that `pattern`'s group 1 matches in the file at `path`."""
    with open(path) as f:
        m = re.search(pattern, f.read(), re.M | re.S)
    if m is None:
        sys.exit(f"{path}: no match for {pattern!r}")
    return ast.literal_eval(m.group(1))


def main(swap_manager: str, test_imagenet1000: str, val_txt: str):
    count_at = literal(swap_manager, r"^IMG1000_INDEX\s*=\s*(\{.*?\})\s*$")  # position in the order -> images
    order = literal(test_imagenet1000, r"class_order\s*=\s*(\[.*?\])")  # position -> label id
    wnid_of = {}
    with open(val_txt) as f:
        for line in f:
            path, label = line.split()
            wnid = path.split("/")[1]
            if wnid_of.setdefault(int(label), wnid) != wnid:
                sys.exit(f"{val_txt}: label {label} names two WNIDs")
    wnids = [wnid_of[i] for i in range(1000)]
    assert wnids == sorted(set(wnids)), "label ids are not the sorted WNIDs"
    assert sorted(order) == list(range(1000)) and sorted(count_at) == list(range(1000))
    counts = {wnids[order[k]]: count_at[k] for k in range(1000)}
    for wnid in sorted(counts):
        print(f"{wnid}\t{counts[wnid]}")


if __name__ == "__main__":
    main(*sys.argv[1:])
