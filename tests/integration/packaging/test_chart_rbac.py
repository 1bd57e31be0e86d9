"""RBAC is least privilege: exactly the API calls the operator makes, nothing more.

The calls are collected from the operator's code, not listed by hand:
- `autolrs_operator.kube.KubeApi` (every API call of the controller) is driven against a
  recording API client, and each HTTP request is mapped to its RBAC verb and resource;
- kopf's handler registrations (importing `autolrs_operator` registers them) give the
  resources kopf lists, watches and patches;
- the framework's own needs: kopf posts Events; children built with `kopf.adopt` carry
  blockOwnerDeletion, which needs `update` on the owner's finalizers; kopf watches CRDs
  (clusterDiscovery), Namespaces (namespaced scope) and its peering objects (standby).
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass

import pytest

from tests.helpers.chart_render import NAMESPACE, by_kind
from tests.helpers.rbac import Permission, granted, rbac_permission



@dataclass
class _Response:
    status: int
    data: bytes

    def read(self) -> bytes:
        return self.data


class RecordingApiClient:
    """Stands in for kubernetes.client.ApiClient: records requests, answers 200."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []

    def param_serialize(self, method, path, query_params=None, header_params=None, body=None,
                        auth_settings=None, **_):
        query = "&".join(f"{k}={v}" for k, v in (query_params or []))
        return method, path + (f"?{query}" if query else ""), header_params, body, None

    def call_api(self, method, url, headers, body, _request_timeout=None):
        self.requests.append((method, url))
        answer = {"items": []} if method == "GET" and "/secrets/" not in url else {"data": {}}
        return _Response(200, json.dumps(answer).encode())


def test_rbac_permission_mapping():
    assert rbac_permission("GET", "/api/v1/namespaces/a/pods?labelSelector=x") == ("", "pods", "list")
    assert rbac_permission("GET", "/api/v1/namespaces/a/pods?watch=true") == ("", "pods", "watch")
    assert rbac_permission("PATCH", "/apis/autolrs.io/v1alpha1/namespaces/a/autolrsjobs/j/status") \
        == ("autolrs.io", "autolrsjobs/status", "patch")
    assert rbac_permission("DELETE", "/api/v1/namespaces/a/pods/p") == ("", "pods", "delete")
    assert rbac_permission("GET", "/apis/autolrs.io/v1alpha1/autolrsjobs?watch=true") == \
        ("autolrs.io", "autolrsjobs", "watch")
    assert rbac_permission("GET", "/api/v1/namespaces") == ("", "namespaces", "list")
    assert rbac_permission("GET", "/apis/autolrs.io/v1alpha1") is None  # discovery


def _job() -> dict:
    return {"apiVersion": "autolrs.io/v1alpha1", "kind": "AutoLRSJob",
            "metadata": {"name": "digits", "namespace": "ml", "uid": "0000-1111", "labels": {}},
            "spec": {}}


def controller_permissions() -> set[Permission]:
    """Every call of autolrs_operator.kube.KubeApi, made for real against a recorder."""
    from autolrs_operator.kube import KubeApi

    client = RecordingApiClient()
    api = KubeApi(client)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ml"}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "ml"}}
    exercise = {
        "get_job": lambda: api.get_job("ml", "digits"),
        "list_worker_pods": lambda: api.list_worker_pods("ml", "autolrs.io/job=digits"),
        "service_exists": lambda: api.service_exists("ml", "digits-rdzv"),
        "read_secret_key": lambda: api.read_secret_key("ml", "redis", "password"),
        "create": lambda: (api.create(pod), api.create(service)),
        "delete_pod": lambda: api.delete_pod("ml", "p", "uid-1"),
        "patch_job_status": lambda: api.patch_job_status("ml", "digits", {"phase": "Running"}),
    }
    public = {name for name, member in inspect.getmembers(KubeApi, inspect.isfunction)
              if not name.startswith("_")}
    assert public == set(exercise), (
        f"KubeApi's API calls changed ({sorted(public ^ set(exercise))}): exercise every "
        "public method here so the chart's RBAC is checked against it")
    for call in exercise.values():
        call()
    return {rbac_permission(method, url) for method, url in client.requests}


KNOWN_RESOURCES = {
    ("", "v1", "pods"), ("", "v1", "services"), ("", "v1", "events"), ("", "v1", "secrets"),
    ("", "v1", "configmaps"), ("", "v1", "persistentvolumeclaims"),
    ("autolrs.io", "v1alpha1", "autolrsjobs"),
}


