"""The paper's multi-environment generation protocol for ODE families: environment parameters,
initial conditions and time grids of every family and split (:class:`FamilyPlan`), before any
integration (family files: :mod:`._familyspec`; integration: :mod:`._families`).

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
  tolerances (rtol 1e-3, atol 1e-6); a family with a ``transient`` is integrated from
  ``-transient`` (the states before 0 are dropped: a chaotic system's trajectories then start on
  its attractor).

This protocol leaks: the test split starts with the training ICs (same stream, same draws), and
rounding to two decimals can create duplicate environments (e.g. ``c1 = 0.07`` in ODEBench-10B).

**Clean protocol** (``clean = true``): the ICs of split ``s`` come from
``RandomState([seed, index of s in SPLITS])``; the evaluation splits (``test``, ``adapt_test``) hold
no reference IC (all ``n`` drawn); every parameter grid is rounded to the fewest decimals (>= 2)
that makes its values distinct, so no two environments of a split coincide, and adaptation
environments are rounded to the fewest decimals (>= 2) that makes them distinct from each other
and from every training environment; integration uses ``rtol = 1e-8``, ``atol = 1e-10``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Sequence

import numpy as np

from ._envdata import SPLITS, DataError
from ._familyspec import FamilySpec, Protocol, check_sizes, load_family_spec, time_grid

__all__ = ["FamilyPlan", "env_parameters", "initial_conditions", "plan_families", "ADAPT_SPLITS", "EVAL_SPLITS"]

#: Splits that hold new environments (adaptation range) rather than the training grid.
ADAPT_SPLITS = ("adapt_train", "adapt_test")
#: Splits evaluated on unseen initial conditions (no reference IC in the clean protocol).
EVAL_SPLITS = ("test", "adapt_test")
IC_EPS = 1e-3
_MAX_DECIMALS = 12


@dataclasses.dataclass(frozen=True, eq=False)
class FamilyPlan:
    """What will be integrated for one family in one split (no integration done yet)."""

    family: int
    params: np.ndarray  # [n_envs, p]
    ics: np.ndarray  # [n_trajectories, dims]
    t: np.ndarray  # [steps]


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
    check_sizes(spec, names, seed)
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
