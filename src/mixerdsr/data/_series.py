"""Series datasets: the conventions and helpers shared by the Epilepsy2 (:mod:`._epilepsy2`) and
Synthetic Control (:mod:`._sccts`) loaders.

In these datasets every series is its own **environment** with exactly one **trajectory**:
``x`` has shape ``[series, 1, length, dims]`` and ``t = arange(length)`` (float) for every env.
Class labels are stored as the ``family`` of each environment; they are metadata only (the
models are trained without them).

Standardisation (``standardize=True``) is *per time column*: every column ``x[:, 0, t, d]`` is
shifted by its mean over series and divided by its (population, ``ddof=0``) standard deviation,
as ``sklearn.preprocessing.StandardScaler`` does on the ``[series, length]`` table in the
paper's SCCTS experiment. Columns with zero spread are divided by 1. For Epilepsy2 the
statistics come from the ``train`` split only and are applied to every split (no leakage).
The statistics are recorded in the metadata under ``standardization``.
"""

from __future__ import annotations

import numpy as np

from ._envdata import DataError, EnvData

__all__ = ["series_error", "short", "column_stats", "as_envdata"]


def series_error(src: str, line: int | None, expected: str, found: str) -> DataError:
    """``src: line N: expected ..., found ...`` (the file, the line when known)."""
    where = f"{src}: line {line}" if line is not None else src
    return DataError(f"{where}: expected {expected}, found {found}")


def short(s: str, n: int = 60) -> str:
    """``repr`` of ``s`` stripped and cut to ``n`` characters, for messages."""
    s = s.strip()
    return repr(s if len(s) <= n else s[:n] + "...")


def column_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-time-column mean and std over series of ``x [S, 1, L, D]`` -> ``[L, D]`` each."""
    mean = x.mean(axis=(0, 1))
    std = x.std(axis=(0, 1))
    std = np.where(std > 0, std, 1.0)
    return mean, std


def as_envdata(
    x: np.ndarray,
    family: np.ndarray,
    *,
    family_names: tuple[str, ...] | None,
    env_names: tuple[str, ...] | None,
    source: str,
    split: str,
) -> EnvData:
    s, _, length, _ = x.shape
    t = np.broadcast_to(np.arange(length, dtype=np.float64), (s, length)).copy()
    return EnvData(x, t, family, env_names=env_names, family_names=family_names, source=source, split=split)
