"""Parse and validate an AutoLRSJob's spec: the operator's own check behind the schema's.

The schema rejects most bad input at the API server; this module catches what slips past
(an older CRD, a client that skips validation) so that the job gets a ``Failed`` /
``InvalidSpec`` condition naming the field instead of a crash loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from autolrs.config import CAMEL_NAMES, AutoLRSConfig

from autolrs_operator.constants import DEFAULT_CHECKPOINT_PATH, RESERVED_ENV

MAX_JOB_NAME = 58  # "<name>-rdzv" must be a DNS-1035 label (63 characters)
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_STORE_SCHEMES = ("redis://", "rediss://", "file://")
_NOT_A_SCRIPT = ("python", "python3", "torchrun")


class SpecError(ValueError):
    """A spec field is invalid; the message starts with the field's path."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


@dataclass(frozen=True)
class SecretKey:
    """A key of a Secret in the job's namespace."""

    name: str
    key: str


@dataclass(frozen=True)
class StateStore:
    """Where the AutoLRS state lives: a URL, a Secret key, or both (the key holds the password)."""

    url: str | None = None
    secret: SecretKey | None = None


@dataclass(frozen=True)
class JobSpec:
    """A validated AutoLRSJob spec with every default filled in."""

    image: str
    command: list[str]
    args: list[str]
    replicas: int
    min_replicas: int
    max_replicas: int
    nproc_per_node: int
    resources: dict[str, Any]
    autolrs: dict[str, Any]
    state_store: StateStore | None
    checkpoint_claim: str | None
    checkpoint_path: str
    backoff_limit: int
    suspend: bool
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    env: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    volume_mounts: list[dict[str, Any]] = field(default_factory=list)
    service_account_name: str | None = None


def validate_job_name(name: str) -> None:
    """Raise SpecError unless ``name`` can name the job's Service and pods."""
    if len(name) > MAX_JOB_NAME or not _DNS_1035.match(name):
        raise SpecError(
            "metadata.name",
            f"must be a DNS-1035 label of at most {MAX_JOB_NAME} characters "
            f"(lowercase letters, digits, '-', starting with a letter), got {name!r}",
        )


def parse_spec(spec: Mapping[str, Any], *, default_store: StateStore | None = None) -> JobSpec:
    """Validate ``spec`` (a dict from the API) and return it typed, defaults filled in.

    ``default_store`` is the operator-wide state store used when the job names none.
    """
    if not isinstance(spec, Mapping):
        raise SpecError("spec", "must be an object")
    image = _string(spec, "image", required=True)
    command = _string_list(spec, "command", required=True)
    if command[0] in _NOT_A_SCRIPT:
        raise SpecError(
            "spec.command[0]",
            f"give the training script (e.g. train.py, or -m package.module), not "
            f"{command[0]!r}: the operator runs it under torchrun",
        )
    args = _string_list(spec, "args")
    replicas = _integer(spec, "replicas", default=1, minimum=1)
    min_replicas = _integer(spec, "minReplicas", default=1, minimum=1)
    max_replicas = _integer(spec, "maxReplicas", default=None, minimum=1)
    if min_replicas > replicas:
        raise SpecError("spec.replicas", f"must be >= minReplicas ({min_replicas}), got {replicas}")
    if max_replicas is None:
        max_replicas = replicas
    elif replicas > max_replicas:
        raise SpecError("spec.replicas", f"must be <= maxReplicas ({max_replicas}), got {replicas}")
    nproc = _integer(spec, "nprocPerNode", default=1, minimum=1, maximum=256)
    resources = _object(spec, "resources")
    for part in resources:
        if part not in ("limits", "requests"):
            raise SpecError(f"spec.resources.{part}", "unknown field; allowed: limits, requests")
    autolrs = _autolrs(spec.get("autolrs"))
    state_store = _state_store(spec.get("stateStore")) or default_store
    claim, path = _checkpoint(spec.get("checkpoint"))
    backoff_limit = _integer(spec, "backoffLimit", default=6, minimum=0)
    suspend = spec.get("suspend", False)
    if not isinstance(suspend, bool):
        raise SpecError("spec.suspend", f"must be true or false, got {suspend!r}")
    template = _object(spec, "podTemplate")
    return JobSpec(
        image=image,
        command=command,
        args=args,
        replicas=replicas,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        nproc_per_node=nproc,
        resources=dict(resources),
        autolrs=autolrs,
        state_store=state_store,
        checkpoint_claim=claim,
        checkpoint_path=path,
        backoff_limit=backoff_limit,
        suspend=suspend,
        **_pod_template(template),
    )


def _autolrs(raw: Any) -> dict[str, Any]:
    if raw is None:
        raise SpecError("spec.autolrs", "is required (at least minLR and maxLR)")
    if not isinstance(raw, Mapping):
        raise SpecError("spec.autolrs", "must be an object")
    try:
        AutoLRSConfig.from_dict(raw)
    except (ValueError, TypeError) as exc:
        raise SpecError(_autolrs_path(str(exc)), str(exc)) from None
    return dict(raw)


def _autolrs_path(message: str) -> str:
    """Map the trainer's snake_case field named in ``message`` to the spec's camelCase path."""
    quoted = re.search(r"field '([A-Za-z_]+)'", message)
    if quoted:
        return f"spec.autolrs.{quoted.group(1)}"
    first = re.match(r"([a-z_]+)\b", message)
    if first and first.group(1) in CAMEL_NAMES:
        return f"spec.autolrs.{CAMEL_NAMES[first.group(1)]}"
    return "spec.autolrs"


