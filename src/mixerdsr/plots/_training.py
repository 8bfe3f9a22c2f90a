"""Plots of a training run: loss curves, gate heatmaps, route histogram, predictions.

Every figure is drawn on its own Agg canvas (no pyplot state, no global style change). Each
``plot_*`` function has a ``*_figure`` builder that returns the matplotlib ``Figure`` without
writing it, so that callers and tests can inspect axes, labels and titles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ._report import write_report

__all__ = [
    "gate_heatmaps_figure",
    "losses_figure",
    "plot_gate_heatmaps",
    "plot_losses",
    "plot_predictions",
    "plot_routes",
    "plot_route_history",
    "route_history_figure",
    "plot_run",
    "predictions_figure",
    "routes_figure",
    "shown_rel_mse",
    "write_report",
]

#: The state-norm threshold of Eq. 9 (states with a smaller L2 norm are left out).
STATE_EPS = 1e-6


def _figure(w: float, h: float, *, layout: Literal["constrained", "compressed", "tight"] | None = None):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def family_label(f: int, names: Sequence[str] | None, width: int = 40) -> str:
    """Display name of family ``f``: its name when known, else ``family f`` (``unknown`` for -1)."""
    if f < 0:
        return "unknown family"
    if names is not None and f < len(names) and str(names[f]).strip():
        name = str(names[f]).strip()
        return name if len(name) <= width else name[: width - 1].rstrip() + "…"
    return f"family {f}"


def _wrap(text: str, width: int, max_lines: int) -> str:
    """``text`` on at most ``max_lines`` lines of about ``width`` characters (ellipsis if cut)."""
    import textwrap

    lines = textwrap.wrap(text, width) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(1, width - 1)].rstrip() + "…"
    return "\n".join(lines)


def _block_label(name: str, count: int, n_lines: int) -> str:
    """Family name and env count on ``n_lines`` lines (the count never cut)."""
    if n_lines <= 1:
        return f"{_wrap(name, 16, 1)} ({count})"
    return f"{_wrap(name, 22, n_lines - 1)}\n({count} envs)"


def _spread(idx: np.ndarray, k: int) -> np.ndarray:
    """Up to ``k`` entries of ``idx`` evenly spread from its first to its last."""
    if k <= 0 or len(idx) == 0:
        return idx[:0]
    pos = np.unique(np.linspace(0, len(idx) - 1, min(k, len(idx))).round().astype(int))
    return idx[pos]


def shown_rel_mse(pred: np.ndarray, true: np.ndarray, eps: float = STATE_EPS) -> float:
    """Relative MSE (paper Eq. 9) of the given states, ``[..., T, D]``, in NumPy.

    ``mean over states s of ||pred_s - true_s||^2 / ||true_s||^2`` over the states with
    ``||true_s|| > eps`` (the others are left out, as in :func:`mixerdsr.metrics.rel_mse`).
    ``NaN`` when no state is valid; ``inf`` or ``NaN`` when a prediction is not finite.
    """
    pred = np.asarray(pred, np.float64)
    true = np.asarray(true, np.float64)
    num = np.sum((pred - true) ** 2, axis=-1)
    den = np.sum(true**2, axis=-1)
    valid = np.sqrt(den) > eps
    if not valid.any():
        return float("nan")
    return float(np.mean(num[valid] / den[valid]))


def _fmt_err(v: float) -> str:
    return f"{v:.3g}" if np.isfinite(v) else "not finite (failed solve?)"


# ---------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------
def losses_figure(history: Sequence[Mapping[str, Any]], *, best_step: int | None = None):
    """Training losses per phase (left) and validation relMSE (right) against outer step."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(10, 3.6, layout="constrained")
    ax1, ax2 = fig.subplots(1, 2, sharex=True)
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    steps = np.array([h.get("step", i) for i, h in enumerate(history)], float)
    drawn: list[np.ndarray] = []
    for key, label in (("weight_loss", "weights phase"), ("ctx_loss", "contexts phase")):
        v = np.array([np.nan if h.get(key) is None else h[key] for h in history], float)
        if np.isfinite(v).any():
            drawn.append(v[np.isfinite(v)])
            ax1.plot(steps, v, label=label, lw=1.2, marker="." if len(steps) < 30 else None)
    any_loss = bool(drawn)
    if any_loss and min(float(v.min()) for v in drawn) > 0:
        ax1.set_yscale("log")
    ax1.set_xlabel("outer step")
    ax1.set_ylabel("training loss (Eq. 7, mean per inner step)")
    ax1.set_title("training loss", fontsize=10)
    if any_loss:
        ax1.legend(fontsize=8, title="phase", title_fontsize=8)
    else:
        ax1.text(0.5, 0.5, "no losses recorded", ha="center", va="center", transform=ax1.transAxes)
    vs = [(h.get("step", i), h["val_rel_mse"]) for i, h in enumerate(history) if h.get("val_rel_mse") is not None]
    if vs:
        s, v = (np.asarray(a, float) for a in zip(*vs))
        ax2.plot(s, v, "o-", ms=3, color="C2", label="validation relMSE")
        if np.all(v[np.isfinite(v)] > 0) and np.isfinite(v).any():
            ax2.set_yscale("log")
        if best_step is not None and best_step in s:
            bv = v[list(s).index(best_step)]
            ax2.plot([best_step], [bv], "*", ms=11, color="C3", label=f"selected model (step {best_step})")
        ax2.legend(fontsize=8)
    else:
        ax2.text(0.5, 0.5, "no validation recorded", ha="center", va="center", transform=ax2.transAxes)
    ax2.set_xlabel("outer step")
    ax2.tick_params(labelbottom=True)
    ax2.set_ylabel("validation relMSE (Eq. 9)")
    ax2.set_title("validation relative MSE (lower is better)", fontsize=10)
    return fig


