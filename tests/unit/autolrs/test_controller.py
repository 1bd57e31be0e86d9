"""The stage controller: exact action sequences, doubling, phases, budget and resumption."""

import copy
import functools
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autolrs.engine import bo
from autolrs.engine.controller import Action, StageController

from .sim import NanValidation, ToyTraining, drive, make_config


def kinds(actions):
    return [(a.kind, a.slot) if a.slot else a.kind for a in actions]


def test_paper_preset_exact_action_sequence():
    cfg = make_config(preset="paper", tau=10, tau_max=20, trial_fraction=0.2,
                      trials_per_stage=2, max_steps=40)
    ctrl = StageController(cfg)
    env = ToyTraining()
    drive(ctrl, env)
    seq = [(step, a.kind, a.slot) for step, a in env.actions if a.kind != "set_lr"]
    assert seq[:6] == [
        (0, "snapshot", "stage"),    # stage 0: tau=10, tau'=2, k=2
        (2, "restore", "stage"),     # trial 1 ends; trial 2 starts from the snapshot
        (4, "restore", "stage"),     # search over: exploit restarts from the snapshot
        (14, "snapshot", "stage"),   # 10 exploit steps later: stage 1, tau=20, tau'=4
        (18, "restore", "stage"),
        (22, "restore", "stage"),
    ]
    assert env.actions[-1][1] == Action("done")
    assert env.actions[-1][0] == 40
    history = ctrl.history
    assert [h["tau"] for h in history] == [10, 20]
    assert [h["trial_steps"] for h in history] == [2, 4]
    assert history[0]["search_steps"] == 4 and history[0]["exploit_steps"] == 10
    # Every set_lr right after a restore re-applies an LR (no step at a stale LR).
    for (step, action), (_, following) in zip(env.actions, env.actions[1:]):
        if action.kind == "restore":
            assert following.kind == "set_lr"


def test_exploit_uses_the_best_forecast_lr():
    ctrl = StageController(make_config(preset="paper", max_steps=200))
    drive(ctrl, ToyTraining())
    for stage in ctrl.history:
        if stage.get("incomplete"):
            continue
        scored = [t for t in stage["trials"] if t["score"] is not None]
        assert stage["lr"] == min(scored, key=lambda t: t["score"])["lr"]
        assert stage["predicted_loss"] == min(t["score"] for t in scored)


def _scripted_first_stage(winner: int):
    """Stage 0 of the default preset with two 10-step trials (tau 40), the trial ``winner``
    falling steeply and the other flat; driven until the stage ends. Returns the
    controller, the toy (its model moves every step, so states are told apart) and the
    toy's model after each step's actions, by step."""
    cfg = make_config(tau=40, tau_max=40, trial_fraction=0.25, trials_per_stage=2,
                      early_stop_trials=False, adaptive_trials=False, warm_start=False,
                      range_test=False, max_steps=None)
    ctrl, env = StageController(cfg), ToyTraining()
    env.apply(ctrl.start())
    models = {}
    while not ctrl.history:
        env.train_step(ctrl.lr)
        trial = ctrl.s["trial"]
        if trial is None:
            loss = 0.5                                       # a sound exploit
        elif trial["index"] == winner:
            loss = 1.0 - 0.04 * trial["steps"]
        else:
            loss = 1.0
        actions = ctrl.observe_loss(loss)
        models[env.step_count] = env.w.copy()                # before the actions
        env.apply(actions)
        models[(env.step_count, "after")] = env.w.copy()
    return ctrl, env, models


