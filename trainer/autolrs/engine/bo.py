"""Bayesian optimisation of the LR: a scikit-optimize GP over log(LR), LCB acquisition.

Stateless by design: every proposal rebuilds the GP from the stage's observations with a
seed derived from (seed, stage, number of observations), so the controller's JSON state is
all that is needed to reproduce a decision exactly after a restart.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from threadpoolctl import threadpool_limits

# Two LRs closer than this in log10 space count as the same LR ("never re-propose").
SAME_LR_LOG10 = 1e-3
GRID_POINTS = 256


@dataclass(frozen=True)
class Observation:
    """One scored LR: ``score`` is the forecast loss, None when the trial diverged."""

    lr: float
    score: float | None
    prior: bool = False  # carried over from an earlier stage (warm start), down-weighted


@dataclass(frozen=True)
class SearchSpace:
    """The LR interval, the LCB weight and how the acquisition is optimised."""

    min_lr: float
    max_lr: float
    kappa: float
    acq_optimizer: str = "sampling"   # "sampling" (fast, 1-D is easy) or "lbfgs" (reference)
    divergence_score: float | None = None  # None: a penalty relative to the scores seen
    prior_noise: float = 0.25          # extra variance (in normalised-y units) of prior points
    min_spacing_log10: float = SAME_LR_LOG10  # no trial this close (decades) to a tried LR


def derived_seed(*parts: int) -> int:
    """A 32-bit seed from integers, stable across processes and platforms."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


def scores_for_gp(observations: Sequence[Observation], space: SearchSpace,
                  reference_loss: float | None = None) -> list[float]:
    """Finite scores for the GP: diverged trials get ``divergence_score`` or a penalty
    just above the worst loss seen (a 1e6 outlier would flatten the normalised GP)."""
    finite = [o.score for o in observations if o.score is not None and math.isfinite(o.score)]
    if space.divergence_score is not None:
        penalty = space.divergence_score
    else:
        pool = finite + ([reference_loss] if reference_loss is not None else [])
        if pool:
            worst, best = max(pool), min(pool)
            penalty = worst + max(0.5 * (worst - best), 0.1 * abs(worst), 1e-3)
        else:
            penalty = 1.0
    return [o.score if o.score is not None and math.isfinite(o.score) else penalty
            for o in observations]


class LRSearch:
    """Propose the next LR of a stage from the observations so far."""

    def __init__(self, space: SearchSpace, seed: int, stage: int):
        self.space = space
        self.seed = seed
        self.stage = stage
        self._fitted: tuple[Any, Any] | None = None  # (observations key, fitted optimizer)

    def _skopt_space(self):
        from skopt.space import Real

        return [Real(self.space.min_lr, self.space.max_lr, prior="log-uniform",
                     transform="normalize")]

    def _optimizer(self, observations: Sequence[Observation], reference_loss: float | None):
        """The GP fitted to ``observations``; the last fit is reused for the same inputs
        (the stop test and the next proposal of one trial end share it)."""
        key = (tuple(observations), reference_loss)
        if self._fitted is None or self._fitted[0] != key:
            with threadpool_limits(1):  # a 1-D GP: BLAS threads only contend (10x slower)
                self._fitted = (key, self._fit(observations, reference_loss))
        return self._fitted[1]

    def _fit(self, observations: Sequence[Observation], reference_loss: float | None):
        from skopt import Optimizer
        from skopt.utils import cook_estimator

        rng_seed = derived_seed(self.seed, self.stage, len(observations))
        dims = self._skopt_space()
        estimator = cook_estimator("GP", space=dims, random_state=rng_seed, noise="gaussian")
        if any(o.prior for o in observations):
            alpha = np.array([self.space.prior_noise if o.prior else 1e-10 for o in observations])
            estimator.set_params(alpha=alpha)
        kwargs = {"n_points": 2000} if self.space.acq_optimizer == "sampling" else {}
        opt = Optimizer(
            dims,
            base_estimator=estimator,
            n_initial_points=1,
            acq_func="LCB",
            acq_optimizer=self.space.acq_optimizer,
            acq_func_kwargs={"kappa": self.space.kappa},
            acq_optimizer_kwargs=kwargs,
            random_state=rng_seed,
        )
        xs = [[o.lr] for o in observations]
        ys = scores_for_gp(observations, self.space, reference_loss)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt.tell(xs, ys)
        return opt

    def propose(self, observations: Sequence[Observation],
                reference_loss: float | None = None) -> float:
        """The next LR to try: random (log-uniform) for the first, GP-LCB after.

        Never returns an LR already tried in this stage (prior points may be re-tried).
        """
        tried = [o.lr for o in observations if not o.prior]
        if not observations:
            rng = np.random.default_rng(derived_seed(self.seed, self.stage, 0))
            low, high = math.log10(self.space.min_lr), math.log10(self.space.max_lr)
            return float(10 ** rng.uniform(low, high))
        opt = self._optimizer(observations, reference_loss)
        candidate = float(opt._next_x[0])
        spacing = self.space.min_spacing_log10
        if not _is_tried(candidate, tried, spacing):
            return self._clip(candidate)
        # The GP keeps asking for a point already measured (the reference looped here,
        # sometimes forever): take the best untried point of the acquisition on a grid.
        grid, lcb = self._lcb_on_grid(opt, self.space.kappa)
        for index in np.argsort(lcb, kind="stable"):
            if not _is_tried(float(grid[index]), tried, spacing):
                return self._clip(float(grid[index]))
        return self._clip(_largest_gap_midpoint(tried, self.space))

    def lower_bound(self, observations: Sequence[Observation], kappa: float,
                    reference_loss: float | None = None) -> tuple[float, float]:
        """``min over LR of mean - kappa*std`` of the GP and where it is: the best score the
        model still thinks plausible (used to stop the search early)."""
        opt = self._optimizer(observations, reference_loss)
        grid, lcb = self._lcb_on_grid(opt, kappa)
        index = int(np.argmin(lcb))
        return float(lcb[index]), float(grid[index])

    def _lcb_on_grid(self, opt, kappa: float) -> tuple[np.ndarray, np.ndarray]:
        grid = np.logspace(math.log10(self.space.min_lr), math.log10(self.space.max_lr),
                           GRID_POINTS)
        transformed = opt.space.transform([[float(x)] for x in grid])
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore")
            mean, std = opt.models[-1].predict(transformed, return_std=True)
        return grid, mean - kappa * std

    def _clip(self, lr: float) -> float:
        return float(min(max(lr, self.space.min_lr), self.space.max_lr))


def _is_tried(lr: float, tried: Sequence[float], spacing: float = SAME_LR_LOG10) -> bool:
    return any(abs(math.log10(lr) - math.log10(t)) < spacing for t in tried)


def _largest_gap_midpoint(tried: Sequence[float], space: SearchSpace) -> float:
    points = sorted([math.log10(space.min_lr), math.log10(space.max_lr)]
                    + [math.log10(t) for t in tried])
    gaps = [(b - a, (a + b) / 2) for a, b in zip(points, points[1:])]
    return float(10 ** max(gaps)[1])
