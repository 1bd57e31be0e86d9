"""The cost figures (``cost.json``): BO and forecast time, snapshot/restore, exploit
overhead, Redis writes; CUDA figures too where a GPU is present."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from autolrs.atomic import atomic_write_json

from bench import cost_engine, cost_redis, cost_torch
from bench.machine import machine_record
from bench.runner import single_thread

TARGETS = {"bo_decision_ms": 50.0, "snapshot_ratio": 2.0, "exploit_overhead_fraction": 0.01}


@dataclass(frozen=True)
class CostSettings:
    """How much to measure (the quick mode measures less, on a smaller model)."""

    bo_stages: int = 6
    bo_trials: int = 10
    forecast_lengths: tuple[int, ...] = (20, 100, 400, 1600)
    forecast_repeats: int = 30
    controller_steps: int = 6000
    snapshot_width: int = 1600
    snapshot_repeats: int = 10
    overhead_steps: int = 200
    overhead_blocks: int = 10
    redis_repeats: int = 200


QUICK = CostSettings(bo_stages=1, bo_trials=4, forecast_lengths=(20, 100), forecast_repeats=5,
                     controller_steps=300, snapshot_width=400, snapshot_repeats=3,
                     overhead_steps=50, overhead_blocks=2, redis_repeats=20)


def check_devices(devices: list[str] | None) -> None:
    """Raise a one-line ValueError for a device given twice, or cuda where there is none."""
    devices = devices or []
    twice = sorted({name for name in devices if devices.count(name) > 1})
    if twice:
        raise ValueError(f"--device {twice[0]}: given twice (each device is measured once)")
    if "cuda" in devices and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available here (torch.cuda.is_available() "
                         "is false); leave --device out to measure where torch can")


def run_cost(settings: CostSettings, devices: list[str] | None = None,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every cost figure; torch figures on each of ``devices`` (default: cpu, and
    cuda when available; ``check_devices`` first)."""
    check_devices(devices)
    single_thread()
    devices = devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    out: dict[str, Any] = {"schema": 1, "machine": machine_record(), "targets": TARGETS}
    log("cost: BO decisions")
    out["bo"] = {preset: cost_engine.bo_decisions(preset, settings.bo_stages,
                                                        settings.bo_trials)
                 for preset in ("paper", "default")}
    log("cost: forecasts")
    out["forecast"] = cost_engine.forecasts(settings.forecast_lengths, settings.forecast_repeats)
    log("cost: controller end-of-trial steps")
    controller: dict[str, Any] = {}
    state: dict[str, Any] = {}
    for preset in ("paper", "default"):
        run = cost_engine.controller_run(preset, tau=200, tau_max=800,
                                         max_steps=settings.controller_steps)
        state = run.pop("state")
        controller[preset] = run
    out["controller"] = controller
    out["snapshot"], out["exploit_overhead"] = {}, {}
    for name in devices:
        device = torch.device(name)
        log(f"cost: snapshot/restore on {name}")
        out["snapshot"][name] = cost_torch.snapshot_cost(settings.snapshot_width,
                                                         settings.snapshot_repeats, device)
        log(f"cost: exploit overhead on {name}")
        out["exploit_overhead"][name] = cost_torch.exploit_overhead(
            settings.overhead_steps, settings.overhead_blocks, device)
    if "cuda" not in devices:
        out["cuda"] = "not measured: no GPU on this machine (run `python -m bench cost` "\
                      "where torch.cuda.is_available())"
    log("cost: Redis writes")
    decision = {"type": "decision", "stage": 3, "lr": 0.05, "tau": 800,
                "predicted_loss": 0.31, "trials": 10, "rank": 0, "step": 2400}
    try:
        out["redis"] = cost_redis.redis_cost(state, decision, settings.redis_repeats)
    except (FileNotFoundError, RuntimeError, TimeoutError) as exc:
        out["redis"] = {"error": str(exc)}
    out["headline"] = headline(out)
    return out


def headline(cost: dict[str, Any]) -> dict[str, Any]:
    """The figures the targets are about, with pass/miss against each target (the
    snapshot and overhead ones where cpu was measured: ``--device cuda`` alone has none)."""
    bo = max(cost["bo"][p]["propose"]["median_ms"] for p in ("paper", "default"))
    out: dict[str, Any] = {
        "bo_decision_median_ms_worst_preset": bo,
        "bo_decision_meets_target": bo < TARGETS["bo_decision_ms"],
    }
    if "cpu" in cost["snapshot"]:
        snapshot = cost["snapshot"]["cpu"]["ratio_to_flat_copy"]
        overhead = cost["exploit_overhead"]["cpu"]["overhead_fraction"]
        out.update({
            "snapshot_restore_ratio_cpu": snapshot,
            "snapshot_meets_target": snapshot <= TARGETS["snapshot_ratio"],
            "exploit_overhead_fraction_cpu": overhead,
            "exploit_overhead_meets_target": overhead < TARGETS["exploit_overhead_fraction"],
        })
    if "ratio_to_ping" in cost.get("redis", {}):
        out["redis_decision_ratio_to_ping"] = cost["redis"]["ratio_to_ping"]
    return out


def write_cost(cost: dict[str, Any], out_dir: Path) -> None:
    """``cost.json`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "cost.json", cost)
