"""End to end: an AutoLRSJob with 2 workers trains the digits example to completion through
the real operator, real Redis and real torchrun (pods run as local processes), also when a
worker is killed mid-run."""

from __future__ import annotations

import json

import pytest
import redis as redis_client

from autolrs.decision_log import effective

from tests.e2e.pod_runner import PodRunner
from tests.helpers.kmock_cluster import Kube, OperatorProcess, wait_for
from tests.helpers.services import RedisServer

pytestmark = pytest.mark.slow
TRAIN_TIMEOUT = 300.0


def digits_job(name: str, redis: RedisServer, max_steps: int) -> str:
    return f"""apiVersion: autolrs.io/v1alpha1
kind: AutoLRSJob
metadata:
  name: {name}
spec:
  image: autolrs-operator:0.1.0
  command: [examples/digits_cnn.py]
  replicas: 2
  minReplicas: 1
  maxReplicas: 2
  backoffLimit: 6
  autolrs: {{minLR: 0.001, maxLR: 1.0, tau: 50, tauMax: 100, trialsPerStage: 3, maxSteps: {max_steps}, seed: 0}}
  stateStore:
    url: {redis.url}
  checkpoint:
    claimName: {name}-checkpoints
  podTemplate:
    env:
      - name: AUTOLRS_CHECKPOINT_EVERY
        value: "25"
"""


def explain(kube: Kube, runner: PodRunner, operator: OperatorProcess, name: str) -> str:
    logs = "\n".join(f"--- {pod}\n{runner.log(pod)[-2000:]}" for pod in sorted({p.name for p in runner.history}))
    return f"status: {kube.status(name)}\nrunner errors: {runner.errors}\n{logs}\n--- operator\n{operator.log()[-3000:]}"


def wait_phase(kube: Kube, runner: PodRunner, operator: OperatorProcess, name: str, phase: str) -> None:
    try:
        wait_for(lambda: kube.status(name).get("phase") == phase, timeout=TRAIN_TIMEOUT, what=f"{name} {phase}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{explain(kube, runner, operator, name)}") from None


def test_two_workers_train_digits_to_completion(
    kube: Kube, redis: RedisServer, operator: OperatorProcess, pod_runner: PodRunner
) -> None:
    kube.apply(digits_job("digits", redis, max_steps=300))
    wait_phase(kube, pod_runner, operator, "digits", "Succeeded")
    status = kube.status("digits")
    assert status.get("restarts", 0) == 0
    assert kube.condition("digits", "Succeeded")["reason"] == "TrainingSucceeded"
    wait_for(lambda: (kube.status("digits").get("step"), kube.status("digits").get("trainerPhase")) == (300, "done"),
             what="the final heartbeat (step 300, phase done) in status")
    # One Event per stage decision the trainer streamed, none for its other entries.
    prefix = f"autolrs:default:digits:{kube.job('digits')['metadata']['uid']}:"
    stream = redis_client.Redis.from_url(redis.url, decode_responses=True).xrange(prefix + "decisions")
    decisions = [json.loads(fields["data"]) for _, fields in stream]
    decisions = [d for d in decisions if d["type"] == "decision"]
    assert decisions and len(decisions) < len(stream)
    wait_for(lambda: len(kube.events("digits", "StageDecision")) == len(decisions),
             what=f"{len(decisions)} StageDecision events")
    messages = sorted(e.message.split(" for ")[0] for e in kube.events("digits", "StageDecision"))
    assert messages == sorted(f"stage {d['stage']}: lr={d['lr']:.4g}" for d in decisions)
    assert any("done:" in pod_runner.log(f"digits-worker-{i}") for i in (0, 1))  # printed by rank 0


@pytest.mark.parametrize("killed", [1, 0], ids=["worker-1", "worker-0 (the rendezvous host)"])
def test_a_killed_worker_is_replaced_and_the_job_still_succeeds(
    kube: Kube, redis: RedisServer, operator: OperatorProcess, pod_runner: PodRunner, killed: int
) -> None:
    name = f"survivor{killed}"
    kube.apply(digits_job(name, redis, max_steps=600))
    try:
        wait_for(lambda: kube.status(name).get("lastCheckpointStep", 0) >= 50, timeout=TRAIN_TIMEOUT,
                 what="a checkpoint")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{explain(kube, pod_runner, operator, name)}") from None
    killed_uid = pod_runner.pods[f"{name}-worker-{killed}"].uid
    pod_runner.kill(f"{name}-worker-{killed}")
    wait_for(lambda: kube.status(name).get("restarts") == 1, what="the failure counted")
    wait_for(lambda: any(p.metadata.name == f"{name}-worker-{killed}" and p.metadata.uid != killed_uid
                         for p in kube.pods(name)), what="a replacement worker")
    wait_phase(kube, pod_runner, operator, name, "Succeeded")
    # The kill is the first failure counted; the surviving torchrun agent may also give up
    # on re-rendezvous (then its pod fails and is replaced too; worker 0 hosts the c10d
    # store, so losing it costs the other worker its agent as well): the job still finishes.
    failures = sorted(e.message for e in kube.events(name, "WorkerFailed"))
    assert any(m.startswith(f"worker pod {name}-worker-{killed} failed (exit code 137") for m in failures), failures
    assert 1 <= kube.status(name)["restarts"] <= 6
    assert any("done:" in pod_runner.log(f"{name}-worker-{i}") for i in (0, 1))
    # The replacement resumed from a checkpoint: a restart from step 0 would log the
    # first stages' entries again (a resume logs only what its replay changed).
    prefix = f"autolrs:default:{name}:{kube.job(name)['metadata']['uid']}:"
    client = redis_client.Redis.from_url(redis.url, decode_responses=True)
    log = effective([json.loads(fields["data"]) for _, fields in client.xrange(prefix + "decisions")])
    ids = [entry["id"] for entry in log]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert [entry["step"] for entry in log] == sorted(entry["step"] for entry in log)
    assert log[-1]["type"] == "done" and log[-1]["step"] == 600
    state = json.loads(client.get(prefix + "state"))["state"]
    assert state["steps"] == 600