def kopf_handler_permissions() -> set[Permission]:
    """What kopf needs for the handlers that importing autolrs_operator registers."""
    import kopf
    from kopf._cogs.structs.references import Resource

    import autolrs_operator  # noqa: F401  (registers the handlers)

    registry = kopf.get_default_registry()
    resources = [Resource(group, version, plural, namespaced=True)
                 for group, version, plural in KNOWN_RESOURCES]
    permissions: set[Permission] = set()
    handlers = []
    for kind, patches in ((registry._changing, True), (registry._spawning, True),
                          (registry._watching, False), (registry._indexing, False)):
        for handler in kind.get_all_handlers():
            handlers.append(handler)
            matched = [r for r in resources if handler.selector.check(r)]
            assert matched, f"handler {handler.id} watches {handler.selector}: unknown to this test"
            for resource in matched:
                permissions |= {(resource.group, resource.plural, "list"),
                                (resource.group, resource.plural, "watch")}
                if patches:  # finalizers, progress annotations, status of handler results
                    permissions.add((resource.group, resource.plural, "patch"))
    assert handlers, "importing autolrs_operator registered no kopf handler"
    return permissions


def framework_permissions() -> set[Permission]:
    """kopf's own calls on namespaced resources, and what kopf.adopt'ed children require."""
    from autolrs_operator.builders import build_service

    permissions = {("", "events", "create")}
    owner_references = build_service(_job())["metadata"]["ownerReferences"]
    if any(ref.get("blockOwnerDeletion") for ref in owner_references):
        permissions.add(("autolrs.io", "autolrsjobs/finalizers", "update"))
    return permissions


@pytest.fixture(scope="module")
def required() -> set[Permission]:
    return controller_permissions() | kopf_handler_permissions() | framework_permissions()


@pytest.fixture(scope="module")
def cluster_objects(helm):
    return helm.template({"operator": {"replicas": 2}})


@pytest.fixture(scope="module")
def namespaced_objects(helm):
    return helm.template({"rbac": {"scope": "namespaced", "namespaces": ["team-a", "team-b"]}})


NAMESPACED_SCOPE_EXTRAS = {("kopf.dev", "kopfpeerings", verb) for verb in ("get", "list", "watch", "patch")}
CLUSTER_SCOPE_EXTRAS = {("kopf.dev", "clusterkopfpeerings", verb) for verb in ("get", "list", "watch", "patch")} \
    | {("apiextensions.k8s.io", "customresourcedefinitions", verb) for verb in ("list", "watch")}


@pytest.mark.parametrize("values", [{}, {"operator": {"replicas": 2}},
                                    {"rbac": {"scope": "namespaced"}},
                                    {"rbac": {"scope": "namespaced"}, "operator": {"replicas": 2}}])
def test_no_wildcards(helm, values):
    for role in by_kind(helm.template(values), "ClusterRole") + by_kind(helm.template(values), "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"{role['metadata']['name']}: {rule}"
            assert not rule.get("nonResourceURLs"), role["metadata"]["name"]


def test_cluster_scope_grants_exactly_what_the_operator_calls(cluster_objects, required):
    (role,) = by_kind(cluster_objects, "ClusterRole")
    assert granted(role["rules"]) == required | CLUSTER_SCOPE_EXTRAS, (
        f"missing: {sorted(required | CLUSTER_SCOPE_EXTRAS - granted(role['rules']))}, "
        f"not needed: {sorted(granted(role['rules']) - required - CLUSTER_SCOPE_EXTRAS)}")
    (binding,) = by_kind(cluster_objects, "ClusterRoleBinding")
    (account,) = by_kind(cluster_objects, "ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": NAMESPACE}]


def test_namespaced_scope_grants_the_same_in_each_watched_namespace(namespaced_objects, required):
    roles = by_kind(namespaced_objects, "Role")
    assert sorted(role["metadata"]["namespace"] for role in roles) == ["team-a", "team-b"]
    for role in roles:
        assert granted(role["rules"]) == required
    bindings = by_kind(namespaced_objects, "RoleBinding")
    assert sorted((b["metadata"]["namespace"], b["roleRef"]["name"]) for b in bindings) == \
        sorted((r["metadata"]["namespace"], r["metadata"]["name"]) for r in roles)
    (discovery,) = by_kind(namespaced_objects, "ClusterRole")
    assert granted(discovery["rules"]) == {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("", "namespaces", "list"), ("", "namespaces", "watch")}


def test_namespaced_standby_replicas_get_their_peering(helm, required):
    objects = helm.template({"rbac": {"scope": "namespaced"}, "operator": {"replicas": 2}})
    (role,) = by_kind(objects, "Role")
    assert granted(role["rules"]) == required | NAMESPACED_SCOPE_EXTRAS


def test_without_cluster_discovery_nothing_is_cluster_scoped(helm):
    objects = helm.template({"rbac": {"scope": "namespaced", "clusterDiscovery": False}})
    assert not by_kind(objects, "ClusterRole") and not by_kind(objects, "ClusterRoleBinding")


def test_rbac_create_false_renders_no_rbac(helm):
    objects = helm.template({"rbac": {"create": False}})
    assert not {obj["kind"] for obj in objects} & {"Role", "RoleBinding", "ClusterRole",
                                                    "ClusterRoleBinding"}
