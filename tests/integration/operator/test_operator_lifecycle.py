"""The real operator (kopf subprocess) against the KMock cluster, driven by kubectl and the
kubernetes client: create, scale, suspend, failure and backoff, success, invalid spec."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest

from tests.helpers.dashboard import dashboard_queries, operator_panel
from tests.helpers.kmock_cluster import ApiError, ClusterRunner, Kube, OperatorProcess, job_manifest, wait_for

pytestmark = pytest.mark.slow


def metric(port: int, name: str, labels: str = "") -> float:
    """One sample from the operator's /metrics (0 when absent)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.split()[-1])
    return 0.0


def test_create_makes_service_and_pods_then_runs(kube: Kube, operator: OperatorProcess) -> None:
    kube.apply(job_manifest("create"))
    wait_for(lambda: kube.pod_names("create") == ["create-worker-0", "create-worker-1"], what="two worker pods")
    job = kube.job("create")
    service = kube.core.read_namespaced_service("create-rdzv", "default")
    assert service.spec.cluster_ip == "None"
    assert service.metadata.labels == {"autolrs.io/job": "create", "autolrs.io/role": "rendezvous"}
    for pod in kube.pods("create"):
        assert pod.metadata.labels["autolrs.io/role"] == "worker"
        [owner] = pod.metadata.owner_references
        assert (owner.kind, owner.name, owner.uid, owner.controller) == ("AutoLRSJob", "create", job["metadata"]["uid"], True)
        env = {e.name: e.value for e in pod.spec.containers[0].env}
        assert env["AUTOLRS_JOB"] == "default/create" and env["AUTOLRS_JOB_UID"] == job["metadata"]["uid"]
        assert json.loads(env["AUTOLRS_CONFIG"])["minLR"] == 0.001
        assert pod.spec.containers[0].command[:2] == ["torchrun", "--nnodes=1:3"]
    wait_for(lambda: kube.status("create").get("phase") == "Pending", what="phase Pending")
    assert kube.condition("create", "Created")["reason"] == "JobCreated"

    kube.run_pods("create", 2)
    wait_for(lambda: kube.status("create").get("phase") == "Running", what="phase Running")
    status = kube.status("create")
    assert (status["replicas"], status["readyReplicas"]) == (2, 2)
    assert kube.condition("create", "Running")["message"] == "2/2 workers running"
    printed = kube.kubectl("get", "alj", "create", "-o", "jsonpath={.status.phase} {.status.readyReplicas}").stdout
    assert printed == "Running 2"
    assert metric(operator.metrics_port, "autolrs_operator_jobs", '{phase="Running"}') >= 1  # type: ignore[attr-defined]
    assert metric(operator.metrics_port, "autolrs_operator_reconcile_seconds_count") > 0  # type: ignore[attr-defined]
    # Started (status.startTime): the search config is fixed, other fields are not.
    refused = kube.kubectl("patch", "alj", "create", "--type=merge", "-p", '{"spec":{"autolrs":{"maxSteps":9000}}}',
                           check=False)
    assert refused.returncode != 0 and "spec.autolrs is immutable once the job has started" in refused.stderr
    kube.kubectl("patch", "alj", "create", "--type=merge", "-p", '{"spec":{"backoffLimit":3}}')


def test_the_dashboards_operator_panels_show_a_scraped_operator(
    kube: Kube, operator: OperatorProcess, prometheus_service_factory: Any
) -> None:
    prom = prometheus_service_factory([f"127.0.0.1:{operator.metrics_port}"])  # type: ignore[attr-defined]
    kube.apply(job_manifest("panels", replicas=1))
    wait_for(lambda: kube.status("panels").get("phase") == "Pending", what="the job planned")
    panels = [(title, expr) for title, expr in dashboard_queries("default", "panels") if operator_panel(expr)]
    assert {title for title, _ in panels} >= {"AutoLRSJobs by phase", "Operator reconcile time"}
    for title, expr in panels:
        prom.wait_for(expr, timeout=60, predicate=bool)  # a refused query raises; no data times out


