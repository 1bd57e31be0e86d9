"""One run: a task, a method and a seed, trained for the task's step budget, measured.

Validation loss is measured every ``eval_every`` steps on the model as it is then: during
an AutoLRS search that is a trial's state (what a user watching the run sees).
"""

from __future__ import annotations

import math
import random
import time
import traceback
from typing import Any, Sequence

import numpy as np
import torch

from autolrs.config import AutoLRSConfig
from autolrs.scheduler import AutoLRS
from autolrs.tasks.loop import train

from bench.methods import MethodSpec, make_baseline_scheduler
from bench.tasks import TaskSpec


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Entry point for worker processes: ``{"spec", "method", "seed"}`` -> a record."""
    single_thread()
    return run_one(job["spec"], MethodSpec.from_dict(job["method"]), job["seed"])


class JobsFailed(RuntimeError):
    """Raised at the end of a run in which some jobs raised, after what finished was written;
    ``failures`` holds their ``job_failure`` records."""

    def __init__(self, message: str, failures: Sequence[dict[str, Any]]):
        super().__init__(message)
        self.failures = list(failures)


class Interrupted(JobsFailed):
    """Raised after Ctrl-C, once what finished was written: ``failures`` names the jobs
    that never finished (queued ones are cancelled, not run)."""


class NotFinished(Exception):
    """The error recorded for a job that Ctrl-C stopped or kept from starting."""

    def __init__(self) -> None:
        super().__init__("interrupted (Ctrl-C) before it finished")


def job_failure(job: str, exc: BaseException) -> dict[str, Any]:
    """The JSON-able record of a job that raised: what it ran (``job``, e.g. ``digits cosine
    seed 0``), its error on one line and its traceback (a worker's own included)."""
    return {"job": job, "error": one_line_error(exc),
            "traceback": "".join(traceback.format_exception(exc))}


def one_line_error(exc: BaseException) -> str:
    """``TypeName: message`` with the message's whitespace (newlines too) collapsed."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def jobs_count(n: int) -> str:
    """``1 job``, ``2 jobs``."""
    return f"{n} job{'s' if n != 1 else ''}"


def failures_message(failures: Sequence[dict[str, Any]], shown: int = 3,
                     width: int = 160) -> str:
    """One line naming the failed jobs and their errors (the first ``shown`` of them, each
    error cut at ``width`` characters)."""
    def short(error: str) -> str:
        return error if len(error) <= width else error[:width - 3] + "..."

    named = "; ".join(f"{f['job']} ({short(f['error'])})" for f in failures[:shown])
    more = f"; and {len(failures) - shown} more" if len(failures) > shown else ""
    return f"{jobs_count(len(failures))} failed: {named}{more}"


def single_thread() -> None:
    """One thread for torch and for the BLAS under NumPy/SciPy (the GP fits): with two
    workers on two cores, more threads only contend."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


def autolrs_config(spec: TaskSpec, method: MethodSpec, seed: int) -> AutoLRSConfig:
    """The task's AutoLRS settings, then the method's overrides."""
    values: dict[str, Any] = {"min_lr": spec.min_lr, "max_lr": spec.max_lr, "tau": spec.tau,
                              "tau_max": spec.tau_max, "max_steps": spec.budget, "seed": seed}
    values.update(spec.autolrs_overrides)
    values.update(method.overrides)
    return AutoLRSConfig.from_dict(values)


def run_one(spec: TaskSpec, method: MethodSpec, seed: int) -> dict[str, Any]:
    """Train ``method`` on ``spec`` with ``seed`` and return its JSON-able record."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    task = spec.make_task(seed)
    model = task.make_model()
    start_lr = method.lr if method.lr is not None else spec.min_lr
    optimizer = spec.make_optimizer(model, start_lr)
    phases: dict[str, int] = {}
    lr_changes: list[tuple[int, float]] = []
    sched: AutoLRS | None = None

    if method.kind == "autolrs":
        config = autolrs_config(spec, method, seed)
        sched = AutoLRS(model, optimizer, config, val_fn=lambda: task.evaluate(model)[0])

        def after_step(step: int, loss: float) -> bool:
            phases[sched.phase] = phases.get(sched.phase, 0) + 1
            sched.step(loss)
            _note_lr(lr_changes, step + 1, sched.lr)
            return sched.done
    else:
        lr_scheduler = make_baseline_scheduler(method.kind, optimizer, method.lr, spec.budget)

        def after_step(step: int, loss: float) -> bool:
            phases["train"] = phases.get("train", 0) + 1
            if lr_scheduler is not None and step < spec.budget:
                lr_scheduler.step()
            return False

    _note_lr(lr_changes, 1, optimizer.param_groups[0]["lr"])
    started = time.perf_counter()
    curve = train(task, model, optimizer, spec.budget, after_step=after_step,
                  eval_every=spec.eval_every, seed=seed)
    wall = time.perf_counter() - started
    steps = curve.train_loss[-1][0] if curve.train_loss else 0
    final_loss, final_accuracy = curve.val_loss[-1][1], curve.val_accuracy[-1][1]
    record: dict[str, Any] = {
        "task": spec.name, "method": method.name, "kind": method.kind, "lr": method.lr,
        "grid": method.grid, "seed": seed, "budget": spec.budget, "steps": steps,
        "trial_steps": phases.get("search", 0), "phase_steps": phases,
        "wall_seconds": wall,
        "final_val_loss": _finite(final_loss), "final_val_accuracy": _finite(final_accuracy),
        "curve": {"val_loss": _clean(curve.val_loss), "val_accuracy": _clean(curve.val_accuracy),
                  "train_loss": _clean(_thin(curve.train_loss, spec.eval_every))},
        "config": None, "history": None, "lr_schedule": None,
    }
    record["trial_steps_kept"] = 0
    if sched is not None:
        # Steps of winning trials that exploit continued from (keep_best_trial): spent on
        # a trial, but not thrown away.
        record["trial_steps_kept"] = sum(h.get("kept_steps", 0) for h in sched.history)
        record["config"] = sched.config.to_dict()
        record["history"] = [_compact_stage(h) for h in sched.history]
        record["lr_schedule"] = lr_changes
    return record


def _note_lr(changes: list[tuple[int, float]], step: int, lr: float) -> None:
    """Record (step, lr) only when the LR of ``step`` differs from the last recorded one."""
    if not changes or changes[-1][1] != lr:
        changes.append((step, float(lr)))


def _thin(points: list[tuple[int, float]], every: int) -> list[tuple[int, float]]:
    """Mean of each ``every`` consecutive points (the training loss, denoised for plots)."""
    out = []
    for begin in range(0, len(points), every):
        chunk = [v for _, v in points[begin:begin + every] if math.isfinite(v)]
        if chunk:
            out.append((points[min(begin + every, len(points)) - 1][0], sum(chunk) / len(chunk)))
    return out


def _finite(value: float) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _clean(points: list[tuple[int, float]]) -> list[tuple[int, float | None]]:
    return [(int(s), _finite(v)) for s, v in points]


def _compact_stage(stage: dict[str, Any]) -> dict[str, Any]:
    """A stage record with its trials reduced to what the report and plot use."""
    keep = ("stage", "tau", "trial_steps", "start_step", "end_step", "lr", "predicted_loss",
            "actual_loss", "val_loss", "forecast_error", "forecast_source", "search_steps",
            "kept_steps",
            "exploit_steps", "final", "incomplete", "cooldown", "first_lr", "end_lr",
            "no_search", "rollbacks", "backoffs", "val_mode", "saturated",
            "trials_completed",
            "trials_early_stopped", "trials_diverged", "range_test")
    out = {k: stage[k] for k in keep if k in stage}
    out["trials"] = [{k: t.get(k) for k in ("lr", "start_step", "steps", "outcome", "score", "std")}
                     for t in stage.get("trials", [])]
    return out
