"""AR-GRPO (arXiv 2508.06924): GRPO for LlamaGen (class- and text-conditional) with a multi-faceted reward.

For each prompt, sample a group of G images (CFG, KV cache), score them with a reward, normalise the
rewards inside the group, and push up the log-probability of every image token of the better images:

    A_i   = (R_i − mean_g R) / (std_g R + ε)                         STAGE Eq. 2 / AR-GRPO Eq. 3
    ρ_i,t = π_θ(o_i,t | c, o_i,<t) / π_old(o_i,t | c, o_i,<t)
    k3    = π_ref/π_θ − log(π_ref/π_θ) − 1                            (Schulman's k3 estimator)
    L     = 1/(G·T) Σ_i Σ_t [ −min(ρ·A_i, clip(ρ, 1−ε_c, 1+ε_c)·A_i) + β·k3 ]
                                                      STAGE Eq. 3 / AR-GRPO Eqs. 4–6 (token mean)

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
AR-GRPO, the reward (raw scores s of the reward models; Q the release's quantiser, App. D):
    r_C = Σ_{s ∈ align} (5·s + Q(s))       Eq. 7: CLIP ViT-B/32 and HPSv2.1 cosines, raw and quantised
    r_I = 2·s_quality                       Eq. 8: MANIQA (KonIQ)
    r_R = Σ_{s ∈ realism} s / 4             Eq. 9: the three Qwen2.5-VL-3B judges (label 0–5, fake, weird 0/1)
    r   = λ_C·r_C + λ_I·r_I + λ_R·r_R       Eq. 10 (λ = 1; Tables 6–8 set some to 0)
    Q(s) = −1 (s < 0), 0.5 (s < 0.3), 1 (s < 0.6), 1.5 (s ≥ 0.6; the release crashes at s ≥ 1)
Class-conditional prompts are ImageNet class ids ("207"); the reward models see "a photo of <class names>".
AR-GRPO choices (the default is the paper; docs/ar_grpo.md, "Paper vs released code", lists how the release differs):
6. A reward whose λ is 0 is not built (the release computes it and multiplies by 0: same advantages).
7. Presets: c2i_paper / t2i_paper (AdamW β (0.9, 0.95), wd 0.05, 64 images per step, CFG 2, β 0.1) and
   c2i_release / t2i_release (AdamW defaults, 32 / 64 images, t2i CFG 4 and β 1.0, linear LR over the release's
   20 epochs (about constant over the steps run), pure bf16 t2i, right-padded T5 captions: --t5-right-pad).
   The paper's Table 2 also trains the 384-px c2i models: --model llamagen-c2i-b-384 / -l-384 / -xl. The toy default uses pixel-checkable rewards: r_C from the
   GenEval partial score, r_I from the palette cleanliness of the render, no r_R.

Run:
    python ar_grpo.py                                        # AR-GRPO on the ShapeWorld toy, CPU, minutes
    python ar_grpo.py --preset c2i_paper                     # LlamaGen-B c2i (the paper's ablation model)
    torchrun --standalone --nproc_per_node=2 ar_grpo.py      # gloo on CPU, nccl on GPUs
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
    align_rewards: tuple[str, ...] = ("geneval",)
    """r_C: conditional-alignment rewards, each adds 5·s + Q(s) (paper: clip hps)"""
    quality_reward: str = "shapeworld_quality"
    """r_I: image-quality reward, adds 2·s (paper: maniqa; '' = none)"""
    realism_rewards: tuple[str, ...] = ()
    """r_R: realism judges, each adds s/4 (paper: qwen_label qwen_fake qwen_weird)"""
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
    # AR-GRPO-specific
    preset: Literal["toy", "c2i_paper", "c2i_release", "t2i_paper", "t2i_release"] = "toy"
    """paper / release experiments (PRESETS); flags given explicitly still win; --print-preset prints the resolved
    experiment, --plan-memory NxGB its memory on N GPUs of GB GB, and exits"""
    lambda_c: float = 1.0
    """λ_C: weight of the conditional-alignment reward r_C (Eq. 10)"""
    lambda_i: float = 1.0
    """λ_I: weight of the image-quality reward r_I (Eq. 10)"""
    lambda_r: float = 1.0
    """λ_R: weight of the realism reward r_R (Eq. 10)"""
    t5_right_pad: bool = False
    """t2i LlamaGen: the release's right-padded T5 captions (LlamaGen pre-training: left-padded, zeroed)"""


