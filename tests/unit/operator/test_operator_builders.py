"""Builders: the Service and worker Pods an AutoLRSJob becomes."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any, Callable

import kubernetes_validate
import pytest

from autolrs_operator.builders import (
    build_service, build_worker_pod, operator_store_url, spec_field, url_with_password,
)
from autolrs_operator.spec import SecretKey, StateStore, parse_spec

K8S_VERSION = "1.32"


def _env(pod: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["spec"]["containers"][0]["env"]}


@pytest.fixture
def job(make_job: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    return make_job(
        nprocPerNode=4,
        resources={"limits": {"nvidia.com/gpu": 4, "memory": "64Gi"}},
        stateStore={"url": "redis://redis.ml.svc:6379/0"},
        checkpoint={"claimName": "ckpt", "path": "/ckpt"},
        backoffLimit=3,
        podTemplate={
            "nodeSelector": {"gpu": "h100"},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "env": [{"name": "NCCL_DEBUG", "value": "WARN"}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            "serviceAccountName": "trainer",
        },
    )


def test_service_is_headless_owned_and_labelled(job: dict[str, Any]) -> None:
    service = build_service(job)
    kubernetes_validate.validate(service, K8S_VERSION, strict=True)
    assert service["metadata"]["name"] == "demo-rdzv"
    assert service["metadata"]["namespace"] == "ns"
    assert service["metadata"]["labels"] == {"autolrs.io/job": "demo", "autolrs.io/role": "rendezvous"}
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"]
    assert service["spec"]["selector"]["autolrs.io/worker-index"] == "0"
    assert service["spec"]["ports"][0]["port"] == 29400
    [owner] = service["metadata"]["ownerReferences"]
    assert owner == {"apiVersion": "autolrs.io/v1alpha1", "kind": "AutoLRSJob", "name": "demo",
                     "uid": "uid-demo", "controller": True, "blockOwnerDeletion": True}


@pytest.mark.parametrize("index", [0, 1])
def test_worker_pods_validate_against_kubernetes(job: dict[str, Any], index: int) -> None:
    pod = build_worker_pod(job, parse_spec(job["spec"]), index)
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    assert pod["metadata"]["name"] == f"demo-worker-{index}"
    assert pod["metadata"]["labels"]["autolrs.io/role"] == "worker"
    assert pod["metadata"]["labels"]["autolrs.io/job"] == "demo"
    assert pod["metadata"]["labels"]["autolrs.io/worker-index"] == str(index)
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "uid-demo"


def test_workers_run_elastic_torchrun_through_the_headless_service(job: dict[str, Any]) -> None:
    spec = parse_spec(job["spec"])
    host, other = (build_worker_pod(job, spec, i)["spec"]["containers"][0]["command"] for i in (0, 1))
    assert host[:9] == [
        "torchrun", "--nnodes=1:3", "--nproc-per-node=4", "--rdzv-backend=c10d",
        "--rdzv-endpoint=demo-rdzv.ns.svc:29400", "--rdzv-id=uid-demo", "--rdzv-conf=is_host=1",
        "--max-restarts=3", "--local-addr=$(POD_IP)",
    ]
    assert host[-1] == "examples/digits_cnn.py"
    assert "--rdzv-conf=is_host=0" in other


def test_user_args_follow_the_command(make_job: Callable[..., dict[str, Any]]) -> None:
    job = make_job(command=["-m", "pkg.train"], args=["--epochs", "3"])
    command = build_worker_pod(job, parse_spec(job["spec"]), 0)["spec"]["containers"][0]["command"]
    assert command[-4:] == ["-m", "pkg.train", "--epochs", "3"]


def test_env_contract(job: dict[str, Any]) -> None:
    env = _env(build_worker_pod(job, parse_spec(job["spec"]), 0))
    assert env["AUTOLRS_JOB"] == "ns/demo"
    assert env["AUTOLRS_JOB_UID"] == "uid-demo"
    assert json.loads(env["AUTOLRS_CONFIG"]) == {"minLR": 0.001, "maxLR": 1.0}
    assert env["AUTOLRS_STORE_URL"] == "redis://redis.ml.svc:6379/0"
    assert env["AUTOLRS_CHECKPOINT_DIR"] == "/ckpt"
    assert env["AUTOLRS_METRICS_PORT"] == "9400"
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["NCCL_DEBUG"] == "WARN"


def test_resources_volumes_and_pod_template(job: dict[str, Any]) -> None:
    pod = build_worker_pod(job, parse_spec(job["spec"]), 0)
    container = pod["spec"]["containers"][0]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": 4, "memory": "64Gi"}}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["checkpoints"]["persistentVolumeClaim"] == {"claimName": "ckpt"}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory"}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "data"}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"checkpoints": "/ckpt", "dshm": "/dev/shm", "data": "/data"}
    assert pod["spec"]["nodeSelector"] == {"gpu": "h100"}
    assert pod["spec"]["tolerations"][0]["key"] == "gpu"
    assert pod["spec"]["serviceAccountName"] == "trainer"
    assert pod["spec"]["restartPolicy"] == "Never"
    assert [p["name"] for p in container["ports"]] == ["c10d", "metrics"]


def test_pods_are_restricted_and_non_root(job: dict[str, Any]) -> None:
    pod = build_worker_pod(job, parse_spec(job["spec"]), 0)
    pod_security = pod["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] > 0
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["spec"]["containers"][0]["securityContext"]
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}


def test_without_store_or_claim_state_goes_to_the_checkpoint_dir(make_job: Callable[..., dict[str, Any]]) -> None:
    job = make_job()
    pod = build_worker_pod(job, parse_spec(job["spec"]), 0)
    assert _env(pod)["AUTOLRS_STORE_URL"] == "file:///checkpoints/autolrs-state"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["checkpoints"] == {"name": "checkpoints", "emptyDir": {}}


def test_secret_holding_the_whole_url(make_job: Callable[..., dict[str, Any]]) -> None:
    job = make_job(stateStore={"secretRef": {"name": "redis", "key": "url"}})
    env = _env(build_worker_pod(job, parse_spec(job["spec"]), 0))
    assert env["AUTOLRS_STORE_URL"] == {"secretKeyRef": {"name": "redis", "key": "url"}}


def test_secret_holding_the_password_travels_apart_from_the_url(make_job: Callable[..., dict[str, Any]]) -> None:
    job = make_job(stateStore={"url": "redis://redis:6379/1", "secretRef": {"name": "redis", "key": "password"}})
    pod = build_worker_pod(job, parse_spec(job["spec"]), 0)
    env = _env(pod)
    assert env["AUTOLRS_STORE_PASSWORD"] == {"secretKeyRef": {"name": "redis", "key": "password"}}
    assert env["AUTOLRS_STORE_URL"] == "redis://redis:6379/1"  # the trainer adds the password


def test_default_store_applies_when_the_job_names_none(make_job: Callable[..., dict[str, Any]]) -> None:
    job = make_job()
    store = StateStore(url="redis://shared:6379/0")
    env = _env(build_worker_pod(job, parse_spec(job["spec"], default_store=store), 0))
    assert env["AUTOLRS_STORE_URL"] == "redis://shared:6379/0"


@pytest.mark.parametrize(
    "url,expected",
    [
        ("redis://r:6379/0", "redis://:PW@r:6379/0"),
        ("redis://user@r:6379/0", "redis://user:PW@r:6379/0"),
        ("rediss://user:old@r/0", "rediss://user:PW@r/0"),
        ("redis://:PW@r/0", "redis://:PW@r/0"),
        ("redis://:old@r/0?socket_timeout=2#x", "redis://:PW@r/0?socket_timeout=2#x"),
        ("redis://u:p%40ss@r:6379", "redis://u:PW@r:6379"),
        ("redis://PW.ns.svc:6379/0", "redis://:PW@PW.ns.svc:6379/0"),  # the host is not the password
        ("redis://r/0?password=PW", "redis://:PW@r/0?password=PW"),
    ],
)
def test_url_with_password(url: str, expected: str) -> None:
    assert url_with_password(url, "PW") == expected


@pytest.mark.parametrize("password", ["svc", "6379", "redis", "ns", "0", "/", ":"])
def test_a_password_that_is_part_of_the_url_is_still_injected(password: str) -> None:
    """The password once went missing whenever its text occurred anywhere in the URL."""
    store = StateStore(url="redis://redis.ns.svc:6379/0", secret=SecretKey("s", "k"))
    url = operator_store_url(store, password)
    assert url == f"redis://:{urllib.parse.quote(password, safe='')}@redis.ns.svc:6379/0"
    parsed = urllib.parse.urlsplit(url)
    assert (urllib.parse.unquote(parsed.password), parsed.hostname, parsed.port) == (password, "redis.ns.svc", 6379)


def test_operator_store_url() -> None:
    secret = SecretKey("s", "k")
    assert operator_store_url(None, None) is None
    assert operator_store_url(StateStore(url="redis://r/0"), None) == "redis://r/0"
    assert operator_store_url(StateStore(secret=secret), "redis://x/1") == "redis://x/1"
    assert operator_store_url(StateStore(url="redis://r/0", secret=secret), "p@ss") == "redis://:p%40ss@r/0"
    assert operator_store_url(StateStore(url="redis://r/0", secret=secret), None) is None
    with_placeholder = StateStore(url="redis://u:$(AUTOLRS_STORE_PASSWORD)@r/0", secret=secret)
    assert operator_store_url(with_placeholder, "pw") == "redis://u:pw@r/0"


def test_owner_labels_never_override_ours(make_job: Callable[..., dict[str, Any]]) -> None:
    job = make_job()
    job["metadata"]["labels"] = {"autolrs.io/role": "oops", "team": "vision"}
    pod = build_worker_pod(job, parse_spec(job["spec"]), 0)
    assert pod["metadata"]["labels"]["autolrs.io/role"] == "worker"
    assert pod["metadata"]["labels"]["team"] == "vision"


def test_spec_field_maps_pod_fields_to_the_job_fields_they_come_from(job: dict[str, Any]) -> None:
    spec = parse_spec(job["spec"])
    pod = build_worker_pod(job, spec, 0)
    volumes = [v["name"] for v in pod["spec"]["volumes"]]
    mounts = [m["name"] for m in pod["spec"]["containers"][0]["volumeMounts"]]
    env = [e["name"] for e in pod["spec"]["containers"][0]["env"]]
    data, data_mount, nccl = volumes.index("data"), mounts.index("data"), env.index("NCCL_DEBUG")
    assert spec_field(pod, spec, f"spec.volumes[{data}].persistentVolumeClaim.claimName") == \
        "spec.podTemplate.volumes[0].persistentVolumeClaim.claimName"
    assert spec_field(pod, spec, f"spec.containers[0].volumeMounts[{data_mount}].mountPath") == \
        "spec.podTemplate.volumeMounts[0].mountPath"
    assert spec_field(pod, spec, f"spec.containers[0].env[{nccl}].valueFrom") == "spec.podTemplate.env[0].valueFrom"
    assert spec_field(pod, spec, "spec.tolerations[0].operator") == "spec.podTemplate.tolerations[0].operator"
    assert spec_field(pod, spec, "spec.nodeSelector") == "spec.podTemplate.nodeSelector"
    assert spec_field(pod, spec, "spec.serviceAccountName") == "spec.podTemplate.serviceAccountName"
    assert spec_field(pod, spec, "spec.containers[0].resources.limits[memory]") == "spec.resources.limits[memory]"
    assert spec_field(pod, spec, "spec.containers[0].image") == "spec.image"
    # the operator's own parts (and fields outside the pod) name no job field
    assert spec_field(pod, spec, "spec.volumes[0].name") is None
    assert spec_field(pod, spec, "spec.containers[0].env[0].valueFrom") is None
    assert spec_field(pod, spec, f"spec.volumes[{len(volumes)}]") is None
    assert spec_field(pod, spec, "spec.containers[0].securityContext.runAsNonRoot") is None
    assert spec_field(pod, spec, "spec.imagePullSecrets") is None
