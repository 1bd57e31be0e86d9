"""The pure planner: from an observed job and its pods to creations, deletions and status."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import logging
from typing import Any, Callable

import kopf
import pytest
from prometheus_client import CollectorRegistry, Gauge

from autolrs_operator import controller
from autolrs_operator.builders import build_service, build_worker_pod
from autolrs_operator.kube import KubeError
from autolrs_operator.metrics import PhaseBook
from autolrs_operator.reconcile import Backoff, Plan, format_time, plan, reject, rejection_error
from autolrs_operator.settings import OperatorSettings
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
    assert BACKOFF.delay(5000) == 60  # backoffLimit has no maximum: no float overflow


def test_a_job_with_thousands_of_restarts_still_plans(make_job: Callable[..., dict]) -> None:
    job = make_job(backoffLimit=100000, status={"restarts": 4999})
    decided = run(job, [failed(job, 0, uid="a")])
    assert decided.status["restarts"] == 5000
    assert decided.status["restartAfter"] == format_time(NOW + dt.timedelta(seconds=60))


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


# ------------------------------------------------- objects the API server refuses to create

DUPLICATE = (
    'Pod "demo-worker-0" is invalid: [spec.volumes[3].name: Duplicate value: "data", '
    'spec.containers[0].volumeMounts[2].mountPath: Invalid value: "/data": must be unique]'
)


def refused_job(make_job: Callable[..., dict]) -> dict[str, Any]:
    return make_job(podTemplate={
        "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cache"}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    })


def test_rejection_error_names_the_job_field_behind_the_pod_field(make_job: Callable[..., dict]) -> None:
    job = refused_job(make_job)
    built = build_worker_pod(job, parse_spec(job["spec"]), 0)
    from_causes = rejection_error(job, built, DUPLICATE, ["spec.volumes[3].name"])
    assert str(from_causes) == f"spec.podTemplate.volumes[1].name: rejected by the API server: {DUPLICATE}"
    assert from_causes.path == "spec.podTemplate.volumes[1].name"
    # Without causes (as some admission plugins answer), the first field in the message counts.
    assert rejection_error(job, built, DUPLICATE).path == "spec.podTemplate.volumes[1].name"
    forbidden = 'pods "demo-worker-0" is forbidden: violates PodSecurity "restricted:latest": hostPath volumes'
    assert str(rejection_error(job, built, forbidden)) == f"spec.podTemplate: rejected by the API server: {forbidden}"
    operator_part = 'Pod "demo-worker-0" is invalid: spec.volumes[0].persistentVolumeClaim: Invalid value'
    assert rejection_error(job, built, operator_part).path == "spec.podTemplate"
    service = rejection_error(job, build_service(job), 'services "demo-rdzv" is forbidden: denied by policy')
    assert str(service) == 'spec: rejected by the API server: services "demo-rdzv" is forbidden: denied by policy'


def test_rejection_error_keeps_the_message_to_one_short_line(make_job: Callable[..., dict]) -> None:
    job = make_job()
    long = "admission webhook \"policy.example.com\" denied the request:\n" + "reason " * 100
    message = str(rejection_error(job, build_worker_pod(job, parse_spec(job["spec"]), 0), long))
    assert "\n" not in message and message.endswith("...")
    assert len(message) == len("spec.podTemplate: rejected by the API server: ") + 300


def test_a_refusal_fails_the_job_once_and_the_workers_are_sent_again_quietly(make_job: Callable[..., dict]) -> None:
    job = refused_job(make_job)
    first = run(job, [], service=False)
    assert len(first.create_pods) == 2
    job = after(job, first)
    error = rejection_error(job, first.create_pods[0], DUPLICATE, ["spec.volumes[3].name"])
    refused = reject(job, [], error, service_exists=True, now=NOW, backoff=BACKOFF)
    failure = condition(refused, "Failed")
    assert (failure["status"], failure["reason"]) == ("True", "InvalidSpec")
    assert failure["message"].startswith("spec.podTemplate.volumes[1].name: rejected by the API server: ")
    assert refused.status["phase"] == "Failed" and refused.create_pods == []
    assert [(e.type, e.reason, e.message) for e in refused.events] == [("Warning", "InvalidSpec", failure["message"])]
    job = after(job, refused)
    # Later passes send the pods again, the job staying Failed, with no new Event or status.
    retry = run(job, [], now=NOW + dt.timedelta(seconds=30))
    assert [p["metadata"]["name"] for p in retry.create_pods] == ["demo-worker-0", "demo-worker-1"]
    assert retry.status == {} and retry.events == []
    again = reject(job, [], error, service_exists=True, now=NOW + dt.timedelta(seconds=30), backoff=BACKOFF)
    assert again.status == {} and again.events == []
    # Accepted at last (a policy changed): the job goes on.
    accepted = run(job, [pod(job, 0), pod(job, 1)], now=NOW + dt.timedelta(seconds=60))
    assert condition(accepted, "Failed")["status"] == "False"
    assert condition(accepted, "Failed")["reason"] == "SpecFixed"
    assert accepted.status["phase"] == "Pending"


def test_a_refusal_stops_the_workers_that_were_created(make_job: Callable[..., dict]) -> None:
    job = refused_job(make_job)
    error = rejection_error(job, build_worker_pod(job, parse_spec(job["spec"]), 1), DUPLICATE)
    refused = reject(job, [pod(job, 0)], error, service_exists=True, now=NOW, backoff=BACKOFF)
    assert [d.name for d in refused.delete_pods] == ["demo-worker-0"]


def test_a_spec_error_found_by_the_operator_is_not_retried_as_a_refusal(make_job: Callable[..., dict]) -> None:
    job = make_job(status={"phase": "Failed", "conditions": [
        {"type": "Failed", "status": "True", "reason": "InvalidSpec", "message": "spec.autolrs.minLR: bad"}]})
    decided = run(job, [])
    assert condition(decided, "Failed")["reason"] == "SpecFixed" and len(decided.create_pods) == 2


# ------------------------------------------------------------- the controller's pass, with I/O


class FakeKube:
    """KubeApi's methods over in-memory objects; ``refuse`` answers pod creates with an error."""

    def __init__(self, job: dict[str, Any], refuse: KubeError | None = None) -> None:
        self.job = job
        self.refuse = refuse
        self.pods: dict[str, dict[str, Any]] = {}
        self.service = False
        self.created: list[str] = []

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.job)

    def list_worker_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(p) for p in self.pods.values()]

    def service_exists(self, namespace: str, name: str) -> bool:
        return self.service

    def create(self, obj: dict[str, Any]) -> bool:
        if obj["kind"] == "Pod" and self.refuse is not None:
            raise self.refuse
        self.created.append(obj["metadata"]["name"])
        if obj["kind"] == "Service":
            self.service = True
        else:
            self.pods[obj["metadata"]["name"]] = {**obj, "metadata": {**obj["metadata"], "uid": "u"}}
        return True

    def delete_pod(self, namespace: str, name: str, uid: str) -> bool:
        return self.pods.pop(name, None) is not None

    def patch_job_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        merged = dict(self.job.get("status") or {})
        for key, value in status.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        self.job["status"] = merged


