"""The few Kubernetes API calls the controller makes, on plain dicts (JSON as the API speaks).

Built on the ``kubernetes`` client's configuration and transport (in-cluster service
account, else ``$KUBECONFIG``/~/.kube/config), without its typed models.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from typing import Any, Mapping

import kubernetes

from autolrs_operator.constants import GROUP, PLURAL, VERSION

MERGE_PATCH = "application/merge-patch+json"
# 403s that say nothing about the object: RBAC, quota, a namespace going away (retried).
_FORBIDDEN_ELSEWHERE = re.compile(
    r"cannot \w+ resource|exceeded quota|is being terminated|unable to create new content", re.IGNORECASE
)


class KubeError(RuntimeError):
    """An API call failed with a status the controller does not handle.

    ``message`` is the API server's own message (its Status object's, else the body) and
    ``fields`` the field paths its Status names as causes (e.g. ``spec.volumes[2].name``).
    """

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path} -> HTTP {status}: {body[:300]}")
        self.status = status
        self.message, self.fields = _status_details(body)

    @property
    def rejected(self) -> bool:
        """Whether the API server refused the object itself: 422 Invalid, 400 BadRequest, or a
        403 from admission (PodSecurity, a webhook, a missing ServiceAccount). Sending the same
        object again cannot help; RBAC, quota and other 403s, 429 and 5xx can pass later."""
        if self.status in (400, 422):
            return True
        return self.status == 403 and not _FORBIDDEN_ELSEWHERE.search(self.message)


def _status_details(body: str) -> tuple[str, list[str]]:
    """(message, cause fields) of a ``Status`` body; the body itself when it is not one."""
    try:
        status = json.loads(body)
    except ValueError:
        return body, []
    if not isinstance(status, dict) or not isinstance(status.get("message"), str):
        return body, []
    details = status.get("details")
    causes = details.get("causes") if isinstance(details, dict) else None
    fields = [
        cause["field"] for cause in causes or []
        if isinstance(cause, dict) and isinstance(cause.get("field"), str) and cause["field"]
    ]
    return status["message"], fields


def load_api_client() -> kubernetes.client.ApiClient:
    """An ApiClient for the cluster the operator runs in, else the current kubeconfig."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    return kubernetes.client.ApiClient(configuration)


class KubeApi:
    """JSON-in, JSON-out access to AutoLRSJobs, their pods, Service and Secrets."""

    def __init__(self, api_client: kubernetes.client.ApiClient, timeout: float = 15.0) -> None:
        self._client = api_client
        self._timeout = timeout

    # ------------------------------------------------------------------ reads

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The AutoLRSJob, or None when it no longer exists."""
        return self._get(_job_path(namespace, name))

    def list_worker_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Pods matching a label selector."""
        body = self._request("GET", f"/api/v1/namespaces/{namespace}/pods", query=[("labelSelector", selector)])
        return list((body or {}).get("items") or [])

    def service_exists(self, namespace: str, name: str) -> bool:
        """Whether the Service exists."""
        return self._get(f"/api/v1/namespaces/{namespace}/services/{name}") is not None

    def read_secret_key(self, namespace: str, name: str, key: str) -> str | None:
        """One decoded value of a Secret, or None if the Secret or key is missing."""
        secret = self._get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
        value = ((secret or {}).get("data") or {}).get(key)
        return None if value is None else base64.b64decode(value).decode()

    # ----------------------------------------------------------------- writes

    def create(self, obj: Mapping[str, Any]) -> bool:
        """Create a namespaced core/v1 object; False if one of that name already exists."""
        namespace = obj["metadata"]["namespace"]
        plural = {"Pod": "pods", "Service": "services"}[obj["kind"]]
        try:
            self._request("POST", f"/api/v1/namespaces/{namespace}/{plural}", body=dict(obj))
        except KubeError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def delete_pod(self, namespace: str, name: str, uid: str) -> bool:
        """Delete a pod if it is still the one with ``uid``; False if it is gone or replaced."""
        options = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        try:
            self._request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", body=options)
        except KubeError as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    def patch_job_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge-patch the job's status subresource."""
        self._request(
            "PATCH", _job_path(namespace, name) + "/status",
            body={"status": dict(status)}, content_type=MERGE_PATCH,
        )

    # -------------------------------------------------------------- transport

    def _get(self, path: str) -> dict[str, Any] | None:
        try:
            return self._request("GET", path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any] | None:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        _, url, headers, body, _ = self._client.param_serialize(
            method, path, query_params=query, header_params=headers, body=body,
            auth_settings=["BearerToken"],
        )
        response = self._client.call_api(method, url, headers, body, _request_timeout=self._timeout)
        data = response.read() or b""
        if not 200 <= response.status < 300:
            raise KubeError(method, urllib.parse.unquote(path), response.status, data.decode(errors="replace"))
        return json.loads(data) if data else None


def _job_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"