def test_a_worker_that_cannot_start_is_named_in_the_running_condition(kube: Kube, operator: OperatorProcess) -> None:
    store = "  stateStore: {url: redis://redis.infra:6379/0, secretRef: {name: no-such-secret, key: password}}\n"
    kube.apply(job_manifest("stuck", replicas=1, extra=store))
    wait_for(lambda: kube.pod_names("stuck") == ["stuck-worker-0"], what="the worker pod")
    kube.set_pod_waiting("stuck-worker-0", "CreateContainerConfigError", 'secret "no-such-secret" not found')
    def message() -> str:
        return next((c["message"] for c in kube.status("stuck").get("conditions") or []
                     if c["type"] == "Running"), "")

    wait_for(lambda: message().endswith("not found"), what="the Running condition naming the missing Secret")
    running = kube.condition("stuck", "Running")
    assert (running["status"], running["reason"]) == ("False", "WorkersPending")
    assert running["message"] == ('0/1 workers running; stuck-worker-0: CreateContainerConfigError: '
                                  'secret "no-such-secret" not found')
    assert kube.status("stuck")["phase"] == "Pending"
    kube.run_pods("stuck", 1)  # the Secret appeared: the kubelet starts the container
    wait_for(lambda: message() == "1/1 workers running", what="running")


def test_kubectl_scale_adds_and_removes_workers_within_the_range(kube: Kube, operator: OperatorProcess) -> None:
    kube.apply(job_manifest("scale"))
    kube.run_pods("scale", 2)
    kube.kubectl("scale", "autolrsjob/scale", "--replicas=3")
    wait_for(lambda: kube.pod_names("scale") == ["scale-worker-0", "scale-worker-1", "scale-worker-2"], what="3 pods")
    kube.kubectl("scale", "autolrsjob/scale", "--replicas=1")
    wait_for(lambda: kube.pod_names("scale") == ["scale-worker-0"], what="1 pod")
    wait_for(lambda: kube.status("scale").get("replicas") == 1, what="status.replicas 1")
    refused = kube.kubectl("scale", "autolrsjob/scale", "--replicas=4", check=False)
    assert refused.returncode != 0 and "spec.replicas must be <= spec.maxReplicas" in refused.stderr
    assert kube.job("scale")["spec"]["replicas"] == 1
    assert kube.status("scale").get("restarts", 0) == 0


