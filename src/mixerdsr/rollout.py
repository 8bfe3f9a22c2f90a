"""From a MixER layer and contexts to predicted trajectories and the per-environment loss.

The routed expert's class decides how predictions are made (:meth:`AbstractExpert.rollout`:
an IVP solve for vector-field experts, a one-step-map rollout for sequence experts) and which
time steps are scored (``scored_from``); nothing here asks what kind of expert it is.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .experts._integrate import SolverSettings as SolverSettings
from .experts._integrate import sequence_rollout as sequence_rollout
from .experts._integrate import solve as solve
from .sharding import env_vmap

__all__ = ["SolverSettings", "solve", "sequence_rollout", "env_rollout", "env_loss", "env_losses", "zero_nonfinite"]


def env_rollout(
    model,
    ctx: Float[Array, " d"],
    x: Float[Array, "N T D"],
    t: Float[Array, " T"],
    config: SolverSettings = SolverSettings(),
    *,
    m: Int[Array, ""] | int | None = None,
    ctx_pool: Float[Array, " d"] | None = None,
    alpha: float = 1.0,
    forcing: Float[Array, ""] | None = None,
) -> tuple[Float[Array, "N T D"], Bool[Array, " N"]]:
    """Predict all trajectories of one environment.

    Args:
        model: a :class:`~mixerdsr.mixer.MixER`.
        ctx: the environment's context ``[d]``.
        x: its observed trajectories ``[N, T, D]`` (IVPs use only ``x[:, 0]``; sequence experts
            use the observations for teacher forcing when ``alpha < 1``).
        t: its time grid ``[T]``.
        config: solver settings.
        m: force expert ``m`` instead of the routed one (gate update, Algorithm 1 line 7).
        ctx_pool: contextual self-modulation: expand around this context.
        alpha: teacher-forcing coefficient (1 = free running; ignored by vector-field experts).
        forcing: interval forcing of vector-field experts in training (``train.forcing``;
            None = free running; ignored by sequence experts).

    Returns:
        ``(pred [N, T, D], ok [N])``.
    """
    net = model.specialise(ctx, m, ctx_pool)
    if forcing is None:  # experts written before ``forcing`` existed need not accept it
        return model.expert_type.rollout(net, x, t, config, alpha)
    return model.expert_type.rollout(net, x, t, config, alpha, forcing=forcing)


def env_loss(
    model,
    ctx: Float[Array, " d"],
    x: Float[Array, "N T D"],
    t: Float[Array, " T"],
    config: SolverSettings = SolverSettings(),
    *,
    m=None,
    ctx_pool=None,
    alpha: float = 1.0,
    forcing: Float[Array, ""] | None = None,
) -> tuple[Float[Array, ""], Bool[Array, ""]]:
    """Eq. 7 loss of one environment: mean over trajectories and scored times of ``||pred - x||^2``.

    Returns ``(loss, ok)``; ``ok`` is False if any of its solves failed (loss is then 0).
    """
    pred, ok = env_rollout(model, ctx, x, t, config, m=m, ctx_pool=ctx_pool, alpha=alpha, forcing=forcing)
    s = model.expert_type.scored_from
    err = jnp.sum((pred[:, s:] - x[:, s:]) ** 2, axis=-1).mean()
    ok_all = jnp.all(ok)
    return jnp.where(ok_all, err, 0.0), ok_all


def env_losses(
    model,
    c: Float[Array, "E d"],
    x: Float[Array, "E N T D"],
    t: Float[Array, "E T"],
    solver: SolverSettings,
    m=None,
    *,
    alpha: float = 1.0,
    forcing: Float[Array, ""] | None = None,
) -> tuple[Float[Array, " E"], Bool[Array, " E"]]:
    """Eq. 7 loss and success of every env ``[E]`` at contexts ``c`` ``[E, d]`` (routed expert,
    or expert ``m``), with teacher forcing ``alpha`` (ignored by vector-field experts) and
    interval forcing ``forcing`` (ignored by sequence experts)."""
    return env_vmap(lambda ci, xi, ti: env_loss(model, ci, xi, ti, solver, m=m, alpha=alpha, forcing=forcing), c, x, t)


def zero_nonfinite(tree: Any) -> Any:
    """Replace non-finite gradient entries by 0 (a failed solve must not poison the step)."""
    return jax.tree.map(lambda g: jnp.where(jnp.isfinite(g), g, 0.0) if eqx.is_inexact_array(g) else g, tree)
