"""SIGKILL a training process mid-trial, mid-exploit, during a checkpoint write and right
after a checkpoint, restart the same command, run to the end: the run resumes from the
newest valid checkpoint (a corrupt one is skipped with a warning naming it), loses at
most the steps since that checkpoint, and ends with the history of a run never killed."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from autolrs.checkpoint import CheckpointManager, checkpoint_name
from trainer_harness import (
    CONFIG,
    MAX_STEPS,
    assert_complete_history,
    describe,
    read_json,
    run,
    run_ok,
    steps_log,
    worker_command,
    worker_env,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

CHECKPOINT_EVERY = 25
INVALID_WARNING = "skipping invalid checkpoint"


def job_env(folder: Path, config: dict | None = None, **extra):
    """What a pod gets: config, file store and checkpoint folder (plus test knobs)."""
    return worker_env(folder / "out", config, WORKER_VAL=1,
                      AUTOLRS_STORE_URL=f"file://{folder / 'store'}",
                      AUTOLRS_CHECKPOINT_DIR=folder / "checkpoints",
                      AUTOLRS_CHECKPOINT_EVERY=CHECKPOINT_EVERY, **extra)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The final state of a run that was never interrupted."""
    folder = tmp_path_factory.mktemp("reference")
    run_ok(worker_command(), job_env(folder))
    final = read_json(folder / "out", "final.json")
    assert_complete_history(final["history"])
    return final


def valid_steps(folder: Path) -> list[int]:
    """Steps of the committed checkpoints whose checksum verifies."""
    manager = CheckpointManager(folder / "checkpoints")
    return [step for step in manager.steps() if manager.verify(step) is None]


def kill_run(folder: Path, tag: str, **kill) -> dict:
    """Run until the worker SIGKILLs itself as ``kill`` says; return where it died."""
    proc = run(worker_command(), job_env(folder, WORKER_TAG=tag, **kill))
    assert proc.returncode == -signal.SIGKILL, describe(proc)
    killed = read_json(folder / "out", "killed.json", tag=tag)
    manager = CheckpointManager(folder / "checkpoints")
    assert valid_steps(folder) == manager.steps(), "a committed checkpoint is corrupt"
    return killed


def resume_run(folder: Path, tag: str, killed: dict, **extra) -> tuple[dict, str]:
    """Restart the same command (optionally with another kill); check where it resumed."""
    newest = max(valid_steps(folder), default=0)
    proc = run(worker_command(), job_env(folder, WORKER_TAG=tag, **extra))
    assert proc.returncode == (-signal.SIGKILL if "WORKER_KILL_AT" in extra else 0), describe(proc)
    start, *steps = steps_log(folder / "out", tag)
    assert start["steps"] == newest, "did not resume from the newest valid checkpoint"
    assert steps[0]["step"] == newest + 1
    # Lost: the steps since the newest durable checkpoint. A save waits for the write in
    # flight, so that is at most the one before the last requested: 2 * every steps.
    lost = killed["step"] - start["steps"]
    assert 0 <= lost <= 2 * CHECKPOINT_EVERY
    return start, proc.stderr


def test_killed_mid_trial_mid_exploit_and_mid_write_resumes_to_the_same_end(tmp_path, reference):
    history = reference["history"]
    trial = history[1]["trials"][1]
    mid_trial = trial["start_step"] + trial["steps"] // 2
    exploit_start = history[2]["start_step"] + history[2]["search_steps"]
    mid_exploit = exploit_start + (history[2]["end_step"] - exploit_start) // 2
    during_write = history[3]["start_step"] + 3
    ballast = {"WORKER_BALLAST_MB": 8}  # checkpoints of ~30 MB: slow enough to catch

    killed = kill_run(tmp_path, "a", WORKER_KILL_AT=mid_trial, WORKER_KILL_PHASE="search",
                      **ballast)
    assert (killed["step"], killed["phase"], killed["stage"]) == (mid_trial, "search", 1)

    resume_run(tmp_path, "b", killed, WORKER_KILL_AT=mid_exploit,
               WORKER_KILL_PHASE="exploit", **ballast)
    killed = read_json(tmp_path / "out", "killed.json", tag="b")
    assert (killed["step"], killed["phase"], killed["stage"]) == (mid_exploit, "exploit", 2)

    resume_run(tmp_path, "c", killed, WORKER_KILL_AT=during_write,
               WORKER_KILL_MODE="mid_write", **ballast)
    killed = read_json(tmp_path / "out", "killed.json", tag="c")
    assert killed["caught_mid_write"] is True
    checkpoints = tmp_path / "checkpoints"
    name = checkpoint_name(killed["step"])
    assert list(checkpoints.glob(f".{name}.*.tmp")), "no half-written temp file left"
    assert not (checkpoints / name).exists()
    assert max(valid_steps(tmp_path)) < killed["step"]

    _, stderr = resume_run(tmp_path, "d", killed, **ballast)
    assert INVALID_WARNING not in stderr
    assert not list(checkpoints.glob(".*.tmp")), "stray temp file not cleaned"
    final = read_json(tmp_path / "out", "final.json", tag="d")
    assert_complete_history(final["history"])
    assert final["history"] == history
    assert final["sha"] == reference["sha"]


