"""The alert rules, checked and unit-tested by the real promtool on synthetic series.

Each alert has a case where it fires (labels and rendered annotations compared exactly)
and a healthy case where it stays silent.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from dataclasses import dataclass, field

import pytest
import yaml

from tests.helpers.chart_render import CHART_DIR, one

RULES_FILE = CHART_DIR / "files" / "prometheus-rules.yaml"
JOB = {"namespace": "ml", "job": "digits"}
# Labels Prometheus adds to the operator's label-less series (its scrape target).
OPERATOR_TARGET = {"job": "autolrs-operator-metrics", "namespace": "autolrs-system",
                   "instance": "10.0.0.5:9100", "pod": "autolrs-operator-7d9f-x2x"}


def _series(metric: str, labels: dict[str, str]) -> str:
    return metric + "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _steps(start: float, step: float, count: int) -> str:
    return " ".join(str(start + step * i) for i in range(count))


@dataclass
class AlertCase:
    """Synthetic series, when to evaluate, and the alert expected then (None: silent)."""

    alert: str
    story: str
    series: dict[str, str]
    eval_time: str
    labels: dict[str, str] | None = None
    value: float = 0.0
    extra_series: dict[str, str] = field(default_factory=dict)
    summary: str | None = None  # the firing alert's summary, written out by hand

    @property
    def fires(self) -> bool:
        return self.labels is not None


CASES = [
    AlertCase("AutoLRSJobFailed", "two jobs reach phase Failed and stay there",
              {_series("autolrs_operator_jobs", {"phase": "Failed", "pod": "op-0", "instance": "10.0.0.5:9100"}): "0 0 1 2 2 2 2 2",
               _series("autolrs_operator_jobs", {"phase": "Running", "pod": "op-0", "instance": "10.0.0.5:9100"}): "3 3 2 1 1 1 1 1"},
              "6m", labels={"phase": "Failed"}, value=2, summary="2 AutoLRSJob(s) in phase Failed"),
    AlertCase("AutoLRSJobFailed", "jobs run and succeed, none fails",
              {_series("autolrs_operator_jobs", {"phase": "Failed"}): "0 0 0 0 0 0 0 0",
               _series("autolrs_operator_jobs", {"phase": "Succeeded"}): "0 0 1 2 3 3 3 3",
               _series("autolrs_operator_jobs", {"phase": "Running"}): "3 3 2 1 0 0 0 0"},
              "7m"),
    AlertCase("AutoLRSJobStalled", "steps stop after 10 minutes while rank 0 stays up",
              {_series("autolrs_optimizer_steps_total", {**JOB, "phase": "exploit"}):
                   _steps(0, 100, 11) + " " + " ".join(["1000"] * 30),
               _series("autolrs_optimizer_steps_total", {**JOB, "phase": "search"}): " ".join(["500"] * 41)},
              "35m", labels=dict(JOB), value=0,
              summary="AutoLRSJob ml/digits made no optimizer step for 20 minutes"),
    AlertCase("AutoLRSJobStalled", "steady progress, slow search stages included",
              {_series("autolrs_optimizer_steps_total", {**JOB, "phase": "exploit"}): _steps(0, 100, 41),
               _series("autolrs_optimizer_steps_total", {**JOB, "phase": "search"}): " ".join(["500"] * 41)},
              "35m"),
    AlertCase("AutoLRSJobStalled", "the job finishes: its series end, nothing stalls",
              {_series("autolrs_optimizer_steps_total", {**JOB, "phase": "exploit"}): _steps(0, 100, 11)},
              "35m"),
    AlertCase("AutoLRSWorkerRestartsClimbing", "a worker pod is replaced every minute",
              {_series("autolrs_operator_pod_restarts_total", OPERATOR_TARGET): "0 0 1 2 3 4 5 6 7 8 9"},
              "10m", labels={"job": "autolrs-operator-metrics", "namespace": "autolrs-system"},
              value=9, summary="9 AutoLRSJob worker pods replaced in 30 minutes"),
    AlertCase("AutoLRSWorkerRestartsClimbing", "two restarts in 30 minutes stay below the threshold",
              {_series("autolrs_operator_pod_restarts_total", OPERATOR_TARGET):
                   "0 0 0 1 1 1 1 1 2 2 2 2 2 2 2 2"},
              "15m"),
    AlertCase("AutoLRSWorkerRestartsClimbing", "many restarts, but more than 30 minutes ago",
              {_series("autolrs_operator_pod_restarts_total", OPERATOR_TARGET):
                   "0 2 4 6 " + " ".join(["6"] * 40)},
              "40m"),
    AlertCase("AutoLRSForecastUnreliable", "forecasts miss by 45% for 20 minutes",
              {_series("autolrs_forecast_error", JOB): " ".join(["0.45"] * 21)},
              "20m", labels=dict(JOB), value=0.45,
              summary="AutoLRSJob ml/digits: loss forecasts are off by more than 30%"),
    AlertCase("AutoLRSForecastUnreliable", "forecasts clipped to zero miss by -100% for 20 minutes",
              {_series("autolrs_forecast_error", JOB): " ".join(["-1"] * 21)},
              "20m", labels=dict(JOB), value=1,
              summary="AutoLRSJob ml/digits: loss forecasts are off by more than 30%"),
    AlertCase("AutoLRSForecastUnreliable", "forecasts 20% too low stay below the threshold",
              {_series("autolrs_forecast_error", JOB): " ".join(["-0.2"] * 21)},
              "20m"),
    AlertCase("AutoLRSForecastUnreliable", "no stage has finished yet (NaN until then)",
              {_series("autolrs_forecast_error", JOB): " ".join(["NaN"] * 21)},
              "20m"),
    AlertCase("AutoLRSForecastUnreliable", "accurate forecasts with one bad stage of 5 minutes",
              {_series("autolrs_forecast_error", JOB): " ".join(["0.05"] * 8 + ["0.6"] * 5 + ["0.08"] * 12)},
              "24m"),
]


def _go_value(value: float) -> str:
    """Go's %v of a float64, as Prometheus templates print {{ $value }}."""
    if math.isnan(value):
        return "NaN"
    return str(int(value)) if value == int(value) and abs(value) < 1e21 else repr(value)


