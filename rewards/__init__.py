"""Rewards. A reward is a callable (images (B,3,H,W) in [0,1], prompts list[str], metadata list[dict])
-> FloatTensor (B,). `get_reward(name)` builds one by name; heavy libraries are imported only then."""
from __future__ import annotations

import importlib

# name -> "module:factory"; the factory takes `device` and returns the callable.
REWARDS = {
    "color": "rewards.color:ColorFraction",
    "geneval": "rewards.geneval:make_geneval",
    "geneval_strict": "rewards.geneval:make_geneval_strict",
    "ocr": "rewards.ocr:make_ocr",
}


def check_reward_name(name: str):
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; known: {', '.join(REWARDS)}")


def get_reward(name: str, device="cpu"):
    check_reward_name(name)
    module, factory = REWARDS[name].split(":")
    return getattr(importlib.import_module(module), factory)(device=device)


def check_reward(name: str, metadata: list[dict]):
    """Fail early: unknown name, or prompts this reward cannot score (the reward module's `validate`)."""
    check_reward_name(name)
    module = importlib.import_module(REWARDS[name].split(":")[0])
    if hasattr(module, "validate"):
        module.validate(metadata)
