"""Pure builders: an AutoLRSJob (body + validated spec) -> its headless Service and worker Pods.

Nothing here talks to the API; every function returns a fresh dict ready to create.
"""

from __future__ import annotations

import copy
import json
import re
import urllib.parse
from typing import Any, Mapping

import kopf

from autolrs_operator.constants import (
    CHECKPOINT_VOLUME,
    ENV_CHECKPOINT_DIR,
    ENV_CONFIG,
    ENV_JOB,
    ENV_JOB_UID,
    ENV_METRICS_PORT,
    ENV_POD_IP,
    ENV_STORE_PASSWORD,
    ENV_STORE_URL,
    LABEL_JOB,
    LABEL_ROLE,
    LABEL_WORKER_INDEX,
    NON_ROOT_UID,
    RDZV_PORT,
    ROLE_RENDEZVOUS,
    ROLE_WORKER,
    SHM_PATH,
    SHM_VOLUME,
    TRAINER_CONTAINER,
    TRAINER_METRICS_PORT,
    rendezvous_service_name,
    worker_pod_name,
)
from autolrs_operator.spec import JobSpec, StateStore

RDZV_HOST_INDEX = 0  # the worker that hosts torch's c10d rendezvous store
_AUTHORITY = re.compile(r"^(?P<scheme>[a-z]+://)(?P<authority>[^/?#]*)(?P<rest>.*)$", re.DOTALL)


def job_labels(job_name: str, role: str) -> dict[str, str]:
    """The labels every child of a job carries."""
    return {LABEL_JOB: job_name, LABEL_ROLE: role}


def rendezvous_endpoint(job_name: str, namespace: str) -> str:
    """host:port of the job's c10d rendezvous, through its headless Service."""
    return f"{rendezvous_service_name(job_name)}.{namespace}.svc:{RDZV_PORT}"


def build_service(job: Mapping[str, Any]) -> dict[str, Any]:
    """The job's headless rendezvous Service (it resolves to the store-hosting worker)."""
    name = job["metadata"]["name"]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": rendezvous_service_name(name),
            "labels": job_labels(name, ROLE_RENDEZVOUS),
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {
                **job_labels(name, ROLE_WORKER),
                LABEL_WORKER_INDEX: str(RDZV_HOST_INDEX),
            },
            "ports": [
                {"name": "c10d", "port": RDZV_PORT, "targetPort": RDZV_PORT, "protocol": "TCP"}
            ],
        },
    }
    return _adopt(service, job)


def torchrun_args(job: Mapping[str, Any], spec: JobSpec, index: int) -> list[str]:
    """The worker container's command line: torchrun (elastic, c10d) around the user's script."""
    meta = job["metadata"]
    is_host = 1 if index == RDZV_HOST_INDEX else 0
    return [
        "torchrun",
        f"--nnodes={spec.min_replicas}:{spec.max_replicas}",
        f"--nproc-per-node={spec.nproc_per_node}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={rendezvous_endpoint(meta['name'], meta['namespace'])}",
        f"--rdzv-id={meta['uid']}",
        f"--rdzv-conf=is_host={is_host}",
        f"--max-restarts={spec.backoff_limit}",
        f"--local-addr=$({ENV_POD_IP})",
        *spec.command,
        *spec.args,
    ]


def store_env(spec: JobSpec) -> list[dict[str, Any]]:
    """Env vars that give the trainer its state store URL (a Secret stays a secretKeyRef)."""
    store = spec.state_store
    if store is None:
        return [{"name": ENV_STORE_URL, "value": f"file://{spec.checkpoint_path}/autolrs-state"}]
    if store.secret is None:
        return [{"name": ENV_STORE_URL, "value": store.url}]
    secret_ref = {"secretKeyRef": {"name": store.secret.name, "key": store.secret.key}}
    if store.url is None:
        return [{"name": ENV_STORE_URL, "valueFrom": secret_ref}]
    # The password travels apart from the URL: the trainer passes it to Redis as it is, so
    # a password with @ / : # works (pasted into the URL by $(VAR) it broke the URL).
    return [
        {"name": ENV_STORE_PASSWORD, "valueFrom": secret_ref},
        {"name": ENV_STORE_URL, "value": store.url},
    ]


def url_with_password(url: str, password: str) -> str:
    """``url`` with ``password`` (inserted as given: encode it first) as its userinfo password.

    Any password the URL has is replaced and its user name kept; the URL is split where
    urllib splits it (the authority ends at the first ``/``, ``?`` or ``#``), never searched
    for the password's text.
    """
    match = _AUTHORITY.match(url)
    if match is None:
        raise ValueError(f"not a store URL: {url!r}")
    userinfo, at, host = match.group("authority").rpartition("@")
    user = userinfo.partition(":")[0] if at else ""
    return f"{match.group('scheme')}{user}:{password}@{host}{match.group('rest')}"


