"""`python -m bench` input errors: one line on stderr naming the flag (or file) and what is
allowed, exit 2, checked before anything runs and without writing anything."""

from __future__ import annotations

import pytest

import bench.ablation
import bench.cost
import bench.quality
from bench.__main__ import main
from bench.cost import headline
from bench.methods import autolrs_method, parse_autolrs_option, quality_methods


@pytest.fixture(autouse=True)
def nothing_runs(monkeypatch):
    """A check that let bad input through would start an hour-long run: fail at once."""
    def must_not_run(*args, **kwargs):
        raise AssertionError("the command ran despite bad input")

    monkeypatch.setattr(bench.quality, "run_quality", must_not_run)
    monkeypatch.setattr(bench.ablation, "run_ablation", must_not_run)
    monkeypatch.setattr(bench.cost, "run_cost", must_not_run)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("bench: error: "), err
    return err.strip()


@pytest.mark.parametrize("argv, message", [
    (["ablation", "--tasks", "nope"],
     "argument --tasks: unknown task 'nope'; allowed: digits, mnist1d, charlm"),
    (["quality", "--tasks", "digits,nope"], "argument --tasks: unknown task 'nope'; allowed: "),
    (["quality", "--tasks", ","], "argument --tasks: no task given in ','; allowed: digits, "),
    (["ablation", "--tasks", ""], "argument --tasks: no task given in ''; allowed: digits, "),
    (["quality", "--tasks", "digits,digits"], "argument --tasks: task 'digits' given twice"),
    (["ablation", "--jobs", "0"], "argument --jobs: must be an integer >= 1, got 0"),
    (["quality", "--jobs", "-5"], "argument --jobs: must be an integer >= 1, got -5"),
    (["all", "--jobs", "two"], "argument --jobs: must be an integer >= 1, got 'two'"),
    (["quality", "--seeds", "-2"], "argument --seeds: must be an integer >= 1, got -2"),
    (["ablation", "--seeds", "0"], "argument --seeds: must be an integer >= 1, got 0"),
])
def test_bad_counts_and_task_lists_are_usage_errors(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_ablation_names_the_missing_committed_result_and_how_to_make_it(
        tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the committed results are read from bench/results/
    assert main(["ablation", "--tasks", "digits", "--variants", "default"]) == 2
    err = one_line_error(capsys)
    assert "bench/results/digits.json" in err
    assert "make it with `python -m bench quality --tasks digits`" in err
    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "bench" / "results" / "digits.json").write_text('{"summary": ')
    assert main(["ablation", "--tasks", "digits", "--variants", "default"]) == 2
    assert one_line_error(capsys).startswith(
        "bench: error: bench/results/digits.json is not valid JSON")
    assert not (tmp_path / "bench" / "results" / "ablation.json").exists()


def test_ablation_targets_come_from_the_quality_run_it_names(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    other = tmp_path / "other-machine"
    assert main(["ablation", "--tasks", "digits", "--variants", "default",
                 "--targets", str(other)]) == 2
    err = one_line_error(capsys)
    assert f"no committed quality result {other}/digits.json" in err
    assert f"make it with `python -m bench quality --tasks digits --out {other}`" in err
    assert main(["quality", "--targets", str(other)]) == 2
    assert "--targets applies to the ablation command, not 'quality'" in one_line_error(capsys)


def test_report_without_results_names_the_folder_and_writes_nothing(tmp_path, capsys):
    missing = tmp_path / "nonexistent"
    assert main(["report", "--out", str(missing)]) == 2
    assert f"{missing}/ is not a folder" in one_line_error(capsys)
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "ablation.json").write_text("{}")  # not a task result: nothing to report
    assert main(["report", "--out", str(empty)]) == 2
    assert f"no results to report in {empty}/" in one_line_error(capsys)
    assert not (empty / "README.md").exists()


@pytest.mark.parametrize("content, problem", [
    ('{"summary": {', "is not valid JSON (Expecting"),
    (b"\xff\xfe\x00", "is not valid JSON"),
    ("[1, 2]", "is not a bench result (a JSON object) but a JSON list"),
])
def test_report_names_a_corrupt_result_file(tmp_path, capsys, content, problem):
    path = tmp_path / "digits.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    assert main(["report", "--out", str(tmp_path)]) == 2
    assert one_line_error(capsys).startswith(f"bench: error: {path} {problem}")
    assert not (tmp_path / "README.md").exists()


def test_report_names_a_result_it_cannot_read_instead_of_a_traceback(tmp_path, capsys):
    import json
    import shutil
    from pathlib import Path

    committed = Path(__file__).resolve().parents[3] / "bench" / "results" / "digits.json"
    good = json.loads(committed.read_text())
    for broken, problem in (({**good, "schema": 99}, "schema 99, this bench reads 1"),
                            ({k: v for k, v in good.items() if k != "settings"}, "KeyError: 'settings'")):
        out = tmp_path / str(len(problem))
        out.mkdir()
        (out / "digits.json").write_text(json.dumps(broken))
        assert main(["report", "--out", str(out)]) == 2
        assert one_line_error(capsys).startswith(
            f"bench: error: {out / 'digits.json'} is not a result this bench can report ({problem})")
        assert not (out / "README.md").exists()
    fine = tmp_path / "fine"
    fine.mkdir()
    shutil.copy(committed, fine / "digits.json")
    assert main(["report", "--out", str(fine)]) == 0 and (fine / "README.md").exists()
    capsys.readouterr()


@pytest.mark.parametrize("command", ["cost", "all"])
def test_cuda_without_cuda_is_one_line_before_anything_runs(command, monkeypatch, capsys,
                                                            tmp_path):
    monkeypatch.setattr(bench.cost.torch.cuda, "is_available", lambda: False)
    assert main([command, "--device", "cuda", "--out", str(tmp_path / "out")]) == 2
    assert one_line_error(capsys).startswith(
        "bench: error: --device cuda: CUDA is not available here")
    assert main(["cost", "--device", "cpu", "--device", "cpu"]) == 2
    assert "--device cpu: given twice" in one_line_error(capsys)


def test_cost_headline_without_cpu_figures_has_only_what_was_measured():
    cost = {"bo": {p: {"propose": {"median_ms": 3.0}} for p in ("paper", "default")},
            "snapshot": {"cuda": {"ratio_to_flat_copy": 1.5}},
            "exploit_overhead": {"cuda": {"overhead_fraction": 0.001}}}
    assert headline(cost) == {"bo_decision_median_ms_worst_preset": 3.0,
                              "bo_decision_meets_target": True}


@pytest.mark.parametrize("command", ["quality", "all"])
def test_an_extra_method_named_like_a_preset_is_refused(command, capsys):
    assert main([command, "--autolrs", "paper:tau=400"]) == 2
    assert one_line_error(capsys) == (
        "bench: error: --autolrs: method name 'autolrs-paper' is already a method; "
        "give the extra one another name")


def test_quality_methods_have_names_of_their_own():
    extra = parse_autolrs_option("tau400:tau=400")
    names = [m.name for m in quality_methods([extra])]
    assert names == ["autolrs-paper", "autolrs-default", "autolrs-tau400"]
    assert quality_methods([extra], presets=False) == [extra]
    # Without the presets their names stay reserved: the summary compares every method
    # with autolrs-paper by name.
    with pytest.raises(ValueError, match="^--autolrs: method name 'autolrs-paper' is already"):
        quality_methods([autolrs_method("paper", {"tau": 400})], presets=False)
    with pytest.raises(ValueError, match="'autolrs-tau400' is already a method"):
        quality_methods([extra, parse_autolrs_option("tau400:tau=800")])



@pytest.mark.parametrize("argv, message", [
    (["quality", "--merge"], "--merge applies to the ablation command, not 'quality'"),
    (["all", "--variants", "default"], "--variants applies to the ablation command, not 'all'"),
    (["ablation", "--no-presets"], "--no-presets applies to the all and quality commands, not 'ablation'"),
    (["quality", "--device", "cpu"], "--device applies to the all and cost commands, not 'quality'"),
    (["cost", "--autolrs", "x:kappa=3"], "--autolrs applies to the all, quality and ablation commands, not 'cost'"),
    (["report", "--seeds", "12"], "--seeds applies to the all, quality and ablation commands, not 'report'"),
    (["quality", "--baseline", "c:constant@0.01"], "--baseline adds an ablation variant"),
])
def test_an_option_the_command_would_ignore_is_refused(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "out").exists()
