"""Where adaptation's fits start and how the kept fit is chosen (:func:`~mixerdsr.adapt_new`):
the starts in each expert's region of context space, and the choice between finished fits,
optionally with a prior on how far a context lies from its expert's training contexts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .inference import routes
from .mixer import MixER

__all__ = ["expert_starts", "choose"]


def expert_starts(model: MixER, contexts: Float[Array, "E d"], per_expert: int = 1) -> Float[Array, "S1 d"]:
    """Adaptation starts: the zero context (the paper's start), then, for every expert that has
    training environments, their mean context (which the linear gate routes to that expert:
    each expert's region of context space is convex), then, with ``per_expert > 1``, for every
    such expert the centres of a K-means of its training contexts into ``per_expert - 1``
    groups (also in its region; fewer where it has fewer environments).

    Args:
        model: trained MixER.
        contexts: its training contexts ``[E, d]``.
        per_expert: starts per expert in use (1: its mean alone).

    Returns:
        ``[1 + S + extra, d]`` with ``S`` the number of experts in use: the zero context, the
        ``S`` means (in the order of the experts' indices), then the extra centres.
    """
    r = np.asarray(routes(model, contexts))
    c = np.asarray(contexts)
    used = np.unique(r)
    means = [c[r == m].mean(0) for m in used]
    extra = [z for m in used for z in _centres(c[r == m], per_expert - 1)] if per_expert > 1 else []
    return jnp.asarray(np.stack([np.zeros_like(c[0])] + means + extra))


def _centres(c: np.ndarray, k: int, iters: int = 20) -> list[np.ndarray]:
    """Centres of a K-means of the rows of ``c`` into ``min(k, len(c))`` groups (Euclidean, on
    contexts standardised per dimension; deterministic: started by farthest-point traversal
    from the row nearest the mean). One group of one row is that row."""
    k = min(k, len(c))
    if k < 1:
        return []
    sd = c.std(0)
    z = (c - c.mean(0)) / np.where(sd > 0, sd, 1.0)
    picks = [int(np.argmin((z**2).sum(1)))]
    for _ in range(k - 1):
        picks.append(int(np.argmax(np.min(((z[:, None] - z[picks][None]) ** 2).sum(-1), axis=1))))
    centres = z[picks]
    for _ in range(iters):
        group = np.argmin(((z[:, None] - centres[None]) ** 2).sum(-1), axis=1)
        centres = np.stack([z[group == j].mean(0) if np.any(group == j) else centres[j] for j in range(k)])
    return list(centres * np.where(sd > 0, sd, 1.0) + c.mean(0))


def _context_z(model: MixER, train_contexts: np.ndarray, ctx: Float[Array, "E d"], experts: np.ndarray) -> np.ndarray:
    """Each env's standardised distance ``z [E]`` of the part of its context ``ctx`` its
    expert sees from that expert's training contexts: the root mean square over dimensions of
    ``(c - mean) / std`` of the expert's training environments (inf for an expert without any)."""
    tr = np.asarray(train_contexts)
    r = np.asarray(routes(model, jnp.asarray(tr)))
    seen = jax.vmap(model.expert_context)
    out = np.full(len(experts), np.inf)
    for m in np.unique(experts):
        own = r == m
        if not np.any(own):
            continue
        ms = jnp.full((int(own.sum()),), int(m))
        ref = np.asarray(seen(jnp.asarray(tr[own]), ms))
        sd = ref.std(0)
        at = experts == m
        vis = np.asarray(seen(ctx[jnp.asarray(np.flatnonzero(at))], jnp.full((int(at.sum()),), int(m))))
        out[at] = np.sqrt(np.mean(((vis - ref.mean(0)) / np.where(sd > 0, sd, 1.0)) ** 2, axis=1))
    return out


def choose(model: MixER, train_contexts, fits: list, rel_loss: np.ndarray, prior: float = 0.0) -> np.ndarray:
    """Which of the finished ``fits`` (each ``(contexts [E, d], experts [E], loss [E])``) every
    environment keeps: the lowest relative loss ``rel_loss [K, E]``, plus ``prior * z^2`` with
    ``prior > 0`` (``z``: the fit's standardised distance from its expert's training contexts, a
    MAP-like choice). Returns the index of the kept fit ``[E]``."""
    if prior <= 0:
        return np.argmin(rel_loss, axis=0)
    z = np.stack([_context_z(model, np.asarray(train_contexts), c, r) for c, r, _ in fits])
    return np.argmin(rel_loss + prior * z**2, axis=0)
