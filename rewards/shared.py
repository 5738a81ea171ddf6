"""A reward model built once per node instead of once per rank (`--reward-device cpu` or `cuda:K` under torchrun).

When every rank of a node would load the same reward model onto the same device (the CPU, or one named GPU), only
the node's local rank 0 builds it. At each call the node's ranks send it their images, prompts and metadata
(`gather_object` over a gloo group of the node's ranks, so the transfer never touches the training GPUs' NCCL
streams), it scores them all in one call, and sends each rank its rewards back. A failure of the reward (an
exception, a wrong shape, a non-finite value) is found on local rank 0, which names the first failing prompt as
`compute_rewards` does, and every rank of the node raises the same RewardError: no rank waits for a reply that never
comes. The call is collective: every rank of the node calls it once per scoring, as the scripts do.

Where this does not apply, each rank builds its own copy (common.run / the scripts): on its own GPU (the default,
`--reward-device ''`, or `cuda` without an index) the ranks' devices differ, and outside torchrun there is one
process anyway.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

_GROUPS: dict[str, tuple] = {}


def node_group():
    """(gloo group of this node's ranks, global rank of its local rank 0). Collective on first use: every rank
    creates every node's group, in the same order (torch.distributed.new_group's rule)."""
    if "node" not in _GROUPS:
        world, rank = dist.get_world_size(), dist.get_rank()
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        mine = None
        for first in range(0, world, per_node):  # torchrun numbers each node's ranks contiguously
            ranks = list(range(first, min(first + per_node, world)))
            group = dist.new_group(ranks, backend="gloo")
            if rank in ranks:
                mine = (group, first)
        _GROUPS["node"] = mine
    return _GROUPS["node"]


def shared_per_node(spec_device: str) -> bool:
    """True when `--reward-device` put this reward on one fixed device that the node's ranks would share (the CPU,
    or a GPU named by index) and the run is distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return False
    dev = torch.device(spec_device)
    return dev.type == "cpu" or dev.index is not None


class NodeShared:
    """The reward `fn` (built on local rank 0 only; None elsewhere) served to every rank of the node."""

    def __init__(self, name: str, fn, group, leader: int):
        self.name, self.fn, self.group, self.leader = name, fn, group, leader

    def __call__(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> torch.Tensor:
        from rewards.compute import RewardError, compute_rewards

        mine = (images.detach().cpu(), list(prompts), list(metadata))
        everyone = [None] * dist.get_world_size(self.group) if dist.get_rank() == self.leader else None
        dist.gather_object(mine, everyone, dst=self.leader, group=self.group)
        reply = [None]
        if dist.get_rank() == self.leader:
            sizes = [len(p) for _, p, _ in everyone]
            try:
                r = compute_rewards(self.fn, self.name, torch.cat([i for i, _, _ in everyone]),
                                    [t for _, p, _ in everyone for t in p], [m for _, _, m in everyone for m in m])
                reply = [list(r.split(sizes))]
            except Exception as e:  # RewardError, or the reward model itself failing (e.g. out of memory)
                reply = [f"{e}" if isinstance(e, RewardError) else f"reward {self.name!r} failed on the node's "
                         f"shared copy: {type(e).__name__}: {e}"]
        dist.broadcast_object_list(reply, src=self.leader, group=self.group)
        if isinstance(reply[0], str):
            raise RewardError(reply[0])
        return reply[0][dist.get_rank(self.group)]


def build_shared(name: str, build, device):
    """A NodeShared reward: `build(device)` runs on the node's local rank 0 only."""
    group, leader = node_group()
    fn = build(device) if dist.get_rank() == leader else None
    return NodeShared(name, fn, group, leader)
