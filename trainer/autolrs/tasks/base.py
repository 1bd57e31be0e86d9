"""A classification task over in-memory tensors: batches, validation loss and accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F


@dataclass
class TensorTask:
    """Train/validation tensors plus the model that fits them."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    make_model: Callable[[], torch.nn.Module]
    batch_size: int = 64

    def batches(self, seed: int = 0, rank: int = 0, world_size: int = 1,
                start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless shuffled minibatches; each rank gets its own shard of every epoch.

        ``start_step`` skips that many batches so a resumed run sees the same data."""
        generator = torch.Generator().manual_seed(seed)
        n = len(self.x_train)
        step = 0
        while True:
            order = torch.randperm(n, generator=generator)[rank::world_size]
            for begin in range(0, len(order) - self.batch_size + 1, self.batch_size):
                index = order[begin:begin + self.batch_size]
                if step >= start_step:
                    yield self.x_train[index], self.y_train[index]
                step += 1

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module) -> tuple[float, float]:
        """(validation cross-entropy, accuracy) of ``model``, in eval mode."""
        was_training = model.training
        model.eval()
        logits = model(self.x_val)
        model.train(was_training)
        loss = F.cross_entropy(logits, self.y_val).item()
        accuracy = (logits.argmax(dim=1) == self.y_val).float().mean().item()
        return loss, accuracy
