"""The bench's pure figures on synthetic runs: steps to target, target, best baseline, ratios."""

from __future__ import annotations

import math

import pytest

from bench.metrics import (best_baseline, best_constant_lr, group_runs, ratio, spread,
                           steps_to_target, summarize, target_loss)


def test_steps_to_target_is_the_first_crossing_and_skips_missing_points():
    curve = [(50, 2.0), (100, None), (150, math.nan), (200, 0.9), (250, 1.1), (300, 0.5)]
    assert steps_to_target(curve, 1.0) == 200
    assert steps_to_target(curve, 0.9) == 200          # at the target counts as reached
    assert steps_to_target(curve, 0.5) == 300
    assert steps_to_target(curve, 0.4) is None


def test_spread_and_ratio_refuse_partly_unreached_figures():
    reached = spread([100, 200, 300])
    assert reached == {"mean": 200, "std": 100, "min": 100, "max": 300, "n": 3, "of": 3}
    partial = spread([100, None, 300])
    assert (partial["n"], partial["of"], partial["mean"]) == (2, 3, 200)
    assert ratio(reached, spread([400, 400, 400])) == pytest.approx(0.5)
    assert ratio(partial, reached) is None
    assert spread([None, None])["mean"] is None


def _run(method: str, kind: str, seed: int, curve: list[tuple[int, float]], *, lr=None,
         grid=False, trial_steps=0, kept=0, wall=1.0) -> dict:
    return {"method": method, "kind": kind, "seed": seed, "lr": lr, "grid": grid,
            "steps": curve[-1][0], "budget": curve[-1][0], "trial_steps": trial_steps,
            "trial_steps_kept": kept, "wall_seconds": wall,
            "final_val_loss": curve[-1][1], "final_val_accuracy": 1 - curve[-1][1] / 10,
            "curve": {"val_loss": curve}}


def synthetic_runs() -> list[dict]:
    runs = []
    for seed in (0, 1):
        shift = 0.1 * seed
        runs += [
            _run("constant lr=0.1", "constant", seed, [(100, 1.0), (200, 0.8 + shift)],
                 lr=0.1, grid=True),
            _run("constant lr=1", "constant", seed, [(100, 2.0), (200, 2.3)], lr=1.0, grid=True),
            _run("constant (best)", "constant", seed, [(100, 1.0), (200, 0.8 + shift)], lr=0.1),
            # cosine: best final loss; per-seed minima 0.5 and 0.6 -> target 0.6
            _run("cosine", "cosine", seed, [(100, 0.9), (200, 0.5 + shift), (300, 0.55 + shift)],
                 lr=0.1, wall=2.0),
            _run("autolrs-x", "autolrs", seed, [(100, 0.6), (200, 0.4), (300, 0.45)],
                 trial_steps=150, wall=4.0),
            _run("autolrs-y", "autolrs", seed, [(100, 1.5), (200, 0.7 if seed else 0.5),
                                                (300, 0.7)], trial_steps=30, wall=3.0),
        ]
    return runs


def test_summary_picks_the_best_tuned_baseline_and_its_target():
    runs = synthetic_runs()
    groups = group_runs(runs)
    assert best_constant_lr(runs) == 0.1
    assert best_baseline(groups) == "cosine"            # grid runs are not candidates
    assert target_loss(groups["cosine"]) == pytest.approx(0.6)
    summary = summarize(runs)
    assert summary["best_baseline"] == "cosine"
    assert summary["target_val_loss"] == pytest.approx(0.6)


def test_summary_ratios_come_from_the_measured_numbers():
    summary = summarize(synthetic_runs())
    cosine, x, y = (summary["methods"][n] for n in ("cosine", "autolrs-x", "autolrs-y"))
    assert cosine["steps_to_target_per_seed"] == [200, 200]   # seed 1's minimum is the target
    assert x["steps_to_target_per_seed"] == [100, 100]
    assert x["ratio_to_best_baseline"]["steps_to_target"] == pytest.approx(100 / 200)
    assert x["ratio_to_best_baseline"]["wall_seconds"] == pytest.approx(2.0)
    assert x["ratio_to_best_baseline"]["final_val_loss"] == pytest.approx(0.45 / 0.6)
    assert x["trial_step_fraction"]["mean"] == pytest.approx(0.5)
    assert y["steps_to_target_per_seed"] == [200, None]
    assert y["ratio_to_best_baseline"]["steps_to_target"] is None
    assert summary["autolrs_fewer_steps_than_best_baseline"] == {"autolrs-x": True,
                                                                 "autolrs-y": False}


def test_versus_paper_counts_its_unreached_seeds_as_the_whole_budget():
    runs = [r for r in synthetic_runs() if not r["method"].startswith("autolrs")]
    for seed in (0, 1):
        # paper: reaches the 0.6 target at 300 on seed 0 only (censored mean (300+400)/2)
        runs.append(_run("autolrs-paper", "autolrs", seed,
                         [(100, 1.0), (200, 0.9), (300, 0.6 if seed == 0 else 0.9), (400, 0.9)],
                         trial_steps=200))
        # default: reaches it at 200 and 300 (mean 250 < 350); 40 of its 100 trial steps kept
        runs.append(_run("autolrs-default", "autolrs", seed,
                         [(100, 1.0), (200 + 100 * seed, 0.6), (400, 0.5)],
                         trial_steps=100, kept=40))
        # late: reaches it on both seeds but at 400 (not fewer than 350)
        runs.append(_run("autolrs-late", "autolrs", seed, [(100, 1.0), (400, 0.6)]))
    summary = summarize(runs)
    assert summary["autolrs_fewer_steps_than_paper"] == {"autolrs-default": True,
                                                         "autolrs-late": False}
    default = summary["methods"]["autolrs-default"]
    assert default["trial_step_fraction"]["mean"] == pytest.approx(0.25)
    assert default["discarded_trial_step_fraction"]["mean"] == pytest.approx(0.15)
    assert summary["methods"]["autolrs-paper"]["steps_to_target_censored"]["mean"] == 350
