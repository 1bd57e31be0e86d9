"""CheckpointManager on a temp folder: atomic layout, checksum, skipping, pruning."""

from __future__ import annotations

import collections
import hashlib
import os
import random
import subprocess

import pytest
import torch

from autolrs.checkpoint import (
    CheckpointError,
    CheckpointManager,
    checkpoint_name,
    checksum_name,
    to_host,
)


def training_payload(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "autolrs": {"controller": {"stage": 2, "history": [0.1, 0.05]}},
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
    }


def assert_same(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


def test_round_trip_and_layout(tmp_path):
    payload = training_payload()
    written = []
    with CheckpointManager(tmp_path, on_written=lambda step, s: written.append(step)) as ckpt:
        stall = ckpt.save(1234, payload)
        ckpt.wait()
        assert stall == ckpt.last_save_seconds and stall >= 0
        assert ckpt.last_written_step == 1234 and ckpt.last_write_seconds > 0
    assert written == [1234]
    assert sorted(os.listdir(tmp_path)) == ["ckpt-000001234.pt", "ckpt-000001234.pt.sha256"]
    # The checksum file is in `sha256sum -c` format.
    check = subprocess.run(["sha256sum", "-c", checksum_name(1234)], cwd=tmp_path,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    step, loaded = CheckpointManager(tmp_path).load_latest()
    assert step == 1234
    assert_same(payload, loaded)


def test_names_sort_by_step():
    names = [checkpoint_name(step) for step in (5, 40, 300, 123456789)]
    assert names == sorted(names)


def test_the_saved_copy_does_not_follow_later_changes(tmp_path):
    weights = torch.zeros(3)
    payload = {"w": weights, "same": weights, "meta": {"seen": [1]}}
    with CheckpointManager(tmp_path) as ckpt:
        ckpt.save(1, payload)
        weights.add_(7)
        payload["meta"]["seen"].append(2)
    _, loaded = CheckpointManager(tmp_path).load_latest()
    assert torch.equal(loaded["w"], torch.zeros(3))
    assert loaded["meta"] == {"seen": [1]}
    assert loaded["w"] is loaded["same"]  # shared tensors stay shared


def test_to_host_keeps_container_types():
    Point = collections.namedtuple("Point", "x y")
    source = collections.OrderedDict(p=Point(torch.ones(1, requires_grad=True), 2), t=(1, [2]))
    copied = to_host(source)
    assert type(copied) is collections.OrderedDict and type(copied["p"]) is Point
    assert not copied["p"].x.requires_grad and copied["t"] == (1, [2])


def test_keep_last_prunes_the_oldest(tmp_path):
    with CheckpointManager(tmp_path, keep_last=2) as ckpt:
        for step in (10, 20, 30, 40):
            ckpt.save(step, {"step": torch.tensor(step)})
        ckpt.wait()
        assert ckpt.steps() == [30, 40]
    assert len(os.listdir(tmp_path)) == 4


def test_a_save_while_one_is_in_flight_waits_and_both_land(tmp_path):
    big = torch.randn(1_000_000)
    with CheckpointManager(tmp_path, keep_last=5) as ckpt:
        ckpt.save(1, {"w": big})
        ckpt.save(2, {"w": big + 1})
        ckpt.wait()
        assert ckpt.steps() == [1, 2]


def corrupt_flip(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def corrupt_truncate(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


@pytest.mark.parametrize("corrupt", [corrupt_flip, corrupt_truncate])
def test_a_corrupt_newest_checkpoint_is_skipped_with_a_warning_naming_it(tmp_path, corrupt):
    with CheckpointManager(tmp_path) as ckpt:
        ckpt.save(100, {"w": torch.full((1000,), 100.0)})
        ckpt.save(200, {"w": torch.full((1000,), 200.0)})
    newest = tmp_path / checkpoint_name(200)
    corrupt(newest)
    ckpt = CheckpointManager(tmp_path)
    assert ckpt.verify(200).startswith("sha256 mismatch")
    with pytest.warns(RuntimeWarning, match=f"skipping invalid checkpoint {newest}: sha256"):
        step, payload = ckpt.load_latest()
    assert step == 100 and torch.equal(payload["w"], torch.full((1000,), 100.0))


def test_a_checkpoint_without_checksum_file_is_skipped(tmp_path):
    with CheckpointManager(tmp_path) as ckpt:
        ckpt.save(1, {"w": torch.ones(2)})
        ckpt.save(2, {"w": torch.ones(2)})
    (tmp_path / checksum_name(2)).unlink()
    with pytest.warns(RuntimeWarning, match="ckpt-000000002.pt: no checksum file"):
        assert CheckpointManager(tmp_path).load_latest()[0] == 1


def break_checksum_not_utf8(folder, step) -> None:
    (folder / checksum_name(step)).write_bytes(b"\xff\xfe\x00 not text")


def break_checksum_is_a_folder(folder, step) -> None:
    (folder / checksum_name(step)).unlink()
    (folder / checksum_name(step)).mkdir()


def break_checkpoint_is_a_folder(folder, step) -> None:
    (folder / checkpoint_name(step)).unlink()
    (folder / checkpoint_name(step)).mkdir()


@pytest.mark.parametrize("break_it, reason", [
    (break_checksum_not_utf8, "malformed checksum file ckpt-000000003.pt.sha256"),
    (break_checksum_is_a_folder, "unreadable checksum file ckpt-000000003.pt.sha256: "
                                 "Is a directory"),
    (break_checkpoint_is_a_folder, "unreadable: Is a directory"),
])
def test_an_unreadable_newest_checkpoint_is_skipped_for_the_next_older(tmp_path, break_it,
                                                                        reason):
    with CheckpointManager(tmp_path, keep_last=5) as ckpt:
        for step in (1, 2, 3):
            ckpt.save(step, {"w": torch.full((2,), float(step))})
    break_it(tmp_path, 3)
    reader = CheckpointManager(tmp_path)
    assert reader.verify(3).startswith(reason)
    with pytest.warns(RuntimeWarning, match=f"skipping invalid checkpoint "
                                            f"{tmp_path / checkpoint_name(3)}: {reason}"):
        step, payload = reader.load_latest()
    assert step == 2 and torch.equal(payload["w"], torch.full((2,), 2.0))


def test_when_every_checkpoint_is_unreadable_each_is_named_and_none_is_loaded(tmp_path):
    with CheckpointManager(tmp_path) as ckpt:
        ckpt.save(1, {"w": torch.ones(1)})
        ckpt.save(2, {"w": torch.ones(1)})
    break_checkpoint_is_a_folder(tmp_path, 2)
    break_checksum_not_utf8(tmp_path, 1)
    with pytest.warns(RuntimeWarning) as record:
        assert CheckpointManager(tmp_path).load_latest() is None
    assert [str(w.message).split(":")[0] for w in record] == [
        f"skipping invalid checkpoint {tmp_path / checkpoint_name(2)}",
        f"skipping invalid checkpoint {tmp_path / checkpoint_name(1)}"]


def test_a_file_with_a_valid_checksum_but_foreign_content_is_skipped(tmp_path):
    path = tmp_path / checkpoint_name(5)
    torch.save({"just": "weights"}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / checksum_name(5)).write_text(f"{digest}  {path.name}\n")
    with pytest.warns(RuntimeWarning, match="not an AutoLRS checkpoint"):
        assert CheckpointManager(tmp_path).load_latest() is None


def test_empty_folder_has_no_checkpoint(tmp_path):
    ckpt = CheckpointManager(tmp_path / "new")
    assert ckpt.load_latest() is None and ckpt.latest_step() is None


def test_stray_temp_files_and_orphan_checksums_are_removed_and_ignored(tmp_path):
    with CheckpointManager(tmp_path) as ckpt:
        ckpt.save(3, {"w": torch.ones(1)})
    (tmp_path / ".ckpt-000000004.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / ".ckpt-000000004.pt.sha256.def456.tmp").write_bytes(b"half")
    (tmp_path / checksum_name(9)).write_text("0" * 64 + "  " + checkpoint_name(9) + "\n")
    reader = CheckpointManager(tmp_path)
    assert reader.load_latest()[0] == 3
    assert len(os.listdir(tmp_path)) == 5  # a manager that only loads changes nothing
    with CheckpointManager(tmp_path, keep_last=5) as writer:
        writer.save(4, {"w": torch.ones(1)})
    names = [checkpoint_name(3), checksum_name(3), checkpoint_name(4), checksum_name(4)]
    assert sorted(os.listdir(tmp_path)) == names


def test_a_failed_write_is_raised_by_the_next_call_and_leaves_no_file(tmp_path):
    ckpt = CheckpointManager(tmp_path)
    ckpt.save(1, {"not picklable": lambda: None})
    with pytest.raises(CheckpointError, match=f"checkpoint of step 1 to {tmp_path} failed"):
        ckpt.wait()
    assert os.listdir(tmp_path) == []
    ckpt.save(2, {"w": torch.ones(1)})
    ckpt.close()
    assert ckpt.steps() == [2]


@pytest.mark.parametrize("step", [-1, 1.5, True])
def test_bad_step_is_named(tmp_path, step):
    with CheckpointManager(tmp_path) as ckpt, \
            pytest.raises(ValueError, match="checkpoint step must be an integer >= 0"):
        ckpt.save(step, {})


def test_keep_last_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="keep_last must be >= 1"):
        CheckpointManager(tmp_path, keep_last=0)
