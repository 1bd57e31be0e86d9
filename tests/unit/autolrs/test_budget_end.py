"""How a budgeted run ends: the last stage fills the search budget (or, with
``hold_final_stage``, keeps the last LR without a search), then the cooldown lowers the LR
to 0 over the last ``cooldown * max_steps`` steps (``cooldown_shape``)."""

import copy
import json
import math

import pytest

from autolrs.config import AutoLRSConfig
from autolrs.engine.controller import StageController

from .sim import ToyTraining, drive, make_config


def _lrs(cfg: AutoLRSConfig) -> tuple[StageController, list[float]]:
    """Drive a controller to the end, recording the LR of every optimizer step."""
    ctrl = StageController(cfg)
    env = ToyTraining()
    lrs: list[float] = []
    env.apply(ctrl.start())
    while not ctrl.done:
        lrs.append(ctrl.lr)
        loss = env.train_step(ctrl.lr)
        evaluate = env.apply(ctrl.observe_loss(loss))
        while evaluate:
            evaluate = env.apply(ctrl.observe_val_loss(env.val_loss()))
    return ctrl, lrs


def test_cooldown_decays_the_last_lr_linearly_to_zero():
    ctrl, lrs = _lrs(make_config(max_steps=300, cooldown=0.2, cooldown_shape="linear"))
    assert len(lrs) == 300
    last = ctrl.history[-1]
    assert last["cooldown"] and not last.get("incomplete")
    assert last["start_step"] == 240 and last["end_step"] == 300 and last["exploit_steps"] == 60
    start_lr = last["lr"]
    # The cooldown starts from the LR the last stage exploited ...
    assert start_lr == ctrl.history[-2]["lr"]
    assert lrs[240] == pytest.approx(start_lr)
    # ... and falls by start_lr / 60 every step, to start_lr / 60 on the last one.
    for i, lr in enumerate(lrs[240:]):
        assert lr == pytest.approx(start_lr * (60 - i) / 60)
    assert last["end_lr"] == pytest.approx(start_lr / 60)  # the LR of the last step
    # No trial runs in the cooldown: every search ended before step 240.
    for stage in ctrl.history[:-1]:
        assert stage["end_step"] <= 240
        for trial in stage["trials"]:
            assert trial["start_step"] + trial["steps"] <= 240


def test_a_drop_cooldown_cuts_the_lr_to_a_tenth_then_decays_it_linearly():
    """The default shape: the LR falls at once to a tenth of the last stage's, then
    linearly to 0 (by a hundredth of that every step of this 60-step cooldown)."""
    ctrl, lrs = _lrs(make_config(max_steps=300, cooldown=0.2))
    assert ctrl.cfg.cooldown_shape == "drop"
    last = ctrl.history[-1]
    assert last["cooldown"] and last["start_step"] == 240
    start_lr = last["lr"]
    assert start_lr == ctrl.history[-2]["lr"] and lrs[239] == pytest.approx(start_lr)
    for i, lr in enumerate(lrs[240:]):
        assert lr == pytest.approx(start_lr * 0.1 * (60 - i) / 60)
    assert last["end_lr"] == pytest.approx(start_lr * 0.1 / 60)


def test_cooldown_shape_is_checked_and_preset():
    with pytest.raises(ValueError, match="^cooldown_shape must be one of linear, drop, got 'cosine'$"):
        AutoLRSConfig(min_lr=1e-3, max_lr=1.0, max_steps=100, cooldown_shape="cosine")
    assert AutoLRSConfig.from_dict({"minLR": 1e-3, "maxLR": 1.0, "maxSteps": 100,
                                    "cooldownShape": "linear"}).cooldown_shape == "linear"
    paper = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, preset="paper", max_steps=100).resolved()
    assert paper.cooldown_shape == "linear" and paper.cooldown_steps == 0


def test_the_last_stage_fills_the_search_budget():
    """Stage 1 is fitted to the 135 steps left as if it needed all k=5 trials (tau 96); it
    needs 3. Before, its exploit ended at step 256 and a 19-step stage followed; now the
    exploit runs to the budget's end, and the stage ends complete, its forecast checked.
    (Floor ties would pick stage 0's fourth trial, whose exploit runs 10 steps longer than
    the last one's: they are off, to keep the 135 steps this test is about.)"""
    cfg = make_config(max_steps=275, cooldown=0.0, tau=100, tau_max=100, trials_per_stage=5,
                      min_trial_steps=1, range_test=False, floor_ties=False)
    ctrl, lrs = _lrs(cfg)
    assert len(lrs) == 275
    first, last = ctrl.history
    assert first["end_step"] == 140 and not first["final"]
    assert last["final"] and last["trial_steps"] == 10 and len(last["trials"]) < 5
    assert last["end_step"] == 275 and not last.get("incomplete")
    assert last["exploit_steps"] == 275 - 140 - last["search_steps"]
    assert last["actual_loss"] is not None


