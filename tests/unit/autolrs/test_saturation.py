"""``saturation_validation``: once a stage's chosen trial forecast the training loss at
zero (a memorised training set), the next stages score their trials on validation loss."""

import numpy as np
import pytest

from autolrs.config import AutoLRSConfig
from autolrs.engine.controller import StageController

from .sim import ToyTraining, drive, make_config


class Memorising(ToyTraining):
    """The training loss falls linearly to zero as the LR-weighted steps add up (the model
    memorises its data); the validation loss bottoms out and rises again instead."""

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self.w = np.zeros(1)  # how much of the training set is memorised

    def train_step(self, lr: float) -> float:
        self.step_count += 1
        self.w = self.w + 0.05 * lr
        return float(max(1.0 - self.w[0], 0.0) + 1e-3 * abs(self.rng.normal()))

    def val_loss(self) -> float:
        return 0.6 + 0.2 * float(self.w[0] - 0.5) ** 2


def _config(**overrides) -> AutoLRSConfig:
    return make_config(tau=50, tau_max=400, max_steps=600, cooldown=0.0, **overrides)


def test_a_zero_training_forecast_switches_the_next_stages_to_validation_loss():
    ctrl = StageController(_config(), has_val=True)
    env = Memorising()
    drive(ctrl, env)
    first, second = ctrl.history[0], ctrl.history[1]
    chosen = [t for t in first["trials"] if t["lr"] == first["lr"]][0]
    assert chosen["source"] == "train" and chosen["score"] == 0.0  # the premise
    assert first["saturated"] and not first["val_mode"]
    assert second["val_mode"] and second["tau"] < ctrl.cfg.tau_max  # not tau_max's switch
    assert all(t["source"] == "val" for t in second["trials"] if t["score"] is not None)
    assert any(t["forecast_val"] is not None for t in second["trials"])
    assert not second["saturated"]  # already validating: nothing more to switch
    evaluations = [step for step, a in env.actions if a.kind == "evaluate"]
    assert any(second["start_step"] < step <= second["start_step"] + second["trial_steps"]
               for step in evaluations)
    assert all(h["val_mode"] for h in ctrl.history[1:])


def test_without_the_field_or_a_validation_function_the_training_loss_still_rules():
    off = StageController(_config(saturation_validation=False), has_val=True)
    drive(off, Memorising())
    assert not any(h["val_mode"] or h.get("saturated") for h in off.history[:2])
    blind = StageController(_config(), has_val=False)
    drive(blind, Memorising())
    assert not any(h["val_mode"] or h.get("saturated") for h in blind.history)


class Irreducible(ToyTraining):
    """The noisy quadratic above an irreducible loss of 1 (a language model's entropy):
    it falls fast, then levels off far from zero."""

    def train_step(self, lr: float) -> float:
        return super().train_step(lr) + 1.0

    def val_loss(self) -> float:
        return super().val_loss() + 1.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_training_loss_that_levels_off_above_zero_keeps_training_forecasts(seed):
    ctrl = StageController(_config(seed=seed), has_val=True)
    drive(ctrl, Irreducible(seed))
    assert len(ctrl.history) >= 3
    assert not any(h["saturated"] or h["val_mode"] for h in ctrl.history)


def test_the_switch_survives_a_state_round_trip():
    cfg = _config()
    ctrl = StageController(cfg, has_val=True)
    env = Memorising()
    while not ctrl.history:  # to the end of the first stage, one step at a time
        drive(ctrl, env, until_step=env.step_count + 1)
    assert ctrl.history[0]["saturated"]
    resumed = StageController.from_state(ctrl.state_dict())
    assert resumed.s["val_mode"]


def test_saturation_validation_is_a_preset_field():
    base = dict(min_lr=1e-3, max_lr=1.0, max_steps=100)
    assert AutoLRSConfig(**base).resolved().saturation_validation is True
    assert AutoLRSConfig(**base, preset="paper").resolved().saturation_validation is False
    parsed = AutoLRSConfig.from_dict({"minLR": 1e-3, "maxLR": 1.0, "saturationValidation": False})
    assert parsed.resolved().saturation_validation is False
    with pytest.raises(ValueError, match="^saturation_validation must be true or false, got 'yes'$"):
        AutoLRSConfig(**base, saturation_validation="yes")
