"""The chart ships exactly the project's CRD, and the example jobs fit its schema."""

from __future__ import annotations

import copy

import pytest
import yaml

from tests.helpers.chart_render import CHART_DIR, REPO_ROOT, crd_schema, custom_resource_errors

SOURCE_CRD = REPO_ROOT / "crds" / "autolrsjob.yaml"
CHART_CRD = CHART_DIR / "crds" / "autolrsjob.yaml"
EXAMPLES = sorted((REPO_ROOT / "examples" / "k8s").glob("*.yaml"))


@pytest.fixture(scope="module")
def crd() -> dict:
    return yaml.safe_load(CHART_CRD.read_text())


@pytest.fixture(scope="module")
def example_jobs() -> list[dict]:
    jobs = [doc for path in EXAMPLES for doc in yaml.safe_load_all(path.read_text())
            if doc and doc.get("kind") == "AutoLRSJob"]
    assert jobs, "examples/k8s/ holds no AutoLRSJob manifest"
    return jobs


def test_projects_crd_parses():
    try:
        crds = [doc for doc in yaml.safe_load_all(SOURCE_CRD.read_text()) if doc]
    except yaml.YAMLError as error:
        pytest.fail(f"crds/autolrsjob.yaml is not valid YAML, so helm cannot install it: {error}")
    assert [crd["metadata"]["name"] for crd in crds] == ["autolrsjobs.autolrs.io"]


def test_chart_crd_is_the_projects_crd():
    assert CHART_CRD.read_bytes() == SOURCE_CRD.read_bytes(), (
        "charts/autolrs-operator/crds/autolrsjob.yaml differs from crds/autolrsjob.yaml, "
        "the source of truth: cp crds/autolrsjob.yaml charts/autolrs-operator/crds/")


def test_chart_crds_are_exactly_the_expected_ones():
    assert sorted(path.name for path in (CHART_DIR / "crds").iterdir()) == \
        ["autolrsjob.yaml", "kopf-peering.yaml"]


def test_crd_serves_the_contracted_api(crd):
    assert crd["spec"]["group"] == "autolrs.io"
    assert crd["spec"]["names"]["kind"] == "AutoLRSJob"
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    assert version["name"] == "v1alpha1"
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"


def test_example_jobs_fit_the_crd_schema(crd, example_jobs):
    errors = [error for job in example_jobs for error in custom_resource_errors(job, [crd])]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("path, value", [
    (("spec", "replicas"), 0),
    (("spec", "image"), ""),
    (("spec", "command"), []),
    (("spec", "autolrs", "minLR"), -0.1),
    (("spec", "autolrs", "maxLR"), "1.0"),
])
def test_schema_rejects_a_broken_example(crd, example_jobs, path, value):
    job = copy.deepcopy(example_jobs[0])
    target = job
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
    errors = custom_resource_errors(job, [crd])
    assert any(".".join(path) in error for error in errors), errors


def test_schema_requires_the_search_interval(crd, example_jobs):
    job = copy.deepcopy(example_jobs[0])
    del job["spec"]["autolrs"]["maxLR"]
    assert any("maxLR" in error for error in custom_resource_errors(job, [crd]))
    assert crd_schema(crd)["properties"]["spec"]["required"]


def test_example_jobs_can_finish(example_jobs):
    """A job succeeds when its trainer reaches maxSteps: an example without it never ends
    (the digits data never runs out, and the script's own --max-steps yields to the CRD)."""
    for job in example_jobs:
        assert job["spec"]["autolrs"].get("maxSteps"), job["metadata"]["name"]
