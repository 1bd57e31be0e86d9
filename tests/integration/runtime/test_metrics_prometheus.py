"""A real Prometheus server scrapes TrainerMetrics; values read back through its HTTP API."""

from __future__ import annotations


import pytest
from prometheus_client import CollectorRegistry

from autolrs.metrics import TrainerMetrics
from tests.helpers.services import free_port, promtool_check_endpoint

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_prometheus_scrapes_learning_rate_and_sees_a_decision(prometheus_service_factory):
    metrics = TrainerMetrics("bert", "ml", registry=CollectorRegistry())
    port = free_port()
    metrics.serve(port, addr="127.0.0.1")
    try:
        metrics.on_step("warmup", 2.0, 0.125)
        prom = prometheus_service_factory([f"127.0.0.1:{port}"])
        result = prom.wait_for('autolrs_learning_rate{job="bert",namespace="ml"}', timeout=30)
        assert float(result[0]["value"][1]) == 0.125

        metrics.on_decision(stage=3, tau=8000, lr=0.5, predicted_loss=1.25, seconds=0.1)
        prom.wait_for('autolrs_learning_rate{job="bert"} == 0.5', timeout=30)
        stage = prom.wait_for('autolrs_stage{namespace="ml"} == 3', timeout=30)
        assert stage[0]["metric"]["job"] == "bert"
        steps = prom.query('autolrs_optimizer_steps_total{phase="warmup"}')
        assert float(steps[0]["value"][1]) == 1

        check = promtool_check_endpoint(port)
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        metrics.close()
