"""The CRD: structural, complete against the trainer's config, and its rules do what they say."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from autolrs.config import CAMEL_NAMES, AutoLRSConfig

from tests.helpers.kmock_cluster import SchemaAdmission
from tests.unit.operator.conftest import ROOT

EXAMPLES = sorted((ROOT / "examples" / "k8s").glob("*.yaml"))


def _walk(node: dict[str, Any], path: str = ""):
    yield path, node
    for key, child in (node.get("properties") or {}).items():
        yield from _walk(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_names_scope_and_subresources(crd: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "autolrsjobs.autolrs.io"
    assert (spec["group"], spec["scope"]) == ("autolrs.io", "Namespaced")
    assert spec["names"]["kind"] == "AutoLRSJob" and spec["names"]["plural"] == "autolrsjobs"
    assert "alj" in spec["names"]["shortNames"]
    [version] = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase" and columns["Replicas"] == ".spec.replicas"
    assert columns["Step"] == ".status.step" and columns["Stage"] == ".status.stage"
    assert columns["LR"] == ".status.learningRate" and columns["Age"] == ".metadata.creationTimestamp"


def test_schema_is_structural_and_described(schema: dict[str, Any]) -> None:
    for path, node in _walk(schema):
        typed = "type" in node or node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
        assert typed, f"{path or '<root>'} has no type (a structural schema needs one)"
        if path.startswith(".spec") and path.count(".") <= 3 and "[]" not in path and "{}" not in path:
            assert node.get("description"), f"{path} has no description for kubectl explain"


def test_every_trainer_config_field_is_in_the_schema(schema: dict[str, Any]) -> None:
    autolrs = schema["properties"]["spec"]["properties"]["autolrs"]["properties"]
    assert set(autolrs) == set(CAMEL_NAMES.values())


def test_schema_defaults_match_the_trainer_defaults(schema: dict[str, Any]) -> None:
    autolrs = schema["properties"]["spec"]["properties"]["autolrs"]["properties"]
    trainer = {CAMEL_NAMES[f.name]: f.default for f in dataclasses.fields(AutoLRSConfig) if not f.name.startswith("_")}
    for name, prop in autolrs.items():
        if "default" in prop:
            assert prop["default"] == trainer[name], name


def test_every_cel_rule_compiles(schema: dict[str, Any]) -> None:
    rules = [r["rule"] for _, node in _walk(schema) for r in node.get("x-kubernetes-validations") or []]
    rules += [r["rule"] for r in schema.get("x-kubernetes-validations") or []]
    assert len(rules) >= 10
    for rule in rules:
        SchemaAdmission.program(rule)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(path: Path, admission: SchemaAdmission) -> None:
    job = yaml.safe_load(path.read_text())
    admission.default_and_prune(job)
    assert admission.errors(job) == []
    AutoLRSConfig.from_dict(job["spec"]["autolrs"])


def _minimal() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "examples" / "k8s" / "minimal.yaml").read_text())


BAD = [
    ({"replicas": 0}, "spec.replicas"),
    ({"replicas": 3, "maxReplicas": 2}, "spec.replicas must be <= spec.maxReplicas"),
    ({"replicas": 1, "minReplicas": 2}, "spec.replicas must be >= spec.minReplicas"),
    ({"nprocPerNode": 0}, "spec.nprocPerNode"),
    ({"command": []}, "spec.command"),
    ({"backoffLimit": -1}, "spec.backoffLimit"),
    ({"autolrs": {"minLR": 1.0, "maxLR": 0.1}}, "spec.autolrs.minLR must be < spec.autolrs.maxLR"),
    ({"autolrs": {"minLR": 0, "maxLR": 0.1}}, "spec.autolrs.minLR"),
    ({"autolrs": {"minLR": 0.1, "maxLR": 1, "tau": 5000, "tauMax": 2000}}, "spec.autolrs.tau must be <= spec.autolrs.tauMax"),
    ({"autolrs": {"minLR": 0.1, "maxLR": 1, "preset": "fast"}}, "spec.autolrs.preset"),
    ({"autolrs": {"minLR": 0.1, "maxLR": 1, "trialFraction": 0.9}}, "spec.autolrs.trialFraction"),
    ({"autolrs": {"minLR": 0.1, "maxLR": 1, "lrScaling": "linear"}}, "referenceBatchSize is required"),
    ({"autolrs": {"maxLR": 1}}, "minLR"),
    ({"autolrs": {"minLR": 0.1, "maxLR": 1, "cooldown": 0.2}}, "spec.autolrs.cooldown needs spec.autolrs.maxSteps"),
    ({"autolrs": {"minLR": 0.1, "maxLR": 1, "maxSteps": 100, "cooldown": 0.7}}, "spec.autolrs.cooldown"),
    ({"autolrs": {"minLR": 0.1, "maxLR": 1, "tau": 100, "minTrialSteps": 51}}, "spec.autolrs.minTrialSteps must be at most tau/2"),
    ({"autolrs": {"minLR": 0.1, "maxLR": 1, "minTrialSteps": 0}}, "spec.autolrs.minTrialSteps"),
    ({"stateStore": {}}, "spec.stateStore needs url, secretRef, or both"),
    ({"stateStore": {"url": "http://redis:6379"}}, "spec.stateStore.url"),
    ({"checkpoint": {"claimName": "a", "pvcName": "b"}}, "give claimName or pvcName, not both"),
    ({"checkpoint": {"path": "relative"}}, "spec.checkpoint.path"),
]


@pytest.mark.parametrize("change,expected", BAD, ids=[b[1][:40] for b in BAD])
def test_bad_resources_are_rejected_naming_the_field(
    change: dict[str, Any], expected: str, admission: SchemaAdmission
) -> None:
    job = _minimal()
    job["spec"].update(copy.deepcopy(change))
    admission.default_and_prune(job)
    errors = admission.errors(job)
    assert any(expected in e for e in errors), errors


def test_long_names_are_rejected(admission: SchemaAdmission) -> None:
    job = _minimal()
    job["metadata"]["name"] = "x" * 59
    admission.default_and_prune(job)
    assert any("at most 58 characters" in e for e in admission.errors(job))


@pytest.mark.parametrize(
    "old_spec,new_spec,expected",
    [
        ({"replicas": 2}, {"replicas": 3}, "can change only when spec.maxReplicas is set"),
        ({"replicas": 2, "maxReplicas": 4}, {"replicas": 2, "maxReplicas": 3}, "spec.maxReplicas is immutable"),
        ({"replicas": 2, "minReplicas": 1, "maxReplicas": 4}, {"replicas": 2, "minReplicas": 2, "maxReplicas": 4}, "spec.minReplicas is immutable"),
    ],
)
def test_transition_rules_pin_the_torchrun_node_range(
    old_spec: dict, new_spec: dict, expected: str, admission: SchemaAdmission
) -> None:
    old, new = _minimal(), _minimal()
    for job, spec in ((old, old_spec), (new, new_spec)):
        job["spec"].pop("maxReplicas", None)
        job["spec"].update(spec)
    admission.default_and_prune(old)
    admission.default_and_prune(new)
    assert admission.errors(old) == []
    assert any(expected in e for e in admission.errors(new, old)), admission.errors(new, old)


def test_autolrs_may_change_until_the_job_has_started(admission: SchemaAdmission) -> None:
    old, new = _minimal(), _minimal()
    new["spec"]["autolrs"]["maxSteps"] = 6000
    for job in (old, new):
        admission.default_and_prune(job)
    assert admission.errors(new, old) == []  # never ran (e.g. fixing an InvalidSpec)
    old["status"] = {"phase": "Failed"}
    assert admission.errors(new, old) == []
    old["status"] = {"phase": "Running", "startTime": "2026-12-03T12:00:00Z"}
    assert any("spec.autolrs is immutable once the job has started" in e for e in admission.errors(new, old))
    new["spec"]["autolrs"]["maxSteps"] = 3000
    new["spec"]["replicas"] = 2  # other fields stay editable
    assert admission.errors(new, old) == []


def test_the_readmes_kubectl_scale_of_the_minimal_example_is_allowed(admission: SchemaAdmission) -> None:
    old, new = _minimal(), _minimal()
    new["spec"]["replicas"] = 2  # kubectl scale alj/digits-minimal --replicas=2
    for job in (old, new):
        admission.default_and_prune(job)
    assert admission.errors(old) == [] and admission.errors(new, old) == []
    new["spec"]["replicas"] = 3
    assert any("spec.replicas must be <= spec.maxReplicas" in e for e in admission.errors(new, old))


def test_scaling_within_the_range_is_allowed(admission: SchemaAdmission) -> None:
    old, new = _minimal(), _minimal()
    old["spec"].update(replicas=2, maxReplicas=4)
    new["spec"].update(replicas=4, maxReplicas=4)
    for job in (old, new):
        admission.default_and_prune(job)
    assert admission.errors(new, old) == []


def test_defaults_are_filled(admission: SchemaAdmission) -> None:
    job = _minimal()
    job["spec"]["autolrs"] = {"minLR": 0.001, "maxLR": 1.0}
    admission.default_and_prune(job)
    spec = job["spec"]
    assert (spec["replicas"], spec["minReplicas"], spec["nprocPerNode"]) == (1, 1, 1)
    assert (spec["backoffLimit"], spec["suspend"]) == (6, False)
    assert spec["autolrs"]["tau"] == 1000 and spec["autolrs"]["preset"] == "default"
