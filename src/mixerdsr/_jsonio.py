"""JSON-ready values: arrays to lists, NumPy scalars to Python numbers, non-finite floats to null."""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

__all__ = ["jsonable"]


def jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.ndarray, jax.Array)):
        return jsonable(np.asarray(x).tolist())
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    return x
