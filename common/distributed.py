"""FSDP2 and activation checkpointing for the algorithm scripts (DDP needs nothing beyond torch's own wrapper).

A policy module exposes `layers`, the nn.ModuleList of its transformer blocks (LlamaGen's GPT and the
Janus wrapper both do). FSDP2 (`fully_shard`) shards each block, then the rest of the policy as the
root. Two facts about FSDP2 shape this file:

1. Parameters are gathered only inside a sharded module's `forward`. Teacher-forced scoring IS the
   policy's forward, so it works as is. The sampler calls `prefill`/`decode`, which are not forward:
   `gathered(model)` gathers every shard once for the whole rollout (as TRL/DeepSpeed gather a ZeRO-3
   model for generation), instead of re-gathering every block at each of the T decoding steps.
2. FSDP2 picks its root module at the first forward call, so `shard` runs one tiny forward through the
   policy itself; otherwise the first sampled block would make itself the root.

Loading within the sharded footprint: a policy built on the meta device (`load_model(..., policy_on_meta=True)`)
is sharded while it holds no data, then `fill_shards` allocates each rank's shard on its device and reads into it
only that rank's rows of every weight from the files (common/weights.py). At no moment does a rank hold more than
its shard plus the rows being copied (at most one tensor's share); the first forward then gathers one block at a
time, as every forward does.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn


def activation_checkpointing(policy: nn.Module):
    """Recompute each block's activations in the backward pass instead of storing them (less memory,
    ~30% more update time). State-dict keys are unchanged. Apply before sharding."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    for i, layer in enumerate(policy.layers):
        policy.layers[i] = checkpoint_wrapper(layer)
    return policy


def mixed_precision(enabled: bool):
    """FSDP2's bf16 mixed precision: shards (and so AdamW) stay in their fp32 dtype, parameters are all-gathered
    and used in bf16, gradients are reduce-scattered and accumulated in fp32. None when not enabled."""
    if not enabled:
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def shard(policy: nn.Module, cond: dict, device: torch.device, world_size: int, mp_policy=None,
          weights=None, cpu_offload: bool = False) -> nn.Module:
    """FSDP2: shard every block, then the policy (in place). cond: any condition batch, for the root
    forward that initialises FSDP2; mp_policy: `mixed_precision(...)` or None; weights: where the parameters
    left on the meta device are read from (`bk.weights`, common/weights.py; None when every parameter is
    real); cpu_offload: keep the shards, their gradients and the optimizer state in CPU memory (CPUOffloadPolicy:
    parameters are copied to the device when gathered, gradients back after the reduce-scatter, and AdamW steps on
    the CPU). Returns the policy, which is now an FSDPModule."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world_size,))
    kw = {"mp_policy": mp_policy} if mp_policy is not None else {}
    if cpu_offload:
        kw["offload_policy"] = CPUOffloadPolicy(pin_memory=device.type == "cuda")  # pinning needs a GPU
    for layer in policy.layers:
        fully_shard(layer, mesh=mesh, **kw)
    fully_shard(policy, mesh=mesh, **kw)
    if any(p.to_local().is_meta for p in policy.parameters()):
        if weights is None:
            raise ValueError("the policy has weights on the meta device but no files to fill them from")
        fill_shards(policy, weights, torch.device("cpu") if cpu_offload else device)  # offload: shards live on the CPU
    first = {k: v[:1] for k, v in cond.items()}
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=mp_policy is not None):
        policy(first, torch.zeros(1, 0, dtype=torch.long, device=device))  # the policy becomes FSDP2's root
    policy.reshard()  # the root stays gathered after a forward; the optimizer must see the sharded parameters
    return policy


@contextlib.contextmanager
def gathered(model: nn.Module):
    """Inside: every parameter of an FSDP2-sharded model is whole on every rank, so methods other than
    forward (the sampler's prefill/decode) work and run without communication. A no-op otherwise."""
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    if not units:
        yield model
        return
    for m in units:
        m.unshard()
        m.set_reshard_after_forward(False, recurse=False)
    try:
        yield model
    finally:
        for m in units:
            m.reshard()
            m.set_reshard_after_forward(m is not model, recurse=False)  # FSDP2's defaults: the root stays gathered


def checkpoint_name(name: str) -> str:
    """A parameter's name in the policy -> its key in the model's files: without the activation-checkpointing
    wrapper's prefix and peft's `base_layer` (a LoRA-adapted layer's frozen weight)."""
    return name.replace("_checkpoint_wrapped_module.", "").replace(".base_layer.", ".")


@torch.no_grad()
def fill_shards(policy: nn.Module, weights, device: torch.device):
    """Allocate the shards of an FSDP2-sharded policy's meta parameters on `device` and read this rank's rows of each
    from `weights` (dimension 0 chunked as torch.chunk: rank r holds rows [r·⌈n/W⌉, r·⌈n/W⌉ + its length)).
    Parameters and buffers that already hold data (LoRA adapters, rotary tables) keep it."""
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    if meta := [n for n, b in policy.named_buffers() if b.is_meta]:
        raise ValueError(f"buffer {meta[0]} is on the meta device: build the policy with its buffers real "
                         f"(common/weights.py parameters_on_meta)")
    keep = {n: p.to_local().clone() for n, p in policy.named_parameters() if not p.to_local().is_meta}
    buffers = {n: b.clone() for n, b in policy.named_buffers()}
    names = set(weights.names())
    policy.to_empty(device=device)  # FSDP2 re-points its shards at the new (uninitialised) storage
    for n, b in policy.named_buffers():
        if n in buffers:
            b.copy_(buffers[n])
    for n, p in policy.named_parameters():
        local = p.to_local()
        if n in keep:
            local.copy_(keep[n])
            continue
        key = checkpoint_name(n)
        if key not in names:
            raise ValueError(f"the model's files hold no weight {key!r}")
        if tuple(weights.shape(key)) != tuple(p.shape):
            raise ValueError(f"{key}: shape {tuple(weights.shape(key))} in the model's files, {tuple(p.shape)} in "
                             f"the model")
        if p.dim() == 0:
            local.copy_(weights.rows(key, 0, 0))
            continue
        start = min(rank * -(-p.shape[0] // world), p.shape[0])
        local.copy_(weights.rows(key, start, start + local.shape[0]))
