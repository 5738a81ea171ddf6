"""FSDP2 loads within the sharded footprint (common/weights.py, common/distributed.py fill_shards): the policy and
the reference are built on the meta device, sharded, then each rank reads only its rows of every weight from the
files. Two gloo ranks on a mid-size random model: the tensor bytes a rank ever holds at once while loading stay
within its shards plus one transformer block (counted from the tensors, not RSS), and the loaded weights equal a
plain load."""
import copy
import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tensor_bytes import PeakTensorBytes, held_bytes

# 6 blocks of dim 256 (0.85M parameters each), a small vocabulary: 5.2M parameters, 21 MB in fp32
MID = dict(dim=256, n_layer=6, n_head=4, multiple_of=64, vocab_size=64, block_size=64, cls_token_num=12,
           model_type="t2i", caption_dim=64)


@pytest.fixture(scope="module")
def mid_dir(tmp_path_factory):
    """A toy-format model directory (config.json + safetensors) of a random mid-size GPT."""
    from common.models import build_t2i
    from toy.model import toy_config

    d = tmp_path_factory.mktemp("mid")
    torch.manual_seed(0)
    bk = build_t2i({**toy_config("tiny"), "gpt": MID})
    for p in bk.policy.parameters():  # not the zero output head of a fresh GPT: every weight distinct
        torch.nn.init.normal_(p, std=0.1)
    bk.save(str(d))
    return str(d)