def test_default_continues_from_the_first_trial_when_it_won():
    ctrl, env, models = _scripted_first_stage(winner=0)
    stage = ctrl.history[0]
    first, second = stage["trials"]
    assert first["score"] + first["std"] < second["score"] + second["std"]
    assert stage["lr"] == first["lr"] != second["lr"]
    seq = [(s, a.kind, a.slot) for s, a in env.actions if a.kind != "set_lr" and s < 50]
    # The first trial's end state is kept, the second starts from the stage snapshot, and
    # the exploit continues from the kept state: 40 - 10 more steps.
    assert seq == [(0, "snapshot", "stage"), (10, "snapshot", "best"), (10, "restore", "stage"),
                   (20, "restore", "best"), (20, "drop", "best")]
    assert (models[(20, "after")] == models[10]).all()
    assert (stage["kept_steps"], stage["exploit_steps"]) == (10, 30)
    assert stage["end_step"] == 50 and "best" not in env.slots


def test_default_continues_from_the_last_trial_when_it_won():
    ctrl, env, models = _scripted_first_stage(winner=1)
    stage = ctrl.history[0]
    first, second = stage["trials"]
    assert second["score"] + second["std"] < first["score"] + first["std"]
    assert stage["lr"] == second["lr"] != first["lr"]
    seq = [(s, a.kind, a.slot) for s, a in env.actions if a.kind != "set_lr" and s < 50]
    # No restore when the search ends: the exploit goes on from the second trial's state,
    # and the first trial's kept state (the best until then) is released.
    assert [a for a in seq if a[0] >= 20] == [(20, "drop", "best")]
    assert (models[(20, "after")] == models[20]).all()
    assert [(s, a.lr) for s, a in env.actions if s == 20 and a.kind == "set_lr"] == [(20, second["lr"])]
    assert (stage["kept_steps"], stage["exploit_steps"]) == (10, 30)
    assert stage["end_step"] == 50


def test_the_first_trials_kept_snapshot_is_dropped_when_the_last_trial_won():
    # The first trial was the best so far at its end, so its state was saved in "best";
    # once the last trial wins, that snapshot is of no use and should be released (the
    # wrapper holds a model + optimizer copy for it and writes it into every checkpoint).
    _, env, _ = _scripted_first_stage(winner=1)
    assert (10, "snapshot", "best") in [(s, a.kind, a.slot) for s, a in env.actions]
    assert "best" not in env.slots


def test_tau_doubles_until_tau_max_then_validation_mode():
    cfg = make_config(preset="paper", tau=10, tau_max=40, trial_fraction=0.2,
                      trials_per_stage=2, max_steps=400)
    ctrl = StageController(cfg, has_val=True)
    drive(ctrl, ToyTraining())
    taus = [h["tau"] for h in ctrl.history if not h.get("incomplete")]
    assert taus[:4] == [10, 20, 40, 40]
    modes = [h["val_mode"] for h in ctrl.history]
    assert modes[:4] == [False, False, False, True]
    val_stage = ctrl.history[3]
    assert all(t["source"] == "val" for t in val_stage["trials"] if t["score"] is not None)


def test_no_validation_mode_without_val_fn():
    cfg = make_config(preset="paper", tau=10, tau_max=20, trial_fraction=0.2,
                      trials_per_stage=2, max_steps=200)
    ctrl = StageController(cfg, has_val=False)
    drive(ctrl, ToyTraining())
    assert not any(h["val_mode"] for h in ctrl.history)


def test_warmup_is_linear_then_search_starts():
    cfg = make_config(warmup_steps=5, warmup_lr=0.5, max_steps=30)
    ctrl = StageController(cfg)
    env = ToyTraining()
    lrs = []
    env.apply(ctrl.start())
    for _ in range(5):
        assert ctrl.phase == "warmup"
        lrs.append(ctrl.lr)
        env.apply(ctrl.observe_loss(env.train_step(ctrl.lr)))
    assert lrs == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert ctrl.phase == "search"
    assert env.actions[-2][1] == Action("snapshot", slot="stage")


def test_max_steps_counts_trial_steps_and_ends_in_a_sound_state():
    ctrl = StageController(make_config(max_steps=57))
    env = ToyTraining()
    drive(ctrl, env)
    assert ctrl.done and ctrl.steps == 57 == env.step_count
    assert ctrl.observe_loss(1.0) == []


