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

    Stored as three arrays per layer, in the form the factored product uses: ``wa = [W^T; A^T]``
    ``[in + r, out]``, ``bias = [b^T; A'^T]`` ``[1 + r, out]`` and ``bt = B^T`` ``[in, r]``
    (the properties ``weights``, ``a``, ``b``, ``biases``, ``a_bias`` give the paper's matrices).
    Fewer, ready-made arrays per expert mean no per-environment concatenation and fewer distinct
    compiled kernels for gathering, scattering and updating them: on ODEBench-10B (M = 10) the
    training step compiles about 30 fewer kernels (less memory while compiling).

    Args:
        state_size: state dimension ``D``.
        context_size: context length ``r`` (also the adaptation rank).
        width: hidden width of the root MLP (paper: 64).
        depth: number of linear layers of the root MLP (paper: 3).
        factored: evaluate layers in factored form (None: when ``r <= width / 4``).
        key: PRNG key (keyword-only).
    """

    wa: tuple[Float[Array, "in_r out"], ...]
    bias: tuple[Float[Array, "r1 out"], ...]
    bt: tuple[Float[Array, "in r"], ...]
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
        self.wa = tuple(jnp.concatenate([w.T, a.T]) for w, a in zip(ws, As))
        self.bias = tuple(jnp.concatenate([b[None], ab.T]) for b, ab in zip(bs, Abs))
        self.bt = tuple(b.T for b in Bs)

    # The five matrices of the paper's notation, as views of the stored arrays (which also work
    # on a stack of experts: the expert axis, if any, stays in front).
    def _wa_rows(self, first: bool) -> tuple[Array, ...]:
        """Per layer: the ``W^T`` rows (``first``) or the ``A^T`` rows of ``wa``, transposed back."""
        r = self.context_size
        return tuple(_t(wa[..., :wa.shape[-2] - r, :] if first else wa[..., wa.shape[-2] - r:, :]) for wa in self.wa)

    @property
    def weights(self) -> tuple[Float[Array, "out in"], ...]:
        """``W_l``."""
        return self._wa_rows(True)

    @property
    def a(self) -> tuple[Float[Array, "out r"], ...]:
        """``A_l``."""
        return self._wa_rows(False)

    @property
    def b(self) -> tuple[Float[Array, "r in"], ...]:
        """``B_l``."""
        return tuple(_t(bt) for bt in self.bt)

    @property
    def biases(self) -> tuple[Float[Array, " out"], ...]:
        """``b_l``."""
        return tuple(bias[..., 0, :] for bias in self.bias)

    @property
    def a_bias(self) -> tuple[Float[Array, "out r"], ...]:
        """``A'_l``."""
        return tuple(_t(bias[..., 1:, :]) for bias in self.bias)

    def specialise(self, ctx: Float[Array, " r"]) -> MLPField | GEPSField:
        c1 = jnp.concatenate([jnp.ones((1,), ctx.dtype), ctx])
        bs = tuple(c1 @ bias for bias in self.bias)  # b + A' c
        if self.factored:
            return GEPSField(self.wa, bs, self.bt, ctx)
        ws = tuple(w + (a * ctx) @ b for w, a, b in zip(self.weights, self.a, self.b))
        return MLPField(ws, bs)


def _t(x: Array) -> Array:
    """Swap the last two axes (a matrix transpose that keeps leading stack axes)."""
    return jnp.swapaxes(x, -1, -2)


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
