"""Adaptation: fit a fresh context to each new environment, weights and gate frozen."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float

from . import _aot
from ._starts import choose, expert_starts
from .inference import routes
from .mixer import MixER
from .rollout import SolverSettings, env_losses, zero_nonfinite
from .sharding import env_shards, env_vmap

__all__ = ["adapt_contexts", "expert_starts", "adapt_new", "Adaptation"]


def adapt_contexts(
    model: MixER,
    x: Float[ArrayLike, "E N T D"],
    t: Float[ArrayLike, "E T"],
    *,
    steps: int = 500,
    lr: float = 3e-3,
    init: Float[ArrayLike, "E d"] | None = None,
    solver: SolverSettings = SolverSettings(),
    joint: bool = False,
    alpha: float = 1.0,
    context_penalty: float = 0.0,
) -> tuple[Float[Array, "E d"], Float[Array, "E steps"]]:
    """Fit a fresh context for each new environment from one start, everything else frozen.

    By default every environment is fitted independently (its own loss and AdaBelief state),
    as the paper's one-by-one protocol, but as one compiled function vmapped over
    environments. ``joint=True`` fits all contexts together: one AdaBelief state over the
    ``[E, d]`` context matrix minimising the mean loss over environments (as in training).
    :func:`adapt_new` fits from every expert's start instead and reports how clear each
    environment's expert is.

    Args:
        model: trained MixER (weights and gate frozen).
        x, t: adaptation data ``[E, N, T, D]`` and ``[E, T]``.
        steps, lr: AdaBelief steps and learning rate.
        init: starting contexts ``[E, d]`` (default: zeros, as the paper).
        solver: solver settings.
        joint: one optimiser for all environments instead of one each.
        alpha: teacher forcing of the loss (sequence experts; a run passes its training
            ``teacher_forcing``); vector-field experts ignore it.
        context_penalty: ``lambda``: ``lambda * mean|c|`` is added to each environment's
            fitting loss (an L1 prior pulling unused context dimensions to zero).

    Returns:
        ``(contexts [E, d], loss_history [E, steps])`` (the history includes the penalty).
    """
    x, t = jnp.asarray(x), jnp.asarray(t)
    if init is None:
        init = jnp.zeros((x.shape[0], model.context_size), x.dtype)
    return _adapt(model, x, t, jnp.asarray(init), steps, lr, solver, joint, alpha, context_penalty)


@eqx.filter_jit
def _final_losses(model, c, x, t, solver, alpha=1.0, forced=None):
    """Every env's loss at its context ``c`` (``forced [E]``: with that expert, not the routed one)."""
    if forced is None:
        ls, ok = env_losses(model, c, x, t, solver, alpha=alpha)
    else:
        one = lambda ci, xi, ti, mi: env_losses(model, ci[None], xi[None], ti[None], solver, mi, alpha=alpha)  # noqa: E731
        ls, ok = env_vmap(one, c, x, t, forced)
        ls, ok = ls[:, 0], ok[:, 0]
    return jnp.where(ok & jnp.isfinite(ls), ls, jnp.inf)


@eqx.filter_jit
def _adapt(model, x, t, init, steps, lr, solver, joint, alpha, penalty=0.0):
    opt = optax.adabelief(lr)

    def losses_at(c, xe, te):
        return env_losses(model, c, xe, te, solver, alpha=alpha)[0] + penalty * jnp.mean(jnp.abs(c), axis=-1)

    if joint:

        def body_joint(carry, _):
            c, s = carry
            (_, losses), g = jax.value_and_grad(
                lambda cc: (lambda ls: (ls.mean(), ls))(losses_at(cc, x, t)), has_aux=True
            )(c)
            u, s = opt.update(zero_nonfinite(g), s, c)
            return (optax.apply_updates(c, u), s), losses

        (c, _), hist = jax.lax.scan(body_joint, (init, opt.init(init)), None, length=steps)
        return c, hist.T

    c, _, hist = _adapt_chunk(model, x, t, init, jax.vmap(opt.init)(init), steps, lr, solver, alpha, penalty=penalty)
    return c, hist


