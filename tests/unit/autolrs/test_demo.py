"""`autolrs demo`: outputs, and resuming an interrupted run from the same folder."""

import json
import subprocess
import sys

import torch

from autolrs.demo import DemoOptions, run_autolrs, run_demo


def test_demo_writes_history_summary_and_plot(tmp_path, capsys):
    torch.set_num_threads(1)
    opts = DemoOptions(run_dir=tmp_path / "run", max_steps=500, tau=100, tau_max=200,
                       progress=False)
    summary = run_demo(opts)
    out = capsys.readouterr().out
    assert "final validation accuracy: AutoLRS" in out and "constant LR" in out
    history = [json.loads(line) for line in (opts.run_dir / "history.jsonl").read_text().splitlines()]
    assert history and all("lr" in h and "trials" in h for h in history)
    sweep = history[0]["range_test"]  # the default preset sweeps the LR before stage 0
    assert sweep["steps"] == history[0]["start_step"] > 0
    assert f"LR range test: {sweep['steps']} steps, loss lowest at LR" in out
    # The stage before the cooldown searches nothing (hold_final_stage); the table says so.
    assert history[-1]["cooldown"] and history[-2]["no_search"] == "the cooldown follows"
    assert "no search: the cooldown follows" in out and out.count("  cooldown\n") == 1
    saved = json.loads((opts.run_dir / "summary.json").read_text())
    assert saved["autolrs"]["final_val_accuracy"] == summary["autolrs"]["final_val_accuracy"]
    assert 0.0 <= saved["constant_lr"]["final_val_accuracy"] <= 1.0
    assert (opts.run_dir / "schedule.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_interrupted_run_resumes_where_it_stopped(tmp_path):
    run_dir = tmp_path / "run"
    # Kill a real `autolrs demo` process after its first checkpoint (step 500).
    proc = subprocess.Popen(
        [sys.executable, "-m", "autolrs.cli", "demo", "--run-dir", str(run_dir),
         "--steps", "1200", "--no-progress", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    checkpoint = run_dir / "checkpoint.pt"
    import time
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert checkpoint.exists()
    step = torch.load(checkpoint, weights_only=False)["step"]
    assert step == 500
    decisions_before = (run_dir / "store" / "decisions.jsonl").read_text().splitlines()

    sched, curve, _ = run_autolrs(DemoOptions(run_dir=run_dir, max_steps=1200, progress=False))
    assert sched.steps == 1200 and sched.done
    assert curve.train_loss[0][0] == 1 and curve.train_loss[-1][0] == 1200
    steps = [s for s, _ in curve.train_loss]
    assert steps == sorted(set(steps))  # no step lost or repeated in the record
    decisions_after = (run_dir / "store" / "decisions.jsonl").read_text().splitlines()
    assert decisions_after[:len(decisions_before)] == decisions_before


class Interrupted(Exception):
    """Stands in for a kill: the run stops between two steps."""


def _interrupt_at(monkeypatch, stop_step: int) -> None:
    """Make the demo's training loop stop (raise) right after step ``stop_step``."""
    import autolrs.demo as demo

    real_train = demo.train

    def train(*args, after_step, **kwargs):
        def step_then_stop(step, loss):
            done = after_step(step, loss)
            if step == stop_step:
                raise Interrupted
            return done

        return real_train(*args, after_step=step_then_stop, **kwargs)

    monkeypatch.setattr(demo, "train", train)


def _decisions(run_dir) -> list[dict]:
    return [json.loads(line) for line in
            (run_dir / "store" / "decisions.jsonl").read_text().splitlines()]


def test_a_resumed_demo_logs_each_decision_once(tmp_path, monkeypatch):
    """The lost run logged decisions after its last checkpoint; the resumed run makes them
    again and must not append them twice: the log is the uninterrupted run's."""
    import autolrs.demo as demo

    torch.set_num_threads(1)
    monkeypatch.setattr(demo, "CHECKPOINT_EVERY", 100)

    def opts(name):
        return DemoOptions(run_dir=tmp_path / name, max_steps=400, tau=50, tau_max=100,
                           progress=False)

    run_autolrs(opts("whole"))
    with monkeypatch.context() as patch:
        _interrupt_at(patch, 330)
        try:
            run_autolrs(opts("resumed"))
        except Interrupted:
            pass
    checkpoint = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    lost = [d for d in _decisions(tmp_path / "resumed") if d["step"] > checkpoint["step"]]
    assert checkpoint["step"] == 300 and lost  # decisions the replay makes again
    run_autolrs(opts("resumed"))
    ids = [d["id"] for d in _decisions(tmp_path / "resumed")]
    assert len(ids) == len(set(ids))
    assert ids == [d["id"] for d in _decisions(tmp_path / "whole")]


def test_a_demo_without_a_checkpoint_starts_again_without_relogging(tmp_path, monkeypatch):
    """Interrupted before its first checkpoint, the rerun starts at step 0 and replays
    what the lost run logged: each decision stays in the log once."""
    torch.set_num_threads(1)
    opts = DemoOptions(run_dir=tmp_path / "run", max_steps=300, tau=50, tau_max=100,
                       progress=False)
    with monkeypatch.context() as patch:
        _interrupt_at(patch, 220)  # before the first checkpoint (step 500)
        try:
            run_autolrs(opts)
        except Interrupted:
            pass
    assert not (opts.run_dir / "checkpoint.pt").exists() and _decisions(opts.run_dir)
    run_autolrs(opts)
    ids = [d["id"] for d in _decisions(opts.run_dir)]
    assert len(ids) == len(set(ids)) and ids[-1] == "done@300"


def test_a_run_dir_resumes_only_with_the_settings_it_was_made_with(tmp_path, capsys):
    from autolrs.cli import main

    torch.set_num_threads(1)
    run_dir = tmp_path / "s1"
    assert main(["demo", "--steps", "1", "--run-dir", str(run_dir), "--no-progress",
                 "--threads", "1"]) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert main(["demo", "--steps", "60", "--preset", "paper", "--run-dir", str(run_dir),
                 "--no-progress", "--threads", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        f"autolrs: error: --run-dir {run_dir} holds a run made with other settings "
        "(--steps 1 there, 60 now; --preset 'default' there, 'paper' now): use a fresh "
        "--run-dir for a new run, or the same settings to resume it\n")
    assert "resuming" not in captured.out
    assert {p.name: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    # The library call refuses the same way; so does a folder whose settings are unknown.
    import pytest

    with pytest.raises(ValueError, match=r"\(--seed 0 there, 3 now\)"):
        run_autolrs(DemoOptions(run_dir=run_dir, max_steps=1, seed=3, progress=False))
    (run_dir / "settings.json").unlink()
    with pytest.raises(ValueError, match="holds a run without settings.json"):
        run_autolrs(DemoOptions(run_dir=run_dir, max_steps=1, progress=False))
