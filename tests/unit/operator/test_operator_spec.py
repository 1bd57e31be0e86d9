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
    # store URLs redis-py would misread or fail on later (ValueError/TypeError in the operator and workers)
    ({"stateStore": {"url": "redis://r:notaport"}},
     "spec.stateStore.url: has port 'notaport'; the port must be an integer in [1, 65535]"),
    ({"stateStore": {"url": "redis://r:0/0"}}, "spec.stateStore.url: has port '0'; the port must be an integer in [1, 65535]"),
    ({"stateStore": {"url": "redis://r:65536"}}, "spec.stateStore.url: has port '65536'"),
    ({"stateStore": {"url": "redis://"}}, "spec.stateStore.url: needs a host, e.g. redis://redis:6379/0"),
    ({"stateStore": {"url": "rediss://:pw@/0"}}, "spec.stateStore.url: needs a host, e.g. rediss://redis:6379/0"),
    ({"stateStore": {"url": "redis://[::1/0"}}, "spec.stateStore.url: is not a valid URL (Invalid IPv6 URL)"),
    ({"stateStore": {"url": "redis://r:6379/x"}},
     "spec.stateStore.url: has path '/x'; the path must be a database number, e.g. redis://redis:6379/0"),
    ({"stateStore": {"url": "redis://r:6379/0#x"}}, "spec.stateStore.url: must not have a #fragment"),
    ({"stateStore": {"url": "redis://r/0?db=x"}}, "spec.stateStore.url: is refused by redis-py: Invalid value for 'db'"),
    ({"stateStore": {"url": "redis://r/0?foo=1"}},
     "spec.stateStore.url: has query option 'foo', which redis-py does not accept for redis://"),
    ({"stateStore": {"url": "redis://r/0?ssl_cert_reqs=none"}},
     "spec.stateStore.url: has query option 'ssl_cert_reqs', which redis-py does not accept for redis://"),
    ({"stateStore": {"url": "file://"}}, "spec.stateStore.url: needs a path, e.g. file:///checkpoints/autolrs-state"),
    # the operator's own volumes and mount paths: the API server would refuse the pods
    ({"podTemplate": {"volumes": [{"name": "data"}, {"name": "dshm"}]}},
     "spec.podTemplate.volumes[1].name: dshm is a volume of the operator; reserved: checkpoints, dshm"),
    ({"podTemplate": {"volumes": [{"name": "checkpoints"}]}},
     "spec.podTemplate.volumes[0].name: checkpoints is a volume of the operator; reserved: checkpoints, dshm"),
    ({"podTemplate": {"volumes": [{"name": "d"}], "volumeMounts": [{"name": "d", "mountPath": "/dev/shm"}]}},
     "spec.podTemplate.volumeMounts[0].mountPath: /dev/shm is already the mount path of shared memory"),
    ({"podTemplate": {"volumes": [{"name": "d"}], "volumeMounts": [{"name": "d", "mountPath": "//dev/shm/"}]}},
     "spec.podTemplate.volumeMounts[0].mountPath: //dev/shm/ is already the mount path of shared memory"),
    ({"podTemplate": {"volumes": [{"name": "d"}], "volumeMounts": [{"name": "d", "mountPath": "/checkpoints"}]}},
     "spec.podTemplate.volumeMounts[0].mountPath: /checkpoints is already the mount path of the checkpoint "
     "volume (spec.checkpoint.path)"),
    ({"checkpoint": {"path": "/ckpt"},
      "podTemplate": {"volumes": [{"name": "d"}], "volumeMounts": [{"name": "d", "mountPath": "/ckpt/"}]}},
     "spec.podTemplate.volumeMounts[0].mountPath: /ckpt/ is already the mount path of the checkpoint volume"),
    ({"podTemplate": {"volumes": [{"name": "d"}], "volumeMounts": [
        {"name": "d", "mountPath": "/data", "subPath": "a"}, {"name": "d", "mountPath": "/data", "subPath": "b"}]}},
     "spec.podTemplate.volumeMounts[1].mountPath: /data is already the mount path of spec.podTemplate.volumeMounts[0]"),
    ({"checkpoint": {"path": "/dev/shm"}}, "spec.checkpoint.path: /dev/shm is the workers' shared memory"),
    # malformed lists are errors, never read as empty
    ({"podTemplate": {"tolerations": {}}}, "spec.podTemplate.tolerations: must be a list of objects, got {}"),
    ({"podTemplate": {"tolerations": 0}}, "spec.podTemplate.tolerations: must be a list of objects, got 0"),
    ({"podTemplate": {"tolerations": [{"key": "a"}, "b"]}}, "spec.podTemplate.tolerations[1]: must be an object, got 'b'"),
    ({"podTemplate": {"env": ""}}, "spec.podTemplate.env: must be a list of objects, got ''"),
    ({"podTemplate": {"env": ["A=1"]}}, "spec.podTemplate.env[0]: must be an object, got 'A=1'"),
    ({"podTemplate": {"volumes": False}}, "spec.podTemplate.volumes: must be a list of objects, got False"),
    ({"podTemplate": {"volumeMounts": {}}}, "spec.podTemplate.volumeMounts: must be a list of objects, got {}"),
]


