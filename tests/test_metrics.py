"""Metrics on hand-computed cases: MSE, relative MSE (Eq. 9, masked and clamped), TPRMSE (Eq. 10),
purity, adjusted Rand index (against scikit-learn) and Hungarian-matched accuracy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixerdsr.metrics import (
    adjusted_rand_index,
    matched_accuracy,
    mse,
    per_env_mse,
    per_env_rel_mse,
    purity,
    rel_mse,
    tprmse,
    tprmse_from_values,
)


def test_mse_hand():
    true = np.array([[1.0, 2.0], [3.0, 4.0]])
    pred = np.array([[1.0, 0.0], [3.0, 5.0]])
    assert float(mse(pred, true)) == pytest.approx((0 + 4 + 0 + 1) / 4)
    # refused by its own check, or first by the runtime type check of the shared shape
    with pytest.raises((ValueError, TypeError), match="same shape|T D"):
        mse(pred, true[:1])


def test_rel_mse_hand_and_zero_state_masked():
    # three states of D = 2; the middle one is zero and must be excluded
    true = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    pred = np.array([[3.0, 5.0], [7.0, 7.0], [0.0, 0.0]])
    # ratios: 1/25 ; excluded ; 1/1  -> mean over the two valid states
    assert float(rel_mse(pred, true)) == pytest.approx((1 / 25 + 1.0) / 2, rel=1e-6)
    # a state with norm below eps is excluded too, one just above is not
    tiny = np.array([[1e-7, 0.0], [2e-6, 0.0]])
    assert float(rel_mse(tiny * 2, tiny)) == pytest.approx(1.0, rel=1e-5)
    # all states excluded -> NaN
    assert np.isnan(float(rel_mse(np.ones((2, 2)), np.zeros((2, 2)))))


def test_rel_mse_clamp_variant():
    true = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    pred = np.array([[3.0, 5.0], [7.0, 7.0], [0.0, 0.0]])
    eps = 1e-2  # large enough to see the clamp in float32
    # per component max(|x|, eps): [3,4] -> 25 ; [eps,eps] -> 2 eps^2 ; [1,eps] -> 1 + eps^2
    want = (1 / 25 + 98 / (2 * eps**2) + 1 / (1 + eps**2)) / 3
    assert float(rel_mse(pred, true, clamp=True, eps=eps)) == pytest.approx(want, rel=1e-5)
    # the two variants agree when no component is near zero
    rng = np.random.default_rng(0)
    t = rng.uniform(1, 2, (4, 5, 3)) * rng.choice([-1, 1], (4, 5, 3))
    p = t + rng.normal(size=t.shape)
    assert float(rel_mse(p, t, clamp=True)) == pytest.approx(float(rel_mse(p, t)), rel=1e-6)


def test_rel_mse_is_norm_ratio_not_componentwise():
    true = np.array([[1.0, 10.0]])
    pred = np.array([[2.0, 10.0]])
    assert float(rel_mse(pred, true)) == pytest.approx(1 / 101, rel=1e-6)


def test_per_env_shapes_and_values():
    E, N, T, D = 3, 2, 4, 2
    true = np.ones((E, N, T, D))
    pred = true.copy()
    pred[1] += 1.0  # env 1: every state ratio = 2 / 2 = 1
    pred[2, 0, 0] += np.array([2.0, 0.0])  # env 2: one state ratio 4/2 out of N*T = 8
    true[2, 1, 3] = 0.0  # ... and one excluded state -> 7 valid
    r = per_env_rel_mse(pred, true)
    assert r.shape == (E,)
    np.testing.assert_allclose(np.asarray(r), [0.0, 1.0, 2.0 / 7], rtol=1e-6)
    m = per_env_mse(pred, true)
    assert m.shape == (E,)
    np.testing.assert_allclose(np.asarray(m), [0.0, 1.0, 4.0 / 16 + 2.0 / 16], rtol=1e-6)
    # the global value is the mean over all valid states, not the mean of env means
    assert float(rel_mse(pred, true)) == pytest.approx((0 + 8 + 2) / (8 + 8 + 7), rel=1e-6)
    # refused by its own check, or first by the runtime type check of its annotation
    with pytest.raises((ValueError, TypeError), match=r"rank >= 3|E \*rest T D"):
        per_env_rel_mse(pred[0, 0], true[0, 0])


def test_tprmse_threshold():
    E, T = 5, 10
    true = np.ones((E, 1, T, 1))
    # env e has relative error exactly 0.05 * e: 0, 0.05, 0.10, 0.15, 0.20
    pred = true + np.sqrt(0.05 * np.arange(E))[:, None, None, None]
    per = np.asarray(per_env_rel_mse(pred, true))
    np.testing.assert_allclose(per, 0.05 * np.arange(E), atol=1e-6)
    # below 0.12: envs 0, 1, 2 -> 60 %; strict inequality at the threshold value itself
    assert float(tprmse(pred, true, 0.12)) == pytest.approx(60.0)
    assert float(tprmse_from_values(jnp.array([0.0, 0.1, 0.2]), 0.1)) == pytest.approx(100 / 3)
    assert float(tprmse_from_values(jnp.array([0.0, jnp.nan]), 0.1)) == pytest.approx(50.0)
    assert float(tprmse(pred, true, 0.07)) == pytest.approx(40.0)  # envs 0, 1


def test_metrics_are_jittable_and_vmappable():
    rng = np.random.default_rng(1)
    true = jnp.asarray(rng.normal(size=(3, 2, 5, 2)))
    pred = true + 0.1
    f = jax.jit(lambda p, t: (rel_mse(p, t), rel_mse(p, t, clamp=True), tprmse(p, t), per_env_rel_mse(p, t)))
    out = f(pred, true)
    assert out[3].shape == (3,)
    v = jax.vmap(rel_mse)(pred, true)  # one value per env, as per_env_rel_mse
    np.testing.assert_allclose(np.asarray(v), np.asarray(out[3]), rtol=1e-6)
    g = jax.grad(lambda p: rel_mse(p, true))(pred)
    assert np.all(np.isfinite(np.asarray(g)))
    true0 = true.at[0, 0, 0].set(0.0)
    g0 = jax.grad(lambda p: rel_mse(p, true0))(pred)
    assert np.all(np.isfinite(np.asarray(g0))) and float(jnp.abs(g0[0, 0, 0]).sum()) == 0.0


# ------------------------------------------------------------------ clustering
def test_purity_hand():
    assign = [0, 0, 0, 1, 1, 2]
    labels = [0, 0, 1, 1, 1, 2]
    assert purity(assign, labels) == pytest.approx(5 / 6)
    # unknown labels are ignored
    assert purity(assign + [1], labels + [-1]) == pytest.approx(5 / 6)
    assert purity([0, 0, 0, 0], [0, 1, 2, 3]) == pytest.approx(1 / 4)
    assert np.isnan(purity([0, 1], [-1, -1]))


def test_ari_hand_cases():
    assert adjusted_rand_index([0, 0, 1, 1], [5, 5, 7, 7]) == pytest.approx(1.0)
    # n=4; table [[2,0],[1,1]]: index 1, A 2, B 3+0=3, C(4,2)=6 -> E = 1, max = 2.5 -> 0
    assert adjusted_rand_index([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(0.0)
    # [0,0,0,1,1,1] vs [0,0,1,1,2,2]: index 2, A 6, B 3, C 15 -> (2 - 1.2) / (4.5 - 1.2)
    assert adjusted_rand_index([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]) == pytest.approx(0.8 / 3.3)
    assert adjusted_rand_index([0, 0, 0], [1, 1, 1]) == 1.0
    assert adjusted_rand_index([0, 1, 2], [0, 1, 2]) == 1.0
    # -1 ignored
    assert adjusted_rand_index([0, 0, 1, 1, 0], [5, 5, 7, 7, -1]) == pytest.approx(1.0)


def test_ari_equals_sklearn():
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(0)
    for n, ka, kb in [(2, 2, 2), (10, 3, 2), (50, 6, 3), (600, 6, 6), (100, 1, 4), (30, 30, 3)]:
        for _ in range(5):
            a = rng.integers(0, ka, n)
            b = rng.integers(0, kb, n)
            assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(b, a), abs=1e-12)
    b = np.repeat(np.arange(6), 20)
    a = np.where(rng.random(120) < 0.8, b // 2, rng.integers(0, 3, 120))
    assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(b, a), abs=1e-12)


def test_matched_accuracy_hungarian():
    labels = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    pred = [2, 2, 2, 0, 0, 1, 1, 1, 1]  # renamed clusters, one error
    assert matched_accuracy(pred, labels) == pytest.approx(8 / 9)
    # greedy majority would send both clusters 0 and 1 to class 0; matching forbids it
    assert matched_accuracy([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(3 / 4)
    assert matched_accuracy([0, 0, 0, 0], [0, 0, 1, 1]) == pytest.approx(1 / 2)  # fewer clusters
    assert matched_accuracy([0, 1, 2, 3], [0, 0, 1, 1]) == pytest.approx(1 / 2)  # more clusters
    assert matched_accuracy([0, 1, 1], [0, 1, -1]) == pytest.approx(1.0)


def test_traj_rel_l2_by_hand():
    from mixerdsr.metrics import traj_rel_l2

    true = np.zeros((2, 3, 2), np.float32)
    true[0, :, 0] = [3.0, 0.0, 4.0]          # ||true|| = 5
    true[1, 0] = [0.001, 0.0]                # ||true|| = 1e-3
    pred = true.copy()
    pred[0, 1, 1] = 1.0                      # error norm 1 -> 0.2
    pred[1, 0, 0] = 0.0                      # error norm 1e-3 -> 1.0
    np.testing.assert_allclose(float(traj_rel_l2(pred, true)), 0.6, rtol=1e-5)
    zero = np.zeros((1, 3, 2), np.float32)   # a zero trajectory is left out
    np.testing.assert_allclose(float(traj_rel_l2(np.concatenate([pred, zero + 1]), np.concatenate([true, zero]))), 0.6,
                               rtol=1e-5)


def test_geometric_mean_is_the_typical_env_and_a_failed_one_loses():
    from mixerdsr.metrics import geometric_mean

    assert abs(geometric_mean([0.1, 10.0]) - 1.0) < 1e-12
    assert abs(geometric_mean([0.0, 1.0]) - 1e-6) < 1e-15  # floored at 1e-12
    assert geometric_mean([0.1, float("nan")]) == float("inf") == geometric_mean([1.0, float("inf")])


# ------------------------------------------------------------------ long-term statistics
def test_state_space_divergence_known_answers():
    from mixerdsr.metrics import state_space_divergence as dstsp

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 500, 2))
    assert dstsp(x, x) == pytest.approx(0.0, abs=1e-12)  # identical states
    assert dstsp(x, x[:, ::-1]) == pytest.approx(0.0, abs=1e-12)  # the same states in another order
    # two cells on a 2-cell grid: the data half in each, the forecast all in the first
    true = np.array([[0.0], [0.0], [1.0], [1.0]])[None]
    pred = np.zeros_like(true)
    a = 1e-6
    p, q = np.array([2 + a, 2 + a]) / (4 + 2 * a), np.array([4 + a, a]) / (4 + 2 * a)
    assert dstsp(true, pred, bins=2, alpha=a) == pytest.approx(float(np.sum(p * np.log(p / q))), rel=1e-9)
    # mixture estimate (above max_binned_dims): one state against one shifted by mu gives
    # the Gaussians' KL, |mu|^2 / (2 sigma^2) in standardised units
    x4 = np.zeros((1, 1, 4))
    mu = np.array([0.5, -0.25, 0.0, 1.0])
    assert dstsp(x4, x4 + mu, max_binned_dims=3, sigma=0.5) == pytest.approx(np.sum(mu**2) / (2 * 0.25), rel=1e-9)
    assert dstsp(x, np.full_like(x, np.nan)) == float("inf")


def test_power_spectrum_distance_known_answers():
    from mixerdsr.metrics import power_spectrum_distance as dh

    t = np.arange(256)
    sine = lambda f: np.stack([np.sin(2 * np.pi * f * t / 256)] * 2, -1)[None]  # noqa: E731
    assert dh(sine(8), sine(8)) == pytest.approx(0.0, abs=1e-6)  # sqrt(1 - BC) of rounding
    assert dh(sine(8), 3.0 * sine(8) + 5.0) == pytest.approx(0.0, abs=1e-6)  # scale and offset do not count
    assert dh(sine(8), sine(40), smoothing=0) == pytest.approx(1.0, abs=1e-6)  # no common frequency
    assert dh(sine(8), np.ones_like(sine(8))) == 1.0  # a constant forecast: the maximum
    assert 0.0 < dh(sine(8), sine(9)) < dh(sine(8), sine(20)) <= 1.0  # nearby frequencies are closer


def test_valid_prediction_time_and_smape_known_answers():
    from mixerdsr.metrics import smape, valid_prediction_time as vpt

    t = np.linspace(0.0, 9.9, 100)
    x = np.stack([np.sin(t), np.cos(t)], -1)[None]
    assert vpt(x, x, t) == pytest.approx(t[-1])  # never off: the whole horizon
    off = x.copy()
    off[0, 37:] += 10.0  # the forecast jumps away at t[37]
    assert vpt(x, off, t) == pytest.approx(t[37])
    assert smape(x, x) == 0.0
    assert smape(x + 2.0, np.zeros_like(x)) == pytest.approx(200.0)  # a zero forecast: the maximum
    assert smape(np.ones((1, 2, 1)), 3 * np.ones((1, 2, 1))) == pytest.approx(100.0)  # 2*2/(1+3)


def test_long_series_get_the_long_term_statistics_in_their_metrics(monkeypatch):
    import mixerdsr.evaluation as ev
    from mixerdsr import Config, EnvData

    t = np.linspace(0, 20, 80)
    x = np.stack([np.sin(t), np.cos(t)], -1)[None, None].repeat(2, 0).astype(np.float32)  # [2, 1, 80, 2]
    model = type("Model", (), {"expert_type": type("E", (), {"scored_from": 0, "teacher_forced": False})})()
    split = EnvData(x, np.tile(t, (2, 1)).astype(np.float32), np.zeros(2, int))
    monkeypatch.setattr(ev, "predict", lambda *a, **k: (x.copy(), np.ones((2, 1), bool)))
    m, _ = ev.evaluate_split(model, None, split, Config())
    assert m["d_stsp"] == pytest.approx(0.0, abs=1e-9) and m["d_h"] == pytest.approx(0.0, abs=1e-6)
    assert m["vpt"] == pytest.approx(20.0) and m["smape"] == 0.0
    monkeypatch.setattr(ev, "predict", lambda *a, **k: (np.zeros_like(x), np.ones((2, 1), bool)))
    m, _ = ev.evaluate_split(model, None, split, Config())
    assert m["d_h"] == 1.0 and m["smape"] > 198 and m["vpt"] == 0.0 and m["d_stsp"] > 1.0  # sin(0) = 0 counts 0
    short = EnvData(x[:, :, :20], split.t[:, :20], np.zeros(2, int))
    monkeypatch.setattr(ev, "predict", lambda *a, **k: (x[:, :, :20].copy(), np.ones((2, 1), bool)))
    assert "d_stsp" not in ev.evaluate_split(model, None, short, Config())[0]  # too short to judge
