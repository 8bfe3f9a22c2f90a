"""How the gate changes inside the compiled training step: one small object per kind.

A :class:`GateUpdate` is to the gate what an Optax ``GradientTransformation`` is to the
weights: ``init`` gives its state (the K-means centroids kept between updates), ``update``
maps ``(gate, state, contexts, losses)`` to a new gate and state. The training step calls
``update`` after every ``every``-th inner step when :attr:`GateUpdate.in_step` is set, adds
:meth:`GateUpdate.penalty` to the loss, and trains the gate with the weights when
:attr:`GateUpdate.trains_gate` is set. When the updates start is the host's business
(:mod:`mixerdsr.routing._policies`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._rand import normal
from ._algorithm1 import (
    INACTIVE_BIAS,
    RESEEDED,
    GateState,
    active_from_gate,
    cluster_medians,
    fit_gate,
    gate_init,
    greedy_pairing,
    init_centroids,
    kmeans,
    overlap_pairing,
    reassign_targets,
)
from ._settings import GateSettings

__all__ = ["GateUpdate", "LeastSquaresGate", "GradientGate", "FrozenGate", "gate_update_of"]


class GateUpdate:
    """Base of the gate's update rules (see the module docstring).

    Attributes:
        in_step: the compiled training step calls :meth:`update`.
        trains_gate: the gate is a parameter of the weights' optimiser.
        every: :meth:`update` after every ``every``-th inner step.
    """

    in_step: ClassVar[bool] = False
    trains_gate: ClassVar[bool] = False
    every: int = 1

    def init(self, n_experts: int, context_size: int, dtype: Any = jnp.float32) -> GateState:
        """The update's state before the first update (no centroids yet)."""
        return gate_init(n_experts, context_size, dtype)

    def update(
        self,
        gate: Float[Array, "d1 M"],
        state: GateState,
        contexts: Float[Array, "E d"],
        expert_losses: Callable[[], Any],
        key: PRNGKeyArray,
        *,
        aux_default: Any = None,
    ):
        """``(gate, state, status)`` unchanged (status -1: no update), plus ``aux_default``."""
        out = (gate, state, jnp.asarray(-1, jnp.int32))
        return (*out, aux_default) if aux_default is not None else out

    def penalty(self, mean_probs: Float[Array, " M"]) -> Float[Array, ""]:
        """A term added to the training loss, given the mean gate probabilities (0 here)."""
        return jnp.zeros((), mean_probs.dtype)


@dataclasses.dataclass(frozen=True)
class FrozenGate(GateUpdate):
    """The gate is never updated (``gate.mode = "frozen"``)."""


@dataclasses.dataclass(frozen=True)
class GradientGate(GateUpdate):
    """A naive mixture of experts (``gate.mode = "gradient"``): the gate is trained by the
    loss's gradient with the weights, plus the load-balancing (importance) penalty of Shazeer
    et al. with weight ``importance_weight``."""

    importance_weight: float = 0.1
    trains_gate: ClassVar[bool] = True

    def penalty(self, mean_probs: Float[Array, " M"]) -> Float[Array, ""]:
        """``importance_weight`` times the squared coefficient of variation of ``mean_probs``."""
        if self.importance_weight <= 0:
            return super().penalty(mean_probs)
        return self.importance_weight * jnp.var(mean_probs) / (jnp.mean(mean_probs) ** 2 + 1e-10)


