"""Helpers shared by the test files (`from helpers import ...`; tests/conftest.py holds the fixtures and puts the
repository on sys.path): running the algorithm scripts on the tiny model, comparing their trained weights, and tiny
official-format LlamaGen models."""
import os
import subprocess

import torch

from conftest import REPO
from common.llamagen import GPT, VQConfig, official_gpt_config


# ----------------------------------------------------------------------------- the algorithm scripts, end to end

SCRIPTS = ["grpo_vanilla.py", "stage.py", "gcpo.py", "ar_grpo.py"]


def reward_flags(script: str, name: str) -> list[str]:
    """Train with the single reward `name`: ar_grpo.py takes it as its only (alignment) reward term."""
    return ["--align-rewards", name, "--quality-reward", ""] if script == "ar_grpo.py" else ["--reward", name]


TINY = ["--model", "tiny", "--prompts-per-step", "4", "--group-size", "4", "--eval-samples", "0", "--image-every", "1",
        "--lr", "1e-3", "--beta", "0.05"]
COLOR_PROMPTS = os.path.join(REPO, "tests", "data", "color_prompts.jsonl")  # ShapeWorld's colour prompts


def model_for(script: str) -> str:
    """The model whose trained weights the comparison tests check. GCPO ranks per-token entropy gradients to pick
    its critical tokens; on the random tiny model every entropy is log V up to float noise, so that ranking, and
    with it the update, depends on the summation order of the batch. The toy model's entropies make it defined."""
    return "toy" if script == "gcpo.py" else "tiny"


def tiny_args(script: str) -> list[str]:
    """TINY with a reward that varies on a random model (the fraction of pixels of the prompt's colour): the
    weights move, so comparing trained parameters is not vacuous (the GenEval reward is 0 on a random model)."""
    return [*TINY, "--model", model_for(script), "--prompts", COLOR_PROMPTS, *reward_flags(script, "color")]


def initial_policy(script: str = "grpo_vanilla.py") -> dict:
    """The model's weights before training (the scripts seed with --seed 0 before building the random tiny one)."""
    from common.models import load_model
    from common.utils import seed_everything

    seed_everything(0)
    return load_model(model_for(script)).policy.state_dict()


def moved(params: dict, script: str) -> float:
    """Max |change| of the trained parameters from initial_policy(script)."""
    init = initial_policy(script)
    return max((params[k].float() - init[k].float()).abs().max().item() for k in params)


def assert_same_update(a: dict, b: dict, script: str, rel: float = 1e-2):
    """Two runs that should compute the same updates: ‖θ_a − θ_b‖ ≤ rel·‖θ_a − θ_0‖, and θ moved. A norm, not
    elementwise: AdamW's first steps are about lr·sign(g), so a gradient element at float-noise level can flip
    sign with the summation order and move by 2·lr (a handful of the toy's 0.9M weights), while a real
    difference (a missing gradient reduction, a wrong scale) changes the update broadly."""
    init = initial_policy(script)
    assert a.keys() == b.keys()
    update = torch.cat([(a[k].float() - init[k].float()).flatten() for k in a]).norm()
    diff = torch.cat([(a[k].float() - b[k].float()).flatten() for k in a]).norm()
    assert update > 0 and diff <= rel * update, f"updates differ by {diff / update:.2e} of their norm {update:.3g}"


def run(cmd, tmp_path, check=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    p = subprocess.run(cmd + ["--out-dir", str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600)
    if check:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


def policy(tmp_path, name):
    """The trained policy weights of run `name` in tmp_path (its latest checkpoint)."""
    from common.checkpoint import resolve
    from common.utils import load_safetensors

    return load_safetensors(os.path.join(resolve(os.path.join(tmp_path, f"{name}_s0")), "policy.safetensors"))


# ----------------------------------------------------------------------------- tiny official-format LlamaGen

TINY_VQ = VQConfig(codebook_size=64, codebook_embed_dim=4, z_channels=16, ch=8, ch_mult=(1, 2), num_res_blocks=1,
                   norm_groups=4)  # 2x downsampling: 8 px images -> 4x4 = 16 tokens
IMAGE_SIZE = 8
TINY_GPT = dict(dim=32, n_layer=2, n_head=2, multiple_of=16, vocab_size=64, block_size=16)
C2I = dict(TINY_GPT, num_classes=10)
T2I = dict(TINY_GPT, cls_token_num=8, caption_dim=16)  # caption_dim = the tiny T5's d_model
WORDS = ["<pad>", "</s>", "<unk>", "a", "red", "blue", "cube", "ball", "photo", "of", "two"]


def random_gpt(task: str) -> GPT:
    gpt = GPT(official_gpt_config("B", task, IMAGE_SIZE, **(C2I if task == "c2i" else T2I)))
    for m in gpt.modules():  # sharp, non-degenerate logits
        if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
            torch.nn.init.normal_(m.weight, std=0.3)
    return gpt


def write_tiny_t5(folder):
    """A random 1-layer T5 encoder (d_model 16) and a word-level tokenizer that appends </s>, saved in the
    Hugging Face snapshot layout of google/flan-t5-xl."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    cfg = T5Config(vocab_size=len(WORDS), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, pad_token_id=0,
                   eos_token_id=1, decoder_start_token_id=0)
    T5EncoderModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
