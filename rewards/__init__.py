"""Rewards. A reward is a callable (images (B,3,H,W) in [0,1], prompts list[str], metadata list[dict])
-> FloatTensor (B,). `get_reward(name)` builds one by name; heavy libraries are imported only then."""
from __future__ import annotations

import importlib
import traceback

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
    "hps_git_gdino": "rewards.t2i_r1:make_hps_git_gdino",
    # AR-GRPO's image-quality and VLM-judge rewards (raw scores; the x2 and /4 weights belong to the trainer)
    "maniqa": "rewards.maniqa:make_maniqa",
    "qwen_label": "rewards.qwen_judge:make_qwen_label",
    "qwen_fake": "rewards.qwen_judge:make_qwen_fake",
    "qwen_weird": "rewards.qwen_judge:make_qwen_weird",
}


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
    raise ValueError(f"unknown reward {name!r}; known: {', '.join(REWARDS)}, or 'module:factory' for your own")


def check_reward_name(name: str):
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


def get_reward(name: str, device="cpu"):
    check_reward_name(name)
    module, factory = _spec(name).split(":")
    try:
        return getattr(importlib.import_module(module), factory)(device=device)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError, OSError):
        raise  # the loaders' own one-line messages
    except Exception as e:  # a user factory's bug: one line naming it
        raise RuntimeError(f"reward {name!r}: its factory raised {type(e).__name__}: {e}") from e


def check_reward(name: str, metadata: list[dict]):
    """Fail early: unknown name, or prompts this reward cannot score (the reward module's `validate`)."""
    check_reward_name(name)
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


class RewardError(RuntimeError):
    """A reward raised, or returned a wrong shape or a non-finite value; the message names the prompt."""


def compute_rewards(reward_fn, name: str, images, prompts: list[str], metadata: list[dict]):
    """reward_fn(images, prompts, metadata) checked: -> FloatTensor (B,) of finite values, or RewardError.
    When the batch call raises, the images are scored one at a time to name the first failing prompt."""
    import torch

    try:
        r = reward_fn(images, prompts, metadata)
    except Exception as e:
        culprit = prompts[0]
        for i in range(len(prompts)):
            try:
                reward_fn(images[i : i + 1], prompts[i : i + 1], metadata[i : i + 1])
            except Exception:
                culprit = prompts[i]
                break
        raise RewardError(f"reward {name!r} raised {type(e).__name__}: {e} (prompt {culprit!r})") from e
    try:
        r = torch.as_tensor(r).float().reshape(-1)
    except (TypeError, RuntimeError, ValueError) as e:
        raise RewardError(f"reward {name!r} returned {type(r).__name__}, not a tensor of {len(prompts)} numbers "
                          f"({e})") from None
    if r.numel() != len(prompts):
        raise RewardError(f"reward {name!r} returned {r.numel()} values for {len(prompts)} images")
    bad = (~torch.isfinite(r)).nonzero()
    if len(bad):
        i = int(bad[0])
        raise RewardError(f"reward {name!r} returned {r[i].item()} for prompt {prompts[i]!r}")
    return r
