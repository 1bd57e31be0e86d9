"""The pure planner: from an observed job and its pods to creations, deletions and status."""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable

import pytest

from autolrs_operator.builders import build_worker_pod
from autolrs_operator.reconcile import Backoff, Plan, format_time, plan
from autolrs_operator.spec import parse_spec

NOW = dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.timezone.utc)
BACKOFF = Backoff(base_seconds=10, max_seconds=60)


def pod(job: dict[str, Any], index: int, phase: str = "Pending", uid: str | None = None, **extra: Any) -> dict[str, Any]:
    built = build_worker_pod(job, parse_spec(job["spec"]), index)
    built["metadata"]["uid"] = uid or f"pod-{index}"
    built["status"] = {"phase": phase, **extra}
    return built


def failed(job: dict[str, Any], index: int, uid: str, code: int = 1) -> dict[str, Any]:
    return pod(job, index, "Failed", uid=uid, containerStatuses=[
        {"name": "trainer", "state": {"terminated": {"exitCode": code, "reason": "Error"}}}])


def run(job: dict[str, Any], pods: list[dict[str, Any]], now: dt.datetime = NOW, service: bool = True) -> Plan:
    return plan(job, pods, service_exists=service, now=now, backoff=BACKOFF)


def after(job: dict[str, Any], decided: Plan) -> dict[str, Any]:
    """The job as it reads after the plan's status patch (merge-patch semantics)."""
    status = dict(job.get("status") or {})
    for key, value in decided.status.items():
        if value is None:
            status.pop(key, None)
        else:
            status[key] = value
    return {**job, "status": status}


def condition(job_or_plan: Any, type_: str) -> dict[str, Any]:
    status = job_or_plan.status if isinstance(job_or_plan, Plan) else job_or_plan["status"]
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_new_job_gets_service_and_pods_and_is_pending(make_job: Callable[..., dict]) -> None:
    job = make_job()
    decided = run(job, [], service=False)
    assert decided.create_service["metadata"]["name"] == "demo-rdzv"
    assert [p["metadata"]["name"] for p in decided.create_pods] == ["demo-worker-0", "demo-worker-1"]
    assert decided.status["phase"] == "Pending" and decided.phase == "Pending"
    assert condition(decided, "Created")["reason"] == "JobCreated"
    assert decided.status["selector"] == "autolrs.io/job=demo,autolrs.io/role=worker"
    assert decided.status["observedGeneration"] == 1


def test_running_once_workers_run(make_job: Callable[..., dict]) -> None:
    job = make_job()
    job = after(job, run(job, [], service=False))
    decided = run(job, [pod(job, 0, "Running"), pod(job, 1, "Running")])
    assert decided.create_pods == [] and decided.delete_pods == []
    assert decided.status["phase"] == "Running"
    assert decided.status["readyReplicas"] == 2
    assert condition(decided, "Running") | {"lastTransitionTime": None} == {
        "type": "Running", "status": "True", "reason": "WorkersRunning",
        "message": "2/2 workers running", "lastTransitionTime": None}
    assert decided.status["startTime"] == format_time(NOW)
    assert any(e.reason == "JobRunning" for e in decided.events)


def test_unready_running_pods_do_not_count(make_job: Callable[..., dict]) -> None:
    job = make_job()
    decided = run(job, [pod(job, 0, "Running", conditions=[{"type": "Ready", "status": "False"}]), pod(job, 1)])
    assert decided.status["readyReplicas"] == 0 and decided.status["phase"] == "Pending"


def test_a_settled_job_plans_nothing(make_job: Callable[..., dict]) -> None:
    job = make_job()
    pods = [pod(job, 0, "Running"), pod(job, 1, "Running")]
    job = after(job, run(job, pods))
    again = run(job, pods, now=NOW + dt.timedelta(minutes=5))
    assert again.status == {} and again.create_pods == [] and again.delete_pods == [] and again.events == []


