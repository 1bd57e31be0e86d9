"""The Grafana dashboard and the alert rules query only series that the code exposes."""

from __future__ import annotations

import re

import pytest

from metric_catalog import (
    grafana_variable_metric_names,
    operator_exposition,
    promql_metric_names,
    trainer_exposition,
)

REQUIRED_ALERTS = {
    "AutoLRSJobFailed",
    "AutoLRSJobStalled",
    "AutoLRSWorkerRestartsClimbing",
    "AutoLRSForecastUnreliable",
}


@pytest.fixture(scope="module")
def exposed_series() -> dict[str, str]:
    """Every series name the trainer or the operator exposes -> where it was read from."""
    series = {}
    for exposition in (trainer_exposition(), operator_exposition()):
        for name in exposition.series:
            series[name] = exposition.source
    return series


def _panels(dashboard: dict) -> list[dict]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def _queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target of the dashboard."""
    return [(f"panel {panel['title']!r} target {target['refId']}", target["expr"])
            for panel in _panels(dashboard) for target in panel.get("targets", [])]


def test_promql_metric_names_ignores_functions_labels_and_keywords():
    expr = ('sum by (namespace, job) (rate(autolrs_x_total{job=~"$job", phase!="y"}'
            '[$__rate_interval])) / on (job) group_left max without (pod) (autolrs_y offset 5m)'
            ' > bool 0 or autolrs_z != autolrs_z')
    assert promql_metric_names(expr) == {"autolrs_x_total", "autolrs_y", "autolrs_z"}
    assert grafana_variable_metric_names('label_values(autolrs_stage{namespace=~"$ns"}, job)') \
        == {"autolrs_stage"}


def test_dashboard_is_a_grafana_dashboard(dashboard):
    assert dashboard["uid"] == "autolrs-jobs"
    assert dashboard["schemaVersion"] >= 36
    panels = _panels(dashboard)
    assert len({panel["id"] for panel in panels}) == len(panels), "panel ids must be unique"
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} queries nothing"
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])


def test_dashboard_panels_do_not_overlap(dashboard):
    occupied: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in occupied, f"{panel['title']!r} overlaps {occupied[(x, y)]!r}"
                occupied[(x, y)] = panel["title"]


@pytest.mark.parametrize("topic, metrics", [
    ("LR schedule with trial LRs", {"autolrs_learning_rate", "autolrs_trial_learning_rate"}),
    ("train/val loss and forecast", {"autolrs_train_loss", "autolrs_val_loss",
                                      "autolrs_predicted_loss"}),
    ("stage and tau", {"autolrs_stage", "autolrs_tau_steps"}),
    ("steps per second by phase", {"autolrs_optimizer_steps_total"}),
    ("restarts", {"autolrs_operator_pod_restarts_total"}),
    ("forecast error", {"autolrs_forecast_error"}),
])
def test_dashboard_shows(dashboard, topic, metrics):
    queried = set().union(*(promql_metric_names(expr) for _, expr in _queries(dashboard)))
    assert metrics <= queried, f"the dashboard lacks {topic}: {sorted(metrics - queried)}"


def test_steps_per_second_panel_splits_by_phase(dashboard):
    exprs = [expr for _, expr in _queries(dashboard) if "autolrs_optimizer_steps_total" in expr]
    assert any("rate(autolrs_optimizer_steps_total" in e and "phase" in e for e in exprs)


def test_every_metric_the_dashboard_queries_is_exposed(dashboard, exposed_series):
    missing = []
    for where, expr in _queries(dashboard):
        missing += [f"{where}: {name}" for name in promql_metric_names(expr)
                    if name not in exposed_series]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) \
                else variable["query"]
            missing += [f"variable {variable['name']}: {name}"
                        for name in grafana_variable_metric_names(query)
                        if name not in exposed_series]
    assert not missing, "queried but not exposed:\n" + "\n".join(missing)


def test_every_metric_the_alerts_query_is_exposed(alert_rules, exposed_series):
    missing = [f"{rule['alert']}: {name}" for rule in alert_rules
               for name in promql_metric_names(rule["expr"]) if name not in exposed_series]
    assert not missing, "alerts query series nobody exposes:\n" + "\n".join(missing)


def test_required_alerts_exist_and_explain_themselves(alert_rules):
    names = [rule["alert"] for rule in alert_rules]
    assert len(names) == len(set(names)), "alert names must be unique"
    assert REQUIRED_ALERTS <= set(names)
    for rule in alert_rules:
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert len(rule["annotations"]["description"]) > 80, \
            f"{rule['alert']}: the description should tell the user what to do"


def _exposed_labels() -> dict[str, set[str]]:
    """Series name -> the labels its samples carry, from the real expositions."""
    labels: dict[str, set[str]] = {}
    for exposition in (trainer_exposition(), operator_exposition()):
        for family in exposition.parsed:
            for sample in family.samples:
                labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


def _job_scoped(expr: str) -> bool:
    """Whether a query filters or groups by the AutoLRSJob labels job/namespace."""
    return bool(re.search(r"\{[^}]*\b(job|namespace)\s*=~?", expr)
                or re.search(r"\bby\s*\([^)]*\b(job|namespace)\b", expr))


def test_queries_by_job_only_use_series_labelled_with_the_job(dashboard, alert_rules):
    labels = _exposed_labels()
    if not labels:
        pytest.fail("no real exposition to read labels from (metrics modules missing)")
    queries = _queries(dashboard) + [(f"alert {r['alert']}", r["expr"]) for r in alert_rules]
    wrong = [f"{where}: {name} has labels {sorted(labels.get(name, set()))}"
             for where, expr in queries if _job_scoped(expr)
             for name in promql_metric_names(expr)
             if name in labels and not {"job", "namespace"} <= labels[name]]
    assert not wrong, "filtered by job/namespace but the series has no such label:\n" + \
        "\n".join(wrong)


def test_per_job_alerts_name_the_job(alert_rules):
    for rule in alert_rules:
        if "by (namespace, job)" in rule["expr"]:
            assert "$labels.job" in rule["annotations"]["summary"], rule["alert"]
