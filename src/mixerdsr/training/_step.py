"""Proximal alternating training of a MixER layer: the compiled outer step.

One outer step (Eq. 7 minimised by proximal alternating minimisation):

1. ``K`` steps on the contexts ``Xi`` of mini-batches of related environments, each minimising
   the batch loss + ``beta/2 ||Xi - Xi_prev||^2`` (+ ``lambda * mean|Xi_batch|``,
   ``train.context_penalty``);
2. ``K`` steps on the expert weights ``Theta`` (+ ``beta/2 ||Theta - Theta_prev||^2``);
3. the gate's update (:class:`~mixerdsr.routing.GateUpdate`; MixER's is Algorithm 1) after
   every ``gate.every``-th of these 2K steps. Its all-expert loss pass is exact but skips work
   that cannot change: while the weights are fixed (the context loop) only the (expert, env)
   pairs whose visible context moved are solved again (:class:`LossCache`), and envs are
   solved in batches of ``gate.chunk``.

The whole outer step is **one compiled call** (``lax.scan`` over inner steps, ``lax.cond`` for
the gate update). The gate is never a parameter of the experts' optimiser nor in the proximal
term, except for the ``"gradient"`` baseline, where it is trained with the weights.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int

from .._config import Config
from ..experts import BACKBONES, AbstractInnerLoopExpert
from ..mixer import MixER, trained_spec, trained_vector
from ..rollout import SolverSettings, env_loss, env_losses, zero_nonfinite
from ..routing import GateUpdate, gate_update_of
from ..sharding import env_vmap, expert_map, replicated
from ._inner_loop import inner_loop_outer_step
from ._jit import LOW_MEMORY_OPTIONS, jit
from ._state import LossCache, TrainData, TrainState, forcing_at, optimisers

__all__ = ["make_outer_step", "expert_losses"]


def _nearest_batch(anchor: Int[Array, ""], contexts: Float[Array, "E d"], size: int) -> Int[Array, " B"]:
    """Env ``anchor`` plus its ``size - 1`` nearest envs by mean absolute context difference
    (ties broken by index): the ``[size]`` env indices, anchor first."""
    dist = jnp.abs(contexts - contexts[anchor]).mean(axis=1)
    dist = dist.at[anchor].set(-1.0)
    return jnp.argsort(dist, stable=True)[:size]


def _pool_indices(ctx: Float[Array, "B d"], pool: int) -> Int[Array, "B P"]:
    """For each env of a batch, itself and its ``pool - 1`` nearest batch members."""
    dist = jnp.abs(ctx[:, None, :] - ctx[None, :, :]).mean(-1)
    dist = jnp.where(jnp.eye(ctx.shape[0], dtype=bool), -1.0, dist)
    return jnp.argsort(dist, axis=1, stable=True)[:, :pool]


def _batch_loss(model: MixER, contexts, idx, data: TrainData, cfg: Config, forcing=None):
    """Eq. 7 on the envs ``idx``; failed envs are left out of the mean. Returns (loss, n_failed).
    ``forcing``: the interval forcing of vector-field experts (None: free running)."""
    cb, xb, tb = contexts[idx], data.x[idx], data.t[idx]
    solver, alpha = cfg.solver, cfg.train.teacher_forcing
    pool = min(cfg.train.self_modulation_pool, idx.shape[0])
    if model.self_modulating and pool > 1:
        pools = cb[_pool_indices(cb, pool)]  # [B, P, d]

        def one(c, pl, xe, te):
            ls, oks = jax.vmap(
                lambda cp: env_loss(model, c, xe, te, solver, ctx_pool=cp, alpha=alpha, forcing=forcing)
            )(pl)
            return ls.mean(), jnp.all(oks)

        losses, ok = env_vmap(one, cb, pools, xb, tb)
    else:
        losses, ok = env_losses(model, cb, xb, tb, solver, alpha=alpha, forcing=forcing)
    if data.weight is not None:
        losses = losses * data.weight[idx]
    loss = jnp.sum(jnp.where(ok, losses, 0.0)) / jnp.maximum(jnp.sum(ok), 1)
    update = gate_update_of(cfg.gate)
    if update.trains_gate:  # the gradient baseline: its load-balancing penalty
        loss = loss + update.penalty(jax.vmap(model.gate_probs)(contexts).mean(0))
    return loss, jnp.sum(~ok)


def expert_losses(
    model: MixER,
    contexts: Float[Array, "E d"],
    data: TrainData,
    solver: SolverSettings,
    *,
    chunk: int = 0,
    alpha: float = 1.0,
) -> Float[Array, "M E"]:
    """Loss of every expert on every environment (Algorithm 1, line 7).

    Failed solves give ``inf``.

    Args:
        model, contexts, data, solver: as in training.
        chunk: environments per vmapped batch (0 = all at once).
        alpha: teacher forcing of sequence experts (training passes its own).


    The experts are visited with ``lax.map`` (each one a vmap over environments) rather
    than one vmap over the expert axis: faster on a CPU and less memory (figures in
    ``docs/performance.md``), because a vmapped adaptive solve runs every member to the slowest
    one's step count and the vmapped gather copies the parameters per (expert, env) pair. For
    the same reason, batches of ``chunk`` environments are faster on a CPU than all at once.
    """
    return _expert_losses(model, contexts, data, solver, chunk, None, alpha)


def _expert_losses(
    model: MixER,
    contexts,
    data: TrainData,
    solver: SolverSettings,
    chunk: int,
    cache: LossCache | None,
    alpha: float,
    split_experts: bool = False,
) -> Float[Array, "M E"]:
    """:func:`expert_losses`, recomputing only the pairs a valid ``cache`` does not hold.

    For each expert, the envs whose visible context differs from the cached one are moved to
    the front (stable order) and solved in batches of ``chunk``; the loop stops after the last
    batch holding such an env, so an expert with nothing to recompute costs no solve.
    """
    n_env, n_exp = contexts.shape[0], model.n_experts
    size = n_env if chunk <= 0 else min(chunk, n_env)
    n_pad = -(-n_env // size) * size - n_env
    old = jnp.full((n_exp, n_env), jnp.inf, contexts.dtype) if cache is None else cache.losses

    def one(inp):
        m, losses = inp
        if cache is None:
            need = jnp.ones((n_env,), bool)
        else:
            seen = jax.vmap(lambda c: model.expert_context(c, m))
            need = ~cache.valid | jnp.any(seen(contexts) != seen(cache.contexts), axis=-1)
        order = jnp.concatenate([jnp.argsort(~need, stable=True), jnp.zeros((n_pad,), jnp.int32)])
        n_need = jnp.sum(need)

        def batch(j, losses):
            idx = jax.lax.dynamic_slice_in_dim(order, j * size, size)
            ls, ok = env_losses(model, contexts[idx], data.x[idx], data.t[idx], solver, m=m, alpha=alpha)
            keep = j * size + jnp.arange(size) < n_need  # padding / envs that need nothing
            return losses.at[jnp.where(keep, idx, n_env)].set(jnp.where(ok, ls, jnp.inf), mode="drop")

        return jax.lax.fori_loop(0, (n_need + size - 1) // size, batch, losses)

    return expert_map(one, (jnp.arange(n_exp), old), split_experts)


def _gate_chunk(cfg: Config, batch: int) -> int:
    """Envs per batch of the gate's loss pass. ``gate.chunk = -1`` (auto): the training batch
    size, so that the pass runs the training step's compiled solver kernels (fewer kernels to
    compile, a lower compilation peak); with ``low_memory_compile`` memory is not the limit and
    batches of 32 are faster on a CPU (figures in ``docs/performance.md``)."""
    if cfg.gate.chunk >= 0:
        return cfg.gate.chunk
    return 32 if cfg.train.low_memory_compile else batch


def make_outer_step(cfg: Config, n_envs: int):
    """The compiled outer step ``(state, data) -> (state, info)``.

    ``info`` holds per inner step: ``ctx_loss [K]``, ``weight_loss [K]`` (NaN where every solve
    of the batch failed), ``failed [2K]`` (failed envs in the batch) and ``gate_status [2K]``
    (-1 = no gate update at that step, else a code of :data:`mixerdsr.routing.STATUS_NAMES`).
    With one expert (MixER-1, a bare meta-learner) the gate is never updated: it routes every
    env to that expert regardless. An expert that trains with an inner loop
    (:class:`~mixerdsr.experts.AbstractInnerLoopExpert`) gets its own outer step.
    """
    options = LOW_MEMORY_OPTIONS if cfg.train.low_memory_compile else None
    if issubclass(BACKBONES[cfg.model.backbone], AbstractInnerLoopExpert):
        return jit(inner_loop_outer_step(cfg, n_envs), options)
    opt_w, opt_c = optimisers(cfg.train)
    batch = cfg.train.batch(n_envs, cfg.model.num_experts)
    beta, k_inner, lam = cfg.train.proximal_beta, cfg.train.inner_steps, cfg.train.context_penalty
    gate_step = _gate_step(cfg, gate_update_of(cfg.gate), _gate_chunk(cfg, batch))

    def outer_step(state: TrainState, data: TrainData):
        key, kb, kg = jax.random.split(state.key, 3)
        warm = state.step < data.gate_from  # a warm start: one shared expert, no gate update
        ctx_prev, params_prev = state.contexts, trained_vector(state.model)
        spec = trained_spec(state.model)
        forcing = forcing_at(cfg.train, state.step) if cfg.train.forcing < 1 else None

        def ctx_step(steps, idx):
            contexts, opt_state, model, opt_w_state, cache = steps

            def objective(c):
                loss, failed = _batch_loss(model, c, idx, data, cfg, forcing)
                prior = lam * jnp.mean(jnp.abs(c[idx])) if lam else 0.0
                return loss + prior + 0.5 * beta * jnp.sum((c - ctx_prev) ** 2), (loss, failed)

            (_, (loss, failed)), g = jax.value_and_grad(objective, has_aux=True)(contexts)
            updates, opt_state = opt_c.update(zero_nonfinite(g), opt_state, contexts)
            contexts = optax.apply_updates(contexts, updates * data.ctx_scale)
            return (contexts, opt_state, model, opt_w_state, cache), (loss, failed)

        def weight_step(steps, idx):
            contexts, opt_c_state, model, opt_state, cache = steps
            # The trained arrays as one flat vector: the proximal term, the gradient clean-up and
            # AdaBelief run as one kernel each instead of one per array. Fewer distinct compiled
            # kernels means less memory while XLA compiles the outer step.
            params, static = eqx.partition(model, spec)
            flat, unravel = ravel_pytree(params)

            def objective(theta):
                loss, failed = _batch_loss(eqx.combine(unravel(theta), static), contexts, idx, data, cfg, forcing)
                return loss + 0.5 * beta * jnp.sum((theta - params_prev) ** 2), (loss, failed)

            (_, (loss, failed)), g = jax.value_and_grad(objective, has_aux=True)(flat)
            updates, opt_state = opt_w.update(zero_nonfinite(g), opt_state, flat)
            model = eqx.combine(unravel(optax.apply_updates(flat, updates * data.lr_scale)), static)
            cache = cache._replace(valid=jnp.zeros((), bool))  # the experts changed
            return (contexts, opt_c_state, model, opt_state, cache), (loss, failed)

        # One scan over the 2K inner steps (K on the contexts, then K on the weights), so the
        # gate update is compiled once, not once per loop.
        def body(carry, inp):
            gstate, steps = carry[0], carry[1:]
            anchor, kgi, i = inp
            idx = _nearest_batch(anchor, steps[0], batch)
            steps, (loss, failed) = jax.lax.cond(i < k_inner, ctx_step, weight_step, steps, idx)
            contexts, opt_c_state, model, opt_w_state, cache = steps
            due = ((i + 1) % cfg.gate.every == 0) & ~warm
            model, gstate, cache, status = gate_step(model, gstate, cache, contexts, kgi, due, data)
            return (gstate, contexts, opt_c_state, model, opt_w_state, cache), (loss, failed, status)

        # all randomness of the outer step drawn up front (fewer compiled kernels than per step)
        inputs = (jax.random.randint(kb, (2 * k_inner,), 0, n_envs), jax.random.split(kg, 2 * k_inner))
        carry = (state.gate_state, state.contexts, state.opt_contexts, state.model, state.opt_weights, state.loss_cache)
        (gstate, contexts, opt_c_state, model, opt_w_state, cache), (losses, failed, status) = jax.lax.scan(
            body, carry, (*inputs, jnp.arange(2 * k_inner))
        )
        new = state._replace(
            model=model,
            contexts=contexts,
            gate_state=gstate,
            loss_cache=cache,
            opt_weights=opt_w_state,
            opt_contexts=opt_c_state,
            key=key,
            step=state.step + 1,
        )
        losses = jnp.where(failed >= batch, jnp.nan, losses)  # every solve of the batch failed: no loss to report
        info = dict(ctx_loss=losses[:k_inner], weight_loss=losses[k_inner:], failed=failed, gate_status=status)
        return replicated((new, info))  # whole on every device: the host reads it

    return jit(outer_step, options)


def _gate_step(cfg: Config, update: GateUpdate, chunk: int):
    """The gate's part of an inner step: ``update`` when it is ``due`` (a traced bool), with
    the loss pass over every (expert, env) pair it asks for (cached, :class:`LossCache`).
    Returns ``(model, gate_state, cache, status)``; status -1: no update."""
    solver, alpha = cfg.solver, cfg.train.teacher_forcing

    def skip(model, gstate, cache, *_):
        return model, gstate, cache, jnp.asarray(-1, jnp.int32)

    def step(model: MixER, gstate, cache: LossCache, contexts, key, due, data: TrainData):
        # With one expert every env is routed to it whatever the gate: no update (and no loss pass).
        if not update.in_step or model.n_experts == 1:
            return skip(model, gstate, cache)

        def losses():
            ls = _expert_losses(model, contexts, data, solver, chunk, cache, alpha, cfg.train.split_experts)
            return ls, LossCache(ls, contexts, jnp.ones((), bool))

        def do(_):
            new_gate, gs, status, new_cache = update.update(
                model.gate, gstate, contexts, losses, key, aux_default=cache
            )
            return eqx.tree_at(lambda m: m.gate, model, new_gate), gs, new_cache, status.astype(jnp.int32)

        return jax.lax.cond(due, do, lambda _: skip(model, gstate, cache), None)

    return step
