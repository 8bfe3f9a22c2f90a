"""hier-shPLRNN experts, sequence rollouts, series datasets of a run, downstream scores, contexts export."""

from __future__ import annotations

import csv
import io
from contextlib import redirect_stdout
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixerdsr import EnvData
from mixerdsr._config import load_config
from mixerdsr.cli import main
from mixerdsr.data import DataError, generate_sccts
from mixerdsr.data import _registry as registry
from mixerdsr.downstream import epilepsy2_downstream
from mixerdsr.metrics import adjusted_rand_index
from mixerdsr.experts import BACKBONES, SHPLRNN, AbstractSequenceExpert
from mixerdsr.experts._shplrnn import SHPLRNNStep
from mixerdsr.mixer import make_mixer
from mixerdsr.rollout import env_loss, env_rollout, sequence_rollout
from mixerdsr.inference import predict
from mixerdsr.training import TrainData, expert_losses

KEY = jax.random.PRNGKey(0)
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


# ------------------------------------------------------------------ the expert
def test_step_matches_hand_computed_update():
    # D = 2, H = 3, integers so that the expected value is exact
    step = SHPLRNNStep(a=jnp.array([0.5, -0.25]),
                       w1=jnp.array([[1.0, 0.0, 2.0], [0.0, -1.0, 1.0]]),
                       w2=jnp.array([[1.0, 1.0], [2.0, -1.0], [0.0, -1.0]]),
                       h1=jnp.array([0.1, 0.2]), h2=jnp.array([-1.0, 0.0, 0.5]))
    z = jnp.array([2.0, 4.0])
    # W2 z + h2 = [6-1, 0+0, -4+0.5] = [5, 0, -3.5] -> relu [5, 0, 0]
    # W1 relu = [5, 0]; A z = [1, -1]; + h1 -> [6.1, -0.8]
    np.testing.assert_allclose(step(0.0, z), [6.1, -0.8], rtol=1e-6)


def test_specialised_parameters_are_base_plus_linear_hypernetwork():
    d, r, h = 2, 3, 5
    e = SHPLRNN(d, r, hidden=h, key=KEY)
    c = jnp.array([0.7, -1.2, 0.3])
    net = e.specialise(c)
    shapes = {"a": (d,), "w1": (d, h), "w2": (h, d), "h1": (d,), "h2": (h,)}
    for name, shape in shapes.items():
        base, hyper, got = getattr(e.base, name), getattr(e.hyper, name), getattr(net, name)
        assert base.shape == shape and got.shape == shape
        assert hyper.shape == shape + (r,)  # the CoDA layout: leaf S has hyper leaf S + (r,)
        np.testing.assert_allclose(got, np.asarray(base) + np.asarray(hyper) @ np.asarray(c), rtol=1e-5, atol=1e-6)
    # at context 0 the expert is the base network; the hypernetwork is bias-free (linear)
    for a, b in zip(jax.tree.leaves(e.specialise(jnp.zeros(r))), jax.tree.leaves(e.base)):
        np.testing.assert_array_equal(a, b)
    assert all(float(jnp.abs(x).max()) > 0 for x in jax.tree.leaves(e.hyper))  # gradients can flow
    # by hand: one step of the specialised network
    z = jnp.array([0.3, -0.6])
    want = net.a * z + net.w1 @ jnp.maximum(net.w2 @ z + net.h2, 0) + net.h1
    np.testing.assert_allclose(e(0.0, z, c), want, rtol=1e-6)
    assert issubclass(SHPLRNN, AbstractSequenceExpert) and BACKBONES["shplrnn"] is SHPLRNN
    assert SHPLRNN.scored_from == 1 and SHPLRNN.teacher_forced


def test_stacked_in_mixer_and_one_expert_is_the_bare_backbone():
    layer = make_mixer("shplrnn", 2, 4, 3, split=False, key=KEY, hidden=6)
    assert layer.expert_type is SHPLRNN
    assert layer.experts.hyper.w1.shape == (3, 2, 6, 4) and layer.experts.base.a.shape == (3, 2)
    one = make_mixer("shplrnn", 2, 4, 1, split=False, shift=False, key=KEY, hidden=6)
    kexp, _ = jax.random.split(KEY)
    bare = SHPLRNN(2, 4, hidden=6, key=kexp)
    z, c = jnp.array([0.3, -0.2]), jnp.array([0.1, 0.2, -0.3, 0.4])
    np.testing.assert_allclose(one(0.0, z, c), bare(0.0, z, c), rtol=1e-6)


