"""The MixER layer and experts: routing, gathering, equivalences, gradients."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixerdsr._rand import normal
from mixerdsr.experts import GEPS, NCF, SHPLRNN, CoDA
from mixerdsr.experts._base import uniform_arrays
from mixerdsr.mixer import make_mixer
from mixerdsr.rollout import SolverSettings, env_loss, env_rollout

KEY = jax.random.PRNGKey(0)
SMALL = dict(width=8, depth=2)


@pytest.mark.parametrize("cls", [GEPS, CoDA, NCF])
def test_mixer_with_one_expert_is_the_bare_backbone(cls):
    layer = make_mixer(cls, 2, 4, 1, key=KEY, **SMALL)
    kexp, _ = jax.random.split(KEY)
    bare = cls(2, 4, key=kexp, **SMALL)
    x, c = jnp.array([0.3, -0.2]), jnp.array([0.1, 0.2, -0.3, 0.4])
    np.testing.assert_allclose(layer(0.0, x, c), bare(0.0, x, c), rtol=1e-6)
    # parameters are the same arrays (with a leading expert axis of 1)
    for a, b in zip(
        jax.tree.leaves(eqx.filter(layer.experts, eqx.is_array)), jax.tree.leaves(eqx.filter(bare, eqx.is_array))
    ):
        np.testing.assert_array_equal(a[0], b)


def test_geps_is_root_mlp_at_zero_context_and_low_rank_otherwise():
    e = GEPS(2, 3, key=KEY, **SMALL)
    x = jnp.array([0.5, -1.0])
    h = jax.nn.swish(e.weights[0] @ x + e.biases[0])
    np.testing.assert_allclose(e(0.0, x, jnp.zeros(3)), e.weights[1] @ h + e.biases[1], rtol=1e-5)
    c = jnp.array([1.0, -2.0, 0.5])
    net = e.specialise(c)
    delta = net.weights[0] - e.weights[0]
    np.testing.assert_allclose(delta, e.a[0] @ jnp.diag(c) @ e.b[0], rtol=1e-5, atol=1e-6)
    assert np.linalg.matrix_rank(np.asarray(delta)) <= 3
    np.testing.assert_allclose(net.biases[0], e.biases[0] + e.a_bias[0] @ c, rtol=1e-5, atol=1e-6)
    # the paper's matrices are views of the three stored arrays per layer
    n_in = e.weights[0].shape[1]
    np.testing.assert_array_equal(e.wb[0], jnp.concatenate([e.weights[0].T, e.b[0].T], axis=1))
    np.testing.assert_array_equal(e.at[0], e.a[0].T)
    np.testing.assert_array_equal(e.bias[0], jnp.concatenate([e.biases[0][None], e.a_bias[0].T]))
    assert e.wb[0].shape == (n_in, e.weights[0].shape[0] + 3) and e.at[0].shape == (3, e.weights[0].shape[0])


def test_geps_factored_form_equals_merged_form():
    merged = GEPS(2, 3, key=KEY, factored=False, **SMALL)
    factored = GEPS(2, 3, key=KEY, factored=True, **SMALL)
    assert not GEPS(2, 20, key=KEY).factored and GEPS(2, 4, key=KEY).factored  # auto: rank <= width / 4
    x, c = jnp.array([0.5, -1.0]), jnp.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(factored(0.0, x, c), merged(0.0, x, c), rtol=1e-5, atol=1e-6)
    g1 = jax.grad(lambda cc: jnp.sum(factored(0.0, x, cc) ** 2))(c)
    g2 = jax.grad(lambda cc: jnp.sum(merged(0.0, x, cc) ** 2))(c)
    np.testing.assert_allclose(g1, g2, rtol=1e-4, atol=1e-6)


def test_coda_is_affine_in_the_context():
    e = CoDA(2, 3, key=KEY, **SMALL)
    c1, c2 = jnp.array([1.0, 0.0, 2.0]), jnp.array([-1.0, 3.0, 0.5])
    p = lambda c: jnp.concatenate([w.ravel() for w in e.specialise(c).weights + e.specialise(c).biases])  # noqa: E731
    np.testing.assert_allclose(p(c1 + c2) - p(c2), p(c1) - p(jnp.zeros(3)), atol=1e-5)


def test_ncf_taylor_expansion():
    e = NCF(2, 3, key=KEY, **SMALL, taylor_order=2)
    x, c = jnp.array([0.2, 0.1]), jnp.array([0.3, -0.1, 0.2])
    # around its own context every order is the plain field
    np.testing.assert_allclose(e.specialise(c, c)(0, x), e.field(x, c), rtol=1e-6)
    # order 2 around a nearby context approximates the field far better than order 0
    cj = c + 0.05
    exact = e.field(x, c)
    err0 = jnp.abs(e.field(x, cj) - exact).max()
    err2 = jnp.abs(e.specialise(c, cj)(0, x) - exact).max()
    assert float(err2) < 0.05 * float(err0)


@pytest.mark.parametrize("order", [0, 1, 2])
def test_ncf_expansion_equals_the_full_fields_taylor_polynomial(order):
    # the context network's jet is taken once per field; the result must be the Taylor
    # polynomial of the whole field f(x, c_j + s (c - c_j)) in s, with deep branches too
    e = NCF(2, 8, width=8, depth=3, embed=6, branch_depth=3, context_hidden=4, taylor_order=order, key=KEY)
    assert [w.shape for w in e.context_net[::2]] == [(4, 8), (6, 4), (6, 6)]
    x = jnp.array([0.2, -0.4])
    c, cj = normal(jax.random.PRNGKey(1), (8,)), normal(jax.random.PRNGKey(2), (8,))
    g = lambda s: e.field(x, cj + s * (c - cj))  # noqa: E731
    f0, d1 = jax.jvp(g, (0.0,), (1.0,))
    d2 = jax.jvp(lambda s: jax.jvp(g, (s,), (1.0,))[1], (0.0,), (1.0,))[1]
    expected = [f0, f0 + d1, f0 + d1 + 0.5 * d2][order]
    np.testing.assert_allclose(e.specialise(c, cj)(0, x), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(e.specialise(c)(0, x), e.field(x, c), rtol=1e-6)


def test_routed_env_output_equals_its_expert_output():
    layer = make_mixer("geps", 2, 6, 3, same_init=False, key=KEY, **SMALL)
    x = jnp.array([0.4, -0.3])
    for s in range(5):
        c = jax.random.normal(jax.random.PRNGKey(s), (6,))
        m = int(layer.route(c))
        assert m == int(jnp.argmax(jnp.r_[c, 1.0] @ layer.gate))
        expert = jax.tree.map(lambda p: p[m] if eqx.is_array(p) else p, layer.experts)
        np.testing.assert_allclose(layer(0.0, x, c), expert(0.0, x, c.reshape(3, 2)[m] + layer.shifts[m]), rtol=1e-6)
        # every other expert gives something else (experts initialised independently)
        others = [layer.specialise(c, k)(0.0, x) for k in range(3) if k != m]
        assert all(float(jnp.abs(o - layer(0.0, x, c)).max()) > 1e-6 for o in others)


def test_permuting_environments_permutes_routes():
    layer = make_mixer("geps", 2, 6, 3, key=KEY, **SMALL)
    ctx = jax.random.normal(KEY, (9, 6))
    perm = jax.random.permutation(jax.random.PRNGKey(3), 9)
    r = jax.vmap(layer.route)(ctx)
    np.testing.assert_array_equal(jax.vmap(layer.route)(ctx[perm]), r[perm])


def test_gradient_gate_scales_output_and_gets_gradient_frozen_does_not():
    c = jnp.array([0.3, -0.2, 0.1, 0.5])
    x = jnp.array([0.4, -0.3])
    grad_layer = make_mixer("geps", 2, 4, 2, gate_mode="gradient", key=KEY, **SMALL)
    frozen = make_mixer("geps", 2, 4, 2, gate_mode="frozen", key=KEY, **SMALL)
    m = int(frozen.route(c))
    np.testing.assert_allclose(
        grad_layer(0.0, x, c), jax.nn.softmax(jnp.r_[c, 1.0] @ frozen.gate)[m] * frozen(0.0, x, c), rtol=1e-5
    )
    g_grad = jax.grad(lambda L: jnp.sum(L(0.0, x, c) ** 2))(grad_layer).gate
    g_frozen = jax.grad(lambda L: jnp.sum(L(0.0, x, c) ** 2))(frozen).gate
    assert float(jnp.abs(g_grad).max()) > 0
    assert float(jnp.abs(g_frozen).max()) == 0.0


def test_context_gradient_matches_finite_differences(tiny_splits):
    tr = tiny_splits["train"]
    with jax.enable_x64(True):
        layer = make_mixer("geps", 2, 4, 2, key=KEY, **SMALL)
        layer = jax.tree.map(lambda p: p.astype(jnp.float64) if eqx.is_inexact_array(p) else p, layer)
        x, t = jnp.asarray(tr.x[0], jnp.float64), jnp.asarray(tr.t[0], jnp.float64)
        solver = SolverSettings(rtol=1e-10, atol=1e-12)
        c = jnp.array([0.2, -0.1, 0.3, 0.05], jnp.float64)
        f = jax.jit(lambda c: env_loss(layer, c, x, t, solver)[0])  # one compile for the 8 evaluations
        g = jax.grad(f)(c)
        eps = 1e-6
        fd = jnp.array([(f(c + eps * e) - f(c - eps * e)) / (2 * eps) for e in jnp.eye(4)])
        np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-8)
        # only the routed expert's slice of a split context receives a gradient
        m = int(layer.route(c))
        assert float(jnp.abs(g.reshape(2, 2)[1 - m]).max()) == 0.0


def test_rollout_follows_a_known_field_and_reports_failures():
    class Linear(eqx.Module):
        def __call__(self, t, x, args=None):
            return -x

    ts = jnp.linspace(0, 2, 9)
    from mixerdsr.rollout import solve

    ys, ok = solve(Linear(), jnp.array([1.0, 2.0]), ts, SolverSettings(rtol=1e-6, atol=1e-9))
    assert bool(ok)
    np.testing.assert_allclose(ys, np.exp(-np.asarray(ts))[:, None] * np.array([1.0, 2.0]), rtol=1e-4)

    class Blowup(eqx.Module):
        def __call__(self, t, x, args=None):
            return x**2

    ys, ok = solve(Blowup(), jnp.array([1.0, 1.0]), ts, SolverSettings(max_steps=64))
    assert not bool(ok)
    assert bool(jnp.all(ys == 0))


def test_env_rollout_uses_each_trajectory_initial_state(tiny_splits):
    tr = tiny_splits["train"]
    layer = make_mixer("geps", 2, 4, 2, key=KEY, **SMALL)
    pred, ok = env_rollout(layer, jnp.zeros(4), jnp.asarray(tr.x[0]), jnp.asarray(tr.t[0]))
    assert pred.shape == tr.x[0].shape and bool(ok.all())
    np.testing.assert_allclose(pred[:, 0], tr.x[0][:, 0], rtol=1e-6)


def test_make_mixer_rejects_bad_settings():
    with pytest.raises(ValueError, match="not divisible"):
        make_mixer("geps", 2, 5, 2, key=KEY)
    with pytest.raises(ValueError, match="unknown backbone"):
        make_mixer("lstm", 2, 4, 2, key=KEY)
    with pytest.raises(ValueError, match="gate_mode"):
        make_mixer("geps", 2, 4, 2, gate_mode="softmax", key=KEY)


def test_initial_arrays_come_from_one_draw_within_their_ranges():
    specs = [((3, 4), -0.5, 0.5), ((7,), 2.0, 3.0), ((2, 2, 2), -1e-3, 1e-3)]
    a, b, c = uniform_arrays(KEY, specs)
    assert (a.shape, b.shape, c.shape) == ((3, 4), (7,), (2, 2, 2))
    assert float(a.min()) >= -0.5 and float(a.max()) < 0.5 and float(b.min()) >= 2.0 and float(b.max()) < 3.0
    assert float(jnp.abs(c).max()) <= 1e-3
    # the arrays are consecutive pieces of one uniform draw
    u = jax.random.uniform(KEY, (12 + 7 + 8,))
    np.testing.assert_allclose(b, 2.0 + u[12:19], rtol=1e-6)
    again = uniform_arrays(KEY, specs)
    np.testing.assert_array_equal(a, again[0])
    assert not np.allclose(a, uniform_arrays(jax.random.PRNGKey(1), specs)[0])


@pytest.mark.parametrize("cls", [GEPS, CoDA, NCF, SHPLRNN])
def test_expert_initialisation_ranges(cls):
    e = cls(2, 4, key=KEY)
    leaves = jax.tree.leaves(eqx.filter(e, eqx.is_array))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)
    assert all(float(jnp.abs(x).max()) <= 1.0 for x in leaves)  # every range here is within +-1
    # distinct arrays get distinct values (no piece of the draw is reused)
    firsts = [float(x.ravel()[0]) for x in leaves if x.size and float(jnp.abs(x).max()) > 0]
    assert len(set(firsts)) == len(firsts)


def test_same_init_repeats_one_expert_independent_init_does_not():
    same = make_mixer("geps", 2, 6, 3, key=KEY, **SMALL)
    indep = make_mixer("geps", 2, 6, 3, same_init=False, key=KEY, **SMALL)
    for leaf in jax.tree.leaves(eqx.filter(same.experts, eqx.is_array)):
        np.testing.assert_array_equal(leaf[0], leaf[2])
    w = indep.experts.weights[0]
    assert w.shape == (3, SMALL["width"], 2) and indep.experts.a_bias[-1].shape == (3, 2, 2)  # expert axis first
    assert not np.allclose(w[0], w[1]) and not np.allclose(w[1], w[2])
    assert same.gate.shape == (7, 3) and 0.02 < float(jnp.std(same.gate)) < 0.3  # gate_scale 0.1


def test_box_muller_normal_moments():
    z = normal(KEY, (100_001,))
    assert z.shape == (100_001,) and bool(jnp.all(jnp.isfinite(z)))
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1.0) < 0.01
    assert abs(float(jnp.mean(z**4)) - 3.0) < 0.1  # Gaussian kurtosis
    assert abs(float(jnp.mean(jnp.abs(z) < 1.0)) - 0.6827) < 0.01
    assert normal(KEY, (3, 5)).shape == (3, 5)
