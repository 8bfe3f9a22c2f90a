"""TOML ODE families and the paper's generation protocol (ODEBench-2 / 10A / 10B)."""

import json
import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from mixerdsr.data import (
    SPLITS,
    DataError,
    env_parameters,
    generate_families,
    initial_conditions,
    load_dataset,
    load_family_spec,
    padded_params,
    parse_family_spec,
    plan_families,
    save_dataset,
)
from mixerdsr.data import _families
from mixerdsr.data._families import time_grid

TABLE6_IDS = [24, 25, 28, 32, 34, 35, 37, 38, 39, 40]
TABLE6_HORIZONS = [10, 8, 15, 5, 20, 5, 15, 15, 4, 10]


def _fam(spec, fid):
    return [f.id for f in spec.families].index(fid)


def _rows(spec, fid, split):
    return env_parameters(spec, _fam(spec, fid), split).tolist()


# ---------------------------------------------------------------------------------------------
# Built-in files
# ---------------------------------------------------------------------------------------------

def test_builtin_files_match_table6():
    for name in ("odebench-10a", "odebench-10b"):
        spec = load_family_spec(name)
        assert [f.id for f in spec.families] == TABLE6_IDS
        assert [f.horizon for f in spec.families] == TABLE6_HORIZONS
        assert all(f.dims == 2 for f in spec.families)  # Table 6: all 2-D, no padding needed
        f25 = spec.families[1]
        assert f25.params == (4.5, 0.43) and f25.ics == ((0.12, 0.043), (0.0, -0.3))
        f39 = spec.families[8]
        assert f39.params == (2.4, 0.07) and f39.ics == ((0.4, 0.31), (0.2, -0.7))
        assert spec.protocol.seed == 2024 and spec.protocol.steps == 100 and not spec.protocol.clean
    a = load_family_spec("odebench-10a").protocol.splits
    assert {k: (v.envs, v.trajectories) for k, v in a.items()} == {
        "train": (5, 4), "test": (5, 32), "adapt_train": (1, 1), "adapt_test": (1, 32)}
    b = load_family_spec("odebench-10b").protocol.splits
    assert {k: (v.envs, v.trajectories) for k, v in b.items()} == {
        "train": (16, 4), "test": (16, 32), "adapt_train": (4, 1), "adapt_test": (4, 32)}


def test_builtin_odebench2_matches_table7():
    spec = load_family_spec("odebench-2")
    assert [f.id for f in spec.families] == [25, 35]
    f25, f35 = spec.families
    assert f25.params == (0.4, 0.43) and f25.ics == ((0.1, 0.1), (0.0, -0.3)) and f25.horizon == 5
    assert f35.params == (6.0,) and f35.ics == ((1.13, -0.3), (0.7, -1.7)) and f35.horizon == 5
    assert {k: (v.envs, v.trajectories) for k, v in spec.protocol.splits.items()} == {
        "train": (5, 4), "test": (5, 32), "adapt_train": (1, 1), "adapt_test": (1, 32)}


# ---------------------------------------------------------------------------------------------
# Environments (no integration)
# ---------------------------------------------------------------------------------------------

def test_10a_env_params_equal_protocol():
    spec = load_family_spec("odebench-10a")
    assert _rows(spec, 24, "train") == [[1.89], [2.0], [2.1], [2.21], [2.31]]
    assert _rows(spec, 25, "train") == [[4.05, 0.39], [4.05, 0.43], [4.05, 0.47], [4.5, 0.39], [4.5, 0.43]]
    assert _rows(spec, 39, "train") == [[2.16, 0.06], [2.16, 0.07], [2.16, 0.08], [2.4, 0.06], [2.4, 0.07]]
    assert _rows(spec, 32, "train") == [[0.16], [0.17], [0.18], [0.19], [0.2]]
    for fid in TABLE6_IDS:  # test envs are the training envs
        assert _rows(spec, fid, "test") == _rows(spec, fid, "train")
    # one adaptation env = round(0.8 * ref, 2), shared by both adapt splits
    assert _rows(spec, 24, "adapt_train") == [[1.68]] == _rows(spec, 24, "adapt_test")
    assert _rows(spec, 25, "adapt_train") == [[3.6, 0.34]]
    assert _rows(spec, 40, "adapt_test") == [[0.71]]


