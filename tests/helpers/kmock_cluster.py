"""A Kubernetes API for tests: KMock 0.8's emulator with the gaps that break kopf and kubectl filled.

``ClusterEmulator`` subclasses ``kmock.KubernetesEmulator`` and keeps KMock's HTTP server and
request parsing, but serves the resource API itself, the way kube-apiserver does:

- discovery with correct group versions, namespaces, subresources (status, scale -> Scale);
- create fills namespace, uid, resourceVersion, creationTimestamp, generation;
- list/watch with kinds, label and field selectors, ``resourceVersion`` resumption and
  ``timeoutSeconds``, streamed as ``application/json`` (kubectl needs it);
- merge, strategic-merge (as merge) and JSON patches (a failed ``test`` is 422), PUT,
  status and scale subresources, delete preconditions, finalizers;
- custom resources registered from a CRD (file or POST): defaults, pruning, OpenAPI schema
  validation and the CEL ``x-kubernetes-validations`` (evaluated with cel-python);
- a garbage collector that deletes dependents when their owners are gone.

No scheduler or kubelet: pods stay Pending until a test (or the e2e pod runner) patches
their status. ``ClusterRunner`` runs the emulator on a loopback port in a thread of its own
so that synchronous tests, the kubernetes client, kubectl and kopf can all talk to it.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import aiohttp.web
import celpy
import jsonpatch
import kmock
import kubernetes
import yaml
from openapi_schema_validator import OAS30Validator

ResourceKey = tuple[str, str, str]  # group, version, plural
ObjectKey = tuple[str | None, str]  # namespace, name


class ApiError(Exception):
    """An error the API answers with a Status object."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


