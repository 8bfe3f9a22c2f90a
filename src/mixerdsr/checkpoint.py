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

from .data._envdata import NPZ_READ_ERRORS

__all__ = ["save_checkpoint", "load_checkpoint", "read_checkpoint_config", "CheckpointError"]


class CheckpointError(ValueError):
    """A checkpoint file does not match the expected state."""


def _json_bytes(obj: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)


def save_checkpoint(
    path: str | os.PathLike, state: Any, config: dict[str, Any], extra: dict[str, Any] | None = None
) -> Path:
    """Write ``state`` (any pytree of arrays), ``config`` and ``extra`` (JSON-able) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves = jax.tree.leaves(state)
    arrays: dict[str, Any] = {f"leaf/{i:05d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
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
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"PK\x03\x04":
        raise CheckpointError(f"{path}: not a mixerdsr checkpoint: not a .npz (zip) file (it starts with {magic!r})")
    try:
        z = np.load(path, allow_pickle=False)
    except NPZ_READ_ERRORS as err:
        raise CheckpointError(
            f"{path}: not a readable mixerdsr checkpoint (.npz) file ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(z, np.lib.npyio.NpzFile) or "__config__" not in z.files:
        raise CheckpointError(
            f"{path}: not a mixerdsr checkpoint (expected a .npz file with keys '__config__', "
            f"'__extra__' and 'leaf/NNNNN')"
        )
    return z


def _json_entry(path: Any, z: Any, key: str) -> dict[str, Any]:
    try:
        value = json.loads(z[key].tobytes()) if key in z.files else {}
    except NPZ_READ_ERRORS as err:
        raise CheckpointError(
            f"{path}: key '{key}': expected UTF-8 JSON bytes, found unreadable content ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: key '{key}': expected a JSON object, found {type(value).__name__}")
    return value


def read_checkpoint_config(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``(config, extra)`` dictionaries stored in a checkpoint.

    Raises:
        CheckpointError: a missing, damaged or foreign file, naming it.
    """
    with _open(path) as z:
        return _json_entry(path, z, "__config__"), _json_entry(path, z, "__extra__")


def load_checkpoint(path: str | os.PathLike, template: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Load a checkpoint into the structure of ``template``.

    Returns:
        ``(state, config, extra)``.

    Raises:
        CheckpointError: missing, damaged or foreign file, wrong number of leaves, or a leaf of another shape/dtype.
    """
    leaves, treedef = jax.tree.flatten(template)
    with _open(path) as z:
        keys = sorted(k for k in z.files if k.startswith("leaf/"))
        if len(keys) != len(leaves):
            raise CheckpointError(
                f"{path}: expected {len(leaves)} arrays for this configuration, found {len(keys)} "
                "(a checkpoint of another configuration or of another mixerdsr version?)"
            )
        new = []
        for k, ref in zip(keys, leaves):
            try:
                a = z[k]
            except NPZ_READ_ERRORS as err:
                raise CheckpointError(
                    f"{path}: key '{k}': unreadable ({type(err).__name__}: {err}); the file is "
                    "damaged (truncated or overwritten)"
                ) from None
            ref = np.asarray(ref)
            if a.shape != ref.shape or a.dtype != ref.dtype:
                raise CheckpointError(
                    f"{path}: key '{k}': expected {ref.dtype}{list(ref.shape)}, found {a.dtype}{list(a.shape)}"
                )
            new.append(jnp.asarray(a))
        config, extra = _json_entry(path, z, "__config__"), _json_entry(path, z, "__extra__")
    return jax.tree.unflatten(treedef, new), config, extra
