"""Compiled functions kept across processes, so that a command's second call skips tracing.

JAX's persistent compilation cache skips XLA compilation, but every new process still traces
the Python function first, and tracing an adaptive ODE solve differentiated inside a scan takes
about 10 s on a laptop core. With :func:`enable`, :func:`call` stores the traced function
(``jax.export``, serialised StableHLO) in a folder, keyed by everything that defines it (a name,
the caller's key, the argument shapes and dtypes, and the JAX and mixerdsr versions); a later
process loads it instead of tracing, and compiling it hits the persistent compilation cache.

Off unless enabled (the library traces as usual); any failure to export or load falls back to
tracing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

__all__ = ["enable", "call"]

_DIR: Path | None = None
_LOADED: dict[str, Any] = {}


def enable(folder: str | os.PathLike | None) -> None:
    """Keep traced functions in ``folder`` (None: off)."""
    global _DIR
    _DIR = None if folder is None else Path(folder)


def _version() -> str:
    from . import __version__

    return __version__


def call(name: str, fn: Callable[..., Any], key: str, args: tuple) -> list[jax.Array] | None:
    """``jax.tree.leaves(fn(*args))`` through a stored export, or None when not enabled (or
    exporting failed): the caller then calls its usual compiled function.

    Args:
        name: the function's name (part of the file name).
        fn: a function of ``args`` only (no other traced inputs; everything it closes over
            must be described by ``key``).
        key: what else defines the computation (static settings, model structure); the
            source file defining ``fn`` is part of the key too.
        args: a tuple of pytrees of arrays.
    """
    from .sharding import env_shards

    if _DIR is None or env_shards() > 1:  # exports are of the one-device computation
        return None
    leaves, treedef = jax.tree.flatten(args)
    sig = json.dumps(
        [
            name,
            key,
            str(treedef),
            [(tuple(a.shape), str(a.dtype)) for a in leaves],
            jax.__version__,
            _version(),
            _source_digest(fn),
        ]
    )
    h = hashlib.sha256(sig.encode()).hexdigest()[:24]
    exp = _LOADED.get(h)
    if exp is None:
        exp = _load_or_export(_DIR / f"{name}-{h}.jaxexport", fn, treedef, leaves)
        if exp is None:
            return None
        _LOADED[h] = exp
    return list(exp.call(*leaves))


def _source_digest(fn) -> str:
    """A digest of the file that defines ``fn``: a stored export is not reused once the code
    it was traced from has changed (the package version alone does not say so in a checkout)."""
    try:
        return hashlib.sha256(Path(fn.__code__.co_filename).read_bytes()).hexdigest()[:16]
    except (AttributeError, OSError):
        return ""


def _load_or_export(path: Path, fn, treedef, leaves):
    from jax import export

    if path.is_file():
        try:
            return export.deserialize(bytearray(path.read_bytes()))
        except Exception:  # noqa: BLE001 - a damaged or foreign file: export again
            pass

    def flat(*xs):
        return jax.tree.leaves(fn(*jax.tree.unflatten(treedef, list(xs))))

    try:
        exp = export.export(jax.jit(flat))(*leaves)
        data = exp.serialize()
    except Exception:  # noqa: BLE001 - e.g. host callbacks, or flatbuffers missing: trace as usual
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError:  # a read-only cache: use it in this process only
        pass
    return exp
