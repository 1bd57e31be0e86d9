"""The ablation summary: steps to target and the markdown table, from synthetic records."""

import json

from bench.ablation import VARIANTS, ablation_table
from bench.metrics import steps_to_target
from bench.methods import autolrs_method


def test_steps_to_target_is_the_first_eval_at_or_below_it():
    curve = [[50, 2.0], [100, None], [150, 0.5], [200, 0.4]]
    assert steps_to_target(curve, 0.5) == 150
    assert steps_to_target(curve, 0.1) is None


def test_every_variant_is_a_valid_config():
    for name, overrides in VARIANTS.items():
        assert autolrs_method(name, overrides).overrides == overrides


def test_table_counts_seeds_and_averages():
    result = {"tasks": {"mnist1d": {"variants": {
        "default": [
            {"seed": 0, "steps_to_target": None, "min_val_loss": 0.25, "final_val_loss": 0.3,
             "trial_fraction": 0.2, "discarded_fraction": 0.1},
            {"seed": 1, "steps_to_target": 900, "min_val_loss": 0.05, "final_val_loss": 0.1,
             "trial_fraction": 0.3, "discarded_fraction": 0.2},
        ],
        "fixed k": [
            {"seed": 0, "steps_to_target": 700, "final_val_loss": 0.2, "trial_fraction": 0.5},
            {"seed": 1, "steps_to_target": 900, "final_val_loss": 0.2, "trial_fraction": 0.5},
        ]}}}}
    table = ablation_table(result)
    # One seed missed the target: no mean steps. Lowest losses: mean, then the worst seed.
    # Shares: mean, then the worst seed.
    assert ("| mnist1d | default | 1/2 (900) | – | 0.1500 (0.2500) | 0.2000 ± 0.1414 "
            "| 25% / 15% (30% / 20%) |") in table
    # Every seed reached it: the mean; a record without a kept count discards every trial
    # step; one without lowest losses (an older result file) shows none.
    assert ("| mnist1d | fixed k | 2/2 (700, 900) | 800 | – | 0.2000 ± 0.0000 "
            "| 50% / 50% (50% / 50%) |") in table


def test_variants_can_be_selected_by_name_and_include_the_paper_preset():
    from bench.ablation import BEST_BASELINE, EXTRA_VARIANTS, select_variants

    assert select_variants(None) == VARIANTS
    chosen = select_variants("default, paper")
    assert list(chosen) == ["default", "paper"] and chosen["paper"] == {"preset": "paper"}
    for name, overrides in EXTRA_VARIANTS.items():
        if name != BEST_BASELINE:
            assert autolrs_method(name, overrides).overrides == overrides
    import pytest
    with pytest.raises(ValueError, match="unknown variant fast; allowed: all, default, "):
        select_variants("default,fast")


def test_the_best_baseline_variant_runs_the_committed_best_tuned_baseline():
    from bench.ablation import BEST_BASELINE, select_variants, variant_method

    committed = {"best_baseline": "step decay",
                 "methods": {"step decay": {"kind": "step", "lr": 0.01},
                             "cosine": {"kind": "cosine", "lr": 0.01}}}
    overrides = select_variants(BEST_BASELINE)[BEST_BASELINE]
    method = variant_method(BEST_BASELINE, overrides, committed)
    assert (method.kind, method.name, method.lr) == ("step", "step decay", 0.01)
    # Every other variant is AutoLRS with its overrides.
    assert variant_method("paper", {"preset": "paper"}, committed).kind == "autolrs"


