"""The pure maths of stage.py: worked examples of STAGE Eqs. 5-12 (as released; docs/stage.md) and
invariants."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from stage import (PRESETS, advantage_mask, entropy_reward, group_advantages, grpo_loss, kl_k3, kl_weight,
                   masked_advantages, similarity)

D = torch.float64


def t(x):
    return torch.tensor(x, dtype=D)


def close(a, b, atol=2e-6):  # the spec prints 6 decimals
    torch.testing.assert_close(a, t(b) if not torch.is_tensor(b) else b, atol=atol, rtol=0)


# ---- Example A (G = 4, T = 3, C = 3, β = 0.03) -------------------------------------------------------
Q = t([[[1, 0, 0], [1, 1, 0], [0, 0, 1]],
       [[1, .1, 0], [1, 1, .2], [0, 1, 0]],
       [[1, 0, .1], [-1, 1, 0], [0, 0, -1]],
       [[.9, .1, 0], [-1, 1, .1], [1, 1, 1]]])
Q = (Q / Q.norm(dim=-1, keepdim=True))[None]  # (P=1, G=4, T=3, C=3)
LOGP = t([[.50, .20, .10], [.40, .30, .05], [.60, .25, .20], [.45, .10, .15]]).log()
REF = t([[.55, .20, .08], [.40, .25, .07], [.50, .30, .20], [.45, .12, .10]]).log()
BETA = 0.03

A1 = dict(
    R=[0.9, 0.2, 0.4, 0.7],
    A=[1.125356, -1.125356, -0.482296, 0.482296],
    Sim=[[0.995037, 0.495074, -0.5], [0.997488, 0.500012, 0.288675],
         [0.991994, 0.498755, -0.788675], [0.994445, 0.503693, 0.]],
    M=[[0.002481, 0.252463, 0.75], [0.001256, 0.249994, 0.355662],
       [0.004003, 0.250623, 0.894338], [0.002777, 0.248153, 0.5]],
    Aeff=[[0.009542, 0.970835, 2.88409], [-0.004829, -0.96134, -1.367683],
          [-0.006597, -0.413039, -1.473914], [0.004577, 0.40897, 0.824026]],
    w=[[1, 1, 0.75], [1, 1, 1], [1, 1, 0.605662], [1, 1, 1]],
    loss=-0.072325,
    grad=[[-0.001045, -0.080903, -0.239966], [0.000402, 0.080528, 0.112974],
          [0.000966, 0.03392, 0.122826], [-0.000381, -0.034581, -0.067835]],
    vanilla_loss=0.000575,
    vanilla_grad=[[-0.09403, -0.09378, -0.09328], [0.09378, 0.094196, 0.09278],
                  [0.040608, 0.039691, 0.040191], [-0.040191, -0.040691, -0.039358]],
)
A2 = dict(
    R=[1.0, 0.0, 0.5, 0.5],
    A=[1.224445, -1.224445, 0., 0.],
    Sim=[[0.994653, 0.330049, -0.140883], [0.995025, 0.333341, 0.19245],
         [0.743522, 0.249377, -0.394338], [0.745694, 0.251847, 0.144338]],
    M=[[0.002674, 0.334975, 0.570442], [0.002487, 0.333329, 0.403775],
       [0.128239, 0.375311, 0.697169], [0.127153, 0.374077, 0.427831]],
    Aeff=[[0.0104, 1.302966, 2.218868], [-0.009675, -1.296563, -1.570578], [0, 0, 0], [0, 0, 0]],
    w=[[1, 1, 0.929558], [1, 1, 1], [1, 1, 0.802831], [1, 1, 1]],
    loss=-0.054047,
    grad=[[-0.001117, -0.108581, -0.184441], [0.000806, 0.108464, 0.129882],
          [0.000417, -0.0005, 0.], [0., -0.0005, 0.000833]],
    vanilla_loss=0.000575,
    vanilla_grad=[[-0.102287, -0.102037, -0.101537], [0.102037, 0.102454, 0.101037],
                  [0.000417, -0.0005, 0.], [0., -0.0005, 0.000833]],
)


def loss_and_grad(adv, kl_w):
    logp = LOGP.clone().requires_grad_()
    loss, _ = grpo_loss(logp, logp.detach(), REF, adv, clip_eps=0.2, beta=BETA, kl_w=kl_w)
    loss.backward()
    return loss.detach(), logp.grad


@pytest.mark.parametrize("ex", [A1, A2], ids=["A1", "A2"])
def test_example_A_release(ex):
    adv = group_advantages(t([ex["R"]]))  # (1, 4)
    close(adv[0], ex["A"])
    sim = similarity(Q, adv)
    close(sim[0], ex["Sim"])
    M, w = advantage_mask(sim), kl_weight(sim)
    close(M[0], ex["M"])
    close(w[0], ex["w"])
    a_eff = masked_advantages(adv, M, release=True)[0]
    close(a_eff, ex["Aeff"])
    loss, grad = loss_and_grad(a_eff, w[0])
    close(loss, ex["loss"])
    close(grad, ex["grad"])
    loss, grad = loss_and_grad(adv[0], None)  # vanilla GRPO: M ≡ 1, w ≡ 1
    close(loss, ex["vanilla_loss"])
    close(grad, ex["vanilla_grad"])


@pytest.mark.parametrize("ex", [A1, A2], ids=["A1", "A2"])
def test_example_A_paper(ex):
    """Paper default: Ã = M·A in the plain token mean (Eqs. 3 + 8): loss = mean(−M·A + β·w·k3)."""
    adv = group_advantages(t([ex["R"]]))
    sim = similarity(Q, adv)
    M, w = advantage_mask(sim), kl_weight(sim)
    a_eff = masked_advantages(adv, M)[0]
    close(a_eff, t(ex["M"]) * t(ex["A"])[:, None])
    loss, grad = loss_and_grad(a_eff, w[0])
    A, Mx, wx = t(ex["A"])[:, None], t(ex["M"]), t(ex["w"])
    close(loss, (-Mx * A + BETA * wx * kl_k3(LOGP, REF)).mean(), atol=1e-5)
    close(grad, (-Mx * A + BETA * wx * (1 - (REF - LOGP).exp())) / 12, atol=1e-6)


# ---- Example B (entropy reward, G = 8, λ = 0.4) ------------------------------------------------------
H = t([[5.10, 5.30, 4.60, 5.00, 5.25, 4.90, 5.05, 5.40]])
H_REF = t([[5.20, 5.20, 5.15, 5.18, 5.22, 5.10, 5.16, 5.25]])


def test_example_B1_tie():
    R = t([[1, .5, 1, 0, 1, .5, .75, .25]])
    code = entropy_reward(R, H, H_REF, 0.4, centred=True)
    close(code[0], [1.028446, 0.5, 0.939508, 0, 1.032046, 0.5, 0.75, 0.25])
    close(group_advantages(code)[0], [1.064215, -0.329727, 0.829614, -1.648635, 1.073713, -0.329727, 0.329727,
                                      -0.989181])
    paper = entropy_reward(R, H, H_REF, 0.4)
    close(paper[0], [1.39604, 0.5, 1.307102, 0, 1.39964, 0.5, 0.75, 0.25])
    close(group_advantages(paper)[0], [1.159722, -0.481418, 0.996828, -1.397193, 1.166317, -0.481418, -0.023531,
                                       -0.939305])
    close(group_advantages(R)[0], [0.991894, -0.330631, 0.991894, -1.653157, 0.991894, -0.330631, 0.330631,
                                   -0.991894])


def test_example_B2_unique_max():
    R = t([[1, .5, .75, 0, .5, .5, .75, .25]])
    assert torch.equal(entropy_reward(R, H, H_REF, 0.4, centred=True), R)  # the release adds nothing
    close(entropy_reward(R, H, H_REF, 0.4)[0], [1.39604, .5, .75, 0, .5, .5, .75, .25])


def test_example_B3_zero_variance_group():
    A = [0.450105, 0.450105, -2.434584, 0.171396, 0.566894, 0.079562, 0.423452, 0.29307]
    code = entropy_reward(torch.zeros(1, 8, dtype=D), H, H_REF, 0.4, centred=True)  # the release drops R to 0
    close(code[0], [0.013877, 0.013877, -0.075061, 0.005284, 0.017478, 0.002453, 0.013055, 0.009036])
    close(group_advantages(code)[0], A)
    paper = entropy_reward(torch.ones(1, 8, dtype=D), H, H_REF, 0.4)  # every sample is top; A is shift-invariant
    close(group_advantages(paper)[0], A)


# ---- invariants ------------------------------------------------------------------------------------------
def random_batch(P=6, G=8, T=5, C=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(P, G, T, C, generator=g)
    R = torch.randint(0, 4, (P, G), generator=g).float() / 3  # many ties; some all-equal groups
    R[0] = 0.5
    return q, R


def test_mask_and_kl_weight_ranges():
    for seed in range(5):
        q, R = random_batch(seed=seed)
        sim = similarity(q, group_advantages(R))
        M, w = advantage_mask(sim), kl_weight(sim)
        assert torch.isfinite(sim).all() and (sim.abs() <= 1 + 1e-6).all()
        assert (M >= 0).all() and (M <= 1).all() and (w >= 0.5).all() and (w <= 1).all()


def test_identical_rollouts_with_opposing_advantages_get_zero_mask():
    # float64: the release's 1/(ΣM + 1e-6) would amplify float32 round-off in M (≈ 1e-8) to O(A)
    q = torch.randn(1, 1, 7, 4, dtype=D).expand(1, 6, 7, 4)  # 6 identical images
    adv = group_advantages(t([[1.0, 0, 1, 0, 0.3, 0.6]]))  # no sample at the mean: all A ≠ 0
    assert (adv != 0).all()
    M = advantage_mask(similarity(q, adv))
    torch.testing.assert_close(M, torch.zeros_like(M), atol=1e-12, rtol=0)
    for release in (False, True):
        a = masked_advantages(adv, M, release)
        torch.testing.assert_close(a, torch.zeros_like(a), atol=1e-6, rtol=0)


def test_similarity_is_per_group():
    """Sim of a batch of groups is each group's Sim: nothing crosses groups, whatever the layout."""
    q, R = random_batch()
    adv = group_advantages(R)
    whole = similarity(q, adv)
    for p in range(q.shape[0]):
        torch.testing.assert_close(whole[p], similarity(q[p : p + 1], adv[p : p + 1])[0])
    M = advantage_mask(whole)
    whole_rel = masked_advantages(adv, M, release=True)
    for p in range(q.shape[0]):
        torch.testing.assert_close(whole_rel[p], masked_advantages(adv[p : p + 1], M[p : p + 1], release=True)[0])


