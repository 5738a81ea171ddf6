"""STAGE (arXiv 2509.25027): GRPO with similarity-aware advantage/KL reweighting and an entropy reward.

For each prompt, sample a group of G images (CFG, KV cache), score them with a reward, normalise the
rewards inside the group, and push up the log-probability of every image token of the better images:

    A_i   = (R_i − mean_g R) / (std_g R + ε)                         STAGE Eq. 2 / AR-GRPO Eq. 3
    ρ_i,t = π_θ(o_i,t | c, o_i,<t) / π_old(o_i,t | c, o_i,<t)
    k3    = π_ref/π_θ − log(π_ref/π_θ) − 1                            (Schulman's k3 estimator)
    L     = 1/(G·T) Σ_i Σ_t [ −min(ρ·A_i, clip(ρ, 1−ε_c, 1+ε_c)·A_i) + β·k3 ]
                                                      STAGE Eq. 3 / AR-GRPO Eqs. 4–6 (token mean)
STAGE, per group (q_i,t: L2-normalised VQ codebook vector of o_i,t; H(o): mean_t entropy of π(·|c, o_<t)):
    Sim_i,t = Σ_j 1[A_i·A_j ≤ 0]·cos(q_i,t, q_j,t) / Σ_j 1[A_i·A_j ≤ 0]                  Eqs. 5–6
    M_i,t   = clip((1 − Sim_i,t)/2, 0, 1);   Ã_i,t = M_i,t·A_i replaces A_i in L          Eqs. 7–8
    β'_i,t  = (0.5 + 0.5·clip(Sim_i,t + 1, 0, 1))·β replaces β in L                      §3.2 (KL reweighting)
    R'_i    = R_i + λ·1[R_i = max_g R] / (1 + (H_ref(o_i) − H_θ(o_i))²), λ = 0.4, before A   Eqs. 9–12

Implementation choices, each the same in the three authors' releases:
1. μ = 1 inner epoch by default, so π_old = π_θ and ρ ≡ 1 (its gradient is ∇log π): the loss VALUE is
   ≈ 0 while its gradient is not. Watch the reward, not the loss.
2. Images are sampled from the CFG-guided distribution, but log π, log π_ref, the KL and the logged
   entropy use the CONDITIONAL-only logits at temperature 1, as the three releases do (README: each
   algorithm's paper-vs-code table). `--guided-logprobs` scores under CFG and temperature instead, without
   top-k/top-p (a token outside the filtered support would get log p = −inf after the update).
3. std is the unbiased estimator and ε = 1e-4 (the releases); the papers write no ε.
4. Every image has T tokens, so the token mean equals Eq. 3's 1/G Σ_i 1/|o_i| Σ_t.
5. `--dtype bfloat16` is mixed precision with fp32 master weights (the releases' DeepSpeed bf16 mode);
   `--dtype bfloat16-pure` casts the policy and its AdamW state to bf16 (the AR-GRPO t2i release).
STAGE choices (the default is the paper; docs/stage.md, "Paper vs released code", lists how the release differs):
6. Sim as in the release (the paper is silent): cos(i,i) := 0, i ∈ Opp(i) iff A_i = 0. Reward std ≤ 1e-6 gives
   A ≡ 0, an empty Opp gives Sim := 1: no NaN. Not reproduced: the release's Sim ≡ 1 (β' = β) in all-equal groups
   when the entropy reward is off (M·A = 0 there either way).
7. --release-mask-normalisation: Σ M·A·ρ / (ΣM + 1e-6) per group (= per GPU in the release, averaged over GPUs);
   --release-entropy-centring: λ·top·(R_ent − mean_top R_ent), a no-op when the top sample is unique.
8. Entropies use the log-probs' distribution, π_θ's before the update; the entropy reward builds π_ref even when
   β = 0. Constant LR (the paper states no schedule: the `*_paper` presets); the release decays it linearly to 0
   and runs TF32: the `*_release` presets. The release's gradient accumulation 2 is --prompts-per-step 16.

Run:
    python stage.py                                          # STAGE on the ShapeWorld toy, CPU, minutes
    python stage.py --help                                   # Table 4 switches, release flags, --preset
    torchrun --standalone --nproc_per_node=2 stage.py        # gloo on CPU, nccl on GPUs
"""
from __future__ import annotations

