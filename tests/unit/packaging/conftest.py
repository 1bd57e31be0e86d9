"""Fixtures of the static packaging tests: the repository's Dockerfile, chart and assets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
CHART_DIR = REPO_ROOT / "charts" / "autolrs-operator"
RULES_FILE = CHART_DIR / "files" / "prometheus-rules.yaml"
DASHBOARD_FILE = CHART_DIR / "files" / "grafana-dashboard.json"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def chart_dir() -> Path:
    """charts/autolrs-operator."""
    return CHART_DIR


@pytest.fixture(scope="session")
def dashboard() -> dict:
    """The Grafana dashboard the chart ships, parsed."""
    return json.loads(DASHBOARD_FILE.read_text())


@pytest.fixture(scope="session")
def alert_rules() -> list[dict]:
    """Every alerting rule of the chart's rules file."""
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]