@dataclasses.dataclass(frozen=True)
class Adaptation:
    """New environments fitted from every expert's start, each keeping its best expert
    (:func:`adapt_new`).

    Attributes:
        contexts: fitted contexts ``[E, d]``.
        experts: each environment's expert (the route of its context) ``[E]``.
        runner_up: the expert whose fit comes next ``[E]`` (-1: no other expert fits at all).
        runner_up_forced: ``[E]`` True where no fit from any start ended with another expert,
            so the runner-up was fitted with its route forced (the gate does not send such a
            context there; a runner-up that fits better then gives confidence 0).
        scores: the fitting loss reached with each expert ``[E, M]`` (inf: no fit ended with
            that expert; the kept experts' losses are of the refined fits, the others' of their
            screening fits).
        confidence: ``1 - best / runner-up`` loss ``[E]`` in ``[0, 1]``: 0 when two experts
            explain the data equally well, near 1 when one is far better.
        loss: fitting loss of the kept context ``[E]``.
        rel_loss: ``loss`` relative to the data's mean squared norm ``[E]`` (large: no expert
            reproduces even the trajectory it was fitted to).
    """

    contexts: Float[Array, "E d"]
    experts: np.ndarray
    runner_up: np.ndarray
    runner_up_forced: np.ndarray
    scores: np.ndarray
    confidence: np.ndarray
    loss: np.ndarray
    rel_loss: np.ndarray


