"""LoRA through peft (common/lora.py; --lora-rank, --lora-alpha, --lora-targets in the four scripts), on the tiny
LlamaGen and the tiny Janus: only the adapters train; adapters off is the base model, which is the reference (no
second copy of the weights); merging gives the same logits; checkpoints hold only the adapters and their optimizer
state, resume continues bit for bit, and the export is a full model of the usual format."""
import copy
import json
import os
import sys

import pytest
import torch

from conftest import REPO
from helpers import COLOR_PROMPTS, run
from tensor_bytes import live_parameter_bytes

from common import checkpoint
from common.lora import JANUS_TARGETS, LLAMAGEN_TARGETS, adapters_off, add_lora, merge_lora
from common.models import load_model
from common.utils import load_safetensors, seed_everything

PROMPTS = ["a red cat", "two blue dogs", "photo"]


def tiny_llamagen():
    seed_everything(0)
    bk = load_model("tiny")
    for m in bk.policy.modules():  # a non-zero output head and sharp logits
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, std=0.3)
    return bk


def tiny_janus():
    pytest.importorskip("transformers.models.janus")
    from common.janus import tiny_janus as build

    return build(seed=0)


BACKENDS = {"llamagen": tiny_llamagen, "janus": tiny_janus}


def logits(bk, model=None) -> torch.Tensor:
    tokens = torch.randint(0, 32, (len(PROMPTS), bk.num_tokens), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return (model or bk.policy)(bk.cond(PROMPTS), tokens)


def train_adapters(policy, seed: int = 1):
    """Stand-in for training: B (zero at the start) gets random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in policy.named_parameters():
            if ".lora_B." in n:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("name", BACKENDS)
def test_only_adapters_train_and_adapters_off_is_the_base(name):
    bk = BACKENDS[name]()
    base = logits(bk)
    n_all = sum(p.numel() for p in bk.policy.parameters())
    add_lora(bk.policy, 4, 8.0)
    targets = JANUS_TARGETS if name == "janus" else LLAMAGEN_TARGETS
    adapted = [m for n, m in bk.policy.named_modules() if n.rsplit(".", 1)[-1] in targets]
    assert adapted and all(type(m).__module__.startswith("peft.") for m in adapted)
    if name == "janus":  # the language model's projections only
        assert all(n.startswith("language_model.") for n, m in bk.policy.named_modules() if m in adapted)
    trainable = {n: p for n, p in bk.policy.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A.default." in n or ".lora_B.default." in n for n in trainable)
    expected = sum(4 * (m.in_features + m.out_features) for m in adapted)
    n_train = sum(p.numel() for p in trainable.values())
    assert n_train == expected and all(p.dtype == torch.float32 for p in trainable.values())
    print(f"{name}: {n_train} of {n_all} parameters train ({100 * n_train / n_all:.1f}%)")
    assert n_train < 0.25 * n_all
    assert torch.equal(logits(bk), base)  # B = 0: the adapted policy starts as the base
    train_adapters(bk.policy)
    assert not torch.allclose(logits(bk), base, atol=1e-3)
    assert torch.equal(logits(bk, adapters_off(bk.policy)), base)  # π_ref: exactly the base model
    assert all(p.requires_grad for p in trainable.values())  # switched back on after the reference's pass


@pytest.mark.parametrize("name", BACKENDS)
def test_merged_equals_unmerged(name):
    bk = BACKENDS[name]()
    keys = set(bk.policy.state_dict())
    add_lora(bk.policy, 4, 8.0)
    train_adapters(bk.policy)
    unmerged = logits(bk)
    merge_lora(bk.policy)
    assert set(bk.policy.state_dict()) == keys  # the module's own keys: no peft layer left
    torch.testing.assert_close(logits(bk), unmerged, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", BACKENDS)
def test_reference_holds_no_parameters(name):
    """The scripts' π_ref with LoRA is the policy with its adapters off: building and using it allocates no parameter
    (counted over every parameter alive in the process), where the full-training reference, a copy, holds the
    whole policy again."""
    bk = BACKENDS[name]()
    add_lora(bk.policy, 4, 8.0)
    policy_bytes = sum(p.numel() * p.element_size() for p in bk.policy.parameters())
    before = live_parameter_bytes()
    ref = adapters_off(bk.policy)
    logits(bk, ref)
    assert live_parameter_bytes() == before and not isinstance(ref, torch.nn.Module)
    copied = copy.deepcopy(bk.policy).requires_grad_(False)  # what a full-training run does
    assert live_parameter_bytes() - before == policy_bytes
    del copied


# -- through the scripts --------------------------------------------------------------------------------
LORA = ["--model", "toy", "--prompts", COLOR_PROMPTS, "--reward", "color", "--prompts-per-step", "2",
        "--group-size", "4", "--eval-samples", "0", "--image-every", "0", "--lr", "1e-2", "--beta", "0.05",
        "--lora-rank", "4", "--lora-alpha", "8"]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """grpo_vanilla.py with LoRA on the toy model (the random tiny one has a zero output head: its adapters would get
    no gradient), 4 steps, a checkpoint every 2."""
    out = tmp_path_factory.mktemp("lora")
    run([sys.executable, "grpo_vanilla.py", *LORA, "--num-steps", "4", "--save-every", "2"], out)
    return out / "grpo_vanilla_s0"


def metrics(run_dir):
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    return {r["step"]: {k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows}


@pytest.mark.slow
def test_checkpoint_holds_adapters_and_their_optimizer_state(lora_run):
    step = checkpoint.resolve(str(lora_run))
    sd = load_safetensors(os.path.join(step, "policy.safetensors"))
    assert sd and all(".lora_A.default." in k or ".lora_B.default." in k for k in sd)
    base = load_model("toy").policy
    adapted = [n for n, m in base.named_modules() if n.rsplit(".", 1)[-1] in LLAMAGEN_TARGETS]
    assert len(sd) == 2 * len(adapted)
    optim = torch.load(os.path.join(step, "optimizer.pt"), weights_only=True)
    assert set(optim["state"]) == set(sd)  # AdamW moments of the adapters only, keyed by name
    assert any(v.abs().max() > 0 for k, v in sd.items() if ".lora_B." in k)  # B moved from 0
    assert metrics(lora_run)[4]["losses/kl"] > 0  # the reference (adapters off) differs from the trained policy


@pytest.mark.slow
def test_resume_continues_bit_for_bit(lora_run, tmp_path):
    out = tmp_path / "cut"
    run([sys.executable, "grpo_vanilla.py", *LORA, "--num-steps", "2"], out)
    run([sys.executable, "grpo_vanilla.py", *LORA, "--num-steps", "4", "--resume", str(out / "grpo_vanilla_s0")], out)
    assert metrics(out / "grpo_vanilla_s0") == metrics(lora_run)
    a = load_safetensors(os.path.join(checkpoint.resolve(str(lora_run)), "policy.safetensors"))
    b = load_safetensors(os.path.join(checkpoint.resolve(str(out / "grpo_vanilla_s0")), "policy.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_export_merges_the_adapters(lora_run, tmp_path):
    from common.export import export

    out = tmp_path / "exported"
    export(str(lora_run), str(out))
    exported = load_model(str(out))  # the toy format, full weights
    assert not any("lora" in k for k in exported.policy.state_dict())
    trained = load_model("toy")  # the run's base, its adapters from the checkpoint, unmerged
    add_lora(trained.policy, 4, 8.0)
    trained.policy.load_state_dict(
        load_safetensors(os.path.join(checkpoint.resolve(str(lora_run)), "policy.safetensors")), strict=False)
    torch.testing.assert_close(logits(exported), logits(trained), atol=1e-4, rtol=1e-4)  # float rounding only
    assert not torch.allclose(logits(exported), logits(trained, adapters_off(trained.policy)), atol=1e-4)


@pytest.mark.slow
def test_janus_lora_checkpoint_exports_a_merged_transformers_model(tmp_path):
    import argparse

    from transformers import JanusForConditionalGeneration

    from common.export import export

    model_dir = tmp_path / "tiny-janus"
    tiny_janus().save(str(model_dir))
    bk = load_model(str(model_dir))
    add_lora(bk.policy, 4, 8.0)
    train_adapters(bk.policy)
    opt = torch.optim.AdamW([p for p in bk.policy.parameters() if p.requires_grad])
    ns = argparse.Namespace(model=str(model_dir), dtype="float32", seed=0, lora_rank=4)
    checkpoint.save(str(tmp_path / "run" / "checkpoints"), 1, bk.policy, opt, None, {}, ns)
    export(str(tmp_path / "run"), str(tmp_path / "out"))
    full = JanusForConditionalGeneration.from_pretrained(str(tmp_path / "out"))
    assert not any("lora" in k for k in full.state_dict())
    merged = load_model(str(tmp_path / "out"))
    torch.testing.assert_close(logits(merged), logits(bk), atol=1e-5, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("dtype, fsdp", [("bfloat16", False), ("bfloat16-pure", False), ("bfloat16-pure", True)])
def test_bf16_keeps_fp32_adapters(dtype, fsdp, tmp_path):
    """bf16 compute (or a bf16 frozen base) with fp32 adapters and AdamW state; FSDP2 shards the mixed-dtype blocks."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] if fsdp else [
        sys.executable]
    run([*launch, "grpo_vanilla.py", *LORA, "--num-steps", "1", "--dtype", dtype, *(["--dist", "fsdp2"] * fsdp)],
        tmp_path)
    step = checkpoint.resolve(str(tmp_path / "grpo_vanilla_s0"))
    assert {v.dtype for v in load_safetensors(os.path.join(step, "policy.safetensors")).values()} == {torch.float32}
    state = torch.load(os.path.join(step, "optimizer.pt"), weights_only=True)["state"]
    assert {v.dtype for s in state.values() for k, v in s.items() if k in ("exp_avg", "exp_avg_sq")} == {torch.float32}


