"""`autolrs demo` input errors: one line on stderr naming the flag and what is allowed,
exit 2, before anything runs; the values given are used as given."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import autolrs.demo
from autolrs.cli import main


@pytest.fixture(autouse=True)
def torch_threads():
    """`autolrs demo --threads N` sets torch's thread count: put it back afterwards."""
    threads = torch.get_num_threads()
    yield threads
    torch.set_num_threads(threads)


@pytest.fixture
def demo_calls(monkeypatch):
    """The options run_demo would have run with (nothing is trained)."""
    calls = []
    monkeypatch.setattr(autolrs.demo, "run_demo", calls.append)
    return calls


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("autolrs: error: "), err
    return err.strip()


@pytest.mark.parametrize("argv, message", [
    (["--run-dir", ""], "argument --run-dir: needs a folder, got an empty path"),
    (["--threads", "-3"], "argument --threads: must be an integer >= 1, got -3"),
    (["--threads", "0"], "argument --threads: must be an integer >= 1, got 0"),
    (["--seed", "-1"], "argument --seed: must be an integer in [0, 4294967296), got -1"),
    (["--seed", str(2**32)], "argument --seed: must be an integer in [0, 4294967296)"),
    (["--steps", "0"], "argument --steps: must be an integer >= 1, got 0"),
    (["--steps", "many"], "argument --steps: must be an integer >= 1, got 'many'"),
])
def test_bad_flags_are_one_line_usage_errors(argv, message, demo_calls, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", *argv])
    assert exit_.value.code == 2
    assert message in one_line_error(capsys)
    assert demo_calls == []


def test_a_run_dir_that_cannot_be_a_folder_is_refused(tmp_path, demo_calls, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    assert main(["demo", "--run-dir", str(afile)]) == 2
    assert one_line_error(capsys) == (f"autolrs: error: --run-dir {afile}: exists and is not "
                                      "a folder; give a folder (a new one, or that of a run "
                                      "to resume)")
    assert main(["demo", "--run-dir", str(afile / "run")]) == 2
    assert one_line_error(capsys) == (f"autolrs: error: --run-dir {afile / 'run'}: cannot "
                                      "create the folder (Not a directory)")
    if Path("/proc/self").is_dir():  # Linux: procfs makes no folders
        assert main(["demo", "--run-dir", "/proc/nope"]) == 2
        assert one_line_error(capsys).startswith(
            "autolrs: error: --run-dir /proc/nope: cannot create the folder (")
    assert demo_calls == []


def test_the_flags_reach_the_demo_as_given(tmp_path, demo_calls, torch_threads):
    assert main(["demo", "--run-dir", str(tmp_path / "run"), "--steps", "7", "--seed", "5",
                 "--threads", str(torch_threads + 3), "--no-progress"]) == 0
    assert torch.get_num_threads() == torch_threads + 3  # not clamped to the default
    (opts,) = demo_calls
    assert (opts.run_dir, opts.max_steps, opts.seed, opts.progress) == (tmp_path / "run", 7, 5,
                                                                        False)


def test_the_console_script_refuses_a_file_as_run_dir_without_a_traceback(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    autolrs = str(Path(sys.executable).with_name("autolrs"))
    bad = subprocess.run([autolrs, "demo", "--run-dir", str(afile)], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr == (f"autolrs: error: --run-dir {afile}: exists and is not a folder; "
                          "give a folder (a new one, or that of a run to resume)\n")


@pytest.mark.parametrize("error, status, message", [
    (KeyboardInterrupt(), 130, "autolrs: interrupted; the same command resumes {run_dir} from "
                               "its last checkpoint"),
    (OSError(28, "No space left on device"), 1, "autolrs: error: [Errno 28] No space left on "
                                                "device"),
])
def test_what_else_reaches_the_user_is_one_line_too(tmp_path, monkeypatch, capsys, error,
                                                    status, message):
    def run_demo(opts):
        raise error

    monkeypatch.setattr(autolrs.demo, "run_demo", run_demo)
    run_dir = tmp_path / "run"
    assert main(["demo", "--run-dir", str(run_dir), "--threads", "1"]) == status
    err = capsys.readouterr().err
    assert err.strip() == message.format(run_dir=run_dir) and "Traceback" not in err
