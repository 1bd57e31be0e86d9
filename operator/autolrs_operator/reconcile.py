"""The controller's brain, pure: observed job + pods -> what to create, delete and report.

``plan()`` is level-based and idempotent: run it again on the same observation and it asks
for the same objects (stable names make a repeated create a harmless conflict), and it
counts each failed pod once (the pod's uid is kept in ``status.lastFailure``).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from autolrs_operator import conditions as cond
from autolrs_operator.builders import build_service, build_worker_pod, spec_field
from autolrs_operator.constants import rendezvous_service_name, worker_pod_name, worker_selector
from autolrs_operator.spec import JobSpec, SpecError, StateStore, parse_spec, validate_job_name
from autolrs_operator.workers import WorkerPod

PENDING, RUNNING, RESTARTING = "Pending", "Running", "Restarting"
SUSPENDED, SUCCEEDED, FAILED = "Suspended", "Succeeded", "Failed"
TERMINAL_REASONS = frozenset({"BackoffLimitExceeded", "TrainingSucceeded"})
REJECTED = "rejected by the API server"  # starts the problem of an InvalidSpec the API server found
MAX_API_MESSAGE = 300
_MESSAGE_FIELD = re.compile(r"((?:metadata|spec)(?:\.\w+|\[[^\]\s]*\])+): ")


@dataclass(frozen=True)
class Backoff:
    """Delay before a failed worker is replaced: base * 2**(restarts-1), capped."""

    base_seconds: float = 10.0
    max_seconds: float = 300.0

    def delay(self, restarts: int) -> float:
        """Seconds to wait before creating the replacement for restart number ``restarts``."""
        # The exponent is capped: backoffLimit has no maximum, and 2**1100 overflows a float.
        return min(self.base_seconds * 2.0 ** min(max(restarts - 1, 0), 64), self.max_seconds)


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the job."""

    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class PodDeletion:
    """A pod to delete; the uid precondition spares a replacement that reuses the name."""

    name: str
    uid: str


@dataclass
class Plan:
    """What one reconcile pass does, in order: status, service, deletions, creations, events."""

    phase: str | None = None
    status: dict[str, Any] = field(default_factory=dict)
    create_service: dict[str, Any] | None = None
    delete_pods: list[PodDeletion] = field(default_factory=list)
    create_pods: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    restarts_counted: int = 0
    requeue_after: float | None = None


def format_time(moment: dt.datetime) -> str:
    """RFC 3339 in UTC with a Z, as Kubernetes writes times."""
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> dt.datetime | None:
    """Parse a Kubernetes timestamp (None for None or garbage)."""
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def plan(
    job: Mapping[str, Any],
    pods: list[Mapping[str, Any]],
    *,
    service_exists: bool,
    now: dt.datetime,
    backoff: Backoff = Backoff(),
    default_store: StateStore | None = None,
) -> Plan:
    """Decide one reconcile pass for ``job`` given its worker ``pods`` (as the API lists them)."""
    return _Planner(job, pods, service_exists, now, backoff, default_store).run()


def rejection_error(
    job: Mapping[str, Any],
    refused: Mapping[str, Any],
    message: str,
    fields: Sequence[str] = (),
    *,
    default_store: StateStore | None = None,
) -> SpecError:
    """The InvalidSpec an object the API server refused to create stands for.

    ``refused`` is the worker pod or Service built from ``job``; ``message`` and ``fields``
    are the API server's (see KubeError). The path is the job field behind the first pod field
    the server names, else ``spec.podTemplate`` (``spec`` for the Service, which holds nothing
    of the spec); the server's message follows, on one line and at most 300 characters.
    """
    text = " ".join(message.split())
    if len(text) > MAX_API_MESSAGE:
        text = text[: MAX_API_MESSAGE - 3] + "..."
    return SpecError(_refused_path(job, refused, [*fields, *_MESSAGE_FIELD.findall(text)], default_store),
                     f"{REJECTED}: {text}")


