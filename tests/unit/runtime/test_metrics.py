"""TrainerMetrics: names, labels, event methods, NaN policy, env parsing, promtool."""

from __future__ import annotations

import math
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from autolrs.metrics import TrainerMetrics, pod_endpoint_from_env
from tests.helpers.services import free_port, promtool_check_metrics

LABELS = {"job": "bert", "namespace": "ml"}
EXPECTED_FAMILIES = {
    "autolrs_learning_rate": "gauge",
    "autolrs_trial_learning_rate": "gauge",
    "autolrs_stage": "gauge",
    "autolrs_tau_steps": "gauge",
    "autolrs_optimizer_steps": "counter",
    "autolrs_train_loss": "gauge",
    "autolrs_val_loss": "gauge",
    "autolrs_predicted_loss": "gauge",
    "autolrs_forecast_error": "gauge",
    "autolrs_bo_decision_seconds": "histogram",
    "autolrs_snapshot_seconds": "histogram",
    "autolrs_checkpoint_seconds": "histogram",
    "autolrs_restores": "counter",
    "autolrs_trials": "counter",
}


@pytest.fixture
def metrics() -> TrainerMetrics:
    return TrainerMetrics("bert", "ml", registry=CollectorRegistry())


def value(metrics: TrainerMetrics, name: str, **extra: str) -> float | None:
    return metrics.registry.get_sample_value(name, {**LABELS, **extra})


def test_exactly_the_contracted_families_with_job_and_namespace_labels(metrics):
    families = text_string_to_metric_families(generate_latest(metrics.registry).decode())
    seen = {}
    for family in families:
        if family.name.endswith("_created"):  # prometheus-client's creation timestamps
            continue
        seen[family.name] = family.type
        for sample in family.samples:
            assert sample.labels["job"] == "bert" and sample.labels["namespace"] == "ml"
    assert seen == EXPECTED_FAMILIES


def test_gauges_start_unknown_and_counters_start_at_zero_for_every_label(metrics):
    assert math.isnan(value(metrics, "autolrs_learning_rate"))
    assert math.isnan(value(metrics, "autolrs_trial_learning_rate"))
    for phase in ("warmup", "search", "exploit"):
        assert value(metrics, "autolrs_optimizer_steps_total", phase=phase) == 0
    for outcome in ("completed", "early_stopped", "diverged"):
        assert value(metrics, "autolrs_trials_total", outcome=outcome) == 0


def test_a_stage_cycle_moves_every_metric(metrics):
    metrics.on_step("warmup", 2.5, 0.1)
    metrics.on_snapshot(0.02)
    metrics.on_trial_start(0.3)
    assert value(metrics, "autolrs_trial_learning_rate") == 0.3
    metrics.on_step("search", 2.0, 0.3)
    metrics.on_step("search", 1.9, 0.3)
    metrics.on_trial_end("early_stopped")
    assert math.isnan(value(metrics, "autolrs_trial_learning_rate"))
    metrics.on_restore()
    metrics.on_decision(stage=1, tau=2000, lr=0.2, predicted_loss=1.5, seconds=0.4)
    metrics.on_step("exploit", 1.7, 0.2)
    metrics.on_val_loss(1.8)
    metrics.on_forecast_error(0.05)
    metrics.on_checkpoint(1.5)

    assert value(metrics, "autolrs_optimizer_steps_total", phase="warmup") == 1
    assert value(metrics, "autolrs_optimizer_steps_total", phase="search") == 2
    assert value(metrics, "autolrs_optimizer_steps_total", phase="exploit") == 1
    assert value(metrics, "autolrs_trials_total", outcome="early_stopped") == 1
    assert value(metrics, "autolrs_restores_total") == 1
    assert value(metrics, "autolrs_learning_rate") == 0.2
    assert value(metrics, "autolrs_stage") == 1
    assert value(metrics, "autolrs_tau_steps") == 2000
    assert value(metrics, "autolrs_predicted_loss") == 1.5
    assert value(metrics, "autolrs_train_loss") == 1.7
    assert value(metrics, "autolrs_val_loss") == 1.8
    assert value(metrics, "autolrs_forecast_error") == 0.05
    assert value(metrics, "autolrs_bo_decision_seconds_count") == 1
    assert value(metrics, "autolrs_bo_decision_seconds_sum") == 0.4
    assert value(metrics, "autolrs_snapshot_seconds_bucket", le="0.025") == 1
    assert value(metrics, "autolrs_checkpoint_seconds_sum") == 1.5


@pytest.mark.parametrize("loss", [math.nan, math.inf, -math.inf])
def test_a_non_finite_loss_is_exported_as_nan_not_the_last_good_value(metrics, loss):
    metrics.on_step("exploit", 1.0, 0.1)
    metrics.on_step("exploit", loss, 0.1)
    assert math.isnan(value(metrics, "autolrs_train_loss"))
    assert value(metrics, "autolrs_optimizer_steps_total", phase="exploit") == 2


