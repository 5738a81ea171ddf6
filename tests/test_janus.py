"""Janus-Pro backend (common/janus.py) on a tiny random JanusConfig: no download, CPU, seconds.

The references are transformers' own `JanusForConditionalGeneration.generate(generation_mode="image")`
(greedy tokens, the unconditional input) and the sampler's step-wise log-probs (teacher forcing)."""
import copy
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO

pytest.importorskip("transformers.models.janus")

from common.janus import JanusT2I, tiny_janus  # noqa: E402
from common.sampling import sample, score  # noqa: E402

PROMPTS = ["a red cat", "two blue dogs and a green car left of the cup", "photo"]  # 3 lengths: left padding


@pytest.fixture(scope="module")
def bk() -> JanusT2I:
    return tiny_janus(seed=0)


def generate(bk: JanusT2I, cond: dict, guidance_scale: float) -> torch.Tensor:
    """transformers' greedy image generation -> (B, T) ids. At s = 1 `generate` still doubles the batch but
    adds no CFG processor (and then fails on the 2B rows), so there a processor keeps the conditional rows:
    exactly CFG at scale 1."""
    from transformers import LogitsProcessor, LogitsProcessorList

    class ConditionalRows(LogitsProcessor):
        def __call__(self, input_ids, scores):
            return scores[: scores.shape[0] // 2]

    procs = LogitsProcessorList([ConditionalRows()]) if guidance_scale == 1 else None
    return bk.model.generate(cond["input_ids"], attention_mask=cond["attention_mask"], generation_mode="image",
                             do_sample=False, guidance_scale=guidance_scale, logits_processor=procs)


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("s", [1.0, 5.0])
def test_greedy_sampler_matches_generate(bk, s, cache):
    cond = bk.cond(PROMPTS)
    assert cond["attention_mask"].min() == 0  # the batch really is left-padded
    bk.policy.cache_implementation = cache
    try:
        ours, _, _ = sample(bk.policy, cond, bk.uncond(cond), bk.num_tokens, cfg_scale=s, temperature=0.0)
    finally:
        bk.policy.cache_implementation = "dynamic"
    ref = generate(bk, cond, s)
    assert ours.shape == ref.shape == (len(PROMPTS), bk.num_tokens)
    assert torch.equal(ours, ref)
    assert len(ours.unique()) > 4  # not a degenerate constant sequence


def test_uncond_equals_transformers(bk):
    """generate() embeds [cond rows; uncond rows] once; capture those ids and compare with bk.uncond."""
    cond = bk.cond(PROMPTS)
    seen = []
    hook = bk.model.get_input_embeddings().register_forward_hook(lambda m, inp, out: seen.append(inp[0].clone()))
    try:
        generate(bk, cond, 5.0)
    finally:
        hook.remove()
    B = len(PROMPTS)
    ids = seen[0]  # (2B, L)
    uncond = bk.uncond(cond)
    assert torch.equal(ids[:B], cond["input_ids"])
    assert torch.equal(ids[B:], uncond["input_ids"])
    assert torch.equal(uncond["attention_mask"], cond["attention_mask"])  # generate repeats the mask unchanged
    kept = uncond["input_ids"] != bk.pad_id
    assert (kept.sum(1) == 2).all()  # exactly BOS and <begin_of_image> survive
    assert (uncond["input_ids"][:, -1] == bk.boi_id).all()


def test_prompt_templates(bk):
    tok = bk.tokenizer
    ids = bk.prompt_ids("a red cat")
    assert ids[0] == bk.bos_id and ids[-1] == bk.boi_id
    assert tok.convert_ids_to_tokens(ids[1:-1]) == ["User", ":", "a", "red", "cat", "Assistant", ":"]
    demo = copy.copy(bk)
    demo.template = "demo"
    assert tok.convert_ids_to_tokens(demo.prompt_ids("a red cat"))[1] == "<|User|>"
    with pytest.raises(ValueError, match="template"):
        JanusT2I(bk.model, tok, template="nope")


@pytest.mark.parametrize("guided", [False, True])
def test_teacher_forced_logprobs_equal_stepwise(bk, guided):
    cond = bk.cond(PROMPTS)
    kw = dict(cfg_scale=3.0, temperature=0.9, top_k=20) if guided else {}
    g = torch.Generator().manual_seed(1)
    uncond = bk.uncond(cond) if guided else None
    tokens, logp, ent = sample(bk.policy, cond, uncond, bk.num_tokens, generator=g, **kw)
    with torch.no_grad():
        logp_tf, ent_tf = score(bk.policy, cond, tokens, uncond, **kw)
    torch.testing.assert_close(logp_tf, logp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent_tf, ent, atol=1e-5, rtol=1e-5)


def test_codebook_decode_and_input_embeds(bk):
    ids = torch.randint(0, bk.model.config.vq_config.num_embeddings, (2, bk.num_tokens))
    q = bk.codebook(ids)
    assert q.shape == (2, bk.num_tokens, bk.model.config.vq_config.embed_dim)
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(2, bk.num_tokens))
    img = bk.decode(ids)
    side = bk.grid[0] * 2  # the tiny VQ upsamples once
    assert img.shape == (2, 3, side, side) and img.min() >= 0 and img.max() <= 1
    assert bk.input_embeds(ids).shape == (2, bk.num_tokens, bk.model.config.text_config.hidden_size)