def test_trial_divergence_ends_trial_at_once_and_exploit_rolls_back():
    # Seed 3: the first trial's LR is over ten times min_lr, so the fallback is not clamped.
    cfg = make_config(preset="paper", tau=10, tau_max=10, trial_fraction=0.2,
                      trials_per_stage=2, max_steps=30, seed=3)
    ctrl = StageController(cfg)
    env = ToyTraining()
    env.apply(ctrl.start())
    env.apply(ctrl.observe_loss(1.0))
    actions = ctrl.observe_loss(float("nan"))           # trial 1 diverges at its 2nd step
    assert kinds(actions)[:1] == [("restore", "stage")]
    assert ctrl.s["observations"][0]["outcome"] == "diverged"
    actions = ctrl.observe_loss(1.0)
    actions = ctrl.observe_loss(0.9)                   # trial 2 completes -> exploit
    assert ctrl.phase == "exploit"
    exploit_lr = ctrl.lr
    actions = ctrl.observe_loss(float("inf"))          # exploit diverges -> roll back
    # Trial 1 diverged: trial 2 is the only ranked one, so the next candidate (rank 1) is
    # the fallback, a tenth of the smallest LR tried (not below min_lr), from the snapshot.
    tried = [o["lr"] for o in ctrl.s["observations"]]
    assert exploit_lr == tried[1]
    fallback = min(tried) / 10
    assert fallback > cfg.min_lr
    assert kinds(actions) == [("restore", "stage"), "set_lr"]
    assert actions[1].lr == ctrl.lr == fallback != exploit_lr
    assert ctrl.s["exploit"]["rank"] == 1 and ctrl.s["exploit"]["predicted"] is None
    assert ctrl.s["stage_record"]["rollbacks"] == [
        {"lr": exploit_lr, "step": 5, "loss": None, "reason": "diverged"}]


def _all_trials_diverge(preset: str, monkeypatch) -> tuple[StageController, list[list[float]]]:
    """Three trials that each diverge on their first step; returns the controller (now
    exploiting) and the scores the GP was given at each fit."""
    told = []
    real = bo.scores_for_gp

    def recording(observations, space, reference_loss=None):
        scores = real(observations, space, reference_loss)
        told.append(scores)
        return scores

    monkeypatch.setattr(bo, "scores_for_gp", recording)
    cfg = make_config(preset=preset, tau=10, tau_max=10, trial_fraction=0.2,
                      trials_per_stage=3, max_steps=25, range_test=False)
    ctrl = StageController(cfg)
    ctrl.start()
    for _ in range(3):
        ctrl.observe_loss(float("nan"))
    return ctrl, told


def test_paper_scores_nan_trials_1e6_and_survives(monkeypatch):
    # The reference recorded "nan" and crashed on min(); here every trial diverges.
    ctrl, told = _all_trials_diverge("paper", monkeypatch)
    observations = ctrl.s["observations"]
    assert [o["outcome"] for o in observations] == ["diverged"] * 3
    assert [o["score"] for o in observations] == [None] * 3  # JSON-safe, not NaN
    # The GP proposing trials 2 and 3 was told 1e6 for each diverged trial.
    assert told == [[1e6], [1e6, 1e6]]
    assert len({o["lr"] for o in observations}) == 3  # it still proposed new LRs
    # Nothing ranked: the exploit takes the fallback, a tenth of the smallest LR tried.
    assert ctrl.phase == "exploit"
    assert ctrl.lr == max(min(o["lr"] for o in observations) / 10, ctrl.cfg.min_lr)
    assert ctrl.s["exploit"]["predicted"] is None
    json.dumps(ctrl.state_dict(), allow_nan=False)


def test_default_scores_diverged_trials_just_above_the_worst_loss_seen(monkeypatch):
    # No finite loss and no reference loss yet: the penalty is 1.0, not a 1e6 outlier.
    ctrl, told = _all_trials_diverge("default", monkeypatch)
    assert told[:2] == [[1.0], [1.0, 1.0]]
    assert [o["score"] for o in ctrl.s["observations"]] == [None] * 3


