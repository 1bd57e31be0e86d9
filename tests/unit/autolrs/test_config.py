"""AutoLRSConfig: defaults, presets, camelCase, environment, and one-line errors."""

import json

import pytest

from autolrs.config import CAMEL_NAMES, AutoLRSConfig


def test_paper_defaults_and_preset_resolution():
    cfg = AutoLRSConfig(min_lr=1e-3, max_lr=1.0)
    assert (cfg.tau, cfg.tau_max, cfg.trials_per_stage, cfg.trial_fraction) == (1000, 8000, 10, 0.1)
    assert cfg.trial_steps == 100
    paper = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, preset="paper").resolved()
    assert paper.kappa == 1e6 and paper.keep_best_trial is False and paper.divergence_score == 1e6
    ours = cfg.resolved()
    assert ours.keep_best_trial and ours.early_stop_trials and ours.kappa == pytest.approx(1.96)
    assert ours.warmup_lr == 1.0
    explicit = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, preset="paper", kappa=2.0).resolved()
    assert explicit.kappa == 2.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(min_lr=1.0, max_lr=0.1), "min_lr must be > 0 and < max_lr"),
    (dict(min_lr=0.0, max_lr=0.1), "min_lr must be a finite number > 0"),
    (dict(min_lr=1e-3, max_lr=float("inf")), "max_lr must be a finite number > 0"),
    (dict(max_lr=1.0), "min_lr is required"),
    (dict(min_lr=1e-3, max_lr=1.0, tau=5), "tau must be an integer >= 10"),
    (dict(min_lr=1e-3, max_lr=1.0, tau=1000, tau_max=500), "tau_max must be >= tau"),
    (dict(min_lr=1e-3, max_lr=1.0, trials_per_stage=0), "trials_per_stage must be in [1, 100]"),
    (dict(min_lr=1e-3, max_lr=1.0, trial_fraction=0.9), "trial_fraction must be in (0, 0.5]"),
    (dict(min_lr=1e-3, max_lr=1.0, kappa=-1), "kappa must be a finite number >= 0"),
    (dict(min_lr=1e-3, max_lr=1.0, preset="fast"), "preset must be one of default, paper"),
    (dict(min_lr=1e-3, max_lr=1.0, max_steps=0), "max_steps must be >= 1"),
    (dict(min_lr=1e-3, max_lr=1.0, tau="100"), "tau must be an integer"),
    (dict(min_lr=1e-3, max_lr=1.0, warm_start="yes"), "warm_start must be true or false"),
    (dict(min_lr=1e-3, max_lr=1.0, lr_scaling="cubic"), "lr_scaling must be one of"),
    (dict(min_lr=1e-3, max_lr=1.0, lr_scaling="linear"), "reference_batch_size is required when lr_scaling is 'linear'"),
])
def test_bad_values_raise_one_line_errors_naming_the_field(kwargs, message):
    with pytest.raises(ValueError) as info:
        AutoLRSConfig(**kwargs)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_camel_case_round_trip_and_unknown_keys():
    cfg = AutoLRSConfig.from_dict({"minLR": 0.001, "maxLR": 1, "tauMax": 16000, "trialsPerStage": 5})
    assert (cfg.min_lr, cfg.max_lr, cfg.tau_max, cfg.trials_per_stage) == (0.001, 1.0, 16000, 5)
    assert AutoLRSConfig.from_dict(cfg.to_dict(camel=True)) == cfg
    assert set(cfg.to_dict(camel=True)) == set(CAMEL_NAMES.values())
    with pytest.raises(ValueError, match="unknown AutoLRS config field 'tauMin'"):
        AutoLRSConfig.from_dict({"minLR": 0.001, "maxLR": 1, "tauMin": 3})
    with pytest.raises(ValueError, match="field 'minLR' is given twice \\(as 'minLR' and 'min_lr'\\)"):
        AutoLRSConfig.from_dict({"minLR": 0.001, "maxLR": 1, "min_lr": 0.5})


def test_from_env():
    env = {"AUTOLRS_CONFIG": json.dumps({"minLR": 0.01, "maxLR": 0.5, "seed": 3})}
    cfg = AutoLRSConfig.from_env(env)
    assert (cfg.min_lr, cfg.max_lr, cfg.seed) == (0.01, 0.5, 3)
    with pytest.raises(ValueError, match="AUTOLRS_CONFIG is not set"):
        AutoLRSConfig.from_env({})
    with pytest.raises(ValueError, match="AUTOLRS_CONFIG is not valid JSON"):
        AutoLRSConfig.from_env({"AUTOLRS_CONFIG": "{minLR"})
    with pytest.raises(ValueError, match="must be a JSON object"):
        AutoLRSConfig.from_env({"AUTOLRS_CONFIG": "[1]"})


def test_batch_scaling():
    cfg = AutoLRSConfig(min_lr=0.01, max_lr=1.0, lr_scaling="linear", reference_batch_size=64)
    scaled = cfg.scaled_for_batch(256)
    assert (scaled.min_lr, scaled.max_lr) == pytest.approx((0.04, 4.0))
    root = AutoLRSConfig(min_lr=0.01, max_lr=1.0, lr_scaling="sqrt", reference_batch_size=64)
    assert root.scaled_for_batch(256).max_lr == pytest.approx(2.0)
    assert AutoLRSConfig(min_lr=0.01, max_lr=1.0).scaled_for_batch(256).max_lr == 1.0
    with pytest.raises(ValueError, match="global batch size must be an integer >= 1, got 0"):
        cfg.scaled_for_batch(0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(min_trial_steps=0), "min_trial_steps must be in [1, tau/2] = [1, 500]"),
    (dict(min_trial_steps=501), "min_trial_steps must be in [1, tau/2] = [1, 500]"),
    (dict(tau=100, min_trial_steps=51), "min_trial_steps must be in [1, tau/2] = [1, 50]"),
])
def test_min_trial_steps_is_at_most_half_a_stage(kwargs, message):
    with pytest.raises(ValueError) as info:
        AutoLRSConfig(min_lr=1e-3, max_lr=1.0, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("tau, preset, explicit, floor, first_trial", [
    (200, "default", None, 40, 40),     # tau * 0.1 = 20 steps: raised to the floor
    (1000, "default", None, 40, 100),   # already longer than the floor
    (100, "default", None, 25, 25),     # the preset's floor gives way: at most tau / 4
    (10, "default", None, 2, 2),
    (200, "default", 60, 60, 60),       # an explicit value is kept as given
    (200, "paper", None, 1, 20),        # the reference: tau * trial_fraction
])
def test_min_trial_steps_floors_the_trial_length(tau, preset, explicit, floor, first_trial):
    cfg = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, tau=tau, tau_max=max(tau, 800), preset=preset,
                        min_trial_steps=explicit).resolved()
    assert cfg.min_trial_steps == floor
    assert cfg.trial_steps == first_trial
    # Later stages: tau doubles, the floor stays.
    assert cfg.trial_steps_for(2 * tau) == max(round(0.2 * tau), floor)
