"""The plugin trainer's learning-rate schedules (recbole_genrec/trainer.py `_build_scheduler`): warm-up by ratio
(LETTER-TIGER's HF Trainer), T5's inverse-sqrt (the TIGER paper), constant after warm-up (MQL4GRec)."""
import math

import pytest
import torch

from recbole_genrec.config import check_known_keys, check_value_types
from recbole_genrec.trainer import GenRecTrainer


def _learning_rates(steps_per_epoch, epochs, steps, **config):
    """The learning rate (base 1.0) after each of `steps` optimiser steps, under GenRecTrainer's schedule."""
    trainer = GenRecTrainer.__new__(GenRecTrainer)
    trainer.config = {"warmup_ratio": None, "warmup_steps": 0, "warmup_shape": "linear", **config}
    trainer.epochs = epochs
    weight = torch.nn.Parameter(torch.zeros(1))
    trainer.optimizer = torch.optim.SGD([weight], lr=1.0)
    trainer._build_scheduler(steps_per_epoch)
    rates = [trainer.optimizer.param_groups[0]["lr"]]
    for _ in range(steps):
        trainer.optimizer.step()
        rates.append(trainer.optimizer.param_groups[0]["lr"])
    return rates  # rates[s] = the rate of optimiser step s (0-based)


def test_warmup_ratio_overrides_warmup_steps_with_a_share_of_all_steps():
    # 10 epochs x 100 steps = 1000 steps; ratio 0.01 -> ceil(10) = 10 warm-up steps (not the 500 of warmup_steps)
    rates = _learning_rates(100, 10, 1000, lr_scheduler="cosine", warmup_ratio=0.01, warmup_steps=500)
    assert rates[0] == pytest.approx(1 / 10) and rates[4] == pytest.approx(5 / 10) and rates[9] == pytest.approx(1.0)
    assert rates[10] == pytest.approx(0.5 * (1 + math.cos(math.pi * 1 / 990)))
    assert rates[505] == pytest.approx(0.5 * (1 + math.cos(math.pi * 496 / 990)))
    assert rates[999] == pytest.approx(0.0, abs=1e-12)
    # a ratio that is not a whole number of steps rounds up, as the HF Trainer does: ceil(0.0125 x 1000) = 13
    rates = _learning_rates(100, 10, 13, lr_scheduler="cosine", warmup_ratio=0.0125)
    assert rates[0] == pytest.approx(1 / 13) and rates[12] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="warmup_ratio"):
        _learning_rates(100, 10, 1, lr_scheduler="cosine", warmup_ratio=1.5)


def test_inverse_sqrt_after_linear_or_constant_warmup():
    """The TIGER paper's schedule at 1/100 scale: the base rate for the first 100 steps (paper: 0.01 for 10k), then
    base x sqrt(100 / step)."""
    linear = _learning_rates(100, 30, 400, lr_scheduler="inverse_sqrt", warmup_steps=100)
    assert linear[0] == pytest.approx(0.01) and linear[49] == pytest.approx(0.5) and linear[99] == 1.0
    for step in (100, 199, 399):  # 0-based step s is the schedule's step s + 1
        assert linear[step] == pytest.approx(math.sqrt(100 / (step + 1)))
    constant = _learning_rates(100, 30, 400, lr_scheduler="inverse_sqrt", warmup_steps=100, warmup_shape="constant")
    assert constant[:100] == [1.0] * 100
    assert constant[399] == pytest.approx(0.5) and constant[100:] == linear[100:]


def test_constant_after_warmup():
    """MQL4GRec's pre-training schedule (HF's constant_with_warmup): a linear ramp over a share of the steps, then the
    base rate held to the end."""
    rates = _learning_rates(10, 30, 300, lr_scheduler="constant", warmup_ratio=1 / 30)
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert rates[10:300] == [1.0] * 290


def test_new_trainer_keys_are_known_and_typed():
    check_known_keys({"warmup_ratio": 0.01, "warmup_shape": "constant"})
    check_value_types({"warmup_ratio": 0.01, "warmup_shape": "constant"})
    with pytest.raises(ValueError, match="warmup_ratio"):
        check_value_types({"warmup_ratio": "a lot"})