def test_10b_env_grid_and_adaptation():
    spec = load_family_spec("odebench-10b")
    f24 = np.array(_rows(spec, 24, "train"))[:, 0]
    np.testing.assert_array_equal(f24, np.round(np.linspace(0.9 * 2.1, 1.1 * 2.1, 16), 2))
    g = [np.round(np.linspace(0.9 * r, 1.1 * r, 4), 2) for r in (4.5, 0.43)]
    want = [[a, b] for a in g[0] for b in g[1]]  # meshgrid(...).T.reshape order: first param outer
    assert _rows(spec, 25, "train") == want
    assert _rows(spec, 24, "adapt_train") == [[1.68], [1.96], [2.24], [2.52]]
    np.testing.assert_array_equal(np.array(_rows(spec, 25, "adapt_test")),
                                  np.round(np.array([4.5, 0.43]) * np.linspace(0.8, 1.2, 4)[:, None], 2))
    # the paper's protocol keeps duplicated environments (documented leak)
    assert len({tuple(r) for r in _rows(spec, 32, "train")}) == 5


def test_meshgrid_order_three_params():
    text = _toml(protocol="train = {envs = 5, trajectories = 2}",
                 families=[("a", ["c0*x0 + c1 + c2"], [1.0, 2.0, 3.0], [[0.0], [1.0]], 1.0)])
    spec = parse_family_spec(text)
    k = math.ceil(5 ** (1 / 3))
    grids = [np.round(np.linspace(0.9 * r, 1.1 * r, k), 2) for r in (1.0, 2.0, 3.0)]
    want = np.array(np.meshgrid(*grids)).T.reshape(-1, 3)[:5]
    np.testing.assert_array_equal(env_parameters(spec, 0, "train"), want)


# ---------------------------------------------------------------------------------------------
# Initial conditions (RNG order)
# ---------------------------------------------------------------------------------------------

def _reference_ics(spec, split, seed):
    """Independent re-statement of the protocol: one stream per split, families in order."""
    rs = np.random.RandomState(seed)
    n = spec.protocol.splits[split].trajectories
    out = []
    for f in spec.families:
        ic1, ic2 = np.array(f.ics[0]), np.array(f.ics[1])
        lo, hi = np.minimum(ic1, ic2), np.maximum(ic1, ic2)
        ics = [ic1]
        for _ in range(n - 2):
            ics.append([rs.uniform(lo[d] + 1e-3, hi[d] - 1e-3) for d in range(len(ic1))])
        ics.append(ic2)
        out.append(np.array(ics[:n], dtype=float))
    return out


@pytest.mark.parametrize("name", ["odebench-10a", "odebench-2"])
def test_ics_follow_protocol(name):
    spec = load_family_spec(name)
    for split in SPLITS:
        got = initial_conditions(spec, split, 2024)
        want = _reference_ics(spec, split, 2024)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def test_ics_reference_first_last_and_bounds():
    spec = load_family_spec("odebench-10a")
    for split in ("train", "test", "adapt_test"):
        for f, ics in zip(spec.families, initial_conditions(spec, split)):
            np.testing.assert_array_equal(ics[0], f.ics[0])
            np.testing.assert_array_equal(ics[-1], f.ics[1])
            lo = np.minimum(*map(np.array, f.ics)) + 1e-3
            hi = np.maximum(*map(np.array, f.ics)) - 1e-3
            inner = ics[1:-1]
            assert np.all((inner >= np.minimum(lo, hi)) & (inner <= np.maximum(lo, hi)))
    # one trajectory: only the first reference IC (adapt_train of 10A)
    for f, ics in zip(spec.families, initial_conditions(spec, "adapt_train")):
        np.testing.assert_array_equal(ics, [f.ics[0]])


def test_paper_protocol_leaks_training_ics_into_test():
    # same stream for every split: the first family's training draws reappear in test
    spec = load_family_spec("odebench-10a")
    tr = initial_conditions(spec, "train")[0]
    te = initial_conditions(spec, "test")[0]
    np.testing.assert_array_equal(tr[:3], te[:3])


