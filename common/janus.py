"""Janus-Pro backend through transformers' native Janus classes (`JanusForConditionalGeneration`).

STAGE, GCPO and T2I-R1 train Janus-Pro 1B / 7B; their releases vendor DeepSeek's model code. Here the
maintained transformers implementation is used (transformers >= 4.52.1; `deepseek-community/Janus-Pro-*`
are the converted checkpoints). Only this module imports transformers.

Rollout details follow the releases (docs/stage.md, docs/gcpo.md):
    prompt   BOS + "User: {prompt}\\n\\nAssistant:" + <begin_of_image>     (`template="demo"`: <|User|> roles)
    uncond   every position except BOS and <begin_of_image> replaced by the pad token; same attention mask
             (exactly what `JanusForConditionalGeneration.generate(generation_mode="image")` builds)
    step     logits = generation_head(last hidden state), CFG on these raw logits (common/sampling.py);
             the sampled id is fed back as generation_aligner(generation_embeddings(id))
    image    576 tokens = 24 x 24 grid -> 384 x 384 pixels through the frozen VQ decoder
Prompts are LEFT-padded (as `JanusProcessor` does). Positions are the LLaMA defaults (slot index, padding
included), as in `generate`; with rotary embeddings a constant per-row offset does not change attention.

Trainable: the language model only (its text embeddings included). Frozen, as in the releases: the SigLIP
encoder and its aligner, the VQ model, generation_embeddings, generation_aligner and generation_head.
"""
from __future__ import annotations

import inspect

import json
import os

import torch
import torch.nn as nn

HUB_IDS = {"janus-pro-1b": "deepseek-community/Janus-Pro-1B", "janus-pro-7b": "deepseek-community/Janus-Pro-7B"}
TEMPLATES = {
    "train": "User: {prompt}\n\nAssistant:",  # the STAGE / GCPO / T2I-R1 training template
    "demo": "<|User|>: {prompt}\n\n<|Assistant|>:",  # DeepSeek's Janus-Pro inference demo
}
BOI_TOKEN = "<begin_of_image>"


class JanusPolicy(nn.Module):
    """The trainable AR part of Janus: language model + (frozen) image-token embedding, aligner and head.

    Holds the SAME submodules as the full model (no copy), so training it trains `model`. The vision encoder,
    the VQ model and the text lm_head are not part of it, so `copy.deepcopy(policy)` (the reference model)
    duplicates only what scoring needs. All compute goes through this module's methods (FSDP2-friendly).

    cond: {"input_ids": (B, L) long, left-padded prompt ids ending in <begin_of_image>,
           "attention_mask": (B, L) long, 0 on padding}
    """

    def __init__(self, model):
        super().__init__()
        inner = model.model  # JanusModel
        self.language_model = inner.language_model  # LlamaModel: trainable
        self.generation_embeddings = inner.generation_embeddings.requires_grad_(False)  # (V, C) AR input table
        self.generation_aligner = inner.generation_aligner.requires_grad_(False)  # C -> D
        self.generation_head = inner.generation_head.requires_grad_(False)  # D -> V
        self.cache_implementation = "dynamic"  # or "static" (preallocated, as generate uses)
        # the KV cache argument and output field: `cache` since transformers deprecated `past_key_values` (removal: 5.40)
        self.cache_arg = "cache" if "cache" in inspect.signature(self.language_model.forward).parameters \
            else "past_key_values"

    @property
    def layers(self) -> nn.ModuleList:
        """The transformer blocks (common/distributed.py wraps them for activation checkpointing / FSDP2)."""
        return self.language_model.layers

    def embed_images(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, n) image-token ids -> (B, n, D) LLM input embeddings."""
        return self.generation_aligner(self.generation_embeddings(ids))

    def _lm(self, embeds, mask, cache=None):
        """(B, S, D) embeddings, (B, past+S) mask -> (B, S, D) last hidden states, cache."""
        out = self.language_model(inputs_embeds=embeds, attention_mask=mask, use_cache=cache is not None,
                                  **{self.cache_arg: cache})
        return out.last_hidden_state, getattr(out, self.cache_arg)

    def forward(self, cond: dict, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing in one pass: tokens (B, n) -> logits (B, n+1, V) predicting x_0 .. x_n."""
        ids, mask = cond["input_ids"], cond["attention_mask"]
        x = torch.cat([self.language_model.get_input_embeddings()(ids), self.embed_images(tokens)], dim=1)
        mask = torch.cat([mask, mask.new_ones(tokens.shape)], dim=1)  # (B, L + n)
        h, _ = self._lm(x, mask)
        return self.generation_head(h[:, ids.shape[1] - 1 :])  # from the <begin_of_image> position on

    def prefill(self, cond: dict, max_new_tokens: int):
        """Prompt pass. -> logits (B, V) for x_0 and the cache (KV cache, attention mask (B, L))."""
        from transformers import DynamicCache, StaticCache

        ids, mask = cond["input_ids"], cond["attention_mask"]
        cfg = self.language_model.config
        if self.cache_implementation == "static":
            cache = StaticCache(config=cfg, max_cache_len=ids.shape[1] + max_new_tokens)
        else:
            cache = DynamicCache(config=cfg)
        h, cache = self._lm(self.language_model.get_input_embeddings()(ids), mask, cache)
        return self.generation_head(h[:, -1]), (cache, mask)

    def decode(self, token: torch.Tensor, cache):
        """One step: token (B,) -> logits (B, V) for the next token, updated cache."""
        kv, mask = cache
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        h, kv = self._lm(self.embed_images(token[:, None]), mask, kv)
        return self.generation_head(h[:, -1]), (kv, mask)


