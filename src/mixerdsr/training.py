"""Proximal alternating training of a MixER layer and the gate baselines: the compiled outer step.

One outer step (Eq. 7 minimised by proximal alternating minimisation):

1. ``K`` steps on the contexts ``Xi`` of mini-batches of related environments, each minimising
   the batch loss + ``beta/2 ||Xi - Xi_prev||^2``;
2. ``K`` steps on the expert weights ``Theta`` (+ ``beta/2 ||Theta - Theta_prev||^2``);
3. the least-squares gate update (Algorithm 1) after every ``gate.every``-th of these 2K steps.
   Its all-expert loss pass is exact but skips work that cannot change: while the weights are
   fixed (the context loop) only the (expert, env) pairs whose visible context moved are solved
   again (:class:`LossCache`), and envs are solved in batches of ``gate.chunk``.

The whole outer step is **one compiled call** (``lax.scan`` over inner steps, ``lax.cond`` for
the gate update). The gate is never a parameter of the experts' optimiser nor in the proximal
term, except for the ``"gradient"`` baseline, where it is trained with the weights.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from . import gating
from ._config import Config, TrainSettings
from .experts import BACKBONES
from .gating import INACTIVE_BIAS
from .metrics import geometric_mean
from .mixer import MixER, build_model
from .rollout import SolverSettings, env_loss, env_losses, zero_nonfinite

__all__ = [
    "TrainState",
    "TrainData",
    "LossCache",
    "init_state",
    "make_outer_step",
    "expert_losses",
    "seed_routes_after_warmup",
    "reroute",
    "restart_experts",
    "own_contexts",
    "INACTIVE_BIAS",
]


class TrainData(NamedTuple):
    """Training arrays on device: ``x [E, N, T, D]``, ``t [E, T]``, ``gate_from``: the first
    outer step with gate updates (``gate.warmup``; it is data, not a
    setting of the compiled step, so runs with and without a warm-up share one compilation),
    and ``weight [E]``: each env's factor in the training loss (None: all 1;
    ``train.env_weight_power``)."""

    x: Float[Array, "E N T D"]
    t: Float[Array, "E T"]
    # a 0-d array by default, never a Python int: an int would be a static argument of the
    # compiled step, and steps built with and without it would not share their compilation
    gate_from: Any = np.zeros((), np.int32)
    weight: Any = None
    # the factor on the weights' learning rate set by the host (``train.schedule = "plateau"``)
    lr_scale: Any = np.ones((), np.float32)


class LossCache(NamedTuple):
    """The gate's last all-expert losses and the contexts they were computed at.

    While the expert weights stay fixed (the context loop), ``loss[m, e]`` can only change if
    the part of env ``e``'s context that expert ``m`` sees changed, so the next gate update
    recomputes just those pairs. ``valid`` is False once the weights change (or before the
    first pass); then everything is recomputed.
    """

    losses: Float[Array, "M E"]
    contexts: Float[Array, "E d"]
    valid: Bool[Array, ""]


class TrainState(NamedTuple):
    """Everything that evolves during training (checkpointed as one pytree)."""

    model: MixER
    contexts: Float[Array, "E d"]
    gate_state: gating.GateState
    opt_weights: Any  # AdaBelief state over the trained arrays raveled into one vector
    opt_contexts: Any
    key: PRNGKeyArray
    step: Int[Array, ""]
    best_model: MixER
    best_contexts: Float[Array, "E d"]
    best_val: Float[Array, ""]
    best_step: Int[Array, ""]
    loss_cache: LossCache


def _filter_spec(model: MixER) -> Any:
    """Which leaves the weights' optimiser trains: every float array except the gate
    (unless the gate is the gradient baseline)."""
    spec = jax.tree.map(eqx.is_inexact_array, model)
    return eqx.tree_at(lambda m: m.gate, spec, replace=model.gate_mode == "gradient")


def _trained_vector(model: MixER) -> Float[Array, " P"]:
    """The arrays the weights' optimiser trains (:func:`_filter_spec`), raveled into one vector."""
    return ravel_pytree(eqx.filter(model, _filter_spec(model)))[0]


