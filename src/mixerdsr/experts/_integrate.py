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

__all__ = ["SolverSettings", "solve", "sequence_rollout"]


@typing.no_type_check  # validates itself, naming the key
@dataclasses.dataclass(frozen=True)
class SolverSettings:
    """ODE solver settings, the ``[solver]`` table of a run configuration (paper: Tsit5,
    rtol 1e-3, atol 1e-6).

    Attributes:
        rtol, atol: PID controller tolerances (> 0).
        max_steps: step cap per solve (a solve that needs more is marked failed).
    """

    rtol: float = 1e-3
    atol: float = 1e-6
    max_steps: int = 4096

    def __post_init__(self):
        validate(self, "solver", ranges={"rtol": POSITIVE, "atol": POSITIVE, "max_steps": AT_LEAST_1})


def solve(
    net, x0: Float[Array, " D"], t: Float[Array, " T"], config: SolverSettings = SolverSettings()
) -> tuple[Float[Array, "T D"], Bool[Array, ""]]:
    """Integrate the vector field ``net(t, x, args)`` from ``x0`` and save at ``t``.

    Returns:
        ``(ys [T, D], ok)``; ``ys`` is zero where the solve failed.
    """
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


def sequence_rollout(net, x: Float[Array, "T D"], alpha: float | Array) -> Float[Array, "T D"]:
    """Roll a one-step map ``z_{t+1} = net(t, s_t)`` along one series (generalised teacher forcing).

    ``z_0 = 0`` and ``s_t = alpha z_t + (1 - alpha) x_t``: the prediction ``z_{t+1}`` of
    ``x_{t+1}`` is made from the model state mixed with the observation of the *current* step
    ``x_t`` only, never with ``x_{t+1}`` itself. ``alpha = 1`` is free running from ``z_0``.

    Returns:
        ``[T, D]``: ``z_0`` (zeros, not scored) followed by the predictions of ``x_1 .. x_{T-1}``.
    """
    z0 = jnp.zeros_like(x[0])

    def step(z, xt):
        z_next = net(0.0, alpha * z + (1.0 - alpha) * xt, None)
        return z_next, z_next

    _, preds = jax.lax.scan(step, z0, x[:-1])
    return jnp.concatenate([z0[None], preds], axis=0)
