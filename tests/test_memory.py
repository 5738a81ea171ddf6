"""The memory planner (common/memory.py): its exact lines (weights, gradients, optimizer, reference) equal the bytes of
the tensors the scripts hold, counted on tiny LlamaGen and Janus models under each precision, with and without the
reference, with LoRA (peft), and per rank under FSDP2 (2 and 3 gloo processes); and it answers for every preset
(bench.py --memory-table) and for a run as its preset and flags resolve it (--plan-memory NxGB)."""
from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from common.memory import LORA_TARGETS, Setting, exact_bytes, meta_backend, peft_lora
from conftest import REPO

STORAGE = {"float32": torch.float32, "bfloat16": torch.float32, "bfloat16-pure": torch.bfloat16}


def local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def nbytes(tensors) -> int:
    return sum(local(t).numel() * t.element_size() for t in tensors if t is not None)


def build(kind: str, dtype: str):
    """A real tiny backend as the scripts build it (load_model's dtype rules), and the planner's meta twin."""
    torch.manual_seed(0)
    if kind == "llamagen":
        from common.models import load_model

        return load_model("tiny", "cpu", STORAGE[dtype]), meta_backend("tiny")
    from common.janus import tiny_janus, tiny_janus_config

    bk = tiny_janus()
    bk.model.to(STORAGE[dtype])  # load_janus: from_pretrained(dtype=...) stores the whole model in it
    return bk, meta_backend("janus", config=tiny_janus_config())


def add_lora(policy: nn.Module, kind: str, rank: int):
    """peft's LoRA on the blocks' projections, fp32 adapters, base frozen (what the scripts' --lora-rank does)."""
    peft_lora(policy, rank, LORA_TARGETS[kind])


def step(bk, policy, params):
    """One forward/backward and AdamW step, so that gradients and optimizer state exist."""
    opt = torch.optim.AdamW(params, lr=1e-3)
    cond = bk.cond(["a red cat", "two blue dogs"])
    tokens = torch.randint(0, 8, (2, bk.num_tokens))
    policy(cond, tokens).float().square().mean().backward()
    opt.step()
    return opt


def measure(bk, policy, ref, opt) -> dict:
    """Bytes held, counted tensor by tensor (a DTensor: its local shard)."""
    inside = {id(t) for t in list(policy.parameters()) + list(policy.buffers())}
    everything = []
    for m in ([bk.model] if hasattr(bk, "model") else [bk.policy, bk.vq, bk.text]):
        everything += list(m.parameters()) + list(m.buffers())
    rest = {id(t): t for t in everything if id(t) not in inside}
    moments = [v for st in opt.state.values() for k, v in st.items() if k in ("exp_avg", "exp_avg_sq")]
    trainable = [p for p in policy.parameters() if p.requires_grad]
    return {"policy": nbytes(list(policy.parameters()) + list(policy.buffers())), "frozen": nbytes(rest.values()),
            "gradients": nbytes(p.grad for p in trainable), "optimizer": nbytes(moments),
            "reference": nbytes(list(ref.parameters()) + list(ref.buffers())) if ref is not None else 0,
            "trainable": nbytes(trainable)}


@pytest.mark.parametrize("kind", ["llamagen", "janus"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "bfloat16-pure"])
@pytest.mark.parametrize("lora", [0, 4])
def test_exact_bytes_equal_the_tensors(kind, dtype, lora):
    (bk, (meta_bk, frozen)) = build(kind, dtype)
    policy = bk.policy
    if lora:
        add_lora(policy, kind, lora)
    ref = copy.deepcopy(policy).requires_grad_(False) if not lora else None  # beta > 0: a copy, unless LoRA
    opt = step(bk, policy, [p for p in policy.parameters() if p.requires_grad])
    got = measure(bk, policy, ref, opt)
    planned = exact_bytes(meta_bk, frozen, Setting(dtype, beta=0.01, lora_rank=lora, device_type="cpu"))
    assert planned == got
    assert got["gradients"] > 0 and got["optimizer"] == 2 * got["gradients"]


def test_no_reference_without_kl():
    bk, frozen = meta_backend("tiny")
    assert exact_bytes(bk, frozen, Setting("bfloat16", beta=0.0))["reference"] == 0


FSDP_WORKER = r'''
import copy, json, os, sys
import torch, torch.distributed as dist
sys.path.insert(0, os.environ["REPO"]); sys.path.insert(0, os.path.join(os.environ["REPO"], "tests"))
from test_memory import add_lora, build, measure, step
from common.distributed import mixed_precision, shard
dist.init_process_group("gloo")
kind, dtype, lora = sys.argv[1], sys.argv[2], int(sys.argv[3])
bk, _ = build(kind, dtype)
policy = bk.policy
if lora:
    add_lora(policy, kind, lora)
ref = copy.deepcopy(policy).requires_grad_(False) if not lora else None
example = bk.cond(["a red cat"])
mp = mixed_precision(dtype == "bfloat16")
world = dist.get_world_size()
shard(policy, example, torch.device("cpu"), world, mp)
if ref is not None:
    shard(ref, example, torch.device("cpu"), world, mp)
with torch.autocast("cpu", torch.bfloat16, enabled=dtype == "bfloat16"):
    opt = step(bk, policy, [p for p in policy.parameters() if p.requires_grad])
got = measure(bk, policy, ref, opt)
if dist.get_rank() == 0:
    print("RESULT " + json.dumps(got), flush=True)
dist.destroy_process_group()
'''


