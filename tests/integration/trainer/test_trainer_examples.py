"""The examples run unchanged under `autolrs run` with 2 processes, as in a pod (config from
AUTOLRS_CONFIG); run again, the character LM resumes from its finished checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from autolrs.checkpoint import CheckpointManager
from autolrs.stores.file import FileStore
from tests.helpers.services import free_port
from trainer_harness import REPO, assert_complete_history, run_ok, worker_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

STEPS = 120
CONFIG = {"minLR": 1e-4, "maxLR": 3e-2, "tau": 20, "tauMax": 40, "trialsPerStage": 3,
          "trialFraction": 0.25, "maxSteps": STEPS}


@pytest.mark.parametrize("script", ["charlm.py", "digits_cnn.py"])
def test_example_runs_under_autolrs_run_and_resumes(tmp_path, script):
    autolrs = Path(sys.executable).with_name("autolrs")
    config = dict(CONFIG, minLR=1e-3, maxLR=1.0) if script == "digits_cnn.py" else CONFIG
    env = worker_env(tmp_path / "out", config=config)

    def command():
        return [str(autolrs), "run", "--nproc-per-node=2", f"--master-port={free_port()}",
                "--run-dir", str(tmp_path / "run"), "--", str(REPO / "examples" / script)]

    first = run_ok(command(), env)
    assert f"done: {STEPS} steps" in first.stdout
    state = FileStore(tmp_path / "run" / "store").load_state()[1]
    assert state["phase"] == "done" and state["steps"] == STEPS
    assert_complete_history(state["history"], max_steps=STEPS)
    assert CheckpointManager(tmp_path / "run" / "checkpoints").latest_step() == STEPS

    if script != "charlm.py":
        return
    again = run_ok(command(), env)  # a restarted pod of a finished job: nothing to redo
    assert first.stdout.strip().splitlines()[-1] == again.stdout.strip().splitlines()[-1]
    assert json.dumps(FileStore(tmp_path / "run" / "store").load_state()[1]) == json.dumps(state)