def test_failed_pod_is_counted_deleted_and_replaced_after_backoff(make_job: Callable[..., dict]) -> None:
    job = make_job()
    pods = [pod(job, 0, "Running"), failed(job, 1, uid="bad-1", code=137)]
    job = after(job, run(job, [pod(job, 0, "Running"), pod(job, 1, "Running")]))
    decided = run(job, pods)
    assert decided.status["restarts"] == 1 and decided.restarts_counted == 1
    assert decided.status["phase"] == "Restarting"
    assert decided.status["lastFailure"]["uid"] == "bad-1"
    assert decided.status["lastFailure"]["exitCode"] == 137
    assert decided.status["restartAfter"] == format_time(NOW + dt.timedelta(seconds=10))
    assert [(d.name, d.uid) for d in decided.delete_pods] == [("demo-worker-1", "bad-1")]
    assert decided.create_pods == []
    assert decided.requeue_after == pytest.approx(10)
    assert condition(decided, "Restarting")["reason"] == "WorkerFailed"
    assert "exit code 137" in condition(decided, "Restarting")["message"]
    assert [e.reason for e in decided.events] == ["WorkerFailed"]

    job = after(job, decided)
    # The same observation again (the deletion not seen yet): counted once, deleted again.
    repeat = run(job, pods)
    assert "restarts" not in repeat.status and repeat.restarts_counted == 0
    assert [d.uid for d in repeat.delete_pods] == ["bad-1"]
    # Pod gone, backoff not over: still no replacement.
    assert run(job, pods[:1], now=NOW + dt.timedelta(seconds=5)).create_pods == []
    # Backoff over: the slot is refilled under the same name.
    refill = run(job, pods[:1], now=NOW + dt.timedelta(seconds=11))
    assert [p["metadata"]["name"] for p in refill.create_pods] == ["demo-worker-1"]
    assert refill.status.get("phase", "Restarting") == "Restarting"
    job = after(job, refill)
    # Both running again: Running, restartAfter cleared.
    healed = run(job, [pods[0], pod(job, 1, "Running", uid="new-1")], now=NOW + dt.timedelta(seconds=12))
    assert healed.status["phase"] == "Running" and healed.status["restartAfter"] is None
    assert condition(healed, "Restarting")["status"] == "False"
    assert condition(healed, "Restarting")["reason"] == "WorkersRecovered"


def test_backoff_grows_exponentially_and_is_capped() -> None:
    assert [BACKOFF.delay(n) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]


def test_two_failures_are_counted_one_pass_at_a_time(make_job: Callable[..., dict]) -> None:
    job = make_job()
    pods = [failed(job, 0, uid="a"), failed(job, 1, uid="b")]
    first = run(job, pods)
    assert first.status["restarts"] == 1 and first.requeue_after == 0
    second = run(after(job, first), pods)
    assert second.status["restarts"] == 2
    assert {d.uid for d in second.delete_pods} == {"a", "b"}


def test_backoff_limit_fails_the_job(make_job: Callable[..., dict]) -> None:
    job = make_job(backoffLimit=1, status={"restarts": 1, "phase": "Running"})
    decided = run(job, [pod(job, 0, "Running"), failed(job, 1, uid="x")])
    assert decided.status["phase"] == "Failed"
    failure = condition(decided, "Failed")
    assert failure["reason"] == "BackoffLimitExceeded"
    assert "backoffLimit 1 reached after 1 restart(s)" in failure["message"]
    assert "restarts" not in decided.status  # stays at the limit
    assert [d.name for d in decided.delete_pods] == ["demo-worker-0"]  # the failed pod stays for logs
    assert decided.create_pods == [] and decided.status["completionTime"] == format_time(NOW)
    # Terminal: nothing is recreated later.
    later = run(after(job, decided), [failed(job, 1, uid="x")], now=NOW + dt.timedelta(hours=1))
    assert later.create_pods == [] and later.status == {}


def test_success_of_any_worker_succeeds_the_job_and_removes_the_rest(make_job: Callable[..., dict]) -> None:
    job = make_job()
    decided = run(job, [pod(job, 0, "Succeeded"), pod(job, 1, "Running")])
    assert decided.status["phase"] == "Succeeded"
    assert condition(decided, "Succeeded")["reason"] == "TrainingSucceeded"
    assert [d.name for d in decided.delete_pods] == ["demo-worker-1"]
    assert decided.create_pods == []
    later = run(after(job, decided), [pod(job, 0, "Succeeded")], now=NOW + dt.timedelta(hours=1))
    assert later.create_pods == [] and later.status == {}


def test_scale_up_and_down(make_job: Callable[..., dict]) -> None:
    job = make_job(replicas=3)
    up = run(job, [pod(job, 0, "Running"), pod(job, 1, "Running")])
    assert [p["metadata"]["name"] for p in up.create_pods] == ["demo-worker-2"]
    job = make_job(replicas=1)
    down = run(job, [pod(job, 0, "Running"), pod(job, 1, "Running"), pod(job, 2, "Running")])
    assert [d.name for d in down.delete_pods] == ["demo-worker-1", "demo-worker-2"]
    assert down.status["replicas"] == 1 and down.status["phase"] == "Running"
    assert down.restarts_counted == 0


def test_suspend_removes_workers_and_resume_recreates_them(make_job: Callable[..., dict]) -> None:
    job = make_job(suspend=True, status={"restarts": 2, "phase": "Running"})
    suspended = run(job, [pod(job, 0, "Running"), failed(job, 1, uid="f")])
    assert suspended.status["phase"] == "Suspended"
    assert {d.name for d in suspended.delete_pods} == {"demo-worker-0", "demo-worker-1"}
    assert suspended.restarts_counted == 0 and "restarts" not in suspended.status
    assert condition(suspended, "Suspended")["reason"] == "JobSuspended"
    job = after(job, suspended)
    job["spec"]["suspend"] = False
    resumed = run(job, [])
    assert [p["metadata"]["name"] for p in resumed.create_pods] == ["demo-worker-0", "demo-worker-1"]
    assert condition(resumed, "Suspended")["status"] == "False"
    assert condition(resumed, "Suspended")["reason"] == "JobResumed"
    assert resumed.status["phase"] == "Pending"


