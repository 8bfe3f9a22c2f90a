"""Generating a multi-family dataset: the plans of :mod:`._plans` (the paper's protocol)
integrated, trajectory by trajectory, and assembled into splits.

Every trajectory is integrated as the protocol says (RK45, its tolerances, the transient
dropped; :mod:`._plans` describes it whole).

Limits: the sizes of a plan are checked before anything is integrated (:func:`._familyspec.check_sizes`);
while integrating, a right-hand side that is not finite at a state the solver visits stops
generation with a :class:`DataError` naming the file, family, environment parameters, time and
state, and each trajectory may use at most :data:`MAX_RHS_EVALS` right-hand-side evaluations.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ._envdata import DataError, EnvData
from ._familyspec import (
    FamilyDef,
    FamilySpec,
    Protocol,
    SplitLayout,
    builtin_family_files,
    load_family_spec,
    parse_family_spec,
    time_grid,
)
from ._plans import EVAL_SPLITS, FamilyPlan, plan_families

__all__ = [
    "FamilyDef",
    "FamilySpec",
    "Protocol",
    "SplitLayout",
    "builtin_family_files",
    "generate_families",
    "load_family_spec",
    "padded_params",
    "parse_family_spec",
    "time_grid",
]

CLEAN_RTOL = 1e-8
CLEAN_ATOL = 1e-10
#: Most right-hand-side evaluations for one trajectory (RK45 uses six per step). Every built-in
#: family needs a few thousand at most, also with the clean protocol's tolerances.
MAX_RHS_EVALS = 500_000


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
