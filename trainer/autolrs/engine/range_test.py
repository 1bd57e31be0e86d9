"""The LR range test (Smith 2017) as pure functions over a JSON-able sweep record.

Before the first search the LR sweeps [min_lr, max_lr] geometrically, one optimizer step
each; the moving average of the loss locates the LR at which it is lowest (the edge of
stability). The search then stays below that edge, and the first stage near it.
"""

from __future__ import annotations

import math
from typing import Any

STEPS_PER_DECADE = 20
MIN_STEPS = 40
WINDOW = 10          # steps in the loss's moving average
DIVERGED = 4.0       # the sweep ends once that average exceeds its minimum this many times
CAP_DIVISOR = 1.5    # every stage searches no higher than the min-loss LR / this
FLOOR_DIVISOR = 10   # the first stage searches no lower than the min-loss LR / this
BUDGET_FACTOR = 4    # skipped when the search budget is under this many sweeps


def sweep_steps(min_lr: float, max_lr: float) -> int:
    """The sweep's length: STEPS_PER_DECADE steps per decade of the interval."""
    return max(MIN_STEPS, math.ceil(STEPS_PER_DECADE * math.log10(max_lr / min_lr)))


def sweep_lr(min_lr: float, max_lr: float, index: int) -> float:
    """The LR of the sweep's ``index``-th step (0: min_lr, last: max_lr)."""
    return min_lr * (max_lr / min_lr) ** (index / (sweep_steps(min_lr, max_lr) - 1))


def new_sweep(start_step: int) -> dict[str, Any]:
    return {"start_step": start_step, "lrs": [], "losses": [], "best": None,
            "best_lr": None, "best_index": None}


def observe(sweep: dict[str, Any], lr: float, loss: float) -> bool:
    """Record one step of the sweep; True when the loss diverged (non-finite, or its
    moving average rose to DIVERGED times its minimum)."""
    sweep["lrs"].append(lr)
    sweep["losses"].append(loss if math.isfinite(loss) else None)
    if not math.isfinite(loss):
        return True
    done = len(sweep["losses"])
    if done < WINDOW:
        return False
    mean = sum(sweep["losses"][-WINDOW:]) / WINDOW
    if sweep["best"] is None or mean < sweep["best"]:
        # The window's geometric centre: a trailing average lags the LR it reflects.
        centre = sum(math.log(x) for x in sweep["lrs"][-WINDOW:]) / WINDOW
        sweep.update(best=mean, best_lr=math.exp(centre), best_index=done)
        return False
    return mean - sweep["best"] > (DIVERGED - 1) * abs(sweep["best"])


def result(sweep: dict[str, Any], diverged: bool, min_lr: float, max_lr: float
           ) -> dict[str, Any]:
    """The search interval the sweep implies: never above the min-loss LR / CAP_DIVISOR
    (an LR that close to the edge of stability wins short trials, then stalls or
    diverges), and in the first stage not below it / FLOOR_DIVISOR (the BO otherwise
    spends that stage's trials on the interval's far ends). A loss still falling at
    max_lr shows no edge: no cap then."""
    done = len(sweep["losses"])
    best_lr = sweep["best_lr"]
    cap = floor = None
    if best_lr is not None:
        still_falling = not diverged and sweep["best_index"] == done
        if not still_falling:
            cap = min(best_lr / CAP_DIVISOR, max_lr)
            if cap < 3 * min_lr:
                cap = None  # the edge sits at the interval's bottom: the user's bounds rule
        top = max_lr if cap is None else cap
        floor = min(best_lr / FLOOR_DIVISOR, top / 3)
        if floor <= min_lr:
            floor = None
    return {"start_step": sweep["start_step"], "steps": done, "diverged": diverged,
            "lr_min_loss": best_lr, "min_loss": sweep["best"],
            "max_lr": cap, "first_stage_min_lr": floor}
