"""What every figure shares: an Agg canvas without pyplot, writing PNGs, family labels,
colours, and the relMSE shown in panel titles."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = ["STATE_EPS", "new_figure", "save_figure", "family_label", "shown_rel_mse"]

#: The state-norm threshold of Eq. 9 (states with a smaller L2 norm are left out).
STATE_EPS = 1e-6


def new_figure(w: float, h: float, *, layout: Literal["constrained", "compressed", "tight"] | None = None):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    """An empty figure of ``w`` x ``h`` inches on its own Agg canvas (no pyplot state)."""
    fig = Figure(figsize=(w, h), dpi=100, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: Path, dpi: float | None = None) -> Path:
    """Write ``fig`` as a PNG at ``path`` (its folders made), laid out tightly unless it has
    a layout engine. Returns ``path``."""
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi if dpi is not None else "figure")
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
