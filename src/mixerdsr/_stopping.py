"""How long training runs: the learning-rate plateau rule, convergence and the time budget.

A host-side policy in the shape of the routers: :class:`Stopping` is built from the training
settings, sees every validation score and the seconds spent, and answers whether to stop and
by which factor the weights' learning rate is scaled now (the guard below scales both rates).
Its state is a small dict that goes in the checkpoint (:meth:`Stopping.state_dict`), so a
resumed run continues the same rule.

``train.schedule = "steps"`` (the paper's): the rate falls by ``lr_decay`` at 1/3 and 2/3 of
``outer_steps`` (compiled in the optimiser) and every outer step runs. ``"plateau"``: no fixed
drops; a *plateau* is ``patience`` validation checks in a row without a relative improvement of
``min_improvement`` over the best score; each plateau multiplies the rate by ``lr_decay``, and
the plateau after ``lr_drops`` drops ends training as converged. In both, a run is reported
converged when its last ``patience`` checks were a plateau, and ``time_budget`` (seconds, all
sittings together) stops it at the best model reached so far.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any

__all__ = ["Stopping", "DivergenceGuard", "STOP_REASONS"]

#: why training ended: every outer step ran, the plateau rule, the time budget, the losses kept
#: diverging (:class:`DivergenceGuard`)
STOP_REASONS = ("outer_steps", "converged", "time_budget", "diverged")


@dataclasses.dataclass
class Stopping:
    """The stopping rule and learning-rate plateau schedule of one run.

    Args:
        plateau: drop the rate on plateaus and stop at the last one (``schedule = "plateau"``).
        patience: validation checks without improvement that make a plateau.
        min_improvement: relative improvement of the best validation score that counts.
        lr_drops: plateaus that lower the rate before the next one ends training.
        lr_decay: the factor of each drop.
        time_budget: seconds of training over all sittings (0 = no limit).
        smoothing: weight of the newest validation score in the smoothed score the rule
            judges (an exponential moving average; 1 = the raw score). A noisy score (few
            held-out trajectories) would otherwise set a lucky best that later checks rarely
            beat, and end training early.
    """

    plateau: bool
    patience: int
    min_improvement: float
    lr_drops: int
    lr_decay: float
    time_budget: float = 0.0
    smoothing: float = 1.0
    best: float = math.inf
    level: float = math.nan  # the smoothed validation score
    since: int = 0  # validation checks since the best score improved enough
    drops: int = 0
    seconds: float = 0.0

    @classmethod
    def from_settings(cls, tr: Any) -> Stopping:
        """From a :class:`~mixerdsr.TrainSettings`."""
        return cls(
            tr.schedule == "plateau",
            tr.patience,
            tr.min_improvement,
            tr.lr_drops,
            tr.lr_decay,
            tr.time_budget,
            tr.val_smoothing,
        )

    @property
    def lr_scale(self) -> float:
        """The factor on the weights' learning rate now (1 with the ``steps`` schedule)."""
        return self.lr_decay**self.drops if self.plateau else 1.0

    @property
    def converged(self) -> bool:
        """Whether the last ``patience`` validation checks brought no improvement."""
        return self.since >= self.patience

    def validated(self, score: float) -> str | None:
        """Record one validation score; ``"converged"`` when the plateau rule ends training."""
        if math.isfinite(score):
            fresh = not math.isfinite(self.level)
            self.level = score if fresh else (1.0 - self.smoothing) * self.level + self.smoothing * score
            score = self.level
        if math.isfinite(score) and score < self.best * (1.0 - self.min_improvement):
            self.best, self.since = score, 0
            return None
        self.best = min(self.best, score) if math.isfinite(score) else self.best
        self.since += 1
        if not self.plateau or self.since < self.patience:
            return None
        if self.drops >= self.lr_drops:
            return "converged"
        self.drops += 1
        self.since = 0
        return None

    def spent(self, seconds: float) -> str | None:
        """Record the seconds of one outer step; ``"time_budget"`` once the budget is used up."""
        self.seconds += seconds
        return "time_budget" if 0 < self.time_budget <= self.seconds else None

    def state_dict(self) -> dict[str, Any]:
        """What the checkpoint keeps (JSON-able)."""
        best = self.best if math.isfinite(self.best) else None
        level = self.level if math.isfinite(self.level) else None
        return {"best": best, "level": level, "since": self.since, "drops": self.drops, "seconds": self.seconds}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (missing keys: a fresh start)."""
        self.best = math.inf if d.get("best") is None else float(d["best"])
        self.level = math.nan if d.get("level") is None else float(d["level"])
        self.since, self.drops = int(d.get("since", 0)), int(d.get("drops", 0))
        self.seconds = float(d.get("seconds", 0.0))


@dataclasses.dataclass
class DivergenceGuard:
    """Takes back outer steps whose losses blow up (``train.divergence_guard``).

    One update can throw a model's rollouts far off (a learned field that grows fast, a fresh
    expert right after the routing's seeding); the next losses are then astronomical, their
    gradients fill the optimiser's moment estimates, and training never recovers. The guard
    compares each step's mean context and weight losses with the median of the last ``window``
    sound steps'; a non-finite loss, or one above ``factor`` times that median, marks the step
    as diverged. Two such steps in a row make the loop return to the state before the step
    that preceded them (:meth:`mixerdsr.training._loop._Loop.take_back`), and the learning rates
    of the contexts and the weights are halved (:attr:`scale`). They double back after every
    ``window`` sound steps in a row, up to their own; at ``max_level`` halvings in force
    training stops as ``"diverged"``.

    Args:
        factor: how many times the recent median a loss may reach (0 = no guard).
        window: sound steps the median runs over, and that restore one halving.
        max_level: halvings in force at which the guard gives up.
    """

    factor: float
    window: int = 20
    max_level: int = 10
    returns: int = 0  # steps taken back, all told
    level: int = 0  # halvings of the rate in force
    sound: int = 0  # sound steps since the last return or restored halving
    blown: bool = False  # whether the last step diverged
    recent: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    @property
    def scale(self) -> float:
        """The guard's factor on the learning rates (contexts and weights) now."""
        return 0.5**self.level

    def diverged(self, losses: dict[str, float]) -> bool:
        """Whether the step with these losses (by name) diverged; a sound step's losses join
        the window, and after ``window`` sound steps in a row one halving is lifted."""
        if self.factor <= 0:
            return False
        bad = any(
            not math.isfinite(v)
            or (len(self.recent.get(k, ())) >= 3 and v > self.factor * statistics.median(self.recent[k]))
            for k, v in losses.items()
        )
        if not bad:
            for k, v in losses.items():
                self.recent[k] = ([*self.recent.get(k, ()), v])[-self.window :]
            self.sound += 1
            if self.level and self.sound >= self.window:
                self.level, self.sound = self.level - 1, 0
        return bad

    def verdict(self, losses: dict[str, float]) -> str | None:
        """What to do after a step with these losses: None (sound), ``"watch"`` (the first
        diverged step in a row: most recover) or ``"back"`` (the second in a row: return)."""
        blown_before, self.blown = self.blown, self.diverged(losses)
        return None if not self.blown else "back" if blown_before else "watch"

    def took_back(self) -> str | None:
        """Count one return (the rates halved); ``"diverged"`` at ``max_level`` halvings."""
        self.returns += 1
        self.level += 1
        self.sound, self.blown = 0, False
        return "diverged" if self.level >= self.max_level else None

    def state_dict(self) -> dict[str, Any]:
        """What the checkpoint keeps (JSON-able)."""
        return {
            "returns": self.returns,
            "level": self.level,
            "sound": self.sound,
            "blown": self.blown,
            "recent": self.recent,
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (missing keys: a fresh start)."""
        self.returns, self.level, self.sound = int(d.get("returns", 0)), int(d.get("level", 0)), int(d.get("sound", 0))
        self.blown = bool(d.get("blown", False))
        self.recent = {k: [float(x) for x in v] for k, v in d.get("recent", {}).items()}
