"""RedisStore against a real redis-server: CAS, persistence across restarts, outages."""

from __future__ import annotations

import logging
import time

import pytest
import redis as redis_py

from autolrs.stores import StaleWriterError, StoreUnavailableError, open_store
from autolrs.stores.redis import RedisStore, job_key_prefix
from tests.helpers.services import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PREFIX = job_key_prefix("team-a", "resnet", "uid-1")


def wait_until(condition, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_round_trip_and_key_layout(redis_service):
    with RedisStore(redis_service.url, job_key=PREFIX) as store:
        assert store.load_state() == (0, None)
        assert store.save_state({"stage": 1, "lrs": [0.1, 0.2]}, 0) == 1
        assert store.save_state({"stage": 2}, 1) == 2
        assert store.load_state() == (2, {"stage": 2})
        store.append_decision({"type": "decision", "stage": 0, "lr": 0.1})
        store.append_decision({"type": "decision", "stage": 1, "lr": 0.05})
        assert [d["lr"] for d in store.decisions()] == [0.1, 0.05]
        store.heartbeat({"step": 10, "lr": 0.1, "best_predicted_loss": float("nan")}, 30)
        assert store.read_heartbeat() == {"step": 10, "lr": 0.1, "best_predicted_loss": None}

    raw = redis_py.Redis.from_url(redis_service.url)
    assert set(raw.keys("*")) == {f"{PREFIX}{k}".encode() for k in ("state", "decisions", "heartbeat")}
    assert raw.type(f"{PREFIX}decisions") == b"stream"
    assert 0 < raw.pttl(f"{PREFIX}heartbeat") <= 30_000
    assert raw.get(f"{PREFIX}state").startswith(b'{"version": 2, "state": ')


def test_open_store_routes_redis_urls_and_reads_job_from_env(redis_service, monkeypatch):
    monkeypatch.setenv("AUTOLRS_JOB", "ml/bert")
    monkeypatch.setenv("AUTOLRS_JOB_UID", "abc")
    with open_store(redis_service.url) as store:
        assert isinstance(store, RedisStore)
        assert store.state_key == "autolrs:ml:bert:abc:state"


def test_stale_writer_loses_and_says_which_versions(redis_service):
    with RedisStore(redis_service.url, job_key=PREFIX) as first, \
            RedisStore(redis_service.url, job_key=PREFIX) as second:
        assert first.save_state({"owner": "first"}, 0) == 1
        assert second.save_state({"owner": "second"}, 1) == 2
        with pytest.raises(StaleWriterError, match=r"holds version 2.*expected version 1"):
            first.save_state({"owner": "first again"}, 1)
        assert first.load_state() == (2, {"owner": "second"})
        # Losing is not sticky: after reloading, the writer continues from the new version.
        assert first.save_state({"owner": "first"}, 2) == 3


def test_state_survives_a_redis_restart_with_appendonly(redis_service_factory):
    server = redis_service_factory(appendonly=True)
    with RedisStore(server.url, job_key=PREFIX) as store:
        version = store.save_state({"stage": 3}, 0)
        store.append_decision({"stage": 3, "lr": 0.5})
        server.stop(kill=True)  # a crash, not a clean shutdown
        server.start()
        assert store.load_state() == (version, {"stage": 3})
        assert store.save_state({"stage": 4}, version) == version + 1
        store.append_decision({"stage": 4, "lr": 0.25})
        assert [d["stage"] for d in store.decisions()] == [3, 4]


def test_outage_mid_run_queues_writes_and_flushes_them_in_order(redis_service_factory, caplog):
    server = redis_service_factory(appendonly=True)
    store = RedisStore(server.url, job_key=PREFIX, backoff_seconds=0.05, max_backoff_seconds=0.5)
    version = store.save_state({"stage": 0}, 0)
    store.append_decision({"seq": 0})
    server.stop()
    caplog.set_level(logging.WARNING, logger="autolrs.stores.redis")
    for seq in range(1, 31):  # training goes on for ~3 s: none of these raises
        store.append_decision({"seq": seq})
        version = store.save_state({"stage": seq}, version)
        store.heartbeat({"step": seq}, ttl_seconds=120)
        time.sleep(0.1)
    # decisions all wait; the 30 state saves and heartbeats were coalesced to one each
    assert store.pending_writes == 30 + 1 + 1
    assert "unreachable" in caplog.text
    server.start()
    wait_until(lambda: store.pending_writes == 0, what="queued writes to land")
    assert [d["seq"] for d in store.decisions()] == list(range(31))
    assert store.load_state() == (version, {"stage": 30})
    assert store.read_heartbeat() == {"step": 30}
    assert store.save_state({"stage": 31}, version) == version + 1
    store.close()


def test_flush_raises_after_timeout_while_redis_is_down(redis_service):
    store = RedisStore(redis_service.url, job_key=PREFIX, backoff_seconds=0.05)
    redis_service.stop()
    store.append_decision({"seq": 1})
    with pytest.raises(StoreUnavailableError, match=r"1 writes still queued"):
        store.flush(timeout=0.5)
    redis_service.start()
    store.flush(timeout=30)
    assert store.pending_writes == 0
    assert store.decisions() == [{"seq": 1}]
    store.close()


def test_queued_state_save_that_lost_the_cas_is_reported_on_the_next_write(redis_service):
    # The trainer's own user is switched off (its Redis "goes away") while the default
    # user, the new owner of the job, keeps writing: deterministic, no restart race.
    admin = redis_py.Redis.from_url(redis_service.url)
    admin.acl_setuser("trainer", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all"])
    url = redis_service.url.replace("redis://", "redis://trainer:pw@")
    mine = RedisStore(url, job_key=PREFIX, backoff_seconds=0.05, max_backoff_seconds=0.2)
    version = mine.save_state({"owner": "mine"}, 0)
    admin.acl_setuser("trainer", enabled=False)
    admin.client_kill_filter(user="trainer")
    mine.append_decision({"seq": 1})  # lands later: queued before the lost save
    mine.save_state({"owner": "mine"}, version)  # queued: its CAS will lose
    mine.append_decision({"seq": 2})  # queued after the lost save: not written
    assert mine.pending_writes == 3
    with RedisStore(redis_service.url, job_key=PREFIX) as other:
        other.save_state({"owner": "other"}, version)
    admin.acl_setuser("trainer", enabled=True)
    with pytest.raises(StaleWriterError, match=r"holds version 2.*expected version 1"):
        mine.flush(timeout=30)
    assert mine.pending_writes == 0
    assert mine.load_state() == (2, {"owner": "other"})
    assert mine.decisions() == [{"seq": 1}]
    mine.close()


def test_queue_is_bounded_and_says_so(redis_service):
    store = RedisStore(redis_service.url, job_key=PREFIX, max_pending=3, backoff_seconds=0.05)
    redis_service.stop()
    for seq in range(3):
        store.append_decision({"seq": seq})
    with pytest.raises(StoreUnavailableError, match=r"3 writes queued \(max_pending=3\)"):
        store.append_decision({"seq": 3})
    redis_service.start()
    store.flush(timeout=30)
    assert [d["seq"] for d in store.decisions()] == [0, 1, 2]
    store.close()


def test_unreachable_at_start_fails_after_bounded_retries_with_redacted_url():
    url = f"redis://user:s3cret@127.0.0.1:{free_port()}/0"
    with pytest.raises(StoreUnavailableError) as info:
        RedisStore(url, job_key=PREFIX, connect_attempts=3, backoff_seconds=0.05)
    message = str(info.value)
    assert "\n" not in message
    assert "s3cret" not in message
    assert f"redis://user:***@127.0.0.1:" in message
    assert "after 3 attempts" in message


def test_wrong_password_is_reported_at_once(redis_service_factory):
    server = redis_service_factory(password="right")
    url = server.url.replace(":right@", ":wrong@")
    with pytest.raises(StoreUnavailableError, match=r"refused the credentials") as info:
        RedisStore(url, job_key=PREFIX, connect_attempts=50, backoff_seconds=1.0)
    assert "wrong" not in str(info.value)
    with RedisStore(server.url, job_key=PREFIX) as store:
        assert store.save_state({"ok": True}, 0) == 1


def test_expire_job_keys_sets_ttl_on_every_key_of_the_job_only(redis_service):
    other_prefix = job_key_prefix("team-a", "resnet", "uid-2")
    with RedisStore(redis_service.url, job_key=PREFIX) as store, \
            RedisStore(redis_service.url, job_key=other_prefix) as other:
        version = store.save_state({"stage": 1}, 0)
        store.append_decision({"stage": 1})
        store.heartbeat({"step": 1}, ttl_seconds=3600)
        other.save_state({"stage": 9}, 0)
        assert store.expire_job_keys(600) == 3
        store.save_state({"stage": 2}, version)  # a late save keeps the expiry
    raw = redis_py.Redis.from_url(redis_service.url)
    for suffix in ("state", "decisions", "heartbeat"):
        assert 0 < raw.pttl(f"{PREFIX}{suffix}") <= 600_000
    assert raw.pttl(f"{other_prefix}state") == -1


def test_the_operators_password_env_reaches_redis_whatever_its_characters(redis_service_factory):
    """The operator passes the Secret's password in AUTOLRS_STORE_PASSWORD beside a URL
    without one; pasted into the URL, @ / : # broke it (host 'ss', password 'p')."""
    from autolrs.runtime import Runtime

    password = "p@ss/w:rd#1%"
    server = redis_service_factory(password=password)
    bare_url = f"redis://127.0.0.1:{server.port}/0"
    runtime = Runtime.from_env({"AUTOLRS_STORE_URL": bare_url, "AUTOLRS_STORE_PASSWORD": password,
                                "AUTOLRS_JOB": "ml/bert", "AUTOLRS_JOB_UID": "abc"})
    try:
        assert runtime.store.save_state({"ok": True}, 0) == 1
        assert runtime.store.load_state() == (1, {"ok": True})
    finally:
        runtime.close()
    with pytest.raises(StoreUnavailableError, match="refused the credentials"):
        RedisStore(bare_url, job_key=PREFIX, password="wrong", connect_attempts=1)
    with pytest.raises(ValueError, match="AUTOLRS_STORE_PASSWORD is set, but AUTOLRS_STORE_URL is a file://"):
        open_store("file:///tmp/x", password=password)
