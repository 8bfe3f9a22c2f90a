"""Plain-language warnings about a finished run: results a user should not trust as they are.

:func:`diagnose` reads the metrics and history of a run and returns one sentence per problem;
the run prints them and ``report.md`` lists them. Each check is a rule on numbers the run
already computed (no model evaluation here), with its threshold named in the module constants.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "diagnose",
    "collapsed_envs",
    "diverged_envs",
    "reading_notes",
    "DOMINANT_SHARE",
    "ADAPT_RATIO",
    "ADAPT_FLOOR",
    "COLLAPSE_RATIO",
    "LATE_CHANGE_SHARE",
    "CONFIDENCE_MIN",
    "REL_LOSS_MAX",
]

#: an expert holding at least this share of the training envs (with M > 1) is flagged
DOMINANT_SHARE = 0.75
#: adaptation relMSE above ``ADAPT_RATIO`` x the test relMSE and above ``ADAPT_FLOOR`` is flagged
ADAPT_RATIO = 10.0
ADAPT_FLOOR = 0.5
#: expert changes in the last tenth of training, as a share of the training envs, that are flagged
LATE_CHANGE_SHARE = 0.1
#: below this confidence (``1 - best / runner-up`` expert score) a new env's expert is unclear
#: (calibrated on ODEBench-10B and Lotka-Volterra data: docs/adaptation.md)
CONFIDENCE_MIN = 0.2
#: above this fitting loss (relative to the data's mean squared norm) a new env is poorly fitted:
#: no expert reproduces even the trajectory it was fitted to
REL_LOSS_MAX = 0.15
#: a forecast whose spread over time is below this fraction of the data's is "collapsed"
COLLAPSE_RATIO = 0.1


#: a split whose trajectory error (traj_rel_l2) is at least this is flagged as poorly forecast
POOR_TRAJ_REL_L2 = 0.5
#: Eq. 9's relMSE above this many times the median trajectory's is "dominated" by a few
DOMINATED_RATIO = 10.0
#: a forecast that leaves the data's range by more than this many times that range has diverged
DIVERGE_RATIO = 100.0


def diverged_envs(pred: np.ndarray, x: np.ndarray, ok: np.ndarray | None = None) -> list[int]:
    """Environments whose forecast diverged: a solve failed or a state is not finite, or the
    forecast strays from the data's per-dimension range (over all the env's trajectories and
    times) by more than ``DIVERGE_RATIO`` times that range. Their errors would swamp a mean
    (an adaptation once reported relMSE 3.9e19), so the split's mean errors leave them out and
    report their number beside the mean.

    Args:
        pred: predictions ``[E, N, T, D]``.
        x: data ``[E, N, T, D]``.
        ok: successful solves ``[E, N]``.

    Returns:
        Indices of the diverged environments.
    """
    pred, x = np.asarray(pred, np.float64), np.asarray(x, np.float64)
    lo, hi = x.min(axis=(1, 2)), x.max(axis=(1, 2))  # [E, D]
    span = np.maximum(hi - lo, 1e-6 * np.maximum(np.abs(hi), np.abs(lo)) + 1e-12)
    with np.errstate(invalid="ignore", over="ignore"):
        past = np.maximum(pred - hi[:, None, None], lo[:, None, None] - pred) / span[:, None, None]
        bad = ~np.isfinite(pred).all(axis=(1, 2, 3)) | (
            np.nan_to_num(past, nan=np.inf).max(axis=(1, 2, 3)) > DIVERGE_RATIO
        )
    if ok is not None:
        bad |= ~np.asarray(ok, bool).all(axis=1)
    return [int(e) for e in np.flatnonzero(bad)]


def collapsed_envs(pred: np.ndarray, x: np.ndarray, ok: np.ndarray | None = None) -> list[int]:
    """Environments whose forecast has collapsed: it barely moves while the data does.

    Args:
        pred: predictions ``[E, N, T, D]``.
        x: data ``[E, N, T, D]``.
        ok: successful solves ``[E, N]`` (failed trajectories are not judged here).

    Returns:
        Indices of the envs whose predictions' standard deviation over time (averaged over
        trajectories and dimensions) is below ``COLLAPSE_RATIO`` times the data's.
    """
    pred, x = np.asarray(pred, np.float64), np.asarray(x, np.float64)
    spread_p = pred.std(axis=2).mean(-1)  # [E, N]
    spread_x = x.std(axis=2).mean(-1)
    keep = np.ones(spread_p.shape, bool) if ok is None else np.asarray(ok, bool)
    keep &= np.isfinite(spread_p) & (spread_x > 0)
    out = []
    for e in range(pred.shape[0]):
        if keep[e].any() and spread_p[e, keep[e]].mean() < COLLAPSE_RATIO * spread_x[e, keep[e]].mean():
            out.append(e)
    return out


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def adaptation_warnings(ad: Mapping[str, Any]) -> list[str]:
    """Warnings about the expert choice of new environments (``adapt_test`` metrics with
    ``routes``, ``runner_up``, ``confidence`` and ``fit_rel_loss``)."""
    conf, runner, route = ad.get("confidence"), ad.get("runner_up"), ad.get("routes")
    out: list[str] = []
    if conf is not None and runner is not None and route is not None:
        unclear = [e for e, c in enumerate(conf) if c < CONFIDENCE_MIN and runner[e] >= 0]
        if unclear:
            pairs = ", ".join(f"env {e}: expert {route[e]} vs {runner[e]} ({conf[e]:.2f})" for e in unclear[:8])
            more = f" and {len(unclear) - 8} more" if len(unclear) > 8 else ""
            out.append(
                f"the expert of {len(unclear)} new environment(s) is unclear: the runner-up explains the "
                f"adaptation data almost as well ({pairs}{more}; confidence = 1 - best/runner-up loss); "
                "their forecasts may come from the wrong family's expert"
            )
        forced = ad.get("runner_up_forced") or []
        better = [e for e in unclear if e < len(forced) and forced[e] and conf[e] == 0.0]
        if better:
            out.append(
                f"new environment(s) {better[:12]} are fitted better by another expert when the route is forced "
                "to it, but the gate sends their contexts elsewhere: the gate's regions do not match these dynamics"
            )
    rel = ad.get("fit_rel_loss")
    if rel is not None:
        poor = [e for e, v in enumerate(rel) if v > REL_LOSS_MAX]
        if poor:
            out.append(
                f"{len(poor)} new environment(s) {poor[:12]} are poorly fitted even on their own adaptation data "
                f"(relative loss above {REL_LOSS_MAX}) by the expert they are routed to"
            )
    return out


def reading_notes(metrics: Mapping[str, Any]) -> list[str]:
    """Notes on how to read a run's figures, one sentence each: not a problem of the model, but
    a metric that would mislead read alone (an Eq. 9 relMSE dominated by a few trajectories
    through states near zero, over ``DOMINATED_RATIO`` times the typical trajectory's)."""
    out = []
    for split in ("test", "adapt_test"):
        m = metrics.get(split) or {}
        rel, med = m.get("rel_mse"), m.get("median_traj_rel_mse")
        if (
            isinstance(rel, (int, float))
            and isinstance(med, (int, float))
            and _finite(rel)
            and _finite(med)
            and (rel > DOMINATED_RATIO * max(med, 1e-12))
        ):
            out.append(
                f"{split}: relMSE (Eq. 9) {m['rel_mse']:.3g} is dominated by a few trajectories through states near "
                f"zero; the typical trajectory's is {med:.3g} (median; traj_rel_l2 is the robust figure)"
            )
    return out


def _split_warnings(metrics: Mapping[str, Any]) -> list[str]:
    """Failed, diverged, poor, non-finite or collapsed forecasts of the test and adaptation splits."""
    out: list[str] = []
    for split in ("test", "adapt_test"):
        m = metrics.get(split)
        if not m:
            continue
        if m.get("failed_solves"):
            out.append(f"{split}: {m['failed_solves']} trajectory solve(s) failed; their errors are not finite")
        if m.get("diverged_envs"):
            envs = m["diverged_envs"]
            out.append(
                f"{split}: the forecast of {len(envs)} environment(s) {envs} diverged (a failed solve, or more than "
                f"{DIVERGE_RATIO:g}x the data's range away from it); the split's mean errors leave them out"
            )
        if not _finite(m.get("rel_mse")):
            out.append(f"{split}: relMSE is not finite; the model's predictions diverged")
        elif _finite(m.get("traj_rel_l2")) and m["traj_rel_l2"] >= POOR_TRAJ_REL_L2:
            out.append(
                f"{split}: the forecasts are poor: their error is {m['traj_rel_l2']:.2g} of the trajectories' own "
                f"size (traj_rel_l2; relMSE {m['rel_mse']:.3g}); train longer or check the data and settings"
            )
        if m.get("collapsed_envs"):
            envs = m["collapsed_envs"]
            out.append(
                f"{split}: the forecast of {len(envs)} environment(s) {envs} collapses (it barely moves while "
                "the data does)"
            )
    return out


def _adapt_vs_test(ad: Mapping[str, Any], te: Mapping[str, Any]) -> list[str]:
    """The expert choice of new environments, and adaptation far worse than the test split."""
    out: list[str] = []
    out += adaptation_warnings(ad)
    # the typical trajectory's errors, when known: Eq. 9 can be dominated by a few near-zero states
    key = (
        "median_traj_rel_mse"
        if _finite(ad.get("median_traj_rel_mse")) and _finite(te.get("median_traj_rel_mse"))
        else "rel_mse"
    )
    what = "typical trajectory's relMSE (median)" if key != "rel_mse" else "relMSE"
    a, t = ad.get(key), te.get(key)
    if (
        isinstance(a, (int, float))
        and isinstance(t, (int, float))
        and _finite(a)
        and _finite(t)
        and a > ADAPT_RATIO * t
        and a > ADAPT_FLOOR
    ):
        out.append(
            f"adaptation {what} {a:.3g} is {a / max(t, 1e-12):.0f}x the test's {t:.3g}: the new "
            "environments are fitted much worse than the training ones (check which expert each was routed "
            "to: routing.adapt_experts)"
        )
    return out


def diagnose(metrics: Mapping[str, Any], history: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """Warnings about a run, one sentence each (empty when nothing looks wrong).

    Args:
        metrics: the run's metrics (``metrics.json`` content: ``test``, ``adapt_test``,
            ``routing``, ...).
        history: the per-outer-step records of ``history.jsonl``.

    Returns:
        The warnings, most severe first: failed solves, non-finite or collapsed results,
        routing (idle or dominant experts, routes still changing late in training), adaptation
        far worse than the test split.
    """
    out: list[str] = []
    failed = sum(int(h.get("failed", 0) or 0) for h in history)
    all_failed = [
        h["step"]
        for h in history
        if any(h.get(k) is None or not _finite(h.get(k)) for k in ("ctx_loss", "weight_loss"))
    ]
    if all_failed:
        out.append(
            f"every ODE solve of a training batch failed in {len(all_failed)} outer step(s) (first: step "
            f"{all_failed[0]}); their losses are not reported. Check the data's scale and time grid, or raise "
            "max_steps / loosen rtol"
        )
    elif failed:
        out.append(
            f"{failed} environment solves failed during training (solver step limit or non-finite "
            "state) and were left out of those losses"
        )
    out += _split_warnings(metrics)
    r = metrics.get("routing") or {}
    all_counts = list(r.get("counts") or [])
    active = list(r.get("active") or [True] * len(all_counts))  # --experts auto: only the experts it kept count
    counts = {m: c for m, (c, on) in enumerate(zip(all_counts, active)) if on}
    n_env = sum(counts.values())
    if len(counts) > 1 and n_env:
        idle = [m for m, c in counts.items() if c == 0]
        if idle:
            out.append(
                f"expert(s) {idle} received no training environment (idle): {len(counts) - len(idle)} of "
                f"{len(counts)} experts do all the work; families may be merged on one expert"
            )
        top = max(counts, key=lambda m: counts[m])
        if not idle and counts[top] >= DOMINANT_SHARE * n_env and n_env >= 2 * len(counts):
            out.append(
                f"expert {top} holds {counts[top]} of {n_env} training environments; with {len(counts)} "
                "experts, families may be merged"
            )
    late = [h for h in history if h.get("changed") is not None][-max(1, len(history) // 10) :]
    moved = sum(int(h["changed"]) for h in late)
    if late and n_env and moved >= LATE_CHANGE_SHARE * n_env:
        out.append(
            f"{moved} expert changes in the last {len(late)} outer steps (of {n_env} training environments): "
            "the routes had not settled, and an environment that changes expert restarts from an untrained "
            'context part (with split contexts); see route_history.png, or try gate.pairing = "overlap"'
        )
    out += _adapt_vs_test(metrics.get("adapt_test") or {}, metrics.get("test") or {})
    out += _sequence_grid(metrics)
    return out


def _sequence_grid(metrics: Mapping[str, Any]) -> list[str]:
    """A sequence expert (a one-step map) trained on every n-th time point whose forecasts are
    poor: on ODEBench-2 hier-shPLRNN reached test relMSE 0.07-0.23 on the data's own grid and
    2.6-3.4 on every 5th point (docs/training.md)."""
    from .experts import BACKBONES, AbstractSequenceExpert

    cfg = metrics.get("config") or {}
    backbone = (cfg.get("model") or {}).get("backbone")
    stride = (cfg.get("data") or {}).get("time_stride", 1)
    err = (metrics.get("test") or {}).get("traj_rel_l2")
    cls = BACKBONES.get(backbone) if isinstance(backbone, str) else None
    if cls is None or not issubclass(cls, AbstractSequenceExpert) or not isinstance(stride, int) or stride <= 1:
        return []
    if not isinstance(err, (int, float)) or (_finite(err) and err < POOR_TRAJ_REL_L2):
        return []
    return [
        f"test: {backbone} learns a one-step map and trained on every {stride}th time point "
        f"(data.time_stride = {stride}); its forecasts are poor (traj_rel_l2 {err:.3g}): train it on the "
        "data's own grid, --set data.time_stride=1 (docs/training.md)"
    ]
