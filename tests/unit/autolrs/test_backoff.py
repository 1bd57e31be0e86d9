"""``hold_backoff``: a held LR whose training loss climbs clearly is halved, in place."""

import copy
import functools
import json
import math

import numpy as np
import pytest

from autolrs.config import AutoLRSConfig
from autolrs.engine import backoff
from autolrs.engine.controller import StageController

from .sim import ToyTraining, drive, make_config

HEAT_DELAY = 8     # steps into the hold before the toy starts to overheat
HEAT_RATE = 0.002  # extra loss per step held above the toy's threshold
COOL_RATE = 0.99   # the extra loss's decay per step below it


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
    """The noisy quadratic, plus a loss that climbs (HEAT_RATE a step) while an LR above
    ``threshold`` is used after step ``heat_from`` (the model has reached a region where
    that LR is too large), and cools off (COOL_RATE) below it."""

    def __init__(self, heat_from: int, threshold: float, seed: int = 0):
        super().__init__(seed)
        self.heat_from, self.threshold = heat_from, threshold
        self.heat = 0.0

    def train_step(self, lr: float) -> float:
        loss = super().train_step(lr)
        if self.step_count > self.heat_from:
            self.heat = self.heat + HEAT_RATE if lr > self.threshold else self.heat * COOL_RATE
        return loss + self.heat


def _config(**overrides) -> AutoLRSConfig:
    return make_config(**{"max_steps": 1000, "tau_max": 320, "cooldown": 0.2,
                          "hold_backoff": True, **overrides})


@functools.lru_cache(maxsize=None)
def _steady_run() -> tuple[int, int, float]:
    """The plan of the plain toy's run: where the held stage starts, where the cooldown
    starts and the LR held (the last searched stage's). Overheating only adds to the loss
    from HEAT_DELAY steps into the hold, so every decision before it is the same."""
    ctrl = StageController(_config())
    drive(ctrl, ToyTraining())
    held, cooldown = ctrl.history[-2], ctrl.history[-1]
    assert held["no_search"] == "the cooldown follows" and held["backoffs"] == []
    assert held["lr"] == ctrl.history[-3]["lr"]
    assert cooldown["cooldown"] and held["end_step"] == cooldown["start_step"]
    assert cooldown["start_step"] == ctrl.cfg.max_steps - ctrl.cfg.cooldown_steps
    return held["start_step"], cooldown["start_step"], held["lr"]


def _overheating() -> Overheating:
    """Heats from HEAT_DELAY steps into the hold while the held LR is used; one halving
    (to below the geometric middle of the two) cools it."""
    hold_start, _, held_lr = _steady_run()
    return Overheating(hold_start + HEAT_DELAY, held_lr * math.sqrt(backoff.FACTOR))


def _run(cfg: AutoLRSConfig) -> tuple[StageController, Overheating, list[float], list[float]]:
    """The controller, the toy, the LR of every step and the toy's heat after it."""
    ctrl, env = StageController(cfg), _overheating()
    env.apply(ctrl.start())
    lrs, heats = [], []
    while not ctrl.done:
        lrs.append(ctrl.lr)
        loss = env.train_step(ctrl.lr)
        heats.append(env.heat)
        env.apply(ctrl.observe_loss(loss))
    return ctrl, env, lrs, heats


def test_a_climbing_held_lr_is_halved_once_and_the_cooldown_starts_from_there():
    hold_start, cooldown_start, held_lr = _steady_run()
    ctrl, env, lrs, _ = _run(_config())
    held, cooldown = ctrl.history[-2], ctrl.history[-1]
    assert held["no_search"] == "the cooldown follows"  # the premise
    assert (held["start_step"], held["end_step"]) == (hold_start, cooldown_start)
    [event] = held["backoffs"]
    assert event["from_lr"] == held_lr == ctrl.history[-3]["lr"]
    assert event["lr"] == event["from_lr"] * backoff.FACTOR
    # At the end of a block of the hold, once PERSIST blocks after the first (the lowest
    # so far) were above it.
    assert (event["step"] - hold_start) % backoff.WINDOW == 0
    assert hold_start + (backoff.PERSIST + 1) * backoff.WINDOW <= event["step"] < cooldown_start
    assert event["best_block_loss"] < event["loss"]
    assert held["lr"] == event["lr"] and cooldown["lr"] == event["lr"]
    assert lrs[hold_start:event["step"]] == [event["from_lr"]] * (event["step"] - hold_start)
    assert lrs[event["step"]:cooldown_start] == [event["lr"]] * (cooldown_start - event["step"])
    # Training goes on from where it is: no restore in the hold.
    assert not [a for step, a in env.actions
                if hold_start < step < cooldown_start and a.kind == "restore"]
    [logged] = [e for e in ctrl.drain_events() if e["type"] == "backoff"]
    assert (logged["step"], logged["from_lr"], logged["lr"]) == (
        event["step"], event["from_lr"], event["lr"])


def test_without_the_guard_the_loss_keeps_climbing_to_the_cooldown():
    hold_start, cooldown_start, held_lr = _steady_run()
    guarded_ctrl, _, _, guarded = _run(_config())
    [event] = guarded_ctrl.history[-2]["backoffs"]
    blind, _, lrs, heats = _run(_config(hold_backoff=False))
    held = blind.history[-2]
    assert "backoffs" not in held and held["start_step"] == hold_start
    assert lrs[hold_start:cooldown_start] == [held_lr] * (cooldown_start - hold_start)
    # The extra loss at the cooldown's start. Without the guard: every step from the
    # heat's start heats. With it: up to the halving only, then it cools off.
    heated_blind = cooldown_start - hold_start - HEAT_DELAY
    heated_guarded = event["step"] - hold_start - HEAT_DELAY
    assert heats[cooldown_start - 1] == pytest.approx(HEAT_RATE * heated_blind)
    assert guarded[cooldown_start - 1] == pytest.approx(
        HEAT_RATE * heated_guarded * COOL_RATE ** (cooldown_start - event["step"]))
    assert guarded[cooldown_start - 1] < heats[cooldown_start - 1] / 2


def test_a_held_stage_with_a_steady_loss_is_left_alone():
    ctrl = StageController(_config())
    drive(ctrl, ToyTraining())
    held = ctrl.history[-2]
    assert held["no_search"] == "the cooldown follows" and held["backoffs"] == []
    assert held["lr"] == ctrl.history[-3]["lr"] == ctrl.history[-1]["lr"]


def test_the_monitor_survives_a_state_round_trip_mid_block():
    hold_start, _, _ = _steady_run()
    cfg = _config()
    ctrl, env = StageController(cfg), _overheating()
    drive(ctrl, env, until_step=hold_start + 75)
    assert ctrl.s["exploit"]["monitor"]["n"] == 75 - backoff.WINDOW  # mid-block
    restored = StageController.from_state(json.loads(json.dumps(ctrl.state_dict())))
    twin = _overheating()
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
