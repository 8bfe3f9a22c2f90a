"""Series datasets: the UEA/sktime ``.ts`` reader, Epilepsy2 and Synthetic Control (SCCTS).

In these datasets every series is its own **environment** with exactly one **trajectory**:
``x`` has shape ``[series, 1, length, dims]`` and ``t = arange(length)`` (float) for every env.
Class labels are stored as the ``family`` of each environment; they are metadata only (the
models are trained without them).

Epilepsy2 (:func:`load_epilepsy2`)
    Splits, with ``n_train = 60`` by default:

    ============  ==========================================================================
    ``train``     rows ``0 .. n_train-1`` of the training ``.ts`` file
    ``test``      the same series as ``train`` (sequence models are scored on reconstructing
                  the series they were fitted on; there are no new initial conditions)
    ``adapt_train``  rows ``n_train ..`` of the training file (the archive's 20 validation
                  rows 60-79) -- or, when ``test_path`` is given, *all* series of that file
                  (the archive's 11,420-series test set) instead
    ``adapt_test``   the same series as ``adapt_train`` (contexts are fitted and scored on the
                  same held-out series)
    ============  ==========================================================================

SCCTS (:func:`load_sccts`, :func:`generate_sccts`)
    One split ``train`` with all series (unsupervised discovery). Family = class index in the
    order A Normal, B Cyclic, C Increasing trend, D Decreasing trend, E Upward shift,
    F Downward shift (the UCI file's row blocks). The metadata entry ``superfamily`` groups
    them as the paper does: {A, B} -> 0, {C, D} -> 1, {E, F} -> 2.

Standardisation (``standardize=True``) is *per time column*: every column ``x[:, 0, t, d]`` is
shifted by its mean over series and divided by its (population, ``ddof=0``) standard deviation,
as ``sklearn.preprocessing.StandardScaler`` does on the ``[series, length]`` table in the
paper's SCCTS experiment. Columns with zero spread are divided by 1. For Epilepsy2 the
statistics come from the ``train`` split only and are applied to every split (no leakage).
The statistics are recorded in the metadata under ``standardization``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ._envdata import DataError, EnvData

__all__ = [
    "read_ts",
    "load_epilepsy2",
    "load_sccts",
    "generate_sccts",
    "SCCTS_CLASS_NAMES",
    "SCCTS_SUPERFAMILY",
    "SCCTS_SUPERFAMILY_NAMES",
]

#: SCCTS class names, indexed by family (A..F in the paper, the UCI file's block order).
SCCTS_CLASS_NAMES = ("Normal", "Cyclic", "Increasing trend", "Decreasing trend", "Upward shift", "Downward shift")
#: The paper's grouping of the six classes into three families: {A,B}, {C,D}, {E,F}.
SCCTS_SUPERFAMILY = (0, 0, 1, 1, 2, 2)
SCCTS_SUPERFAMILY_NAMES = ("Normal/Cyclic", "Increasing/Decreasing trend", "Upward/Downward shift")

_TRUE = {"true": True, "false": False}


# ---------------------------------------------------------------------------------------
# .ts reader
# ---------------------------------------------------------------------------------------
def _err(src: str, line: int | None, expected: str, found: str) -> DataError:
    where = f"{src}: line {line}" if line is not None else src
    return DataError(f"{where}: expected {expected}, found {found}")


def _short(s: str, n: int = 60) -> str:
    s = s.strip()
    return repr(s if len(s) <= n else s[:n] + "...")


def _parse_bool(src: str, lineno: int, tag: str, words: list[str]) -> bool:
    if len(words) != 1 or words[0].lower() not in _TRUE:
        raise _err(src, lineno, f"'@{tag} true' or '@{tag} false'", _short(" ".join(words) or "<nothing>"))
    return _TRUE[words[0].lower()]


def _parse_int(src: str, lineno: int, tag: str, words: list[str]) -> int:
    try:
        if len(words) != 1:
            raise ValueError
        v = int(words[0])
        if v < 1:
            raise ValueError
    except ValueError:
        raise _err(src, lineno, f"'@{tag} <positive integer>'", _short(" ".join(words) or "<nothing>")) from None
    return v


def _parse_values(src: str, lineno: int, dim: int, field: str) -> np.ndarray:
    tokens = field.split(",")
    if tokens and tokens[-1].strip() == "" and len(tokens) > 1:  # tolerate a trailing comma
        tokens = tokens[:-1]
    try:
        vals = np.asarray(tokens, dtype=np.float64)
        ok = bool(np.all(np.isfinite(vals)))
    except ValueError:
        ok = False
        vals = None
    if ok:
        return vals  # type: ignore[return-value]
    for k, tok in enumerate(tokens):
        s = tok.strip()
        if s == "?" or s.lower() == "nan":
            raise _err(
                src,
                lineno,
                "no missing values (missing values are not supported)",
                f"{s!r} in dimension {dim} at position {k}",
            )
        try:
            v = float(s)
        except ValueError:
            raise _err(
                src, lineno, "comma-separated numbers", f"{_short(tok)} in dimension {dim} at position {k}"
            ) from None
        if not math.isfinite(v):
            raise _err(src, lineno, "finite numbers", f"{s!r} in dimension {dim} at position {k}")
    raise _err(src, lineno, "comma-separated numbers", _short(field))  # pragma: no cover


def read_ts(path: str | os.PathLike) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Read a UEA/sktime ``.ts`` text file of equal-length series.

    Supported: comment lines (``#``), blank lines, the header tags ``@problemName``,
    ``@timeStamps false``, ``@missing``, ``@univariate``, ``@dimensions``, ``@equalLength``,
    ``@seriesLength``, ``@classLabel true <labels...>`` / ``@classLabel false``, then ``@data``
    and one series per line: comma-separated values, dimensions separated by ``:``, and the
    class label as the last ``:`` field when ``@classLabel true``. Tags are case-insensitive;
    ``\\r\\n`` line ends are fine.

    Not supported (each raises :class:`DataError`): time-stamped series (``@timeStamps true``),
    missing values (``?`` or ``NaN``), series of unequal length.

    Args:
        path: the ``.ts`` file.

    Returns:
        ``(values, labels, header)``:

        - ``values``: float64 array ``[series, length]`` for univariate files, or
          ``[series, length, dims]`` when there is more than one dimension;
        - ``labels``: one label string per series (as written in the file), or ``[]`` when the
          file has no class labels;
        - ``header``: the header as a dict with lower-case keys without ``@``:
          ``problemname`` (str), ``timestamps``/``missing``/``univariate``/``equallength``
          (bool), ``dimensions``/``serieslength`` (int), ``classlabel`` (bool) and
          ``class_labels`` (list of str, the declared labels) -- only the tags present -- plus
          ``n_series``, ``n_dims`` and ``length`` as read.

    Raises:
        DataError: on malformed input, naming the file, the line number, what was expected and
            what was found.
        FileNotFoundError: when the file does not exist.
    """
    p = Path(path)
    src = str(p)
    if not p.exists():
        raise FileNotFoundError(f"{src}: no such file")
    header: dict[str, Any] = {}
    rows: list[np.ndarray] = []
    labels: list[str] = []
    in_data = False
    n_dims: int | None = None
    length: int | None = None
    first_data_line: int | None = None
    with open(p, encoding="utf-8", errors="replace", newline=None) as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                if not line.startswith("@"):
                    raise _err(
                        src, lineno, "a header line starting with '@' (or '@data' before the series)", _short(line)
                    )
                words = line.split()
                tag = words[0][1:].lower()
                args = words[1:]
                if tag == "data":
                    if args:
                        raise _err(src, lineno, "'@data' alone on its line", _short(line))
                    in_data = True
                    continue
                if tag == "problemname":
                    header["problemname"] = " ".join(args)
                elif tag in ("timestamps", "missing", "univariate", "equallength"):
                    header[tag] = _parse_bool(src, lineno, words[0][1:], args)
                    if tag == "timestamps" and header[tag]:
                        raise _err(
                            src, lineno, "'@timeStamps false' (time-stamped series are not supported)", _short(line)
                        )
                    if tag == "equallength" and not header[tag]:
                        raise _err(
                            src, lineno, "'@equalLength true' (unequal-length series are not supported)", _short(line)
                        )
                elif tag in ("dimensions", "serieslength"):
                    header[tag] = _parse_int(src, lineno, words[0][1:], args)
                elif tag == "classlabel":
                    if not args or args[0].lower() not in _TRUE:
                        raise _err(src, lineno, "'@classLabel true <labels...>' or '@classLabel false'", _short(line))
                    header["classlabel"] = _TRUE[args[0].lower()]
                    if header["classlabel"]:
                        if len(args) < 2:
                            raise _err(src, lineno, "the class labels after '@classLabel true'", _short(line))
                        header["class_labels"] = args[1:]
                    elif len(args) > 1:
                        raise _err(src, lineno, "nothing after '@classLabel false'", _short(line))
                elif tag == "targetlabel":
                    raise _err(
                        src,
                        lineno,
                        "a classification file ('@targetLabel' regression files are not supported)",
                        _short(line),
                    )
                else:
                    header[tag] = " ".join(args)  # unknown tags are kept verbatim
                continue
            # ---- a series line ----
            if line.startswith("@"):
                raise _err(src, lineno, "a series line after '@data'", _short(line))
            if line.startswith("("):
                raise _err(
                    src, lineno, "comma-separated values (time-stamped '(t,v)' series are not supported)", _short(line)
                )
            fields = line.split(":")
            has_label = bool(header.get("classlabel", False))
            if has_label:
                if len(fields) < 2:
                    raise _err(
                        src,
                        lineno,
                        "values followed by ':<label>' (the file declares '@classLabel true')",
                        f"no ':' in {_short(line)}",
                    )
                label = fields[-1].strip()
                fields = fields[:-1]
                declared = header.get("class_labels")
                if label == "":
                    raise _err(src, lineno, "a class label after the last ':'", "an empty label")
                if declared is not None and label not in declared:
                    raise _err(src, lineno, f"a label declared in '@classLabel' ({', '.join(declared)})", repr(label))
                labels.append(label)
            dims = [_parse_values(src, lineno, d, f) for d, f in enumerate(fields)]
            if n_dims is None:
                n_dims, length, first_data_line = len(dims), dims[0].size, lineno
                want_dims = header.get("dimensions")
                if header.get("univariate") is True:
                    want_dims = 1
                if want_dims is not None and n_dims != want_dims:
                    hint = (
                        ""
                        if has_label or n_dims != want_dims + 1
                        else (" (a ':label' field? the file lacks '@classLabel true')")
                    )
                    raise _err(
                        src,
                        lineno,
                        f"{want_dims} dimension(s) per series as declared in the header",
                        f"{n_dims} ':'-separated fields{hint}",
                    )
                if "serieslength" in header and length != header["serieslength"]:
                    raise _err(
                        src, lineno, f"{header['serieslength']} values per dimension ('@seriesLength')", f"{length}"
                    )
            elif len(dims) != n_dims:
                raise _err(
                    src, lineno, f"{n_dims} dimension(s) per series (as on line {first_data_line})", f"{len(dims)}"
                )
            for d, v in enumerate(dims):
                if v.size != length:
                    raise _err(
                        src,
                        lineno,
                        f"{length} values in dimension {d} (equal-length series, as on line {first_data_line})",
                        f"{v.size}",
                    )
            rows.append(np.stack(dims, axis=-1))
    if not in_data:
        raise _err(src, None, "an '@data' line before the series", "none")
    if not rows:
        raise _err(src, None, "at least one series after '@data'", "none")
    values = np.stack(rows, axis=0)  # [S, L, D]
    if values.shape[-1] == 1:
        values = values[..., 0]
    header["n_series"] = int(values.shape[0])
    header["n_dims"] = int(n_dims or 1)
    header["length"] = int(length or 0)
    return values, labels, header