def api_error(code: int, message: str, fields: tuple[str, ...] = ()) -> KubeError:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": {400: "BadRequest", 403: "Forbidden", 422: "Invalid"}.get(code, "InternalError"),
            "code": code, "details": {"causes": [{"field": f, "message": "x"} for f in fields]}}
    return KubeError("POST", "/api/v1/namespaces/ns/pods", code, json.dumps(body))


@pytest.fixture
def posted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    """The Events the controller posts (kopf.event needs a running operator)."""
    events: list[tuple[str, str, str]] = []
    monkeypatch.setattr(kopf, "event", lambda obj, *, type, reason, message: events.append((type, reason, message)))
    return events


def reconcile_once(api: FakeKube) -> Plan | None:
    settings = OperatorSettings(backoff=BACKOFF)
    book = PhaseBook(Gauge("test_jobs", "test", ["phase"], registry=CollectorRegistry()))
    return asyncio.run(controller.reconcile(api, settings, book, "ns", "demo", logging.getLogger("test")))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "code,message,fields,path",
    [
        (422, DUPLICATE, ("spec.volumes[3].name", "spec.containers[0].volumeMounts[2].mountPath"),
         "spec.podTemplate.volumes[1].name"),
        (400, "Pod in version \"v1\" cannot be handled as a Pod: json: cannot unmarshal string", (), "spec.podTemplate"),
        (403, 'pods "demo-worker-0" is forbidden: violates PodSecurity "restricted:latest": hostPath volumes', (),
         "spec.podTemplate"),
        (403, 'pods "demo-worker-0" is forbidden: error looking up service account ns/trainer: not found', (),
         "spec.podTemplate"),
    ],
)
def test_a_refused_pod_becomes_a_failed_condition_and_a_warning(
    make_job: Callable[..., dict], posted: list, code: int, message: str, fields: tuple[str, ...], path: str,
) -> None:
    api = FakeKube(refused_job(make_job), refuse=api_error(code, message, fields))
    decided = reconcile_once(api)
    assert decided is not None and decided.phase == "Failed"
    failure = next(c for c in api.job["status"]["conditions"] if c["type"] == "Failed")
    assert (failure["status"], failure["reason"]) == ("True", "InvalidSpec")
    assert failure["message"] == f"{path}: rejected by the API server: {message}"
    assert api.job["status"]["phase"] == "Failed"
    assert ("Warning", "InvalidSpec", failure["message"]) in posted
    assert api.created == ["demo-rdzv"]
    # The next pass sends the pods again and is refused again: no second Event, no flapping.
    posted.clear()
    before = copy.deepcopy(api.job["status"])
    assert reconcile_once(api).phase == "Failed"
    assert posted == [] and api.job["status"] == before
    # Accepted once the policy allows it: the job continues.
    api.refuse = None
    reconcile_once(api)
    assert sorted(api.pods) == ["demo-worker-0", "demo-worker-1"]
    assert reconcile_once(api).phase == "Pending"
    assert next(c for c in api.job["status"]["conditions"] if c["type"] == "Failed")["reason"] == "SpecFixed"


