"""The expert interface shared by every backbone.

An expert is a *contextual meta-learner*: given a context vector ``ctx`` (one per
environment) it defines the dynamics of that environment. IVP backbones (GEPS, CoDA, NCF)
define a vector field ``f(t, x, ctx) -> dx/dt`` for one state; sequence backbones
(hier-shPLRNN) define a map ``z_t -> z_{t+1}``. Both are reached through
:meth:`AbstractExpert.specialise`, which turns a context into a plain callable network for one
environment *before* any time stepping, so per-environment work (e.g. forming low-rank weight
updates) is done once per solve, not once per solver stage.
"""

from __future__ import annotations

import abc
import functools
import math
from typing import ClassVar

import equinox as eqx
import jax
from jaxtyping import Array, Float, PRNGKeyArray

__all__ = ["AbstractExpert", "MLPField", "linear_specs", "glorot_spec", "uniform_arrays"]


class MLPField(eqx.Module):
    """A plain MLP ``x -> W_L(... swish(W_1 x + b_1) ...) + b_L`` with explicit weights.

    Used as the specialised network of one environment. ``__call__(t, x, args=None)`` follows
    the diffrax vector-field convention (the fields are autonomous: ``t`` is ignored).
    """

    weights: tuple[Float[Array, "out in"], ...]
    biases: tuple[Float[Array, " out"], ...]
    final_activation: bool = eqx.field(static=True, default=False)

    def apply(self, x: Float[Array, " in"]) -> Float[Array, " out"]:
        h = x
        n = len(self.weights)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w.T + b  # row-vector form: no transposes between layers under vmap
            if i < n - 1 or self.final_activation:
                h = jax.nn.swish(h)
        return h

    def __call__(self, t, x, args=None):
        return self.apply(x)


#: One initial array: ``(shape, low, high)``, drawn uniform in ``[low, high)``.
UniformSpec = tuple[tuple[int, ...], float, float]


def linear_specs(n_in: int, n_out: int) -> list[UniformSpec]:
    """Weight ``[n_out, n_in]`` and bias ``[n_out]`` of a linear layer, PyTorch/Equinox default:
    uniform in +-1/sqrt(n_in)."""
    lim = 1.0 / math.sqrt(n_in)
    return [((n_out, n_in), -lim, lim), ((n_out,), -lim, lim)]


def glorot_spec(shape: tuple[int, int]) -> UniformSpec:
    """Xavier/Glorot uniform initialisation of a matrix ``[fan_out, fan_in]``."""
    lim = math.sqrt(6.0 / (shape[0] + shape[1]))
    return (tuple(shape), -lim, lim)


@functools.partial(jax.jit, static_argnums=1)
def _uniform_arrays(key: PRNGKeyArray, specs: tuple[UniformSpec, ...]) -> list[Array]:
    sizes = [math.prod(shape) for shape, _, _ in specs]
    u = jax.random.uniform(key, (sum(sizes),))
    out, start = [], 0
    for (shape, low, high), n in zip(specs, sizes):
        out.append(low + (high - low) * u[start : start + n].reshape(shape))
        start += n
    return out


def uniform_arrays(key: PRNGKeyArray, specs: list[UniformSpec]) -> list[Array]:
    """All initial arrays of one module, cut from a **single** uniform draw.

    One draw per module instead of one per array: XLA compiles a separate random-bits kernel
    for every distinct shape, so one draw compiles once however many arrays the module has.

    Args:
        key: PRNG key.
        specs: ``(shape, low, high)`` of every array, in order.

    Returns:
        The arrays, in the order of ``specs``.
    """
    return _uniform_arrays(key, tuple((tuple(int(d) for d in shape), float(lo), float(hi)) for shape, lo, hi in specs))


def mlp_sizes(n_in: int, n_out: int, width: int, depth: int) -> list[tuple[int, int]]:
    """(in, out) of each of ``depth`` linear layers: n_in -> width -> ... -> n_out."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    dims = [n_in] + [width] * (depth - 1) + [n_out]
    return list(zip(dims[:-1], dims[1:]))


class AbstractExpert(eqx.Module):
    """One contextual meta-learner.

    Subclasses set ``kind`` (``"ode"`` for vector fields integrated by diffrax, ``"sequence"``
    for discrete-time maps) and implement :meth:`specialise`. ``__call__`` works on **one**
    state and one context; callers batch with ``jax.vmap``.

    Attributes:
        context_size: length of the context vector this expert receives.
        state_size: dimension ``D`` of the state.
    """

    context_size: eqx.AbstractVar[int]
    state_size: eqx.AbstractVar[int]
    kind: ClassVar[str] = "ode"

    @abc.abstractmethod
    def specialise(self, ctx: Float[Array, " c"]) -> eqx.Module:
        """The network of the environment with context ``ctx``: a callable ``(t, x, args)``."""

    def __call__(self, t, x: Float[Array, " D"], ctx: Float[Array, " c"]) -> Float[Array, " D"]:
        """The vector field (or one-step map) at state ``x`` for context ``ctx``."""
        return self.specialise(ctx)(t, x, None)
