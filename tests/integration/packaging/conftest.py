"""Fixtures for the chart tests: real helm (from scripts/install-tools.sh) and promtool."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.chart_render import REPO_ROOT, Helm, real_helm


@pytest.fixture(scope="session")
def helm(tmp_path_factory) -> Helm:
    """helm v4 from .tools/bin, installed by scripts/install-tools.sh when missing."""
    return real_helm(tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool from Debian's prometheus package (scripts/ensure-system-deps.sh installs it)."""
    path = shutil.which("promtool")
    if path is None:
        subprocess.run(["bash", str(REPO_ROOT / "scripts" / "ensure-system-deps.sh")], check=True)
        path = shutil.which("promtool")
    assert path, "promtool is missing: run `make system-deps`"
    return path
