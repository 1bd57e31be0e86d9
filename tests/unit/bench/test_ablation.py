"""The ablation summary: steps to target and the markdown table, from synthetic records."""

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
            {"seed": 0, "steps_to_target": None, "final_val_loss": 0.3, "trial_fraction": 0.2,
             "discarded_fraction": 0.1},
            {"seed": 1, "steps_to_target": 900, "final_val_loss": 0.1, "trial_fraction": 0.3,
             "discarded_fraction": 0.2},
        ],
        "fixed k": [
            {"seed": 0, "steps_to_target": 700, "final_val_loss": 0.2, "trial_fraction": 0.5},
            {"seed": 1, "steps_to_target": 900, "final_val_loss": 0.2, "trial_fraction": 0.5},
        ]}}}}
    table = ablation_table(result)
    # One seed missed the target: no mean steps. Shares: mean, then the worst seed.
    assert "| mnist1d | default | 1/2 (900) | – | 0.2000 ± 0.1414 | 25% / 15% (30% / 20%) |" in table
    # Every seed reached it: the mean; a record without a kept count discards every trial step.
    assert "| mnist1d | fixed k | 2/2 (700, 900) | 800 | 0.2000 ± 0.0000 | 50% / 50% (50% / 50%) |" in table


def test_variants_can_be_selected_by_name_and_include_the_paper_preset():
    from bench.ablation import EXTRA_VARIANTS, select_variants

    assert select_variants(None) == VARIANTS
    chosen = select_variants("default, paper")
    assert list(chosen) == ["default", "paper"] and chosen["paper"] == {"preset": "paper"}
    for name, overrides in EXTRA_VARIANTS.items():
        assert autolrs_method(name, overrides).overrides == overrides
    import pytest
    with pytest.raises(ValueError, match="unknown variant fast; allowed: default, "):
        select_variants("default,fast")


def test_the_cli_rejects_an_unknown_variant_in_one_line(capsys):
    from bench.__main__ import main

    assert main(["ablation", "--variants", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench: error: --variants: unknown variant nope") and "\n" not in err