def test_fresh_expert_free_runs_stably():
    layer = make_mixer("shplrnn", 1, 10, 3, split=False, key=KEY)
    ctx = jax.random.normal(jax.random.PRNGKey(1), (8, 10))
    x = jnp.zeros((8, 1, 300, 1))
    pred, ok = jax.vmap(lambda c, xe: env_rollout(layer, c, xe, jnp.arange(300.0)))(ctx, x)
    assert bool(ok.all())
    # bounded, and settled (a contraction converges to its fixed point)
    assert float(jnp.abs(pred).max()) < 10
    np.testing.assert_allclose(pred[:, :, -1], pred[:, :, -2], atol=1e-3)


# ------------------------------------------------------------------ teacher forcing
def _net_and_series(seed=0, t=12, d=2):
    e = SHPLRNN(d, 3, hidden=8, key=jax.random.PRNGKey(seed), w1_scale=1.0)
    net = e.specialise(jnp.array([0.5, -0.4, 1.0]))
    x = jax.random.normal(jax.random.PRNGKey(seed + 1), (t, d))
    return net, x


def test_teacher_forcing_with_alpha_one_is_free_running():
    net, x = _net_and_series()
    z, free = jnp.zeros(2), [jnp.zeros(2)]
    for _ in range(x.shape[0] - 1):
        z = net(0.0, z)
        free.append(z)
    free = jnp.stack(free)
    np.testing.assert_allclose(sequence_rollout(net, x, 1.0, "zeros"), free, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sequence_rollout(net, 5.0 * x + 1.0, 1.0, "zeros"), free, rtol=1e-5, atol=1e-6)
    # and generalised teacher forcing by hand: s_t = a z_t + (1 - a) x_t
    a, z, tf = 0.5, jnp.zeros(2), [jnp.zeros(2)]
    for t in range(x.shape[0] - 1):
        z = net(0.0, a * z + (1 - a) * x[t])
        tf.append(z)
    np.testing.assert_allclose(sequence_rollout(net, x, 0.5, "zeros"), jnp.stack(tf), rtol=1e-5, atol=1e-6)
    # from the data (the default): a free run starts at the series' own first state, and only it
    z, free = x[0], [x[0]]
    for _ in range(x.shape[0] - 1):
        z = net(0.0, z)
        free.append(z)
    np.testing.assert_allclose(sequence_rollout(net, x, 1.0), jnp.stack(free), rtol=1e-5, atol=1e-6)
    later = x.at[1:].add(3.0)  # the rest of the series is never seen when free running
    np.testing.assert_allclose(sequence_rollout(net, later, 1.0), jnp.stack(free), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="start"):
        sequence_rollout(net, x, 1.0, "mean")


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_prediction_of_a_step_never_sees_that_step(alpha):
    net, x = _net_and_series(seed=3)
    k = 5
    base = sequence_rollout(net, x, alpha, "zeros")
    moved = sequence_rollout(net, x.at[k].add(10.0), alpha, "zeros")
    np.testing.assert_allclose(moved[: k + 1], base[: k + 1], rtol=1e-6)  # pred of x_k unchanged
    assert float(jnp.abs(moved[k + 1] - base[k + 1]).max()) > 1e-3       # x_k is used for x_{k+1}
    # the whole Jacobian d pred_t / d x_s vanishes for s >= t (strictly causal)
    jac = jax.jacfwd(lambda xx: sequence_rollout(net, xx, alpha, "zeros"))(x)  # [T, D, T, D]
    blocks = jnp.abs(jac).sum(axis=(1, 3))
    assert float(jnp.triu(blocks).max()) == 0.0
    # so an identity map cannot reach zero loss (the pitfall of the reference code)
    ident = lambda t, z, args=None: z  # noqa: E731
    p = sequence_rollout(ident, x, alpha, "zeros")
    assert float(jnp.mean((p[1:] - x[1:]) ** 2)) > 0.1


