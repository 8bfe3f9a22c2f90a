"""Time stepping shared by the experts: IVP solves (diffrax) and one-step-map rollouts.

A solve that fails (too many steps, non-finite state) does not raise: it is reported as
``ok = False`` and its prediction is zeroed, so the training loss can drop that environment
instead of killing the run.
"""

from __future__ import annotations

import dataclasses
import typing

import diffrax
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from .._settings import AT_LEAST_1, POSITIVE, validate

__all__ = ["SolverSettings", "solve", "forced_solve", "rk4_rollout", "sequence_rollout"]

#: the solvers of :class:`SolverSettings` ``method``
METHODS = ("tsit5", "rk4")


@typing.no_type_check  # validates itself, naming the key
@dataclasses.dataclass(frozen=True)
class SolverSettings:
    """ODE solver settings, the ``[solver]`` table of a run configuration (paper: Tsit5,
    rtol 1e-3, atol 1e-6).

    Attributes:
        method: ``"tsit5"`` (adaptive Tsit5 with a PID controller, diffrax; the paper's) or
            ``"rk4"`` (classic RK4 with ``substeps`` fixed steps per interval of the time grid:
            no error control, but a plain ``lax.scan`` that compiles in a fraction of the time,
            for smooth systems on fine grids and for quick checks).
        rtol, atol: PID controller tolerances (> 0; ``tsit5`` only).
        max_steps: step cap per solve (a solve that needs more is marked failed; ``tsit5`` only).
        substeps: RK4 steps per interval of the time grid (``rk4`` only).
        sequence_start: where a sequence expert's rollout starts (:func:`sequence_rollout`):
            ``"data"`` (the first observation ``x_0``: a free run forecasts each trajectory from
            its own initial state, as an ODE solve does) or ``"zeros"`` (``z_0 = 0``, the
            paper's Appendix C.2: a free run never sees the data, so every trajectory of an
            environment gets the same forecast; the series presets keep it).
    """

    method: str = "tsit5"
    rtol: float = 1e-3
    atol: float = 1e-6
    max_steps: int = 4096
    substeps: int = 4
    sequence_start: str = "data"

    def __post_init__(self):
        validate(
            self,
            "solver",
            choices={"method": METHODS, "sequence_start": ("data", "zeros")},
            ranges={"rtol": POSITIVE, "atol": POSITIVE, "max_steps": AT_LEAST_1, "substeps": AT_LEAST_1},
        )


def solve(
    net, x0: Float[Array, " D"], t: Float[Array, " T"], config: SolverSettings = SolverSettings()
) -> tuple[Float[Array, "T D"], Bool[Array, ""]]:
    """Integrate the vector field ``net(t, x, args)`` from ``x0`` and save at ``t``.

    Returns:
        ``(ys [T, D], ok)``; ``ys`` is zero where the solve failed.
    """
    if config.method == "rk4":
        return rk4_rollout(net, x0, t, config.substeps)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(net),
        diffrax.Tsit5(),
        t0=t[0],
        t1=t[-1],
        dt0=None,
        y0=x0,
        saveat=diffrax.SaveAt(ts=t),
        stepsize_controller=diffrax.PIDController(rtol=config.rtol, atol=config.atol),
        max_steps=config.max_steps,
        throw=False,
    )
    ys = sol.ys
    ok = (sol.result == diffrax.RESULTS.successful) & jnp.all(jnp.isfinite(ys))
    return jnp.where(ok, ys, 0.0), ok


def _rk4_interval(net, x: Float[Array, " D"], dt: Float[Array, ""], substeps: int) -> Float[Array, " D"]:
    """``substeps`` classic RK4 steps of ``net`` from ``x`` over a time span ``dt``."""
    h = dt / substeps

    def step(x, _):
        k1 = net(0.0, x, None)
        k2 = net(0.0, x + 0.5 * h * k1, None)
        k3 = net(0.0, x + 0.5 * h * k2, None)
        k4 = net(0.0, x + h * k3, None)
        return x + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4), None

    return jax.lax.scan(step, x, None, length=substeps)[0]


