"""`autolrs run [--run-dir DIR] [torchrun options] -- script.py args`: the command line and
environment it execs, help and usage errors (no torchrun started: the trainer
integration tests run the real one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from autolrs.cli import main, run_command
from autolrs.stores.factory import open_store

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def test_torchrun_options_go_before_the_script_and_script_args_stay_verbatim():
    argv = ["--nproc-per-node", "2", "--master-port=29500", "--", "train.py",
            "--run-dir", "x", "--", "-v"]
    command, _ = run_command(argv, environ={})
    assert command == TORCHRUN + ["--nproc-per-node", "2", "--master-port=29500",
                                  "train.py", "--run-dir", "x", "--", "-v"]


@pytest.mark.parametrize("form", ["separate", "equals"])
def test_run_dir_sets_absolute_store_and_checkpoint_defaults(tmp_path, monkeypatch, form):
    monkeypatch.chdir(tmp_path)
    option = ["--run-dir", "runs/a b"] if form == "separate" else ["--run-dir=runs/a b"]
    command, env = run_command([*option, "--nnodes=1", "--", "train.py"], environ={})
    assert command == TORCHRUN + ["--nnodes=1", "train.py"]
    run_dir = tmp_path / "runs" / "a b"
    assert env["AUTOLRS_STORE_URL"] == f"file://{run_dir}/store"
    assert env["AUTOLRS_CHECKPOINT_DIR"] == str(run_dir / "checkpoints")
    store = open_store(env["AUTOLRS_STORE_URL"])  # the URL opens the folder it names
    assert store.root == run_dir / "store" and store.root.is_dir()


def test_variables_already_set_win_over_run_dir_defaults():
    environ = {"AUTOLRS_STORE_URL": "redis://redis:6379/0", "AUTOLRS_CHECKPOINT_DIR": "/ckpt",
               "OMP_NUM_THREADS": "4", "PATH": "/bin"}
    _, env = run_command(["--run-dir", "/tmp/r", "--", "train.py"], environ=environ)
    assert env["AUTOLRS_STORE_URL"] == "redis://redis:6379/0"
    assert env["AUTOLRS_CHECKPOINT_DIR"] == "/ckpt"
    assert env["OMP_NUM_THREADS"] == "4" and env["PATH"] == "/bin"


def test_without_run_dir_nothing_but_one_cpu_thread_is_added():
    _, env = run_command(["--", "train.py"], environ={"HOME": "/root"})
    assert env == {"HOME": "/root", "OMP_NUM_THREADS": "1"}


def test_the_callers_environment_is_not_modified():
    environ = {"HOME": "/root"}
    run_command(["--run-dir", "/tmp/r", "--", "train.py"], environ=environ)
    assert environ == {"HOME": "/root"}


@pytest.mark.parametrize("argv, message", [
    (["train.py"], "usage: autolrs run"),
    ([], "usage: autolrs run"),
    (["--nproc-per-node=2", "--"], "give the training script after --"),
    (["--run-dir", "--", "train.py"], "--run-dir needs a folder"),
    (["--run-dir"], "usage: autolrs run"),
])
def test_bad_command_lines_raise_one_clear_error(argv, message):
    with pytest.raises(ValueError, match=message):
        run_command(argv, environ={})


def test_main_reports_a_bad_command_line_on_stderr_with_exit_2(capsys):
    assert main(["run", "train.py"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("autolrs: error: usage: autolrs run") and err.count("\n") == 1


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_run_help_prints_usage_and_succeeds(capsys, flag):
    assert main(["run", flag]) == 0
    out = capsys.readouterr().out
    assert "autolrs run [--run-dir DIR] [torchrun options] -- script.py [args]" in out
    assert "--run-dir" in out


def test_the_console_script_answers_help_and_bad_usage():
    autolrs = str(Path(sys.executable).with_name("autolrs"))
    ok = subprocess.run([autolrs, "run", "--help"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.startswith("usage: autolrs run"), ok.stderr
    bad = subprocess.run([autolrs, "run", "train.py"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("autolrs: error: usage:")
