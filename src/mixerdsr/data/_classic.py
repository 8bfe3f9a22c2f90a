r"""Classic multi-environment DSR benchmarks: Lotka-Volterra (LV), glycolytic oscillator (GO), Sel'kov (SM).

Generated as in the LEADS / CoDA / Neural Context Flows literature (the "Gen-Dynamics" data the
MixER paper downloads), with :func:`scipy.integrate.solve_ivp` (RK45, default tolerances).
Initial conditions depend only on the trajectory index ``j`` (they are shared by all
environments) through a per-trajectory legacy stream ``np.random.RandomState(seed_j)``:

- LV and GO: ``seed_j = seed + j`` for ``train`` and ``adapt_train``,
  ``seed_j = 2**31 - 1 - seed - j`` for ``test`` and ``adapt_test``;
- SM: the rule is inverted (``2**31 - 1 - seed - j`` for train/adapt_train, ``seed + j`` for
  test/adapt_test).

The default ``seed = 0`` reproduces the literature's streams exactly.

**LV** (2-D, predator-prey), ``a = c = 0.5``, environments ``(b, d)``:

.. math::  \dot x = a x - b x y, \qquad \dot y = d x y - c y

train/test: ``d in {0.5, 0.75, 1.0}`` (outer) x ``b in {0.5, 0.75, 1.0}`` (inner), 9 envs;
adaptation: ``(b, d) in {(0.625, 0.625), (0.625, 1.125), (1.125, 0.625), (1.125, 1.125)}``;
trajectories 4 / 32 / 1 / 32; ``x0 = RandomState(seed_j).uniform(size=2) + 1``;
``t = linspace(0, 10, 20, endpoint=False)``; family = block of 3 envs sharing ``d``.

**GO** (7-D yeast glycolysis of Daniels & Nemenman 2015), environments ``(k1, K1)``, with
``J0 = 2.5, k2 = 6, k3 = 16, k4 = 100, k5 = 1.28, k6 = 12, q = 4, N = 1, A = 4, kappa = 13,
psi = 0.1, k = 1.8`` and ``v = k1 S1 S6 / (1 + (S6/K1)^q)``:

.. math::
    \dot S_1 &= J_0 - v \\
    \dot S_2 &= 2v - k_2 S_2 (N - S_5) - k_6 S_2 S_5 \\
    \dot S_3 &= k_2 S_2 (N - S_5) - k_3 S_3 (A - S_6) \\
    \dot S_4 &= k_3 S_3 (A - S_6) - k_4 S_4 S_5 - \kappa (S_4 - S_7) \\
    \dot S_5 &= k_2 S_2 (N - S_5) - k_4 S_4 S_5 - k_6 S_2 S_5 \\
    \dot S_6 &= -2v + 2 k_3 S_3 (A - S_6) - k_5 S_6 \\
    \dot S_7 &= \psi \kappa (S_4 - S_7) - k S_7

train/test: ``k1 in {100, 90, 80}`` (outer) x ``K1 in {1, 0.75, 0.5}`` (inner), 9 envs;
adaptation: ``k1 in {85, 95}`` (outer) x ``K1 in {0.625, 0.875}`` (inner); trajectories
32 / 32 / 1 / 32; ``x0 = RandomState(seed_j).random(7) * (hi - lo) + lo`` with boxes
``(0.15, 1.6) (0.19, 2.16) (0.04, 0.2) (0.1, 0.35) (0.08, 0.3) (0.14, 2.67) (0.05, 0.1)``;
``t = linspace(0, 1, 20, endpoint=False)``; family = block of 3 envs sharing ``k1``.

**SM** (2-D Sel'kov glycolysis model), ``a = 0.1``, environments ``b``:

.. math::  \dot x = -x + a y + x^2 y, \qquad \dot y = b - a y - x^2 y

train/test: 21 envs ``b = linspace(-1, -0.25, 7)``, then ``linspace(-0.1, 0.1, 7)``, then
``linspace(0.25, 1, 7)``; adaptation ``b in {-1.25, -0.65, -0.05, 0.02, 0.6, 1.2}``;
trajectories 4 / 4 / 1 / 4; ``x0 = RandomState(seed_j).uniform(0, 3, 2)``;
``t = linspace(0, 40, 11)``; family = the b band (0, 1, 2).

Family labels of adaptation environments: LV and GO adaptation parameters fall between the
training blocks, so their family is ``-1`` (unknown); SM adaptation envs get the band on their
side of ``b = -0.175`` / ``b = 0.175`` (the mid-points between bands).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ._envdata import SPLITS, DataError, EnvData

__all__ = [
    "generate_lv",
    "generate_go",
    "generate_sm",
    "classic_env_params",
    "classic_initial_conditions",
    "lv_rhs",
    "go_rhs",
    "sm_rhs",
    "CLASSIC_NAMES",
]

CLASSIC_NAMES = ("lv", "go", "sm")
_MAXSEED = 2**31 - 1
_TRAIN_LIKE = ("train", "adapt_train")

# ---- Lotka-Volterra ---------------------------------------------------------------------------
LV_FIXED = {"a": 0.5, "c": 0.5}
LV_TRAIN = [(b, d) for d in (0.5, 0.75, 1.0) for b in (0.5, 0.75, 1.0)]
LV_ADAPT = [(0.625, 0.625), (0.625, 1.125), (1.125, 0.625), (1.125, 1.125)]

# ---- Glycolytic oscillator ---------------------------------------------------------------------
GO_FIXED = {
    "J0": 2.5,
    "k2": 6.0,
    "k3": 16.0,
    "k4": 100.0,
    "k5": 1.28,
    "k6": 12.0,
    "q": 4.0,
    "N": 1.0,
    "A": 4.0,
    "kappa": 13.0,
    "psi": 0.1,
    "k": 1.8,
}
GO_TRAIN = [(k1, K1) for k1 in (100.0, 90.0, 80.0) for K1 in (1.0, 0.75, 0.5)]
GO_ADAPT = [(k1, K1) for k1 in (85.0, 95.0) for K1 in (0.625, 0.875)]
GO_IC_BOX = np.array([(0.15, 1.60), (0.19, 2.16), (0.04, 0.20), (0.10, 0.35), (0.08, 0.30), (0.14, 2.67), (0.05, 0.10)])

# ---- Sel'kov -----------------------------------------------------------------------------------
SM_FIXED = {"a": 0.1}
SM_TRAIN = [
    (float(b),) for b in np.concatenate([np.linspace(-1, -0.25, 7), np.linspace(-0.1, 0.1, 7), np.linspace(0.25, 1, 7)])
]
SM_ADAPT = [(b,) for b in (-1.25, -0.65, -0.05, 0.02, 0.6, 1.2)]


def lv_rhs(b: float, d: float, a: float = 0.5, c: float = 0.5) -> Callable[[float, np.ndarray], np.ndarray]:
    """``fun(t, y)`` of Lotka-Volterra: ``dx = a x - b x y``, ``dy = d x y - c y``."""
    a, b, c, d = float(a), float(b), float(c), float(d)

    def fun(t: float, s: np.ndarray) -> np.ndarray:
        x, y = s.tolist()
        return np.array([a * x - b * x * y, d * x * y - c * y])

    return fun


def go_rhs(k1: float, K1: float, **fixed: float) -> Callable[[float, np.ndarray], np.ndarray]:
    """``fun(t, S)`` of the 7-D glycolytic oscillator (equations in the module docstring)."""
    p = {**GO_FIXED, **fixed}
    J0, k2, k3, k4, k5, k6 = p["J0"], p["k2"], p["k3"], p["k4"], p["k5"], p["k6"]
    q, N, A, kappa, psi, k = p["q"], p["N"], p["A"], p["kappa"], p["psi"], p["k"]
    k1, K1 = float(k1), float(K1)

    def fun(t: float, s: np.ndarray) -> np.ndarray:
        s1, s2, s3, s4, s5, s6, s7 = s.tolist()
        v = k1 * s1 * s6 / (1 + (s6 / K1) ** q)
        return np.array(
            [
                J0 - v,
                2 * v - k2 * s2 * (N - s5) - k6 * s2 * s5,
                k2 * s2 * (N - s5) - k3 * s3 * (A - s6),
                k3 * s3 * (A - s6) - k4 * s4 * s5 - kappa * (s4 - s7),
                k2 * s2 * (N - s5) - k4 * s4 * s5 - k6 * s2 * s5,
                -2 * v + 2 * k3 * s3 * (A - s6) - k5 * s6,
                psi * kappa * (s4 - s7) - k * s7,
            ]
        )

    return fun


def sm_rhs(b: float, a: float = 0.1) -> Callable[[float, np.ndarray], np.ndarray]:
    """``fun(t, y)`` of Sel'kov: ``dx = -x + a y + x^2 y``, ``dy = b - a y - x^2 y``."""
    a, b = float(a), float(b)

    def fun(t: float, s: np.ndarray) -> np.ndarray:
        x, y = s.tolist()
        x2y = x * x * y
        return np.array([-x + a * y + x2y, b - a * y - x2y])

    return fun


