"""The default preset's savings over the reference search, each on its own switch:
bracketing, validation from the first stage, the LR-decay limit, like-for-like early stop,
completed trials ranked first, spaced proposals and the kept-trial step count."""

import math

import pytest

from autolrs.config import AutoLRSConfig
from autolrs.engine.bo import LRSearch, Observation, SearchSpace
from autolrs.engine.controller import (
    ADAPTIVE_KAPPA,
    ADAPTIVE_MARGIN,
    BRACKET_LOG10,
    CONVERGED_LOG10,
    StageController,
)

from .sim import ToyTraining, drive, make_config


def full_stages(ctrl: StageController) -> list[dict]:
    return [h for h in ctrl.history if not h.get("incomplete") and h["trials"]]


def test_a_bracketed_search_has_worse_trials_on_both_sides_of_its_choice():
    # The whole interval's ends (no range test) are the edges that need no bracket.
    cfg = make_config(tau=50, tau_max=100, trials_per_stage=10, max_steps=1200,
                      max_lr_decay=0.0, range_test=False)
    ctrl = StageController(cfg)
    drive(ctrl, ToyTraining(seed=3))
    checked = 0
    for stage in full_stages(ctrl):
        trials = stage["trials"]
        if len(trials) >= cfg.trials_per_stage or stage["rollbacks"]:
            continue  # the cap ends a search whatever its shape
        chosen = math.log10(stage["lr"])
        others = [math.log10(t["lr"]) for t in trials if t["lr"] != stage["lr"]]
        for side, edge in ((1, math.log10(cfg.max_lr)), (-1, math.log10(cfg.min_lr))):
            assert (abs(edge - chosen) < 1e-3
                    or any(0 < side * (x - chosen) <= BRACKET_LOG10 for x in others)), stage
        checked += 1
    assert checked >= 3


def _open_sides(stage: dict, cfg: AutoLRSConfig) -> list[int]:
    """The sides (+1 above, -1 below) of a stage's chosen LR with no other trial within
    BRACKET_LOG10 decades and not at the interval's end: where its search was not
    bracketed (every other trial of the stage ranked below the chosen one)."""
    chosen = math.log10(stage["lr"])
    others = [math.log10(t["lr"]) for t in stage["trials"] if t["lr"] != stage["lr"]]
    return [side for side, edge in ((1, math.log10(cfg.max_lr)), (-1, math.log10(cfg.min_lr)))
            if abs(edge - chosen) >= 1e-3
            and not any(0 < side * (x - chosen) <= BRACKET_LOG10 for x in others)]


def _searched_to_a_stop(stage: dict, cfg: AutoLRSConfig) -> bool:
    """The search ended by its own stop test (not the trial cap k, no rollback)."""
    return len(stage["trials"]) < cfg.trials_per_stage and not stage["rollbacks"]


def test_without_bracketing_a_search_may_stop_unbracketed():
    # The switch really switches: without it the adaptive stop ends stage 0 with no trial
    # within BRACKET_LOG10 below its choice (nor is min_lr that close); with it, the same
    # stage goes on until one does bracket the choice.
    kw = dict(tau=50, tau_max=100, trials_per_stage=10, max_steps=400, max_lr_decay=0.0,
              range_test=False)
    off_cfg, on_cfg = make_config(bracket_search=False, **kw), make_config(**kw)
    off, on = StageController(off_cfg), StageController(on_cfg)
    drive(off, ToyTraining(seed=3))
    drive(on, ToyTraining(seed=3))
    unbracketed = [h for h in full_stages(off)
                   if _searched_to_a_stop(h, off_cfg) and _open_sides(h, off_cfg)]
    assert [h["stage"] for h in unbracketed] == [0] and _open_sides(unbracketed[0], off_cfg) == [-1]
    stage = full_stages(on)[0]
    assert stage["stage"] == 0 and _searched_to_a_stop(stage, on_cfg)
    assert _open_sides(stage, on_cfg) == []
    # The bracketing trial is extra: the runs agree until the unbracketed stop.
    n = len(unbracketed[0]["trials"])
    assert [t["lr"] for t in stage["trials"][:n]] == [t["lr"] for t in unbracketed[0]["trials"]]
    assert len(stage["trials"]) > n


