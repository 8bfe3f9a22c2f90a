"""CAVIA: context parameters fed to the network's input, adapted from zero in an inner loop."""

from __future__ import annotations

import dataclasses
import typing
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._settings import AT_LEAST_1, POSITIVE, validate
from ._base import (
    AbstractInnerLoopExpert,
    ExpertSettings,
    MLPField,
    MLPSettings,
    ScaledField,
    linear_specs,
    mlp_sizes,
    uniform_arrays,
)
from ._integrate import SolverSettings, rk4_rollout

__all__ = ["CAVIA", "CAVIASettings", "rk4_rollout"]


@typing.no_type_check  # validates itself, naming the key
@dataclasses.dataclass(frozen=True)
class CAVIASettings(MLPSettings):
    """Settings of :class:`CAVIA` (``[model.cavia]``).

    Attributes:
        width, depth: the MLP ``[x, c] -> dx/dt``.
        inner_steps: gradient steps on the context, from zero, inside every training loss.
        inner_lr: step size of those steps (plain gradient descent, as in CAVIA).
        substeps: fixed RK4 steps per interval of the time grid.
    """

    inner_steps: int = 2
    inner_lr: float = 1.0
    substeps: int = 4

    def __post_init__(self):
        validate(
            self,
            "model.cavia",
            ranges={
                "width": AT_LEAST_1,
                "depth": AT_LEAST_1,
                "inner_steps": AT_LEAST_1,
                "inner_lr": POSITIVE,
                "substeps": AT_LEAST_1,
            },
        )


class CAVIA(AbstractInnerLoopExpert):
    """CAVIA (Zintgraf et al., 2019) for vector fields: ``f(x, c) = MLP([x, c])``.

    A standalone meta-learner (one expert; the paper does not put it in a MixER layer). Its
    contexts are not trained parameters: every training loss first adapts each environment's
    context from zero by ``inner_steps`` gradient steps of size ``inner_lr`` on that
    environment's data, and the shared weights are updated through those steps (second-order
    gradients). Trajectories are integrated by fixed-step RK4 (:func:`rk4_rollout`), because an
    adaptive solve cannot be differentiated twice in reverse mode. New environments are adapted
    like every other backbone's (``adapt.steps`` optimiser steps on the context).

    Args:
        state_size: state dimension ``D``.
        context_size: context length ``r``.
        width, depth: MLP shape.
        inner_steps, inner_lr: the inner loop (see :class:`CAVIASettings`).
        substeps: RK4 steps per interval of the time grid.
        key: PRNG key (keyword-only).
    """

    weights: tuple[Float[Array, "_ _"], ...]
    biases: tuple[Float[Array, " _"], ...]
    Settings: ClassVar[type[ExpertSettings]] = CAVIASettings
    state_size: int = eqx.field(static=True)
    context_size: int = eqx.field(static=True)
    inner_steps: int = eqx.field(static=True)
    inner_lr: float = eqx.field(static=True)
    substeps: int = eqx.field(static=True)

    def __init__(
        self,
        state_size: int,
        context_size: int,
        width: int = MLPSettings.width,
        depth: int = MLPSettings.depth,
        inner_steps: int = CAVIASettings.inner_steps,
        inner_lr: float = CAVIASettings.inner_lr,
        substeps: int = CAVIASettings.substeps,
        *,
        key: PRNGKeyArray,
    ):
        self.state_size = state_size
        self.context_size = context_size
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.substeps = substeps
        sizes = mlp_sizes(state_size + context_size, state_size, width, depth)
        arrays = uniform_arrays(key, [spec for n_in, n_out in sizes for spec in linear_specs(n_in, n_out)])
        self.weights, self.biases = tuple(arrays[0::2]), tuple(arrays[1::2])

    def specialise(self, ctx: Float[Array, " r"], ctx_pool: Float[Array, " r"] | None = None) -> "CAVIAField":
        return CAVIAField(MLPField(self.weights, self.biases), ctx, self.substeps)

    @staticmethod
    def rollout(net, x, t, solver: SolverSettings, alpha=1.0, forcing=None):
        substeps = (net.inner if isinstance(net, ScaledField) else net).substeps
        return jax.vmap(lambda x0: rk4_rollout(net, x0, t, substeps))(x[:, 0])


class CAVIAField(eqx.Module):
    """The field of one environment: the MLP with the context appended to the state."""

    mlp: MLPField
    ctx: Float[Array, " r"]
    substeps: int = eqx.field(static=True)

    def __call__(self, t, x, args=None):
        return self.mlp.apply(jnp.concatenate([x, self.ctx]))
