"""The LR range test (``range_test``): one geometric sweep of [min_lr, max_lr] before the
first search, whose min-loss LR caps every stage's search and bounds the first stage's."""

from __future__ import annotations

import math

import pytest

from autolrs.config import AutoLRSConfig
from autolrs.engine.controller import StageController
from autolrs.engine.range_test import CAP_DIVISOR as RANGE_CAP_DIVISOR
from autolrs.engine.range_test import FLOOR_DIVISOR as RANGE_FLOOR_DIVISOR
from autolrs.engine.range_test import WINDOW as RANGE_WINDOW

from .sim import ToyTraining, drive, make_config

EDGE = 0.1  # the synthetic loss is lowest here and explodes above 3x it


def bowl(lr: float) -> float:
    """A range-test loss: falls as the LR grows towards EDGE, then rises steeply."""
    x = math.log10(lr / EDGE)
    return 1.0 - 0.3 * x if x <= 0 else 1.0 + 20.0 * x * x


def sweep(ctrl: StageController, loss=bowl) -> tuple[list[float], list]:
    """Feed ``loss(lr)`` until the sweep ends; the LRs it used and the actions at its end."""
    actions = ctrl.start()
    assert [(a.kind, a.slot) for a in actions][0] == ("snapshot", "stage")
    lrs = []
    while ctrl.s["range"] is not None:
        assert ctrl.phase == "search"
        lrs.append(ctrl.lr)
        actions = ctrl.observe_loss(loss(ctrl.lr))
    return lrs, actions


def config(**overrides) -> AutoLRSConfig:
    base = dict(min_lr=1e-3, max_lr=1.0, tau=100, tau_max=200, max_steps=3000)
    base.update(overrides)
    return make_config(**base)


def test_the_sweep_runs_first_then_restores_the_model_and_searches_below_the_edge():
    ctrl = StageController(config())
    lrs, actions = sweep(ctrl)
    # Geometric from min_lr, 20 steps a decade; it stops once the loss is 4x its minimum.
    assert lrs[0] == pytest.approx(1e-3)
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert max(ratios) == pytest.approx(min(ratios)) and ratios[0] == pytest.approx(1000 ** (1 / 59))
    assert len(lrs) < 60 and max(lrs) < 1.0
    result = ctrl.s["range_result"]
    assert result["diverged"] and result["steps"] == len(lrs)
    # The moving average's centre, not its trailing end, marks the min-loss LR (a window
    # across the edge averages in the steep side, so it sits a little below it).
    assert EDGE / 2 < result["lr_min_loss"] <= EDGE
    assert result["max_lr"] == pytest.approx(result["lr_min_loss"] / RANGE_CAP_DIVISOR)
    assert result["first_stage_min_lr"] == pytest.approx(result["lr_min_loss"] / RANGE_FLOOR_DIVISOR)
    kinds = [(a.kind, a.slot) for a in actions]
    assert kinds[:2] == [("restore", "stage"), ("snapshot", "stage")]
    first_trial = actions[-1].lr
    assert result["first_stage_min_lr"] <= first_trial <= result["max_lr"]
    assert ctrl.s["trial"]["start_step"] == len(lrs) and ctrl.s["recent"] == []
    event = [e for e in ctrl.drain_events() if e["type"] == "range_test"]
    assert len(event) == 1 and event[0]["lr_min_loss"] == result["lr_min_loss"]


def test_a_non_finite_loss_ends_the_sweep():
    ctrl = StageController(config())
    lrs, _ = sweep(ctrl, loss=lambda lr: float("nan") if lr > 0.05 else bowl(lr))
    result = ctrl.s["range_result"]
    assert result["diverged"] and lrs[-1] > 0.05 and lrs[-2] <= 0.05
    assert result["max_lr"] < 0.05


def test_a_loss_still_falling_at_max_lr_leaves_the_interval_uncapped():
    ctrl = StageController(config())
    lrs, _ = sweep(ctrl, loss=lambda lr: 2.0 - math.log10(lr))
    result = ctrl.s["range_result"]
    assert len(lrs) == 60 and not result["diverged"]
    assert result["max_lr"] is None and ctrl._max_lr() == 1.0
    # ... but the first stage still starts its search a decade below the best LR seen.
    assert result["first_stage_min_lr"] == pytest.approx(result["lr_min_loss"] / RANGE_FLOOR_DIVISOR)


def test_an_edge_at_the_bottom_of_the_interval_changes_nothing():
    ctrl = StageController(config())
    sweep(ctrl, loss=lambda lr: 1.0 + 50 * math.log10(lr / 1e-3) ** 2)
    result = ctrl.s["range_result"]
    assert result["max_lr"] is None and result["first_stage_min_lr"] is None
    assert ctrl._max_lr() == 1.0 and ctrl._stage_min_lr() == 1e-3


