"""The T2I-R1 reward mix used by STAGE's HPS experiments (STAGE §4.1, App. B.1): HPSv2.1 + GIT VQA + GroundingDINO,
each with weight 1, summed with no per-reward normalisation (range about [0.2, 2.35]).

Metadata rows are T2I-R1's `geneval_and_t2i_data_final.json` ({"prompt", "nouns", "task_type", "attr_nouns"?,
"spatial_info"?, "numeracy_info"?}); HPS scores the raw prompt. `last` keeps the three components of the
latest call for logging.
"""
from __future__ import annotations

import torch

from rewards.gdino import validate  # noqa: F401  (the registry's check_reward calls rewards.t2i_r1.validate)


class HPSGitGDinoReward:
    def __init__(self, hps, git, gdino):
        self.parts = {"hps": hps, "git": git, "gdino": gdino}
        self.last: dict[str, torch.Tensor] = {}

    def __call__(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> torch.Tensor:
        if not (len(images) == len(prompts) == len(metadata)):
            raise ValueError(f"reward 'hps_git_gdino': {len(images)} images, {len(prompts)} prompts, "
                             f"{len(metadata)} metadata rows")
        validate(metadata)
        self.last = {k: r(images, prompts, metadata).float().cpu() for k, r in self.parts.items()}
        return sum(self.last.values())


def make_hps_git_gdino(device="cpu") -> HPSGitGDinoReward:
    from rewards.gdino import load_gdino
    from rewards.git_vqa import load_git_vqa
    from rewards.hps import make_hps

    return HPSGitGDinoReward(make_hps(device), load_git_vqa(device), load_gdino(device))
