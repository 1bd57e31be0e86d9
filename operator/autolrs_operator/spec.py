"""Parse and validate an AutoLRSJob's spec: the operator's own check behind the schema's.

The schema rejects most bad input at the API server; this module catches what slips past
(an older CRD, a client that skips validation) so that the job gets a ``Failed`` /
``InvalidSpec`` condition naming the field instead of a crash loop.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Mapping

import redis
from autolrs.config import CAMEL_NAMES, AutoLRSConfig

from autolrs_operator.constants import (
    DEFAULT_CHECKPOINT_PATH, RESERVED_ENV, RESERVED_VOLUMES, SHM_PATH,
)

MAX_JOB_NAME = 58  # "<name>-rdzv" must be a DNS-1035 label (63 characters)
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_STORE_SCHEMES = ("redis://", "rediss://", "file://")
_REDIS_DB_PATH = re.compile(r"(/[0-9]*)?")
_UNKNOWN_KEYWORD = re.compile(r"unexpected keyword argument '([^']+)'")
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
        **_pod_template(template, path),
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
    problem = None if url is None else store_url_problem(url)
    if problem is not None:
        raise SpecError("spec.stateStore.url", problem)
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


def store_url_problem(url: str) -> str | None:
    """Why ``url`` cannot name a state store (text to follow the field's name), or None.

    A URL that passes is one the trainer and redis-py both read as written: redis-py would
    otherwise take ``redis://`` for localhost, drop a port of 0 or a database path it cannot
    read, and fail only later (a ValueError or TypeError, never a retried connection error)
    on a bad port or query option.
    """
    if not url.startswith(_STORE_SCHEMES):
        return f"must start with redis://, rediss:// or file://, got {url!r}"
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed [IPv6] bracket
        return f"is not a valid URL ({exc})"
    if parts.scheme == "file":
        if not parts.netloc + parts.path:
            return "needs a path, e.g. file:///checkpoints/autolrs-state"
        return None
    host_port = parts.netloc.rpartition("@")[2]
    _, colon, port = host_port.rpartition("]")[2].partition(":")
    if not parts.hostname:
        return f"needs a host, e.g. {parts.scheme}://redis:6379/0"
    if colon and port and not (re.fullmatch(r"[0-9]{1,5}", port) and 1 <= int(port) <= 65535):
        return f"has port {port!r}; the port must be an integer in [1, 65535]"
    if not _REDIS_DB_PATH.fullmatch(parts.path):
        return (
            f"has path {parts.path!r}; the path must be a database number, "
            f"e.g. {parts.scheme}://redis:6379/0"
        )
    if parts.fragment:
        return f"must not have a #fragment, got {'#' + parts.fragment!r}"
    try:  # redis-py's own reading of the query options, as the trainer's client makes it
        pool = redis.ConnectionPool.from_url(url)
        pool.make_connection()
        pool.disconnect()
    except (TypeError, ValueError, redis.RedisError) as exc:
        unknown = _UNKNOWN_KEYWORD.search(str(exc))
        if unknown:
            return f"has query option {unknown.group(1)!r}, which redis-py does not accept for {parts.scheme}://"
        return f"is refused by redis-py: {' '.join(str(exc).split())}"
    return None


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
    if _same_path(path, SHM_PATH):
        raise SpecError("spec.checkpoint.path", f"{SHM_PATH} is the workers' shared memory; give another path")
    return claim or alias, path


def _same_path(a: str, b: str) -> bool:
    """Whether two absolute paths name the same mount point (``/a//b/`` is ``/a/b``)."""
    return re.sub("/+", "/", a).rstrip("/") == re.sub("/+", "/", b).rstrip("/")


def _pod_template(raw: Mapping[str, Any], checkpoint_path: str) -> dict[str, Any]:
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
    for index, volume in enumerate(volumes):
        if volume["name"] in RESERVED_VOLUMES:
            raise SpecError(
                f"spec.podTemplate.volumes[{index}].name",
                f"{volume['name']} is a volume of the operator; reserved: {', '.join(sorted(RESERVED_VOLUMES))}",
            )
    mounts = _named_list(raw, "volumeMounts")
    volume_names = {v["name"] for v in volumes}
    taken = {checkpoint_path: "the checkpoint volume (spec.checkpoint.path)", SHM_PATH: "shared memory"}
    for index, mount in enumerate(mounts):
        where = f"spec.podTemplate.volumeMounts[{index}]"
        mount_path = mount.get("mountPath")
        if not isinstance(mount_path, str) or not mount_path.startswith("/"):
            raise SpecError(f"{where}.mountPath", "must be an absolute path")
        if mount["name"] not in volume_names:
            raise SpecError(f"{where}.name", f"no volume named {mount['name']!r} in spec.podTemplate.volumes")
        user = next((what for path, what in taken.items() if _same_path(path, mount_path)), None)
        if user is not None:
            raise SpecError(f"{where}.mountPath", f"{mount_path} is already the mount path of {user}")
        taken[mount_path] = f"spec.podTemplate.volumeMounts[{index}]"
    tolerations = _object_list(raw, "tolerations")
    return {
        "node_selector": dict(node_selector),
        "tolerations": tolerations,
        "env": env,
        "volumes": volumes,
        "volume_mounts": mounts,
        "service_account_name": _string(
            raw, "serviceAccountName", path="spec.podTemplate.serviceAccountName"
        ),
    }


def _object_list(raw: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """``spec.podTemplate.<key>``: absent (None) is empty, anything but a list of objects is an error."""
    items = raw.get(key)
    path = f"spec.podTemplate.{key}"
    if items is None:
        return []
    if not isinstance(items, list):
        raise SpecError(path, f"must be a list of objects, got {items!r}")
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise SpecError(f"{path}[{index}]", f"must be an object, got {item!r}")
    return [dict(item) for item in items]


def _named_list(raw: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """A list of objects that each have a non-empty name (unique but for volumeMounts)."""
    items = _object_list(raw, key)
    path = f"spec.podTemplate.{key}"
    seen: set[str] = set()
    for index, item in enumerate(items):
        if not isinstance(item.get("name"), str) or not item["name"]:
            raise SpecError(f"{path}[{index}].name", "is required (a non-empty string)")
        if key != "volumeMounts" and item["name"] in seen:
            raise SpecError(f"{path}[{index}].name", f"duplicate name {item['name']!r}")
        seen.add(item["name"])
    return items


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
