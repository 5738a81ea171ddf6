"""Memory planner: what one GRPO step of a run needs on each GPU, and the flags that make it fit.

The experiment comes in as (script name, the run's resolved Args); this module imports no script. Its commands:

    python stage.py --preset geneval_paper --plan-memory 8x80       # any script, any flags (common/run.py cli)
    python gcpo.py --preset janus7b_hps_paper --lora-rank 64 --plan-memory 2x80
    python bench.py --memory-table     # every preset on 1x24, 1x80, 2x80, 8x40 and 8x80 GB (docs/models.md)

The model is built on the meta device from its configuration (no weights, no download, no GPU), and every tensor
the scripts keep is counted from it, on the rank that holds the most (rank 0):

EXACT (tests/test_memory.py compares them with the tensors of tiny models under each setting):
    weights     the policy's parameters and buffers in their storage dtype (fp32 under float32 and bfloat16, bf16
                under bfloat16-pure), sharded under FSDP2 (each tensor's dim 0 in ceil(n / world) rows, FSDP2's
                padded shard); with LoRA the frozen base plus fp32 adapters (A: r x in, B: out x r per targeted
                linear). Plus the frozen rest of the backend, whole on every rank (Janus's SigLIP encoder, VQ model
                and text head in the policy's dtype; LlamaGen's VQ in fp32; FLAN-T5-XL in bf16 on a GPU).
    gradients   one per trainable parameter, in its dtype (sharded under FSDP2). DDP also keeps its flat
                all-reduce buckets, the same size again (torch's DDP with gradient_as_bucket_view=False).
    optimizer   AdamW's exp_avg and exp_avg_sq per trainable parameter, in its dtype (sharded under FSDP2); its
                `step` counters are 4-byte CPU tensors, not counted.
    reference   a copy of the policy's parameters and buffers when beta > 0 (sharded like the policy); none with
                LoRA, whose reference is the same module with the adapters off.

ESTIMATES (the formulas below; they are not measured on a GPU here):
    rollout KV cache   per CFG-doubled image: 2 (cond + uncond) x layers x 2 (K, V) x S x kv_heads x head_dim x
                       compute bytes (bf16 under bfloat16, fp32 under float32); S = condition + image tokens
                       (Janus: a ~30-token prompt + 576; LlamaGen t2i: 120 + 256; c2i: 1 + (size / 16)^2).
                       --sample-chunk c holds c images' caches at once.
    rollout weights    FSDP2: the whole policy all-gathered for the rollout (gathered(): bf16 under bfloat16).
    activations        per image of the update, LLaMA blocks with SwiGLU (not GPT's 4d GELU MLP), per token and
                       layer, a = compute bytes, d = width, f = SwiGLU hidden, d_kv = kv_heads x head_dim:
                           a x (6d + 2 d_kv + 3f)
                       (the inputs of both RMSNorms and of the q/k/v and gate/up projections, q, k, v, the attention
                       output, and gate, up and silu(gate)*up; fused SDPA keeps no S x S matrix), so S x layers x
                       that, plus the logits of the image tokens, (T + 1) x V x (a + 4 + 4) (the head's output,
                       its fp32 copy and log_softmax). With --activation-checkpointing: S x layers x a x d (each
                       block's input) + one block's activations + the logits.
    bf16 weight copies under --dtype bfloat16: 2 bytes per policy parameter during the update (one process and
                       DDP: autocast's casts held for the backward; FSDP2: about two gathered blocks and the root).
    rewards            the reward models' weights in the dtype they run (REWARD_MODELS), on this GPU unless
                       --reward-device moves them; their activations are not counted.

A setting fits when its peak, max(rollout, update), stays under the GPU's memory less 1 GiB + 5% (CUDA context,
allocator fragmentation). GB here are GiB (2^30 bytes).
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn

GIB = 2**30
SETUPS = ((1, 24), (1, 80), (2, 80), (8, 40), (8, 80))  # the setups of bench.py --memory-table (docs/models.md)

# LoRA's default targets: the attention and MLP projections of every transformer block (the policy's `layers`)
LORA_TARGETS = {"janus": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
                "llamagen": ("wqkv", "wo", "w1", "w2", "w3")}

# Reward models: parameters + buffers (counted on the meta device from each model's configuration with
# transformers 5.25 and rewards/*.py) and the bytes per weight they are stored in. Every one runs as its original:
# fp32 weights (HPS and GenEval's CLIP under fp16 autocast, as open_clip's "amp" and clip_benchmark do; the
# Qwen2.5-VL judge in fp32, as the AR-GRPO release's pipeline without a dtype; mmdet's Mask2Former in fp32).
REWARD_MODELS = {  # model -> (numel, bytes per element, what)
    "clip_b32": (151_277_440, 4, "CLIP ViT-B/32 (openai/clip-vit-base-patch32)"),
    "clip_l14": (427_616_847, 4, "CLIP ViT-L/14 (GenEval's colour classifier)"),
    "hps": (986_109_775, 4, "HPSv2.1 (open_clip ViT-H-14)"),
    "mask2former": (68_798_788, 4, "Mask2Former Swin-S COCO"),
    "git": (444_322_751, 4, "GIT-large VQAv2"),
    "gdino": (172_280_466, 4, "GroundingDINO-T"),
    "maniqa": (135_799_754, 4, "MANIQA (ViT-B/8, KonIQ)"),
    "qwen": (3_754_623_144, 4, "Qwen2.5-VL-3B-Instruct"),
}
REWARD_USES = {  # reward name -> the models it loads (the three Qwen judges share one model per device)
    "clip": ("clip_b32",), "hps": ("hps",), "geneval_coco": ("mask2former", "clip_l14"),
    "geneval_coco_strict": ("mask2former", "clip_l14"), "git_vqa": ("git",), "gdino": ("gdino",),
    "hps_git_gdino": ("hps", "git", "gdino"), "maniqa": ("maniqa",), "qwen_label": ("qwen",),
    "qwen_fake": ("qwen",), "qwen_weird": ("qwen",),
}
JANUS_PROMPT_TOKENS = 30  # BOS + "User: {prompt}\n\nAssistant:" + <begin_of_image> for a GenEval-length prompt


def reward_bytes(names) -> int:
    """Bytes of the distinct reward models `names` load (a model shared by two rewards counts once)."""
    models = {m for n in names for m in REWARD_USES.get(n, ())}
    return sum(REWARD_MODELS[m][0] * REWARD_MODELS[m][1] for m in models)


# ---------------------------------------------------------------------------------------------------
# The backend on the meta device


class Shapes(NamedTuple):
    """What the estimates need: kind ('janus' or 'llamagen'), layers, width d, SwiGLU hidden f, kv width, condition
    tokens, image tokens T, image vocabulary V."""
    kind: str
    layers: int
    d: int
    f: int
    d_kv: int
    cond_tokens: int
    T: int
    V: int


def meta_backend(name: str, config=None):
    """(backend, frozen) for a model name of common.models.MODELS, built on the meta device with the classes the
    scripts use. frozen: [(module, rule)] for the backend's modules outside the policy, rule 'policy' (stored in the
    policy's dtype), 'fp32' or 't5' (bf16 on a GPU, fp32 on the CPU). `config` overrides the architecture (a
    JanusConfig, or a toy-format config dict) so tests can plan their tiny models."""
    from common.llamagen import LLAMAGEN_CHECKPOINTS

    with torch.device("meta"):
        if name.startswith("janus") or (config is not None and not isinstance(config, dict)):
            from transformers import GenerationConfig, JanusForConditionalGeneration

            from common.janus import JanusT2I, janus_pro_config, tiny_tokenizer

            model = JanusForConditionalGeneration(config or janus_pro_config(name.rsplit("-", 1)[-1]))
            model.generation_config = GenerationConfig(bos_token_id=0, pad_token_id=1, eos_token_id=2)
            model.generation_config.generation_kwargs = {"boi_token_id": 3}
            bk = JanusT2I(model, tiny_tokenizer())
            inside = {id(p) for p in bk.policy.parameters()} | {id(b) for b in bk.policy.buffers()}
            everything = [t for _, t in model.named_parameters(remove_duplicate=False)] + list(model.buffers())
            rest = _Rest([t for t in model.parameters() if id(t) not in inside] +
                         [t for t in model.buffers() if id(t) not in inside],
                         tied=[t for t in {id(t): t for t in everything}.values() if id(t) in inside
                               and sum(u is t for u in everything) > 1])
            return bk, [(rest, "policy")]
        if name in LLAMAGEN_CHECKPOINTS:
            from transformers import T5EncoderModel

            from common.llamagen import GPT, VQConfig, VQModel, official_gpt_config
            from common.models import LlamaGenC2I, LlamaGenT2I
            from common.t5 import flan_t5_xl_config

            ck = LLAMAGEN_CHECKPOINTS[name]
            gpt, vq = GPT(official_gpt_config(ck.preset, ck.task, ck.image_size)), VQModel(VQConfig())
            if ck.task == "c2i":
                return LlamaGenC2I(gpt, vq, ck.image_size), [(vq, "fp32")]
            text = T5EncoderModel(flan_t5_xl_config())
            return LlamaGenT2I(gpt, vq, text, ck.image_size), [(vq, "fp32"), (text, "t5")]
        from common.models import build_t2i, toy_config

        bk = build_t2i(config or toy_config("tiny" if name == "tiny" else "toy"))
        return bk, [(bk.vq, "fp32"), (bk.text, "fp32")]


class _Rest(nn.Module):
    """Holds tensors (a Janus model's parts outside the policy) for counting. tied: policy tensors the rest also uses
    (a text head tied to the embeddings): FSDP2 replaces the policy's parameter by its shard, the rest keeps the
    whole tensor alive."""

    def __init__(self, tensors, tied=()):
        super().__init__()
        self.tensors, self.tied = tensors, list(tied)

    def parameters(self, recurse=True):
        return iter(self.tensors)

    def buffers(self, recurse=True):
        return iter(())


def shapes(bk) -> Shapes:
    """The policy's transformer shapes (for the estimates)."""
    pol = bk.policy
    if hasattr(pol, "language_model"):
        c = pol.language_model.config
        hd = c.hidden_size // c.num_attention_heads
        V = pol.generation_head.vision_head.weight.shape[0]
        return Shapes("janus", c.num_hidden_layers, c.hidden_size, c.intermediate_size,
                      (c.num_key_value_heads or c.num_attention_heads) * hd, JANUS_PROMPT_TOKENS, bk.num_tokens, V)
    c = pol.cfg
    hd = c.dim // c.n_head
    f = pol.layers[0].feed_forward.w1.weight.shape[0]
    return Shapes("llamagen", c.n_layer, c.dim, f, (c.n_kv_head or c.n_head) * hd, c.cls_token_num, c.block_size,
                  c.vocab_size)


def lora_shapes(policy: nn.Module, rank: int, targets) -> list[tuple[int, int]]:
    """The (rows, cols) of every LoRA adapter matrix peft adds: A (r, in) and B (out, r) per nn.Linear inside the
    policy's blocks whose name ends in one of `targets`."""
    out = []
    for name, m in policy.layers.named_modules():
        if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in targets:
            out += [(rank, m.in_features), (m.out_features, rank)]
    return out


# ---------------------------------------------------------------------------------------------------
# Exact bytes


def shard_numel(shape, world: int) -> int:
    """Elements FSDP2 keeps on rank 0 for a tensor of `shape` over `world` ranks: ceil(dim0 / world) rows (its
    padded shard; rank 0 always holds a full one)."""
    if world == 1 or not shape:
        return math.prod(shape)
    return -(-shape[0] // world) * math.prod(shape[1:])


def _bytes(tensors, dtype_bytes, world: int) -> int:
    return sum(shard_numel(tuple(t.shape), world) * dtype_bytes(t) for t in tensors)


@dataclass
class Setting:
    """One way of running a preset (the flags the planner varies)."""
    dtype: str = "bfloat16"  # float32 | bfloat16 | bfloat16-pure
    world: int = 1  # ranks the policy is sharded over (FSDP2) or replicated on (DDP)
    dist: str = "ddp"  # ddp | fsdp2 (world 1: one process)
    beta: float = 0.01
    lora_rank: int = 0
    lora_targets: tuple[str, ...] = ()
    cpu_offload: bool = False
    device_type: str = "cuda"

    @property
    def fsdp(self) -> bool:
        return (self.dist == "fsdp2" and self.world > 1) or self.cpu_offload

    @property
    def storage(self) -> torch.dtype:
        return torch.bfloat16 if self.dtype == "bfloat16-pure" else torch.float32


def exact_bytes(bk, frozen, s: Setting) -> dict[str, int]:
    """Per-rank bytes (rank 0) of weights (policy, frozen rest), gradients (param.grad), optimizer (AdamW's moments)
    and reference, exactly as the scripts allocate them. Offloaded (CPU) bytes are in the same keys: the caller
    moves them off the GPU."""
    store = torch.tensor([], dtype=s.storage).element_size()
    world = s.world if s.fsdp else 1
    pol = bk.policy
    # floating buffers follow .to(dtype); LlamaGen's freqs table is a plain attribute, not a buffer
    def cast(t):
        return store if t.is_floating_point() else t.element_size()

    base_params = list(pol.parameters())
    base = _bytes(base_params, cast, world) + _bytes(pol.buffers(), cast, 1)
    if s.lora_rank:
        targets = s.lora_targets or LORA_TARGETS[shapes(bk).kind]
        adapters = sum(shard_numel(shape, world) * 4 for shape in lora_shapes(pol, s.lora_rank, targets))
        trainable = adapters  # fp32 parameters: fp32 gradients and AdamW moments
        grads, optim = adapters, 2 * adapters
        policy_bytes = base + adapters
        ref = 0
    else:
        trainable_params = [p for p in base_params if p.requires_grad]
        trainable = _bytes(trainable_params, cast, world)
        grads, optim = trainable, 2 * trainable
        policy_bytes = base
        ref = base if s.beta > 0 else 0
    rest = 0
    for module, rule in frozen:
        for t in list(module.parameters()) + list(module.buffers()):
            if not t.is_floating_point():
                b = t.element_size()
            elif rule == "policy":
                b = store
            elif rule == "t5":
                b = 2 if s.device_type == "cuda" else 4
            else:
                b = 4
            rest += t.numel() * b
        if s.fsdp:
            rest += sum(t.numel() * (store if rule == "policy" else 4) for t in getattr(module, "tied", ()))
    return {"policy": policy_bytes, "frozen": rest, "gradients": grads, "optimizer": optim, "reference": ref,
            "trainable": trainable}


# ---------------------------------------------------------------------------------------------------
# Estimates


def kv_per_image(sh: Shapes, compute_bytes: int) -> int:
    """KV cache of one CFG-doubled image at the end of its rollout."""
    return 2 * sh.layers * 2 * (sh.cond_tokens + sh.T) * sh.d_kv * compute_bytes


def activations_per_image(sh: Shapes, compute_bytes: int, checkpointing: bool) -> int:
    """Activations one image keeps for the update's backward (see the module docstring)."""
    S, a = sh.cond_tokens + sh.T, compute_bytes
    per_token_layer = a * (6 * sh.d + 2 * sh.d_kv + 3 * sh.f)
    logits = (sh.T + 1) * sh.V * (a + 4 + 4)
    if checkpointing:
        return S * sh.layers * a * sh.d + S * per_token_layer + logits
    return S * sh.layers * per_token_layer + logits


class Plan(NamedTuple):
    lines: dict  # name -> bytes on this GPU
    host: int  # bytes a rank keeps in host memory (CPU offload)
    static: int
    rollout: int
    update: int
    peak: int


def plan(bk, frozen, s: Setting, *, chunk: int, micro_batch: int, checkpointing: bool, rewards: int) -> Plan:
    """The per-GPU memory of one step (rank 0): exact static bytes, estimated rollout and update transients."""
    ex = exact_bytes(bk, frozen, s)
    sh = shapes(bk)
    a = 4 if s.dtype == "float32" else 2
    n_policy = sum(p.numel() for p in bk.policy.parameters())
    ddp_buckets = ex["gradients"] if s.dist == "ddp" and s.world > 1 else 0
    host = 0
    gpu = dict(ex)
    if s.cpu_offload:  # FSDP2's CPUOffloadPolicy: shards, their gradients and AdamW state live on the CPU
        host = ex["policy"] + ex["gradients"] + ex["optimizer"] + ex["reference"]
        gpu.update(policy=0, gradients=0, optimizer=0, reference=0)
    gathered = n_policy * (2 if s.dtype != "float32" else 4) if s.fsdp else 0  # rollout: whole policy gathered
    if s.dtype != "bfloat16":
        weight_copies = 0
    elif s.fsdp:  # two gathered blocks (the current one and the prefetched next) and the root's own parameters
        n_block = sum(p.numel() for p in bk.policy.layers[0].parameters())
        weight_copies = 2 * (2 * n_block + n_policy - len(bk.policy.layers) * n_block)
    else:
        weight_copies = 2 * n_policy
    kv = kv_per_image(sh, a) * chunk
    acts = activations_per_image(sh, a, checkpointing) * micro_batch
    lines = {"weights (policy)": gpu["policy"], "weights (frozen rest)": gpu["frozen"],
             "gradients": gpu["gradients"] + ddp_buckets, "optimizer": gpu["optimizer"], "reference": gpu["reference"],
             "rollout KV cache": kv, "rollout gathered policy": gathered, "activations": acts,
             "bf16 weight copies": weight_copies, "rewards": rewards}
    static = gpu["policy"] + gpu["frozen"] + gpu["optimizer"] + gpu["reference"] + rewards
    rollout = static + kv + gathered
    update = static + gpu["gradients"] + ddp_buckets + acts + weight_copies
    return Plan(lines, host, static, rollout, update, max(rollout, update))


# ---------------------------------------------------------------------------------------------------
# A run's GPU setup and the search for flags that fit


def parse_setup(value: str) -> tuple[int, float]:
    """--plan-memory NxGB (8x80: eight GPUs of 80 GB) -> (gpus, gpu_gb); ValueError in one line naming the flag."""
    n, sep, m = value.strip().lower().partition("x")
    try:
        gpus, gpu_gb = int(n), float(m)
    except ValueError:
        gpus, gpu_gb = 0, 0.0
    if not sep or gpus < 1 or not math.isfinite(gpu_gb) or gpu_gb <= 0:
        raise ValueError(f"--plan-memory {value!r}: must be NxGB, the GPUs of the run and the memory of one in GB "
                         f"(e.g. --plan-memory 8x80, --plan-memory 1x24)")
    return gpus, gpu_gb


def reward_names(args) -> list[str]:
    """The rewards a run builds (ar_grpo.py: its terms)."""
    names = [args.reward] if hasattr(args, "reward") else [*args.align_rewards, args.quality_reward,
                                                           *args.realism_rewards]
    return [n for n in names if n]


def eval_copies(args) -> int:
    """Bytes of the evaluation judge's own models (built beside the reward's, on the rank's GPU)."""
    if args.eval_prompts and args.eval_samples > 0 and args.eval_detector == "coco":
        return reward_bytes(["geneval_coco"])
    return 0


class Fit(NamedTuple):
    ok: bool
    gpus_used: int
    setting: Setting
    chunk: int
    micro_batch: int
    checkpointing: bool
    rewards_on_gpu: bool
    plan: Plan
    note: str


def divisors_desc(n: int) -> list[int]:
    return [k for k in range(n, 0, -1) if n % k == 0]


def find_fit(args, gpus: int, gpu_gb: float, model=None, batch: int | None = None, with_rewards: bool = True,
             allow_offload: bool = True) -> Fit:
    """The first setting that fits, in this order of preference: no LoRA (unless asked), no CPU offload, DDP before
    FSDP2, rewards on the GPU before --reward-device cpu, no activation checkpointing, then the largest micro-batch
    and sample chunk. Without a fit, the closest setting (smallest peak) with ok=False. args: the run's resolved
    Args (its model, dtype, beta, P, G, rewards; its --lora-rank and --lora-targets when set); model: (backend,
    frozen) of meta_backend (default: args.model's); batch: images per GPU (default: P / GPUs x G);
    with_rewards=False leaves the reward and evaluation models out (the paper benchmark's stand-in reward)."""
    bk, frozen = model or meta_backend(args.model)
    lora_rank = getattr(args, "lora_rank", 0)
    targets = tuple(t.strip() for t in getattr(args, "lora_targets", "").split(",") if t.strip()) \
        or LORA_TARGETS[shapes(bk).kind]
    budget = gpu_gb * GIB - (GIB + 0.05 * gpu_gb * GIB)
    P, G = args.prompts_per_step, args.group_size
    used = max(k for k in range(1, gpus + 1) if P % k == 0)  # whole groups per rank: P divisible by the ranks
    note = "" if used == gpus else f"P = {P} prompts cannot be split over {gpus} GPUs: uses {used}"
    B = batch or P // used * G
    rewards_all = reward_bytes(reward_names(args)) + eval_copies(args) if with_rewards else 0
    on_host_rewards = eval_copies(args) if with_rewards else 0  # the evaluation judge stays on the rank's GPU
    best = None
    for lora in [lora_rank] if lora_rank else [0, 64]:
        for offload in (False, True) if allow_offload else (False,):
            for dist_ in ["fsdp2"] if offload else ["ddp"] + (["fsdp2"] if used > 1 else []):
                s = Setting(args.dtype, used, dist_, args.beta, lora, targets, offload)
                for rewards_on_gpu in (True, False):
                    r = rewards_all if rewards_on_gpu else on_host_rewards
                    for ckpt in (False, True):
                        chunk = next((c for c in divisors_desc(B) if
                                      plan(bk, frozen, s, chunk=c, micro_batch=1, checkpointing=True,
                                           rewards=r).rollout <= budget), 0)
                        mb = next((m for m in divisors_desc(B) if
                                   plan(bk, frozen, s, chunk=1, micro_batch=m, checkpointing=ckpt,
                                        rewards=r).update <= budget), 0)
                        p = plan(bk, frozen, s, chunk=max(chunk, 1), micro_batch=max(mb, 1), checkpointing=ckpt,
                                 rewards=r)
                        fit = Fit(bool(chunk and mb), used, s, chunk, mb, ckpt, rewards_on_gpu, p, note)
                        if fit.ok:
                            return fit
                        if best is None or p.peak < best.plan.peak:
                            best = fit
    return best


def peft_lora(policy: nn.Module, rank: int, targets, alpha: float | None = None):
    """LoRA adapters through peft on the projections `targets` of the policy's blocks: fp32 adapters, trainable;
    everything else frozen (what lora_shapes counts)."""
    from peft import LoraConfig, inject_adapter_in_model

    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha or 2 * rank, target_modules=list(targets)),
                            policy.layers)
    for name, p in policy.named_parameters():
        p.requires_grad_("lora_" in name)
        if "lora_" in name:
            p.data = p.data.float()
    return policy


