"""What evolves during training (:class:`TrainState`), the arrays it trains on
(:class:`TrainData`), the optimisers, and a fresh state."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from .._config import Config, TrainSettings
from ..mixer import MixER, initial_model, model_keys, trained_vector
from ..routing import GateState, policy_of

__all__ = ["TrainData", "LossCache", "TrainState", "optimisers", "forcing_at", "init_state"]


class TrainData(NamedTuple):
    """Training arrays on device: ``x [E, N, T, D]``, ``t [E, T]``, ``gate_from``: the first
    outer step with gate updates (the routing policy's ``gate_from()``; it is data, not a
    setting of the compiled step, so runs with and without a warm-up share one compilation),
    and ``weight [E]``: each env's factor in the training loss (None: all 1;
    ``train.env_weight_power``)."""

    x: Float[Array, "E N T D"]
    t: Float[Array, "E T"]
    # a 0-d array by default, never a Python int: an int would be a static argument of the
    # compiled step, and steps built with and without it would not share their compilation
    gate_from: Any = np.zeros((), np.int32)
    weight: Any = None
    # the factor on the weights' learning rate set by the host (``train.schedule = "plateau"``
    # and the divergence guard)
    lr_scale: Any = np.ones((), np.float32)
    # the factor on the contexts' learning rate set by the host (the divergence guard)
    ctx_scale: Any = np.ones((), np.float32)


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
    gate_state: GateState
    opt_weights: Any  # AdaBelief state over the trained arrays raveled into one vector
    opt_contexts: Any
    key: PRNGKeyArray
    step: Int[Array, ""]
    best_model: MixER
    best_contexts: Float[Array, "E d"]
    best_val: Float[Array, ""]
    best_step: Int[Array, ""]
    loss_cache: LossCache


def _weights_schedule(tr: TrainSettings) -> optax.Schedule:
    if tr.schedule == "plateau":  # the host lowers the rate (TrainData.lr_scale)
        return optax.constant_schedule(tr.lr_weights)
    k = tr.inner_steps
    b1, b2 = round(tr.outer_steps / 3) * k, round(2 * tr.outer_steps / 3) * k
    return optax.piecewise_constant_schedule(tr.lr_weights, {b1: tr.lr_decay, b2: tr.lr_decay})


def optimisers(tr: TrainSettings) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
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


def init_state(cfg: Config, n_envs: int, state_size: int) -> TrainState:
    """A fresh training state (model, zero contexts, optimiser states, RNG) for ``cfg``."""
    key, policy = model_keys(cfg.train.seed)[1], policy_of(cfg)
    model = policy.prepare(initial_model(cfg, state_size))  # a warm start: all on expert 0
    contexts = jnp.zeros((n_envs, cfg.model.context_size))
    opt_w, opt_c = optimisers(cfg.train)
    return TrainState(
        model,
        contexts,
        policy.update.init(cfg.model.num_experts, cfg.model.context_size),
        opt_w.init(trained_vector(model)),
        opt_c.init(contexts),
        key,
        jnp.zeros((), jnp.int32),
        model,
        contexts,
        jnp.asarray(jnp.inf, jnp.float32),
        jnp.asarray(-1, jnp.int32),
        LossCache(jnp.zeros((cfg.model.num_experts, n_envs)), contexts, jnp.zeros((), bool)),
    )
