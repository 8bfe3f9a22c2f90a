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
from ._envdata import DataError, EnvData, load_dataset, read_meta
from ._families import builtin_family_files, generate_families, load_family_spec

__all__ = [
    "list_datasets",
    "generate_dataset",
    "load_any",
    "load_run_dataset",
    "shared_data_dirs",
    "find_data_file",
    "SHARED_DATA_ENV",
]

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


def generate_dataset(
    name_or_path: str | os.PathLike, seed: int | None = None, *, progress: bool = False
) -> tuple[dict[str, EnvData], dict[str, Any]]:
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
    raise DataError(
        f"unknown dataset {s!r} (built-in names: {', '.join(names)}; or give a path to a .toml family file)"
    )


def load_any(name_or_path: str | os.PathLike, seed: int | None = None) -> dict[str, EnvData]:
    """A dataset from a ``.npz`` path (validated load) or a name / TOML path (generated)."""
    s = os.fspath(name_or_path)
    if Path(s).suffix == ".npz":
        return load_dataset(s)
    splits, _ = generate_dataset(s, seed)
    return splits


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


def load_run_dataset(
    source: str | os.PathLike,
    seed: int | None = None,
    *,
    test_file: str | os.PathLike | None = None,
    standardize: bool = True,
    progress: bool = False,
) -> tuple[dict[str, EnvData], dict[str, Any]]:
    """The dataset of a run: ``(splits, meta)``, ``meta["source"]`` saying where it came from.

    - ``.npz`` path: loaded (validated) with its stored metadata;
    - ``"sccts"``: the UCI file ``synthetic_control.data`` when found in
      :func:`shared_data_dirs` (``meta["source"]`` is its path), else the seeded generator
      (``meta["source"] == "generator"``); a path to a ``.data`` file is loaded as SCCTS;
    - ``"epilepsy2"`` (``Epilepsy2_TRAIN.ts`` found in :func:`shared_data_dirs`) or a ``.ts``
      path: :func:`~mixerdsr.data.load_epilepsy2`, with ``test_file`` (the archive's full test
      set) as the held-out adaptation set when given;
    - anything else: :func:`generate_dataset`.

    Series datasets are standardised per time column (``standardize``; statistics of the
    training split) as the paper does for SCCTS.

    Raises:
        DataError: unknown name, a missing Epilepsy2 file (naming the folders searched), or a
            ``test_file`` for a dataset that has no use for it.
    """
    from ._series import generate_sccts, load_epilepsy2, load_sccts

    s = os.fspath(source)
    key = s.lower()
    is_ts = key == "epilepsy2" or Path(s).suffix == ".ts"
    if test_file is not None and not is_ts:
        raise DataError(
            f"test_file is only used with Epilepsy2-style data (data = 'epilepsy2' or a .ts file), not with {s!r}"
        )
    if Path(s).suffix == ".npz":
        return load_dataset(s), read_meta(s)
    if key == "sccts" or Path(s).suffix == ".data":
        path = Path(s) if Path(s).suffix == ".data" else find_data_file(SCCTS_FILE)[0]
        if path is not None:
            return load_sccts(path, standardize=standardize)
        return generate_sccts(0 if seed is None else int(seed), standardize=standardize)
    if is_ts:
        if key == "epilepsy2":
            path, dirs = find_data_file(EPILEPSY2_FILE)
            if path is None:
                raise DataError(
                    f"epilepsy2: {EPILEPSY2_FILE} not found; looked in "
                    f"{', '.join(str(d) for d in dirs)}. Set {SHARED_DATA_ENV}=DIR to the folder "
                    f"holding it, or pass the file itself (--data PATH/{EPILEPSY2_FILE})"
                )
        else:
            path = Path(s)
        if test_file is not None and not Path(test_file).is_file():
            raise FileNotFoundError(f"{test_file}: no such test file")
        return load_epilepsy2(path, standardize=standardize, test_path=test_file)
    return generate_dataset(s, seed, progress=progress)
