"""Pure figures over measured runs: steps to a target, spread over seeds, ratios, the target.

No torch here: these functions take the JSON-able run records the runner writes.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Iterable, Sequence

TUNED_BASELINES = ("constant", "cosine", "onecycle", "step")
PAPER_METHOD = "autolrs-paper"


def steps_to_target(points: Iterable[Sequence[float | None]], target: float) -> int | None:
    """The first step whose validation loss is at or below ``target`` (None: never)."""
    for step, value in points:
        if value is not None and math.isfinite(value) and value <= target:
            return int(step)
    return None


def min_value(points: Iterable[Sequence[float | None]]) -> float | None:
    """The smallest finite value of (step, value) points (None when there is none)."""
    values = [v for _, v in points if v is not None and math.isfinite(v)]
    return min(values) if values else None


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, sample standard deviation, min and max of the finite values, and how many."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0, "of": len(values)}
    return {
        "mean": statistics.fmean(finite),
        "std": statistics.stdev(finite) if len(finite) > 1 else 0.0,
        "min": min(finite), "max": max(finite), "n": len(finite), "of": len(values),
    }


def ratio(value: dict[str, Any], reference: dict[str, Any]) -> float | None:
    """mean/mean of two spreads; None unless both are measured on every seed."""
    if value["n"] == 0 or reference["n"] == 0:
        return None
    if value["n"] < value["of"] or reference["n"] < reference["of"]:
        return None
    if reference["mean"] == 0:
        return None
    return value["mean"] / reference["mean"]


def group_runs(runs: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Runs by method name, each list ordered by seed."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(run["method"], []).append(run)
    return {name: sorted(group, key=lambda r: r["seed"]) for name, group in groups.items()}


def mean_final_loss(group: Sequence[dict[str, Any]]) -> float:
    """Mean final validation loss over seeds (inf when any seed ended non-finite)."""
    values = [r["final_val_loss"] for r in group]
    if any(v is None or not math.isfinite(v) for v in values):
        return math.inf
    return statistics.fmean(values)


def best_constant_lr(runs: Sequence[dict[str, Any]]) -> float:
    """The grid LR whose constant-LR runs end with the lowest mean validation loss."""
    groups = group_runs([r for r in runs if r["kind"] == "constant" and r.get("grid")])
    if not groups:
        raise ValueError("no constant-LR grid runs to choose the best LR from")
    name = min(groups, key=lambda n: (mean_final_loss(groups[n]), groups[n][0]["lr"]))
    return float(groups[name][0]["lr"])


def best_baseline(groups: dict[str, list[dict[str, Any]]]) -> str:
    """The tuned baseline (best constant, cosine, OneCycle, step) with the lowest mean
    final validation loss."""
    tuned = [n for n, g in groups.items() if g[0]["kind"] in TUNED_BASELINES
             and not g[0].get("grid")]
    if not tuned:
        raise ValueError("no tuned baseline runs")
    return min(tuned, key=lambda n: (mean_final_loss(groups[n]), n))


def target_loss(group: Sequence[dict[str, Any]]) -> float:
    """The validation loss the best baseline reaches on every seed: the largest of its
    per-seed minima."""
    minima = [min_value(r["curve"]["val_loss"]) for r in group]
    if any(m is None for m in minima):
        raise ValueError("a run of the best baseline has no finite validation loss")
    return max(minima)


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-method figures over seeds and their ratios to the best tuned baseline."""
    groups = group_runs(runs)
    best = best_baseline(groups)
    target = target_loss(groups[best])
    methods: dict[str, Any] = {}
    for name, group in groups.items():
        reached = [steps_to_target(r["curve"]["val_loss"], target) for r in group]
        methods[name] = {
            "kind": group[0]["kind"],
            "lr": group[0].get("lr"),
            "grid": bool(group[0].get("grid")),
            "seeds": [r["seed"] for r in group],
            "steps_to_target": spread(reached),
            "steps_to_target_per_seed": reached,
            "final_val_loss": spread([r["final_val_loss"] for r in group]),
            "final_val_accuracy": spread([r["final_val_accuracy"] for r in group]),
            "wall_seconds": spread([r["wall_seconds"] for r in group]),
            "trial_step_fraction": spread([r["trial_steps"] / r["steps"] for r in group]),
            "discarded_trial_step_fraction": spread(
                [(r["trial_steps"] - r.get("trial_steps_kept", 0)) / r["steps"] for r in group]),
            "steps_to_target_censored": spread(
                [r["budget"] if s is None else s for r, s in zip(group, reached)]),
        }
    reference = methods[best]
    for figures in methods.values():
        figures["ratio_to_best_baseline"] = {
            key: ratio(figures[key], reference[key])
            for key in ("steps_to_target", "final_val_loss", "final_val_accuracy", "wall_seconds")
        }
    verdict = {
        name: _fewer_steps(figures, reference)
        for name, figures in methods.items() if figures["kind"] == "autolrs"
    }
    versus_paper = {
        name: _fewer_steps_censored(figures, methods[PAPER_METHOD])
        for name, figures in methods.items()
        if figures["kind"] == "autolrs" and name != PAPER_METHOD and PAPER_METHOD in methods
    }
    return {"best_baseline": best, "target_val_loss": target, "methods": methods,
            "autolrs_fewer_steps_than_best_baseline": verdict,
            "autolrs_fewer_steps_than_paper": versus_paper}


def _fewer_steps(figures: dict[str, Any], reference: dict[str, Any]) -> bool:
    """Reached the target on every seed, in fewer steps on average than the reference."""
    mine, theirs = figures["steps_to_target"], reference["steps_to_target"]
    if mine["n"] < mine["of"] or mine["n"] == 0:
        return False
    return mine["mean"] < theirs["mean"]


def _fewer_steps_censored(figures: dict[str, Any], reference: dict[str, Any]) -> bool:
    """Reached the target on every seed, in fewer steps on average than the reference
    with its unreached seeds counted as the whole budget (a lower bound on its steps)."""
    mine = figures["steps_to_target"]
    if mine["n"] < mine["of"] or mine["n"] == 0:
        return False
    return mine["mean"] < reference["steps_to_target_censored"]["mean"]
