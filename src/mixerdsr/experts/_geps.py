"""GEPS: low-rank, context-conditioned adaptation of every layer of a root MLP."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._base import AbstractExpert, MLPField, glorot, init_linear, mlp_sizes

__all__ = ["GEPS"]


class GEPS(AbstractExpert):
    """GEPS expert (Koupai et al., 2024) as used by MixER.

    For context ``c`` (size ``r``), layer ``l`` of the root MLP uses
    ``W_l + A_l diag(c) B_l`` and ``b_l + A'_l c``: a rank-``r`` update whose rank equals the
    context size. ``A_l [out, r]``, ``B_l [r, in]`` and ``A'_l [out, r]`` are Xavier-initialised;
    contexts start at 0, so a fresh expert is the root MLP. Swish activations.

    Args:
        state_size: state dimension ``D``.
        context_size: context length ``r`` (also the adaptation rank).
        width: hidden width of the root MLP (paper: 64).
        depth: number of linear layers of the root MLP (paper: 3).
        key: PRNG key (keyword-only).
    """

    weights: tuple[Float[Array, "out in"], ...]
    biases: tuple[Float[Array, " out"], ...]
    a: tuple[Float[Array, "out r"], ...]
    b: tuple[Float[Array, "r in"], ...]
    a_bias: tuple[Float[Array, "out r"], ...]
    state_size: int = eqx.field(static=True)
    context_size: int = eqx.field(static=True)

    def __init__(self, state_size: int, context_size: int, width: int = 64, depth: int = 3, *, key: PRNGKeyArray):
        self.state_size = state_size
        self.context_size = context_size
        ws, bs, As, Bs, Abs = [], [], [], [], []
        for k, (n_in, n_out) in zip(jax.random.split(key, depth), mlp_sizes(state_size, state_size, width, depth)):
            k1, k2, k3, k4 = jax.random.split(k, 4)
            w, b = init_linear(k1, n_in, n_out)
            ws.append(w)
            bs.append(b)
            As.append(glorot(k2, (n_out, context_size)))
            Bs.append(glorot(k3, (context_size, n_in)))
            Abs.append(glorot(k4, (n_out, context_size)))
        self.weights, self.biases, self.a, self.b, self.a_bias = map(tuple, (ws, bs, As, Bs, Abs))

    def specialise(self, ctx: Float[Array, " r"]) -> MLPField:
        ws = tuple(w + (a * ctx) @ b for w, a, b in zip(self.weights, self.a, self.b))
        bs = tuple(bias + ab @ ctx for bias, ab in zip(self.biases, self.a_bias))
        return MLPField(ws, bs)