def test_early_validation_scores_trials_on_validation_loss_from_the_first_stage():
    cfg = make_config(tau=50, tau_max=100, max_steps=400, early_validation=True)
    ctrl = StageController(cfg, has_val=True)
    env = ToyTraining()
    drive(ctrl, env)
    first = ctrl.history[0]
    assert first["val_mode"] and first["tau"] < cfg.tau_max
    assert any(t["source"] == "val" for t in first["trials"] if t["score"] is not None)
    evaluations = [step for step, a in env.actions if a.kind == "evaluate"]
    assert evaluations and evaluations[0] <= first["start_step"] + first["trial_steps"]

    late = StageController(make_config(tau=50, tau_max=100, max_steps=400,
                                       early_validation=False), has_val=True)
    drive(late, ToyTraining())
    assert not late.history[0]["val_mode"]


def test_early_validation_needs_a_validation_function():
    ctrl = StageController(make_config(max_steps=200), has_val=False)
    drive(ctrl, ToyTraining())
    assert not any(h["val_mode"] for h in ctrl.history)


@pytest.mark.parametrize("factor", [2.0, 3.0])
def test_a_stage_never_searches_below_the_last_lr_over_max_lr_decay(factor):
    cfg = make_config(tau=40, tau_max=80, trials_per_stage=6, max_steps=1500,
                      max_lr_decay=factor)
    ctrl = StageController(cfg)
    drive(ctrl, ToyTraining(seed=1))
    stages = full_stages(ctrl)
    assert len(stages) >= 4
    for before, stage in zip(stages, stages[1:]):
        floor = before["lr"] / factor
        assert stage["lr_floor"] == pytest.approx(floor)
        assert min(t["lr"] for t in stage["trials"]) >= floor * (1 - 1e-12)


def test_no_decay_limit_leaves_the_interval_whole():
    ctrl = StageController(make_config(max_lr_decay=0.0, max_steps=300))
    drive(ctrl, ToyTraining())
    assert all(h.get("lr_floor") is None for h in ctrl.history)


def _stage_with(observations: list[dict], **overrides) -> StageController:
    """A first stage (no range test before it) whose trials are ``observations``."""
    ctrl = StageController(make_config(range_test=False, **overrides))
    ctrl.start()
    ctrl.s["observations"] = observations
    return ctrl


def test_completed_trials_rank_ahead_of_early_stopped_ones():
    ctrl = _stage_with([
        {"lr": 0.1, "score": 0.50, "std": 0.01, "outcome": "completed"},
        {"lr": 0.3, "score": 0.20, "std": 0.01, "outcome": "early_stopped"},
        {"lr": 0.03, "score": 0.40, "std": 0.01, "outcome": "completed"},
        {"lr": 1.0, "score": None, "std": None, "outcome": "diverged"},
    ])
    assert ctrl._ranking() == [2, 0, 1]


def test_early_stop_compares_like_with_like():
    # The best trial forecast 2.1 from its first half and 1.0 in full. A new trial whose
    # first half forecasts 2.05 is no worse than the best was at that point: it goes on
    # (judged against the full-length 1.0 it would have been stopped).
    cfg_kw = dict(tau=200, tau_max=200, trial_fraction=0.1,  # 20-step trials, check at 10
                  min_trial_steps=1)
    ctrl = _stage_with([{"lr": 0.1, "score": 1.0, "std": 0.05, "outcome": "completed",
                         "partial_forecast": 2.1}], **cfg_kw)
    flat = [2.05 + 0.001 * (i % 2) for i in range(10)]
    trial = {"index": 1, "lr": 0.2, "steps": 10, "losses": flat, "val_losses": [],
             "start_step": 30}
    assert not ctrl._hopeless(trial)
    assert trial["partial_forecast"] == pytest.approx(2.05, abs=0.01)
    # Clearly worse than the best was at the same point: stopped.
    ctrl = _stage_with([{"lr": 0.1, "score": 1.0, "std": 0.05, "outcome": "completed",
                         "partial_forecast": 1.2}], **cfg_kw)
    worse = {"index": 1, "lr": 0.2, "steps": 10, "losses": flat, "val_losses": [],
             "start_step": 30}
    assert ctrl._hopeless(worse)
    # Its score is put on the full-length scale: best score + the gap at the check point.
    assert ctrl._early_stop_score({"partial_forecast": worse["partial_forecast"],
                                   "score": worse["partial_forecast"]}) == pytest.approx(
        1.0 + worse["partial_forecast"] - 1.2)


