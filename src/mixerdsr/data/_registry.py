"""Named datasets: one entry point to list, generate and load every built-in benchmark.

Names: ``odebench-2``, ``odebench-10a``, ``odebench-10b`` (TOML family files, see
:mod:`mixerdsr.data._families`), ``lv``, ``go``, ``sm`` (:mod:`mixerdsr.data._classic`) and
``sccts`` (:mod:`mixerdsr.data._series`). A path to a user TOML family file works wherever a
name does; :func:`load_any` also takes a dataset ``.npz``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._classic import generate_go, generate_lv, generate_sm
from ._envdata import DataError, EnvData, load_dataset
from ._families import builtin_family_files, generate_families, load_family_spec

__all__ = ["list_datasets", "generate_dataset", "load_any"]

_CLASSIC: dict[str, tuple[Callable[..., Any], str]] = {
    "lv": (generate_lv, "Lotka-Volterra (2-D): 9 train envs (b, d), 4 adaptation envs"),
    "go": (generate_go, "Glycolytic oscillator (7-D): 9 train envs (k1, K1), 4 adaptation envs"),
    "sm": (generate_sm, "Sel'kov model (2-D): 21 train envs b in three bands, 6 adaptation envs"),
}
_SCCTS_DESC = "Synthetic Control Chart Time Series: six classes of 60-step series (seeded generator)"


def _builtin_descriptions() -> dict[str, str]:
    out = {}
    names = sorted(builtin_family_files(), key=lambda n: (len(n), n))  # odebench-2 before -10a
    for name in names:
        try:
            out[name] = load_family_spec(name).description or name
        except DataError as err:  # pragma: no cover - built-in files are tested
            out[name] = f"(invalid: {err})"
    return out


def list_datasets() -> list[tuple[str, str]]:
    """Built-in dataset names with a one-line description each."""
    out = list(_builtin_descriptions().items())
    out += [(k, d) for k, (_, d) in _CLASSIC.items()]
    out.append(("sccts", _SCCTS_DESC))
    return out


def _looks_like_path(s: str) -> bool:
    return s.endswith((".toml", ".npz")) or os.sep in s or (os.altsep is not None and os.altsep in s)


def generate_dataset(name_or_path: str | os.PathLike, seed: int | None = None, *,
                     progress: bool = False) -> tuple[dict[str, EnvData], dict[str, Any]]:
    """Generate a named benchmark or a user TOML family file.

    Args:
        name_or_path: a name from :func:`list_datasets` or a path to a ``.toml`` family file.
        seed: the generator seed (default: the benchmark's own default: the TOML protocol seed,
            0 for ``lv``/``go``/``sm``, the SCCTS generator's default).
        progress: show a progress bar.

    Returns:
        ``(splits, meta)``: ``dict`` split -> :class:`EnvData` and JSON-serialisable metadata
        (pass both to :func:`~mixerdsr.data.save_dataset`).

    Raises:
        DataError: unknown name, invalid family file, failed integration.
        FileNotFoundError: a path that does not exist.
    """
    s = os.fspath(name_or_path)
    key = s.lower()
    if key in _CLASSIC and not os.path.exists(s):
        fn, _ = _CLASSIC[key]
        return fn(0 if seed is None else int(seed), progress=progress)
    if key == "sccts" and not os.path.exists(s):
        try:
            from ._series import generate_sccts  # type: ignore[attr-defined]
        except ImportError as err:
            raise DataError(f"sccts: the series generator is not available ({err})") from None
        if seed is not None:
            return generate_sccts(int(seed))
        import inspect

        params = list(inspect.signature(generate_sccts).parameters.values())
        needs_seed = bool(params) and params[0].default is inspect.Parameter.empty
        return generate_sccts(0) if needs_seed else generate_sccts()
    builtin = builtin_family_files()
    if key in builtin and not os.path.exists(s):
        return generate_families(key, seed, progress=progress)
    if os.path.exists(s):
        if Path(s).suffix == ".npz":
            raise DataError(f"{s}: is a dataset file, not a generator; load it with load_dataset/load_any")
        return generate_families(load_family_spec(s), seed, progress=progress)
    if _looks_like_path(s):
        raise FileNotFoundError(f"{s}: no such file")
    names = [n for n, _ in list_datasets()]
    raise DataError(f"unknown dataset {s!r} (built-in names: {', '.join(names)}; or give a path to a .toml family file)")


def load_any(name_or_path: str | os.PathLike, seed: int | None = None) -> dict[str, EnvData]:
    """A dataset from a ``.npz`` path (validated load) or a name / TOML path (generated)."""
    s = os.fspath(name_or_path)
    if Path(s).suffix == ".npz":
        return load_dataset(s)
    splits, _ = generate_dataset(s, seed)
    return splits
