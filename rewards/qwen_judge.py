"""Qwen2.5-VL-3B-Instruct as a judge: AR-GRPO's three VLM rewards (AR-GRPO §3.3; paper App. C,
Fig. 13). Registry names and RAW scores (AR-GRPO trains on score / 4: that weight belongs to the training
script, not to the reward):
- `qwen_label`: the quality/label prompt formatted with the condition text (the prompt: the caption for t2i,
  "a photo of <ImageNet names>" for class-conditional use); five 0-1 sub-scores, total "score" in [0, 5];
- `qwen_fake`: "Is the image an AI-generated image? If yes, give 0 score, otherwise give 1 score." -> {0, 1};
- `qwen_weird`: "Is there any strange feature in the image? ..." -> {0, 1}.
The three share one loaded model per (model, device, dtype) (`_JUDGES`), as the release's `clone_reward`.

Message: one user turn [text, image] in Qwen2.5-VL's chat format with its default system prompt
("You are a helpful assistant."), i.e. what the model's chat template renders for that turn; the image
token is expanded to (grid t*h*w) / merge_size^2 copies and `mm_token_type_ids` marks them (transformers 5
needs it for the 3D rope positions). The inputs are built from the tokenizer and image processor directly, not
through `Qwen2_5_VLProcessor`, whose video processor needs torchvision. Images: x * 255 truncated to 8 bits
(the release's `to_pil_image`), then a JPEG round trip at PIL's default quality 75 (the release sent a JPEG
data URL; `jpeg=False` skips it); the image processor resizes as the model's preprocessor config says.

Decoding: greedy, at most 256 new tokens, one `generate` call per chunk of `batch_size` images (left padding);
the model's generation config still applies its other settings (the hub's has repetition_penalty 1.05; the
release sampled with top_k=1, which is greedy). The reply (special tokens dropped) is parsed by `parse_score`:
the first ```json fenced block if any, else the whole reply; the first JSON object in it with a usable "score"
(repairing trailing commas, single quotes, Python literals, bare keys and a missing closing brace, and as a
last resort reading `"score": <number>` from the object's text); float(score), which must be finite.

Failures (the release's `img_gen_grpo_rewards.py:L291-303`): an unparseable reply is asked again, up to
`attempts` (3) in all, then scores 0. With greedy decoding the retry usually reproduces the same reply, as in
the release (`attempts=1` gives the same scores faster). Differences: an exception raised by generation itself
(CUDA OOM, a bad input) is retried too but re-raised after the last attempt instead of becoming a silent 0;
scores are not clipped (as the release) unless `clip_scores=True` ([0, 5] for label, [0, 1] for fake/weird).

Prompt texts: the release's, verbatim (AR-GRPO `reward_utils/qwen_vl_reward.py`); tests/test_reward_originals.py
checks them, and `parse_score`, against the release's own functions run on scripted replies (fixture
tests/data/qwen_judge_release.json). NOT VERIFIED OFFLINE: the real 3B model cannot be run here; tests use a tiny
random Qwen2.5-VL with a local tokenizer and injected replies.

Model: `model` argument, else $QWEN_JUDGE, else Qwen/Qwen2.5-VL-3B-Instruct (offline-first, rewards/hub.py).
dtype float32 by default, as the release (transformers 4.53 default); `dtype="bfloat16"` is faster on GPU.
"""
from __future__ import annotations

import io
import json
import math
import re
from typing import Callable, Sequence

import torch

from rewards.hub import pretrained, require, source

MODEL_ID, ENV = "Qwen/Qwen2.5-VL-3B-Instruct", "QWEN_JUDGE"
SYSTEM = "You are a helpful assistant."

