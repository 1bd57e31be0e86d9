"""Schedule quality: every method on every task over seeds, in parallel worker processes.

Phase 1 runs the constant-LR grid and the AutoLRS methods; as soon as a task's grid is
done, its tuned baselines (best constant, cosine, OneCycle, step decay from the best
constant LR) are queued. Each task's runs, summary and figure are then written.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

from autolrs.atomic import atomic_write_json

from bench.machine import machine_record
from bench.methods import MethodSpec, default_autolrs_methods, grid_methods, tuned_methods
from bench.metrics import best_constant_lr, summarize
from bench.runner import run_job
from bench.tasks import TaskSpec

SCHEMA_VERSION = 1


class InlineExecutor(cf.Executor):
    """Runs each job at submit time in this process (``--jobs 1``, tests)."""

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - delivered through the future
            future.set_exception(exc)
        return future


def _executor(jobs: int) -> cf.Executor:
    if jobs <= 1:
        return InlineExecutor()
    return cf.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))


def run_quality(tasks: Sequence[TaskSpec], seeds: Sequence[int], is_quick: bool = False,
                jobs: int = 2, autolrs_methods: Sequence[MethodSpec] | None = None,
                out_dir: Path | None = None, log: Callable[[str], None] = print
                ) -> dict[str, dict[str, Any]]:
    """Run every method on ``tasks``; return (and write to ``out_dir``) one result per task."""
    autolrs_methods = list(autolrs_methods if autolrs_methods is not None
                           else default_autolrs_methods())
    specs = {spec.name: spec for spec in tasks}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in specs}
    grid_left = {name: len(spec.lr_grid) * len(seeds) for name, spec in specs.items()}
    started = time.perf_counter()
    with _executor(jobs) as pool:
        pending: dict[cf.Future, tuple[str, MethodSpec, int]] = {}

        def submit(task: str, method: MethodSpec, seed: int) -> None:
            job = {"spec": specs[task], "method": method.to_dict(), "seed": seed}
            pending[pool.submit(run_job, job)] = (task, method, seed)

        for name, spec in specs.items():
            for method in grid_methods(spec.lr_grid) + autolrs_methods:
                for seed in seeds:
                    submit(name, method, seed)
        total = sum(len(spec.lr_grid) + 4 + len(autolrs_methods) for spec in specs.values())
        total *= len(seeds)
        done = 0
        while pending:
            finished, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
            for future in finished:
                task, method, seed = pending.pop(future)
                record = future.result()
                runs[task].append(record)
                done += 1
                log(f"[{done}/{total} {time.perf_counter() - started:6.0f}s] {task} "
                    f"{method.name} seed {seed}: final val loss {_fmt(record['final_val_loss'])}"
                    f", {record['wall_seconds']:.1f}s")
                if method.grid:
                    grid_left[task] -= 1
                    if grid_left[task] == 0:
                        best = best_constant_lr(runs[task])
                        log(f"{task}: best constant LR {best:g}; queueing tuned baselines")
                        for tuned in tuned_methods(best):
                            for s in seeds:
                                submit(task, tuned, s)
    results = {name: build_result(spec, runs[name], seeds, is_quick) for name, spec in specs.items()}
    if out_dir is not None:
        write_results(results, out_dir)
    return results


def build_result(spec: TaskSpec, runs: list[dict[str, Any]], seeds: Sequence[int],
                 is_quick: bool) -> dict[str, Any]:
    """The JSON document of one task: settings, every run, and the summary over seeds."""
    settings = {k: v for k, v in asdict(spec).items() if k != "make_task"}
    runs = sorted(runs, key=lambda r: (r["method"], r["seed"]))
    return {"schema": SCHEMA_VERSION, "task": spec.name, "quick": is_quick,
            "settings": settings, "seeds": list(seeds), "machine": machine_record(),
            "best_constant_lr": best_constant_lr(runs), "summary": summarize(runs),
            "runs": runs}


def write_results(results: dict[str, dict[str, Any]], out_dir: Path) -> None:
    """``<task>.json`` and ``<task>.png`` for each task."""
    from bench.plots import plot_task

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, result in results.items():
        atomic_write_json(out_dir / f"{name}.json", result)
        plot_task(result, out_dir / f"{name}.png")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
