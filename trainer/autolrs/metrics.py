"""TrainerMetrics: the trainer's Prometheus metrics (names fixed by DESIGN.md).

Every series carries the labels ``job`` and ``namespace`` (the AutoLRSJob's), so scrape
it with ``honor_labels: true`` (the chart's PodMonitor does). Gauges hold NaN until a
value is known, and a non-finite loss (NaN or +-inf: a diverged step) is exported as NaN
rather than kept at the last finite value, so a dashboard never shows a stale, healthy
loss for a diverged run; alert on it with ``autolrs_train_loss != autolrs_train_loss``.
"""

from __future__ import annotations

import math
import os
from typing import Mapping

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector,
                               start_http_server)

JOB_ENV = "AUTOLRS_JOB"
METRICS_PORT_ENV = "AUTOLRS_METRICS_PORT"
PHASES = ("warmup", "search", "exploit")
TRIAL_OUTCOMES = ("completed", "early_stopped", "diverged")
LABELS = ("job", "namespace")

# Seconds: a BO decision or an in-memory snapshot takes ms to seconds, a checkpoint up
# to minutes on a slow shared volume.
FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0)
CHECKPOINT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                      300.0, 600.0)


def metrics_port_from_env(environ: Mapping[str, str]) -> int | None:
    """``AUTOLRS_METRICS_PORT`` as a port number, None when unset or empty; anything but
    1..65535 is a one-line ValueError naming the variable."""
    text = environ.get(METRICS_PORT_ENV, "").strip()
    if not text:
        return None
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise ValueError(f"{METRICS_PORT_ENV} must be a TCP port in 1..65535, got {text!r}")
    return port