@pytest.mark.parametrize("centred", [False, True])
def test_entropy_reward_changes_only_top_samples(centred):
    g = torch.Generator().manual_seed(1)
    R = torch.randint(0, 3, (50, 8), generator=g).float()
    h, h_ref = torch.rand(50, 8, generator=g) * 5, torch.rand(50, 8, generator=g) * 5
    out = entropy_reward(R, h, h_ref, 0.4, centred)
    top = R == R.max(dim=1, keepdim=True).values
    assert torch.equal(out[~top], R[~top])
    if not centred:
        assert (out[top] > R[top]).all()  # R_ent > 0: every tied top sample gets a bonus
    else:
        torch.testing.assert_close((out - R).sum(1), torch.zeros(50), atol=1e-6, rtol=0)


def test_no_nan_in_degenerate_groups():
    G, T = 8, 5
    q = torch.randn(4, G, T, 3)
    x = torch.tensor(0.1)
    for v in torch.linspace(0.1, 1.0, 200):  # a value whose float32 group mean is off by round-off
        if torch.full((G,), float(v)).mean() != v:
            x = v
            break
    R = torch.stack([torch.zeros(G), torch.full((G,), float(x)), torch.ones(G), torch.arange(G).float()])
    adv = group_advantages(R)
    assert (adv[:3] == 0).all()  # std ≤ 1e-6: A ≡ 0, never a one-signed round-off advantage
    for a in (adv, torch.ones(4, G), torch.zeros(4, G)):  # incl. an all-positive A (empty opposite set)
        sim = similarity(q, a)
        M, w = advantage_mask(sim), kl_weight(sim)
        for release in (False, True):
            assert torch.isfinite(masked_advantages(a, M, release)).all() and torch.isfinite(w).all()
    torch.testing.assert_close(similarity(q, torch.ones(4, G)), torch.ones(4, G, T))  # Sim := 1 -> M = 0
    out = entropy_reward(R, torch.rand(4, G), torch.rand(4, G), 0.4, centred=True)
    assert torch.isfinite(out).all() and torch.isfinite(group_advantages(out)).all()
    M0 = torch.zeros(4, G, T)  # ΣM = 0 in the release normalisation
    assert torch.isfinite(masked_advantages(adv, M0, release=True)).all()


