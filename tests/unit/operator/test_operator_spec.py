"""The operator's own validation: one error naming the field, for what slips past the schema."""

from __future__ import annotations

from typing import Any

import pytest

from autolrs_operator.spec import SpecError, parse_spec, validate_job_name

VALID = {"image": "img", "command": ["train.py"], "autolrs": {"minLR": 0.01, "maxLR": 1.0}}


def _with(**changes: Any) -> dict[str, Any]:
    return {**VALID, **changes}


def test_defaults() -> None:
    spec = parse_spec(VALID)
    assert (spec.replicas, spec.min_replicas, spec.max_replicas, spec.nproc_per_node) == (1, 1, 1, 1)
    assert (spec.backoff_limit, spec.suspend, spec.checkpoint_path) == (6, False, "/checkpoints")
    assert spec.state_store is None and spec.checkpoint_claim is None


def test_max_replicas_defaults_to_replicas() -> None:
    spec = parse_spec(_with(replicas=3))
    assert (spec.min_replicas, spec.max_replicas) == (1, 3)


def test_pvc_name_is_an_alias_of_claim_name() -> None:
    assert parse_spec(_with(checkpoint={"pvcName": "ck"})).checkpoint_claim == "ck"


BAD = [
    ({"image": None}, "spec.image: is required"),
    ({"image": ""}, "spec.image: must be a non-empty string"),
    ({"command": None}, "spec.command: is required"),
    ({"command": "train.py"}, "spec.command: must be a list of strings"),
    ({"command": ["python", "train.py"]}, "spec.command[0]: give the training script"),
    ({"replicas": 0}, "spec.replicas: must be >= 1"),
    ({"replicas": True}, "spec.replicas: must be an integer"),
    ({"replicas": 1, "minReplicas": 2}, "spec.replicas: must be >= minReplicas (2)"),
    ({"replicas": 4, "maxReplicas": 3}, "spec.replicas: must be <= maxReplicas (3)"),
    ({"nprocPerNode": 1000}, "spec.nprocPerNode: must be in [1, 256]"),
    ({"resources": {"limit": {}}}, "spec.resources.limit: unknown field"),
    ({"autolrs": None}, "spec.autolrs: is required"),
    ({"autolrs": {"minLR": 1.0, "maxLR": 0.5}}, "spec.autolrs.minLR: min_lr must be > 0 and < max_lr"),
    ({"autolrs": {"minLR": 0.1, "maxLR": 1, "tau": 3}}, "spec.autolrs.tau: tau must be an integer >= 10"),
    ({"autolrs": {"minLR": 0.1, "maxLR": 1, "trialsPerStage": 0}}, "spec.autolrs.trialsPerStage:"),
    ({"autolrs": {"minLR": 0.1, "maxLR": 1, "bogus": 1}}, "spec.autolrs.bogus: unknown AutoLRS config field"),
    ({"autolrs": {"minLR": 0.1, "maxLR": 1, "lrScaling": "linear"}},
     "spec.autolrs.referenceBatchSize: reference_batch_size is required when lr_scaling is 'linear'"),
    ({"autolrs": {"minLR": 0.1, "maxLR": 1, "min_lr": 0.5}}, "spec.autolrs.minLR: AutoLRS config field 'minLR' is given twice"),
    ({"stateStore": {"url": "http://x"}}, "spec.stateStore.url: must start with redis://"),
    ({"stateStore": {}}, "spec.stateStore: needs url, secretRef, or both"),
    ({"stateStore": {"secretRef": {"name": "s"}}}, "spec.stateStore.secretRef.key: is required"),
    ({"checkpoint": {"claimName": "a", "pvcName": "b"}}, "spec.checkpoint: give claimName or pvcName, not both"),
    ({"checkpoint": {"path": "ck"}}, "spec.checkpoint.path: must be an absolute path"),
    ({"backoffLimit": -1}, "spec.backoffLimit: must be >= 0"),
    ({"suspend": "yes"}, "spec.suspend: must be true or false"),
    ({"podTemplate": {"affinity": {}}}, "spec.podTemplate.affinity: unknown field"),
    ({"podTemplate": {"env": [{"name": "AUTOLRS_JOB", "value": "x"}]}}, "spec.podTemplate.env[0].name: AUTOLRS_JOB is set by the operator"),
    ({"podTemplate": {"env": [{"value": "x"}]}}, "spec.podTemplate.env[0].name: is required"),
    ({"podTemplate": {"volumes": [{"name": "a"}, {"name": "a"}]}}, "spec.podTemplate.volumes[1].name: duplicate name"),
    ({"podTemplate": {"volumeMounts": [{"name": "x", "mountPath": "/x"}]}}, "spec.podTemplate.volumeMounts[0].name: no volume named 'x'"),
    ({"podTemplate": {"nodeSelector": {"gpu": 1}}}, "spec.podTemplate.nodeSelector.gpu: must be a string"),
]


@pytest.mark.parametrize("change,message", BAD, ids=[m for _, m in BAD])
def test_errors_name_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(_with(**change))
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["Demo", "9lives", "a" * 59, "has_underscore"])
def test_job_names_must_fit_the_service_name(name: str) -> None:
    with pytest.raises(SpecError, match=r"^metadata\.name: must be a DNS-1035 label"):
        validate_job_name(name)


def test_good_job_name() -> None:
    validate_job_name("resnet50-imagenet")