@pytest.mark.slow
def test_fsdp2_matches_ddp_with_lora(tmp_path):
    """2 gloo ranks: FSDP2 (the base on the meta device, filled shard by shard; activation checkpointing) == DDP."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "grpo_vanilla.py",
                *LORA, "--num-steps", "2"]
    run(torchrun, tmp_path / "ddp")
    run(torchrun + ["--dist", "fsdp2", "--activation-checkpointing"], tmp_path / "fsdp")
    a, b = (load_safetensors(os.path.join(checkpoint.resolve(str(tmp_path / d / "grpo_vanilla_s0")),
                                          "policy.safetensors")) for d in ("ddp", "fsdp"))
    assert a.keys() == b.keys() and all(".lora_" in k for k in a)
    update = torch.cat([a[k].flatten() for k in a if ".lora_B." in k]).norm()  # B started at 0
    diff = torch.cat([(a[k] - b[k]).flatten() for k in a]).norm()
    assert update > 0 and diff <= 1e-2 * update, f"FSDP2 and DDP differ by {diff / update:.2e} of the update"


@pytest.mark.slow
def test_unknown_target_stops_in_one_line(tmp_path):
    p = run([sys.executable, "grpo_vanilla.py", *LORA, "--lora-targets", "wqkv,nope"], tmp_path, check=False)
    last = p.stderr.strip().splitlines()
    assert p.returncode != 0 and len(last) == 1 and last[0].startswith("error: --lora-targets: nope names no linear "
                                                                        "layer of the policy (its linear layers: ")
