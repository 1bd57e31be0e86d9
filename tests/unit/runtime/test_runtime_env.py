"""Runtime.from_env's bad values and Runtime.close's every-part-closes guarantee."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from autolrs.metrics import MetricsEndpoint
from autolrs.runtime import Runtime
from tests.helpers.services import free_port
from autolrs.stores.file import FileStore


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "abc"}, "WORLD_SIZE must be an integer >= 1, got 'abc'"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE must be an integer >= 1, got '0'"),
    ({"WORLD_SIZE": "2.0"}, "WORLD_SIZE must be an integer >= 1, got '2.0'"),
    ({"AUTOLRS_CHECKPOINT_EVERY": "abc"}, "AUTOLRS_CHECKPOINT_EVERY must be an integer >= 1, "
                                          "got 'abc'"),
    ({"AUTOLRS_CHECKPOINT_EVERY": "0"}, "AUTOLRS_CHECKPOINT_EVERY must be an integer >= 1"),
    ({"AUTOLRS_CHECKPOINT_EVERY": "-5"}, "AUTOLRS_CHECKPOINT_EVERY must be an integer >= 1"),
    ({"AUTOLRS_CHECKPOINT_EVERY": "1.5"}, "AUTOLRS_CHECKPOINT_EVERY must be an integer >= 1"),
])
def test_a_bad_integer_is_a_one_line_error_naming_its_variable(env, message):
    with pytest.raises(ValueError, match=message) as info:
        Runtime.from_env(env)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name, value", [
    ("AUTOLRS_CHECKPOINT_DIR", "{file}"),
    ("AUTOLRS_CHECKPOINT_DIR", "{file}/sub"),
    ("AUTOLRS_STORE_URL", "file://{file}"),
    ("AUTOLRS_STORE_URL", "file://{file}/sub"),
])
def test_a_folder_variable_naming_a_file_is_a_one_line_error_naming_it(a_file, name, value):
    value = value.format(file=a_file)
    with pytest.raises(ValueError, match=f"^{name}='{value}' must name a folder, but "
                                         f"{a_file}(/sub)? is not a directory") as info:
        Runtime.from_env({name: value})
    assert "\n" not in str(info.value)


def test_good_values_are_used(tmp_path):
    runtime = Runtime.from_env({"WORLD_SIZE": "1", "AUTOLRS_CHECKPOINT_EVERY": "7",
                                "AUTOLRS_STORE_URL": f"file://{tmp_path}/store",
                                "AUTOLRS_CHECKPOINT_DIR": str(tmp_path / "ckpt")})
    try:
        assert runtime.checkpoint_every == 7 and runtime.coordinator.is_main
        assert isinstance(runtime.store, FileStore) and runtime.store.root == tmp_path / "store"
        assert runtime.checkpoints.directory == tmp_path / "ckpt"
    finally:
        runtime.close()
    assert runtime.owned == []
    assert Runtime.from_env({}).checkpoint_every == 500


class Part:
    """A closeable part that records its closing and may fail at it."""

    def __init__(self, name: str, closed: list[str], error: Exception | None = None):
        self.name, self.closed, self.error = name, closed, error

    def close(self) -> None:
        self.closed.append(self.name)
        if self.error is not None:
            raise self.error


def test_close_closes_every_part_and_raises_the_first_error():
    closed: list[str] = []
    first = RuntimeError("checkpoint writer failed")
    runtime = Runtime(owned=[Part("store", closed), Part("checkpoints", closed, first),
                             Part("metrics", closed)])
    with pytest.raises(RuntimeError, match="checkpoint writer failed") as info:
        runtime.close()
    assert info.value is first
    assert closed == ["metrics", "checkpoints", "store"]  # newest first, none skipped
    assert runtime.owned == []


def test_close_attaches_the_later_errors_to_the_first():
    closed: list[str] = []
    runtime = Runtime(owned=[Part("store", closed, OSError("redis flush failed")),
                             Part("checkpoints", closed, RuntimeError("disk full"))])
    with pytest.raises(RuntimeError, match="disk full") as info:
        runtime.close()
    assert closed == ["checkpoints", "store"]
    assert info.value.__notes__ == [
        "closing another part also failed: OSError: redis flush failed"]


def test_a_bad_variable_closes_what_from_env_had_opened(tmp_path, a_file, monkeypatch):
    closed: list[str] = []
    monkeypatch.setattr(FileStore, "close", lambda self: closed.append(str(self.root)))
    with pytest.raises(ValueError, match="AUTOLRS_CHECKPOINT_DIR"):
        Runtime.from_env({"AUTOLRS_STORE_URL": f"file://{tmp_path}/store",
                          "AUTOLRS_CHECKPOINT_DIR": str(a_file)})
    assert closed == [str(tmp_path / "store")]


@pytest.mark.parametrize("local_rank, serves", [("0", True), ("1", False), (None, True)])
def test_a_rank_that_is_not_0_serves_its_pod_port_only_as_its_first_process(local_rank, serves):
    """Rank 0 serves the autolrs_* metrics; elsewhere LOCAL_RANK 0 (one per pod) answers
    with process_* so the pod's scrape target is up, and the pod's other processes leave
    the port alone."""
    env = {"AUTOLRS_METRICS_PORT": str(free_port())}
    if local_rank is not None:
        env["LOCAL_RANK"] = local_rank
    runtime = Runtime(coordinator=SimpleNamespace(is_main=False))
    runtime._open_parts(env)
    try:
        assert runtime.metrics is None
        endpoints = [part for part in runtime.owned if isinstance(part, MetricsEndpoint)]
        assert [e.port for e in endpoints] == ([int(env["AUTOLRS_METRICS_PORT"])] if serves
                                               else [])
    finally:
        runtime.close()


def test_a_taken_pod_port_is_a_warning_not_a_failed_rank(caplog):
    """Rank 0's metrics do not depend on it, so a port in use (two agents sharing one
    host) must not fail the job: it is logged, naming the port."""
    taken = MetricsEndpoint(CollectorRegistry())
    taken.serve(free_port(), addr="0.0.0.0")
    try:
        runtime = Runtime(coordinator=SimpleNamespace(is_main=False))
        with caplog.at_level("WARNING", logger="autolrs.runtime"):
            runtime._open_parts({"AUTOLRS_METRICS_PORT": str(taken.port), "LOCAL_RANK": "0"})
        assert not [part for part in runtime.owned if isinstance(part, MetricsEndpoint)]
        assert f"cannot serve metrics on 0.0.0.0:{taken.port}" in caplog.text
    finally:
        taken.close()