@pytest.mark.parametrize("change,message", BAD, ids=[m for _, m in BAD])
def test_errors_name_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(_with(**change))
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://redis:6379/0", "redis://r", "redis://r/", "redis://r:/3", "rediss://user:p%40ss@r:6380/1",
        "redis://[::1]:6379/0", "redis://u:$(AUTOLRS_STORE_PASSWORD)@r:6379/0",
        "redis://r/0?socket_timeout=2", "rediss://r/0?ssl_cert_reqs=none", "file:///state", "file://run/state",
    ],
)
def test_good_store_urls(url: str) -> None:
    assert parse_spec(_with(stateStore={"url": url})).state_store.url == url


def test_empty_or_absent_pod_template_lists_and_nested_mounts_are_fine() -> None:
    template = {"tolerations": [], "env": None, "volumes": [{"name": "d", "emptyDir": {}}],
                "volumeMounts": [{"name": "d", "mountPath": "/checkpoints/data"},
                                 {"name": "d", "mountPath": "/dev/shm2"}]}
    spec = parse_spec(_with(podTemplate=template))
    assert (spec.tolerations, spec.env) == ([], [])
    assert [m["mountPath"] for m in spec.volume_mounts] == ["/checkpoints/data", "/dev/shm2"]


@pytest.mark.parametrize("name", ["Demo", "9lives", "a" * 59, "has_underscore"])
def test_job_names_must_fit_the_service_name(name: str) -> None:
    with pytest.raises(SpecError, match=r"^metadata\.name: must be a DNS-1035 label"):
        validate_job_name(name)


def test_good_job_name() -> None:
    validate_job_name("resnet50-imagenet")


class _Secrets:
    """KubeApi.read_secret_key over a dict (the one call store_url_for makes)."""

    def __init__(self, values: dict[tuple[str, str], str]) -> None:
        self.values = values

    def read_secret_key(self, namespace: str, name: str, key: str) -> str | None:
        return self.values.get((name, key))


def test_the_status_timer_never_gets_a_url_redis_py_cannot_parse(caplog: pytest.LogCaptureFixture) -> None:
    """store_url_for feeds heartbeat.connect, where such a URL raised ValueError on every tick."""
    from autolrs_operator.controller import store_url_for
    from autolrs_operator.settings import OperatorSettings

    settings = OperatorSettings()
    secrets = _Secrets({("whole", "url"): "redis://r:notaport/0", ("pw", "password"): "p@ss:/#"})
    assert store_url_for(secrets, settings, "ns", _with(stateStore={"url": "redis://r:notaport"})) is None  # type: ignore[arg-type]
    assert store_url_for(secrets, settings, "ns", _with(stateStore={"url": "redis://r:6379/0"})) == "redis://r:6379/0"  # type: ignore[arg-type]
    with_password = _with(stateStore={"url": "redis://r:6379/0", "secretRef": {"name": "pw", "key": "password"}})
    assert store_url_for(secrets, settings, "ns", with_password) == "redis://:p%40ss%3A%2F%23@r:6379/0"  # type: ignore[arg-type]
    whole = _with(stateStore={"secretRef": {"name": "whole", "key": "url"}})
    for _ in range(3):
        assert store_url_for(secrets, settings, "ns", whole) is None  # type: ignore[arg-type]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["the state store URL of Secret ns/whole (key url) has port 'notaport'; "
                        "the port must be an integer in [1, 65535]"]  # once, not every tick