def test_env_loss_drops_initial_state_and_expert_losses_match():
    layer = make_mixer("shplrnn", 1, 4, 2, split=False, key=KEY, hidden=4, same_init=False)
    x = jax.random.normal(KEY, (3, 1, 10, 1))
    t = jnp.tile(jnp.arange(10.0), (3, 1))
    ctx = jax.random.normal(jax.random.PRNGKey(2), (3, 4))
    pred, _ = env_rollout(layer, ctx[0], x[0], t[0], alpha=0.5)
    loss, ok = env_loss(layer, ctx[0], x[0], t[0], alpha=0.5)
    np.testing.assert_allclose(loss, jnp.sum((pred[:, 1:] - x[0, :, 1:]) ** 2, -1).mean(), rtol=1e-6)
    from mixerdsr.rollout import SolverSettings

    solver = SolverSettings()
    L = expert_losses(layer, ctx, TrainData(x, t), solver, alpha=0.5)
    assert L.shape == (2, 3)
    for m in range(2):
        for e in range(3):
            np.testing.assert_allclose(L[m, e], env_loss(layer, ctx[e], x[e], t[e], solver, m=m, alpha=0.5)[0], rtol=1e-5)
    # evaluation: free-running prediction equals alpha = 1 rollouts with the routed expert
    p, okp = predict(layer, ctx, x, t)
    ref = jnp.stack([env_rollout(layer, ctx[e], x[e], t[e], alpha=1.0)[0] for e in range(3)])
    np.testing.assert_allclose(p, ref, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ datasets of a run
def test_presets():
    s = load_config("sccts")
    assert (s.data.source, s.model.backbone, s.model.num_experts, s.model.context_size, s.model.split_context,
            s.model.shift_context, s.model.expert.hidden, s.train.teacher_forcing) == (
                "sccts", "shplrnn", 3, 10, False, True, 16, 0.5)
    e = load_config("epilepsy2")
    assert (e.data.source, e.model.backbone, e.model.num_experts, e.model.context_size, e.model.split_context) == (
        "epilepsy2", "shplrnn", 2, 10, False)


def test_sccts_generator_fallback_and_missing_epilepsy2(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "shared_data_dirs", lambda: [tmp_path / "nowhere"])
    monkeypatch.setattr(registry, "_packaged_dir", lambda: tmp_path / "not-shipped")
    splits, meta = registry.resolve_dataset("sccts", 3)
    assert meta["source"] == "generator" and meta["seed"] == 3 and splits["train"].x.shape == (600, 1, 60, 1)
    np.testing.assert_allclose(splits["train"].x.mean(0), 0, atol=1e-9)  # standardised per time column
    with pytest.raises(DataError, match=r"Epilepsy2_TRAIN.ts not found.*nowhere.*MIXERDSR_SHARED_DATA.*--data"):
        registry.resolve_dataset("epilepsy2")
    with pytest.raises(DataError, match="test_file"):
        registry.resolve_dataset("sccts", test_file=str(tmp_path / "x.ts"))


def test_shared_data_dirs_honour_env_var(monkeypatch, tmp_path):
    (tmp_path / "synthetic_control.data").write_text("\n".join(" ".join(str(float(i + j)) for j in range(8))
                                                               for i in range(12)) + "\n")
    monkeypatch.setenv("MIXERDSR_SHARED_DATA", str(tmp_path))
    assert registry.shared_data_dirs()[0] == tmp_path.resolve()
    splits, meta = registry.resolve_dataset("sccts")
    assert meta["source"] == str(tmp_path / "synthetic_control.data") and splits["train"].x.shape == (12, 1, 8, 1)


def test_sccts_uses_the_shipped_file(monkeypatch, tmp_path):
    """The package ships the UCI file, so the real data are used after a plain install."""
    monkeypatch.setattr(registry, "shared_data_dirs", lambda: [tmp_path / "nowhere"])
    splits, meta = registry.resolve_dataset("sccts")
    shipped = registry._packaged_dir() / "synthetic_control.data"
    assert meta["source"] == str(shipped) and splits["train"].n_envs == 600
    assert (shipped.parent / "ATTRIBUTION.md").read_text().count("CC BY 4.0") == 1
    if (SHARED / "synthetic_control.data").is_file():  # the shipped copy is the original file
        assert shipped.read_bytes() == (SHARED / "synthetic_control.data").read_bytes()


def _write_ts(path: Path, rows: np.ndarray, labels: list[str]) -> Path:
    head = "@problemName toy\n@timeStamps false\n@univariate true\n@equalLength true\n@classLabel true 0 1\n@data\n"
    path.write_text(head + "".join(",".join(f"{v:.4f}" for v in r) + f":{lab}\n" for r, lab in zip(rows, labels)))
    return path


def test_ts_path_and_user_test_file(tmp_path):
    rng = np.random.default_rng(0)
    train = _write_ts(tmp_path / "tr.ts", rng.normal(size=(64, 7)), ["0", "1"] * 32)
    test = _write_ts(tmp_path / "te.ts", rng.normal(size=(5, 7)), ["1", "0", "0", "1", "1"])
    splits, meta = registry.resolve_dataset(str(train))
    assert splits["train"].n_envs == 60 and splits["adapt_train"].n_envs == 4 and meta["name"] == "epilepsy2"
    splits, meta = registry.resolve_dataset(str(train), test_file=str(test))
    assert splits["adapt_test"].n_envs == 5 and list(splits["adapt_test"].family) == [1, 0, 0, 1, 1]
    with pytest.raises(FileNotFoundError):
        registry.resolve_dataset(str(train), test_file=str(tmp_path / "missing.ts"))


# ------------------------------------------------------------------ downstream scores
def test_epilepsy2_logistic_regression_on_separable_contexts():
    rng = np.random.default_rng(0)
    fam_tr, fam_te = np.repeat([0, 1], 10), np.array([0, 1, 1, 0])
    ctx_tr = rng.normal(size=(20, 3)) + 4.0 * fam_tr[:, None]
    ctx_te = rng.normal(size=(4, 3)) + 4.0 * fam_te[:, None]
    mk = lambda n, f: EnvData(rng.normal(size=(n, 1, 6, 1)), np.tile(np.arange(6.0), (n, 1)), f)  # noqa: E731
    res, _ = epilepsy2_downstream(mk(20, fam_tr), mk(4, fam_te), ctx_tr, ctx_te, fam_tr, fam_te, 2)
    assert res["logreg_accuracy"] == 1.0 and res["logreg_train_accuracy"] == 1.0
    assert res["routing_held_out"]["ari"] == 1.0 and res["routing_train"]["table"] == [[10, 0], [0, 10]]


# ------------------------------------------------------------------ the pipeline on a tiny SCCTS
@pytest.fixture(scope="module")
def tiny_sccts_run(tmp_path_factory):
    """MixER-2 on 2 very different SCCTS classes (Normal vs Increasing trend), 10 series each."""
    from mixerdsr._run import run

    splits, meta = generate_sccts(seed=1, n_per_class=10)
    keep = np.r_[0:10, 20:30]  # classes A (normal) and C (increasing trend)
    tr = splits["train"].select_envs(keep)
    cfg = load_config("sccts", overrides={"model.num_experts": 2, "train.outer_steps": 40, "train.seed": 0})
    out = tmp_path_factory.mktemp("run")
    metrics = run(cfg, out, progress=False, log=lambda s: None, splits={"train": tr},
                  meta=dict(meta, superfamily=[0] * 20)).metrics
    return out, metrics, tr


def test_tiny_sccts_pipeline_separates_two_classes(tiny_sccts_run):
    out, metrics, tr = tiny_sccts_run
    z = np.load(out / "contexts.npz")
    labels = (tr.family > 0).astype(int)
    # unsupervised: the gate sends the two classes to different experts
    assert adjusted_rand_index(z["train_routes"], labels) >= 0.8, z["train_routes"]
    assert metrics["downstream"]["routing_classes"]["purity"] >= 0.9
    # sequence metrics: free-running and teacher-forced errors, downstream section, PCA figure
    m = metrics["train"]
    assert {"mse", "rel_mse", "teacher_forced_mse", "teacher_forced_rel_mse"} <= set(m)
    assert m["teacher_forced_mse"] < m["mse"]  # one-step error with data mixed in is the easier task
    ds = metrics["downstream"]
    assert {"context_kmeans_ari", "context_kmeans_accuracy", "raw_kmeans_ari", "raw_kmeans_accuracy"} <= set(ds)
    assert ds["data"] == "generator"
    assert (out / "contexts_pca.png").is_file() and "contexts_pca.png" in (out / "report.md").read_text()


def test_contexts_export_round_trip(tiny_sccts_run, tmp_path):
    out, _, tr = tiny_sccts_run
    z = np.load(out / "contexts.npz")
    assert main(["contexts", str(out), "--out", str(tmp_path / "c.npz")]) == 0
    y = np.load(tmp_path / "c.npz")
    for k in ("train", "train_routes", "train_family"):
        np.testing.assert_array_equal(y[k], z[k])
    np.testing.assert_array_equal(y["train_family"], tr.family)
    assert main(["contexts", str(out), "--out", str(tmp_path / "c.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "c.csv")))
    assert len(rows) == 20 and rows[0]["split"] == "train"
    ctx = np.array([[float(r[f"ctx_{i}"]) for i in range(z["train"].shape[1])] for r in rows])
    np.testing.assert_array_equal(ctx.astype(np.float32), z["train"])  # repr(float) round-trips exactly
    np.testing.assert_array_equal([int(r["route"]) for r in rows], z["train_routes"])
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["contexts", str(out)]) == 0
    assert buf.getvalue() == (tmp_path / "c.csv").read_text()
    assert main(["contexts", str(tmp_path / "nothing")]) == 2
    assert main(["contexts", str(out), "--out", str(tmp_path / "c.txt")]) == 2