# The release's texts, verbatim (AR-GRPO `reward_utils/qwen_vl_reward.py`: `prompt`, `format_rules`, `prompt_dict`;
# typos and the leading/trailing newlines included). The label question is LABEL_PROMPT.format(condition) +
# LABEL_RULES, as the release composes it; "<image>" is literal text there, the image follows the text.
LABEL_PROMPT = """
You are given a text prompt used to generate image: "{}"
Below is one generated image: <image>
1. Describe the image thoroughly (objects, colors, layout,
etc.), do not be affected by the prompt.
2. Score the generation quality from following aspects:
- Is the object in the generated image satisfying the category according to the prompt? (0-1 score)
- Is the generated image completed without missing parts? (0-1 score)
- Does the content of generated image look real and reasonable? (0-1 score)
- Is the generated image clear, bright and in high quality? (0-1 score)
- Is the generated image free of any noises, defects and artifacts? (0-1 score)
"""
LABEL_RULES = """
Your response should in a **JSON** format following rules below:
1. The final response should have three keys: "description", "score", "explanation".
2. The total score of the image should be store in "score" key, you may use float numbers for the scores. The value of total score should be between 0 and 5.
3. The reasoning and scoring process could be write in "explanation" for you to explain your score.
Following is a exmaple of response:
```json
{
"description": "The image shows a brown dog with one eye and two ears. its mouth is open and the its tongue is sticking out.",
"score": 3.5,
"explanation": "The image shows a brown dog matches the prompt 'a photo of a dog' (1 score). The image is complete and all part can be seen (1 score). The dog in the photo looks unreal becaues it has only one eye and the eye position is not reasonable (0 score). The dog's face is clear but its body and backgroud is blurred (0.5 score). The image do not have any noises, defects and artifacts (1 score). So the total score of this image is 1+1+0+0.5+1=3.5 .'"
}
```
"""
FAKE_PROMPT = """<image>
You need to inspect the image carefully and give a score according to the question below:
- Is the image an AI-generated image? If yes, give 0 score, otherwise give 1 score.
The answer should be in a JSON format like below:
```json
{
    "score": 0,
}
```
"""
WEIRD_PROMPT = """<image>
You need to inspect the image carefully and give a score according to the question below:
- Is there any strange feature in the image? If yes, give 0 score, otherwise give 1 score.
The answer should be in a JSON format like below:
```json
{
    "score": 0,
}
```
"""

KINDS = {"label": (0.0, 5.0), "fake": (0.0, 1.0), "weird": (0.0, 1.0)}  # score ranges (for clip_scores)


def question(kind: str, condition: str) -> str:
    """The text part of the user turn for `kind` ('label' uses the condition text; 'fake'/'weird' do not)."""
    if kind == "label":
        return LABEL_PROMPT.format(condition) + LABEL_RULES
    if kind == "fake":
        return FAKE_PROMPT
    if kind == "weird":
        return WEIRD_PROMPT
    raise ValueError(f"unknown Qwen judge prompt {kind!r}; use one of {', '.join(KINDS)}")


# ----------------------------------------------------------------------------- parsing

_FENCE = re.compile(r"```json\s*(.*?)```", re.DOTALL)
_SCORE_RE = re.compile(r"""["']?score["']?\s*:\s*["']?\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)""")
_CLOSE = {"{": "}", "[": "]"}


def _candidates(text: str) -> list[str]:
    """Top-level {...} spans of `text`, in order (string-aware); an unclosed last one is closed: an open string
    is ended, a dangling comma or colon dropped, and the missing brackets appended."""
    out, i, n = [], 0, len(text)
    while i < n:
        start = text.find("{", i)
        if start < 0:
            break
        stack, quote, esc, j = [], None, False, start
        while j < n:
            ch = text[j]
            if quote:
                if esc:
                    esc = False
                elif ch == "\\":
                    esc = True
                elif ch == quote:
                    quote = None
            elif ch in "\"'":
                # an apostrophe inside a word ("dog's") is text, not a quote
                if ch == "'" and j > 0 and text[j - 1].isalnum() and j + 1 < n and text[j + 1].isalnum():
                    pass
                else:
                    quote = ch
            elif ch in _CLOSE:
                stack.append(_CLOSE[ch])
            elif ch in "}]":
                if stack and stack[-1] == ch:
                    stack.pop()
                if not stack:
                    break
            j += 1
        if j < n:
            out.append(text[start:j + 1])
            i = j + 1
        else:
            tail = text[start:] + (quote or "")
            tail = re.sub(r"[\s,:]*$", "", tail)
            out.append(tail + "".join(reversed(stack)))
            break
    return out