import contextlib
import copy
import functools
import os
import time
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist

from common.lora import adapters_off, add_lora
from common.models import load_model
from common.prompts import load_prompts
from common.run import Run, cli, fail, load_eval_prompts
from common.schedule import lr_factor
from common.sampling import cond_repeat, sample, score
from common.distributed import activation_checkpointing, gathered, mixed_precision, shard
from common.utils import rollout_noise, seed_everything
from rewards import RewardError, check_reward, compute_rewards, get_reward
from rewards.geneval import GenEvalJudge


@dataclass
class Args:
    # Experiment
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """name of this run; outputs go to <out_dir>/<exp_name>_s<seed>"""
    seed: int = 0
    """seed of the initialisation, prompt order and rollout noise"""
    out_dir: str = "runs"
    """where metrics.jsonl, TensorBoard events, grids and checkpoints are written"""
    track: bool = False
    """also log the metrics to Weights & Biases (needs `pip install wandb`; WANDB_MODE=offline works offline)"""
    wandb_project: str = "grpo-ar"
    """the Weights & Biases project of --track"""
    device: str = "auto"
    """'auto' (cuda if available, else cpu), 'cpu' or 'cuda'"""
    image_every: int = 50
    """save a captioned grid of rollouts every N steps, also to TensorBoard / W&B (0 = never)"""
    save_every: int = 0
    """save a resumable checkpoint every N steps (0 = only at the end; SIGTERM/SIGINT also save one)"""
    keep_last: int = 2
    """keep the newest K checkpoints"""
    resume: str = ""
    """continue from a checkpoint: a checkpoints/step_* directory, its checkpoints/ parent or the run directory"""
    allow_changed_prompts: bool = False
    """--resume even though the training prompt file changed since the checkpoint (its content hash differs)"""
    # Model and data
    model: str = "toy"
    """backend name ('toy' = shipped ShapeWorld model, 'tiny' = random test model) or a weights directory"""
    dtype: Literal["float32", "bfloat16", "bfloat16-pure"] = "float32"
    """bfloat16: bf16 compute, fp32 master weights, gradients and AdamW state (the releases' DeepSpeed bf16);
    bfloat16-pure: everything in bf16 (an update below ~0.2% of a weight rounds away)"""
    tf32: bool = False
    """TF32 matmuls and cuDNN convolutions on Ampere+ GPUs (HF Trainer's `--tf32 true`, as the STAGE and GCPO-Janus
    releases run); no effect on CPU"""
    prompts: str = "data/shapeworld/train.jsonl"
    """training prompts: .jsonl (GenEval metadata per line) or .txt (one prompt per line)"""
    reward: str = "geneval"
    """reward name (see rewards/__init__.py) or 'module:factory' for your own"""
    reward_device: str = ""
    """where the reward models run: '' = the rank's device; 'cpu' or 'cuda:K' for every reward; or NAME=DEVICE,..."""
    eval_prompts: str = "data/shapeworld/eval.jsonl"
    """held-out GenEval-format prompts scored before and after training ('' = no evaluation)"""
    eval_samples: int = 8
    """images per held-out prompt in the before/after evaluation (0 = no evaluation)"""
    eval_detector: Literal["shapeworld", "coco"] = "shapeworld"
    """GenEval detector of the evaluation: the toy's, or Mask2Former + CLIP colours on real images"""
    eval_every: int = 0
    """also evaluate every K steps during training, logged as eval/* (0 = only before and after)"""
    stop_on_flat: int = 0
    """stop (after saving) when every group's rewards were equal for K steps in a row: a broken reward (0 = never;
    presets: 20)"""
    # Sampling
    cfg_scale: float = 3.0
    """classifier-free guidance scale s: l_u + s·(l_c − l_u)"""
    temperature: float = 1.0
    """sampling temperature"""
    top_k: int = 0
    """keep the k most likely tokens (0 = all)"""
    top_p: float = 1.0
    """nucleus sampling threshold (1 = off)"""
    sample_chunk: int = 0
    """rows sampled at once (0 = the whole batch); bounds sampling memory"""
    # GRPO
    num_steps: int = 100
    """optimizer steps"""
    prompts_per_step: int = 8
    """P: prompts per step over all ranks (each rank takes P / world_size whole groups)"""
    group_size: int = 8
    """G: images sampled per prompt"""
    num_inner_epochs: int = 1
    """μ: policy updates per rollout batch (1 = on-policy, ratio ≡ 1, as every release)"""
    clip_eps: float = 0.2
    """PPO clip range ε_c of the ratio (inactive when μ = 1)"""
    beta: float = 0.01
    """β: weight of the k3 KL to the frozen reference (0 = no reference model)"""
    adv_eps: float = 1e-4
    """ε added to the group std of the rewards"""
    guided_logprobs: bool = False
    """score log-probs under CFG and temperature (the sampling distribution without top-k/top-p filtering)"""
    # Optimisation
    lr: float = 5e-5
    """AdamW learning rate"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas"""
    lr_schedule: Literal["constant", "linear", "cosine_with_min_lr"] = "constant"
    """learning rate: constant; linear decay to 0 over lr_decay_steps (the releases' Trainer default); or half a
    cosine down to lr_min_ratio·lr (the GCPO LlamaGen release); common/schedule.py"""
    lr_decay_steps: int = 0
    """length of the schedule: steps until linear reaches 0 or cosine its floor (0 = num_steps; the releases: their
    epochs' length)"""
    lr_warmup_ratio: float = 0.0
    """linear warm-up from 0 over the first ceil(ratio·lr_decay_steps) steps (the GCPO LlamaGen release: 0.1)"""
    lr_min_ratio: float = 0.0
    """cosine_with_min_lr: the floor of the LR as a fraction of --lr (the GCPO LlamaGen release: 0.1)"""
    max_grad_norm: float = 1.0
    """gradient clipping norm"""
    micro_batch_size: int = 0
    """images per forward/backward in the update (0 = the whole rank batch); gradients accumulate"""
    # Scale
    dist: Literal["ddp", "fsdp2"] = "ddp"
    """under torchrun: DDP (a full copy per rank) or FSDP2 (parameters, gradients, optimizer state sharded)"""
    cpu_offload: bool = False
    """FSDP2: keep the shards, their gradients and AdamW state in CPU memory (torch's CPUOffloadPolicy; slower)"""
    activation_checkpointing: bool = False
    """recompute each transformer block's activations in the backward pass (less memory, slower update)"""
    lora_rank: int = 0
    """LoRA rank r (peft): train only low-rank adapters on the frozen model; π_ref = adapters off (0 = full training)"""
    lora_alpha: float = 32.0
    """LoRA scale α: the adapters add (α / r)·B·A to each targeted weight"""
    lora_targets: str = ""
    """LoRA: comma-separated linear layers that get adapters ('' = the transformer's attention and MLP projections)"""
    # STAGE-specific
    preset: Literal["toy", "geneval_paper", "hps_mix_paper", "ocr_paper",
                    "geneval_release", "hps_mix_release", "ocr_release"] = "toy"
    """the paper's experiments (App. B.1: *_paper) or the release's scripts (*_release), PRESETS; explicit flags still
    win; --print-preset prints the resolved experiment, --plan-memory NxGB its memory on N GPUs of GB GB, and exits"""
    reweight: bool = True
    """similarity-aware advantage reweighting Ã = M·A (Eqs. 5–8)"""
    kl_reweight: bool = True
    """similarity-aware KL weight β' = (0.5 + 0.5·clip(Sim + 1, 0, 1))·β"""
    entropy_reward: bool = True
    """entropy reward λ·R_ent for the top-reward samples (Eqs. 9–12; the paper's GenEval setting)"""
    wo_kl: bool = False
    """Table 4 "w/o KL": drop the KL term of groups whose task rewards are all equal"""
    release_mask_normalisation: bool = False
    """release: policy term Σ M·A·ρ / (ΣM + 1e-6) per group instead of the token mean of M·A·ρ"""
    release_entropy_centring: bool = False
    """release: entropy bonus centred over the tied top samples, λ·(R_ent − mean_top R_ent)"""