def test_early_stop_is_off_in_the_paper_preset():
    ctrl = _stage_with([{"lr": 0.1, "score": 0.1, "std": 0.0, "outcome": "completed",
                         "partial_forecast": 0.1}], preset="paper", tau=200, tau_max=200)
    trial = {"index": 1, "lr": 0.2, "steps": 15, "losses": [5.0] * 15, "val_losses": [],
             "start_step": 30}
    assert not ctrl._hopeless(trial)


def test_default_proposals_keep_their_distance_from_tried_lrs():
    space = SearchSpace(min_lr=1e-3, max_lr=1.0, kappa=1.96, min_spacing_log10=0.05)
    search = LRSearch(space, seed=0, stage=1)
    observations = [Observation(0.01, 0.5), Observation(0.0101, 0.45), Observation(0.3, 2.0)]
    for _ in range(5):
        lr = search.propose(observations)
        assert min(abs(math.log10(lr) - math.log10(o.lr)) for o in observations) >= 0.05
        observations.append(Observation(lr, 0.46))


def test_kept_trial_steps_are_counted():
    cfg = make_config(tau=50, tau_max=100, max_steps=600)
    ctrl = StageController(cfg)
    drive(ctrl, ToyTraining())
    stages = full_stages(ctrl)
    assert any(h["kept_steps"] == h["trial_steps"] for h in stages)
    for stage in stages:
        assert stage["kept_steps"] in (0, stage["trial_steps"])
        assert stage["search_steps"] >= stage["kept_steps"]
    paper = StageController(make_config(preset="paper", tau=50, tau_max=100, max_steps=600))
    drive(paper, ToyTraining())
    assert all(h["kept_steps"] == 0 for h in full_stages(paper))


def _exploit_after_two_falling_trials(**overrides) -> tuple[StageController, list]:
    cfg = make_config(tau=40, tau_max=40, trial_fraction=0.25, trials_per_stage=2,
                      max_steps=400, range_test=False, **overrides)
    ctrl = StageController(cfg)
    ctrl.start()
    while ctrl.phase == "search":
        for i in range(10):
            if ctrl.phase != "search":
                break
            ctrl.observe_loss(1.0 - 0.04 * i)
    assert ctrl.phase == "exploit"
    return ctrl, ctrl.s["exploit"]


