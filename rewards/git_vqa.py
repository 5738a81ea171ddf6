"""GIT VQA reward of the T2I-R1 mix (STAGE §4.1, App. B.1): microsoft/git-large-vqav2 asked "{phrase}?" per attribute
phrase, scored by its yes-probability.

Metadata rows are T2I-R1's (`geneval_and_t2i_data_final.json`): {"prompt", "nouns", "task_type",
"attr_nouns"?, ...}. Per image:
- task_type "spatial" or "numeracy": 0 (GIT is not asked);
- otherwise one question "{phrase}?" per phrase of `attr_nouns` (or of `nouns` when attr_nouns is null); the
  input is [CLS] + the question's tokens (no [SEP]); from the next-token distribution,
  p = P("yes") / (P("yes") + P("no")); the reward is the mean of p over the questions, 1 if there are none.
Images are truncated to 8 bits first (the STAGE release hands its scorers PIL images made by Janus's float-to-uint8
cast), then GIT's CLIP-style preprocessing (shortest side + centre crop at the processor's size and mean/std).
tests/test_reward_originals.py checks the reward against the release's `reward_git.py` run on a tiny random GIT.
All (image, question) pairs of a batch go through the model together (right-padded; the causal text mask
makes the last real token independent of the padding).
"""
from __future__ import annotations

import torch

from rewards.clip import clip_pixels, truncate_8bit
from rewards.hub import pretrained, require, source

MODEL_ID = "microsoft/git-large-vqav2"
ENV = "GIT_VQA_MODEL"
SKIP_TASKS = ("spatial", "numeracy")


def questions(meta: dict) -> list[str] | None:
    """The questions for one metadata row, or None when GIT does not score this task (reward 0)."""
    if meta.get("task_type") in SKIP_TASKS:
        return None
    phrases = meta.get("attr_nouns")
    if phrases is None:
        phrases = meta.get("nouns") or []
    return [f"{p}?" for p in phrases]


class GitVQAReward:
    def __init__(self, model, tokenizer, image_size: int, mean, std, batch_size: int = 32):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_size, self.mean, self.std = image_size, tuple(mean), tuple(std)
        self.batch_size = batch_size
        ids = tokenizer.convert_tokens_to_ids(["yes", "no"])
        if tokenizer.cls_token_id is None or None in ids or tokenizer.unk_token_id in ids:
            raise ValueError("the GIT tokenizer needs [CLS], 'yes' and 'no' tokens")
        self.yes_no = torch.tensor(ids)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def yes_probability(self, pixels: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """pixels (N,3,S,S) preprocessed, texts (N,) questions -> P(yes)/(P(yes)+P(no)) (N,)."""
        rows = [[self.tokenizer.cls_token_id] + self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        n = max(map(len, rows))
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.tensor([r + [pad] * (n - len(r)) for r in rows], device=self.device)
        lengths = torch.tensor([len(r) for r in rows], device=self.device)
        mask = (torch.arange(n, device=self.device)[None] < lengths[:, None]).long()
        logits = self.model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
        last = logits[torch.arange(len(rows), device=self.device), logits.shape[1] - n + lengths - 1]
        return last[:, self.yes_no.to(self.device)].float().softmax(-1)[:, 0]

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> torch.Tensor:
        if len(metadata) != len(images):
            raise ValueError(f"reward 'git_vqa': {len(images)} images but {len(metadata)} metadata rows")
        qs = [questions(m) for m in metadata]
        pairs = [(b, q) for b, qb in enumerate(qs) if qb for q in qb]
        probs = torch.zeros(len(pairs))
        if pairs:
            pixels = clip_pixels(truncate_8bit(images.to(self.device)), self.image_size, "crop", self.mean, self.std)
            for i in range(0, len(pairs), self.batch_size):
                chunk = pairs[i:i + self.batch_size]
                idx = torch.tensor([b for b, _ in chunk], device=self.device)
                probs[i:i + len(chunk)] = self.yes_probability(pixels[idx], [q for _, q in chunk]).cpu()
        out = torch.zeros(len(images))
        owner = torch.tensor([b for b, _ in pairs], dtype=torch.long)
        for b, qb in enumerate(qs):
            if qb is None:
                out[b] = 0.0
            elif not qb:
                out[b] = 1.0
            else:
                out[b] = probs[owner == b].mean()
        return out


def _processor_settings(processor, model) -> tuple[int, tuple, tuple]:
    ip = getattr(processor, "image_processor", None)
    crop = getattr(ip, "crop_size", None) or {}
    size = crop.get("height") if isinstance(crop, dict) else None
    size = size or model.config.vision_config.image_size
    mean = getattr(ip, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
    std = getattr(ip, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)
    return int(size), tuple(mean), tuple(std)


def load_git_vqa(device="cpu", model: str | None = None) -> GitVQAReward:
    """GIT VQA with `model`, else $GIT_VQA_MODEL, else microsoft/git-large-vqav2."""
    tf = require("transformers", "git_vqa")
    src = source(model, ENV, MODEL_ID)
    net = pretrained(tf.GitForCausalLM.from_pretrained, src, reward="git_vqa", what="the GIT VQA model", env=ENV)
    proc = pretrained(tf.AutoProcessor.from_pretrained, src, reward="git_vqa", what="the GIT processor", env=ENV)
    return GitVQAReward(net.to(device), proc.tokenizer, *_processor_settings(proc, net))


def validate(metadata: list[dict]) -> None:
    """T2I-R1 rows (`geneval_and_t2i_data_final.json`): 'task_type' and a 'nouns' list."""
    for m in metadata:
        if not isinstance(m, dict) or "task_type" not in m or not isinstance(m.get("nouns"), list):
            raise ValueError(f"the T2I-R1 rewards need metadata with 'task_type' and a 'nouns' list; prompt "
                             f"{m.get('prompt') if isinstance(m, dict) else m!r} has none "
                             f"(use geneval_and_t2i_data_final.json-style rows)")
