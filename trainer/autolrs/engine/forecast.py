"""Loss forecasting: denoise a loss series, fit ``L(t) = a*exp(-b*t) + c``, predict ahead.

Pure NumPy/SciPy. Never raises on bad series: NaN/inf, constant, increasing or very short
series give a defined ``Forecast`` with ``reliable=False`` and a reason instead.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import optimize
from scipy.interpolate import UnivariateSpline

MIN_POINTS = 5          # fewer points than this: no fit, fall back to the recent mean
SPLINE_MIN_POINTS = 8   # fewer than this: no spline denoising, the raw series is used
TAIL_POINTS = 10        # "the trial's own last losses" used for the sanity check
BOUND_FACTOR = 2.0      # a forecast may go this many observed drops beyond the series


@dataclass(frozen=True)
class Forecast:
    """A predicted loss at ``horizon`` steps after the series' first point."""

    value: float              # the bounded prediction (inf when the series diverged)
    std: float                # uncertainty of ``value`` (same units as the loss)
    reliable: bool            # False: fallback value, do not trust the fit
    reason: str               # why unreliable ("" when reliable)
    a: float = 0.0
    b: float = 0.0
    c: float = 0.0
    raw_value: float = math.nan  # the fit's unbounded prediction, for diagnostics

    def to_dict(self) -> dict[str, float | bool | str | None]:
        """JSON-able form (non-finite floats become None)."""
        return {k: _json_float(v) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None


def denoise(
    losses: Sequence[float],
    is_training: bool = True,
    spline_degree: int = 2,
    filter_ratio: float = 0.03,
    iterations: int = 10,
    outlier_zone: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Iterative outlier removal, then a smoothing spline (after the reference's ``spline_iter``).

    Each round drops the ``filter_ratio`` share of points farthest from a running median
    (a spline fitted tightly passes through spikes, so it cannot find them), only in the
    first ``outlier_zone`` of the series, and never none-means-all: the reference dropped
    *every* point of the first half when ``round(n * filter_ratio)`` was 0.
    Returns the kept x and the smoothed y. Short series come back unsmoothed.
    """
    ys = np.asarray(losses, dtype=float)
    xs = np.arange(len(ys), dtype=float)
    if len(ys) < SPLINE_MIN_POINTS or np.ptp(ys) == 0.0:
        return xs, ys
    bound = xs[int((len(xs) - 1) * outlier_zone)]
    rounds = iterations if is_training else 1
    for _ in range(rounds):
        if len(ys) < SPLINE_MIN_POINTS:
            break
        drop_count = int(round(len(ys) * filter_ratio)) if is_training else 1
        if drop_count <= 0:
            break
        distance = np.abs(ys - _running_median(ys, 7))
        worst = np.argsort(distance, kind="stable")[-drop_count:]
        worst = worst[(xs[worst] < bound) & (distance[worst] > 3 * _robust_scale(ys))]
        if len(worst) == 0:
            break
        keep = np.ones(len(ys), dtype=bool)
        keep[worst] = False
        xs, ys = xs[keep], ys[keep]
    return xs, _spline(xs, ys, spline_degree)


def _running_median(ys: np.ndarray, width: int) -> np.ndarray:
    half = width // 2
    padded = np.pad(ys, half, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width)
    return np.median(windows, axis=1)


def _robust_scale(ys: np.ndarray) -> float:
    """Noise level from first differences (median absolute deviation, Gaussian-consistent)."""
    if len(ys) < 2:
        return 0.0
    return float(np.median(np.abs(np.diff(ys)))) / (0.6745 * math.sqrt(2.0))


def _spline(xs: np.ndarray, ys: np.ndarray, degree: int) -> np.ndarray:
    # Smoothing factor from the series' own noise (first differences, robust scale):
    # SciPy's default s=len(ys) assumes unit noise and flattens any loss curve to a parabola.
    smoothing = len(ys) * max(_robust_scale(ys), 1e-12) ** 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            smoothed = UnivariateSpline(xs, ys, k=degree, s=smoothing)(xs)
        except Exception:  # noqa: BLE001 - SciPy raises several types on degenerate input
            return ys
    return smoothed if np.all(np.isfinite(smoothed)) else ys


def fit_exponential(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float, float, float]:
    """Least-squares fit of ``a*exp(-b*x) + c`` with ``b > 0``.

    ``b`` is searched on a log scale (bounded 1-D minimisation); ``a, c`` are then linear.
    Returns ``(a, b, c, rms_residual)``. Residuals are computed explicitly, never taken
    from ``lstsq`` (it returns an empty array for rank-deficient systems).
    """
    xs = np.asarray(xs, dtype=float)
    ys = np.asarray(ys, dtype=float)
    span = max(xs[-1] - xs[0], 1.0)

    def solve(log_b: float) -> tuple[float, float, float]:
        b = math.exp(log_b)
        basis = np.exp(-b * (xs - xs[0]))
        design = np.vstack([basis, np.ones_like(basis)]).T
        (a, c), *_ = np.linalg.lstsq(design, ys, rcond=None)
        residual = ys - (a * basis + c)
        return float(a), float(c), float(np.mean(residual**2))

    # b from "decays over 100 spans" to "decays within one step".
    low, high = math.log(1e-2 / span), math.log(5.0)
    grid = np.linspace(low, high, 25)
    scores = [solve(g)[2] for g in grid]
    best = int(np.argmin(scores))
    bracket = (grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)])
    result = optimize.minimize_scalar(
        lambda g: solve(g)[2], bounds=bracket, method="bounded", options={"xatol": 1e-4}
    )
    log_b = float(result.x) if result.fun <= scores[best] else float(grid[best])
    a, c, mse = solve(log_b)
    # Re-express a for x measured from 0 (the series may start after outlier removal).
    b = math.exp(log_b)
    a = a * math.exp(b * xs[0])
    return a, b, c, math.sqrt(mse)


def forecast_loss(
    losses: Sequence[float],
    horizon: int,
    is_training: bool = True,
    non_negative: bool | None = None,
) -> Forecast:
    """Predict the (denoised) loss ``horizon`` steps after the first point of ``losses``.

    The prediction is bounded by what a loss can be: never below the smallest observed
    loss minus the drop seen over the series (and never negative for a non-negative
    loss), and never below zero. Its ``std`` grows with the residual noise and with how
    far the forecast extrapolates beyond the series.
    """
    values = np.asarray(list(losses), dtype=float)
    if len(values) == 0:
        return Forecast(math.inf, math.inf, False, "empty series")
    if not np.all(np.isfinite(values)):
        return Forecast(math.inf, math.inf, False, "non-finite loss in series")
    if non_negative is None:
        non_negative = bool(np.all(values >= 0))
    tail = values[-min(TAIL_POINTS, len(values)):]
    tail_mean = float(np.mean(tail))
    noise = _robust_scale(values)
    if len(values) < MIN_POINTS:
        return Forecast(tail_mean, max(noise, abs(tail_mean) * 0.05), False, "too few points")
    if np.ptp(values) == 0.0:
        return Forecast(tail_mean, 0.0, False, "constant series")

    xs, smooth = denoise(values, is_training=is_training)
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a, b, c, rms = fit_exponential(xs, smooth)
    except (ValueError, np.linalg.LinAlgError, FloatingPointError) as exc:
        return Forecast(tail_mean, noise, False, f"fit failed: {exc}")
    if not all(math.isfinite(v) for v in (a, b, c, rms)):
        return Forecast(tail_mean, noise, False, "fit produced non-finite parameters")

    raw = a * math.exp(-b * horizon) + c
    # Bounds: at most BOUND_FACTOR times the drop (or rise) seen over the series beyond
    # the observed extremes, and never negative for a non-negative loss.
    drop = max(float(smooth[0] - smooth[-1]), 0.0)
    rise = max(float(smooth[-1] - smooth[0]), 0.0)
    floor = float(np.min(smooth)) - BOUND_FACTOR * drop
    ceiling = float(np.max(smooth)) + BOUND_FACTOR * rise
    if non_negative:
        floor = max(floor, 0.0)
    value = min(max(raw, floor), ceiling)
    reliable, reason = True, ""
    if value != raw:
        reliable, reason = False, "forecast outside what the loss can reach; clipped"
    # Sanity check against the trial's own last losses: a forecast far above the last
    # losses of a series that was not rising means the fit is wrong.
    rising = smooth[-1] > smooth[0]
    if not rising and value > tail_mean + 3 * max(noise, 1e-12) + abs(tail_mean) * 0.05:
        value, reliable, reason = tail_mean, False, "forecast above the series' own last losses"
    extrapolation = max(horizon - len(values), 0) / max(len(values), 1)
    std = math.sqrt(rms**2 + noise**2 / max(len(tail), 1)) * (1.0 + 0.5 * math.sqrt(extrapolation))
    if not reliable:  # clipped or replaced: uncertain by how far it extrapolates beyond the tail
        std = max(std, abs(tail_mean - value) / 2)
    return Forecast(float(value), float(std), reliable, reason, a, b, c, float(raw))
