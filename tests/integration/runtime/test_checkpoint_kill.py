"""A checkpoint writer SIGKILLed in the middle of its writes never leaves a loadable corrupt
checkpoint: each kill lands while a write is in progress (its temp file seen at a set point:
just created, a quarter ... all of its data written but not yet committed), the newest
committed checkpoint still loads, and the next writer removes the torn temp files."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from autolrs.checkpoint import CheckpointManager, checkpoint_name
from ckpt_writer import SIZE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

WRITER = Path(__file__).with_name("ckpt_writer.py")
DATA_BYTES = SIZE * 4  # the float32 tensor a checkpoint holds; the file is a little larger
# Where in a write each kill lands: the fraction of DATA_BYTES in the temp file by then.
KILL_POINTS = (0.0, 0.25, 0.5, 0.75, 1.0)
TRIES = 3  # a kill can still miss (the write commits first); each point must hit once
_DATA_TMP = re.compile(r"^\.(ckpt-(\d+)\.pt)\.[0-9a-f]+\.tmp$")  # not a checksum's temp file


def start_writer(directory: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WRITER), str(directory)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def check_alive(proc: subprocess.Popen, deadline: float, what: str) -> None:
    if proc.poll() is not None:
        raise AssertionError(f"writer exited with {proc.returncode}: "
                             f"{proc.stderr.read().decode()[-2000:]}")
    if time.monotonic() > deadline:
        raise AssertionError(f"timed out waiting for {what}")


def wait_for_new_checkpoint(manager: CheckpointManager, after: int | None,
                            proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while (manager.latest_step() or 0) <= (after or 0):
        check_alive(proc, deadline, "a new checkpoint")
        time.sleep(0.02)


def kill_mid_write(directory: Path, proc: subprocess.Popen, min_bytes: float,
                   timeout: float = 60.0) -> tuple[Path, int]:
    """SIGKILL the writer as soon as the temp file of a write holds ``min_bytes``; returns
    that temp file and the step it was writing."""
    deadline = time.monotonic() + timeout
    while True:
        check_alive(proc, deadline, f"a checkpoint temp file of {min_bytes:.0f} bytes")
        for entry in os.scandir(directory):
            match = _DATA_TMP.match(entry.name)
            if not match:
                continue
            try:
                size = entry.stat().st_size
            except FileNotFoundError:  # committed (renamed) meanwhile
                continue
            if size >= min_bytes:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return Path(entry.path), int(match.group(2))
        time.sleep(0.0005)


def test_sigkill_during_writes_never_leaves_a_loadable_corrupt_checkpoint(tmp_path):
    manager = CheckpointManager(tmp_path)
    previous = None
    strays: set[str] = set()  # temp files left by earlier kills
    hits: set[float] = set()  # the kill points that hit a write in progress
    for point in KILL_POINTS:
        for _ in range(TRIES):
            proc = start_writer(tmp_path)
            try:
                wait_for_new_checkpoint(manager, previous, proc)
                # The new writer removed every temp file of the writes killed before it.
                assert not strays & set(os.listdir(tmp_path)), strays & set(os.listdir(tmp_path))
                tmp, torn_step = kill_mid_write(tmp_path, proc, point * DATA_BYTES)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=30)
            # A hit: the write was still in progress when the kill landed (never committed).
            hit = tmp.exists() and torn_step not in manager.steps()

            with warnings.catch_warnings():
                warnings.simplefilter("error")  # any skipped checkpoint fails the test
                for step in manager.steps():
                    assert manager.verify(step) is None, step
                step, payload = manager.load_latest()
            assert payload["step"] == step
            assert torch.equal(payload["weights"], torch.full_like(payload["weights"], step))
            assert previous is None or step > previous  # each run resumed and progressed
            assert len(manager.steps()) <= 3 + 1  # keep_last, plus one a kill left unpruned
            if hit:
                assert step < torn_step and not (tmp_path / checkpoint_name(torn_step)).exists()
                hits.add(point)
            strays |= {name for name in os.listdir(tmp_path) if name.endswith(".tmp")}
            previous = step
            if hit:
                break
        assert point in hits, (f"no kill with {point:.0%} of the data written hit a write in "
                               f"progress in {TRIES} tries")

    proc = start_writer(tmp_path)  # and the last kill's temp files go too
    try:
        wait_for_new_checkpoint(manager, previous, proc)
        assert not strays & set(os.listdir(tmp_path)), strays & set(os.listdir(tmp_path))
    finally:
        proc.kill()
        proc.wait(timeout=30)
