"""CAVIA: the fixed-step integrator, the inner loop and the second-order outer gradient."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mixerdsr as mx
from mixerdsr.experts import CAVIA
from mixerdsr.experts._integrate import rk4_rollout, solve
from mixerdsr.mixer import make_mixer
from mixerdsr.rollout import SolverSettings, env_losses
from mixerdsr.training import inner_loop_contexts


def test_rk4_follows_a_known_linear_field():
    a = jnp.array([[0.0, 1.0], [-1.0, -0.1]])
    t = jnp.linspace(0.0, 5.0, 11)
    x0 = jnp.array([1.0, 0.0])
    ys, ok = rk4_rollout(lambda t_, x, args: a @ x, x0, t, 8)
    exact = jnp.stack([jax.scipy.linalg.expm(a * ti) @ x0 for ti in t])
    assert bool(ok)
    np.testing.assert_allclose(np.asarray(ys), np.asarray(exact), atol=1e-4)
    bad, ok = rk4_rollout(lambda t_, x, args: x**3 * 1e6, x0, t, 2)
    assert not bool(ok) and float(jnp.abs(bad).max()) == 0.0
    # every vector-field expert can use it: solver.method = "rk4" (substeps per interval)
    ys4, ok4 = solve(lambda t_, x, args: a @ x, x0, t, SolverSettings(method="rk4", substeps=8))
    assert bool(ok4)
    np.testing.assert_array_equal(np.asarray(ys4), np.asarray(ys))
    with pytest.raises(ValueError, match="solver.method"):
        SolverSettings(method="euler")


def _model_and_data(inner_lr=0.5):
    model = make_mixer(CAVIA, 2, 2, 1, key=jax.random.PRNGKey(0), width=8, depth=2, inner_lr=inner_lr)
    t = jnp.linspace(0.0, 2.0, 6)
    # two envs of a linear oscillator with different frequencies, three trajectories each
    x0 = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 2))
    xs = []
    for e, w in enumerate((1.0, 2.0)):
        a = jnp.array([[0.0, w], [-w, 0.0]])
        xs.append(jnp.stack([jnp.stack([jax.scipy.linalg.expm(a * ti) @ x for ti in t]) for x in x0[e]]))
    return model, jnp.stack(xs), jnp.stack([t, t])


@pytest.mark.slow  # compiles a second-order gradient: about 30 s (`python -m pytest -m slow`)
def test_inner_loop_lowers_the_loss_and_outer_gradient_is_second_order():
    model, x, t = _model_and_data()
    solver = SolverSettings()
    ctx, loss0 = eqx.filter_jit(inner_loop_contexts)(model, x, t, solver)
    after, ok = eqx.filter_jit(env_losses)(model, ctx, x, t, solver)
    assert bool(jnp.all(ok)) and ctx.shape == (2, 2)
    assert bool(jnp.all(after < loss0)), (after, loss0)

    def outer(m, second_order):
        cs, _ = inner_loop_contexts(m, x, t, solver)
        cs = cs if second_order else jax.lax.stop_gradient(cs)
        return env_losses(m, cs, x, t, solver)[0].mean()

    def grads(second_order):
        f = lambda experts: outer(eqx.tree_at(lambda m: m.experts, model, experts), second_order)  # noqa: E731
        return jax.tree.leaves(eqx.filter_jit(eqx.filter_grad(f))(model.experts))

    full, first = grads(True), grads(False)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in full)
    diff = sum(float(jnp.abs(a - b).sum()) for a, b in zip(full, first))
    assert diff > 1e-6 * sum(float(jnp.abs(a).sum()) for a in full)  # the path through the inner loop counts


def test_cavia_is_a_single_meta_learner():
    with pytest.raises(ValueError, match="model.num_experts = 1"):
        mx.Config().override({"model.backbone": "cavia", "model.num_experts": 2})
    cfg = mx.Config().override({"model.backbone": "cavia", "model.num_experts": 1, "model.cavia.inner_steps": 3})
    assert cfg.model.expert.inner_steps == 3
