"""Inference with a trained MixER layer: the route of every environment and predictions of
its trajectories."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from .mixer import MixER
from .rollout import SolverSettings, env_rollout
from .sharding import env_vmap

__all__ = ["routes", "predict"]


def routes(model: MixER, contexts: Float[Array, "E d"]) -> Int[Array, " E"]:
    """The expert of every environment."""
    return jax.vmap(model.route)(contexts)


@eqx.filter_jit
def _predict(model, contexts, x, t, solver, alpha):
    return env_vmap(lambda c, xe, te: env_rollout(model, c, xe, te, solver, alpha=alpha), contexts, x, t)


def predict(
    model: MixER,
    contexts: Float[ArrayLike, "E d"],
    x: Float[ArrayLike, "E N T D"],
    t: Float[ArrayLike, "E T"],
    solver: SolverSettings = SolverSettings(),
    *,
    alpha: float = 1.0,
    chunk: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Predict every trajectory of every environment (IVPs from their first state; sequence
    experts free-running unless ``alpha < 1``), in chunks of ``chunk`` envs.

    Returns:
        NumPy ``(pred [E, N, T, D], ok [E, N])``.
    """
    preds, oks = [], []
    x = jnp.asarray(x)
    n = x.shape[0]
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        # pad the last chunk to a fixed size so that there is one compilation
        pad = chunk - (e - s) if n > chunk else 0
        sl = lambda a: jnp.concatenate([a[s:e], jnp.repeat(a[e - 1 : e], pad, 0)]) if pad else a[s:e]  # noqa: E731
        p, ok = _predict(model, sl(jnp.asarray(contexts)), sl(jnp.asarray(x)), sl(jnp.asarray(t)), solver, alpha)
        preds.append(np.asarray(p)[: e - s])
        oks.append(np.asarray(ok)[: e - s])
    return np.concatenate(preds), np.concatenate(oks)
