"""NCF: concatenation-based expert with contextual self-modulation (Taylor expansion)."""

from __future__ import annotations

import dataclasses
import typing
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._settings import AT_LEAST_0, AT_LEAST_1, Range, validate
from ._base import AbstractVectorFieldExpert, ExpertSettings, MLPSettings, linear_specs, mlp_sizes, uniform_arrays

__all__ = ["NCF", "NCFField"]


@typing.no_type_check  # validates itself, naming the key
@dataclasses.dataclass(frozen=True)
class NCFSettings(MLPSettings):
    """Settings of :class:`NCF` (``[model.ncf]``).

    Attributes:
        width, depth: the main MLP's hidden width and number of linear layers.
        taylor_order: 0, 1 or 2: order of contextual self-modulation.
        embed: output width of the data and context networks (MixER paper: 32).
        branch_depth: linear layers of the data and context networks (MixER paper: 1; the NCF
            authors' networks: 3).
        context_hidden: width of the context network's first hidden layer when
            ``branch_depth > 1`` (0: ``embed``; the NCF authors': a quarter of the context size).
    """

    taylor_order: int = 2
    embed: int = 32
    branch_depth: int = 1
    context_hidden: int = 0

    def __post_init__(self):
        validate(
            self,
            "model.ncf",
            ranges={
                "width": AT_LEAST_1,
                "depth": AT_LEAST_1,
                "taylor_order": Range(0, 2),
                "embed": AT_LEAST_1,
                "branch_depth": AT_LEAST_1,
                "context_hidden": AT_LEAST_0,
            },
        )


def _branch(layers: tuple[Array, ...], h: Float[Array, " n"]) -> Float[Array, " m"]:
    """A data or context network: every layer ``swish(W h + b)``; ``layers`` alternates W, b."""
    for w, b in zip(layers[::2], layers[1::2]):
        h = jax.nn.swish(w @ h + b)
    return h


class NCFField(eqx.Module):
    """NCF vector field of one environment, optionally Taylor-expanded around another context.

    With own context ``c`` and pool context ``c_j``, order ``k`` gives
    ``sum_{n<=k} 1/n! d^n/ds^n f(x, c_j + s (c - c_j)) |_{s=0}`` (forward-mode JVPs).
    With ``c_j = c`` every order equals the plain field ``f(x, c)``.

    The context enters ``f`` only through the context network, which does not depend on the
    state: its Taylor coefficients along ``s`` (``jet``: value, first and second derivative) are
    computed once per field by :meth:`NCF.specialise`, and each evaluation expands the main
    network alone around them (the same derivatives: the main network sees the context
    network's output as the curve ``jet[0] + s jet[1] + s^2/2 jet[2]``).
    """

    expert: "NCF"
    jet: tuple[Float[Array, " e"], ...]
    order: int = eqx.field(static=True)

    def __call__(self, t, x, args=None):
        hx = _branch(self.expert.data_net, x)
        main = lambda hc: self.expert.main(jnp.concatenate([hx, hc]))  # noqa: E731
        if self.order == 0:
            return main(self.jet[0])
        if self.order == 1:
            f0, d1 = jax.jvp(main, (self.jet[0],), (self.jet[1],))
            return f0 + d1
        c0, c1, c2 = self.jet
        g = lambda s: main(c0 + s * c1 + 0.5 * s * s * c2)  # noqa: E731
        zero, one = jnp.zeros((), c0.dtype), jnp.ones((), c0.dtype)
        dg = lambda s: jax.jvp(g, (s,), (one,))  # noqa: E731
        (f0, d1), (_, d2) = jax.jvp(dg, (zero,), (one,))
        return f0 + d1 + 0.5 * d2