def _weights_schedule(tr: TrainSettings) -> optax.Schedule:
    if tr.schedule == "plateau":  # the host lowers the rate (TrainData.lr_scale)
        return optax.constant_schedule(tr.lr_weights)
    k = tr.inner_steps
    b1, b2 = round(tr.outer_steps / 3) * k, round(2 * tr.outer_steps / 3) * k
    return optax.piecewise_constant_schedule(tr.lr_weights, {b1: tr.lr_decay, b2: tr.lr_decay})


def _optimisers(tr: TrainSettings) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    """The weights' and the contexts' optimisers (``train.optimizer``; the weights' gradient
    clipped to ``train.clip_norm`` when it is positive)."""
    make = {"adabelief": optax.adabelief, "adam": optax.adam}[tr.optimizer]
    weights = make(_weights_schedule(tr))
    if tr.clip_norm > 0:
        weights = optax.chain(optax.clip_by_global_norm(tr.clip_norm), weights)
    return weights, make(tr.lr_contexts)


def forcing_at(tr: TrainSettings, step: Int[Array, ""] | int) -> Float[Array, ""]:
    """The interval forcing ``a`` of vector-field experts at outer step ``step``
    (``train.forcing``): linear from ``forcing`` to 1 over ``forcing_steps * outer_steps``."""
    span = max(tr.forcing_steps * tr.outer_steps, 1.0)
    frac = jnp.minimum(jnp.asarray(step, jnp.float32) / span, 1.0)
    return tr.forcing + (1.0 - tr.forcing) * frac


def _init_keys(cfg: Config) -> tuple[PRNGKeyArray, PRNGKeyArray]:
    """The keys of the model's initialisation and of the training state's RNG."""
    kmodel, key = jax.random.split(jax.random.PRNGKey(cfg.train.seed))
    return kmodel, key


