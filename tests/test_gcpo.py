"""The pure maths of gcpo.py: hand-computed test vectors of GCPO §5 (Eqs. 6-8, as released; docs/gcpo.md),
reproduced by gcpo.py's own functions, and invariants."""
import copy
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from common.sampling import entropy, log_probs, score
from conftest import REPO
from gcpo import (PRESETS, Args, critical_tokens, dynamic_weight, entropy_gradient, gcpo_loss, group_advantages,
                  group_similarity, kl_k3, local_mean)

D = torch.float64


def t(x):
    return torch.tensor(x, dtype=D)


def close(a, b, atol=1e-6):
    torch.testing.assert_close(a.double(), t(b) if not torch.is_tensor(b) else b.double(), atol=atol, rtol=0)


def sets(entropy_, sim, grid, frac=0.1):
    """critical_tokens as lists of positions: [image][set] -> sorted positions."""
    out = critical_tokens(entropy_, sim, grid, frac)
    return [[torch.nonzero(out[j, b]).flatten().tolist() for j in range(3)] for b in range(out.shape[1])]


# -- §11 test vectors --------------------------------------------------------------------------------------------
def test_tv1_selection_entropy_is_the_guided_one():
    lp = log_probs(t([2.0, 1.0, 0.0, -1.0]), t([1.0, 1.0, 0.5, 0.0]), cfg_scale=5.0)
    assert abs(entropy(lp).item() - 0.0433649) < 1e-7  # what the sampler returns and GCPO selects on
    assert abs(entropy(log_probs(t([2.0, 1.0, 0.0, -1.0]))).item() - 0.9475370) < 1e-7
    assert abs(log_probs(t([2.0, 1.0, 0.0, -1.0]))[0].item() + 0.4401897) < 1e-7  # the loss's conditional log-prob


TV2_E = [[1.0, 2.0, 3.0, 4.0], [2.0, 5.0, 1.0, 0.5], [0.0, 1.5, 2.5, 3.5], [4.0, 3.0, 2.0, 1.0]]


def test_tv2_local_mean_gradient_and_window():
    E = t(TV2_E)[None]
    close(local_mean(E)[0], [[1.0, 1.5, 2.5, 3.5], [1.666667, 2.6, 3.0, 2.125], [2.333333, 1.9, 2.1, 1.875],
                             [1.833333, 2.2, 2.5, 2.25]])
    close(entropy_gradient(E)[0], [[0.833333, 1.331353, 1.118034, 1.700184], [1.146977, 0.696020, 0.310494, 1.194061],
                                   [0.441273, 0.231541, 0.250312, 0.233519], [0.620036, 0.448454, 0.400780, 0.450694]])
    # N = 16: k = 1, window [1, 13): the largest |∇| there is 1.700184 at 3 (position 0 and 13..15 are excluded)
    init, grad, _ = sets(E.view(1, 16), torch.zeros(1, 16, dtype=D), (4, 4))[0]
    assert init == [0] and grad == [3]


def test_tv2_gradient_components():
    """dx, dy of the spec (central differences, one-sided and not halved at the borders) via torch.gradient."""
    dy, dx = torch.gradient(local_mean(t(TV2_E)[None]), dim=(1, 2))
    close(dx[0], [[0.5, 0.75, 1.0, 1.0], [0.933333, 0.666667, -0.2375, -0.875], [-0.433333, -0.116667, -0.0125, -0.225],
                  [0.366667, 0.333333, 0.025, -0.25]])
    close(dy[0], [[0.666667, 1.1, 0.5, -1.375], [0.666667, 0.2, -0.2, -0.8125], [0.083333, -0.2, -0.25, 0.0625],
                  [-0.5, 0.3, 0.4, 0.375]])


def test_tv3_group_similarity():
    e = t([[[1, 0, 0], [1, 1, 0], [0, 0, 2], [1, 2, 3]],
           [[1, 0, 0], [0, 1, 1], [0, 1, 0], [1, 2, 3]],
           [[2, 0, 0], [1, 0, 1], [3, 0, 0], [3, 2, 1]]])  # (G=3, T=4, C=3)
    close(group_similarity(e[None]), [[1.0, 0.5, 0.0, 0.809524]])


def test_tv4_full_selection():
    rng = np.random.default_rng(7)
    ent = torch.from_numpy(np.round(rng.uniform(0.0, 8.0, size=(3, 36)), 2))
    sim = torch.from_numpy(np.round(rng.uniform(-0.2, 1.0, size=36), 3))[None]  # one group, shared
    assert ent[0, :3].tolist() == [5.0, 7.18, 6.21] and sim[0, :3].tolist() == [0.226, 0.423, 0.718]
    got = sets(ent, sim, (6, 6))
    assert got == [[[0, 1, 2], [3, 5, 30], [6, 9, 12]],
                   [[0, 1, 2], [5, 6, 7], [4, 9, 12]],
                   [[0, 1, 2], [5, 6, 11], [4, 9, 12]]]
    g0 = entropy_gradient(ent[:1].view(1, 6, 6)).flatten()
    close(g0[[3, 5, 30]], [2.299719, 2.852762, 1.600190])


