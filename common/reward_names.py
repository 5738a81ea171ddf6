"""Reward names as the command line writes them, parsed without importing any reward (so common/run.py checks the
flags before anything is built, and rewards/ builds from the same parse): weighted sums ("hps=1.0,clip=0.5", and the
registered sums of MIXES) and --reward-device placements ("cpu", "cuda:K" or "NAME=DEVICE,...")."""
from __future__ import annotations


# registered sums of rewards, written as on the command line
MIXES = {
    "hps_git_gdino": "hps=1,git_vqa=1,gdino=1",  # T2I-R1's reward, STAGE's HPS runs (§4.1): no normalisation
}


def parse_mix(name: str) -> list[tuple[str, float]] | None:
    """"hps=1.0,clip=0.5" (or a MIXES name) -> [("hps", 1.0), ("clip", 0.5)]; None for a single reward.
    Raises ValueError in one line on a malformed sum."""
    name = MIXES.get(name, name)
    if "=" not in name:
        return None
    parts = []
    for item in name.split(","):
        reward, eq, weight = item.strip().partition("=")
        reward = reward.strip()
        try:
            w = float(weight)
        except ValueError:
            w = float("nan")
        if not eq or not reward or w != w or w in (float("inf"), float("-inf")):
            raise ValueError(f"reward {name!r}: write a weighted sum as 'name=weight,name=weight' (e.g. "
                             f"'hps=1.0,clip=0.5'); {item.strip()!r} is not 'name=number'")
        if parse_mix(reward) is not None:
            raise ValueError(f"reward {name!r}: {reward!r} is itself a sum; list its components instead")
        parts.append((reward, w))
    names = [r for r, _ in parts]
    if len(set(names)) < len(names):
        raise ValueError(f"reward {name!r}: {sorted({n for n in names if names.count(n) > 1})[0]!r} appears twice "
                         f"(each reward is scored once: give it one weight)")
    return parts


def reward_device(name: str, spec: str, default):
    """The device reward `name` runs on under --reward-device `spec`: '' = `default` (the rank's device), one device
    ('cpu', 'cuda', 'cuda:K') for every reward, or 'NAME=DEVICE,...' per reward (rewards not named: `default`).
    Raises ValueError naming the flag on a malformed spec."""
    import torch

    spec = (spec or "").strip()
    if not spec:
        return default
    per = {}
    for part in spec.split(","):
        key, sep, dev = part.strip().rpartition("=")
        if sep and not key:
            raise ValueError(f"--reward-device {spec!r}: write NAME=DEVICE (e.g. qwen_label=cuda:7)")
        try:
            per[key if sep else "*"] = str(torch.device(dev.strip()))
        except RuntimeError:
            raise ValueError(f"--reward-device {spec!r}: {dev.strip()!r} is not a device (cpu, cuda or cuda:K)") \
                from None
    if "*" in per and len(per) > 1:
        raise ValueError(f"--reward-device {spec!r}: give one device for every reward, or NAME=DEVICE pairs")
    return per.get("*", per.get(name, default))


def placement_problem(spec: str, names: list[str]) -> str:
    """The first problem of --reward-device `spec` for a run whose rewards are `names` ('' when none): a malformed
    spec, or a NAME that is not one of the run's rewards (the parts of a weighted sum count as rewards)."""
    names = [n for n in names if n]
    try:
        names += [part for name in names for part, _ in parse_mix(name) or []]
        for name in names:
            reward_device(name, spec, "cpu")
    except ValueError as e:
        return str(e)
    named = {p.strip().rpartition("=")[0] for p in spec.split(",")} - {""}
    if unknown := named - set(names):
        return (f"--reward-device {spec!r}: {', '.join(sorted(unknown))} is not a reward of this run "
                f"({', '.join(names)})")
    return ""
