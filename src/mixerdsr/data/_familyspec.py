"""ODE family files: the TOML format, its parsing and checks, and the built-in files.

A family file looks like this (the built-in benchmarks in ``data/families/`` use exactly
this format)::

    name = "my-benchmark"
    description = "one line shown by `mixerdsr data list`"

    [protocol]
    seed = 2024
    steps = 100                   # time points per trajectory: t = arange(0, T, T/steps)
    train_range = [0.9, 1.1]      # train/test parameters in [0.9 ref, 1.1 ref]
    adapt_range = [0.8, 1.2]      # adaptation parameters ref * linspace(0.8, 1.2, envs)
    clean = false                 # true: leak-free variant (see below)
    train       = {envs = 5, trajectories = 4}
    test        = {envs = 5, trajectories = 32}
    adapt_train = {envs = 1, trajectories = 1}
    adapt_test  = {envs = 1, trajectories = 32}

    [[family]]
    id = 28
    name = "Pendulum without friction"
    rhs = ["x1", "-c0*sin(x0)"]   # dx_i/dt, in x0..x{D-1} and c0..c{P-1} (see _expr.py)
    params = [0.9]                # reference parameters c0, c1, ...
    ics = [[-1.9, 0.0], [0.3, 0.8]]   # the two reference initial conditions
    horizon = 15                  # time horizon T
    transient = 0                 # optional: time integrated from each IC and dropped before t = 0

The generation protocol (the ``[protocol]`` table) is described in
:mod:`mixerdsr.data._families`.

**Limits** (checked when a file is parsed, before anything is allocated; each refusal is a
:class:`DataError` naming the key, the value and the limit): at most :data:`MAX_ENVS`
environments per family and split, :data:`MAX_TRAJECTORIES` trajectories per environment,
:data:`MAX_STEPS` time points, :data:`MAX_VALUES` stored values per split (families x envs x
trajectories x steps x largest dimension), a horizon of at most :data:`MAX_HORIZON` whose grid
``T/steps`` has distinct points, a seed below ``2**32``, and finite environment parameters.
Generation checks the sizes again for its own seed and splits, and caps the work of each
trajectory (:mod:`._families`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import typing
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ._envdata import SPLITS, DataError
from ._expr import CompiledRHS, compile_rhs

__all__ = [
    "FamilyDef",
    "FamilySpec",
    "Protocol",
    "SplitLayout",
    "builtin_family_files",
    "check_sizes",
    "load_family_spec",
    "parse_family_spec",
    "time_grid",
]

#: Most environments per family in one split.
MAX_ENVS = 10_000
#: Most trajectories per environment.
MAX_TRAJECTORIES = 100_000
#: Most time points per trajectory (``protocol.steps``).
MAX_STEPS = 100_000
#: Most stored values in one split: families x envs x trajectories x steps x largest dimension
#: (800 MB as float64).
MAX_VALUES = 100_000_000
#: Largest time horizon of a family (rescale time for slower systems).
MAX_HORIZON = 1e6
_MAX_SEED = 2**32 - 1  # np.random.RandomState accepts seeds in [0, 2**32 - 1]


# ----------------------------------------------------------------------------------------------
# Specification objects
# ----------------------------------------------------------------------------------------------


@typing.no_type_check  # validates itself, naming the key
@dataclasses.dataclass(frozen=True)
class SplitLayout:
    """Number of environments (per family) and trajectories (per environment) of one split."""

    envs: int
    trajectories: int


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How environments, initial conditions and trajectories are generated (see module doc)."""

    splits: Mapping[str, SplitLayout]
    seed: int = 2024
    steps: int = 100
    train_range: tuple[float, float] = (0.9, 1.1)
    adapt_range: tuple[float, float] = (0.8, 1.2)
    clean: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "steps": self.steps,
            "train_range": list(self.train_range),
            "adapt_range": list(self.adapt_range),
            "clean": self.clean,
            "splits": {k: {"envs": v.envs, "trajectories": v.trajectories} for k, v in self.splits.items()},
        }


