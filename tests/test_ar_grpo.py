"""AR-GRPO's maths (quantiser, multi-reward Eq. 10), presets and the c2i reward text."""
import os
import subprocess
import sys

import pytest
import torch

from ar_grpo import PRESETS, multi_reward, quantise
from conftest import REPO


@pytest.mark.parametrize("s, q", [(-1.0, -1.0), (-1e-6, -1.0), (0.0, 0.5), (0.2999, 0.5), (0.3, 1.0), (0.5999, 1.0),
                                  (0.6, 1.5), (0.99, 1.5), (1.0, 1.5), (3.0, 1.5)])
def test_quantise_at_and_around_every_threshold(s, q):
    """AR-GRPO App. D, quantised CLIP/HPS: thresholds 0, 0.3, 0.6 on the raw score; the release's crash at s >= 1
    becomes 1.5."""
    assert quantise(torch.tensor([s])).item() == q


def test_multi_reward_release_weights_and_ablations():
    clip, hps = torch.tensor([0.25, 0.35]), torch.tensor([0.2, -0.1])
    maniqa = torch.tensor([0.5, 0.8])
    label, fake, weird = torch.tensor([3.5, 5.0]), torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    r, parts = multi_reward([clip, hps], maniqa, [label, fake, weird], 1.0, 1.0, 1.0)
    r_c = torch.tensor([5 * 0.25 + 0.5 + 5 * 0.2 + 0.5, 5 * 0.35 + 1.0 + 5 * -0.1 - 1.0])
    r_i = torch.tensor([1.0, 1.6])
    r_r = torch.tensor([4.5 / 4, 6.0 / 4])
    for got, want in ((parts["r_C"], r_c), (parts["r_I"], r_i), (parts["r_R"], r_r), (r, r_c + r_i + r_r)):
        torch.testing.assert_close(got, want)
    # Tables 6-8: a λ of 0 removes exactly that term
    r0, _ = multi_reward([clip, hps], maniqa, [label, fake, weird], 0.0, 1.0, 1.0)
    torch.testing.assert_close(r0, r_i + r_r)
    r1, parts1 = multi_reward([clip], None, [], 2.0, 1.0, 1.0)  # absent terms are 0
    torch.testing.assert_close(r1, 2 * (5 * clip + quantise(clip)))
    assert torch.equal(parts1["r_I"], torch.zeros(2)) and torch.equal(parts1["r_R"], torch.zeros(2))


def test_presets_paper_and_release():
    p, r, t = PRESETS["c2i_paper"], PRESETS["c2i_release"], PRESETS["t2i_release"]
    assert PRESETS["toy"] == {}
    assert (p["lr"], p["beta"], p["group_size"], p["cfg_scale"], p["adam_betas"], p["weight_decay"]) == \
        (1e-5, 0.1, 8, 2.0, (0.9, 0.95), 0.05)
    assert p["prompts_per_step"] * p["group_size"] == 64 and p["model"] == "llamagen-c2i-b"
    assert (r["adam_betas"], r["weight_decay"], r["prompts_per_step"] * r["group_size"], r["model"]) == \
        ((0.9, 0.999), 0.0, 32, "llamagen-c2i-xl")
    assert (t["cfg_scale"], t["beta"], t["prompts_per_step"] * t["group_size"], t["t5_right_pad"]) == \
        (4.0, 1.0, 64, True)
    for name in ("c2i_paper", "c2i_release", "t2i_paper", "t2i_release"):
        assert PRESETS[name]["align_rewards"] == ("clip", "hps") and PRESETS[name]["quality_reward"] == "maniqa"
        assert PRESETS[name]["realism_rewards"] == ("qwen_label", "qwen_fake", "qwen_weird")
    assert t["dtype"] == "bfloat16-pure" and all(PRESETS[n]["dtype"] == "bfloat16" for n in ("c2i_paper", "t2i_paper"))
    # the release's linear decay runs over 20 epochs: the LR is about constant over the steps it runs
    assert r["lr_decay_steps"] == 20 * 1281167 // 4 and t["lr_decay_steps"] == 75000
    assert p["prompts"] == r["prompts"] == "data/imagenet/train_images.txt"  # one class id per ImageNet image
    ids = open(os.path.join(REPO, "data/imagenet/class_ids.txt")).read().split()  # the uniform alternative
    assert ids == [str(i) for i in range(1000)]


def test_c2i_reward_text_is_a_photo_of_class_names(tiny):
    from common.llamagen import GPT, GPTConfig, VQConfig, VQModel
    from common.models import LlamaGenC2I

    gpt = GPT(GPTConfig(dim=32, n_layer=1, n_head=2, multiple_of=16, vocab_size=64, block_size=16, cls_token_num=1,
                        model_type="c2i", num_classes=3)).init_weights()
    vq = VQModel(VQConfig(codebook_size=64, codebook_embed_dim=4, z_channels=16, ch=8, ch_mult=(1, 1, 1, 2),
                          num_res_blocks=1, norm_groups=4))
    bk = LlamaGenC2I(gpt, vq, 32, ["tench, Tinca tinca", "goldfish", "shark"])
    assert bk.reward_prompts(["1", "0"]) == ["a photo of goldfish", "a photo of tench, Tinca tinca"]
    assert torch.equal(bk.uncond(bk.cond(["2"]))["label"], torch.tensor([3]))  # the null class
    with pytest.raises(ValueError, match="class ids 0..2"):
        bk.cond(["7"])


def run_ar(extra, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, "ar_grpo.py", "--model", "tiny", "--num-steps", "1", "--eval-samples", "0",
                            "--out-dir", str(tmp_path), *extra], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=300)


@pytest.mark.parametrize("extra, message", [
    (["--lambda-c", "0", "--lambda-i", "0"], "no reward"),
    (["--t5-right-pad"], "has no T5 caption encoder"),
    (["--preset", "c2i_paper", "--model", "llamagen-c2i-b", "--prompts", "data/imagenet/class_ids.txt"],
     "llamagen-c2i-b needs c2i_B_256.pt"),
    (["--preset", "c2i_paper"], "prompt file not found: data/imagenet/train_images.txt; get it: python -m "
                                "common.imagenet_prompts"),
])
def test_ar_grpo_bad_input_fails_with_one_line(extra, message, tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMAGEN_DIR", str(tmp_path))
    p = run_ar(extra, tmp_path)
    last = p.stderr.strip().splitlines()[-1]
    assert p.returncode != 0 and last.startswith("error:") and message in last, p.stderr[-2000:]
