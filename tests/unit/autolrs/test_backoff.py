"""``hold_backoff``: a held LR whose training loss climbs clearly is halved, in place."""

import copy
import json
import math

import numpy as np
import pytest

from autolrs.config import AutoLRSConfig
from autolrs.engine import backoff
from autolrs.engine.controller import StageController

from .sim import ToyTraining, drive, make_config

# With this budget the toy's stage 4 holds 0.0876 from step 432 to the cooldown at 800.
HOLD_START, COOLDOWN_START = 432, 800


def _feed(monitor, losses, scale=0.0):
    return [step for step, loss in enumerate(losses) if backoff.observe(monitor, loss, scale)]


@pytest.mark.parametrize("seed", range(5))
def test_noise_around_a_flat_or_falling_loss_never_counts_as_a_climb(seed):
    rng = np.random.default_rng(seed)
    flat = 1.0 + rng.normal(0, 0.2, 20_000)
    falling = np.linspace(2.0, 0.5, 20_000) + rng.normal(0, 0.2, 20_000)
    assert _feed(backoff.new_monitor(), flat) == []
    assert _feed(backoff.new_monitor(), falling) == []


def test_a_climb_is_reported_at_the_end_of_the_first_block_clearly_above_the_lowest():
    rng = np.random.default_rng(0)
    losses = np.concatenate([np.full(200, 1.0), np.linspace(1.0, 1.5, 300)])
    losses += rng.normal(0, 0.05, len(losses))
    hits = _feed(backoff.new_monitor(), losses)
    assert hits and hits[0] % backoff.WINDOW == backoff.WINDOW - 1
    # 5% of 1.0 above the flat part is reached 30 steps into the climb; then two blocks.
    assert 200 < hits[0] <= 200 + 30 + (backoff.PERSIST + 1) * backoff.WINDOW


def test_near_zero_losses_climb_only_against_the_callers_scale():
    """A memorised training set's loss doubling from 0.001 to 0.002 is noise, not a climb,
    when the caller says losses move on a scale of 0.1."""
    losses = [0.001] * 100 + [0.002] * 100
    assert _feed(backoff.new_monitor(), losses, scale=0.1) == []
    assert _feed(backoff.new_monitor(), losses, scale=0.0) == [199]  # two blocks above


def test_non_finite_losses_are_left_to_the_divergence_test():
    monitor = backoff.new_monitor()
    assert not backoff.observe(monitor, math.nan, 0.0)
    assert not backoff.observe(monitor, math.inf, 0.0)
    assert monitor["n"] == 0


class Overheating(ToyTraining):
    """The noisy quadratic, plus a loss that climbs while an LR above 0.06 is held after
    step 440 (the model has reached a region where that LR is too large), and cools off
    below it."""

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self.heat = 0.0

    def train_step(self, lr: float) -> float:
        loss = super().train_step(lr)
        if self.step_count > HOLD_START + 8:
            self.heat = self.heat + 0.002 if lr > 0.06 else self.heat * 0.99
        return loss + self.heat


def _config(**overrides) -> AutoLRSConfig:
    return make_config(**{"max_steps": 1000, "tau_max": 320, "cooldown": 0.2,
                          "hold_backoff": True, **overrides})


def _run(cfg: AutoLRSConfig) -> tuple[StageController, Overheating, list[float], list[float]]:
    """The controller, the toy, the LR of every step and the toy's heat after it."""
    ctrl, env = StageController(cfg), Overheating()
    env.apply(ctrl.start())
    lrs, heats = [], []
    while not ctrl.done:
        lrs.append(ctrl.lr)
        loss = env.train_step(ctrl.lr)
        heats.append(env.heat)
        env.apply(ctrl.observe_loss(loss))
    return ctrl, env, lrs, heats