class MetricsEndpoint:
    """``/metrics`` of one registry over HTTP (a daemon thread) until closed."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self._server = None

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Start serving on ``addr:port``; a port in use is a one-line OSError naming it."""
        if self._server is not None:
            raise RuntimeError(f"metrics already served on port {self.port}")
        try:
            self._server, _ = start_http_server(port, addr, registry=self.registry)
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}") \
                from None

    @property
    def port(self) -> int | None:
        """The port served on (None when not serving)."""
        return None if self._server is None else int(self._server.server_address[1])

    def close(self) -> None:
        """Stop serving and free the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def with_process_series(registry: CollectorRegistry) -> CollectorRegistry:
    """``registry`` exporting this process's ``process_*`` series, added only where none
    are: a registry without auto_describe (prometheus_client's global one has its own
    collector) would export a second copy of each sample rather than refuse it."""
    if registry.get_sample_value("process_start_time_seconds") is None:
        ProcessCollector(registry=registry)
    return registry


def pod_endpoint_from_env(environ: Mapping[str, str] | None = None) -> MetricsEndpoint | None:
    """The endpoint of a worker pod that does not host rank 0: only this process's
    ``process_*`` series (CPU, memory, open files), so that every pod the PodMonitor
    selects is a target that is up, and the ``autolrs_*`` series still come from rank 0
    alone. None when ``AUTOLRS_METRICS_PORT`` is unset."""
    environ = os.environ if environ is None else environ
    port = metrics_port_from_env(environ)
    if port is None:
        return None
    endpoint = MetricsEndpoint(with_process_series(CollectorRegistry()))
    endpoint.serve(port)
    return endpoint


def finite_or_nan(value: float | None) -> float:
    """``value`` as a float, or NaN when it is None, NaN or infinite."""
    if value is None:
        return math.nan
    value = float(value)
    return value if math.isfinite(value) else math.nan


def _seconds(value: float, what: str) -> float:
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{what} must be a finite number of seconds >= 0, got {value}")
    return value


class TrainerMetrics:
    """The trainer's metrics on ``registry`` (a private one by default), labelled with
    the job's name and namespace. Rank 0 creates it and calls ``serve(port)``."""

    def __init__(self, job: str = "local", namespace: str = "default",
                 registry: CollectorRegistry | None = None):
        self.job = job
        self.namespace = namespace
        self.registry = registry if registry is not None else CollectorRegistry()
        self._endpoint = MetricsEndpoint(self.registry)
        labels = {"job": job, "namespace": namespace}
        reg = self.registry

        def gauge(name: str, doc: str) -> Gauge:
            metric = Gauge(name, doc, LABELS, registry=reg).labels(**labels)
            metric.set(math.nan)
            return metric

        self.learning_rate = gauge("autolrs_learning_rate",
                                   "Learning rate in effect (set by each step, trial and decision).")
        self.trial_learning_rate = gauge(
            "autolrs_trial_learning_rate",
            "Learning rate of the trial in progress; NaN outside a search trial.")
        self.stage = gauge("autolrs_stage", "Current AutoLRS stage, counted from 0.")
        self.tau_steps = gauge("autolrs_tau_steps", "Length of the current stage in steps.")
        self.train_loss = gauge("autolrs_train_loss",
                                "Training loss of the last step (mean over ranks); NaN if "
                                "it was not finite.")
        self.val_loss = gauge("autolrs_val_loss", "Last validation loss.")
        self.predicted_loss = gauge("autolrs_predicted_loss",
                                    "Best predicted loss of the last stage decision.")
        self.forecast_error = gauge(
            "autolrs_forecast_error",
            "Signed relative error (predicted - reached) / |reached| of the loss forecast of the "
            "last finished stage (negative: the forecast was too low).")
        steps = Counter("autolrs_optimizer_steps", "Optimizer steps taken, by phase "
                        "(trial steps count as search).", (*LABELS, "phase"), registry=reg)
        self.optimizer_steps = {phase: steps.labels(phase=phase, **labels) for phase in PHASES}
        trials = Counter("autolrs_trials", "Search trials finished, by outcome.",
                         (*LABELS, "outcome"), registry=reg)
        self.trials = {outcome: trials.labels(outcome=outcome, **labels)
                       for outcome in TRIAL_OUTCOMES}
        self.restores = Counter("autolrs_restores",
                                "Restores of the stage snapshot (one per trial after the "
                                "first).", LABELS, registry=reg).labels(**labels)
        self.bo_decision_seconds = Histogram(
            "autolrs_bo_decision_seconds", "Time to fit the forecasts and pick the stage LR.",
            LABELS, buckets=FAST_BUCKETS, registry=reg).labels(**labels)
        self.snapshot_seconds = Histogram(
            "autolrs_snapshot_seconds", "Time to snapshot model and optimizer in memory.",
            LABELS, buckets=FAST_BUCKETS, registry=reg).labels(**labels)
        self.checkpoint_seconds = Histogram(
            "autolrs_checkpoint_seconds", "Time the training loop stalled for a checkpoint.",
            LABELS, buckets=CHECKPOINT_BUCKETS, registry=reg).labels(**labels)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None,
                 registry: CollectorRegistry | None = None) -> "TrainerMetrics":
        """Labels from ``AUTOLRS_JOB`` (namespace/name; ``default/local`` when unset);
        serves on ``AUTOLRS_METRICS_PORT`` when it is set and not empty, with the
        process's own ``process_*`` series beside the ``autolrs_*`` ones."""
        environ = os.environ if environ is None else environ
        job = environ.get(JOB_ENV, "").strip() or "default/local"
        namespace, sep, name = job.partition("/")
        if not sep or not namespace or not name or "/" in name:
            raise ValueError(f"{JOB_ENV} must be 'namespace/name', got {job!r}")
        port = metrics_port_from_env(environ)
        metrics = cls(job=name, namespace=namespace, registry=registry)
        if port is not None:
            with_process_series(metrics.registry)
            metrics.serve(port)
        return metrics

    # ------------------------------------------------------------ serving

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serve ``/metrics`` of this registry over HTTP on ``addr:port`` (a daemon thread)."""
        self._endpoint.serve(port, addr)

    @property
    def port(self) -> int | None:
        """The port metrics are served on (None when not serving)."""
        return self._endpoint.port

    def close(self) -> None:
        """Stop serving (the metrics stay readable on the registry)."""
        self._endpoint.close()

    # ------------------------------------------------------------ events

    def on_step(self, phase: str, loss: float, lr: float) -> None:
        """One optimizer step in ``phase`` (warmup, search or exploit) with this loss and LR."""
        counter = self.optimizer_steps.get(phase)
        if counter is None:
            raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
        counter.inc()
        self.train_loss.set(finite_or_nan(loss))
        self.learning_rate.set(finite_or_nan(lr))

    def on_trial_start(self, lr: float) -> None:
        """A search trial with this LR begins."""
        self.trial_learning_rate.set(finite_or_nan(lr))
        self.learning_rate.set(finite_or_nan(lr))

    def on_trial_end(self, outcome: str) -> None:
        """The trial in progress ended: completed, early_stopped or diverged."""
        counter = self.trials.get(outcome)
        if counter is None:
            raise ValueError(
                f"trial outcome must be one of {', '.join(TRIAL_OUTCOMES)}, got {outcome!r}")
        counter.inc()
        self.trial_learning_rate.set(math.nan)

    def on_decision(self, stage: int, tau: int, lr: float, predicted_loss: float | None,
                    seconds: float) -> None:
        """The stage LR was chosen (it takes effect now); ``seconds`` the BO took."""
        self.bo_decision_seconds.observe(_seconds(seconds, "decision seconds"))
        self.stage.set(stage)
        self.tau_steps.set(tau)
        self.learning_rate.set(finite_or_nan(lr))
        self.trial_learning_rate.set(math.nan)
        self.predicted_loss.set(finite_or_nan(predicted_loss))

    def on_snapshot(self, seconds: float) -> None:
        """An in-memory snapshot of model and optimizer took ``seconds``."""
        self.snapshot_seconds.observe(_seconds(seconds, "snapshot seconds"))

    def on_restore(self) -> None:
        """The stage snapshot was restored."""
        self.restores.inc()

    def on_checkpoint(self, seconds: float) -> None:
        """A durable checkpoint stalled the loop ``seconds``."""
        self.checkpoint_seconds.observe(_seconds(seconds, "checkpoint seconds"))

    def on_forecast_error(self, error: float) -> None:
        """The relative forecast error of the stage that just finished."""
        self.forecast_error.set(finite_or_nan(error))

    def on_val_loss(self, loss: float) -> None:
        """A validation loss was measured."""
        self.val_loss.set(finite_or_nan(loss))
