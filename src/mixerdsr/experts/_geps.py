"""GEPS: low-rank, context-conditioned adaptation of every layer of a root MLP."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._base import AbstractExpert, MLPField, glorot_spec, linear_specs, mlp_sizes, uniform_arrays

__all__ = ["GEPS", "GEPSField"]


class GEPS(AbstractExpert):
    """GEPS expert (Koupai et al., 2024) as used by MixER.

    For context ``c`` (size ``r``), layer ``l`` of the root MLP uses
    ``W_l + A_l diag(c) B_l`` and ``b_l + A'_l c``: a rank-``r`` update whose rank equals the
    context size. ``A_l [out, r]``, ``B_l [r, in]`` and ``A'_l [out, r]`` are Xavier-initialised;
    contexts start at 0, so a fresh expert is the root MLP. Swish activations.

    Two equal ways to evaluate a specialised layer: *merged* (``specialise`` forms
    ``W + A diag(c) B`` once per environment, then one dense product per evaluation) and
    *factored* (``W h + A (c * (B h))`` at every evaluation). Factored keeps ``W`` shared by all
    environments, so the all-expert loss pass of the gate update (one expert, many envs) runs as
    large shared-weight products instead of one small product per env: on ODEBench-10B with
    M = 10 (rank 4) an outer step with the gate after every inner step takes 2.3 s instead of
    2.9 s. It costs ``2 r (in + out)`` extra multiply-adds per layer and evaluation, so it is the
    default only for small ranks (``r <= width / 4``).

    Args:
        state_size: state dimension ``D``.
        context_size: context length ``r`` (also the adaptation rank).
        width: hidden width of the root MLP (paper: 64).
        depth: number of linear layers of the root MLP (paper: 3).
        factored: evaluate layers in factored form (None: when ``r <= width / 4``).
        key: PRNG key (keyword-only).
    """

    weights: tuple[Float[Array, "out in"], ...]
    biases: tuple[Float[Array, " out"], ...]
    a: tuple[Float[Array, "out r"], ...]
    b: tuple[Float[Array, "r in"], ...]
    a_bias: tuple[Float[Array, "out r"], ...]
    state_size: int = eqx.field(static=True)
    context_size: int = eqx.field(static=True)
    factored: bool = eqx.field(static=True)

    def __init__(self, state_size: int, context_size: int, width: int = 64, depth: int = 3, *,
                 factored: bool | None = None, key: PRNGKeyArray):
        self.state_size = state_size
        self.context_size = context_size
        self.factored = context_size <= width // 4 if factored is None else bool(factored)
        sizes = mlp_sizes(state_size, state_size, width, depth)
        specs = [spec for n_in, n_out in sizes for spec in (
            *linear_specs(n_in, n_out), glorot_spec((n_out, context_size)), glorot_spec((context_size, n_in)),
            glorot_spec((n_out, context_size)))]
        arrays = uniform_arrays(key, specs)
        ws, bs, As, Bs, Abs = (arrays[i::5] for i in range(5))
        self.weights, self.biases, self.a, self.b, self.a_bias = map(tuple, (ws, bs, As, Bs, Abs))

    def specialise(self, ctx: Float[Array, " r"]) -> MLPField | GEPSField:
        bs = tuple(bias + ab @ ctx for bias, ab in zip(self.biases, self.a_bias))
        if self.factored:
            wa = tuple(jnp.concatenate([w.T, a.T], axis=0) for w, a in zip(self.weights, self.a))
            return GEPSField(wa, bs, tuple(b.T for b in self.b), ctx)
        ws = tuple(w + (a * ctx) @ b for w, a, b in zip(self.weights, self.a, self.b))
        return MLPField(ws, bs)


class GEPSField(eqx.Module):
    """The network of one environment in factored form: layer ``l`` maps ``h`` to
    ``W_l h + A_l (c * (B_l h)) + b_l`` (``b_l`` already includes ``A'_l c``); Swish between
    layers. Same values as the merged :class:`MLPField`.

    Stored row-vector style, as one product per layer after the small projection:
    ``[h, c * (h B_l^T)] @ [W_l^T; A_l^T]``. Under ``vmap`` over environments and trajectories
    (states as rows) this avoids transposes between layers and the separate narrow product
    with ``A_l``; on ODEBench-10B (M = 10) it made the gate's all-expert loss pass 1.4x faster
    (0.20 -> 0.14 s) and an outer step with the gate once per inner loop 1.4x faster
    (0.77 -> 0.54 s) than ``W h + A (c * (B h))``.

    Attributes:
        wa: per layer ``[in + r, out]``: ``W^T`` stacked over ``A^T``.
        biases: per layer ``[out]``.
        bt: per layer ``B^T``, ``[in, r]``.
        ctx: the context ``[r]``.
    """

    wa: tuple[Float[Array, "in_r out"], ...]
    biases: tuple[Float[Array, " out"], ...]
    bt: tuple[Float[Array, "in r"], ...]
    ctx: Float[Array, " r"]

    def __call__(self, t, x, args=None):
        h = x
        n = len(self.wa)
        for i, (wa, bias, bt) in enumerate(zip(self.wa, self.biases, self.bt)):
            h = jnp.concatenate([h, (h @ bt) * self.ctx]) @ wa + bias
            if i < n - 1:
                h = jax.nn.swish(h)
        return h
