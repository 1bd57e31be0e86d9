"""Schedule quality: every method on every task over seeds, in parallel worker processes.

Phase 1 runs the constant-LR grid and the AutoLRS methods; as soon as a task's grid is
done, its tuned baselines (best constant, cosine, OneCycle, step decay from the best
constant LR) are queued. Each task's runs, summary and figure are written as soon as its
last run is done.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from autolrs.atomic import atomic_write_json

from bench.machine import machine_record
from bench.methods import MethodSpec, default_autolrs_methods, grid_methods, tuned_methods
from bench.metrics import best_constant_lr, summarize
from bench.runner import (
    Interrupted,
    JobsFailed,
    NotFinished,
    failures_message,
    job_failure,
    jobs_count,
    run_job,
)
from bench.tasks import TaskSpec

SCHEMA_VERSION = 1


class InlineExecutor(cf.Executor):
    """Runs each job at submit time in this process (``--jobs 1``, tests)."""

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - delivered through the future (not Ctrl-C)
            future.set_exception(exc)
        return future


def executor(jobs: int) -> cf.Executor:
    """Where the jobs run: in this process for ``jobs == 1``, else ``jobs`` spawned worker
    processes; fewer than 1 is a ValueError."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    if jobs == 1:
        return InlineExecutor()
    return cf.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))


@contextlib.contextmanager
def job_pool(jobs: int) -> Iterator[cf.Executor]:
    """``executor(jobs)`` that, left by an exception (Ctrl-C), stops at once (``stop_now``)
    instead of first running every job still queued."""
    pool = executor(jobs)
    try:
        yield pool
    except BaseException:
        stop_now(pool)
        raise
    pool.shutdown(wait=True)


def stop_now(pool: cf.Executor) -> None:
    """Cancel the queued jobs and end the running ones (Ctrl-C). Cancelling alone is not
    enough: a process pool has already handed a few jobs to its workers, and those would
    still run to the end."""
    workers = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.join(timeout=10)


def finished_result(future: cf.Future) -> tuple[bool, Any]:
    """After Ctrl-C: (True, its result) for a job that finished, else (False, the reason)."""
    if future.done() and not future.cancelled() and future.exception() is None:
        return True, future.result()
    return False, NotFinished()