@dataclasses.dataclass(frozen=True, eq=False)
class FamilyDef:
    """One ODE family: ``dx/dt = rhs(x, c)`` with reference parameters, two reference ICs, a
    horizon and a transient (time integrated from each IC and dropped before the first saved
    point, so that trajectories of a chaotic system start on its attractor)."""

    name: str
    rhs: tuple[str, ...]
    params: tuple[float, ...]
    ics: tuple[tuple[float, ...], tuple[float, ...]]
    horizon: float
    id: int | str | None = None
    transient: float = 0.0
    fn: CompiledRHS | None = dataclasses.field(default=None, repr=False)

    @property
    def dims(self) -> int:
        return len(self.rhs)

    @property
    def n_params(self) -> int:
        return len(self.params)

    @property
    def label(self) -> str:
        """Short label: the id when given, else the name."""
        return str(self.id) if self.id is not None else self.name

    @property
    def param_names(self) -> list[str]:
        return [f"c{j}" for j in range(self.n_params)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.id,
            "rhs": list(self.rhs),
            "params": list(self.params),
            "param_names": self.param_names,
            "ics": [list(v) for v in self.ics],
            "horizon": self.horizon,
            "transient": self.transient,
            "dims": self.dims,
        }


@dataclasses.dataclass(frozen=True, eq=False)
class FamilySpec:
    """A parsed family file: the families (in file order) and the generation protocol."""

    name: str
    families: tuple[FamilyDef, ...]
    protocol: Protocol
    description: str = ""
    source: str = "<string>"

    def with_protocol(self, *, splits: Mapping[str, Any] | None = None, **changes: Any) -> "FamilySpec":
        """A copy with protocol fields replaced.

        ``splits`` maps split names to ``(envs, trajectories)`` pairs or :class:`SplitLayout`;
        only the splits given are kept (so a subset can be generated quickly). Other keyword
        arguments replace :class:`Protocol` fields (``seed``, ``steps``, ``clean``, ranges).
        """
        proto = self.protocol
        if splits is not None:
            new = {}
            for k, v in splits.items():
                if k not in SPLITS:
                    raise DataError(f"{self.source}: unknown split '{k}' (expected one of {list(SPLITS)})")
                lay = v if isinstance(v, SplitLayout) else SplitLayout(*v)
                _check_layout(self.source, k, lay)
                new[k] = lay
            changes["splits"] = new
        for k in ("train_range", "adapt_range"):
            if k in changes:
                changes[k] = tuple(float(v) for v in changes[k])
        return dataclasses.replace(self, protocol=dataclasses.replace(proto, **changes))


# ----------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------

_TOP_KEYS = {"name", "description", "protocol", "family"}
_PROTO_KEYS = {"seed", "steps", "train_range", "adapt_range", "clean", *SPLITS}
_FAM_KEYS = {"name", "id", "rhs", "params", "ics", "horizon", "transient"}


