"""The Synthetic Control Chart Time Series (SCCTS) dataset: the UCI file and a seeded generator
(every series an environment; conventions in :mod:`._series`).

SCCTS (:func:`load_sccts`, :func:`generate_sccts`)
    One split ``train`` with all series (unsupervised discovery). Family = class index in the
    order A Normal, B Cyclic, C Increasing trend, D Decreasing trend, E Upward shift,
    F Downward shift (the UCI file's row blocks). The metadata entry ``superfamily`` groups
    them as the paper does: {A, B} -> 0, {C, D} -> 1, {E, F} -> 2.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ._envdata import EnvData
from ._series import as_envdata, column_stats, series_error, short

__all__ = ["load_sccts", "generate_sccts", "SCCTS_CLASS_NAMES", "SCCTS_SUPERFAMILY", "SCCTS_SUPERFAMILY_NAMES"]

#: SCCTS class names, indexed by family (A..F in the paper, the UCI file's block order).
SCCTS_CLASS_NAMES = ("Normal", "Cyclic", "Increasing trend", "Decreasing trend", "Upward shift", "Downward shift")
#: The paper's grouping of the six classes into three families: {A,B}, {C,D}, {E,F}.
SCCTS_SUPERFAMILY = (0, 0, 1, 1, 2, 2)
SCCTS_SUPERFAMILY_NAMES = ("Normal/Cyclic", "Increasing/Decreasing trend", "Upward/Downward shift")


def _sccts_dataset(
    x2d: np.ndarray, family: np.ndarray, *, standardize: bool, source: str, meta_extra: dict[str, Any]
) -> tuple[dict[str, EnvData], dict[str, Any]]:
    x = x2d.astype(np.float64)[:, None, :, None]
    std_meta: dict[str, Any] = {"kind": "none"}
    if standardize:
        mean, std = column_stats(x)
        x = (x - mean) / std
        std_meta = {
            "kind": "per-time-column",
            "fitted_on": "train",
            "mean": mean[:, 0].tolist(),
            "std": std[:, 0].tolist(),
        }
    train = as_envdata(x, family, family_names=SCCTS_CLASS_NAMES, env_names=None, source=source, split="train")
    sup = [SCCTS_SUPERFAMILY[int(f)] for f in family]
    meta = {
        "name": "sccts",
        **meta_extra,
        "standardize": bool(standardize),
        "standardization": std_meta,
        "class_names": list(SCCTS_CLASS_NAMES),
        "superfamily": sup,
        "superfamily_names": list(SCCTS_SUPERFAMILY_NAMES),
    }
    return {"train": train}, meta


def load_sccts(path: str | os.PathLike, *, standardize: bool = True) -> tuple[dict[str, EnvData], dict[str, Any]]:
    """The UCI Synthetic Control Chart Time Series file as a one-split dataset.

    The file (``synthetic_control.data``) has one series per line, whitespace-separated floats,
    no header, rows in six class blocks of equal size (100 each in the UCI file) in the order
    of :data:`SCCTS_CLASS_NAMES`.

    Returns:
        ``(splits, meta)`` with ``splits = {"train": EnvData}`` (``x [600, 1, 60, 1]``,
        ``t = arange(60)``, ``family`` = class 0..5) and ``meta`` holding ``superfamily``
        (one of 0, 1, 2 per env), the class and superfamily names and ``standardization``.

    Raises:
        DataError: unreadable numbers, ragged rows, or a row count not divisible by 6.
    """
    p = Path(path)
    src = str(p)
    if not p.exists():
        raise FileNotFoundError(f"{src}: no such file")
    rows: list[np.ndarray] = []
    width = None
    first = None
    with open(p, encoding="utf-8", errors="replace") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line:
                continue
            toks = line.split()
            try:
                v = np.asarray(toks, dtype=np.float64)
            except ValueError:
                bad = next(t for t in toks if not _is_float(t))
                raise series_error(src, lineno, "whitespace-separated numbers", short(bad)) from None
            if not np.all(np.isfinite(v)):
                raise series_error(src, lineno, "finite numbers", "NaN/inf")
            if width is None:
                width, first = v.size, lineno
            elif v.size != width:
                raise series_error(src, lineno, f"{width} values per line (as on line {first})", f"{v.size}")
            rows.append(v)
    if not rows:
        raise series_error(src, None, "series, one per line", "an empty file")
    n = len(rows)
    if n % 6:
        raise series_error(
            src, None, "a number of series divisible by 6 (six class blocks of equal size)", f"{n} series"
        )
    x = np.stack(rows)
    family = np.repeat(np.arange(6, dtype=np.int64), n // 6)
    return _sccts_dataset(
        x, family, standardize=standardize, source=src, meta_extra={"source": src, "n_per_class": n // 6}
    )


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def generate_sccts(
    seed: int = 0, n_per_class: int = 100, *, standardize: bool = True, length: int = 60
) -> tuple[dict[str, EnvData], dict[str, Any]]:
    """Generate Synthetic Control Chart series (Alcock & Manolopoulos 1999), seeded.

    With ``m = 30``, ``s = 2``, fresh noise ``r(t) ~ U[-3, 3]`` at every step and
    ``t = 0 .. length-1``, the six classes (in :data:`SCCTS_CLASS_NAMES` order) are

    - A normal:            ``y(t) = m + r(t) s``
    - B cyclic:            ``y(t) = m + r(t) s + a sin(2 pi t / T)``, ``a, T ~ U[10, 15]``
    - C increasing trend:  ``y(t) = m + r(t) s + g t``, ``g ~ U[0.2, 0.5]``
    - D decreasing trend:  ``y(t) = m + r(t) s - g t``
    - E upward shift:      ``y(t) = m + r(t) s + k(t) x``, ``x ~ U[7.5, 20]``,
      ``k(t) = 1 if t >= t3 else 0``, ``t3`` an integer uniform on ``[n/3, 2n/3]``
      (``[20, 40]`` for ``n = 60``)
    - F downward shift:    ``y(t) = m + r(t) s - k(t) x``

    (``a``, ``T``, ``g``, ``x``, ``t3`` are drawn once per series.) The output is a pure
    function of the arguments: one ``np.random.default_rng(seed)`` stream draws, in order, the
    noise ``[6, n_per_class, length]``, then ``a``, ``T`` (cyclic), ``g`` (increasing), ``g``
    (decreasing), ``x``, ``t3`` (upward), ``x``, ``t3`` (downward), each ``[n_per_class]``.

    Returns:
        ``(splits, meta)`` as :func:`load_sccts` (one split ``train``, ``6 * n_per_class``
        envs in class blocks), ``meta`` also holding ``seed`` and the per-series class
        parameters under ``class_params``.
    """
    if n_per_class < 1 or length < 3:
        raise ValueError(f"need n_per_class >= 1 and length >= 3, got {n_per_class}, {length}")
    rng = np.random.default_rng(seed)
    m, s = 30.0, 2.0
    n = int(n_per_class)
    t = np.arange(length, dtype=np.float64)
    y = m + s * rng.uniform(-3.0, 3.0, size=(6, n, length))
    a = rng.uniform(10.0, 15.0, n)
    period = rng.uniform(10.0, 15.0, n)
    g_inc = rng.uniform(0.2, 0.5, n)
    g_dec = rng.uniform(0.2, 0.5, n)
    lo, hi = math.ceil(length / 3), math.floor(2 * length / 3)
    x_up = rng.uniform(7.5, 20.0, n)
    t3_up = rng.integers(lo, hi + 1, n)
    x_dn = rng.uniform(7.5, 20.0, n)
    t3_dn = rng.integers(lo, hi + 1, n)
    y[1] += a[:, None] * np.sin(2.0 * np.pi * t[None, :] / period[:, None])
    y[2] += g_inc[:, None] * t[None, :]
    y[3] -= g_dec[:, None] * t[None, :]
    y[4] += x_up[:, None] * (t[None, :] >= t3_up[:, None])
    y[5] -= x_dn[:, None] * (t[None, :] >= t3_dn[:, None])
    family = np.repeat(np.arange(6, dtype=np.int64), n)
    class_params = {
        "cyclic_a": a.tolist(),
        "cyclic_T": period.tolist(),
        "increasing_g": g_inc.tolist(),
        "decreasing_g": g_dec.tolist(),
        "upward_x": x_up.tolist(),
        "upward_t3": t3_up.tolist(),
        "downward_x": x_dn.tolist(),
        "downward_t3": t3_dn.tolist(),
    }
    extra = {
        "source": "generator",
        "seed": int(seed),
        "n_per_class": n,
        "length": int(length),
        "generator": {
            "m": m,
            "s": s,
            "r": [-3.0, 3.0],
            "a": [10.0, 15.0],
            "T": [10.0, 15.0],
            "g": [0.2, 0.5],
            "x": [7.5, 20.0],
            "t3": [lo, hi],
            "rng": "numpy.default_rng",
        },
        "class_params": class_params,
    }
    return _sccts_dataset(
        y.reshape(6 * n, length), family, standardize=standardize, source=f"<sccts seed={seed}>", meta_extra=extra
    )
