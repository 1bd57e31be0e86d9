"""MNIST-1D (Greydanus, 2020): 1-D digit signals generated procedurally, with a small 1-D CNN.

The data come from the PyPI package ``mnist1d``'s generator (``make_dataset`` with its
default arguments: 4,000 training and 1,000 test signals of length 40), never from its
download path, so nothing leaves the machine.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

from autolrs.tasks.base import TensorTask


class MNIST1DCNN(nn.Module):
    """Three 1-D conv layers and a linear head: ~15k parameters."""

    def __init__(self, width: int = 32, length: int = 40):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, width, 5, padding=2), nn.ReLU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(width * (length // 4), 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.unsqueeze(1)).flatten(1))


def generate_mnist1d() -> dict[str, np.ndarray]:
    """The default MNIST-1D split, generated offline; global RNG states are left untouched."""
    from mnist1d.data import get_dataset_args, make_dataset

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        return make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def mnist1d_task(seed: int = 0, batch_size: int = 100) -> TensorTask:
    """MNIST-1D's default train/test split (4,000 / 1,000) as a TensorTask."""
    data = generate_mnist1d()
    x_train = torch.tensor(data["x"], dtype=torch.float32)
    y_train = torch.tensor(data["y"], dtype=torch.long)
    x_val = torch.tensor(data["x_test"], dtype=torch.float32)
    y_val = torch.tensor(data["y_test"], dtype=torch.long)

    def make_model() -> nn.Module:
        torch.manual_seed(seed)
        return MNIST1DCNN(length=x_train.shape[1])

    return TensorTask("mnist1d", x_train, y_train, x_val, y_val, make_model, batch_size)