def test_seed_changes_ics_only():
    spec = load_family_spec("odebench-10a")
    a = plan_families(spec, seed=1)
    b = plan_families(spec, seed=2)
    c = plan_families(spec, seed=1)
    assert not np.array_equal(a["test"][0].ics, b["test"][0].ics)
    np.testing.assert_array_equal(a["test"][3].ics, c["test"][3].ics)
    np.testing.assert_array_equal(a["train"][1].params, b["train"][1].params)


def test_time_grids():
    for T in TABLE6_HORIZONS + [5, 1, 3.7]:
        t = time_grid(T, 100)
        assert len(t) == 100 and t[0] == 0.0 and t[-1] < T
        np.testing.assert_allclose(np.diff(t), T / 100, rtol=1e-9)
        np.testing.assert_array_equal(t, np.arange(0, T, T / 100))


# ---------------------------------------------------------------------------------------------
# Integration
# ---------------------------------------------------------------------------------------------

def _small(name, **kw):
    spec = load_family_spec(name)
    return spec.with_protocol(splits={"train": (2, 3), "test": (2, 3), "adapt_train": (1, 1)}, **kw)


def test_generate_shapes_labels_and_reproducibility():
    spec = _small("odebench-10a")
    s1, meta = generate_families(spec)
    s2, _ = generate_families(spec)
    s3, _ = generate_families(spec, seed=7)
    tr = s1["train"]
    assert tr.x.shape == (20, 3, 100, 2) and tr.t.shape == (20, 100)
    np.testing.assert_array_equal(tr.family, np.repeat(np.arange(10), 2))
    for e in range(20):
        T = TABLE6_HORIZONS[tr.family[e]]
        np.testing.assert_array_equal(tr.t[e], np.arange(0, T, T / 100))
    for sp in s1:
        np.testing.assert_array_equal(s1[sp].x, s2[sp].x)
    assert not np.array_equal(s1["test"].x, s3["test"].x)
    # reference ICs are the first/last states; params are ragged (1 or 2 per family)
    np.testing.assert_array_equal(tr.x[0, 0, 0], [0.4, -0.03])
    np.testing.assert_array_equal(tr.x[0, -1, 0], [0.0, 0.2])
    assert tr.params[0] == (1.89,) and tr.params[2] == (4.05, 0.39)
    assert meta["param_counts"] == [1, 2, 1, 1, 1, 1, 1, 1, 2, 1]
    assert meta["dims"] == [2] * 10 and meta["seed"] == 2024
    assert meta["env_params"]["train"][2] == [4.05, 0.39]
    assert padded_params(tr.params).shape == (20, 2)
    json.dumps(meta)


def test_generation_matches_hand_written_protocol():
    """The authors' loop, written out by hand for two families: same arrays."""
    spec = load_family_spec("odebench-10a").with_protocol(splits={"train": (5, 4)})
    s, _ = generate_families(spec, seed=3)
    rs = np.random.RandomState(3)
    t = np.arange(0, 10, 10 / 100)
    ics = [np.array([0.4, -0.03])]
    for _ in range(2):
        ics.append([rs.uniform(0.0 + 1e-3, 0.4 - 1e-3), rs.uniform(-0.03 + 1e-3, 0.2 - 1e-3)])
    ics.append(np.array([0.0, 0.2]))
    for e, c0 in enumerate([1.89, 2.0, 2.1, 2.21, 2.31]):
        for j, ic in enumerate(ics):
            sol = solve_ivp(lambda t, x, c0: [x[1], -c0 * x[0]], (0, 10), ic, args=(c0,), t_eval=t, method="RK45")
            np.testing.assert_allclose(s["train"].x[e, j], sol.y.T, rtol=1e-12, atol=1e-14)


