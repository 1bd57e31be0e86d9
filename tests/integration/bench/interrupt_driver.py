"""``python -m bench`` on a tiny digits task in which the jobs of one method hang, for the
Ctrl-C tests: ``interrupt_driver.py HANGING_METHOD BENCH_ARGS...``.

Module level so that the spawned workers, which import this file, find ``job``."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace

import bench.ablation
import bench.quality
import bench.tasks
from bench.runner import run_job

REAL_GET_TASK = bench.tasks.get_task
HANGING = os.environ.get("BENCH_HANGING_METHOD", "")


def tiny(name: str, is_quick: bool = False) -> bench.tasks.TaskSpec:
    """A digits run of 60 steps: a job that does not hang takes a second or two."""
    return replace(REAL_GET_TASK(name, is_quick=True), budget=60, eval_every=20,
                   lr_grid=(0.03, 0.3), tau=20, tau_max=20,
                   autolrs_overrides={"trials_per_stage": 2, "min_trials": 1})


def job(spec: dict) -> dict:
    """``run_job``, except that the hanging method's jobs (an ablation variant's: its AutoLRS
    method) sleep ten minutes."""
    if HANGING and spec["method"]["name"] in (HANGING, f"autolrs-{HANGING}"):
        print(f"hanging: {HANGING} seed {spec['seed']}", flush=True)
        time.sleep(600)
    return run_job(spec)


if __name__ == "__main__":
    bench.tasks.get_task = tiny
    bench.ablation.get_task = tiny
    bench.quality.run_job = job
    bench.ablation.run_job = job
    from bench.__main__ import main

    sys.exit(main(sys.argv[1:]))
