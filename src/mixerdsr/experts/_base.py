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
import dataclasses
import functools
import math
import typing
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from .._settings import AT_LEAST_1, validate
from ._integrate import SolverSettings, forced_solve, sequence_rollout, solve

__all__ = [
    "AbstractInnerLoopExpert",
    "ScaledField",
    "AbstractExpert",
    "ExpertSettings",
    "MLPSettings",
    "AbstractVectorFieldExpert",
    "AbstractSequenceExpert",
    "MLPField",
    "linear_specs",
    "glorot_spec",
    "uniform_arrays",
]


class MLPField(eqx.Module):
    """A plain MLP ``x -> W_L(... swish(W_1 x + b_1) ...) + b_L`` with explicit weights.

    Used as the specialised network of one environment. ``__call__(t, x, args=None)`` follows
    the diffrax vector-field convention (the fields are autonomous: ``t`` is ignored).
    """

    weights: tuple[Float[Array, "_ _"], ...]
    biases: tuple[Float[Array, " _"], ...]
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


@typing.no_type_check  # validates itself, naming the key
@dataclasses.dataclass(frozen=True)
class ExpertSettings:
    """Settings of an expert backbone: the ``[model.<backbone>]`` table of a run configuration.

    Every field is passed by name to the expert's ``__init__``
    (:meth:`AbstractExpert.from_settings`). An expert with settings subclasses this as a frozen
    dataclass and names it in its ``Settings`` class attribute; this base has none.
    """

    def __post_init__(self):
        validate(self, "model.<backbone>")


@typing.no_type_check  # validates itself, naming the key
@dataclasses.dataclass(frozen=True)
class MLPSettings(ExpertSettings):
    """Settings of the MLP backbones (GEPS, CoDA).

    Attributes:
        width: hidden width of the root MLP (paper: 64).
        depth: number of linear layers of the root MLP (paper: 3).
    """

    width: int = 64
    depth: int = 3

    def __post_init__(self):
        validate(self, "model.<backbone>", ranges={"width": AT_LEAST_1, "depth": AT_LEAST_1})


class AbstractExpert(eqx.Module):
    """One contextual meta-learner.

    An expert owns everything that depends on what it is: how a context becomes the network of
    one environment (:meth:`specialise`), how that network turns observed trajectories into
    predictions (:meth:`rollout`), which time steps are scored (``scored_from``), whether the
    training loss uses teacher forcing (``teacher_forced``), and its own settings (``Settings``,
    a frozen :class:`ExpertSettings` dataclass whose fields ``__init__`` takes by name).
    Subclass :class:`AbstractVectorFieldExpert` (IVPs integrated by diffrax) or
    :class:`AbstractSequenceExpert` (one-step maps) and implement ``__init__`` and
    :meth:`specialise`; register the class with :func:`mixerdsr.register_expert` to use it by
    name in a run. ``__call__`` works on **one** state and one context; callers batch with
    ``jax.vmap``.

    Attributes:
        context_size: length of the context vector this expert receives.
        state_size: dimension ``D`` of the state.
    """

    context_size: eqx.AbstractVar[int]
    state_size: eqx.AbstractVar[int]
    #: first time step whose prediction is scored (earlier ones are not predictions)
    scored_from: ClassVar[int]
    #: whether training feeds observations back into the rollout (teacher forcing ``alpha``)
    teacher_forced: ClassVar[bool]
    #: the settings this expert is built from (the ``[model.<backbone>]`` table)
    Settings: ClassVar[type[ExpertSettings]] = ExpertSettings

    @abc.abstractmethod
    def specialise(self, ctx: Float[Array, " c"], ctx_pool: Float[Array, " c"] | None = None) -> Callable:
        """The network of the environment with context ``ctx``: a callable ``(t, x, args)``.

        Args:
            ctx: the environment's context (the part this expert sees) ``[c]``.
            ctx_pool: another environment's context to expand around (contextual
                self-modulation, used in training when :attr:`self_modulating`); experts
                without self-modulation ignore it.
        """

    @property
    def self_modulating(self) -> bool:
        """Whether the training loss evaluates each environment around its neighbours' contexts
        (``specialise(ctx, ctx_pool)``); False unless an expert implements it."""
        return False

    @classmethod
    def from_settings(
        cls, state_size: int, context_size: int, settings: ExpertSettings | None = None, *, key: PRNGKeyArray
    ) -> "AbstractExpert":
        """Build from a settings object (default: ``cls.Settings()``), as a run does.

        Args:
            state_size: state dimension ``D``.
            context_size: length of the context this expert receives.
            settings: an instance of ``cls.Settings``.
            key: PRNG key.
        """
        settings = cls.Settings() if settings is None else settings
        if not isinstance(settings, cls.Settings):
            raise TypeError(
                f"{cls.__name__}: expected settings of type {cls.Settings.__name__}, found {type(settings).__name__}"
            )
        return cls(state_size, context_size, key=key, **dataclasses.asdict(settings))  # type: ignore[call-arg]

    @staticmethod
    @abc.abstractmethod
    def rollout(
        net: Callable,
        x: Float[Array, "N T D"],
        t: Float[Array, " T"],
        solver: SolverSettings,
        alpha: float | Array = 1.0,
        forcing: Float[Array, ""] | None = None,
    ) -> tuple[Float[Array, "N T D"], Bool[Array, " N"]]:
        """Predict all trajectories of one environment with its specialised network ``net``.

        Args:
            net: the output of :meth:`specialise`.
            x: observed trajectories ``[N, T, D]``.
            t: the environment's time grid ``[T]``.
            solver: solver settings.
            alpha: teacher-forcing coefficient (1 = free running; experts that are not
                ``teacher_forced`` ignore it).
            forcing: training only, vector-field experts: the interval forcing ``a`` of
                ``train.forcing`` (None or 1 = free running; other experts ignore it).

        Returns:
            ``(pred [N, T, D], ok [N])``; a failed trajectory is zero with ``ok = False``.
        """

    def __call__(self, t, x: Float[Array, " D"], ctx: Float[Array, " c"]) -> Float[Array, " D"]:
        """The vector field (or one-step map) at state ``x`` for context ``ctx``."""
        return self.specialise(ctx)(t, x, None)