def test_an_exploit_that_stops_learning_is_rolled_back_half_way():
    ctrl, exploit = _exploit_after_two_falling_trials()
    first_lr, check_at = ctrl.lr, max(exploit["remaining"] // 2, 10)
    for step in range(1, check_at + 1):
        actions = ctrl.observe_loss(1.05)        # no lower than the stage's start (1.0)
        if step < check_at:
            assert actions == []
    assert ("restore", "stage") in [(a.kind, a.slot) for a in actions]
    rollback = ctrl.s["stage_record"]["rollbacks"][0]
    assert rollback["reason"] == "stalled" and rollback["lr"] == first_lr
    assert ctrl.s["exploit"]["rank"] == 1 and ctrl.lr != first_lr


def test_an_exploit_that_learns_then_dies_is_rolled_back_at_its_end():
    ctrl, exploit = _exploit_after_two_falling_trials()
    remaining = exploit["remaining"]
    for step in range(1, remaining + 1):
        actions = ctrl.observe_loss(0.6 if step <= remaining // 2 else 1.05)
    assert ctrl.s["stage_record"]["rollbacks"][0]["reason"] == "stalled"
    assert ctrl.history == [] and ctrl.s["exploit"]["rank"] == 1


def test_losses_near_zero_are_never_called_stalled():
    ctrl, exploit = _exploit_after_two_falling_trials()
    ctrl.s["stage_record"]["reference_loss"] = 0.004   # far below the run's first loss (1.0)
    ctrl.s["observations"][ctrl.s["exploit"]["ranking"][0]]["forecast_train"] = 0.002
    for _ in range(exploit["remaining"]):
        ctrl.observe_loss(0.005)
    assert ctrl.history[0]["rollbacks"] == []


def test_a_learning_exploit_is_not_a_stall_and_the_paper_never_checks():
    ctrl, exploit = _exploit_after_two_falling_trials()
    for _ in range(exploit["remaining"]):
        ctrl.observe_loss(0.5)
    assert ctrl.history[0]["rollbacks"] == []
    paper, exploit = _exploit_after_two_falling_trials(preset="paper")
    for _ in range(exploit["remaining"]):
        paper.observe_loss(1.05)
    assert paper.history[0]["rollbacks"] == []


@pytest.mark.parametrize("value", [1.0, 0.5, -2.0, float("nan"), float("inf")])
def test_max_lr_decay_must_be_zero_or_above_one(value):
    with pytest.raises(ValueError, match="max_lr_decay must be 0"):
        AutoLRSConfig(min_lr=1e-3, max_lr=1.0, max_lr_decay=value)


def test_new_switches_are_on_in_default_and_off_in_paper():
    ours = AutoLRSConfig(min_lr=1e-3, max_lr=1.0).resolved()
    paper = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, preset="paper").resolved()
    assert ours.bracket_search and not ours.early_validation and ours.max_lr_decay == 2.0
    assert ours.range_test and not paper.range_test
    assert ours.stall_rollback and not paper.stall_rollback
    assert not paper.bracket_search and not paper.early_validation and paper.max_lr_decay == 0
    budgeted = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, max_steps=500).resolved()
    assert budgeted.cooldown == 0.2 and paper.cooldown == 0
    camel = AutoLRSConfig.from_dict({"minLR": 1e-3, "maxLR": 1.0, "bracketSearch": False,
                                     "earlyValidation": False, "maxLRDecay": 4})
    assert (camel.bracket_search, camel.early_validation, camel.max_lr_decay) == (False, False, 4.0)


# Forecasts in a valley with a gap of almost two decades in the interval's middle: the GP's
# lower bound (kappa 1) bottoms out in the gap, far from any tried LR.
VALLEY_LRS = [0.001, 0.002, 0.004, 0.008, 0.5, 1.0]
VALLEY_SCORES = [2.0, 1.0, 0.1, 0.0, 1.0, 2.0]


def _floored_stage(scores: list[float]) -> StageController:
    return _stage_with([{"lr": lr, "score": sc, "std": 0.01, "outcome": "completed"}
                        for lr, sc in zip(VALLEY_LRS, scores)], bracket_search=False,
                       trials_per_stage=10, max_steps=5000, min_trial_steps=1)


def _gp_bound(ctrl: StageController) -> tuple[float, float, float]:
    """The GP's real lower bound, where it is, and how far that is from the nearest tried
    LR (decades)."""
    bound, where = ctrl._search().lower_bound(ctrl._bo_observations(), ADAPTIVE_KAPPA,
                                              ctrl.s["stage_record"]["reference_loss"])
    distance = min(abs(math.log10(where) - math.log10(lr)) for lr in VALLEY_LRS)
    return bound, where, distance


def test_a_search_whose_best_forecast_is_at_the_zero_floor_stops():
    # Digits' first stage: several trials forecast a validation loss of 0 (the floor of a
    # non-negative loss). The GP's lower bound dips below 0 between them, which used to
    # promise an improvement no forecast can deliver and kept the search going to k.
    ctrl = _floored_stage(VALLEY_SCORES)
    best = ctrl._best_observation()
    bound, _, distance = _gp_bound(ctrl)
    margin = max(ADAPTIVE_MARGIN * abs(best["score"]), 0.5 * best["std"])
    # Taken as it is, the bound promises more than the margin, away from every tried LR:
    # only the floor at 0 stops the search.
    assert best["score"] == 0.0 and best["score"] - bound > margin
    assert distance > CONVERGED_LOG10
    assert ctrl._keep_searching() is False
    # The same valley moved down by 0.2 (some scores below 0: a loss that may be negative)
    # keeps the bound as the GP gives it, and the search goes on.
    ctrl = _floored_stage([s - 0.2 for s in VALLEY_SCORES])
    best = ctrl._best_observation()
    shifted, _, distance = _gp_bound(ctrl)
    assert best["score"] < 0 and shifted == pytest.approx(bound - 0.2, abs=1e-6)
    assert best["score"] - shifted > max(ADAPTIVE_MARGIN * abs(best["score"]), 0.5 * best["std"])
    assert distance > CONVERGED_LOG10
    assert ctrl._keep_searching() is True


