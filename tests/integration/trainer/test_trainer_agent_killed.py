"""``kill -9`` of ``autolrs run`` (it becomes the torchrun agent) ends its workers too:
torchrun starts them in sessions of their own and cannot stop them once it is SIGKILLed,
so without the parent-death signal (autolrs.lifetime) they train on with no agent."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.services import free_port
from trainer_harness import WORKER, last_step, start, steps_log, wait_until, worker_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_sigkill_of_autolrs_run_ends_its_two_workers(tmp_path):
    autolrs = Path(sys.executable).with_name("autolrs")
    log = tmp_path / "agent.log"
    command = [str(autolrs), "run", "--nproc-per-node=2", f"--master-port={free_port()}",
               "--", str(WORKER)]
    agent = start(command, worker_env(tmp_path / "out", WORKER_STEP_SLEEP=0.2), log)
    workers: list[int] = []
    try:
        wait_until(lambda: last_step(tmp_path / "out") >= 3 and steps_log(tmp_path / "out", rank=1),
                   "both ranks training", timeout=120, proc=agent, log=log)
        workers = children(agent.pid)
        assert len(workers) == 2, workers
        agent.send_signal(signal.SIGKILL)
        agent.wait(timeout=30)
        stepped = last_step(tmp_path / "out")
        wait_until(lambda: not any(running(pid) for pid in workers),
                   "the workers to end with their agent", timeout=30)
        time.sleep(0.5)
        assert last_step(tmp_path / "out") <= stepped + 2  # they stopped, not finished
    finally:
        for pid in workers:  # without the fix they would still be training
            if running(pid):
                os.kill(pid, signal.SIGKILL)
