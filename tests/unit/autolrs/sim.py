"""A tiny deterministic training simulation for controller tests (no torch).

A noisy quadratic model: SGD on w with gradient noise, so large LRs learn fast but
plateau high and LRs above 2 diverge. Snapshots copy the model state, as the wrapper does.
"""

from __future__ import annotations

import numpy as np

from autolrs.config import AutoLRSConfig
from autolrs.engine.controller import Action, StageController


class ToyTraining:
    """Applies controller actions to a numpy 'model' and produces losses."""

    def __init__(self, seed: int = 0):
        self.w = np.full(8, 3.0)
        self.rng = np.random.default_rng(seed)
        self.slots: dict[str, np.ndarray] = {}
        self.actions: list[tuple[int, Action]] = []
        self.step_count = 0

    def apply(self, actions: list[Action]) -> bool:
        evaluate = False
        for action in actions:
            self.actions.append((self.step_count, action))
            if action.kind == "snapshot":
                self.slots[action.slot] = self.w.copy()
            elif action.kind == "restore":
                self.w = self.slots[action.slot].copy()
            elif action.kind == "drop":
                del self.slots[action.slot]
            elif action.kind == "evaluate":
                evaluate = True
        return evaluate

    def train_step(self, lr: float) -> float:
        self.step_count += 1
        grad = self.w + self.rng.normal(0, 0.5, self.w.shape)
        self.w = self.w - lr * grad
        return float(np.mean(self.w**2))

    def val_loss(self) -> float:
        return float(np.mean(self.w**2)) + 0.01


def drive(ctrl: StageController, env: ToyTraining, until_step: int | None = None) -> None:
    """Run the loop until done (or until ``env.step_count == until_step``)."""
    if not ctrl.s["started"]:
        env.apply(ctrl.start())
    while not ctrl.done and (until_step is None or env.step_count < until_step):
        loss = env.train_step(ctrl.lr)
        evaluate = env.apply(ctrl.observe_loss(loss))
        while evaluate:
            evaluate = env.apply(ctrl.observe_val_loss(env.val_loss()))


def make_config(**overrides) -> AutoLRSConfig:
    base = dict(min_lr=1e-3, max_lr=1.5, tau=20, tau_max=40, trials_per_stage=3,
                max_steps=300, seed=0)
    base.update(overrides)
    return AutoLRSConfig(**base)


class NanValidation(ToyTraining):
    """The toy whose validation loss is NaN after a step at an LR above ``nan_above`` (an
    evaluation that overflows while the training loss is still finite)."""

    def __init__(self, seed: int = 0, nan_above: float = 0.3):
        super().__init__(seed)
        self.nan_above = nan_above
        self.last_lr: float | None = None

    def train_step(self, lr: float) -> float:
        self.last_lr = lr
        return super().train_step(lr)

    def val_loss(self) -> float:
        if self.last_lr is not None and self.last_lr > self.nan_above:
            return float("nan")
        return super().val_loss()
