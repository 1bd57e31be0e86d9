"""Fixtures for the operator's unit tests: the CRD, its schema admission and job bodies."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from tests.helpers.kmock_cluster import SchemaAdmission

ROOT = Path(__file__).resolve().parents[3]
CRD_PATH = ROOT / "crds" / "autolrsjob.yaml"


@pytest.fixture(scope="session")
def crd() -> dict[str, Any]:
    """The CRD as loaded from crds/autolrsjob.yaml."""
    return yaml.safe_load(CRD_PATH.read_text())


@pytest.fixture(scope="session")
def schema(crd: dict[str, Any]) -> dict[str, Any]:
    """The openAPIV3Schema of the served version."""
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.fixture(scope="session")
def admission(schema: dict[str, Any]) -> SchemaAdmission:
    """Defaulting + validation (OpenAPI and CEL) as the API server applies them."""
    return SchemaAdmission(schema)


@pytest.fixture
def make_job() -> Callable[..., dict[str, Any]]:
    """Build an AutoLRSJob body; keyword arguments override spec fields."""

    def make(name: str = "demo", namespace: str = "ns", status: dict | None = None, **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": "autolrs.io/v1alpha1",
            "kind": "AutoLRSJob",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 1},
            "spec": {
                "image": "autolrs-operator:0.1.0",
                "command": ["examples/digits_cnn.py"],
                "replicas": 2,
                "maxReplicas": 3,
                "autolrs": {"minLR": 0.001, "maxLR": 1.0},
            },
        }
        body["spec"].update(copy.deepcopy(spec))
        if status is not None:
            body["status"] = copy.deepcopy(status)
        return body

    return make