def init_state(cfg: Config, n_envs: int, state_size: int) -> TrainState:
    """A fresh training state (model, zero contexts, optimiser states, RNG) for ``cfg``."""
    kmodel, key = _init_keys(cfg)
    model = build_model(cfg, state_size, kmodel)
    if cfg.gate.warmup > 0 and cfg.gate.mode == "lstsq" and cfg.model.num_experts > 1:
        # warm-up: every env on expert 0 until the routes are seeded (seed_routes_after_warmup)
        bias = jnp.where(jnp.arange(cfg.model.num_experts) == 0, 1.0, 0.0)
        model = eqx.tree_at(lambda m: m.gate, model, jnp.zeros_like(model.gate).at[-1].set(bias))
    contexts = jnp.zeros((n_envs, cfg.model.context_size))
    opt_w, opt_c = _optimisers(cfg.train)
    return TrainState(
        model,
        contexts,
        gating.gate_init(cfg.model.num_experts, cfg.model.context_size),
        opt_w.init(_trained_vector(model)),
        opt_c.init(contexts),
        key,
        jnp.zeros((), jnp.int32),
        model,
        contexts,
        jnp.asarray(jnp.inf, jnp.float32),
        jnp.asarray(-1, jnp.int32),
        LossCache(jnp.zeros((cfg.model.num_experts, n_envs)), contexts, jnp.zeros((), bool)),
    )


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

        losses, ok = jax.vmap(one)(cb, pools, xb, tb)
    else:
        losses, ok = env_losses(model, cb, xb, tb, solver, alpha=alpha, forcing=forcing)
    if data.weight is not None:
        losses = losses * data.weight[idx]
    loss = jnp.sum(jnp.where(ok, losses, 0.0)) / jnp.maximum(jnp.sum(ok), 1)
    if model.gate_mode == "gradient" and cfg.gate.importance_weight > 0:
        # importance loss (Shazeer et al.): squared coefficient of variation of the mean gate
        importance = jax.vmap(model.gate_probs)(contexts).mean(0)
        loss = loss + cfg.gate.importance_weight * jnp.var(importance) / (jnp.mean(importance) ** 2 + 1e-10)
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
    model: MixER, contexts, data: TrainData, solver: SolverSettings, chunk: int, cache: LossCache | None, alpha: float
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

    return jax.lax.map(one, (jnp.arange(n_exp), old))


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
    (-1 = no gate update at that step, else a code of :data:`mixerdsr.gating.STATUS_NAMES`).
    With one expert (MixER-1, a bare meta-learner) the gate is never updated: it routes every
    env to that expert regardless.
    """
    options = LOW_MEMORY_OPTIONS if cfg.train.low_memory_compile else None
    if getattr(BACKBONES[cfg.model.backbone], "inner_loop", False):
        return _jit(_inner_loop_outer_step(cfg, n_envs), options)
    solver, alpha = cfg.solver, cfg.train.teacher_forcing
    opt_w, opt_c = _optimisers(cfg.train)
    batch = cfg.train.batch_envs or max(1, n_envs // cfg.model.num_experts)
    batch = min(batch, n_envs)
    beta = cfg.train.proximal_beta
    k_inner = cfg.train.inner_steps
    gate_chunk = _gate_chunk(cfg, batch)

    def maybe_gate(model, gstate, cache, contexts, key, i, data, warm):
        # With one expert every env is routed to it whatever the gate: no update (and no loss pass).
        if cfg.gate.mode != "lstsq" or model.n_experts == 1:
            return model, gstate, cache, jnp.asarray(-1, jnp.int32)

        def losses():
            ls = _expert_losses(model, contexts, data, solver, gate_chunk, cache, alpha)
            return ls, LossCache(ls, contexts, jnp.ones((), bool))

        def do(_):
            new_gate, gs, status, new_cache = gating.gate_update(
                model.gate, gstate, contexts, losses, key, cfg.gate, aux_default=cache
            )
            return eqx.tree_at(lambda m: m.gate, model, new_gate), gs, new_cache, status.astype(jnp.int32)

        def skip(_):
            return model, gstate, cache, jnp.asarray(-1, jnp.int32)

        return jax.lax.cond(((i + 1) % cfg.gate.every == 0) & ~warm, do, skip, None)

    def outer_step(state: TrainState, data: TrainData):
        key, kb, kg = jax.random.split(state.key, 3)
        # warm-up: one shared expert, no gate update
        warm = state.step < data.gate_from
        ctx_prev = state.contexts
        spec = _filter_spec(state.model)
        params_prev = _trained_vector(state.model)
        forcing = forcing_at(cfg.train, state.step) if cfg.train.forcing < 1 else None

        def ctx_step(steps, idx):
            contexts, opt_state, model, opt_w_state, cache = steps

            def objective(c):
                loss, failed = _batch_loss(model, c, idx, data, cfg, forcing)
                return loss + 0.5 * beta * jnp.sum((c - ctx_prev) ** 2), (loss, failed)

            (_, (loss, failed)), g = jax.value_and_grad(objective, has_aux=True)(contexts)
            updates, opt_state = opt_c.update(zero_nonfinite(g), opt_state, contexts)
            return (optax.apply_updates(contexts, updates), opt_state, model, opt_w_state, cache), (loss, failed)

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
            anchor, kg, i = inp
            idx = _nearest_batch(anchor, steps[0], batch)
            steps, (loss, failed) = jax.lax.cond(i < k_inner, ctx_step, weight_step, steps, idx)
            contexts, opt_c_state, model, opt_w_state, cache = steps
            model, gstate, cache, status = maybe_gate(model, gstate, cache, contexts, kg, i, data, warm)
            return (gstate, contexts, opt_c_state, model, opt_w_state, cache), (loss, failed, status)

        # all randomness of the outer step drawn up front (fewer compiled kernels than per step)
        anchors = jax.random.randint(kb, (2 * k_inner,), 0, n_envs)
        gate_keys = jax.random.split(kg, 2 * k_inner)
        carry = (state.gate_state, state.contexts, state.opt_contexts, state.model, state.opt_weights, state.loss_cache)
        (gstate, contexts, opt_c_state, model, opt_w_state, cache), (losses, failed, status) = jax.lax.scan(
            body, carry, (anchors, gate_keys, jnp.arange(2 * k_inner))
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
        return new, info

    return _jit(outer_step, options)


def inner_loop_contexts(
    model: MixER, x: Float[Array, "E N T D"], t: Float[Array, "E T"], solver: SolverSettings
) -> tuple[Float[Array, "E d"], Float[Array, " E"]]:
    """CAVIA's inner loop for every env: the context adapted from zero by the expert's
    ``inner_steps`` gradient steps of size ``inner_lr`` on the env's trajectories ``x``.
    Differentiable (twice) in the model. Returns ``(contexts [E, d], loss at the zero context [E])``."""
    steps, lr = model.experts.inner_steps, model.experts.inner_lr  # type: ignore[attr-defined]
    d = model.context_size

    def one(xe, te):
        c = jnp.zeros((d,), xe.dtype)
        loss0 = jnp.zeros((), xe.dtype)
        for k in range(steps):  # a few steps: unrolled, so the outer gradient sees each one
            lk, g = jax.value_and_grad(lambda ci: env_loss(model, ci, xe, te, solver)[0])(c)
            loss0 = lk if k == 0 else loss0
            c = c - lr * jnp.where(jnp.isfinite(g), g, 0.0)
        return c, loss0

    return jax.vmap(one)(x, t)


def _inner_loop_outer_step(cfg: Config, n_envs: int):
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
    opt_w, _ = _optimisers(cfg.train)
    batch = min(cfg.train.batch_envs or n_envs, n_envs)
    k_inner = cfg.train.inner_steps

    def outer_step(state: TrainState, data: TrainData):
        key, kb = jax.random.split(state.key)
        spec = _filter_spec(state.model)
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
        contexts, _ = inner_loop_contexts(model, data.x, data.t, solver)
        new = state._replace(model=model, contexts=contexts, opt_weights=opt_state, key=key, step=state.step + 1)
        losses = jnp.where(failed >= batch, jnp.nan, losses)
        none = jnp.full((k_inner,), -1, jnp.int32)
        info = dict(
            ctx_loss=loss0,
            weight_loss=losses,
            failed=jnp.concatenate([jnp.zeros_like(failed), failed]),
            gate_status=jnp.concatenate([none, none]),
        )
        return new, info

    return outer_step


def reroute(
    state: TrainState,
    cfg: Config,
    parent: ArrayLike,
    old_route: ArrayLike,
    new_route: ArrayLike,
    active: ArrayLike | None = None,
) -> TrainState:
    """Re-arrange experts and routes on the host (seeding after the warm-up).

    Expert ``m`` becomes a copy of expert ``parent[m]`` (weights, shift and the optimiser's
    moments); an env whose expert changes from ``old_route[e]`` to ``new_route[e]`` carries its
    context part along (with split contexts; the old part is zeroed), so a copied expert reads
    it as its parent did and no fit is lost; the gate is fitted by least squares to
    ``new_route`` and experts outside ``active`` get the bias :data:`INACTIVE_BIAS`. The
    K-means centroids of the next gate update are the new groups' means.

    Args:
        state: the training state.
        cfg: run configuration (``gate.noise``, ``train.seed``).
        parent: ``[M]`` source expert of every expert (``arange(M)``: weights unchanged).
        old_route, new_route: ``[E]`` expert of every env before and after.
        active: ``[M]`` experts in use (default: all).

    Returns:
        The new state (its loss cache invalidated).
    """
    n_exp = state.model.n_experts
    on = jnp.ones((n_exp,), bool) if active is None else jnp.asarray(active, bool)
    i32 = functools.partial(jnp.asarray, dtype=jnp.int32)
    return _reroute(state, cfg, i32(parent), i32(old_route), i32(new_route), on, active is not None)


@eqx.filter_jit
def _reroute(
    state: TrainState,
    cfg: Config,
    parent: Int[Array, " M"],
    old_route: Int[Array, " E"],
    new_route: Int[Array, " E"],
    active: Bool[Array, " M"],
    mask_inactive: bool,
) -> TrainState:
    """:func:`reroute` as one compiled function (op by op it compiles dozens of small kernels)."""
    model, contexts = state.model, state.contexts
    n_exp, n_env = model.n_experts, contexts.shape[0]
    parent_, old, new = parent, old_route, new_route

    def copy_experts(tree):  # a model-shaped pytree: expert m <- parent[m] (with its shift)
        return eqx.tree_at(
            lambda m: (m.experts, m.shifts), tree, replace_fn=lambda leaf: jax.tree.map(lambda a: a[parent_], leaf)
        )

    def move_contexts(c):  # [E, d]: env e's part old_route[e] goes to part new_route[e]
        if not model.split:
            return c
        parts = c.reshape(n_env, n_exp, -1)
        own = parts[jnp.arange(n_env), old]
        moved = new != old
        parts = parts.at[jnp.arange(n_env), old].set(jnp.where(moved[:, None], 0.0, own))
        parts = parts.at[jnp.arange(n_env), new].set(own)
        return parts.reshape(c.shape)

    spec = _filter_spec(model)
    _, unravel = ravel_pytree(eqx.filter(model, spec))
    n_flat = _trained_vector(model).shape[0]

    def move_weights_moment(v):  # a moment of the weights' optimiser (a flat vector)
        if not (hasattr(v, "shape") and v.shape == (n_flat,)):
            return v
        tree = eqx.combine(unravel(v), eqx.filter(model, spec, inverse=True))
        return ravel_pytree(eqx.filter(copy_experts(tree), spec))[0]

    def move_context_moment(v):
        return move_contexts(v) if hasattr(v, "shape") and v.shape == contexts.shape else v

    key = jax.random.fold_in(jax.random.PRNGKey(cfg.train.seed), state.step)
    new_contexts = move_contexts(contexts)
    model = copy_experts(model)
    y = jax.nn.one_hot(new, n_exp, dtype=contexts.dtype)
    noisy = new_contexts + cfg.gate.noise * jax.random.normal(key, new_contexts.shape, new_contexts.dtype)
    gate = gating.fit_gate(noisy, y).astype(model.gate.dtype)
    if mask_inactive:
        gate = gate.at[-1].add(jnp.where(active, 0.0, INACTIVE_BIAS))
    model = eqx.tree_at(lambda m: m.gate, model, gate)
    centroids = (y.T @ new_contexts) / jnp.maximum(y.sum(0), 1.0)[:, None]
    return state._replace(
        model=model,
        contexts=new_contexts,
        gate_state=gating.GateState(centroids, jnp.ones((), bool)),
        opt_weights=jax.tree.map(move_weights_moment, state.opt_weights),
        opt_contexts=jax.tree.map(move_context_moment, state.opt_contexts),
        loss_cache=state.loss_cache._replace(valid=jnp.zeros((), bool)),
    )


def restart_experts(state: TrainState, cfg: Config, state_size: int) -> TrainState:
    """Every expert (and its context shift) back to its initial weights, the moments of the
    weights' optimiser to zero (its step count, and so the learning-rate schedule, kept); routes,
    gate and contexts unchanged (``gate.seed_from = "init"``)."""
    init = build_model(cfg, state_size, _init_keys(cfg)[0])
    model = eqx.tree_at(lambda m: (m.experts, m.shifts), state.model, (init.experts, init.shifts))
    n_flat = _trained_vector(model).shape[0]
    opt = jax.tree.map(
        lambda v: jnp.zeros_like(v) if hasattr(v, "shape") and v.shape == (n_flat,) else v, state.opt_weights
    )
    return state._replace(model=model, opt_weights=opt, loss_cache=state.loss_cache._replace(valid=jnp.zeros((), bool)))


def own_contexts(model: MixER, contexts: Float[Array, "E d"], route: Int[Array, " E"]) -> Float[Array, "E c"]:
    """The part of every env's context its routed expert sees (the whole context unless split)."""
    if not model.split:
        return contexts
    return contexts.reshape(contexts.shape[0], model.n_experts, -1)[jnp.arange(contexts.shape[0]), route]