def test_resume_right_after_a_checkpoint_and_past_a_corrupt_one(tmp_path, reference):
    history = reference["history"]
    killed = kill_run(tmp_path, "a", WORKER_KILL_AT=history[2]["start_step"] + 1,
                      WORKER_KILL_MODE="after_checkpoint")
    assert killed["step"] in valid_steps(tmp_path)

    start, stderr = resume_run(tmp_path, "b", killed, WORKER_KILL_AT=history[3]["start_step"] + 1,
                               WORKER_KILL_MODE="after_checkpoint")
    assert start["steps"] == killed["step"]  # nothing lost
    assert INVALID_WARNING not in stderr
    killed = read_json(tmp_path / "out", "killed.json", tag="b")

    # The newest checkpoint is torn (a disk that lied about fsync): skipped, named.
    newest = tmp_path / "checkpoints" / checkpoint_name(killed["step"])
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    previous = max(step for step in valid_steps(tmp_path) if step < killed["step"])
    proc = run_ok(worker_command(), job_env(tmp_path, WORKER_TAG="c"))
    warnings = [line for line in proc.stderr.splitlines() if INVALID_WARNING in line]
    assert warnings and str(newest) in warnings[0], proc.stderr[-3000:]
    assert steps_log(tmp_path / "out", "c")[0]["steps"] == previous

    final = read_json(tmp_path / "out", "final.json", tag="c")
    assert final["steps"] == MAX_STEPS
    assert_complete_history(final["history"])
    assert final["history"] == history
    assert final["sha"] == reference["sha"]


def test_killed_mid_range_test_resumes_the_sweep_to_the_same_end(tmp_path):
    """A budget large enough for the LR range test (4 sweeps of 73 steps): killed in the
    middle of the sweep, the run resumes from a checkpoint taken during it and ends with
    the history and parameters of a run never killed."""
    steps = 400
    config = {**CONFIG, "minLR": 0.001, "maxSteps": steps}
    reference = tmp_path / "reference"
    run_ok(worker_command(), job_env(reference, config))
    expected = read_json(reference / "out", "final.json")
    sweep = expected["history"][0]["range_test"]
    kill_at = 2 * CHECKPOINT_EVERY + 10
    assert sweep["steps"] > kill_at and sweep["lr_min_loss"] is not None
    assert_complete_history(expected["history"], max_steps=steps)

    folder = tmp_path / "killed"
    proc = run(worker_command(), job_env(folder, config, WORKER_TAG="a", WORKER_KILL_AT=kill_at))
    assert proc.returncode == -signal.SIGKILL, describe(proc)
    killed = read_json(folder / "out", "killed.json", tag="a")
    assert (killed["step"], killed["phase"], killed["stage"]) == (kill_at, "search", 0)
    newest = max(valid_steps(folder))
    assert newest in (CHECKPOINT_EVERY, 2 * CHECKPOINT_EVERY)  # taken mid-sweep

    run_ok(worker_command(), job_env(folder, config, WORKER_TAG="b"))
    start, *_ = steps_log(folder / "out", "b")
    assert start["steps"] == newest
    final = read_json(folder / "out", "final.json", tag="b")
    assert final["history"] == expected["history"]
    assert final["sha"] == expected["sha"]
