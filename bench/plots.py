"""One PNG per task: validation loss against steps for every method (mean and range over
seeds), and the LR schedules AutoLRS chose with their trial points."""

from __future__ import annotations

import io
import statistics
from pathlib import Path
from typing import Any

from autolrs.atomic import atomic_write_bytes

from bench.metrics import group_runs

COLORS = {"constant": "tab:gray", "cosine": "tab:blue", "onecycle": "tab:green",
          "step": "tab:brown"}
AUTOLRS_COLORS = ("tab:red", "tab:purple", "tab:orange", "tab:pink", "tab:olive", "tab:cyan")


def mean_curve(group: list[dict[str, Any]]) -> tuple[list[int], list[float], list[float], list[float]]:
    """Steps, mean, min and max of the validation loss over a method's seeds."""
    by_step: dict[int, list[float]] = {}
    for run in group:
        for step, value in run["curve"]["val_loss"]:
            if value is not None:
                by_step.setdefault(int(step), []).append(value)
    steps = sorted(s for s, vs in by_step.items() if len(vs) == len(group))
    return (steps, [statistics.fmean(by_step[s]) for s in steps],
            [min(by_step[s]) for s in steps], [max(by_step[s]) for s in steps])


def plot_task(result: dict[str, Any], path: Path) -> None:
    """Write the task's two-panel figure to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group_runs(result["runs"])
    summary = result["summary"]
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(11, 9), sharex=True,
                                         gridspec_kw={"height_ratios": [3, 2]})
    autolrs_names = [n for n, g in groups.items() if g[0]["kind"] == "autolrs"]
    for name, group in groups.items():
        kind = group[0]["kind"]
        steps, mean, low, high = mean_curve(group)
        if not steps:
            continue
        if kind == "autolrs":
            color = AUTOLRS_COLORS[autolrs_names.index(name) % len(AUTOLRS_COLORS)]
            style = {"lw": 1.8, "color": color}
        elif group[0].get("grid"):
            style = {"lw": 0.7, "color": "lightgray", "alpha": 0.9}
        else:
            style = {"lw": 1.4, "color": COLORS[kind]}
            if kind == "constant":
                style["ls"] = "--"
        label = name if not group[0].get("grid") else None
        ax_loss.plot(steps, mean, label=label, **style)
        if not group[0].get("grid") and len(group) > 1:
            ax_loss.fill_between(steps, low, high, color=style["color"], alpha=0.15, lw=0)
    ax_loss.axhline(summary["target_val_loss"], color="black", lw=0.8, ls=":",
                    label=f"target {summary['target_val_loss']:.4f} ({summary['best_baseline']})")
    ax_loss.plot([], [], lw=0.7, color="lightgray", label="constant-LR grid")
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("validation loss (mean, range over seeds)")
    seeds = len(result["seeds"])
    ax_loss.set_title(f"{result['task']}: {result['settings']['budget']} optimizer steps, "
                      f"{seeds} seed{'s' if seeds > 1 else ''}; AutoLRS curves include trial states")
    ax_loss.legend(fontsize=8, loc="upper right")

    for index, name in enumerate(autolrs_names):
        color = AUTOLRS_COLORS[index % len(AUTOLRS_COLORS)]
        run = groups[name][0]
        schedule = run["lr_schedule"] or []
        if schedule:
            xs = [s for s, _ in schedule] + [run["steps"]]
            ys = [v for _, v in schedule] + [schedule[-1][1]]
            ax_lr.step(xs, ys, where="post", lw=0.9, color=color,
                       label=f"{name} LR (seed {run['seed']})")
        trials = [t for stage in run["history"] or [] for t in stage["trials"]]
        kept = [t for t in trials if t["outcome"] != "diverged"]
        lost = [t for t in trials if t["outcome"] == "diverged"]
        ax_lr.scatter([t["start_step"] for t in kept], [t["lr"] for t in kept], s=14,
                      color=color, zorder=3, marker="o")
        ax_lr.scatter([t["start_step"] for t in lost], [t["lr"] for t in lost], s=22,
                      color=color, zorder=3, marker="x")
        for stage in run["history"] or []:
            if (stage.get("lr") is not None and stage.get("search_steps") is not None
                    and not stage.get("cooldown")):  # a cooldown shows in the LR line
                begin = stage["start_step"] + stage["search_steps"]
                ax_lr.plot([begin, stage.get("end_step", begin)], [stage["lr"]] * 2,
                           color=color, lw=3, alpha=0.35)
    best_lr = result["best_constant_lr"]
    ax_lr.axhline(best_lr, color="tab:gray", ls="--", lw=0.8, label=f"best constant LR {best_lr:g}")
    ax_lr.scatter([], [], s=14, color="black", label="trial (start step, LR)")
    ax_lr.scatter([], [], s=22, color="black", marker="x", label="trial diverged")
    ax_lr.set_yscale("log")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("optimizer step (AutoLRS trial steps included)")
    ax_lr.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
