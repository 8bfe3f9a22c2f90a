"""PCA scatter plots of learned contexts (paper Figures 6 and 7)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import _canvas
from ._canvas import new_figure

__all__ = ["context_pca_figure", "contexts_by_expert_figure", "plot_context_pca"]


def plot_context_pca(
    path: str | Path,
    points: np.ndarray,
    panels: Sequence[tuple[str, np.ndarray, Sequence[str] | None]],
    *,
    markers: np.ndarray | None = None,
    marker_names: Sequence[str] = ("train", "held-out"),
    title: str = "",
) -> Path:
    """One scatter of 2-D points per panel, coloured by that panel's integer labels.

    Args:
        path: output PNG.
        points: ``[N, 2]`` coordinates (e.g. the first two principal components of contexts).
        panels: ``(title, labels [N], label names or None)`` per panel; label ``-1`` is grey.
        markers: optional ``[N]`` 0/1 marker group (e.g. train vs held-out contexts).
        marker_names: legend names of the marker groups.
        title: figure title.
    """
    fig = context_pca_figure(points, panels, markers=markers, marker_names=marker_names, title=title)
    return _canvas.save_figure(fig, Path(path))


def context_pca_figure(
    points: np.ndarray,
    panels: Sequence[tuple[str, np.ndarray, Sequence[str] | None]],
    *,
    markers: np.ndarray | None = None,
    marker_names: Sequence[str] = ("train", "held-out"),
    title: str = "",
):
    """The figure of :func:`plot_context_pca`, not written (legends below each panel)."""
    fig = new_figure(4.4 * len(panels), 5.0, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    groups = np.zeros(len(points), int) if markers is None else np.asarray(markers, int)
    shapes = ("o", "^")
    for ax, (ptitle, labels, names) in zip(axes, panels):
        labels = np.asarray(labels)
        for lab in np.unique(labels):
            for g in np.unique(groups):
                sel = (labels == lab) & (groups == g)
                if not sel.any():
                    continue
                name = (
                    (names[lab] if names is not None and 0 <= lab < len(names) else str(lab)) if lab >= 0 else "unknown"
                )
                if markers is not None:
                    name = f"{name} ({marker_names[g]})"
                ax.scatter(
                    points[sel, 0],
                    points[sel, 1],
                    s=10,
                    marker=shapes[g % 2],
                    alpha=0.75,
                    color="0.6" if lab < 0 else f"C{lab % 10}",
                    label=name[:32],
                )
        ax.set_title(ptitle, fontsize=9)
        ax.set_xlabel("PC 1 of the contexts")
        ax.set_ylabel("PC 2 of the contexts")
        n_entries = len(ax.get_legend_handles_labels()[1])
        if n_entries:
            ax.legend(
                fontsize=6,
                markerscale=1.5,
                loc="upper center",
                bbox_to_anchor=(0.5, -0.14),
                ncols=min(3, n_entries),
                frameon=False,
            )
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def contexts_by_expert_figure(
    train: np.ndarray,
    train_routes: np.ndarray,
    train_family: np.ndarray,
    new: np.ndarray,
    new_routes: np.ndarray,
    new_family: np.ndarray,
    slices: Sequence[slice],
    family_names: Sequence[str] | None = None,
):
    """One panel per expert: the part of the context that expert reads (its slice), for the
    training environments routed to it (circles) and the new ones (triangles), projected on the
    first two principal components of its training environments' slices; colour = family.

    With split contexts each expert reads its own slice, so one projection of whole contexts
    shows two or three experts' groups and piles the rest at the origin; per expert, every
    group is visible at its own scale.
    """
    from matplotlib.lines import Line2D

    from ._canvas import _categorical, _wrap, family_label

    experts = [m for m in range(len(slices)) if np.any(train_routes == m) or np.any(new_routes == m)]
    cols = min(5, max(1, len(experts)))
    rows = -(-len(experts) // cols)
    fig = new_figure(3.0 * cols + 0.5, 2.7 * rows + 1.4, layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    fams = np.unique(np.r_[train_family, new_family])
    colour = _categorical(len(fams))
    index = {int(f): k for k, f in enumerate(fams)}
    for ax, m in zip(axes, experts):
        tr, nw = train[train_routes == m][:, slices[m]], new[new_routes == m][:, slices[m]]
        ref = tr if len(tr) > 1 else np.r_[tr, nw]
        mu = ref.mean(0) if len(ref) else np.zeros(train.shape[1])[slices[m]]
        _, _, vt = np.linalg.svd(ref - mu, full_matrices=False) if len(ref) > 1 else (None, None, np.eye(len(mu)))
        proj = vt[:2].T if vt.shape[0] >= 2 else np.c_[vt[:1].T, np.zeros((vt.shape[1], 1))]
        for pts, fam, marker, size in (
            (tr, train_family[train_routes == m], "o", 14),
            (nw, new_family[new_routes == m], "^", 40),
        ):
            if len(pts):
                xy = (pts - mu) @ proj
                cols_ = ["0.6" if f < 0 else colour(index[int(f)]) for f in fam]
                ax.scatter(
                    xy[:, 0],
                    xy[:, 1],
                    c=cols_,
                    marker=marker,
                    s=size,
                    edgecolors="k" if marker == "^" else "none",
                    linewidths=0.5,
                )
        ax.set_title(f"expert {m}: {len(tr)} training, {len(nw)} new", fontsize=8)
        ax.set_xlabel("PC 1 of its slice", fontsize=7)
        ax.set_ylabel("PC 2", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes[len(experts) :]:
        ax.set_visible(False)
    handles = [
        Line2D(
            [],
            [],
            ls="",
            marker="s",
            color="0.6" if f < 0 else colour(index[int(f)]),
            label=_wrap(family_label(int(f), family_names, 80), 28, 2),
        )
        for f in fams
    ]
    handles += [
        Line2D([], [], ls="", marker="o", color="k", label="training env"),
        Line2D([], [], ls="", marker="^", color="k", mfc="w", label="new env"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(5, len(handles)), fontsize=6, frameon=False)
    fig.suptitle("contexts per expert: the slice each expert reads, new environments by their route", fontsize=9)
    return fig