def test_tv5_advantages():
    r = t([1, 0, 0, 1, 0.3, 0.3, 0.3, 0.3, 0.21, 0.25, 0.27, 0.30]).view(3, 4)
    close(group_advantages(r).flatten(), [0.865875, -0.865875, -0.865875, 0.865875, 0, 0, 0, 0,
                                          -1.254981, -0.198155, 0.330258, 1.122878])


TV6 = dict(
    logp=[[-2.0, -1.5, -3.0, -0.7, -2.2, -1.0, -4.0, -0.3], [-1.0, -2.5, -0.4, -3.3, -1.7, -2.0, -0.9, -1.2]],
    ref=[[-2.1, -1.2, -3.9, -0.7, -2.0, -1.8, -3.8, -0.1], [-1.3, -2.5, -0.2, -3.0, -1.0, -2.2, -0.8, -1.4]],
    mask=[[1, 0, 0, 1, 0, 1, 1, 0], [1, 1, 0, 0, 1, 0, 0, 1]],
)


def tv6(detach: bool):
    logp = t(TV6["logp"]).requires_grad_()
    ref, mask, adv = t(TV6["ref"]), t(TV6["mask"]).bool(), t([0.8, -0.5])
    w = dynamic_weight(logp, ref, clip=0.5, detach=detach)
    loss, _ = gcpo_loss(logp, logp.detach(), ref, adv, mask, w, clip_eps=0.2, beta=0.01)
    loss.backward()
    return w, loss, logp.grad


def test_tv6_weight_kl_and_loss():
    w, loss, _ = tv6(detach=True)
    close(w, [[1.105171, 0.922995, 1.164903, 1.123678, 1.062688, 1.160360, 1.111556, 1.074953],
              [1.349859, 1.174929, 1.056197, 0.977352, 0.903188, 0.956224, 0.948883, 0.982948]])
    close(kl_k3(t(TV6["logp"]), t(TV6["ref"])),
          [[0.004837, 0.049859, 0.306570, 0, 0.021403, 0.249329, 0.021403, 0.021403],
           [0.040818, 0, 0.021403, 0.049859, 0.313753, 0.018731, 0.005171, 0.018731]])
    assert abs(loss.item() - (-0.173582697800)) < 1e-10
    assert abs(tv6(detach=False)[1].item() - (-0.173582697800)) < 1e-10  # the value does not depend on detaching


def test_tv6_gradient_release_weight_not_detached():
    close(tv6(detach=False)[2], [[-0.282752, -0.041451, 0.0, -0.16832, -0.025342, -0.115348, -0.123129, 0.0],
                                 [0.238658, 0.124996, 0.01663, 0.015048, 0.055182, 0.009542, 0.007069, 0.071203]])


def test_tv6_gradient_paper_weight_detached():
    close(tv6(detach=True)[2], [[-0.110398, 0.0, 0.0, -0.112368, 0.0, -0.115348, -0.111432, 0.0],
                                [0.08469, 0.073433, 0.0, 0.0, 0.055182, 0.0, 0.0, 0.061661]])


# -- invariants --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("grid, P, G", [((8, 8), 3, 4), ((16, 16), 2, 8), ((24, 24), 1, 4), ((6, 10), 2, 3)])
def test_exactly_3k_disjoint_tokens_in_their_windows(grid, P, G):
    N = grid[0] * grid[1]
    k = int(0.1 * N)
    gen = torch.Generator().manual_seed(N)
    ent = torch.rand(P * G, N, generator=gen) * 5
    sim = group_similarity(torch.randn(P, G, N, 8, generator=gen))
    out = critical_tokens(ent, sim, grid, 0.1)  # (3, B, T)
    assert (out.sum(2) == k).all()  # k per set per image
    assert (out.sum(0) <= 1).all()  # disjoint
    assert (out.any(0).sum(1) == 3 * k).all()  # exactly 3k distinct critical tokens (171 for 576, 75 for 256)
    assert out[0][:, :k].all() and not out[1][:, :k].any() and not out[1][:, k + int(0.8 * N):].any()
    # low-similarity: nothing outside the first two sets is less similar than what was picked
    s = sim.repeat_interleave(G, 0)
    for b in range(P * G):
        free = ~(out[0, b] | out[1, b])
        assert s[b][out[2, b]].max() <= s[b][free & ~out[2, b]].min()


def test_entropy_gradient_never_selects_the_last_tenth():
    N, k = 256, 25
    ent = torch.zeros(1, N)
    ent[0, -20:] = 100.0  # huge gradients at the end of the raster, outside the window [25, 229)
    _, grad, _ = sets(ent, torch.zeros(1, N), (16, 16))[0]
    assert len(grad) == k and max(grad) < k + int(0.8 * N)


