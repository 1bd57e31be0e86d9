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
