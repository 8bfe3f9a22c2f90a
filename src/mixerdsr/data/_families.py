"""ODE families declared in TOML, and the paper's multi-environment generation protocol.

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

**Paper protocol** (``clean = false``; MixER, Appendix B, reproduced so that our arrays equal the
authors' for the same seed):

- a fresh legacy stream ``np.random.RandomState(seed)`` for each split; families in file order;
- train/test environments: with ``p`` parameters, ``k = ceil(n_envs ** (1/p))`` values per
  parameter, ``np.round(np.linspace(lo*ref, hi*ref, k), 2)``; all combinations ordered as
  ``np.array(np.meshgrid(*grids)).T.reshape(-1, p)``, the first ``n_envs`` kept;
- adaptation environments (both adapt splits): ``np.round(ref * np.linspace(lo, hi, n_envs), 2)``
  (all parameters scaled together);
- initial conditions, shared by all environments of a family and drawn once per family per
  split: the first reference IC, then ``n - 2`` draws, each made dimension by dimension as one
  scalar ``uniform(min_d + 1e-3, max_d - 1e-3)`` between the two reference ICs, then the second
  reference IC; the list is truncated to ``n``;
- ``solve_ivp(fun, (0, T), ic, method="RK45", t_eval=np.arange(0, T, T/steps))`` with default
  tolerances (rtol 1e-3, atol 1e-6).

This protocol leaks: the test split starts with the training ICs (same stream, same draws), and
rounding to two decimals can create duplicate environments (e.g. ``c1 = 0.07`` in ODEBench-10B).

**Clean protocol** (``clean = true``): the ICs of split ``s`` come from
``RandomState([seed, index of s in SPLITS])``; the evaluation splits (``test``, ``adapt_test``) hold
no reference IC (all ``n`` drawn); every parameter grid is rounded to the fewest decimals (>= 2)
that makes its values distinct, so no two environments of a split coincide, and adaptation
environments are rounded to the fewest decimals (>= 2) that makes them distinct from each other
and from every training environment; integration uses ``rtol = 1e-8``, ``atol = 1e-10``.

**Limits** (checked when a file is parsed or a plan is made, before anything is allocated or
integrated; each refusal is a :class:`DataError` naming the key, the value and the limit):
at most :data:`MAX_ENVS` environments per family and split, :data:`MAX_TRAJECTORIES` trajectories
per environment, :data:`MAX_STEPS` time points, :data:`MAX_VALUES` stored values per split
(families x envs x trajectories x steps x largest dimension), a horizon of at most
:data:`MAX_HORIZON` whose grid ``T/steps`` has distinct points, a seed below ``2**32``, and
finite environment parameters. While integrating, a right-hand side that is not finite at a state
the solver visits stops generation with a :class:`DataError` naming the file, family, environment
parameters, time and state (the solver would otherwise fail late or not at all), and each trajectory
may use at most :data:`MAX_RHS_EVALS` right-hand-side evaluations (a stiff system or a very long
horizon hits this cap instead of running without end; the message says what to change).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import typing
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ._envdata import SPLITS, DataError, EnvData
from ._expr import CompiledRHS, compile_rhs

__all__ = [
    "FamilyDef",
    "FamilySpec",
    "FamilyPlan",
    "Protocol",
    "SplitLayout",
    "builtin_family_files",
    "env_parameters",
    "generate_families",
    "initial_conditions",
    "load_family_spec",
    "padded_params",
    "parse_family_spec",
    "plan_families",
    "time_grid",
]

#: Splits that hold new environments (adaptation range) rather than the training grid.
ADAPT_SPLITS = ("adapt_train", "adapt_test")
#: Splits evaluated on unseen initial conditions (no reference IC in the clean protocol).
EVAL_SPLITS = ("test", "adapt_test")
IC_EPS = 1e-3
CLEAN_RTOL = 1e-8
CLEAN_ATOL = 1e-10
_MAX_DECIMALS = 12

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
#: Most right-hand-side evaluations for one trajectory (RK45 uses six per step). Every built-in
#: family needs a few thousand at most, also with the clean protocol's tolerances.
MAX_RHS_EVALS = 500_000
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
    """One ODE family: ``dx/dt = rhs(x, c)`` with reference parameters, two reference ICs and a horizon."""

    name: str
    rhs: tuple[str, ...]
    params: tuple[float, ...]
    ics: tuple[tuple[float, ...], tuple[float, ...]]
    horizon: float
    id: int | str | None = None
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


@dataclasses.dataclass(frozen=True, eq=False)
class FamilyPlan:
    """What will be integrated for one family in one split (no integration done yet)."""

    family: int
    params: np.ndarray  # [n_envs, p]
    ics: np.ndarray  # [n_trajectories, dims]
    t: np.ndarray  # [steps]


# ----------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------

_TOP_KEYS = {"name", "description", "protocol", "family"}
_PROTO_KEYS = {"seed", "steps", "train_range", "adapt_range", "clean", *SPLITS}
_FAM_KEYS = {"name", "id", "rhs", "params", "ics", "horizon"}


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


def _check_sizes(spec: FamilySpec, names: Sequence[str], seed: Any = None) -> None:
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
    _check_sizes(spec, list(splits))
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


def _grid_rows(grids: Sequence[np.ndarray], n: int) -> np.ndarray:
    """The first ``n`` rows of ``np.array(np.meshgrid(*grids)).T.reshape(-1, p)``, without building it.

    That array's row index counts in mixed radix with the index into ``grids[1]`` fastest, then
    ``grids[0]``, then ``grids[2]``, ..., ``grids[p-1]`` slowest (``meshgrid``'s ``xy`` indexing swaps
    the first two axes). Building the whole grid would take ``k**p`` rows, far too many for
    families with many parameters.
    """
    p = len(grids)
    total = math.prod(len(g) for g in grids)
    r = np.arange(min(n, total), dtype=np.int64)
    order = [1, 0, *range(2, p)] if p >= 2 else [0]
    out = np.empty((len(r), p), dtype=np.float64)
    for ax in order:
        k = len(grids[ax])
        out[:, ax] = np.asarray(grids[ax], dtype=np.float64)[r % k]
        r = r // k
    return out


def _first_unique(g: np.ndarray) -> np.ndarray:
    """``g`` without repeated values, first occurrences in their original order."""
    _, idx = np.unique(g, return_index=True)
    return g[np.sort(idx)]


def _train_grid(ref: np.ndarray, n_envs: int, rng: tuple[float, float], clean: bool) -> np.ndarray:
    p = len(ref)
    if p == 0:
        if clean and n_envs > 1:
            raise DataError(
                f"clean protocol: a family without parameters has only one distinct environment, {n_envs} requested"
            )
        return np.zeros((n_envs, 0))
    lo, hi = rng
    k = math.ceil(n_envs ** (1 / p))
    grids = []
    for r in ref:
        g = np.round(np.linspace(lo * r, hi * r, k), 2)
        if clean:
            d = 2
            while len(np.unique(g)) < k and d < _MAX_DECIMALS and lo * r != hi * r:
                d += 1
                g = np.round(np.linspace(lo * r, hi * r, k), d)
        grids.append(g)
    if clean:
        # The distinct rows of the full grid, in order of first appearance, are exactly the rows of the
        # grid built from each parameter's distinct values (a row with a repeated value's later index
        # comes after the same row with its first index).
        grids = [_first_unique(g) for g in grids]
        n_distinct = math.prod(len(g) for g in grids)
        if n_distinct < n_envs:
            raise DataError(
                f"clean protocol: only {n_distinct} distinct environments can be made from "
                f"reference parameters {ref.tolist()} and range {list(rng)}, {n_envs} requested"
            )
    return _grid_rows(grids, n_envs)


def _adapt_envs(
    ref: np.ndarray, n_envs: int, rng: tuple[float, float], clean: bool, avoid: np.ndarray | None
) -> np.ndarray:
    scal = np.linspace(rng[0], rng[1], n_envs)
    envs = np.round(ref[None, :] * scal[:, None], 2)
    if not clean:
        return envs
    avoid_set = set() if avoid is None else {tuple(float(v) for v in row) for row in avoid}
    for d in range(2, _MAX_DECIMALS + 1):
        envs = np.round(ref[None, :] * scal[:, None], d)
        rows = [tuple(float(v) for v in row) for row in envs]
        if len(set(rows)) == len(rows) and not (set(rows) & avoid_set):
            return envs
    raise DataError(
        f"clean protocol: cannot make {n_envs} adaptation environments from reference parameters "
        f"{ref.tolist()} distinct from each other and from the training environments"
    )


def env_parameters(spec: FamilySpec, family: int, split: str) -> np.ndarray:
    """Parameters ``[n_envs, p]`` of the environments of one family in one split (no RNG involved)."""
    proto = spec.protocol
    fam = spec.families[family]
    ref = np.asarray(fam.params, dtype=np.float64)
    n = proto.splits[split].envs
    if split in ADAPT_SPLITS:
        avoid = None
        if proto.clean and "train" in proto.splits:
            avoid = _train_grid(ref, proto.splits["train"].envs, proto.train_range, True)
        return _adapt_envs(ref, n, proto.adapt_range, proto.clean, avoid)
    return _train_grid(ref, n, proto.train_range, proto.clean)


def _draw_ics(rs: np.random.RandomState, ic1: np.ndarray, ic2: np.ndarray, n: int, with_refs: bool) -> np.ndarray:
    mins, maxs = np.minimum(ic1, ic2), np.maximum(ic1, ic2)
    dims = ic1.shape[0]

    def draw() -> list[float]:
        # one scalar draw per dimension, in order (this order decides the stream)
        return [rs.uniform(mins[d] + IC_EPS, maxs[d] - IC_EPS) for d in range(dims)]

    if with_refs:
        out = [ic1] + [np.asarray(draw()) for _ in range(n - 2)] + [ic2]
        return np.asarray(out[:n], dtype=np.float64)
    return np.asarray([draw() for _ in range(n)], dtype=np.float64).reshape(n, dims)


def _split_stream(proto: Protocol, split: str, seed: int) -> np.random.RandomState:
    if proto.clean:
        return np.random.RandomState([seed, SPLITS.index(split)])
    return np.random.RandomState(seed)


def initial_conditions(spec: FamilySpec, split: str, seed: int | None = None) -> list[np.ndarray]:
    """ICs ``[n_trajectories, dims]`` of every family (file order) in one split, drawn as the protocol says."""
    proto = spec.protocol
    seed = proto.seed if seed is None else int(seed)
    rs = _split_stream(proto, split, seed)
    n = proto.splits[split].trajectories
    with_refs = not (proto.clean and split in EVAL_SPLITS)
    return [
        _draw_ics(rs, np.asarray(f.ics[0], dtype=np.float64), np.asarray(f.ics[1], dtype=np.float64), n, with_refs)
        for f in spec.families
    ]


def plan_families(
    spec: FamilySpec | str | os.PathLike, seed: int | None = None, splits: Iterable[str] | None = None
) -> dict[str, list[FamilyPlan]]:
    """Environment parameters, ICs and time grids of every family in every split, without integrating."""
    spec = load_family_spec(spec)
    proto = spec.protocol
    names = [s for s in SPLITS if s in proto.splits] if splits is None else list(splits)
    for sp in names:
        if sp not in proto.splits:
            raise DataError(f"{spec.source}: split '{sp}' is not in the protocol (has {list(proto.splits)})")
    _check_sizes(spec, names, seed)
    out: dict[str, list[FamilyPlan]] = {}
    for sp in names:
        ics = initial_conditions(spec, sp, seed)
        plans = []
        for i, f in enumerate(spec.families):
            with np.errstate(over="ignore", invalid="ignore"):  # reported just below
                params = env_parameters(spec, i, sp)
            if not np.all(np.isfinite(params)):
                raise DataError(
                    f"{spec.source}: family[{i}] ({f.name}), split {sp}: environment parameters are "
                    f"not finite ({params.tolist()}); check params and the parameter ranges"
                )
            plans.append(FamilyPlan(family=i, params=params, ics=ics[i], t=time_grid(f.horizon, proto.steps)))
        out[sp] = plans
    return out


# ----------------------------------------------------------------------------------------------
# Integration
# ----------------------------------------------------------------------------------------------


def _brief(v: np.ndarray, n: int = 8) -> str:
    """A 1-D array as a short list (at most ``n`` values shown)."""
    vals = [float(a) for a in np.asarray(v).reshape(-1)]
    body = ", ".join(f"{a:.6g}" for a in vals[:n])
    return f"[{body}{', ...' if len(vals) > n else ''}]"


class _StopIntegration(Exception):
    """Raised inside the solver's right-hand side to end one integration (message completes ``where``)."""


