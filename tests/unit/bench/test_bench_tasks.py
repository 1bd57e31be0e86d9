"""The MNIST-1D and character-LM tasks: offline data, shapes, a loss the loop can use."""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F

from autolrs.tasks.charlm import charlm_task, stdlib_text
from autolrs.tasks.mnist1d import mnist1d_task


def test_mnist1d_is_generated_without_touching_global_rng_or_the_network(monkeypatch):
    import requests

    def no_network(*args, **kwargs):
        raise AssertionError("mnist1d tried to download")

    monkeypatch.setattr(requests, "get", no_network)
    np.random.seed(7)
    random.seed(7)
    expected = (np.random.random(), random.random())
    np.random.seed(7)
    random.seed(7)
    task = mnist1d_task(seed=0)
    assert (np.random.random(), random.random()) == expected
    assert task.x_train.shape == (4000, 40) and task.x_val.shape == (1000, 40)
    assert set(task.y_train.tolist()) == set(range(10))
    model = task.make_model()
    assert model(task.x_train[:5]).shape == (5, 10)
    loss, accuracy = task.evaluate(model)
    assert 1.5 < loss < 3.5 and 0.0 <= accuracy <= 1.0


def test_charlm_windows_are_next_byte_targets_and_the_model_fits_cross_entropy():
    task = charlm_task(seed=0)
    text = stdlib_text()
    assert len(text) > 100_000
    x, y = task.x_train, task.y_train
    assert x.shape[1] == 32 and y.shape == x.shape
    assert torch.equal(x[0, 1:], y[0, :-1])              # y is x shifted by one byte
    vocab = int(max(x.max(), y.max(), task.y_val.max())) + 1
    model = task.make_model()
    logits = model(x[:4])
    assert logits.shape == (4, vocab, 32)
    loss = F.cross_entropy(logits, y[:4])
    assert abs(loss.item() - np.log(vocab)) < 1.0        # untrained: about uniform
    val_loss, accuracy = task.evaluate(model)
    assert val_loss > 0 and 0.0 <= accuracy <= 1.0
    assert charlm_task(seed=0).x_train.equal(x)          # deterministic