class AbstractVectorFieldExpert(AbstractExpert):
    """An expert whose network is a vector field ``f(t, x) -> dx/dt``: each trajectory is the
    solution of the IVP from its first observed state (Tsit5, adaptive steps, saved at ``t``).
    Every time step is scored (step 0 is the initial state itself)."""

    scored_from: ClassVar[int] = 0
    teacher_forced: ClassVar[bool] = False

    @staticmethod
    def rollout(net, x, t, solver, alpha=1.0, forcing=None):
        def free(_):
            return jax.vmap(lambda x0: solve(net, x0, t, solver))(x[:, 0])

        if forcing is None:
            return free(None)
        forced = jax.vmap(lambda xi: forced_solve(net, xi, t, solver, forcing))
        return jax.lax.cond(forcing < 1.0, forced, free, x)


class AbstractInnerLoopExpert(AbstractVectorFieldExpert):
    """A vector-field expert whose contexts are not trained parameters: every training loss
    first adapts each environment's context from zero by :meth:`inner_loop`, and the shared
    weights are trained through it (second order; ``mixerdsr.training`` gives such an expert
    its own outer step). A single meta-learner: it runs with ``model.num_experts = 1``.

    Subclasses declare ``inner_steps`` and ``inner_lr`` (static fields).
    """

    inner_steps: eqx.AbstractVar[int]
    inner_lr: eqx.AbstractVar[float]

    def inner_loop(self, loss: Callable[[Array], Array], context_size: int, dtype: Any) -> tuple[Array, Array]:
        """The context adapted from zero by ``inner_steps`` gradient steps of size
        ``inner_lr`` on ``loss`` (a function of the context ``[c]``); differentiable (twice).
        Returns ``(context [c], loss at the zero context)``."""
        c = jnp.zeros((context_size,), dtype)
        loss0 = jnp.zeros((), dtype)
        for k in range(self.inner_steps):  # a few steps: unrolled, so the outer gradient sees each one
            lk, g = jax.value_and_grad(loss)(c)
            loss0 = lk if k == 0 else loss0
            c = c - self.inner_lr * jnp.where(jnp.isfinite(g), g, 0.0)
        return c, loss0


class ScaledField(eqx.Module):
    """A specialised network whose output is multiplied by ``scale`` (the gradient baseline's
    gate value); ``inner`` is the network itself."""

    inner: Any
    scale: Array

    def __call__(self, t, x, args=None):
        return self.scale * self.inner(t, x, args)


class AbstractSequenceExpert(AbstractExpert):
    """An expert whose network is a one-step map ``z_{t+1} = net(t, s_t)`` rolled out along each
    series (:func:`sequence_rollout`, generalised teacher forcing). Step 0 is the model's
    starting state, not a prediction, so scoring starts at step 1."""

    scored_from: ClassVar[int] = 1
    teacher_forced: ClassVar[bool] = True

    @staticmethod
    def rollout(net, x, t, solver, alpha=1.0, forcing=None):
        pred = jax.vmap(lambda xi: sequence_rollout(net, xi, alpha, solver.sequence_start))(x)
        ok = jnp.all(jnp.isfinite(pred), axis=(1, 2))
        return jnp.where(ok[:, None, None], pred, 0.0), ok
