"""Changes of the routing structure on the host: copy experts, move contexts with their env.

These act on a training state (:class:`~mixerdsr.training.TrainState`, any NamedTuple with its
fields) between compiled steps: the seeding after a warm-up re-arranges experts and routes in
one call (:func:`reroute`) and may send the experts back to their initial weights
(:func:`restart_experts`), and may start the weights' optimiser afresh (:func:`fresh_moments`).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from ..mixer import MixER, trained_spec, trained_vector
from ._algorithm1 import INACTIVE_BIAS, GateState, fit_gate

if TYPE_CHECKING:
    from ..training import TrainState

__all__ = ["reroute", "restart_experts", "fresh_moments", "own_contexts"]


def reroute(
    state: TrainState,
    key: PRNGKeyArray,
    noise: float,
    parent: ArrayLike,
    old_route: ArrayLike,
    new_route: ArrayLike,
    active: ArrayLike | None = None,
) -> TrainState:
    """Re-arrange experts and routes (the seeding after a warm-up).

    Expert ``m`` becomes a copy of expert ``parent[m]`` (weights, shift and the optimiser's
    moments); an env whose expert changes from ``old_route[e]`` to ``new_route[e]`` carries its
    context part along (with split contexts; the old part is zeroed), so a copied expert reads
    it as its parent did and no fit is lost; the gate is fitted by least squares to
    ``new_route`` (contexts plus Gaussian ``noise``, drawn with ``key``) and experts outside
    ``active`` get the bias :data:`INACTIVE_BIAS`. The K-means centroids of the next gate
    update are the new groups' means.

    Args:
        state: the training state.
        key: PRNG key of the least-squares noise.
        noise: its standard deviation (``gate.noise``).
        parent: ``[M]`` source expert of every expert (``arange(M)``: weights unchanged).
        old_route, new_route: ``[E]`` expert of every env before and after.
        active: ``[M]`` experts in use (default: all).

    Returns:
        The new state (its loss cache invalidated).
    """
    n_exp = state.model.n_experts
    on = jnp.ones((n_exp,), bool) if active is None else jnp.asarray(active, bool)
    i32 = functools.partial(jnp.asarray, dtype=jnp.int32)
    return _reroute(state, key, noise, i32(parent), i32(old_route), i32(new_route), on, active is not None)


@eqx.filter_jit
def _reroute(
    state: TrainState,
    key: PRNGKeyArray,
    noise: float,
    parent: Int[Array, " M"],
    old: Int[Array, " E"],
    new: Int[Array, " E"],
    active: Bool[Array, " M"],
    mask_inactive: bool,
) -> TrainState:
    """:func:`reroute` as one compiled function (op by op it compiles dozens of small kernels)."""
    model, contexts = state.model, state.contexts
    n_exp, n_env = model.n_experts, contexts.shape[0]

    def copy_experts(tree):  # a model-shaped pytree: expert m <- parent[m] (with its shift)
        return eqx.tree_at(
            lambda m: (m.experts, m.shifts), tree, replace_fn=lambda leaf: jax.tree.map(lambda a: a[parent], leaf)
        )

    def move_contexts(c):  # [E, d]: env e's part old[e] goes to part new[e]
        if not model.split:
            return c
        parts = c.reshape(n_env, n_exp, -1)
        own = parts[jnp.arange(n_env), old]
        moved = new != old
        parts = parts.at[jnp.arange(n_env), old].set(jnp.where(moved[:, None], 0.0, own))
        parts = parts.at[jnp.arange(n_env), new].set(own)
        return parts.reshape(c.shape)

    spec = trained_spec(model)
    _, unravel = ravel_pytree(eqx.filter(model, spec))
    n_flat = trained_vector(model).shape[0]

    def move_weights_moment(v):  # a moment of the weights' optimiser (a flat vector)
        if not (hasattr(v, "shape") and v.shape == (n_flat,)):
            return v
        tree = eqx.combine(unravel(v), eqx.filter(model, spec, inverse=True))
        return ravel_pytree(eqx.filter(copy_experts(tree), spec))[0]

    def move_context_moment(v):
        return move_contexts(v) if hasattr(v, "shape") and v.shape == contexts.shape else v

    new_contexts = move_contexts(contexts)
    model = copy_experts(model)
    y = jax.nn.one_hot(new, n_exp, dtype=contexts.dtype)
    noisy = new_contexts + noise * jax.random.normal(key, new_contexts.shape, new_contexts.dtype)
    gate = fit_gate(noisy, y).astype(model.gate.dtype)
    if mask_inactive:
        gate = gate.at[-1].add(jnp.where(active, 0.0, INACTIVE_BIAS))
    model = eqx.tree_at(lambda m: m.gate, model, gate)
    centroids = (y.T @ new_contexts) / jnp.maximum(y.sum(0), 1.0)[:, None]
    return state._replace(
        model=model,
        contexts=new_contexts,
        gate_state=GateState(centroids, jnp.ones((), bool)),
        opt_weights=jax.tree.map(move_weights_moment, state.opt_weights),
        opt_contexts=jax.tree.map(move_context_moment, state.opt_contexts),
        loss_cache=state.loss_cache._replace(valid=jnp.zeros((), bool)),
    )


def restart_experts(state: TrainState, init: MixER) -> TrainState:
    """Every expert (and its context shift) back to its weights in ``init`` (the run's initial
    model), the moments of the weights' optimiser to zero (its step count, and so the
    learning-rate schedule, kept); routes, gate and contexts unchanged (``gate.seed_from =
    "init"``)."""
    model = eqx.tree_at(lambda m: (m.experts, m.shifts), state.model, (init.experts, init.shifts))
    opt = _zero_moments(state.opt_weights, keep_count=True)
    return state._replace(model=model, opt_weights=opt, loss_cache=state.loss_cache._replace(valid=jnp.zeros((), bool)))


def own_contexts(model: MixER, contexts: Float[Array, "E d"], route: Int[Array, " E"]) -> Float[Array, "E c"]:
    """The part of every env's context its routed expert sees (the whole context unless split)."""
    if not model.split:
        return contexts
    return contexts.reshape(contexts.shape[0], model.n_experts, -1)[jnp.arange(contexts.shape[0]), route]


def fresh_moments(state: TrainState) -> TrainState:
    """The weights' optimiser started afresh: every adaptive transform's moments and step count
    (so its bias correction) back to zero, the learning-rate schedule's count kept
    (``gate.warm_start.fresh_moments``).

    Copied moments describe the warm-up's shared expert, whose gradients came from every env:
    an expert that now trains on one small-scale family alone keeps that family-wide second
    moment for about ``1 / (1 - b2)`` steps and so steps far below its rate.
    """
    return state._replace(opt_weights=_zero_moments(state.opt_weights, keep_count=False))


def _zero_moments(opt_state: Any, keep_count: bool) -> Any:
    """``opt_state`` with every adaptive transform's state (an optax NamedTuple with a
    ``count``: Adam's, AdaBelief's) zeroed, its ``count`` too unless ``keep_count``; the
    learning-rate schedule's state is left as it is."""
    if isinstance(opt_state, optax.ScaleByScheduleState):
        return opt_state
    if hasattr(opt_state, "_fields") and "count" in opt_state._fields:
        zeroed = jax.tree.map(jnp.zeros_like, opt_state)
        return zeroed._replace(count=opt_state.count) if keep_count else zeroed
    if isinstance(opt_state, tuple):
        parts = [_zero_moments(x, keep_count) for x in opt_state]
        return type(opt_state)(*parts) if hasattr(opt_state, "_fields") else tuple(parts)
    return opt_state
