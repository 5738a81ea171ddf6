"""Rewards. A reward is a callable (images (B,3,H,W) in [0,1], prompts list[str], metadata list[dict])
-> FloatTensor (B,). `get_reward(name)` builds one by name; heavy libraries are imported only then.

A name is a registered reward, 'module:factory' for your own, or a weighted sum of rewards, "hps=1.0,clip=0.5":
each component is scored once per batch, the sum Σ w·r is the reward, and the components of the latest call are
kept in `.last` (the scripts log them as rewards/<name>). A registered name may itself stand for such a sum
(MIXES: STAGE's T2I-R1 mix is exactly "hps=1,git_vqa=1,gdino=1")."""
from __future__ import annotations

import importlib
import traceback

from common.reward_names import MIXES, parse_mix, reward_device  # noqa: F401  (re-exported: the registry's names)
from rewards.compute import RewardError, compute_rewards  # noqa: F401  (re-exported)

# name -> "module:factory"; the factory takes `device` and returns the callable.
REWARDS = {
    "color": "rewards.color:ColorFraction",
    "geneval": "rewards.geneval:make_geneval",
    "geneval_strict": "rewards.geneval:make_geneval_strict",
    "ocr": "rewards.ocr:make_ocr",
    "shapeworld_quality": "toy.quality:PaletteCleanliness",  # the toy's no-reference quality
    # model-backed rewards (transformers; weights from the HF hub cache or local paths, see README "Rewards")
    "clip": "rewards.clip:make_clip",
    "hps": "rewards.hps:make_hps",
    "geneval_coco": "rewards.geneval:make_geneval_coco",
    "geneval_coco_strict": "rewards.geneval:make_geneval_coco_strict",
    "git_vqa": "rewards.git_vqa:load_git_vqa",
    "gdino": "rewards.gdino:load_gdino",
    # AR-GRPO's image-quality and VLM-judge rewards (raw scores; the x2 and /4 weights belong to the trainer)
    "maniqa": "rewards.maniqa:make_maniqa",
    "qwen_label": "rewards.qwen_judge:make_qwen_label",
    "qwen_fake": "rewards.qwen_judge:make_qwen_fake",
    "qwen_weird": "rewards.qwen_judge:make_qwen_weird",
}


class WeightedSum:
    """Σ_k w_k·r_k(images, prompts, metadata), each r_k called once; `.last` holds the latest raw components."""

    def __init__(self, rewards: dict, weights: dict[str, float]):
        self.rewards, self.weights = rewards, weights
        self.last: dict = {}

    def __call__(self, images, prompts, metadata):
        import torch

        self.last = {k: torch.as_tensor(r(images, prompts, metadata)).float().reshape(-1).cpu()
                     for k, r in self.rewards.items()}
        return sum(self.weights[k] * v for k, v in self.last.items())


def _spec(name: str) -> str:
    """A registered name, or 'module:factory' naming your own reward factory (importable module)."""
    if name in REWARDS:
        return REWARDS[name]
    if ":" in name:
        module, _, factory = name.partition(":")
        if not module or not factory.isidentifier() or not all(part.isidentifier() for part in module.split(".")):
            raise ValueError(f"reward {name!r}: write your own reward as 'module:factory' (an importable module and "
                             f"the name of a function in it that takes device= and returns the reward)")
        return name
    raise ValueError(f"unknown reward {name!r}; known: {', '.join([*REWARDS, *MIXES])}, 'module:factory' for your "
                     f"own, or a weighted sum 'name=weight,...'")


def check_reward_name(name: str):
    if (mix := parse_mix(name)) is not None:
        for reward, _ in mix:
            check_reward_name(reward)
        return
    module, factory = _spec(name).split(":")
    try:
        found = hasattr(importlib.import_module(module), factory)
    except ImportError as e:
        raise ValueError(f"reward {name!r}: cannot import module {module!r} ({e})") from None
    except SyntaxError as e:  # your module's own errors: one line naming the file and line
        raise ValueError(f"reward {name!r}: {e.filename}:{e.lineno}: syntax error ({e.msg})") from None
    except Exception as e:
        frame = traceback.extract_tb(e.__traceback__)[-1]
        raise ValueError(f"reward {name!r}: importing module {module!r} raised {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''} ({frame.filename}:{frame.lineno})") from None
    if not found:
        raise ValueError(f"reward {name!r}: module {module!r} has no {factory!r}")


def get_reward(name: str, device="cpu", placement: str = ""):
    """Build reward `name` on `device`, or where `placement` (--reward-device, see reward_device) puts it. Under
    torchrun, a reward placed on one fixed device (cpu, cuda:K) is built once per node: rewards/shared.py."""
    check_reward_name(name)
    if (mix := parse_mix(name)) is not None:
        return WeightedSum({r: get_reward(r, device, placement) for r, _ in mix}, dict(mix))
    module, factory = _spec(name).split(":")
    where = reward_device(name, placement, device)

    def build(dev):
        try:
            return getattr(importlib.import_module(module), factory)(device=dev)
        except (ValueError, FileNotFoundError, ImportError, RuntimeError, OSError):
            raise  # the loaders' own one-line messages
        except Exception as e:  # a user factory's bug: one line naming it
            raise RuntimeError(f"reward {name!r}: its factory raised {type(e).__name__}: {e}") from e

    from rewards.shared import build_shared, shared_per_node

    if placement and shared_per_node(where):
        return build_shared(name, build, where)
    return build(where)


def check_reward(name: str, metadata: list[dict]):
    """Fail early: unknown name, or prompts this reward cannot score (the reward module's `validate`)."""
    check_reward_name(name)
    if (mix := parse_mix(name)) is not None:
        for reward, _ in mix:
            check_reward(reward, metadata)
        return
    module, factory = _spec(name).split(":")
    module = importlib.import_module(module)
    check = getattr(getattr(module, factory), "validate", None) or getattr(module, "validate", None)
    if check is None:  # the factory's own `validate` (e.g. the detector's classes), else the module's
        return
    try:
        check(metadata)
    except ValueError as e:  # name the first bad row by its file and line (common.prompts.Prompts.where)
        where = getattr(metadata, "where", None) or [f"prompt row {i}" for i in range(len(metadata))]
        for i, row in enumerate(metadata):
            try:
                check([row])
            except ValueError as row_error:
                raise ValueError(f"{where[i]}: {row_error}") from None
        raise
