"""Loss forecasting: fit quality on synthetic exponentials, and degenerate series."""

import math

import numpy as np
import pytest

from autolrs.engine.forecast import denoise, fit_exponential, forecast_loss


@pytest.mark.parametrize("seed", range(5))
def test_recovers_noisy_exponential_with_outliers(seed):
    rng = np.random.default_rng(seed)
    t = np.arange(200)
    a, b, c = 2.0, 0.02, 0.5
    y = a * np.exp(-b * t) + c + rng.normal(0, 0.03, len(t))
    spikes = rng.choice(np.arange(5, 95), size=5, replace=False)
    y[spikes] += 1.0
    forecast = forecast_loss(y, horizon=2000)
    assert forecast.reliable, forecast.reason
    assert forecast.a == pytest.approx(a, rel=0.1)
    assert forecast.b == pytest.approx(b, rel=0.15)
    assert forecast.c == pytest.approx(c, abs=0.05)
    assert forecast.value == pytest.approx(c, abs=0.05)
    assert 0 < forecast.std < 0.5


def test_fit_exponential_exact_data():
    x = np.arange(50, dtype=float)
    a, b, c, rms = fit_exponential(x, 3.0 * np.exp(-0.1 * x) + 1.0)
    assert (a, b, c) == pytest.approx((3.0, 0.1, 1.0), rel=1e-3)
    assert rms < 1e-4


def test_fit_handles_rank_deficient_series():
    # lstsq returns an empty residual array here; the reference crashed on SciPy >= 1.9.
    a, b, c, rms = fit_exponential(np.arange(10.0), np.full(10, 2.0))
    assert all(math.isfinite(v) for v in (a, b, c, rms))


@pytest.mark.parametrize("series, reason", [
    ([], "empty"),
    ([1.0, float("nan"), 0.5, 0.4, 0.3, 0.2], "non-finite"),
    ([1.0, float("inf"), 0.5, 0.4, 0.3, 0.2], "non-finite"),
    ([2.0, 1.5, 1.2], "too few"),
    ([1.0] * 30, "constant"),
])
def test_degenerate_series_are_flagged_not_raised(series, reason):
    forecast = forecast_loss(series, horizon=100)
    assert not forecast.reliable
    assert reason in forecast.reason


def test_non_finite_series_forecasts_infinity():
    assert forecast_loss([1.0, float("nan")] * 10, 100).value == math.inf


def test_increasing_series_forecasts_worse_than_its_last_losses_but_bounded():
    series = np.linspace(1.0, 3.0, 40)
    forecast = forecast_loss(series, horizon=400)
    assert forecast.value > 3.0
    assert forecast.value <= 3.0 + 2.0 * 2.0 + 1e-9  # at most two observed rises beyond the max


def test_cross_entropy_forecast_is_never_negative():
    # A steep drop extrapolated 10x: the reference forecast went down to -22.8 here.
    series = np.linspace(2.3, 0.4, 30) + np.random.default_rng(0).normal(0, 0.02, 30)
    forecast = forecast_loss(series, horizon=300)
    assert forecast.value >= 0.0
    assert forecast.value >= min(series) - 2 * (series[0] - series[-1]) - 1e-9
    assert math.isfinite(forecast.std)


def test_short_series_denoise_keeps_points():
    # round(n * 0.03) == 0 for n < 17: the reference then dropped the whole first half.
    xs, ys = denoise(np.linspace(2, 1, 12) + np.array([0, 0.3] * 6))
    assert len(xs) >= 10


def test_forecast_to_dict_is_json_safe():
    import json

    json.dumps(forecast_loss([1.0, float("nan")], 10).to_dict(), allow_nan=False)