def plot_losses(history: Sequence[Mapping[str, Any]], path: str | Path, *, best_step: int | None = None) -> Path:
    """Training losses (context and weight phases) and validation relMSE against outer step."""
    return _save(losses_figure(history, best_step=best_step), Path(path))


# ---------------------------------------------------------------------------------------
# gate heatmaps
# ---------------------------------------------------------------------------------------
def _family_order(family: np.ndarray | None, n_envs: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Row order that groups envs by family (identity when already grouped), and the reordered labels."""
    if family is None or len(family) != n_envs:
        return np.arange(n_envs), None
    family = np.asarray(family)
    runs = 1 + int(np.count_nonzero(np.diff(family)))
    if runs == len(np.unique(family)):
        return np.arange(n_envs), family
    order = np.argsort(family, kind="stable")
    return order, family[order]


def gate_heatmaps_figure(
    history: Sequence[Mapping[str, Any]],
    family: np.ndarray | None = None,
    family_names: Sequence[str] | None = None,
    *,
    max_snapshots: int = 6,
):
    """Gate values (softmax of the logits), envs x experts, at the snapshot steps (Figure 8).

    Rows are grouped by family (white lines between families, family names as y tick labels
    in the middle of each block). ``None`` when the history holds no gate snapshot.
    """
    snaps = [
        (h.get("step", i), np.asarray(h["gate_probs"], float))
        for i, h in enumerate(history)
        if h.get("gate_probs") is not None
    ]
    if not snaps:
        return None
    if len(snaps) > max_snapshots:
        snaps = [snaps[i] for i in _spread(np.arange(len(snaps)), max_snapshots)]
    unchanged = all(np.allclose(g, snaps[0][1], atol=0.01) for _, g in snaps[1:])
    if unchanged:  # four identical panels would say nothing more than one
        snaps = [snaps[-1]]
    n_envs, n_exp = snaps[0][1].shape
    order, fam = _family_order(family, n_envs)
    fig = _figure(2.4 * len(snaps) + 2.6, min(10, 2.4 + 0.05 * n_envs), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(snaps), sharey=True))
    im = None
    for ax, (s, g) in zip(axes, snaps):
        im = ax.imshow(g[order], aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"outer step {s}" + (" (the same at every snapshot)" if unchanged else ""), fontsize=9)
        ax.set_xlabel("expert")
        ax.set_xticks(range(n_exp))
        if n_exp > 12:
            ax.tick_params(axis="x", labelsize=6)
        if fam is not None:
            for e in np.flatnonzero(np.diff(fam)) + 0.5:
                ax.axhline(e, color="w", lw=0.8)
    if fam is not None:
        starts = np.r_[0, np.flatnonzero(np.diff(fam)) + 1]
        ends = np.r_[starts[1:], len(fam)]
        mids = (starts + ends - 1) / 2.0
        block_in = fig.get_figheight() * 0.75 * min(ends - starts) / len(fam)  # smallest block, inches
        n_lines = int(np.clip(block_in / 0.14, 1, 4))
        labels = [
            _block_label(family_label(int(fam[a]), family_names, 60), int(b - a), n_lines) for a, b in zip(starts, ends)
        ]
        axes[0].set_yticks(mids, labels, fontsize=7 if len(labels) <= 12 else 5)
        axes[0].set_ylabel("environments, by family (count)")
    else:
        axes[0].set_ylabel("environment")
    cb = fig.colorbar(im, ax=list(axes), fraction=0.04, pad=0.02)
    cb.set_label("gate value (softmax probability)")
    fig.suptitle(
        "Gate values per environment and expert during training"
        + ("\n(unchanged over training: one panel)" if unchanged else ""),
        fontsize=10,
    )
    return fig


def plot_gate_heatmaps(
    history: Sequence[Mapping[str, Any]],
    path: str | Path,
    family: np.ndarray | None = None,
    family_names: Sequence[str] | None = None,
) -> Path | None:
    """Gate values (softmax of the logits), envs x experts, at the snapshot steps (Figure 8)."""
    fig = gate_heatmaps_figure(history, family, family_names)
    if fig is None:
        return None
    return _save(fig, Path(path))


# ---------------------------------------------------------------------------------------
# routes
# ---------------------------------------------------------------------------------------
def routes_figure(routes: np.ndarray, family: np.ndarray, n_experts: int, family_names: Sequence[str] | None = None):
    """Histogram of the training environments per expert, stacked by family (Figure 5)."""
    routes = np.asarray(routes, int)
    family = np.asarray(family, int)
    fams = np.unique(family)
    fig = _figure(max(6.0, 0.5 * n_experts + 4.5), 3.8, layout="constrained")
    ax = fig.subplots()
    bottom = np.zeros(n_experts)
    cmap = _categorical(len(fams))
    for k, f in enumerate(fams):
        c = np.bincount(routes[family == f], minlength=n_experts)[:n_experts]
        ax.bar(
            np.arange(n_experts),
            c,
            bottom=bottom,
            color=cmap(k),
            label=_wrap(family_label(int(f), family_names, 60), 26, 2),
        )
        bottom += c
    ax.set_xlabel("expert")
    ax.set_ylabel("training environments routed")
    ax.set_xticks(range(n_experts))
    ax.set_title(
        "Training envs per expert, by family\n(one colour per bar = each expert serves one family)", fontsize=9
    )
    if len(fams) <= 24:
        ax.legend(
            fontsize=7, title="family", title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0
        )
    return fig


def _expert_colours(n: int):
    """Colours of experts: a sequential palette, so that they are not read as the families'
    categorical colours of the other figures."""
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return lambda k: cmap(0.1 + 0.8 * k / max(n - 1, 1))


def _categorical(n: int):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return lambda k: cmap(k % cmap.N)


def plot_routes(
    routes: np.ndarray, family: np.ndarray, n_experts: int, path: str | Path, family_names: Sequence[str] | None = None
) -> Path:
    """Histogram of the environments per expert, stacked by family (Figure 5)."""
    return _save(routes_figure(routes, family, n_experts, family_names), Path(path))


def route_history_figure(
    history: Sequence[Mapping[str, Any]], family: np.ndarray | None = None, family_names: Sequence[str] | None = None
):
    """The expert of every training env at every outer step (envs x steps, coloured by expert),
    envs grouped by family; purity over training beneath when recorded. ``None`` when the history
    holds no routes (runs of older versions) or there is one expert."""
    steps = [h for h in history if h.get("route") is not None]
    if not steps:
        return None
    r = np.asarray([h["route"] for h in steps], int).T  # [E, S]
    n_exp = max(len(steps[-1].get("routes") or []), int(r.max()) + 1)
    if n_exp <= 1:
        return None
    from matplotlib.colors import ListedColormap

    order, fam = _family_order(family, r.shape[0])
    cmap = _expert_colours(n_exp)
    purity = [h.get("purity") for h in steps]
    has_p = any(p is not None for p in purity)
    fig = _figure(8.0, min(10, 3.2 + 0.04 * r.shape[0]) + (1.3 if has_p else 0), layout="constrained")
    axes = fig.subplots(2 if has_p else 1, 1, sharex=True, height_ratios=[4, 1] if has_p else None, squeeze=False)[:, 0]
    x = [h["step"] for h in steps]
    im = axes[0].imshow(
        r[order],
        aspect="auto",
        cmap=ListedColormap([cmap(k) for k in range(n_exp)]),
        vmin=-0.5,
        vmax=n_exp - 0.5,
        interpolation="nearest",
        extent=(x[0] - 0.5, x[-1] + 0.5, r.shape[0] - 0.5, -0.5),
    )
    if fam is not None:
        for e in np.flatnonzero(np.diff(fam)) + 0.5:
            axes[0].axhline(e, color="k", lw=0.6)
        starts = np.r_[0, np.flatnonzero(np.diff(fam)) + 1]
        ends = np.r_[starts[1:], len(fam)]
        block_in = fig.get_figheight() * 0.6 * min(ends - starts) / len(fam)  # smallest block, inches
        n_lines = int(np.clip(block_in / 0.14, 1, 3))
        labels = [_wrap(family_label(int(fam[a]), family_names, 80), 22, n_lines) for a in starts]
        axes[0].set_yticks((starts + ends - 1) / 2.0, labels, fontsize=7 if len(labels) <= 12 else 5)
        axes[0].set_ylabel("environments, by family")
    else:
        axes[0].set_ylabel("environment")
    cb = fig.colorbar(im, ax=axes[0], ticks=range(n_exp), fraction=0.04, pad=0.02)
    cb.set_label("expert")
    axes[0].set_title(
        "Expert of every training env over training (colour = expert)\n"
        "(one colour per family block = the family has an expert of its own)",
        fontsize=10,
    )
    if has_p:
        axes[1].plot(x, [np.nan if p is None else p for p in purity], color="k", lw=1.2)
        axes[1].set_ylim(0, 1.05)
        axes[1].set_ylabel("purity")
        axes[1].grid(alpha=0.3)
    for ax in axes:
        ax.set_xlabel("outer step")
    return fig


def plot_route_history(
    history: Sequence[Mapping[str, Any]],
    path: str | Path,
    family: np.ndarray | None = None,
    family_names: Sequence[str] | None = None,
) -> Path | None:
    """:func:`route_history_figure` written to ``path`` (None when there is nothing to show)."""
    fig = route_history_figure(history, family, family_names)
    if fig is None:
        return None
    return _save(fig, Path(path))


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
    fig = _figure(3.3 * ncols + 0.4, 2.5 * len(rows) + 1.3, layout="constrained")
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    dim_colour = _categorical(shown_dims)
    from matplotlib import colormaps

    env_cmap = colormaps["viridis"]
    for r, (f, envs, n_in_fam) in enumerate(rows):
        fname = family_label(f, split.family_names, 120)
        for c in range(ncols_env):
            ax = axes[r, c]
            if c >= len(envs):
                ax.set_axis_off()
                continue
            e = int(envs[c])
            t = np.asarray(split.t[e])
            true, model = x[e, :n_traj, s0:], pred[e, :n_traj, s0:]
            err = shown_rel_mse(model, true)
            lo, hi = float(np.min(x[e, :n_traj])), float(np.max(x[e, :n_traj]))
            every = max(1, len(t) // 30)
            for j in range(n_traj):
                a = 1.0 if j == 0 else 0.5
                for d in range(shown_dims):
                    col = dim_colour(d)
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
        if phase:
            ax = axes[r, -1]
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
            ax.set_title(
                f"{_wrap(fname, 40, 2)}\nphase portrait, {len(envs)} of {n_in_fam} envs (o = start)", fontsize=8
            )
            ax.set_xlabel("x0", fontsize=8)
            ax.set_ylabel("x1", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=6, title="env (colour)", title_fontsize=6, loc="best")
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
    return _save(fig, Path(path))


# ---------------------------------------------------------------------------------------
# a whole run
# ---------------------------------------------------------------------------------------
def plot_run(
    out: Path, history, splits, preds: Mapping[str, np.ndarray], metrics: Mapping[str, Any], *, scored_from: int = 0
) -> list[tuple[str, str]]:
    """All plots of a run; returns ``[(caption, file name), ...]``.

    ``scored_from`` is the experts' first scored time step (``expert_type.scored_from``: 1 for
    sequence experts, whose step 0 is given)."""
    out = Path(out)
    figs: list[tuple[str, str]] = []
    cfg = metrics.get("config") or {}
    plot_losses(history, out / "loss.png", best_step=metrics.get("best_step"))
    figs.append(
        ("Training loss per phase and validation relative MSE (Eq. 9); the star marks the selected model", "loss.png")
    )
    tr = splits["train"]
    if plot_gate_heatmaps(history, out / "gate_heatmaps.png", tr.family, tr.family_names) is not None:
        figs.append(("Gate values (training envs x experts, grouped by family) during training", "gate_heatmaps.png"))
    routing = metrics.get("routing") or {}
    if routing.get("experts") is not None:
        r = np.asarray(routing["experts"], int)
        n_exp = int((cfg.get("model") or {}).get("num_experts") or (r.max() + 1 if r.size else 1))
        plot_routes(r, tr.family, n_exp, out / "routes.png", tr.family_names)
        figs.append(("Training environments per expert, by family", "routes.png"))
    if plot_route_history(history, out / "route_history.png", tr.family, tr.family_names) is not None:
        figs.append(("Expert of every training environment over training, and routing purity", "route_history.png"))
    seq = scored_from > 0
    for name, label in (
        ("test", "test (training envs, new initial conditions)"),
        ("adapt_test", "adaptation (new envs)"),
    ):
        if name not in preds:
            continue
        sp = splits.get(name)
        if sp is None and name == "adapt_test":
            sp = splits.get("adapt_train")
        if sp is None:
            continue
        fn = f"{name}_trajectories.png"
        plot_predictions(sp, preds[name], out / fn, title=f"{label}: data vs model", sequence=seq)
        figs.append(
            (
                (
                    f"{label}: data (solid, dots) and model (dashed) per family; "
                    "panel titles give the relMSE (Eq. 9) of the trajectories shown"
                ),
                fn,
            )
        )
    return figs
