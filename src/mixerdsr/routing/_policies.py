"""When and how the routes change on the host: the routing policies the trainer consults.

A policy is to the routing what a Diffrax step-size controller is to a solve: a small object
the loop asks before every outer step. The trainer's loop is

    state, event = policy.before_step(step, state, ...)   # e.g. seed the routes
    step_fn = compiled[policy.step_config(cfg, n_envs)]    # the phase's compiled step
    state = step_fn(state, data)                            # gate updates: policy.update

and a policy's :meth:`~RoutingPolicy.state_dict` goes into the checkpoint, so a resumed run
knows its phase instead of inferring it. Two policies:

- :class:`FromStart`: the gate update runs from the first outer step (with
  :meth:`LeastSquaresGate.published` it is the paper's Algorithm 1 as published);
- :class:`WarmStart`: every env on one shared expert for ``warmup`` outer steps, then the
  routes are seeded from the contexts that expert learned (a :class:`Grouping`: a fixed
  number of groups, or :class:`ChosenCount`, the number chosen from the contexts), and the
  update it wraps takes over.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int

from ..metrics import geometric_mean
from ..mixer import MixER
from ._algorithm1 import active_from_gate
from ._grouping import choose_count, compact_labels, eigengap_count, seed_routes
from ._surgery import fresh_moments, own_contexts, reroute, restart_experts
from ._updates import GateUpdate, gate_update_of

if TYPE_CHECKING:
    from .._config import Config
    from ..training import TrainState

__all__ = [
    "RoutingPolicy",
    "FromStart",
    "WarmStart",
    "Grouping",
    "FixedCount",
    "ChosenCount",
    "RouteEvent",
    "policy_of",
    "settings_for_active",
    "auto_warmup",
]


@dataclasses.dataclass(frozen=True)
class RouteEvent:
    """A change of the routing made by a policy between outer steps.

    Attributes:
        message: one line for the log.
        assign: ``[E]`` the new expert of every env.
        record: entries for that step's history record (e.g. ``experts_chosen``).
        contexts: the contexts the grouping saw ``[E, c]`` (a warm start's seeding: the shared
            expert's part), or None.
    """

    message: str
    assign: np.ndarray
    record: dict[str, Any]
    contexts: np.ndarray | None = None


class RoutingPolicy:
    """Base of the host-side routing policies (see the module docstring).

    Attributes:
        update: the gate's update rule inside the compiled step.
    """

    update: GateUpdate

    def gate_from(self) -> int:
        """The first outer step whose compiled step may update the gate."""
        return 0

    def prepare(self, model: MixER) -> MixER:
        """The model a run starts from (its initial gate)."""
        return model

    def phase(self) -> str:
        """The current phase's name (``"routed"``: the gate update in charge)."""
        return "routed"

    def step_config(self, cfg: Config, n_envs: int) -> Config:
        """The settings of the compiled step in the current phase."""
        return cfg

    def before_step(
        self, step: int, state: TrainState, env_fit: Callable[[TrainState], np.ndarray]
    ) -> tuple[TrainState, RouteEvent | None]:
        """Called before outer step ``step``: the state, changed where the policy acts, and
        what it did (None: nothing). ``env_fit(state)`` gives every env's validation relMSE
        ``[E]`` (computed only when a policy asks)."""
        return state, None

    def state_dict(self) -> dict[str, Any]:
        """The policy's state (goes into the checkpoint)."""
        return {}

    def load_state_dict(self, d: dict[str, Any], step: int, model: MixER) -> None:
        """Restore :meth:`state_dict`; ``step`` and ``model`` are the checkpoint's (for
        checkpoints written before policies kept a state)."""


@dataclasses.dataclass
class FromStart(RoutingPolicy):
    """The gate update runs from the first outer step (the paper's schedule)."""

    update: GateUpdate


@dataclasses.dataclass(frozen=True)
class Grouping:
    """How the shared expert's contexts are grouped when the routes are seeded.

    Attributes:
        method: ``"kmeans"`` or ``"spectral"`` (:func:`~mixerdsr.routing.seed_routes`).
        restarts: K-means restarts.
        neighbours: spectral graph neighbours (0: automatic).
    """

    method: str = "kmeans"
    restarts: int = 10
    neighbours: int = 0

    def groups(self, key, own, n_experts: int, env_fit) -> tuple[Int[Array, " E"], np.ndarray | None, dict | None]:
        """``(assign [E], active [M] or None (all), choice or None)``."""
        raise NotImplementedError

    needs_fit: bool = dataclasses.field(default=False, init=False)


@dataclasses.dataclass(frozen=True)
class FixedCount(Grouping):
    """As many groups as experts."""

    def groups(self, key, own, n_experts, env_fit):
        assign, _ = seed_routes(key, own, n_experts, self.restarts, method=self.method, neighbours=self.neighbours)
        return assign, None, None


@dataclasses.dataclass(frozen=True)
class ChosenCount(Grouping):
    """The number of groups ``K <= M`` chosen from the contexts (the mean silhouette,
    :func:`~mixerdsr.routing.choose_count`); ``K = 1`` when the shared expert already fits
    every group (the geometric mean of its validation relMSE over each group's envs below
    ``single_fit``). Experts ``K .. M-1`` are switched off. The fields are those of
    :class:`~mixerdsr.routing.WarmStartSettings` of the same meaning."""

    silhouette_min: float = 0.5
    slack: float = 0.1
    single_fit: float = 0.5
    rule: str = "silhouette"
    needs_fit: bool = dataclasses.field(default=True, init=False)

    def groups(self, key, own, n_experts, env_fit):
        extra: dict[str, Any] = {}
        if self.rule == "eigengap":
            k, lam = eigengap_count(np.asarray(own), n_experts, self.neighbours)
            extra["eigenvalues"] = [round(float(v), 4) for v in lam]
            assign, scores = jnp.zeros((own.shape[0],), jnp.int32), {}
        else:  # K-means groups come with the count
            k, assign, scores = choose_count(key, own, n_experts, self.silhouette_min, self.restarts, self.slack)
        if k > 1 and (self.rule == "eigengap" or self.method != "kmeans"):  # the chosen count, formed by the method
            grouped, _ = seed_routes(key, own, k, self.restarts, method=self.method, neighbours=self.neighbours)
            k, assign = compact_labels(grouped)
        fits = None
        if env_fit is not None:  # how well the shared expert fits each group (geometric mean)
            fit, a = np.asarray(env_fit, float), np.asarray(assign)
            fits = [geometric_mean(fit[a == j]) for j in range(k)]
            if max(fits) < self.single_fit:  # one expert already fits every group
                k, assign = 1, jnp.zeros((own.shape[0],), jnp.int32)
        choice = {
            "experts": k,
            "silhouette": {str(j): round(v, 4) for j, v in scores.items()},
            "shared_fit": fits,
            **extra,
        }
        return assign, np.arange(n_experts) < k, choice

    def describe(self, choice: dict[str, Any], n_experts: int) -> str:
        """One line on the choice."""
        k = choice["experts"]
        worst = max(choice["shared_fit"] or [float("nan")])
        if self.rule == "eigengap":
            how = f"largest eigengap of the shared expert's context graph, eigenvalues {choice['eigenvalues']}"
        else:
            best = max(choice["silhouette"].values(), default=float("nan"))
            how = (
                f"best mean silhouette of the shared expert's context groups {best:.3g}, needed {self.silhouette_min:g}"
            )
        return (
            f"{k} expert(s) chosen after the warm-up ({how}; its typical validation relMSE on the "
            f"worst-fitted group {worst:.3g}, one expert below {self.single_fit:g}; {n_experts - k} switched off)"
        )


@dataclasses.dataclass
class WarmStart(RoutingPolicy):
    """Every env on expert 0 for ``warmup`` outer steps (no gate update), then the routes are
    seeded from the contexts that shared expert learned and ``update`` takes over.

    At the seeding, the contexts expert 0 sees are grouped (``grouping``), every expert becomes
    a copy of expert 0 (``seed_from = "shared"``) or returns to its initial weights
    (``"init"``), and every env's context part moves to its group's expert
    (:func:`~mixerdsr.routing.reroute`).

    Attributes:
        update: the gate update after the warm-up.
        warmup: outer steps of the warm-up.
        grouping: :class:`FixedCount` or :class:`ChosenCount`.
        batch: envs per batch during the warm-up (0: the training batch, -1: all).
        seed_from: ``"shared"`` or ``"init"``.
        noise: the seeding's least-squares noise (``gate.noise``).
        seed: the run's seed (``train.seed``; the seeding's keys).
        initial: the run's initial model (``seed_from = "init"`` returns the experts to it).
        fresh: the weights' optimiser starts afresh at the seeding (:func:`fresh_moments`).
        seeded: the routes were seeded (the policy's state, with ``n_active``).
        n_active: experts in use after the seeding.
    """

    update: GateUpdate
    warmup: int
    grouping: Grouping = dataclasses.field(default_factory=FixedCount)
    batch: int = 0
    seed_from: str = "shared"
    noise: float = 1e-4
    seed: int = 0
    initial: Callable[[], MixER] | None = None
    fresh: bool = False
    seeded: bool = False
    n_active: int | None = None

    def gate_from(self) -> int:
        return self.warmup

    def prepare(self, model: MixER) -> MixER:
        """Every env on expert 0 until the routes are seeded."""
        bias = jnp.where(jnp.arange(model.n_experts) == 0, 1.0, 0.0)
        return eqx.tree_at(lambda m: m.gate, model, jnp.zeros_like(model.gate).at[-1].set(bias))

    def phase(self) -> str:
        return "routed" if self.seeded else "warmup"

    def step_config(self, cfg: Config, n_envs: int) -> Config:
        if not self.seeded:
            if self.batch == 0:
                return cfg
            wb = n_envs if self.batch == -1 else min(self.batch, n_envs)
            return cfg.override({"train.batch_envs": wb})
        return settings_for_active(cfg, n_envs, self.n_active or cfg.model.num_experts)

    def before_step(self, step, state, env_fit):
        if self.seeded or step != self.warmup:
            return state, None
        own = np.asarray(own_contexts(state.model, state.contexts, jnp.zeros(state.contexts.shape[0], jnp.int32)))
        state, assign, choice = self.seed_routes(state, env_fit(state) if self.grouping.needs_fit else None)
        n_exp = state.model.n_experts
        counts = np.bincount(np.asarray(assign), minlength=n_exp).tolist()
        lines, record = [], {}
        if choice is not None and isinstance(self.grouping, ChosenCount):
            lines.append(self.grouping.describe(choice, n_exp))
            counts = counts[: choice["experts"]]
            record["experts_chosen"] = choice
        lines.append(f"routes seeded from the contexts after {self.warmup} warm-up steps: envs per expert {counts}")
        return state, RouteEvent("\n".join(lines), np.asarray(assign), record, own)

    def seed_routes(self, state: TrainState, env_fit: Any = None) -> tuple[TrainState, Any, dict[str, Any] | None]:
        """Seed the routes now: ``(state, assign [E], choice)`` (``choice``: None unless the
        count was chosen: ``{"experts": K, "silhouette": {k: score}, "shared_fit": [...]}``)."""
        n_exp, n_env = state.model.n_experts, state.contexts.shape[0]
        zero = np.zeros(n_env, np.int32)
        key = jax.random.fold_in(jax.random.PRNGKey(self.seed), self.warmup)
        own = own_contexts(state.model, state.contexts, jnp.asarray(zero))
        assign, active, choice = self.grouping.groups(key, own, n_exp, env_fit)
        reroute_key = jax.random.fold_in(jax.random.PRNGKey(self.seed), int(state.step))
        state = reroute(state, reroute_key, self.noise, np.zeros(n_exp, np.int32), zero, assign, active)
        if self.seed_from == "init" and self.initial is not None:
            state = restart_experts(state, self.initial())
        if self.fresh:
            state = fresh_moments(state)
        self.seeded = True
        self.n_active = n_exp if active is None else int(np.sum(active))
        return state, assign, choice

    def state_dict(self) -> dict[str, Any]:
        return {"seeded": self.seeded, "n_active": self.n_active}

    def load_state_dict(self, d: dict[str, Any], step: int, model: MixER) -> None:
        if d:
            self.seeded, self.n_active = bool(d["seeded"]), d.get("n_active")
        else:  # a checkpoint written before policies kept a state
            self.seeded = step > self.warmup
            self.n_active = int(np.sum(np.asarray(active_from_gate(model.gate)))) if self.seeded else None


def settings_for_active(cfg: Config, n_envs: int, n_active: int) -> Config:
    """The training settings once ``n_active`` of the ``M`` experts are active (the number
    chosen after the warm-up): with ``train.batch_envs = 0`` the batch becomes a
    MixER-``n_active``'s (:meth:`~mixerdsr.TrainSettings.batch`: ``E / n_active``, at least 16
    and at most all envs; with one expert, as many as a single meta-learner); with one active
    expert the gate is no longer updated (every env is routed to it whatever the gate)."""
    if cfg.train.batch_envs == 0 and n_active < cfg.model.num_experts:
        cfg = cfg.override({"train.batch_envs": cfg.train.batch(n_envs, n_active)})
    if n_active == 1 and cfg.gate.mode == "lstsq":
        cfg = cfg.override({"gate.mode": "frozen"})
    return cfg


def auto_warmup(warmup: int, outer_steps: int, choose_count: bool = False) -> int:
    """The warm-up a warm start runs (``gate.warm_start.warmup``): ``warmup`` when set (> 0),
    else 100 outer steps or a fifth of a shorter run; when the warm-up also chooses the number
    of experts (``choose_count``, ``--experts auto``), 100 or a third of a shorter run: the
    count rule was chosen on contexts after 100 steps, and after 60 of a 300-step run it found
    fewer groups than families more often (``docs/defaults.md``, "The count of --experts auto")."""
    return warmup if warmup > 0 else min(100, max(1, outer_steps // (3 if choose_count else 5)))


def policy_of(cfg: Config, state_size: int | None = None) -> RoutingPolicy:
    """The routing policy of a run configuration (``gate.router``): a :class:`WarmStart` with the
    ``[gate.warm_start]`` settings (grouping :class:`ChosenCount` when its ``grouping =
    "silhouette"``) for ``"warm_start"`` with the least-squares gate and several experts, else
    :class:`FromStart`. ``state_size`` is needed for ``seed_from = "init"`` (the initial model)."""
    from ..mixer import initial_model

    g, update = cfg.gate, gate_update_of(cfg.gate)
    if not (g.router == "warm_start" and g.mode == "lstsq" and cfg.model.num_experts > 1):
        return FromStart(update)
    ws = g.warm_start
    grouping: Grouping = FixedCount(ws.method, ws.restarts, ws.neighbours)
    if ws.grouping != "fixed":
        grouping = ChosenCount(
            ws.method, ws.restarts, ws.neighbours, ws.silhouette_min, ws.silhouette_slack, ws.single_fit, ws.grouping
        )
    initial = None
    if ws.seed_from == "init" and state_size is not None:
        size = state_size

        def initial() -> MixER:
            return initial_model(cfg, size)

    warmup = auto_warmup(ws.warmup, cfg.train.outer_steps, choose_count=isinstance(grouping, ChosenCount))
    return WarmStart(
        update, warmup, grouping, ws.batch, ws.seed_from, g.noise, cfg.train.seed, initial, ws.fresh_moments
    )
