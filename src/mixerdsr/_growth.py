"""The number of experts chosen from the data (``gate.grow``, ``mixerdsr run --experts auto``).

Training starts with every environment on one expert. At each decision (after ``gate.warmup``
outer steps, then every ``gate.grow_every`` steps while splits are kept) every active expert is
a candidate: its environments are divided into two groups by K-means on their contexts, and
the candidates whose contexts fall most clearly into two groups (as many as there are experts
left) are split at once: a copy of the expert takes one group (the group's contexts move along,
so nothing fitted is lost; :func:`mixerdsr.training.reroute`). Two branches then train for
``gate.grow_every`` outer steps from the same state, one with the splits and one without; a
split is kept when the validation error of its expert's environments is below
``(1 - gate.grow_tol)`` times their error without it, and undone otherwise (its environments go
back to the parent). A decision that keeps no split ends the growth, so the number of experts
can double at every decision. The validation error of a group of environments is the geometric
mean of their validation relMSE: scale-free and robust, where the mean relMSE (Eq. 9, the
model-selection score) is dominated by the few environments whose forecasts run off and moves
with training alone (figures in ``docs/routing.md``).
The chosen number of experts is the number of active ones; the others are never routed to.

Decisions are recorded in ``history.jsonl`` (``growth`` on the last record of each decision):
per split the expert, its copy, the envs moved, the validation error of both branches and whether
it was kept; whether any was kept and the number of active experts. A resumed run reads them back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import metrics as M
from ._config import Config
from .gating import active_from_gate, seed_routes
from .inference import routes
from .training import TrainState, own_contexts, reroute

__all__ = ["Growth", "growing", "active_experts"]


def growing(cfg: Config) -> bool:
    """Whether ``cfg`` chooses the number of experts by growth."""
    return cfg.gate.grow and cfg.gate.mode == "lstsq" and cfg.model.num_experts > 1


def active_experts(model) -> np.ndarray:
    """``[M]`` bool: the experts a context can be routed to (not switched off by growth)."""
    return np.asarray(active_from_gate(model.gate))


def _split_score(x: np.ndarray, key: jax.Array, restarts: int) -> tuple[float, np.ndarray]:
    """How clearly the points ``x [n, c]`` fall into two groups, and the groups.

    The score is ``n (1 - I2 / I1)``: the share of L1 inertia (standardised units) that two
    K-means clusters explain instead of one, times the number of points (a large, clearly
    two-fold group first)."""
    if x.shape[0] < 2:
        return -np.inf, np.zeros(x.shape[0], int)
    assign, i2 = seed_routes(key, jnp.asarray(x), 2, restarts)
    z = (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)
    i1 = float(np.abs(z - np.median(z, 0)).sum())
    a = np.asarray(assign)
    if i1 <= 0 or len(np.unique(a)) < 2:
        return -np.inf, a
    return x.shape[0] * (1.0 - float(i2) / i1), a


class Growth:
    """The growth schedule and its decisions (used by :func:`mixerdsr._trainer.train`).

    Args:
        cfg: run configuration (``gate.grow_every``, ``gate.grow_tol``, ``gate.warmup``,
            ``gate.seed_restarts``).
        family: family of every training env (for the messages), or None.
        log: message sink.
        history: records of a resumed run (its decisions are read back).
    """

    def __init__(self, cfg: Config, family: np.ndarray | None, log: Callable[[str], None], history: Sequence[dict]):
        self.cfg = cfg
        self.family = family
        self.log = log
        g = cfg.gate
        self.every = g.grow_every
        self.next = g.warmup if g.warmup > 0 else g.grow_every
        self.stopped = False
        for h in history:
            ev = h.get("growth")
            if ev is not None:
                self.next = h["step"] + 1 + (self.every if ev["accepted"] else 0)
                self.stopped = not ev["accepted"] or ev["active"] >= cfg.model.num_experts

    def due(self, step: int, n_steps: int) -> bool:
        """Whether a decision starts at outer step ``step`` (and fits before ``n_steps``)."""
        return not self.stopped and step == self.next and step + self.every <= n_steps

    def decide(
        self,
        state: TrainState,
        step: int,
        advance: Callable[[TrainState, int], tuple[TrainState, dict[str, Any]]],
        validate: Callable[[TrainState], np.ndarray],
    ) -> tuple[TrainState, list[dict[str, Any]], float]:
        """Train both branches (split / not) for ``grow_every`` steps and keep the better.

        Args:
            state: the state at outer step ``step``.
            step: the outer step the decision starts at.
            advance: one outer step and its history record.
            validate: the validation relMSE of every env ``[E]``.

        Returns:
            ``(state, records, val)``: the kept branch's final state, its per-step records (the
            last one with a ``growth`` entry) and its validation relMSE (Eq. 9).
        """
        cfg, n_exp = self.cfg, self.cfg.model.num_experts
        active = active_experts(state.model)
        r = np.asarray(routes(state.model, state.contexts))
        own = np.asarray(own_contexts(state.model, state.contexts, jnp.asarray(r)))
        key = jax.random.fold_in(jax.random.PRNGKey(cfg.train.seed), step)
        candidates = []  # (score, parent, envs that move)
        for m in np.flatnonzero(active):
            members = np.flatnonzero(r == m)
            score, groups = _split_score(own[members], jax.random.fold_in(key, int(m)), cfg.gate.seed_restarts)
            if np.isfinite(score):
                candidates.append((score, int(m), members[groups == 1]))
        candidates = sorted(candidates, key=lambda c: -c[0])[: int((~active).sum())]
        keep_state, keep_recs = self._branch(state, step, advance)
        env_keep = validate(keep_state)
        if not candidates:
            return self._end(keep_state, keep_recs, env_keep, [], active, "no expert can be split")
        # every candidate split at once; each is judged on its own envs
        parents, new_route, now_active = np.arange(n_exp), r.copy(), active.copy()
        splits: list[dict[str, Any]] = []
        for (_, parent, moved), child in zip(candidates, np.flatnonzero(~active)):
            parents[child], new_route[moved], now_active[child] = parent, child, True
            splits.append({"split": parent, "into": int(child), "moved": len(moved)})
        split_state = reroute(state, cfg, parents, r, new_route, now_active)
        split_state, split_recs = self._branch(split_state, step, advance)
        env_split = validate(split_state)
        for sp in splits:
            judged = r == sp["split"]  # the split expert's envs (both groups)
            v_split, v_keep = M.geometric_mean(env_split[judged]), M.geometric_mean(env_keep[judged])
            ok = bool(np.isfinite(v_split) and v_split < (1 - cfg.gate.grow_tol) * v_keep)
            sp.update(val_split=v_split, val_keep=v_keep, accepted=ok)
        kept = [sp for sp in splits if sp["accepted"]]
        if not kept:
            return self._end(keep_state, keep_recs, env_keep, splits, active, "no split helped")
        undo = [sp for sp in splits if not sp["accepted"]]
        if undo:  # a split that did not help: its envs go back to the parent, the copy is switched off
            back, final_active = new_route.copy(), now_active.copy()
            for sp in undo:
                back[new_route == sp["into"]] = sp["split"]
                final_active[sp["into"]] = False
            split_state = reroute(split_state, cfg, np.arange(n_exp), new_route, back, final_active)
            env_split = validate(split_state)
            split_recs[-1]["route"] = back.tolist()
            split_recs[-1]["routes"] = np.bincount(back, minlength=n_exp).tolist()
            now_active = final_active
        n_active = int(now_active.sum())
        split_recs[-1]["growth"] = {"splits": splits, "accepted": True, "active": n_active}
        self.next = step + self.every
        self.stopped = bool(now_active.all())
        msg = f"growth: kept {len(kept)} of {len(splits)} split(s): now {n_active} experts"
        if self.family is not None:
            msg += f", purity {M.purity(np.asarray(split_recs[-1]['route']), self.family):.3g}"
        self.log(msg)
        return split_state, split_recs, _mean(env_split)

    def _branch(self, state: TrainState, step: int, advance) -> tuple[TrainState, list[dict[str, Any]]]:
        recs = []
        for s in range(step, step + self.every):
            state, rec = advance(state, s)
            recs.append(rec)
        return state, recs

    def _end(self, state, recs, env_val, splits: list[dict[str, Any]], active, why: str):
        recs[-1]["growth"] = {"splits": splits, "accepted": False, "active": int(active.sum())}
        self.stopped = True
        self.log(f"growth: stopped at {int(active.sum())} expert(s): {why}")
        return state, recs, _mean(env_val)


def _mean(per_env: np.ndarray) -> float:
    """relMSE (Eq. 9) from the per-env values of equally sized envs: their mean."""
    return float(np.mean(np.asarray(per_env, float)))