# Each preset is a whole experiment: model, precision, training prompts (common/prompts.py SOURCES says how to get
# each file), the paper's rewards, and no in-loop evaluation (the paper scores FID/IS and its T2I metrics after
# training). c2i prompts: one class id per ImageNet training image, so classes are drawn in proportion to their
# image counts, as the release's shuffled ImageNet loader does. bf16: fp32 master weights under bf16 autocast (the
# release's `--bf16`); the t2i release also casts the model to bf16 (`force_model_bf16`): bfloat16-pure.
PAPER_REWARDS = dict(align_rewards=("clip", "hps"), quality_reward="maniqa",
                     realism_rewards=("qwen_label", "qwen_fake", "qwen_weird"), eval_prompts="", dtype="bfloat16")
PAPER = dict(PAPER_REWARDS, lr=1e-5, beta=0.1, group_size=8, prompts_per_step=8, cfg_scale=2.0,
             adam_betas=(0.9, 0.95), weight_decay=0.05)  # §4.1: AdamW (0.9, 0.95), wd 0.05, 64 images per step
RELEASE = dict(PAPER_REWARDS, lr=1e-5, group_size=8, adam_betas=(0.9, 0.999), weight_decay=0.0,
               lr_schedule="linear",  # run_*_train.sh: HF Trainer defaults, linear decay over 20 epochs (below)
               tf32=False)  # run_*_train.sh pass no --tf32 (the Trainer's default leaves TF32 matmuls off)
