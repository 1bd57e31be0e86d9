"""``kill -9`` of ``autolrs run`` (it becomes the torchrun agent) ends its workers too:
torchrun starts them in sessions of their own and cannot stop them once it is SIGKILLed,
so without the parent-death signal (autolrs.lifetime) they train on with no agent. The
signal must not end a worker group the agent restarts (``--max-restarts``, as the
operator's pods run), and that group must form on a store of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.services import free_port
from trainer_harness import (PYTHON, REPO, WORKER, last_step, start, steps_log, wait_until,
                             worker_env)

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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("rendezvous", ["c10d", "static"])
def test_a_group_restarted_in_place_by_its_agent_runs_to_the_end(tmp_path, rendezvous):
    """Rank 1 crashes right after joining; the agent restarts both ranks. With torch's own
    store the new group read the old one's addresses and failed or hung on 4 of 6 (c10d)
    and 3 of 4 (static) tries; with the group's own store (autolrs.group_store) and the
    parent-death signal armed, both ranks of the second attempt finish."""
    out = tmp_path / "out"
    port = free_port()
    rdzv = ([f"--master-port={port}"] if rendezvous == "static" else
            ["--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=restart"])
    command = [PYTHON, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2",
               "--max-restarts=1", *rdzv, str(Path(__file__).with_name("restart_worker.py")),
               str(out)]
    proc = subprocess.run(command, env=worker_env(out), cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "exitcode: 3" in proc.stderr  # the first attempt failed, the agent restarted it
    finished = {p.name: p.read_text() for p in out.glob("rank*-attempt1.txt")}
    assert finished == {"rank0-attempt1.txt": "0.5\n", "rank1-attempt1.txt": "0.5\n"}
