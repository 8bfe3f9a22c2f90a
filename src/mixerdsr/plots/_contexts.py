"""PCA scatter plots of learned contexts (paper Figures 6 and 7)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._training import _figure, _save

__all__ = ["context_pca_figure", "plot_context_pca"]


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
    return _save(fig, Path(path))


def context_pca_figure(
    points: np.ndarray,
    panels: Sequence[tuple[str, np.ndarray, Sequence[str] | None]],
    *,
    markers: np.ndarray | None = None,
    marker_names: Sequence[str] = ("train", "held-out"),
    title: str = "",
):
    """The figure of :func:`plot_context_pca`, not written (legends below each panel)."""
    fig = _figure(4.4 * len(panels), 5.0, layout="constrained")
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
