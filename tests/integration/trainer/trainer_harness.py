"""Run ``worker.py`` as real processes (plain python, torchrun, ``autolrs run``) and read
what it wrote; checks shared by the trainer integration tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from autolrs.config import AutoLRSConfig
from autolrs.decision_log import effective
from autolrs.engine.controller import StageController
from tests.helpers.services import free_port

WORKER = Path(__file__).with_name("worker.py")
REPO = Path(__file__).resolve().parents[3]
PYTHON = sys.executable
MAX_STEPS = 240
# Small stages so a run takes seconds: stage 0 has tau 20 (3 trials of 5 steps), then 40.
CONFIG: dict[str, Any] = {"minLR": 0.01, "maxLR": 4.0, "tau": 20, "tauMax": 40,
                          "trialsPerStage": 3, "trialFraction": 0.25, "maxSteps": MAX_STEPS,
                          "seed": 0}
RUN_TIMEOUT_S = 180
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                 "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def worker_env(out: Path, config: dict[str, Any] | None = None, **extra: Any) -> dict[str, str]:
    """The environment of a worker run: AUTOLRS_CONFIG, WORKER_OUT, CPU only, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in TORCHRUN_VARS and not k.startswith(("AUTOLRS_", "WORKER_"))}
    env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", WORKER_OUT=str(out),
               AUTOLRS_CONFIG=json.dumps(config or CONFIG))
    env.update({key: str(value) for key, value in extra.items()})
    out.mkdir(parents=True, exist_ok=True)
    return env


def worker_command(nproc: int | None = None) -> list[str]:
    """``python worker.py``, or under torchrun with ``nproc`` processes on a free port."""
    if nproc is None:
        return [PYTHON, str(WORKER)]
    return [PYTHON, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc-per-node={nproc}",
            f"--master-port={free_port()}", str(WORKER)]


