"""The paper's multi-environment generation protocol for ODE families (family files: :mod:`._familyspec`).

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

Limits: the sizes of a plan are checked before anything is integrated (:func:`._familyspec.check_sizes`);
while integrating, a right-hand side that is not finite at a state the solver visits stops
generation with a :class:`DataError` naming the file, family, environment parameters, time and
state, and each trajectory may use at most :data:`MAX_RHS_EVALS` right-hand-side evaluations.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ._envdata import SPLITS, DataError, EnvData
from ._familyspec import (
    FamilyDef,
    FamilySpec,
    Protocol,
    SplitLayout,
    builtin_family_files,
    check_sizes,
    load_family_spec,
    parse_family_spec,
    time_grid,
)

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

#: Most right-hand-side evaluations for one trajectory (RK45 uses six per step). Every built-in
#: family needs a few thousand at most, also with the clean protocol's tolerances.
MAX_RHS_EVALS = 500_000


@dataclasses.dataclass(frozen=True, eq=False)
class FamilyPlan:
    """What will be integrated for one family in one split (no integration done yet)."""

    family: int
    params: np.ndarray  # [n_envs, p]
    ics: np.ndarray  # [n_trajectories, dims]
    t: np.ndarray  # [steps]


# ----------------------------------------------------------------------------------------------
# The protocol (no integration)
# ----------------------------------------------------------------------------------------------


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
        with np.errstate(all="ignore"):  # from -transient: the saved grid starts after it
            t0 = -fam.transient if fam.transient > 0 else 0.0
            sol = solve_ivp(fun, (t0, fam.horizon), ic, method="RK45", t_eval=t, **kw)
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
    envs_per_family: int = 0,
    test_trajectories: int = 0,
) -> tuple[dict[str, EnvData], dict[str, Any]]:
    """Generate a multi-family, multi-environment dataset from a family file.

    Args:
        spec: a :class:`FamilySpec`, a built-in name (``odebench-10a``...), a TOML path or a dict.
        seed: overrides the protocol's seed.
        splits: generate only these splits (default: all splits of the protocol).
        progress: show a progress bar over families (tqdm, on stderr).
        dtype: dtype of the returned arrays (integration is always float64).
        envs_per_family: generate only the first this many envs of each family in every split
            (0 = all); the same arrays as generating all and keeping those.
        test_trajectories: generate only the first this many trajectories of each env of the
            ``test`` and ``adapt_test`` splits (0 = all).

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
    plans = _subset(plan_families(spec, seed, splits), envs_per_family, test_trajectories)
    arrays = _integrate_plans(spec, plans, progress)
    out: dict[str, EnvData] = {}
    env_params_meta: dict[str, list[list[float]]] = {}
    ics_meta: dict[str, list[list[list[float]]]] = {}
    for sp, plan_list in plans.items():
        out[sp] = _split_data(spec, sp, plan_list, np.concatenate(arrays[sp], axis=0).astype(dtype), dtype)
        env_params_meta[sp] = [[float(v) for v in row] for p in plan_list for row in p.params]
        ics_meta[sp] = [p.ics.tolist() for p in plan_list]
    fams = spec.families
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


def _subset(plans: dict[str, list[FamilyPlan]], envs_per_family: int, test_trajectories: int):
    """The plans with only the first ``envs_per_family`` envs of each family (0: all) and the
    first ``test_trajectories`` trajectories of the test splits (0: all)."""
    if envs_per_family <= 0 and test_trajectories <= 0:
        return plans
    n_env, n_test = envs_per_family or None, test_trajectories or None
    return {
        sp: [
            dataclasses.replace(p, params=p.params[:n_env], ics=p.ics[:n_test] if sp in EVAL_SPLITS else p.ics)
            for p in pl
        ]
        for sp, pl in plans.items()
    }


def _integrate_plans(spec: FamilySpec, plans: dict[str, list[FamilyPlan]], progress: bool):
    """Every trajectory of every plan, family by family: ``split -> [x [E_f, N, T, D_max]]``
    (states of lower-dimensional families zero-padded)."""
    fams = spec.families
    dmax = max(f.dims for f in fams)
    arrays: dict[str, list[np.ndarray]] = {sp: [] for sp in plans}
    it: Iterable[int] = range(len(fams))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(it, total=len(fams), desc=f"generating {spec.name}", unit="family", leave=False, disable=None)
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
                    x[e, j, :, : fam.dims] = _integrate(
                        fam, plan.params[e], plan.ics[j], plan.t, spec.protocol.clean, where
                    )
            arrays[sp].append(x)
    if bar is not None:
        bar.close()
    return arrays


def _split_data(spec: FamilySpec, sp: str, plan_list: list[FamilyPlan], x: np.ndarray, dtype: Any) -> EnvData:
    """One split's :class:`EnvData` from its plans and states ``x``."""
    fams = spec.families
    t = np.concatenate([np.repeat(p.t[None, :], p.params.shape[0], axis=0) for p in plan_list]).astype(dtype)
    fam_idx = np.concatenate([np.full(p.params.shape[0], p.family, dtype=np.int64) for p in plan_list])
    params = [tuple(float(v) for v in row) for p in plan_list for row in p.params]
    names = [f"{fams[p.family].label}/e{e}" for p in plan_list for e in range(p.params.shape[0])]
    return EnvData(
        x,
        t,
        fam_idx,
        params=tuple(params),
        env_names=tuple(names),
        family_names=tuple(f.name for f in fams),
        source=spec.name,
        split=sp,
    )