def test_the_cli_rejects_an_unknown_variant_in_one_line(capsys):
    from bench.__main__ import main

    assert main(["ablation", "--variants", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench: error: --variants: unknown variant nope") and "\n" not in err


def test_extra_autolrs_variants_join_the_selection_under_their_own_name():
    from bench.ablation import select_variants
    from bench.methods import parse_autolrs_option

    extra = [parse_autolrs_option("floor 80:min_trial_steps=80,kappa=3")]
    chosen = select_variants("default", extra)
    assert chosen == {"default": {}, "floor 80": {"min_trial_steps": 80, "kappa": 3}}
    assert list(select_variants(None, extra)) == [*VARIANTS, "floor 80"]
    import pytest
    with pytest.raises(ValueError, match="^--autolrs: variant name 'paper' is already a variant"):
        select_variants("default", [parse_autolrs_option("paper:kappa=3")])


def test_the_cli_checks_an_extra_variant_before_running_anything(capsys):
    from bench.__main__ import main

    assert main(["ablation", "--variants", "default", "--autolrs", "x:no_such_field=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench: error: unknown AutoLRS config field 'no_such_field'")
    assert "\n" not in err


def _result(variants: dict, seeds=(0, 1)) -> dict:
    rows = [{"seed": s, "steps_to_target": None, "min_val_loss": 1.0, "final_val_loss": 1.0,
             "trial_fraction": 0.2, "discarded_fraction": 0.1} for s in seeds]
    return {"variants": variants, "seeds": list(seeds),
            "tasks": {"digits": {"target_val_loss": 0.5, "best_baseline": "cosine",
                                 "variants": {name: [dict(r, tag=name + tag) for r in rows]
                                              for name, tag in variants.items()}}}}


def test_merge_keeps_the_variants_not_rerun_and_replaces_the_rerun_ones():
    from bench.ablation import merge_ablation

    previous = _result({"default": "-old", "paper": "-old"})
    merged = merge_ablation(previous, _result({"default": "-new", "no LR range test": "-new"}))
    rows = merged["tasks"]["digits"]["variants"]
    assert list(rows) == ["paper", "default", "no LR range test"]
    assert rows["paper"][0]["tag"] == "paper-old" and rows["default"][0]["tag"] == "default-new"
    assert list(merged["variants"]) == ["paper", "default", "no LR range test"]


def test_merge_refuses_other_seeds_or_tasks_in_one_line(tmp_path, capsys):
    import json

    import pytest

    from bench.__main__ import main
    from bench.ablation import merge_ablation

    with pytest.raises(ValueError, match=r"^--merge: the results to merge into have seeds "
                                         r"\[0, 1\] .* this run has seeds \[0, 1, 2\]"):
        merge_ablation(_result({"paper": ""}), _result({"default": ""}, seeds=(0, 1, 2)))
    (tmp_path / "ablation.json").write_text(json.dumps(_result({"paper": ""})))
    # Checked before anything runs: a 12-seed run is not thrown away at its end.
    assert main(["ablation", "--variants", "default", "--seeds", "3", "--tasks", "digits",
                 "--out", str(tmp_path), "--merge"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench: error: --merge: the results to merge into") and "\n" not in err
    assert main(["ablation", "--variants", "default", "--out", str(tmp_path / "none"),
                 "--merge"]) == 2
    assert "--merge: no " in capsys.readouterr().err


def test_merge_keeps_each_variants_machine_and_the_table_names_them():
    from bench.ablation import ablation_table, merge_ablation

    old = {"platform": "Linux-a", "cpu": "Intel Xeon", "cpu_capability": "AVX2",
           "torch": "2.13.0"}
    new = {"platform": "Linux-b", "cpu": "AMD EPYC", "cpu_capability": "AVX512",
           "torch": "2.13.0"}
    previous = dict(_result({"default": "-old", "paper": "-old"}),
                    machines={"default": old, "paper": old})
    merged = merge_ablation(previous, dict(_result({"default": "-new"}),
                                           machines={"default": new}))
    assert merged["machines"] == {"paper": old, "default": new}
    lines = ablation_table(merged).splitlines()
    assert lines[-2:] == ["Measured on Linux-a, Intel Xeon, AVX2 kernels, torch 2.13.0: paper.",
                          "Measured on Linux-b, AMD EPYC, AVX512 kernels, torch 2.13.0: "
                          "default."]
    # Files from before the record: no machine line, and a merge into them records none.
    assert "Measured on" not in ablation_table(_result({"default": ""}))
    unrecorded = merge_ablation(_result({"paper": ""}), _result({"default": ""}))
    assert unrecorded["machines"] == {}


def test_baseline_variants_run_a_schedule_at_the_given_lr():
    from bench.ablation import select_variants, variant_method
    from bench.methods import parse_baseline_option

    option = parse_baseline_option("const 0.002:constant@0.002")
    assert option == ("const 0.002", {"baseline": "constant", "lr": 0.002})
    chosen = select_variants("default", baselines=[option])
    assert chosen == {"default": {}, "const 0.002": {"baseline": "constant", "lr": 0.002}}
    method = variant_method("const 0.002", chosen["const 0.002"], {"best_baseline": "cosine"})
    assert (method.kind, method.name, method.lr) == ("constant", "const 0.002", 0.002)
    import pytest
    with pytest.raises(ValueError, match="^--baseline: variant name 'paper' is already a variant"):
        select_variants("default", baselines=[parse_baseline_option("paper:step@0.1")])


def test_baseline_option_errors_name_what_is_allowed():
    import pytest
    from bench.methods import parse_baseline_option

    with pytest.raises(ValueError, match=r"^--baseline needs NAME:KIND@LR, got 'constant'$"):
        parse_baseline_option("constant")
    with pytest.raises(ValueError, match="kind must be one of constant, cosine, onecycle, step, "
                                         "got 'linear'"):
        parse_baseline_option("x:linear@0.1")
    for bad in ("x:step@fast", "x:step@-1", "x:step@nan"):
        with pytest.raises(ValueError, match="LR must be a positive number"):
            parse_baseline_option(bad)


def test_the_cli_refuses_a_baseline_variant_outside_the_ablation(capsys):
    from bench.__main__ import main

    assert main(["quality", "--baseline", "c:constant@0.01"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench: error: --baseline adds an ablation variant") and "\n" not in err


def test_an_ablation_run_scores_a_baseline_variant_against_the_committed_target(
        tmp_path, monkeypatch):
    """End to end on a tiny digits (one seed, 60 steps): the --baseline variant and the
    best tuned baseline run their schedules, and each row is judged by the committed target."""
    from dataclasses import replace

    import bench.ablation as ablation
    from bench.methods import parse_baseline_option
    from bench.tasks import get_task

    tiny = replace(get_task("digits", is_quick=True), budget=60, eval_every=20)
    monkeypatch.setattr(ablation, "get_task", lambda name: tiny)
    summary = {"target_val_loss": 1.0, "best_baseline": "step decay",
               "methods": {"step decay": {"kind": "step", "lr": 0.03}}}
    (tmp_path / "digits.json").write_text(json.dumps({"summary": summary}))
    variants = ablation.select_variants(
        ablation.BEST_BASELINE, baselines=[parse_baseline_option("c0.03:constant@0.03")])
    result = ablation.run_ablation(["digits"], [0], tmp_path, jobs=1, log=lambda _: None,
                                   variants=variants)
    rows = result["tasks"]["digits"]["variants"]
    assert result["variants"]["c0.03"] == {"baseline": "constant", "lr": 0.03}
    for name in ("c0.03", ablation.BEST_BASELINE):
        (row,) = rows[name]
        assert row["trial_fraction"] == 0.0 and row["min_val_loss"] <= row["final_val_loss"]
        reached = row["min_val_loss"] <= 1.0
        assert (row["steps_to_target"] is not None) == reached
    # Same seed and LR: each ran its own schedule (step decay lowers the LR at step 30).
    assert rows["c0.03"][0]["final_val_loss"] != rows[ablation.BEST_BASELINE][0]["final_val_loss"]


def test_merge_refuses_rows_measured_against_another_target(tmp_path, capsys):
    import json

    import pytest

    from bench.__main__ import main
    from bench.ablation import merge_ablation

    other = _result({"default": ""})
    other["tasks"]["digits"]["target_val_loss"] = 0.4
    with pytest.raises(ValueError, match=r"^--merge: the results to merge into measured digits "
                                         r"against the target val loss 0.5; this run's is 0.4"):
        merge_ablation(_result({"paper": ""}), other)
    # From the CLI, before anything runs: the committed digits target is not 0.5.
    (tmp_path / "ablation.json").write_text(json.dumps(_result({"paper": ""}, seeds=(0, 1, 2))))
    assert main(["ablation", "--variants", "default", "--seeds", "3", "--tasks", "digits",
                 "--out", str(tmp_path), "--merge"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: error: --merge: the results to merge into measured digits "
                          "against the target val loss 0.5; this run's is 0.06")
    assert err.count("\n") == 1


def test_all_in_the_variant_list_stands_for_every_ablation_variant():
    import pytest

    from bench.ablation import VARIANTS, select_variants

    assert list(select_variants("all,paper")) == [*VARIANTS, "paper"]
    assert list(select_variants("paper, all")) == ["paper", *VARIANTS]
    with pytest.raises(ValueError, match=r"^--variants: variant 'default' named twice "
                                         r"\('all' names it too\)$"):
        select_variants("all,default")
    with pytest.raises(ValueError, match=r"^--variants: variant 'paper' named twice$"):
        select_variants("paper,paper")
