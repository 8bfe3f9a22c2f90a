"""The training-length policy: plateaus, learning-rate drops, convergence and the time budget."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from mixerdsr._config import Config
from mixerdsr._stopping import DivergenceGuard, Stopping
from mixerdsr.experts._integrate import SolverSettings, forced_solve, solve
from mixerdsr.training import forcing_at


def _rule(plateau=True, patience=2, drops=1, budget=0.0):
    return Stopping(plateau, patience, min_improvement=0.1, lr_drops=drops, lr_decay=0.5, time_budget=budget)


def test_plateau_drops_the_rate_then_stops():
    s = _rule()
    assert s.validated(1.0) is None and s.lr_scale == 1.0
    # 0.95 is not 10 % better than 1.0: two such checks are a plateau -> one drop
    assert s.validated(0.95) is None and s.validated(0.97) is None
    assert s.lr_scale == 0.5 and s.drops == 1 and s.since == 0
    assert s.validated(0.5) is None and s.best == 0.5  # a real improvement resets the count
    assert s.validated(0.49) is None
    assert s.validated(float("nan")) == "converged"  # the plateau after the last drop ends training
    assert s.converged


def test_steps_schedule_never_stops_but_reports_convergence():
    s = _rule(plateau=False)
    for v in (1.0, 0.99, 0.98, 0.97):
        assert s.validated(v) is None
    assert s.lr_scale == 1.0 and s.converged
    assert s.validated(0.1) is None and not s.converged


def test_time_budget_and_state_roundtrip():
    s = _rule(budget=10.0)
    assert s.spent(6.0) is None and s.spent(5.0) == "time_budget"
    s.validated(2.0)
    t = _rule(budget=10.0)
    t.load_state_dict(s.state_dict())
    assert (t.best, t.since, t.drops, t.seconds) == (s.best, s.since, s.drops, s.seconds)
    fresh = _rule()
    fresh.load_state_dict({})  # a checkpoint written before the rule existed
    assert fresh.best == math.inf and fresh.seconds == 0.0


def test_divergence_guard_judges_each_loss_against_its_recent_median():
    g = DivergenceGuard(factor=100.0, window=3, max_level=2)
    assert g.diverged({"w": float("inf")})  # non-finite: diverged, even with no history
    for v in (1.0, 4.0, 2.0, 3.0):  # sound steps fill the window (the last 3: median 3)
        assert not g.diverged({"w": v, "c": 1.0})
    assert g.recent["w"] == [4.0, 2.0, 3.0]
    assert not g.diverged({"w": 290.0, "c": 1.0})  # below 100 x 3
    assert g.diverged({"w": 1.0, "c": 101.0})  # either loss counts
    assert g.recent["c"] == [1.0, 1.0, 1.0]  # a diverged step's losses stay out of the window
    assert g.scale == 1.0 and g.took_back() is None and g.scale == 0.5
    for _ in range(2):  # two sound steps: the halving stays
        assert not g.diverged({"w": 1.0, "c": 1.0})
    assert g.scale == 0.5 and g.took_back() == "diverged" and g.scale == 0.25  # two in force: give up
    again = DivergenceGuard(factor=100.0, window=3)
    again.load_state_dict(g.state_dict())
    assert (again.returns, again.level, again.sound, again.recent) == (2, 2, 0, g.recent)
    for _ in range(3):  # each `window` sound steps in a row lift one halving
        assert not again.diverged({"w": 1.0, "c": 1.0})
    assert again.scale == 0.5 and again.returns == 2
    off = DivergenceGuard(factor=0.0)
    assert not off.diverged({"w": float("nan")})
    v = DivergenceGuard(factor=100.0)  # one diverged step is watched, the second in a row returns
    assert [v.verdict({"w": x}) for x in (1.0, float("nan"), 1.0, float("nan"), float("inf"))] == [
        None, "watch", None, "watch", "back"]
    assert v.took_back() is None and not v.blown and v.verdict({"w": float("nan")}) == "watch"


def test_forcing_schedule_rises_linearly_to_free_running():
    tr = Config().override({"train.forcing": 0.2, "train.forcing_steps": 0.5, "train.outer_steps": 100}).train
    assert [float(forcing_at(tr, s)) for s in (0, 25, 50, 90)] == pytest.approx([0.2, 0.6, 1.0, 1.0])


@pytest.mark.parametrize("method", ["rk4", "tsit5"])
def test_forced_solve_interpolates_between_free_and_one_step_predictions(method):
    a, b = 0.7, 0.3

    def field(t, x, args):  # linear decay: the exact flow over dt is exp(-A dt)
        return jnp.stack([-a * x[0], -b * x[1]])

    cfg = SolverSettings(method=method, rtol=1e-6, atol=1e-9, substeps=8)
    t = jnp.linspace(0.0, 2.0, 6)
    free, _ = solve(field, jnp.array([1.0, 2.0]), t, cfg)
    obs = free + 0.3  # observations off the model's path
    one_step = np.asarray(obs[:-1]) * np.exp(-np.array([a, b]) * 0.4)
    ys, ok = forced_solve(field, obs, t, cfg, 0.0)  # each state from the observed one before it
    assert bool(ok) and np.allclose(ys[1:], one_step, rtol=1e-4)
    ys, ok = forced_solve(field, obs, t, cfg, 1.0)  # free running from the first observation
    want, _ = solve(field, obs[0], t, cfg)
    assert bool(ok) and np.allclose(ys, want, rtol=1e-4)


def test_the_rule_judges_a_smoothed_validation_score():
    s = Stopping(True, 2, min_improvement=0.1, lr_drops=1, lr_decay=0.5, smoothing=0.5)
    s.validated(1.0)
    s.validated(0.0)  # a lucky check moves the judged score halfway only
    assert s.level == 0.5 and s.best == 0.5
    s.validated(1.0)  # 0.75: no gain
    assert s.since == 1
    t = Stopping(True, 2, min_improvement=0.1, lr_drops=1, lr_decay=0.5, smoothing=0.5)
    t.load_state_dict(s.state_dict())
    assert (t.level, t.best, t.since) == (s.level, s.best, s.since)
    assert Config().train.val_smoothing == 1.0  # smoothing did not help on LV MixER-3 (docs/results.md)
