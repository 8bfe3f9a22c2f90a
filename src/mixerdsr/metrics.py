"""Evaluation metrics (paper Appendix A.2) and routing/clustering scores.

Reconstruction metrics are pure ``jax.numpy`` and jitted (``clamp`` is static). They take
predictions and targets of identical shape ``[..., T, D]``: the leading axes are any batch,
usually ``(envs, trajectories)``; a **state** is one vector ``x[..., t, :]`` of size ``D``.

Relative MSE, Eq. 9 of the paper::

    RelMSE = 1/(E I T) sum_{e,i,t} ||x_t^{e,i} - xhat_t^{e,i}||_2^2 / ||x_t^{e,i}||_2^2

with, as the paper states, only the states whose L2 norm is greater than ``eps = 1e-6``
included. We read "only consider" literally: excluded states leave both the sum and the count
(the mean is over the valid states), implemented with a mask (``where`` + sum/count) so that the
shape never depends on the data. The ``clamp=True`` variant reproduces the authors' evaluation
code instead: each *component* of the target's absolute value is clamped from below,
``c_d = max(|x_d|, eps)``, and every state is kept with ratio ``||x - xhat||^2 / ||c||^2``
(numerator unclamped). The two agree (to within ``D * eps^2`` in the denominator) on states
with no component below ``eps``.

TPRMSE, Eq. 10: ``100 / E * sum_e 1{RelMSE_e < eps}`` with ``RelMSE_e`` the relative MSE of
environment ``e`` aggregated over its trajectories and times (mean over its valid states) --
the *percentage of environments* whose relative MSE is strictly below the threshold.

Long-term statistics of free runs (``D_stsp``, ``D_H``, valid prediction time, sMAPE): NumPy,
defined in ``mixerdsr._longterm`` and re-exported here.

Routing and clustering scores (:func:`purity`, :func:`adjusted_rand_index`,
:func:`matched_accuracy`) are NumPy; label ``-1`` (or any negative label) means unknown and the
entry is ignored.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from ._longterm import power_spectrum_distance as power_spectrum_distance
from ._longterm import smape as smape
from ._longterm import state_space_divergence as state_space_divergence
from ._longterm import valid_prediction_time as valid_prediction_time

__all__ = [
    "traj_rel_l2",
    "mse",
    "per_env_mse",
    "rel_mse",
    "per_env_rel_mse",
    "tprmse",
    "tprmse_from_values",
    "geometric_mean",
    "purity",
    "adjusted_rand_index",
    "matched_accuracy",
    "state_space_divergence",
    "power_spectrum_distance",
    "valid_prediction_time",
    "smape",
]


# ---------------------------------------------------------------------------------------
# reconstruction metrics (jax)
# ---------------------------------------------------------------------------------------
#: integer labels of N items: an array or a list
Labels = Int[ArrayLike, " N"] | Sequence[int]


def _check_pair(pred: ArrayLike, true: ArrayLike) -> tuple[Array, Array]:
    pred = jnp.asarray(pred)
    true = jnp.asarray(true)
    if pred.shape != true.shape:
        raise ValueError(f"pred and true must have the same shape [..., T, D], got {pred.shape} and {true.shape}")
    if true.ndim < 2:
        raise ValueError(f"arrays must be [..., T, D] (rank >= 2), got shape {true.shape}")
    return pred, true


def _state_ratios(pred: Array, true: Array, clamp: bool, eps: ArrayLike) -> tuple[Array, Array]:
    """Per-state relative squared error and validity mask, both ``[..., T]``."""
    num = jnp.sum((pred - true) ** 2, axis=-1)
    if clamp:
        den = jnp.sum(jnp.maximum(jnp.abs(true), eps) ** 2, axis=-1)
        return num / den, jnp.ones(num.shape, dtype=bool)
    den = jnp.sum(true**2, axis=-1)
    valid = jnp.sqrt(den) > eps
    return jnp.where(valid, num / jnp.where(valid, den, 1.0), 0.0), valid


@jax.jit
def mse(pred: Float[ArrayLike, "*batch T D"], true: Float[ArrayLike, "*batch T D"]) -> Float[Array, ""]:
    """Mean squared error over every element: ``mean((pred - true)**2)``.

    This is the mean over components; the paper's training loss Eq. 7 sums the squared error
    over the ``D`` state dimensions, i.e. equals ``D * mse``.

    Args:
        pred: ``Float[Array, "*batch T D"]`` predictions.
        true: ``Float[Array, "*batch T D"]`` targets, same shape.

    Returns:
        ``Float[Array, ""]`` scalar.
    """
    pred, true = _check_pair(pred, true)
    return jnp.mean((pred - true) ** 2)


@jax.jit
def per_env_mse(pred: Float[ArrayLike, "E *rest T D"], true: Float[ArrayLike, "E *rest T D"]) -> Float[Array, " E"]:
    """:func:`mse` of every environment (leading axis): mean over all other axes.

    Args:
        pred: ``Float[Array, "E N T D"]`` (any axes between ``E`` and ``D`` are reduced).
        true: same shape.

    Returns:
        ``Float[Array, "E"]``.
    """
    pred, true = _check_pair(pred, true)
    if true.ndim < 3:
        raise ValueError(f"per-env metrics need [E, ..., T, D] (rank >= 3), got shape {true.shape}")
    return jnp.mean((pred - true) ** 2, axis=tuple(range(1, true.ndim)))


@functools.partial(jax.jit, static_argnames=("clamp",))
def rel_mse(
    pred: Float[ArrayLike, "*batch T D"],
    true: Float[ArrayLike, "*batch T D"],
    *,
    clamp: bool = False,
    eps: float | Float[Array, ""] = 1e-6,
) -> Float[Array, ""]:
    """Relative MSE, paper Eq. 9, over all states of the batch.

    ``mean over states s of ||pred_s - true_s||^2 / ||true_s||^2`` where states with
    ``||true_s||_2 <= eps`` are excluded from the mean (masked: they count in neither the sum nor
    the count). ``NaN`` when no state is valid.

    With ``clamp=True`` (the authors' code): every state counts, with ratio
    ``||pred_s - true_s||^2 / ||max(|true_s|, eps)||^2``, the ``max`` taken per component.

    Args:
        pred: ``Float[Array, "*batch T D"]`` predictions.
        true: ``Float[Array, "*batch T D"]`` targets, same shape.
        clamp: use the per-component clamp instead of excluding near-zero states (static).
        eps: the norm threshold / clamp floor (default 1e-6).

    Returns:
        ``Float[Array, ""]`` scalar.
    """
    pred, true = _check_pair(pred, true)
    ratio, valid = _state_ratios(pred, true, clamp, eps)
    return jnp.sum(ratio) / jnp.sum(valid)


@jax.jit
def traj_rel_l2(pred: Float[ArrayLike, "*batch T D"], true: Float[ArrayLike, "*batch T D"]) -> Float[Array, ""]:
    """Relative L2 error of whole trajectories: mean over trajectories of
    ``||pred - true||_F / ||true||_F`` (norms over times and dims).

    Unlike :func:`rel_mse`, a trajectory that passes close to 0 does not dominate: one
    ODEBench-2 test trajectory starting at ``(0.003, 0.001)`` makes Eq. 9 about 100 for any
    model with an absolute error of 1e-3. Trajectories with zero norm are left out.

    Args:
        pred: ``Float[Array, "*batch T D"]`` predictions.
        true: same shape.

    Returns:
        ``Float[Array, ""]`` scalar.
    """
    pred, true = _check_pair(pred, true)
    num = jnp.sqrt(jnp.sum((pred - true) ** 2, axis=(-2, -1)))
    den = jnp.sqrt(jnp.sum(true**2, axis=(-2, -1)))
    valid = den > 0
    return jnp.sum(jnp.where(valid, num / jnp.where(valid, den, 1.0), 0.0)) / jnp.sum(valid)


@functools.partial(jax.jit, static_argnames=("clamp",))
def per_env_rel_mse(
    pred: Float[ArrayLike, "E *rest T D"],
    true: Float[ArrayLike, "E *rest T D"],
    *,
    clamp: bool = False,
    eps: float | Float[Array, ""] = 1e-6,
) -> Float[Array, " E"]:
    """:func:`rel_mse` of every environment (``RelMSE_e`` of Eq. 10).

    Each environment's value is the mean of the per-state ratios over its valid states (all its
    trajectories and times); ``NaN`` for an environment without a valid state.

    Args:
        pred: ``Float[Array, "E N T D"]`` (any axes between ``E`` and ``D`` are reduced).
        true: same shape.
        clamp, eps: as in :func:`rel_mse`.

    Returns:
        ``Float[Array, "E"]``.
    """
    pred, true = _check_pair(pred, true)
    if true.ndim < 3:
        raise ValueError(f"per-env metrics need [E, ..., T, D] (rank >= 3), got shape {true.shape}")
    ratio, valid = _state_ratios(pred, true, clamp, eps)
    axes = tuple(range(1, ratio.ndim))
    return jnp.sum(ratio, axis=axes) / jnp.sum(valid, axis=axes)


@jax.jit
def tprmse_from_values(per_env: Float[ArrayLike, " E"], eps: float | Float[Array, ""] = 0.1) -> Float[Array, ""]:
    """Eq. 10 from precomputed per-environment relative MSEs: ``100 * mean(per_env < eps)``.

    ``NaN`` entries (environments without a valid state) count as *not* below the threshold.

    Args:
        per_env: ``Float[Array, "E"]``, e.g. from :func:`per_env_rel_mse`.
        eps: the threshold (strict ``<``).

    Returns:
        ``Float[Array, ""]`` percentage in ``[0, 100]``.
    """
    per_env = jnp.asarray(per_env)
    return 100.0 * jnp.mean((per_env < eps).astype(jnp.result_type(float)))


def geometric_mean(per_env: ArrayLike | Sequence[float]) -> float:
    """Geometric mean of per-env errors (e.g. relMSE): the typical env, scale-free and robust
    to a few run-off envs. ``inf`` when any value is not finite (a failed solve loses); values
    are floored at 1e-12."""
    v = np.asarray(per_env, float)
    if not np.all(np.isfinite(v)):
        return float("inf")
    return float(np.exp(np.mean(np.log(np.maximum(v, 1e-12)))))


@functools.partial(jax.jit, static_argnames=("clamp",))
def tprmse(
    pred: Float[ArrayLike, "E *rest T D"],
    true: Float[ArrayLike, "E *rest T D"],
    eps: float | Float[Array, ""] = 0.1,
    *,
    clamp: bool = False,
    state_eps: float | Float[Array, ""] = 1e-6,
) -> Float[Array, ""]:
    """Thresholded Percentage Relative MSE, paper Eq. 10.

    ``100 / E * sum_e 1{RelMSE_e < eps}``: the percentage of environments whose relative MSE
    (:func:`per_env_rel_mse`, aggregated over trajectories and times) is strictly below ``eps``.

    Args:
        pred: ``Float[Array, "E N T D"]`` predictions.
        true: same shape.
        eps: the threshold on the relative MSE (paper: 0.1).
        clamp: passed to :func:`per_env_rel_mse` (static).
        state_eps: the state-norm threshold / clamp floor of Eq. 9 (``eps`` there).

    Returns:
        ``Float[Array, ""]`` percentage in ``[0, 100]``.
    """
    return tprmse_from_values(per_env_rel_mse(pred, true, clamp=clamp, eps=state_eps), eps)


# ---------------------------------------------------------------------------------------
# routing / clustering scores (numpy)
# ---------------------------------------------------------------------------------------
def _labels_pair(a: Labels, b: Labels, *, drop_negative_a: bool) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"label arrays must have the same length, got {a.size} and {b.size}")
    for name, v in (("first", a), ("second", b)):
        if v.size and not np.issubdtype(v.dtype, np.integer):
            if not np.all(np.equal(np.mod(v, 1), 0)):
                raise ValueError(f"{name} label array must hold integers, got dtype {v.dtype}")
    a = a.astype(np.int64)
    b = b.astype(np.int64)
    keep = b >= 0
    if drop_negative_a:
        keep &= a >= 0
    return a[keep], b[keep]


def _contingency(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Counts ``[clusters of a, clusters of b]`` (only the values that occur)."""
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1), dtype=np.int64)
    np.add.at(table, (ia, ib), 1)
    return table