def test_pods_being_deleted_block_their_name_but_do_not_count(make_job: Callable[..., dict]) -> None:
    job = make_job()
    leaving = failed(job, 1, uid="old")
    leaving["metadata"]["deletionTimestamp"] = format_time(NOW)
    decided = run(job, [pod(job, 0, "Running"), leaving])
    assert decided.create_pods == [] and decided.restarts_counted == 0 and decided.delete_pods == []


def test_pods_of_another_incarnation_are_ignored(make_job: Callable[..., dict]) -> None:
    job = make_job()
    stranger = failed(job, 0, uid="s")
    stranger["metadata"]["ownerReferences"][0]["uid"] = "previous-job"
    decided = run(job, [stranger])
    assert decided.restarts_counted == 0 and decided.delete_pods == []
    assert [p["metadata"]["name"] for p in decided.create_pods] == ["demo-worker-1"]


def test_invalid_spec_fails_with_a_condition_naming_the_field(make_job: Callable[..., dict]) -> None:
    job = make_job()
    running = pod(job, 0, "Running")
    job["spec"]["autolrs"] = {"minLR": 1.0, "maxLR": 0.5}
    decided = run(job, [running])
    assert decided.status["phase"] == "Failed"
    failure = condition(decided, "Failed")
    assert failure["reason"] == "InvalidSpec"
    assert failure["message"].startswith("spec.autolrs.minLR:")
    assert decided.create_pods == [] and decided.create_service is None
    assert [d.name for d in decided.delete_pods] == ["demo-worker-0"]
    assert [(e.type, e.reason) for e in decided.events] == [("Warning", "InvalidSpec")]
    job = after(job, decided)
    assert run(job, []).events == []  # reported once, not on every pass
    job["spec"]["autolrs"] = {"minLR": 0.01, "maxLR": 0.5}
    fixed = run(job, [])
    assert condition(fixed, "Failed")["status"] == "False"
    assert fixed.status["phase"] == "Pending" and len(fixed.create_pods) == 2


def waiting(reason: str, message: str | None = None) -> dict[str, Any]:
    state = {"reason": reason, **({"message": message} if message else {})}
    return {"containerStatuses": [{"name": "trainer", "ready": False, "state": {"waiting": state}}]}


def test_pending_condition_says_why_a_worker_cannot_start(make_job: Callable[..., dict]) -> None:
    job = make_job()
    secret = waiting("CreateContainerConfigError", 'secret "autolrs-redis" not found')
    decided = run(job, [pod(job, 0, **secret), pod(job, 1, **waiting("ContainerCreating"))])
    assert decided.status["phase"] == "Pending"
    assert condition(decided, "Running")["reason"] == "WorkersPending"
    assert condition(decided, "Running")["message"] == (
        '0/2 workers running; demo-worker-0: CreateContainerConfigError: secret "autolrs-redis" not found')
    unschedulable = {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                     "message": "0/3 nodes are available:\n 3 Insufficient nvidia.com/gpu."}]}
    pulling = waiting("ImagePullBackOff", "Back-off pulling image " + "x" * 300)
    decided = run(job, [pod(job, 0, **unschedulable), pod(job, 1, **pulling)])
    message = condition(decided, "Running")["message"]
    assert message == ("0/2 workers running; demo-worker-0: Unschedulable: 0/3 nodes are available: "
                       "3 Insufficient nvidia.com/gpu. (and 1 more)")
    decided = run(job, [pod(job, 0, "Running"), pod(job, 1, **pulling)])
    message = condition(decided, "Running")["message"]
    assert condition(decided, "Running")["status"] == "True"  # minReplicas 1 run
    assert message.startswith("1/2 workers running; demo-worker-1: ImagePullBackOff: Back-off pulling image xxx")
    assert message.endswith("...") and len(message) < 260
    decided = run(job, [pod(job, 0, **waiting("ContainerCreating")), pod(job, 1)])
    assert "Running" not in [c["type"] for c in decided.status["conditions"]]  # merely starting


def test_invalid_name_is_reported(make_job: Callable[..., dict]) -> None:
    decided = run(make_job(name="Bad_Name"), [])
    assert condition(decided, "Failed")["message"].startswith("metadata.name:")


def test_conditions_keep_their_transition_time_while_unchanged(make_job: Callable[..., dict]) -> None:
    job = make_job()
    pods = [pod(job, 0, "Running"), pod(job, 1, "Running")]
    job = after(job, run(job, pods))
    later = run(job, [pods[0], pod(job, 1, "Pending")], now=NOW + dt.timedelta(seconds=30))
    assert condition(later, "Created")["lastTransitionTime"] == format_time(NOW)
    assert condition(later, "Running")["lastTransitionTime"] == format_time(NOW)  # still True (1 >= min 1)
    assert condition(later, "Running")["message"] == "1/2 workers running"
