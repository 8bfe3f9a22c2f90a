"""CoDA: a linear hypernetwork maps the context to a shift of all root-MLP parameters."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._base import AbstractExpert, MLPField, init_linear, mlp_sizes

__all__ = ["CoDA"]


class CoDA(AbstractExpert):
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

    weights: tuple[Float[Array, "out in"], ...]
    biases: tuple[Float[Array, " out"], ...]
    hyper_weights: tuple[Float[Array, "out in r"], ...]
    hyper_biases: tuple[Float[Array, "out r"], ...]
    state_size: int = eqx.field(static=True)
    context_size: int = eqx.field(static=True)

    def __init__(self, state_size: int, context_size: int, width: int = 64, depth: int = 3,
                 hyper_scale: float = 0.1, *, key: PRNGKeyArray):
        self.state_size = state_size
        self.context_size = context_size
        ws, bs, hws, hbs = [], [], [], []
        for k, (n_in, n_out) in zip(jax.random.split(key, depth), mlp_sizes(state_size, state_size, width, depth)):
            k1, k2, k3 = jax.random.split(k, 3)
            w, b = init_linear(k1, n_in, n_out)
            lim = hyper_scale / jnp.sqrt(n_in)
            ws.append(w)
            bs.append(b)
            hws.append(jax.random.uniform(k2, (n_out, n_in, context_size), minval=-lim, maxval=lim))
            hbs.append(jax.random.uniform(k3, (n_out, context_size), minval=-lim, maxval=lim))
        self.weights, self.biases, self.hyper_weights, self.hyper_biases = map(tuple, (ws, bs, hws, hbs))

    def specialise(self, ctx: Float[Array, " r"]) -> MLPField:
        ws = tuple(w + h @ ctx for w, h in zip(self.weights, self.hyper_weights))
        bs = tuple(b + h @ ctx for b, h in zip(self.biases, self.hyper_biases))
        return MLPField(ws, bs)
