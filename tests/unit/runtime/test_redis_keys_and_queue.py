"""Pure parts of the Redis store: key prefix, env parsing, URL redaction, the write queue."""

from __future__ import annotations

import json
import math

import pytest

from autolrs.stores import StaleWriterError
from autolrs.stores.redis import (
    QueueFullError,
    WriteQueue,
    encode_state_document,
    finite_or_none,
    job_key_from_env,
    job_key_prefix,
    redact_url,
)


def test_job_key_prefix_layout():
    assert job_key_prefix("ml", "bert", "1234-ab") == "autolrs:ml:bert:1234-ab:"


@pytest.mark.parametrize("parts, field", [
    (("", "bert", "u"), "namespace"),
    (("ml", "be:rt", "u"), "name"),
    (("ml", "bert", "u 1"), "uid"),
])
def test_job_key_prefix_rejects_parts_that_would_break_the_layout(parts, field):
    with pytest.raises(ValueError, match=f"job {field} must be non-empty"):
        job_key_prefix(*parts)


def test_job_key_from_env():
    assert job_key_from_env({}) == "autolrs:default:local:0:"
    env = {"AUTOLRS_JOB": "team/resnet", "AUTOLRS_JOB_UID": "9f2c"}
    assert job_key_from_env(env) == "autolrs:team:resnet:9f2c:"
    assert job_key_from_env({"AUTOLRS_JOB": "team/resnet"}) == "autolrs:team:resnet:0:"


@pytest.mark.parametrize("job", ["resnet", "/resnet", "team/", "a/b/c"])
def test_job_key_from_env_rejects_malformed_job(job):
    with pytest.raises(ValueError, match=r"AUTOLRS_JOB must be 'namespace/name'"):
        job_key_from_env({"AUTOLRS_JOB": job})


@pytest.mark.parametrize("url, expected", [
    ("redis://:hunter2@redis:6379/0", "redis://:***@redis:6379/0"),
    ("rediss://me:p%40ss@10.0.0.1:6380/2", "rediss://me:***@10.0.0.1:6380/2"),
    ("redis://redis:6379/0", "redis://redis:6379/0"),
    ("redis://u:pw@[::1]:6379", "redis://u:***@[::1]:6379"),
])
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_state_document_puts_version_first_and_is_json():
    doc = encode_state_document(json.dumps({"a": [1, 2]}), 7)
    assert doc.startswith('{"version": 7, ')
    assert json.loads(doc) == {"version": 7, "state": {"a": [1, 2]}}


def test_finite_or_none_replaces_nan_and_inf_at_any_depth():
    value = {"loss": math.nan, "lrs": [1.0, math.inf], "nested": {"x": -math.inf}, "n": 3}
    assert finite_or_none(value) == {"loss": None, "lrs": [1.0, None], "nested": {"x": None}, "n": 3}


def kinds(queue: WriteQueue) -> list[str]:
    return [write.kind for write in queue]


def test_queue_keeps_decisions_and_coalesces_state_behind_them():
    queue = WriteQueue()
    queue.add_decision("d1")
    first = queue.add_state("s1", expected_version=4)
    queue.add_decision("d2")
    second = queue.add_state("s2", expected_version=first.new_version)
    assert kinds(queue) == ["decision", "decision", "state"]
    # The coalesced save still checks that Redis holds what the oldest queued one expected.
    assert (second.base_version, second.new_version, second.payload) == (4, 6, "s2")


def test_queue_does_not_replace_a_state_save_in_flight():
    queue = WriteQueue()
    first = queue.add_state("s1", expected_version=0)
    assert queue.next_write() is first
    second = queue.add_state("s2", expected_version=1)
    assert [w.payload for w in queue] == ["s1", "s2"]
    assert (second.base_version, second.new_version) == (1, 2)
    queue.done(first)
    assert queue.next_write() is second


def test_queue_rejects_a_state_save_that_ignores_its_own_queued_save():
    queue = WriteQueue()
    queue.add_state("s1", expected_version=3)
    with pytest.raises(StaleWriterError, match=r"expected version 3.*stores version 4"):
        queue.add_state("s2", expected_version=3)


def test_queue_keeps_only_the_newest_heartbeat():
    queue = WriteQueue()
    queue.add_heartbeat("h1", deadline=1.0)
    queue.add_decision("d1")
    queue.add_heartbeat("h2", deadline=2.0)
    assert [w.payload for w in queue] == ["d1", "h2"]


def test_queue_is_bounded_and_a_refused_state_save_keeps_the_old_one():
    queue = WriteQueue(max_pending=2)
    queue.add_state("s1", expected_version=0)
    queue.add_decision("d1")
    with pytest.raises(QueueFullError):
        queue.add_decision("d2")
    queue.add_state("s2", expected_version=1)  # coalescing frees the old slot
    assert [w.payload for w in queue] == ["d1", "s2"]
    queue.next_write()
    with pytest.raises(QueueFullError):
        queue.add_heartbeat("h", deadline=1.0)


def test_retry_later_and_discard_from():
    queue = WriteQueue()
    d1 = queue.add_decision("d1")
    state = queue.add_state("s", expected_version=0)
    queue.add_decision("d2")
    assert queue.next_write() is d1
    queue.retry_later(d1)
    assert not d1.in_flight
    queue.done(queue.next_write())
    assert queue.discard_from(state) == 2
    assert len(queue) == 0


def test_queue_rejects_nonpositive_bound():
    with pytest.raises(ValueError, match="max_pending must be >= 1"):
        WriteQueue(max_pending=0)
