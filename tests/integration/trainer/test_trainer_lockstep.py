"""AutoLRS under a real torchrun with 2 processes (gloo): ranks in lockstep, rank 0's
controller deciding exactly what a single controller fed the same mean losses decides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer_harness import (
    MAX_STEPS,
    assert_complete_history,
    plain,
    read_json,
    replay,
    run_ok,
    steps_log,
    worker_command,
    worker_env,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    """One 2-process run with a val_fn (so evaluations are broadcast too); its logs."""
    out = tmp_path_factory.mktemp("lockstep")
    run_ok(worker_command(nproc=2), worker_env(out, WORKER_VAL=1))
    return out


def test_ranks_hold_identical_parameters_after_every_step_and_restore(two_rank_run):
    rank0, rank1 = steps_log(two_rank_run, rank=0), steps_log(two_rank_run, rank=1)
    assert rank0[0]["world_size"] == rank1[0]["world_size"] == 2
    assert rank0[0]["sha"] == rank1[0]["sha"]
    steps0, steps1 = rank0[1:-1], rank1[1:-1]
    assert [r["step"] for r in steps0] == [r["step"] for r in steps1] == \
        list(range(1, MAX_STEPS + 1))
    for a, b in zip(steps0, steps1):
        assert (a["sha_before"], a["sha"], a["lr"], a["phase"], a["stage"], a["restores"]) == \
            (b["sha_before"], b["sha"], b["lr"], b["phase"], b["stage"], b["restores"]), a["step"]
    assert steps0[-1]["restores"] >= 8  # every trial after a stage's first one restores


def test_closing_autolrs_leaves_the_process_group_it_joined(two_rank_run):
    # A gloo rank that exits still in its group can abort (SIGABRT) and fail the job.
    for rank in (0, 1):
        assert steps_log(two_rank_run, rank=rank)[-1] == {"event": "closed",
                                                          "in_process_group": False}


def test_a_group_joined_by_init_process_group_if_needed_is_left_at_exit(tmp_path):
    # The examples join the group themselves; a script that forgets to leave it still does.
    command = worker_command(nproc=2)
    command[-1] = str(Path(__file__).with_name("exit_worker.py"))
    run_ok(command + [str(tmp_path)], worker_env(tmp_path))
    for rank in (0, 1):
        doc = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert doc == {"in_process_group_at_exit": False}


def test_rank0_decides_what_one_controller_fed_the_same_mean_losses_decides(two_rank_run):
    log0, log1 = steps_log(two_rank_run, rank=0), steps_log(two_rank_run, rank=1)
    start, records = log0[0], log0[1:-1]
    final = read_json(two_rank_run, "final.json")
    controller, actions, lrs = replay(records)
    assert any(r["vals"] for r in records), "no validation loss was broadcast"

    # The replayed snapshots/restores, applied to parameter checksums, give every rank's
    # parameters after every step: each restore brought back exactly the snapshot taken.
    slots: dict[str, str] = {}
    current = start["sha"]
    for action in actions[0]:
        if action.kind == "snapshot":
            slots[action.slot] = current
    restores = 0
    assert start["lr"] == log1[0]["lr"] == lrs[0]
    for record, rank1_record, step_actions, lr in zip(records, log1[1:], actions[1:], lrs[1:]):
        current = record["sha_before"]
        for action in step_actions:
            if action.kind == "snapshot":
                slots[action.slot] = current
            elif action.kind == "restore":
                current = slots[action.slot]
                restores += 1
            elif action.kind == "drop":
                slots.pop(action.slot)
        assert record["sha"] == rank1_record["sha"] == current, record["step"]
        assert record["restores"] == rank1_record["restores"] == restores, record["step"]
        assert record["lr"] == rank1_record["lr"] == lr, record["step"]

    assert controller.done and controller.steps == MAX_STEPS
    assert plain(controller.history) == plain(final["history"])
    assert plain(controller.state_dict()) == plain(final["controller"])
    assert_complete_history(final["history"])
