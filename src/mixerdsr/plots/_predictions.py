"""Data against model: trajectories of a split, per family."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import _canvas
from ._canvas import _categorical, _fmt_err, _spread, _wrap, family_label, new_figure, shown_rel_mse

__all__ = ["predictions_figure", "plot_predictions", "adapt_forecast_figure", "plot_adapt_forecast"]


# ---------------------------------------------------------------------------------------
# predictions
# ---------------------------------------------------------------------------------------
def _pick_envs(family: np.ndarray, max_families: int, max_envs_per_family: int) -> list[tuple[int, np.ndarray, int]]:
    """``(family, shown envs, envs in family)`` for up to ``max_families`` families spread over all."""
    fams = np.unique(family)
    fams = _spread(fams, max_families)
    out = []
    for f in fams:
        idx = np.flatnonzero(family == f)
        out.append((int(f), _spread(idx, max_envs_per_family), len(idx)))
    return out


def predictions_figure(
    split,
    pred: np.ndarray,
    *,
    max_families: int = 10,
    max_envs_per_family: int = 3,
    max_traj: int = 1,
    max_dims: int = 10,
    title: str = "",
    sequence: bool = False,
):
    """Data against model predictions: one row per family, one panel per shown environment.

    Envs are spread over each family's envs and families over all families (``max_families``,
    ``max_envs_per_family``); each panel shows trajectories ``0 .. max_traj-1`` of one env over
    time, one colour per state dimension, data solid with dots, model dashed. The panel title
    gives the relative MSE (Eq. 9) of exactly the trajectories drawn (all state dims, steps
    from 1 on for sequence models, whose step 0 is given; those also get the plain MSE, since
    Eq. 9 blows up on standardised series that pass near 0). With two or more dims a last column
    shows the phase portrait (x0, x1) of the row's envs.
    """
    from matplotlib.lines import Line2D

    pred = np.asarray(pred)
    x = np.asarray(split.x)
    if pred.shape != x.shape:
        raise ValueError(f"pred shape {pred.shape} does not match the split's x {x.shape}")
    rows = _pick_envs(np.asarray(split.family), max_families, max_envs_per_family)
    n_fam_total = len(np.unique(split.family))
    n_dims = x.shape[-1]
    shown_dims = min(n_dims, max_dims)
    n_traj = max(1, min(max_traj, x.shape[1]))
    ncols_env = max(len(r[1]) for r in rows)
    phase = n_dims >= 2
    ncols = ncols_env + (1 if phase else 0)
    s0 = 1 if sequence else 0
    fig = new_figure(3.3 * ncols + 0.4, 2.5 * len(rows) + 1.3, layout="constrained")
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    dim_colour = _categorical(shown_dims)
    from matplotlib import colormaps

    env_cmap = colormaps["viridis"]
    for r, (f, envs, n_in_fam) in enumerate(rows):
        fname = family_label(f, split.family_names, 120)
        for c in range(ncols_env):
            if c >= len(envs):
                axes[r, c].set_axis_off()
                continue
            _env_panel(axes[r, c], split, x, pred, int(envs[c]), fname, n_traj, shown_dims, s0, sequence, dim_colour)
        if phase:
            _phase_panel(axes[r, -1], split, x, pred, envs, n_in_fam, fname, n_traj, s0, env_cmap)
    handles = [Line2D([], [], color=dim_colour(d), lw=2, label=f"x{d}") for d in range(shown_dims)]
    handles += [
        Line2D([], [], color="0.3", ls="-", marker=".", label="data"),
        Line2D([], [], color="0.3", ls="--", lw=1.4, label="model"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 12), fontsize=8, frameon=False)
    head = title or "data vs model"
    notes = [f"{len(rows)} of {n_fam_total} families, up to {max_envs_per_family} envs each"]
    if shown_dims < n_dims:
        notes.append(f"dims x0-x{shown_dims - 1} of {n_dims} drawn, relMSE over all")
    if sequence:
        notes.append("step 0 given, scored from step 1")
    fig.suptitle(f"{head} ({'; '.join(notes)})", fontsize=10)
    return fig


def _env_panel(ax, split, x, pred, e: int, fname: str, n_traj: int, shown_dims: int, s0: int, sequence: bool, colour):
    """One environment's trajectories over time (data solid with dots, model dashed), titled
    with the relMSE of exactly the trajectories drawn and the median over all of them."""
    t = np.asarray(split.t[e])
    true, model = x[e, :n_traj, s0:], pred[e, :n_traj, s0:]
    err = shown_rel_mse(model, true)
    lo, hi = float(np.min(x[e, :n_traj])), float(np.max(x[e, :n_traj]))
    every = max(1, len(t) // 30)
    for j in range(n_traj):
        a = 1.0 if j == 0 else 0.5
        for d in range(shown_dims):
            col = colour(d)
            ax.plot(t, x[e, j, :, d], "-", color=col, lw=1.0, marker=".", ms=3, alpha=a, markevery=every)
            ax.plot(t[s0:], pred[e, j, s0:, d], "--", color=col, lw=1.4, alpha=a)
    clipped = _limit_y(ax, lo, hi, pred[e, :n_traj, s0:])
    ename = split.env_names[e] if split.env_names is not None else f"env {e}"
    if split.env_names is not None and ename != f"env {e}":
        ename = f"env {e} ({ename[:20]})"
    trajs = "traj 0" if n_traj == 1 else f"traj 0-{n_traj - 1}"
    extra = f", MSE {_fmt_err(float(np.mean((model - true) ** 2)))}" if sequence else ""
    # the env's typical trajectory beside the drawn one: a table's per-env Eq. 9 can be
    # dominated by a few trajectories through states near 0 that no panel shows
    n_all = x.shape[1]
    med = np.median([shown_rel_mse(pred[e, j : j + 1, s0:], x[e, j : j + 1, s0:]) for j in range(n_all)])
    ax.set_title(
        f"{_wrap(fname, 44, 2)}\n{ename}: relMSE (Eq. 9) {trajs} {_fmt_err(err)}{extra}"
        + (" [model clipped]" if clipped else "")
        + (f"\nmedian over its {n_all} trajectories {_fmt_err(float(med))}" if n_all > n_traj else ""),
        fontsize=8,
    )
    ax.set_xlabel("t", fontsize=8)
    ax.set_ylabel("state x_d", fontsize=8)
    ax.tick_params(labelsize=7)


def _phase_panel(ax, split, x, pred, envs, n_in_fam: int, fname: str, n_traj: int, s0: int, env_cmap):
    """The phase portrait (x0, x1) of a family's shown environments, one colour each."""
    for k, e in enumerate(envs):
        col = env_cmap(0.85 * k / max(1, len(envs) - 1)) if len(envs) > 1 else env_cmap(0.3)
        ename = split.env_names[int(e)] if split.env_names is not None else f"env {int(e)}"
        for j in range(n_traj):
            ax.plot(
                x[e, j, :, 0],
                x[e, j, :, 1],
                "-",
                color=col,
                lw=1.0,
                marker=".",
                ms=3,
                markevery=max(1, x.shape[2] // 30),
                label=ename if j == 0 else None,
            )
            ax.plot(pred[e, j, s0:, 0], pred[e, j, s0:, 1], "--", color=col, lw=1.4)
            ax.plot(x[e, j, 0, 0], x[e, j, 0, 1], "o", color=col, ms=5, mfc="none")
    xs = x[envs, :n_traj]
    _limit_y(ax, float(xs[..., 1].min()), float(xs[..., 1].max()), pred[envs, :n_traj, s0:, 1:2])
    _limit_x(ax, float(xs[..., 0].min()), float(xs[..., 0].max()), pred[envs, :n_traj, s0:, 0:1])
    ax.set_title(f"{_wrap(fname, 40, 2)}\nphase portrait, {len(envs)} of {n_in_fam} envs (o = start)", fontsize=8)
    ax.set_xlabel("x0", fontsize=8)
    ax.set_ylabel("x1", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, title="env (colour)", title_fontsize=6, loc="best")


def _limit(lo: float, hi: float, model: np.ndarray) -> tuple[float, float] | None:
    """Axis range around the data when the model leaves it far behind (diverged or not finite)."""
    span = max(hi - lo, 1e-12)
    m = np.asarray(model)
    finite = m[np.isfinite(m)]
    if finite.size == m.size and (finite.size == 0 or (finite.min() >= lo - span and finite.max() <= hi + span)):
        return None
    return lo - 0.6 * span, hi + 0.6 * span


def _limit_y(ax, lo: float, hi: float, model: np.ndarray) -> bool:
    lim = _limit(lo, hi, model)
    if lim is not None:
        ax.set_ylim(*lim)
    return lim is not None


def _limit_x(ax, lo: float, hi: float, model: np.ndarray) -> bool:
    lim = _limit(lo, hi, model)
    if lim is not None:
        ax.set_xlim(*lim)
    return lim is not None


def plot_predictions(
    split,
    pred: np.ndarray,
    path: str | Path,
    *,
    max_families: int = 10,
    title: str = "",
    sequence: bool = False,
    max_envs_per_family: int = 3,
    max_traj: int = 1,
    max_dims: int = 10,
) -> Path:
    """Per family: a few envs' data (solid, dots) and predicted (dashed) trajectories over time, one
    colour per state dimension, and the phase portrait (x0, x1) when the state has two or more
    dimensions (Figures 10-11). See :func:`predictions_figure`."""
    fig = predictions_figure(
        split,
        pred,
        max_families=max_families,
        max_envs_per_family=max_envs_per_family,
        max_traj=max_traj,
        max_dims=max_dims,
        title=title,
        sequence=sequence,
    )
    return _canvas.save_figure(fig, Path(path))


# ---------------------------------------------------------------------------------------
# a whole run
# ---------------------------------------------------------------------------------------


def adapt_forecast_figure(split, pred: np.ndarray, envs: Sequence[Mapping[str, Any]], max_envs: int = 12):
    """Data (solid) and forecast (dashed) of the first trajectory of up to ``max_envs`` new
    environments spread over all, one panel each, titled with the env's expert, confidence and
    forecast error.

    Args:
        split: the new environments (an :class:`~mixerdsr.EnvData`).
        pred: the forecasts ``[E, N, T, D]``.
        envs: one description per env (``expert``, ``confidence``, ``trusted``, and
            ``forecast_rel_mse`` when known), as ``mixerdsr adapt`` writes them.
        max_envs: panels at most.
    """
    shown = np.unique(np.linspace(0, split.n_envs - 1, min(max_envs, split.n_envs)).round().astype(int))
    cols = min(4, len(shown))
    rows = -(-len(shown) // cols)
    fig = new_figure(3.2 * cols, 2.3 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    from matplotlib.lines import Line2D

    n_dims = min(split.n_dims, 4)
    colour = _categorical(n_dims)
    for ax, e in zip(axes, shown):
        r = envs[e]
        for d in range(n_dims):
            ax.plot(split.t[e], split.x[e, 0, :, d], lw=1.2, color=colour(d))
            ax.plot(split.t[e], pred[e, 0, :, d], ls="--", lw=1.2, color=colour(d))
        ax.set_xlabel("t", fontsize=7)
        ax.set_ylabel("state", fontsize=7)
        err = r.get("forecast_rel_mse")
        flag = "" if r["trusted"] else " (not vouched for)"
        ax.set_title(
            f"env {e}: expert {r['expert']}, conf {r['confidence']:.2f}{flag}"
            + (f"\nforecast relMSE {err:.3g}" if err is not None else ""),
            fontsize=8,
        )
        ax.tick_params(labelsize=7)
    for ax in axes[len(shown) :]:
        ax.set_visible(False)
    which = (
        f"all {split.n_envs} new environments"
        if len(shown) == split.n_envs
        else f"{len(shown)} of {split.n_envs} new environments, spread over all (envs {', '.join(map(str, shown))})"
    )
    fig.suptitle(f"{which}: data (solid) and forecast (dashed), first trajectory", fontsize=9)
    handles = [Line2D([], [], color=colour(d), lw=1.5, label=f"x{d}") for d in range(n_dims)]
    handles += [
        Line2D([], [], color="k", lw=1.2, label="data"),
        Line2D([], [], color="k", ls="--", lw=1.2, label="forecast"),
    ]
    if split.n_dims > n_dims:
        handles.append(Line2D([], [], color="none", label=f"(first {n_dims} of {split.n_dims} dims)"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def plot_adapt_forecast(
    split, pred: np.ndarray, envs: Sequence[Mapping[str, Any]], path: str | Path, max_envs: int = 12
) -> Path:
    """:func:`adapt_forecast_figure` written to ``path`` (PNG)."""
    return _canvas.save_figure(adapt_forecast_figure(split, pred, envs, max_envs), Path(path), dpi=90)
