"""The pieces of the least-squares gate update (Algorithm 1) and Lloyd's K-means (Algorithm 2).

Everything here is a pure, jittable function with fixed shapes: assignments are one-hot
matrices, cluster statistics are matrix products, medians are masked sorts; nothing indexes
with boolean masks, nothing prints. Outcomes are returned as values (:data:`STATUS_NAMES`);
the caller applies the policy and counts them.

Defaults that keep the update working: centroids start **on data points**, because with split
contexts most context entries stay exactly 0 and a uniform start in +-1e-3 leaves a cluster
empty on every update; an empty cluster is re-seeded at the point farthest from its centroid
(or, with ``empty_cluster="skip"``, the update is skipped as in the paper); the fit is a
minimum-norm least-squares solve that stays finite when all contexts are equal.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

__all__ = [
    "GateState",
    "KMeansResult",
    "STATUS_NAMES",
    "OK",
    "RESEEDED",
    "SKIPPED_EMPTY",
    "DEGENERATE",
    "INACTIVE_BIAS",
    "init_centroids",
    "kmeans",
    "cluster_medians",
    "greedy_pairing",
    "overlap_pairing",
    "reassign_targets",
    "fit_gate",
    "gate_init",
    "active_from_gate",
]

#: K-means / gate-update outcomes.
OK, RESEEDED, SKIPPED_EMPTY, DEGENERATE = 0, 1, 2, 3

#: gate bias of an expert not in use (the number of experts chosen from the data): no context
#: is routed to it, and the gate update leaves it out (:func:`active_from_gate`)
INACTIVE_BIAS = -1e4
STATUS_NAMES = ("ok", "reseeded", "skipped_empty", "degenerate")


class GateState(NamedTuple):
    """Centroids kept between gate updates (``valid=False``: start afresh next time)."""

    centroids: Float[Array, "M d"]
    valid: Bool[Array, ""]


class KMeansResult(NamedTuple):
    centroids: Float[Array, "M d"]
    assign: Int[Array, " E"]
    status: Int[Array, ""]
    iterations: Int[Array, ""]


def _l1(x: Float[Array, "E d"], c: Float[Array, "M d"]) -> Float[Array, "E M"]:
    return jnp.abs(x[:, None, :] - c[None, :, :]).sum(-1)


def init_centroids(
    key: PRNGKeyArray, x: Float[Array, "E d"], n_clusters: int, method: str = "data"
) -> Float[Array, "M d"]:
    """Initial centroids: ``"data"`` (distinct random points; needs E >= M), ``"kmeans++"`` or ``"uniform"``."""
    n = x.shape[0]
    if method == "uniform":
        return jax.random.uniform(key, (n_clusters, x.shape[1]), x.dtype, -1e-3, 1e-3)
    if method == "data":
        idx = jax.random.permutation(key, n)[:n_clusters] if n >= n_clusters else jnp.arange(n_clusters) % n
        return x[idx]
    # k-means++ with L1 distances (fixed number of draws -> scan)
    k0, kr = jax.random.split(key)
    first = x[jax.random.randint(k0, (), 0, n)]
    cent = jnp.zeros((n_clusters, x.shape[1]), x.dtype).at[0].set(first)

    def body(carry, inp):
        cent, mind = carry
        j, k = inp
        p = jnp.where(mind.sum() > 0, mind / jnp.maximum(mind.sum(), 1e-30), 1.0 / n)
        i = jax.random.choice(k, n, p=p)
        cent = cent.at[j].set(x[i])
        mind = jnp.minimum(mind, jnp.abs(x - x[i]).sum(-1))
        return (cent, mind), None

    mind0 = jnp.abs(x - first).sum(-1)
    (cent, _), _ = jax.lax.scan(body, (cent, mind0), (jnp.arange(1, n_clusters), jax.random.split(kr, n_clusters - 1)))
    return cent


def kmeans(
    x: Float[Array, "E d"],
    centroids: Float[Array, "M d"],
    *,
    max_iters: int = 20,
    tol: float = 1e-3,
    empty_cluster: str = "reseed",
    active: Bool[Array, " M"] | None = None,
) -> KMeansResult:
    """Lloyd's K-means with L1 assignment and mean update (Algorithm 2).

    Args:
        x: points (contexts) ``[E, d]``.
        centroids: starting centroids ``[M, d]``.
        max_iters: iteration cap.
        tol: stop when no centroid coordinate moves by more than ``tol``.
        empty_cluster: ``"reseed"`` moves an empty cluster's centroid to the point farthest from its
            nearest centroid and continues; ``"skip"`` stops with status ``SKIPPED_EMPTY``.
        active: ``[M]`` the clusters in use (default: all); the others get no point, are
            never re-seeded and do not count as empty.

    Returns:
        :class:`KMeansResult` (centroids, assignment ``[E]`` of the final centroids, status,
        iterations). Status ``DEGENERATE`` when a cluster is empty and every point coincides
        with a centroid (e.g. all contexts equal): nothing to learn from.
    """
    n_clusters = centroids.shape[0]
    on = jnp.ones((n_clusters,), bool) if active is None else active

    def dist(cent):
        return jnp.where(on[None, :], _l1(x, cent), jnp.inf)

    def cond(c):
        _, it, done, _ = c
        return (it < max_iters) & ~done

    def body(c):
        cent, it, _, status = c
        d = dist(cent)
        a = jax.nn.one_hot(jnp.argmin(d, axis=1), n_clusters, dtype=x.dtype)
        counts = a.sum(0)
        empty = (counts == 0) & on
        any_empty = jnp.any(empty)
        mean = (a.T @ x) / jnp.maximum(counts, 1.0)[:, None]
        new = jnp.where((counts > 0)[:, None], mean, cent)
        # empty cluster: re-seed at the point farthest from its nearest centroid
        mind = d.min(axis=1)
        far = jnp.argmax(mind)
        j = jnp.argmax(empty)
        degenerate = any_empty & (mind[far] <= 0)
        if empty_cluster == "reseed":
            new = jnp.where(any_empty, new.at[j].set(x[far]), new)
            status = jnp.where(degenerate, DEGENERATE, jnp.where(any_empty, jnp.maximum(status, RESEEDED), status))
            done = degenerate | (~any_empty & (jnp.max(jnp.abs(new - cent)) < tol))
        else:
            status = jnp.where(degenerate, DEGENERATE, jnp.where(any_empty, SKIPPED_EMPTY, status))
            done = any_empty | (jnp.max(jnp.abs(new - cent)) < tol)
        return new, it + 1, done, status

    init = (centroids, jnp.zeros((), jnp.int32), jnp.zeros((), bool), jnp.asarray(OK, jnp.int32))
    cent, it, _, status = jax.lax.while_loop(cond, body, init)
    assign = jnp.argmin(dist(cent), axis=1)
    still_empty = jnp.any((jax.nn.one_hot(assign, n_clusters).sum(0) == 0) & on)
    status = jnp.where(still_empty & (status < SKIPPED_EMPTY), SKIPPED_EMPTY, status)
    return KMeansResult(cent, assign, status, it)


def cluster_medians(losses: Float[Array, "M E"], assign: Int[Array, " E"], n_clusters: int) -> Float[Array, "M C"]:
    """Median loss of every expert over the members of every cluster (line 8).

    Non-finite losses (failed solves) count as the largest possible loss. Returns ``[M, C]``.
    """
    big = jnp.finfo(losses.dtype).max / 4
    losses = jnp.where(jnp.isfinite(losses), losses, big)
    member = jax.nn.one_hot(assign, n_clusters, dtype=bool)  # [E, C]

    def one(mask):
        vals = jnp.sort(jnp.where(mask[None, :], losses, jnp.inf), axis=1)
        n = jnp.maximum(mask.sum(), 1)
        lo = jnp.take(vals, (n - 1) // 2, axis=1)
        hi = jnp.take(vals, n // 2, axis=1)
        return 0.5 * (lo + hi)

    return jax.vmap(one, in_axes=1, out_axes=1)(member)


def greedy_pairing(medians: Float[Array, "M C"]) -> Int[Array, " C"]:
    """Unique expert for every cluster, greedily in cluster order (lines 9-18).

    Cluster ``c`` takes the expert with the lowest median loss among those not yet taken.
    """
    n_experts = medians.shape[0]

    def body(taken, col):
        m = jnp.argmin(jnp.where(taken, jnp.inf, col))
        return taken.at[m].set(True), m

    _, pairs = jax.lax.scan(body, jnp.zeros((n_experts,), bool), medians.T)
    return pairs


def overlap_pairing(
    assign: Int[Array, " E"], current: Int[Array, " E"], n_experts: int, active: Bool[Array, " M"] | None = None
) -> Int[Array, " C"]:
    """Unique expert for every cluster by overlap with the current routes.

    Repeatedly the (cluster, expert) pair sharing the most envs among those left is matched
    (ties: lowest indices), so every cluster keeps the expert most of its members already use
    where it can. With ``active`` (``[M]``, clusters and experts in use), a cluster in use is
    only paired with an expert in use. Returns ``[C]`` (C = M).
    """
    overlap = jax.nn.one_hot(assign, n_experts).T @ jax.nn.one_hot(current, n_experts)  # [C, M]
    if active is not None:  # mixed pairs (in use with not in use) last, after every other pair
        overlap = jnp.where(active[:, None] == active[None, :], overlap, -0.5)

    def body(_, carry):
        ov, pairs = carry
        flat = jnp.argmax(ov)
        c, m = flat // n_experts, flat % n_experts
        ov = ov.at[c, :].set(-1.0).at[:, m].set(-1.0)
        return ov, pairs.at[c].set(m)

    _, pairs = jax.lax.fori_loop(0, n_experts, body, (overlap, jnp.zeros((n_experts,), jnp.int32)))
    return pairs


def fit_gate(x: Float[Array, "E d"], targets: Float[Array, "E M"]) -> Float[Array, "d1 M"]:
    """Least-squares gate ``W`` minimising ``||[x, 1] W - targets||`` (minimum-norm solution).

    Solved by SVD (``jnp.linalg.lstsq``), so it agrees with NumPy's ``lstsq`` on well-posed
    problems and stays finite on rank-deficient ones (all contexts equal).
    """
    xb = jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=1)
    w, *_ = jnp.linalg.lstsq(xb, targets)
    return w


def reassign_targets(losses: Float[Array, "M E"], target: Int[Array, " E"], ratio: float) -> Int[Array, " E"]:
    """Per-env override of the cluster targets (see :attr:`GateSettings.reassign`).

    Args:
        losses: loss of every expert on every env ``[M, E]`` (``inf`` = failed solve).
        target: expert of each env from the cluster pairing ``[E]``.
        ratio: 0 = off; else an env moves to its best expert when that expert's loss is below
            ``ratio`` times the loss under ``target``, unless the moves together would leave an
            expert of ``target`` without envs (then nothing moves).

    Returns:
        ``[E]`` target experts.
    """
    if ratio <= 0.0:
        return target
    n_experts = losses.shape[0]
    best = jnp.argmin(losses, axis=0)
    cur = jnp.take_along_axis(losses, target[None], axis=0)[0]
    low = jnp.min(losses, axis=0)
    moved = jnp.where(low < ratio * cur, best, target)
    # never let the override empty an expert that the pairing gave envs (one expert that is
    # ahead early in training would otherwise take every env: collapse)
    before = jnp.bincount(target, length=n_experts) > 0
    after = jnp.bincount(moved, length=n_experts) > 0
    return jnp.where(jnp.all(after | ~before), moved, target)


def gate_init(n_experts: int, context_size: int, dtype=jnp.float32) -> GateState:
    return GateState(jnp.zeros((n_experts, context_size), dtype), jnp.zeros((), bool))


def active_from_gate(gate: Float[Array, "d1 M"]) -> Bool[Array, " M"]:
    """``[M]`` the experts a context can be routed to: those whose gate bias is not
    :data:`INACTIVE_BIAS` (every expert unless the number of experts was chosen from the data)."""
    return gate[-1] > INACTIVE_BIAS / 2
