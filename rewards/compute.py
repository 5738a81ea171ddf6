"""Calling a reward safely: its output checked (shape, finite values), a failure named by its prompt.

Apart from rewards/__init__.py (which re-exports both names) so that rewards/shared.py can use them without an
import cycle."""
from __future__ import annotations


class RewardError(RuntimeError):
    """A reward raised, or returned a wrong shape or a non-finite value; the message names the prompt."""


def compute_rewards(reward_fn, name: str, images, prompts: list[str], metadata: list[dict]):
    """reward_fn(images, prompts, metadata) checked: -> FloatTensor (B,) of finite values, or RewardError.
    When the batch call raises, the images are scored one at a time to name the first failing prompt."""
    import torch

    try:
        r = reward_fn(images, prompts, metadata)
    except RewardError:
        raise  # a node-shared reward (rewards/shared.py) already named the prompt
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