@dataclasses.dataclass(frozen=True)
class LeastSquaresGate(GateUpdate):
    """MixER's gate update (Algorithm 1): K-means on the contexts, each cluster paired with an
    expert, the gate fitted by least squares to route every cluster to its expert.

    The fields are those of :class:`~mixerdsr.routing.GateSettings` of the same names, with
    the package's defaults; :meth:`published` is the paper's Algorithm 1 as published.
    """

    every: int = 1
    kmeans_iters: int = 20
    kmeans_tol: float = 1e-3
    noise: float = 1e-4
    centroid_init: str = "data"
    empty_cluster: str = "reseed"
    pairing: str = "greedy"
    reassign: float = 0.0
    in_step: ClassVar[bool] = True

    @classmethod
    def from_settings(cls, g: GateSettings) -> LeastSquaresGate:
        """The update described by the ``[gate]`` table ``g``."""
        return cls(**{f.name: getattr(g, f.name) for f in dataclasses.fields(cls)})

    @classmethod
    def published(cls) -> LeastSquaresGate:
        """Algorithm 1 as the paper publishes it: centroids from U(-1e-3, 1e-3), an update
        with an empty cluster skipped, the greedy pairing by median loss, no per-env override."""
        return cls(centroid_init="uniform", empty_cluster="skip", pairing="greedy", reassign=0.0)

    @property
    def needs_losses(self) -> bool:
        """Whether an update evaluates every expert's loss (the overlap pairing without
        per-env overrides does not: the costly pass is skipped)."""
        return self.pairing == "greedy" or self.reassign > 0

    def update(
        self,
        gate: Float[Array, "d1 M"],
        state: GateState,
        contexts: Float[Array, "E d"],
        expert_losses: Callable[[], Any],
        key: PRNGKeyArray,
        *,
        aux_default: Any = None,
    ):
        """One gate update (Algorithm 1).

        Args:
            gate: current gate weights ``[d+1, M]`` (kept when the update is skipped).
            state: centroids from the previous update.
            contexts: training contexts ``[E, d]``.
            expert_losses: a function returning the loss of every expert on every training
                env, ``[M, E]``; only evaluated when K-means succeeded. With ``aux_default`` it
                returns ``(losses, aux)`` instead.
            key: PRNG key (centroid initialisation and the least-squares noise).
            aux_default: if given, the value returned as ``aux`` when the losses were not
                computed (a pytree of the structure of ``expert_losses``'s ``aux``), e.g. a
                loss cache that stays as it was.

        Returns:
            ``(new_gate, new_state, status)``, plus ``aux`` as a fourth value when
            ``aux_default`` is given; status is one of :data:`STATUS_NAMES` (as an int).
        """
        n_experts = gate.shape[1]
        active = active_from_gate(gate)  # experts switched off (INACTIVE_BIAS) get no cluster
        kinit, knoise = jax.random.split(key)
        start = jnp.where(
            state.valid,
            state.centroids,
            init_centroids(kinit, contexts, n_experts, self.centroid_init).astype(contexts.dtype),
        )
        res = kmeans(
            contexts,
            start,
            max_iters=self.kmeans_iters,
            tol=self.kmeans_tol,
            empty_cluster=self.empty_cluster,
            active=active,
        )
        with_aux = aux_default is not None

        def fit(_):
            losses, aux = None, aux_default
            if self.needs_losses:
                out = expert_losses()
                losses, aux = out if with_aux else (out, None)
                losses = jnp.where(active[:, None], losses, jnp.inf)
            target = self._targets(gate, contexts, res.assign, losses, active)
            y = jax.nn.one_hot(target, n_experts, dtype=contexts.dtype)
            noisy = contexts + self.noise * normal(knoise, contexts.shape, contexts.dtype)
            new = fit_gate(noisy, y)
            return new.at[-1].add(jnp.where(active, 0.0, INACTIVE_BIAS)).astype(gate.dtype), aux

        ok = res.status <= RESEEDED
        new_gate, aux = jax.lax.cond(ok, fit, lambda _: (gate, aux_default), None)
        new_state = GateState(jnp.where(ok, res.centroids, state.centroids), ok)
        if with_aux:
            return new_gate, new_state, res.status, aux
        return new_gate, new_state, res.status

    def _targets(self, gate, contexts, assign, losses, active):
        """The expert every env is fitted to route to: its cluster's pair, then per-env
        overrides (``reassign``)."""
        n_experts = gate.shape[1]
        if self.pairing == "overlap":
            current = jnp.argmax(contexts @ gate[:-1] + gate[-1], axis=1)
            pairs = overlap_pairing(assign, current, n_experts, active)
        else:
            # a cluster in use only goes to an expert in use: mixed pairs cost more than any
            # loss (an empty cluster's medians, inf, count as the largest loss) and less than
            # an expert already taken (inf)
            big = jnp.finfo(losses.dtype).max
            medians = jnp.minimum(cluster_medians(losses, assign, n_experts), big / 4)
            medians = jnp.where(active[:, None] == active[None, :], medians, big / 2)
            pairs = greedy_pairing(medians)
        if losses is None:
            return pairs[assign]
        return reassign_targets(losses, pairs[assign], self.reassign)


def gate_update_of(g: GateSettings) -> GateUpdate:
    """The update object of the ``[gate]`` table ``g`` (``gate.mode``)."""
    if g.mode == "lstsq":
        return LeastSquaresGate.from_settings(g)
    if g.mode == "gradient":
        return GradientGate(g.importance_weight)
    return FrozenGate()
