"""Known-wrong implementations, one list per exercise (private: not copied into the student tree).

A mutant is a text patch of one file's solution regions of its exercise: each (old, new) pair replaces text that
occurs exactly once in those regions, so a mutant keeps applying while the reference changes around it, and
stops with a clear message (selfcheck) when the text it patches is rewritten. `expect` is a piece of the feedback
the grader must give: the message naming the mistake.
"""
from __future__ import annotations

V, S, GC, AR = "grpo_vanilla.py", "stage.py", "gcpo.py", "ar_grpo.py"
SAMPLING = "common/sampling.py"
COUNT = "assignments/counting_reward.py"


def m(ex, file, name, patches, expect):
    return {"ex": ex, "file": file, "name": name, "patches": patches, "expect": expect}


MUTANTS = [
    # 01: group advantages
    m("01", V, "statistics over the batch, not the group",
      [("rewards.mean(dim=1, keepdim=True)", "rewards.mean()"), ("rewards.std(dim=1, keepdim=True)", "rewards.std()")],
      "not per group"),
    m("01", V, "biased std", [("rewards.std(dim=1, keepdim=True)", "rewards.std(dim=1, keepdim=True, correction=0)")],
      "biased std"),
    m("01", V, "sign flipped", [("(rewards - mean) / (std + eps)", "(mean - rewards) / (std + eps)")], "wrong sign"),
    m("01", V, "ε under the square root", [("(std + eps)", "(std.pow(2) + eps).sqrt()")], "ε"),
    m("01", V, "no ε", [("(rewards - mean) / (std + eps)", "(rewards - mean) / std")], "no NaN"),
    m("01", V, "normalised in place", [("return (rewards - mean) / (std + eps)", "return rewards.sub_(mean).div_(std + eps)")],
      "in place"),  # new (#25)
    # 02: k3
    m("02", V, "k1 instead of k3", [("return torch.exp(delta) - delta - 1", "return -delta")], "k1"),
    m("02", V, "KL direction reversed", [("delta = ref_logp - logp", "delta = logp - ref_logp")], "reversed"),
    m("02", V, "k2 instead of k3", [("return torch.exp(delta) - delta - 1", "return 0.5 * delta**2")], "k2"),
    m("02", V, "missing − 1", [("torch.exp(delta) - delta - 1", "torch.exp(delta) - delta")], "missing − 1"),
    m("02", V, "log π_θ detached inside k3", [("delta = ref_logp - logp", "delta = ref_logp - logp.detach()")],
      "detached"),  # new (#25)
    # 03: the loss
    m("03", V, "sequence sum instead of token mean", [("return per_token.mean(), {", "return per_token.sum(1).mean(), {")],
      "token mean"),
    m("03", V, "min and max swapped", [("pg = torch.maximum(", "pg = torch.minimum(")], "min and max swapped"),
    m("03", V, "no clipping", [("torch.maximum(-a * ratio, -a * ratio.clamp(1 - clip_eps, 1 + clip_eps))",
                                "-a * ratio")], "not clipped"),
    m("03", V, "KL penalty with the wrong sign", [("per_token = pg + beta * kl", "per_token = pg - beta * kl")],
      "wrong sign"),
    m("03", V, "one ratio per image (sequence-level)",
      [("ratio = torch.exp(logp - old_logp)", "ratio = torch.exp((logp - old_logp).sum(1, keepdim=True)).expand_as(logp)")],
      "sequence-level"),
    m("03", V, "clipfrac a count, not a fraction",
      [("clipfrac = ((ratio - 1).abs() > clip_eps).float().mean()", "clipfrac = ((ratio - 1).abs() > clip_eps).float().sum()")],
      "fraction"),  # new (#25)
    # 04: the sampling distribution
    m("04", SAMPLING, "CFG applied to probabilities",
      [("logits = logits_u.float() + cfg_scale * (logits - logits_u.float())",
        "logits = (logits_u.float().softmax(-1) + cfg_scale * (logits.softmax(-1) - logits_u.float().softmax(-1)))"
        ".clamp_min(1e-12).log()")], "probabilities"),
    m("04", SAMPLING, "CFG with l_c and l_u swapped",
      [("logits = logits_u.float() + cfg_scale * (logits - logits_u.float())",
        "logits = logits + cfg_scale * (logits_u.float() - logits)")], "swapped"),
    m("04", SAMPLING, "temperature multiplies", [("logits = logits / temperature", "logits = logits * temperature")],
      "multiplies"),
    m("04", SAMPLING, "top-p drops the crossing token",
      [("remove[..., 1:] = remove[..., :-1].clone()", "remove[..., 1:] = remove[..., 1:].clone()")], "crosses p"),
    m("04", SAMPLING, "top-k on the conditional logits",
      [("kth = torch.topk(logits, top_k, dim=-1)", "kth = torch.topk(logits_c.float(), top_k, dim=-1)"),
       ("logits.masked_fill(logits < kth,", "logits.masked_fill(logits_c.float() < kth,")], "conditional logits"),
    m("04", SAMPLING, "top-p mass from the probabilities before top-k",
      [("    logits = logits / temperature\n", "    logits = logits / temperature\n    unfiltered = logits\n"),
       ("cum = sorted_logits.softmax(-1).cumsum(-1)", "cum = unfiltered.softmax(-1).gather(-1, idx).cumsum(-1)")],
      "before top-k"),  # new (#25)
    m("04", SAMPLING, "top-p applied before top-k",
      [("    if top_k > 0 and top_k < logits.shape[-1]:\n"
        "        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]\n"
        "        logits = logits.masked_fill(logits < kth, float(\"-inf\"))\n", ""),
       ("    return F.log_softmax(logits, dim=-1)",
        "    if top_k > 0 and top_k < logits.shape[-1]:\n"
        "        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]\n"
        "        logits = logits.masked_fill(logits < kth, float(\"-inf\"))\n"
        "    return F.log_softmax(logits, dim=-1)")],
      "before top-k"),  # new (#25)
    # 05: STAGE similarity, mask, masked advantages
    m("05", S, "similarity across groups",
      [("    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)",
        "    P0 = q.shape[0]\n    q, adv = q.reshape(1, -1, *q.shape[2:]), adv.reshape(1, -1)\n"
        "    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)"),
       ("torch.where(den > 0, num / den.clamp_min(1), torch.ones_like(num))",
        "torch.where(den > 0, num / den.clamp_min(1), torch.ones_like(num)).reshape(P0, -1, q.shape[2])")],
      "across groups"),
    m("05", S, "strict opposite set (A_i·A_j < 0)", [("<= 0).to(q.dtype)", "< 0).to(q.dtype)")], "A_i·A_j < 0"),
    m("05", S, "self-similarity counted",
      [("cos = cos * (1 - torch.eye(q.shape[1], dtype=q.dtype, device=q.device))[..., None]", "cos = cos")],
      "cos(i, i) = 1"),
    m("05", S, "dot products instead of cosines", [("q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)", "q = q")],
      "norms"),
    m("05", S, "mask not normalised", [("return ((1 - sim) / 2).clamp(0, 1)", "return 1 - sim")],
      "without the normalisation"),
    m("05", S, "release normalisation over the batch", [("mask.sum(dim=(1, 2), keepdim=True)", "mask.sum()")],
      "whole batch"),
    # 06: STAGE entropy reward
    m("06", S, "argmax: one best sample per group",
      [("top = (rewards == rewards.max(dim=1, keepdim=True).values).to(rewards.dtype)",
        "top = torch.zeros_like(rewards).scatter(1, rewards.argmax(dim=1, keepdim=True), 1.0)")], "tied"),
    m("06", S, "bonus to every sample", [("return rewards + lam * top * r_ent", "return rewards + lam * r_ent")],
      "every sample"),
    m("06", S, "|ΔH| instead of ΔH²", [("(h_ref - h_pol) ** 2", "(h_ref - h_pol).abs()")], "SQUARED"),
    m("06", S, "centred over the whole group",
      [("r_ent = r_ent - (r_ent * top).sum(1, keepdim=True) / top.sum(1, keepdim=True)",
        "r_ent = r_ent - r_ent.mean(1, keepdim=True)")], "not over the whole group"),
    # 07: GCPO
    m("07", GC, "weight not detached", [("return w.detach() if detach else w", "return w")], "not detached"),
    m("07", GC, "running sum", [("w = e.cumsum(1) / torch.arange(1, logp.shape[1] + 1, device=logp.device, dtype=e.dtype)",
                                 "w = e.cumsum(1)")], "running SUM"),
    m("07", GC, "log-ratio not clipped", [("e = torch.exp((logp - ref_logp).clamp(-clip, clip))",
                                           "e = torch.exp(logp - ref_logp)")], "not clipped"),
    m("07", GC, "ratio reversed", [("e = torch.exp((logp - ref_logp).clamp(-clip, clip))",
                                    "e = torch.exp((ref_logp - logp).clamp(-clip, clip))")], "reversed"),
    m("07", GC, "critical sets overlap", [(".masked_fill(init | grad, float(\"inf\"))", ".masked_fill(init & grad, float(\"inf\"))")],
      "overlap"),
    m("07", GC, "highest similarity", [("s = sim.float().repeat_interleave(", "s = (-sim.float()).repeat_interleave(")],
      "HIGHEST"),
    m("07", GC, "gradient window from 0", [("lo, hi = k, min(T, k + int(0.8 * T))", "lo, hi = 0, min(T, k + int(0.8 * T))")],
      "window"),
    m("07", GC, "loss over all tokens", [("return per_token[mask].mean(), {", "return per_token.mean(), {")],
      "all tokens"),
    m("07", GC, "clipfrac over all tokens", [("clipfrac = ((ratio - 1).abs() > clip_eps)[mask].float().mean()",
                                             "clipfrac = ((ratio - 1).abs() > clip_eps).float().mean()")],
      "critical tokens"),  # new (#25)
    # 08: AR-GRPO
    m("08", AR, "right-closed bins", [("torch.where(s < 0.3, 0.5, torch.where(s < 0.6, 1.0, 1.5))",
                                       "torch.where(s <= 0.3, 0.5, torch.where(s <= 0.6, 1.0, 1.5))")], "left-closed"),
    m("08", AR, "raw score without Q(s)", [("5 * s + quantise(s)", "5 * s")], "misses the quantised"),
    m("08", AR, "quality without ×2", [("r_i = 2 * quality if", "r_i = quality if")], "factor 2"),
    m("08", AR, "realism without /4", [("(s / 4 for s in realism)", "(s for s in realism)")], "division by 4"),
    # 09: the counting reward
    m("09", COUNT, "no confidence threshold", [(' and d["score"] > threshold', "")], "low-confidence"),
    m("09", COUNT, "every class counted", [('d["class"] == cls and ', "")], "other classes"),
    m("09", COUNT, "not clipped at 0", [("return max(0.0, 1.0 - abs(n - count) / count)",
                                         "return 1.0 - abs(n - count) / count")], "clip at 0"),
    m("09", COUNT, "error relative to n", [("abs(n - count) / count)", "abs(n - count) / max(n, 1))")], "divided by n"),
]