def _num(src: str, key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise DataError(f"{src}: key '{key}': expected a finite number, found {v!r}")
    return float(v)


def _int(src: str, key: str, v: Any, lo: int = 1, hi: int | None = None) -> int:
    bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        hint = " (a float; write integers without a decimal point or exponent)" if isinstance(v, float) else ""
        raise DataError(f"{src}: key '{key}': expected an integer {bounds}, found {v!r}{hint}")
    if v < lo:
        raise DataError(f"{src}: key '{key}': expected an integer {bounds}, found {v!r}")
    if hi is not None and v > hi:
        raise DataError(f"{src}: key '{key}': {v!r} is above the allowed maximum {hi}")
    return int(v)


def _range(src: str, key: str, v: Any) -> tuple[float, float]:
    if not isinstance(v, list) or len(v) != 2:
        raise DataError(f"{src}: key '{key}': expected [low, high], found {v!r}")
    lo, hi = (_num(src, key, a) for a in v)
    if not lo <= hi:
        raise DataError(f"{src}: key '{key}': expected low <= high, found {v!r}")
    return lo, hi


def _check_layout(src: str, split: str, lay: SplitLayout) -> None:
    _int(src, f"protocol.{split}.envs", lay.envs, hi=MAX_ENVS)
    _int(src, f"protocol.{split}.trajectories", lay.trajectories, hi=MAX_TRAJECTORIES)


def _check_grid(src: str, where: str, horizon: float, steps: int) -> None:
    """The time grid ``arange(0, T, T/steps)`` must have ``steps`` distinct points."""
    if not 0 < horizon <= MAX_HORIZON:
        raise DataError(
            f"{src}: {where}.horizon: expected a number in (0, {MAX_HORIZON:g}], found {horizon!r} "
            f"(rescale time for slower systems)"
        )
    dt = horizon / steps
    ok = bool(dt >= np.finfo(np.float64).tiny)
    if ok:
        t = time_grid(horizon, steps)
        ok = len(t) == steps and bool(np.all(np.diff(t) > 0))
    if not ok:
        raise DataError(
            f"{src}: {where}.horizon: {horizon!r} is too small for {steps} distinct time points (protocol.steps)"
        )


def check_sizes(spec: FamilySpec, names: Sequence[str], seed: Any = None) -> None:
    """Refuse protocols too large to store or nonsensical to integrate (before any work is done)."""
    src, proto = spec.source, spec.protocol
    _int(src, "protocol.seed" if seed is None else "seed", proto.seed if seed is None else seed, lo=0, hi=_MAX_SEED)
    steps = _int(src, "protocol.steps", proto.steps, lo=2, hi=MAX_STEPS)
    for i, f in enumerate(spec.families):
        _check_grid(src, f"family[{i}] ({f.name})", f.horizon, steps)
    dmax = max(f.dims for f in spec.families)
    for sp in names:
        if sp not in proto.splits:
            continue
        lay = proto.splits[sp]
        _check_layout(src, sp, lay)
        total = len(spec.families) * lay.envs * lay.trajectories * steps * dmax
        if total > MAX_VALUES:
            raise DataError(
                f"{src}: split '{sp}' would store {total:,} values ({len(spec.families)} families x "
                f"{lay.envs} envs x {lay.trajectories} trajectories x {steps} steps x {dmax} dims), "
                f"above the allowed maximum {MAX_VALUES:,}; lower protocol.{sp}.envs, "
                f"protocol.{sp}.trajectories or protocol.steps"
            )


def _unknown(src: str, where: str, d: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        raise DataError(f"{src}: {where}: unknown key(s) {extra} (allowed: {sorted(allowed)})")


def _parse_family(src: str, i: int, d: Any) -> FamilyDef:
    where = f"family[{i}]"
    if not isinstance(d, Mapping):
        raise DataError(f"{src}: {where}: expected a table, found {type(d).__name__}")
    _unknown(src, where, d, _FAM_KEYS)
    for k in ("name", "rhs", "params", "ics", "horizon"):
        if k not in d:
            raise DataError(f"{src}: {where}: missing key '{k}'")
    name = d["name"]
    if not isinstance(name, str) or not name:
        raise DataError(f"{src}: {where}.name: expected a non-empty string, found {name!r}")
    where = f"family[{i}] ({name})"
    fid = d.get("id")
    if fid is not None and (isinstance(fid, bool) or not isinstance(fid, (int, str))):
        raise DataError(f"{src}: {where}.id: expected an integer or string, found {fid!r}")
    rhs = d["rhs"]
    if not isinstance(rhs, list) or not rhs or not all(isinstance(e, str) for e in rhs):
        raise DataError(f"{src}: {where}.rhs: expected a non-empty list of expression strings, found {rhs!r}")
    params = d["params"]
    if not isinstance(params, list):
        raise DataError(f"{src}: {where}.params: expected a list of numbers, found {params!r}")
    params_t = tuple(_num(src, f"{where}.params", v) for v in params)
    dims = len(rhs)
    ics = d["ics"]
    if not isinstance(ics, list) or len(ics) != 2 or not all(isinstance(v, list) and len(v) == dims for v in ics):
        raise DataError(
            f"{src}: {where}.ics: expected two initial conditions of length {dims} (one value per state), found {ics!r}"
        )
    ics_t = tuple(tuple(_num(src, f"{where}.ics", v) for v in ic) for ic in ics)
    horizon = _num(src, f"{where}.horizon", d["horizon"])
    if horizon <= 0:
        raise DataError(f"{src}: {where}.horizon: expected a positive number, found {horizon!r}")
    if horizon > MAX_HORIZON:
        raise DataError(
            f"{src}: {where}.horizon: {horizon!r} is above the allowed maximum {MAX_HORIZON:g} "
            f"(rescale time for slower systems)"
        )
    transient = _num(src, f"{where}.transient", d.get("transient", 0.0))
    if not 0 <= transient <= MAX_HORIZON:
        raise DataError(f"{src}: {where}.transient: expected a number in [0, {MAX_HORIZON:g}], found {transient!r}")
    try:
        fn = compile_rhs(rhs, dims, len(params_t))
    except DataError as err:
        raise DataError(f"{src}: {where}.rhs: {err}") from None
    return FamilyDef(
        name=name,
        rhs=tuple(rhs),
        params=params_t,
        ics=ics_t,  # type: ignore[arg-type]
        horizon=horizon,
        id=fid,
        transient=transient,
        fn=fn,
    )


def _spec_from_dict(d: Mapping[str, Any], src: str) -> FamilySpec:
    _unknown(src, "top level", d, _TOP_KEYS)
    name = d.get("name", Path(src).stem if src not in ("<string>", "<dict>") else "families")
    if not isinstance(name, str) or not name:
        raise DataError(f"{src}: key 'name': expected a non-empty string, found {name!r}")
    desc = d.get("description", "")
    if not isinstance(desc, str):
        raise DataError(f"{src}: key 'description': expected a string, found {desc!r}")
    fams = d.get("family")
    if not isinstance(fams, list) or not fams:
        raise DataError(f"{src}: expected at least one [[family]] table")
    families = tuple(_parse_family(src, i, f) for i, f in enumerate(fams))
    p = d.get("protocol")
    if not isinstance(p, Mapping):
        raise DataError(f"{src}: missing [protocol] table")
    _unknown(src, "[protocol]", p, _PROTO_KEYS)
    splits: dict[str, SplitLayout] = {}
    for sp in SPLITS:
        if sp not in p:
            continue
        v = p[sp]
        if not isinstance(v, Mapping) or set(v) != {"envs", "trajectories"}:
            raise DataError(f"{src}: key 'protocol.{sp}': expected {{envs = N, trajectories = M}}, found {v!r}")
        lay = SplitLayout(
            _int(src, f"protocol.{sp}.envs", v["envs"], hi=MAX_ENVS),
            _int(src, f"protocol.{sp}.trajectories", v["trajectories"], hi=MAX_TRAJECTORIES),
        )
        splits[sp] = lay
    if not splits:
        raise DataError(f"{src}: [protocol]: expected at least one split among {list(SPLITS)}")
    clean = p.get("clean", False)
    if not isinstance(clean, bool):
        raise DataError(f"{src}: key 'protocol.clean': expected true or false, found {clean!r}")
    proto = Protocol(
        splits=splits,
        seed=_int(src, "protocol.seed", p.get("seed", 2024), lo=0, hi=_MAX_SEED),
        steps=_int(src, "protocol.steps", p.get("steps", 100), lo=2, hi=MAX_STEPS),
        train_range=_range(src, "protocol.train_range", p.get("train_range", [0.9, 1.1])),
        adapt_range=_range(src, "protocol.adapt_range", p.get("adapt_range", [0.8, 1.2])),
        clean=clean,
    )
    spec = FamilySpec(name=name, families=families, protocol=proto, description=desc, source=src)
    check_sizes(spec, list(splits))
    return spec


def parse_family_spec(text: str, source: str = "<string>") -> FamilySpec:
    """Parse the TOML text of a family file (raises :class:`DataError` on any problem)."""
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise DataError(f"{source}: invalid TOML ({err})") from None
    return _spec_from_dict(d, source)


def builtin_family_files() -> dict[str, Any]:
    """Built-in family files, ``name -> resource`` (e.g. ``odebench-10a``)."""
    root = resources.files("mixerdsr.data").joinpath("families")
    return {p.name[:-5]: p for p in sorted(root.iterdir(), key=lambda q: q.name) if p.name.endswith(".toml")}


def load_family_spec(source: str | os.PathLike | Mapping[str, Any] | FamilySpec) -> FamilySpec:
    """A :class:`FamilySpec` from a built-in name, a TOML path, a parsed dict, or a spec (returned as is)."""
    if isinstance(source, FamilySpec):
        return source
    if isinstance(source, Mapping):
        return _spec_from_dict(source, "<dict>")
    s = os.fspath(source)
    builtin = builtin_family_files()
    if s in builtin and not os.path.exists(s):
        return parse_family_spec(builtin[s].read_text(encoding="utf-8"), source=f"<builtin {s}>")
    path = Path(s)
    if not path.exists():
        raise FileNotFoundError(f"{s}: no such family file (built-in names: {', '.join(builtin)})")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{s}: cannot read family file ({err})") from None
    return parse_family_spec(text, source=s)


# ----------------------------------------------------------------------------------------------
# The protocol (no integration)
# ----------------------------------------------------------------------------------------------


def time_grid(horizon: float, steps: int) -> np.ndarray:
    """``np.arange(0, T, T/steps)`` (``steps`` points, ``T`` excluded), guarded against round-off."""
    t = np.arange(0, horizon, horizon / steps)[:steps]
    if len(t) != steps:  # pragma: no cover - arange never gives fewer for these arguments
        t = np.linspace(0, horizon, steps, endpoint=False)
    return t
