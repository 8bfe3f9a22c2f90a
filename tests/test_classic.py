"""LV / GO / SM: parameter lists, seed rules, time grids, family labels, and the ODEs themselves."""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from mixerdsr.data import DataError, generate_go, generate_lv, generate_sm
from mixerdsr.data._classic import classic_env_params, classic_initial_conditions

MAX = 2**31 - 1
FEW = {"train": 2, "test": 2, "adapt_train": 1, "adapt_test": 2}


@pytest.fixture(scope="module")
def lv():
    return generate_lv(trajectories=FEW)


@pytest.fixture(scope="module")
def go():
    return generate_go(trajectories=FEW)


@pytest.fixture(scope="module")
def sm():
    return generate_sm()


# independent statements of the equations, written from the benchmark definitions
def lv_f(t, s, b, d):
    x, y = s
    return [0.5 * x - b * x * y, d * x * y - 0.5 * y]


def sm_f(t, s, b):
    x, y = s
    return [-x + 0.1 * y + x**2 * y, b - 0.1 * y - x**2 * y]


def go_f(t, s, k1, K1):
    J0, k2, k3, k4, k5, k6, q, N, A, kappa, psi, k = 2.5, 6, 16, 100, 1.28, 12, 4, 1, 4, 13, 0.1, 1.8
    S1, S2, S3, S4, S5, S6, S7 = s
    v = k1 * S1 * S6 / (1 + (S6 / K1) ** q)
    return [J0 - v,
            2 * v - k2 * S2 * (N - S5) - k6 * S2 * S5,
            k2 * S2 * (N - S5) - k3 * S3 * (A - S6),
            k3 * S3 * (A - S6) - k4 * S4 * S5 - kappa * (S4 - S7),
            k2 * S2 * (N - S5) - k4 * S4 * S5 - k6 * S2 * S5,
            -2 * v + 2 * k3 * S3 * (A - S6) - k5 * S6,
            psi * kappa * (S4 - S7) - k * S7]


def _check_solves(d, f, horizon, tol):
    """Accurate re-integration from the stored IC with the independent rhs matches the data."""
    for e in range(0, d.n_envs, 2):
        for j in range(d.n_trajectories):
            ref = solve_ivp(f, (0, horizon), d.x[e, j, 0], t_eval=d.t[e], args=d.params[e],
                            rtol=1e-10, atol=1e-12, method="DOP853").y.T
            err = np.max(np.abs(d.x[e, j] - ref)) / np.max(np.abs(ref))
            assert err < tol, (e, j, err)


def _check_fd(d, f):
    """Central finite differences ~ rhs (loose; grids are coarse)."""
    for e in range(0, d.n_envs, 3):
        x, t = d.x[e, 0], d.t[e]
        dt = t[1] - t[0]
        fd = (x[2:] - x[:-2]) / (2 * dt)
        rhs = np.array([f(0, s, *d.params[e]) for s in x[1:-1]])
        assert np.median(np.abs(fd - rhs)) / (np.abs(rhs).max() + 1e-6) < 0.1


# ---------------------------------------------------------------------------------------------
# LV
# ---------------------------------------------------------------------------------------------

def test_lv_parameters_grids_labels(lv):
    splits, meta = lv
    want = [(0.5, 0.5), (0.75, 0.5), (1.0, 0.5), (0.5, 0.75), (0.75, 0.75), (1.0, 0.75),
            (0.5, 1.0), (0.75, 1.0), (1.0, 1.0)]
    assert list(splits["train"].params) == want == list(splits["test"].params)
    assert list(splits["adapt_train"].params) == [(0.625, 0.625), (0.625, 1.125), (1.125, 0.625), (1.125, 1.125)]
    assert splits["train"].family.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert splits["adapt_test"].family.tolist() == [-1] * 4
    for d in splits.values():
        assert d.x.shape[2:] == (20, 2)
        for row in d.t:
            np.testing.assert_array_equal(row, np.linspace(0, 10, 20, endpoint=False))
    assert meta["param_names"] == ["b", "d"] and meta["fixed_params"] == {"a": 0.5, "c": 0.5}


def test_lv_seed_rule_and_shared_ics(lv):
    splits, _ = lv
    for sp, seeds in (("train", [0, 1]), ("adapt_train", [0]), ("test", [MAX, MAX - 1]), ("adapt_test", [MAX, MAX - 1])):
        d = splits[sp]
        for j, sj in enumerate(seeds):
            want = np.random.RandomState(sj).uniform(size=2) + 1
            for e in range(d.n_envs):  # shared by all environments
                np.testing.assert_array_equal(d.x[e, j, 0], want)