class JanusT2I:
    """Janus-Pro text-to-image backend (the interface of common/models.py)."""

    def __init__(self, model, tokenizer, template: str = "train"):
        if template not in TEMPLATES:
            raise ValueError(f"unknown Janus prompt template {template!r}; known: {', '.join(TEMPLATES)}")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer, self.template = tokenizer, template
        self.policy = JanusPolicy(model)
        self.policy.language_model.requires_grad_(True)
        gen = model.generation_config
        kw = getattr(gen, "generation_kwargs", None) or {}
        self.bos_id = gen.bos_token_id if gen.bos_token_id is not None else tokenizer.bos_token_id
        self.pad_id = gen.pad_token_id if gen.pad_token_id is not None else tokenizer.pad_token_id
        self.boi_id = kw.get("boi_token_id", tokenizer.convert_tokens_to_ids(BOI_TOKEN))
        if None in (self.bos_id, self.pad_id, self.boi_id):
            raise ValueError("Janus checkpoint lacks bos / pad / <begin_of_image> token ids")
        gen.generation_kwargs = {**kw, "boi_token_id": self.boi_id}  # `generate` reads it from there
        q = model.model.vqmodel.quantize.quant_state_dims  # [24, 24] for 384 x 384
        self.grid, self.num_tokens = (q[0], q[1]), q[0] * q[1]

    weights = None  # with the policy on the meta device: its files (common/weights.py), which `shard` reads

    @property
    def device(self) -> torch.device:
        return next(self.model.model.vqmodel.parameters()).device  # frozen, whole on every rank (the policy may be on meta)

    def prompt_ids(self, prompt: str) -> list[int]:
        """BOS + templated prompt + <begin_of_image> (the releases tokenise the text, then append BOI)."""
        text = TEMPLATES[self.template].format(prompt=prompt)
        return [self.bos_id] + self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.boi_id]

    def cond(self, prompts: list[str]) -> dict:
        """list[str] -> {"input_ids" (B, L), "attention_mask" (B, L)}, left-padded with the pad token."""
        rows = [self.prompt_ids(p) for p in prompts]
        L = max(map(len, rows))
        ids = torch.full((len(rows), L), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), L, dtype=torch.long)
        for b, r in enumerate(rows):
            ids[b, L - len(r) :], mask[b, L - len(r) :] = torch.tensor(r), 1
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}

    def uncond(self, cond: dict) -> dict:
        """generate()'s unconditional rows: all ids but BOS and <begin_of_image> -> pad; mask unchanged."""
        ids = cond["input_ids"]
        keep = (ids == self.bos_id) | (ids == self.boi_id)
        return {"input_ids": ids.masked_fill(~keep, self.pad_id), "attention_mask": cond["attention_mask"].clone()}

    def reward_prompts(self, prompts: list[str]) -> list[str]:
        """The text a reward model compares images with: the prompt itself."""
        return list(prompts)

    @torch.no_grad()
    def codebook(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, C) L2-normalised VQ codebook vectors (C = 8 for Janus-Pro)."""
        q = self.model.model.vqmodel.quantize.get_codebook_entry(ids)  # (B, C, h, w)
        return q.flatten(2).transpose(1, 2)

    @torch.no_grad()
    def input_embeds(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, D) post-aligner LLM input embeddings (GCPO's Janus similarity)."""
        return self.model.prepare_embeddings_for_image_generation(ids)

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, 3, H, W) images in [0, 1]."""
        x = self.model.decode_image_tokens(ids)  # (B, H, W, 3) in about [-1, 1]
        return ((x.permute(0, 3, 1, 2).float() + 1) / 2).clamp(0, 1)

    def save(self, out_dir: str):
        """A directory `load_janus` (and `--model DIR`) reads: config, weights, generation config, tokenizer."""
        self.model.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)


def is_janus_dir(path: str) -> bool:
    """A local directory holding a transformers Janus config.json (model_type "janus")."""
    cfg = os.path.join(path, "config.json")
    if not os.path.isfile(cfg):
        return False
    with open(cfg) as f:
        return json.load(f).get("model_type") == "janus"


def load_janus(name: str, device="cpu", dtype: torch.dtype = torch.float32, template: str = "train",
               download: bool = False, policy_on_meta: bool = False) -> JanusT2I:
    """Janus-Pro by short name ("janus-pro-1b", "janus-pro-7b": the HF cache only, unless download=True)
    or from a local directory (e.g. `hf download deepseek-community/Janus-Pro-1B --local-dir DIR`).
    Never touches the network by default; missing weights raise FileNotFoundError saying what to fetch.
    policy_on_meta: the policy's parameters stay on the meta device and bk.weights names their files (FSDP2 fills
    each rank's shard from them, common/distributed.py); the frozen rest is loaded whole on `device`."""
    from transformers import AutoTokenizer, JanusForConditionalGeneration

    repo = HUB_IDS.get(name, name)
    local = os.path.isdir(name)
    try:
        if policy_on_meta:
            bk = JanusT2I(*_janus_policy_on_meta(repo, local or not download, device, dtype), template)
            bk.weights = _policy_weights(repo, local or not download, bk.policy)
            return bk
        model = JanusForConditionalGeneration.from_pretrained(repo, dtype=dtype, local_files_only=local or not download)
        tokenizer = AutoTokenizer.from_pretrained(repo, local_files_only=local or not download)
    except OSError as e:
        where, hub = (f"in {name!r}", HUB_IDS["janus-pro-1b"] + " (or -7B)") if local else ("locally", repo)
        raise FileNotFoundError(
            f"Janus-Pro weights not found {where}: run `hf download {hub} --local-dir DIR` (older huggingface_hub: "
            f"`huggingface-cli download ...`) on a machine with network, then pass --model DIR "
            f"({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from None
    return JanusT2I(model.to(device), tokenizer, template)


def _safetensors_files(repo: str, local_only: bool) -> dict[str, str]:
    """Every weight of a transformers checkpoint (a directory or a cached hub id) -> the safetensors file holding it."""
    from safetensors import safe_open
    from transformers.utils import cached_file

    kw = dict(local_files_only=local_only, _raise_exceptions_for_missing_entries=False)
    index = cached_file(repo, "model.safetensors.index.json", **kw)
    if index is None:
        path = cached_file(repo, "model.safetensors", local_files_only=local_only)
        with safe_open(path, framework="pt") as f:
            return {k: path for k in f.keys()}
    with open(index) as f:
        shards = json.load(f)["weight_map"]
    paths = {file: cached_file(repo, file, local_files_only=local_only) for file in set(shards.values())}
    return {k: paths[file] for k, file in shards.items()}


def _janus_policy_on_meta(repo: str, local_only: bool, device, dtype):
    """(model, tokenizer): JanusForConditionalGeneration built with its parameters on the meta device, then
    everything but the policy (vision encoder, VQ model, text head) read whole from the files onto `device`."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig, JanusForConditionalGeneration

    from common.weights import parameters_on_meta

    config = AutoConfig.from_pretrained(repo, local_files_only=local_only)
    files = _safetensors_files(repo, local_only)
    with parameters_on_meta():
        model = JanusForConditionalGeneration(config)
    try:
        model.generation_config = GenerationConfig.from_pretrained(repo, local_files_only=local_only)
    except OSError:  # no generation_config.json: the config's own ids
        model.generation_config = GenerationConfig.from_model_config(config)
    policy = {id(p) for p in JanusPolicy(model).parameters()}
    frozen = {}
    for key, p in model.named_parameters():
        if id(p) not in policy:
            with safe_open(files[key], framework="pt") as f:
                frozen[key] = f.get_tensor(key).to(device, dtype)
    model.load_state_dict(frozen, strict=False, assign=True)
    for m in model.modules():  # buffers (rotary tables, position ids) were built on the CPU
        for n, b in m.named_buffers(recurse=False):
            setattr(m, n, b.to(device))
    return model, AutoTokenizer.from_pretrained(repo, local_files_only=local_only)


def _policy_weights(repo: str, local_only: bool, policy: JanusPolicy):
    """Where each policy parameter is in the checkpoint's files: the full model's key is "model." + its name."""
    from common.weights import Weights

    files = _safetensors_files(repo, local_only)
    names = policy.state_dict().keys()
    missing = [n for n in names if "model." + n not in files]
    if missing:
        raise ValueError(f"{repo}: the checkpoint holds no {', '.join(missing[:3])} (not a Janus-Pro checkpoint?)")
    return Weights(files={n: (files["model." + n], "model." + n) for n in names})


# -- Janus-Pro's real shapes (the planner, the paper benchmark: random weights, no download) --------------
def janus_pro_config(size: str = "1b"):
    """The JanusConfig of deepseek-community/Janus-Pro-1B / -7B (shapes only; weights stay random)."""
    from transformers import JanusConfig

    d, layers, heads, ffn = {"1b": (2048, 24, 16, 5632), "7b": (4096, 30, 32, 11008)}[size]
    return JanusConfig(
        text_config=dict(model_type="llama", vocab_size=102400, hidden_size=d, intermediate_size=ffn,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=16384, rms_norm_eps=1e-6, bos_token_id=0, eos_token_id=2,
                         pad_token_id=1),
        vision_config=dict(projection_dim=d),  # SigLIP-L/16 at 384 px: 576 image tokens
        vq_config=dict(projection_dim=d, image_token_embed_dim=d),  # 16384 x 8 codebook, 16x downsampling
        tie_word_embeddings=False,  # 2.08B / 7.41B parameters in all
    )


# -- a tiny random Janus for tests and the CPU benchmark (no download) -------------------------------
def tiny_janus_config(image_size: int = 32, patch_size: int = 8, hidden: int = 32, layers: int = 2,
                      codebook_size: int = 32):
    """A few-hundred-thousand-parameter JanusConfig: (image_size / patch_size)^2 image tokens, images of
    2 x that grid (one VQ upsampling). Text ids: 0 BOS, 1 pad, 2 EOS, 3 <begin_of_image>, 4 <end_of_image>,
    5 <image_placeholder>, 6 <unk>; see tiny_tokenizer."""
    from transformers import JanusConfig

    g = image_size // patch_size
    return JanusConfig(
        text_config=dict(model_type="llama", vocab_size=64, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, bos_token_id=0,
                         eos_token_id=2, pad_token_id=1),
        vision_config=dict(image_size=image_size, patch_size=patch_size, num_image_tokens=g * g, hidden_size=32,
                           num_hidden_layers=1, num_attention_heads=4, mlp_ratio=2, projection_dim=hidden),
        vq_config=dict(embed_dim=8, num_embeddings=codebook_size, latent_channels=16, base_channels=32,
                       channel_multiplier=[1, 1], num_res_blocks=1, projection_dim=hidden,
                       image_token_embed_dim=hidden),
        image_token_id=5)


def tiny_tokenizer():
    """A word-level tokenizer built locally (the `tokenizers` library), with Janus's special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = ["<bos>", "<pad>", "<eos>", BOI_TOKEN, "<end_of_image>", "<image_placeholder>", "<unk>"]
    words = ["User", "Assistant", ":", "<|User|>", "<|Assistant|>", "a", "an", "photo", "of", "and", "the", "two",
             "red", "green", "blue", "yellow", "cat", "dog", "car", "cup", "circle", "square", "left", "right"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(special + words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(special + ["<|User|>", "<|Assistant|>"])  # added tokens in Janus-Pro's tokenizer too
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", padding_side="left")


def tiny_janus(seed: int = 0, **config) -> JanusT2I:
    """Random tiny Janus backend in float32 (tests, CPU benchmark)."""
    from transformers import GenerationConfig, JanusForConditionalGeneration

    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(tiny_janus_config(**config))
    for m in model.model.modules():  # sharper logits than the 0.02 default, so greedy tokens are not degenerate
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.3)
    model.generation_config = GenerationConfig(bos_token_id=0, pad_token_id=1, eos_token_id=2)
    model.generation_config.generation_kwargs = {"boi_token_id": 3}
    return JanusT2I(model, tiny_tokenizer())