def _load_rank(rank: int, world: int, init: str, model_dir: str, out: str):
    import common.distributed as D
    from common.models import load_model
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    device = torch.device("cpu")
    fill, peaks = D.fill_shards, {}

    def fill_measured(policy, weights, dev):  # the peak while filling, apart from the first forward's gathers
        before, counter.peak = counter.peak, counter.now
        fill(policy, weights, dev)
        peaks.setdefault("fill", []).append(counter.peak)
        counter.peak = max(before, counter.peak)

    D.fill_shards = fill_measured
    with PeakTensorBytes() as counter:  # as the scripts do under --dist fsdp2
        bk = load_model(model_dir, device, policy_on_meta=True)
        policy = bk.policy
        ref = copy.deepcopy(policy).requires_grad_(False)
        peaks["built"] = counter.peak
        example = bk.cond(["a red circle"])
        D.shard(policy, example, device, world, None, bk.weights)
        D.shard(ref, example, device, world, None, bk.weights)
    frozen = held_bytes(bk.vq, bk.text, extra=[policy.freqs_cis, ref.freqs_cis])  # whole on every rank, by design
    block = sum(p.numel() * p.element_size() for p in policy.layers[0].parameters())  # global shapes
    full_sd = get_model_state_dict(policy, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    full_ref = get_model_state_dict(ref, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    result = {"shards": held_bytes(policy, ref), "block": block, "frozen": frozen, "built": peaks["built"],
              "fill": peaks["fill"], "peak": counter.peak, "model": sum(p.numel() * p.element_size() for p in policy.parameters())}
    if rank == 0:
        plain = load_model(model_dir).policy.state_dict()
        result["equal"] = (full_sd.keys() == plain.keys() == full_ref.keys()
                           and all(torch.equal(full_sd[k], plain[k]) and torch.equal(full_ref[k], plain[k])
                                   for k in plain))
    with open(f"{out}.{rank}", "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()


@pytest.mark.slow
def test_fsdp2_load_stays_within_shards_plus_one_block(mid_dir, tmp_path):
    out = str(tmp_path / "result")
    mp.spawn(_load_rank, args=(2, f"file://{tmp_path}/init", mid_dir, out), nprocs=2)
    for rank in range(2):
        r = json.loads(open(f"{out}.{rank}").read())
        print(rank, r)
        assert rank or r["equal"], "the sharded load differs from a plain load"
        # before sharding: only the frozen VQ and text encoder (built at random, then loaded: twice, for a moment)
        assert r["built"] <= 2 * r["frozen"], "the policy was materialised before sharding"
        # filling the policy's shards, then the reference's: each rank reads only its rows
        assert r["fill"][0] <= r["shards"] / 2 + r["block"] + r["frozen"]
        assert r["fill"][1] <= r["shards"] + r["block"] + r["frozen"]
        assert r["shards"] < 1.2 * r["model"]  # two half-models (policy and reference): one model's bytes, padded


def _janus_rank(rank: int, world: int, init: str, model_dir: str, out: str, cpu_offload: bool = False):
    import common.distributed as D
    from common.models import load_model
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    device = torch.device("cpu")
    bk = load_model(model_dir, device, policy_on_meta=True)
    meta = all(p.is_meta for p in bk.policy.parameters())
    D.shard(bk.policy, bk.cond(["a red cat"]), device, world, None, bk.weights, cpu_offload=cpu_offload)
    offloaded = all(p.device.type == "cpu" for p in bk.policy.parameters())
    full = get_model_state_dict(bk.policy, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        plain = load_model(model_dir)
        want = plain.policy.state_dict()
        frozen = {k: v for k, v in plain.model.state_dict().items() if not k.startswith("model.language_model.")}
        tied = plain.model.lm_head.weight is plain.model.model.language_model.embed_tokens.weight  # (tiny config)
        skip = ("model.generation_", "lm_head.") if tied else ("model.generation_",)  # policy parameters
        got = {k: v for k, v in bk.model.state_dict().items() if k in frozen and not k.startswith(skip)}
        result = {"meta": meta, "offloaded": offloaded, "policy": full.keys() == want.keys() and all(torch.equal(full[k], want[k]) for k in want),
                  "frozen": bool(got) and all(torch.equal(v, frozen[k]) for k, v in got.items()),
                  "buffers": all(torch.equal(a, b) for a, b in zip(bk.model.buffers(), plain.model.buffers()))}
        with open(out, "w") as f:
            json.dump(result, f)
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("cpu_offload", [False, True])
def test_fsdp2_janus_load_from_safetensors_equals_plain_load(cpu_offload, tmp_path):
    """Janus-Pro (transformers): built with its parameters on the meta device and its buffers real, the frozen vision
    encoder, VQ model and text head read whole, the policy's shards read from the safetensors files; with
    --cpu-offload too (the shards are filled on the CPU, where CPUOffloadPolicy keeps them)."""
    pytest.importorskip("transformers.models.janus")
    from common.janus import tiny_janus

    model_dir = str(tmp_path / "tiny-janus")
    tiny_janus(seed=0).save(model_dir)
    out = str(tmp_path / "result.json")
    mp.spawn(_janus_rank, args=(2, f"file://{tmp_path}/init", model_dir, out, cpu_offload), nprocs=2)
    assert json.loads(open(out).read()) == {"meta": True, "offloaded": True, "policy": True, "frozen": True,
                                            "buffers": True}


def test_official_llamagen_weights_read_by_rows_from_the_mapped_file(tmp_path):
    """An official LlamaGen .pt under FSDP2: the GPT on the meta device, the file memory-mapped and checked strictly,
    any rows of any weight read as stored."""
    from helpers import C2I, IMAGE_SIZE, random_gpt

    from common.llamagen import official_gpt_config, official_gpt_weights

    gpt = random_gpt("c2i")
    torch.save({"model": gpt.state_dict()}, tmp_path / "c2i_B_256.pt")
    meta, weights = official_gpt_weights(str(tmp_path / "c2i_B_256.pt"), official_gpt_config("B", "c2i", IMAGE_SIZE,
                                                                                                **C2I))
    assert all(p.is_meta for p in meta.parameters()) and sorted(weights.names()) == sorted(gpt.state_dict())
    for k, v in gpt.state_dict().items():
        assert weights.shape(k) == tuple(v.shape) and torch.equal(weights.rows(k, 1, 3), v[1:3])
    with pytest.raises(ValueError, match="does not match GPT-c2i"):
        official_gpt_weights(str(tmp_path / "c2i_B_256.pt"), official_gpt_config("B", "c2i", IMAGE_SIZE,
                                                                                  **{**C2I, "n_layer": 3}))


def test_toy_format_weights_checked_before_sharding(mid_dir, tmp_path):
    from common.models import load_model

    bk = load_model(mid_dir, policy_on_meta=True)
    assert all(p.is_meta for p in bk.policy.parameters()) and bk.weights is not None
    assert not any(p.is_meta for p in (*bk.vq.parameters(), *bk.text.parameters()))
    config = json.loads(open(os.path.join(mid_dir, "config.json")).read())
    config["gpt"]["n_layer"] = 7
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in os.listdir(mid_dir):
        (bad / f).write_bytes(open(os.path.join(mid_dir, f), "rb").read())
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not fit its config.json: missing"):
        load_model(str(bad), policy_on_meta=True)