def test_only_language_model_trainable_and_ref_copy_is_small(bk):
    trainable = {n for n, p in bk.policy.named_parameters() if p.requires_grad}
    frozen = {n for n, p in bk.policy.named_parameters() if not p.requires_grad}
    assert trainable and all(n.startswith("language_model.") for n in trainable)
    assert {n.split(".")[0] for n in frozen} == {"generation_embeddings", "generation_aligner", "generation_head"}
    assert not any(p.requires_grad for p in bk.model.model.vqmodel.parameters())
    assert not any(p.requires_grad for p in bk.model.model.vision_model.parameters())
    ref = copy.deepcopy(bk.policy)  # what the scripts do for the reference: no vision encoder, no VQ, no lm_head
    n_ref = sum(p.numel() for p in ref.parameters())
    assert n_ref == sum(p.numel() for p in bk.policy.parameters()) < sum(p.numel() for p in bk.model.parameters())


def test_activation_checkpointing_and_bf16():
    """common/distributed.activation_checkpointing (--activation-checkpointing) wraps policy.layers: the same
    log-probs and gradients, and the KV-cached sampler is unaffected. bf16 samples, scores and back-propagates."""
    from common.distributed import activation_checkpointing

    bk = tiny_janus(seed=0)
    cond = bk.cond(PROMPTS[:2])
    tokens, _, _ = sample(bk.policy, cond, bk.uncond(cond), bk.num_tokens, cfg_scale=5.0, temperature=0.0)
    grads = []
    for ckpt in (False, True):
        if ckpt:
            activation_checkpointing(bk.policy)
            again, _, _ = sample(bk.policy, cond, bk.uncond(cond), bk.num_tokens, cfg_scale=5.0, temperature=0.0)
            assert torch.equal(again, tokens)
        bk.policy.zero_grad(set_to_none=True)
        logp, _ = score(bk.policy, cond, tokens)
        logp.sum().backward()
        grads.append({n: p.grad.clone() for n, p in bk.policy.named_parameters() if p.grad is not None})
    assert any("_checkpoint_wrapped_module" in n for n, _ in bk.policy.named_parameters())
    assert bk.policy.state_dict().keys() == tiny_janus(seed=0).policy.state_dict().keys()
    strip = lambda n: n.replace("_checkpoint_wrapped_module.", "")  # noqa: E731
    g0, g1 = grads[0], {strip(k): v for k, v in grads[1].items()}
    assert g0.keys() == g1.keys() and all(k.startswith("language_model.") for k in g0)
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], atol=1e-5, rtol=1e-4)

    bk16 = tiny_janus(seed=0)
    bk16.model.to(torch.bfloat16)
    cond = bk16.cond(PROMPTS[:2])
    tok16, logp16, _ = sample(bk16.policy, cond, bk16.uncond(cond), bk16.num_tokens, cfg_scale=5.0,
                              generator=torch.Generator().manual_seed(0))
    logp_tf, _ = score(bk16.policy, cond, tok16, bk16.uncond(cond), cfg_scale=5.0)
    logp_tf.mean().backward()
    assert next(bk16.policy.language_model.parameters()).grad is not None
    assert (logp_tf - logp16).abs().max() < 0.2  # bf16 noise; the exact check is the float32 test
    assert bk16.decode(tok16).dtype == torch.float32