def _sm_band(b: float) -> int:
    return 0 if b < -0.175 else (1 if b <= 0.175 else 2)


_SPECS: dict[str, dict[str, Any]] = {
    "lv": {
        "title": "Lotka-Volterra (2-D), 9 envs (b, d), a = c = 0.5",
        "equations": ["dx/dt = a*x - b*x*y", "dy/dt = d*x*y - c*y"],
        "param_names": ["b", "d"],
        "fixed": LV_FIXED,
        "train": LV_TRAIN,
        "adapt": LV_ADAPT,
        "traj": {"train": 4, "test": 32, "adapt_train": 1, "adapt_test": 32},
        "t": (0.0, 10.0, 20, False),
        "dims": 2,
        "inverted": False,
        "family_names": ["d=0.5", "d=0.75", "d=1.0"],
        "family": lambda i, p, adapt: -1 if adapt else i // 3,
        "rhs": lambda p: lv_rhs(p[0], p[1], **LV_FIXED),
        "ic": lambda rs: rs.uniform(size=2) + 1.0,
    },
    "go": {
        "title": "Glycolytic oscillator (7-D), 9 envs (k1, K1)",
        "equations": [
            "v = k1*S1*S6/(1 + (S6/K1)**q)",
            "dS1/dt = J0 - v",
            "dS2/dt = 2*v - k2*S2*(N - S5) - k6*S2*S5",
            "dS3/dt = k2*S2*(N - S5) - k3*S3*(A - S6)",
            "dS4/dt = k3*S3*(A - S6) - k4*S4*S5 - kappa*(S4 - S7)",
            "dS5/dt = k2*S2*(N - S5) - k4*S4*S5 - k6*S2*S5",
            "dS6/dt = -2*v + 2*k3*S3*(A - S6) - k5*S6",
            "dS7/dt = psi*kappa*(S4 - S7) - k*S7",
        ],
        "param_names": ["k1", "K1"],
        "fixed": GO_FIXED,
        "train": GO_TRAIN,
        "adapt": GO_ADAPT,
        "traj": {"train": 32, "test": 32, "adapt_train": 1, "adapt_test": 32},
        "t": (0.0, 1.0, 20, False),
        "dims": 7,
        "inverted": False,
        "family_names": ["k1=100", "k1=90", "k1=80"],
        "family": lambda i, p, adapt: -1 if adapt else i // 3,
        "rhs": lambda p: go_rhs(p[0], p[1]),
        "ic": lambda rs: rs.random(7) * (GO_IC_BOX[:, 1] - GO_IC_BOX[:, 0]) + GO_IC_BOX[:, 0],
    },
    "sm": {
        "title": "Sel'kov model (2-D), 21 envs b in three bands, a = 0.1",
        "equations": ["dx/dt = -x + a*y + x**2*y", "dy/dt = b - a*y - x**2*y"],
        "param_names": ["b"],
        "fixed": SM_FIXED,
        "train": SM_TRAIN,
        "adapt": SM_ADAPT,
        "traj": {"train": 4, "test": 4, "adapt_train": 1, "adapt_test": 4},
        "t": (0.0, 40.0, 11, True),
        "dims": 2,
        "inverted": True,
        "family_names": ["b in [-1, -0.25]", "b in [-0.1, 0.1]", "b in [0.25, 1]"],
        "family": lambda i, p, adapt: _sm_band(p[0]) if adapt else i // 7,
        "rhs": lambda p: sm_rhs(p[0], **SM_FIXED),
        "ic": lambda rs: rs.uniform(0, 3, 2),
    },
}


