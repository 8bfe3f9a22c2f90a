"""CAVIA's outer step: contexts from an inner loop, second-order gradients through it."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float

from .._config import Config
from ..experts import AbstractInnerLoopExpert
from ..mixer import MixER, trained_spec
from ..rollout import SolverSettings, env_loss, env_losses, zero_nonfinite
from ..sharding import env_vmap, replicated
from ._state import TrainData, TrainState, optimisers

__all__ = ["inner_loop_contexts", "inner_loop_outer_step"]


def inner_loop_contexts(
    model: MixER, x: Float[Array, "E N T D"], t: Float[Array, "E T"], solver: SolverSettings
) -> tuple[Float[Array, "E d"], Float[Array, " E"]]:
    """The inner loop of an :class:`~mixerdsr.experts.AbstractInnerLoopExpert` for every env:
    the context its :meth:`~mixerdsr.experts.AbstractInnerLoopExpert.inner_loop` reaches from
    zero on the env's trajectories ``x``. Differentiable (twice) in the model. Returns
    ``(contexts [E, d], loss at the zero context [E])``."""
    expert = model.experts
    if not isinstance(expert, AbstractInnerLoopExpert):
        raise TypeError(f"{type(expert).__name__} does not train with an inner loop")

    def one(xe, te):
        return expert.inner_loop(lambda ci: env_loss(model, ci, xe, te, solver)[0], model.context_size, xe.dtype)

    return env_vmap(one, x, t)


def inner_loop_outer_step(cfg: Config, n_envs: int):
    """The outer step of a CAVIA-style backbone (``inner_loop`` experts, one expert).

    ``K`` steps on the shared weights, each on a random batch of ``train.batch_envs`` envs
    (0 = all): the batch loss at the contexts the inner loop reaches from zero
    (:func:`inner_loop_contexts`), differentiated through that loop (second order). Contexts are
    never optimised directly; after the ``K`` steps every env's context is its inner-loop
    result under the new weights (used for validation and evaluation). ``info`` has the layout
    of :func:`make_outer_step`'s: ``ctx_loss`` is the batch loss at the zero context (before the
    inner loop), ``weight_loss`` the loss after it.
    """
    solver = cfg.solver
    opt_w, _ = optimisers(cfg.train)
    batch = min(cfg.train.batch_envs or n_envs, n_envs)
    k_inner = cfg.train.inner_steps

    def outer_step(state: TrainState, data: TrainData):
        key, kb = jax.random.split(state.key)
        spec = trained_spec(state.model)
        params, static = eqx.partition(state.model, spec)
        flat, unravel = ravel_pytree(params)

        def weight_step(carry, kperm):
            theta, opt_state = carry
            idx = jax.random.permutation(kperm, n_envs)[:batch]
            xb, tb = data.x[idx], data.t[idx]

            def objective(th):
                model = eqx.combine(unravel(th), static)
                cs, loss0 = inner_loop_contexts(model, xb, tb, solver)
                losses, ok = env_losses(model, cs, xb, tb, solver)
                if data.weight is not None:
                    losses = losses * data.weight[idx]
                loss = jnp.sum(jnp.where(ok, losses, 0.0)) / jnp.maximum(jnp.sum(ok), 1)
                return loss, (jnp.mean(loss0), jnp.sum(~ok))

            (loss, (loss0, failed)), g = jax.value_and_grad(objective, has_aux=True)(theta)
            updates, opt_state = opt_w.update(zero_nonfinite(g), opt_state, theta)
            return (optax.apply_updates(theta, updates * data.lr_scale), opt_state), (loss0, loss, failed)

        (theta, opt_state), (loss0, losses, failed) = jax.lax.scan(
            weight_step, (flat, state.opt_weights), jax.random.split(kb, k_inner)
        )
        model = eqx.combine(unravel(theta), static)
        contexts, _ = inner_loop_contexts(model, data.x[:n_envs], data.t[:n_envs], solver)  # not a device's padding
        new = state._replace(model=model, contexts=contexts, opt_weights=opt_state, key=key, step=state.step + 1)
        losses = jnp.where(failed >= batch, jnp.nan, losses)
        none = jnp.full((k_inner,), -1, jnp.int32)
        info = dict(
            ctx_loss=loss0,
            weight_loss=losses,
            failed=jnp.concatenate([jnp.zeros_like(failed), failed]),
            gate_status=jnp.concatenate([none, none]),
        )
        return replicated((new, info))  # whole on every device: the host reads it

    return outer_step
