"""The UEA/sktime ``.ts`` reader and the Epilepsy2 EEG dataset (every series an environment;
conventions in :mod:`._series`).

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
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ._envdata import EnvData
from ._series import as_envdata, column_stats, series_error, short

__all__ = ["read_ts", "load_epilepsy2"]

_TRUE = {"true": True, "false": False}


def _parse_bool(src: str, lineno: int, tag: str, words: list[str]) -> bool:
    if len(words) != 1 or words[0].lower() not in _TRUE:
        raise series_error(src, lineno, f"'@{tag} true' or '@{tag} false'", short(" ".join(words) or "<nothing>"))
    return _TRUE[words[0].lower()]


def _parse_int(src: str, lineno: int, tag: str, words: list[str]) -> int:
    try:
        if len(words) != 1:
            raise ValueError
        v = int(words[0])
        if v < 1:
            raise ValueError
    except ValueError:
        raise series_error(src, lineno, f"'@{tag} <positive integer>'", short(" ".join(words) or "<nothing>")) from None
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
            raise series_error(
                src,
                lineno,
                "no missing values (missing values are not supported)",
                f"{s!r} in dimension {dim} at position {k}",
            )
        try:
            v = float(s)
        except ValueError:
            raise series_error(
                src, lineno, "comma-separated numbers", f"{short(tok)} in dimension {dim} at position {k}"
            ) from None
        if not math.isfinite(v):
            raise series_error(src, lineno, "finite numbers", f"{s!r} in dimension {dim} at position {k}")
    raise series_error(src, lineno, "comma-separated numbers", short(field))  # pragma: no cover


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
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    reader = _TsReader(str(p))
    with open(p, encoding="utf-8", errors="replace", newline=None) as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if reader.in_data:
                reader.series_line(lineno, line)
            else:
                reader.header_line(lineno, line)
    return reader.result()


class _TsReader:
    """The state of reading one ``.ts`` file, line by line (:func:`read_ts`)."""

    def __init__(self, src: str):
        self.src = src
        self.header: dict[str, Any] = {}
        self.rows: list[np.ndarray] = []
        self.labels: list[str] = []
        self.in_data = False
        self.n_dims: int | None = None
        self.length: int | None = None
        self.first_data_line: int | None = None

    def header_line(self, lineno: int, line: str) -> None:
        src, header = self.src, self.header
        if not line.startswith("@"):
            raise series_error(
                src, lineno, "a header line starting with '@' (or '@data' before the series)", short(line)
            )
        words = line.split()
        tag, args = words[0][1:].lower(), words[1:]
        if tag == "data":
            if args:
                raise series_error(src, lineno, "'@data' alone on its line", short(line))
            self.in_data = True
        elif tag == "problemname":
            header["problemname"] = " ".join(args)
        elif tag in ("timestamps", "missing", "univariate", "equallength"):
            header[tag] = _parse_bool(src, lineno, words[0][1:], args)
            if tag == "timestamps" and header[tag]:
                raise series_error(
                    src, lineno, "'@timeStamps false' (time-stamped series are not supported)", short(line)
                )
            if tag == "equallength" and not header[tag]:
                raise series_error(
                    src, lineno, "'@equalLength true' (unequal-length series are not supported)", short(line)
                )
        elif tag in ("dimensions", "serieslength"):
            header[tag] = _parse_int(src, lineno, words[0][1:], args)
        elif tag == "classlabel":
            self._class_label(lineno, line, args)
        elif tag == "targetlabel":
            raise series_error(
                src, lineno, "a classification file ('@targetLabel' regression files are not supported)", short(line)
            )
        else:
            header[tag] = " ".join(args)  # unknown tags are kept verbatim

    def _class_label(self, lineno: int, line: str, args: list[str]) -> None:
        src = self.src
        if not args or args[0].lower() not in _TRUE:
            raise series_error(src, lineno, "'@classLabel true <labels...>' or '@classLabel false'", short(line))
        self.header["classlabel"] = _TRUE[args[0].lower()]
        if self.header["classlabel"]:
            if len(args) < 2:
                raise series_error(src, lineno, "the class labels after '@classLabel true'", short(line))
            self.header["class_labels"] = args[1:]
        elif len(args) > 1:
            raise series_error(src, lineno, "nothing after '@classLabel false'", short(line))

    def series_line(self, lineno: int, line: str) -> None:
        src, header = self.src, self.header
        if line.startswith("@"):
            raise series_error(src, lineno, "a series line after '@data'", short(line))
        if line.startswith("("):
            raise series_error(
                src, lineno, "comma-separated values (time-stamped '(t,v)' series are not supported)", short(line)
            )
        fields = line.split(":")
        has_label = bool(header.get("classlabel", False))
        if has_label:
            if len(fields) < 2:
                raise series_error(
                    src,
                    lineno,
                    "values followed by ':<label>' (the file declares '@classLabel true')",
                    f"no ':' in {short(line)}",
                )
            label = fields[-1].strip()
            fields = fields[:-1]
            declared = header.get("class_labels")
            if label == "":
                raise series_error(src, lineno, "a class label after the last ':'", "an empty label")
            if declared is not None and label not in declared:
                raise series_error(
                    src, lineno, f"a label declared in '@classLabel' ({', '.join(declared)})", repr(label)
                )
            self.labels.append(label)
        dims = [_parse_values(src, lineno, d, f) for d, f in enumerate(fields)]
        self._check_shape(lineno, dims, has_label)
        self.rows.append(np.stack(dims, axis=-1))

    def _check_shape(self, lineno: int, dims: list[np.ndarray], has_label: bool) -> None:
        src, header = self.src, self.header
        if self.n_dims is None:
            self.n_dims, self.length, self.first_data_line = len(dims), dims[0].size, lineno
            want_dims = 1 if header.get("univariate") is True else header.get("dimensions")
            if want_dims is not None and self.n_dims != want_dims:
                hint = (
                    ""
                    if has_label or self.n_dims != want_dims + 1
                    else (" (a ':label' field? the file lacks '@classLabel true')")
                )
                raise series_error(
                    src,
                    lineno,
                    f"{want_dims} dimension(s) per series as declared in the header",
                    f"{self.n_dims} ':'-separated fields{hint}",
                )
            if "serieslength" in header and self.length != header["serieslength"]:
                raise series_error(
                    src, lineno, f"{header['serieslength']} values per dimension ('@seriesLength')", f"{self.length}"
                )
        elif len(dims) != self.n_dims:
            raise series_error(
                src,
                lineno,
                f"{self.n_dims} dimension(s) per series (as on line {self.first_data_line})",
                f"{len(dims)}",
            )
        for d, v in enumerate(dims):
            if v.size != self.length:
                raise series_error(
                    src,
                    lineno,
                    f"{self.length} values in dimension {d} (equal-length series, as on line {self.first_data_line})",
                    f"{v.size}",
                )

    def result(self) -> tuple[np.ndarray, list[str], dict[str, Any]]:
        if not self.in_data:
            raise series_error(self.src, None, "an '@data' line before the series", "none")
        if not self.rows:
            raise series_error(self.src, None, "at least one series after '@data'", "none")
        values = np.stack(self.rows, axis=0)  # [S, L, D]
        if values.shape[-1] == 1:
            values = values[..., 0]
        header = self.header
        header["n_series"] = int(values.shape[0])
        header["n_dims"] = int(self.n_dims or 1)
        header["length"] = int(self.length or 0)
        return values, self.labels, header


def _test_file(
    path: str | os.PathLike, shape: tuple[int, ...], src: str, names: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The series of an Epilepsy2 test file as ``(x [S, 1, L, D], family [S], class names)``
    (-1 families without labels; names extended by labels the training file lacked);
    DataError when its series are not of ``shape`` ``(L, D)`` like the training file ``src``'s."""
    tv, tl, _ = read_ts(path)
    if tv.ndim == 2:
        tv = tv[..., None]
    if tv.shape[1:] != shape:
        raise series_error(
            str(path),
            None,
            f"series of length {shape[0]} with {shape[1]} dimension(s) like {src}",
            f"length {tv.shape[1]} with {tv.shape[2]} dimension(s)",
        )
    if tl:
        fam, names = _label_indices(tl, list(names))
    else:
        fam = -np.ones(tv.shape[0], dtype=np.int64)
    return tv[:, None, :, :], fam, names


def _label_indices(labels: list[str], declared: list[str] | None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Family index of every label and the family names (declared order, else sorted)."""
    names = list(declared) if declared else sorted(set(labels), key=lambda s: (len(s), s))
    for lab in labels:
        if lab not in names:
            names.append(lab)
    lookup = {n: i for i, n in enumerate(names)}
    return np.asarray([lookup[lab] for lab in labels], dtype=np.int64), tuple(names)


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
        raise series_error(src, None, "class labels ('@classLabel true' and ':label' on every series)", "no labels")
    if not 1 <= n_train <= n:
        raise series_error(src, None, f"at least n_train={n_train} series", f"{n}")
    if test_path is None and n_train == n:
        raise series_error(
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
        ad_src = str(test_path)
        x_ad, f_ad, names = _test_file(test_path, values.shape[1:], src, names)
        rows["adapt_train"] = rows["adapt_test"] = [0, int(x_ad.shape[0])]
    std_meta: dict[str, Any] = {"kind": "none"}
    if standardize:
        mean, std = column_stats(x_tr)
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
        splits[name] = as_envdata(
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