def test_trials_forecast_at_the_zero_floor_are_tied_and_the_smallest_lr_wins():
    # Digits' first stage: training-loss forecasts clipped to 0, their stds half the
    # tails' heights, so score + std favoured the largest LR that memorised fastest.
    ctrl = _stage_with([
        {"lr": 0.03, "score": 0.0, "std": 0.004, "outcome": "completed"},
        {"lr": 0.1, "score": 0.05, "std": 0.01, "outcome": "completed"},
        {"lr": 0.006, "score": 0.0, "std": 0.010, "outcome": "completed"},
        {"lr": 0.05, "score": 0.0, "std": 0.002, "outcome": "completed"},
    ])
    assert ctrl._ranking() == [2, 0, 3, 1]
    assert ctrl._best_observation()["lr"] == 0.006


def test_the_floored_group_keeps_the_place_of_its_best_member():
    # A sound forecast that beats every floored trial's score + std stays ahead of them.
    ctrl = _stage_with([
        {"lr": 0.03, "score": 0.0, "std": 0.020, "outcome": "completed"},
        {"lr": 0.02, "score": 0.005, "std": 0.001, "outcome": "completed"},
        {"lr": 0.01, "score": 0.0, "std": 0.030, "outcome": "completed"},
        {"lr": 0.3, "score": 0.0, "std": 0.040, "outcome": "early_stopped"},
    ])
    assert ctrl._ranking() == [1, 2, 0, 3]


def test_one_floored_trial_or_a_loss_below_zero_keeps_score_plus_std():
    ctrl = _stage_with([
        {"lr": 0.01, "score": 0.0, "std": 0.03, "outcome": "completed"},
        {"lr": 0.03, "score": 0.01, "std": 0.001, "outcome": "completed"},
    ])
    assert ctrl._ranking() == [1, 0]
    # A loss that goes below zero has no floor at 0: a forecast of 0 is an ordinary value.
    ctrl = _stage_with([
        {"lr": 0.01, "score": 0.0, "std": 0.03, "outcome": "completed"},
        {"lr": 0.03, "score": 0.0, "std": 0.001, "outcome": "completed"},
        {"lr": 0.1, "score": -0.5, "std": 0.6, "outcome": "completed"},
    ])
    assert ctrl._ranking() == [1, 0, 2]


def test_the_paper_preset_breaks_floor_ties_by_trial_order():
    ctrl = _stage_with([
        {"lr": 0.03, "score": 0.0, "std": 0.004, "outcome": "completed"},
        {"lr": 0.006, "score": 0.0, "std": 0.010, "outcome": "completed"},
    ], preset="paper")
    assert ctrl._ranking() == [0, 1]


def test_floor_ties_off_ranks_floored_trials_by_score_plus_std():
    ctrl = _stage_with([
        {"lr": 0.03, "score": 0.0, "std": 0.004, "outcome": "completed"},
        {"lr": 0.006, "score": 0.0, "std": 0.010, "outcome": "completed"},
        {"lr": 0.05, "score": 0.0, "std": 0.002, "outcome": "completed"},
    ], floor_ties=False)
    assert ctrl._ranking() == [2, 0, 1]
    assert ctrl._best_observation()["lr"] == 0.05


def test_floor_ties_is_a_preset_field():
    base = dict(min_lr=1e-3, max_lr=1.0, max_steps=100)
    assert AutoLRSConfig(**base).resolved().floor_ties is True
    assert AutoLRSConfig(**base, preset="paper").resolved().floor_ties is False
    parsed = AutoLRSConfig.from_dict({"minLR": 1e-3, "maxLR": 1.0, "floorTies": False})
    assert parsed.resolved().floor_ties is False
    with pytest.raises(ValueError, match="^floor_ties must be true or false, got 'yes'$"):
        AutoLRSConfig(**base, floor_ties="yes")
