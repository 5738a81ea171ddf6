"""Writes tests/data/qwen_judge_release.json: the Qwen judges' prompt texts and reply parsing, as AR-GRPO's release
runs them (Kwai-Klear/AR-GRPO, `reward_utils/qwen_vl_reward.py`).

The release's own functions are run on CPU: `question_image_score_with_lbl_pipe` (qwen_label) and
`question_image_score_prompt_key_pipe` (qwen_fake, qwen_weird) get a stand-in for the transformers pipeline that
records the chat messages it is given and answers with scripted replies; their parsing (the ```json fence regex,
json_repair's `repair_json`, `json.loads`) is the release's, with json_repair 0.47.3 (the version the release's
requirements.txt pins). The score is `float(reply["score"])` as `img_gen_grpo_rewards.py` takes it; "error" where
that raises (the release then asks again, 3 attempts in all, then scores 0). The release's module imports `openai`
for its vLLM client, unused here: a placeholder module stands in for it. Re-run:

    pip install --target SITE --no-deps json_repair==0.47.3
    python tests/data/make_qwen_judge_fixture.py AR-GRPO/reward_utils/qwen_vl_reward.py SITE

tests/test_reward_originals.py checks rewards/qwen_judge.py against this file.
"""
import contextlib
import importlib.util
import json
import os
import sys
import types

CONDITIONS = ["a photo of tench, Tinca tinca", 'a red "STOP" sign & a blue car']
REPLIES = [
    '```json\n{"description": "a dog", "score": 3.5, "explanation": "ok"}\n```',
    '```json\n{\n    "score": 0,\n}\n```',
    '{"score": 1}',
    'Here it is: {"score": 4.0, "explanation": "fine"} Thanks.',
    '```json{"score": 2}```',
    "{'score': 1}",
    '{"score": True}',
    '```json\n{"description": "a cat", "score": 2.5\n```',
    '{score: 3}',
    '{"score": "4.5"}',
    '{"score": "high"}',
    'I cannot judge this image.',
    '{"score": 1} {"score": 0}',
    '[{"score": 2}]',
    '```json\n{\n  "score": 3.5, // total\n}\n```',
    'The image shows a dog.\n```json\n{"description": "d", "score": 5}\n```\nDone.',
    '{"score": -1}',
    '{"description": "x"}',
    '```json\n{\n"description": "A dog",\n"score": 4,\n"explanation": "The image shows a dog matches',
    '{"description": "a \\"quoted\\" word", "score": 0.5}',
    '```json\n{"score": 1}\n```\n```json\n{"score": 0}\n```',
    '{"score": 2, "score": 3}',
]


class Pipe:
    """Stands in for transformers' image-text-to-text pipeline: records the messages, answers a scripted reply."""

    def __init__(self, reply):
        self.reply, self.messages = reply, None

    @contextlib.contextmanager
    def device_placement(self):
        yield

    def __call__(self, text, **kw):
        self.messages = json.loads(json.dumps([{**m, "content": [c for c in m["content"] if c["type"] == "text"]}
                                               for m in text]))
        return [{"generated_text": [*text, {"role": "assistant", "content": self.reply}]}]


def main(release_py: str, site: str) -> None:
    from PIL import Image

    sys.path.insert(0, site)
    sys.modules["openai"] = types.SimpleNamespace(OpenAI=None)
    spec = importlib.util.spec_from_file_location("qwen_vl_reward", release_py)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    img = Image.new("RGB", (8, 8), (120, 30, 200))

    def run(fn, arg, reply):
        pipe = Pipe(reply)
        try:
            res, _ = fn(img, arg, pipe)
            score = float(res["score"])
        except Exception as e:  # the release's _reward_func catches every exception and asks again
            score = f"error: {type(e).__name__}"
        return pipe.messages, score

    prompts = {}
    for c in CONDITIONS:
        msgs, _ = run(mod.question_image_score_with_lbl_pipe, c, '{"score": 1}')
        prompts[f"label|{c}"] = msgs
    for kind, key in (("fake", "fake_judge"), ("weird", "weird_judge")):
        msgs, _ = run(mod.question_image_score_prompt_key_pipe, key, '{"score": 1}')
        prompts[kind] = msgs
    parsed = [{"reply": r, "score": run(mod.question_image_score_prompt_key_pipe, "fake_judge", r)[1]}
              for r in REPLIES]
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "qwen_judge_release.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"source": "Kwai-Klear/AR-GRPO reward_utils/qwen_vl_reward.py, json_repair 0.47.3",
                   "messages": prompts, "replies": parsed}, f, indent=1)
    print(f"wrote {out}: {len(prompts)} prompts, {len(parsed)} replies "
          f"({sum(isinstance(p['score'], str) for p in parsed)} raise)")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
