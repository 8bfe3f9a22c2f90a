"""Single-file checkpoints without pickle.

A checkpoint is one ``.npz``: every array leaf of the training state under ``leaf/NNNNN`` (in
``jax.tree`` flatten order), plus JSON entries ``__config__`` and ``__extra__`` stored as bytes.
Loading needs a *template* state of the same structure (rebuilt from the stored config), whose
leaves are replaced one by one after checking shapes and dtypes. Files are written to a temporary
name and renamed, so a run killed while saving never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["save_checkpoint", "load_checkpoint", "read_checkpoint_config", "CheckpointError"]


class CheckpointError(ValueError):
    """A checkpoint file does not match the expected state."""


def _json_bytes(obj: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)


def save_checkpoint(path: str | os.PathLike, state: Any, config: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    """Write ``state`` (any pytree of arrays), ``config`` and ``extra`` (JSON-able) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves = jax.tree.leaves(state)
    arrays = {f"leaf/{i:05d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    arrays["__config__"] = _json_bytes(config)
    arrays["__extra__"] = _json_bytes(extra or {})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _open(path: str | os.PathLike):
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return np.load(path, allow_pickle=False)


def read_checkpoint_config(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``(config, extra)`` dictionaries stored in a checkpoint."""
    with _open(path) as z:
        return json.loads(z["__config__"].tobytes()), json.loads(z["__extra__"].tobytes())


def load_checkpoint(path: str | os.PathLike, template: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Load a checkpoint into the structure of ``template``.

    Returns:
        ``(state, config, extra)``.

    Raises:
        CheckpointError: missing file, wrong number of leaves, or a leaf of another shape/dtype.
    """
    leaves, treedef = jax.tree.flatten(template)
    with _open(path) as z:
        keys = sorted(k for k in z.files if k.startswith("leaf/"))
        if len(keys) != len(leaves):
            raise CheckpointError(f"{path}: expected {len(leaves)} arrays for this configuration, found {len(keys)} "
                                  "(a checkpoint of another configuration or of another mixerdsr version?)")
        new = []
        for k, ref in zip(keys, leaves):
            a = z[k]
            ref = np.asarray(ref)
            if a.shape != ref.shape or a.dtype != ref.dtype:
                raise CheckpointError(f"{path}: key '{k}': expected {ref.dtype}{list(ref.shape)}, found {a.dtype}{list(a.shape)}")
            new.append(jnp.asarray(a))
        config = json.loads(z["__config__"].tobytes())
        extra = json.loads(z["__extra__"].tobytes())
    return jax.tree.unflatten(treedef, new), config, extra
