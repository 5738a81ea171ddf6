"""GCPO (Group Critical-token Policy Optimization) for autoregressive text-to-image models: grpo_vanilla.py
changed only where GCPO changes it (GCPO §5, Eqs. 6-8). Only 3k critical tokens per image enter the loss.

For each prompt, sample a group of G images (CFG, KV cache), score them with a reward, normalise the
rewards inside the group, and push up the log-probability of the CRITICAL image tokens of the better images:

    A_i   = (R_i − mean_g R) / (std_g R + ε)                         STAGE Eq. 2 / AR-GRPO Eq. 3
    ρ_i,t = π_θ(o_i,t | c, o_i,<t) / π_old(o_i,t | c, o_i,<t)
    k3    = π_ref/π_θ − log(π_ref/π_θ) − 1                            (Schulman's k3 estimator)
    C_i   = [0, k) ∪ C_grad ∪ C_sim, disjoint, exactly 3k tokens, k = int(ρ_sel·N)           GCPO Eq. 6
    C_grad: the k largest |∇Ē| in [k, k + int(0.8N)), where H = entropy (Eq. 1) of the distribution each token
            was SAMPLED from (CFG) on the h×w grid, Ē = mean of the existing {self, left, up-left, up, up-right}
            of H (Eq. 4), ∇ = central differences (one-sided at the borders), |∇| = √(∂x² + ∂y²)
    C_sim : the k smallest s_n = 1/(G(G−1)) Σ_{i≠j} cos(e_i,n, e_j,n) (Eq. 5, group-shared) outside [0, k) ∪ C_grad
    w_i,t = 1/(t+1) Σ_{u≤t} exp(clip(log π_θ(o_i,u) − log π_ref(o_i,u), −c, c))   (≡ 1 at init)   GCPO Eq. 7
    L     = 1/Σ_i|C_i| Σ_i Σ_{t∈C_i} [ −min(ρ·A_i·w_i,t, clip(ρ, 1−ε_c, 1+ε_c)·A_i·w_i,t) + β·k3 ]  GCPO Eq. 8

Implementation choices, each the same in the three authors' releases:
1. μ = 1 inner epoch by default, so π_old = π_θ and ρ ≡ 1 (its gradient is ∇log π): the loss VALUE is
   ≈ 0 while its gradient is not. Watch the reward, not the loss.
2. Images are sampled from the CFG-guided distribution, but log π, log π_ref, the KL and the logged
   entropy use the CONDITIONAL-only logits at temperature 1, as the three releases do (README: each
   algorithm's paper-vs-code table). `--guided-logprobs` scores under CFG and temperature instead, without
   top-k/top-p (a token outside the filtered support would get log p = −inf after the update).
3. std is the unbiased estimator and ε = 1e-4 (the releases); the papers write no ε.
4. Every image has 3k critical tokens, so the mean over them equals the per-image mean, then the batch mean.
5. `--dtype bfloat16` is mixed precision with fp32 master weights (the releases' DeepSpeed bf16 mode);
   `--dtype bfloat16-pure` casts the policy and its AdamW state to bf16 (the AR-GRPO t2i release).
GCPO choices (docs/gcpo.md, "Paper vs released code", lists how the release differs):
6. w is detached, so only critical tokens get gradient (the paper). The release does not detach it, and every
   token before a critical one gets gradient through w, the earliest the most: `--no-detach-weight` (§6.2).
7. s compares the VQ codebook vectors bk.codebook(ids) (the LlamaGen release); the Janus release compares the
   post-aligner LLM-input embeddings: `--sim-embedding input` (for backends with bk.input_embeds(ids)).
8. c and ρ_sel are Args (the releases hard-code 0.5 and 0.1; A.1 lists c = 0.5/1/0.5/0.6/1). H includes any
   temperature/top-k/top-p (the releases: T = 1, no filtering). The grid is bk.grid (releases: √N × √N), the
   window is cut at N, ties go to the lower position (torch.topk: unspecified).
9. π_ref is built even when β = 0, since w needs it (the release then uses log π_ref = 0). `losses/kl` is the
   mean over ALL tokens; `gcpo/frac_critical` (= 3k/N) and `gcpo/weight_mean` (over C) are logged too.

Run:
    python gcpo.py                                          # the ShapeWorld toy on CPU, minutes
    python gcpo.py --preset janus1b_hps_paper               # paper App. A.1 (PRESETS); explicit flags still win
    torchrun --standalone --nproc_per_node=2 gcpo.py        # gloo on CPU, nccl on GPUs
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
import torch.nn.functional as F

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
    # GCPO-specific
    critical_frac: float = 0.1
    """ρ_sel: each of the three critical sets holds k = int(ρ_sel·N) tokens per image (paper §5.1: 10%)"""
    weight_clip: float = 0.5
    """c: clip of log π_θ − log π_ref inside the dynamic advantage weight, Eq. 7"""
    detach_weight: bool = True
    """detach w: only critical tokens get gradient (the paper); --no-detach-weight = the release (docs/gcpo.md)"""
    sim_embedding: Literal["codebook", "input"] = "codebook"
    """embeddings the group similarity compares: 'codebook' (VQ vectors) or 'input' (bk.input_embeds, Janus)"""
    t5_template: str = "{}"
    """LlamaGen t2i: the T5 input around the caption ('<|t2i|>A photo of {}<|soi|>' = the GCPO release)"""
    preset: Literal["toy", "llamagen_hps_paper", "janus1b_geneval_paper", "janus1b_hps_paper",
                    "janus7b_geneval_paper", "janus7b_hps_paper",
                    "llamagen_hps_release", "janus1b_geneval_release", "janus1b_hps_release"] = "toy"
    """the paper's experiments (App. A.1: *_paper) or the release's scripts (*_release; none for Janus-Pro-7B),
    PRESETS; explicit flags still win; --print-preset prints the resolved experiment, --plan-memory NxGB its memory on
    N GPUs of GB GB, and exits"""


# Paper App. A.1 (max grad norm 1.0 everywhere; bf16 with fp32 master weights, the releases' DeepSpeed bf16).
# prompts_per_step = A.1's batch size x accumulation x 4 GPUs (the Janus release scripts' prompts per device; A.1
# names no GPU count and no LR schedule: constant here, TF32 off); micro_batch_size = one device's images per
# micro-step. GenEval is the binary correctness (the Janus release), our "geneval_coco_strict".
# Each preset also names its training prompts (the release's files; common/prompts.py SOURCES says how to get them)
# and its evaluation: GenEval's 553 prompts x 4 images with the real detector before and after training for the GenEval
# presets; none for HPS (the paper scores it after training on its own benchmark).
_A1 = ("model", "reward", "lr", "beta", "group_size", "cfg_scale", "prompts_per_step", "micro_batch_size",
       "num_steps", "weight_clip")
_GENEVAL = dict(prompts="data/geneval/geneval_train_metadata.jsonl",
                eval_prompts="data/geneval/evaluation_metadata.jsonl",
                eval_detector="coco", eval_samples=4)
_JANUS_HPS = dict(prompts="data/hps/hps_train_metadata.json", eval_prompts="")
_LLAMAGEN_HPS = dict(prompts="data/hps/train_data.json", eval_prompts="", t5_template="<|t2i|>A photo of {}<|soi|>")
PRESETS = {"toy": {}} | {n: dict(zip(_A1, row), dtype="bfloat16", max_grad_norm=1.0,
                                 sim_embedding="codebook" if row[0].startswith("llamagen") else "input", **extra)
                         for n, (row, extra) in {
    "llamagen_hps_paper":    (("llamagen-t2i-xl", "hps", 1e-5, 0.04, 8, 1.0, 16, 16, 900, 0.5), _LLAMAGEN_HPS),
    "janus1b_geneval_paper": (("janus-pro-1b", "geneval_coco_strict", 3e-6, 0.01, 4, 5.0, 8, 8, 1600, 1.0), _GENEVAL),
    "janus1b_hps_paper":     (("janus-pro-1b", "hps", 1e-6, 0.01, 4, 5.0, 8, 8, 1600, 0.5), _JANUS_HPS),
    "janus7b_geneval_paper": (("janus-pro-7b", "geneval_coco_strict", 3e-6, 0.01, 4, 5.0, 8, 8, 1600, 0.6), _GENEVAL),
    "janus7b_hps_paper":     (("janus-pro-7b", "hps", 1e-6, 0.01, 8, 5.0, 16, 32, 1600, 1.0), _JANUS_HPS),
}.items()}
# The release's scripts where they differ from A.1 (it ships scripts for Janus-Pro-1B and LlamaGen only).
# Janus (janus/src/scripts/run_gcpo_{geneval,hps}.sh): 4 GPUs x 2 prompts x G 4 = A.1, --max_steps 1600, no
# lr_scheduler_type (the Trainer's linear decay to 0), --tf32 true; gcpo_trainer.py hard-codes the weight clip 0.5
# and does not detach w. LlamaGen (llamaGen/simpar/configs/config_grpo_hps.yaml, trl/trainer/gcpo_llama_trainer.py):
# per_device_train_batch_size 16 counts completions, so 16 x 4 processes / G 8 = 8 prompts per step; one epoch of the
# 15,000 captions = 1875 steps; cosine_with_min_lr (min_lr_rate 0.1) after warmup_ratio 0.1; no --tf32 (off).
_JANUS_RELEASE = dict(lr_schedule="linear", tf32=True, weight_clip=0.5, detach_weight=False)
PRESETS |= {
    "llamagen_hps_release": dict(PRESETS["llamagen_hps_paper"], prompts_per_step=8, micro_batch_size=16,
                                 num_steps=1875, lr_schedule="cosine_with_min_lr", lr_min_ratio=0.1,
                                 lr_warmup_ratio=0.1, detach_weight=False),
    "janus1b_geneval_release": dict(PRESETS["janus1b_geneval_paper"], **_JANUS_RELEASE),
    "janus1b_hps_release": dict(PRESETS["janus1b_hps_paper"], **_JANUS_RELEASE),
}


# ---------------------------------------------------------------------------------------------------
# ALGO LOGIC: the maths, as small pure functions


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Eq. 2: A = (R − mean_g R) / (std_g R + ε). rewards (P, G) -> advantages (P, G).
    std is unbiased (divisor G − 1), as in the releases. Equal rewards give A = 0 exactly."""
    # BEGIN SOLUTION ex01
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True)  # unbiased
    return (rewards - mean) / (std + eps)
    # END SOLUTION


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(π_θ ‖ π_ref) per token: exp(Δ) − Δ − 1 with Δ = log π_ref − log π_θ. (B, T), ≥ 0."""
    # BEGIN SOLUTION ex02
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1
    # END SOLUTION


def local_mean(H: torch.Tensor) -> torch.Tensor:
    """Eq. 4: mean of the EXISTING members of {self, left, upper-left, upper, upper-right}. (B, h, w) -> (B, h, w)."""
    def five(x):  # x padded by one column left and right and one row on top: the five causal neighbours, summed
        return x[:, 1:, 1:-1] + x[:, 1:, :-2] + x[:, :-1, :-2] + x[:, :-1, 1:-1] + x[:, :-1, 2:]
    return five(F.pad(H, (1, 1, 1, 0))) / five(F.pad(torch.ones_like(H), (1, 1, 1, 0)))


def entropy_gradient(H: torch.Tensor) -> torch.Tensor:
    """|∇Ē| = √(∂x² + ∂y²), central differences of Ē = local_mean(H), one-sided at borders. (B, h, w) -> (B, h, w)."""
    dy, dx = torch.gradient(local_mean(H), dim=(1, 2))
    return torch.sqrt(dx**2 + dy**2)


def group_similarity(q: torch.Tensor) -> torch.Tensor:
    """Eq. 5: mean off-diagonal cosine over the G images of a group at each position.
    q (P, G, T, C) embeddings of the sampled tokens -> s (P, T), shared by the group."""
    u = F.normalize(q.float(), dim=-1, eps=1e-8)
    cos = torch.einsum("pgtc,phtc->ptgh", u, u)  # (P, T, G, G)
    return cos[..., ~torch.eye(q.shape[1], dtype=torch.bool, device=q.device)].mean(-1)


def critical_tokens(entropy: torch.Tensor, sim: torch.Tensor, grid: tuple[int, int], frac: float) -> torch.Tensor:
    """Eq. 6: the three disjoint critical sets, k = int(frac·T) tokens each (GCPO §5.1); ties -> lower position.
    entropy (B, T) of the sampled distribution; sim (P, T) from group_similarity (B = P·G, grouped rows).
    -> (3, B, T) bool: initial, entropy-gradient, low-similarity; the critical mask is `.any(0)`."""
    # BEGIN SOLUTION ex07
    B, T = entropy.shape
    k = int(frac * T)
    init = torch.zeros(B, T, dtype=torch.bool, device=entropy.device)
    init[:, :k] = True
    lo, hi = k, min(T, k + int(0.8 * T))  # the window [k, k + int(0.8N)): never the first k nor the last ~10%
    g = entropy_gradient(entropy.float().view(B, *grid)).view(B, T)[:, lo:hi]
    grad = torch.zeros_like(init).scatter_(1, lo + g.sort(dim=1, descending=True, stable=True).indices[:, :k], True)
    s = sim.float().repeat_interleave(B // sim.shape[0], dim=0).masked_fill(init | grad, float("inf"))
    low = torch.zeros_like(init).scatter_(1, s.sort(dim=1, stable=True).indices[:, :k], True)
    return torch.stack([init, grad, low])
    # END SOLUTION


def dynamic_weight(logp, ref_logp, clip: float, detach: bool = True) -> torch.Tensor:
    """Eq. 7: w_n = 1/(n+1) Σ_{t≤n} exp(clip(log π_θ − log π_ref, −c, c)), over ALL positions. (B, T) -> (B, T).
    detach=False keeps w in the graph (the release): tokens before a critical one then get gradient."""
    # BEGIN SOLUTION ex07
    e = torch.exp((logp - ref_logp).clamp(-clip, clip))
    w = e.cumsum(1) / torch.arange(1, logp.shape[1] + 1, device=logp.device, dtype=e.dtype)
    return w.detach() if detach else w
    # END SOLUTION


def gcpo_loss(logp, old_logp, ref_logp, adv, mask, weight, clip_eps: float, beta: float):
    """Eq. 8 (mean over the critical tokens of the clipped surrogate with A·w for A, plus β·k3). logp, old_logp,
    ref_logp, weight (B, T) (ref_logp None when β = 0); adv (B,); mask (B, T) bool. -> (scalar loss, stats dict)."""
    # BEGIN SOLUTION ex07
    ratio = torch.exp(logp - old_logp)  # (B, T); ≡ 1 on-policy
    a = adv[:, None] * weight  # token-wise advantage A·w
    pg = torch.maximum(-a * ratio, -a * ratio.clamp(1 - clip_eps, 1 + clip_eps))  # (B, T)
    per_token = pg
    kl = torch.zeros_like(logp)
    if beta > 0:
        kl = kl_k3(logp, ref_logp)
        per_token = pg + beta * kl
    with torch.no_grad():
        clipfrac = ((ratio - 1).abs() > clip_eps)[mask].float().mean()
    return per_token[mask].mean(), {"kl": kl.mean().detach(), "clipfrac": clipfrac}
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
    if not 1 <= int(args.critical_frac * bk.num_tokens) <= bk.num_tokens // 3:
        fail(f"--critical-frac {args.critical_frac}: need 1 <= int(frac·N) <= N/3 for N = {bk.num_tokens} tokens")
    if args.sim_embedding == "input" and not hasattr(bk, "input_embeds"):
        fail(f"--sim-embedding input: backend {args.model!r} has no input_embeds(ids); use codebook")
    if args.t5_template != "{}":
        if args.t5_template.count("{}") != 1:
            fail(f"--t5-template {args.t5_template!r} must hold the caption's place as one {{}}")
        if not hasattr(getattr(bk, "text", None), "template"):
            fail(f"--t5-template: backend {args.model!r} has no T5 caption encoder")
        bk.text.template = args.t5_template
    policy = bk.policy
    # π_ref, the frozen initial policy, always (the dynamic weight needs it even when β = 0): with LoRA the same
    # module with its adapters off (no second copy); under FSDP2 a copy of the policy made while it is on the meta
    # device (no memory), filled from the files by `shard`
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
        # ALGO LOGIC (GCPO): critical tokens from the sampled distribution's entropy and the group similarity
        emb = bk.codebook(tokens) if args.sim_embedding == "codebook" else bk.input_embeds(tokens)  # (B, T, C)
        sim = group_similarity(emb.view(P_rank, args.group_size, *emb.shape[1:]))  # (P, T)
        mask = critical_tokens(sample_entropy, sim, bk.grid, args.critical_frac).any(0)  # (B, T): 3k per image
        t1 = time.time()

        # ALGO LOGIC: rewards and group-normalised advantages
        try:
            rewards = compute_rewards(reward_fn, args.reward, images, texts, metas).to(device)  # (B,)
        except RewardError as e:
            fail(f"{e} at step {step}; last checkpoint: {run.last_ckpt or 'none'}")
        adv = group_advantages(rewards.view(P_rank, args.group_size), args.adv_eps).view(-1)  # (B,)
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
                ref_logp = torch.cat([score(ref, c, tokens[s], u, **score_kw)[0]
                                      for c, u, s in zip(cond_mb, uncond_mb, slices)])
        stats = {"loss": 0.0, "kl": 0.0, "clipfrac": 0.0, "entropy": 0.0, "weight": 0.0}
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
                    weight = dynamic_weight(logp, ref_logp[s], args.weight_clip, args.detach_weight)  # (mb, T)
                    loss, st = gcpo_loss(logp, old, ref_logp[s] if ref is not None else None, adv[s], mask[s], weight,
                                         args.clip_eps, args.beta)
                    (loss * mb / B_rank).backward()
                w = mb / B_rank / args.num_inner_epochs
                stats["loss"] += loss.item() * w
                stats["kl"] += st["kl"].item() * w
                stats["clipfrac"] += st["clipfrac"].item() * w
                stats["entropy"] += ent.mean().item() * w
                stats["weight"] += weight[mask[s]].mean().item() * w
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
            "gcpo/frac_critical": mask.float().mean().item(), "gcpo/weight_mean": stats["weight"],
        }
        metrics = run.log(step, metrics, images, rewards, texts)  # averaged over ranks; rollout grids
        run.maybe_save(step, metrics)  # every --save-every steps and the last; SIGTERM/SIGINT: save, exit

    run.finish()  # DDP: ranks identical? held-out GenEval after training; close the logs