def test_paper_preset_has_no_cooldown():
    ctrl, lrs = _lrs(make_config(preset="paper", max_steps=200))
    assert not any(h.get("cooldown") for h in ctrl.history)
    assert lrs[-1] > 0
    assert AutoLRSConfig(min_lr=1e-3, max_lr=1.0, preset="paper", max_steps=10).resolved().cooldown == 0


def test_default_cooldown_applies_only_with_a_budget():
    assert AutoLRSConfig(min_lr=1e-3, max_lr=1.0, max_steps=1000).resolved().cooldown_steps == 200
    unbounded = AutoLRSConfig(min_lr=1e-3, max_lr=1.0).resolved()
    assert unbounded.cooldown == 0 and unbounded.cooldown_steps == 0


@pytest.mark.parametrize("value", [-0.1, 0.6, math.inf, math.nan])
def test_cooldown_must_be_a_fraction_up_to_a_half(value):
    with pytest.raises(ValueError, match=r"^cooldown must be a fraction of max_steps in \[0, 0.5\]"):
        AutoLRSConfig(min_lr=1e-3, max_lr=1.0, max_steps=100, cooldown=value)


def test_an_explicit_cooldown_needs_max_steps():
    with pytest.raises(ValueError, match="^cooldown=0.1 needs max_steps"):
        AutoLRSConfig(min_lr=1e-3, max_lr=1.0, cooldown=0.1)
    AutoLRSConfig(min_lr=1e-3, max_lr=1.0, cooldown=0)  # 0 means off: fine without a budget


@pytest.mark.parametrize("preset", ["paper", "default"])
def test_cooldown_cuts_a_stage_the_budget_was_not_fitted_for(preset):
    """fit_final_stage (and hold_final_stage) off: a stage still running at the cooldown's
    start is closed (its state and LR the best known, as when the budget runs out) and the
    cooldown begins."""
    cfg = make_config(preset=preset, max_steps=250, cooldown=0.2, fit_final_stage=False,
                      hold_final_stage=False)
    ctrl, lrs = _lrs(cfg)
    assert len(lrs) == 250
    cut = ctrl.history[-2]
    last = ctrl.history[-1]
    assert last["cooldown"] and last["start_step"] == 200 and last["stage"] == cut["stage"] + 1
    assert cut["end_step"] == 200 and cut.get("incomplete")
    assert last["lr"] == pytest.approx(cut["lr"])
    scale = 0.1 if preset == "default" else 1.0  # the default cooldown drops at once
    assert lrs[200] == pytest.approx(last["lr"] * scale)
    assert lrs[-1] == pytest.approx(last["lr"] * scale / 50)


def test_a_diverging_cooldown_restarts_at_half_the_lr():
    cfg = make_config(max_steps=200, cooldown=0.25)
    ctrl = StageController(cfg)
    env = ToyTraining()
    drive(ctrl, env, until_step=155)
    exploit = ctrl.s["exploit"]
    assert ctrl.history[-1]["end_step"] <= 150 and exploit["cooldown_lr"] is not None
    start = exploit["cooldown_lr"]
    actions = ctrl.observe_loss(float("nan"))
    assert [a.kind for a in actions][:1] == ["restore"]
    assert ctrl.s["exploit"]["cooldown_lr"] == pytest.approx(start / 2)
    assert ctrl.lr == pytest.approx(start / 2 * 0.1)  # the restarted cooldown's first step
    env.apply(actions)
    drive(ctrl, env)
    assert ctrl.done and ctrl.steps == 200
    assert ctrl.history[-1]["rollbacks"][0]["reason"] == "diverged"


def test_cooldown_survives_a_state_round_trip_and_a_rescale():
    cfg = make_config(max_steps=200, cooldown=0.25)
    ctrl = StageController(cfg)
    env = ToyTraining()
    drive(ctrl, env, until_step=170)
    restored = StageController.from_state(json.loads(json.dumps(ctrl.state_dict())))
    assert restored.lr == ctrl.lr
    before = restored.s["exploit"]["cooldown_lr"]
    restored.rescale_lr(2.0)
    assert restored.s["exploit"]["cooldown_lr"] == pytest.approx(2 * before)
    restored.observe_loss(0.5)
    ctrl.observe_loss(0.5)
    assert restored.lr == pytest.approx(2 * ctrl.lr)


