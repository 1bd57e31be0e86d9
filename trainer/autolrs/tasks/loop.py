"""A readable training loop over a TensorTask, shared by the demo, examples and bench."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from autolrs.tasks.base import TensorTask


@dataclass
class Curve:
    """What a run measured: (step, value) points and the LR of every step."""

    train_loss: list[tuple[int, float]] = field(default_factory=list)
    val_loss: list[tuple[int, float]] = field(default_factory=list)
    val_accuracy: list[tuple[int, float]] = field(default_factory=list)
    lr: list[tuple[int, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[tuple[int, float]]]:
        """JSON-able (non-finite values become None)."""
        def clean(points):
            return [(s, v if math.isfinite(v) else None) for s, v in points]
        return {k: clean(getattr(self, k)) for k in ("train_loss", "val_loss", "val_accuracy", "lr")}


def train(
    task: TensorTask,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    max_steps: int,
    after_step: Callable[[int, float], bool] | None = None,
    eval_every: int = 100,
    seed: int = 0,
    start_step: int = 0,
    curve: Curve | None = None,
) -> Curve:
    """Train for ``max_steps`` optimizer steps; ``after_step(step, loss)`` may stop the run
    by returning True (AutoLRS: ``sched.step(loss); return sched.done``)."""
    curve = curve or Curve()
    model.train()
    batches = task.batches(seed=seed, start_step=start_step)
    for step in range(start_step + 1, max_steps + 1):
        x, y = next(batches)
        curve.lr.append((step, optimizer.param_groups[0]["lr"]))
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = loss.item()
        curve.train_loss.append((step, value))
        stop = after_step(step, value) if after_step is not None else False
        if step % eval_every == 0 or step == max_steps or stop:
            val_loss, accuracy = task.evaluate(model)
            curve.val_loss.append((step, val_loss))
            curve.val_accuracy.append((step, accuracy))
        if stop:
            break
    return curve
