"""Seconds per outer step of Table 4's single meta-learners at the published sizes, and where
they go: the solver (steps per solve, adaptive Tsit5 against fixed-step RK4), compilation, and
the host loop.

For each of LV, GO and SM with CoDA and NCF (the ``converged`` budget's settings: the paper's
active parameter counts, one expert), every configuration in its own process:

- ``tsit5``: the default solver (adaptive Tsit5, rtol 1e-3, atol 1e-6);
- ``rk4-S``: ``solver.method = "rk4"`` with ``S`` fixed steps per interval of the time grid.

Printed per configuration: compilation (first step minus a steady step), seconds per outer step
(mean of steps 1..N-1, ``jax.block_until_ready`` after each: the host syncs once per outer
step, as training does), and Tsit5's accepted steps per solve of the model being trained
(mean and max over the training trajectories, on the first and the last timed step; a vmapped
adaptive solve runs every trajectory to the slowest one's count).

Also printed per dataset, to judge whether RK4 is accurate enough: the MSE between the data
and RK4 with ``S`` steps per interval of the *true* vector field from the data's initial states,
beside the data's own integration error (the data are RK45 at scipy's default tolerances,
compared with a 1e-10 solve).

    python benchmarks/table4_speed.py [--steps 6] [--only lv-coda go-ncf ...] [--substeps 1 2 4]
        [--shape published ours] [--solvers tsit5 rk4-1]

``--shape``: the published runs' network shapes where the harness knows them (``published``,
the ``converged`` cells'), or this project's shapes at the same parameter counts (``ours``).

Measured figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CELLS = ("lv-coda", "lv-ncf", "go-coda", "go-ncf", "sm-coda", "sm-ncf")
#: RK4 steps per interval timed by default: around the fewest whose error on the true field is
#: at the data's own (LV 1, GO 4-8, SM 32; fewer blow up on GO and SM, see the printed errors)
SUBSTEPS = {"lv": (1, 2), "go": (4, 8), "sm": (16, 32)}


def _config(cell: str, solver: str, shape: str = "published", variant: str = "single", extra: dict | None = None):
    """The ``converged`` budget's config of Table 4's ``DATA-BACKBONE-VARIANT-s0`` cell, with
    ``solver`` (``tsit5`` or ``rk4-S``) and the ``extra`` settings on top."""
    import mixerdsr as mx
    from mixerdsr import reproduce as R

    data, backbone = cell.split("-")
    (c,) = [c for c in R.cells("table4", [0]) if c.name == f"{data}-{backbone}-{variant}-s0"]
    over = R.settings(c, "converged", published_shape=shape == "published")
    if solver != "tsit5":
        over |= {"solver.method": "rk4", "solver.substeps": int(solver.split("-")[1])}
    return mx.load_config(R.preset_of(c.data), None, over | (extra or {}))


def _solver_steps(model, contexts, x, t, cfg) -> tuple[float, int]:
    """Accepted Tsit5 steps per solve of the routed expert over every training trajectory."""
    import diffrax
    import jax
    import jax.numpy as jnp

    s = cfg.solver

    def one(ctx, x0, te):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(model.specialise(ctx)),
            diffrax.Tsit5(),
            t0=te[0],
            t1=te[-1],
            dt0=None,
            y0=x0,
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.PIDController(rtol=s.rtol, atol=s.atol),
            max_steps=s.max_steps,
            throw=False,
        )
        return sol.stats["num_accepted_steps"]

    n = jax.jit(jax.vmap(jax.vmap(one, (None, 0, None)), (0, 0, 0)))(contexts, x[:, :, 0], t)
    n = jnp.asarray(n)
    return float(n.mean()), int(n.max())


def _one(spec: dict) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import mixerdsr as mx
    from mixerdsr.evaluation import active_parameters
    from mixerdsr.training import TrainData, init_state, make_outer_step

    cfg = _config(spec["cell"], spec["solver"], spec["shape"], spec.get("variant", "single"), spec.get("extra"))
    train = mx.generate_dataset(cfg.data.source)[0]["train"]
    keep = train.x.shape[1] - cfg.data.val_trajectories
    x = jnp.asarray(np.asarray(train.x, np.float32)[:, :keep])
    t = jnp.asarray(np.asarray(train.t, np.float32))
    data = TrainData(x, t)
    state = init_state(cfg, x.shape[0], x.shape[-1])
    step = make_outer_step(cfg, x.shape[0])
    out: dict = {"active_parameters": active_parameters(state.model), "trajectories": int(x.shape[0] * x.shape[1])}
    out["steps_first"] = _solver_steps(state.model, state.contexts, x, t, cfg)
    times = []
    for _ in range(spec["steps"]):
        t0 = time.perf_counter()
        state, info = step(state, data)
        jax.block_until_ready((state.contexts, info))
        times.append(time.perf_counter() - t0)
    steady = times[1:]
    out.update(
        compile_seconds=times[0] - float(np.median(steady)),
        seconds_per_outer_step=float(np.mean(steady)),
        std=float(np.std(steady)),
        loss=float(np.nanmean(np.asarray(info["weight_loss"]))),
    )
    out["steps_last"] = _solver_steps(state.model, state.contexts, x, t, cfg)
    return out


def _rk4_mse(f, x, t, s: int) -> float:
    """MSE against ``x [T, D]`` of RK4 with ``s`` steps per interval of ``f`` from ``x[0]``
    (inf where it blows up: the step is past the stability limit)."""
    import numpy as np

    y, ys = x[0].copy(), [x[0]]
    try:
        with np.errstate(over="raise", invalid="raise"):
            for k in range(len(t) - 1):
                h = (t[k + 1] - t[k]) / s
                for _ in range(s):
                    k1 = np.asarray(f(0, y))
                    k2 = np.asarray(f(0, y + 0.5 * h * k1))
                    k3 = np.asarray(f(0, y + 0.5 * h * k2))
                    k4 = np.asarray(f(0, y + h * k3))
                    y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
                ys.append(y)
    except (OverflowError, FloatingPointError):
        return float("inf")
    err = float(((np.asarray(ys) - x) ** 2).mean())
    return err if np.isfinite(err) else float("inf")


def _data_rk4_error(name: str, substeps: list[int]) -> str:
    """MSE of RK4 (S steps per interval) of the true field against the data, and of the data
    against a tight solve, over the training split."""
    import numpy as np
    from scipy.integrate import solve_ivp

    import mixerdsr as mx
    from mixerdsr.data._classic import _SPECS, classic_env_params

    train = mx.generate_dataset(name)[0]["train"]
    x, t = np.asarray(train.x), np.asarray(train.t)[0]
    spec = _SPECS[name]
    errs = {s: [] for s in substeps}
    tight = []
    for e, p in enumerate(classic_env_params(name, "train")):
        f = spec["rhs"](p)
        for j in range(min(x.shape[1], 8)):
            ref = solve_ivp(f, (t[0], t[-1]), x[e, j, 0], t_eval=t, rtol=1e-10, atol=1e-12).y.T
            tight.append(((ref - x[e, j]) ** 2).mean())
            for s in substeps:
                errs[s].append(_rk4_mse(f, x[e, j], t, s))
    parts = [f"data vs a 1e-10 solve {np.mean(tight):.2e}"]
    parts += [f"RK4-{s} vs data {np.mean(v):.2e}" for s, v in errs.items()]
    return f"{name}: " + ", ".join(parts)


def _spawn(spec: dict) -> dict:
    """:func:`_one` in a fresh process (its compilation and memory its own)."""
    p = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"configuration {spec} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=6, help="outer steps per configuration (step 0 = compile)")
    ap.add_argument("--only", nargs="+", choices=CELLS, default=list(CELLS))
    ap.add_argument("--substeps", type=int, nargs="+", help="RK4 steps per interval to time (default per dataset)")
    ap.add_argument(
        "--shape",
        nargs="+",
        choices=["published", "ours"],
        default=["published"],
        help="network shapes: the published runs' where the harness knows them, or this project's",
    )
    ap.add_argument("--solvers", nargs="+", help="tsit5 and/or rk4-S (default: tsit5 and the dataset's RK4 steps)")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(_one(json.loads(args.one))))
        return
    for name in dict.fromkeys(c.split("-")[0] for c in args.only):
        print(_data_rk4_error(name, sorted({1, 2, 4, *(args.substeps or SUBSTEPS[name])})), flush=True)
    print(
        f"\n{'cell':8s} {'shape':9s} {'solver':7s} {'params':>8s} {'compile s':>9s} {'s/outer step':>14s} "
        f"{'Tsit5 steps/solve first':>24s} {'last':>10s}"
    )
    for cell, shape in [(c, s) for c in args.only for s in args.shape]:
        default = ["tsit5", *(f"rk4-{s}" for s in args.substeps or SUBSTEPS[cell.split("-")[0]])]
        for solver in args.solvers or default:
            r = _spawn({"cell": cell, "solver": solver, "steps": args.steps, "shape": shape})
            f, last = r["steps_first"], r["steps_last"]
            print(
                f"{cell:8s} {shape:9s} {solver:7s} {r['active_parameters']:8,d} {r['compile_seconds']:9.1f} "
                f"{r['seconds_per_outer_step']:8.2f}±{r['std']:.2f} {f[0]:15.1f} (max {f[1]:3d}) "
                f"{last[0]:5.1f} ({last[1]})",
                flush=True,
            )


if __name__ == "__main__":
    main()
