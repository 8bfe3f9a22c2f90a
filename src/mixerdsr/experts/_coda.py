"""CoDA: a linear hypernetwork maps the context to a shift of all root-MLP parameters."""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
from jaxtyping import Array, Float, PRNGKeyArray

from ._base import (
    AbstractVectorFieldExpert,
    ExpertSettings,
    MLPField,
    MLPSettings,
    linear_specs,
    mlp_sizes,
    uniform_arrays,
)

__all__ = ["CoDA"]


class CoDA(AbstractVectorFieldExpert):
    """CoDA expert (Kirchmeyer et al., 2022).

    The environment's root-MLP parameters are ``theta + H c`` with ``H`` a bias-free linear
    hypernetwork from the context (size ``r``) to the flattened root parameters. ``H`` is stored
    leaf by leaf (each root leaf of shape ``S`` has a hypernetwork leaf ``S + (r,)``), which is
    the same linear map as one ``[n_params, r]`` matrix without any flattening at run time.

    Args:
        state_size: state dimension ``D``.
        context_size: context length ``r``.
        width, depth: root MLP shape (paper: 64, 3).
        hyper_scale: the hypernetwork is initialised uniform in
            ``+-hyper_scale / sqrt(fan_in)`` of the layer it modulates (it must not start at 0,
            or neither ``H`` nor the zero-initialised contexts would receive a gradient).
        key: PRNG key (keyword-only).
    """

    weights: tuple[Float[Array, "_ _"], ...]
    biases: tuple[Float[Array, " _"], ...]
    hyper_weights: tuple[Float[Array, "_ _ _"], ...]
    hyper_biases: tuple[Float[Array, "_ _"], ...]
    Settings: ClassVar[type[ExpertSettings]] = MLPSettings
    state_size: int = eqx.field(static=True)
    context_size: int = eqx.field(static=True)

    def __init__(
        self,
        state_size: int,
        context_size: int,
        width: int = MLPSettings.width,
        depth: int = MLPSettings.depth,
        hyper_scale: float = 0.1,
        *,
        key: PRNGKeyArray,
    ):
        self.state_size = state_size
        self.context_size = context_size
        specs = []
        for n_in, n_out in mlp_sizes(state_size, state_size, width, depth):
            lim = hyper_scale / math.sqrt(n_in)
            specs += [
                *linear_specs(n_in, n_out),
                ((n_out, n_in, context_size), -lim, lim),
                ((n_out, context_size), -lim, lim),
            ]
        arrays = uniform_arrays(key, specs)
        ws, bs, hws, hbs = (arrays[i::4] for i in range(4))
        self.weights, self.biases, self.hyper_weights, self.hyper_biases = map(tuple, (ws, bs, hws, hbs))

    def specialise(self, ctx: Float[Array, " r"], ctx_pool: Float[Array, " r"] | None = None) -> MLPField:
        ws = tuple(w + h @ ctx for w, h in zip(self.weights, self.hyper_weights))
        bs = tuple(b + h @ ctx for b, h in zip(self.biases, self.hyper_biases))
        return MLPField(ws, bs)