def test_loss_per_token_advantage_and_kl_weight():
    B, T = 3, 4
    logp, ref = torch.rand(B, T).log(), torch.rand(B, T).log()
    adv = torch.randn(B)
    l1, _ = grpo_loss(logp, logp, ref, adv, 0.2, 0.1)
    l2, _ = grpo_loss(logp, logp, ref, adv[:, None].expand(B, T), 0.2, 0.1, torch.ones(B, T))
    torch.testing.assert_close(l1, l2)
    l3, _ = grpo_loss(logp, logp, ref, adv, 0.2, 0.1, torch.zeros(B, T))  # "w/o KL" groups: no KL term
    torch.testing.assert_close(l3, -adv.mean())


def test_presets_match_the_paper():
    g, h, o = PRESETS["geneval_paper"], PRESETS["hps_mix_paper"], PRESETS["ocr_paper"]
    assert PRESETS["toy"] == {}
    assert (g["lr"], g["beta"], g["group_size"], g["prompts_per_step"], g["cfg_scale"], g["num_steps"],
            g["entropy_reward"]) == (5e-6, 0.03, 8, 8, 5.0, 1600, True)
    assert (h["lr"], h["beta"], h["prompts_per_step"], h["entropy_reward"]) == (1e-6, 0.01, 16, False)  # 8 x GA 2
    assert (o["lr"], o["beta"], o["prompts_per_step"], o["entropy_reward"]) == (1e-6, 0.01, 8, False)


