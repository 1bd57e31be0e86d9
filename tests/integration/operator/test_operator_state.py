"""The operator with a real redis-server: trainer heartbeat -> status and Events, key expiry on
deletion, and an operator restart that neither duplicates pods nor loses status."""

from __future__ import annotations

import json
from typing import Callable, Iterator

import pytest
import redis as redis_client

from tests.helpers.kmock_cluster import Kube, OperatorProcess, job_manifest, wait_for
from tests.helpers.services import RedisServer

pytestmark = pytest.mark.slow


@pytest.fixture
def solo_operator(operator_factory: Callable[..., OperatorProcess]) -> Iterator[OperatorProcess]:
    """An operator for one test only (this module's restart test runs its own, one at a time)."""
    process = operator_factory()
    yield process
    process.stop()


def store_extra(redis: RedisServer) -> str:
    return f"  stateStore:\n    url: {redis.url}\n"


def prefix(kube: Kube, name: str) -> str:
    return f"autolrs:default:{name}:{kube.job(name)['metadata']['uid']}:"


def beat(client: redis_client.Redis, key_prefix: str, **fields: object) -> None:
    client.set(key_prefix + "heartbeat", json.dumps(fields), ex=60)


def decide(client: redis_client.Redis, key_prefix: str, stage: int, lr: float) -> None:
    """A trial end and the stage decision, as the trainer appends them to its stream."""
    trial = {"type": "trial_end", "stage": stage, "lr": lr, "step": 10, "outcome": "completed",
             "id": f"trial_end@{stage}"}
    data = {"type": "decision", "stage": stage, "lr": lr, "tau": 100 * 2 ** stage,
            "predicted_loss": 1.0 / (stage + 1), "id": f"decision@{stage}"}
    for entry in (trial, data):
        client.xadd(key_prefix + "decisions", {"data": json.dumps(entry)})


def test_heartbeat_fills_status_and_decisions_become_events(
    kube: Kube, redis: RedisServer, solo_operator: OperatorProcess
) -> None:
    client = redis_client.Redis.from_url(redis.url, decode_responses=True)
    kube.apply(job_manifest("beat", extra=store_extra(redis)))
    kube.run_pods("beat", 2)
    keys = prefix(kube, "beat")
    beat(client, keys, step=250, stage=1, tau=200, lr=0.05, best_predicted_loss=0.42,
         last_checkpoint_step=200, phase="exploit")
    decide(client, keys, 0, 0.1)
    decide(client, keys, 1, 0.05)
    wait_for(lambda: kube.status("beat").get("step") == 250, what="status.step from the heartbeat")
    status = kube.status("beat")
    assert (status["stage"], status["tau"], status["learningRate"]) == (1, 200, 0.05)
    assert (status["bestPredictedLoss"], status["lastCheckpointStep"], status["trainerPhase"]) == (0.42, 200, "exploit")
    assert status["heartbeatTime"] and status["phase"] == "Running"
    wait_for(lambda: len(kube.events("beat", "StageDecision")) == 2, what="two StageDecision events")
    decide(client, keys, 2, 0.025)
    wait_for(lambda: len(kube.events("beat", "StageDecision")) == 3, what="a third StageDecision event")
    messages = sorted(e.message for e in kube.events("beat", "StageDecision"))
    assert messages[0] == "stage 0: lr=0.1 for 100 steps (predicted loss 1)"
    assert messages[2].startswith("stage 2: lr=0.025 for 400 steps")
    rollback = {"type": "rollback", "stage": 2, "lr": 0.025, "step": 900, "reason": "diverged"}
    client.xadd(keys + "decisions", {"data": json.dumps(rollback)})
    wait_for(lambda: kube.events("beat", "StageRolledBack"), what="a StageRolledBack event")
    [warning] = kube.events("beat", "StageRolledBack")
    assert (warning.type, warning.message) == (
        "Warning", "stage 2: lr=0.025 diverged at step 900; back to the stage snapshot")
    assert len(kube.events("beat", "StageDecision")) == 3  # the trial ends posted nothing
    printed = kube.kubectl("get", "alj", "beat", "-o", "jsonpath={.status.step} {.status.stage} {.status.learningRate}")
    assert printed.stdout == "250 1 0.05"


def test_deletion_removes_children_and_expires_redis_keys(
    kube: Kube, redis: RedisServer, solo_operator: OperatorProcess
) -> None:
    client = redis_client.Redis.from_url(redis.url, decode_responses=True)
    kube.apply(job_manifest("gone", extra=store_extra(redis)))
    kube.run_pods("gone", 2)
    keys = prefix(kube, "gone")
    client.set(keys + "state", "{}")
    decide(client, keys, 0, 0.1)
    client.set("autolrs:default:other:uid:state", "{}")  # another job's key is left alone
    kube.kubectl("delete", "autolrsjob", "gone", "--wait=false")
    wait_for(lambda: "gone" not in [j["metadata"]["name"] for j in kube.jobs()], what="the job deleted")
    assert kube.pod_names("gone") == []
    assert "gone-rdzv" not in [s.metadata.name for s in kube.core.list_namespaced_service("default").items]
    assert 0 < client.ttl(keys + "state") <= 3600
    assert 0 < client.ttl(keys + "decisions") <= 3600
    assert client.ttl("autolrs:default:other:uid:state") == -1