# Table 6, typed independently of the TOML files
TABLE6_RHS = {
    24: lambda x, c: [x[1], -c[0] * x[0]],
    25: lambda x, c: [x[1], -c[0] * x[0] - c[1] * x[1]],
    28: lambda x, c: [x[1], -c[0] * np.sin(x[0])],
    32: lambda x, c: [x[1], -c[0] * x[1] - x[0] ** 3 + x[0]],
    34: lambda x, c: [x[1], (-c[0] + np.cos(x[0])) * np.sin(x[0])],
    35: lambda x, c: [np.cos(x[0]) / np.tan(x[1]), np.sin(x[0]) * (c[0] * np.sin(x[1]) ** 2 + np.cos(x[1]) ** 2)],
    37: lambda x, c: [x[1], -c[0] * x[1] * (x[0] ** 2 - 1) - x[0]],
    38: lambda x, c: [c[0] * (-x[0] ** 3 / 3 + x[0] + x[1]), -x[0] / c[0]],
    39: lambda x, c: [c[0] * x[1] + x[0] ** 2 * x[1] - x[0], -c[0] * x[0] + c[1] - x[0] ** 2 * x[1]],
    40: lambda x, c: [x[1], c[0] * x[1] * (1 - x[0] ** 2) - x[0]],
}


def test_trajectories_satisfy_the_ode():
    spec = _small("odebench-10a")
    s, _ = generate_families(spec, splits=["train"])
    tr = s["train"]
    for e in range(0, tr.n_envs, 2):
        fam = spec.families[tr.family[e]]
        c = np.array(tr.params[e])
        x, t = tr.x[e, 1], tr.t[e]
        # the stored right-hand side is Table 6's
        np.testing.assert_allclose(fam.fn(x, c), np.array(TABLE6_RHS[fam.id](x.T, c)).T, rtol=1e-12, atol=1e-12)
        # the trajectory solves it: accurate re-integration from the stored IC (loose: RK45 rtol 1e-3)
        ref = solve_ivp(lambda t, y: TABLE6_RHS[fam.id](y, c), (0, fam.horizon), x[0], t_eval=t,
                        rtol=1e-10, atol=1e-12, method="DOP853").y.T
        assert np.max(np.abs(x - ref)) / (np.max(np.abs(ref)) + 1e-3) < 0.05, fam.name
        # and finite differences agree with the right-hand side where the solution is smooth
        dt = t[1] - t[0]
        fd = (x[2:] - x[:-2]) / (2 * dt)
        rhs = np.array(TABLE6_RHS[fam.id](x[1:-1].T, c)).T
        assert np.median(np.abs(fd - rhs)) / (np.abs(rhs).max() + 1e-3) < 0.02, fam.name


def test_save_load_roundtrip(tmp_path):
    spec = _small("odebench-2")
    s, meta = generate_families(spec)
    path = save_dataset(tmp_path / "o2.npz", s, meta)
    back = load_dataset(path)
    for sp in s:
        np.testing.assert_array_equal(back[sp].x, s[sp].x)
        assert back[sp].params == s[sp].params
        assert back[sp].family_names == s[sp].family_names


def test_padding_for_mixed_dims():
    text = _toml(protocol="train = {envs = 2, trajectories = 3}",
                 families=[("decay", ["-c0*x0"], [1.0], [[1.0], [2.0]], 1.0),
                           ("rot", ["x1", "-c0*x0"], [1.0, 5.0], [[1.0, 0.0], [0.0, 1.0]], 2.0)])
    s, meta = generate_families(parse_family_spec(text))
    tr = s["train"]
    assert tr.x.shape == (4, 3, 100, 2)
    assert meta["dims"] == [1, 2]
    assert np.all(tr.x[:2, :, :, 1] == 0.0)
    np.testing.assert_allclose(tr.x[0, 0, :, 0], np.exp(-0.9 * tr.t[0]), rtol=1e-2)
    assert [len(p) for p in tr.params] == [1, 1, 2, 2]


# ---------------------------------------------------------------------------------------------
# Clean protocol
# ---------------------------------------------------------------------------------------------

def test_clean_ics_split_specific_and_no_references_in_test():
    spec = load_family_spec("odebench-10a").with_protocol(clean=True)
    tr = initial_conditions(spec, "train")
    te = initial_conditions(spec, "test")
    at = initial_conditions(spec, "adapt_test")
    for f, a, b, c in zip(spec.families, tr, te, at):
        assert b.shape == (32, 2) and c.shape == (32, 2)
        train_set = {tuple(r) for r in a}
        assert not train_set & {tuple(r) for r in b}
        for ref in f.ics:
            assert tuple(ref) not in {tuple(r) for r in b}
            assert tuple(ref) not in {tuple(r) for r in c}
        np.testing.assert_array_equal(a[0], f.ics[0])
        np.testing.assert_array_equal(a[-1], f.ics[1])


