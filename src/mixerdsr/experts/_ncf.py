"""NCF: concatenation-based expert with contextual self-modulation (Taylor expansion)."""

from __future__ import annotations

import dataclasses
import typing
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._settings import AT_LEAST_1, Range, validate
from ._base import AbstractVectorFieldExpert, ExpertSettings, MLPSettings, linear_specs, mlp_sizes, uniform_arrays

__all__ = ["NCF", "NCFField"]


@typing.no_type_check  # validates itself, naming the key
@dataclasses.dataclass(frozen=True)
class NCFSettings(MLPSettings):
    """Settings of :class:`NCF` (``[model.ncf]``): the root MLP's ``width`` and ``depth`` and
    ``taylor_order`` (0, 1 or 2) of contextual self-modulation."""

    taylor_order: int = 2

    def __post_init__(self):
        validate(self, "model.ncf", ranges={"width": AT_LEAST_1, "depth": AT_LEAST_1, "taylor_order": Range(0, 2)})


class NCFField(eqx.Module):
    """NCF vector field of one environment, optionally Taylor-expanded around another context.

    With own context ``c`` and pool context ``c_j``, order ``k`` gives
    ``sum_{n<=k} 1/n! d^n/ds^n f(x, c_j + s (c - c_j)) |_{s=0}`` (forward-mode JVPs).
    With ``c_j = c`` every order equals the plain field ``f(x, c)``.
    """

    expert: "NCF"
    ctx: Float[Array, " r"]
    ctx_pool: Float[Array, " r"]
    order: int = eqx.field(static=True)

    def __call__(self, t, x, args=None):
        f = lambda c: self.expert.field(x, c)  # noqa: E731
        v = self.ctx - self.ctx_pool
        if self.order == 0:
            return f(self.ctx_pool)
        g = lambda s: f(self.ctx_pool + s * v)  # noqa: E731
        zero = jnp.zeros((), v.dtype)
        one = jnp.ones((), v.dtype)
        if self.order == 1:
            f0, d1 = jax.jvp(g, (zero,), (one,))
            return f0 + d1
        dg = lambda s: jax.jvp(g, (s,), (one,))  # noqa: E731
        (f0, d1), (_, d2) = jax.jvp(dg, (zero,), (one,))
        return f0 + d1 + 0.5 * d2


class NCF(AbstractVectorFieldExpert):
    """Neural Context Flow expert (Nzoyem et al., 2025).

    ``f(x, c) = main([swish(data(x)), swish(context(c))])`` with one-layer data and context
    networks (``embed`` outputs each, paper: 32) and a main MLP (``depth`` layers of ``width``).
    Contextual self-modulation: training evaluates the field of environment ``e`` as a Taylor
    expansion of order ``taylor_order`` (paper NCF-t2: 2) around contexts of nearby environments
    (``specialise(ctx, ctx_pool)``).

    Args:
        state_size: state dimension ``D``.
        context_size: context length ``r``.
        width, depth: main MLP shape (paper: 64, 3).
        embed: output width of the data and context networks (paper: 32).
        taylor_order: 0, 1 or 2.
        key: PRNG key (keyword-only).
    """

    data_net: tuple[Array, Array]
    context_net: tuple[Array, Array]
    weights: tuple[Float[Array, "_ _"], ...]
    biases: tuple[Float[Array, " _"], ...]
    Settings: ClassVar[type[ExpertSettings]] = NCFSettings
    state_size: int = eqx.field(static=True)
    context_size: int = eqx.field(static=True)
    taylor_order: int = eqx.field(static=True)

    def __init__(
        self,
        state_size: int,
        context_size: int,
        width: int = MLPSettings.width,
        depth: int = MLPSettings.depth,
        embed: int = 32,
        taylor_order: int = NCFSettings.taylor_order,
        *,
        key: PRNGKeyArray,
    ):
        if taylor_order not in (0, 1, 2):
            raise ValueError(f"taylor_order must be 0, 1 or 2, got {taylor_order}")
        self.state_size = state_size
        self.context_size = context_size
        self.taylor_order = taylor_order
        sizes = [(state_size, embed), (context_size, embed), *mlp_sizes(2 * embed, state_size, width, depth)]
        arrays = uniform_arrays(key, [spec for n_in, n_out in sizes for spec in linear_specs(n_in, n_out)])
        self.data_net, self.context_net = (arrays[0], arrays[1]), (arrays[2], arrays[3])
        ws, bs = arrays[4::2], arrays[5::2]
        self.weights, self.biases = tuple(ws), tuple(bs)

    def field(self, x: Float[Array, " D"], ctx: Float[Array, " r"]) -> Float[Array, " D"]:
        """The plain (order-0) vector field ``f(x, ctx)``."""
        hx = jax.nn.swish(self.data_net[0] @ x + self.data_net[1])
        hc = jax.nn.swish(self.context_net[0] @ ctx + self.context_net[1])
        h = jnp.concatenate([hx, hc])
        n = len(self.weights)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = w @ h + b
            if i < n - 1:
                h = jax.nn.swish(h)
        return h

    @property
    def self_modulating(self) -> bool:
        return self.taylor_order > 0

    def specialise(self, ctx: Float[Array, " r"], ctx_pool: Float[Array, " r"] | None = None) -> NCFField:
        """The field of context ``ctx``; with ``ctx_pool``, its Taylor expansion of order
        ``taylor_order`` around ``ctx_pool`` (contextual self-modulation)."""
        if ctx_pool is None:
            return NCFField(self, ctx, ctx, 0)
        return NCFField(self, ctx, ctx_pool, self.taylor_order)
