"""A real Prometheus scrapes a training process (AUTOLRS_METRICS_PORT): the learning rate
it stores is the one the trainer used; promtool accepts the trainer's exposition; in a job
of two pods (two torchrun agents) both pods are targets that are up."""

from __future__ import annotations

import math
import subprocess

import pytest

from autolrs.runtime import Runtime
from tests.helpers.dashboard import dashboard_queries, operator_panel
from tests.helpers.services import free_port, promtool_check_endpoint
from trainer_harness import (
    MAX_STEPS,
    PYTHON,
    WORKER,
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


def test_both_pods_of_a_two_pod_job_are_up_and_only_rank_0_serves_autolrs_series(
        tmp_path, prometheus_service_factory):
    """Two torchrun agents (two pods, one process each) each with its own metrics port, as
    the operator runs them: the pod without rank 0 answers with its process_* series, so
    a PodMonitor selecting every worker pod finds no target down, and the autolrs_*
    series exist once."""
    ports = [free_port(), free_port()]
    prom = prometheus_service_factory([f"127.0.0.1:{port}" for port in ports])
    release, rdzv = tmp_path / "release", free_port()
    agents, logs = [], []
    try:
        for pod, port in enumerate(ports):
            logs.append(tmp_path / f"pod{pod}.log")
            command = [PYTHON, "-m", "torch.distributed.run", "--nnodes=2",
                       "--nproc-per-node=1", "--rdzv-backend=c10d",
                       f"--rdzv-endpoint=127.0.0.1:{rdzv}", "--rdzv-id=two-pods", str(WORKER)]
            agents.append(start(command, worker_env(
                tmp_path, AUTOLRS_METRICS_PORT=port, AUTOLRS_JOB="ml/charlm",
                WORKER_HOLD_FILE=release), logs[-1]))
        wait_until(lambda: (tmp_path / "run-finished.json").exists(), "the end of training",
                   timeout=180, proc=agents[0], log=logs[0])
        up = prom.wait_for('up{job="test"}', timeout=30,
                           predicate=lambda r: len(r) == 2 and all(value([s]) == 1 for s in r))
        assert sorted(s["metric"]["instance"] for s in up) == sorted(
            f"127.0.0.1:{port}" for port in ports)
        series = prom.wait_for(f"autolrs_learning_rate{LABELS}", timeout=30)
        assert len(series) == 1, series  # rank 0's pod alone
        memory = prom.wait_for("process_resident_memory_bytes", timeout=30,
                               predicate=lambda r: len(r) == 2)
        assert all(value([s]) > 0 for s in memory)
        for port in ports:
            check = promtool_check_endpoint(port)
            assert check.returncode == 0, check.stdout + check.stderr
    finally:
        release.touch()
        for agent in agents:
            try:
                agent.wait(timeout=60)
            except subprocess.TimeoutExpired:
                agent.kill()
    for agent, log in zip(agents, logs):
        assert agent.returncode == 0, log.read_text()[-3000:]