def _repair(s: str) -> str:
    """Make near-JSON parseable: single-quoted strings -> double-quoted, trailing commas dropped, Python
    True/False/None -> JSON, bare keys quoted. Works outside strings only."""
    out, i, n = [], 0, len(s)
    while i < n:
        ch = s[i]
        if ch in "\"'" and not (ch == "'" and 0 < i < n - 1 and s[i - 1].isalnum() and s[i + 1].isalnum()):
            j, buf, esc = i + 1, [], False
            while j < n:
                c = s[j]
                if esc:
                    buf.append(c)
                    esc = False
                elif c == "\\":
                    buf.append(c)
                    esc = True
                elif c == ch:
                    break
                elif c == '"':  # a double quote inside a single-quoted string
                    buf.append('\\"')
                else:
                    buf.append(c)
                j += 1
            out.append('"' + "".join(buf) + '"')
            i = j + 1
            continue
        if ch == ",":
            k = i + 1
            while k < n and s[k].isspace():
                k += 1
            if k < n and s[k] in "}]":
                i += 1
                continue
        m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", s[i:]) if (ch.isalpha() or ch == "_") else None
        if m:
            word = m.group(0)
            rest = s[i + len(word):].lstrip()
            if rest.startswith(":"):
                out.append(f'"{word}"')
            else:
                out.append({"True": "true", "False": "false", "None": "null"}.get(word, word))
            i += len(word)
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _number(v) -> float | None:
    """float(v) as the release (numbers, numeric strings, booleans), None if not a finite number."""
    if isinstance(v, (dict, list)) or v is None:
        return None
    try:
        x = float(v.strip()) if isinstance(v, str) else float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def parse_score(text: str) -> float | None:
    """The "score" of a judge reply, or None (no JSON object with a finite numeric "score")."""
    if not isinstance(text, str):
        return None
    m = _FENCE.search(text)
    body = m.group(1) if m else text
    for cand in _candidates(body):
        obj = None
        for attempt in (cand, _repair(cand)):
            try:
                obj = json.loads(attempt, strict=False)
                break
            except ValueError:
                continue
        if isinstance(obj, dict):
            if "score" in obj:
                x = _number(obj["score"])
                if x is not None:
                    return x
            continue
        found = _SCORE_RE.search(cand)  # unparseable object: read "score": <number> from its text
        if found:
            x = _number(found.group(1))
            if x is not None:
                return x
    return None


# ----------------------------------------------------------------------------- images


