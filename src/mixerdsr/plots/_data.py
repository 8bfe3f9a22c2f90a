"""Overview plots of a multi-environment dataset."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..data._envdata import EnvData

__all__ = ["dataset_overview_figure", "plot_dataset_overview"]


def _pick_split(data: EnvData | Mapping[str, EnvData], split: str | None) -> tuple[str, EnvData]:
    if isinstance(data, EnvData):
        return (split or data.split), data
    if not data:
        raise ValueError("no splits to plot")
    if split is None:
        split = "train" if "train" in data else next(iter(data))
    if split not in data:
        raise ValueError(f"split {split!r} not found (have {list(data)})")
    return split, data[split]


def _choose(env_idx: np.ndarray, n_traj: int, max_traj: int) -> list[tuple[int, int]]:
    """Up to ``max_traj`` (env, trajectory) pairs spread over the envs of one family."""
    if len(env_idx) == 0 or max_traj <= 0:
        return []
    n_envs = min(len(env_idx), max_traj)
    envs = env_idx[np.unique(np.linspace(0, len(env_idx) - 1, n_envs).round().astype(int))]
    out: list[tuple[int, int]] = []
    j = 0
    while len(out) < max_traj and j < n_traj:
        for e in envs:
            if len(out) < max_traj:
                out.append((int(e), j))
        j += 1
    return out


def plot_dataset_overview(
    data: EnvData | Mapping[str, EnvData],
    path: str | os.PathLike,
    *,
    max_traj: int = 4,
    max_families: int = 12,
    split: str | None = None,
    dpi: int = 100,
) -> Path:
    """Write a PNG with one row per family: time series (left) and phase portrait (right).

    Args:
        data: one :class:`EnvData` or a ``dict`` of splits (``split`` picks one; default ``train``).
        path: output image path (format from the suffix, e.g. ``.png``).
        max_traj: trajectories drawn per family (spread over its environments).
        max_families: at most this many families (rows) are drawn, spread over all families.
        split: which split of a ``dict`` to draw.
        dpi: resolution.

    Returns:
        The path written. Uses a private Agg canvas: no pyplot state, no global style change.
    """
    fig = dataset_overview_figure(data, max_traj=max_traj, max_families=max_families, split=split, dpi=dpi)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def dataset_overview_figure(
    data: EnvData | Mapping[str, EnvData],
    *,
    max_traj: int = 4,
    max_families: int = 12,
    split: str | None = None,
    dpi: int = 100,
):
    """The figure of :func:`plot_dataset_overview`, not written.

    Families beyond ``max_families`` are skipped evenly (the first and last are always drawn).
    Time series: one colour per state dimension (legend at the bottom), fainter lines for the
    later picks. Phase portraits: one colour per (env, trajectory), a dot at the start.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    name, d = _pick_split(data, split)
    if max_families < 1:
        raise ValueError(f"max_families must be at least 1, got {max_families}")
    all_fams = np.unique(d.family)
    keep = np.unique(np.linspace(0, len(all_fams) - 1, min(max_families, len(all_fams))).round().astype(int))
    fams = [int(f) for f in all_fams[keep]]
    n_dims = d.n_dims
    ncols = 2 if n_dims >= 2 else 1
    fig = Figure(figsize=(5.6 * ncols, 2.5 * len(fams) + 1.0), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(fams), ncols, squeeze=False)
    cmap = colormaps["tab10"]
    for row, f in enumerate(fams):
        env_idx = np.flatnonzero(d.family == f)
        picks = _choose(env_idx, d.n_trajectories, max_traj)
        if f < 0:
            title = "unknown family"
        elif d.family_names is not None and f < len(d.family_names):
            title = f"{f}: {d.family_names[f]}"
        else:
            title = f"family {f}"
        ax_t = axes[row, 0]
        for k, (e, j) in enumerate(picks):
            for dim in range(n_dims):
                ax_t.plot(d.t[e], d.x[e, j, :, dim], color=cmap(dim % 10), alpha=0.35 + 0.65 / (k + 1), lw=1.0)
        n_envs_drawn = len({int(e) for e, _ in picks})
        per_env = len(picks) // max(n_envs_drawn, 1)
        drawn = f"{n_envs_drawn} of {len(env_idx)} envs drawn" + (
            ", 1 trajectory each" if per_env == 1 else f", {len(picks)} trajectories"
        )
        ax_t.set_title(f"{title} ({drawn})", fontsize=9)
        ax_t.set_xlabel("t", fontsize=8)
        ax_t.set_ylabel("state x_d", fontsize=8)
        ax_t.tick_params(labelsize=7)
        if ncols == 2:
            ax_p = axes[row, 1]
            for k, (e, j) in enumerate(picks):
                ax_p.plot(
                    d.x[e, j, :, 0],
                    d.x[e, j, :, 1],
                    color=cmap(k % 10),
                    lw=1.0,
                    label=(d.env_names[e] if d.env_names is not None else f"env {e}") + f" / traj {j}",
                )
                ax_p.plot(d.x[e, j, 0, 0], d.x[e, j, 0, 1], "o", color=cmap(k % 10), ms=3)
            ax_p.set_xlabel("x0", fontsize=8)
            ax_p.set_ylabel("x1", fontsize=8)
            ax_p.set_title("phase portrait (x0, x1), dot = start", fontsize=9)
            ax_p.tick_params(labelsize=7)
            if picks:
                ax_p.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    if n_dims <= 10:
        handles = [Line2D([], [], color=cmap(dim % 10), lw=2, label=f"x{dim}") for dim in range(n_dims)]
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncols=min(n_dims, 10),
            fontsize=8,
            frameon=False,
            title="state dimension (time-series panels)",
            title_fontsize=8,
        )
    shown = "" if len(fams) == len(all_fams) else f"; {len(fams)} of {len(all_fams)} families drawn"
    fig.suptitle(f"{name}: x {tuple(d.x.shape)} [envs, trajectories, times, dims]{shown}", fontsize=10)
    return fig
