"""GEPS: low-rank, context-conditioned adaptation of every layer of a root MLP."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._base import (
    AbstractVectorFieldExpert,
    ExpertSettings,
    MLPField,
    MLPSettings,
    glorot_spec,
    linear_specs,
    mlp_sizes,
    uniform_arrays,
)

__all__ = ["GEPS", "GEPSField"]


class GEPS(AbstractVectorFieldExpert):
    """GEPS expert (Koupai et al., 2024) as used by MixER.

    For context ``c`` (size ``r``), layer ``l`` of the root MLP uses
    ``W_l + A_l diag(c) B_l`` and ``b_l + A'_l c``: a rank-``r`` update whose rank equals the
    context size. ``A_l [out, r]``, ``B_l [r, in]`` and ``A'_l [out, r]`` are Xavier-initialised;
    contexts start at 0, so a fresh expert is the root MLP. Swish activations.

    Two equal ways to evaluate a specialised layer: *merged* (``specialise`` forms
    ``W + A diag(c) B`` once per environment, then one dense product per evaluation) and
    *factored* (``W h + A (c * (B h))`` at every evaluation). Factored keeps ``W`` shared by all
    environments, so the all-expert loss pass of the gate update (one expert, many envs) runs as
    large shared-weight products instead of one small product per env (figures in
    ``docs/performance.md``). It costs ``2 r (in + out)``
    extra multiply-adds per layer and evaluation, so it is the default only for small ranks
    (``r <= width / 4``).

    Stored as three arrays per layer, in the form the factored product uses: ``wb = [W^T, B^T]``
    ``[in, out + r]`` (both matrices that act on the layer's input, side by side), ``at = A^T``
    ``[r, out]`` and ``bias = [b^T; A'^T]`` ``[1 + r, out]`` (the properties ``weights``, ``a``,
    ``b``, ``biases``, ``a_bias`` give the paper's matrices). Ready-made arrays mean no
    per-environment concatenation and few distinct compiled kernels for gathering, scattering
    and updating them.

    Args:
        state_size: state dimension ``D``.
        context_size: context length ``r`` (also the adaptation rank).
        width: hidden width of the root MLP (paper: 64).
        depth: number of linear layers of the root MLP (paper: 3).
        factored: evaluate layers in factored form (None: when ``r <= width / 4``).
        key: PRNG key (keyword-only).
    """

    wb: tuple[Float[Array, "_ _"], ...]
    at: tuple[Float[Array, "_ _"], ...]
    bias: tuple[Float[Array, "_ _"], ...]
    Settings: ClassVar[type[ExpertSettings]] = MLPSettings
    state_size: int = eqx.field(static=True)
    context_size: int = eqx.field(static=True)
    factored: bool = eqx.field(static=True)

    def __init__(
        self,
        state_size: int,
        context_size: int,
        width: int = MLPSettings.width,
        depth: int = MLPSettings.depth,
        *,
        factored: bool | None = None,
        key: PRNGKeyArray,
    ):
        self.state_size = state_size
        self.context_size = context_size
        self.factored = context_size <= width // 4 if factored is None else bool(factored)
        sizes = mlp_sizes(state_size, state_size, width, depth)
        specs = [
            spec
            for n_in, n_out in sizes
            for spec in (
                *linear_specs(n_in, n_out),
                glorot_spec((n_out, context_size)),
                glorot_spec((context_size, n_in)),
                glorot_spec((n_out, context_size)),
            )
        ]
        arrays = uniform_arrays(key, specs)
        ws, bs, As, Bs, Abs = (arrays[i::5] for i in range(5))
        self.wb = tuple(jnp.concatenate([w.T, b.T], axis=1) for w, b in zip(ws, Bs))
        self.at = tuple(a.T for a in As)
        self.bias = tuple(jnp.concatenate([b[None], ab.T]) for b, ab in zip(bs, Abs))

    # The five matrices of the paper's notation, as views of the stored arrays (which also work
    # on a stack of experts: the expert axis, if any, stays in front).
    def _wb_cols(self, first: bool) -> tuple[Array, ...]:
        """Per layer: the ``W^T`` columns (``first``) or the ``B^T`` columns of ``wb``, transposed back."""
        r = self.context_size
        return tuple(_t(wb[..., : wb.shape[-1] - r] if first else wb[..., wb.shape[-1] - r :]) for wb in self.wb)

    @property
    def weights(self) -> tuple[Float[Array, "... _ _"], ...]:
        """``W_l``."""
        return self._wb_cols(True)

    @property
    def a(self) -> tuple[Float[Array, "... _ _"], ...]:
        """``A_l``."""
        return tuple(_t(at) for at in self.at)

    @property
    def b(self) -> tuple[Float[Array, "... _ _"], ...]:
        """``B_l``."""
        return self._wb_cols(False)

    @property
    def biases(self) -> tuple[Float[Array, "... _"], ...]:
        """``b_l``."""
        return tuple(bias[..., 0, :] for bias in self.bias)

    @property
    def a_bias(self) -> tuple[Float[Array, "... _ _"], ...]:
        """``A'_l``."""
        return tuple(_t(bias[..., 1:, :]) for bias in self.bias)

    def specialise(self, ctx: Float[Array, " r"], ctx_pool: Float[Array, " r"] | None = None) -> MLPField | GEPSField:
        c1 = jnp.concatenate([jnp.ones((1,), ctx.dtype), ctx])
        bs = tuple(c1 @ bias for bias in self.bias)  # b + A' c
        if self.factored:
            return GEPSField(self.wb, self.at, bs, ctx)
        ws = tuple(w + (a * ctx) @ b for w, a, b in zip(self.weights, self.a, self.b))
        return MLPField(ws, bs)


def _t(x: Array) -> Array:
    """Swap the last two axes (a matrix transpose that keeps leading stack axes)."""
    return jnp.swapaxes(x, -1, -2)


class GEPSField(eqx.Module):
    """The network of one environment in factored form: layer ``l`` maps ``h`` to
    ``W_l h + A_l (c * (B_l h)) + b_l`` (``b_l`` already includes ``A'_l c``); Swish between
    layers. Same values as the merged :class:`MLPField`.

    Row-vector style, one wide product per layer: ``h @ [W_l^T, B_l^T]`` gives ``W_l h`` and
    ``B_l h`` together (both act on the same input), then the rank-``r`` term
    ``(c * B_l h) @ A_l^T`` is added. Under ``vmap`` over environments and trajectories (states
    as rows, all sharing the expert's matrices) that is two products per layer, one of them
    tiny, with no concatenation in between (timings in ``docs/performance.md``).

    Attributes:
        wb: per layer ``[in, out + r]``: ``W^T`` beside ``B^T``.
        at: per layer ``A^T``, ``[r, out]``.
        biases: per layer ``[out]``.
        ctx: the context ``[r]``.
    """

    wb: tuple[Float[Array, "_ _"], ...]
    at: tuple[Float[Array, "_ _"], ...]
    biases: tuple[Float[Array, " _"], ...]
    ctx: Float[Array, " r"]

    def __call__(self, t, x, args=None):
        h = x
        n = len(self.wb)
        for i, (wb, at, bias) in enumerate(zip(self.wb, self.at, self.biases)):
            z = h @ wb
            out = at.shape[-1]
            h = z[..., :out] + (z[..., out:] * self.ctx) @ at + bias
            if i < n - 1:
                h = jax.nn.swish(h)
        return h