# ---------------------------------------------------------------------------------------
# helpers shared by the loaders
# ---------------------------------------------------------------------------------------
def _column_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-time-column mean and std over series of ``x [S, 1, L, D]`` -> ``[L, D]`` each."""
    mean = x.mean(axis=(0, 1))
    std = x.std(axis=(0, 1))
    std = np.where(std > 0, std, 1.0)
    return mean, std


def _as_envdata(
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


def _label_indices(labels: list[str], declared: list[str] | None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Family index of every label and the family names (declared order, else sorted)."""
    names = list(declared) if declared else sorted(set(labels), key=lambda s: (len(s), s))
    for lab in labels:
        if lab not in names:
            names.append(lab)
    lookup = {n: i for i, n in enumerate(names)}
    return np.asarray([lookup[lab] for lab in labels], dtype=np.int64), tuple(names)


# ---------------------------------------------------------------------------------------
# Epilepsy2
# ---------------------------------------------------------------------------------------
def load_epilepsy2(
    path: str | os.PathLike, *, standardize: bool = False, test_path: str | os.PathLike | None = None, n_train: int = 60
) -> tuple[dict[str, EnvData], dict[str, Any]]:
    """The Epilepsy2 EEG series (UEA archive ``.ts`` files) as a mixerdsr dataset.

    Each series is one environment with one trajectory: ``x [series, 1, 178, 1]``,
    ``t = arange(178)`` per env, ``family`` = index of the series' class label in the file's
    ``@classLabel`` list (for Epilepsy2, ``0`` -> family 0, ``1`` -> family 1). The label
    meaning (seizure or not) is not stated in the file; see ``shared/data/README.md``.

    Splits (see the module docstring): ``train`` = rows ``0 .. n_train-1`` of ``path``;
    ``adapt_train`` = rows ``n_train ..`` of ``path`` (the archive's 20 validation rows), or every
    series of ``test_path`` when given (the archive's test file); ``test`` and ``adapt_test``
    hold the same series as ``train`` and ``adapt_train`` (sequence models are evaluated on the
    series they were fitted on).

    Args:
        path: the training ``.ts`` file (``Epilepsy2_TRAIN.ts``, 80 series).
        standardize: per-time-column standardisation with statistics of ``train``, applied to
            every split.
        test_path: optional full test ``.ts`` file; its series become the adaptation splits.
        n_train: number of leading rows used for training (default 60).

    Returns:
        ``(splits, meta)``; ``meta`` holds ``name``, ``source``, ``test_source``, ``n_train``,
        ``rows`` (which file rows each split holds), ``class_labels`` and ``standardization``.

    Raises:
        DataError: malformed file, a test file of another length/dimension, or too few rows.
    """
    values, labels, header = read_ts(path)
    src = str(path)
    if values.ndim == 2:
        values = values[..., None]
    n = values.shape[0]
    if not labels:
        raise _err(src, None, "class labels ('@classLabel true' and ':label' on every series)", "no labels")
    if not 1 <= n_train <= n:
        raise _err(src, None, f"at least n_train={n_train} series", f"{n}")
    if test_path is None and n_train == n:
        raise _err(
            src,
            None,
            f"more than n_train={n_train} series (rows after n_train are the adaptation set)",
            f"{n} series; pass test_path or a smaller n_train",
        )
    declared = header.get("class_labels")
    fam, names = _label_indices(labels, declared)
    x_all = values[:, None, :, :]  # [S, 1, L, D]
    x_tr, f_tr = x_all[:n_train], fam[:n_train]
    rows = {"train": [0, n_train], "test": [0, n_train]}
    if test_path is None:
        x_ad, f_ad = x_all[n_train:], fam[n_train:]
        ad_src = src
        rows["adapt_train"] = rows["adapt_test"] = [n_train, n]
    else:
        tv, tl, th = read_ts(test_path)
        ad_src = str(test_path)
        if tv.ndim == 2:
            tv = tv[..., None]
        if tv.shape[1:] != values.shape[1:]:
            raise _err(
                ad_src,
                None,
                f"series of length {values.shape[1]} with {values.shape[2]} dimension(s) like {src}",
                f"length {tv.shape[1]} with {tv.shape[2]} dimension(s)",
            )
        if tl:
            f_ad, names2 = _label_indices(tl, list(names))
            names = names2
        else:
            f_ad = -np.ones(tv.shape[0], dtype=np.int64)
        x_ad = tv[:, None, :, :]
        rows["adapt_train"] = rows["adapt_test"] = [0, int(tv.shape[0])]
    std_meta: dict[str, Any] = {"kind": "none"}
    if standardize:
        mean, std = _column_stats(x_tr)
        x_tr = (x_tr - mean) / std
        x_ad = (x_ad - mean) / std
        std_meta = {
            "kind": "per-time-column",
            "fitted_on": "train",
            "mean": mean[:, 0].tolist() if mean.shape[1] == 1 else mean.tolist(),
            "std": std[:, 0].tolist() if std.shape[1] == 1 else std.tolist(),
        }
    splits = {}
    for name, (x, f, s, r) in {
        "train": (x_tr, f_tr, src, rows["train"]),
        "test": (x_tr, f_tr, src, rows["test"]),
        "adapt_train": (x_ad, f_ad, ad_src, rows["adapt_train"]),
        "adapt_test": (x_ad, f_ad, ad_src, rows["adapt_test"]),
    }.items():
        env_names = tuple(f"row{i}" for i in range(r[0], r[1]))
        splits[name] = _as_envdata(
            np.ascontiguousarray(x), f, family_names=names, env_names=env_names, source=s, split=name
        )
    meta = {
        "name": "epilepsy2",
        "source": src,
        "test_source": None if test_path is None else ad_src,
        "problem_name": header.get("problemname"),
        "n_train": int(n_train),
        "rows": rows,
        "class_labels": list(names),
        "standardize": bool(standardize),
        "standardization": std_meta,
    }
    return splits, meta


