"""The least-squares gate update (Algorithm 1) with Lloyd's K-means (Algorithm 2).

Everything here is a pure, jittable function with fixed shapes: assignments are one-hot
matrices, cluster statistics are matrix products, medians are masked sorts; nothing indexes
with boolean masks, nothing prints. Outcomes are returned as values (:data:`STATUS_NAMES`);
the caller applies the policy and counts them.

Defaults that keep the update working: centroids start **on data points**, because with split
contexts most context entries stay exactly 0 and a uniform start in +-1e-3 leaves a cluster
empty on every update; an empty cluster is re-seeded at
the point farthest from its centroid (or, with ``empty_cluster="skip"``, the update is skipped as in the
paper); the fit is a minimum-norm least-squares solve that stays finite when all contexts are
equal.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from ._rand import normal
from ._settings import AT_LEAST_0, AT_LEAST_1, Range, validate

__all__ = [
    "GateSettings",
    "GateState",
    "KMeansResult",
    "STATUS_NAMES",
    "OK",
    "RESEEDED",
    "SKIPPED_EMPTY",
    "DEGENERATE",
    "init_centroids",
    "kmeans",
    "cluster_medians",
    "greedy_pairing",
    "overlap_pairing",
    "reassign_targets",
    "fit_gate",
    "gate_init",
    "gate_update",
    "seed_routes",
    "INACTIVE_BIAS",
    "active_from_gate",
    "silhouette",
    "choose_count",
]

#: K-means / gate-update outcomes.
OK, RESEEDED, SKIPPED_EMPTY, DEGENERATE = 0, 1, 2, 3

#: gate bias of an expert not in use (the number of experts chosen from the data): no context
#: is routed to it, and the gate update leaves it out (:func:`active_from_gate`)
INACTIVE_BIAS = -1e4
STATUS_NAMES = ("ok", "reseeded", "skipped_empty", "degenerate")


@typing.no_type_check  # validates itself, naming the key
@dataclasses.dataclass(frozen=True)
class GateSettings:
    """Settings of the gate, the ``[gate]`` table of a run configuration.

    Attributes:
        mode: how the gate is trained: ``"lstsq"`` (MixER: K-means + least squares,
            Algorithm 1), ``"gradient"`` (a naive mixture of experts: the gate gets the loss's
            gradient) or ``"frozen"`` (never updated).
        every: least-squares update after every ``every``-th inner step (paper: 1; the number
            of inner steps = once per outer step).
        kmeans_iters: maximum Lloyd iterations (paper: 20).
        kmeans_tol: convergence tolerance on the largest centroid change (paper: 1e-3).
        noise: std of the Gaussian noise added to the contexts before the fit (paper: 1e-4).
        centroid_init: centroid initialisation: ``"data"`` (Forgy: distinct random data
            points), ``"kmeans++"`` (L1 k-means++), or ``"uniform"`` (the paper's
            U(-1e-3, 1e-3)).
        empty_cluster: empty-cluster policy: ``"reseed"`` (move the centroid to the farthest
            point) or ``"skip"`` (the paper: skip this update and restart centroids next time).
        reassign: 0 (the paper) or a ratio in (0, 1]: after the cluster-expert pairing, an env
            whose loss under some other expert is below ``reassign`` times its loss under its
            cluster's expert gets that expert as its target instead. Algorithm 1 decides per
            cluster, so an env that K-means keeps among another family's contexts stays on the
            wrong expert for good (its context is then only trained by that expert); this lets
            the per-env losses, which Algorithm 1 computes anyway, overrule a clear misfit.
            Identical experts (as at initialisation) never trigger it, and moves that would
            leave an expert without envs are not made.
        chunk: envs per vmapped batch of the update's all-expert loss pass (0 = all at once;
            -1 = the training batch size, whose compiled solver kernels the pass then shares
            with the training step, or 32 with ``train.low_memory_compile``). A vmapped
            adaptive solve runs every member to the slowest one's step count, so on a CPU
            batches are faster than one batch of all envs; an accelerator may prefer 0.
        importance_weight: ``mode = "gradient"`` only: weight of the load-balancing
            (importance) penalty.
        warmup: 0 (the paper) or a number of outer steps during which every env is routed to
            one expert and the gate is not updated; then the routes are **seeded** from the
            contexts this shared expert learned (K-means on them, :func:`seed_routes`), every
            expert starts as a copy of the shared one and every env's context is moved into its
            expert's part. The paper's start clusters near-zero contexts at initialisation
            and, with split contexts, each env's context then only ever learns in the part of
            the expert it was first routed to, which locks those first (noise-driven) routes
            in; contexts learned by one shared expert separate the families instead.
        warmup_batch: envs per training batch during the warm-up: 0 = the training batch
            (``train.batch_envs``, by default E / M), -1 = all envs, else that many. The warm-up
            trains one expert; with E / M envs it sees a tenth of the data per step that a single
            meta-learner would with M = 10 (on LV, `--experts auto` choosing one expert ended at
            2.4x the single meta-learner's test MSE with E / 3, the same with all envs).
        pairing: how the K-means clusters get their experts: ``"greedy"`` (the paper: in
            cluster order, the not yet taken expert with the lowest median loss) or
            ``"overlap"`` (the expert already routing most of the cluster's envs, matched
            greedily by largest overlap; :func:`overlap_pairing`). Early in training the
            experts' losses differ by less than their noise (contexts barely change the fit
            yet), so the paper's pairing relabels clusters at random and, with split contexts,
            every relabelled env restarts from an untrained context part; ``"overlap"`` changes
            an env's expert only where the clustering itself changed.
        seed_restarts: K-means restarts (k-means++ starts, the lowest L1 inertia kept) when the
            routes are seeded after ``warmup``.
        seed_method: how the warm-up's contexts are grouped when the routes are seeded:
            ``"kmeans"`` (L1 K-means, the best of ``seed_restarts``) or ``"spectral"`` (the same
            K-means on a spectral embedding of the contexts' nearest-neighbour graph,
            :func:`spectral_embedding`). One family's environments vary along one or two
            physical parameters, so its contexts lie along a curve: K-means cuts a long curve
            in two and merges two short ones, the graph follows it (measured on ODEBench-10B
            in ``docs/routing.md``). With ``choose = "silhouette"`` the number of groups is
            still chosen by K-means; the chosen number of groups is then formed by this method.
        seed_neighbours: ``seed_method = "spectral"``: neighbours per environment in the graph
            (0: the mean group size, 3 to 15, :func:`auto_neighbours`).
        seed_from: the experts' weights when the routes are seeded after ``warmup``:
            ``"shared"`` (copies of the warm-up's shared expert) or ``"init"`` (every expert back
            to its initial weights and its optimiser moments to zero; the routes and contexts
            the warm-up found are kept). Measured in ``docs/routing.md``.
        choose: ``"fixed"`` (``model.num_experts`` experts) or ``"silhouette"``: the number of
            experts is chosen when the routes are seeded after ``warmup`` (which must be > 0),
            up to ``model.num_experts``: the number of groups the shared expert's contexts fall
            into most clearly (mean silhouette, :func:`choose_count`; see ``silhouette_slack``), or one expert
            when no grouping reaches ``silhouette_min``; the other experts are switched off
            (never routed to, left out of every gate update).
        silhouette_min: ``choose = "silhouette"``: the mean silhouette a grouping needs to be
            used (0.5: at least "reasonable structure" in Kaufman and Rousseeuw's scale).
        single_fit: ``choose = "silhouette"``: when the warm-up's shared expert already
            forecasts the validation trajectories of every group of contexts with a typical
            relMSE (geometric mean over the group's envs) below this, it stays the only expert
            whatever its contexts look like: closely related systems (LV, GO) share one
            expert, families it cannot fit are split (0 = always by the silhouette; figures in
            ``docs/routing.md``).
        silhouette_slack: ``choose = "silhouette"``: the largest number of groups whose mean
            silhouette is within this of the highest is chosen (0: the highest). Merging two
            families on one expert costs more than splitting one over two, and on ODEBench-10A/10B
            the silhouette is nearly flat from 7 to 10 groups (figures in ``docs/routing.md``).
    """

    mode: str = "lstsq"
    every: int = 1
    kmeans_iters: int = 20
    kmeans_tol: float = 1e-3
    noise: float = 1e-4
    centroid_init: str = "data"
    empty_cluster: str = "reseed"
    reassign: float = 0.0
    chunk: int = -1
    importance_weight: float = 0.1
    warmup: int = 0
    warmup_batch: int = 0
    pairing: str = "greedy"
    seed_restarts: int = 10
    seed_method: str = "kmeans"
    seed_neighbours: int = 0
    seed_from: str = "shared"
    choose: str = "fixed"
    silhouette_min: float = 0.5
    silhouette_slack: float = 0.1
    single_fit: float = 0.5

    def __post_init__(self):
        validate(
            self,
            "gate",
            choices={
                "mode": ("lstsq", "gradient", "frozen"),
                "centroid_init": ("data", "kmeans++", "uniform"),
                "empty_cluster": ("reseed", "skip"),
                "pairing": ("greedy", "overlap"),
                "choose": ("fixed", "silhouette"),
                "seed_from": ("shared", "init"),
                "seed_method": ("kmeans", "spectral"),
            },
            ranges={
                "every": AT_LEAST_1,
                "kmeans_iters": AT_LEAST_1,
                "kmeans_tol": AT_LEAST_0,
                "noise": AT_LEAST_0,
                "reassign": Range(0, 1),
                "chunk": Range(-1),
                "importance_weight": AT_LEAST_0,
                "warmup": AT_LEAST_0,
                "warmup_batch": Range(-1),
                "seed_restarts": AT_LEAST_1,
                "seed_neighbours": AT_LEAST_0,
                "silhouette_min": Range(-1, 1),
                "silhouette_slack": Range(0, 2),
                "single_fit": AT_LEAST_0,
            },
        )


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


def gate_update(
    gate: Float[Array, "d1 M"],
    state: GateState,
    contexts: Float[Array, "E d"],
    expert_losses: Callable[[], Any],
    key: PRNGKeyArray,
    config: GateSettings = GateSettings(),
    *,
    aux_default: Any = None,
):
    """One gate update (Algorithm 1).

    Args:
        gate: current gate weights ``[d+1, M]`` (kept when the update is skipped).
        state: centroids from the previous update.
        contexts: training contexts ``[E, d]``.
        expert_losses: a function returning the loss of every expert on every training env,
            ``[M, E]``; it is only evaluated when K-means succeeded. With ``aux_default`` it
            returns ``(losses, aux)`` instead.
        key: PRNG key (centroid initialisation and the least-squares noise).
        config: :class:`GateSettings` (the fields used here: ``kmeans_*``, ``noise``,
            ``centroid_init``, ``empty_cluster``, ``pairing``, ``reassign``).
        aux_default: if given, the value returned as ``aux`` when the losses were not computed
            (a pytree of the same structure as the ``aux`` of ``expert_losses``), e.g. a loss
            cache that stays as it was.

    Returns:
        ``(new_gate, new_state, status)``, plus ``aux`` as a fourth value when ``aux_default``
        is given; status is one of :data:`STATUS_NAMES` (as an int).
    """
    n_experts = gate.shape[1]
    active = active_from_gate(gate)  # experts switched off (INACTIVE_BIAS) get no cluster
    kinit, knoise = jax.random.split(key)
    start = jnp.where(
        state.valid,
        state.centroids,
        init_centroids(kinit, contexts, n_experts, config.centroid_init).astype(contexts.dtype),
    )
    res = kmeans(
        contexts,
        start,
        max_iters=config.kmeans_iters,
        tol=config.kmeans_tol,
        empty_cluster=config.empty_cluster,
        active=active,
    )
    ok = res.status <= RESEEDED
    with_aux = aux_default is not None

    # the overlap pairing without per-env overrides needs no losses: the costly pass is skipped
    need_losses = config.pairing == "greedy" or config.reassign > 0

    def fit(_):
        if need_losses:
            out = expert_losses()
            losses, aux = out if with_aux else (out, None)
            losses = jnp.where(active[:, None], losses, jnp.inf)
        else:
            losses, aux = None, aux_default
        if config.pairing == "overlap":
            current = jnp.argmax(contexts @ gate[:-1] + gate[-1], axis=1)
            pairs = overlap_pairing(res.assign, current, n_experts, active)
        else:
            # a cluster in use only goes to an expert in use: mixed pairs cost more than any
            # loss (an empty cluster's medians, inf, count as the largest loss) and less than
            # an expert already taken (inf)
            big = jnp.finfo(losses.dtype).max
            medians = jnp.minimum(cluster_medians(losses, res.assign, n_experts), big / 4)
            medians = jnp.where(active[:, None] == active[None, :], medians, big / 2)
            pairs = greedy_pairing(medians)
        target = pairs[res.assign] if losses is None else reassign_targets(losses, pairs[res.assign], config.reassign)
        y = jax.nn.one_hot(target, n_experts, dtype=contexts.dtype)
        noisy = contexts + config.noise * normal(knoise, contexts.shape, contexts.dtype)
        new = fit_gate(noisy, y)
        return new.at[-1].add(jnp.where(active, 0.0, INACTIVE_BIAS)).astype(gate.dtype), aux

    new_gate, aux = jax.lax.cond(ok, fit, lambda _: (gate, aux_default), None)
    new_state = GateState(jnp.where(ok, res.centroids, state.centroids), ok)
    if with_aux:
        return new_gate, new_state, res.status, aux
    return new_gate, new_state, res.status


def active_from_gate(gate: Float[Array, "d1 M"]) -> Bool[Array, " M"]:
    """``[M]`` the experts a context can be routed to: those whose gate bias is not
    :data:`INACTIVE_BIAS` (every expert unless the number of experts was chosen from the data)."""
    return gate[-1] > INACTIVE_BIAS / 2


@functools.partial(jax.jit, static_argnames=("n_clusters", "restarts", "max_iters", "method", "neighbours"))
def seed_routes(
    key: PRNGKeyArray,
    x: Float[Array, "E d"],
    n_clusters: int,
    restarts: int = 10,
    max_iters: int = 100,
    method: str = "kmeans",
    neighbours: int = 0,
) -> tuple[Int[Array, " E"], Float[Array, ""]]:
    """Clusters of the contexts ``x`` (every dimension standardised first, so context entries
    of different sizes weigh alike).

    Args:
        key: PRNG key of the K-means starts.
        x: contexts ``[E, d]``.
        n_clusters: number of clusters.
        restarts: K-means runs from k-means++ centroids; the one with the lowest L1 inertia wins.
        max_iters: Lloyd iterations per run.
        method: ``"kmeans"`` (L1 K-means on the standardised contexts) or ``"spectral"``
            (the same K-means on the :func:`spectral_embedding` of a nearest-neighbour graph:
            groups that are curves or sheets in context space, as one family's environments
            are, stay together where K-means would cut them and merge two compact ones).
        neighbours: ``"spectral"`` only: neighbours per point in the graph (0: :func:`auto_neighbours`).

    Returns:
        ``(assign [E], inertia)``: the cluster of every point and the winning run's inertia
        (in the units K-means ran in).
    """
    z = (x - x.mean(0)) / jnp.maximum(x.std(0), 1e-12)
    if method == "spectral":
        z = spectral_embedding(z, n_clusters, neighbours or auto_neighbours(x.shape[0], n_clusters))
    elif method != "kmeans":
        raise ValueError(f"unknown clustering method {method!r}; choose 'kmeans' or 'spectral'")

    def one(k):
        res = kmeans(z, init_centroids(k, z, n_clusters, "kmeans++"), max_iters=max_iters, tol=1e-6)
        return res.assign, jnp.abs(z - res.centroids[res.assign]).sum()

    assign, inertia = jax.vmap(one)(jax.random.split(key, restarts))
    best = jnp.argmin(inertia)
    return assign[best], inertia[best]


def auto_neighbours(n_points: int, n_clusters: int) -> int:
    """Neighbours per point of the spectral graph when none are set: the mean cluster size
    ``n_points / n_clusters``, kept within 3 to 15 (:func:`spectral_embedding` keeps it below
    ``n_points``)."""
    return max(3, min(15, n_points // max(n_clusters, 1)))


def spectral_embedding(z: Float[Array, "E d"], n_clusters: int, neighbours: int) -> Float[Array, "E k"]:
    """Spectral embedding of the points ``z`` (Ng, Jordan and Weiss, 2001).

    The graph joins every point to its ``neighbours`` nearest others (Euclidean), symmetrised
    (``W = (A + A^T) / 2``); the rows of the eigenvectors of the ``n_clusters`` smallest
    eigenvalues of the normalised Laplacian ``I - D^-1/2 W D^-1/2``, scaled to unit length, are
    the embedded points. Points of one connected, curved group land close together.

    Returns:
        ``[E, n_clusters]``.
    """
    n = z.shape[0]
    k = int(min(max(neighbours, 1), n - 1))
    d2 = jnp.sum((z[:, None, :] - z[None, :, :]) ** 2, -1) + jnp.diag(jnp.full((n,), jnp.inf, z.dtype))
    _, idx = jax.lax.top_k(-d2, k)
    a = jnp.zeros((n, n), z.dtype).at[jnp.arange(n)[:, None], idx].set(1.0)
    w = 0.5 * (a + a.T)
    dm = 1.0 / jnp.sqrt(jnp.maximum(w.sum(1), 1e-12))
    lap = jnp.eye(n, dtype=z.dtype) - dm[:, None] * w * dm[None, :]
    _, vecs = jnp.linalg.eigh(lap)
    u = vecs[:, : min(n_clusters, n)]
    return u / jnp.maximum(jnp.linalg.norm(u, axis=1, keepdims=True), 1e-12)


def compact_labels(assign: ArrayLike) -> tuple[int, Int[Array, " E"]]:
    """Cluster labels renumbered ``0 .. k-1`` in order, none left empty: ``(k, labels [E])``."""
    labels = np.unique(np.asarray(assign), return_inverse=True)[1]
    return int(labels.max()) + 1, jnp.asarray(labels, jnp.int32)


def silhouette(x: np.ndarray, assign: np.ndarray) -> float:
    """Mean silhouette (Rousseeuw, 1987) of the clusters ``assign [E]`` of the points ``x [E, d]``
    under the L1 distance of standardised coordinates (as :func:`seed_routes` clusters them).

    For every point, ``(b - a) / max(a, b)`` with ``a`` its mean distance to the rest of its
    cluster and ``b`` the smallest mean distance to another cluster; 0 for a point alone in its
    cluster. 1: tight, well separated clusters; about 0.5 and below: weak structure.
    """
    x = np.asarray(x, np.float64)
    a = np.asarray(assign)
    z = (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)
    d = np.abs(z[:, None, :] - z[None, :, :]).sum(-1)
    labels = np.unique(a)
    if len(labels) < 2:
        return 0.0
    member = a[None, :] == labels[:, None]  # [C, E]
    mean_to = (d @ member.T) / np.maximum(member.sum(1), 1)  # [E, C]: mean distance to each cluster
    own = np.searchsorted(labels, a)
    n_own = member.sum(1)[own]
    intra = mean_to[np.arange(len(a)), own] * n_own / np.maximum(n_own - 1, 1)  # excluding the point itself
    other = np.where(np.arange(len(labels))[None, :] == own[:, None], np.inf, mean_to).min(1)
    s = np.where(n_own > 1, (other - intra) / np.maximum(np.maximum(intra, other), 1e-300), 0.0)
    return float(s.mean())


def choose_count(
    key: PRNGKeyArray,
    x: Float[Array, "E d"],
    max_count: int,
    threshold: float = 0.5,
    restarts: int = 10,
    slack: float = 0.0,
) -> tuple[int, Int[Array, " E"], dict[int, float]]:
    """The number of clusters of the contexts ``x`` (1 to ``max_count``) by the silhouette.

    For every ``k`` from 2 to ``min(max_count, E - 1)`` the contexts are clustered as by
    :func:`seed_routes`; the ``k`` with the highest mean :func:`silhouette` wins, unless that
    silhouette is below ``threshold`` (the contexts show no clear groups: ``k = 1``). With
    ``slack > 0`` the largest ``k`` whose silhouette is within ``slack`` of the highest (and
    at least ``threshold``) wins instead: between groupings about as clear, the finer one.

    Returns:
        ``(k, assign [E], scores)``: the count, the clusters (labels ``0 .. k-1``) and the
        silhouette of every ``k`` tried.
    """
    n = x.shape[0]
    scores: dict[int, float] = {}
    found: dict[int, Any] = {}
    for k in range(2, min(max_count, n - 1) + 1):
        assign, _ = seed_routes(key, x, k, restarts)
        found[k] = assign
        scores[k] = silhouette(np.asarray(x), np.asarray(assign))
    best = max(scores, key=lambda k: scores[k]) if scores else 1
    if not scores or scores[best] < threshold:
        return 1, jnp.zeros((n,), jnp.int32), scores
    best = max(k for k, v in scores.items() if v >= max(scores[best] - slack, threshold))
    return (*compact_labels(found[best]), scores)
