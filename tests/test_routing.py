"""Each routing object alone: the gate updates of the compiled step and the host-side policies."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixerdsr.routing import (OK, SKIPPED_EMPTY, ChosenCount, FixedCount, FromStart, FrozenGate, GateSettings,
                              GradientGate, LeastSquaresGate, WarmStart, gate_init, gate_update_of, policy_of)
from mixerdsr.training import init_state

from conftest import tiny_cfg

A = 0.5  # two groups of contexts far from the paper's centroid start in U(-1e-3, 1e-3)


def _two_groups():
    rng = np.random.default_rng(0)
    pts = np.r_[np.full((4, 2), A), np.full((4, 2), -A)] + 0.01 * rng.standard_normal((8, 2))
    return jnp.asarray(pts, jnp.float32)


def _route(gate, x):
    return np.asarray(jnp.argmax(x @ gate[:-1] + gate[-1], axis=1))


def test_published_algorithm1_pairs_clusters_greedily_in_cluster_order():
    # Every env fits expert 0 best. Algorithm 1 pairs in cluster order: the first cluster takes
    # expert 0 (lowest median), the second the only expert left, whatever its loss.
    x = _two_groups()
    losses = jnp.asarray(np.r_[[np.full(8, 0.1)], [np.full(8, 0.9)]], jnp.float32)  # [M, E]
    upd = LeastSquaresGate.published()
    assert (upd.centroid_init, upd.empty_cluster, upd.pairing, upd.reassign) == ("uniform", "skip", "greedy", 0.0)
    gate, state, status = upd.update(jnp.zeros((3, 2)), upd.init(2, 2), x, lambda: losses, jax.random.PRNGKey(0))
    assert int(status) == OK and bool(state.valid)
    # cluster 0 holds the envs nearest its centroid; the gate routes them to expert 0
    first = np.abs(np.asarray(x)[:, None] - np.asarray(state.centroids)[None]).sum(-1).argmin(1) == 0
    assert 0 < first.sum() < 8
    np.testing.assert_array_equal(_route(gate, x), np.where(first, 0, 1))


def test_published_algorithm1_skips_an_update_with_an_empty_cluster():
    # all contexts on one side of the start: the paper's U(-1e-3, 1e-3) centroids leave a cluster
    # empty and the update is skipped (gate kept); the package's default starts on data points
    x = jnp.abs(_two_groups()) + 1.0
    losses = jnp.ones((2, 8))
    gate0 = jnp.zeros((3, 2)).at[-1, 1].set(1.0)
    skipped = [int(LeastSquaresGate.published().update(gate0, gate_init(2, 2), x, lambda: losses,
                                                         jax.random.PRNGKey(s))[2]) for s in range(5)]
    assert SKIPPED_EMPTY in skipped
    new, _, status = LeastSquaresGate().update(gate0, gate_init(2, 2), x, lambda: losses, jax.random.PRNGKey(0))
    assert int(status) == OK and not np.array_equal(np.asarray(new), np.asarray(gate0))


def test_frozen_and_gradient_gates():
    gate = jnp.ones((3, 2))
    new, state, status = FrozenGate().update(gate, gate_init(2, 2), _two_groups(), lambda: 1 / 0,
                                             jax.random.PRNGKey(0))
    assert int(status) == -1 and new is gate and not FrozenGate.in_step
    g = GradientGate(importance_weight=0.5)
    assert g.trains_gate and not g.in_step
    assert float(g.penalty(jnp.asarray([0.5, 0.5]))) == 0.0  # balanced load: no penalty
    # squared coefficient of variation of [0.9, 0.1]: var 0.16 / mean^2 0.25 = 0.64, times 0.5
    assert float(g.penalty(jnp.asarray([0.9, 0.1]))) == pytest.approx(0.32, rel=1e-5)
    assert float(GradientGate(0.0).penalty(jnp.asarray([0.9, 0.1]))) == 0.0
    assert isinstance(gate_update_of(GateSettings(mode="gradient")), GradientGate)
    assert isinstance(gate_update_of(GateSettings(mode="frozen")), FrozenGate)
    assert gate_update_of(GateSettings(pairing="overlap", every=3)) == LeastSquaresGate(pairing="overlap", every=3)


def _grouped_state(c, n_envs=8):
    """A state whose contexts (the part expert 0 sees) hold two groups."""
    st = init_state(c, n_envs, 2)
    own = np.asarray(_two_groups())
    ctx = np.zeros(st.contexts.shape, np.float32)
    ctx[:, :2] = own
    return st._replace(contexts=jnp.asarray(ctx))


def test_warm_start_policy_phases_seeding_and_its_state():
    c = tiny_cfg({"gate.router": "warm_start", "gate.warm_start.warmup": 2, "gate.warm_start.batch": -1})
    policy = policy_of(c)
    assert isinstance(policy, WarmStart) and isinstance(policy.grouping, FixedCount)
    assert policy.gate_from() == 2 and policy.phase() == "warmup"
    assert policy.step_config(c, 8).train.batch_envs == 8  # the warm-up's batch: all envs
    st = _grouped_state(c)
    for s in (0, 1):
        same, event = policy.before_step(s, st, lambda _: 1 / 0)
        assert event is None and same is st
    st = st._replace(opt_weights=jax.tree.map(lambda a: a + 5 if a.ndim == 0 else a, st.opt_weights))  # 5 steps
    seeded, event = policy.before_step(2, st, lambda _: 1 / 0)  # a fixed count needs no fit
    # the weights' optimiser starts afresh (gate.warm_start.fresh_moments, the default): its
    # adaptive state's count back to 0, the rate schedule's kept; with the setting off, copied
    counts = [int(a) for a in jax.tree.leaves(seeded.opt_weights) if a.ndim == 0]
    assert sorted(counts) == [0, 5]
    copied = policy_of(c.override({"gate.warm_start.fresh_moments": False})).before_step(2, st, None)[0]
    assert [int(a) for a in jax.tree.leaves(copied.opt_weights) if a.ndim == 0] == [5, 5]
    assert set(event.assign[:4].tolist()) != set(event.assign[4:].tolist())
    assert "routes seeded" in event.message and event.record == {}
    np.testing.assert_allclose(event.contexts, np.asarray(st.contexts)[:, :2])  # expert 0's part, grouped
    assert policy.phase() == "routed" and policy.step_config(c, 8) == c
    assert policy.state_dict() == {"seeded": True, "n_active": 2}
    assert policy.before_step(3, seeded, None)[1] is None  # seeded once
    # a fresh policy restored from that state is past the warm-up; an old checkpoint (no state)
    # is judged by its step
    again = policy_of(c)
    again.load_state_dict(policy.state_dict(), 3, seeded.model)
    assert again.phase() == "routed"
    old = policy_of(c)
    old.load_state_dict({}, 2, st.model)
    assert old.phase() == "warmup"


def test_chosen_count_groups_unless_one_expert_fits():
    c = tiny_cfg({"gate.router": "warm_start", "gate.warm_start.grouping": "silhouette", "gate.warm_start.single_fit": 0.5})
    policy = policy_of(c)
    assert isinstance(policy.grouping, ChosenCount) and policy.grouping.needs_fit
    key, own = jax.random.PRNGKey(0), _two_groups()
    assign, active, choice = policy.grouping.groups(key, own, 2, np.full(8, 2.0))  # the shared expert fits badly
    assert choice["experts"] == 2 and active.tolist() == [True, True] and choice["silhouette"]["2"] > 0.5
    assert len(set(np.asarray(assign)[:4])) == 1 and np.asarray(assign)[0] != np.asarray(assign)[4]
    assign, active, choice = policy.grouping.groups(key, own, 2, np.full(8, 0.01))  # it fits every group
    assert choice["experts"] == 1 and active.tolist() == [True, False] and not np.any(np.asarray(assign))


def test_eigengap_counts_separated_groups():
    from mixerdsr.routing import eigengap_count, laplacian_spectrum

    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0, 0.0], [6.0, 0.0, 0.0], [0.0, 6.0, 0.0], [0.0, 0.0, 6.0]])
    pts = np.concatenate([c + 0.3 * rng.standard_normal((6, 3)) for c in centres])  # 4 groups of 6
    lam = laplacian_spectrum(pts, 5)
    assert np.allclose(lam[:4], 0.0, atol=1e-8) and lam[4] > 0.1  # one zero eigenvalue per connected group
    k, first = eigengap_count(pts, 10)
    assert k == 4 and len(first) == 11
    assert eigengap_count(pts, 3)[0] == 3  # more pieces than the cap: the cap
    assert eigengap_count(pts, 2, neighbours=3)[0] == 2
    assert eigengap_count(pts[:2], 10)[0] == 1  # too few points to group
    # five overlapping groups of five: a graph of 5 neighbours joins every point to another group
    # and finds 3; 3 neighbours (the default, fewer than a group's other members) find all 5
    rng = np.random.default_rng(0)
    ring = np.stack([np.cos(np.arange(5) * 2 * np.pi / 5), np.sin(np.arange(5) * 2 * np.pi / 5)], 1)
    five = np.concatenate([c + 0.4 * rng.standard_normal((5, 2)) for c in ring])
    assert eigengap_count(five, 10, neighbours=5)[0] == 3 and eigengap_count(five, 10)[0] == 5
    # the policy: grouping = "eigengap" forms that many groups and records the spectrum
    c = tiny_cfg({"gate.router": "warm_start", "gate.warm_start.grouping": "eigengap", "model.num_experts": 4,
                  "model.context_size": 12, "gate.warm_start.single_fit": 0.0})
    policy = policy_of(c)
    assert isinstance(policy.grouping, ChosenCount) and policy.grouping.rule == "eigengap"
    assign, active, choice = policy.grouping.groups(jax.random.PRNGKey(0), jnp.asarray(pts, jnp.float32), 4,
                                                    np.ones(len(pts)))
    assert choice["experts"] == 4 and active.tolist() == [True] * 4 and len(choice["eigenvalues"]) == 5
    labels = np.asarray(assign).reshape(4, 6)
    assert all(len(set(row)) == 1 for row in labels) and len({row[0] for row in labels}) == 4
    assert "largest eigengap" in policy.grouping.describe(choice, 4)
    # a warm-up that chooses the count runs 100 steps (a third of a shorter run), a fixed one a fifth
    assert policy_of(c.override({"train.outer_steps": 300})).warmup == 100
    assert policy_of(c.override({"train.outer_steps": 90})).warmup == 30
    fixed = c.override({"train.outer_steps": 300, "gate.warm_start.grouping": "fixed"})
    assert policy_of(fixed).warmup == 60
    assert policy_of(c.override({"train.outer_steps": 300, "gate.warm_start.warmup": 7})).warmup == 7


def test_from_start_policy_never_changes_the_routing():
    c = tiny_cfg()
    policy = policy_of(c)
    assert isinstance(policy, FromStart) and policy.update == LeastSquaresGate.from_settings(c.gate)
    st = init_state(c, 4, 2)
    assert policy.gate_from() == 0 and policy.phase() == "routed" and policy.step_config(c, 4) is c
    assert policy.before_step(0, st, None) == (st, None) and policy.state_dict() == {}
    # one expert, or a gate trained by its gradient: nothing to warm up whatever gate.router says
    assert isinstance(policy_of(tiny_cfg({"gate.router": "warm_start", "gate.mode": "gradient"})), FromStart)
    assert isinstance(policy_of(tiny_cfg({"gate.router": "warm_start", "model.num_experts": 1,
                                          "model.context_size": 2})), FromStart)