C2I_PROMPTS, T2I_PROMPTS = "data/imagenet/train_images.txt", "data/coco/coco_captions_30000.json"
PRESETS = {"toy": {},
           "c2i_paper": dict(PAPER, model="llamagen-c2i-b", prompts=C2I_PROMPTS, num_steps=100),
           "c2i_release": dict(RELEASE, model="llamagen-c2i-xl", prompts=C2I_PROMPTS, beta=0.1, cfg_scale=2.0,
                               prompts_per_step=4, num_steps=400,
                               lr_decay_steps=20 * 1281167 // 4),  # 20 epochs of ImageNet at 4 prompts per step
           "t2i_paper": dict(PAPER, model="llamagen-t2i-xl", prompts=T2I_PROMPTS, num_steps=300),
           "t2i_release": dict(RELEASE, model="llamagen-t2i-xl", prompts=T2I_PROMPTS, beta=1.0, cfg_scale=4.0,
                               prompts_per_step=8, num_steps=600, dtype="bfloat16-pure", t5_right_pad=True,
                               lr_decay_steps=20 * 30000 // 8)}  # 20 epochs of 30k captions at 8 per step


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


def quantise(s: torch.Tensor) -> torch.Tensor:
    """App. D (release `discrete_reward_map`): raw score s (B,) -> −1 (s < 0), 0.5 ([0, 0.3)), 1 ([0.3, 0.6)),
    1.5 (s ≥ 0.6). The release raises IndexError at s ≥ 1; here 1.5 continues."""
    # BEGIN SOLUTION ex08
    return torch.where(s < 0, -1.0, torch.where(s < 0.3, 0.5, torch.where(s < 0.6, 1.0, 1.5)))
    # END SOLUTION


def multi_reward(align: list[torch.Tensor], quality: torch.Tensor | None, realism: list[torch.Tensor],
                 lam_c: float, lam_i: float, lam_r: float):
    """Eqs. 7–10: raw scores, each (B,) -> r (B,) and the terms {r_C, r_I, r_R} (B,) for logging.
    An absent term (no rewards of that kind) is 0."""
    # BEGIN SOLUTION ex08
    zero = torch.zeros_like((align + realism + [quality])[0])
    r_c = sum((5 * s + quantise(s) for s in align), zero)  # Eq. 7
    r_i = 2 * quality if quality is not None else zero  # Eq. 8
    r_r = sum((s / 4 for s in realism), zero)  # Eq. 9
    return lam_c * r_c + lam_i * r_i + lam_r * r_r, {"r_C": r_c, "r_I": r_i, "r_R": r_r}  # Eq. 10
    # END SOLUTION


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(π_θ ‖ π_ref) per token: exp(Δ) − Δ − 1 with Δ = log π_ref − log π_θ. (B, T), ≥ 0."""
    # BEGIN SOLUTION ex02
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1
    # END SOLUTION


def grpo_loss(logp, old_logp, ref_logp, adv, clip_eps: float, beta: float):
    """Eq. 3 (token mean of the clipped surrogate plus β·k3).
    logp, old_logp, ref_logp (B, T) (ref_logp None when β = 0); adv (B,). -> (scalar loss, stats dict)."""
    # BEGIN SOLUTION ex03
    ratio = torch.exp(logp - old_logp)  # (B, T); ≡ 1 on-policy
    a = adv[:, None]
    pg = torch.maximum(-a * ratio, -a * ratio.clamp(1 - clip_eps, 1 + clip_eps))  # (B, T)
    per_token = pg
    kl = torch.zeros_like(logp)
    if beta > 0:
        kl = kl_k3(logp, ref_logp)
        per_token = pg + beta * kl
    with torch.no_grad():
        clipfrac = ((ratio - 1).abs() > clip_eps).float().mean()
    return per_token.mean(), {"kl": kl.mean().detach(), "clipfrac": clipfrac}
    # END SOLUTION


# ---------------------------------------------------------------------------------------------------
if __name__ == "__main__":
    args = cli(Args, PRESETS)  # --preset: PRESETS[preset] as defaults (explicit flags win), checked (common/run.py)
    # the reward terms AR-GRPO builds: (kind, name); a term whose λ is 0 is skipped
    terms = [("C", n) for n in args.align_rewards if args.lambda_c] + \
        [("I", args.quality_reward)] * bool(args.quality_reward and args.lambda_i) + \
        [("R", n) for n in args.realism_rewards if args.lambda_r]

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
        if not terms:
            raise ValueError("no reward: give --align-rewards, --quality-reward or --realism-rewards with λ > 0")
        for _, name in terms:
            check_reward(name, train_prompts)
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
        reward_fns = {name: get_reward(name, device, args.reward_device) for _, name in terms}
        if args.t5_right_pad and not hasattr(getattr(bk, "text", None), "right_pad"):
            raise ValueError(f"--t5-right-pad: backend {args.model!r} has no T5 caption encoder")
        if args.t5_right_pad:
            bk.text.right_pad = True
    except (ValueError, FileNotFoundError, ImportError, RuntimeError, OSError) as e:
        fail(str(e))
    policy = bk.policy
    # π_ref, the frozen initial policy: with LoRA the same module with its adapters off (no second copy); under FSDP2
    # a copy of the policy made while it is on the meta device (no memory), filled from the files by `shard`
    ref = None
    if args.beta > 0:
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

        # ALGO LOGIC: AR-GRPO's multi-faceted reward (Eq. 10) and group-normalised advantages
        reward_texts = bk.reward_prompts(texts)  # c2i: "a photo of <class names>"; t2i: the caption
        try:
            raw = {name: compute_rewards(reward_fns[name], name, images, reward_texts, metas).to(device)
                   for name in reward_fns}  # raw scores (B,)
        except RewardError as e:
            fail(f"{e} at step {step}; last checkpoint: {run.last_ckpt or 'none'}")
        rewards, parts = multi_reward([raw[n] for k, n in terms if k == "C"],
                                      next((raw[n] for k, n in terms if k == "I"), None),
                                      [raw[n] for k, n in terms if k == "R"], args.lambda_c, args.lambda_i,
                                      args.lambda_r)  # (B,)
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
        stats = {"loss": 0.0, "kl": 0.0, "clipfrac": 0.0, "entropy": 0.0}
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
                                         args.clip_eps, args.beta)
                    (loss * mb / B_rank).backward()
                w = mb / B_rank / args.num_inner_epochs
                stats["loss"] += loss.item() * w
                stats["kl"] += st["kl"].item() * w
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
            **{f"charts/{k}": v.mean().item() for k, v in parts.items()},
            **{f"rewards/{n}": v.mean().item() for n, v in raw.items()},
        }
        metrics = run.log(step, metrics, images, rewards, texts)  # averaged over ranks; rollout grids
        run.maybe_save(step, metrics)  # every --save-every steps and the last; SIGTERM/SIGINT: save, exit

    run.finish()  # DDP: ranks identical? held-out GenEval after training; close the logs
