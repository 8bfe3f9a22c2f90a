"""Named datasets: one entry point to list, generate and load every built-in benchmark.

Names: ``odebench-2``, ``odebench-10a``, ``odebench-10b`` (TOML family files, see
:mod:`mixerdsr.data._families`), ``lv``, ``go``, ``sm`` (:mod:`mixerdsr.data._classic`) and
``sccts`` (:mod:`mixerdsr.data._sccts`). :func:`resolve_dataset` is the one function that
decides what a dataset string names (a name, or a ``.npz``, ``.toml``, ``.ts`` or ``.data``
path); the CLI, :func:`~mixerdsr.run` and :func:`generate_dataset` all go through it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._classic import generate_go, generate_lv, generate_sm
from ._envdata import DataError, EnvData, load_dataset, read_meta
from ._families import builtin_family_files, generate_families, load_family_spec

__all__ = [
    "list_datasets",
    "generate_dataset",
    "resolve_dataset",
    "shared_data_dirs",
    "find_data_file",
    "SHARED_DATA_ENV",
]

_CLASSIC: dict[str, tuple[Callable[..., Any], str]] = {
    "lv": (generate_lv, "Lotka-Volterra (2-D): 9 train envs (b, d), 4 adaptation envs"),
    "go": (generate_go, "Glycolytic oscillator (7-D): 9 train envs (k1, K1), 4 adaptation envs"),
    "sm": (generate_sm, "Sel'kov model (2-D): 21 train envs b in three bands, 6 adaptation envs"),
}
_SCCTS_DESC = (
    "Synthetic Control Chart Time Series: six classes of 60-step series (the UCI file "
    "synthetic_control.data when found in the shared data folder, else a seeded generator)"
)


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
    return s.endswith((".toml", ".npz", ".ts", ".data")) or os.sep in s or (os.altsep is not None and os.altsep in s)


def generate_dataset(
    name_or_path: str | os.PathLike, seed: int | None = None, *, progress: bool = False
) -> tuple[dict[str, EnvData], dict[str, Any]]:
    """Generate a named benchmark or a user TOML family file (:func:`resolve_dataset` with
    ``generate=True``: files of recorded data are refused, SCCTS is the seeded generator).

    Args:
        name_or_path: a name from :func:`list_datasets` or a path to a ``.toml`` family file.
        seed: the generator seed (default: the benchmark's own default: the TOML protocol seed,
            0 for ``lv``/``go``/``sm`` and the SCCTS generator).
        progress: show a progress bar.

    Returns:
        ``(splits, meta)``: ``dict`` split -> :class:`EnvData` and JSON-serialisable metadata
        (pass both to :func:`~mixerdsr.data.save_dataset`).

    Raises:
        DataError: unknown name, invalid family file, failed integration, a data file.
        FileNotFoundError: a path that does not exist.
    """
    return resolve_dataset(name_or_path, seed, generate=True, progress=progress)


# ---------------------------------------------------------------------------------------
# real data files (SCCTS, Epilepsy2) and the dataset of a run
# ---------------------------------------------------------------------------------------
#: Environment variable naming a folder that holds the real data files.
SHARED_DATA_ENV = "MIXERDSR_SHARED_DATA"
SCCTS_FILE = "synthetic_control.data"
EPILEPSY2_FILE = "Epilepsy2_TRAIN.ts"


def shared_data_dirs() -> list[Path]:
    """Folders searched for real data files, in order: ``$MIXERDSR_SHARED_DATA``,
    ``../shared/data`` from the current directory, ``../shared/data`` from the repository root
    (for an editable install)."""
    dirs = []
    env = os.environ.get(SHARED_DATA_ENV)
    if env:
        dirs.append(Path(env))
    dirs.append(Path.cwd() / ".." / "shared" / "data")
    dirs.append(Path(__file__).resolve().parents[3] / ".." / "shared" / "data")
    out: list[Path] = []
    for d in dirs:
        d = d.resolve()
        if d not in out:
            out.append(d)
    return out


def _packaged_dir() -> Path:
    """The folder of the data files shipped with the package (``synthetic_control.data``)."""
    return Path(__file__).resolve().parent / "files"


def find_data_file(name: str) -> tuple[Path | None, list[Path]]:
    """``(path or None, folders searched)`` for a real data file such as ``synthetic_control.data``:
    the folders of :func:`shared_data_dirs`, then the package's own copy (SCCTS is shipped)."""
    dirs = shared_data_dirs() + [_packaged_dir()]
    for d in dirs:
        if (d / name).is_file():
            return d / name, dirs
    return None, dirs


