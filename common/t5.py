"""FLAN-T5 caption encoder of text-to-image LlamaGen (the official t2i checkpoints), loaded from a local snapshot.

transformers is imported only when one is loaded (load_t5_encoder).
"""
from __future__ import annotations

import torch
import torch.nn as nn


def left_pad(feats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded features (B, L, D) with prefix mask (B, L) -> the valid rows moved to the END of the L
    slots, padded slots zeroed, and the matching mask (LlamaGen's pre-training layout)."""
    L = mask.shape[1]
    src = torch.arange(L, device=mask.device)[None] - (L - mask.sum(1))[:, None]  # (B, L) source row
    valid = src >= 0
    out = feats.gather(1, src.clamp(min=0)[..., None].expand_as(feats))
    return out * valid[..., None].to(feats.dtype), valid


class T5CaptionEncoder(nn.Module):
    """FLAN-T5 encoder features for text-to-image LlamaGen, behind WordEncoder's interface:
    encode(prompts) -> features (B, max_len, d_model), mask (B, max_len) bool.

    Captions are lower-cased with whitespace collapsed (the part of the DeepFloyd `clean_caption` routine,
    which the release applies, that matters for plain captions), tokenised with EOS, truncated to max_len
    (120), and encoded with the attention mask. Padding (docs/ar_grpo.md, "Paper vs released code"):
    - default, LlamaGen's pre-training: valid features at the END of the slots, padded slots zero (left padding);
    - right_pad=True, the AR-GRPO release: T5's right padding, padded slots keep their non-zero encoder outputs.
    Padded slots are masked either way. `template` wraps the cleaned caption (the GCPO release feeds T5
    "<|t2i|>A photo of {caption}<|soi|>"). Both attributes are read at every call, so they can be set after loading.
    """

    def __init__(self, encoder: nn.Module, tokenizer, max_len: int = 120, right_pad: bool = False,
                 template: str = "{}"):
        super().__init__()
        self.encoder, self.tokenizer, self.max_len, self.right_pad = encoder, tokenizer, max_len, right_pad
        self.template = template
        self.tokenizer.padding_side = "right"

    @staticmethod
    def clean(text: str) -> str:
        return " ".join(str(text).lower().split())

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> ids (B, max_len), mask (B, max_len) bool, right-padded (what T5 expects)."""
        t = self.tokenizer([self.template.format(self.clean(p)) for p in prompts], max_length=self.max_len,
                           padding="max_length",
                           truncation=True, return_tensors="pt")
        device = next(self.encoder.parameters()).device
        return t["input_ids"].to(device), t["attention_mask"].to(device).bool()

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, L, d_model)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenize(prompts)
        feats = self(ids, mask)
        return (feats, mask) if self.right_pad else left_pad(feats, mask)


def load_t5_encoder(path: str, max_len: int, right_pad: bool, device: str | torch.device) -> T5CaptionEncoder:
    """FLAN-T5 encoder + tokenizer from a local snapshot (never the hub). bf16 on CUDA as the release,
    fp32 elsewhere (T5 overflows in fp16)."""
    import transformers
    from packaging.version import Version
    from transformers import AutoTokenizer, T5EncoderModel

    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    dtype_kw = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    encoder = T5EncoderModel.from_pretrained(path, local_files_only=True, **{dtype_kw: dtype}).to(device, dtype)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return T5CaptionEncoder(encoder, tokenizer, max_len=max_len, right_pad=right_pad)


def flan_t5_xl_config():
    """The T5Config of google/flan-t5-xl (shapes only: the planner and the paper benchmark build it with random
    weights; its encoder has 1.22B parameters)."""
    from transformers import T5Config

    return T5Config(d_model=2048, d_ff=5120, num_layers=24, num_heads=32, d_kv=64, vocab_size=32128,
                    feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False)
