"""The MixER layer: M stacked experts, a linear context gate, top-1 routing.

The gate depends only on an environment's context, so each environment's expert is known
*before* any integration: :meth:`MixER.expert` gathers that expert's parameters out of the
stacked pytree and the solve runs with one expert, whatever ``M`` is.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._rand import normal
from .experts import BACKBONES, AbstractExpert, ScaledField

if TYPE_CHECKING:
    from ._config import Config

__all__ = ["MixER", "make_mixer", "build_model", "initial_model", "trained_spec", "trained_vector"]


class MixER(eqx.Module):
    """A sparse top-1 mixture of contextual experts.

    Attributes:
        experts: the ``M`` experts as **one** stacked pytree (leading axis ``M`` on every array).
        shifts: ``[M]`` learnable context offsets (context shifting; zeros and unused if off).
        gate: ``[d_ctx + 1, M]`` gate weights; ``logits = [ctx, 1] @ gate``. It is fitted by the
            least-squares gate update (Algorithm 1), never by the experts' optimiser, except for
            the ``"gradient"`` baseline.
        n_experts: ``M``.
        context_size: ``d_ctx``, the full context length of an environment.
        split: context splitting: expert ``m`` sees the ``m``-th of ``M`` equal pieces.
        shift: context shifting on/off.
        gate_mode: ``"lstsq"`` (MixER), ``"gradient"`` (naive MoE: the routed output is scaled by
            its softmax gate value so the gate learns) or ``"frozen"`` (the gate never changes and
            does not scale outputs: the authors' naive baseline as it actually behaves).
    """

    experts: AbstractExpert
    shifts: Float[Array, " M"]
    gate: Float[Array, "d1 M"]
    n_experts: int = eqx.field(static=True)
    context_size: int = eqx.field(static=True)
    split: bool = eqx.field(static=True)
    shift: bool = eqx.field(static=True)
    gate_mode: str = eqx.field(static=True)

    @property
    def expert_type(self) -> type[AbstractExpert]:
        """The class of the experts: it decides how predictions are made and scored."""
        return type(self.experts)

    @property
    def self_modulating(self) -> bool:
        """Whether the experts use contextual self-modulation in training (``ctx_pool``)."""
        return self.experts.self_modulating

    def logits(self, ctx: Float[Array, " d"]) -> Float[Array, " M"]:
        return ctx @ self.gate[:-1] + self.gate[-1]

    def gate_probs(self, ctx: Float[Array, " d"]) -> Float[Array, " M"]:
        """Softmax of the logits (what the heatmaps show)."""
        return jax.nn.softmax(self.logits(ctx))

    def route(self, ctx: Float[Array, " d"]) -> Int[Array, ""]:
        """Index of the expert of the environment with context ``ctx`` (argmax of logits)."""
        return jnp.argmax(self.logits(ctx))

    def expert(self, m: Int[Array, ""] | int) -> AbstractExpert:
        """Expert ``m`` gathered out of the stack (``m`` may be traced)."""
        arrays, static = eqx.partition(self.experts, eqx.is_array)
        return eqx.combine(jax.tree.map(lambda p: p[m], arrays), static)

    def expert_context(self, ctx: Float[Array, " d"], m: Int[Array, ""] | int) -> Float[Array, " c"]:
        """The part of ``ctx`` expert ``m`` sees (after splitting and shifting)."""
        c = ctx.reshape(self.n_experts, -1)[m] if self.split else ctx
        if self.shift:
            c = c + self.shifts[m]
        return c

    def output_scale(self, ctx: Float[Array, " d"], m: Int[Array, ""] | int) -> Float[Array, ""]:
        """Factor on the routed expert's output: its softmax gate value for the gradient
        baseline (Switch-Transformer style, so the gate gets a gradient), else 1."""
        if self.gate_mode == "gradient":
            return self.gate_probs(ctx)[m]
        return jnp.ones((), ctx.dtype)

    def specialise(
        self, ctx: Float[Array, " d"], m: Int[Array, ""] | int | None = None, ctx_pool: Float[Array, " d"] | None = None
    ):
        """The network of the environment with context ``ctx`` as a callable ``(t, x, args)``.

        Args:
            ctx: the environment's full context ``[d_ctx]``.
            m: expert to use; default: the routed one.
            ctx_pool: contextual self-modulation: the (full) context to expand around; passed
                to the expert, which ignores it unless it implements self-modulation.
        """
        if m is None:
            m = self.route(ctx)
        pool = None if ctx_pool is None else self.expert_context(ctx_pool, m)
        net = self.expert(m).specialise(self.expert_context(ctx, m), pool)
        if self.gate_mode == "gradient":
            return ScaledField(net, self.output_scale(ctx, m))
        return net

    def __call__(self, t, x: Float[Array, " D"], ctx: Float[Array, " d"]) -> Float[Array, " D"]:
        """Output of the layer for one state and one context (the routed expert's output)."""
        return self.specialise(ctx)(t, x, None)


def make_mixer(
    backbone: str | type[AbstractExpert],
    state_size: int,
    context_size: int,
    n_experts: int = 1,
    *,
    split: bool = True,
    shift: bool = True,
    gate_mode: str = "lstsq",
    same_init: bool = True,
    gate_scale: float = 0.1,
    key: PRNGKeyArray,
    **expert_kwargs: Any,
) -> MixER:
    """Build a MixER layer.

    Args:
        backbone: ``"geps"``, ``"coda"``, ``"ncf"`` (or ``"shplrnn"``) or an expert class.
        state_size: state dimension ``D``.
        context_size: full context length ``d_ctx`` (divisible by ``n_experts`` when ``split``).
        n_experts: ``M``; with ``M = 1`` the layer is the bare backbone.
        split, shift: context splitting / shifting (Appendix C.1).
        gate_mode: ``"lstsq"``, ``"gradient"`` or ``"frozen"``.
        same_init: initialise all experts identically (as the paper) or independently.
        gate_scale: standard deviation of the random initial gate weights.
        key: PRNG key.
        **expert_kwargs: passed to the expert constructor (``width``, ``depth``, ...).

    Returns:
        A :class:`MixER`.
    """
    if isinstance(backbone, str):
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}")
        backbone = BACKBONES[backbone]
    if gate_mode not in ("lstsq", "gradient", "frozen"):
        raise ValueError(f"gate_mode must be 'lstsq', 'gradient' or 'frozen', got {gate_mode!r}")
    if n_experts < 1:
        raise ValueError(f"n_experts must be >= 1, got {n_experts}")
    if split and context_size % n_experts:
        raise ValueError(f"context_size {context_size} is not divisible by n_experts {n_experts} (context splitting)")
    c = context_size // n_experts if split else context_size
    experts, gate = _init_arrays(
        backbone, state_size, c, context_size, n_experts, same_init, gate_scale, key, expert_kwargs
    )
    return MixER(experts, jnp.zeros((n_experts,)), gate, n_experts, context_size, split, shift, gate_mode)


def build_model(cfg: Config, state_size: int, key: PRNGKeyArray) -> MixER:
    """The MixER layer of ``cfg.model`` (experts built from ``cfg.model.expert``, the backbone's
    own settings; gate mode ``cfg.gate.mode``) for states of size ``state_size``."""
    m = cfg.model
    return make_mixer(
        BACKBONES[m.backbone],
        state_size,
        m.context_size,
        m.num_experts,
        split=m.split_context,
        shift=m.shift_context,
        gate_mode=cfg.gate.mode,
        same_init=m.same_init,
        key=key,
        **dataclasses.asdict(m.expert),
    )


def model_keys(seed: int) -> tuple[PRNGKeyArray, PRNGKeyArray]:
    """The keys of a run's model initialisation and of its training RNG (``train.seed``)."""
    kmodel, key = jax.random.split(jax.random.PRNGKey(seed))
    return kmodel, key


def initial_model(cfg: Config, state_size: int) -> MixER:
    """The MixER layer a run with ``cfg`` starts from (:func:`build_model` with the key of
    ``train.seed``)."""
    return build_model(cfg, state_size, model_keys(cfg.train.seed)[0])


def trained_spec(model: MixER) -> Any:
    """Which leaves the weights' optimiser trains (a pytree of bools): every float array
    except the gate (unless the gate is the gradient baseline)."""
    spec = jax.tree.map(eqx.is_inexact_array, model)
    return eqx.tree_at(lambda m: m.gate, spec, replace=model.gate_mode == "gradient")


def trained_vector(model: MixER) -> Float[Array, " P"]:
    """The arrays the weights' optimiser trains (:func:`trained_spec`), raveled into one vector."""
    return ravel_pytree(eqx.filter(model, trained_spec(model)))[0]


@eqx.filter_jit
def _init_arrays(backbone, state_size, c, context_size, n_experts, same_init, gate_scale, key, expert_kwargs):
    """The stacked experts and the initial gate, as one compiled function (built op by op,
    the ODEBench-10B model took 7 s, almost all of it compiling small random kernels)."""
    kexp, kgate = jax.random.split(key)
    if same_init:  # one expert, repeated (the same as building M from the same key)
        dyn, static = eqx.partition(backbone(state_size, c, key=kexp, **expert_kwargs), eqx.is_array)
        experts = eqx.combine(jax.tree.map(lambda a: jnp.broadcast_to(a, (n_experts, *a.shape)), dyn), static)
    else:
        experts = eqx.filter_vmap(lambda k: backbone(state_size, c, key=k, **expert_kwargs))(
            jax.random.split(kexp, n_experts)
        )
    return experts, gate_scale * normal(kgate, (context_size + 1, n_experts))
