"""What the operator needs to know about one worker pod, read from the pod's dict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from autolrs_operator.constants import LABEL_WORKER_INDEX, TRAINER_CONTAINER

ACTIVE_PHASES = frozenset({"Pending", "Running", "Unknown"})


@dataclass(frozen=True)
class WorkerPod:
    """A worker pod's slot, phase, readiness and (when it failed) why."""

    name: str
    uid: str
    index: int
    phase: str
    ready: bool
    deleting: bool
    owner_uid: str | None
    exit_code: int | None
    reason: str | None

    @property
    def active(self) -> bool:
        """Pending or running, and not being deleted."""
        return self.phase in ACTIVE_PHASES and not self.deleting

    @property
    def failure(self) -> str:
        """A short account of the failure, e.g. ``exit code 1 (Error)``."""
        parts = []
        if self.exit_code is not None:
            parts.append(f"exit code {self.exit_code}")
        if self.reason:
            parts.append(f"({self.reason})" if parts else self.reason)
        return " ".join(parts) or "no reason reported"

    @classmethod
    def from_pod(cls, pod: Mapping[str, Any]) -> "WorkerPod":
        """Summarise a pod as the API returns it."""
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        try:
            index = int((meta.get("labels") or {}).get(LABEL_WORKER_INDEX, -1))
        except ValueError:
            index = -1
        owners = [ref.get("uid") for ref in meta.get("ownerReferences") or [] if ref.get("controller")]
        phase = status.get("phase") or "Pending"
        ready = phase == "Running" and _ready(status)
        exit_code, reason = _termination(status)
        return cls(
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            index=index,
            phase=phase,
            ready=ready,
            deleting=bool(meta.get("deletionTimestamp")),
            owner_uid=owners[0] if owners else None,
            exit_code=exit_code,
            reason=reason or status.get("reason"),
        )


def _ready(status: Mapping[str, Any]) -> bool:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return True  # no readiness reported: a running pod counts as ready


def _termination(status: Mapping[str, Any]) -> tuple[int | None, str | None]:
    for container in status.get("containerStatuses") or []:
        if container.get("name") != TRAINER_CONTAINER:
            continue
        terminated = (container.get("state") or {}).get("terminated") or {}
        if terminated:
            return terminated.get("exitCode"), terminated.get("reason")
    return None, None