def test_a_climbing_held_lr_is_halved_once_and_the_cooldown_starts_from_there():
    ctrl, env, lrs, _ = _run(_config())
    held, cooldown = ctrl.history[-2], ctrl.history[-1]
    assert held["no_search"] == "the cooldown follows"  # the premise
    assert (held["start_step"], held["end_step"]) == (HOLD_START, COOLDOWN_START)
    [event] = held["backoffs"]
    assert event["from_lr"] == pytest.approx(0.0876, rel=1e-3)
    assert event["lr"] == event["from_lr"] * backoff.FACTOR
    assert HOLD_START + 2 * backoff.WINDOW <= event["step"] < COOLDOWN_START
    assert event["best_block_loss"] < event["loss"]
    assert held["lr"] == event["lr"] and cooldown["lr"] == event["lr"]
    assert lrs[HOLD_START:event["step"]] == [event["from_lr"]] * (event["step"] - HOLD_START)
    assert lrs[event["step"]:COOLDOWN_START] == [event["lr"]] * (COOLDOWN_START - event["step"])
    # Training goes on from where it is: no restore in the hold.
    assert not [a for step, a in env.actions
                if HOLD_START < step < COOLDOWN_START and a.kind == "restore"]
    [logged] = [e for e in ctrl.drain_events() if e["type"] == "backoff"]
    assert (logged["step"], logged["from_lr"], logged["lr"]) == (
        event["step"], event["from_lr"], event["lr"])


def test_without_the_guard_the_loss_keeps_climbing_to_the_cooldown():
    *_, guarded = _run(_config())
    blind, _, lrs, heats = _run(_config(hold_backoff=False))
    held = blind.history[-2]
    assert "backoffs" not in held and held["start_step"] == HOLD_START
    assert lrs[HOLD_START:COOLDOWN_START] == [held["lr"]] * (COOLDOWN_START - HOLD_START)
    # The extra loss the held LR caused, at the cooldown's start: 0.7 without the guard.
    assert heats[COOLDOWN_START - 1] > 0.5 > 2 * guarded[COOLDOWN_START - 1]


def test_a_held_stage_with_a_steady_loss_is_left_alone():
    ctrl = StageController(_config())
    drive(ctrl, ToyTraining())
    held = ctrl.history[-2]
    assert held["no_search"] == "the cooldown follows" and held["backoffs"] == []


def test_the_monitor_survives_a_state_round_trip_mid_block():
    cfg = _config()
    ctrl, env = StageController(cfg), Overheating()
    drive(ctrl, env, until_step=HOLD_START + 75)
    assert ctrl.s["exploit"]["monitor"]["n"] == 75 - backoff.WINDOW  # mid-block
    restored = StageController.from_state(json.loads(json.dumps(ctrl.state_dict())))
    twin = Overheating()
    twin.w, twin.rng, twin.slots = env.w.copy(), copy.deepcopy(env.rng), dict(env.slots)
    twin.step_count, twin.heat = env.step_count, env.heat
    drive(ctrl, env)
    drive(restored, twin)
    assert restored.history == ctrl.history and ctrl.history[-2]["backoffs"]


def test_hold_backoff_is_a_preset_field():
    base = dict(min_lr=1e-3, max_lr=1.0, max_steps=100)
    assert AutoLRSConfig(**base).resolved().hold_backoff is True
    assert AutoLRSConfig(**base, preset="paper").resolved().hold_backoff is False
    parsed = AutoLRSConfig.from_dict({"minLR": 1e-3, "maxLR": 1.0, "holdBackoff": True})
    assert parsed.resolved().hold_backoff is True
    with pytest.raises(ValueError, match="^hold_backoff must be true or false, got 1$"):
        AutoLRSConfig(**base, hold_backoff=1)


def test_describe_names_every_halving_step():
    halvings = [{"step": 1950, "from_lr": 0.03, "lr": 0.015},
                {"step": 2200, "from_lr": 0.015, "lr": 0.0075}]
    assert backoff.describe(halvings) == "loss climbing, LR halved at step 1950, 2200"
