"""Elastic restarts: torchrun with 2 processes, killed; again with 1, killed; again with 2,
to the end, all on one checkpoint folder and store. Each group resumes from the newest
valid checkpoint and the run finishes with a complete stage history."""

from __future__ import annotations

from pathlib import Path

import pytest

from autolrs.checkpoint import CheckpointManager
from autolrs.stores.file import FileStore
from trainer_harness import (
    MAX_STEPS,
    assert_complete_history,
    check_stream_against_history,
    describe,
    read_json,
    run,
    run_ok,
    steps_log,
    worker_command,
    worker_env,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def job_env(folder: Path, tag: str, **extra):
    return worker_env(folder / "out", WORKER_TAG=tag, WORKER_VAL=1,
                      AUTOLRS_STORE_URL=f"file://{folder / 'store'}",
                      AUTOLRS_CHECKPOINT_DIR=folder / "checkpoints",
                      AUTOLRS_CHECKPOINT_EVERY=20, **extra)


def newest_valid(folder: Path) -> int:
    manager = CheckpointManager(folder / "checkpoints")
    return max(step for step in manager.steps() if manager.verify(step) is None)


def test_two_then_one_then_two_processes_finish_the_run(tmp_path):
    # 2 processes; rank 1 is SIGKILLed after the checkpoint of step 80 is durable.
    proc = run(worker_command(nproc=2),
               job_env(tmp_path, "w2a", WORKER_KILL_AT=70, WORKER_KILL_RANK=1,
                       WORKER_KILL_MODE="after_checkpoint"))
    assert proc.returncode != 0, describe(proc)
    assert read_json(tmp_path / "out", "killed.json", tag="w2a")["step"] == 80
    resume_at = newest_valid(tmp_path)
    assert resume_at == 80

    # 1 process, killed mid-stage (rank 0, the checkpoint writer).
    proc = run(worker_command(nproc=1), job_env(tmp_path, "w1", WORKER_KILL_AT=150))
    assert proc.returncode != 0, describe(proc)
    assert (tmp_path / "out" / "w1-killed.json").exists(), describe(proc)
    start = steps_log(tmp_path / "out", "w1")[0]
    assert (start["steps"], start["world_size"]) == (resume_at, 1)
    resume_at = newest_valid(tmp_path)
    assert 150 - 2 * 20 <= resume_at <= 150

    # What the killed 1-process run logged after the checkpoint the next run resumes from.
    lost = [e for e in FileStore(tmp_path / "store").decisions() if e["step"] > resume_at]

    # 2 processes again, to the end.
    run_ok(worker_command(nproc=2), job_env(tmp_path, "w2b"))
    for rank in (0, 1):
        start, *steps, closed = steps_log(tmp_path / "out", "w2b", rank)
        assert (start["steps"], start["world_size"]) == (resume_at, 2)
        assert steps[-1]["step"] == MAX_STEPS
        assert closed == {"event": "closed", "in_process_group": False}
    assert steps_log(tmp_path / "out", "w2b", 0)[-2]["sha"] == \
        steps_log(tmp_path / "out", "w2b", 1)[-2]["sha"]
    final = read_json(tmp_path / "out", "final.json", tag="w2b")
    assert final["steps"] == MAX_STEPS
    assert_complete_history(final["history"])
    # The store's state is the controller's final state.
    version, state = FileStore(tmp_path / "store").load_state()
    assert state == final["controller"]
    # The 2-process replay sees other batches than the killed 1-process run did after
    # that checkpoint: from where it first differs, the stream voids what that run logged
    # (one superseded entry naming the rest of it), and the effective log matches the
    # history.
    stream = FileStore(tmp_path / "store").decisions()
    markers = [e for e in stream if e["type"] == "superseded"]
    assert len(markers) <= (1 if lost else 0), markers
    if markers:
        lost_ids = [e["id"] for e in lost]
        voided = markers[0]["ids"]
        assert markers[0]["resumed_from"] == resume_at and voided and voided == lost_ids[-len(voided):]
    check_stream_against_history(stream, final["history"])