def test_a_nan_validation_loss_ends_a_validation_mode_trial_as_diverged():
    cfg = make_config(tau=20, tau_max=40, max_steps=300, early_validation=True)
    ctrl, env = StageController(cfg, has_val=True), NanValidation(nan_above=0.3)
    env.apply(ctrl.start())
    nan_trials = []
    while not ctrl.done:
        loss = env.train_step(ctrl.lr)
        assert math.isfinite(loss)  # only the validation loss ever goes bad
        evaluate = env.apply(ctrl.observe_loss(loss))
        while evaluate:
            value, trial = env.val_loss(), copy.deepcopy(ctrl.s["trial"])
            actions = ctrl.observe_val_loss(value)
            if math.isnan(value):
                assert trial is not None  # asked for by a trial, not an exploit's end
                nan_trials.append((trial, ctrl.s["observations"][-1], actions))
            evaluate = env.apply(actions)
    assert nan_trials  # the premise
    for trial, record, actions in nan_trials:
        assert trial["lr"] > env.nan_above
        # At once: the trial ends at the evaluation that failed (its first here).
        assert (record["lr"], record["steps"]) == (trial["lr"], trial["steps"])
        assert len(trial["val_losses"]) == 0
        assert record["outcome"] == "diverged" and record["score"] is None
        assert record["reason"] == "loss diverged"
        assert kinds(actions)[0] == ("restore", "stage") and actions[-1].kind == "set_lr"
        assert actions[-1].lr != trial["lr"]
    # The run goes on to its end, and no stage exploits an LR whose validation failed.
    assert ctrl.done and ctrl.steps == cfg.max_steps == env.step_count
    val_trials = [t for h in ctrl.history if h["val_mode"] for t in h["trials"]]
    assert len(val_trials) > len(nan_trials)
    for t in val_trials:
        assert (t["outcome"] == "diverged") == (t["lr"] > env.nan_above), t
    assert all(h["lr"] <= env.nan_above for h in ctrl.history)
    assert math.isfinite(ctrl.s["last_val_loss"])


def test_state_is_json_and_versioned():
    ctrl = StageController(make_config())
    drive(ctrl, ToyTraining(), until_step=45)
    text = json.dumps(ctrl.state_dict(), allow_nan=False)
    assert json.loads(text)["version"] == 1
    with pytest.raises(ValueError, match="unsupported"):
        StageController.from_state({"version": 99})


def test_observe_order_is_enforced():
    ctrl = StageController(make_config())
    with pytest.raises(RuntimeError, match="start"):
        ctrl.observe_loss(1.0)
    ctrl.start()
    with pytest.raises(RuntimeError, match="no validation loss"):
        ctrl.observe_val_loss(1.0)


def _resume_config(preset: str):
    return make_config(preset=preset, tau=10, tau_max=20, trial_fraction=0.2, max_steps=260,
                       warmup_steps=3)


@functools.lru_cache(maxsize=None)
def _uninterrupted_run(preset: str) -> tuple[list, list]:
    """The run without a cut (deterministic, so computed once per preset, not per example):
    its actions and its stage history."""
    env = ToyTraining(seed=5)
    reference = StageController(_resume_config(preset), has_val=True)
    drive(reference, env)
    return env.actions, reference.history


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(min_value=0, max_value=260), preset=st.sampled_from(["paper", "default"]))
def test_restoring_state_at_any_step_changes_no_later_decision(cut, preset):
    cfg = _resume_config(preset)
    reference_actions, reference_history = _uninterrupted_run(preset)

    env = ToyTraining(seed=5)
    first = StageController(cfg, has_val=True)
    drive(first, env, until_step=cut)
    state = json.loads(json.dumps(first.state_dict(), allow_nan=False))
    resumed = StageController.from_state(state)
    drive(resumed, env)
    assert env.actions == reference_actions
    assert resumed.history == reference_history
