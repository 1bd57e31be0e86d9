"""FileStore: compare-and-set, decision log, heartbeat expiry, torn lines."""

import json
import time

import pytest

from autolrs.stores import StaleWriterError, open_store
from autolrs.stores.file import FileStore


def test_cas_versions_and_stale_writer(tmp_path):
    store = FileStore(tmp_path)
    assert store.load_state() == (0, None)
    assert store.save_state({"a": 1}, 0) == 1
    assert store.save_state({"a": 2}, 1) == 2
    with pytest.raises(StaleWriterError, match="expected 1"):
        store.save_state({"a": 3}, 1)
    assert store.load_state() == (2, {"a": 2})
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temp file


def test_decisions_survive_a_torn_last_line(tmp_path):
    store = FileStore(tmp_path)
    store.append_decision({"stage": 0, "lr": 0.1})
    store.append_decision({"stage": 1, "lr": 0.05})
    with open(tmp_path / "decisions.jsonl", "a") as handle:
        handle.write('{"stage": 2, "lr"')  # a crash mid-append
    assert store.decisions() == [{"stage": 0, "lr": 0.1}, {"stage": 1, "lr": 0.05}]


def test_heartbeat_expires(tmp_path):
    store = FileStore(tmp_path)
    store.heartbeat({"step": 5}, ttl_seconds=60)
    assert store.read_heartbeat() == {"step": 5}
    store.heartbeat({"step": 6}, ttl_seconds=0.01)
    time.sleep(0.05)
    assert store.read_heartbeat() is None


def test_nan_is_refused_not_written(tmp_path):
    store = FileStore(tmp_path)
    with pytest.raises(ValueError):
        store.save_state({"loss": float("nan")}, 0)
    assert store.load_state() == (0, None)


def test_corrupt_state_file_is_a_clear_error(tmp_path):
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt state file"):
        FileStore(tmp_path).load_state()


def test_open_store_urls(tmp_path):
    store = open_store(f"file://{tmp_path}/run")
    assert isinstance(store, FileStore) and store.root == tmp_path / "run"
    with pytest.raises(ValueError, match="must start with file:// or redis://"):
        open_store("s3://bucket/x")
    with pytest.raises(ValueError, match="needs a path"):
        open_store("file://")
    json.dumps({})
