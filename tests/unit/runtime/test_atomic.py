"""Atomic writes: whole-or-nothing replacement, no leftovers, the umask's file mode."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from autolrs.atomic import atomic_open, atomic_write_bytes, atomic_write_json


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring the old one after."""
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664),
                                         (0o000, 0o666)])
def test_a_written_file_gets_0666_less_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    atomic_write_bytes(tmp_path / "new.bin", b"data")
    (tmp_path / "old.json").write_text("{}")
    (tmp_path / "old.json").chmod(0o600)
    atomic_write_json(tmp_path / "old.json", {"a": 1})  # a replaced file too
    assert stat.S_IMODE((tmp_path / "new.bin").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "old.json").stat().st_mode) == mode
    assert (tmp_path / "old.json").read_text() == '{\n  "a": 1\n}\n'


def test_writes_from_many_threads_keep_the_umask_and_leave_no_temp_file(tmp_path, umask):
    umask(0o027)
    threads = [threading.Thread(target=atomic_write_bytes, args=(tmp_path / f"f{i}", b"x"))
               for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(os.listdir(tmp_path)) == sorted(f"f{i}" for i in range(16))
    assert {stat.S_IMODE((tmp_path / f"f{i}").stat().st_mode) for i in range(16)} == {0o640}


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_open(target) as handle:
        handle.write(b"half")
        assert [name for name in os.listdir(tmp_path) if name.startswith(".state.json.")]
        raise RuntimeError("boom")
    assert os.listdir(tmp_path) == ["state.json"] and target.read_bytes() == b"old"


def test_temp_files_are_hidden_beside_the_target(tmp_path):
    with atomic_open(tmp_path / "sub" / "ckpt-1.pt") as handle:
        handle.write(b"x")
        (temp,) = os.listdir(tmp_path / "sub")
        assert temp.startswith(".ckpt-1.pt.") and temp.endswith(".tmp")
    assert os.listdir(tmp_path / "sub") == ["ckpt-1.pt"]