@pytest.mark.parametrize(
    "code,message",
    [
        (500, "etcdserver: request timed out"),
        (503, "the server is currently unable to handle the request"),
        (429, "too many requests"),
        (403, 'pods is forbidden: User "system:serviceaccount:ops:autolrs" cannot create resource "pods"'),
        (403, 'pods "demo-worker-0" is forbidden: exceeded quota: gpus, requested: nvidia.com/gpu=4'),
        (403, 'pods "demo-worker-0" is forbidden: unable to create new content in namespace ns because it is being terminated'),
    ],
)
def test_transient_create_errors_are_raised_for_a_retry_not_reported(
    make_job: Callable[..., dict], posted: list, code: int, message: str
) -> None:
    api = FakeKube(refused_job(make_job), refuse=api_error(code, message))
    with pytest.raises(KubeError) as caught:
        reconcile_once(api)
    assert caught.value.status == code and not caught.value.rejected
    assert "Failed" not in [c["type"] for c in api.job["status"].get("conditions", [])]
    assert [e for e in posted if e[1] == "InvalidSpec"] == []


def test_a_refusal_for_a_spec_since_changed_is_not_recorded(make_job: Callable[..., dict], posted: list) -> None:
    api = FakeKube(refused_job(make_job), refuse=api_error(422, DUPLICATE))
    real_get = api.get_job
    calls = []

    def get_job(namespace: str, name: str) -> dict[str, Any] | None:
        calls.append(name)
        job = real_get(namespace, name)
        if len(calls) > 1:  # the user edited the spec while the pods were being created
            job["metadata"]["generation"] = 2
        return job

    api.get_job = get_job  # type: ignore[method-assign]
    decided = reconcile_once(api)
    assert decided is not None and decided.requeue_after == 0.0
    assert "Failed" not in [c["type"] for c in api.job["status"].get("conditions", [])]
    assert [e[1] for e in posted] == ["JobPending"]  # the first pass's own Event, nothing more


def test_kube_error_reads_the_status_object() -> None:
    error = api_error(422, DUPLICATE, ("spec.volumes[3].name",))
    assert (error.message, error.fields, error.rejected) == (DUPLICATE, ["spec.volumes[3].name"], True)
    plain = KubeError("POST", "/api/v1/namespaces/ns/pods", 502, "<html>bad gateway</html>")
    assert (plain.message, plain.fields, plain.rejected) == ("<html>bad gateway</html>", [], False)
