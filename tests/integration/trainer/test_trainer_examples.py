"""The shipped examples run unchanged under `autolrs run` with 2 processes (config from
AUTOLRS_CONFIG; store and checkpoints from the operator's AUTOLRS_* variables, as in a pod,
or from `--run-dir`): stopped by SIGKILL or SIGTERM after a durable checkpoint, the same
command resumes from that checkpoint, finishes the budget and logs each decision once; run
again, a finished job redoes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from autolrs.checkpoint import CheckpointManager
from autolrs.decision_log import SUPERSEDED, effective
from autolrs.stores.file import FileStore
from tests.helpers.services import free_port
from trainer_harness import (REPO, RUN_TIMEOUT_S, assert_complete_history,
                             check_stream_against_history, describe, run_ok, worker_env)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

STEPS = 120
CHECKPOINT_EVERY = 10  # checkpoints at 10, 20, ...; stage 0 logs trial ends at 5, 10, 15
CONFIG = {"minLR": 1e-4, "maxLR": 3e-2, "tau": 20, "tauMax": 40, "trialsPerStage": 3,
          "trialFraction": 0.25, "maxSteps": STEPS}


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after "pid (comm)" (state first), or None once gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has ended)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants. Not a process group: torchrun starts each worker in a
    session of its own, so killing torchrun's group would leave the workers training."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def logged_steps(store_dir: Path) -> list[int]:
    """The steps of the decisions logged so far (read while being appended to: a line not
    yet whole is left out)."""
    try:
        data = (store_dir / "decisions.jsonl").read_bytes()
    except FileNotFoundError:
        return []
    steps = []
    for raw in data.splitlines():
        try:
            steps.append(json.loads(raw)["step"])
        except (ValueError, KeyError, TypeError):
            pass
    return steps


def interrupt_after_checkpoint(command: list[str], env: dict[str, str], checkpoints: Path,
                               store_dir: Path, how: signal.Signals, log: Path
                               ) -> tuple[int, list[dict[str, Any]]]:
    """Start ``command``; stop it at a moment when a checkpoint is durable (its file
    committed) and decisions of steps after it are logged already, which the restart must
    replay without logging them twice. When the files show such a moment every process of
    the run is frozen (SIGSTOP) and the moment confirmed on the frozen files (else the run
    goes on); then ``how`` goes to every process, torchrun included (SIGKILL: a pod killed;
    SIGTERM: a pod stopped), so no step runs after the confirmation. Waits until none is
    left; returns the newest valid checkpoint's step and the decisions logged then."""
    manager = CheckpointManager(checkpoints)  # only reads: the folder is the workers'
    with open(log, "wb") as handle:
        proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=handle,
                                stderr=subprocess.STDOUT)
    tree = [proc.pid]
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            assert proc.poll() is None, (
                f"exited with {proc.returncode} before it was stopped\n"
                f"{log.read_text(errors='replace')[-4000:]}")
            assert time.monotonic() < deadline, "no checkpoint with decisions after it in time"
            latest = manager.latest_step() if checkpoints.is_dir() else None
            if latest and any(step > latest for step in logged_steps(store_dir)):
                tree = process_tree(proc.pid)
                assert len(tree) >= 3, f"expected torchrun and 2 workers, found pids {tree}"
                signal_all(tree, signal.SIGSTOP)
                while any((_stat(pid) or ["Z"])[0] not in "TtZ" for pid in tree):
                    time.sleep(0.001)
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # a torn line or a bad checkpoint: fail
                    frozen = manager.load_latest()
                    logged = FileStore(store_dir).decisions()
                if frozen is not None and any(e["step"] > frozen[0] for e in logged):
                    signal_all(tree, how)
                    signal_all(tree, signal.SIGCONT)  # a pending SIGTERM is delivered now
                    break
                signal_all(tree, signal.SIGCONT)  # a checkpoint caught up: not this time
            time.sleep(0.002)
        returncode = proc.wait(timeout=60)
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in tree):  # none may outlive the stop, racing the restart
            assert time.monotonic() < deadline, f"still running: {[p for p in tree if alive(p)]}"
            time.sleep(0.05)
    finally:
        for pid in dict.fromkeys(tree + (process_tree(proc.pid) if alive(proc.pid) else [])):
            if alive(pid):
                signal_all([pid], signal.SIGKILL)
        proc.wait(timeout=30)
    output = log.read_text(errors="replace")
    assert returncode != 0, f"the run was not stopped\n{output[-4000:]}"
    assert "done:" not in output
    # Nothing moved after the confirmation: the same newest checkpoint, the same decisions.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        after = manager.load_latest()
        assert after is not None and after[0] == frozen[0], (after and after[0], frozen[0])
        assert FileStore(store_dir).decisions() == logged
    assert 0 < frozen[0] < STEPS, frozen[0]
    return frozen[0], logged


