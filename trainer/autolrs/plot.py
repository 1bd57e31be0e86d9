"""schedule.png: the LR AutoLRS chose over steps, its trials with their forecasts, and losses."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Sequence

from autolrs.atomic import atomic_write_bytes


def _smooth(points: Sequence[tuple[int, float | None]], window: int = 25) -> tuple[list, list]:
    xs, ys, acc = [], [], []
    for step, value in points:
        if value is None or not math.isfinite(value):
            continue
        acc.append(value)
        del acc[:-window]
        xs.append(step)
        ys.append(sum(acc) / len(acc))
    return xs, ys


def plot_schedule(path: str | Path, history: list[dict[str, Any]], curve: dict[str, list],
                  baseline: dict[str, list] | None = None, title: str = "AutoLRS") -> None:
    """Write the two-panel figure (LR schedule with trials; train/validation loss)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_lr, ax_loss) = plt.subplots(2, 1, figsize=(10, 7), sharex=True,
                                         layout="constrained")
    steps = [s for s, _ in curve["lr"]]
    ax_lr.plot(steps, [v for _, v in curve["lr"]], lw=1, color="tab:blue", label="LR in use")
    trials = [t for h in history for t in h.get("trials", [])]
    scored = [t for t in trials if t.get("score") is not None]
    if scored:
        scores = sorted(t["score"] for t in scored)
        # One wild forecast must not wash out the rest: the colour scale stops at the 90th
        # percentile.
        vmax = scores[min(len(scores) - 1, int(0.9 * len(scores)))]
        points = ax_lr.scatter([t["start_step"] for t in scored], [t["lr"] for t in scored],
                               c=[t["score"] for t in scored], cmap="viridis_r", s=18,
                               vmin=scores[0], vmax=max(vmax, scores[0] + 1e-12),
                               zorder=3, label="trial (colour: forecast loss)")
        # Both panels give the colour bar the same room, so their step axes stay aligned.
        fig.colorbar(points, ax=(ax_lr, ax_loss), label="trial forecast loss", shrink=0.5,
                     anchor=(0.0, 1.0))
    diverged = [t for t in trials if t.get("score") is None]
    if diverged:
        ax_lr.scatter([t["start_step"] for t in diverged], [t["lr"] for t in diverged],
                      marker="x", color="tab:red", s=24, zorder=3, label="trial diverged")
    ax_lr.set_yscale("log")
    ax_lr.set_ylabel("learning rate")
    ax_lr.legend(loc="best", fontsize=8)
    ax_lr.set_title(title)

    ax_loss.plot(*_smooth(curve["train_loss"]), lw=1, color="tab:blue", label="train loss (smoothed)")
    val = [(s, v) for s, v in curve["val_loss"] if v is not None]
    if val:
        ax_loss.plot(*zip(*val), "o-", ms=3, color="tab:orange", label="validation loss")
    if baseline is not None:
        base_val = [(s, v) for s, v in baseline["val_loss"] if v is not None]
        if base_val:
            ax_loss.plot(*zip(*base_val), "s--", ms=3, color="tab:gray",
                         label="validation loss, constant LR")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("optimizer step (trial steps included)")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(loc="best", fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