# App. B.1: Janus-Pro-7B, G = 8, 8 prompts per step, CFG 5, 1600 steps; bf16 with fp32 master weights (the release's
# DeepSpeed bf16). Each preset is a whole experiment: its training prompts (the release's own files, which
# common/prompts.py SOURCES says how to get), its reward, and its evaluation (GenEval's 553 prompts x 4 images with the
# real detector, before and after training; the paper scores HPS-mix and OCR on their own benchmarks after training).
# The paper states no LR schedule and no TF32; the release's scripts (src/scripts/run_training_{geneval,hps,ocr}.py:
# 8 GPUs x 1 prompt x G 8, no lr_scheduler_type = the Trainer's linear decay to 0 over --max_steps 1600, --tf32 true)
# and its trainer's loss (mask normalisation, entropy centring: docs/stage.md) are the *_release presets.
JANUS = dict(model="janus-pro-7b", dtype="bfloat16", cfg_scale=5.0, group_size=8, prompts_per_step=8, num_steps=1600,
             eval_prompts="")
RELEASE = dict(lr_schedule="linear", tf32=True, release_mask_normalisation=True, release_entropy_centring=True)
PRESETS = {"toy": {},
           "geneval_paper": dict(JANUS, reward="geneval_coco", lr=5e-6, beta=0.03, entropy_reward=True,
                                 prompts="data/geneval/evaluation_metadata_flow_grpo.json",
                                 eval_prompts="data/geneval/evaluation_metadata.jsonl", eval_detector="coco",
                                 eval_samples=4),
           "hps_mix_paper": dict(JANUS, reward="hps_git_gdino", lr=1e-6, beta=0.01, entropy_reward=False,
                                 prompts="data/t2i_r1/geneval_and_t2i_data_final.json",
                                 prompts_per_step=16),  # the release's 8 prompts x gradient accumulation 2
           "ocr_paper": dict(JANUS, reward="ocr", lr=1e-6, beta=0.01, entropy_reward=False,
                             prompts="data/ocr/train_ocr_tag.json")}