def _refused_path(
    job: Mapping[str, Any], refused: Mapping[str, Any], fields: list[str], default_store: StateStore | None
) -> str:
    if refused.get("kind") != "Pod":
        return "spec"
    try:
        spec = parse_spec(job.get("spec") or {}, default_store=default_store)
    except SpecError:  # the pod was built from this spec, so it parses; be safe all the same
        return "spec.podTemplate"
    for name in fields:
        path = spec_field(refused, spec, name)
        if path is not None:
            return path
    return "spec.podTemplate"


def reject(
    job: Mapping[str, Any],
    pods: list[Mapping[str, Any]],
    error: SpecError,
    *,
    service_exists: bool,
    now: dt.datetime,
    backoff: Backoff = Backoff(),
    default_store: StateStore | None = None,
) -> Plan:
    """The pass after the API server refused to create a worker pod or the Service:
    ``error`` (from rejection_error) reported as an invalid spec, the workers stopped."""
    return _Planner(job, pods, service_exists, now, backoff, default_store).invalid(error)


class _Planner:
    def __init__(
        self,
        job: Mapping[str, Any],
        pods: list[Mapping[str, Any]],
        service_exists: bool,
        now: dt.datetime,
        backoff: Backoff,
        default_store: StateStore | None,
    ) -> None:
        self.job = job
        self.meta = job.get("metadata") or {}
        self.name = self.meta["name"]
        self.old = dict(job.get("status") or {})
        self.conditions: list[dict[str, Any]] = [dict(c) for c in self.old.get("conditions") or []]
        self.service_exists = service_exists
        self.now = now
        self.stamp = format_time(now)
        self.backoff = backoff
        self.default_store = default_store
        all_workers = [WorkerPod.from_pod(p) for p in pods]
        self.occupied = {w.name for w in all_workers}
        uid = self.meta.get("uid")
        self.workers = [w for w in all_workers if w.owner_uid == uid]
        self.live = [w for w in self.workers if not w.deleting]
        self.out = Plan()
        self.status: dict[str, Any] = {}
        self.deleting: set[str] = set()

    # ------------------------------------------------------------------ steps

    def run(self) -> Plan:
        phase = self.old.get("phase")
        failed_reason = (cond.find(self.conditions, cond.FAILED) or {}).get("reason")
        succeeded = cond.is_true(self.conditions, cond.SUCCEEDED)
        if succeeded or (phase == FAILED and failed_reason in TERMINAL_REASONS):
            self.stop_all(active_only=True)
            return self.finish(SUCCEEDED if succeeded else FAILED)
        try:
            validate_job_name(self.name)
            spec = parse_spec(self.job.get("spec") or {}, default_store=self.default_store)
        except SpecError as exc:
            return self.invalid(exc)
        if cond.is_true(self.conditions, cond.FAILED):
            if self.refused_by_the_api() and not spec.suspend and not any(w.active for w in self.live):
                return self.retry_refused(spec)
            self.set(cond.FAILED, False, "SpecFixed", "the spec is valid again")
            self.event("Normal", "SpecFixed", "the spec is valid again; the job continues")
        if not self.service_exists:
            self.out.create_service = build_service(self.job)
        if not cond.is_true(self.conditions, cond.CREATED):
            self.set(
                cond.CREATED, True, "JobCreated",
                f"rendezvous Service {rendezvous_service_name(self.name)} and "
                f"{spec.replicas} worker pod(s)",
            )
        winner = next((w for w in self.live if w.phase == "Succeeded"), None)
        if winner is not None:
            return self.succeed(winner)
        if spec.suspend:
            return self.suspend()
        if cond.is_true(self.conditions, cond.SUSPENDED):
            self.set(cond.SUSPENDED, False, "JobResumed", "workers recreated; training resumes from the last checkpoint")
            self.event("Normal", "JobResumed", "resuming from the last checkpoint")
        if self.count_failure(spec):
            return self.finish(FAILED)
        self.place_workers(spec)
        return self.finish(self.running_phase(spec))

    def invalid(self, exc: SpecError) -> Plan:
        message = str(exc)
        current = cond.find(self.conditions, cond.FAILED) or {}
        if current.get("reason") != "InvalidSpec" or current.get("message") != message:
            self.event("Warning", "InvalidSpec", message)
        self.set(cond.FAILED, True, "InvalidSpec", message)
        self.set_false(cond.RUNNING, "InvalidSpec", "the spec is invalid")
        self.stop_all(active_only=True)
        return self.finish(FAILED)

    def refused_by_the_api(self) -> bool:
        """Whether the job is Failed because the API server refused its workers (reject())."""
        failure = cond.find(self.conditions, cond.FAILED) or {}
        return failure.get("reason") == "InvalidSpec" and f": {REJECTED}: " in (failure.get("message") or "")

    def retry_refused(self, spec: JobSpec) -> Plan:
        """Send the refused objects again (a namespace's policy or a ServiceAccount may have
        changed since): the job stays Failed until the API server accepts a worker."""
        if not self.service_exists:
            self.out.create_service = build_service(self.job)
        self.place_workers(spec)
        return self.finish(FAILED)

    def succeed(self, winner: WorkerPod) -> Plan:
        message = f"worker pod {winner.name} finished training (exit code 0)"
        self.set(cond.SUCCEEDED, True, "TrainingSucceeded", message)
        self.set_false(cond.RUNNING, "TrainingSucceeded", "training finished")
        self.set_false(cond.RESTARTING, "TrainingSucceeded", "training finished")
        self.status["completionTime"] = self.old.get("completionTime") or self.stamp
        self.status["restartAfter"] = None
        self.event("Normal", "TrainingSucceeded", message)
        self.stop_all(active_only=True)
        return self.finish(SUCCEEDED)

    def suspend(self) -> Plan:
        if not cond.is_true(self.conditions, cond.SUSPENDED):
            self.event("Normal", "JobSuspended", "workers removed; state and checkpoints kept")
        self.set(cond.SUSPENDED, True, "JobSuspended", "spec.suspend is true: workers removed, state kept")
        self.set_false(cond.RUNNING, "JobSuspended", "the job is suspended")
        self.set_false(cond.RESTARTING, "JobSuspended", "the job is suspended")
        self.status["restartAfter"] = None
        self.stop_all(active_only=False)
        return self.finish(SUSPENDED)

    def count_failure(self, spec: JobSpec) -> bool:
        """Handle failed pods; True when the backoff limit is exceeded (the job failed)."""
        counted_uid = (self.old.get("lastFailure") or {}).get("uid")
        failed = sorted((w for w in self.live if w.phase == "Failed"), key=lambda w: w.index)
        uncounted = [w for w in failed if w.uid != counted_uid]
        for worker in failed:
            if worker.uid == counted_uid:
                self.delete(worker)
        if not uncounted:
            return False
        worker = uncounted[0]
        if len(uncounted) > 1:
            self.out.requeue_after = 0.0  # count the next one in the next pass
        restarts = int(self.old.get("restarts") or 0)
        self.status["lastFailure"] = {
            "pod": worker.name,
            "uid": worker.uid,
            "exitCode": worker.exit_code,
            "reason": worker.reason or "",
            "time": self.stamp,
        }
        if restarts + 1 > spec.backoff_limit:
            message = (
                f"worker pod {worker.name} failed ({worker.failure}); backoffLimit "
                f"{spec.backoff_limit} reached after {restarts} restart(s)"
            )
            self.set(cond.FAILED, True, "BackoffLimitExceeded", message)
            self.set_false(cond.RUNNING, "BackoffLimitExceeded", "the job failed")
            self.set_false(cond.RESTARTING, "BackoffLimitExceeded", "the job failed")
            self.status["completionTime"] = self.stamp
            self.status["restartAfter"] = None
            self.event("Warning", "BackoffLimitExceeded", message)
            self.out.requeue_after = None
            self.stop_all(active_only=True)
            return True
        restarts += 1
        delay = self.backoff.delay(restarts)
        message = (
            f"worker pod {worker.name} failed ({worker.failure}); replacing it in {delay:g}s "
            f"(restart {restarts} of backoffLimit {spec.backoff_limit})"
        )
        self.status["restarts"] = restarts
        self.status["restartAfter"] = format_time(self.now + dt.timedelta(seconds=delay))
        self.set(cond.RESTARTING, True, "WorkerFailed", message)
        self.event("Warning", "WorkerFailed", message)
        self.out.restarts_counted += 1
        self.delete(worker)
        return False

    def place_workers(self, spec: JobSpec) -> None:
        """Create missing slots (after any backoff) and remove slots above spec.replicas."""
        for worker in self.live:
            if worker.index >= spec.replicas or worker.index < 0:
                self.delete(worker)
        restart_after = parse_time(self.status.get("restartAfter", self.old.get("restartAfter")))
        if restart_after is not None and self.now < restart_after:
            wait = (restart_after - self.now).total_seconds()
            self.out.requeue_after = wait if self.out.requeue_after is None else min(wait, self.out.requeue_after)
            return
        for index in range(spec.replicas):
            if worker_pod_name(self.name, index) not in self.occupied:
                self.out.create_pods.append(build_worker_pod(self.job, spec, index))

    def running_phase(self, spec: JobSpec) -> str:
        active = [w for w in self.live if w.active and w.name not in self.deleting]
        ready = sum(1 for w in active if w.ready)
        restart_after = parse_time(self.status.get("restartAfter", self.old.get("restartAfter")))
        waiting = restart_after is not None and self.now < restart_after
        if cond.is_true(self.conditions, cond.RESTARTING):
            if waiting or ready < spec.replicas:
                return RESTARTING
            self.set(cond.RESTARTING, False, "WorkersRecovered", f"{ready}/{spec.replicas} workers running again")
            self.status["restartAfter"] = None
        note = _waiting_note(active)
        running = f"{ready}/{spec.replicas} workers running" + note
        if ready >= spec.min_replicas:
            self.set(cond.RUNNING, True, "WorkersRunning", running)
            if not self.old.get("startTime"):
                self.status["startTime"] = self.stamp
            return RUNNING
        if note:  # a stuck worker: say why, even before the job ever ran
            self.set(cond.RUNNING, False, "WorkersPending", running)
        else:
            self.set_false(cond.RUNNING, "WorkersPending", running)
        return PENDING

    # ---------------------------------------------------------------- helpers

    def finish(self, phase: str) -> Plan:
        active = [w for w in self.live if w.active and w.name not in self.deleting]
        desired = {
            "phase": phase,
            "conditions": self.conditions,
            "replicas": len(active),
            "readyReplicas": sum(1 for w in active if w.ready),
            "selector": worker_selector(self.name),
            "observedGeneration": self.meta.get("generation"),
            **self.status,
        }
        if desired["observedGeneration"] is None:
            del desired["observedGeneration"]
        if phase != self.old.get("phase") and not self.out.events:
            self.event("Normal", f"Job{phase}", f"phase {self.old.get('phase') or 'None'} -> {phase}")
        self.out.phase = phase
        self.out.status = {k: v for k, v in desired.items() if self.old.get(k) != v}
        return self.out

    def stop_all(self, *, active_only: bool) -> None:
        for worker in self.live:
            if worker.active or not active_only:
                self.delete(worker)

    def delete(self, worker: WorkerPod) -> None:
        if worker.name not in self.deleting:
            self.deleting.add(worker.name)
            self.out.delete_pods.append(PodDeletion(worker.name, worker.uid))

    def set(self, type_: str, status: bool, reason: str, message: str) -> None:
        self.conditions = cond.set_condition(self.conditions, type_, status, reason, message, self.stamp)

    def set_false(self, type_: str, reason: str, message: str) -> None:
        self.conditions = cond.clear_condition(self.conditions, type_, reason, message, self.stamp)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.out.events.append(Event(type_, reason, message))


def _waiting_note(active: list[WorkerPod]) -> str:
    """``; demo-worker-1: ImagePullBackOff: ...`` for the first worker stuck on its way to
    running (a missing Secret, an image that cannot be pulled, no node that fits), so the
    condition says why the job waits; empty when none is stuck."""
    stuck = sorted((w for w in active if w.waiting), key=lambda w: w.index)
    if not stuck:
        return ""
    more = f" (and {len(stuck) - 1} more)" if len(stuck) > 1 else ""
    return f"; {stuck[0].name}: {stuck[0].waiting}{more}"
