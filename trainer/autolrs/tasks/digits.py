"""scikit-learn's bundled digits (1,797 8x8 images, no download) with a small CNN."""

from __future__ import annotations

import torch
from torch import nn

from autolrs.tasks.base import TensorTask


class DigitsCNN(nn.Module):
    """Two 3x3 conv layers and a linear head: ~10k parameters, a second per 100 steps on CPU."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(2 * width * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def digits_task(seed: int = 0, val_fraction: float = 0.25, batch_size: int = 64) -> TensorTask:
    """Digits split into train/validation with a fixed permutation, pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1234))
    n_val = int(len(x) * val_fraction)
    val, train = order[:n_val], order[n_val:]

    def make_model() -> nn.Module:
        torch.manual_seed(seed)
        return DigitsCNN()

    return TensorTask("digits", x[train], y[train], x[val], y[val], make_model, batch_size)