def forced_solve(
    net, x: Float[Array, "T D"], t: Float[Array, " T"], config: SolverSettings, a: Float[Array, ""] | float
) -> tuple[Float[Array, "T D"], Bool[Array, ""]]:
    """Integrate ``net`` interval by interval along one observed trajectory ``x``, each interval
    ``[t_k, t_k+1]`` from ``s_k = a z_k + (1 - a) x_k`` where ``z_k`` is the prediction at
    ``t_k`` (``z_0 = x_0``): generalised teacher forcing for a flow. ``a = 1`` is the free
    solve from ``x_0``; ``a = 0`` predicts every state from the observed one before it.

    Returns:
        ``(ys [T, D], ok)`` with ``ys[0] = x_0``; ``ys`` is zero where the solve failed.
    """

    def interval(z, inp):
        xk, t0, t1 = inp
        s = a * z + (1.0 - a) * xk
        if config.method == "rk4":
            y, ok = _rk4_interval(net, s, t1 - t0, config.substeps), jnp.ones((), bool)
        else:
            sol = diffrax.diffeqsolve(
                diffrax.ODETerm(net),
                diffrax.Tsit5(),
                t0=t0,
                t1=t1,
                dt0=t1 - t0,  # one step first (the controller shrinks it): 2.6x faster than its initial guess
                y0=s,
                saveat=diffrax.SaveAt(t1=True),
                stepsize_controller=diffrax.PIDController(rtol=config.rtol, atol=config.atol),
                max_steps=config.max_steps,
                throw=False,
            )
            y, ok = sol.ys[-1], sol.result == diffrax.RESULTS.successful
        return y, (y, ok)

    _, (ys, oks) = jax.lax.scan(interval, x[0], (x[:-1], t[:-1], t[1:]))
    ys = jnp.concatenate([x[0][None], ys], axis=0)
    ok = jnp.all(oks) & jnp.all(jnp.isfinite(ys))
    return jnp.where(ok, ys, 0.0), ok


def rk4_rollout(
    net, x0: Float[Array, " D"], t: Float[Array, " T"], substeps: int
) -> tuple[Float[Array, "T D"], Bool[Array, ""]]:
    """Integrate ``net(t, x, args)`` from ``x0`` with ``substeps`` classic RK4 steps per interval
    of ``t`` (a ``lax.scan``: differentiable twice in reverse mode, unlike an adaptive solve's
    while loop). Returns ``(ys [T, D], ok)``; ``ys`` is zero where it is not finite."""

    def interval(x, dt):
        x = _rk4_interval(net, x, dt, substeps)
        return x, x

    _, ys = jax.lax.scan(interval, x0, jnp.diff(t))
    ys = jnp.concatenate([x0[None], ys], axis=0)
    ok = jnp.all(jnp.isfinite(ys))
    return jnp.where(ok, ys, 0.0), ok


def sequence_rollout(net, x: Float[Array, "T D"], alpha: float | Array, start: str = "data") -> Float[Array, "T D"]:
    """Roll a one-step map ``z_{t+1} = net(t, s_t)`` along one series (generalised teacher forcing).

    ``z_0`` is the first observation ``x_0`` (``start = "data"``) or 0 (``"zeros"``), and
    ``s_t = alpha z_t + (1 - alpha) x_t``: the prediction ``z_{t+1}`` of ``x_{t+1}`` is made
    from the model state mixed with the observation of the *current* step ``x_t`` only, never
    with ``x_{t+1}`` itself. ``alpha = 1`` is free running from ``z_0``.

    Returns:
        ``[T, D]``: ``z_0`` (not scored) followed by the predictions of ``x_1 .. x_{T-1}``.
    """
    if start not in ("data", "zeros"):
        raise ValueError(f"start must be 'data' or 'zeros', got {start!r}")
    z0 = x[0] if start == "data" else jnp.zeros_like(x[0])

    def step(z, xt):
        z_next = net(0.0, alpha * z + (1.0 - alpha) * xt, None)
        return z_next, z_next

    _, preds = jax.lax.scan(step, z0, x[:-1])
    return jnp.concatenate([z0[None], preds], axis=0)
