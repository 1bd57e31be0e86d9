"""The methods compared: constant LR (a grid), cosine, OneCycle, step decay, AutoLRS variants.

An AutoLRS method is a name plus any AutoLRSConfig field overrides, so an ablation is a
list of ``MethodSpec("autolrs", name, overrides={...})``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Collection, Sequence

import torch

from autolrs.config import AutoLRSConfig

BASELINE_KINDS = ("constant", "cosine", "onecycle", "step")
STEP_DECAY_MILESTONES = (0.5, 0.75)   # x0.1 at half and three quarters of the budget
STEP_DECAY_GAMMA = 0.1


@dataclass(frozen=True)
class MethodSpec:
    """One method: a kind, a unique name, a base LR (baselines) or config overrides (AutoLRS)."""

    kind: str
    name: str
    lr: float | None = None
    grid: bool = False                    # a constant-LR grid point
    overrides: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what a worker process receives)."""
        return {"kind": self.kind, "name": self.name, "lr": self.lr, "grid": self.grid,
                "overrides": dict(self.overrides)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MethodSpec":
        """Inverse of ``to_dict``."""
        return cls(data["kind"], data["name"], data.get("lr"), bool(data.get("grid")),
                   dict(data.get("overrides") or {}))


def grid_methods(grid: tuple[float, ...]) -> list[MethodSpec]:
    """Constant-LR runs over the grid."""
    return [MethodSpec("constant", f"constant lr={lr:g}", lr=lr, grid=True) for lr in grid]


def tuned_methods(best_lr: float) -> list[MethodSpec]:
    """The tuned baselines built from the best constant LR."""
    return [MethodSpec("constant", "constant (best)", lr=best_lr),
            MethodSpec("cosine", "cosine", lr=best_lr),
            MethodSpec("onecycle", "onecycle", lr=best_lr),
            MethodSpec("step", "step decay", lr=best_lr)]


def autolrs_method(name: str, overrides: dict[str, Any] | None = None) -> MethodSpec:
    """An AutoLRS method; the overrides are checked against AutoLRSConfig now, not in a
    worker (with a budget, as every bench run has one)."""
    overrides = dict(overrides or {})
    AutoLRSConfig.from_dict({"min_lr": 1e-3, "max_lr": 1.0, "max_steps": 1000, **overrides})
    return MethodSpec("autolrs", name if name.startswith("autolrs") else f"autolrs-{name}",
                      overrides=overrides)


def default_autolrs_methods() -> list[MethodSpec]:
    """The reference algorithm and our defaults."""
    return [autolrs_method("paper", {"preset": "paper"}),
            autolrs_method("default", {"preset": "default"})]


def refuse_taken_name(option: str, name: str, taken: Collection[str], what: str) -> None:
    """Raise a one-line ValueError when the extra ``what`` (method, variant) that ``option``
    adds is named like one in ``taken``: results are grouped by name, so the two would be
    silently merged."""
    if name in taken:
        raise ValueError(f"{option}: {what} name {name!r} is already a {what}; "
                         "give the extra one another name")


def quality_methods(extra: Sequence[MethodSpec] = (), presets: bool = True) -> list[MethodSpec]:
    """The AutoLRS methods of a quality run: the presets (unless not ``presets``), then
    ``extra`` (``--autolrs``). The presets' names stay theirs even without them (the summary
    compares every method with ``autolrs-paper``); a clash is a one-line ValueError."""
    methods = default_autolrs_methods() if presets else []
    taken = {m.name for m in default_autolrs_methods()}
    for method in extra:
        refuse_taken_name("--autolrs", method.name, taken, "method")
        taken.add(method.name)
        methods.append(method)
    return methods


def parse_autolrs_option(text: str) -> MethodSpec:
    """``NAME:field=value,field=value`` (values are JSON, else strings) -> an AutoLRS method.

    Example: ``no-keep:keep_best_trial=false,tau=400``.
    """
    name, _, rest = text.partition(":")
    if not name:
        raise ValueError(f"--autolrs needs NAME[:field=value,...], got {text!r}")
    overrides: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--autolrs {text!r}: {item!r} is not field=value")
        try:
            overrides[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key.strip()] = raw
    return autolrs_method(name, overrides)


def parse_baseline_option(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME:KIND@LR`` -> (name, ``{"baseline": kind, "lr": lr}``): a baseline schedule at
    a chosen LR, run as an ablation variant against the committed targets (can any LR of
    that schedule reach a target on every seed?). Example: ``const 0.002:constant@0.002``."""
    name, _, rest = text.partition(":")
    kind, at, raw = rest.partition("@")
    if not name.strip() or not at:
        raise ValueError(f"--baseline needs NAME:KIND@LR, got {text!r}")
    if kind not in BASELINE_KINDS:
        raise ValueError(f"--baseline {text!r}: kind must be one of "
                         f"{', '.join(BASELINE_KINDS)}, got {kind!r}")
    try:
        lr = float(raw)
    except ValueError:
        lr = math.nan
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"--baseline {text!r}: LR must be a positive number, got {raw!r}")
    return name.strip(), {"baseline": kind, "lr": lr}


def make_baseline_scheduler(kind: str, optimizer: torch.optim.Optimizer, lr: float,
                            budget: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The torch LR scheduler of a baseline, stepped once after every optimizer step."""
    if kind == "constant":
        return None
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=budget)
    if kind == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=budget)
    if kind == "step":
        milestones = [round(budget * m) for m in STEP_DECAY_MILESTONES]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, STEP_DECAY_GAMMA)
    raise ValueError(f"unknown baseline kind {kind!r}; choose from {', '.join(BASELINE_KINDS)}")