def worker_env(job: Mapping[str, Any], spec: JobSpec) -> list[dict[str, Any]]:
    """The env contract of a worker, then the user's extra env."""
    meta = job["metadata"]
    env: list[dict[str, Any]] = [
        {"name": ENV_POD_IP, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": ENV_JOB, "value": f"{meta['namespace']}/{meta['name']}"},
        {"name": ENV_JOB_UID, "value": meta["uid"]},
        {"name": ENV_CONFIG, "value": json.dumps(spec.autolrs, sort_keys=True)},
        *store_env(spec),
        {"name": ENV_CHECKPOINT_DIR, "value": spec.checkpoint_path},
        {"name": ENV_METRICS_PORT, "value": str(TRAINER_METRICS_PORT)},
    ]
    env.extend(copy.deepcopy(spec.env))
    return env


def build_worker_pod(job: Mapping[str, Any], spec: JobSpec, index: int) -> dict[str, Any]:
    """Worker pod ``index``: torchrun under a restricted, non-root security context."""
    name = job["metadata"]["name"]
    checkpoint_volume: dict[str, Any] = {"name": CHECKPOINT_VOLUME}
    if spec.checkpoint_claim:
        checkpoint_volume["persistentVolumeClaim"] = {"claimName": spec.checkpoint_claim}
    else:
        checkpoint_volume["emptyDir"] = {}
    container: dict[str, Any] = {
        "name": TRAINER_CONTAINER,
        "image": spec.image,
        "command": torchrun_args(job, spec, index),
        "env": worker_env(job, spec),
        "ports": [
            {"name": "c10d", "containerPort": RDZV_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": TRAINER_METRICS_PORT, "protocol": "TCP"},
        ],
        "volumeMounts": [
            {"name": CHECKPOINT_VOLUME, "mountPath": spec.checkpoint_path},
            {"name": SHM_VOLUME, "mountPath": SHM_PATH},
            *copy.deepcopy(spec.volume_mounts),
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if spec.resources:
        container["resources"] = copy.deepcopy(spec.resources)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": NON_ROOT_UID,
            "runAsGroup": NON_ROOT_UID,
            "fsGroup": NON_ROOT_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            checkpoint_volume,
            {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}},
            *copy.deepcopy(spec.volumes),
        ],
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = copy.deepcopy(spec.tolerations)
    if spec.service_account_name:
        pod_spec["serviceAccountName"] = spec.service_account_name
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": worker_pod_name(name, index),
            "labels": {**job_labels(name, ROLE_WORKER), LABEL_WORKER_INDEX: str(index)},
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(TRAINER_METRICS_PORT),
            },
        },
        "spec": pod_spec,
    }
    return _adopt(pod, job)


def spec_field(pod: Mapping[str, Any], spec: JobSpec, field: str) -> str | None:
    """The AutoLRSJob field behind ``field`` (as the API server names it, e.g.
    ``spec.volumes[2].name``) of a worker pod that build_worker_pod made from ``spec``;
    None for the operator's own parts of the pod."""
    pod_spec = pod.get("spec") or {}
    container = (pod_spec.get("containers") or [{}])[0]
    lists = {  # the user's items come after the operator's
        "spec.volumes": ("spec.podTemplate.volumes", pod_spec.get("volumes"), spec.volumes),
        "spec.containers[0].volumeMounts": (
            "spec.podTemplate.volumeMounts", container.get("volumeMounts"), spec.volume_mounts,
        ),
        "spec.containers[0].env": ("spec.podTemplate.env", container.get("env"), spec.env),
        "spec.tolerations": ("spec.podTemplate.tolerations", pod_spec.get("tolerations"), spec.tolerations),
    }
    for prefix, (target, built, given) in lists.items():
        match = re.fullmatch(re.escape(prefix) + r"\[(\d+)\](.*)", field, re.DOTALL)
        if match:
            index = int(match.group(1)) - (len(built or []) - len(given))
            return f"{target}[{index}]{match.group(2)}" if 0 <= index < len(given) else None
    fields = {
        "spec.nodeSelector": "spec.podTemplate.nodeSelector",
        "spec.serviceAccountName": "spec.podTemplate.serviceAccountName",
        "spec.containers[0].image": "spec.image",
        "spec.containers[0].resources": "spec.resources",
    }
    for prefix, target in fields.items():
        if field == prefix or field.startswith((prefix + ".", prefix + "[")):
            return target + field[len(prefix):]
    return None


def operator_store_url(store: StateStore | None, secret_value: str | None) -> str | None:
    """The Redis URL the operator itself uses, given the Secret's value when one is referenced."""
    if store is None:
        return None
    if store.secret is None:
        return store.url
    if secret_value is None:
        return None
    if store.url is None:
        return secret_value
    password = urllib.parse.quote(secret_value, safe="")
    placeholder = f"$({ENV_STORE_PASSWORD})"
    if placeholder in store.url:
        return store.url.replace(placeholder, password)
    return url_with_password(store.url, password)


def _adopt(obj: dict[str, Any], job: Mapping[str, Any]) -> dict[str, Any]:
    """Owner reference, namespace and the job's labels, as kopf.adopt sets them."""
    kopf.adopt(obj, owner=dict(job))  # copies the job's labels but never overwrites ours
    return obj
