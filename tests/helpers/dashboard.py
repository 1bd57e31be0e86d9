"""The shipped Grafana dashboard's queries, as Grafana would send them for one job."""

from __future__ import annotations

import json
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[2] / "charts/autolrs-operator/files/grafana-dashboard.json"


def dashboard_queries(namespace: str, job: str, rate_interval: str = "1m") -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target, with $namespace, $job and $__rate_interval
    filled in."""
    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets") or []:
            expr = (target["expr"].replace("$namespace", namespace).replace("$job", job)
                    .replace("$__rate_interval", rate_interval))
            out.append((panel["title"], expr))
    return out


def operator_panel(expr: str) -> bool:
    """Whether a query reads the operator's series (the others read a trainer's)."""
    return "autolrs_operator_" in expr