def _run(config: dict, seed: int, has_val: bool = True) -> StageController:
    ctrl = StageController(AutoLRSConfig.from_dict({**config, "seed": seed}).resolved(),
                           has_val=has_val)
    env = ToyTraining(seed)
    env.apply(ctrl.start())
    while not ctrl.done:
        evaluate = env.apply(ctrl.observe_loss(env.train_step(ctrl.lr)))
        while evaluate:
            evaluate = env.apply(ctrl.observe_val_loss(env.val_loss()))
    return ctrl


def test_an_exploit_started_over_still_ends_where_the_cooldown_starts():
    """A rollback restarts the exploit for a whole tau; near the budget's end that ran past
    the cooldown's start and the stage was cut there. It now ends at the cooldown's start,
    complete, and every run is stages end to end with only complete ones before the last."""
    # Early validation on: the seeds below then include runs that roll back before it.
    config = {"minLR": 0.01, "maxLR": 4.0, "tau": 20, "tauMax": 40, "trialsPerStage": 3,
              "trialFraction": 0.25, "maxSteps": 240, "earlyValidation": True}
    rolled_back_before_cooldown = 0
    for seed in range(8):
        ctrl = _run(config, seed)
        history = ctrl.history
        assert history[-1]["cooldown"] and history[-1]["start_step"] == 192
        assert all(not h.get("incomplete") for h in history), seed
        for previous, record in zip(history, history[1:]):
            assert record["start_step"] == previous["end_step"]
        rolled_back_before_cooldown += bool(history[-2]["rollbacks"])
    assert rolled_back_before_cooldown  # the case above happened


def test_a_cooldown_ends_with_a_stage_end_event():
    ctrl = StageController(make_config(max_steps=100, cooldown=0.3))
    drive(ctrl, ToyTraining())
    events = ctrl.drain_events()
    ends = [e for e in events if e["type"] == "stage_end"]
    last = ctrl.history[-1]
    assert (ends[-1]["stage"], ends[-1]["step"], ends[-1]["lr"]) == (last["stage"], 100, last["lr"])
    assert [e["type"] for e in events][-2:] == ["stage_end", "done"]
    assert len(ends) == len(ctrl.history)


def _final_stage(ctrl: StageController) -> dict:
    """The last stage before the cooldown."""
    assert ctrl.history[-1]["cooldown"]
    return ctrl.history[-2]


def test_the_stage_that_would_run_into_the_cooldown_keeps_the_last_lr():
    """Stage 3 starts at step 150 with 58 search steps left, fewer than a full stage costs:
    it runs no trial and keeps stage 2's LR to the cooldown's start at step 208."""
    ctrl, lrs = _lrs(make_config(max_steps=260, cooldown=0.2, trial_fraction=0.25))
    held, before = _final_stage(ctrl), ctrl.history[-3]
    assert held["no_search"] == "the cooldown follows"
    assert held["trials"] == [] and held["trial_steps"] == 0 and held["final"]
    assert (held["start_step"], held["end_step"]) == (before["end_step"], 208) == (150, 208)
    assert held["lr"] == before["lr"]
    assert lrs[150:208] == [before["lr"]] * 58
    assert ctrl.history[-1]["start_step"] == 208 and ctrl.history[-1]["lr"] == before["lr"]
    events = [e for e in ctrl.drain_events() if e["type"] == "decision" and e["step"] == 150]
    assert events and events[0]["trials"] == 0


def test_without_the_hold_the_last_stage_before_the_cooldown_searches():
    ctrl, _ = _lrs(make_config(max_steps=260, cooldown=0.2, trial_fraction=0.25,
                               hold_final_stage=False))
    final = _final_stage(ctrl)
    assert final["final"] and len(final["trials"]) == 3 and "no_search" not in final
    assert (final["start_step"], final["end_step"]) == (150, 208)


def test_without_a_cooldown_the_last_stage_still_searches():
    """The hold leaves the decay to the cooldown; with none, the last search is the
    schedule's last chance to lower the LR."""
    for max_steps in (260, 280):
        config = dict(max_steps=max_steps, cooldown=0.0, trial_fraction=0.25)
        ctrl, lrs = _lrs(make_config(**config))
        assert len(lrs) == max_steps
        assert not any(h.get("no_search") == "the cooldown follows" for h in ctrl.history)
        assert ctrl.history == _lrs(make_config(**config, hold_final_stage=False))[0].history