PRESETS |= {f"{name}_release": dict(PRESETS[f"{name}_paper"], **RELEASE) for name in ("geneval", "hps_mix", "ocr")}


# ---------------------------------------------------------------------------------------------------
# ALGO LOGIC: the maths, as small pure functions


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Eq. 2: A = (R − mean_g R) / (std_g R + ε). rewards (P, G) -> advantages (P, G).
    std is unbiased (divisor G − 1), as in the releases. A group with std ≤ 1e-6 gets A = 0 exactly."""
    # BEGIN SOLUTION ex01
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True)  # unbiased
    return torch.where(std > 1e-6, (rewards - mean) / (std + eps), torch.zeros_like(rewards))
    # END SOLUTION


def similarity(q: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """Eqs. 5–6. q (P, G, T, C), adv (P, G) -> Sim (P, G, T): mean cosine to the same group's j with A_i·A_j ≤ 0.
    cos(i, i) := 0 (i counts in its own set iff A_i = 0); an empty set gives Sim := 1."""
    # BEGIN SOLUTION ex05
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cos = torch.einsum("pitc,pjtc->pijt", q, q)  # (P, G, G, T)
    cos = cos * (1 - torch.eye(q.shape[1], dtype=q.dtype, device=q.device))[..., None]  # cos(i, i) := 0
    opp = (adv[:, :, None] * adv[:, None, :] <= 0).to(q.dtype)  # (P, G, G)
    num, den = (cos * opp[..., None]).sum(2), opp.sum(2)[..., None]  # (P, G, T), (P, G, 1)
    return torch.where(den > 0, num / den.clamp_min(1), torch.ones_like(num))
    # END SOLUTION


def advantage_mask(sim: torch.Tensor) -> torch.Tensor:
    """Eq. 7: M = Norm(1 − Sim) = clip((1 − Sim)/2, 0, 1). (P, G, T) -> (P, G, T)."""
    # BEGIN SOLUTION ex05
    return ((1 - sim) / 2).clamp(0, 1)
    # END SOLUTION


def kl_weight(sim: torch.Tensor, a: float = 0.5, b: float = 0.5) -> torch.Tensor:
    """§3.2: β'/β = a + b·clip(Sim + 1, 0, 1) ∈ [0.5, 1]. (P, G, T) -> (P, G, T)."""
    return a + b * (sim + 1).clamp(0, 1)


