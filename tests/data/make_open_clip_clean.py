"""Writes tests/data/open_clip_clean.json: prompts and the text hpsv2's own open_clip tokenizer cleans them to.

The original is `hpsv2/src/open_clip/tokenizer.py` of the hpsv2 1.2.0 wheel (`basic_clean`: ftfy.fix_text, then
html.unescape twice, stripped; `whitespace_clean`: runs of whitespace to one space, stripped). That module needs
only ftfy, regex and torch, so it is loaded straight from the unpacked wheel (the package's __init__, which needs
torchvision, is not run). The wheel lacks the BPE vocabulary the module loads at import: put open_clip's
`bpe_simple_vocab_16e6.txt.gz` beside it (e.g. from Kwai-Klear/AR-GRPO, `reward_utils/hpsv2/`). Re-run:

    pip download --no-deps hpsv2==1.2.0 && unzip hpsv2-1.2.0-py3-none-any.whl -d hpsv2_wheel
    cp bpe_simple_vocab_16e6.txt.gz hpsv2_wheel/hpsv2/src/open_clip/
    python tests/data/make_open_clip_clean.py hpsv2_wheel/hpsv2/src/open_clip/tokenizer.py

tests/test_reward_inputs.py checks rewards.hps.open_clip_clean against this file.
"""
import importlib.util
import json
import os
import sys

PROMPTS = [
    "Tom &amp; Jerry",
    "Tom &amp;amp; Jerry",  # escaped twice: html.unescape runs twice
    "a sign that says \u201cOPEN\u201d and \u2018closed\u2019",  # curly quotes
    "\u00e2\u20ac\u0153mojibake\u00e2\u20ac\u009d quotes",  # UTF-8 read as cp1252
    "caf\u00e9 and cafe\u0301",  # precomposed and combining accents
    "  a   photo\tof a\n\ndog  ",
    "non\u00a0breaking\u2003spaces",
    "separator\x1ccharacter",
    "&lt;b&gt;bold&lt;/b&gt; text",
    "a \"quoted\" word & an ampersand",
    "\uff21\uff22\uff23 full-width letters",
    "An astronaut riding a horse on the moon.",
]


def main(tokenizer_py: str) -> None:
    spec = importlib.util.spec_from_file_location("open_clip_tokenizer", tokenizer_py)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = [{"prompt": p, "cleaned": mod.whitespace_clean(mod.basic_clean(p))} for p in PROMPTS]
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "open_clip_clean.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"source": "hpsv2 1.2.0, hpsv2/src/open_clip/tokenizer.py: whitespace_clean(basic_clean(text))",
                   "rows": rows}, f, indent=1, ensure_ascii=True)
    print(f"wrote {out}: {len(rows)} prompts, {sum(r['prompt'] != r['cleaned'] for r in rows)} changed by cleaning")


if __name__ == "__main__":
    main(sys.argv[1])