def resolve_dataset(
    source: str | os.PathLike,
    seed: int | None = None,
    *,
    generate: bool = False,
    test_file: str | os.PathLike | None = None,
    standardize: bool = True,
    progress: bool = False,
    envs_per_family: int = 0,
    test_trajectories: int = 0,
    clean: bool | None = None,
) -> tuple[dict[str, EnvData], dict[str, Any]]:
    """The one place that decides what a dataset string names: ``(splits, meta)``.

    - ``.npz`` path: loaded (validated) with its stored metadata;
    - ``"sccts"`` or a ``.data`` path: the UCI file ``synthetic_control.data`` (the path given,
      else the first found by :func:`find_data_file`, the package's own copy last;
      ``meta["source"]`` is its path), or with ``generate=True`` the seeded generator
      (``meta["source"] == "generator"``);
    - ``"epilepsy2"`` (``Epilepsy2_TRAIN.ts`` found in :func:`shared_data_dirs`) or a ``.ts``
      path: :func:`~mixerdsr.data.load_epilepsy2`, with ``test_file`` (the archive's full test
      set) as the held-out adaptation set when given;
    - ``lv``, ``go``, ``sm``, a built-in family name or a ``.toml`` family file: generated.

    Series datasets are standardised per time column (``standardize``; statistics of the
    training split) as the paper does for SCCTS.

    Args:
        source: a name from :func:`list_datasets` or a path.
        seed: generator seed (None: the dataset's own default).
        generate: only generators (``mixerdsr data generate``): files of recorded data are an
            error and SCCTS comes from its generator.
        test_file: Epilepsy2 only: the archive's full test ``.ts`` file.
        standardize: series datasets: per-time-column standardisation.
        progress: show a progress bar while generating.
        envs_per_family, test_trajectories: family files only: generate just the first envs
            of each family / the first test trajectories (:func:`generate_families`; other
            sources are returned whole).
        clean: family files only: the leak-free protocol (True) or the paper's (False) instead
            of the file's ``[protocol] clean`` (None).

    Raises:
        DataError: unknown name, a missing Epilepsy2 file (naming the folders searched), a
            ``test_file`` for a dataset that has no use for it, a data file with ``generate``.
        FileNotFoundError: a path that does not exist.
    """
    from ._epilepsy2 import load_epilepsy2
    from ._sccts import generate_sccts, load_sccts

    s = os.fspath(source)
    key = s.lower()
    suffix = Path(s).suffix
    exists = os.path.exists(s)
    is_ts = (key == "epilepsy2" and not exists) or suffix == ".ts"
    _refuse_misuse(s, exists, is_ts, test_file, generate, clean)
    if suffix == ".npz":
        return load_dataset(s), read_meta(s)
    if (key == "sccts" and not exists) or suffix == ".data":
        path = Path(s) if suffix == ".data" else (None if generate else find_data_file(SCCTS_FILE)[0])
        if path is not None:
            return load_sccts(path, standardize=standardize)
        return generate_sccts(0 if seed is None else int(seed), standardize=standardize)
    if is_ts:
        if test_file is not None and not Path(test_file).is_file():
            raise FileNotFoundError(f"{test_file}: no such test file")
        return load_epilepsy2(_epilepsy2_path(s), standardize=standardize, test_path=test_file)
    if key in _CLASSIC and not exists:
        fn, _ = _CLASSIC[key]
        return fn(0 if seed is None else int(seed), progress=progress)
    if (key in builtin_family_files() and not exists) or exists:
        spec = load_family_spec(key if not exists else s)
        return generate_families(
            spec if clean is None else spec.with_protocol(clean=clean),
            seed,
            progress=progress,
            envs_per_family=envs_per_family,
            test_trajectories=test_trajectories,
        )
    names = [n for n, _ in list_datasets()]
    raise DataError(
        f"unknown dataset {s!r} (built-in names: {', '.join(names)}, epilepsy2; or give a path to a "
        ".npz dataset, a .toml family file, a .ts or .data series file)"
    )


def _refuse_misuse(s: str, exists: bool, is_ts: bool, test_file: Any, generate: bool, clean: bool | None) -> None:
    """:func:`resolve_dataset`'s refusals of options that do not apply to the source ``s``."""
    key, suffix = s.lower(), Path(s).suffix
    if test_file is not None and not is_ts:
        raise DataError(
            f"test_file is only used with Epilepsy2-style data (data = 'epilepsy2' or a .ts file), not with {s!r}"
        )
    if generate and (suffix in (".npz", ".ts", ".data") or key == "epilepsy2"):
        raise DataError(
            f"{s}: is recorded data, not a generator; use it directly (mixerdsr run --data {s}, "
            "load_dataset for .npz files)"
        )
    if _looks_like_path(s) and not exists:
        raise FileNotFoundError(f"{s}: no such file")
    if clean is not None and not ((key in builtin_family_files() and not exists) or suffix == ".toml"):
        raise DataError(f"data.clean applies to ODE family datasets (odebench-*, .toml files), not to {s!r}")


def _epilepsy2_path(s: str) -> Path:
    """The ``.ts`` file ``s`` names: the path itself, or for ``"epilepsy2"`` the training file
    found in the shared data folders (DataError naming the folders searched)."""
    if s.lower() != "epilepsy2":
        return Path(s)
    path, dirs = find_data_file(EPILEPSY2_FILE)
    if path is None:
        raise DataError(
            f"epilepsy2: {EPILEPSY2_FILE} not found; looked in "
            f"{', '.join(str(d) for d in dirs)}. Set {SHARED_DATA_ENV}=DIR to the folder "
            f"holding it, or pass the file itself (--data PATH/{EPILEPSY2_FILE})"
        )
    return path
