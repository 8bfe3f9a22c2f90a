"""PCA scatter plots of learned contexts (paper Figures 6 and 7)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ._training import _figure, _save

__all__ = ["plot_context_pca"]


def plot_context_pca(path: str | Path, points: np.ndarray, panels: Sequence[tuple[str, np.ndarray, Sequence[str] | None]],
                     *, markers: np.ndarray | None = None, marker_names: Sequence[str] = ("train", "held-out"),
                     title: str = "") -> Path:
    """One scatter of 2-D points per panel, coloured by that panel's integer labels.

    Args:
        path: output PNG.
        points: ``[N, 2]`` coordinates (e.g. the first two principal components of contexts).
        panels: ``(title, labels [N], label names or None)`` per panel; label ``-1`` is grey.
        markers: optional ``[N]`` 0/1 marker group (e.g. train vs held-out contexts).
        marker_names: legend names of the marker groups.
        title: figure title.
    """
    fig = _figure(4.2 * len(panels), 4.0)
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
                name = (names[lab] if names is not None and 0 <= lab < len(names) else str(lab)) if lab >= 0 else "unknown"
                if markers is not None:
                    name = f"{name} ({marker_names[g]})"
                ax.scatter(points[sel, 0], points[sel, 1], s=10, marker=shapes[g % 2], alpha=0.75,
                           color="0.6" if lab < 0 else f"C{lab % 10}", label=name[:32])
        ax.set_title(ptitle, fontsize=9)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.legend(fontsize=6, markerscale=1.5)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, Path(path))
