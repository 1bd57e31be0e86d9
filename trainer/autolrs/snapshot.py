"""In-memory snapshot and restore of a model and its optimizer, bit for bit, no disk.

A snapshot copies every parameter, buffer and optimizer-state tensor once into buffers it
keeps (reused by the next snapshot of the same shapes), and restores by copying back in
place, so the optimizer never aliases the snapshot and later steps cannot corrupt it.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch


class TrainingSnapshot:
    """One saved training state (model parameters and buffers, optimizer state and groups)."""

    def __init__(self) -> None:
        self.model: dict[str, torch.Tensor] = {}
        self.optim_state: list[dict[str, Any]] = []
        self.optim_groups: list[dict[str, Any]] = []
        self.seconds = 0.0

    # The optimizer's per-parameter state, in param_groups order (stable across calls).
    @staticmethod
    def _params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
        return [p for group in optimizer.param_groups for p in group["params"]]

    @torch.no_grad()
    def capture(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Copy the current state into this snapshot."""
        start = time.perf_counter()
        model_state = model.state_dict(keep_vars=True)
        self.model = {name: _copy_into(self.model.get(name), t.detach())
                      for name, t in model_state.items()}
        old = self.optim_state
        new_state: list[dict[str, Any]] = []
        for index, param in enumerate(self._params(optimizer)):
            previous = old[index] if index < len(old) else {}
            entry = {}
            for key, value in optimizer.state.get(param, {}).items():
                if torch.is_tensor(value):
                    entry[key] = _copy_into(previous.get(key), value.detach())
                else:
                    entry[key] = copy.deepcopy(value)
            new_state.append(entry)
        self.optim_state = new_state
        self.optim_groups = [
            {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            for group in optimizer.param_groups
        ]
        self.seconds = time.perf_counter() - start

    @torch.no_grad()
    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Make model and optimizer bit-for-bit equal to the snapshot (in place)."""
        if not self.model:
            raise RuntimeError("restore() before any capture(): no snapshot to restore")
        model_state = model.state_dict(keep_vars=True)
        if model_state.keys() != self.model.keys():
            raise RuntimeError("the model's parameters changed since the snapshot was taken")
        for name, tensor in model_state.items():
            tensor.detach().copy_(self.model[name])
        params = self._params(optimizer)
        if len(params) != len(self.optim_state):
            raise RuntimeError("the optimizer's parameters changed since the snapshot was taken")
        for param, saved in zip(params, self.optim_state):
            current = optimizer.state.get(param)
            if not saved:
                optimizer.state.pop(param, None)
                continue
            restored = {}
            for key, value in saved.items():
                if torch.is_tensor(value):
                    target = current.get(key) if current else None
                    if (target is not None and torch.is_tensor(target)
                            and target.shape == value.shape and target.dtype == value.dtype
                            and target.device == value.device):
                        target.copy_(value)
                        restored[key] = target
                    else:
                        restored[key] = value.clone()
                else:
                    restored[key] = copy.deepcopy(value)
            optimizer.state[param] = restored
        for group, saved_group in zip(optimizer.param_groups, self.optim_groups):
            for key, value in saved_group.items():
                group[key] = copy.deepcopy(value)

    def nbytes(self) -> int:
        """Bytes held by this snapshot's tensors."""
        tensors = list(self.model.values()) + [
            v for entry in self.optim_state for v in entry.values() if torch.is_tensor(v)]
        return sum(t.numel() * t.element_size() for t in tensors)

    def state_dict(self) -> dict[str, Any]:
        """Tensors and groups, for a durable checkpoint (``torch.save``-able)."""
        return {"model": self.model, "optim_state": self.optim_state,
                "optim_groups": self.optim_groups}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Adopt a snapshot read back from a checkpoint."""
        self.model = dict(state["model"])
        self.optim_state = list(state["optim_state"])
        self.optim_groups = list(state["optim_groups"])


def _copy_into(buffer: torch.Tensor | None, value: torch.Tensor) -> torch.Tensor:
    """Copy ``value`` into ``buffer`` when it fits, else into a new tensor."""
    if (buffer is not None and buffer.shape == value.shape and buffer.dtype == value.dtype
            and buffer.device == value.device):
        return buffer.copy_(value)
    return value.clone(memory_format=torch.contiguous_format)