def test_a_decision_without_forecast_exports_nan(metrics):
    metrics.on_decision(stage=0, tau=1000, lr=0.1, predicted_loss=None, seconds=0.0)
    assert math.isnan(value(metrics, "autolrs_predicted_loss"))


def test_bad_event_arguments_are_named(metrics):
    with pytest.raises(ValueError, match="phase must be one of warmup, search, exploit, got 'done'"):
        metrics.on_step("done", 1.0, 0.1)
    with pytest.raises(ValueError, match="trial outcome must be one of"):
        metrics.on_trial_end("crashed")
    with pytest.raises(ValueError, match="snapshot seconds must be a finite number"):
        metrics.on_snapshot(-1.0)


def exposition(port: int) -> str:
    """What ``/metrics`` on this port answers."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.read().decode()


def scrape(port: int) -> dict[str, list]:
    return {family.name: family.samples
            for family in text_string_to_metric_families(exposition(port))}


def test_from_env_reads_job_and_serves_on_the_port():
    port = free_port()
    metrics = TrainerMetrics.from_env(
        {"AUTOLRS_JOB": "ml/bert", "AUTOLRS_METRICS_PORT": str(port)},
        registry=CollectorRegistry())
    try:
        assert (metrics.job, metrics.namespace, metrics.port) == ("bert", "ml", port)
        metrics.on_step("warmup", 1.0, 0.125)
        body = exposition(port)
        assert 'autolrs_learning_rate{job="bert",namespace="ml"} 0.125' in body
        assert "process_resident_memory_bytes " in body  # the served process's own
    finally:
        metrics.close()


def test_from_env_on_a_registry_with_process_series_keeps_one_set():
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)  # as prometheus_client's global REGISTRY has
    port = free_port()
    metrics = TrainerMetrics.from_env({"AUTOLRS_METRICS_PORT": str(port)}, registry=registry)
    try:
        lines = exposition(port).splitlines()
        assert [line.split()[0] for line in lines
                if line.startswith("process_start_time_seconds")] == ["process_start_time_seconds"]
    finally:
        metrics.close()


def test_a_pod_without_rank_0_serves_its_process_series_and_no_autolrs_ones():
    assert pod_endpoint_from_env({}) is None
    assert pod_endpoint_from_env({"AUTOLRS_METRICS_PORT": " "}) is None
    port = free_port()
    endpoint = pod_endpoint_from_env({"AUTOLRS_METRICS_PORT": str(port)})
    try:
        assert endpoint.port == port
        families = scrape(port)
        assert families["process_resident_memory_bytes"][0].value > 0
        assert families["process_cpu_seconds"][0].value >= 0
        assert not [name for name in families if name.startswith("autolrs_")]
    finally:
        endpoint.close()
    assert endpoint.port is None
    again = pod_endpoint_from_env({"AUTOLRS_METRICS_PORT": str(port)})  # the port is free
    again.close()


@pytest.mark.parametrize("text", ["http", "0", "70000", "-1"])
def test_a_pod_endpoint_rejects_a_bad_port_naming_the_variable(text):
    with pytest.raises(ValueError, match=f"^AUTOLRS_METRICS_PORT must be a TCP port in "
                                         f"1..65535, got '{text}'$"):
        pod_endpoint_from_env({"AUTOLRS_METRICS_PORT": text})


def test_from_env_defaults_to_a_local_job_without_serving():
    metrics = TrainerMetrics.from_env({})
    assert (metrics.job, metrics.namespace, metrics.port) == ("local", "default", None)


@pytest.mark.parametrize("env, message", [
    ({"AUTOLRS_JOB": "bert"}, "AUTOLRS_JOB must be 'namespace/name'"),
    ({"AUTOLRS_METRICS_PORT": "http"}, "AUTOLRS_METRICS_PORT must be a TCP port"),
    ({"AUTOLRS_METRICS_PORT": "70000"}, "AUTOLRS_METRICS_PORT must be a TCP port"),
])
def test_from_env_rejects_bad_values(env, message):
    with pytest.raises(ValueError, match=message):
        TrainerMetrics.from_env(env)


def test_serving_on_a_taken_port_names_it(metrics):
    port = free_port()
    other = TrainerMetrics(registry=CollectorRegistry())
    other.serve(port, addr="127.0.0.1")
    try:
        with pytest.raises(OSError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            metrics.serve(port, addr="127.0.0.1")
    finally:
        other.close()


def test_promtool_accepts_the_exposition(metrics):
    metrics.on_step("search", math.nan, 0.1)
    metrics.on_decision(stage=2, tau=4000, lr=0.05, predicted_loss=0.9, seconds=0.2)
    result = promtool_check_metrics(generate_latest(metrics.registry))
    assert result.returncode == 0, result.stdout + result.stderr