def test_operator_restart_creates_no_duplicates_and_keeps_status(
    kube: Kube, redis: RedisServer, operator_factory: Callable[..., OperatorProcess]
) -> None:
    client = redis_client.Redis.from_url(redis.url, decode_responses=True)
    first = operator_factory()
    kube.apply(job_manifest("sturdy", extra=store_extra(redis)))
    kube.run_pods("sturdy", 2)
    keys = prefix(kube, "sturdy")
    decide(client, keys, 0, 0.1)
    wait_for(lambda: len(kube.events("sturdy", "StageDecision")) == 1, what="the first decision event")
    kube.set_pod_phase("sturdy-worker-1", "Failed", exit_code=1)
    wait_for(lambda: kube.status("sturdy").get("restarts") == 1, what="one restart")
    wait_for(lambda: len(kube.pods("sturdy")) == 2 and all(p.status.phase == "Pending" for p in kube.pods("sturdy")[1:]),
             what="the replacement")
    uids = {p.metadata.name: p.metadata.uid for p in kube.pods("sturdy")}
    first.stop()

    second = operator_factory()
    kube.kubectl("scale", "autolrsjob/sturdy", "--replicas=3")  # something for the new operator to do
    wait_for(lambda: len(kube.pods("sturdy")) == 3, what="the third worker")
    kube.run_pods("sturdy", 3)
    wait_for(lambda: kube.status("sturdy").get("phase") == "Running", what="Running under the new operator")
    pods = kube.pods("sturdy")
    assert [p.metadata.name for p in pods] == ["sturdy-worker-0", "sturdy-worker-1", "sturdy-worker-2"]
    assert {n: u for n, u in ((p.metadata.name, p.metadata.uid) for p in pods) if n in uids} == uids
    assert kube.status("sturdy")["restarts"] == 1
    assert len(kube.events("sturdy", "WorkerFailed")) == 1
    decide(client, keys, 1, 0.05)
    wait_for(lambda: len(kube.events("sturdy", "StageDecision")) == 2, what="the second decision event")
    assert sorted(e.message.split(":")[0] for e in kube.events("sturdy", "StageDecision")) == ["stage 0", "stage 1"]
    assert second.alive
    second.stop()  # the next tests run operators with other settings: one at a time


def test_the_default_store_password_secret_is_read_in_the_jobs_namespace(
    kube: Kube, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """The chart's path: AUTOLRS_DEFAULT_STORE_URL/SECRET, a password-protected Redis and
    the Secret in the job's namespace. The operator reads the heartbeat with the password
    (any characters), the workers get it beside the bare URL, deletion expires the keys."""
    import base64

    from kubernetes import client as k8s

    from tests.helpers.services import redis_server

    password = "p@ss/w:rd#1%"
    with redis_server(password=password) as server:
        bare = f"redis://127.0.0.1:{server.port}/0"
        kube.core.create_namespaced_secret("default", k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name="autolrs-redis"),
            data={"redis-password": base64.b64encode(password.encode()).decode()}))
        process = operator_factory(AUTOLRS_DEFAULT_STORE_URL=bare,
                                   AUTOLRS_DEFAULT_STORE_SECRET="autolrs-redis/redis-password")
        try:
            kube.apply(job_manifest("secret", replicas=1))
            kube.run_pods("secret", 1)
            env = {e.name: e for e in kube.pods("secret")[0].spec.containers[0].env}
            assert env["AUTOLRS_STORE_URL"].value == bare
            ref = env["AUTOLRS_STORE_PASSWORD"].value_from.secret_key_ref
            assert (ref.name, ref.key) == ("autolrs-redis", "redis-password")
            client = redis_client.Redis.from_url(bare, password=password, decode_responses=True)
            keys = prefix(kube, "secret")
            beat(client, keys, step=40, stage=0, tau=100, lr=0.02, phase="search")
            wait_for(lambda: kube.status("secret").get("step") == 40, what="status.step through the password")
            assert kube.status("secret")["learningRate"] == 0.02
            client.set(keys + "state", "{}")
            kube.kubectl("delete", "autolrsjob", "secret", "--wait=false")
            wait_for(lambda: 0 < client.ttl(keys + "state"), what="the job's keys expiring")
            assert process.alive
        finally:
            process.stop()


def test_with_redis_down_the_job_still_goes_and_the_operator_says_why(
    kube: Kube, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """The state store is unreachable: the status timer logs and carries on, and deleting
    the job retries the key expiry a few times, then lets the job go, saying so."""
    from tests.helpers.services import redis_server

    with redis_server() as server:
        process = operator_factory()
        try:
            kube.apply(job_manifest("cutoff", replicas=1, extra=store_extra(server)))
            kube.run_pods("cutoff", 1)
            wait_for(lambda: kube.status("cutoff").get("phase") == "Running", what="Running")
            server.stop(kill=True)
            wait_for(lambda: "cannot read the trainer's progress from the state store" in process.log(),
                     timeout=60, what="the status timer's warning")
            kube.kubectl("delete", "autolrsjob", "cutoff", "--wait=false")
            wait_for(lambda: "cutoff" not in [j["metadata"]["name"] for j in kube.jobs()],
                     timeout=120, what="the job deleted despite the store being down")
            log = process.log()
            assert "cannot reach the state store to expire autolrs:default:cutoff:" in log
            assert "gave up expiring autolrs:default:cutoff:" in log and "after 4 tries" in log
            assert process.alive
        finally:
            process.stop()
