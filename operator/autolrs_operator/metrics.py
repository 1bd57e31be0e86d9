"""The operator's Prometheus metrics (autolrs_operator_*) and their HTTP endpoint."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

PHASES = ("Pending", "Running", "Restarting", "Suspended", "Succeeded", "Failed")

JOBS = Gauge("autolrs_operator_jobs", "AutoLRSJobs the operator manages, by phase.", ["phase"])
RECONCILE_SECONDS = Histogram(
    "autolrs_operator_reconcile_seconds",
    "Time one reconcile pass of an AutoLRSJob takes (API reads, plan, writes).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
POD_RESTARTS = Counter(
    "autolrs_operator_pod_restarts",
    "Failed worker pods the operator replaced (or gave up on at backoffLimit).",
)


class PhaseBook:
    """Which phase each job is in; keeps the jobs-by-phase gauge in step."""

    def __init__(self, gauge: Gauge = JOBS) -> None:
        self._gauge = gauge
        self._phases: dict[tuple[str, str], str] = {}
        self._publish()

    def record(self, namespace: str, name: str, phase: str) -> None:
        """Note the job's current phase."""
        self._phases[(namespace, name)] = phase
        self._publish()

    def forget(self, namespace: str, name: str) -> None:
        """The job is gone."""
        self._phases.pop((namespace, name), None)
        self._publish()

    def _publish(self) -> None:
        counts = dict.fromkeys(PHASES, 0)
        for phase in self._phases.values():
            counts[phase] = counts.get(phase, 0) + 1
        for phase, count in counts.items():
            self._gauge.labels(phase=phase).set(count)


def serve(port: int) -> None:
    """Serve /metrics on ``port`` (all interfaces) from a background thread."""
    start_http_server(port, addr="0.0.0.0")
