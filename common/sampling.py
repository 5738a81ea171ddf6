"""KV-cached sampling with classifier-free guidance, and teacher-forced scoring.

Both work with any policy module that implements (see common/models.py):
    forward(cond, tokens (B, n)) -> logits (B, n+1, V)     teacher forcing, predicts x_0..x_n
    prefill(cond, max_new_tokens) -> (logits (B, V), cache)
    decode(token (B,), cache) -> (logits (B, V), cache)
A condition `cond` is a dict of tensors whose first dimension is the batch.

The distribution a token is drawn from is built by ONE function, `log_probs`, used by the sampler and
by the scorer, so "score under the sampling distribution" is exact by construction:
    l = l_u + s·(l_c − l_u)   (CFG on raw logits; s = 1 or no uncond: conditional only)
    l = l / temperature;  top-k, then top-p filtering;  log-softmax.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


# -- condition dicts ---------------------------------------------------------------------------------
def cond_cat(a: dict, b: dict) -> dict:
    return {k: torch.cat([a[k], b[k]]) for k in a}


def cond_slice(c: dict, i: int, j: int) -> dict:
    return {k: v[i:j] for k, v in c.items()}


def cond_repeat(c: dict, n: int) -> dict:
    """Repeat every row n times consecutively (prompt p -> rows p*n .. p*n+n-1)."""
    return {k: v.repeat_interleave(n, dim=0) for k, v in c.items()}


# -- the sampling distribution -----------------------------------------------------------------------
def log_probs(
    logits_c: torch.Tensor,
    logits_u: torch.Tensor | None = None,
    cfg_scale: float = 1.0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> torch.Tensor:
    """(..., V) raw conditional (and unconditional) logits -> (..., V) log-probabilities of the
    distribution tokens are drawn from. Removed tokens get -inf. temperature == 0 means greedy
    (a point mass on the argmax)."""
    # BEGIN SOLUTION ex04
    logits = logits_c.float()
    if logits_u is not None and cfg_scale != 1.0:
        logits = logits_u.float() + cfg_scale * (logits - logits_u.float())
    if temperature == 0:
        point = torch.full_like(logits, float("-inf"))
        return point.scatter(-1, logits.argmax(-1, keepdim=True), 0.0)
    logits = logits / temperature
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        remove = cum > top_p
        remove[..., 1:] = remove[..., :-1].clone()  # keep the first token that crosses p
        remove[..., 0] = False
        logits = logits.masked_fill(remove.scatter(-1, idx, remove), float("-inf"))
    return F.log_softmax(logits, dim=-1)
    # END SOLUTION


def entropy(logp: torch.Tensor) -> torch.Tensor:
    """(..., V) log-probabilities -> (...) entropy, treating -inf entries as zero mass."""
    p = logp.exp()
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)


def _draw(logp: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw: logp (B, V), u (B,) uniform in [0, 1) -> ids (B,).
    Pre-drawn uniforms make the result independent of chunking and of cache vs recompute."""
    cdf = logp.exp().cumsum(-1)  # (B, V)
    ids = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
    return ids.clamp_max(logp.shape[-1] - 1)


# -- sampling ----------------------------------------------------------------------------------------
@torch.no_grad()
def sample(
    model,
    cond: dict,
    uncond: dict | None,
    num_tokens: int,
    cfg_scale: float = 1.0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    chunk_size: int = 0,
    use_cache: bool = True,
    noise: torch.Tensor | None = None,
):
    """Sample `num_tokens` image tokens per row of `cond`.

    CFG doubles the batch (cond rows then uncond rows, both fed the same sampled token).
    chunk_size > 0 bounds memory: that many rows are sampled at once.
    use_cache=False recomputes the full prefix at every step (a reference for tests and benchmarks).
    Randomness: token t of row b is the inverse-CDF draw of noise[b, t] ~ U[0, 1); pass `noise` (B, T)
    or a `generator` it is drawn from.
    Returns tokens (B, T) long, logp (B, T) and entropy (B, T) of the distribution actually sampled from.
    Never returns (B, T, V) logits.
    """
    B = next(iter(cond.values())).shape[0]
    device = next(iter(cond.values())).device
    u = noise if noise is not None else torch.rand(B, num_tokens, generator=generator,
                                                   device=generator.device if generator else "cpu")
    u = u.to(device)
    guided = uncond is not None and cfg_scale != 1.0
    chunk = chunk_size if chunk_size > 0 else B
    out_tok, out_logp, out_ent = [], [], []
    for i in range(0, B, chunk):
        c = cond_slice(cond, i, i + chunk)
        n = next(iter(c.values())).shape[0]
        inp = cond_cat(c, cond_slice(uncond, i, i + chunk)) if guided else c
        tokens = torch.empty(n, 0, dtype=torch.long, device=device)
        logps, ents = [], []
        if use_cache:
            logits, cache = model.prefill(inp, num_tokens)
        for t in range(num_tokens):
            if not use_cache:
                logits = model(inp, torch.cat([tokens, tokens]) if guided else tokens)[:, -1]
            lc, lu = (logits[:n], logits[n:]) if guided else (logits, None)
            lp = log_probs(lc, lu, cfg_scale, temperature, top_k, top_p)  # (n, V)
            nxt = _draw(lp, u[i : i + n, t])
            logps.append(lp.gather(-1, nxt[:, None])[:, 0])
            ents.append(entropy(lp))
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            if use_cache and t < num_tokens - 1:
                logits, cache = model.decode(torch.cat([nxt, nxt]) if guided else nxt, cache)
        out_tok.append(tokens)
        out_logp.append(torch.stack(logps, 1))
        out_ent.append(torch.stack(ents, 1))
    return torch.cat(out_tok), torch.cat(out_logp), torch.cat(out_ent)


# -- teacher-forced scoring --------------------------------------------------------------------------
def score(
    model,
    cond: dict,
    tokens: torch.Tensor,
    uncond: dict | None = None,
    cfg_scale: float = 1.0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
):
    """One forward pass over condition + tokens. -> logp (B, T) of each given token and entropy (B, T).

    Default (uncond=None): the CONDITIONAL-only distribution at temperature 1, what the STAGE, GCPO and
    AR-GRPO releases use in their losses. Pass uncond with the sampler's cfg_scale/temperature/top-k/top-p
    to score under the guided distribution the tokens were actually drawn from.
    Differentiable when called with grad enabled (call it through the DDP/FSDP wrapper when training).
    """
    guided = uncond is not None and cfg_scale != 1.0
    inp = tokens[:, :-1]
    if guided:
        logits = model(cond_cat(cond, uncond), torch.cat([inp, inp]))  # (2B, T, V)
        lc, lu = logits.chunk(2)
    else:
        lc, lu = model(cond, inp), None  # (B, T, V)
    lp = log_probs(lc, lu, cfg_scale, temperature, top_k, top_p)
    return lp.gather(-1, tokens[..., None]).squeeze(-1), entropy(lp)
