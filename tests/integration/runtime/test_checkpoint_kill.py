"""A checkpoint writer SIGKILLed at random moments never leaves a loadable corrupt checkpoint."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from autolrs.checkpoint import CheckpointManager

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

WRITER = Path(__file__).with_name("ckpt_writer.py")
KILLS = 6


def start_writer(directory: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WRITER), str(directory)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for_new_checkpoint(manager: CheckpointManager, after: int | None,
                            proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while (manager.latest_step() or 0) <= (after or 0):
        if proc.poll() is not None:
            raise AssertionError(f"writer exited with {proc.returncode}: "
                                 f"{proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("writer made no new checkpoint in time")
        time.sleep(0.02)


def test_sigkill_during_writes_never_leaves_a_loadable_corrupt_checkpoint(tmp_path):
    rng = random.Random(1234)
    manager = CheckpointManager(tmp_path)
    previous = None
    for _ in range(KILLS):
        proc = start_writer(tmp_path)
        wait_for_new_checkpoint(manager, previous, proc)
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any skipped checkpoint fails the test
            for step in manager.steps():
                assert manager.verify(step) is None, step
            step, payload = manager.load_latest()
        assert payload["step"] == step
        assert torch.equal(payload["weights"], torch.full_like(payload["weights"], step))
        assert previous is None or step > previous  # each run resumed and progressed
        assert len(manager.steps()) <= 3 + 1  # keep_last, plus one a kill left unpruned
        previous = step
