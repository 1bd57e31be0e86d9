"""Settings from env, the trainer-heartbeat mapping, conditions and the jobs-by-phase gauge."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Gauge

from autolrs_operator import conditions as cond
import json

from autolrs.engine.controller import StageController
from autolrs_operator.heartbeat import Decision, decision_message, job_event, parse_entry, status_from_heartbeat
from autolrs_operator.metrics import PhaseBook
from autolrs_operator.settings import OperatorSettings
from autolrs_operator.spec import SecretKey, StateStore


def test_settings_defaults() -> None:
    settings = OperatorSettings.from_env({})
    assert settings.metrics_port == 8080 and settings.resync_seconds == 30
    assert settings.backoff.base_seconds == 10 and settings.backoff.max_seconds == 300
    assert settings.default_store is None


def test_settings_from_env() -> None:
    settings = OperatorSettings.from_env({
        "AUTOLRS_OPERATOR_METRICS_PORT": "9100",
        "AUTOLRS_OPERATOR_BACKOFF_BASE_SECONDS": "0.5",
        "AUTOLRS_OPERATOR_BACKOFF_MAX_SECONDS": "4",
        "AUTOLRS_DEFAULT_STORE_URL": "redis://redis:6379/0",
        "AUTOLRS_DEFAULT_STORE_SECRET": "autolrs-redis/redis-password",
    })
    assert settings.metrics_port == 9100
    assert (settings.backoff.base_seconds, settings.backoff.max_seconds) == (0.5, 4)
    assert settings.default_store == StateStore("redis://redis:6379/0", SecretKey("autolrs-redis", "redis-password"))


@pytest.mark.parametrize(
    "env,message",
    [
        ({"AUTOLRS_OPERATOR_METRICS_PORT": "http"}, "AUTOLRS_OPERATOR_METRICS_PORT must be an integer"),
        ({"AUTOLRS_OPERATOR_METRICS_PORT": "70000"}, "AUTOLRS_OPERATOR_METRICS_PORT must be in [0, 65535]"),
        ({"AUTOLRS_OPERATOR_RESYNC_SECONDS": "0"}, "AUTOLRS_OPERATOR_RESYNC_SECONDS must be >= 0.1"),
        ({"AUTOLRS_DEFAULT_STORE_URL": "mysql://x"}, "AUTOLRS_DEFAULT_STORE_URL must start with redis://"),
        ({"AUTOLRS_DEFAULT_STORE_SECRET": "only-a-name"}, "AUTOLRS_DEFAULT_STORE_SECRET must be SECRET_NAME/KEY"),
        ({"AUTOLRS_OPERATOR_RESYNC_SECONDS": "nan"}, "AUTOLRS_OPERATOR_RESYNC_SECONDS must be a finite number, got 'nan'"),
        ({"AUTOLRS_OPERATOR_STATUS_INTERVAL_SECONDS": "inf"},
         "AUTOLRS_OPERATOR_STATUS_INTERVAL_SECONDS must be a finite number, got 'inf'"),
        ({"AUTOLRS_OPERATOR_BACKOFF_BASE_SECONDS": "nan"},
         "AUTOLRS_OPERATOR_BACKOFF_BASE_SECONDS must be a finite number, got 'nan'"),
        ({"AUTOLRS_OPERATOR_BACKOFF_MAX_SECONDS": "-inf"}, "AUTOLRS_OPERATOR_BACKOFF_MAX_SECONDS must be a finite number"),
        ({"AUTOLRS_OPERATOR_BACKOFF_BASE_SECONDS": "20", "AUTOLRS_OPERATOR_BACKOFF_MAX_SECONDS": "5"},
         "AUTOLRS_OPERATOR_BACKOFF_MAX_SECONDS must be >= AUTOLRS_OPERATOR_BACKOFF_BASE_SECONDS (20), got 5"),
        ({"AUTOLRS_OPERATOR_BACKOFF_BASE_SECONDS": "400"},  # above the default max of 300
         "AUTOLRS_OPERATOR_BACKOFF_MAX_SECONDS must be >= AUTOLRS_OPERATOR_BACKOFF_BASE_SECONDS (400), got 300"),
        ({"AUTOLRS_DEFAULT_STORE_URL": "redis://r:notaport"},
         "AUTOLRS_DEFAULT_STORE_URL has port 'notaport'; the port must be an integer in [1, 65535]"),
        ({"AUTOLRS_DEFAULT_STORE_URL": "redis://"}, "AUTOLRS_DEFAULT_STORE_URL needs a host"),
        ({"AUTOLRS_DEFAULT_STORE_URL": "file://"}, "AUTOLRS_DEFAULT_STORE_URL needs a path"),
        ({"AUTOLRS_DEFAULT_STORE_URL": "file:///state", "AUTOLRS_DEFAULT_STORE_SECRET": "s/k"},
         "AUTOLRS_DEFAULT_STORE_SECRET must be unset with a file:// AUTOLRS_DEFAULT_STORE_URL"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        OperatorSettings.from_env(env)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


def test_backoff_max_may_equal_base_and_file_store_is_kept() -> None:
    settings = OperatorSettings.from_env({
        "AUTOLRS_OPERATOR_BACKOFF_BASE_SECONDS": "5",
        "AUTOLRS_OPERATOR_BACKOFF_MAX_SECONDS": "5",
        "AUTOLRS_DEFAULT_STORE_URL": "file:///shared/autolrs-state",
    })
    assert (settings.backoff.base_seconds, settings.backoff.max_seconds) == (5, 5)
    assert settings.default_store == StateStore("file:///shared/autolrs-state")


def test_status_from_heartbeat_maps_and_filters() -> None:
    heartbeat = {"step": 1200, "stage": 2, "tau": 2000, "lr": 0.05, "best_predicted_loss": 0.31,
                 "last_checkpoint_step": 1000, "phase": "exploit", "extra": 1}
    assert status_from_heartbeat(heartbeat) == {
        "step": 1200, "stage": 2, "tau": 2000, "learningRate": 0.05, "bestPredictedLoss": 0.31,
        "lastCheckpointStep": 1000, "trainerPhase": "exploit"}
    assert status_from_heartbeat({"step": "x", "lr": float("nan"), "stage": True}) == {}


def test_decision_message() -> None:
    assert decision_message(Decision("1-0", "decision", 3, 0.0523, 4000, 0.3123)) == \
        "stage 3: lr=0.0523 for 4000 steps (predicted loss 0.3123)"
    assert decision_message(Decision("1-0", "decision", 1, None, None, None)) == "stage 1: lr=?"


def test_the_trainers_stream_makes_one_event_per_decision_and_a_warning_per_rollback() -> None:
    """The entries a real controller writes to the stream (diverging trial, rolled-back
    exploit): trial ends, the range test and stage ends post nothing."""
    from tests.unit.autolrs.sim import ToyTraining, drive, make_config

    ctrl = StageController(make_config(max_steps=200))
    env = ToyTraining()
    env.apply(ctrl.start())
    while ctrl.phase != "exploit":                  # the range test and stage 0's trials
        evaluate = env.apply(ctrl.observe_loss(env.train_step(ctrl.lr)))
        while evaluate:
            evaluate = env.apply(ctrl.observe_val_loss(env.val_loss()))
    env.apply(ctrl.observe_loss(float("inf")))      # the exploit diverges: roll back
    drive(ctrl, env)
    events = ctrl.drain_events()
    entries = [parse_entry(f"{i}-0", {"data": json.dumps(e, allow_nan=False)}) for i, e in enumerate(events)]
    posted = [job_event(entry) for entry in entries]
    kinds = [e["type"] for e in events]
    assert {"trial_end", "stage_end", "decision", "rollback"} <= set(kinds)
    assert [p[1] for p in posted if p] == [
        {"decision": "StageDecision", "rollback": "StageRolledBack"}[k] for k in kinds
        if k in ("decision", "rollback")]
    rollback = next(p for p in posted if p and p[1] == "StageRolledBack")
    assert rollback[0] == "Warning"
    assert re.fullmatch(r"stage 0: lr=\S+ diverged at step \d+; back to the stage snapshot", rollback[2])
    first = next(p for p in posted if p and p[1] == "StageDecision")
    assert re.fullmatch(r"stage 0: lr=\S+ for \d+ steps \(predicted loss \S+\)", first[2]), first


def test_set_condition_moves_transition_time_only_on_flips() -> None:
    first = cond.set_condition([], "Running", True, "A", "a", "t1")
    same = cond.set_condition(first, "Running", True, "B", "b", "t2")
    assert same[0]["lastTransitionTime"] == "t1" and same[0]["reason"] == "B"
    flipped = cond.set_condition(same, "Running", False, "C", "c", "t3")
    assert flipped[0]["lastTransitionTime"] == "t3" and flipped[0]["status"] == "False"
    assert cond.clear_condition([], "Failed", "X", "x", "t") == []
    ordered = cond.set_condition(cond.set_condition([], "Failed", True, "F", "f", "t"), "Created", True, "C", "c", "t")
    assert [c["type"] for c in ordered] == ["Created", "Failed"]


def test_phase_book_counts_jobs_per_phase() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("jobs", "test", ["phase"], registry=registry)
    book = PhaseBook(gauge)
    book.record("a", "j1", "Running")
    book.record("a", "j2", "Running")
    book.record("b", "j1", "Failed")
    book.record("a", "j2", "Succeeded")
    value = lambda phase: registry.get_sample_value("jobs", {"phase": phase})  # noqa: E731
    assert (value("Running"), value("Succeeded"), value("Failed"), value("Pending")) == (1, 1, 1, 0)
    book.forget("a", "j1")
    assert value("Running") == 0