def _spec(name: str) -> dict[str, Any]:
    try:
        return _SPECS[name]
    except KeyError:
        raise DataError(f"unknown classic benchmark {name!r} (expected one of {list(CLASSIC_NAMES)})") from None


def _time_grid(spec: dict[str, Any]) -> np.ndarray:
    t0, t1, n, endpoint = spec["t"]
    return np.linspace(t0, t1, n, endpoint=endpoint)


def classic_env_params(name: str, split: str) -> list[tuple[float, ...]]:
    """Environment parameters of ``lv``/``go``/``sm`` in one split (``(b, d)``, ``(k1, K1)`` or ``(b,)``)."""
    spec = _spec(name)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} (expected one of {list(SPLITS)})")
    return list(spec["adapt"] if split.startswith("adapt") else spec["train"])


def _traj_seed(spec: dict[str, Any], split: str, j: int, seed: int) -> int:
    first = split in _TRAIN_LIKE
    if spec["inverted"]:
        first = not first
    s = seed + j if first else _MAXSEED - seed - j
    if not 0 <= s <= _MAXSEED:
        raise DataError(f"seed {seed} gives trajectory seed {s} outside [0, 2**31 - 1]")
    return s


def classic_initial_conditions(name: str, split: str, seed: int = 0, n: int | None = None) -> np.ndarray:
    """Initial conditions ``[n, dims]`` of ``lv``/``go``/``sm`` in one split (shared by all envs)."""
    spec = _spec(name)
    n = spec["traj"][split] if n is None else int(n)
    return np.stack(
        [
            np.asarray(spec["ic"](np.random.RandomState(_traj_seed(spec, split, j, seed))), dtype=np.float64)
            for j in range(n)
        ]
    )


