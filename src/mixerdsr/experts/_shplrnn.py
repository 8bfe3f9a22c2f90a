"""hier-shPLRNN: a shallow piecewise-linear RNN whose parameters come from the context.

The shallow PLRNN (Hess et al., 2023; Brenner et al., 2024) is the one-step map

    z_{t+1} = A z_t + W1 relu(W2 z_t + h2) + h1,

with ``A`` **diagonal** (stored as a vector and applied elementwise, as in the authors'
``PLRNN_step``: ``A * z``; Hess et al. 2023, Eq. 2, "A diagonal"), ``W1 [D, H]``, ``W2 [H, D]``,
``h1 [D]``, ``h2 [H]``. Here the latent space *is* the observation space (``D`` = data
dimension, no encoder, ``z_0 = 0``), as in the paper's Appendix C.2.

Hierarchisation (Brenner et al., 2024): the parameters of environment ``e`` are a linear
function of its context ``c`` (size ``r``). Brenner et al. use ``theta_e = P c_e`` with no shared
offset; like CoDA we use ``theta_e = theta + H c_e`` (shared base plus a bias-free linear
hypernetwork), which is the same family of maps (append a constant 1 to ``c``) and lets
zero-initialised contexts start at a sensible, stable base network. ``H`` is stored leaf by
leaf: each base leaf of shape ``S`` has a hypernetwork leaf of shape ``S + (r,)``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._settings import AT_LEAST_1, validate
from ._base import AbstractSequenceExpert, ExpertSettings, uniform_arrays

__all__ = ["SHPLRNN", "SHPLRNNStep"]


@typing.no_type_check  # validates itself, naming the key
@dataclasses.dataclass(frozen=True)
class SHPLRNNSettings(ExpertSettings):
    """Settings of :class:`SHPLRNN` (``[model.shplrnn]``): ``hidden``, the width of the
    shallow PLRNN's hidden layer (paper: 16)."""

    hidden: int = 16

    def __post_init__(self):
        validate(self, "model.shplrnn", ranges={"hidden": AT_LEAST_1})


class SHPLRNNStep(eqx.Module):
    """The shPLRNN map of one environment: ``z -> a * z + W1 relu(W2 z + h2) + h1``.

    ``__call__(t, z, args=None)`` follows the callable convention of the other experts
    (``t`` and ``args`` are ignored). :class:`SHPLRNN` also uses this class as a container
    for the hypernetwork leaves (each with a trailing context axis); only a step built by
    :meth:`SHPLRNN.specialise` is meant to be called.
    """

    # shapes of one step; the hypernetwork container adds a trailing context axis (*c)
    a: Float[Array, " D *c"]
    w1: Float[Array, "D H *c"]
    w2: Float[Array, "H D *c"]
    h1: Float[Array, " D *c"]
    h2: Float[Array, " H *c"]

    def __call__(self, t, z: Float[Array, " D"], args=None) -> Float[Array, " D"]:
        return self.a * z + self.w1 @ jax.nn.relu(self.w2 @ z + self.h2) + self.h1


class SHPLRNN(AbstractSequenceExpert):
    """hier-shPLRNN expert (a sequence expert: a one-step map, scored from step 1).

    ``specialise(ctx)`` returns the :class:`SHPLRNNStep` of the environment with context
    ``ctx``, its parameters being ``base + hyper @ ctx`` leaf by leaf. Rolled out by
    :func:`mixerdsr.rollout.sequence_rollout` (generalised teacher forcing).

    Initialisation (chosen so that a fresh model free-runs stably from ``z_0 = 0``): the
    diagonal ``a`` uniform in ``a_range`` (default ``[0.5, 0.9]``), ``W2`` and ``h2`` uniform in
    ``+-1/sqrt(D)`` (PyTorch default), ``W1`` uniform in ``+-w1_scale/sqrt(H)`` (small, so the
    Jacobian ``diag(a) + W1 diag(relu') W2`` starts with spectral radius below 1), ``h1 = 0``.
    Every hypernetwork leaf is uniform in ``+-hyper_scale / sqrt(r)`` times the scale of the
    leaf it modulates (``a``: 0.1, ``W1``: ``w1_scale/sqrt(H)``, ``W2``/``h2``: ``1/sqrt(D)``,
    ``h1``: 1); it must not start at 0, or neither it nor the zero-initialised contexts
    would receive a gradient.

    Args:
        state_size: data (= latent) dimension ``D``.
        context_size: context length ``r``.
        hidden: hidden width ``H`` of the relu layer (paper: 16).
        a_range: range of the initial diagonal of ``A``.
        w1_scale: scale of the initial ``W1``.
        hyper_scale: scale of the initial hypernetwork.
        key: PRNG key (keyword-only).
    """

    base: SHPLRNNStep
    hyper: SHPLRNNStep
    Settings: ClassVar[type[ExpertSettings]] = SHPLRNNSettings
    state_size: int = eqx.field(static=True)
    context_size: int = eqx.field(static=True)
    hidden: int = eqx.field(static=True)

    def __init__(
        self,
        state_size: int,
        context_size: int,
        hidden: int = SHPLRNNSettings.hidden,
        *,
        a_range: tuple[float, float] = (0.5, 0.9),
        w1_scale: float = 0.1,
        hyper_scale: float = 1.0,
        key: PRNGKeyArray,
    ):
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        self.state_size = d = state_size
        self.context_size = r = context_size
        self.hidden = h = hidden
        lim_w1 = w1_scale / math.sqrt(h)
        lim_w2 = 1.0 / math.sqrt(d)
        hyper_lim = hyper_scale / math.sqrt(r)
        # leaves in SHPLRNNStep order (a, w1, w2, h1, h2), then their hypernetworks (shape + (r,))
        shapes = ((d,), (d, h), (h, d), (d,), (h,))
        scales = (0.1, lim_w1, lim_w2, 1.0, lim_w2)
        specs = [((d,), *a_range), ((d, h), -lim_w1, lim_w1), ((h, d), -lim_w2, lim_w2), ((h,), -lim_w2, lim_w2)]
        specs += [(shape + (r,), -hyper_lim * s, hyper_lim * s) for shape, s in zip(shapes, scales)]
        a, w1, w2, h2, *hyper = uniform_arrays(key, specs)
        self.base = SHPLRNNStep(a=a, w1=w1, w2=w2, h1=jnp.zeros((d,)), h2=h2)
        self.hyper = SHPLRNNStep(*hyper)

    def specialise(self, ctx: Float[Array, " r"], ctx_pool: Float[Array, " r"] | None = None) -> SHPLRNNStep:
        return jax.tree.map(lambda b, hy: b + hy @ ctx, self.base, self.hyper)
