"""Plots of a training run: loss curves, gate heatmaps, routes and their history; ``plot_run``
draws them all with the predictions (``_predictions``).

Every figure is drawn on its own Agg canvas (no pyplot state, no global style change). Each
``plot_*`` function has a ``*_figure`` builder that returns the matplotlib ``Figure`` without
writing it, so that callers and tests can inspect axes, labels and titles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import _canvas
from ._canvas import _block_label, _categorical, _expert_colours, _spread, _wrap, family_label, new_figure
from ._predictions import plot_predictions

__all__ = [
    "gate_heatmaps_figure",
    "losses_figure",
    "plot_gate_heatmaps",
    "plot_losses",
    "plot_routes",
    "plot_route_history",
    "route_history_figure",
    "plot_run",
    "routes_figure",
]


# ---------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------
#: validation score (``train.select_on``; ``val_<score>`` in a history line) -> its name
VALIDATION_SCORES = {"rel_mse": "relMSE (Eq. 9)", "mse": "MSE", "traj_rel_l2": "traj_rel_l2", "d_stsp": "D_stsp"}


def losses_figure(
    history: Sequence[Mapping[str, Any]], *, best_step: int | None = None, select_on: str = "traj_rel_l2"
):
    """Training losses per phase (left) and the validation score ``select_on`` (right: a key
    of :data:`VALIDATION_SCORES`, ``train.select_on``) against outer step."""
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(10, 3.6, layout="constrained")
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
    key = f"val_{select_on}"
    name = VALIDATION_SCORES[select_on]
    vs = [(h.get("step", i), h[key]) for i, h in enumerate(history) if h.get(key) is not None]
    if vs:
        s, v = (np.asarray(a, float) for a in zip(*vs))
        ax2.plot(s, v, "o-", ms=3, color="C2", label=f"validation {name}")
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
    ax2.set_ylabel(f"validation {name}")
    ax2.set_title(f"validation {name}, the model-selection score (lower is better)", fontsize=10)
    return fig


def plot_losses(
    history: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    best_step: int | None = None,
    select_on: str = "traj_rel_l2",
) -> Path:
    """Training losses (context and weight phases) and the validation score that selects the
    model (``train.select_on``) against outer step."""
    return _canvas.save_figure(losses_figure(history, best_step=best_step, select_on=select_on), Path(path))


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
    fig = new_figure(2.4 * len(snaps) + 2.6, min(10, 2.4 + 0.05 * n_envs), layout="constrained")
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
    return _canvas.save_figure(fig, Path(path))


# ---------------------------------------------------------------------------------------
# routes
# ---------------------------------------------------------------------------------------
def routes_figure(routes: np.ndarray, family: np.ndarray, n_experts: int, family_names: Sequence[str] | None = None):
    """Histogram of the training environments per expert, stacked by family (Figure 5)."""
    routes = np.asarray(routes, int)
    family = np.asarray(family, int)
    fams = np.unique(family)
    fig = new_figure(max(6.0, 0.5 * n_experts + 4.5), 3.8, layout="constrained")
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


def plot_routes(
    routes: np.ndarray, family: np.ndarray, n_experts: int, path: str | Path, family_names: Sequence[str] | None = None
) -> Path:
    """Histogram of the environments per expert, stacked by family (Figure 5)."""
    return _canvas.save_figure(routes_figure(routes, family, n_experts, family_names), Path(path))


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
    fig = new_figure(8.0, min(10, 3.2 + 0.04 * r.shape[0]) + (1.3 if has_p else 0), layout="constrained")
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
    return _canvas.save_figure(fig, Path(path))


def plot_run(
    out: Path, history, splits, preds: Mapping[str, np.ndarray], metrics: Mapping[str, Any], *, scored_from: int = 0
) -> list[tuple[str, str]]:
    """All plots of a run; returns ``[(caption, file name), ...]``.

    ``scored_from`` is the experts' first scored time step (``expert_type.scored_from``: 1 for
    sequence experts, whose step 0 is given)."""
    out = Path(out)
    figs: list[tuple[str, str]] = []
    cfg = metrics.get("config") or {}
    select_on = (cfg.get("train") or {}).get("select_on", "rel_mse")  # a run from before the setting: Eq. 9
    plot_losses(history, out / "loss.png", best_step=metrics.get("best_step"), select_on=select_on)
    figs.append(
        (
            f"Training loss per phase and validation {VALIDATION_SCORES[select_on]}, the model-selection score; "
            "the star marks the selected model",
            "loss.png",
        )
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