def to_pil(image: torch.Tensor, jpeg: bool = True, quality: int = 75):
    """(3, H, W) in [0, 1] -> RGB PIL image: x * 255 truncated to uint8 (torchvision's to_pil_image), then
    optionally a JPEG encode/decode round trip (PIL defaults: quality 75, 4:2:0)."""
    from PIL import Image

    arr = (image.detach().float().clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    img = Image.fromarray(arr, "RGB")
    if jpeg:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        img = Image.open(buf).convert("RGB")
    return img


# ----------------------------------------------------------------------------- judge

GenerateFn = Callable[[list, list], list]  # (PIL images, user-turn texts) -> reply texts


class QwenJudge:
    """Asks a Qwen2.5-VL model one question per image, batched; returns the reply texts.

    Give `model`, `tokenizer` and `image_processor` (transformers objects), or `generate`: a callable
    (list of PIL images, list of question texts) -> list of replies that replaces the model (tests, servers).
    """

    def __init__(self, model=None, tokenizer=None, image_processor=None, *, generate: GenerateFn | None = None,
                 max_new_tokens: int = 256, batch_size: int = 16, system: str | None = SYSTEM):
        if generate is None and (model is None or tokenizer is None or image_processor is None):
            raise ValueError("QwenJudge needs model, tokenizer and image_processor, or a generate callable")
        self.model = model.eval().requires_grad_(False) if model is not None else None
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self._generate = generate
        self.max_new_tokens, self.batch_size, self.system = max_new_tokens, batch_size, system
        if model is not None:
            cfg = model.config
            self.image_token_id = cfg.image_token_id
            names = tokenizer.convert_ids_to_tokens([cfg.vision_start_token_id, cfg.image_token_id,
                                                     cfg.vision_end_token_id])
            if None in names:
                raise ValueError("the tokenizer does not know the model's vision start / image / vision end tokens")
            self.vision_start, self.image_token, self.vision_end = names

    def chat_text(self, text: str) -> str:
        """Qwen2.5-VL chat format of one user turn [text, image] plus the assistant header (the chat template's
        output for that message list, default system prompt included), with one image placeholder."""
        head = f"<|im_start|>system\n{self.system}<|im_end|>\n" if self.system else ""
        return (f"{head}<|im_start|>user\n{text}{self.vision_start}{self.image_token}{self.vision_end}<|im_end|>\n"
                f"<|im_start|>assistant\n")

    def inputs(self, images: list, texts: list[str]) -> dict:
        """Model inputs for (PIL image, question) pairs: left-padded ids, image placeholders expanded."""
        pix = self.image_processor(images=images, return_tensors="pt")
        grid = pix["image_grid_thw"]
        merge = getattr(self.image_processor, "merge_size", None) or self.model.config.vision_config.spatial_merge_size
        counts = (grid.prod(-1) // merge ** 2).tolist()
        chats = [self.chat_text(t).replace(self.image_token, self.image_token * int(k), 1)
                 for t, k in zip(texts, counts)]
        self.tokenizer.padding_side = "left"
        enc = self.tokenizer(chats, padding=True, return_tensors="pt")
        found = (enc["input_ids"] == self.image_token_id).sum(1).tolist()
        if found != [int(k) for k in counts]:
            raise RuntimeError(f"image placeholder tokens {found} do not match the image grids {counts}")
        enc["mm_token_type_ids"] = (enc["input_ids"] == self.image_token_id).int()
        return {**enc, "pixel_values": pix["pixel_values"], "image_grid_thw": grid}

    @torch.no_grad()
    def _hf_generate(self, images: list, texts: list[str]) -> list[str]:
        dev = next(self.model.parameters()).device
        batch = {k: v.to(dev) for k, v in self.inputs(images, texts).items()}
        batch["pixel_values"] = batch["pixel_values"].to(next(self.model.parameters()).dtype)
        out = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False, temperature=None,
                                  top_p=None, top_k=None)
        return self.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)

    def replies(self, images: Sequence, texts: list[str], batch_size: int | None = None,
                jpeg: bool = True) -> list[str]:
        """Reply per (image, question); images are PIL images or (3, H, W) tensors in [0, 1] (converted by
        `to_pil(image, jpeg)`). One generate call per chunk of `batch_size` (default: the judge's)."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} questions")
        pil = [to_pil(im, jpeg) if isinstance(im, torch.Tensor) else im for im in images]
        gen = self._generate or self._hf_generate
        step = batch_size or self.batch_size
        out: list[str] = []
        for i in range(0, len(pil), step):
            got = list(gen(pil[i:i + step], texts[i:i + step]))
            if len(got) != len(texts[i:i + step]):
                raise RuntimeError(f"the judge returned {len(got)} replies for {len(texts[i:i + step])} questions")
            out += got
        return out


class QwenJudgeReward:
    """Reward: the RAW judge score per image (label 0-5, fake/weird 0/1), 0 after `attempts` unparseable replies.
    `jpeg`: JPEG round trip of the images (as the release); `batch_size`: images per generate call (default:
    the judge's). `last_replies` keeps the final reply per image of the latest call (for logging)."""

    def __init__(self, judge: QwenJudge, kind: str, *, attempts: int = 3, clip_scores: bool = False,
                 jpeg: bool = True, jpeg_quality: int = 75, batch_size: int | None = None):
        if kind not in KINDS:
            raise ValueError(f"unknown Qwen judge prompt {kind!r}; use one of {', '.join(KINDS)}")
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        self.judge, self.kind, self.attempts, self.clip_scores = judge, kind, attempts, clip_scores
        self.jpeg, self.jpeg_quality, self.batch_size = jpeg, jpeg_quality, batch_size
        self.last_replies: list[str] = []

    def __call__(self, images: torch.Tensor, prompts: list[str], metadata: list[dict] | None = None) -> torch.Tensor:
        if len(prompts) != len(images):
            raise ValueError(f"reward 'qwen_{self.kind}': {len(images)} images but {len(prompts)} prompts")
        texts = [question(self.kind, p) for p in prompts]
        pil = [to_pil(im, self.jpeg, self.jpeg_quality) for im in images]  # converted once
        scores = torch.zeros(len(images))
        replies = [""] * len(images)
        pending = list(range(len(images)))
        for attempt in range(self.attempts):
            try:
                got = self.judge.replies([pil[i] for i in pending], [texts[i] for i in pending], self.batch_size)
            except Exception:
                if attempt == self.attempts - 1:
                    raise
                continue
            failed = []
            for i, reply in zip(pending, got):
                replies[i] = reply
                x = parse_score(reply)
                if x is None:
                    failed.append(i)
                else:
                    scores[i] = x
            pending = failed
            if not pending:
                break
        self.last_replies = replies
        if self.clip_scores:
            lo, hi = KINDS[self.kind]
            scores = scores.clamp(lo, hi)
        return scores


# ----------------------------------------------------------------------------- loading

_JUDGES: dict[tuple, QwenJudge] = {}


def _dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float16": torch.float16, "fp16": torch.float16}[str(dtype)]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16") from None


