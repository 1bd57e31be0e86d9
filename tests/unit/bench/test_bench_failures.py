"""A job that raises loses no finished work: what is complete is written as usual, the rest
beside it with the failures, and the run ends with one line naming the failed jobs (exit 1).

Tiny digits runs (60 steps) in this process (``--jobs 1``), with ``run_job`` patched to
raise for one chosen job."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

import bench.ablation
import bench.quality
import bench.tasks
from bench.__main__ import main
from bench.ablation import split_failed
from bench.methods import autolrs_method
from bench.runner import Interrupted, JobsFailed, run_job

TINY = replace(bench.tasks.get_task("digits", is_quick=True), budget=60, eval_every=20,
               lr_grid=(0.03, 0.3), tau=20, tau_max=20,
               autolrs_overrides={"trials_per_stage": 2, "min_trials": 1})


def failing(module, monkeypatch, task: str, method: str, seed: int) -> None:
    """Make ``module.run_job`` raise for one (task, method, seed) job."""
    def run(job):
        if (job["spec"].name, job["method"]["name"], job["seed"]) == (task, method, seed):
            raise RuntimeError("boom:\nout of memory")
        return run_job(job)

    monkeypatch.setattr(module, "run_job", run)


def test_quality_writes_the_complete_tasks_and_keeps_the_failed_ones_finished_runs(
        tmp_path, monkeypatch):
    other = replace(TINY, name="other")
    failing(bench.quality, monkeypatch, "other", "autolrs-default", 1)
    (tmp_path / "other.json").write_text('{"an earlier": "complete result"}')
    with pytest.raises(JobsFailed) as failed:
        bench.quality.run_quality([TINY, other], seeds=[0, 1], jobs=1, out_dir=tmp_path,
                                  autolrs_methods=[autolrs_method("default")],
                                  log=lambda _: None)
    message = str(failed.value)
    assert message.startswith("1 job failed: other 'autolrs-default' seed 1 "
                              "(RuntimeError: boom: out of memory); wrote digits.json to ")
    assert "other.incomplete.json" in message and "\n" not in message
    # The task without failures: summarised and written as always.
    digits = json.loads((tmp_path / "digits.json").read_text())
    assert len(digits["runs"]) == (2 + 4 + 1) * 2  # grid, tuned baselines, AutoLRS; 2 seeds
    assert "autolrs-default" in digits["summary"]["methods"]
    assert (tmp_path / "digits.png").exists()
    # The task with one: no summary over fewer runs than it claims, the earlier result
    # untouched; its finished runs and the failure, with its traceback, beside it.
    assert json.loads((tmp_path / "other.json").read_text()) == {"an earlier": "complete result"}
    incomplete = json.loads((tmp_path / "other.incomplete.json").read_text())
    assert incomplete["complete"] is False and "summary" not in incomplete
    (failure,) = incomplete["failures"]
    assert failure["job"] == "other 'autolrs-default' seed 1"
    assert failure["error"] == "RuntimeError: boom: out of memory"
    assert "Traceback" in failure["traceback"] and "boom" in failure["traceback"]
    finished = sorted((r["method"], r["seed"]) for r in incomplete["runs"])
    every_job = sorted((r["method"], r["seed"]) for r in digits["runs"])
    assert finished == [job for job in every_job if job != ("autolrs-default", 1)]
    assert failed.value.failures == incomplete["failures"]


def test_the_quality_command_exits_1_naming_the_failed_job(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench.tasks, "get_task", lambda name, is_quick=False: TINY)
    failing(bench.quality, monkeypatch, "digits", "constant lr=0.3", 0)
    out = tmp_path / "out"
    assert main(["quality", "--tasks", "digits", "--seeds", "1", "--jobs", "1", "--no-presets",
                 "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bench: error: 1 job failed: digits 'constant lr=0.3' seed 0 "
                          "(RuntimeError: boom: out of memory); wrote no task result to ")
    assert err.count("\n") == 1
    incomplete = json.loads((out / "digits.incomplete.json").read_text())
    # The grid's last run failed: no tuned baselines are queued for a task that will get
    # no summary.
    assert [r["method"] for r in incomplete["runs"]] == ["constant lr=0.03"]
    assert not (out / "digits.json").exists() and not (out / "README.md").exists()


def _committed(root):
    summary = {"target_val_loss": 1.0, "best_baseline": "step decay",
               "methods": {"step decay": {"kind": "step", "lr": 0.03}}}
    root.mkdir(parents=True)
    (root / "digits.json").write_text(json.dumps({"summary": summary}))


def test_ablation_keeps_the_variants_that_finished_and_the_failed_ones_rows(
        tmp_path, monkeypatch):
    _committed(tmp_path / "results")
    monkeypatch.setattr(bench.ablation, "get_task", lambda name: TINY)
    failing(bench.ablation, monkeypatch, "digits", "c0.3", 1)
    variants = {"c0.03": {"baseline": "constant", "lr": 0.03},
                "c0.3": {"baseline": "constant", "lr": 0.3}}
    result = bench.ablation.run_ablation(["digits"], [0, 1], tmp_path / "results", jobs=1,
                                         log=lambda _: None, variants=variants)
    complete, incomplete = split_failed(result)
    assert list(complete["variants"]) == ["c0.03"] and "failed" not in complete
    assert [r["seed"] for r in complete["tasks"]["digits"]["variants"]["c0.03"]] == [0, 1]
    assert list(complete["machines"]) == ["c0.03"]
    assert list(incomplete["variants"]) == ["c0.3"]
    assert [r["seed"] for r in incomplete["tasks"]["digits"]["variants"]["c0.3"]] == [0]
    (failure,) = incomplete["failed"]
    assert (failure["task"], failure["variant"], failure["seed"]) == ("digits", "c0.3", 1)
    assert failure["error"] == "RuntimeError: boom: out of memory"
    assert split_failed({**complete}) == (complete, None)


def test_the_ablation_command_writes_what_finished_then_exits_1(tmp_path, monkeypatch,
                                                                capsys):
    monkeypatch.chdir(tmp_path)
    _committed(tmp_path / "bench" / "results")
    monkeypatch.setattr(bench.ablation, "get_task", lambda name: TINY)
    failing(bench.ablation, monkeypatch, "digits", "c0.3", 0)
    out = tmp_path / "out"
    assert main(["ablation", "--tasks", "digits", "--seeds", "1", "--jobs", "1",
                 "--variants", "best tuned baseline", "--baseline", "c0.3:constant@0.3",
                 "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("bench: error: 1 job failed: digits 'c0.3' seed 0 "
                                   "(RuntimeError: boom: out of memory); wrote the variants "
                                   f"that finished to {out / 'ablation.json'}; ")
    written = json.loads((out / "ablation.json").read_text())
    assert list(written["variants"]) == ["best tuned baseline"]
    assert "| digits | best tuned baseline | " in captured.out
    incomplete = json.loads((out / "ablation.incomplete.json").read_text())
    assert list(incomplete["variants"]) == ["c0.3"] and incomplete["failed"][0]["seed"] == 0


def test_a_rerun_that_finishes_removes_what_the_failed_run_left(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _committed(tmp_path / "bench" / "results")
    monkeypatch.setattr(bench.ablation, "get_task", lambda name: TINY)
    out = tmp_path / "out"
    argv = ["ablation", "--tasks", "digits", "--seeds", "1", "--jobs", "1",
            "--variants", "best tuned baseline", "--baseline", "c0.3:constant@0.3",
            "--baseline", "c0.1:constant@0.1", "--out", str(out)]
    with monkeypatch.context() as patch:
        failing(bench.ablation, patch, "digits", "c0.3", 0)
        assert main(argv) == 1
    assert (out / "ablation.incomplete.json").exists()
    # A rerun of other variants leaves the record of c0.3's failure alone ...
    assert main([*argv[:7], "--variants", "best tuned baseline", "--out", str(out), "--merge"]) == 0
    assert (out / "ablation.incomplete.json").exists()
    # ... a rerun in which c0.3 finishes removes it.
    assert main([*argv, "--merge"]) == 0
    assert not (out / "ablation.incomplete.json").exists()
    assert {"c0.3", "c0.1", "best tuned baseline"} <= set(json.loads((out / "ablation.json").read_text())["variants"])
    capsys.readouterr()


def test_a_quality_rerun_that_finishes_removes_the_tasks_incomplete_file(tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        failing(bench.quality, patch, "digits", "autolrs-default", 0)
        with pytest.raises(JobsFailed):
            bench.quality.run_quality([TINY], seeds=[0], jobs=1, out_dir=tmp_path,
                                      autolrs_methods=[autolrs_method("default")], log=lambda _: None)
    assert (tmp_path / "digits.incomplete.json").exists() and not (tmp_path / "digits.json").exists()
    bench.quality.run_quality([TINY], seeds=[0], jobs=1, out_dir=tmp_path,
                              autolrs_methods=[autolrs_method("default")], log=lambda _: None)
    assert (tmp_path / "digits.json").exists() and not (tmp_path / "digits.incomplete.json").exists()


def test_ctrl_c_in_a_job_run_in_this_process_keeps_what_finished(tmp_path, monkeypatch):
    """``--jobs 1`` runs each job inline, so Ctrl-C lands inside one: nothing starts after
    it, and each task keeps its finished runs (digits's grid finished, but its tuned
    baselines, queued once every task's grid is, never were)."""
    other = replace(TINY, name="other")
    started = []

    def run(job):
        started.append((job["spec"].name, job["method"]["name"], job["seed"]))
        if started[-1] == ("other", "constant lr=0.3", 0):
            raise KeyboardInterrupt
        return run_job(job)

    monkeypatch.setattr(bench.quality, "run_job", run)
    with pytest.raises(Interrupted) as stopped:
        bench.quality.run_quality([TINY, other], seeds=[0], jobs=1, out_dir=tmp_path,
                                  autolrs_methods=[], log=lambda _: None)
    assert str(stopped.value) == (
        f"interrupted: 2 jobs failed or did not finish; wrote no task result to {tmp_path}/; "
        "the finished runs of the other tasks are in digits.incomplete.json, "
        "other.incomplete.json there")
    assert started == [("digits", "constant lr=0.03", 0), ("digits", "constant lr=0.3", 0),
                       ("other", "constant lr=0.03", 0), ("other", "constant lr=0.3", 0)]
    runs = {task: json.loads((tmp_path / f"{task}.incomplete.json").read_text())
            for task in ("digits", "other")}
    assert [(r["method"], r["seed"]) for r in runs["digits"]["runs"]] == [
        ("constant lr=0.03", 0), ("constant lr=0.3", 0)]
    assert [f["job"] for f in runs["digits"]["failures"]] == ["digits tuned baselines"]
    assert [(r["method"], r["seed"]) for r in runs["other"]["runs"]] == [("constant lr=0.03", 0)]
    assert [f["job"] for f in runs["other"]["failures"]] == ["other 'constant lr=0.3' seed 0"]
    assert not list(tmp_path.glob("*[!e].json"))  # no digits.json, no other.json


def test_ctrl_c_in_an_inline_ablation_job_keeps_the_rows_and_names_the_rest(
        tmp_path, monkeypatch):
    _committed(tmp_path / "results")
    (tmp_path / "results" / "other.json").write_text(
        (tmp_path / "results" / "digits.json").read_text())
    monkeypatch.setattr(bench.ablation, "get_task", lambda name: TINY)

    def run(job):
        if (job["method"]["name"], job["seed"]) == ("c0.3", 0):
            raise KeyboardInterrupt
        return run_job(job)

    monkeypatch.setattr(bench.ablation, "run_job", run)
    variants = {"c0.03": {"baseline": "constant", "lr": 0.03},
                "c0.3": {"baseline": "constant", "lr": 0.3}}
    result = bench.ablation.run_ablation(["digits", "other"], [0, 1], tmp_path / "results",
                                         jobs=1, log=lambda _: None, variants=variants)
    assert result["interrupted"] is True
    assert list(result["tasks"]) == ["digits"]
    rows = result["tasks"]["digits"]["variants"]
    assert [r["seed"] for r in rows["c0.03"]] == [0, 1] and rows["c0.3"] == []
    assert [(f["task"], f["variant"], f["seed"]) for f in result["failed"]] == [
        ("digits", "c0.3", 0), ("digits", "c0.3", 1),
        ("other", "c0.03", 0), ("other", "c0.03", 1), ("other", "c0.3", 0), ("other", "c0.3", 1)]
    assert {f["error"] for f in result["failed"]} == {
        "NotFinished: interrupted (Ctrl-C) before it finished"}


def test_the_ablation_measures_against_the_targets_folder_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _committed(tmp_path / "bench" / "results")  # target 1.0 there
    other = tmp_path / "other-machine"
    other.mkdir()
    summary = {"target_val_loss": 2.25, "best_baseline": "step decay",
               "methods": {"step decay": {"kind": "step", "lr": 0.03}}}
    (other / "digits.json").write_text(json.dumps({"summary": summary}))
    monkeypatch.setattr(bench.ablation, "get_task", lambda name: TINY)
    out = tmp_path / "out"
    assert main(["ablation", "--tasks", "digits", "--seeds", "1", "--jobs", "1",
                 "--variants", "best tuned baseline", "--targets", str(other),
                 "--out", str(out)]) == 0
    written = json.loads((out / "ablation.json").read_text())
    assert written["tasks"]["digits"]["target_val_loss"] == 2.25
    (row,) = written["tasks"]["digits"]["variants"]["best tuned baseline"]
    assert row["steps_to_target"] is not None  # a 60-step digits run gets below 2.25