def run(command: list[str], env: dict[str, str], timeout: float = RUN_TIMEOUT_S
        ) -> subprocess.CompletedProcess[str]:
    """Run to the end; output captured."""
    return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def run_ok(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run to the end and assert it succeeded."""
    proc = run(command, env)
    assert proc.returncode == 0, describe(proc)
    return proc


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    """Exit code, the error lines and output tails, for assertion messages (torchrun's
    failure summary would otherwise hide the worker's own error)."""
    errors = [line for line in proc.stderr.splitlines()
              if any(word in line for word in ("Error", "error:", "terminate", "Abort"))]
    return (f"exit {proc.returncode}\n--- error lines\n" + "\n".join(errors[:40]) +
            f"\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-5000:]}")


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start in the background, output to ``log``."""
    with open(log, "wb") as handle:
        return subprocess.Popen(command, env=env, cwd=REPO, stdout=handle,
                                stderr=subprocess.STDOUT)


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 120.0,
               proc: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> Any:
    """Poll ``condition`` until it is truthy; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:] if log else ""
            raise AssertionError(f"process exited with {proc.returncode} while waiting for "
                                 f"{what}\n{tail}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def steps_log(out: Path, tag: str = "run", rank: int = 0) -> list[dict[str, Any]]:
    """The JSON lines a rank wrote (a line torn by SIGKILL at the end is dropped)."""
    path = out / f"{tag}-rank{rank}.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def last_step(out: Path, tag: str = "run") -> int:
    """The last step rank 0 logged (0 before the first)."""
    records = [r for r in steps_log(out, tag) if "step" in r]
    return records[-1]["step"] if records else 0


def read_json(out: Path, name: str, tag: str = "run") -> dict[str, Any]:
    """``{tag}-{name}`` as written by the worker."""
    return json.loads((out / f"{tag}-{name}").read_text())


def assert_complete_history(history: list[dict[str, Any]], max_steps: int = MAX_STEPS) -> None:
    """Stages 0..n in order, each starting where the previous ended, from step 0 to the
    budget; only the last may be incomplete."""
    assert history, "no stage decided"
    assert [h["stage"] for h in history] == list(range(len(history)))
    # Stage 0 starts after the LR range test's sweep (when one ran).
    assert history[0]["start_step"] == history[0].get("range_test", {}).get("steps", 0)
    for previous, record in zip(history, history[1:]):
        assert record["start_step"] == previous["end_step"], (previous, record)
    for record in history:
        assert record["end_step"] > record["start_step"], record
    assert all(not h.get("incomplete") for h in history[:-1])
    assert history[-1]["end_step"] == max_steps


def replay(records: list[dict[str, Any]], config: dict[str, Any] = CONFIG,
           has_val: bool = True) -> tuple[StageController, list[list[Any]], list[float]]:
    """Feed a fresh StageController the mean losses (and validation losses) rank 0's
    controller was fed; return it, the actions of each step (``[0]``: the start) and the
    LR it set for the step after each (``[0]``: the first step's)."""
    controller = StageController(AutoLRSConfig.from_dict(config).resolved(), has_val=has_val)
    actions = [controller.start()]
    lrs = [controller.lr]
    for record in records:
        vals = list(record["vals"])
        step_actions = controller.observe_loss(record["loss"])
        done = list(step_actions)
        while any(a.kind == "evaluate" for a in step_actions):
            assert vals, f"step {record['step']}: the controller asked for a validation loss"
            step_actions = controller.observe_val_loss(vals.pop(0))
            done += step_actions
        assert not vals, f"step {record['step']}: validation losses left over"
        actions.append(done)
        lrs.append(controller.lr)
    return controller, actions, lrs


def plain(obj: Any) -> Any:
    """``obj`` after a JSON round trip (what a file or Redis gives back)."""
    return json.loads(json.dumps(obj))


def check_stream_against_history(decisions: list[dict[str, Any]],
                                 history: list[dict[str, Any]],
                                 max_steps: int = MAX_STEPS) -> None:
    """The decision stream holds exactly the events the history implies, once each, in
    order: every trial's end, the decisions and rollbacks, each stage end, one done.
    A replay that differed after a resume voided the lost run's entries: read the
    effective log, as a consumer would."""
    decisions = effective(decisions)
    by_stage: dict[int, list[dict[str, Any]]] = {}
    sweeps = [e for e in decisions if e["type"] == "range_test"]
    if "steps" in history[0].get("range_test", {}):
        fields = {k: v for k, v in sweeps[0].items() if k not in ("type", "stage", "step", "id")}
        assert len(sweeps) == 1 and fields == history[0]["range_test"], sweeps
    else:
        assert not sweeps, sweeps
    decisions = [e for e in decisions if e["type"] != "range_test"]
    for event in decisions[:-1]:
        assert event["type"] in ("trial_end", "decision", "rollback", "stage_end"), event
        by_stage.setdefault(event["stage"], []).append(event)
    assert decisions[-1]["type"] == "done" and decisions[-1]["step"] == max_steps
    assert sorted(by_stage) == [h["stage"] for h in history]
    steps = [e["step"] for e in decisions]
    assert steps == sorted(steps), "decision stream out of step order"
    ids = [e["id"] for e in decisions]
    assert len(ids) == len(set(ids)), "a decision was logged twice"
    for record in history:
        events = by_stage[record["stage"]]
        trial_ends = [e for e in events if e["type"] == "trial_end"]
        trials = [{k: v for k, v in e.items() if k not in ("type", "stage", "step", "trial", "id")}
                  for e in trial_ends]
        assert trials == plain(record["trials"]), record["stage"]
        rollbacks = [e for e in events if e["type"] == "rollback"]
        assert [(e["lr"], e["step"]) for e in rollbacks] == \
            [(r["lr"], r["step"]) for r in record["rollbacks"]]
        decided = [e for e in events if e["type"] == "decision"]
        stage_ends = [e for e in events if e["type"] == "stage_end"]
        if record.get("incomplete"):
            assert not stage_ends
            continue
        # A rollback in a search stage decides again; in a final exploit it halves the LR.
        assert len(decided) == 1 + (len(rollbacks) if record["trial_steps"] else 0)
        assert [(e["lr"], e["step"]) for e in stage_ends] == [(record["lr"], record["end_step"])]