def _render_annotation(template: str, labels: dict[str, str], value: float) -> str:
    """Expand the template forms the rules use: $labels.X, $value, humanizePercentage, printf."""
    def expand(match: re.Match) -> str:
        head, *pipes = [part.strip() for part in match.group(1).split("|")]
        result: float | str = value if head == "$value" else labels[head.removeprefix("$labels.")]
        for pipe in pipes:
            if pipe == "humanizePercentage":
                result = "NaN%" if math.isnan(result) else f"{result * 100:.4g}%"
            elif pipe.startswith("printf "):
                result = json.loads(pipe.removeprefix("printf ")) % result
            else:
                raise AssertionError(f"the test cannot render the template function {pipe!r}")
        return result if isinstance(result, str) else _go_value(result)
    return re.sub(r"\{\{(.*?)\}\}", expand, template)


def _rules() -> dict[str, dict]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def _promtool_test(promtool: str, tmp_path, rule_file, case: AlertCase) -> subprocess.CompletedProcess:
    rule = _rules()[case.alert]
    expected = []
    if case.fires:
        labels = {**case.labels, **rule.get("labels", {})}
        expected.append({
            "exp_labels": labels,
            "exp_annotations": {key: _render_annotation(text, labels, case.value)
                                for key, text in rule.get("annotations", {}).items()},
        })
    test = {
        "rule_files": [str(rule_file)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in case.series.items()],
            "alert_rule_test": [{"eval_time": case.eval_time, "alertname": case.alert,
                                 "exp_alerts": expected}],
        }],
    }
    path = tmp_path / "alert_test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    return subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True,
                          timeout=60)


def test_promtool_checks_the_rules_file(promtool):
    result = subprocess.run([promtool, "check", "rules", str(RULES_FILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_promtool_checks_the_charts_prometheusrule(helm, promtool, tmp_path):
    objects = helm.template({"monitoring": {"prometheusOperator": {"enabled": True}}})
    rule_file = tmp_path / "rendered-rules.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": one(objects, "PrometheusRule")["spec"]["groups"]}))
    result = subprocess.run([promtool, "check", "rules", str(rule_file)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_firing_summary_reads_as_written_out():
    """The annotations promtool compares are rendered by this file from the rule's own
    template; the summary of each firing case is also written out here, so a template that
    renders nonsense cannot pass."""
    rules = _rules()
    for case in (c for c in CASES if c.fires):
        rule = rules[case.alert]
        labels = {**case.labels, **rule.get("labels", {})}
        assert case.summary, f"{case.alert} ({case.story}) needs its expected summary"
        assert _render_annotation(rule["annotations"]["summary"], labels, case.value) == case.summary


def test_every_alert_has_a_firing_and_a_silent_case():
    for alert in _rules():
        outcomes = {case.fires for case in CASES if case.alert == alert}
        assert outcomes == {True, False}, f"{alert} needs a case that fires and one that does not"


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case.alert}: {case.story}")
def test_alert(promtool, tmp_path, case):
    result = _promtool_test(promtool, tmp_path, RULES_FILE, case)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_would_notice_a_wrong_expectation(promtool, tmp_path):
    # Guards the harness itself: a firing case checked as silent must fail.
    firing = next(case for case in CASES if case.fires)
    silent = AlertCase(firing.alert, "expects silence", firing.series, firing.eval_time)
    result = _promtool_test(promtool, tmp_path, RULES_FILE, silent)
    assert result.returncode != 0 and firing.alert in result.stdout + result.stderr