def masked_advantages(adv: torch.Tensor, mask: torch.Tensor, release: bool = False) -> torch.Tensor:
    """Eq. 8: Ã = M·A. adv (P, G), mask (P, G, T) -> (P, G, T). release: Ã = M·A·G·T / (Σ_group M + 1e-6), whose
    token mean over a group is the release's Σ M·A / (ΣM + 1e-6)."""
    # BEGIN SOLUTION ex05
    a = adv[..., None] * mask
    return a * mask[0].numel() / (mask.sum(dim=(1, 2), keepdim=True) + 1e-6) if release else a
    # END SOLUTION


def entropy_reward(rewards, h_pol, h_ref, lam: float = 0.4, centred: bool = False) -> torch.Tensor:
    """Eqs. 11–12: R' = R + λ·1[R = max_g R]·R_ent, R_ent = 1/(1 + (H_ref − H_θ)²); ties all count. All (P, G).
    centred (release): R_ent minus its mean over the group's top samples."""
    # BEGIN SOLUTION ex06
    top = (rewards == rewards.max(dim=1, keepdim=True).values).to(rewards.dtype)
    r_ent = 1 / (1 + (h_ref - h_pol) ** 2)
    if centred:
        r_ent = r_ent - (r_ent * top).sum(1, keepdim=True) / top.sum(1, keepdim=True)
    return rewards + lam * top * r_ent
    # END SOLUTION


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(π_θ ‖ π_ref) per token: exp(Δ) − Δ − 1 with Δ = log π_ref − log π_θ. (B, T), ≥ 0."""
    # BEGIN SOLUTION ex02
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1
    # END SOLUTION


def grpo_loss(logp, old_logp, ref_logp, adv, clip_eps: float, beta: float, kl_w=None):
    """Eq. 3 (token mean of the clipped surrogate plus β·k3).
    logp, old_logp, ref_logp (B, T) (ref_logp None when β = 0); adv (B,) or Ã (B, T); kl_w β'/β (B, T) or None."""
    # BEGIN SOLUTION ex03
    ratio = torch.exp(logp - old_logp)  # (B, T); ≡ 1 on-policy
    a = adv if adv.dim() == 2 else adv[:, None]
    pg = torch.maximum(-a * ratio, -a * ratio.clamp(1 - clip_eps, 1 + clip_eps))  # (B, T)
    per_token = pg
    kl = kl_weighted = torch.zeros_like(logp)
    if beta > 0:
        kl = kl_k3(logp, ref_logp)
        kl_weighted = kl if kl_w is None else kl_w * kl  # (β'/β)·k3
        per_token = pg + beta * kl_weighted
    with torch.no_grad():
        clipfrac = ((ratio - 1).abs() > clip_eps).float().mean()
    return per_token.mean(), {"kl": kl.mean().detach(), "kl_weighted": kl_weighted.mean().detach(),
                              "clipfrac": clipfrac}
    # END SOLUTION