def _integrate(
    fam: FamilyDef,
    params: np.ndarray,
    ic: np.ndarray,
    t: np.ndarray,
    clean: bool,
    where: str,
    max_evals: int | None = None,
) -> np.ndarray:
    """One trajectory, ``[len(t), dims]``; :class:`DataError` (prefixed with ``where``) on any failure.

    The right-hand side is wrapped to stop at the first non-finite value (before the solver can
    loop on NaN step sizes) and after ``max_evals`` evaluations (default :data:`MAX_RHS_EVALS`).
    The wrapper only observes: it returns the same values, so results do not change.
    """
    from scipy.integrate import solve_ivp

    assert fam.fn is not None
    limit = MAX_RHS_EVALS if max_evals is None else int(max_evals)
    what = f"parameters {_brief(params)}, initial condition {_brief(ic)}"
    base = fam.fn.scipy_fun(params)
    isfinite = np.isfinite
    count = 0

    def fun(tt: float, y: np.ndarray) -> np.ndarray:
        nonlocal count
        count += 1
        if count > limit:
            raise _StopIntegration(
                f"integration stopped after {limit:,} right-hand-side evaluations at t = {tt:.6g} of horizon "
                f"{fam.horizon:g} ({what}): the system is too stiff or the horizon too long for the explicit "
                f"RK45 solver; use a shorter horizon or less stiff parameters"
            )
        dy = base(tt, y)
        if not isfinite(dy).all():
            raise _StopIntegration(
                f"integration failed: the right-hand side is not finite ({_brief(dy)}) at t = {tt:.6g}, "
                f"state {_brief(y)} ({what}); check the expressions' domain (log or sqrt of negative "
                f"numbers, division by zero) or a solution that blows up"
            )
        return dy

    kw: dict[str, Any] = {"rtol": CLEAN_RTOL, "atol": CLEAN_ATOL} if clean else {}
    try:
        with np.errstate(all="ignore"):
            sol = solve_ivp(fun, (0.0, fam.horizon), ic, method="RK45", t_eval=t, **kw)
    except _StopIntegration as stop:
        raise DataError(f"{where}: {stop}") from None
    if sol.status != 0 or sol.y.shape[1] != len(t) or not np.all(np.isfinite(sol.y)):
        raise DataError(f"{where}: integration failed ({what}): {sol.message}")
    return sol.y.T