def test_the_hold_is_on_in_default_and_off_in_paper():
    def resolved(preset):
        return AutoLRSConfig(min_lr=1e-3, max_lr=1.0, preset=preset, max_steps=100).resolved()
    assert resolved("default").hold_final_stage and not resolved("paper").hold_final_stage
    assert AutoLRSConfig.from_dict({"minLR": 1e-3, "maxLR": 1.0,
                                    "holdFinalStage": False}).hold_final_stage is False
    with pytest.raises(ValueError, match="^hold_final_stage must be true or false"):
        AutoLRSConfig(min_lr=1e-3, max_lr=1.0, hold_final_stage="yes")


def test_a_held_stage_survives_a_state_round_trip():
    cfg = make_config(max_steps=260, cooldown=0.2, trial_fraction=0.25)
    ctrl, env = StageController(cfg), ToyTraining()
    drive(ctrl, env, until_step=170)
    assert ctrl.s["stage_record"]["no_search"] == "the cooldown follows"
    restored = StageController.from_state(json.loads(json.dumps(ctrl.state_dict())))
    twin = ToyTraining()
    twin.w, twin.rng, twin.slots = env.w.copy(), copy.deepcopy(env.rng), dict(env.slots)
    drive(ctrl, env)
    drive(restored, twin)
    assert restored.history == ctrl.history


# ---------------------------------------------------------------- the budget ends mid-search


def _kinds(actions) -> list:
    return [(a.kind, a.slot) if a.slot else a.kind for a in actions]


def _paper_two_stage_config(**overrides) -> AutoLRSConfig:
    """Stage 0: two 2-step trials and a 10-step exploit (steps 0-14); stage 1 (tau 20)
    starts at step 14 with a 4-step trial. No budget fitting: the budget may cut it."""
    return make_config(preset="paper", tau=10, tau_max=20, trial_fraction=0.2,
                       trials_per_stage=2, **overrides)


def test_a_budget_that_ends_in_a_stages_first_trial_restores_the_stage_start():
    """max_steps falls inside stage 1's first trial (no trial of the stage finished): the
    model goes back to the stage snapshot and the LR to the last stage's, not the
    unmeasured trial LR's, and the cut stage is recorded as incomplete."""
    cfg = _paper_two_stage_config(max_steps=16)
    ctrl, env = StageController(cfg), ToyTraining()
    drive(ctrl, env, until_step=15)
    assert ctrl.phase == "search" and ctrl.stage == 1  # the premise: mid-trial
    trial_lr, stage_start_w = ctrl.lr, env.slots["stage"].copy()
    stage0 = ctrl.history[0]
    assert trial_lr != stage0["lr"]
    actions = ctrl.observe_loss(env.train_step(ctrl.lr))
    assert _kinds(actions) == [("restore", "stage"), "set_lr", "done"]
    assert actions[1].lr == stage0["lr"] == ctrl.lr
    env.apply(actions)
    assert (env.w == stage_start_w).all()  # not the trial's state
    cut = ctrl.history[-1]
    assert (cut["stage"], cut["start_step"], cut["end_step"]) == (1, stage0["end_step"], 16)
    assert cut["incomplete"] is True and cut["trials"] == [] and cut["lr"] == stage0["lr"]
    assert ctrl.done and not stage0.get("incomplete")


def test_a_cooldown_that_starts_in_a_stages_first_trial_decays_the_last_stages_lr():
    """The same cut by the cooldown (20 steps, 4 of them cooldown: it starts at step 16):
    the cooldown decays stage 0's LR, not that of the trial it interrupted."""
    cfg = _paper_two_stage_config(max_steps=20, cooldown=0.2)
    assert cfg.resolved().cooldown_steps == 4
    ctrl, lrs = _lrs(cfg)
    stage0, cut, cooldown = ctrl.history
    assert cut["incomplete"] is True and cut["trials"] == [] and cut["end_step"] == 16
    assert lrs[14] != stage0["lr"]  # step 15 ran at the interrupted trial's LR
    assert cut["lr"] == stage0["lr"] == cooldown["lr"]
    assert cooldown["cooldown"] and (cooldown["start_step"], cooldown["end_step"]) == (16, 20)
    assert lrs[16:] == pytest.approx([stage0["lr"] * k / 4 for k in (4, 3, 2, 1)])


