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
    with pytest.warns(RuntimeWarning, match="line.s. 3 of .*decisions.jsonl"):
        assert store.decisions() == [{"stage": 0, "lr": 0.1}, {"stage": 1, "lr": 0.05}]


def test_appends_after_a_torn_line_start_a_new_line_and_stay_visible(tmp_path):
    store = FileStore(tmp_path)
    store.append_decision({"id": "a"})
    store.append_decision({"id": "b"})
    with open(tmp_path / "decisions.jsonl", "a") as handle:
        handle.write('{"id": "c", "lr": 0.')  # a crash mid-append, no newline
    store.append_decision({"id": "d"})
    store.append_decision({"id": "e"})
    lines = (tmp_path / "decisions.jsonl").read_text().splitlines()
    assert lines[2] == '{"id": "c", "lr": 0.' and lines[3] == '{"id": "d"}'  # not glued
    with pytest.warns(RuntimeWarning, match=f"line.s. 3 of {tmp_path / 'decisions.jsonl'}"):
        assert [d["id"] for d in store.decisions()] == ["a", "b", "d", "e"]


def test_a_whole_decision_that_lost_only_its_newline_is_kept(tmp_path):
    store = FileStore(tmp_path)
    (tmp_path / "decisions.jsonl").write_text('{"id": "a"}')
    store.append_decision({"id": "b"})
    assert [d["id"] for d in store.decisions()] == ["a", "b"]


def test_bad_lines_anywhere_are_skipped_and_each_is_warned_about_once(tmp_path, recwarn):
    store = FileStore(tmp_path)
    (tmp_path / "decisions.jsonl").write_bytes(
        b'{"id": "a"}\n\xff\xfe garbage\n[1, 2]\n{"id": "b"}\n')
    assert [d["id"] for d in store.decisions()] == ["a", "b"]
    assert [str(w.message) for w in recwarn].count(
        f"skipping unreadable line(s) 2, 3 of {tmp_path / 'decisions.jsonl'} "
        "(torn by a crash mid-append?)") == 1
    recwarn.clear()
    assert [d["id"] for d in store.decisions()] == ["a", "b"]
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


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
