"""The gate update (Algorithms 1-2): K-means, medians, pairing, least squares."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixerdsr import routing as gating
from mixerdsr.routing import (DEGENERATE, OK, RESEEDED, SKIPPED_EMPTY, GateSettings, cluster_medians, fit_gate,
                             LeastSquaresGate, gate_init, greedy_pairing, init_centroids, kmeans,
                             reassign_targets)


def gate_update(gate, state, contexts, losses, key, settings=GateSettings(), **kw):
    """Algorithm 1 as the ``[gate]`` table ``settings`` describes it."""
    return LeastSquaresGate.from_settings(settings).update(gate, state, contexts, losses, key, **kw)


def _blobs(seed=0, n=15, d=3, centers=((5.0, 0, 0), (-5.0, 0, 0), (0, 6.0, -3.0))):
    rng = np.random.default_rng(seed)
    pts = [np.asarray(c) + 0.2 * rng.standard_normal((n, d)) for c in centers]
    labels = np.repeat(np.arange(len(centers)), n)
    perm = rng.permutation(len(labels))
    return jnp.asarray(np.concatenate(pts)[perm], jnp.float32), labels[perm]


def _same_partition(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return all(len(set(b[a == k])) == 1 for k in np.unique(a)) and len(np.unique(a)) == len(np.unique(b))


@pytest.mark.parametrize("init", ["data", "kmeans++"])
def test_kmeans_recovers_separated_clusters(init):
    x, labels = _blobs()
    recovered = 0
    for s in range(8):
        c0 = init_centroids(jax.random.PRNGKey(s), x, 3, init)
        res = kmeans(x, c0)
        assert int(res.status) in (OK, RESEEDED)
        for k in np.unique(np.asarray(res.assign)):  # converged centroids are the cluster means
            np.testing.assert_allclose(res.centroids[k], x[np.asarray(res.assign) == k].mean(0), atol=1e-4)
        recovered += _same_partition(res.assign, labels)
    assert recovered >= 5  # Lloyd can stop in a local optimum from a bad start, but rarely here
    # from a good start it converges in very few iterations and recovers the partition exactly
    good = jnp.stack([x[np.argmax(labels == k)] for k in range(3)])
    res = kmeans(x, good)
    assert int(res.status) == OK and int(res.iterations) <= 3
    assert _same_partition(res.assign, labels)


def test_kmeans_uses_l1_assignment():
    # a point that is nearer to c0 in L2 but nearer to c1 in L1
    x = jnp.array([[1.0, 1.0], [0.0, 0.0], [3.0, 0.0]])
    c = jnp.array([[0.0, 0.0], [2.1, 0.0]])
    d1 = np.abs(np.asarray(x)[:, None] - np.asarray(c)[None]).sum(-1)
    res = kmeans(x, c, max_iters=1)
    # after one iteration the assignment is recomputed on the updated centroids; check the first
    # assignment through a zero-iteration call
    res0 = kmeans(x, c, max_iters=0)
    np.testing.assert_array_equal(res0.assign, d1.argmin(1))
    assert res.assign.shape == (3,)


def test_kmeans_empty_cluster_policies():
    x, labels = _blobs(n=10, centers=((5.0, 0, 0), (-5.0, 0, 0)))
    far = jnp.array([[5.0, 0, 0], [100.0, 100.0, 100.0]])  # second centroid attracts nobody
    skip = kmeans(x, far, empty_cluster="skip")
    assert int(skip.status) == SKIPPED_EMPTY
    reseed = kmeans(x, far, empty_cluster="reseed")
    assert int(reseed.status) == RESEEDED
    assert _same_partition(reseed.assign, labels)
    # all points equal: nothing to learn, reported as degenerate, never NaN
    same = kmeans(jnp.ones((6, 3)), jnp.ones((2, 3)))
    assert int(same.status) == DEGENERATE
    assert bool(jnp.all(jnp.isfinite(same.centroids)))


def test_data_init_on_sparse_split_contexts_never_leaves_a_cluster_empty():
    # split contexts: only the routed expert's slice is non-zero, most entries exactly 0
    rng = np.random.default_rng(0)
    x = np.zeros((40, 8), np.float32)
    x[:20, :4] = rng.normal(0.3, 0.05, (20, 4))
    x[20:, 4:] = rng.normal(-0.3, 0.05, (20, 4))
    x = jnp.asarray(x)
    statuses_data = [int(kmeans(x, init_centroids(jax.random.PRNGKey(s), x, 2, "data"), empty_cluster="reseed").status)
                     for s in range(10)]
    assert all(s <= RESEEDED for s in statuses_data)
    # and the uniform start in +-1e-3 stays inside the box the paper describes
    u = init_centroids(jax.random.PRNGKey(0), x, 2, "uniform")
    assert float(jnp.abs(u).max()) <= 1e-3


def test_cluster_medians_and_pairing_by_hand():
    losses = jnp.array([[1.0, 2.0, 3.0, 10.0, 20.0],
                        [4.0, 5.0, 6.0, 0.0, 1.0]])
    assign = jnp.array([0, 0, 0, 1, 1])
    med = cluster_medians(losses, assign, 2)
    np.testing.assert_allclose(med, [[2.0, 15.0], [5.0, 0.5]])
    np.testing.assert_array_equal(greedy_pairing(med), [0, 1])
    # both clusters prefer expert 0: cluster 0 (first in order) gets it, cluster 1 the other
    med2 = jnp.array([[0.1, 0.2], [1.0, 5.0]])
    np.testing.assert_array_equal(greedy_pairing(med2), [0, 1])
    np.testing.assert_array_equal(greedy_pairing(jnp.array([[0.5, 0.2], [0.1, 5.0]])), [1, 0])
    # failed solves (inf/nan) count as the worst loss
    med_nan = cluster_medians(jnp.array([[jnp.nan, jnp.nan], [1.0, 1.0]]), jnp.array([0, 0]), 2)
    assert bool(jnp.all(jnp.isfinite(med_nan[:, 0]))) and float(med_nan[0, 0]) > float(med_nan[1, 0])


def test_least_squares_equals_numpy_float64():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((30, 5)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 30)]
    w = np.asarray(fit_gate(jnp.asarray(x), jnp.asarray(y)))
    ref = np.linalg.lstsq(np.c_[x.astype(np.float64), np.ones(30)], y.astype(np.float64), rcond=None)[0]
    np.testing.assert_allclose(w, ref, atol=2e-5)
    # underdetermined (more context dims than envs, as ODEBench-2 with d_ctx = 40): minimum norm
    x2 = rng.standard_normal((6, 10)).astype(np.float32)
    y2 = np.eye(2, dtype=np.float32)[[0, 0, 0, 1, 1, 1]]
    w2 = np.asarray(fit_gate(jnp.asarray(x2), jnp.asarray(y2)))
    ref2 = np.linalg.lstsq(np.c_[x2.astype(np.float64), np.ones(6)], y2.astype(np.float64), rcond=None)[0]
    np.testing.assert_allclose(w2, ref2, atol=1e-4)


def test_least_squares_finite_when_contexts_equal():
    x = jnp.zeros((10, 4)) + 1e-4 * jax.random.normal(jax.random.PRNGKey(0), (10, 4))
    y = jax.nn.one_hot(jnp.arange(10) % 2, 2)
    assert bool(jnp.all(jnp.isfinite(fit_gate(x, y))))
    assert bool(jnp.all(jnp.isfinite(fit_gate(jnp.zeros((10, 4)), y))))


def test_gate_update_routes_clusters_to_best_experts():
    x, labels = _blobs(n=8, centers=((2.0, 0, 0), (-2.0, 0, 0)))
    # expert 1 is best on cluster "label 0", expert 0 on "label 1"
    losses = jnp.asarray(np.stack([np.where(labels == 1, 0.1, 1.0), np.where(labels == 0, 0.1, 1.0)]), jnp.float32)
    gate = jnp.zeros((4, 2))
    new, state, status = jax.jit(lambda g, s, c, k: gate_update(g, s, c, lambda: losses, k))(
        gate, gate_init(2, 3), x, jax.random.PRNGKey(0))
    assert int(status) in (OK, RESEEDED)
    assert bool(state.valid)
    route = np.asarray(jnp.argmax(jnp.c_[x, jnp.ones(len(x))] @ new, axis=1))
    np.testing.assert_array_equal(route, np.where(labels == 0, 1, 0))


def test_reassign_targets_by_hand():
    losses = jnp.asarray([[1.0, 1.0, 0.2, 2.0, jnp.inf],
                          [0.3, 1.0, 0.1, 1.5, 0.5]])
    target = jnp.asarray([0, 1, 0, 0, 0])
    # env 0: 0.3 < 0.5 * 1.0 -> expert 1; env 1: tie, stays; env 2: 0.1 not < 0.5 * 0.2, stays;
    # env 3: 1.5 not < 0.5 * 2.0, stays; env 4: failed solve under its target -> the finite expert
    np.testing.assert_array_equal(reassign_targets(losses, target, 0.5), [1, 1, 0, 0, 1])
    np.testing.assert_array_equal(reassign_targets(losses, target, 0.0), target)  # off: Algorithm 1
    # moves that would empty an expert are not made (collapse guard)
    ahead = jnp.asarray([[0.1, 0.1, 0.1], [1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(reassign_targets(ahead, jnp.asarray([0, 1, 1]), 0.5), [0, 1, 1])
    np.testing.assert_array_equal(reassign_targets(ahead, jnp.asarray([0, 1, 1]).at[1].set(0), 0.5), [0, 0, 1])
    # identical experts never move an env
    same = jnp.tile(jnp.asarray([[0.3, 2.0, 0.7]]), (3, 1))
    np.testing.assert_array_equal(reassign_targets(same, jnp.asarray([2, 0, 1]), 1.0), [2, 0, 1])


def test_gate_update_reassign_overrules_a_misclustered_env():
    # contexts of higher dimension than their number (as 40-D contexts of 10 envs), so the linear
    # gate can single out one env inside the other family's cloud
    c = np.zeros((2, 20))
    c[0, 0], c[1, 0] = 2.0, -2.0
    x, labels = _blobs(n=8, d=20, centers=c)
    odd = int(np.flatnonzero(labels == 0)[0])  # sits in cluster "label 0" but fits expert 1 far better
    l0 = np.where(labels == 0, 0.1, 1.0)
    l1 = np.where(labels == 1, 0.1, 1.0)
    l0[odd], l1[odd] = 2.0, 0.2
    losses = jnp.asarray(np.stack([l0, l1]), jnp.float32)
    want = labels.copy()
    for ratio, expect_odd in ((0.0, 0), (0.5, 1)):
        new, _, _ = gate_update(jnp.zeros((21, 2)), gate_init(2, 20), x, lambda: losses, jax.random.PRNGKey(0),
                                     GateSettings(reassign=ratio))
        route = np.asarray(jnp.argmax(jnp.c_[x, jnp.ones(len(x))] @ new, axis=1))
        want[odd] = expect_odd
        np.testing.assert_array_equal(route, want)
    with pytest.raises(ValueError, match="reassign"):
        GateSettings(reassign=1.5)


def test_gate_update_skips_and_keeps_gate_when_degenerate():
    gate = jnp.arange(8.0).reshape(4, 2)
    new, state, status = gate_update(gate, gate_init(2, 3), jnp.zeros((6, 3)), lambda: jnp.ones((2, 6)),
                                     jax.random.PRNGKey(0), GateSettings())
    assert int(status) == DEGENERATE
    np.testing.assert_array_equal(new, gate)
    assert not bool(state.valid)
    # with an aux value (e.g. a loss cache): the default comes back when no losses were computed
    out = gate_update(gate, gate_init(2, 3), jnp.zeros((6, 3)), lambda: (jnp.ones((2, 6)), jnp.ones(3)),
                      jax.random.PRNGKey(0), GateSettings(), aux_default=jnp.zeros(3))
    assert len(out) == 4 and int(out[2]) == DEGENERATE
    np.testing.assert_array_equal(out[3], 0.0)
    x, _ = _blobs(n=8, centers=((2.0, 0, 0), (-2.0, 0, 0)))
    # greedy pairing computes the losses (the default overlap pairing needs none)
    out = gate_update(gate, gate_init(2, 3), x, lambda: (jnp.ones((2, len(x))), jnp.ones(3)), jax.random.PRNGKey(0),
                      GateSettings(pairing="greedy"), aux_default=jnp.zeros(3))
    assert int(out[2]) in (OK, RESEEDED)
    np.testing.assert_array_equal(out[3], 1.0)


def test_gate_settings_validation():
    with pytest.raises(ValueError, match="'gate.centroid_init'"):
        GateSettings(centroid_init="random")
    with pytest.raises(ValueError, match="'gate.empty_cluster'"):
        GateSettings(empty_cluster="ignore")
    with pytest.raises(ValueError, match="'gate.mode'"):
        GateSettings(mode="soft")
    assert gating.STATUS_NAMES[SKIPPED_EMPTY] == "skipped_empty"


def test_overlap_pairing_keeps_the_experts_of_current_routes():
    # clusters numbered differently from the experts; cluster 0 mostly on expert 2, cluster 1 on
    # expert 0, cluster 2 on expert 1 (one env of cluster 2 sits on expert 0)
    assign = jnp.asarray([0, 0, 0, 1, 1, 2, 2, 2])
    current = jnp.asarray([2, 2, 1, 0, 0, 1, 1, 0])
    np.testing.assert_array_equal(gating.overlap_pairing(assign, current, 3), [2, 0, 1])
    # two clusters that both overlap one expert most: the larger overlap wins it, the other
    # cluster gets the free expert
    np.testing.assert_array_equal(gating.overlap_pairing(jnp.asarray([0, 0, 0, 1, 1]), jnp.asarray([1, 1, 1, 1, 1]), 2),
                                  [1, 0])


def test_gate_update_with_overlap_pairing_needs_no_losses_and_keeps_routes():
    x, labels = _blobs(n=8, centers=((2.0, 0, 0), (-2.0, 0, 0)))
    routed = np.where(labels == 0, 1, 0)  # the current gate sends cluster "label 0" to expert 1
    gate = fit_gate(x, jax.nn.one_hot(jnp.asarray(routed), 2))

    def no_losses():
        raise AssertionError("the overlap pairing without reassign must not compute losses")

    for seed in range(3):  # whatever the K-means cluster numbering
        new, _, status = gate_update(gate, gate_init(2, 3), x, no_losses, jax.random.PRNGKey(seed),
                                     GateSettings(pairing="overlap"))
        assert int(status) in (OK, RESEEDED)
        np.testing.assert_array_equal(np.argmax(np.c_[x, np.ones(len(x))] @ np.asarray(new), axis=1), routed)
    with pytest.raises(ValueError, match="'gate.pairing'"):
        GateSettings(pairing="hungarian")


def test_seed_routes_recovers_clusters_of_unequal_scale():
    # the second coordinate is 100x larger and carries no cluster structure: standardising every
    # dimension lets the first one count
    x, labels = _blobs(n=10, d=2, centers=((3.0, 0.0), (-3.0, 0.0), (0.0, 0.0)))
    x = x.at[:, 1].multiply(100.0)
    assign, inertia = gating.seed_routes(jax.random.PRNGKey(0), x, 3, restarts=5)
    assert _same_partition(assign, labels)
    assert float(inertia) > 0


@pytest.mark.parametrize("pairing", ["greedy", "overlap"])
def test_gate_update_leaves_switched_off_experts_out(pairing):
    # 4 experts, 1 and 3 switched off (the number of experts chosen from the data): two clusters
    # must go to experts 0 and 2 even where a switched-off expert fits best or comes first
    x, labels = _blobs(n=8, centers=((2.0, 0, 0), (-2.0, 0, 0)))
    on = np.array([True, False, True, False])
    gate = jnp.zeros((4, 4)).at[-1].set(jnp.where(jnp.asarray(on), 0.0, gating.INACTIVE_BIAS))
    np.testing.assert_array_equal(gating.active_from_gate(gate), on)
    losses = np.stack([np.where(labels == 1, 0.1, 1.0), np.full(len(labels), 0.01),
                       np.where(labels == 0, 0.1, 1.0), np.full(len(labels), 0.01)])
    new, state, status = gate_update(gate, gate_init(4, 3), x, lambda: jnp.asarray(losses, jnp.float32),
                                     jax.random.PRNGKey(0), GateSettings(pairing=pairing))
    assert int(status) in (OK, RESEEDED), "switched-off clusters are not empty clusters"
    np.testing.assert_array_equal(gating.active_from_gate(new), on)
    route = np.asarray(jnp.argmax(jnp.c_[x, jnp.ones(len(x))] @ new, axis=1))
    assert _same_partition(route, labels) and set(route) == {0, 2}
    if pairing == "greedy":  # by loss: expert 2 fits "label 0"
        np.testing.assert_array_equal(route, np.where(labels == 0, 2, 0))
    # K-means itself: no point goes to a switched-off cluster, and they are not re-seeded
    res = kmeans(x, jnp.asarray(x[:4]), active=jnp.asarray(on))
    assert set(np.asarray(res.assign).tolist()) <= {0, 2} and int(res.status) in (OK, RESEEDED)
    np.testing.assert_array_equal(res.centroids[1], x[1])


def test_spectral_seeding_keeps_curved_groups_together():
    # two long parallel lines (two families, each varied along one parameter) and a short group
    # far away: K-means cuts the lines across, the nearest-neighbour graph follows them
    t = np.linspace(0.0, 1.0, 12)
    x = jnp.asarray(np.r_[np.c_[10 * t, 0 * t], np.c_[10 * t, 0 * t + 3.0], np.c_[5 + 0.5 * t, 8 + 0 * t]], jnp.float32)
    labels = np.repeat([0, 1, 2], 12)
    key = jax.random.PRNGKey(0)
    by_kmeans, _ = gating.seed_routes(key, x, 3, restarts=5)
    by_graph, _ = gating.seed_routes(key, x, 3, restarts=5, method="spectral", neighbours=3)
    assert not _same_partition(by_kmeans, labels)
    assert _same_partition(by_graph, labels)
    assert gating.auto_neighbours(160, 10) == 15 and gating.auto_neighbours(50, 10) == 5
    assert gating.auto_neighbours(4, 2) == 3
    with pytest.raises(ValueError, match="clustering method"):
        gating.seed_routes(key, x, 3, method="dbscan")
