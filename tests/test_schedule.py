"""common.schedule equals the Hugging Face Trainer's schedulers, which the releases ran, at every step."""
from __future__ import annotations

import pytest

from common.schedule import lr_factor, warmup_steps


@pytest.mark.slow  # imports transformers (about 10 s)
@pytest.mark.parametrize("schedule, total, ratio, floor", [
    ("linear", 1600, 0.0, 0.0),  # STAGE, GCPO-Janus, AR-GRPO: the Trainer's default
    ("linear", 50, 0.1, 0.0),
    ("cosine_with_min_lr", 1875, 0.1, 0.1),  # GCPO LlamaGen
    ("cosine_with_min_lr", 40, 0.0, 0.0),
    ("constant", 30, 0.2, 0.0),  # transformers' constant_with_warmup
])
def test_equals_transformers_schedules(schedule, total, ratio, floor):
    opt = pytest.importorskip("transformers.optimization")
    w = warmup_steps(total, ratio)
    theirs = {"linear": lambda i: opt._get_linear_schedule_with_warmup_lr_lambda(
                  i, num_warmup_steps=w, num_training_steps=total),
              "cosine_with_min_lr": lambda i: opt._get_cosine_schedule_with_warmup_lr_lambda(
                  i, num_warmup_steps=w, num_training_steps=total, num_cycles=0.5, min_lr_rate=floor),
              "constant": lambda i: opt._get_constant_schedule_with_warmup_lr_lambda(i, num_warmup_steps=w)}[schedule]
    ours = lr_factor(schedule, total, ratio, floor)
    for i in range(total + 2):
        assert ours(i) == pytest.approx(theirs(i), rel=1e-12, abs=1e-15), (i, ours(i), theirs(i))


def test_warmup_is_the_trainers_ceil():
    assert warmup_steps(1875, 0.1) == 188 and warmup_steps(1600, 0.0) == 0


def test_unknown_schedule_is_one_line():
    with pytest.raises(ValueError, match="unknown LR schedule 'cosine'; known: constant, linear, cosine_with_min_lr"):
        lr_factor("cosine", 10)
