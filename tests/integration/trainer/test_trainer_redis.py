"""Training with its state in a real redis-server (AUTOLRS_STORE_URL=redis://...): a full
run through `autolrs run`, a Redis restart mid-run, Redis down for seconds mid-run, and a
stale writer losing its compare-and-set."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from autolrs.stores.redis import RedisStore, job_key_prefix
from tests.helpers.services import free_port
from trainer_harness import (
    MAX_STEPS,
    WORKER,
    assert_complete_history,
    check_stream_against_history,
    last_step,
    plain,
    read_json,
    run_ok,
    start,
    wait_until,
    worker_command,
    worker_env,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

JOB, UID = "team-a/digits", "3f2c"
KEY = job_key_prefix("team-a", "digits", UID)


def redis_env(out: Path, url: str, **extra):
    return worker_env(out, AUTOLRS_STORE_URL=url, AUTOLRS_JOB=JOB, AUTOLRS_JOB_UID=UID,
                      **extra)


def check_store_matches_run(url: str, final: dict) -> None:
    """Redis holds the final controller state, every decision once, and a heartbeat."""
    with RedisStore(url, job_key=KEY) as store:
        version, state = store.load_state()
        check_stream_against_history(store.decisions(), final["history"])
        heartbeat = store.read_heartbeat()
    assert version >= len(final["history"])
    assert state == plain(final["controller"])
    assert heartbeat["step"] == MAX_STEPS
    assert (heartbeat["stage"], heartbeat["lr"]) == (final["stage"], final["lr"])


def test_autolrs_run_with_two_processes_keeps_the_job_state_in_redis(tmp_path, redis_service):
    autolrs = Path(sys.executable).with_name("autolrs")
    command = [str(autolrs), "run", "--nproc-per-node=2", f"--master-port={free_port()}",
               "--", str(WORKER)]
    run_ok(command, redis_env(tmp_path, redis_service.url))
    final = read_json(tmp_path, "final.json")
    assert final["world_size"] == 2
    assert_complete_history(final["history"])
    check_store_matches_run(redis_service.url, final)


@pytest.mark.parametrize("outage", ["restart", "down"])
def test_redis_restart_or_outage_mid_run_loses_nothing(tmp_path, redis_service_factory, outage):
    """restart: SIGTERM and start again at once. down: SIGKILL, training goes on for
    60 steps and 2 s more (4 s or more) without Redis, then Redis returns. Append-only file on."""
    redis = redis_service_factory(appendonly=True)
    log = tmp_path / "worker.log"
    proc = start(worker_command(), redis_env(tmp_path, redis.url, WORKER_STEP_SLEEP=0.03), log)
    wait_until(lambda: last_step(tmp_path) >= 50, "50 steps", proc=proc, log=log)
    with RedisStore(redis.url, job_key=KEY) as store:
        version_before, _ = store.load_state()
        decisions_before = store.decisions()
    assert version_before > 0 and decisions_before
    redis.stop(kill=outage == "down")
    stopped_at = last_step(tmp_path)
    if outage == "down":
        wait_until(lambda: last_step(tmp_path) >= stopped_at + 60, "60 steps without Redis",
                   proc=proc, log=log)
        time.sleep(2.0)  # with the 60 paced steps: Redis gone for 4 s or more
    assert proc.poll() is None, "the run ended before Redis came back"
    redis.start()
    assert proc.wait(timeout=180) == 0, log.read_text()[-4000:]

    final = read_json(tmp_path, "final.json")
    assert_complete_history(final["history"])
    check_store_matches_run(redis.url, final)
    with RedisStore(redis.url, job_key=KEY) as store:
        assert store.decisions()[: len(decisions_before)] == decisions_before
    output = log.read_text()
    if outage == "down":
        assert "unreachable" in output and "queued writes flushed" in output, output[-3000:]


def test_a_stale_writer_loses_its_compare_and_set_and_says_so(tmp_path, redis_service):
    """Writer A is paused; B (a restarted worker of the same job) takes over the state;
    A, resumed, fails its next save with StaleWriterError naming both versions."""
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    a = start(worker_command(), redis_env(tmp_path / "a", redis_service.url,
                                          WORKER_STEP_SLEEP=0.03), a_log)
    wait_until(lambda: last_step(tmp_path / "a") >= 20, "A at step 20", proc=a, log=a_log)
    a.send_signal(signal.SIGSTOP)
    try:
        with RedisStore(redis_service.url, job_key=KEY) as store:
            a_version, _ = store.load_state()
            b = start(worker_command(), redis_env(tmp_path / "b", redis_service.url,
                                                  WORKER_STEP_SLEEP=0.01), b_log)
            wait_until(lambda: store.load_state()[0] > a_version, "B's first save",
                       proc=b, log=b_log)
    finally:
        a.send_signal(signal.SIGCONT)
    assert a.wait(timeout=120) != 0
    a_output = a_log.read_text()
    assert "StaleWriterError: stale writer" in a_output, a_output[-3000:]
    assert f"expected version {a_version}" in a_output
    assert b.wait(timeout=180) == 0, b_log.read_text()[-4000:]
    final_b = read_json(tmp_path / "b", "final.json")
    with RedisStore(redis_service.url, job_key=KEY) as store:
        assert store.load_state()[1] == plain(final_b["controller"])
