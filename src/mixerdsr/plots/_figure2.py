"""Figure 2 of the paper (training curves and test error of the ODEBench-2 variants)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._canvas import new_figure, save_figure

__all__ = ["figure2_figure", "plot_figure2"]

_COLOURS = {"mixer-1": "tab:blue", "mixer-M-grad": "tab:orange", "mixer-M": "tab:green", "mixer-auto": "tab:purple"}


def figure2_figure(records: Sequence[Mapping[str, Any]], variants: Mapping[str, str], title: str):
    """Figure 2 from harness records (one per cell: ``backbone``, ``variant``, ``curve`` with
    ``val_mse`` entries, ``metrics.test_traj_rel_l2``): validation MSE over training (mean over
    seeds, one panel per backbone, one line per variant) above the test relative L2 error per
    variant. ``variants`` maps each variant to its label, in the order shown."""
    bbs = list(dict.fromkeys(r["backbone"] for r in records))
    fig = new_figure(4.2 * len(bbs), 6.5, layout="tight")
    axes = fig.subplots(2, len(bbs), squeeze=False)
    for j, b in enumerate(bbs):
        ax, bx = axes[0, j], axes[1, j]
        errs, labels, colours = [], [], []
        for v, label in variants.items():
            rs = [r for r in records if r["backbone"] == b and r["variant"] == v]
            if not rs:
                continue
            curves: dict[int, list[float]] = {}
            for r in rs:
                for h in r["curve"]:
                    if "val_mse" in h:
                        curves.setdefault(h["step"], []).append(h["val_mse"])
            steps = sorted(curves)
            if steps:
                ax.plot(steps, [np.mean(curves[s]) for s in steps], color=_COLOURS.get(v), label=label)
            errs.append([r["metrics"]["test_traj_rel_l2"] for r in rs])
            labels.append(label)
            colours.append(_COLOURS.get(v))
        ax.set_yscale("log")
        ax.set_title(b.upper())
        ax.set_xlabel("outer step")
        ax.set_ylabel("validation MSE")
        ax.legend(fontsize=8)
        pos = np.arange(len(errs))
        bx.bar(pos, [np.mean(e) for e in errs], yerr=[np.std(e) for e in errs], color=colours)
        bx.set_xticks(pos, labels, rotation=15, fontsize=8)
        bx.set_yscale("log")
        bx.set_ylabel("test relative L2 error")
    fig.suptitle(title)
    return fig


def plot_figure2(
    records: Sequence[Mapping[str, Any]], variants: Mapping[str, str], title: str, path: str | Path
) -> Path:
    """:func:`figure2_figure` written to ``path`` (PNG)."""
    return save_figure(figure2_figure(records, variants, title), Path(path), dpi=110)