def test_load_model_from_directory(bk, tmp_path):
    from common.models import load_model

    bk.save(str(tmp_path))
    bk2 = load_model(str(tmp_path), "cpu", torch.bfloat16)
    assert isinstance(bk2, JanusT2I) and bk2.model.dtype == torch.bfloat16
    c1, c2 = bk.cond(PROMPTS), bk2.cond(PROMPTS)
    assert all(torch.equal(c1[k], c2[k]) for k in c1)
    sd = bk.policy.state_dict()
    assert all(torch.equal(v.to(torch.bfloat16), sd[k].to(torch.bfloat16)) for k, v in bk2.policy.state_dict().items())


def run(cmd, env=None, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([REPO, os.path.join(REPO, "tests")]),
           **(env or {})}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_missing_weights_give_actionable_error_without_network(tmp_path):
    """An empty HF cache: a one-line FileNotFoundError naming the download, at once (local files only).
    Also: importing common.models does not import transformers."""
    code = ("import sys, common.models as m\n"
            "assert 'transformers' not in sys.modules\n"
            "try:\n    m.load_model('janus-pro-7b')\nexcept FileNotFoundError as e:\n    print('ERR', e)\n")
    p = run([sys.executable, "-c", code], env={"HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "0"}, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    msg = p.stdout.strip().splitlines()[-1]
    assert msg.startswith("ERR Janus-Pro weights not found locally")
    assert "hf download deepseek-community/Janus-Pro-7B --local-dir DIR" in msg and "--model DIR" in msg


def brightness(device="cpu"):
    """Reward for the script test (`--reward test_janus:brightness`): mean pixel value, which varies between
    random samples, so advantages are non-zero."""
    return lambda images, prompts, metadata: images.float().mean(dim=(1, 2, 3)).cpu()


def test_grpo_vanilla_step_updates_only_language_model(bk, tmp_path):
    from common.utils import load_safetensors

    model_dir = tmp_path / "tiny-janus"
    bk.save(str(model_dir))
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    p = run([sys.executable, "grpo_vanilla.py", "--model", str(model_dir), "--prompts", str(tmp_path / "prompts.txt"),
             "--reward", "test_janus:brightness", "--eval-samples", "0", "--prompts-per-step", "2",
             "--group-size", "4", "--num-steps", "1", "--lr", "1e-2", "--beta", "0.05", "--cfg-scale", "5",
             "--image-every", "1", "--activation-checkpointing", "--out-dir", str(tmp_path / "runs")])
    assert p.returncode == 0, p.stderr[-3000:]
    run_dir = tmp_path / "runs" / "grpo_vanilla_s0"
    assert (run_dir / "rollouts_00001.png").exists()
    (ckpt,) = run_dir.glob("checkpoint*/**/policy.safetensors")
    after = load_safetensors(str(ckpt))
    before = bk.policy.state_dict()
    assert after.keys() == before.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("language_model.") for k in changed)
    assert any(k.startswith("language_model.layers.") for k in changed)
