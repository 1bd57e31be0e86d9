"""The stage controller: exact action sequences, doubling, phases, budget and resumption."""

import functools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autolrs.engine.controller import Action, StageController

from .sim import ToyTraining, drive, make_config


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


def test_default_keeps_the_winning_trial_when_it_was_last():
    cfg = make_config(tau=10, tau_max=20, trial_fraction=0.2, trials_per_stage=2,
                      early_stop_trials=False, adaptive_trials=False, warm_start=False,
                      max_steps=14, cooldown=0)
    ctrl = StageController(cfg)
    env = ToyTraining()
    drive(ctrl, env)
    stage = ctrl.history[0]
    best = min((t for t in stage["trials"] if t["score"] is not None),
               key=lambda t: t["score"] + t["std"])
    seq = [(s, a.kind, a.slot) for s, a in env.actions if a.kind not in ("set_lr", "done")]
    if best is stage["trials"][-1]:
        # Exploit continues from the last trial: no restore at step 4, 8 steps of exploit.
        assert (4, "restore", "stage") not in seq
        assert stage["exploit_steps"] == 8
    else:
        # The first trial won: its end state was saved and is restored.
        assert (2, "snapshot", "best") in seq and (4, "restore", "best") in seq
        assert stage["exploit_steps"] == 8


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
    cfg = make_config(preset="paper", tau=10, tau_max=10, trial_fraction=0.2,
                      trials_per_stage=2, max_steps=30)
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
    assert kinds(actions)[0] == ("restore", "stage")
    assert ctrl.lr != exploit_lr or ctrl.s["exploit"]["rank"] == 1
    assert ctrl.s["stage_record"]["rollbacks"][0]["lr"] == exploit_lr


def test_paper_scores_nan_trials_1e6_and_survives():
    # The reference recorded "nan" and crashed on min(); here every trial diverges.
    cfg = make_config(preset="paper", tau=10, tau_max=10, trial_fraction=0.2,
                      trials_per_stage=3, max_steps=25)
    ctrl = StageController(cfg)
    ctrl.start()
    for _ in range(3):
        ctrl.observe_loss(float("nan"))
    assert ctrl.phase == "exploit"
    assert ctrl.lr >= cfg.min_lr
    assert all(o["outcome"] == "diverged" for o in ctrl.s["observations"])


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