def test_lv_default_counts_and_prefix():
    ics = classic_initial_conditions("lv", "test")
    assert ics.shape == (32, 2)
    np.testing.assert_array_equal(ics[:2], classic_initial_conditions("lv", "test", n=2))
    assert classic_initial_conditions("lv", "train").shape == (4, 2)
    # a seed offset moves every stream
    np.testing.assert_array_equal(classic_initial_conditions("lv", "train", seed=5)[0],
                                  np.random.RandomState(5).uniform(size=2) + 1)
    np.testing.assert_array_equal(classic_initial_conditions("lv", "test", seed=5)[0],
                                  np.random.RandomState(MAX - 5).uniform(size=2) + 1)


def test_lv_solves_the_ode(lv):
    d = lv[0]["train"]
    _check_solves(d, lv_f, 10.0, 0.02)
    _check_fd(d, lv_f)


# ---------------------------------------------------------------------------------------------
# GO
# ---------------------------------------------------------------------------------------------

def test_go_parameters_ics_grid(go):
    splits, meta = go
    want = [(k1, K1) for k1 in (100.0, 90.0, 80.0) for K1 in (1.0, 0.75, 0.5)]
    assert list(splits["train"].params) == want
    assert list(splits["adapt_test"].params) == [(85.0, 0.625), (85.0, 0.875), (95.0, 0.625), (95.0, 0.875)]
    assert splits["test"].family.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    lo = np.array([0.15, 0.19, 0.04, 0.10, 0.08, 0.14, 0.05])
    hi = np.array([1.60, 2.16, 0.20, 0.35, 0.30, 2.67, 0.10])
    np.testing.assert_array_equal(splits["train"].x[3, 1, 0], np.random.RandomState(1).random(7) * (hi - lo) + lo)
    np.testing.assert_array_equal(splits["test"].x[0, 0, 0], np.random.RandomState(MAX).random(7) * (hi - lo) + lo)
    for d in splits.values():
        assert d.x.shape[2:] == (20, 7)
        np.testing.assert_array_equal(d.t[0], np.linspace(0, 1, 20, endpoint=False))
    assert classic_initial_conditions("go", "train").shape == (32, 7)
    assert meta["fixed_params"]["J0"] == 2.5 and meta["fixed_params"]["k4"] == 100.0


def test_go_solves_the_ode(go):
    _check_solves(go[0]["train"], go_f, 1.0, 0.02)


# ---------------------------------------------------------------------------------------------
# SM
# ---------------------------------------------------------------------------------------------

def test_sm_parameters_grid_labels(sm):
    splits, _ = sm
    b = np.concatenate([np.linspace(-1, -0.25, 7), np.linspace(-0.1, 0.1, 7), np.linspace(0.25, 1, 7)])
    np.testing.assert_array_equal([p[0] for p in splits["train"].params], b)
    assert [p[0] for p in splits["adapt_train"].params] == [-1.25, -0.65, -0.05, 0.02, 0.6, 1.2]
    assert splits["train"].family.tolist() == [0] * 7 + [1] * 7 + [2] * 7
    assert splits["adapt_test"].family.tolist() == [0, 0, 1, 1, 2, 2]
    shapes = {k: v.x.shape for k, v in splits.items()}
    assert shapes == {"train": (21, 4, 11, 2), "test": (21, 4, 11, 2), "adapt_train": (6, 1, 11, 2),
                      "adapt_test": (6, 4, 11, 2)}
    np.testing.assert_array_equal(splits["test"].t[5], np.linspace(0, 40, 11))


def test_sm_inverted_seed_rule(sm):
    splits, _ = sm
    np.testing.assert_array_equal(splits["train"].x[4, 2, 0], np.random.RandomState(MAX - 2).uniform(0, 3, 2))
    np.testing.assert_array_equal(splits["adapt_train"].x[0, 0, 0], np.random.RandomState(MAX).uniform(0, 3, 2))
    np.testing.assert_array_equal(splits["test"].x[7, 3, 0], np.random.RandomState(3).uniform(0, 3, 2))
    np.testing.assert_array_equal(splits["adapt_test"].x[1, 0, 0], np.random.RandomState(0).uniform(0, 3, 2))


def test_sm_solves_the_ode(sm):
    _check_solves(sm[0]["train"], sm_f, 40.0, 0.05)


def test_reproducible_and_errors():
    a, _ = generate_sm(splits=["adapt_train"])
    b, _ = generate_sm(splits=["adapt_train"])
    np.testing.assert_array_equal(a["adapt_train"].x, b["adapt_train"].x)
    with pytest.raises(DataError, match="unknown split"):
        generate_lv(splits=["valid"])
    with pytest.raises(DataError, match="unknown classic"):
        classic_env_params("xx", "train")