# ---------------------------------------------------------------------------------------
# Synthetic Control Chart Time Series
# ---------------------------------------------------------------------------------------
def _sccts_dataset(
    x2d: np.ndarray, family: np.ndarray, *, standardize: bool, source: str, meta_extra: dict[str, Any]
) -> tuple[dict[str, EnvData], dict[str, Any]]:
    x = x2d.astype(np.float64)[:, None, :, None]
    std_meta: dict[str, Any] = {"kind": "none"}
    if standardize:
        mean, std = _column_stats(x)
        x = (x - mean) / std
        std_meta = {
            "kind": "per-time-column",
            "fitted_on": "train",
            "mean": mean[:, 0].tolist(),
            "std": std[:, 0].tolist(),
        }
    train = _as_envdata(x, family, family_names=SCCTS_CLASS_NAMES, env_names=None, source=source, split="train")
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
                raise _err(src, lineno, "whitespace-separated numbers", _short(bad)) from None
            if not np.all(np.isfinite(v)):
                raise _err(src, lineno, "finite numbers", "NaN/inf")
            if width is None:
                width, first = v.size, lineno
            elif v.size != width:
                raise _err(src, lineno, f"{width} values per line (as on line {first})", f"{v.size}")
            rows.append(v)
    if not rows:
        raise _err(src, None, "series, one per line", "an empty file")
    n = len(rows)
    if n % 6:
        raise _err(src, None, "a number of series divisible by 6 (six class blocks of equal size)", f"{n} series")
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