def test_the_cap_holds_in_every_stage_and_the_floor_only_in_the_first():
    # The toy quadratic diverges above an LR of 2: the sweep finds that edge.
    cfg = config(min_lr=1e-3, max_lr=10.0, tau=50, tau_max=100, max_steps=1500,
                 max_lr_decay=0.0)
    ctrl = StageController(cfg)
    drive(ctrl, ToyTraining(seed=1))
    first = ctrl.history[0]
    result = first["range_test"]
    assert 0.3 < result["lr_min_loss"] < 4.0 and result["max_lr"] < 2.0
    assert first["start_step"] == result["steps"]
    searched = [h for h in ctrl.history if h["trials"]]
    assert len(searched) >= 2
    for stage in searched:
        assert all(t["lr"] <= result["max_lr"] * (1 + 1e-9) for t in stage["trials"])
    assert all(t["lr"] >= result["first_stage_min_lr"] * (1 - 1e-9) for t in first["trials"])
    assert "range_test" not in ctrl.history[1]


def test_the_sweep_follows_warmup_and_counts_as_search():
    ctrl = StageController(config(warmup_steps=10))
    env = ToyTraining()
    drive(ctrl, env, until_step=10)
    assert ctrl.s["range"] is not None and ctrl.phase == "search"
    assert ctrl.lr == pytest.approx(1e-3)


def test_a_small_budget_or_the_paper_preset_skips_the_sweep():
    small = StageController(config(max_steps=250))  # 200 search steps < 4 sweeps of 60
    actions = small.start()
    assert small.s["range"] is None and small.s["trial"] is not None
    assert "4 x 60" in small.s["range_result"]["skipped"]
    assert [(a.kind, a.slot) for a in actions][0] == ("snapshot", "stage")
    for cfg in (config(preset="paper"), config(range_test=False)):
        ctrl = StageController(cfg)
        ctrl.start()
        assert ctrl.s["range"] is None and ctrl.s["range_result"] is None
    # No budget at all: the sweep always runs.
    unbounded = StageController(config(max_steps=None, cooldown=0.0))
    unbounded.start()
    assert unbounded.s["range"] is not None


def test_a_restored_controller_continues_the_sweep_exactly():
    ctrl = StageController(config())
    ctrl.start()
    for _ in range(RANGE_WINDOW + 5):
        ctrl.observe_loss(bowl(ctrl.lr))
    copy = StageController.from_state(ctrl.state_dict())
    for _ in range(200):
        loss = bowl(ctrl.lr)
        assert ctrl.observe_loss(loss) == copy.observe_loss(loss)
        assert ctrl.lr == copy.lr
    assert ctrl.s["range_result"] == copy.s["range_result"] is not None


def test_rescaling_the_lr_mid_sweep_scales_what_it_found():
    ctrl = StageController(config())
    ctrl.start()
    for _ in range(RANGE_WINDOW + 5):
        ctrl.observe_loss(bowl(ctrl.lr))
    best = ctrl.s["range"]["best_lr"]
    ctrl.rescale_lr(2.0)
    assert ctrl.s["range"]["best_lr"] == pytest.approx(2 * best)
    while ctrl.s["range"] is not None:
        ctrl.observe_loss(bowl(ctrl.lr / 2))  # the same model under doubled LRs
    assert EDGE < ctrl.s["range_result"]["lr_min_loss"] <= 2 * EDGE
    result = dict(ctrl.s["range_result"])
    ctrl.rescale_lr(0.5)
    assert ctrl.s["range_result"]["max_lr"] == pytest.approx(result["max_lr"] / 2)


def test_ending_the_run_mid_sweep_restores_the_model():
    ctrl = StageController(config())
    ctrl.start()
    for _ in range(20):
        ctrl.observe_loss(bowl(ctrl.lr))
    actions = ctrl._finish("stopped by the user")
    assert [(a.kind, a.slot) for a in actions][:1] == [("restore", "stage")]
    assert ctrl.done and ctrl.s["range"] is None and ctrl.history == []


def test_the_config_field():
    assert AutoLRSConfig(min_lr=1e-3, max_lr=1.0).resolved().range_test is True
    assert AutoLRSConfig(min_lr=1e-3, max_lr=1.0, preset="paper").resolved().range_test is False
    assert AutoLRSConfig.from_dict({"minLR": 1e-3, "maxLR": 1.0, "rangeTest": False}).range_test \
        is False
    with pytest.raises(ValueError, match=r"^range_test must be true or false, got 'yes'$"):
        AutoLRSConfig(min_lr=1e-3, max_lr=1.0, range_test="yes")


def test_the_sweep_is_20_steps_a_decade_and_at_least_40():
    from autolrs.engine.range_test import sweep_lr, sweep_steps

    assert sweep_steps(1e-3, 1.0) == 60 and sweep_steps(1e-4, 3e-2) == 50
    assert sweep_steps(0.01, 0.1) == 40
    assert sweep_lr(1e-3, 1.0, 0) == pytest.approx(1e-3)
    assert sweep_lr(1e-3, 1.0, 59) == pytest.approx(1.0)
