"""The benchmark tasks: data, model, optimizer, step budget, LR grid and AutoLRS stages.

Budgets are sized so that the full bench (3 tasks x 10 methods x 3 seeds) runs in about
25 minutes on 2 CPU cores. ``tau``/``tau_max`` give several AutoLRS stages within each
budget: with tau=200 the paper preset's stages cost 400, 800, 1600, ... steps (k=10
trials of tau/10, then tau steps), so a 3000-4000 step budget sees three full stages and
a cut fourth one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from autolrs.tasks.base import TensorTask


@dataclass(frozen=True)
class TaskSpec:
    """One benchmark task and the settings every method shares on it."""

    name: str
    make_task: Callable[[int], TensorTask]
    optimizer: str                       # "sgd" (momentum 0.9) or "adam"
    budget: int                          # optimizer steps, trial steps included
    eval_every: int                      # validation loss every this many steps
    lr_grid: tuple[float, ...]           # constant-LR baselines
    min_lr: float                        # AutoLRS search interval
    max_lr: float
    tau: int
    tau_max: int
    description: str = ""
    autolrs_overrides: dict = field(default_factory=dict)

    def make_optimizer(self, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
        """The task's optimizer at ``lr``."""
        if self.optimizer == "sgd":
            return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        if self.optimizer == "adam":
            return torch.optim.Adam(model.parameters(), lr=lr)
        raise ValueError(f"unknown optimizer {self.optimizer!r}: use sgd or adam")


def _digits(seed: int) -> TensorTask:
    from autolrs.tasks.digits import digits_task

    return digits_task(seed=seed)


def _mnist1d(seed: int) -> TensorTask:
    from autolrs.tasks.mnist1d import mnist1d_task

    return mnist1d_task(seed=seed)


def _charlm(seed: int) -> TensorTask:
    from autolrs.tasks.charlm import charlm_task

    return charlm_task(seed=seed)


SGD_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
ADAM_GRID = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)

TASKS: dict[str, TaskSpec] = {
    "digits": TaskSpec(
        "digits", _digits, "sgd", budget=3000, eval_every=50, lr_grid=SGD_GRID,
        min_lr=1e-3, max_lr=1.0, tau=200, tau_max=800,
        description="scikit-learn digits (1,348 train / 449 val 8x8 images), 2-layer CNN "
                    "(10k params), SGD momentum 0.9, batch 64"),
    "mnist1d": TaskSpec(
        "mnist1d", _mnist1d, "sgd", budget=4000, eval_every=50, lr_grid=SGD_GRID,
        min_lr=1e-3, max_lr=1.0, tau=200, tau_max=1600,
        description="MNIST-1D (4,000 train / 1,000 test signals, generated), 3-layer 1-D CNN "
                    "(10k params), SGD momentum 0.9, batch 100"),
    "charlm": TaskSpec(
        "charlm", _charlm, "adam", budget=3000, eval_every=100, lr_grid=ADAM_GRID,
        min_lr=1e-4, max_lr=3e-2, tau=200, tau_max=800,
        description="next-byte prediction on 8 standard-library modules (context 32), "
                    "2-layer GPT d=64 (117k params), Adam, batch 32"),
}


def quick(spec: TaskSpec) -> TaskSpec:
    """A smoke version: 200 steps, two grid LRs, one short stage length, 4 trials a stage."""
    grid = spec.lr_grid[2:4]
    overrides = {**spec.autolrs_overrides, "trials_per_stage": 4}
    return replace(spec, budget=200, eval_every=25, lr_grid=grid, tau=40, tau_max=40,
                   autolrs_overrides=overrides)


def get_task(name: str, is_quick: bool = False) -> TaskSpec:
    """The named task (its quick variant when ``is_quick``)."""
    if name not in TASKS:
        raise ValueError(f"unknown bench task {name!r}; choose from {', '.join(TASKS)}")
    return quick(TASKS[name]) if is_quick else TASKS[name]