def purity(assign: Labels, labels: Labels) -> float:
    """Cluster purity of ``assign`` (e.g. expert routes) against ``labels`` (e.g. families).

    ``(1/N) sum_k max_j |{n : assign_n = k, labels_n = j}|``: each cluster is credited with its
    most frequent label. Entries with a negative (unknown) label are ignored; ``N`` counts the
    rest. 1.0 means every cluster holds a single label (a clustering into singletons is
    trivially pure; compare with :func:`adjusted_rand_index`).

    Args:
        assign: ``Int[Array, "N"]`` cluster (expert) index per item.
        labels: ``Int[Array, "N"]`` true label per item, ``-1`` = unknown.

    Returns:
        A float in ``(0, 1]``, or ``nan`` when no item has a known label.
    """
    a, b = _labels_pair(assign, labels, drop_negative_a=False)
    if a.size == 0:
        return float("nan")
    return float(_contingency(a, b).max(axis=1).sum() / a.size)


def adjusted_rand_index(a: Labels, b: Labels) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985) between two labelings.

    ``ARI = (I - E[I]) / (max(I) - E[I])`` with ``I = sum_{kj} C(n_kj, 2)`` over the contingency
    table, ``E[I] = A B / C(N, 2)``, ``max(I) = (A + B) / 2``, ``A = sum_k C(a_k, 2)``,
    ``B = sum_j C(b_j, 2)``. Symmetric; 1 for identical partitions (up to renaming), about 0 for
    independent ones, and 1.0 by convention when both are the same trivial partition (one
    cluster, or all singletons), as scikit-learn. Items with a negative label in *either*
    array are ignored.

    Args:
        a: ``Int[Array, "N"]`` first labeling (e.g. expert routes or K-means clusters).
        b: ``Int[Array, "N"]`` second labeling (e.g. true families, ``-1`` = unknown).

    Returns:
        A float in ``[-1, 1]``; ``nan`` when no item is left.
    """
    a, b = _labels_pair(a, b, drop_negative_a=True)
    n = a.size
    if n == 0:
        return float("nan")
    if n == 1:
        return 1.0
    table = _contingency(a, b).astype(np.float64)

    def pairs(v: np.ndarray) -> float:
        return float(np.sum(v * (v - 1.0)) / 2.0)

    index = pairs(table)
    sum_a = pairs(table.sum(axis=1))
    sum_b = pairs(table.sum(axis=0))
    total = n * (n - 1.0) / 2.0
    expected = sum_a * sum_b / total
    max_index = 0.5 * (sum_a + sum_b)
    if max_index == expected:  # only when both partitions are the same trivial one
        return 1.0
    return float((index - expected) / (max_index - expected))


def matched_accuracy(pred: Labels, labels: Labels) -> float:
    """Classification accuracy of cluster labels after the best one-to-one matching.

    Clusters are matched to classes by the Hungarian algorithm
    (:func:`scipy.optimize.linear_sum_assignment` on the contingency table, maximising matched
    items); the accuracy is the fraction of items whose cluster is matched to their class. With
    more clusters than classes the unmatched clusters count as errors (and vice versa). Entries
    with a negative (unknown) label are ignored.

    Args:
        pred: ``Int[Array, "N"]`` cluster index per item (e.g. K-means on contexts).
        labels: ``Int[Array, "N"]`` true class per item, ``-1`` = unknown.

    Returns:
        A float in ``[0, 1]``; ``nan`` when no item has a known label.
    """
    a, b = _labels_pair(pred, labels, drop_negative_a=False)
    if a.size == 0:
        return float("nan")
    table = _contingency(a, b)
    from scipy.optimize import linear_sum_assignment  # imported here: ~40 MB, needed by this function only

    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / a.size)
