"""Long-term statistics of free-running forecasts, as dynamical-systems reconstruction judges
them (re-exported by :mod:`mixerdsr.metrics`).

A chaotic forecast leaves its trajectory after a few Lyapunov times whatever the model, so the
field compares what the model's free runs *visit* and how they *oscillate*:

- :func:`state_space_divergence` ``D_stsp``: the Kullback-Leibler divergence ``KL(p || q)``
  between the data's occupation density ``p`` in state space and the forecast's ``q``. In up to
  ``max_binned_dims`` dimensions both are histograms on a grid of ``bins`` cells per dimension
  spanning the data's range (Laplace-smoothed with ``alpha`` counts per cell; forecast states
  outside the grid count in ``q``'s total but in no cell). In more dimensions both are Gaussian
  mixtures with one component of variance ``sigma^2`` (standardised units) per state, and the
  KL is the Monte-Carlo estimate at the data's states.
- :func:`power_spectrum_distance` ``D_H``: per dimension, the Hellinger distance between the
  normalised power spectra (trajectories' own means removed, zero frequency left out, averaged
  over trajectories, Gaussian-smoothed over ``smoothing`` frequency bins), averaged over
  dimensions; 0 for equal spectra, 1 (its maximum) for spectra without common frequencies or a
  forecast with no oscillation at all.
- :func:`valid_prediction_time`: how long the forecast stays within ``threshold`` of the data in
  normalised RMSE (each dimension divided by the data's standard deviation over time).
- :func:`smape`: the symmetric mean absolute percentage error, in ``[0, 200]``.

All take ``true`` and ``pred`` of shape ``[..., T, D]`` (leading axes: trajectories, pooled) and
are NumPy.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.special import logsumexp

__all__ = ["state_space_divergence", "power_spectrum_distance", "valid_prediction_time", "smape"]


def _pair(true, pred) -> tuple[np.ndarray, np.ndarray]:
    true, pred = np.asarray(true, np.float64), np.asarray(pred, np.float64)
    if true.shape != pred.shape or true.ndim < 2:
        raise ValueError(f"true and pred must have one shape [..., T, D], got {true.shape} and {pred.shape}")
    return true, pred


def state_space_divergence(
    true, pred, *, bins: int = 30, alpha: float = 1e-6, sigma: float = 1.0, max_binned_dims: int = 3
) -> float:
    """``D_stsp = KL(p_data || q_forecast)`` of the states visited (see the module's text).

    Args:
        true, pred: ``[..., T, D]``; every state of every trajectory counts.
        bins: grid cells per dimension (binned estimate).
        alpha: pseudo-count per cell (binned estimate).
        sigma: standard deviation of each mixture component in standardised units (mixture
            estimate, above ``max_binned_dims`` dimensions).
        max_binned_dims: the largest dimension estimated by histograms.

    Returns:
        The divergence (0 for identical state sets; ``inf`` if the forecast is not finite).
    """
    true, pred = _pair(true, pred)
    x, y = true.reshape(-1, true.shape[-1]), pred.reshape(-1, pred.shape[-1])
    if not np.all(np.isfinite(y)):
        return float("inf")
    if x.shape[1] <= max_binned_dims:
        lo, hi = x.min(0), x.max(0)
        span = np.where(hi > lo, hi - lo, 1.0)

        def hist(z):
            cell = np.floor((z - lo) / span * bins).astype(np.int64)
            cell = np.where(z == hi, bins - 1, cell)  # the data's maximum falls in the last cell
            inside = np.all((cell >= 0) & (cell < bins), axis=1)
            flat = np.ravel_multi_index(cell[inside].T, (bins,) * x.shape[1])
            counts = np.bincount(flat, minlength=bins ** x.shape[1]).astype(np.float64)
            return (counts + alpha) / (len(z) + alpha * counts.size)

        p, q = hist(x), hist(y)
        return float(np.sum(p * (np.log(p) - np.log(q))))
    mu, sd = x.mean(0), np.where(x.std(0) > 0, x.std(0), 1.0)
    xs, ys = (x - mu) / sd, (y - mu) / sd

    def log_density(at, centres):
        sq = np.sum(at**2, 1)[:, None] + np.sum(centres**2, 1)[None, :] - 2.0 * at @ centres.T
        return logsumexp(-np.maximum(sq, 0.0) / (2.0 * sigma**2), axis=1) - np.log(len(centres))

    # the Gaussian normalisation is the same for both mixtures and cancels
    return float(np.mean(log_density(xs, xs) - log_density(xs, ys)))


def _spectra(z: np.ndarray, smoothing: float) -> np.ndarray:
    """Power spectra ``[D, F]`` (positive frequencies) averaged over trajectories, smoothed."""
    z = z.reshape(-1, *z.shape[-2:])  # [N, T, D]
    z = z - z.mean(axis=1, keepdims=True)
    power = (np.abs(np.fft.rfft(z, axis=1)) ** 2)[:, 1:].mean(0).T  # [D, F]
    return gaussian_filter1d(power, smoothing, axis=1, mode="nearest") if smoothing > 0 else power


def power_spectrum_distance(true, pred, *, smoothing: float = 2.0) -> float:
    """``D_H``: Hellinger distance of the normalised power spectra, averaged over dimensions
    (see the module's text).

    Args:
        true, pred: ``[..., T, D]`` (``T >= 3``).
        smoothing: standard deviation of the Gaussian smoothing, in frequency bins (0: none).

    Returns:
        A value in ``[0, 1]`` (1 where a spectrum has no power, e.g. a constant forecast, or the
        forecast is not finite).
    """
    true, pred = _pair(true, pred)
    if not np.all(np.isfinite(pred)):
        return 1.0
    pt, pp = _spectra(true, smoothing), _spectra(pred, smoothing)
    out = []
    for a, b in zip(pt, pp):
        if a.sum() <= 0 or b.sum() <= 0:
            out.append(1.0)
            continue
        bc = np.sum(np.sqrt(a / a.sum() * b / b.sum()))
        out.append(float(np.sqrt(max(0.0, 1.0 - bc))))
    return float(np.mean(out))


def valid_prediction_time(true, pred, t, *, threshold: float = 0.5) -> float:
    """Mean over trajectories of the time until the normalised RMSE
    ``sqrt(mean_d ((pred_d - true_d) / std_d)^2)`` first exceeds ``threshold`` (``std_d``: the
    trajectory's standard deviation over time; the whole horizon when it never does).

    Args:
        true, pred: ``[..., T, D]``.
        t: the time grid ``[T]``.
        threshold: the normalised error that ends the valid prediction.

    Returns:
        A time in the units of ``t`` (0 when the first state is already off).
    """
    true, pred = _pair(true, pred)
    t = np.asarray(t, np.float64)
    x, y = true.reshape(-1, *true.shape[-2:]), pred.reshape(-1, *pred.shape[-2:])
    sd = x.std(axis=1, keepdims=True)
    sd = np.where(sd > 0, sd, 1.0)
    with np.errstate(invalid="ignore", over="ignore"):
        nrmse = np.sqrt(np.mean(((y - x) / sd) ** 2, axis=-1))  # [N, T]
    off = ~(nrmse <= threshold)  # NaN counts as off
    first = np.where(off.any(1), off.argmax(1), len(t) - 1)
    return float(np.mean(t[first] - t[0]))


def smape(true, pred) -> float:
    """Symmetric mean absolute percentage error ``100 mean(2 |pred - true| / (|pred| + |true|))``
    over every component (0 where both are 0; 200 is the maximum, e.g. a zero forecast).

    Args:
        true, pred: ``[..., T, D]``.
    """
    true, pred = _pair(true, pred)
    den = np.abs(pred) + np.abs(true)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, 2.0 * np.abs(pred - true) / np.where(den > 0, den, 1.0), 0.0)
    return float(100.0 * np.mean(r))