def run_quality(tasks: Sequence[TaskSpec], seeds: Sequence[int], is_quick: bool = False,
                jobs: int = 2, autolrs_methods: Sequence[MethodSpec] | None = None,
                out_dir: Path | None = None, log: Callable[[str], None] = print
                ) -> dict[str, dict[str, Any]]:
    """Run every method on ``tasks``; return one result per task, each written to
    ``out_dir`` as soon as its runs are done.

    A job that raises stops no other: every task whose runs all finished is summarised and
    written as usual; a task with a failed job is not (its summary would be over fewer
    runs than it claims), its finished runs and the failures with their tracebacks go to
    ``<task>.incomplete.json``, and JobsFailed names the failed jobs at the end.
    Ctrl-C cancels the queued jobs; each task not yet written then goes to its
    ``<task>.incomplete.json`` with the runs that finished, and Interrupted is raised.
    """
    autolrs_methods = list(autolrs_methods if autolrs_methods is not None
                           else default_autolrs_methods())
    specs = {spec.name: spec for spec in tasks}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in specs}
    failures: dict[str, list[dict[str, Any]]] = {name: [] for name in specs}
    grid_left = {name: len(spec.lr_grid) * len(seeds) for name, spec in specs.items()}
    jobs_left = dict.fromkeys(specs, 0)
    results: dict[str, dict[str, Any]] = {}
    closed: set[str] = set()
    started = time.perf_counter()

    def fail(task: str, job: str, exc: BaseException) -> None:
        failures[task].append(job_failure(job, exc))
        log(f"FAILED {job}: {failures[task][-1]['error']}")

    def close(task: str) -> None:
        """Summarise and write a task whose jobs are all done (or what it has, if not)."""
        closed.add(task)
        if not failures[task]:
            try:
                results[task] = build_result(specs[task], runs[task], seeds, is_quick)
            except ValueError as exc:  # e.g. no finite loss to set the target from
                fail(task, f"{task} summary", exc)
        if out_dir is None:
            return
        if task in results:
            write_results({task: results[task]}, out_dir)
            # A rerun that finished supersedes what an earlier failed one left.
            (out_dir / f"{task}.incomplete.json").unlink(missing_ok=True)
        else:
            atomic_write_json(out_dir / f"{task}.incomplete.json", build_incomplete(
                specs[task], runs[task], failures[task], seeds, is_quick))

    interrupted = False
    with job_pool(jobs) as pool:
        pending: dict[cf.Future, tuple[str, MethodSpec, int]] = {}

        def submit(task: str, method: MethodSpec, seed: int) -> None:
            job = {"spec": specs[task], "method": method.to_dict(), "seed": seed}
            try:
                pending[pool.submit(run_job, job)] = (task, method, seed)
            except KeyboardInterrupt:  # in the job itself, run by this process (--jobs 1)
                failures[task].append(job_failure(f"{task} {method.name!r} seed {seed}",
                                                  NotFinished()))
                raise
            except Exception as exc:  # noqa: BLE001 - a broken pool refuses new jobs
                fail(task, f"{task} {method.name!r} seed {seed}", exc)
                return
            jobs_left[task] += 1

        try:
            for name, spec in specs.items():
                for method in grid_methods(spec.lr_grid) + autolrs_methods:
                    for seed in seeds:
                        submit(name, method, seed)
            total = sum(len(spec.lr_grid) + 4 + len(autolrs_methods) for spec in specs.values())
            total *= len(seeds)
            done = 0
            while pending:
                finished, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
                for future in [f for f in pending if f in finished]:  # in submission order
                    task, method, seed = pending.pop(future)
                    jobs_left[task] -= 1
                    done += 1
                    try:
                        record = future.result()
                    except Exception as exc:  # noqa: BLE001 - recorded, the other jobs go on
                        fail(task, f"{task} {method.name!r} seed {seed}", exc)
                    else:
                        runs[task].append(record)
                        log(f"[{done}/{total} {time.perf_counter() - started:6.0f}s] {task} "
                            f"{method.name} seed {seed}: final val loss "
                            f"{_fmt(record['final_val_loss'])}, {record['wall_seconds']:.1f}s")
                    if method.grid:
                        grid_left[task] -= 1
                        if grid_left[task] == 0 and failures[task]:
                            log(f"{task}: a job failed, so no tuned baselines: the task gets no "
                                "summary")
                        elif grid_left[task] == 0:
                            best = best_constant_lr(runs[task])
                            log(f"{task}: best constant LR {best:g}; queueing tuned baselines")
                            for tuned in tuned_methods(best):
                                for s in seeds:
                                    submit(task, tuned, s)
                    if jobs_left[task] == 0:
                        close(task)
        except KeyboardInterrupt:
            interrupted = True
            stop_now(pool)
            for future, (task, method, seed) in pending.items():
                ok, value = finished_result(future)
                if ok:
                    runs[task].append(value)
                else:  # not logged one by one: there may be a hundred
                    failures[task].append(job_failure(f"{task} {method.name!r} seed {seed}",
                                                      value))
            for task in specs:
                if task not in closed and not failures[task]:  # its tuned jobs never queued
                    failures[task].append(job_failure(f"{task} tuned baselines", NotFinished()))
    for task in specs:
        if task not in closed:  # every submit failed: nothing was ever pending
            close(task)
    failed = [f for task in specs for f in failures[task]]
    if interrupted:
        message = f"interrupted: {jobs_count(len(failed))} failed or did not finish"
        if out_dir is not None:
            written = ", ".join(f"{t}.json" for t in results) or "no task result"
            left = ", ".join(f"{t}.incomplete.json" for t in specs if t not in results)
            message += (f"; wrote {written} to {out_dir}/; the finished runs of the other "
                        f"tasks are in {left} there")
        raise Interrupted(message, failed)
    if failed:
        where = ""
        if out_dir is not None:
            written = ", ".join(f"{t}.json" for t in results) or "no task result"
            incomplete = ", ".join(f"{t}.incomplete.json" for t in specs if t not in results)
            where = (f"; wrote {written} to {out_dir}/; the finished runs and each "
                     f"failure's traceback are in {incomplete} there")
        raise JobsFailed(failures_message(failed) + where, failed)
    return results


def build_result(spec: TaskSpec, runs: list[dict[str, Any]], seeds: Sequence[int],
                 is_quick: bool) -> dict[str, Any]:
    """The JSON document of one task: settings, every run, and the summary over seeds."""
    runs = sorted(runs, key=lambda r: (r["method"], r["seed"]))
    return {**_header(spec, seeds, is_quick), "best_constant_lr": best_constant_lr(runs),
            "summary": summarize(runs), "runs": runs}


def build_incomplete(spec: TaskSpec, runs: list[dict[str, Any]],
                     failures: list[dict[str, Any]], seeds: Sequence[int],
                     is_quick: bool) -> dict[str, Any]:
    """The JSON document of a task with failed jobs: its settings, the runs that finished
    and the failures; no summary (the report skips it)."""
    return {**_header(spec, seeds, is_quick), "complete": False, "failures": failures,
            "runs": sorted(runs, key=lambda r: (r["method"], r["seed"]))}


def _header(spec: TaskSpec, seeds: Sequence[int], is_quick: bool) -> dict[str, Any]:
    """What every task document starts with: schema, task, settings, seeds, machine."""
    settings = {k: v for k, v in asdict(spec).items() if k != "make_task"}
    return {"schema": SCHEMA_VERSION, "task": spec.name, "quick": is_quick,
            "settings": settings, "seeds": list(seeds), "machine": machine_record()}


def write_results(results: dict[str, dict[str, Any]], out_dir: Path) -> None:
    """``<task>.json`` and ``<task>.png`` for each task."""
    from bench.plots import plot_task

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, result in results.items():
        atomic_write_json(out_dir / f"{name}.json", result)
        plot_task(result, out_dir / f"{name}.png")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