def padded_params(params: Sequence[Sequence[float]], fill: float = 0.0) -> np.ndarray:
    """Ragged per-environment parameters as one ``[envs, max_params]`` array padded with ``fill``."""
    n = max((len(p) for p in params), default=0)
    out = np.full((len(params), n), fill, dtype=np.float64)
    for i, p in enumerate(params):
        out[i, : len(p)] = p
    return out


def generate_families(
    spec: FamilySpec | str | os.PathLike | Mapping[str, Any],
    seed: int | None = None,
    *,
    splits: Iterable[str] | None = None,
    progress: bool = False,
    dtype: Any = np.float64,
) -> tuple[dict[str, EnvData], dict[str, Any]]:
    """Generate a multi-family, multi-environment dataset from a family file.

    Args:
        spec: a :class:`FamilySpec`, a built-in name (``odebench-10a``...), a TOML path or a dict.
        seed: overrides the protocol's seed.
        splits: generate only these splits (default: all splits of the protocol).
        progress: show a progress bar over families (tqdm, on stderr).
        dtype: dtype of the returned arrays (integration is always float64).

    Returns:
        ``(splits, meta)``: ``dict`` split -> :class:`EnvData` (envs ordered family by family, in
        file order; ``family`` is the family's index in the file; each env's ``t`` is its
        family's grid; ``params`` holds each env's own parameters, so lengths may differ between
        families) and a JSON-serialisable metadata dict (protocol, families, per-env parameters,
        ICs, per-family state dims; states of lower-dimensional families are zero-padded to the
        largest dimension).
    """
    spec = load_family_spec(spec)
    proto = spec.protocol
    seed = proto.seed if seed is None else int(seed)
    plans = plan_families(spec, seed, splits)
    fams = spec.families
    dmax = max(f.dims for f in fams)
    arrays: dict[str, list[np.ndarray]] = {sp: [] for sp in plans}

    it: Iterable[int] = range(len(fams))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(it, total=len(fams), desc=f"generating {spec.name}", unit="family", leave=False)
        it = bar
    for i in it:
        fam = fams[i]
        if bar is not None:
            bar.set_postfix_str(fam.label)
        for sp, plan_list in plans.items():
            plan = plan_list[i]
            n_env, n_traj = plan.params.shape[0], plan.ics.shape[0]
            x = np.zeros((n_env, n_traj, len(plan.t), dmax), dtype=np.float64)
            for e in range(n_env):
                for j in range(n_traj):
                    where = (
                        f"{spec.source}: family[{i}] ({fam.name}{'' if fam.id is None else f', id {fam.id}'}), "
                        f"split {sp}, env {e}, trajectory {j}"
                    )
                    x[e, j, :, : fam.dims] = _integrate(fam, plan.params[e], plan.ics[j], plan.t, proto.clean, where)
            arrays[sp].append(x)
    if bar is not None:
        bar.close()

    out: dict[str, EnvData] = {}
    env_params_meta: dict[str, list[list[float]]] = {}
    ics_meta: dict[str, list[list[list[float]]]] = {}
    for sp, plan_list in plans.items():
        x = np.concatenate(arrays[sp], axis=0).astype(dtype)
        t = np.concatenate([np.repeat(p.t[None, :], p.params.shape[0], axis=0) for p in plan_list]).astype(dtype)
        fam_idx = np.concatenate([np.full(p.params.shape[0], p.family, dtype=np.int64) for p in plan_list])
        params = [tuple(float(v) for v in row) for p in plan_list for row in p.params]
        names = [f"{fams[p.family].label}/e{e}" for p in plan_list for e in range(p.params.shape[0])]
        out[sp] = EnvData(
            x,
            t,
            fam_idx,
            params=tuple(params),
            env_names=tuple(names),
            family_names=tuple(f.name for f in fams),
            source=spec.name,
            split=sp,
        )
        env_params_meta[sp] = [list(p) for p in params]
        ics_meta[sp] = [p.ics.tolist() for p in plan_list]

    meta = {
        "name": spec.name,
        "description": spec.description,
        "generator": "mixerdsr.families",
        "seed": seed,
        "protocol": {**proto.to_dict(), "seed": seed},
        "families": [f.to_dict() for f in fams],
        "family_names": [f.name for f in fams],
        "dims": [f.dims for f in fams],
        "param_counts": [f.n_params for f in fams],
        "env_params": env_params_meta,
        "initial_conditions": ics_meta,
    }
    return out, meta
