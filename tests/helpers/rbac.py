"""Map Kubernetes API requests to the RBAC permissions that authorize them."""

from __future__ import annotations

import re

Permission = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)

_CORE = re.compile(r"/api/v1(?:/namespaces/[^/]+)?/([^/]+)(?:/([^/]+))?(?:/([^/]+))?")
_NAMED = re.compile(r"/apis/([^/]+)/[^/]+(?:/namespaces/[^/]+)?/([^/]+)(?:/([^/]+))?(?:/([^/]+))?")
# Discovery and version: every authenticated client may read them (system:discovery).
_DISCOVERY = re.compile(r"/(?:api|apis|version|openapi/.*)|/api/v1|/apis/[^/]+(?:/[^/]+)?")


def rbac_permission(method: str, url: str) -> Permission | None:
    """The (group, resource, verb) that authorizes one API request; None for discovery.

    A list or watch across namespaces (``/api/v1/pods``) needs the same permission as in
    one namespace, granted cluster-wide; ``/api/v1/namespaces`` itself is the resource
    ``namespaces``."""
    path, _, query = url.partition("?")
    path = path.rstrip("/") or "/"
    if _DISCOVERY.fullmatch(path):
        return None
    core, named = _CORE.fullmatch(path), _NAMED.fullmatch(path)
    assert core or named, f"unexpected API path {path}"
    group, resource, name, sub = ("",) + core.groups() if core else named.groups()
    if sub:
        resource = f"{resource}/{sub}"
    watch = "watch=true" in query or "watch=1" in query
    verb = {("GET", True): "get", ("GET", False): "watch" if watch else "list",
            ("POST", False): "create", ("DELETE", True): "delete",
            ("DELETE", False): "deletecollection", ("PATCH", True): "patch",
            ("PUT", True): "update"}[(method, name is not None)]
    return group, resource, verb


def granted(rules: list[dict]) -> set[Permission]:
    """Expand RBAC rules into (group, resource, verb) triples."""
    return {(group, resource, verb) for rule in rules for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}