class NCF(AbstractVectorFieldExpert):
    """Neural Context Flow expert (Nzoyem et al., 2025).

    ``f(x, c) = main([data(x), context(c)])``: data and context networks of ``branch_depth``
    layers each (Swish after every layer, ``embed`` outputs each; MixER paper: one layer of 32)
    and a main MLP (``depth`` layers of ``width``). Contextual self-modulation: training
    evaluates the field of environment ``e`` as a Taylor expansion of order ``taylor_order``
    (paper NCF-t2: 2) around contexts of nearby environments (``specialise(ctx, ctx_pool)``).

    Args:
        state_size: state dimension ``D``.
        context_size: context length ``r``.
        width, depth: main MLP shape (paper: 64, 3).
        embed: output width of the data and context networks (paper: 32).
        taylor_order: 0, 1 or 2.
        branch_depth: layers of the data and context networks (paper: 1; the NCF authors': 3).
        context_hidden: width of the context network's first hidden layer when
            ``branch_depth > 1`` (0: ``embed``).
        key: PRNG key (keyword-only).
    """

    data_net: tuple[Array, ...]
    context_net: tuple[Array, ...]
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
        embed: int = NCFSettings.embed,
        taylor_order: int = NCFSettings.taylor_order,
        branch_depth: int = NCFSettings.branch_depth,
        context_hidden: int = NCFSettings.context_hidden,
        *,
        key: PRNGKeyArray,
    ):
        if taylor_order not in (0, 1, 2):
            raise ValueError(f"taylor_order must be 0, 1 or 2, got {taylor_order}")
        self.state_size = state_size
        self.context_size = context_size
        self.taylor_order = taylor_order
        data = [state_size] + [embed] * branch_depth
        hidden = [context_hidden or embed] if branch_depth > 1 else []
        ctx = [context_size, *hidden] + [embed] * (branch_depth - len(hidden))
        branches = [list(zip(dims[:-1], dims[1:])) for dims in (data, ctx)]
        sizes = [*branches[0], *branches[1], *mlp_sizes(2 * embed, state_size, width, depth)]
        arrays = uniform_arrays(key, [spec for n_in, n_out in sizes for spec in linear_specs(n_in, n_out)])
        n_data, n_ctx = 2 * len(branches[0]), 2 * len(branches[1])
        self.data_net = tuple(arrays[:n_data])
        self.context_net = tuple(arrays[n_data : n_data + n_ctx])
        main = arrays[n_data + n_ctx :]
        self.weights, self.biases = tuple(main[::2]), tuple(main[1::2])

    def main(self, h: Float[Array, " n"]) -> Float[Array, " D"]:
        """The main network on the concatenated data and context features."""
        n = len(self.weights)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = w @ h + b
            if i < n - 1:
                h = jax.nn.swish(h)
        return h

    def field(self, x: Float[Array, " D"], ctx: Float[Array, " r"]) -> Float[Array, " D"]:
        """The plain (order-0) vector field ``f(x, ctx)``."""
        return self.main(jnp.concatenate([_branch(self.data_net, x), _branch(self.context_net, ctx)]))

    @property
    def self_modulating(self) -> bool:
        return self.taylor_order > 0

    def specialise(self, ctx: Float[Array, " r"], ctx_pool: Float[Array, " r"] | None = None) -> NCFField:
        """The field of context ``ctx``; with ``ctx_pool``, its Taylor expansion of order
        ``taylor_order`` around ``ctx_pool`` (contextual self-modulation)."""
        hc = lambda c: _branch(self.context_net, c)  # noqa: E731
        if ctx_pool is None or self.taylor_order == 0:
            return NCFField(self, (hc(ctx if ctx_pool is None else ctx_pool),), 0)
        v = ctx - ctx_pool
        line = lambda s: hc(ctx_pool + s * v)  # noqa: E731
        zero, one = jnp.zeros((), v.dtype), jnp.ones((), v.dtype)
        if self.taylor_order == 1:
            return NCFField(self, jax.jvp(line, (zero,), (one,)), 1)
        dline = lambda s: jax.jvp(line, (s,), (one,))  # noqa: E731
        (c0, c1), (_, c2) = jax.jvp(dline, (zero,), (one,))
        return NCFField(self, (c0, c1, c2), 2)