@dataclass
class ResourceDef:
    """One served resource: names, scope, subresources and (for custom resources) the schema."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    subresources: tuple[str, ...] = ()
    schema: dict[str, Any] | None = None
    scale: dict[str, str] | None = None

    @property
    def key(self) -> ResourceKey:
        """(group, version, plural)."""
        return (self.group, self.version, self.plural)

    @property
    def api_version(self) -> str:
        """apiVersion of the objects."""
        return f"{self.group}/{self.version}" if self.group else self.version


CORE_RESOURCES = [
    ResourceDef("", "v1", "namespaces", "Namespace", False, "namespace", ["ns"], [], ("status",)),
    ResourceDef("", "v1", "pods", "Pod", True, "pod", ["po"], ["all"], ("status",)),
    ResourceDef("", "v1", "services", "Service", True, "service", ["svc"], ["all"], ("status",)),
    ResourceDef("", "v1", "secrets", "Secret", True, "secret"),
    ResourceDef("", "v1", "configmaps", "ConfigMap", True, "configmap", ["cm"]),
    ResourceDef("", "v1", "events", "Event", True, "event", ["ev"]),
    ResourceDef(
        "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
        False, "customresourcedefinition", ["crd", "crds"], [], ("status",),
    ),
]
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
_API_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)


def now_stamp() -> str:
    """Current time as Kubernetes writes it."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ClusterEmulator(kmock.KubernetesEmulator):
    """KMock's Kubernetes emulator with a resource API complete enough for kopf and kubectl."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.defs: dict[ResourceKey, ResourceDef] = {d.key: d for d in CORE_RESOURCES}
        self.store: dict[ResourceKey, dict[ObjectKey, dict[str, Any]]] = {}
        self.history: dict[ResourceKey, list[tuple[int, str, dict[str, Any]]]] = {}
        self.subscribers: dict[ResourceKey, set[asyncio.Queue]] = {}
        self.watch_counts: dict[str, int] = {}
        # (method, path?query) of every request, by the bearer token that made it: the
        # operator gets a token of its own, so its calls can be held against its RBAC.
        self.requests: dict[str, list[tuple[str, str]]] = {}
        self.validation = True
        self._rv = itertools.count(1)
        self._admissions: dict[ResourceKey, SchemaAdmission] = {}
        for namespace in ("default", "kube-system"):
            self._ensure_namespace(namespace)

    # ------------------------------------------------------------- registration

    def register_crd(self, crd: Mapping[str, Any]) -> ResourceDef:
        """Serve the custom resource a CRD defines (its storage version)."""
        spec = crd["spec"]
        names = spec["names"]
        version = next(v for v in spec["versions"] if v.get("storage", True))
        subresources = version.get("subresources") or {}
        definition = ResourceDef(
            group=spec["group"],
            version=version["name"],
            plural=names["plural"],
            kind=names["kind"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            singular=names.get("singular", names["kind"].lower()),
            short_names=list(names.get("shortNames") or []),
            categories=list(names.get("categories") or []),
            subresources=tuple(sorted(subresources)),
            schema=(version.get("schema") or {}).get("openAPIV3Schema"),
            scale=subresources.get("scale"),
        )
        self.defs[definition.key] = definition
        return definition

    # ------------------------------------------------------------- test access

    def list_objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Current objects of a resource (by plural), deep copies."""
        out = []
        for key, objects in self.store.items():
            if key[2] == plural:
                out += [copy.deepcopy(o) for (ns, _), o in objects.items() if namespace in (None, ns)]
        return out

    # ------------------------------------------------------------------ routing

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        path = request.url.path.rstrip("/") or "/"
        token = (request.headers.get("Authorization") or "").removeprefix("Bearer ")
        method = request.method.value.upper() if request.method else "GET"
        self.requests.setdefault(token, []).append(
            (method, path + (f"?{request.url.query_string}" if request.url.query_string else "")))
        try:
            discovery = self._discovery(path, request.method.value if request.method else "GET")
            if discovery is not None:
                return aiohttp.web.json_response(discovery)
            match = _API_PATH.match(path)
            if match is None:
                raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
            return await self._serve_resource(request, match)
        except ApiError as exc:
            return _status_response(exc)

    async def _serve_resource(self, request: kmock.Request, match: re.Match) -> aiohttp.web.StreamResponse:
        group = match["group"] or ""
        version = match["core"] or match["version"]
        rdef = self.defs.get((group, version, match["plural"]))
        if rdef is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({match['plural']})")
        namespace, name, sub = match["ns"], match["name"], match["sub"]
        if not rdef.namespaced and namespace is not None:
            raise ApiError(404, "NotFound", f"{rdef.plural} is not namespaced")
        if rdef.namespaced is False:
            namespace = None
        if sub is not None and sub not in rdef.subresources:
            raise ApiError(404, "NotFound", f"{rdef.plural} has no subresource {sub!r}")
        method = request.method.value.upper()
        params = dict(request.params)
        if method == "GET" and params.get("watch") in ("true", "1"):
            return await self._watch(request, rdef, namespace, name, params)
        if method == "GET" and name is None:
            return aiohttp.web.json_response(self._list(rdef, namespace, params))
        if method == "GET":
            return aiohttp.web.json_response(self._get(rdef, namespace, name, sub))
        body = _parse_body(request)
        if method == "POST" and name is None:
            return aiohttp.web.json_response(self.create_object(rdef, namespace, body), status=201)
        if method == "PATCH" and name is not None:
            content_type = request.headers.get("Content-Type", "application/json").split(";")[0]
            return aiohttp.web.json_response(self._patch(rdef, namespace, name, sub, body, content_type))
        if method == "PUT" and name is not None:
            return aiohttp.web.json_response(self._replace(rdef, namespace, name, sub, body))
        if method == "DELETE" and name is not None:
            return aiohttp.web.json_response(self.delete_object(rdef, namespace, name, body or {}))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {request.url.path}")

    # ---------------------------------------------------------------- discovery

    def _discovery(self, path: str, method: str) -> dict[str, Any] | None:
        if method != "GET":
            return None
        if path == "/version":
            return {"major": "1", "minor": "32", "gitVersion": "v1.32.0-kmock", "platform": "linux/amd64"}
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
        if path == "/apis":
            groups = sorted({d.group for d in self.defs.values() if d.group})
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [self._group(g) for g in groups]}
        if path == "/api/v1":
            return self._resource_list("", "v1")
        parts = path.strip("/").split("/")
        if parts[0] == "apis" and len(parts) == 2:
            if not any(d.group == parts[1] for d in self.defs.values()):
                raise ApiError(404, "NotFound", f"no API group {parts[1]}")
            return self._group(parts[1])
        if parts[0] == "apis" and len(parts) == 3:
            if not any(d.group == parts[1] and d.version == parts[2] for d in self.defs.values()):
                raise ApiError(404, "NotFound", f"no API version {parts[1]}/{parts[2]}")
            return self._resource_list(parts[1], parts[2])
        return None

    def _group(self, group: str) -> dict[str, Any]:
        versions = sorted({d.version for d in self.defs.values() if d.group == group})
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": entries,
                "preferredVersion": entries[0]}

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        resources = []
        for d in self.defs.values():
            if d.group != group or d.version != version:
                continue
            resources.append({
                "name": d.plural, "singularName": d.singular, "namespaced": d.namespaced,
                "kind": d.kind, "verbs": VERBS, "shortNames": d.short_names,
                "categories": d.categories,
            })
            for sub in d.subresources:
                entry = {"name": f"{d.plural}/{sub}", "singularName": "", "namespaced": d.namespaced,
                         "kind": d.kind, "verbs": ["get", "patch", "update"]}
                if sub == "scale":
                    entry.update(group="autoscaling", version="v1", kind="Scale")
                resources.append(entry)
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version, "resources": resources}

    # -------------------------------------------------------------------- reads

    def _bucket(self, rdef: ResourceDef) -> dict[ObjectKey, dict[str, Any]]:
        return self.store.setdefault(rdef.key, {})

    def _lookup(self, rdef: ResourceDef, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self._bucket(rdef).get((namespace, name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{rdef.plural}.{rdef.group or "core"} "{name}" not found')
        return obj

    def _get(self, rdef: ResourceDef, namespace: str | None, name: str, sub: str | None) -> dict[str, Any]:
        obj = self._lookup(rdef, namespace, name)
        if sub == "scale":
            return self._scale_view(rdef, obj)
        return copy.deepcopy(obj)

    def _list(self, rdef: ResourceDef, namespace: str | None, params: Mapping[str, str]) -> dict[str, Any]:
        selector = _LabelSelector(params.get("labelSelector", ""))
        fields = _FieldSelector(params.get("fieldSelector", ""))
        items = [
            copy.deepcopy(obj) for (ns, _), obj in sorted(self._bucket(rdef).items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))
            if namespace in (None, ns) and selector.matches(obj) and fields.matches(obj)
        ]
        return {"kind": f"{rdef.kind}List", "apiVersion": rdef.api_version,
                "metadata": {"resourceVersion": str(self._current_rv())}, "items": items}

    def _current_rv(self) -> int:
        latest = [h[-1][0] for h in self.history.values() if h]
        return max(latest, default=0)

    async def _watch(
        self, request: kmock.Request, rdef: ResourceDef, namespace: str | None,
        name: str | None, params: Mapping[str, str],
    ) -> aiohttp.web.StreamResponse:
        selector = _LabelSelector(params.get("labelSelector", ""))
        fields = _FieldSelector(params.get("fieldSelector", ""))
        timeout = float(params.get("timeoutSeconds") or 3600)

        def wanted(obj: Mapping[str, Any]) -> bool:
            meta = obj.get("metadata", {})
            return (namespace in (None, meta.get("namespace")) and name in (None, meta.get("name"))
                    and selector.matches(obj) and fields.matches(obj))

        queue: asyncio.Queue = asyncio.Queue()
        self.subscribers.setdefault(rdef.key, set()).add(queue)
        since = params.get("resourceVersion")
        if since and since != "0":
            start = int(since) if since.isdigit() else 0
            backlog = [(t, o) for rv, t, o in self.history.get(rdef.key, []) if rv > start]
        else:
            backlog = [("ADDED", copy.deepcopy(o)) for o in self._bucket(rdef).values()]
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        self.watch_counts[rdef.plural] = self.watch_counts.get(rdef.plural, 0) + 1
        try:
            await response.prepare(request._raw_request)
            for type_, obj in backlog:
                if wanted(obj):
                    await response.write(json.dumps({"type": type_, "object": obj}).encode() + b"\n")
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    type_, obj = await asyncio.wait_for(queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                if wanted(obj):
                    await response.write(json.dumps({"type": type_, "object": obj}).encode() + b"\n")
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.subscribers[rdef.key].discard(queue)
        return response

    # ------------------------------------------------------------------- writes

    def create_object(self, rdef: ResourceDef, namespace: str | None, body: Any) -> dict[str, Any]:
        """Create an object (as POST does)."""
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be a JSON object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if not meta.get("name"):
            raise ApiError(422, "Invalid", f"{rdef.kind} is invalid: metadata.name: Required value")
        if rdef.namespaced:
            namespace = namespace or meta.get("namespace") or "default"
            if meta.get("namespace") not in (None, namespace):
                raise ApiError(400, "BadRequest", "the namespace of the object does not match the namespace of the request")
            meta["namespace"] = namespace
            self._ensure_namespace(namespace)
        if (namespace, meta["name"]) in self._bucket(rdef):
            raise ApiError(409, "AlreadyExists", f'{rdef.plural} "{meta["name"]}" already exists')
        obj["apiVersion"], obj["kind"] = rdef.api_version, rdef.kind
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_stamp(), generation=1)
        meta.pop("deletionTimestamp", None)
        if rdef.kind == "Pod":
            obj.setdefault("status", {}).setdefault("phase", "Pending")
        if rdef.schema is not None:
            self._admit(rdef, obj, None)
        self._store(rdef, obj, "ADDED")
        if rdef.key == ("apiextensions.k8s.io", "v1", "customresourcedefinitions"):
            self.register_crd(obj)
        return copy.deepcopy(obj)

    def _patch(
        self, rdef: ResourceDef, namespace: str | None, name: str, sub: str | None,
        body: Any, content_type: str,
    ) -> dict[str, Any]:
        old = self._lookup(rdef, namespace, name)
        if sub == "scale":
            scale = _apply_patch(self._scale_view(rdef, old), body, content_type)
            return self._write_scale(rdef, old, scale)
        patched = _apply_patch(copy.deepcopy(old), body, content_type)
        return self._update(rdef, old, patched, sub)

    def _replace(
        self, rdef: ResourceDef, namespace: str | None, name: str, sub: str | None, body: Any,
    ) -> dict[str, Any]:
        old = self._lookup(rdef, namespace, name)
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be a JSON object")
        version = (body.get("metadata") or {}).get("resourceVersion")
        if version and version != old["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rdef.plural} "{name}": the object has been modified; please apply your changes to the latest version and try again')
        if sub == "scale":
            return self._write_scale(rdef, old, body)
        return self._update(rdef, old, copy.deepcopy(body), sub)

    def _update(
        self, rdef: ResourceDef, old: dict[str, Any], new: dict[str, Any], sub: str | None,
    ) -> dict[str, Any]:
        if not isinstance(new, dict):
            raise ApiError(422, "Invalid", "the patched object is not a JSON object")
        has_status = "status" in rdef.subresources
        if sub == "status":
            merged = copy.deepcopy(old)
            merged["status"] = new.get("status")
            if merged["status"] is None:
                merged.pop("status")
            new = merged
        elif has_status:
            new = {**new, "status": copy.deepcopy(old.get("status"))}
            if new["status"] is None:
                new.pop("status")
        meta = new.setdefault("metadata", {})
        for fixed in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "generation"):
            if fixed in old["metadata"]:
                meta[fixed] = old["metadata"][fixed]
            else:
                meta.pop(fixed, None)
        new["apiVersion"], new["kind"] = rdef.api_version, rdef.kind
        if _spec_of(new) != _spec_of(old):
            meta["generation"] = old["metadata"].get("generation", 1) + 1
        if rdef.schema is not None and sub != "status":
            self._admit(rdef, new, old)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._remove(rdef, new)
            return copy.deepcopy(new)
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return copy.deepcopy(old)  # no change: no new resourceVersion, no event
        self._store(rdef, new, "MODIFIED")
        return copy.deepcopy(new)

    def delete_object(self, rdef: ResourceDef, namespace: str | None, name: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """Delete an object (as DELETE does): preconditions, finalizers, then garbage collection."""
        obj = self._lookup(rdef, namespace, name)
        preconditions = options.get("preconditions") or {}
        for key in ("uid", "resourceVersion"):
            if preconditions.get(key) and preconditions[key] != obj["metadata"].get(key):
                raise ApiError(409, "Conflict", f'Precondition failed: {key} in precondition: {preconditions[key]}, {key} in object meta: {obj["metadata"].get(key)}')
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                updated = copy.deepcopy(obj)
                updated["metadata"]["deletionTimestamp"] = now_stamp()
                updated["metadata"]["deletionGracePeriodSeconds"] = 0
                self._store(rdef, updated, "MODIFIED")
                return copy.deepcopy(updated)
            return copy.deepcopy(obj)
        self._remove(rdef, obj)
        return copy.deepcopy(obj)

    def _remove(self, rdef: ResourceDef, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self._bucket(rdef).pop((meta.get("namespace"), meta["name"]), None)
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(next(self._rv))
        self._emit(rdef, "DELETED", gone)
        self._collect_garbage(meta["uid"])

    def _collect_garbage(self, owner_uid: str) -> None:
        live_uids = {o["metadata"]["uid"] for objs in self.store.values() for o in objs.values()}
        for key, objects in list(self.store.items()):
            rdef = self.defs[key]
            for obj in list(objects.values()):
                owners = [r.get("uid") for r in obj["metadata"].get("ownerReferences") or []]
                if owner_uid in owners and not any(uid in live_uids for uid in owners):
                    if (obj["metadata"].get("namespace"), obj["metadata"]["name"]) in objects:
                        self.delete_object(rdef, obj["metadata"].get("namespace"), obj["metadata"]["name"], {})

    def _store(self, rdef: ResourceDef, obj: dict[str, Any], type_: str) -> None:
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        meta = obj["metadata"]
        self._bucket(rdef)[(meta.get("namespace"), meta["name"])] = obj
        self._emit(rdef, type_, copy.deepcopy(obj))

    def _emit(self, rdef: ResourceDef, type_: str, obj: dict[str, Any]) -> None:
        self.history.setdefault(rdef.key, []).append((int(obj["metadata"]["resourceVersion"]), type_, obj))
        for queue in self.subscribers.get(rdef.key, ()):
            queue.put_nowait((type_, copy.deepcopy(obj)))

    def _ensure_namespace(self, namespace: str) -> None:
        rdef = self.defs[("", "v1", "namespaces")]
        if (None, namespace) not in self._bucket(rdef):
            obj = {"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": namespace, "uid": str(uuid.uuid4()), "creationTimestamp": now_stamp()},
                   "status": {"phase": "Active"}}
            self._store(rdef, obj, "ADDED")

    # --------------------------------------------------------------------- scale

    def _scale_view(self, rdef: ResourceDef, obj: Mapping[str, Any]) -> dict[str, Any]:
        assert rdef.scale is not None
        meta = obj["metadata"]
        return {
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta},
            "spec": {"replicas": _get_path(obj, rdef.scale["specReplicasPath"]) or 0},
            "status": {"replicas": _get_path(obj, rdef.scale["statusReplicasPath"]) or 0,
                       "selector": _get_path(obj, rdef.scale.get("labelSelectorPath", "")) or ""},
        }

    def _write_scale(self, rdef: ResourceDef, old: dict[str, Any], scale: Mapping[str, Any]) -> dict[str, Any]:
        assert rdef.scale is not None
        replicas = (scale.get("spec") or {}).get("replicas")
        new = copy.deepcopy(old)
        _set_path(new, rdef.scale["specReplicasPath"], replicas)
        updated = self._update(rdef, old, new, None)
        return self._scale_view(rdef, updated)

    # ---------------------------------------------------------------- admission

    def _admit(self, rdef: ResourceDef, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        """Default, prune and validate a custom resource (schema + CEL), as the API server does."""
        admission = self._admissions.get(rdef.key)
        if admission is None or admission.schema is not rdef.schema:
            admission = self._admissions[rdef.key] = SchemaAdmission(rdef.schema or {})
        admission.default_and_prune(obj)
        if not self.validation:
            return
        errors = admission.errors(obj, old)
        if errors:
            raise ApiError(
                422, "Invalid",
                f'{rdef.kind}.{rdef.group} "{obj["metadata"]["name"]}" is invalid: ' + "; ".join(errors),
            )


class SchemaAdmission:
    """What the API server does with a CRD's openAPIV3Schema: defaults, pruning, validation, CEL."""

    _cel = celpy.Environment()
    _programs: dict[str, Any] = {}

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = schema
        self._validator = OAS30Validator(_schema_without_extensions(schema))

    def default_and_prune(self, obj: dict[str, Any]) -> None:
        """Fill schema defaults and drop unknown fields under spec and status, in place."""
        for part in ("spec", "status"):
            sub_schema = (self.schema.get("properties") or {}).get(part)
            if sub_schema is not None and part in obj:
                obj[part] = _prune(_default(obj[part], sub_schema), sub_schema)

    def errors(self, obj: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> list[str]:
        """Every schema and CEL violation, each as ``path: Invalid value: message``."""
        errors = [
            f"{'.'.join(str(p) for p in err.absolute_path) or '<root>'}: Invalid value: {err.message}"
            for err in self._validator.iter_errors(_jsonable(obj))
            if not err.absolute_path or err.absolute_path[0] != "metadata"
        ]
        return errors + self._cel_errors(self.schema, obj, old, "")

    def _cel_errors(self, schema: Mapping[str, Any], value: Any, old: Any, path: str) -> list[str]:
        errors = []
        for rule in schema.get("x-kubernetes-validations") or []:
            transition = "oldSelf" in rule["rule"]
            if transition and old is None:
                continue
            activation = {"self": celpy.json_to_cel(_typed(_jsonable(value), schema))}
            if transition:
                activation["oldSelf"] = celpy.json_to_cel(_typed(_jsonable(old), schema))
            try:
                result = self.program(rule["rule"]).evaluate(activation)
            except Exception as exc:  # noqa: BLE001 - a rule that cannot run is a failed rule
                result = exc
            if result is not True and not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
                where = (path + (rule.get("fieldPath") or "")).lstrip(".") or "<root>"
                errors.append(f"{where}: Invalid value: {rule.get('message') or 'failed rule: ' + rule['rule']}")
        if isinstance(value, dict):
            for key, sub_schema in (schema.get("properties") or {}).items():
                if key in value and key != "metadata":
                    sub_old = old.get(key) if isinstance(old, dict) else None
                    errors += self._cel_errors(sub_schema, value[key], sub_old, f"{path}.{key}")
        return errors

    @classmethod
    def program(cls, rule: str) -> Any:
        """The compiled CEL program of ``rule`` (compile errors raise)."""
        if rule not in cls._programs:
            cls._programs[rule] = cls._cel.program(cls._cel.compile(rule))
        return cls._programs[rule]


# ---------------------------------------------------------------------- helpers


def _status_response(exc: ApiError) -> aiohttp.web.Response:
    return aiohttp.web.json_response(
        {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
         "message": exc.message, "reason": exc.reason, "code": exc.code},
        status=exc.code,
    )


def _parse_body(request: kmock.Request) -> Any:
    if not request.body:
        return None
    content_type = request.headers.get("Content-Type", "")
    try:
        if "yaml" in content_type:
            return yaml.safe_load(request.body)
        return json.loads(request.body)
    except (ValueError, yaml.YAMLError) as exc:
        raise ApiError(400, "BadRequest", f"cannot parse the body: {exc}") from None


def _apply_patch(target: dict[str, Any], patch: Any, content_type: str) -> dict[str, Any]:
    if content_type == "application/json-patch+json":
        try:
            return jsonpatch.apply_patch(target, patch)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise ApiError(422, "Invalid", f"the JSON patch failed: {exc}") from None
    if content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json", "application/json"):
        if not isinstance(patch, dict):
            raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
        return _merge(target, patch)
    raise ApiError(415, "UnsupportedMediaType", f"the patch type {content_type!r} is not supported")


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def _spec_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _get_path(obj: Mapping[str, Any], path: str) -> Any:
    node: Any = obj
    for part in [p for p in path.split(".") if p]:
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _set_path(obj: dict[str, Any], path: str, value: Any) -> None:
    parts = [p for p in path.split(".") if p]
    node = obj
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _default(value: Any, schema: Mapping[str, Any]) -> Any:
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = _default(value[key], sub)
    elif isinstance(value, list) and "items" in schema:
        return [_default(item, schema["items"]) for item in value]
    return value


def _prune(value: Any, schema: Mapping[str, Any]) -> Any:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return value
    if isinstance(value, dict) and "properties" in schema:
        props = schema["properties"]
        return {k: _prune(v, props[k]) for k, v in value.items() if k in props}
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        return {k: _prune(v, schema["additionalProperties"]) for k, v in value.items()}
    if isinstance(value, list) and "items" in schema:
        return [_prune(item, schema["items"]) for item in value]
    return value


def _schema_without_extensions(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _schema_without_extensions(v) for k, v in schema.items() if not k.startswith("x-kubernetes")}
    if isinstance(schema, list):
        return [_schema_without_extensions(v) for v in schema]
    return schema


def _typed(value: Any, schema: Mapping[str, Any]) -> Any:
    """Numbers in ``type: number`` fields become floats, as CEL sees them on a real server."""
    if schema.get("type") == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties") if isinstance(schema.get("additionalProperties"), dict) else {}
        return {k: _typed(v, props.get(k, extra)) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v, schema.get("items") or {}) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


class _LabelSelector:
    """Equality- and set-based label selectors (``a=b,c!=d,e,!f,g in (x,y),h notin (z)``)."""

    _TERM = re.compile(r"\s*(?:(!)?([\w./-]+)\s*(?:(==|=|!=)\s*([\w./-]*)|\s+(in|notin)\s*\(([^)]*)\))?)\s*(?:,|$)")

    def __init__(self, text: str) -> None:
        self.terms: list[tuple[str, str, set[str]]] = []
        position = 0
        while position < len(text):
            match = self._TERM.match(text, position)
            if match is None or match.end() == position:
                raise ApiError(400, "BadRequest", f"unable to parse requirement: {text!r}")
            position = match.end()
            negated, key, op, value, set_op, values = match.groups()
            if op:
                self.terms.append(("!=" if op == "!=" else "=", key, {value}))
            elif set_op:
                self.terms.append((set_op, key, {v.strip() for v in values.split(",") if v.strip()}))
            else:
                self.terms.append(("!exists" if negated else "exists", key, set()))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        for op, key, values in self.terms:
            present, value = key in labels, labels.get(key)
            if op == "=" and value not in values:
                return False
            if op == "!=" and value in values:
                return False
            if op == "in" and (not present or value not in values):
                return False
            if op == "notin" and present and value in values:
                return False
            if op == "exists" and not present:
                return False
            if op == "!exists" and present:
                return False
        return True


class _FieldSelector:
    """``path=value`` / ``path!=value`` terms on dotted object paths."""

    def __init__(self, text: str) -> None:
        self.terms = []
        for term in filter(None, (t.strip() for t in text.split(","))):
            match = re.match(r"^([\w.]+)\s*(==|=|!=)\s*(.*)$", term)
            if match is None:
                raise ApiError(400, "BadRequest", f"invalid field selector: {term!r}")
            self.terms.append((match[1], match[2] == "!=", match[3]))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        for path, negated, value in self.terms:
            actual = _get_path(obj, path)
            if (str(actual) == value if actual is not None else value == "") == negated:
                return False
        return True


# ------------------------------------------------------------------------ runner


class ClusterRunner:
    """The emulator on a loopback port, served from an event loop in a thread of its own."""

    def __init__(self, workdir: Path, crds: Iterable[Path] = ()) -> None:
        self.workdir = workdir
        self.crd_paths = list(crds)
        self.loop = asyncio.new_event_loop()
        self.emulator: ClusterEmulator | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, name="kmock-cluster", daemon=True)
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> "ClusterRunner":
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the Kubernetes emulator did not start in 30 s")
        if self._error is not None:
            raise RuntimeError(f"the Kubernetes emulator failed to start: {self._error}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self._error = exc
            self._ready.set()
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with ClusterEmulator() as emulator, kmock.Server(emulator) as server:
            for path in self.crd_paths:
                emulator.register_crd(yaml.safe_load(path.read_text()))
            self.emulator = emulator
            self.port = server.port
            self._ready.set()
            await self._stop.wait()
            for queues in emulator.subscribers.values():
                queues.clear()

    @property
    def url(self) -> str:
        """Base URL of the API."""
        return f"http://127.0.0.1:{self.port}"

    def call(self, function: Any, *args: Any) -> Any:
        """Run ``function(emulator, *args)`` on the emulator's loop and return its result."""
        async def invoke() -> Any:
            return function(self.emulator, *args)
        return asyncio.run_coroutine_threadsafe(invoke(), self.loop).result(30)

    def write_kubeconfig(self, path: Path, namespace: str = "default", token: str = "kmock-token") -> Path:
        """A kubeconfig pointing kubectl, kopf and the kubernetes client at this emulator
        (``token`` tells its requests apart: ``requests_by``)."""
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "kmock", "user": {"token": token}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock", "namespace": namespace}}],
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def requests_by(self, token: str) -> list[tuple[str, str]]:
        """(method, path?query) of every request made with ``token`` so far."""
        return self.call(lambda emulator: list(emulator.requests.get(token, [])))

    def watches(self, plural: str) -> int:
        """How many watch streams on ``plural`` were opened so far."""
        return self.call(lambda emulator: emulator.watch_counts.get(plural, 0))

    def objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Current objects of a resource (deep copies)."""
        return self.call(lambda emulator: emulator.list_objects(plural, namespace))

    def set_validation(self, enabled: bool) -> None:
        """Turn schema/CEL validation of custom resources on or off (to mimic an older CRD)."""
        self.call(lambda emulator: setattr(emulator, "validation", enabled))



class OperatorProcess:
    """``kopf run --standalone -A -m autolrs_operator`` as a subprocess against the emulator."""

    def __init__(
        self,
        cluster: ClusterRunner,
        kubeconfig: Path,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        liveness_port: int | None = None,
    ) -> None:
        self.cluster = cluster
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.env = dict(env or {})
        self.liveness_port = liveness_port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> "OperatorProcess":
        """Start kopf and return once it watches AutoLRSJobs and pods (new watch streams seen)."""
        before = (self.cluster.watches("autolrsjobs"), self.cluster.watches("pods"))
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.env}
        command = [sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces",
                   "-m", "autolrs_operator", "--verbose"]
        if self.liveness_port:
            command.append(f"--liveness=http://127.0.0.1:{self.liveness_port}/healthz")
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while self.cluster.watches("autolrsjobs") <= before[0] or self.cluster.watches("pods") <= before[1]:
            if self.process.poll() is not None:
                raise RuntimeError(f"the operator exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the operator did not start watching in {timeout:.0f} s:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """SIGINT (kopf's graceful shutdown), then kill if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)

    @property
    def alive(self) -> bool:
        """Whether the operator process is still running."""
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """Everything the operator printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# -------------------------------------------------------------- test clients

GROUP, VERSION, PLURAL = "autolrs.io", "v1alpha1", "autolrsjobs"


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (AssertionError, KeyError, IndexError, TypeError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


class Kube:
    """The kubernetes client (CoreV1 + CustomObjects) and kubectl, pointed at the emulator."""

    def __init__(self, kubeconfig: Path, namespace: str = "default") -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.api_client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        self.core = kubernetes.client.CoreV1Api(self.api_client)
        self.custom = kubernetes.client.CustomObjectsApi(self.api_client)

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl; fail with its output when ``check`` and it fails."""
        result = subprocess.run(
            ["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=60,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def job(self, name: str) -> dict[str, Any]:
        """The AutoLRSJob as the API returns it."""
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def jobs(self) -> list[dict[str, Any]]:
        """Every AutoLRSJob in the namespace."""
        return self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)["items"]

    def status(self, name: str) -> dict[str, Any]:
        """The job's status (empty before the operator wrote one)."""
        return self.job(name).get("status") or {}

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        """One condition of the job (KeyError while absent)."""
        for item in self.status(name).get("conditions") or []:
            if item["type"] == type_:
                return item
        raise KeyError(type_)

    def pods(self, job: str) -> list[Any]:
        """The job's worker pods, sorted by name."""
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=f"autolrs.io/job={job},autolrs.io/role=worker").items
        return sorted(pods, key=lambda p: p.metadata.name)

    def pod_names(self, job: str) -> list[str]:
        """Names of the job's worker pods."""
        return [p.metadata.name for p in self.pods(job)]

    def set_pod_phase(self, name: str, phase: str, exit_code: int | None = None) -> None:
        """Do what a kubelet would: report a pod's phase (and its trainer's exit code)."""
        status: dict[str, Any] = {"phase": phase}
        if exit_code is not None:
            status["containerStatuses"] = [{
                "name": "trainer", "ready": False, "restartCount": 0, "image": "img", "imageID": "",
                "state": {"terminated": {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error"}},
            }]
        self.core.patch_namespaced_pod_status(name, self.namespace, {"status": status})

    def set_pod_waiting(self, name: str, reason: str, message: str) -> None:
        """Do what a kubelet would for a container it cannot start (a missing Secret, an
        image it cannot pull): phase Pending, the trainer waiting with a reason."""
        self.core.patch_namespaced_pod_status(name, self.namespace, {"status": {
            "phase": "Pending",
            "containerStatuses": [{
                "name": "trainer", "ready": False, "restartCount": 0, "image": "img", "imageID": "",
                "state": {"waiting": {"reason": reason, "message": message}},
            }],
        }})

    def run_pods(self, job: str, count: int) -> None:
        """Wait for ``count`` pods, then mark them all Running."""
        wait_for(lambda: len(self.pods(job)) == count, what=f"{count} pods of {job}")
        for pod in self.pods(job):
            self.set_pod_phase(pod.metadata.name, "Running")

    def events(self, name: str, reason: str | None = None) -> list[Any]:
        """Events about the job (optionally of one reason)."""
        items = self.core.list_namespaced_event(self.namespace).items
        return [e for e in items if e.involved_object.name == name and reason in (None, e.reason)]

    def apply(self, manifest: str) -> None:
        """kubectl apply (client-side; the emulator cannot serve OpenAPI for --validate)."""
        self.kubectl("apply", "--validate=false", "-f", "-", stdin=manifest)


def job_manifest(name: str, *, replicas: int = 2, max_replicas: int | None = 3, extra: str = "") -> str:
    """A small AutoLRSJob manifest."""
    max_line = f"  maxReplicas: {max_replicas}\n" if max_replicas else ""
    return (
        f"apiVersion: autolrs.io/v1alpha1\nkind: AutoLRSJob\nmetadata:\n  name: {name}\nspec:\n"
        f"  image: autolrs-operator:0.1.0\n  command: [examples/digits_cnn.py]\n"
        f"  replicas: {replicas}\n{max_line}"
        f"  autolrs: {{minLR: 0.001, maxLR: 1.0, tau: 100, tauMax: 400}}\n{extra}"
    )
