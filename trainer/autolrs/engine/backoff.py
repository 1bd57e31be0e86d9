"""Watch a held LR's training loss for a climb: pure functions over a JSON-able monitor.

A stage with no search (the held stage before the cooldown) keeps one LR for many steps,
checked by nothing but the divergence test (several times the stage's starting loss).
An LR near the edge of stability can there let the training loss climb for a thousand
steps: MNIST-1D seed 11 with a 40% cooldown held 0.17 from step 960, its training loss
went from 0.20 to 0.55, then spiked to 1.8 and its validation loss to 2.4. The monitor
averages the loss over blocks of WINDOW steps and reports a climb when PERSIST blocks in
a row are above the lowest block mean so far by a margin both significant (RISE_SIGMAS
standard errors of the two means) and material (RISE_FRACTION of the loss's scale). The
lowest of many noisy block means sits below the true level (a long flat hold's minimum is
about three standard errors low), so one high block is not enough.
"""

from __future__ import annotations

import math
from typing import Any

WINDOW = 50           # steps a block mean averages
RISE_SIGMAS = 4.0     # a climb is this many standard errors above the lowest block mean ...
RISE_FRACTION = 0.05  # ... and at least this part of that mean (or of the caller's scale) ...
PERSIST = 2           # ... in this many consecutive blocks
FACTOR = 0.5          # the LR is multiplied by this at each climb


def new_monitor() -> dict[str, Any]:
    """An empty monitor: no block measured yet."""
    return {"n": 0, "sum": 0.0, "sumsq": 0.0, "best": None, "best_se": 0.0, "above": 0}


def observe(monitor: dict[str, Any], loss: float, scale: float) -> bool:
    """Add one step's training loss; True when the block it completes shows a climb.

    ``scale`` is the smallest loss level a climb is measured against (near-zero losses
    of a memorised training set move by noise alone). Non-finite losses are left to the
    divergence test and not counted."""
    if not math.isfinite(loss):
        return False
    monitor["n"] += 1
    monitor["sum"] += loss
    monitor["sumsq"] += loss * loss
    n = monitor["n"]
    if n < WINDOW:
        return False
    mean = monitor["sum"] / n
    variance = max(monitor["sumsq"] / n - mean * mean, 0.0) * n / (n - 1)
    se = math.sqrt(variance / n)
    monitor.update(n=0, sum=0.0, sumsq=0.0)
    best = monitor["best"]
    if best is None or mean < best:
        monitor.update(best=mean, best_se=se, above=0)
        return False
    margin = max(RISE_SIGMAS * math.hypot(se, monitor["best_se"]),
                 RISE_FRACTION * max(abs(best), scale))
    monitor["above"] = monitor["above"] + 1 if mean - best > margin else 0
    return monitor["above"] >= PERSIST


def describe(backoffs: list[dict[str, Any]]) -> str:
    """One line for a stage's halvings, for reports: where each happened."""
    return "loss climbing, LR halved at step " + ", ".join(str(b["step"]) for b in backoffs)