def test_suspend_removes_workers_and_resume_brings_them_back(kube: Kube, operator: OperatorProcess) -> None:
    kube.apply(job_manifest("pause"))
    kube.run_pods("pause", 2)
    kube.kubectl("patch", "alj", "pause", "--type=merge", "-p", '{"spec":{"suspend":true}}')
    wait_for(lambda: kube.pod_names("pause") == [], what="workers removed")
    wait_for(lambda: kube.status("pause").get("phase") == "Suspended", what="phase Suspended")
    assert kube.condition("pause", "Suspended")["status"] == "True"
    assert kube.core.read_namespaced_service("pause-rdzv", "default").metadata.name == "pause-rdzv"
    kube.kubectl("patch", "alj", "pause", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    wait_for(lambda: len(kube.pod_names("pause")) == 2, what="workers recreated")
    wait_for(lambda: kube.condition("pause", "Suspended")["reason"] == "JobResumed", what="JobResumed")
    kube.run_pods("pause", 2)
    wait_for(lambda: kube.status("pause").get("phase") == "Running", what="phase Running")


def test_failed_worker_is_replaced_after_backoff_and_counted(kube: Kube, operator: OperatorProcess) -> None:
    restarts_before = metric(operator.metrics_port, "autolrs_operator_pod_restarts_total")  # type: ignore[attr-defined]
    kube.apply(job_manifest("flaky"))
    kube.run_pods("flaky", 2)
    failed_uid = kube.pods("flaky")[1].metadata.uid
    kube.set_pod_phase("flaky-worker-1", "Failed", exit_code=1)
    wait_for(lambda: kube.status("flaky").get("restarts") == 1, what="restarts 1")
    status = kube.status("flaky")
    assert status["lastFailure"]["uid"] == failed_uid and status["lastFailure"]["exitCode"] == 1
    assert status["restartAfter"]
    assert kube.condition("flaky", "Restarting")["reason"] == "WorkerFailed"
    replacement = wait_for(
        lambda: [p for p in kube.pods("flaky") if p.metadata.name == "flaky-worker-1" and p.metadata.uid != failed_uid],
        what="a replacement worker-1",
    )
    assert replacement[0].status.phase == "Pending"
    kube.set_pod_phase("flaky-worker-1", "Running")
    wait_for(lambda: kube.status("flaky").get("phase") == "Running", what="back to Running")
    assert kube.condition("flaky", "Restarting")["reason"] == "WorkersRecovered"
    assert kube.status("flaky")["restarts"] == 1
    assert [e.type for e in kube.events("flaky", "WorkerFailed")] == ["Warning"]
    assert metric(operator.metrics_port, "autolrs_operator_pod_restarts_total") == restarts_before + 1  # type: ignore[attr-defined]


def test_backoff_limit_fails_the_job(kube: Kube, operator: OperatorProcess) -> None:
    kube.apply(job_manifest("doomed", extra="  backoffLimit: 1\n"))
    kube.run_pods("doomed", 2)
    first_uid = kube.pods("doomed")[0].metadata.uid
    kube.set_pod_phase("doomed-worker-0", "Failed", exit_code=2)
    wait_for(lambda: kube.status("doomed").get("restarts") == 1, what="first restart")
    wait_for(lambda: [p.metadata.uid != first_uid for p in kube.pods("doomed")] == [True, True],
             what="worker-0 replaced")
    kube.set_pod_phase("doomed-worker-0", "Failed", exit_code=2)
    wait_for(lambda: kube.status("doomed").get("phase") == "Failed", what="phase Failed")
    failure = kube.condition("doomed", "Failed")
    assert failure["reason"] == "BackoffLimitExceeded"
    assert "backoffLimit 1 reached after 1 restart(s)" in failure["message"]
    wait_for(lambda: kube.pod_names("doomed") == ["doomed-worker-0"], what="running worker removed, failed one kept")
    assert kube.status("doomed")["restarts"] == 1
    assert kube.events("doomed", "BackoffLimitExceeded")


def test_trainer_success_succeeds_the_job_and_cleans_up(kube: Kube, operator: OperatorProcess) -> None:
    kube.apply(job_manifest("done"))
    kube.run_pods("done", 2)
    kube.set_pod_phase("done-worker-0", "Succeeded", exit_code=0)
    wait_for(lambda: kube.status("done").get("phase") == "Succeeded", what="phase Succeeded")
    assert kube.condition("done", "Succeeded")["reason"] == "TrainingSucceeded"
    assert kube.status("done")["completionTime"]
    wait_for(lambda: kube.pod_names("done") == ["done-worker-0"], what="the running worker removed")


def test_invalid_spec_past_the_schema_gets_a_condition_not_a_crash(
    kube: Kube, cluster: ClusterRunner, operator: OperatorProcess
) -> None:
    cluster.set_validation(False)  # as if the CRD in the cluster were older than the operator
    try:
        kube.apply(job_manifest("invalid").replace("minLR: 0.001, maxLR: 1.0", "minLR: 2.0, maxLR: 1.0"))
    finally:
        cluster.set_validation(True)
    wait_for(lambda: kube.status("invalid").get("phase") == "Failed", what="phase Failed")
    failure = kube.condition("invalid", "Failed")
    assert failure["reason"] == "InvalidSpec"
    assert failure["message"].startswith("spec.autolrs.minLR: ")
    assert kube.pod_names("invalid") == []
    assert kube.events("invalid", "InvalidSpec")[0].type == "Warning"
    assert operator.alive
    kube.kubectl("patch", "alj", "invalid", "--type=merge", "-p", '{"spec":{"autolrs":{"minLR":0.01}}}')
    wait_for(lambda: len(kube.pod_names("invalid")) == 2, what="workers once the spec is fixed")
    assert kube.condition("invalid", "Failed")["reason"] == "SpecFixed"


def _refuse_pods_with_an_untyped_volume(emulator: Any) -> None:
    """Give this emulator (not the class) one check kube-apiserver makes on pods and the
    emulator does not: a volume needs a type (422 Invalid, as the real server words it)."""
    create = type(emulator).create_object.__get__(emulator)

    def create_object(rdef: Any, namespace: str | None, body: Any) -> dict[str, Any]:
        if rdef.kind == "Pod" and isinstance(body, dict):
            for index, volume in enumerate((body.get("spec") or {}).get("volumes") or []):
                if set(volume) <= {"name"}:
                    raise ApiError(422, "Invalid", f'Pod "{body["metadata"]["name"]}" is invalid: '
                                   f"spec.volumes[{index}]: Required value: must specify a volume type")
        return create(rdef, namespace, body)

    emulator.create_object = create_object


def test_a_pod_the_api_server_refuses_fails_the_job_with_the_field_and_the_reason(
    kube: Kube, cluster: ClusterRunner, operator: OperatorProcess
) -> None:
    cluster.call(_refuse_pods_with_an_untyped_volume)
    try:
        template = "  podTemplate:\n    volumes: [{name: data}]\n    volumeMounts: [{name: data, mountPath: /data}]\n"
        kube.apply(job_manifest("refused", replicas=1, extra=template))
        wait_for(lambda: kube.status("refused").get("phase") == "Failed", what="phase Failed")
        failure = kube.condition("refused", "Failed")
        assert (failure["status"], failure["reason"]) == ("True", "InvalidSpec")
        assert failure["message"] == (
            'spec.podTemplate.volumes[0]: rejected by the API server: Pod "refused-worker-0" is invalid: '
            "spec.volumes[2]: Required value: must specify a volume type")
        time.sleep(5)  # resync is 2 s: the operator sends the pod again, quietly
        assert [e.type for e in kube.events("refused", "InvalidSpec")] == ["Warning"]
        assert kube.status("refused")["phase"] == "Failed" and kube.pod_names("refused") == []
        assert operator.alive
        kube.kubectl("patch", "alj", "refused", "--type=merge", "-p",
                     '{"spec":{"podTemplate":{"volumes":[{"name":"data","emptyDir":{}}]}}}')
        wait_for(lambda: kube.pod_names("refused") == ["refused-worker-0"], what="the worker once the spec is fixed")
        wait_for(lambda: kube.condition("refused", "Failed")["reason"] == "SpecFixed", what="SpecFixed")
        wait_for(lambda: kube.status("refused").get("phase") == "Pending", what="phase Pending")
    finally:
        cluster.call(lambda emulator: emulator.__dict__.pop("create_object", None))


def test_liveness_endpoint(operator: OperatorProcess) -> None:
    url = f"http://127.0.0.1:{operator.liveness_port}/healthz"  # type: ignore[attr-defined]
    assert wait_for(lambda: urllib.request.urlopen(url, timeout=5).status == 200, what="liveness 200")


def test_the_images_healthcheck_follows_the_real_operator(
    operator_factory: Any, tmp_path: Any
) -> None:
    """The image's HEALTHCHECK script, run against a real kopf operator's process: healthy
    while kopf's liveness endpoint answers, unhealthy while the operator hangs."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from tests.helpers.dockerfile_model import healthcheck_script, parse_dockerfile

    dockerfile = Path(__file__).resolve().parents[3] / "Dockerfile"
    script = tmp_path / "autolrs-healthcheck"
    script.write_text(healthcheck_script(parse_dockerfile(dockerfile.read_text())))
    process = operator_factory()
    pid = process.process.pid

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(script), str(pid)], capture_output=True,
                              text=True, timeout=30)

    try:
        wait_for(lambda: check().returncode == 0, timeout=30, what="a healthy operator")
        os.kill(pid, signal.SIGSTOP)  # hung: the liveness endpoint stops answering
        try:
            hung = check()
        finally:
            os.kill(pid, signal.SIGCONT)
        assert hung.returncode == 1
        assert f"autolrs-healthcheck: http://127.0.0.1:{process.liveness_port}/healthz" in hung.stderr  # type: ignore[attr-defined]
        wait_for(lambda: check().returncode == 0, timeout=30, what="healthy again once it runs")
    finally:
        process.stop()