# ---------------------------------------------------------------------------------------------------
if __name__ == "__main__":
    args = cli(Args, PRESETS)  # --preset: PRESETS[preset] as defaults (explicit flags win), checked (common/run.py)

    # TRY NOT TO MODIFY: distributed setup (nanoGPT style; plain `python` runs as one process)
    ddp = int(os.environ.get("RANK", -1)) != -1
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if ddp:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        rank, world_size = dist.get_rank(), dist.get_world_size()
        device = torch.device(f"cuda:{int(os.environ['LOCAL_RANK'])}" if use_cuda else "cpu")
        if use_cuda:
            torch.cuda.set_device(device)
    else:
        rank, world_size = 0, 1
        device = torch.device("cuda" if use_cuda else "cpu")

    # Bad input fails here, in one line, before any model is built.
    if args.prompts_per_step % world_size:
        fail(f"--prompts-per-step {args.prompts_per_step} is not divisible by world size {world_size}")
    try:
        train_prompts = load_prompts(args.prompts)
        if len(train_prompts) < args.prompts_per_step:
            raise ValueError(f"{args.prompts} holds {len(train_prompts)} prompts, fewer than --prompts-per-step")
        eval_prompts = load_eval_prompts(args, GenEvalJudge(args.eval_detector))  # held-out GenEval prompts + judge
        check_reward(args.reward, train_prompts)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    P_rank = args.prompts_per_step // world_size  # whole groups per rank: advantages need no communication
    B_rank = P_rank * args.group_size  # images per rank per step
    mb = args.micro_batch_size or B_rank
    if B_rank % mb:
        fail(f"--micro-batch-size {mb} must divide the {B_rank} images per rank")
    fsdp = ddp and args.dist == "fsdp2"

    # TRY NOT TO MODIFY: seeding (same init on every rank; rollout noise seeded per (seed, step, group), not per rank)
    seed_everything(args.seed)
    if args.tf32:  # TF32 matmuls and convolutions (Ampere+), as the Trainer's --tf32 true; CPU ignores it
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    # Mixed precision (--dtype bfloat16), as DeepSpeed's bf16 mode in the releases: the policy's parameters, their
    # gradients (so the DDP all-reduce) and AdamW's moments stay fp32; autocast runs the matmuls in bf16. FSDP2
    # does the same through its MixedPrecisionPolicy (bf16 all-gathers, fp32 reduce-scatter). The reference keeps
    # the policy's fp32 storage, so both compute the same bf16 logits and k3 starts at exactly 0 (a bf16 copy differs
    # in the norms and embeddings, and AdamW would turn that rounding into lr-sized steps).
    mixed = args.dtype == "bfloat16"
    dtype = torch.bfloat16 if args.dtype == "bfloat16-pure" else torch.float32
    amp = functools.partial(torch.autocast, device.type, dtype=torch.bfloat16, enabled=mixed)
    try:  # missing weights or packages of the reward or the model: one line, before any training
        # first: the seed alone fixes its initialisation. FSDP2: the policy stays on the meta device (no memory) and
        # `shard` reads each rank's share of its weights from the files: no rank ever holds the whole model
        bk = load_model(args.model, device, dtype, policy_on_meta=fsdp)
        if args.lora_rank:  # LoRA: the model is frozen, only low-rank adapters train (peft, common/lora.py)
            add_lora(bk.policy, args.lora_rank, args.lora_alpha, args.lora_targets)
        reward_fn = get_reward(args.reward, device, args.reward_device)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError, OSError) as e:
        fail(str(e))
    policy = bk.policy
    # π_ref, the frozen initial policy: with LoRA the same module with its adapters off (no second copy); under FSDP2
    # a copy of the policy made while it is on the meta device (no memory), filled from the files by `shard`
    ref = None
    if args.beta > 0 or args.entropy_reward:
        ref = adapters_off(policy) if args.lora_rank else copy.deepcopy(policy).requires_grad_(False)
    if args.activation_checkpointing:
        activation_checkpointing(policy)
    if fsdp:  # shard the policy and the reference: each rank holds 1/world_size of every block
        example = bk.cond([train_prompts[0]["prompt"]])
        mp = mixed_precision(mixed)
        model = shard(policy, example, device, world_size, mp, bk.weights, args.cpu_offload)
        if ref is not None and not args.lora_rank:  # (with LoRA, π_ref is the sharded policy itself)
            ref = shard(ref, example, device, world_size, mp, bk.weights, args.cpu_offload)
    else:
        model = torch.nn.parallel.DistributedDataParallel(policy) if ddp else policy
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=args.adam_betas, weight_decay=args.weight_decay)
    # LR: --lr times the Trainer's schedule (constant, linear to 0, cosine to a floor; warm-up), common/schedule.py
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(
        args.lr_schedule, args.lr_decay_steps or args.num_steps, args.lr_warmup_ratio, args.lr_min_ratio))
    # resume (or start) the run; metrics, checkpoints, SIGTERM/SIGINT, evaluation (common/run.py)
    run = Run(args, bk, optimizer, scheduler, train_prompts, eval_prompts, amp)

    run.evaluate("before")  # held-out strict GenEval before training (not when resuming)
    sample_kw = dict(cfg_scale=args.cfg_scale, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    # guided scoring keeps CFG and temperature but not top-k/top-p: a token the filter drops after the update
    # (or under π_ref) would otherwise get log p = −inf
    score_kw = dict(cfg_scale=args.cfg_scale, temperature=args.temperature) if args.guided_logprobs else {}
    for step in run.steps():
        t0 = time.time()
        batch, group_ids = run.next_prompts()  # this rank's share of the step's P prompts, global group ids

        # ALGO LOGIC: rollout. Each prompt's group of G images is sampled on this rank.
        texts = [m["prompt"] for m in batch for _ in range(args.group_size)]  # B_rank prompts, grouped
        metas = [m for m in batch for _ in range(args.group_size)]
        cond = cond_repeat(bk.cond([m["prompt"] for m in batch]), args.group_size)
        noise = rollout_noise(args.seed, step, group_ids, args.group_size, bk.num_tokens)  # (B, T) uniforms
        with gathered(model), amp():  # FSDP2: gather the shards once for the whole rollout (a no-op otherwise)
            uncond = bk.uncond(cond)
            tokens, _, sample_entropy = sample(policy, cond, uncond, bk.num_tokens, noise=noise,
                                               chunk_size=args.sample_chunk, **sample_kw)  # (B, T)
        images = bk.decode(tokens)  # (B, 3, H, W)
        t1 = time.time()

        # ALGO LOGIC: rewards (STAGE's advantages need the entropies: in the update below)
        try:
            rewards = compute_rewards(reward_fn, args.reward, images, texts, metas).to(device)  # (B,)
        except RewardError as e:
            fail(f"{e} at step {step}; last checkpoint: {run.last_ckpt or 'none'}")
        zero_std = (rewards.view(P_rank, args.group_size).std(dim=1) < 1e-6).float().mean()
        t2 = time.time()

        # ALGO LOGIC: policy update (μ epochs over micro-batches; one optimizer step per epoch)
        slices = [slice(i, i + mb) for i in range(0, B_rank, mb)]
        cond_mb = [{k: v[s] for k, v in cond.items()} for s in slices]
        uncond_mb = [{k: v[s] for k, v in uncond.items()} if args.guided_logprobs else None for s in slices]
        with torch.no_grad(), amp():
            old_logp = ref_logp = None  # (B, T)
            if args.num_inner_epochs > 1:
                old_logp = torch.cat([score(policy, c, tokens[s], u, **score_kw)[0]
                                      for c, u, s in zip(cond_mb, uncond_mb, slices)])
            if ref is not None:
                ref_logp, h_ref = [torch.cat(x) for x in zip(*[score(ref, c, tokens[s], u, **score_kw)
                                                               for c, u, s in zip(cond_mb, uncond_mb, slices)])]
            # STAGE: entropy reward (Eqs. 9–12), advantages (Eq. 2), Sim (Eqs. 5–6), M and Ã (Eqs. 7–8), β'/β
            G, T, R = args.group_size, bk.num_tokens, rewards.view(P_rank, args.group_size)
            if args.entropy_reward:  # H(o) (Eq. 10) under π_ref (above) and under π_θ before the update
                h_pol = torch.cat([score(policy, c, tokens[s], u, **score_kw)[1]
                                   for c, u, s in zip(cond_mb, uncond_mb, slices)])  # (B, T)
                R = entropy_reward(R, h_pol.mean(1).view(P_rank, G), h_ref.mean(1).view(P_rank, G),
                                   centred=args.release_entropy_centring)
            adv = group_advantages(R, args.adv_eps)  # (P, G)
            sim = similarity(bk.codebook(tokens).float().view(P_rank, G, T, -1), adv)  # (P, G, T)
            mask = advantage_mask(sim) if args.reweight else torch.ones_like(sim)
            kl_w = kl_weight(sim) if args.kl_reweight else torch.ones_like(sim)
            if args.wo_kl:  # Table 4 "w/o KL": no KL term in groups whose task rewards are all equal
                kl_w = kl_w * (rewards.view(P_rank, G).std(dim=1) > 1e-6)[:, None, None]
            adv = masked_advantages(adv, mask, args.release_mask_normalisation).view(B_rank, T)  # Ã (B, T)
            kl_w = kl_w.view(B_rank, T)  # β'/β (B, T)
        stats = {"loss": 0.0, "kl": 0.0, "kl_weighted": 0.0, "clipfrac": 0.0, "entropy": 0.0}
        for epoch in range(args.num_inner_epochs):
            for j, s in enumerate(slices):
                # Gradients are reduced once per optimizer step, on the last micro-batch. DDP: no_sync around
                # BOTH forward and backward of the others (DDP decides at forward time whether to sync).
                # FSDP2: the same switch is a flag on the module.
                last = j == len(slices) - 1
                if fsdp:
                    model.set_requires_gradient_sync(last)
                ctx = model.no_sync() if ddp and not fsdp and not last else contextlib.nullcontext()
                with ctx:
                    with amp():
                        logp, ent = score(model, cond_mb[j], tokens[s], uncond_mb[j], **score_kw)  # (mb, T) fp32
                    old = old_logp[s] if old_logp is not None else logp.detach()
                    loss, st = grpo_loss(logp, old, ref_logp[s] if ref is not None else None, adv[s],
                                         args.clip_eps, args.beta, kl_w[s])
                    (loss * mb / B_rank).backward()
                w = mb / B_rank / args.num_inner_epochs
                stats["loss"] += loss.item() * w
                stats["kl"] += st["kl"].item() * w
                stats["kl_weighted"] += st["kl_weighted"].item() * w
                stats["clipfrac"] += st["clipfrac"].item() * w
                stats["entropy"] += ent.mean().item() * w
            grad_norm = torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
            grad_norm = grad_norm.full_tensor() if fsdp else grad_norm  # FSDP2: a sharded (DTensor) norm
            if not (torch.isfinite(grad_norm) and all(torch.isfinite(torch.tensor(v)) for v in stats.values())):
                fail(f"non-finite loss or gradient at step {step} (the update was not applied); last good "
                     f"checkpoint: {run.last_ckpt or 'none'}; resume from it with a lower --lr")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        t3 = time.time()

        # TRY NOT TO MODIFY: logging (metrics averaged over ranks; the reward std over every image of the step)
        metrics = {
            "charts/reward_mean": rewards.mean().item(), "charts/reward_std": run.gather(rewards).std().item(),
            "charts/frac_zero_std_groups": zero_std.item(), "losses/policy_loss": stats["loss"],
            "losses/kl": stats["kl"], "losses/clipfrac": stats["clipfrac"], "losses/entropy": stats["entropy"],
            "losses/sample_entropy": sample_entropy.mean().item(), "losses/grad_norm": grad_norm.item(),
            "perf/images_per_sec": B_rank * world_size / (t3 - t0), "perf/sample_s": t1 - t0,
            "perf/reward_s": t2 - t1, "perf/update_s": t3 - t2, "charts/lr": scheduler.get_last_lr()[0],
            **{f"rewards/{k}": v.mean().item() for k, v in getattr(reward_fn, "last", {}).items()},  # a sum's parts
            "stage/kl_weighted": stats["kl_weighted"],  # mean (β'/β)·k3: the release's logged "kl"
            "stage/mask_mean": mask.mean().item(), "stage/kl_weight_mean": kl_w.mean().item(),
            "stage/frac_entropy_bonus": (R != rewards.view(P_rank, G)).float().mean().item(),
        }
        metrics = run.log(step, metrics, images, rewards, texts)  # averaged over ranks; rollout grids
        run.maybe_save(step, metrics)  # every --save-every steps and the last; SIGTERM/SIGINT: save, exit

    run.finish()  # DDP: ranks identical? held-out GenEval after training; close the logs