def _generate(
    name: str,
    seed: int = 0,
    *,
    trajectories: Mapping[str, int] | None = None,
    splits: Iterable[str] | None = None,
    progress: bool = False,
) -> tuple[dict[str, EnvData], dict[str, Any]]:
    from scipy.integrate import solve_ivp

    spec = _spec(name)
    seed = int(seed)
    names = list(SPLITS) if splits is None else list(splits)
    for sp in names:
        if sp not in SPLITS:
            raise DataError(f"unknown split {sp!r} (expected one of {list(SPLITS)})")
    t = _time_grid(spec)
    t_span = (float(spec["t"][0]), float(spec["t"][1]))
    traj = {**spec["traj"], **(trajectories or {})}
    out: dict[str, EnvData] = {}
    split_meta: dict[str, Any] = {}
    it: Iterable[str] = names
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(names, desc=f"generating {name}", unit="split", leave=False, disable=None)
    for sp in it:
        adapt = sp.startswith("adapt")
        params = classic_env_params(name, sp)
        ics = classic_initial_conditions(name, sp, seed, traj[sp])
        x = np.empty((len(params), len(ics), len(t), spec["dims"]), dtype=np.float64)
        for e, p in enumerate(params):
            fun = spec["rhs"](p)
            for j, ic in enumerate(ics):
                sol = solve_ivp(fun, t_span, ic, method="RK45", t_eval=t)
                if sol.status != 0 or sol.y.shape[1] != len(t) or not np.all(np.isfinite(sol.y)):
                    raise DataError(f"{name}: split {sp}, env {p}, trajectory {j}: integration failed ({sol.message})")
                x[e, j] = sol.y.T
        fam = np.array([spec["family"](i, p, adapt) for i, p in enumerate(params)], dtype=np.int64)
        pn = spec["param_names"]
        env_names = [",".join(f"{k}={v:g}" for k, v in zip(pn, p)) for p in params]
        out[sp] = EnvData(
            x,
            np.repeat(t[None], len(params), axis=0),
            fam,
            params=tuple(params),
            env_names=tuple(env_names),
            family_names=tuple(spec["family_names"]),
            source=name,
            split=sp,
        )
        split_meta[sp] = {
            "env_params": [list(p) for p in params],
            "initial_conditions": ics.tolist(),
            "trajectory_seeds": [_traj_seed(spec, sp, j, seed) for j in range(len(ics))],
        }
    meta = {
        "name": name,
        "description": spec["title"],
        "generator": "mixerdsr.classic",
        "seed": seed,
        "equations": spec["equations"],
        "param_names": spec["param_names"],
        "fixed_params": dict(spec["fixed"]),
        "family_names": spec["family_names"],
        "dims": spec["dims"],
        "time_grid": {"start": spec["t"][0], "stop": spec["t"][1], "num": spec["t"][2], "endpoint": spec["t"][3]},
        "trajectories": {sp: traj[sp] for sp in names},
        "seed_rule": (
            "train/adapt_train: 2**31-1-seed-j, test/adapt_test: seed+j"
            if spec["inverted"]
            else "train/adapt_train: seed+j, test/adapt_test: 2**31-1-seed-j"
        ),
        "solver": "scipy.integrate.solve_ivp RK45, default tolerances",
        "env_params": {sp: m["env_params"] for sp, m in split_meta.items()},
        "initial_conditions": {sp: m["initial_conditions"] for sp, m in split_meta.items()},
    }
    return out, meta


def generate_lv(
    seed: int = 0,
    *,
    trajectories: Mapping[str, int] | None = None,
    splits: Sequence[str] | None = None,
    progress: bool = False,
) -> tuple[dict[str, EnvData], dict[str, Any]]:
    """Lotka-Volterra benchmark (see module docstring). ``trajectories`` overrides per-split counts."""
    return _generate("lv", seed, trajectories=trajectories, splits=splits, progress=progress)


def generate_go(
    seed: int = 0,
    *,
    trajectories: Mapping[str, int] | None = None,
    splits: Sequence[str] | None = None,
    progress: bool = False,
) -> tuple[dict[str, EnvData], dict[str, Any]]:
    """Glycolytic-oscillator benchmark (see module docstring). ``trajectories`` overrides per-split counts."""
    return _generate("go", seed, trajectories=trajectories, splits=splits, progress=progress)


def generate_sm(
    seed: int = 0,
    *,
    trajectories: Mapping[str, int] | None = None,
    splits: Sequence[str] | None = None,
    progress: bool = False,
) -> tuple[dict[str, EnvData], dict[str, Any]]:
    """Sel'kov benchmark (see module docstring). ``trajectories`` overrides per-split counts."""
    return _generate("sm", seed, trajectories=trajectories, splits=splits, progress=progress)