def adapt_new(
    model: MixER,
    train_contexts: Float[ArrayLike, "Et d"],
    x: Float[ArrayLike, "E N T D"],
    t: Float[ArrayLike, "E T"],
    *,
    steps: int = 200,
    screen_steps: int = 25,
    keep: int = 2,
    lr: float = 3e-3,
    solver: SolverSettings = SolverSettings(),
    alpha: float = 1.0,
    context_penalty: float = 0.0,
    starts_per_expert: int = 1,
    choice_prior: float = 0.0,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Adaptation:
    """Fit new environments from every expert's start and report how clear each one's expert is.

    1. *Screen*: every environment is fitted for ``screen_steps`` steps from each start of
       :func:`expert_starts` (the zero context and each expert's mean training context). Each
       fit ends in some expert's region; per expert its best fit counts.
    2. *Refine*: the ``keep`` best experts' fits of every environment continue to ``steps``
       steps in all.
    3. *Choose*: the refined fit with the lowest loss (with ``choice_prior``: the lowest
       relative loss + ``choice_prior * z^2``, ``z`` the fit's standardised distance from its
       expert's training contexts); the next best expert is the runner-up.

    All fits run as chunks of ``screen_steps`` AdaBelief steps over the ``E`` environments (one
    compiled function, optimiser states carried between chunks), on ``workers`` threads.

    Args:
        model: trained MixER (frozen).
        train_contexts: its training contexts ``[Et, d]`` (the starts).
        x, t: adaptation data ``[E, N, T, D]`` and ``[E, T]``.
        steps: AdaBelief steps of a kept fit in all (rounded up to whole chunks).
        screen_steps: steps of every screening fit (the chunk length; at most ``steps``).
        keep: experts refined per environment (2: the runner-up is refined as well, so the
            confidence compares two finished fits).
        lr: learning rate.
        solver: solver settings.
        alpha: teacher forcing of the loss (sequence experts).
        context_penalty: ``lambda * mean|c|`` added to every fit's loss (an L1 prior on the
            contexts); the scores and losses reported are the data's alone.
        starts_per_expert: starts per expert in use (:func:`expert_starts`).
        choice_prior: ``lambda`` of the choice's prior on contexts (0: the lowest loss).
        workers: threads running fits at once (default: the CPU count, at most 4; results do not
            depend on it).
        progress: called as ``progress(done, total)`` after every chunk of fits (e.g. to move a
            progress bar).

    Returns:
        An :class:`Adaptation`.
    """
    if screen_steps < 1 or keep < 1:
        raise ValueError(f"screen_steps and keep must be >= 1, got {screen_steps} and {keep}")
    x, t = jnp.asarray(x), jnp.asarray(t)
    n_env = x.shape[0]
    env = np.arange(n_env)
    screen_steps = min(screen_steps, steps)
    starts = list(expert_starts(model, jnp.asarray(train_contexts), starts_per_expert))
    n_more = max(0, -(-steps // screen_steps) - 1)
    total = len(starts) + min(keep, model.n_experts) * n_more
    fits = _Fits(model, x, t, screen_steps, lr, solver, alpha, total, progress, context_penalty)
    # 1. screen from every start (fits run on `workers` threads: XLA runs one small computation
    # per core, and JAX releases the GIL while it runs)
    screened = _threaded(fits.start, starts, workers)
    scores = np.full((n_env, model.n_experts), np.inf)
    which = np.full((n_env, model.n_experts), -1)  # the start whose fit is the expert's best
    for si, (c, _, sc) in enumerate(screened):
        r = np.asarray(routes(model, c))
        better = sc < scores[env, r]
        scores[env[better], r[better]] = sc[better]
        which[env[better], r[better]] = si
    # 2. refine the best `keep` experts of every environment
    order = np.argsort(scores, axis=1, kind="stable")[:, :keep]
    refined_fits = _threaded(fits.continuation(screened, which, order, n_more), list(order.T), workers)
    _count_refined(scores, order, refined_fits)
    # 3. choose the refined fit with the lowest loss
    cand = np.stack([sc for _, _, sc in refined_fits])  # [K, E]
    s0 = model.expert_type.scored_from
    scale = np.asarray(jnp.mean(jnp.sum(x[:, :, s0:] ** 2, -1), axis=(1, 2)))
    pick = choose(model, train_contexts, refined_fits, cand / np.maximum(scale, 1e-12), choice_prior)
    chosen = np.stack([r for _, r, _ in refined_fits])[pick, env]
    ctx = jnp.stack([c for c, _, _ in refined_fits])[jnp.asarray(pick), jnp.asarray(env)]
    best = cand[pick, env]
    second, conf, forced = _runner_up(fits, train_contexts, starts, scores, chosen, best, n_more)
    return Adaptation(
        contexts=ctx,
        experts=chosen,
        runner_up=second,
        runner_up_forced=forced,
        scores=scores,
        confidence=conf,
        loss=best,
        rel_loss=best / np.maximum(scale, 1e-12),
    )


class _Fits:
    """Context fits of every environment, run as chunks of ``screen_steps`` AdaBelief steps
    (one compiled function, kept across processes by :mod:`mixerdsr._aot`), optimiser states
    carried between chunks; ``progress(done, total)`` after every chunk."""

    def __init__(self, model, x, t, screen_steps, lr, solver, alpha, total, progress, penalty=0.0):
        self.model, self.x, self.t = model, x, t
        self.screen_steps, self.lr, self.solver, self.alpha = screen_steps, lr, solver, alpha
        self.penalty = penalty
        self.opt = optax.adabelief(lr)
        self.dyn, self.static = eqx.partition(model, eqx.is_array)
        self.aot_key = repr(
            (str(jax.tree.structure(self.static)), type(model.experts).__module__, solver, lr, alpha, penalty)
        )
        self.total, self.done, self.progress = total, 0, progress

    def run_chunks(self, c, state, n_chunks):
        m, x, t, k, static = self.model, self.x, self.t, self.screen_steps, self.static
        lr, solver, alpha, pen = self.lr, self.solver, self.alpha, self.penalty
        for _ in range(n_chunks):
            out = _aot.call(
                "adapt_chunk",
                lambda d, x_, t_, c_, s_: _adapt_chunk(
                    eqx.combine(d, static), x_, t_, c_, s_, k, lr, solver, alpha, penalty=pen
                ),
                self.aot_key + str(k),
                (self.dyn, x, t, c, state),
            )
            if out is None:
                c, state, _ = _adapt_chunk(m, x, t, c, state, k, lr, solver, alpha, penalty=pen)
            else:  # the leaves of (contexts, state, losses)
                c, state = out[0], jax.tree.unflatten(jax.tree.structure(state), out[1:-1])
            self.done += 1
            if self.progress is not None:
                self.progress(self.done, self.total)
        return c, state

    def losses(self, c):
        """Every environment's loss at its context ``c`` (``inf`` where the solve failed)."""
        static, solver, alpha = self.static, self.solver, self.alpha
        out = _aot.call(
            "adapt_losses",
            lambda d, c_, x_, t_: _final_losses(eqx.combine(d, static), c_, x_, t_, solver, alpha),
            self.aot_key,
            (self.dyn, c, self.x, self.t),
        )
        sc = np.asarray(out[0] if out is not None else _final_losses(self.model, c, self.x, self.t, solver, alpha))
        return np.where(np.isfinite(sc), sc, np.inf)

    def start(self, s0):
        """One chunk from the context ``s0`` for every environment: ``(contexts, state, losses)``."""
        c0 = jnp.broadcast_to(s0, (self.x.shape[0], self.model.context_size))
        c, st = self.run_chunks(c0, jax.vmap(self.opt.init)(c0), 1)
        return c, st, self.losses(c)

    def continuation(self, screened, which, order, n_more):
        """A function continuing, for the experts ``m_k [E]``, each environment's best screening
        fit in that expert (its best fit overall where it has none) by ``n_more`` chunks:
        ``(contexts, routes, losses)``."""
        env = np.arange(self.x.shape[0])
        stacked_c = jnp.stack([c for c, _, _ in screened])
        stacked_st = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[st for _, st, _ in screened])

        def refine(m_k):
            src = jnp.asarray(np.where(which[env, m_k] >= 0, which[env, m_k], which[env, order[:, 0]]))
            c = stacked_c[src, jnp.asarray(env)]
            c, _ = self.run_chunks(c, jax.tree.map(lambda leaf: leaf[src, jnp.asarray(env)], stacked_st), n_more)
            return c, np.asarray(routes(self.model, c)), self.losses(c)

        return refine


def _count_refined(scores: np.ndarray, order: np.ndarray, refined_fits: list) -> None:
    """A refined fit counts for the expert it ends in (``scores [E, M]`` updated in place)."""
    env = np.arange(scores.shape[0])
    refined = np.zeros(scores.shape, bool)
    for k, (_, r, sc) in enumerate(refined_fits):
        ok = np.isfinite(scores[env, order[:, k]])
        for e in env[ok]:
            if not refined[e, r[e]] or sc[e] < scores[e, r[e]]:
                scores[e, r[e]] = sc[e]
                refined[e, r[e]] = True


def _runner_up(fits: _Fits, train_contexts, starts, scores, chosen, best, n_more):
    """Each env's runner-up expert (-1: none fits), the confidence ``1 - best / runner-up``
    and where the runner-up was fitted with its route forced: envs whose every fit ended with
    the chosen expert get the best other expert fitted with its route forced (only they); the
    fits use ``fits``' model, data and fitting settings."""
    model, x, t = fits.model, fits.x, fits.t
    env = np.arange(len(chosen))
    masked = scores.copy()
    masked[env, chosen] = np.inf
    second = np.argmin(masked, axis=1)
    runner = masked[env, second]
    forced = np.zeros(len(chosen), bool)
    lonely = np.flatnonzero(~np.isfinite(runner) & np.isfinite(best))
    used = np.unique(np.asarray(routes(model, jnp.asarray(train_contexts))))
    if lonely.size and len(used) > 1:
        # every fit ended with the chosen expert, which says nothing about how well another
        # would do: fit each other expert with the route forced, from its own start
        fit_args = (fits.screen_steps, n_more, fits.lr, fits.solver, fits.alpha, fits.penalty)
        m_other, loss_other = _forced_runner_up(model, x[lonely], t[lonely], starts, used, chosen[lonely], *fit_args)
        ok = np.isfinite(loss_other)
        forced[lonely[ok]] = True
        second[lonely[ok]], runner[lonely[ok]] = m_other[ok], loss_other[ok]
    has_runner = np.isfinite(runner)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.where(has_runner, 1.0 - best / np.where(has_runner, runner, 1.0), 1.0)
    conf = np.where(np.isfinite(best), np.clip(conf, 0.0, 1.0), 0.0)
    return np.where(has_runner, second, -1), conf, forced


def _forced_runner_up(model, x, t, starts, used, chosen, screen_steps, n_more, lr, solver, alpha, penalty=0.0):
    """For every env, the best expert of ``used`` other than ``chosen[e]`` when the route is
    forced to it: each such expert is fitted from its own start for ``screen_steps`` steps,
    the best one continues for ``n_more`` chunks. Returns ``(expert [E], its loss [E])``
    (loss inf where no other expert gives a finite fit)."""
    n_env, env = x.shape[0], np.arange(x.shape[0])
    opt = optax.adabelief(lr)
    fits, losses = [], np.full((n_env, model.n_experts), np.inf)
    for k, m in enumerate(used):
        m_all = jnp.full((n_env,), m, jnp.int32)
        c0 = jnp.broadcast_to(starts[k + 1], (n_env, model.context_size))
        st0 = jax.vmap(opt.init)(c0)
        c, st, _ = _adapt_chunk(model, x, t, c0, st0, screen_steps, lr, solver, alpha, m_all, penalty)
        losses[:, m] = np.asarray(_final_losses(model, c, x, t, solver, alpha, m_all))
        fits.append((c, st))
    losses[env, chosen] = np.inf
    best_m = np.argmin(losses, axis=1)
    slot = {int(m): k for k, m in enumerate(used)}
    src = jnp.asarray([slot.get(int(m), 0) for m in best_m])
    c = jnp.stack([f[0] for f in fits])[src, jnp.asarray(env)]
    st = jax.tree.map(lambda *leaves: jnp.stack(leaves)[src, jnp.asarray(env)], *[f[1] for f in fits])
    m_env = jnp.asarray(best_m, jnp.int32)
    for _ in range(n_more):
        c, st, _ = _adapt_chunk(model, x, t, c, st, screen_steps, lr, solver, alpha, m_env, penalty)
    final = np.asarray(_final_losses(model, c, x, t, solver, alpha, m_env))
    return best_m, np.where(np.isfinite(losses[env, best_m]), final, np.inf)


def _threaded(fn, items: list, workers: int | None) -> list:
    """``[fn(i) for i in items]``, the first alone (it traces and compiles), the rest on
    ``workers`` threads. Over several devices one at a time (the devices are the parallelism,
    and a thread would not see the device mesh)."""
    n = workers if workers is not None else min(4, os.cpu_count() or 1)
    if n <= 1 or len(items) <= 1 or env_shards() > 1:
        return [fn(i) for i in items]
    first = fn(items[0])
    with ThreadPoolExecutor(n) as pool:
        return [first, *pool.map(fn, items[1:])]


@eqx.filter_jit
def _adapt_chunk(model, x, t, c0, state0, steps, lr, solver, alpha, forced=None, penalty=0.0):
    """``steps`` AdaBelief steps of every environment's own fit from ``(c0, state0)``:
    ``(contexts [E, d], optimiser states, losses [E, steps])``; ``forced [E]``: each env's fit
    uses that expert whatever the gate says; ``penalty * mean|c|`` is added to each loss."""
    opt = optax.adabelief(lr)
    use_forced = forced is not None
    ms = forced if use_forced else jnp.zeros((x.shape[0],), jnp.int32)

    def fit_one(c, s, xe, te, me):
        def loss_fn(cc):
            m = me if use_forced else None
            data_loss = env_losses(model, cc[None], xe[None], te[None], solver, m, alpha=alpha)[0][0]
            return data_loss + penalty * jnp.mean(jnp.abs(cc))

        def body(carry, _):
            c, s = carry
            loss, g = jax.value_and_grad(loss_fn)(c)
            u, s = opt.update(zero_nonfinite(g), s, c)
            return (optax.apply_updates(c, u), s), loss

        (c, s), hist = jax.lax.scan(body, (c, s), None, length=steps)
        return c, s, hist

    return env_vmap(fit_one, c0, state0, x, t, ms)
