"""A real Prometheus scrapes a training process (AUTOLRS_METRICS_PORT): the learning rate
it stores is the one the trainer used; promtool accepts the trainer's exposition."""

from __future__ import annotations

import math

import pytest

from autolrs.runtime import Runtime
from tests.helpers.dashboard import dashboard_queries, operator_panel
from tests.helpers.services import free_port, promtool_check_endpoint
from trainer_harness import (
    MAX_STEPS,
    read_json,
    start,
    steps_log,
    wait_until,
    worker_command,
    worker_env,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

LABELS = '{job="charlm",namespace="ml"}'


def value(result: list[dict]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def test_prometheus_reads_the_learning_rate_the_trainer_used(tmp_path,
                                                             prometheus_service_factory):
    port = free_port()
    prom = prometheus_service_factory([f"127.0.0.1:{port}"])
    release, log = tmp_path / "release", tmp_path / "worker.log"
    proc = start(worker_command(), worker_env(
        tmp_path, AUTOLRS_METRICS_PORT=port, AUTOLRS_JOB="ml/charlm",
        WORKER_STEP_SLEEP=0.02, WORKER_HOLD_FILE=release), log)
    try:
        wait_until(lambda: (tmp_path / "run-finished.json").exists(), "the end of training",
                   timeout=180, proc=proc, log=log)
        finished = read_json(tmp_path, "finished.json")
        start_record, *steps = steps_log(tmp_path)
        assert finished["lr"] == steps[-1]["lr"]  # what the optimizer was left with

        # The first scrape after the last step (the trainer waits, serving, until released).
        prom.wait_for(f"sum(autolrs_optimizer_steps_total{LABELS})", timeout=30,
                      predicate=lambda r: bool(r) and value(r) == MAX_STEPS)
        for metric, expected in (("autolrs_learning_rate", finished["lr"]),
                                 ("autolrs_stage", finished["stage"])):
            prom.wait_for(f"{metric}{LABELS}", timeout=30,
                          predicate=lambda r, want=expected: bool(r) and value(r) == want)
        assert value(prom.query(f"autolrs_restores_total{LABELS}")) == steps[-1]["restores"]
        # Every LR Prometheus saw during the run is one the trainer used.
        history = prom.query(f"autolrs_learning_rate{LABELS}[10m]")
        seen = {float(v) for _, v in history[0]["values"]} - {math.nan}
        used = {start_record["lr"]} | {record["lr"] for record in steps}
        assert {lr for lr in seen if not math.isnan(lr)} <= used

        # Every panel of the shipped Grafana dashboard is a query Prometheus accepts, and
        # each trainer panel shows this run.
        # (The operator's panels are proven against a scraped operator in
        # tests/integration/operator/test_operator_lifecycle.py.)
        for title, expr in dashboard_queries("ml", "charlm"):
            result = prom.query(expr)  # a query Prometheus refuses raises here
            if not operator_panel(expr):
                assert result, f"dashboard panel {title!r} shows nothing for a real run: {expr}"

        check = promtool_check_endpoint(port)
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        release.touch()
    assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]


def test_closing_the_runtime_frees_the_metrics_port():
    port = free_port()
    for _ in range(2):  # a second trainer in the same process can serve on the port again
        runtime = Runtime.from_env({"AUTOLRS_METRICS_PORT": str(port)})
        assert runtime.metrics.port == port
        runtime.close()
        assert runtime.metrics.port is None