def seed_routes_after_warmup(
    state: TrainState, cfg: Config, env_fit: ArrayLike | None = None
) -> tuple[TrainState, Int[Array, " E"], dict[str, Any] | None]:
    """End of the warm-up (``gate.warmup``): seed the routes from the shared expert's contexts.

    Every env was routed to expert 0; its contexts (the part expert 0 sees) are clustered into
    ``M`` groups (:func:`mixerdsr.gating.seed_routes`, by ``gate.seed_method``); every expert
    becomes a copy of expert 0 and every env's context part moves to its group's expert
    (:func:`reroute`). With
    ``gate.choose = "silhouette"`` the number of groups ``K <= M`` is chosen from the contexts
    (:func:`mixerdsr.gating.choose_count`) and experts ``K .. M-1`` are switched off; ``K = 1``
    when the shared expert already fits every one of those groups: the geometric mean of
    ``env_fit`` (``[E]``, each env's validation relMSE under the shared expert) over the
    members of each group is below ``gate.single_fit``.

    Returns:
        ``(state, assign [E], choice)``; ``choice`` (None unless the count was chosen):
        ``{"experts": K, "silhouette": {k: score}, "shared_fit": [per group]}``.
    """
    n_exp, n_env = state.model.n_experts, state.contexts.shape[0]
    zero = np.zeros(n_env, np.int32)
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.train.seed), cfg.gate.warmup)
    own = own_contexts(state.model, state.contexts, jnp.asarray(zero))
    g = cfg.gate
    if g.choose == "silhouette":
        k, assign, scores = gating.choose_count(key, own, n_exp, g.silhouette_min, g.seed_restarts, g.silhouette_slack)
        if k > 1 and g.seed_method != "kmeans":  # the chosen number of groups, formed by the seeding method
            grouped, _ = gating.seed_routes(
                key, own, k, g.seed_restarts, method=g.seed_method, neighbours=g.seed_neighbours
            )
            k, assign = gating.compact_labels(grouped)
        fits = None
        if env_fit is not None:  # how well the shared expert fits each group (geometric mean)
            fit, a = np.asarray(env_fit, float), np.asarray(assign)
            fits = [geometric_mean(fit[a == j]) for j in range(k)]
            if max(fits) < g.single_fit:  # one expert already fits every group
                k, assign = 1, jnp.zeros((n_env,), jnp.int32)
        choice: dict[str, Any] | None = {
            "experts": k,
            "silhouette": {str(j): round(v, 4) for j, v in scores.items()},
            "shared_fit": fits,
        }
        active = np.arange(n_exp) < k
    else:
        assign, _ = gating.seed_routes(
            key, own, n_exp, g.seed_restarts, method=g.seed_method, neighbours=g.seed_neighbours
        )
        choice, active = None, None
    return reroute(state, cfg, np.zeros(n_exp, np.int32), zero, assign, active), assign, choice


#: XLA options of ``train.low_memory_compile``: XLA's CPU fusion emitters need most of the
#: memory of compiling the outer step; without them the peak is lower and gradient steps are
#: slower (the legacy emitters do not vectorise loops). Figures in ``docs/performance.md``.
#: Ignored by other backends.
LOW_MEMORY_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


def _jit(fn, options: dict[str, Any] | None):
    """``eqx.filter_jit(fn)``, compiled with XLA ``options`` when given. A jaxlib that does not
    know an option gets a warning and the default compilation instead of an error."""
    if not options:
        return eqx.filter_jit(fn)
    plain = eqx.filter_jit(fn)
    jitted = jax.jit(lambda dyn, static: fn(*eqx.combine(dyn, static)), static_argnums=1, compiler_options=options)
    use_plain = False

    def call(*args):
        nonlocal use_plain
        if not use_plain:
            try:
                return jitted(*eqx.partition(args, eqx.is_array))
            except jax.errors.JaxRuntimeError as err:
                if "compile option" not in str(err):
                    raise
                warnings.warn(
                    f"this jaxlib does not support the XLA options {sorted(options)} ({err}); compiling without them",
                    RuntimeWarning,
                    stacklevel=2,
                )
                use_plain = True
        return plain(*args)

    return call