def test_clean_deduplicates_environments():
    spec = load_family_spec("odebench-10b").with_protocol(clean=True)
    for i, f in enumerate(spec.families):
        tr = env_parameters(spec, i, "train")
        ad = env_parameters(spec, i, "adapt_test")
        assert len({tuple(r) for r in tr}) == 16, f.name
        assert len({tuple(r) for r in ad}) == 4, f.name
        assert not {tuple(r) for r in tr} & {tuple(r) for r in ad}, f.name
        ref = np.array(f.params)
        assert np.all(tr >= 0.9 * ref - 0.005) and np.all(tr <= 1.1 * ref + 0.005)  # 2-decimal rounding
    # parameters that were already distinct are unchanged
    paper = load_family_spec("odebench-10b")
    np.testing.assert_array_equal(env_parameters(spec, 0, "train"), env_parameters(paper, 0, "train"))


def test_clean_integrates_accurately():
    spec = _small("odebench-2", clean=True)
    s, meta = generate_families(spec, splits=["train"])
    assert meta["protocol"]["clean"] is True
    tr = s["train"]
    e = 0
    f = spec.families[0]
    c0, c1 = tr.params[e]
    sol = solve_ivp(lambda t, x: [x[1], -c0 * x[0] - c1 * x[1]], (0, f.horizon), tr.x[e, 1, 0],
                    t_eval=tr.t[e], rtol=1e-12, atol=1e-13, method="DOP853")
    np.testing.assert_allclose(tr.x[e, 1], sol.y.T, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Bad family files
# ---------------------------------------------------------------------------------------------

def _toml(protocol, families):
    lines = ['name = "t"', "[protocol]", "seed = 1", protocol]
    for name, rhs, params, ics, T in families:
        lines += ["[[family]]", f'name = "{name}"', "rhs = [" + ", ".join(f'"{r}"' for r in rhs) + "]",
                  f"params = {params}", f"ics = {ics}", f"horizon = {T}"]
    return "\n".join(lines) + "\n"


GOOD = ("p", ["x1", "-c0*sin(x0)"], [0.9], [[0.1, 0.0], [0.3, 0.2]], 5)


@pytest.mark.parametrize(
    "text, match",
    [
        ("name = 'x'\n[[family]\n", "invalid TOML"),
        (_toml("train = {envs = 2, trajectories = 2}", []), "at least one"),
        ("[[family]]\nname='a'\nrhs=['x0']\nparams=[]\nics=[[1],[2]]\nhorizon=1\n", "protocol"),
        (_toml("train = {envs = 2, trajectories = 2}", [("p", ["x1", "__import__('os')"], [0.9],
                                                          [[0.1, 0.0], [0.3, 0.2]], 5)]), "__import__"),
        (_toml("train = {envs = 2, trajectories = 2}", [("p", ["x1", "-c1*x0"], [0.9],
                                                          [[0.1, 0.0], [0.3, 0.2]], 5)]), "c1"),
        (_toml("train = {envs = 2, trajectories = 2}", [("p", ["x1", "-c0*x0"], [0.9], [[0.1], [0.3, 0.2]], 5)]),
         "ics"),
        (_toml("train = {envs = 2, trajectories = 2}", [("p", ["x1", "-c0*x0"], [0.9],
                                                          [[0.1, 0.0], [0.3, 0.2]], -1)]), "horizon"),
        (_toml("train = {envs = 0, trajectories = 2}", [GOOD]), "envs"),
        (_toml("valid = {envs = 2, trajectories = 2}", [GOOD]), "unknown key"),
        (_toml("train = {envs = 2, trajectories = 2}\nspeed = 3", [GOOD]), "unknown key"),
        (_toml("train = {envs = 2, trajectories = 2}\nclean = 'yes'", [GOOD]), "clean"),
        (_toml("train = {envs = 2, trajectories = 2}", [GOOD]).replace("params = [0.9]", "params = ['a']"), "params"),
        (_toml("train = {envs = 2, trajectories = 2}", [GOOD]) + "colour = 1\n", "unknown key"),
    ],
)
def test_bad_family_files(text, match):
    with pytest.raises(DataError, match=match):
        parse_family_spec(text, source="bad.toml")


def test_missing_file_and_builtin_name():
    with pytest.raises(FileNotFoundError, match="odebench-10a"):
        load_family_spec("no/such/file.toml")
    assert load_family_spec("odebench-2").name == "odebench-2"


def test_clean_cannot_dedupe_parameterless_family():
    text = _toml("train = {envs = 3, trajectories = 2}\nclean = true", [("z", ["-x0"], [], [[1.0], [2.0]], 1.0)])
    with pytest.raises(DataError, match="distinct"):
        plan_families(parse_family_spec(text))


def test_integration_failure_is_reported():
    text = _toml("train = {envs = 1, trajectories = 1}", [("blow", ["x0**2"], [], [[1.0], [2.0]], 5.0)])
    with pytest.raises(DataError, match="integration failed"):
        generate_families(parse_family_spec(text))


# ---------------------------------------------------------------------------------------------
# Trust: non-finite right-hand sides, work cap, absurd sizes (each refused with a clear DataError)
# ---------------------------------------------------------------------------------------------

def _one(rhs, params, ics, horizon=5.0, protocol="train = {envs = 1, trajectories = 1}", name="bad"):
    return parse_family_spec(_toml(protocol, [GOOD, (name, rhs, params, ics, horizon)]), source="bad.toml")


@pytest.mark.parametrize("rhs", [["log(x0)"], ["sqrt(x0)"], ["x0**0.5"]])
def test_nan_right_hand_side_is_reported_not_hung(rhs, monkeypatch):
    # a small cap guards the test: before the fix the solver looped here on NaN step sizes
    monkeypatch.setattr(_families, "MAX_RHS_EVALS", 20_000)
    spec = _one(rhs, [], [[-1.0], [-2.0]])
    with pytest.raises(DataError, match="not finite") as err:
        generate_families(spec)
    msg = str(err.value)
    assert "\n" not in msg
    for part in ("bad.toml", "family[1] (bad)", "split train", "env 0", "parameters []", "t = 0", "state [-1]"):
        assert part in msg, (part, msg)


def test_nan_reached_during_integration_names_parameters_and_time(monkeypatch):
    monkeypatch.setattr(_families, "MAX_RHS_EVALS", 20_000)
    # x0 decreases through zero at t = 1/c0, then sqrt(x0) is NaN (the solver gets there first)
    spec = _one(["-c0 + 0*sqrt(x0)"], [2.0], [[1.0], [1.0]], protocol="train = {envs = 1, trajectories = 1}")
    with pytest.raises(DataError, match="not finite") as err:
        generate_families(spec)
    msg = str(err.value)
    assert "parameters [1.8]" in msg and "family[1] (bad)" in msg and "state [-" in msg  # 1 env: 0.9 ref
    assert float(msg.split("at t = ")[1].split(",")[0]) > 1 / 1.8  # where x0 = 1 - 1.8 t is negative


def test_stiff_system_hits_the_work_cap(monkeypatch):
    monkeypatch.setattr(_families, "MAX_RHS_EVALS", 3_000)
    vdp = (["x1", "c0*(1 - x0**2)*x1 - x0"], [1e6], [[2.0, 0.0], [2.0, 0.0]])
    spec = _one(*vdp, horizon=100.0, name="vdp")
    with pytest.raises(DataError, match="3,000 right-hand-side evaluations") as err:
        generate_families(spec)
    msg = str(err.value)
    assert "family[1] (vdp)" in msg and "parameters [900000]" in msg  # one env: 0.9 x reference
    assert "stiff" in msg and "shorter horizon" in msg
    # the same system with a mild parameter needs far fewer evaluations and generates
    spec = _one(vdp[0], [1.0], vdp[2], horizon=5.0, name="vdp")
    assert np.isfinite(generate_families(spec)[0]["train"].x).all()


def test_default_work_cap_leaves_room_for_the_builtins():
    # every built-in trajectory needs at most a few thousand evaluations (clean protocol included)
    assert _families.MAX_RHS_EVALS >= 100 * 2_600


@pytest.mark.parametrize(
    "protocol, key, found",
    [
        ("train = {envs = 1e6, trajectories = 1}", "protocol.train.envs", "expected an integer"),
        ("train = {envs = 1000000, trajectories = 1}", "protocol.train.envs", "allowed maximum 10000"),
        ("train = {envs = 1, trajectories = 10000000}", "protocol.train.trajectories", "allowed maximum 100000"),
        ("train = {envs = 1, trajectories = 2.5}", "protocol.train.trajectories", "expected an integer"),
        ("train = {envs = 1, trajectories = 1}\nsteps = 1e9", "protocol.steps", "expected an integer"),
        ("train = {envs = 1, trajectories = 1}\nsteps = 1000000000", "protocol.steps", "allowed maximum 100000"),
        ("train = {envs = 1, trajectories = 1}\nseed = 1099511627776", "protocol.seed", "allowed maximum"),
        ("train = {envs = 10000, trajectories = 10000}", "split 'train' would store", "allowed maximum 100,000,000"),
    ],
)
def test_absurd_sizes_are_refused_at_parse_time(protocol, key, found):
    text = _toml(protocol, [GOOD]).replace("seed = 1\n", "") if "seed =" in protocol else _toml(protocol, [GOOD])
    with pytest.raises(DataError) as err:
        parse_family_spec(text, source="bad.toml")
    msg = str(err.value)
    assert msg.startswith("bad.toml: ") and key in msg and found in msg, msg


@pytest.mark.parametrize(
    "horizon, found",
    [(1e12, "allowed maximum 1e+06"), (5e-324, "too small for 100 distinct time points")],
)
def test_absurd_horizons_are_refused(horizon, found):
    text = _toml("train = {envs = 1, trajectories = 1}\nsteps = 100", [GOOD, ("far", ["-x0"], [], [[1.0], [2.0]], horizon)])
    with pytest.raises(DataError, match="horizon") as err:
        parse_family_spec(text, source="bad.toml")
    assert "family[1] (far)" in str(err.value) and found in str(err.value)


def test_absurd_sizes_are_refused_when_planning():
    spec = parse_family_spec(_toml("train = {envs = 2, trajectories = 2}", [GOOD]), source="bad.toml")
    with pytest.raises(DataError, match=r"protocol\.train\.envs.*expected an integer"):
        spec.with_protocol(splits={"train": (1e6, 2)})
    with pytest.raises(DataError, match=r"protocol\.train\.trajectories.*allowed maximum"):
        spec.with_protocol(splits={"train": (2, 10**9)})
    with pytest.raises(DataError, match=r"protocol\.steps.*allowed maximum"):
        plan_families(spec.with_protocol(steps=10**9))
    with pytest.raises(DataError, match=r"key 'seed'.*allowed maximum"):
        generate_families(spec, seed=2**40)
    with pytest.raises(DataError, match="would store"):
        plan_families(spec.with_protocol(splits={"train": (10_000, 10_000)}))


def test_non_finite_environment_parameters_are_refused():
    spec = _one(["-c0*x0"], [1e308], [[1.0], [2.0]])
    with pytest.raises(DataError, match=r"family\[1\] \(bad\), split train: environment parameters are not finite"):
        plan_families(spec)


def test_many_parameters_do_not_build_the_full_grid():
    # 40 parameters and 5 envs: k = 2 values each, so the meshgrid would have 2**40 rows
    params = [float(j + 1) for j in range(40)]
    rhs = ["-" + " - ".join(f"c{j}*x0" for j in range(40))]
    spec = _one(rhs, params, [[1.0], [2.0]], protocol="train = {envs = 5, trajectories = 1}")
    got = env_parameters(spec, 1, "train")
    grids = [np.round(np.linspace(0.9 * r, 1.1 * r, 2), 2) for r in params]
    assert got.shape == (5, 40)
    # row r counts in binary with c1 fastest, then c0, then c2, c3, ... (meshgrid's xy order)
    order = [1, 0, *range(2, 40)]
    for r in range(5):
        bits = {ax: (r >> i) & 1 for i, ax in enumerate(order)}
        np.testing.assert_array_equal(got[r], [grids[j][bits[j]] for j in range(40)])
    clean = spec.with_protocol(clean=True)
    assert env_parameters(clean, 1, "train").shape == (5, 40)


@pytest.mark.parametrize("p, n", [(1, 7), (2, 5), (2, 9), (3, 5), (3, 27), (4, 20)])
@pytest.mark.parametrize("clean", [False, True])
def test_grid_rows_equal_the_meshgrid_protocol(p, n, clean):
    from mixerdsr.data._plans import _train_grid

    ref = np.array([1.0, 0.0, 0.07, 2.0][:p])  # a zero parameter: its grid collapses to one value
    k = math.ceil(n ** (1 / p))
    grids = []
    for r in ref:
        g = np.round(np.linspace(0.9 * r, 1.1 * r, k), 2)
        d = 2
        while clean and len(np.unique(g)) < k and d < 12 and r != 0:
            d += 1
            g = np.round(np.linspace(0.9 * r, 1.1 * r, k), d)
        grids.append(g)
    combos = np.array(np.meshgrid(*grids)).T.reshape(-1, p)
    if clean:
        seen, rows = set(), []
        for row in combos:
            if tuple(row) not in seen:
                seen.add(tuple(row))
                rows.append(row)
        combos = np.array(rows)
        if len(combos) < n:
            with pytest.raises(DataError, match="distinct"):
                _train_grid(ref, n, (0.9, 1.1), clean)
            return
    got = _train_grid(ref, n, (0.9, 1.1), clean)
    np.testing.assert_array_equal(got, combos[:n])


def test_cli_reports_a_bad_family_file_in_one_line(tmp_path, capsys):
    from mixerdsr.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text(_toml("train = {envs = 1, trajectories = 1}", [("nan", ["log(x0)"], [], [[-1.0], [-2.0]], 5.0)]))
    out = tmp_path / "x.npz"
    rc = main(["data", "generate", "--families", str(bad), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: ")
    assert str(bad) in err[0] and "family[0] (nan)" in err[0] and "not finite" in err[0]
    assert not out.exists()


def test_builtin_chaos_file():
    spec = load_family_spec("chaos")
    assert [f.id for f in spec.families] == ["lorenz63", "rossler", "thomas"]
    assert all(f.dims == 3 and f.transient > 0 for f in spec.families)
    assert spec.protocol.clean and spec.protocol.steps == 1000


def test_transient_is_integrated_and_dropped():
    text = _toml("steps = 20\nclean = true\ntrain = {envs = 1, trajectories = 1}",
                 [("lorenz", ["c0*(x1 - x0)", "x0*(c1 - x2) - x1", "x0*x1 - c2*x2"], [10.0, 28.0, 2.667],
                   [[1.0, 1.0, 1.0], [-5.0, 5.0, 20.0]], 1.0)]).replace("horizon = 1.0", "horizon = 1.0\ntransient = 2")
    spec = parse_family_spec(text, source="t.toml")
    assert spec.families[0].transient == 2.0
    tr = generate_families(spec, splits=["train"])[0]["train"]
    c = np.asarray(tr.params[0])

    def lorenz(t, y):
        return [c[0] * (y[1] - y[0]), y[0] * (c[1] - y[2]) - y[1], y[0] * y[1] - c[2] * y[2]]

    # the first stored state is the reference IC carried through the transient, and t starts at 0
    ref = solve_ivp(lorenz, (-2.0, 1.0), [1.0, 1.0, 1.0], t_eval=tr.t[0], rtol=1e-11, atol=1e-12, method="DOP853").y.T
    assert tr.t[0, 0] == 0.0 and not np.allclose(tr.x[0, 0, 0], [1.0, 1.0, 1.0], atol=0.5)
    np.testing.assert_allclose(tr.x[0, 0], ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(DataError, match="transient"):
        parse_family_spec(text.replace("transient = 2", "transient = -1"), source="t.toml")