def test_detached_weight_gives_gradient_only_on_critical_tokens():
    gen = torch.Generator().manual_seed(0)
    P, G, N = 2, 4, 64
    mask = critical_tokens(torch.rand(P * G, N, generator=gen), torch.rand(P, N, generator=gen), (8, 8), 0.1).any(0)
    logp = (torch.rand(P * G, N, generator=gen) * -3).requires_grad_()
    ref = logp.detach() + 0.3 * torch.randn(P * G, N, generator=gen)
    adv = torch.randn(P * G, generator=gen)
    for detach in (True, False):
        logp.grad = None
        w = dynamic_weight(logp, ref, clip=0.5, detach=detach)
        loss, _ = gcpo_loss(logp, logp.detach(), ref, adv, mask, w, clip_eps=0.2, beta=0.04)
        loss.backward()
        if detach:
            assert (logp.grad[~mask] == 0).all() and (logp.grad[mask] != 0).all()
        else:  # the release: earlier non-critical tokens receive gradient through w
            assert (logp.grad[~mask] != 0).any()


def test_weight_is_one_when_policy_equals_reference(tiny):
    cond = tiny.cond(["a photo of a red circle", "a photo of two squares"])
    tokens = torch.randint(0, 64, (2, tiny.num_tokens))
    logp, _ = score(tiny.policy, cond, tokens)
    ref_logp, _ = score(copy.deepcopy(tiny.policy), cond, tokens)
    for detach in (True, False):
        assert (dynamic_weight(logp, ref_logp, clip=0.5, detach=detach) == 1).all()


def test_backend_embeddings_feed_the_similarity(tiny):
    tokens = torch.randint(0, 64, (6, tiny.num_tokens))
    tokens[:3, 0] = 7  # group 0 agrees at position 0
    s = group_similarity(tiny.codebook(tokens).view(2, 3, tiny.num_tokens, -1))
    assert s.shape == (2, tiny.num_tokens) and abs(s[0, 0].item() - 1) < 1e-6 and (s <= 1 + 1e-6).all()


# -- presets (paper App. A.1) ------------------------------------------------------------------------------------
def test_presets_are_args_fields_and_match_the_paper():
    fields = {f.name for f in dataclasses.fields(Args)}
    assert PRESETS["toy"] == {} and all(set(p) <= fields for p in PRESETS.values())
    table = {  # lr, beta, G, cfg, prompts/device, steps, grad. accumulation, c (A.1); 4 GPUs
        "llamagen_hps_paper": (1e-5, 0.04, 8, 1, 2, 900, 2, 0.5),
        "janus1b_geneval_paper": (3e-6, 0.01, 4, 5, 2, 1600, 1, 1.0),
        "janus1b_hps_paper": (1e-6, 0.01, 4, 5, 2, 1600, 1, 0.5),
        "janus7b_geneval_paper": (3e-6, 0.01, 4, 5, 2, 1600, 1, 0.6),
        "janus7b_hps_paper": (1e-6, 0.01, 8, 5, 4, 1600, 1, 1.0),
    }
    for name, (lr, beta, G, cfg, bs, steps, ga, c) in table.items():
        p = PRESETS[name]
        assert (p["lr"], p["beta"], p["group_size"], p["cfg_scale"], p["num_steps"], p["weight_clip"]) == \
            (lr, beta, G, cfg, steps, c), name
        assert p["prompts_per_step"] == bs * ga * 4 and p["micro_batch_size"] == bs * G and p["max_grad_norm"] == 1.0


def run_gcpo(extra, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, "gcpo.py", "--model", "tiny", "--num-steps", "1", "--eval-samples", "0",
                           "--out-dir", str(tmp_path), *extra], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("extra, message", [
    (["--preset", "janus7b_hps_paper"], "prompt file not found: data/hps/hps_train_metadata.json"),
    (["--preset", "janus7b_hps_paper", "--model", "janus-pro-7b", "--prompts", "data/shapeworld/train.jsonl"],
     "Janus-Pro weights not found locally"),
    (["--preset", "janus7b_hps_paper", "--prompts", "data/shapeworld/train.jsonl"],
     "reward 'hps' needs HPS_v2.1_compressed.pt"),  # explicit --model tiny wins
    (["--t5-template", "no caption"], "must hold the caption's place"),
    (["--critical-frac", "0.4"], "--critical-frac 0.4"),
    (["--sim-embedding", "input"], "has no input_embeds"),
])
def test_gcpo_bad_input_fails_with_one_line(extra, message, tmp_path):
    p = run_gcpo(extra, tmp_path)
    last = p.stderr.strip().splitlines()[-1]
    assert p.returncode != 0 and last.startswith("error:") and message in last, p.stderr[-2000:]