# charlm as in a pod (the operator's AUTOLRS_* variables), stopped with SIGTERM; digits as
# on a laptop (`--run-dir` gives those variables' defaults), SIGKILLed.
@pytest.mark.parametrize("script, how, pod", [
    pytest.param("charlm.py", signal.SIGTERM, True, id="charlm-pod-sigterm"),
    pytest.param("digits_cnn.py", signal.SIGKILL, False, id="digits_cnn-run_dir-sigkill")])
def test_example_resumes_after_interruption_and_finishes(tmp_path, script, how, pod):
    autolrs = Path(sys.executable).with_name("autolrs")
    config = dict(CONFIG, minLR=1e-3, maxLR=1.0) if script == "digits_cnn.py" else CONFIG
    checkpoints = tmp_path / "run" / "checkpoints"
    store_dir = tmp_path / "run" / "store"
    paths = {"AUTOLRS_CHECKPOINT_DIR": checkpoints,
             "AUTOLRS_STORE_URL": f"file://{store_dir}"} if pod else {}
    env = worker_env(tmp_path / "out", config=config, AUTOLRS_CHECKPOINT_EVERY=CHECKPOINT_EVERY,
                     **paths)
    run_dir = [] if pod else ["--run-dir", str(tmp_path / "run")]

    def command():  # the same command each time; only torchrun's rendezvous port is new
        return [str(autolrs), "run", *run_dir, "--nproc-per-node=2",
                f"--master-port={free_port()}", "--", str(REPO / "examples" / script)]

    resumed_from, logged = interrupt_after_checkpoint(command(), env, checkpoints, store_dir,
                                                      how, tmp_path / "interrupted.log")
    assert any(e["step"] > resumed_from for e in logged)

    restarted = run_ok(command(), env)
    assert f"resumed from the checkpoint of step {resumed_from}\n" in restarted.stdout, \
        describe(restarted)
    assert f"done: {STEPS} steps" in restarted.stdout, describe(restarted)
    manager = CheckpointManager(checkpoints)
    assert manager.latest_step() == STEPS
    assert not list(checkpoints.glob(".ckpt-*.tmp")), "a torn write's temp file was left"
    store = FileStore(store_dir)
    state = store.load_state()[1]
    assert state["phase"] == "done" and state["steps"] == STEPS
    assert_complete_history(state["history"], max_steps=STEPS)

    # The decision log across the stop: what the stopped run logged stays; the restart's
    # replay of the steps after the checkpoint is exact (same world size), so it appends
    # only decisions the stopped run had not logged, nothing twice and nothing voided.
    decisions = store.decisions()
    assert decisions[:len(logged)] == logged
    appended = decisions[len(logged):]
    assert appended and all(e["step"] > resumed_from for e in appended), appended
    assert min(e["step"] for e in appended) >= max(e["step"] for e in logged), appended
    assert not [e for e in decisions if e["type"] == SUPERSEDED]
    entries = effective(decisions)
    ids = [e["id"] for e in entries]
    assert len(ids) == len(set(ids)), "a decision was logged twice"
    steps = [e["step"] for e in entries]
    assert steps == sorted(steps), "the decision log is out of step order"
    assert entries[-1]["type"] == "done" and entries[-1]["step"] == STEPS
    check_stream_against_history(decisions, state["history"], max_steps=STEPS)

    if script != "charlm.py":
        return
    again = run_ok(command(), env)  # a restarted pod of a finished job: nothing to redo
    assert f"resumed from the checkpoint of step {STEPS}\n" in again.stdout
    assert restarted.stdout.strip().splitlines()[-1] == again.stdout.strip().splitlines()[-1]
    assert json.dumps(FileStore(store_dir).load_state()[1]) == json.dumps(state)
    assert FileStore(store_dir).decisions() == decisions