@pytest.mark.slow
@pytest.mark.parametrize("kind, dtype, lora, world", [("llamagen", "bfloat16", 0, 3), ("janus", "float32", 4, 2)])
def test_exact_bytes_under_fsdp2(kind, dtype, lora, world, tmp_path):
    """3 ranks: the tiny models' even dimensions split unevenly, so FSDP2's padded shards are checked too."""
    import json

    worker = tmp_path / "worker.py"
    worker.write_text(FSDP_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REPO": REPO, "PYTHONPATH": REPO}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
                        str(worker), kind, dtype, str(lora)], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.split("RESULT ", 1)[1].splitlines()[0])
    meta_bk, frozen = build(kind, dtype)[1]
    planned = exact_bytes(meta_bk, frozen, Setting(dtype, world=world, dist="fsdp2", beta=0.01, lora_rank=lora,
                                                   device_type="cpu"))
    assert planned == got
    whole = exact_bytes(meta_bk, frozen, Setting(dtype, beta=0.01, lora_rank=lora, device_type="cpu"))
    assert got["optimizer"] < whole["optimizer"]  # sharded


def run(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_planner_answers_for_every_preset_and_setup():
    """`python bench.py --memory-table`: a row for every preset of stage.py, gcpo.py and ar_grpo.py, in order, a cell
    for each of the five GPU setups."""
    p = run("bench.py", "--memory-table")
    assert p.returncode == 0, p.stderr[-2000:]
    from bench import preset_runs

    rows = [r for r in p.stdout.splitlines() if r.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == list(preset_runs()) and all(r.count("|") == 8 for r in rows)
    assert "--dist fsdp2" in p.stdout and "GiB" in p.stdout
    docs = open(os.path.join(REPO, "docs", "models.md"), encoding="utf-8").read()
    assert p.stdout in docs, "docs/models.md's table is not the output of python bench.py --memory-table"


def plan(monkeypatch, capsys, script, *argv) -> str:
    """`python <script>.py *argv` in this process: what cli prints before it exits 0."""
    from common.run import cli

    monkeypatch.setattr(sys, "argv", [f"{script.__name__}.py", *argv])
    with pytest.raises(SystemExit) as stop:
        cli(script.Args, getattr(script, "PRESETS", None))
    assert stop.value.code == 0
    return capsys.readouterr().out


def test_plan_memory_plans_the_run_as_resolved(monkeypatch, capsys):
    """`--plan-memory NxGB` on a script: the planner's answer for the run as its preset AND its explicit flags resolve
    it (here --group-size halves the images per GPU), without building anything; grpo_vanilla.py (no presets) too."""
    from dataclasses import replace

    import ar_grpo
    import grpo_vanilla
    from common.memory import report

    out = plan(monkeypatch, capsys, ar_grpo, "--preset", "c2i_paper", "--plan-memory", "1x24")
    lines = out.splitlines()
    assert lines[0] == ("ar_grpo.py --preset c2i_paper: llamagen-c2i-b, --dtype bfloat16, beta 0.1, 8 prompts x G = 8;"
                        " 1 x 24 GB") and lines[1].startswith("per GPU: 64 images per step; setting ")
    for line in ("weights (policy)", "gradients", "optimizer", "reference", "rollout KV cache", "activations",
                 "rewards", "FITS"):
        assert line in out
    args = replace(ar_grpo.Args(), **ar_grpo.PRESETS["c2i_paper"], preset="c2i_paper")
    assert out == report("ar_grpo", args, 1, 24) + "\n"
    g4 = plan(monkeypatch, capsys, ar_grpo, "--preset", "c2i_paper", "--group-size", "4", "--plan-memory=1x24")
    assert "8 prompts x G = 4" in g4 and "per GPU: 32 images per step" in g4
    assert g4 == report("ar_grpo", replace(args, group_size=4), 1, 24) + "\n"
    vanilla = plan(monkeypatch, capsys, grpo_vanilla, "--model", "llamagen-c2i-b", "--prompts-per-step", "4",
                   "--plan-memory", "2x24")
    assert vanilla.startswith("grpo_vanilla.py: llamagen-c2i-b, --dtype ") and "; 2 x 24 GB\n" in vanilla


@pytest.mark.slow
def test_plan_memory_from_the_command_line():
    """The same as a command: `python stage.py --preset geneval_paper --plan-memory 8x80` prints the planner's report
    of the preset's run (what `python -m common.memory --preset geneval_paper --gpus 8 --gpu-gb 80` printed)."""
    from bench import preset_runs
    from common.memory import report

    p = run("stage.py", "--preset", "geneval_paper", "--plan-memory", "8x80")
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout == report(*preset_runs()["geneval_paper"], 8, 80) + "\n"
    assert p.stdout.splitlines()[-1] == "FITS: --dist fsdp2"


def test_plan_memory_bad_value_is_one_line():
    from common.memory import parse_setup

    assert parse_setup("8x80") == (8, 80.0) and parse_setup("1X24.5") == (1, 24.5)
    for bad in ("8", "x80", "8x", "0x80", "8x0", "8x-1", "axb", "8x80x2", ""):
        with pytest.raises(ValueError, match="--plan-memory .*: must be NxGB"):
            parse_setup(bad)
    p = run("grpo_vanilla.py", "--model", "janus-pro-7b", "--plan-memory", "8")
    assert p.returncode == 1 and p.stdout == "" and p.stderr.strip() == (
        "error: --plan-memory '8': must be NxGB, the GPUs of the run and the memory of one in GB (e.g. --plan-memory "
        "8x80, --plan-memory 1x24)"), p.stderr[-2000:]
    old = run("-m", "common.memory", "--preset", "geneval_paper", "--gpus", "8", "--gpu-gb", "80")
    assert old.returncode == 2 and old.stdout == "" and len(old.stderr.strip().splitlines()) == 1
    assert "--plan-memory 8x80" in old.stderr and "bench.py --memory-table" in old.stderr