def flags(fit: Fit, args, batch: int | None = None) -> str:
    """The command-line flags of a fit (those that differ from the run's); batch: images per GPU if not the run's."""
    s, out = fit.setting, []
    if s.cpu_offload:  # FSDP2 under torchrun, also on one GPU (--nproc_per_node=1)
        out.append("--dist fsdp2 --cpu-offload")
    elif fit.gpus_used > 1:
        out.append(f"--dist {s.dist}")
    if s.lora_rank:
        out.append(f"--lora-rank {s.lora_rank}")
    if fit.checkpointing:
        out.append("--activation-checkpointing")
    B = batch or args.prompts_per_step // fit.gpus_used * args.group_size
    if fit.micro_batch and fit.micro_batch != B:
        out.append(f"--micro-batch-size {fit.micro_batch}")
    if fit.chunk and fit.chunk != B:
        out.append(f"--sample-chunk {fit.chunk}")
    if not fit.rewards_on_gpu:
        out.append("--reward-device cpu")
    return " ".join(out) or "(the preset as is)"


def gb(x: int) -> str:
    return f"{x / GIB:.1f}"


def report(script: str, args, gpus: int, gpu_gb: float) -> str:
    """The planner's answer for one run (`script`: its module name, e.g. stage; args: its resolved Args) on `gpus`
    GPUs of `gpu_gb` GB, as printed by `python <script>.py ... --plan-memory NxGB`."""
    fit = find_fit(args, gpus, gpu_gb)
    p, s = fit.plan, fit.setting
    B = args.prompts_per_step // fit.gpus_used * args.group_size
    run = f"{script}.py --preset {args.preset}" if hasattr(args, "preset") else f"{script}.py"
    out = [f"{run}: {args.model}, --dtype {args.dtype}, beta {args.beta}, "
           f"{args.prompts_per_step} prompts x G = {args.group_size}; {gpus} x {gpu_gb:g} GB"
           + (f" ({fit.note})" if fit.note else ""),
           f"per GPU: {B} images per step; setting {flags(fit, args)}", "",
           f"{'per GPU (rank 0)':34s} {'GiB':>8s}"]
    exact = ("weights (policy)", "weights (frozen rest)", "gradients", "optimizer", "reference")
    for k, v in p.lines.items():
        what = "exact" if k in exact else "estimate"
        if k == "rollout KV cache":
            what += f", {max(fit.chunk, 1)} image(s) at once"
        if k == "activations":
            what += f", micro-batch {max(fit.micro_batch, 1)}" + (", checkpointed" if fit.checkpointing else "")
        if k == "gradients" and s.dist == "ddp" and s.world > 1:
            what += ", incl. DDP's buckets"
        if k == "rewards" and not fit.rewards_on_gpu:
            what += ", reward models on the CPU; the evaluation judge stays"
        out.append(f"  {k:32s} {gb(v):>8s}  ({what})")
    if p.host:
        out.append(f"  {'host memory per rank (offload)':32s} {gb(p.host):>8s}")
    out += ["", f"  static {gb(p.static)} | rollout peak {gb(p.rollout)} | update peak {gb(p.update)} | "
                f"budget {gb(gpu_gb * GIB - GIB - 0.05 * gpu_gb * GIB)} of {gpu_gb:g}",
            ("FITS: " if fit.ok else "DOES NOT FIT (closest shown): ") + flags(fit, args)]
    return "\n".join(out)


def table(runs) -> str:
    """Markdown: every run of `runs` ((script, resolved Args) of each preset: bench.py --memory-table) on every setup
    of SETUPS, the flags that fit and the peak per GPU."""
    rows = ["| preset | model | " + " | ".join(f"{n} x {m} GB" for n, m in SETUPS) + " |",
            "| --- | --- | " + " | ".join("---" for _ in SETUPS) + " |"]
    for script, args in runs:
        model = meta_backend(args.model)
        cells = []
        for n, m in SETUPS:
            fit = find_fit(args, n, m, model=model)
            head = f"{gb(fit.plan.peak)} GiB: " if fit.ok else "no fit "
            where = f" (on {fit.gpus_used} GPUs)" if fit.gpus_used != n else ""
            cells.append(head + (f"`{flags(fit, args)}`" if fit.ok else f"(best {gb(fit.plan.peak)} GiB)") + where)
        rows.append(f"| `{args.preset}` ({script}) | {args.model} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":  # the planner's old command line (it imported the scripts: an import circle)
    print("error: the memory planner is a flag of the scripts now: python stage.py --preset geneval_paper "
          "--plan-memory 8x80 (any script and flags); every preset's table: python bench.py --memory-table",
          file=sys.stderr)
    sys.exit(2)