def load_judge(device="cpu", model: str | None = None, dtype="float32") -> QwenJudge:
    """The shared judge for (model, device, dtype): loaded once, reused by qwen_label / qwen_fake / qwen_weird."""
    src = source(model, ENV, MODEL_ID)
    dt = _dtype(dtype)
    key = (src, str(torch.device(device)), dt)
    if key not in _JUDGES:
        tf = require("transformers", "qwen_judge")
        what = "the Qwen2.5-VL judge"
        net = pretrained(tf.Qwen2_5_VLForConditionalGeneration.from_pretrained, src, reward="qwen_judge",
                         what=what + " model", env=ENV, dtype=dt)
        tok = pretrained(tf.AutoTokenizer.from_pretrained, src, reward="qwen_judge", what=what + " tokenizer", env=ENV)
        ip = pretrained(tf.AutoImageProcessor.from_pretrained, src, reward="qwen_judge",
                        what=what + " image processor", env=ENV)
        _JUDGES[key] = QwenJudge(net.to(device), tok, ip)
    return _JUDGES[key]


def _make(kind: str, device, model, attempts, clip_scores, dtype, batch_size, jpeg) -> QwenJudgeReward:
    judge = load_judge(device, model=model, dtype=dtype)
    return QwenJudgeReward(judge, kind, attempts=attempts, clip_scores=clip_scores, jpeg=jpeg, batch_size=batch_size)


def make_qwen_label(device="cpu", model: str | None = None, attempts: int = 3, clip_scores: bool = False,
                    dtype="float32", batch_size: int = 16, jpeg: bool = True) -> QwenJudgeReward:
    """`qwen_label` reward: 0-5 quality/label score of the image against its prompt (AR-GRPO's qwenvl_3b*)."""
    return _make("label", device, model, attempts, clip_scores, dtype, batch_size, jpeg)


def make_qwen_fake(device="cpu", model: str | None = None, attempts: int = 3, clip_scores: bool = False,
                   dtype="float32", batch_size: int = 16, jpeg: bool = True) -> QwenJudgeReward:
    """`qwen_fake` reward: 1 if the judge says the image is not AI-generated, else 0 (AR-GRPO's qwenvl_fake)."""
    return _make("fake", device, model, attempts, clip_scores, dtype, batch_size, jpeg)


def make_qwen_weird(device="cpu", model: str | None = None, attempts: int = 3, clip_scores: bool = False,
                    dtype="float32", batch_size: int = 16, jpeg: bool = True) -> QwenJudgeReward:
    """`qwen_weird` reward: 1 if the judge sees no strange feature, else 0 (AR-GRPO's qwenvl_weird)."""
    return _make("weird", device, model, attempts, clip_scores, dtype, batch_size, jpeg)