def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


COCO_ROW = {"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a photo of a cat"}
TOY_ROW = {"tag": "counting", "include": [{"class": "square", "count": 3}], "prompt": "a photo of three squares"}


@pytest.mark.parametrize("rows, message", [
    (None, "prompt file not found: data/geneval/evaluation_metadata_flow_grpo.json; get it: the STAGE release's "
           "data/janus_geneval_prompts/evaluation_metadata_flow_grpo.json"),
    ([TOY_ROW], "class 'square' is not one this detector knows"),  # the toy's prompts under the COCO detector
    ([COCO_ROW], "Janus-Pro weights not found locally"),
])
def test_geneval_preset_stops_in_one_line_naming_what_is_missing(rows, message, tmp_path):
    """The preset names its files (relative to the working directory); each missing piece is one line, before any
    model is built, and never a fall-back to the toy's files."""
    if rows is not None:
        # the preset's 8 prompts per step, JSON lines under .json as in the release
        _write_jsonl(tmp_path / "data/geneval/evaluation_metadata_flow_grpo.json", rows * 8)
        _write_jsonl(tmp_path / "data/geneval/evaluation_metadata.jsonl", [COCO_ROW])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO, "HF_HUB_OFFLINE": "1",
           "HF_HUB_CACHE": str(tmp_path / "empty_cache")}
    p = subprocess.run([sys.executable, os.path.join(REPO, "stage.py"), "--preset", "geneval_paper"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=300)
    lines = p.stderr.strip().splitlines()
    assert p.returncode != 0 and lines[-1].startswith("error:") and message in lines[-1], p.stderr[-2000:]
    assert "Traceback" not in p.stderr


def test_loss_logs_the_release_weighted_kl():
    """stats: "kl" = mean k3 (the other scripts' losses/kl) and "kl_weighted" = mean (β'/β)·k3 (the release's kl)."""
    torch.manual_seed(0)
    logp, ref = -torch.rand(4, 6), -torch.rand(4, 6)
    w = 0.5 + 0.5 * torch.rand(4, 6)
    _, st = grpo_loss(logp, logp, ref, torch.randn(4), 0.2, 0.03, w)
    torch.testing.assert_close(st["kl"], kl_k3(logp, ref).mean())
    torch.testing.assert_close(st["kl_weighted"], (w * kl_k3(logp, ref)).mean())
    assert 0.5 * st["kl"] <= st["kl_weighted"] <= st["kl"]
