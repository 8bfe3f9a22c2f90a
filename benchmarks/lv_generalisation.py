"""Where a trained LV model's test error comes from (issue 33's LV gap).

    python benchmarks/lv_generalisation.py RUN_DIR [RUN_DIR ...]

For each run directory of an ``lv`` run (its ``model.npz`` and ``data.npz``) prints:

- the test MSE with the run's solver and with a tight one (rtol 1e-7): how much of the error
  is the model's own integration;
- the error of the data themselves: the test split (scipy RK45 at its default tolerances, as
  the literature generated it) against a 1e-10 solve of the true system, the floor any model of
  the true vector field meets;
- the test trajectories split by their orbit: LV conserves
  ``H = d x - c ln x + b y - a ln y``, so each trajectory lies on one closed orbit; a test
  trajectory whose ``H`` lies inside the range of its environment's four training
  trajectories' is an interpolation, one outside an extrapolation. Printed: how many of each,
  their MSE, and the share of the squared error from the extrapolated ones.
"""

from __future__ import annotations

import sys

import numpy as np
from scipy.integrate import solve_ivp

import mixerdsr as mx
from mixerdsr.data._classic import LV_FIXED, classic_env_params, lv_rhs


def orbit_value(x0: np.ndarray, b: float, d: float) -> np.ndarray:
    """LV's conserved quantity of the states ``x0 [..., 2]`` in environment ``(b, d)``."""
    a, c = LV_FIXED["a"], LV_FIXED["c"]
    return d * x0[..., 0] - c * np.log(x0[..., 0]) + b * x0[..., 1] - a * np.log(x0[..., 1])


def report(run: str) -> None:
    tm = mx.load_model(f"{run}/model.npz")
    splits = mx.load_dataset(f"{run}/data.npz")
    te, tr = splits["test"], splits["train"]
    x, t = np.asarray(te.x), np.asarray(te.t)
    print(f"{run}: test {x.shape}")
    err = None
    for name, solver in (
        ("run's solver", tm.config.solver),
        ("Tsit5 rtol 1e-7", mx.SolverSettings(rtol=1e-7, atol=1e-10, max_steps=20000)),
    ):
        p, _ = mx.predict(tm.model, tm.contexts, x, t, solver)
        e = ((p - x) ** 2).mean(axis=(2, 3))  # [E, N]
        err = e if err is None else err
        print(f"  test MSE, {name}: {e.mean():.3e} (median trajectory {np.median(e):.2e}, max {e.max():.2e})")
    params = classic_env_params("lv", "test")
    floor = [
        (
            (solve_ivp(lv_rhs(*p), (t[e, 0], t[e, -1]), x[e, j, 0], t_eval=t[e], rtol=1e-10, atol=1e-12).y.T - x[e, j])
            ** 2
        ).mean()
        for e, p in enumerate(params)
        for j in range(x.shape[1])
    ]
    print(f"  the data's own error (test split vs a 1e-10 solve): MSE {np.mean(floor):.3e}")
    inside = np.zeros(err.shape, bool)
    for e, (b, d) in enumerate(params):
        h_train = orbit_value(np.asarray(tr.x)[e, :, 0], b, d)
        h_test = orbit_value(x[e, :, 0], b, d)
        inside[e] = (h_test >= h_train.min()) & (h_test <= h_train.max())
    share = err[~inside].sum() / err.sum()
    print(
        f"  orbits within the training orbits' range: {inside.sum()} trajectories, MSE {err[inside].mean():.3e}; "
        f"outside: {(~inside).sum()}, MSE {err[~inside].mean():.3e} ({share:.0%} of the squared error)"
    )


if __name__ == "__main__":
    for run in sys.argv[1:]:
        report(run)
