"""Cost of the pure algorithm: BO decisions (GP fit + ask), loss forecasts, and the
controller's whole end-of-trial step, on synthetic loss series."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from autolrs.config import AutoLRSConfig
from autolrs.engine.bo import LRSearch, Observation, SearchSpace
from autolrs.engine.controller import StageController
from autolrs.engine.forecast import forecast_loss

from bench.timing import summary_ms

MIN_LR, MAX_LR = 1e-3, 1.0


def synthetic_score(lr: float, rng: np.random.Generator) -> float:
    """A forecast loss with its best near LR 0.05, plus noise (what a trial would score)."""
    return 0.3 + 0.08 * (math.log10(lr) - math.log10(0.05)) ** 2 + rng.normal(0, 0.005)


def synthetic_losses(steps: int, rng: np.random.Generator, start: float = 2.0,
                     floor: float = 0.4, rate: float = 0.01, noise: float = 0.03) -> list[float]:
    """A noisy exponential loss curve ``(start - floor) * exp(-rate * t) + floor``."""
    t = np.arange(steps)
    clean = (start - floor) * np.exp(-rate * t) + floor
    return list(clean * (1 + rng.normal(0, noise, steps)))


def space_for(preset: str) -> SearchSpace:
    """The BO search space the controller builds for ``preset``."""
    cfg = AutoLRSConfig(min_lr=MIN_LR, max_lr=MAX_LR, preset=preset).resolved()
    return SearchSpace(MIN_LR, MAX_LR, cfg.kappa, cfg.acq_optimizer, cfg.divergence_score)


def bo_decisions(preset: str, stages: int, trials: int = 10) -> dict[str, Any]:
    """Time ``LRSearch.propose`` (GP fit on the stage's scores + acquisition) for every
    proposal of ``stages`` synthetic stages of ``trials`` trials."""
    rng = np.random.default_rng(0)
    space = space_for(preset)
    durations: list[float] = []
    lower_bound: list[float] = []
    for stage in range(stages):
        observations: list[Observation] = []
        for _ in range(trials):
            # A fresh LRSearch for each timing: it caches its last GP fit, and a decision
            # is timed with its fit (the controller shares one fit between the stop test
            # and the next proposal; "controller" times that whole step).
            search = LRSearch(space, seed=0, stage=stage)
            start = time.perf_counter()
            lr = search.propose(observations, reference_loss=1.0)
            durations.append(time.perf_counter() - start)
            observations.append(Observation(lr, synthetic_score(lr, rng)))
            if len(observations) >= 2:
                search = LRSearch(space, seed=0, stage=stage)
                start = time.perf_counter()
                search.lower_bound(observations, 2.0, reference_loss=1.0)
                lower_bound.append(time.perf_counter() - start)
    # The first proposal of a stage is random (no GP): report GP decisions apart.
    with_gp = [d for i, d in enumerate(durations) if i % trials != 0]
    return {"propose": summary_ms(with_gp), "first_random_propose": summary_ms(
        durations[::trials]), "lower_bound_check": summary_ms(lower_bound),
        "kappa": space.kappa, "acq_optimizer": space.acq_optimizer}


def forecasts(lengths: tuple[int, ...], repeats: int) -> dict[str, Any]:
    """Time ``forecast_loss`` on trial series of each length (tau' steps)."""
    rng = np.random.default_rng(1)
    out = {}
    for length in lengths:
        durations = []
        for _ in range(repeats):
            series = synthetic_losses(length, rng, rate=3.0 / length)
            start = time.perf_counter()
            forecast_loss(series, horizon=10 * length)
            durations.append(time.perf_counter() - start)
        out[str(length)] = summary_ms(durations)
    return out


def controller_run(preset: str, tau: int, tau_max: int, max_steps: int) -> dict[str, Any]:
    """Drive a StageController on synthetic losses; time the steps that end a trial
    (forecast, BO, adaptive check) and the plain ones. Returns timings and final state."""
    rng = np.random.default_rng(2)
    cfg = AutoLRSConfig(min_lr=MIN_LR, max_lr=MAX_LR, tau=tau, tau_max=tau_max,
                        max_steps=max_steps, preset=preset)
    ctrl = StageController(cfg)
    ctrl.start()
    loss, decision, plain = 2.0, [], []
    while not ctrl.done:
        lr = ctrl.lr
        quality = math.exp(-((math.log10(lr) - math.log10(0.05)) ** 2))
        loss = max(0.05, loss * (1 - 0.004 * quality) + 0.0005 * (1 - quality))
        observed = loss * (1 + rng.normal(0, 0.02))
        start = time.perf_counter()
        ctrl.observe_loss(observed)
        elapsed = time.perf_counter() - start
        ended_trial = any(e["type"] == "trial_end" for e in ctrl.drain_events())
        (decision if ended_trial else plain).append(elapsed)
    return {"trial_end": summary_ms(decision), "other_steps": summary_ms(plain),
            "stages": len(ctrl.s["history"]), "state": ctrl.state_dict()}
