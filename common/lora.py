"""LoRA through peft for the algorithm scripts (`--lora-rank`, `--lora-alpha`, `--lora-targets`).

`add_lora(policy, rank, alpha, targets)` injects peft's LoRA layers into the policy IN PLACE (peft's
`inject_adapter_in_model`: the module keeps its class, its `layers`, `prefill` and `decode`, so the sampler, the
scorer, activation checkpointing and FSDP2 see the same policy), freezes every base weight and leaves only the
adapters trainable: W x + (α / r)·B A x with A (r, in) and B (out, r). The adapters are fp32 whatever the base
dtype (with `--dtype bfloat16-pure` the frozen base is bf16 and only the adapters carry fp32 state). A starts
Kaiming-uniform and B at zero, so the adapted policy starts equal to the base.

`adapters_off(policy)` is the reference policy π_ref of a LoRA run: the same module called with its adapters
disabled, which is exactly the base model (no second copy of the weights: the memory LoRA saves). `merge_lora`
folds the adapters into the base weights and removes peft's layers, giving back the module's own state-dict
keys: what common/export.py writes.

Checkpoints of a LoRA run (common/checkpoint.py) hold only the trainable parameters, the adapters, and the
optimizer state of those; the LoRA configuration travels in the safetensors metadata (`lora_meta`).
peft is imported only when LoRA is used.
"""
from __future__ import annotations

import json
import math
import sys

import torch
import torch.nn as nn

# The transformer's attention and MLP projections (the default --lora-targets), matched by module-name suffix.
LLAMAGEN_TARGETS = ("wqkv", "wo", "w1", "w2", "w3")  # common/llamagen.py: Attention and the SwiGLU FeedForward
JANUS_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # the LLaMA LM's
META_KEY = "lora"  # safetensors metadata key of a LoRA checkpoint: {"rank", "alpha", "targets"}


def default_targets(policy: nn.Module) -> tuple[str, ...]:
    """The attention and MLP projections of the policy's transformer: LlamaGen's GPT or Janus's language model."""
    return JANUS_TARGETS if hasattr(policy, "language_model") else LLAMAGEN_TARGETS


def parse_targets(targets: str | tuple | list, policy: nn.Module) -> list[str]:
    """--lora-targets: comma-separated module names ('' = default_targets). Raises ValueError naming the flag when a
    name matches no linear layer of the policy."""
    names = [t.strip() for t in targets.split(",") if t.strip()] if isinstance(targets, str) else list(targets)
    names = names or list(default_targets(policy))
    linear = {n.rsplit(".", 1)[-1] for n, m in policy.named_modules() if isinstance(m, nn.Linear)}
    unknown = [n for n in names if n not in linear]
    if unknown:
        raise ValueError(f"--lora-targets: {', '.join(unknown)} names no linear layer of the policy (its linear "
                         f"layers: {', '.join(sorted(linear))})")
    return names


def add_lora(policy: nn.Module, rank: int, alpha: float, targets: str | tuple | list = "") -> nn.Module:
    """Inject LoRA adapters of rank `rank` and scale alpha / rank into `policy` in place (see the module docstring).
    Works on a policy built on the meta device too (FSDP2 loading): the adapters are then real fp32 tensors on the
    CPU and the base weights stay on meta until `shard` fills them. The adapters' initialisation draws on the CPU
    from a generator seeded with torch's initial seed (the run's --seed), so it is the same on every rank, device
    and --dist. -> policy."""
    from peft import LoraConfig
    from peft.functional import inject_adapter_in_model
    from peft.tuners.lora import LoraLayer

    names = parse_targets(targets, policy)
    policy.requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=names, lora_dropout=0.0), policy)
    gen = torch.Generator().manual_seed(torch.initial_seed())
    for m in policy.modules():
        if isinstance(m, LoraLayer):
            device = m.get_base_layer().weight.device
            device = torch.device("cpu") if device.type == "meta" else device
            a, b = m.lora_A["default"], m.lora_B["default"]
            w = torch.empty(a.weight.shape)  # on the CPU, as peft's default initialisation (LoRA's paper code)
            nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=gen)
            a.weight = nn.Parameter(w.to(device))
            b.weight = nn.Parameter(torch.zeros(b.weight.shape, device=device))
    return policy


def has_lora(module: nn.Module) -> bool:
    """Whether `module` holds peft adapters (False without importing peft when nobody has)."""
    if "peft" not in sys.modules:
        return False
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in module.modules())


def _lora_layers(module: nn.Module):
    from peft.tuners.lora import LoraLayer

    return [m for m in module.modules() if isinstance(m, LoraLayer)]


class AdaptersOff:
    """π_ref of a LoRA run: calling it runs `policy` with every adapter disabled (the base model). Not a module and
    holds no parameter: the reference costs no memory. Under FSDP2 the call goes through the sharded policy's own
    forward, which gathers its shards as usual."""

    def __init__(self, policy: nn.Module):
        self.policy = policy

    def __call__(self, *args, **kwargs):
        layers = _lora_layers(self.policy)
        for m in layers:
            m.enable_adapters(False)
        try:
            return self.policy(*args, **kwargs)
        finally:
            for m in layers:
                m.enable_adapters(True)


def adapters_off(policy: nn.Module) -> AdaptersOff:
    return AdaptersOff(policy)


@torch.no_grad()
def merge_lora(policy: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (W += (α/r)·B A, in the base weight's dtype) and put the base layers
    back in place of peft's: the policy then has its own, LoRA-free state-dict keys. -> policy."""
    layers = set(_lora_layers(policy))
    for name, m in list(policy.named_modules()):
        if m in layers:
            m.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(policy.get_submodule(parent_name) if parent_name else policy, child, m.get_base_layer())
    return policy


def lora_meta(policy: nn.Module) -> dict[str, str] | None:
    """The safetensors metadata that makes a LoRA checkpoint self-describing (None without adapters)."""
    layers = _lora_layers(policy) if has_lora(policy) else []
    if not layers:
        return None
    m = layers[0]
    targets = sorted({n.rsplit(".", 1)[-1] for n, x in policy.named_modules() if x in layers})
    return {META_KEY: json.dumps({"rank": m.r["default"], "alpha": m.lora_alpha["default"], "targets": targets})}


def read_meta(path: str) -> dict | None:
    """The LoRA configuration stored in a checkpoint's policy.safetensors (None for a full-weights checkpoint)."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta[META_KEY]) if META_KEY in meta else None


def adapter_names(policy: nn.Module) -> set[str]:
    """The state-dict keys a LoRA checkpoint holds for `policy`: its trainable parameters (the adapters)."""
    wrapped = "_checkpoint_wrapped_module."  # activation checkpointing's wrapper: not in state-dict keys
    return {n.replace(wrapped, "") for n, p in policy.named_parameters() if p.requires_grad}


def load_merged(policy: nn.Module, sd: dict[str, torch.Tensor], meta: dict, source: str) -> nn.Module:
    """A LoRA checkpoint into a base policy: add the adapters `meta` describes, load them strictly (one-line
    ValueError naming `source` on a mismatch), merge them. -> the policy with merged, plain weights."""
    from common.utils import state_dict_mismatch

    add_lora(policy, int(meta["rank"]), float(meta["alpha"]), meta["targets"])
    expected = {k: v for k, v in policy.state_dict().items() if k in adapter_names(policy)}
    if mismatch := state_dict_mismatch(expected, sd):
        raise ValueError(f"{source}: the LoRA adapters do not fit the base model: {mismatch}")
    policy.load_state_dict(sd, strict=False)
    return merge_lora(policy)