def _state_store(raw: Any) -> StateStore | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise SpecError("spec.stateStore", "must be an object with url and/or secretRef")
    url = _string(raw, "url", path="spec.stateStore.url")
    if url is not None and not url.startswith(_STORE_SCHEMES):
        raise SpecError(
            "spec.stateStore.url", f"must start with redis://, rediss:// or file://, got {url!r}"
        )
    secret = None
    if raw.get("secretRef") is not None:
        ref = raw["secretRef"]
        if not isinstance(ref, Mapping):
            raise SpecError("spec.stateStore.secretRef", "must be an object with name and key")
        secret = SecretKey(
            name=_string(ref, "name", required=True, path="spec.stateStore.secretRef.name"),
            key=_string(ref, "key", required=True, path="spec.stateStore.secretRef.key"),
        )
    if url is None and secret is None:
        raise SpecError("spec.stateStore", "needs url, secretRef, or both")
    if url is not None and secret is not None and url.startswith("file://"):
        raise SpecError("spec.stateStore.secretRef", "a password makes no sense for a file:// store")
    return StateStore(url=url, secret=secret)


def _checkpoint(raw: Any) -> tuple[str | None, str]:
    if raw is None:
        return None, DEFAULT_CHECKPOINT_PATH
    if not isinstance(raw, Mapping):
        raise SpecError("spec.checkpoint", "must be an object with claimName and path")
    claim = _string(raw, "claimName", path="spec.checkpoint.claimName")
    alias = _string(raw, "pvcName", path="spec.checkpoint.pvcName")
    if claim is not None and alias is not None:
        raise SpecError("spec.checkpoint", "give claimName or pvcName, not both")
    path = _string(raw, "path", path="spec.checkpoint.path") or DEFAULT_CHECKPOINT_PATH
    if not path.startswith("/"):
        raise SpecError("spec.checkpoint.path", f"must be an absolute path, got {path!r}")
    return claim or alias, path


def _pod_template(raw: Mapping[str, Any]) -> dict[str, Any]:
    allowed = ("nodeSelector", "tolerations", "env", "volumes", "volumeMounts", "serviceAccountName")
    for key in raw:
        if key not in allowed:
            raise SpecError(f"spec.podTemplate.{key}", f"unknown field; allowed: {', '.join(allowed)}")
    node_selector = _object(raw, "nodeSelector", path="spec.podTemplate.nodeSelector")
    for key, value in node_selector.items():
        if not isinstance(value, str):
            raise SpecError(f"spec.podTemplate.nodeSelector.{key}", f"must be a string, got {value!r}")
    env = _named_list(raw, "env")
    for index, item in enumerate(env):
        if item["name"] in RESERVED_ENV:
            raise SpecError(
                f"spec.podTemplate.env[{index}].name",
                f"{item['name']} is set by the operator; reserved: {', '.join(sorted(RESERVED_ENV))}",
            )
    volumes = _named_list(raw, "volumes")
    mounts = _named_list(raw, "volumeMounts")
    volume_names = {v["name"] for v in volumes}
    for index, mount in enumerate(mounts):
        if not isinstance(mount.get("mountPath"), str) or not mount["mountPath"].startswith("/"):
            raise SpecError(
                f"spec.podTemplate.volumeMounts[{index}].mountPath", "must be an absolute path"
            )
        if mount["name"] not in volume_names:
            raise SpecError(
                f"spec.podTemplate.volumeMounts[{index}].name",
                f"no volume named {mount['name']!r} in spec.podTemplate.volumes",
            )
    tolerations = raw.get("tolerations") or []
    if not isinstance(tolerations, list) or not all(isinstance(t, Mapping) for t in tolerations):
        raise SpecError("spec.podTemplate.tolerations", "must be a list of objects")
    return {
        "node_selector": dict(node_selector),
        "tolerations": [dict(t) for t in tolerations],
        "env": env,
        "volumes": volumes,
        "volume_mounts": mounts,
        "service_account_name": _string(
            raw, "serviceAccountName", path="spec.podTemplate.serviceAccountName"
        ),
    }


def _named_list(raw: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    items = raw.get(key) or []
    path = f"spec.podTemplate.{key}"
    if not isinstance(items, list):
        raise SpecError(path, "must be a list of objects")
    seen: set[str] = set()
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) or not item["name"]:
            raise SpecError(f"{path}[{index}].name", "is required (a non-empty string)")
        if key != "volumeMounts" and item["name"] in seen:
            raise SpecError(f"{path}[{index}].name", f"duplicate name {item['name']!r}")
        seen.add(item["name"])
        out.append(dict(item))
    return out


def _string(
    raw: Mapping[str, Any], key: str, *, required: bool = False, path: str | None = None
) -> Any:
    path = path or f"spec.{key}"
    value = raw.get(key)
    if value is None:
        if required:
            raise SpecError(path, "is required")
        return None
    if not isinstance(value, str) or not value:
        raise SpecError(path, f"must be a non-empty string, got {value!r}")
    return value


def _string_list(raw: Mapping[str, Any], key: str, *, required: bool = False) -> list[str]:
    value = raw.get(key)
    if value is None or value == []:
        if required:
            raise SpecError(f"spec.{key}", "is required (a non-empty list of strings)")
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"spec.{key}", f"must be a list of strings, got {value!r}")
    return list(value)


def _integer(
    raw: Mapping[str, Any],
    key: str,
    *,
    default: int | None,
    minimum: int,
    maximum: int | None = None,
) -> Any:
    value = raw.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"spec.{key}", f"must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise SpecError(f"spec.{key}", f"must be {allowed}, got {value}")
    return value


def _object(raw: Mapping[str, Any], key: str, *, path: str | None = None) -> Mapping[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(path or f"spec.{key}", f"must be an object, got {value!r}")
    return value