def _mid_search_with_finished_trials(cfg: AutoLRSConfig, saved_best: bool):
    """A run without a budget, stopped in a trial after at least two of its stage finished
    (with a kept best-trial snapshot when ``saved_best``), at an LR that is not the best's."""
    ctrl, env = StageController(cfg), ToyTraining()
    env.apply(ctrl.start())
    while True:
        s = ctrl.s
        if (s["phase"] == "search" and s["trial"] is not None and s["trial"]["steps"] >= 1
                and len(s["observations"]) >= 2 and (s["best_saved"] is not None) == saved_best
                and ctrl._best_observation() is not None
                and ctrl._best_observation()["lr"] != ctrl.lr):
            return ctrl, env
        assert ctrl.steps < 2000, "no such point in the run"
        env.apply(ctrl.observe_loss(env.train_step(ctrl.lr)))


def _with_budget_ending_next_step(ctrl: StageController) -> StageController:
    """The same state with max_steps one step ahead. The trial gate (a trial starts only
    when it fits before the budget's end) keeps a run from getting there by itself: this
    is the guard behind it."""
    state = json.loads(json.dumps(ctrl.state_dict()))
    state["config"]["max_steps"] = state["steps"] + 1
    return StageController.from_state(state)


def test_a_budget_end_mid_search_continues_from_the_kept_best_trial():
    cfg = make_config(max_steps=None, range_test=False)
    ctrl, env = _mid_search_with_finished_trials(cfg, saved_best=True)
    finished = ctrl.s["observations"]
    completed = [t for t in finished if t["outcome"] == "completed"]
    assert all(t["score"] > 0 for t in completed)  # no floor ties: score + std decides
    best = min(completed, key=lambda t: t["score"] + t["std"])
    assert finished[ctrl.s["best_saved"]] is best
    best_w, stage, trial_lr = env.slots["best"].copy(), ctrl.stage, ctrl.lr
    ctrl = _with_budget_ending_next_step(ctrl)
    actions = ctrl.observe_loss(env.train_step(trial_lr))
    assert _kinds(actions) == [("restore", "best"), ("drop", "best"), "set_lr", "done"]
    assert actions[2].lr == best["lr"] == ctrl.lr != trial_lr
    env.apply(actions)
    assert (env.w == best_w).all() and "best" not in env.slots
    cut = ctrl.history[-1]
    assert cut["stage"] == stage and cut["incomplete"] is True
    assert cut["lr"] == best["lr"] and cut["end_step"] == ctrl.steps == ctrl.cfg.max_steps
    assert [t["lr"] for t in cut["trials"]] == [t["lr"] for t in finished]
    assert ctrl.done


def test_a_budget_end_mid_search_without_kept_trials_restores_the_stage_at_the_best_lr():
    cfg = make_config(preset="paper", max_steps=None)
    ctrl, env = _mid_search_with_finished_trials(cfg, saved_best=False)
    finished = ctrl.s["observations"]
    best = min((t for t in finished if t["score"] is not None), key=lambda t: t["score"])
    stage_w, stage, trial_lr = env.slots["stage"].copy(), ctrl.stage, ctrl.lr
    ctrl = _with_budget_ending_next_step(ctrl)
    actions = ctrl.observe_loss(env.train_step(trial_lr))
    assert _kinds(actions) == [("restore", "stage"), "set_lr", "done"]
    assert actions[1].lr == best["lr"] == ctrl.lr != trial_lr
    env.apply(actions)
    assert (env.w == stage_w).all()
    cut = ctrl.history[-1]
    assert cut["stage"] == stage and cut["incomplete"] is True and cut["lr"] == best["lr"]
    assert cut["end_step"] == ctrl.steps == ctrl.cfg.max_steps
    assert [t["lr"] for t in cut["trials"]] == [t["lr"] for t in finished]
    assert ctrl.done


@pytest.mark.parametrize("max_steps", [49, 50, 51])
def test_a_stage_that_exactly_fills_the_budget_is_final_and_complete(max_steps):
    """With no cooldown, a stage costing 2*10 trial steps + 40 - 10 kept = 50 steps: at a
    budget of exactly 50 it was not marked final, so its exploit ran into the budget's end
    unplanned and the stage was recorded incomplete, without its forecast error."""
    cfg = make_config(tau=40, tau_max=40, trial_fraction=0.25, trials_per_stage=2,
                      early_stop_trials=False, adaptive_trials=False, warm_start=False,
                      range_test=False, cooldown=0.0, max_steps=max_steps)
    ctrl = StageController(cfg)
    drive(ctrl, ToyTraining())
    first = ctrl.history[0]
    assert not first.get("incomplete") and first["forecast_error"] is not None
    assert first["final"] == (max_steps <= 50)
    assert ctrl.history[-1]["end_step"] == max_steps
