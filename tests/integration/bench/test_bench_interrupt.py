"""Ctrl-C during a bench run: queued jobs are cancelled and running ones ended (not run to
the end first), what finished is kept beside the results, and the command says so in one
line with exit status 130. Real worker processes and a real SIGINT to the process group,
as a terminal's Ctrl-C sends it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
DRIVER = Path(__file__).with_name("interrupt_driver.py")


def interrupt_when(args: list[str], hanging: str, ready: list[str]) -> tuple[int, str, str, int]:
    """Run the bench with ``hanging``'s jobs sleeping; once every line of ``ready`` is in
    its output, SIGINT its process group. Returns (status, stdout, stderr, process group)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}/trainer:{ROOT}", "PYTHONUNBUFFERED": "1",
           "BENCH_HANGING_METHOD": hanging}

    def own_group_with_default_sigint() -> None:
        os.setsid()
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background shell ignores it

    process = subprocess.Popen([sys.executable, str(DRIVER), *args], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=own_group_with_default_sigint)
    seen: list[str] = []
    deadline = time.monotonic() + 300
    try:
        while not all(any(want in line for line in seen) for want in ready):
            line = process.stdout.readline()
            if not line or time.monotonic() > deadline:
                raise AssertionError(f"the bench never got to {ready}; output: {seen}")
            seen.append(line)
        os.killpg(process.pid, signal.SIGINT)
        try:
            rest, err = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            raise AssertionError("the bench was still running two minutes after Ctrl-C "
                                 "(it waited for the hanging job)") from None
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode, "".join(seen) + rest, err, process.pid


def assert_group_gone(group: int) -> None:
    """No worker of the run is left (they share its process group)."""
    for _ in range(50):
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes of the interrupted bench (group {group}) still run")


def test_ctrl_c_during_quality_keeps_the_finished_runs_and_exits_130(tmp_path):
    out = tmp_path / "out"
    status, stdout, err, group = interrupt_when(
        ["quality", "--tasks", "digits", "--seeds", "2", "--jobs", "2", "--no-presets",
         "--out", str(out)],
        hanging="constant lr=0.3", ready=["hanging: constant lr=0.3", "constant lr=0.03 seed"])
    assert status == 130, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("bench: error: interrupted: ")
    assert lines[-1].endswith(f"wrote no task result to {out}/; the finished runs of the "
                              "other tasks are in digits.incomplete.json there")
    assert "Traceback" not in err
    assert_group_gone(group)
    incomplete = json.loads((out / "digits.incomplete.json").read_text())
    assert incomplete["complete"] is False and not (out / "digits.json").exists()
    finished = {(r["method"], r["seed"]) for r in incomplete["runs"]}
    assert finished and finished <= {("constant lr=0.03", 0), ("constant lr=0.03", 1)}
    not_finished = {f["job"]: f["error"] for f in incomplete["failures"]}
    assert not_finished["digits 'constant lr=0.3' seed 0"] == (
        "NotFinished: interrupted (Ctrl-C) before it finished")
    assert len(incomplete["runs"]) + len(not_finished) == 4  # the grid; nothing tuned yet
    assert lines[-1].startswith(f"bench: error: interrupted: {len(not_finished)} job")


def test_ctrl_c_during_ablation_leaves_the_table_and_keeps_the_rows(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    table = {"an earlier": "ablation"}
    (out / "ablation.json").write_text(json.dumps(table))
    status, stdout, err, group = interrupt_when(
        ["ablation", "--tasks", "digits", "--seeds", "1", "--jobs", "2",
         "--variants", "default,no early stop", "--out", str(out)],
        hanging="no early stop", ready=["hanging: no early stop", "ablation digits default"])
    assert status == 130, err
    assert err.strip().splitlines()[-1] == (
        f"bench: error: interrupted: 1 job failed or did not finish; left "
        f"{out / 'ablation.json'} as it was; the rows that finished are in "
        f"{out / 'ablation.incomplete.json'}")
    assert_group_gone(group)
    assert json.loads((out / "ablation.json").read_text()) == table
    incomplete = json.loads((out / "ablation.incomplete.json").read_text())
    assert incomplete["interrupted"] is True
    rows = incomplete["tasks"]["digits"]["variants"]
    assert [r["seed"] for r in rows["default"]] == [0] and rows["no early stop"] == []
    (failure,) = incomplete["failed"]
    assert (failure["variant"], failure["seed"], failure["error"]) == (
        "no early stop", 0, "NotFinished: interrupted (Ctrl-C) before it finished")
