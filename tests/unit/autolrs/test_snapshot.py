"""In-memory snapshot/restore: bit-exact for parameters, buffers and optimizer state."""

import pytest
import torch
from torch import nn

from autolrs.snapshot import TrainingSnapshot


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def train_some(model, optimizer, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 6, generator=gen)
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def full_state(model, optimizer):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {id_: {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()}
             for id_, s in optimizer.state_dict()["state"].items()},
            [dict((k, v) for k, v in g.items() if k != "params")
             for g in optimizer.state_dict()["param_groups"]])


def assert_equal_state(a, b):
    model_a, opt_a, groups_a = a
    model_b, opt_b, groups_b = b
    assert model_a.keys() == model_b.keys()
    for key in model_a:
        assert torch.equal(model_a[key], model_b[key]), key
    assert opt_a.keys() == opt_b.keys()
    for pid in opt_a:
        for key, value in opt_a[pid].items():
            other = opt_b[pid][key]
            assert torch.equal(value, other) if torch.is_tensor(value) else value == other
    assert groups_a == groups_b


@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
    lambda p: torch.optim.Adam(p, lr=1e-2),
    lambda p: torch.optim.AdamW(p, lr=1e-2, amsgrad=True),
])
def test_restore_is_bit_exact_and_snapshot_is_not_aliased(make_optimizer):
    model = make_model()
    optimizer = make_optimizer(model.parameters())
    train_some(model, optimizer, 3, seed=1)
    snap = TrainingSnapshot()
    snap.capture(model, optimizer)
    expected = full_state(model, optimizer)
    for round_ in range(2):  # restore twice: training in between must not corrupt the snapshot
        train_some(model, optimizer, 5, seed=2 + round_)
        optimizer.param_groups[0]["lr"] = 123.0
        snap.restore(model, optimizer)
        assert_equal_state(full_state(model, optimizer), expected)


def test_restore_to_a_state_before_the_first_step_clears_optimizer_state():
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    snap = TrainingSnapshot()
    snap.capture(model, optimizer)
    expected = full_state(model, optimizer)
    train_some(model, optimizer, 2, seed=0)
    snap.restore(model, optimizer)
    assert optimizer.state_dict()["state"] == {}
    assert_equal_state(full_state(model, optimizer), expected)


def test_restored_run_continues_identically():
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train_some(model, optimizer, 2, seed=0)
    snap = TrainingSnapshot()
    snap.capture(model, optimizer)
    train_some(model, optimizer, 4, seed=7)
    after_first = full_state(model, optimizer)
    snap.restore(model, optimizer)
    train_some(model, optimizer, 4, seed=7)
    assert_equal_state(full_state(model, optimizer), after_first)


def test_capture_reuses_buffers():
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train_some(model, optimizer, 1, seed=0)
    snap = TrainingSnapshot()
    snap.capture(model, optimizer)
    pointers = {k: v.data_ptr() for k, v in snap.model.items()}
    train_some(model, optimizer, 1, seed=1)
    snap.capture(model, optimizer)
    assert pointers == {k: v.data_ptr() for k, v in snap.model.items()}
    assert snap.nbytes() > 0


def test_restore_without_capture_is_an_error():
    model = make_model()
    with pytest.raises(RuntimeError, match="no snapshot"):
        TrainingSnapshot().restore(model, torch.optim.SGD(model.parameters(), lr=0.1))
