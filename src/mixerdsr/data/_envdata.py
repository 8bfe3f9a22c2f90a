"""The one data schema of mixerdsr: `EnvData` (one split) and its `.npz` storage.

A dataset is a ``dict[str, EnvData]`` keyed by split name (``train``, ``test``,
``adapt_train``, ``adapt_test``). One ``.npz`` file stores all splits under the keys
``<split>/x``, ``<split>/t`` and ``<split>/family`` plus one JSON metadata entry
(``__meta__``), and is always read with ``allow_pickle=False``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import typing
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DataError", "EnvData", "load_dataset", "save_dataset", "check_splits", "SPLITS", "NPZ_READ_ERRORS"]

#: Canonical split names, in their usual order.
SPLITS = ("train", "test", "adapt_train", "adapt_test")
META_KEY = "__meta__"
#: largest state magnitude accepted (float32 squares stay finite below about 1.8e19)
FLOAT32_LIMIT = 1e15
#: what a damaged or foreign file raises while NumPy reads it
NPZ_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, UnicodeDecodeError)


class DataError(ValueError):
    """Raised when a dataset does not follow the mixerdsr schema.

    The message names the source (file or ``"<arrays>"``), the key, and what was
    expected and found.
    """


def _fail(source: str, key: str, expected: str, found: str) -> DataError:
    return DataError(f"{source}: key '{key}': expected {expected}, found {found}")


def _check_array(source: str, key: str, a: Any, rank: int, kind: str, names: str) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        try:
            a = np.asarray(a)
        except Exception as err:  # pragma: no cover - exotic inputs
            raise _fail(source, key, f"an array {names}", f"{type(a).__name__} ({err})") from None
    if a.dtype == object:
        raise _fail(source, key, f"a numeric array {names}", "an object array")
    if kind == "float" and not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise _fail(source, key, f"a float array {names}", f"dtype {a.dtype}")
    if kind == "int" and not np.issubdtype(a.dtype, np.integer):
        raise _fail(source, key, f"an integer array {names}", f"dtype {a.dtype}")
    if a.ndim != rank:
        raise _fail(source, key, f"rank {rank} {names}", f"shape {a.shape} (rank {a.ndim})")
    return a


@typing.no_type_check  # validates itself, naming the key
@dataclasses.dataclass(frozen=True, eq=False)
class EnvData:
    """One split of a multi-environment dataset.

    Attributes:
        x: states, float array of shape ``[envs, trajectories, times, dims]``.
        t: time grid of every environment, float array ``[envs, times]``, strictly increasing.
        family: family index of every environment, int array ``[envs]`` (-1 where unknown).
        params: optional per-environment parameters (one tuple per env, lengths may differ
            between families).
        env_names: optional per-environment names.
        family_names: optional names of the families, indexed by ``family``.

    Construct from plain arrays: ``EnvData(x, t, family)``; shapes, dtypes and finiteness are
    validated on construction and a :class:`DataError` names the offending key.
    """

    x: np.ndarray
    t: np.ndarray
    family: np.ndarray
    params: tuple[tuple[float, ...], ...] | None = None
    env_names: tuple[str, ...] | None = None
    family_names: tuple[str, ...] | None = None
    source: str = dataclasses.field(default="<arrays>", repr=False, compare=False)
    split: str = dataclasses.field(default="data", repr=False, compare=False)

    def __post_init__(self) -> None:
        src, sp = self.source, self.split
        x = _check_array(src, f"{sp}/x", self.x, 4, "float", "[envs, trajectories, times, dims]")
        t = _check_array(src, f"{sp}/t", self.t, 2, "float", "[envs, times]")
        fam = self.family
        if fam is None:
            fam = -np.ones(x.shape[0], dtype=np.int64)
        fam = _check_array(src, f"{sp}/family", fam, 1, "int", "[envs]")
        x = np.asarray(x, dtype=np.float64 if x.dtype == np.float64 else np.float32)
        t = np.asarray(t, dtype=x.dtype)
        fam = np.asarray(fam, dtype=np.int64)
        if x.size == 0 or 0 in x.shape:
            raise _fail(src, f"{sp}/x", "a non-empty split", f"shape {x.shape}")
        n_env, n_traj, n_times, n_dims = x.shape
        if t.shape != (n_env, n_times):
            raise _fail(src, f"{sp}/t", f"shape (envs={n_env}, times={n_times}) to match {sp}/x", f"shape {t.shape}")
        if fam.shape != (n_env,):
            raise _fail(src, f"{sp}/family", f"shape (envs={n_env},) to match {sp}/x", f"shape {fam.shape}")
        if not np.all(np.isfinite(x)):
            bad = np.argwhere(~np.isfinite(x))[0]
            raise _fail(src, f"{sp}/x", "finite values", f"NaN/inf at index {tuple(int(i) for i in bad)}")
        big = np.abs(x) > FLOAT32_LIMIT
        if np.any(big):
            bad = np.argwhere(big)[0]
            raise _fail(
                src,
                f"{sp}/x",
                f"values of magnitude <= {FLOAT32_LIMIT:g} (models train in float32, whose "
                "squared errors overflow beyond that; rescale the data)",
                f"{float(x[tuple(bad)]):.3g} at index {tuple(int(i) for i in bad)}",
            )
        if n_times < 2:
            raise _fail(
                src,
                f"{sp}/x",
                "at least 2 time points per trajectory (the first is the initial state; the rest are scored)",
                f"shape {x.shape} (times = {n_times})",
            )
        if not np.all(np.isfinite(t)):
            bad = np.argwhere(~np.isfinite(t))[0]
            raise _fail(src, f"{sp}/t", "finite values", f"NaN/inf at index {tuple(int(i) for i in bad)}")
        if n_times > 1 and not np.all(np.diff(t, axis=1) > 0):
            e = int(np.argwhere(~(np.diff(t, axis=1) > 0))[0, 0])
            raise _fail(src, f"{sp}/t", "a strictly increasing time grid per env", f"non-increasing grid in env {e}")
        if self.params is not None:
            params = tuple(tuple(float(v) for v in np.atleast_1d(p)) for p in self.params)
            if len(params) != n_env:
                raise _fail(src, f"{sp}/params (metadata)", f"{n_env} entries", f"{len(params)}")
            object.__setattr__(self, "params", params)
        if self.env_names is not None:
            names = tuple(str(s) for s in self.env_names)
            if len(names) != n_env:
                raise _fail(src, f"{sp}/env_names (metadata)", f"{n_env} entries", f"{len(names)}")
            object.__setattr__(self, "env_names", names)
        if self.family_names is not None:
            object.__setattr__(self, "family_names", tuple(str(s) for s in self.family_names))
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "t", t)
        object.__setattr__(self, "family", fam)

    # -- shape helpers -------------------------------------------------------------------
    @property
    def n_envs(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_trajectories(self) -> int:
        return int(self.x.shape[1])

    @property
    def n_times(self) -> int:
        return int(self.x.shape[2])

    @property
    def n_dims(self) -> int:
        return int(self.x.shape[3])

    def __repr__(self) -> str:
        fams = np.unique(self.family)
        return (
            f"EnvData(x={self.x.shape}, envs={self.n_envs}, trajectories={self.n_trajectories}, "
            f"times={self.n_times}, dims={self.n_dims}, families={fams.tolist()})"
        )

    # -- transformations ------------------------------------------------------------------
    def replace(self, **changes: Any) -> "EnvData":
        """A copy with some fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)

    def select_envs(self, idx: Sequence[int] | np.ndarray) -> "EnvData":
        """The environments ``idx`` (in that order)."""
        idx = np.asarray(idx, dtype=np.int64)
        pick = lambda seq: None if seq is None else tuple(seq[i] for i in idx)  # noqa: E731
        return self.replace(
            x=self.x[idx],
            t=self.t[idx],
            family=self.family[idx],
            params=pick(self.params),
            env_names=pick(self.env_names),
        )

    def stride_time(self, stride: int) -> "EnvData":
        """Every ``stride``-th time point (the authors train ODEBench on every 5th of 100)."""
        if stride < 1:
            raise ValueError(f"time stride must be >= 1, got {stride}")
        return self.replace(x=self.x[:, :, ::stride], t=self.t[:, ::stride])

    def _meta(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.params is not None:
            out["params"] = [list(p) for p in self.params]
        if self.env_names is not None:
            out["env_names"] = list(self.env_names)
        if self.family_names is not None:
            out["family_names"] = list(self.family_names)
        return out


def save_dataset(path: str | os.PathLike, splits: Mapping[str, EnvData], meta: Mapping[str, Any] | None = None) -> Path:
    """Write all splits of a dataset into one ``.npz`` file (atomically).

    Args:
        path: destination file; ``.npz`` is appended by NumPy if missing.
        splits: mapping split name -> :class:`EnvData`.
        meta: optional JSON-serialisable dataset metadata (name, seed, protocol...).

    Returns:
        The path written.
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
    if not splits:
        raise DataError(f"{path}: no splits to save")
    arrays: dict[str, Any] = {}
    meta_all: dict[str, Any] = {"schema": "mixerdsr.envdata/1", "dataset": dict(meta or {}), "splits": {}}
    for name, d in splits.items():
        if "/" in name:
            raise DataError(f"{path}: split name '{name}' must not contain '/'")
        arrays[f"{name}/x"] = d.x
        arrays[f"{name}/t"] = d.t
        arrays[f"{name}/family"] = d.family
        meta_all["splits"][name] = d._meta()
    arrays[META_KEY] = np.frombuffer(json.dumps(meta_all).encode("utf-8"), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        os.chmod(tmp, 0o644)  # a data file to share (mkstemp's files are private)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _open_npz(path: Path) -> Any:
    src = str(path)
    if not path.exists():
        raise FileNotFoundError(f"{src}: no such dataset file")
    if path.is_dir():
        raise DataError(f"{src}: is a folder, expected a dataset .npz file")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"PK\x03\x04":
        raise DataError(
            f"{src}: not a .npz (zip) file (it starts with {magic!r}); expected a dataset written by "
            "save_dataset or numpy.savez"
        )
    try:
        return np.load(path, allow_pickle=False)
    except NPZ_READ_ERRORS as err:
        raise DataError(f"{src}: not a readable .npz file ({type(err).__name__}: {err})") from None


def _read(src: str, z: Any, key: str) -> np.ndarray:
    try:
        return z[key]
    except ValueError as err:
        if "pickle" in str(err):
            raise _fail(src, key, "a numeric array", f"an object array ({err})") from None
        raise _fail(src, key, "a readable array", f"damaged content ({type(err).__name__}: {err})") from None
    except NPZ_READ_ERRORS as err:
        raise _fail(
            src,
            key,
            "a readable array",
            f"damaged content ({type(err).__name__}: {err}); the file is truncated or overwritten",
        ) from None


def _read_meta_entry(src: str, z: Any) -> dict[str, Any]:
    """The JSON metadata entry, checked to be an object whose ``dataset`` and ``splits`` are objects."""
    if META_KEY not in z.files:
        return {}
    try:
        meta = json.loads(bytes(_read(src, z, META_KEY)).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise _fail(src, META_KEY, "UTF-8 JSON bytes", f"unreadable content ({err})") from None
    if not isinstance(meta, dict):
        raise _fail(src, META_KEY, "a JSON object", f"a JSON {type(meta).__name__}")
    for k in ("dataset", "splits"):
        if not isinstance(meta.get(k, {}), dict):
            raise _fail(src, f"{META_KEY}/{k}", "a JSON object", f"a JSON {type(meta[k]).__name__}")
    for sp, sm in meta.get("splits", {}).items():
        if not isinstance(sm, dict):
            raise _fail(src, f"{META_KEY}/splits/{sp}", "a JSON object", f"a JSON {type(sm).__name__}")
        for k in ("params", "env_names", "family_names"):
            if sm.get(k) is not None and not isinstance(sm[k], list):
                raise _fail(src, f"{META_KEY}/splits/{sp}/{k}", "a JSON list", f"a JSON {type(sm[k]).__name__}")
    return meta


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The dataset-level metadata stored in a dataset ``.npz`` (empty dict when absent).

    Raises:
        DataError: a damaged file or metadata that is not a JSON object, naming the file and key.
    """
    path = Path(path)
    with _open_npz(path) as z:
        return _read_meta_entry(str(path), z).get("dataset", {})


def check_splits(splits: Mapping[str, EnvData], source: str = "<arrays>") -> None:
    """Check that the splits of one dataset fit together.

    Every split has the same state dimension; ``test`` has the environments of ``train``
    (same count) and ``adapt_test`` those of ``adapt_train``.

    Raises:
        DataError: naming the source, the splits and what differs.
    """
    dims = {name: d.n_dims for name, d in splits.items()}
    if len(set(dims.values())) > 1:
        raise DataError(
            f"{source}: every split must have the same state dimension (the last axis of <split>/x), found {dims}"
        )
    for a, b in (("train", "test"), ("adapt_train", "adapt_test")):
        if a in splits and b in splits and splits[a].n_envs != splits[b].n_envs:
            raise DataError(
                f"{source}: key '{b}/x': expected {splits[a].n_envs} environments (the environments of "
                f"'{a}', with new trajectories), found {splits[b].n_envs}"
            )


def load_dataset(path: str | os.PathLike, splits: Sequence[str] | None = None) -> dict[str, EnvData]:
    """Read and validate a dataset ``.npz`` written by :func:`save_dataset` or by hand.

    Args:
        path: the ``.npz`` file, with keys ``<split>/x``, ``<split>/t``, ``<split>/family``
            and optionally a JSON metadata entry ``__meta__`` (uint8 bytes).
        splits: splits that must be present (default: all found). A missing one is an error.

    Returns:
        ``dict`` split name -> :class:`EnvData`; the splits are checked to fit together
        (:func:`check_splits`).

    Raises:
        DataError: naming the file, the key, and the expected and found shape or dtype; also
            for a damaged (truncated, overwritten) file.
        FileNotFoundError: when the file does not exist.
    """
    path = Path(path)
    src = str(path)
    with _open_npz(path) as z:
        files = set(z.files)
        meta = _read_meta_entry(src, z)
        found = sorted({k.split("/", 1)[0] for k in files if "/" in k})
        wanted = list(splits) if splits is not None else found
        if not wanted:
            raise _fail(
                src,
                "<split>/x",
                "at least one split with keys '<split>/x', '<split>/t', '<split>/family'",
                f"keys {sorted(files)}",
            )
        out: dict[str, EnvData] = {}
        for sp in wanted:
            arrs = {}
            for k in ("x", "t", "family"):
                key = f"{sp}/{k}"
                if key not in files:
                    what = f"split '{sp}'" if not any(f.startswith(sp + "/") for f in files) else f"key '{key}'"
                    raise _fail(src, key, f"{what} to be present", f"keys {sorted(files)}")
                arrs[k] = _read(src, z, key)
            sm = meta.get("splits", {}).get(sp, {})
            out[sp] = EnvData(
                arrs["x"],
                arrs["t"],
                arrs["family"],
                params=sm.get("params"),
                env_names=sm.get("env_names"),
                family_names=sm.get("family_names"),
                source=src,
                split=sp,
            )
    check_splits(out, src)
    return out
