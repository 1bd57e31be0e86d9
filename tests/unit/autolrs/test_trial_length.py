"""min_trial_steps: trials too short to forecast from (20 steps after initialisation)
are lengthened to the floor; later stages, whose tau * trial_fraction is longer, keep it."""

import pytest

from autolrs.engine.controller import StageController

from .sim import ToyTraining, drive, make_config


def _run(**overrides) -> StageController:
    cfg = make_config(tau=200, tau_max=400, trial_fraction=0.1, trials_per_stage=10,
                      max_steps=2000, **overrides)
    ctrl = StageController(cfg)
    drive(ctrl, ToyTraining(seed=1))
    return ctrl


def _trial_lengths(stage: dict) -> set[int]:
    """How long the stage's completed trials ran (an early-stopped or diverged trial ends
    sooner by design)."""
    return {t["steps"] for t in stage["trials"] if t["outcome"] == "completed"}


def test_default_lengthens_the_first_stages_trials_to_the_floor():
    ctrl = _run()
    first, second = ctrl.history[0], ctrl.history[1]
    # tau 200 * 0.1 = 20 steps, raised to the 40-step floor.
    assert first["trial_steps"] == 40 and _trial_lengths(first) == {40}
    # tau 400 * 0.1 = 40: the floor changes nothing.
    assert second["tau"] == 400 and second["trial_steps"] == 40
    assert _trial_lengths(second) == {40}


@pytest.mark.parametrize("overrides", [dict(preset="paper"), dict(min_trial_steps=1)])
def test_without_a_floor_trials_are_tau_times_trial_fraction(overrides):
    ctrl = _run(**overrides)
    first = ctrl.history[0]
    assert first["trial_steps"] == 20 and _trial_lengths(first) == {20}
    second = ctrl.history[1]  # tau 400: 40 steps, floor or not
    assert second["trial_steps"] == 40 and _trial_lengths(second) == {40}
    if overrides.get("preset") == "paper":
        assert len(first["trials"]) == 10  # the reference runs all k trials


def test_an_explicit_floor_applies_to_every_stage():
    ctrl = _run(min_trial_steps=60)
    assert [h["trial_steps"] for h in ctrl.history[:2]] == [60, 60]


def test_the_floor_survives_a_state_round_trip():
    ctrl = StageController(make_config(tau=200, tau_max=400, trial_fraction=0.1,
                                       max_steps=2000))
    drive(ctrl, ToyTraining(), until_step=30)
    restored = StageController.from_state(ctrl.state_dict())
    assert restored.s["trial_steps"] == ctrl.s["trial_steps"] == 40
    assert restored.cfg.min_trial_steps == 40
