"""What the operator needs to know about one worker pod, read from the pod's dict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from autolrs_operator.constants import LABEL_WORKER_INDEX, TRAINER_CONTAINER

ACTIVE_PHASES = frozenset({"Pending", "Running", "Unknown"})
# Waiting reasons of a container on its normal way to running: not worth reporting.
STARTING_REASONS = frozenset({"ContainerCreating", "PodInitializing"})
MAX_WAITING_MESSAGE = 200


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
    waiting: str | None = None

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
            waiting=_waiting(status) if phase == "Pending" or not ready else None,
        )


def _ready(status: Mapping[str, Any]) -> bool:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return True  # no readiness reported: a running pod counts as ready


def _waiting(status: Mapping[str, Any]) -> str | None:
    """Why a pod is not running yet, e.g. ``CreateContainerConfigError: secret "r" not found``
    or ``Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu``; None while
    it is merely starting."""
    for container in status.get("containerStatuses") or []:
        if container.get("name") != TRAINER_CONTAINER:
            continue
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason and reason not in STARTING_REASONS:
            return _reason_message(reason, waiting.get("message"))
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return _reason_message(condition.get("reason") or "Unschedulable", condition.get("message"))
    return None


def _reason_message(reason: str, message: str | None) -> str:
    text = f"{reason}: {' '.join(message.split())}" if message else reason
    if len(text) > MAX_WAITING_MESSAGE:
        text = text[: MAX_WAITING_MESSAGE - 3] + "..."
    return text


def _termination(status: Mapping[str, Any]) -> tuple[int | None, str | None]:
    for container in status.get("containerStatuses") or []:
        if container.get("name") != TRAINER_CONTAINER:
            continue
        terminated = (container.get("state") or {}).get("terminated") or {}
        if terminated:
            return terminated.get("exitCode"), terminated.get("reason")
    return None, None
