"""The Prometheus series that the trainer and the operator expose, and PromQL parsing.

The monitoring assets (Grafana dashboard, alert rules) may only query series that exist.
`trainer_exposition()` and `operator_exposition()` collect them from the real metrics
modules (`autolrs.metrics`, `autolrs_operator.metrics`) rendered with
`prometheus_client.generate_latest` on a fresh registry. A module that does not exist yet is stood in for by the DESIGN.md contract
below, kept in this one place.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

# DESIGN.md "Metrics", plus the two trainer gauges announced in the runtime issue.
# name -> Prometheus type; the family name of a counter is given without `_total`.
DESIGN_TRAINER_METRICS = {
    "autolrs_learning_rate": "gauge",
    "autolrs_trial_learning_rate": "gauge",
    "autolrs_stage": "gauge",
    "autolrs_tau_steps": "gauge",
    "autolrs_optimizer_steps": "counter",
    "autolrs_train_loss": "gauge",
    "autolrs_predicted_loss": "gauge",
    "autolrs_forecast_error": "gauge",
    "autolrs_bo_decision_seconds": "histogram",
    "autolrs_snapshot_seconds": "histogram",
    "autolrs_checkpoint_seconds": "histogram",
    "autolrs_restores": "counter",
}
DESIGN_OPERATOR_METRICS = {
    "autolrs_operator_jobs": "gauge",
    "autolrs_operator_reconcile_seconds": "histogram",
    "autolrs_operator_pod_restarts": "counter",
}

SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "unknown": ("",),
}


@dataclass(frozen=True)
class Exposition:
    """Series names one component exposes, and where they were read from."""

    source: str
    families: dict[str, str]
    parsed: tuple = ()

    @property
    def series(self) -> set[str]:
        """Every sample name a PromQL selector can match (e.g. `x_total`, `x_bucket`)."""
        return {name + suffix for name, kind in self.families.items()
                for suffix in SAMPLE_SUFFIXES[kind]}


def _parse(registry: CollectorRegistry) -> tuple[dict[str, str], list]:
    text = generate_latest(registry).decode()
    families = list(text_string_to_metric_families(text))
    return {family.name: family.type for family in families}, families


def _import_or_none(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            return None
        raise


def trainer_exposition() -> Exposition:
    """The trainer's metrics: `autolrs.metrics.TrainerMetrics` on a fresh registry."""
    module = _import_or_none("autolrs.metrics")
    if module is None:
        return Exposition("DESIGN.md (autolrs.metrics not written yet)", DESIGN_TRAINER_METRICS)
    registry = CollectorRegistry()
    module.TrainerMetrics(job="digits", namespace="ml", registry=registry)
    families, parsed = _parse(registry)
    return Exposition("autolrs.metrics", families, tuple(parsed))


def operator_exposition() -> Exposition:
    """The operator's metrics: those `autolrs_operator.metrics` defines, on a fresh registry."""
    module = _import_or_none("autolrs_operator.metrics")
    if module is None:
        return Exposition("DESIGN.md (autolrs_operator.metrics not written yet)",
                          DESIGN_OPERATOR_METRICS)
    registry = CollectorRegistry()
    collectors = [value for value in vars(module).values() if isinstance(value, MetricWrapperBase)]
    if not collectors:
        raise AssertionError("autolrs_operator.metrics defines no prometheus_client metric")
    for collector in collectors:
        registry.register(collector)
    families, parsed = _parse(registry)
    return Exposition("autolrs_operator.metrics", families, tuple(parsed))


PROMQL_KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan", "atan2", "start", "end",
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (functions, labels and keywords removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"'(?:[^'\\]|\\.)*'", "''", text)
    text = re.sub(r"\{[^{}]*\}", "", text)
    text = re.sub(r"\[[^\[\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", text):
        token = match.group(1)
        if token.lower() not in PROMQL_KEYWORDS:
            names.add(token)
    return names


def grafana_variable_metric_names(query: str) -> set[str]:
    """Metric names in a Grafana Prometheus variable query (label_values, query_result)."""
    label_values = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_]\w*\s*\)\s*", query)
    if label_values:
        return promql_metric_names(label_values.group(1))
    query_result = re.fullmatch(r"\s*query_result\((.*)\)\s*", query)
    if query_result:
        return promql_metric_names(query_result.group(1))
    return promql_metric_names(query)
