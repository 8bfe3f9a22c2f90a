"""Whole training runs of the warm start, the count of experts, stopping, selection and the
divergence guard (split from test_training.py so that pytest-xdist can balance the two files)."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mixerdsr._run as runmod
import mixerdsr.training as trainer
import mixerdsr.training._loop as loop
from mixerdsr._config import Config, ModelSettings, load_config
from mixerdsr.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mixerdsr.cli import main
from mixerdsr.training import split_validation
from mixerdsr.adaptation import adapt_contexts, expert_starts
from mixerdsr.inference import predict, routes
from mixerdsr.mixer import initial_model, trained_spec, trained_vector
from mixerdsr.routing import policy_of, settings_for_active
from mixerdsr.training import LossCache, TrainData, expert_losses, init_state, make_outer_step
from mixerdsr.training._step import _expert_losses, _nearest_batch

from conftest import TINY, tiny_cfg, tiny_ode_split, toml_text

# The tests share as few distinct compiled training steps as they can (each costs tens of
# seconds to compile): cfg() is the default MixER-2 step (the gradient baseline has its own); the
# persistent compilation cache of the test session serves repeated compilations. Adaptation
# always runs ADAPT_STEPS steps for the same reason.
ADAPT_STEPS = TINY["adapt.steps"]
cfg = tiny_cfg


def _train_data(split):
    """The arrays ``train`` trains on: the last trajectory of every env is held out."""
    return TrainData(jnp.asarray(split.x[:, :-1]), jnp.asarray(split.t))


def test_seeding_after_warmup_moves_contexts_without_losing_the_fit():
    from mixerdsr.inference import routes

    c = cfg({"gate.router": "warm_start", "gate.warm_start.warmup": 2, "model.num_experts": 2})
    st = init_state(c, 6, 2)
    # every env on expert 0 during the warm-up
    np.testing.assert_array_equal(routes(st.model, st.contexts), 0)
    # a trained-looking state: expert 0 differs from expert 1, the contexts of expert 0 hold two groups
    rng = np.random.default_rng(0)
    def perturb_expert_0(a):
        if not eqx.is_inexact_array(a):
            return a
        return a.at[0].add(0.3 * rng.standard_normal(a.shape[1:]).astype(a.dtype))

    experts = jax.tree.map(perturb_expert_0, st.model.experts)
    model = eqx.tree_at(lambda m: m.experts, st.model, experts)
    own = np.r_[np.full((3, 2), 1.0), np.full((3, 2), -1.0)] + 0.05 * rng.standard_normal((6, 2))
    ctx = jnp.asarray(np.c_[own, np.zeros((6, 2))], jnp.float32)  # context size 4 split in 2: expert 0 sees [:2]
    mu = jax.tree.map(lambda v: v + 1.0 if getattr(v, "shape", None) == ctx.shape else v, st.opt_contexts)
    st = st._replace(model=model, contexts=ctx, opt_contexts=mu)
    new, assign, choice = policy_of(c).seed_routes(st)
    assign = np.asarray(assign)
    assert choice is None  # gate.warm_start.grouping = "fixed": M experts
    assert len(set(assign[:3])) == 1 and len(set(assign[3:])) == 1 and assign[0] != assign[3]
    np.testing.assert_array_equal(routes(new.model, new.contexts), assign)
    # every expert is expert 0; each env's context part moved to its expert's part
    for leaf in jax.tree.leaves(eqx.filter(new.model.experts, eqx.is_inexact_array)):
        np.testing.assert_array_equal(leaf[1], leaf[0])
    x = jnp.asarray([0.3, -0.7])
    for e in range(6):
        before = st.model.specialise(st.contexts[e], 0)(0.0, x, None)
        after = new.model.specialise(new.contexts[e], int(assign[e]))(0.0, x, None)
        np.testing.assert_allclose(after, before, rtol=1e-6)
        part = np.asarray(new.contexts[e]).reshape(2, 2)
        np.testing.assert_array_equal(part[assign[e]], np.asarray(ctx[e, :2]))
        np.testing.assert_array_equal(part[1 - assign[e]], 0.0)
    # the context optimiser's moments moved with the contexts
    for old, moved in zip(jax.tree.leaves(mu), jax.tree.leaves(new.opt_contexts)):
        if getattr(old, "shape", None) == ctx.shape:
            for e in range(6):
                part = np.asarray(moved[e]).reshape(2, 2)
                np.testing.assert_allclose(part[assign[e]], np.asarray(old[e, :2]))
                if assign[e] != 0:  # moved: its old part is cleared
                    np.testing.assert_array_equal(part[0], 0.0)
    # the same groups when seeded along the contexts' nearest-neighbour graph
    spectral = c.override({"gate.warm_start.method": "spectral", "gate.warm_start.neighbours": 2})
    _, by_graph, _ = policy_of(spectral).seed_routes(st)
    by_graph = np.asarray(by_graph)
    assert len(set(by_graph[:3])) == 1 and len(set(by_graph[3:])) == 1 and by_graph[0] != by_graph[3]


def test_cli_run_on_a_dataset_file(tiny_splits, tmp_path, capsys, monkeypatch):
    import mixerdsr.training._step as training
    from mixerdsr import save_dataset

    # the suite already compiles without the fusion emitters (conftest), so the low-memory
    # build adds no option here and its step is cfg()'s, a cache load
    monkeypatch.setattr(training, "LOW_MEMORY_OPTIONS", {})
    data = save_dataset(tmp_path / "tiny.npz", tiny_splits)
    conf = tmp_path / "c.toml"
    conf.write_text(toml_text(TINY))
    out = tmp_path / "run"
    assert main(["run", "--config", str(conf), "--data", str(data), "--outer-steps", "4", "--out", str(out), "--quiet",
                 "--low-memory"]) == 0
    printed = capsys.readouterr().out
    assert "adapt_test: relMSE" in printed and (out / "metrics.json").exists()
    assert load_config(path=out / "config.toml").train.low_memory_compile
    # the user's file changed under the same path: resuming is refused, not run on other data
    changed = dict(tiny_splits, train=tiny_splits["train"].replace(x=tiny_splits["train"].x * 2))
    save_dataset(data, changed)
    assert main(["run", "--config", str(conf), "--data", str(data), "--outer-steps", "4", "--out", str(out), "--quiet",
                 "--low-memory", "--resume"]) == 2
    assert "changed since the run" in capsys.readouterr().err


@pytest.mark.parametrize("single_fit, chosen", [(0.0, 2), (1e9, 1)])
def test_number_of_experts_chosen_after_the_warmup(tiny_splits, tmp_path, monkeypatch, single_fit, chosen):
    from mixerdsr.routing import active_from_gate

    # gate.router and [gate.warm_start] are not part of the compiled step (cfg()'s, a cache load). With
    # 4 envs and M = 2 only 2 groups can be tried, and a silhouette threshold of -1 takes them,
    # unless the shared expert's fit counts as good enough (single_fit above any relMSE)
    msgs, batches = [], []
    real = loop.make_outer_step

    def recording(c, n_envs):  # the batch of every training step built (0: E / M)
        batches.append(c.train.batch_envs)
        return real(c, n_envs)

    monkeypatch.setattr(loop, "make_outer_step", recording)
    c = cfg({"gate.router": "warm_start", "gate.warm_start.grouping": "silhouette", "gate.warm_start.warmup": 1,
             "gate.warm_start.silhouette_min": -1.0, "gate.warm_start.single_fit": single_fit,
             "gate.warm_start.batch": -1, "train.batch_envs": 0})
    res = trainer.train(c, tiny_splits["train"], out_dir=tmp_path, progress=False, log=msgs.append)
    n_env = tiny_splits["train"].n_envs
    # each phase's step built when it starts: the warm-up on all envs; then the default (0: a
    # set this small trains on all envs) with 2 chosen, or all envs set explicitly with 1
    assert batches == [n_env, 0 if chosen == 2 else n_env]
    # the routing policy's state is in the checkpoint: a resumed run knows its phase
    _, _, extra = load_checkpoint(tmp_path / "checkpoint.npz", res.state)
    assert extra["routing"] == {"seeded": True, "n_active": chosen}
    seeding = np.load(tmp_path / "seeding-1.npz")  # what the grouping saw: expert 0's part of the contexts
    assert seeding["contexts"].shape == (n_env, c.model.context_size // 2) and len(seeding["assign"]) == n_env
    np.testing.assert_array_equal(seeding["family"], tiny_splits["train"].family)
    (rec,) = [h for h in res.history if "experts_chosen" in h]
    assert rec["step"] == 1 and rec["experts_chosen"]["experts"] == chosen
    assert set(rec["experts_chosen"]["silhouette"]) == {"2"}
    act = np.asarray(active_from_gate(res.state.model.gate))
    assert act.tolist() == [True, chosen == 2]
    assert any(f"{chosen} expert(s) chosen after the warm-up" in m for m in msgs)
    fits = rec["experts_chosen"]["shared_fit"]
    assert len(fits) == 2 and min(fits) > 0  # per silhouette group (2 groups proposed either way)
    for h in res.history[1:]:  # gate updates after the seeding keep a switched-off expert empty
        assert sum(n > 0 for n in h["routes"]) <= chosen and all(n == 0 for n, on in zip(h["routes"], act) if not on)
    with pytest.raises(ValueError, match='gate.router = "warm_start"'):
        cfg({"gate.warm_start.grouping": "silhouette"})


def test_settings_once_fewer_experts_are_chosen():
    # E / M envs per batch becomes E / K for the K experts chosen; one chosen: no more gate updates
    c = cfg({"model.num_experts": 4, "train.batch_envs": 0})
    assert settings_for_active(c, 40, 4) == c
    two = settings_for_active(c, 40, 2)
    assert two.train.batch_envs == 20 and two.gate.mode == "lstsq"
    one = settings_for_active(c, 40, 1)
    assert one.train.batch_envs == 40 and one.gate.mode == "frozen"
    assert settings_for_active(c, 12, 2).train.batch_envs == 12  # a small set: all envs
    fixed = cfg({"model.num_experts": 4, "train.batch_envs": 5})  # a batch set by the user stays
    assert settings_for_active(fixed, 12, 2) == fixed


def test_default_batch_is_e_over_m_but_at_least_16_envs():
    from mixerdsr._sections import MIN_BATCH_ENVS

    t = cfg({"train.batch_envs": 0}).train
    assert t.batch(10, 2) == 10 and t.batch(MIN_BATCH_ENVS, 4) == MIN_BATCH_ENVS  # a small set: all
    assert t.batch(40, 8) == MIN_BATCH_ENVS and t.batch(25, 5) == MIN_BATCH_ENVS  # E / M = 5 raised
    assert t.batch(160, 10) == 16 and t.batch(600, 3) == 200  # E / M where it is larger
    assert t.batch(3, 10) == 3 and t.batch(100, 200) == MIN_BATCH_ENVS and t.batch(40, 1) == 40
    assert cfg({"train.batch_envs": 4}).train.batch(10, 2) == 4
    assert cfg({"train.batch_envs": 40}).train.batch(10, 2) == 10


def test_choose_count_by_silhouette():
    from mixerdsr.routing import choose_count, silhouette

    rng = np.random.default_rng(0)
    centres = np.array([[4.0, 0.0], [-4.0, 0.0], [0.0, 6.0]])
    blobs = np.concatenate([c + 0.3 * rng.standard_normal((6, 2)) for c in centres])
    k, assign, scores = choose_count(jax.random.PRNGKey(0), jnp.asarray(blobs, jnp.float32), 5)
    assert k == 3 and set(scores) == {2, 3, 4, 5} and scores[3] > 0.7
    k_fine, _, _ = choose_count(jax.random.PRNGKey(0), jnp.asarray(blobs, jnp.float32), 5, slack=2.0)
    assert k_fine == max(j for j, v in scores.items() if v >= 0.5)  # the finest grouping above the threshold
    a = np.asarray(assign)
    assert all(len(set(a[i * 6:(i + 1) * 6])) == 1 for i in range(3)) and len(set(a)) == 3
    # a grid (parameters varied evenly, no families): no clear groups, one expert
    grid = np.stack(np.meshgrid(np.linspace(0, 1, 4), np.linspace(0, 1, 4)), -1).reshape(-1, 2)
    k1, a1, s1 = choose_count(jax.random.PRNGKey(0), jnp.asarray(grid, jnp.float32), 5)
    assert k1 == 1 and max(s1.values()) < 0.5 and not np.asarray(a1).any()
    # the silhouette against its definition, point by point
    z = (blobs - blobs.mean(0)) / blobs.std(0)
    lab = rng.integers(0, 3, len(z))
    lab[:3] = [0, 1, 2]
    want = []
    for i in range(len(z)):
        d = np.abs(z - z[i]).sum(1)
        same = (lab == lab[i]) & (np.arange(len(z)) != i)
        if not same.any():
            want.append(0.0)
            continue
        ai, bi = d[same].mean(), min(d[lab == j].mean() for j in set(lab) if j != lab[i])
        want.append((bi - ai) / max(ai, bi))
    np.testing.assert_allclose(silhouette(blobs, lab), np.mean(want), rtol=1e-10)


def test_removed_growth_settings_load_when_inert_and_are_refused_in_use(tmp_path):
    # files written while gate.grow existed (shipped models, checkpoints) hold its inert values
    old = Config().to_dict()
    old["gate"] |= {"grow": False, "grow_every": 20, "grow_tol": 0.05}
    assert Config.from_dict(old) == Config()
    save_checkpoint(tmp_path / "old.npz", {"a": np.zeros(2)}, old, {"step": 1})
    trainer.check_resume(tmp_path / "old.npz", Config())  # no difference reported
    old["gate"]["grow"] = True
    with pytest.raises(ValueError, match="gate.grow.*was removed.*--experts auto"):
        Config.from_dict(old)


def test_env_weights_scale_each_env_loss_by_a_power_of_its_states_norm():
    from mixerdsr.training._step import _batch_loss

    split = tiny_ode_split(3, seed=0)
    x = split.x[:, :-1].astype(np.float32)
    x[1] *= 10.0  # one env ten times larger: a hundredth of the others' weight before normalising
    w = np.asarray(trainer.env_weights(cfg({"train.env_weight_power": 1.0}), x))
    scale = np.mean(np.sum(x.astype(np.float64) ** 2, -1), axis=(1, 2))
    np.testing.assert_allclose(w, (1 / scale) / np.mean(1 / scale), rtol=1e-5)
    half = np.asarray(trainer.env_weights(cfg({"train.env_weight_power": 0.5}), x))
    np.testing.assert_allclose(half, scale**-0.5 / np.mean(scale**-0.5), rtol=1e-5)
    assert w.mean() == pytest.approx(1.0) and trainer.env_weights(cfg(), x) is None
    # the batch loss is the weighted mean of the per-env losses
    c = cfg()
    model = init_state(c, x.shape[0], x.shape[-1]).model
    ctx = jnp.zeros((x.shape[0], c.model.context_size))
    idx = jnp.arange(x.shape[0])
    plain = TrainData(jnp.asarray(x), jnp.asarray(split.t))
    weighted = plain._replace(weight=jnp.asarray(w))
    per_env = [float(_batch_loss(model, ctx, idx[i : i + 1], plain, c)[0]) for i in range(x.shape[0])]
    assert float(_batch_loss(model, ctx, idx, weighted, c)[0]) == pytest.approx(np.mean(w * np.array(per_env)), rel=1e-4)


def test_restart_experts_returns_them_to_their_initial_weights():
    from mixerdsr.routing import restart_experts

    c = cfg({"gate.warm_start.seed_from": "init"})
    fresh = init_state(c, 4, 2)
    moved = jax.tree.map(lambda a: a + 1.0 if eqx.is_inexact_array(a) else a, fresh)  # as if trained
    back = restart_experts(moved, initial_model(c, 2))
    for u, v in zip(jax.tree.leaves(eqx.filter((back.model.experts, back.model.shifts), eqx.is_array)),
                    jax.tree.leaves(eqx.filter((fresh.model.experts, fresh.model.shifts), eqx.is_array))):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(back.model.gate, moved.model.gate)  # routes kept
    np.testing.assert_array_equal(back.contexts, moved.contexts)
    n = sum(a.size for a in jax.tree.leaves(eqx.filter(fresh.model.experts, eqx.is_array)))
    vecs = [a for a in jax.tree.leaves(back.opt_weights) if a.ndim == 1 and a.size >= n]
    assert vecs and all(not np.any(np.asarray(a)) for a in vecs)  # moments zeroed
    counts = [a for a in jax.tree.leaves(back.opt_weights) if a.ndim == 0]
    assert counts and all(np.asarray(a) == np.asarray(b) for a, b in
                          zip(counts, [a for a in jax.tree.leaves(moved.opt_weights) if a.ndim == 0]))


def test_fresh_moments_zero_the_adaptive_state_and_keep_the_schedule():
    import optax

    from mixerdsr.routing import fresh_moments
    from mixerdsr.training._state import optimisers

    def states(tree, kind):
        return [s for s in jax.tree.leaves(tree, is_leaf=lambda s: isinstance(s, kind)) if isinstance(s, kind)]

    c = cfg({"train.schedule": "plateau"})  # a constant rate: step sizes compare across counts
    start = init_state(c, 4, 2)
    moved = jax.tree.map(lambda a: a + 3000 if eqx.is_array(a) else a, start)  # as if trained
    back = fresh_moments(moved)
    assert all(int(s.count) == 3000 for s in states(back.opt_weights, optax.ScaleByScheduleState))
    belief = states(back.opt_weights, optax.ScaleByBeliefState)
    assert belief and all(int(s.count) == 0 and not np.any(s.mu) and not np.any(s.nu) for s in belief)
    np.testing.assert_array_equal(states(back.opt_contexts, optax.ScaleByBeliefState)[0].mu,
                                  states(moved.opt_contexts, optax.ScaleByBeliefState)[0].mu)  # contexts untouched
    # its first step is an optimiser's first step, about the rate in size; moments zeroed under
    # the old count (seed_from = "init" alone) step several times the rate
    opt = optimisers(c.train)[0]
    g = jnp.linspace(-1.0, 1.0, belief[0].mu.shape[0])
    def size(state):
        return float(jnp.max(jnp.abs(opt.update(g, state.opt_weights)[0])))
    zeroed = moved._replace(opt_weights=jax.tree.map(
        lambda a: jnp.zeros_like(a) if a.ndim == 1 else a, moved.opt_weights))
    assert size(back) <= 1.2 * c.train.lr_weights < 3 * c.train.lr_weights <= size(zeroed)


def test_time_budget_stops_at_the_best_model_reached(tiny_splits, tmp_path):
    out = tmp_path / "budget"
    res = trainer.train(cfg({"train.time_budget": 1e-6}), tiny_splits["train"], out_dir=out, progress=False,
                        log=lambda s: None)
    # the first outer step spends the budget: validated there, selected, checkpointed, stopped
    assert res.stop_reason == "time_budget" and int(res.state.step) == 1 and res.best_step == 0
    assert not res.converged
    _, _, extra = load_checkpoint(out / "checkpoint.npz", init_state(cfg(), 4, 2))
    assert extra["step"] == 1 and extra["stopping"]["seconds"] > 0


@pytest.mark.parametrize("score", ["mse", "traj_rel_l2", "d_stsp"])
def test_select_on_picks_the_model_by_that_validation_score(tiny_splits, score):
    res = trainer.train(cfg({"train.select_on": score, "train.val_every": 1}), tiny_splits["train"],
                        progress=False, log=lambda s: None)
    checks = [h for h in res.history if "val_score" in h]
    assert len(checks) >= 3
    for h in checks:  # every score is recorded; the chosen one is the selection score
        assert h["val_score"] == h[f"val_{score}"] and {"val_rel_mse", "val_mse", "val_traj_rel_l2"} <= set(h)
    assert res.best_step == min(checks, key=lambda h: h[f"val_{score}"])["step"]
    with pytest.raises(ValueError, match="train.select_on.: expected one of"):
        cfg({"train.select_on": "r2"})


def test_lr_scale_zero_leaves_the_weights_unchanged(tiny_splits):

    c = cfg()
    state = init_state(c, 4, 2)
    step = make_outer_step(c, 4)
    frozen, _ = step(state, _train_data(tiny_splits["train"])._replace(lr_scale=jnp.zeros((), jnp.float32)))
    moved, _ = step(state, _train_data(tiny_splits["train"]))
    np.testing.assert_array_equal(trained_vector(frozen.model), trained_vector(state.model))
    assert not np.array_equal(trained_vector(moved.model), trained_vector(state.model))
    assert not np.array_equal(frozen.contexts, state.contexts)  # the contexts still train
    still, _ = step(state, _train_data(tiny_splits["train"])._replace(ctx_scale=jnp.zeros((), jnp.float32)))
    np.testing.assert_array_equal(still.contexts, state.contexts)  # the guard's factor on the contexts
    assert not np.array_equal(trained_vector(still.model), trained_vector(state.model))


@pytest.mark.parametrize("guard", [1000.0, 0.0])
def test_divergence_guard_takes_back_the_update_that_blew_up(tiny_splits, monkeypatch, guard):
    real, kept = loop.make_outer_step, {}

    def poisoning(*a, **k):
        step, calls = real(*a, **k), {"n": 0}

        def wrapped(state, data):
            calls["n"] += 1
            new, info = step(state, data)
            if calls["n"] == 1:
                kept["sound"] = new  # the state the guard should return to
            if calls["n"] == 2:  # this update throws the weights far off: steps 2 and 3 blow up
                new = new._replace(model=jax.tree.map(lambda w: w * 30.0 if eqx.is_inexact_array(w) else w, new.model))
            return new, info

        return wrapped

    monkeypatch.setattr(loop, "make_outer_step", poisoning)
    res = trainer.train(cfg({"train.divergence_guard": guard}), tiny_splits["train"], progress=False,
                        log=lambda s: None)
    sound = np.median([h["weight_loss"] for h in res.history[:2]])
    assert all(not (h["weight_loss"] < 1000 * sound) for h in res.history[2:])  # guard or not
    if guard == 0:  # unguarded, training goes on from the thrown-off weights
        ratio = np.linalg.norm(trained_vector(res.state.model)) / np.linalg.norm(trained_vector(kept["sound"].model))
        assert all("diverged" not in h for h in res.history) and ratio > 10 and float(res.data.lr_scale) == 1.0
        assert res.steps_taken_back == 0
        return
    # one blown-up step is watched; the second in a row returns to the state after the first step
    assert [h.get("diverged", "")[:20] for h in res.history] == ["", "", "blown up once: watch", "taken back to the st"]
    assert res.history[3]["diverged"].startswith("taken back to the state before outer step 1, rates x0.5")
    np.testing.assert_array_equal(trained_vector(res.state.model), trained_vector(kept["sound"].model))
    np.testing.assert_array_equal(res.state.contexts, kept["sound"].contexts)
    assert int(res.state.step) == 4 and float(res.data.lr_scale) == 0.5 == float(res.data.ctx_scale)
    assert res.history[3]["lr_scale"] == 0.5 and res.steps_taken_back == 1
