"""A tiny end-to-end bench run on digits (seconds): records, summary, report, figure."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest

from bench.methods import autolrs_method, parse_autolrs_option
from bench.quality import run_quality
from bench.report import write_report
from bench.tasks import get_task

BUDGET = 60


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    spec = replace(get_task("digits", is_quick=True), budget=BUDGET, eval_every=20,
                   lr_grid=(0.03, 0.3), tau=20, tau_max=20,
                   autolrs_overrides={"trials_per_stage": 2, "min_trials": 1})
    out = tmp_path_factory.mktemp("bench")
    results = run_quality([spec], seeds=[0], jobs=1, out_dir=out, log=lambda _: None,
                          autolrs_methods=[autolrs_method("paper", {"preset": "paper"}),
                                           autolrs_method("default")])
    return results["digits"], out


def test_every_run_record_has_the_schema_and_spends_the_budget(tiny_result):
    result, out = tiny_result
    assert json.loads((out / "digits.json").read_text()) == json.loads(json.dumps(result))
    names = {r["method"] for r in result["runs"]}
    assert names == {"constant lr=0.03", "constant lr=0.3", "constant (best)", "cosine",
                     "onecycle", "step decay", "autolrs-paper", "autolrs-default"}
    for run in result["runs"]:
        assert run["steps"] == BUDGET
        assert sum(run["phase_steps"].values()) == BUDGET
        steps = [s for s, _ in run["curve"]["val_loss"]]
        assert steps == sorted(steps) and steps[-1] == BUDGET
        assert run["final_val_loss"] == run["curve"]["val_loss"][-1][1]
        assert 0.0 <= run["final_val_accuracy"] <= 1.0


def test_autolrs_record_counts_its_trial_steps_and_keeps_its_schedule(tiny_result):
    result, _ = tiny_result
    (run,) = [r for r in result["runs"] if r["method"] == "autolrs-paper"]
    trials = [t for stage in run["history"] for t in stage["trials"]]
    assert trials and run["trial_steps"] == run["phase_steps"]["search"] > 0
    assert run["trial_steps"] >= sum(t["steps"] for t in trials)
    assert run["config"]["preset"] == "paper" and run["config"]["max_steps"] == BUDGET
    assert run["lr_schedule"][0][0] == 1
    lrs = {round(lr, 12) for _, lr in run["lr_schedule"]}
    assert {round(t["lr"], 12) for t in trials} <= lrs


def test_summary_ratios_and_best_constant_follow_the_runs(tiny_result):
    result, _ = tiny_result
    summary = result["summary"]
    grid = {r["lr"]: r["final_val_loss"] for r in result["runs"] if r["grid"]}
    assert result["best_constant_lr"] == min(grid, key=grid.get)
    best = summary["methods"][summary["best_baseline"]]
    assert best["kind"] in ("constant", "cosine", "onecycle", "step") and not best["grid"]
    minima = [min(v for _, v in r["curve"]["val_loss"]) for r in result["runs"]
              if r["method"] == summary["best_baseline"]]
    assert summary["target_val_loss"] == max(minima)
    for name, figures in summary["methods"].items():
        (run,) = [r for r in result["runs"] if r["method"] == name]
        expected = run["final_val_loss"] / best["final_val_loss"]["mean"]
        assert figures["ratio_to_best_baseline"]["final_val_loss"] == pytest.approx(expected)
        reached = next((s for s, v in run["curve"]["val_loss"]
                        if v <= summary["target_val_loss"]), None)
        assert figures["steps_to_target_per_seed"] == [reached]


def test_report_and_figure_are_written(tiny_result, tmp_path):
    result, out = tiny_result
    assert (out / "digits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shutil.copy(out / "digits.json", tmp_path / "digits.json")
    text = write_report(tmp_path)
    assert "| digits | 60 |" in text and "autolrs-paper" in text
    machine = result["machine"]
    assert machine["cpu"] and machine["cpu_capability"]
    assert f"Measured on {machine['platform']}, {machine['cpu']}, " in text
    # The default's last 12 steps (cooldown 0.2 of 60) drop its LR to a tenth, then
    # decay it to 0.
    (run,) = [r for r in result["runs"] if r["method"] == "autolrs-default"]
    cooldown = run["history"][-1]
    assert cooldown["cooldown"] and cooldown["start_step"] == 48
    schedule = dict(run["lr_schedule"])
    assert schedule[49] == pytest.approx(cooldown["lr"] / 10) == cooldown["first_lr"]
    assert [lr for step, lr in run["lr_schedule"] if step > 48][-1] < cooldown["lr"] / 100
    assert f"{cooldown['lr']:.3g} -> {cooldown['first_lr']:.3g} .. " in text
    assert "(cooldown)" in text
    assert (tmp_path / "README.md").read_text() == text


def test_autolrs_option_parses_overrides_and_rejects_unknown_fields():
    method = parse_autolrs_option("no-keep:keep_best_trial=false,tau=400,preset=paper")
    assert method.name == "autolrs-no-keep"
    assert method.overrides == {"keep_best_trial": False, "tau": 400, "preset": "paper"}
    with pytest.raises(ValueError, match="unknown AutoLRS config field"):
        parse_autolrs_option("bad:not_a_field=1")
    with pytest.raises(ValueError, match="tau"):
        parse_autolrs_option("bad:tau=3")
    # Every bench run has a budget, so a cooldown (which needs one) is accepted.
    assert parse_autolrs_option("long:cooldown=0.4").overrides == {"cooldown": 0.4}
    with pytest.raises(ValueError, match="cooldown must be a fraction"):
        parse_autolrs_option("bad:cooldown=0.9")
