"""Adaptation: fit a fresh context to each new environment, weights and gate frozen."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float

from .inference import routes
from .mixer import MixER
from .rollout import SolverSettings, env_losses, zero_nonfinite

__all__ = ["adapt_contexts", "expert_starts"]


def adapt_contexts(
    model: MixER,
    x: Float[ArrayLike, "E N T D"],
    t: Float[ArrayLike, "E T"],
    *,
    steps: int = 500,
    lr: float = 1e-2,
    init: Float[ArrayLike, "E d"] | None = None,
    solver: SolverSettings = SolverSettings(),
    joint: bool = False,
    starts: Float[ArrayLike, "S d"] | None = None,
    alpha: float = 1.0,
) -> tuple[Float[Array, "E d"], Float[Array, "E steps"]]:
    """Fit a fresh context for each new environment, everything else frozen.

    By default every environment is fitted independently (its own loss and AdaBelief state),
    as the paper's one-by-one protocol, but as one compiled function vmapped over
    environments. ``joint=True`` fits all contexts together: one AdaBelief state over the
    ``[E, d]`` context matrix minimising the mean loss over environments (as in training).

    Routing is top-1, so a context started in one expert's region is rarely carried by its
    gradient into another's: with ``starts`` (e.g. :func:`expert_starts`), the fit is run from
    every start and each environment keeps the context whose final loss on ``x`` is lowest
    (only the adaptation data decide; ``init`` is then ignored).

    Args:
        model: trained MixER (weights and gate frozen).
        x, t: adaptation data ``[E, N, T, D]`` and ``[E, T]``.
        steps, lr: AdaBelief steps and learning rate.
        init: starting contexts ``[E, d]`` (default: zeros, as the paper).
        solver: solver settings.
        joint: one optimiser for all environments instead of one each.
        starts: optional starting contexts ``[S, d]`` shared by all environments; the best of
            the ``S`` fits is kept per environment.
        alpha: teacher forcing of the loss (sequence experts; a run passes its training
            ``teacher_forcing``); vector-field experts ignore it.

    Returns:
        ``(contexts [E, d], loss_history [E, steps])`` (with ``starts``: the history of the
        kept fit).
    """
    x, t = jnp.asarray(x), jnp.asarray(t)
    if starts is not None:
        fits = [
            _adapt(
                model,
                x,
                t,
                jnp.broadcast_to(jnp.asarray(s, x.dtype), (x.shape[0], model.context_size)),
                steps,
                lr,
                solver,
                joint,
                alpha,
            )
            for s in jnp.asarray(starts)
        ]
        final = jnp.stack([_final_losses(model, c, x, t, solver, alpha) for c, _ in fits])  # [S, E]
        best = jnp.argmin(final, axis=0)
        ctx = jnp.stack([c for c, _ in fits])[best, jnp.arange(x.shape[0])]
        hist = jnp.stack([h for _, h in fits])[best, jnp.arange(x.shape[0])]
        return ctx, hist
    if init is None:
        init = jnp.zeros((x.shape[0], model.context_size), x.dtype)
    return _adapt(model, x, t, jnp.asarray(init), steps, lr, solver, joint, alpha)


def expert_starts(model: MixER, contexts: Float[Array, "E d"]) -> Float[Array, "S1 d"]:
    """Adaptation starts: the zero context (the paper's start), then, for every expert that has
    training environments, their mean context (which the linear gate routes to that expert:
    each expert's region of context space is convex).

    Args:
        model: trained MixER.
        contexts: its training contexts ``[E, d]``.

    Returns:
        ``[1 + S, d]`` with ``S`` the number of experts in use.
    """
    r = np.asarray(routes(model, contexts))
    c = np.asarray(contexts)
    means = [c[r == m].mean(0) for m in np.unique(r)]
    return jnp.asarray(np.stack([np.zeros_like(c[0])] + means))


@eqx.filter_jit
def _final_losses(model, c, x, t, solver, alpha=1.0):
    ls, ok = env_losses(model, c, x, t, solver, alpha=alpha)
    return jnp.where(ok & jnp.isfinite(ls), ls, jnp.inf)


@eqx.filter_jit
def _adapt(model, x, t, init, steps, lr, solver, joint, alpha):
    opt = optax.adabelief(lr)

    def losses_at(c, xe, te):
        return env_losses(model, c, xe, te, solver, alpha=alpha)[0]

    if joint:

        def body_joint(carry, _):
            c, s = carry
            (_, losses), g = jax.value_and_grad(
                lambda cc: (lambda ls: (ls.mean(), ls))(losses_at(cc, x, t)), has_aux=True
            )(c)
            u, s = opt.update(zero_nonfinite(g), s, c)
            return (optax.apply_updates(c, u), s), losses

        (c, _), hist = jax.lax.scan(body_joint, (init, opt.init(init)), None, length=steps)
        return c, hist.T

    def fit_one(c0, xe, te):
        def loss_fn(c):
            return losses_at(c[None], xe[None], te[None])[0]

        def body(carry, _):
            c, s = carry
            loss, g = jax.value_and_grad(loss_fn)(c)
            u, s = opt.update(zero_nonfinite(g), s, c)
            return (optax.apply_updates(c, u), s), loss

        (c, _), hist = jax.lax.scan(body, (c0, opt.init(c0)), None, length=steps)
        return c, hist

    return jax.vmap(fit_one)(init, x, t)
