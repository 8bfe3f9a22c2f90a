"""Evaluation of a trained MixER layer on a split: the paper's error metrics, the validation
score used for model selection, and parameter counts."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import metrics as M
from ._config import Config
from ._diagnostics import collapsed_envs, diverged_envs
from .data import EnvData
from .inference import predict

__all__ = ["evaluate_split", "val_scores", "val_rel_mse", "val_env_rel_mse", "active_parameters", "total_parameters"]


def val_scores(model, contexts, x_val, t, cfg: Config) -> dict[str, float]:
    """The validation scores of the free-running predictions of ``x_val [E, N, T, D]``:
    ``{"rel_mse": Eq. 9, "mse": ..., "traj_rel_l2": ...}``, and with ``train.select_on =
    "d_stsp"`` also ``"d_stsp"`` (the mean over environments of the state-space divergence of
    their validation trajectories; inf where a forecast is not finite). ``train.select_on``
    picks the one that selects the model. A failed solve predicts zeros, so it scores badly,
    never well."""
    pred, ok = predict(model, contexts, x_val, t, cfg.solver)
    s = model.expert_type.scored_from
    p, y = jnp.asarray(pred[:, :, s:]), jnp.asarray(x_val[:, :, s:])
    out = {"rel_mse": float(M.rel_mse(p, y)), "mse": float(M.mse(p, y)), "traj_rel_l2": float(M.traj_rel_l2(p, y))}
    if cfg.train.select_on == "d_stsp":
        pn, yn = np.asarray(p), np.asarray(y)
        out["d_stsp"] = float(np.mean([M.state_space_divergence(yn[e], pn[e]) for e in range(len(yn))]))
    return out


def val_rel_mse(model, contexts, x_val, t, cfg: Config) -> float:
    """relMSE (Eq. 9) of the free-running predictions of ``x_val [E, N, T, D]``."""
    return val_scores(model, contexts, x_val, t, cfg)["rel_mse"]


def val_env_rel_mse(model, contexts, x_val, t, cfg: Config) -> np.ndarray:
    """relMSE of every environment's free-running predictions of ``x_val`` (``[E]``, NaN or inf
    where a solve failed)."""
    pred, ok = predict(model, contexts, x_val, t, cfg.solver)
    s = model.expert_type.scored_from
    return np.asarray(M.per_env_rel_mse(jnp.asarray(pred[:, :, s:]), jnp.asarray(x_val[:, :, s:])))


def evaluate_split(model, contexts, split: EnvData, cfg: Config) -> tuple[dict[str, Any], np.ndarray]:
    """MSE, relMSE (Eq. 9), TPRMSE (Eq. 10) and per-env relMSE of a split.

    Returns ``(metrics, pred [E, N, T, D])``; ``metrics["collapsed_envs"]`` lists the envs whose
    forecast barely moves while the data does (:func:`~mixerdsr._diagnostics.collapsed_envs`),
    ``metrics["diverged_envs"]`` those whose forecast diverged
    (:func:`~mixerdsr._diagnostics.diverged_envs`): ``mse``, ``rel_mse`` and ``traj_rel_l2`` are
    means over the other envs (``n_diverged`` beside them; NaN when all diverged), their
    ``per_env_rel_mse`` is NaN, and TPRMSE counts them as above the threshold. Splits of at least
    ``LONG_TERM_MIN_TIMES`` time points also get the long-term statistics of :func:`_long_term`.
    Predictions are free-running and scored from the experts' ``scored_from`` step on (sequence
    experts: steps 1..T-1). For teacher-forced experts the one-step error under the training
    teacher forcing (``alpha = cfg.train.teacher_forcing``) is added as ``teacher_forced_mse`` /
    ``teacher_forced_rel_mse``.
    """
    x = split.x.astype(np.float32)
    pred, ok = predict(model, contexts, x, split.t.astype(np.float32), cfg.solver)
    s = model.expert_type.scored_from
    p, y = jnp.asarray(pred[:, :, s:]), jnp.asarray(x[:, :, s:])
    diverged = diverged_envs(np.asarray(p), np.asarray(y), ok)
    kept = np.setdiff1d(np.arange(p.shape[0]), diverged)
    pk, yk = p[kept], y[kept]
    per_env = np.asarray(M.per_env_rel_mse(p, y), np.float64)
    per_env[diverged] = np.nan  # null in metrics.json: no number stands for a diverged forecast
    per_traj = _traj_rel_mse(p, y)  # [E, N]
    with np.errstate(all="ignore"):
        per_traj_med = np.array([np.nanmedian(r) if np.isfinite(r).any() else np.nan for r in per_traj])
    per_traj_med[diverged] = np.nan
    none = float("nan")
    out = {
        "mse": float(M.mse(pk, yk)) if kept.size else none,
        "rel_mse": float(M.rel_mse(pk, yk)) if kept.size else none,
        "tprmse": float(M.tprmse_from_values(per_env, cfg.evaluation.tprmse_eps)),  # diverged envs fail
        "traj_rel_l2": float(M.traj_rel_l2(pk, yk)) if kept.size else none,
        "per_env_rel_mse": per_env.tolist(),
        "per_env_median_traj_rel_mse": per_traj_med.tolist(),
        # the typical trajectory's Eq. 9: a few trajectories through states near 0 dominate the mean
        "median_traj_rel_mse": float(np.nanmedian(per_traj[kept]))
        if kept.size and np.isfinite(per_traj[kept]).any()
        else none,
        "failed_solves": int((~ok).sum()),
        "diverged_envs": diverged,
        "n_diverged": len(diverged),
        "collapsed_envs": collapsed_envs(np.asarray(p), np.asarray(y), ok),
    }
    if p.shape[2] >= LONG_TERM_MIN_TIMES:
        out |= _long_term(np.asarray(p), np.asarray(y), split.t[:, s:], kept)
    if model.expert_type.teacher_forced:
        alpha = cfg.train.teacher_forcing
        forced, _ = predict(model, contexts, x, split.t.astype(np.float32), cfg.solver, alpha=alpha)
        tf = jnp.asarray(forced[:, :, s:])
        out.update(
            teacher_forcing=alpha,
            teacher_forced_mse=float(M.mse(tf, y)),
            teacher_forced_rel_mse=float(M.rel_mse(tf, y)),
        )
    return out, pred


#: series at least this long also get the long-term statistics of dynamical-systems
#: reconstruction (``d_stsp``, ``d_h``, ``vpt``, ``smape``)
LONG_TERM_MIN_TIMES = 50


def _long_term(p: np.ndarray, y: np.ndarray, t: np.ndarray, kept: np.ndarray) -> dict[str, float]:
    """Means over the envs ``kept`` of each env's long-term statistics (its trajectories pooled):
    ``d_stsp`` (:func:`~mixerdsr.metrics.state_space_divergence`), ``d_h``
    (:func:`~mixerdsr.metrics.power_spectrum_distance`), ``vpt`` (valid prediction time, in the
    data's time units) and ``smape``."""
    rows = [
        (
            M.state_space_divergence(y[e], p[e]),
            M.power_spectrum_distance(y[e], p[e]),
            M.valid_prediction_time(y[e], p[e], t[e]),
            M.smape(y[e], p[e]),
        )
        for e in kept
    ]
    if not rows:
        return dict.fromkeys(("d_stsp", "d_h", "vpt", "smape"), float("nan"))
    means = np.mean(np.asarray(rows, np.float64), axis=0)
    return {"d_stsp": float(means[0]), "d_h": float(means[1]), "vpt": float(means[2]), "smape": float(means[3])}


def _traj_rel_mse(p: jax.Array, y: jax.Array) -> np.ndarray:
    """Each trajectory's Eq. 9 relMSE ``[E, N]`` (``p``, ``y``: ``[E, N, T, D]``)."""
    flat = (p.shape[0] * p.shape[1], 1, *p.shape[2:])
    return np.asarray(M.per_env_rel_mse(p.reshape(flat), y.reshape(flat)), np.float64).reshape(p.shape[:2])


def active_parameters(model) -> int:
    """Parameters of one expert (the active count of a top-1 mixture), shift included."""
    leaves = jax.tree.leaves(eqx.filter(model.experts, eqx.is_array))
    return int(sum(leaf.size // leaf.shape[0] for leaf in leaves)) + (1 if model.shift else 0)


def total_parameters(model) -> int:
    return int(sum(leaf.size for leaf in jax.tree.leaves(eqx.filter(model, eqx.is_array))))
