"""Grouping contexts on the host: the routes seeded after a warm-up and the number of experts.

K-means from k-means++ starts on standardised contexts, optionally on a spectral embedding of
their nearest-neighbour graph, and the mean silhouette that chooses the number of groups.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from ._algorithm1 import init_centroids, kmeans

__all__ = [
    "seed_routes",
    "auto_neighbours",
    "spectral_embedding",
    "compact_labels",
    "silhouette",
    "choose_count",
    "laplacian_spectrum",
    "eigengap_count",
]


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
    _, vecs = jnp.linalg.eigh(_normalised_laplacian(z, neighbours, jnp))
    u = vecs[:, : min(n_clusters, n)]
    return u / jnp.maximum(jnp.linalg.norm(u, axis=1, keepdims=True), 1e-12)


def _normalised_laplacian(z, neighbours: int, xp: Any):
    """``I - D^-1/2 W D^-1/2`` of the graph joining every point of ``z [E, d]`` to its
    ``neighbours`` nearest others (Euclidean; at most ``E - 1``), symmetrised
    (``W = (A + A^T) / 2``). ``xp``: ``jax.numpy`` (in compiled code) or ``numpy`` (float64)."""
    n = z.shape[0]
    k = int(min(max(neighbours, 1), n - 1))
    d2 = xp.sum((z[:, None, :] - z[None, :, :]) ** 2, -1) + xp.diag(xp.full((n,), xp.inf, z.dtype))
    idx = xp.argsort(d2, axis=1)[:, :k]
    a = xp.any(idx[:, :, None] == xp.arange(n)[None, None, :], axis=1).astype(z.dtype)
    w = 0.5 * (a + a.T)
    dm = 1.0 / xp.sqrt(xp.maximum(w.sum(1), 1e-12))
    return xp.eye(n, dtype=z.dtype) - dm[:, None] * w * dm[None, :]


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


#: environments per group the eigengap rule's graph assumes
EIGENGAP_GROUP_SIZE = 5
#: neighbours per point of the eigengap rule's graph: fewer than the other members of a group of
#: :data:`EIGENGAP_GROUP_SIZE`, so that such a group can stand apart (with 5 neighbours every point
#: of a group of 5 is joined to another group; ``docs/defaults.md``, "The count of --experts auto")
EIGENGAP_NEIGHBOURS = EIGENGAP_GROUP_SIZE - 2


def laplacian_spectrum(x: np.ndarray, neighbours: int) -> np.ndarray:
    """Eigenvalues (ascending, float64) of the normalised Laplacian of the standardised points'
    nearest-neighbour graph, the graph :func:`spectral_embedding` embeds. ``k`` well separated
    groups give ``k`` eigenvalues near 0."""
    x = np.asarray(x, np.float64)
    z = (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)
    return np.linalg.eigvalsh(_normalised_laplacian(z, neighbours, np))


def eigengap_count(x: np.ndarray, max_count: int, neighbours: int = 0) -> tuple[int, np.ndarray]:
    """The number of groups of the points ``x [E, d]`` by the largest eigengap (von Luxburg, 2007,
    Sec. 8.3): ``k`` (1 to ``max_count``) with the largest gap between the ``k``-th and
    ``(k+1)``-th eigenvalue of :func:`laplacian_spectrum`.

    Args:
        x: contexts ``[E, d]``.
        max_count: the most groups.
        neighbours: per point in the graph (0: :data:`EIGENGAP_NEIGHBOURS`, i.e. 3, fewer than
            the other members of a group of :data:`EIGENGAP_GROUP_SIZE`; a guess that does not
            depend on the count being chosen).

    Returns:
        ``(k, eigenvalues)``: the count and the smallest ``max_count + 1`` eigenvalues. A graph
        in more than ``max_count`` pieces (more than ``max_count`` zero eigenvalues, no gap
        among the first) gives ``max_count``.
    """
    n = len(x)
    if n < 3 or max_count < 2:
        return 1, np.zeros(0)
    cap = min(max_count, n - 1)
    nb = neighbours or EIGENGAP_NEIGHBOURS
    lam = laplacian_spectrum(x, nb)[: cap + 1]
    if np.sum(lam < 1e-8) > cap:  # more connected pieces than the cap
        return cap, lam
    return int(np.argmax(np.diff(lam))) + 1, lam
