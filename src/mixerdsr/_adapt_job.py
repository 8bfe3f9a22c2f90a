"""``mixerdsr adapt``: fit a trained model's contexts to new environments, say which family
each one resembles and how sure that is, forecast, and write metrics, contexts and plots.

Output directory layout::

    metrics.json        per environment: expert, runner-up, confidence, nearest families,
                        fit and forecast errors; overall adapt/test metrics; warnings
    contexts.npz        adapted contexts and experts beside the model's training contexts
    adapt_forecast.png  data against the model's forecast, per environment
    adapt_contexts.png  where the new contexts sit among the training contexts (PCA)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._diagnostics import CONFIDENCE_MIN, REL_LOSS_MAX
from ._jsonio import jsonable
from .adaptation import Adaptation, adapt_new
from .data import DataError, EnvData
from .evaluation import evaluate_split
from .models import TrainedModel
from .rollout import SolverSettings

__all__ = ["adapt_job", "fit_and_target", "describe", "expert_distance"]


def fit_and_target(splits: dict[str, EnvData], source: str) -> tuple[str, str | None]:
    """The split to fit (``adapt_train``, else ``train``) and the one to forecast
    (``adapt_test`` / ``test`` when present)."""
    if "adapt_train" in splits:
        return "adapt_train", "adapt_test" if "adapt_test" in splits else None
    if "train" in splits:
        return "train", "test" if "test" in splits else None
    raise DataError(f"{source}: expected an 'adapt_train' or 'train' split, found {sorted(splits)}")


def _nearest(train: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Index of each new context's nearest training context (per-dimension standardised)."""
    sd = train.std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    d = np.linalg.norm((new / sd)[:, None] - (train / sd)[None], axis=-1)
    return d.argmin(1)


def expert_distance(tm: TrainedModel, contexts: np.ndarray, experts: np.ndarray) -> np.ndarray:
    """How far each context lies from its expert's training contexts: the root mean square over
    the dimensions the expert sees (its part with split contexts) of ``(c - mean) / std`` of
    that expert's training contexts (inf for an expert without training environments)."""
    model = tm.model
    train, r = np.asarray(tm.contexts), tm.routes
    out = np.full(len(contexts), np.inf)
    for e, (c, m) in enumerate(zip(np.asarray(contexts), experts)):
        own = train[r == m]
        if len(own) == 0:
            continue
        if model.split:
            w = model.context_size // model.n_experts
            own, c = own[:, m * w : (m + 1) * w], c[m * w : (m + 1) * w]
        sd = np.maximum(own.std(0), 1e-3 * (np.abs(own).mean() + 1e-6))
        out[e] = float(np.sqrt(np.mean(((c - own.mean(0)) / sd) ** 2)))
    return out


def _expert_family(tm: TrainedModel) -> dict[int, int]:
    """Each expert's family: the one most of its training environments belong to (-1 if none)."""
    r, fam = tm.routes, tm.family
    out = {}
    for m in range(tm.model.n_experts):
        f = fam[(r == m) & (fam >= 0)]
        out[m] = int(np.bincount(f).argmax()) if len(f) else -1
    return out


def describe(tm: TrainedModel, a: Adaptation) -> list[dict[str, Any]]:
    """Per new environment: expert, runner-up, confidence, nearest families and the reasons it
    is not trusted (empty when it is)."""
    exp_fam = _expert_family(tm)
    idx = _nearest(np.asarray(tm.contexts), np.asarray(a.contexts))
    dist = expert_distance(tm, np.asarray(a.contexts), a.experts)
    rows = []
    for e in range(len(a.experts)):
        m = int(a.experts[e])
        reasons = []
        if a.confidence[e] < CONFIDENCE_MIN:
            ru = int(a.runner_up[e])
            how = "as well or better when the route is forced to it" if a.runner_up_forced[e] else "almost as well"
            reasons.append(f"expert {ru} explains the data {how} (confidence {a.confidence[e]:.2f})")
        if a.rel_loss[e] > REL_LOSS_MAX:
            reasons.append(f"even the fitted trajectory is poorly reproduced (relative loss {a.rel_loss[e]:.2f})")
        rows.append(
            {
                "env": e,
                "expert": m,
                "runner_up": int(a.runner_up[e]),
                "runner_up_forced": bool(a.runner_up_forced[e]),
                "confidence": float(a.confidence[e]),
                "family_by_route": exp_fam.get(m, -1),
                "family_by_route_name": tm.family_name(exp_fam.get(m, -1)),
                "family_by_context": int(tm.family[idx[e]]),
                "family_by_context_name": tm.family_name(int(tm.family[idx[e]])),
                "nearest_train_env": int(idx[e]),
                "context_distance": float(dist[e]),  # reported, not judged: docs/adaptation.md
                "fit_loss": float(a.loss[e]),
                "fit_rel_loss": float(a.rel_loss[e]),
                "trusted": not reasons,
                "why_not": reasons,
            }
        )
    return rows


def adapt_job(
    tm: TrainedModel,
    splits: dict[str, EnvData],
    out: Path | None,
    *,
    source: str = "<arrays>",
    steps: int | None = None,
    time_stride: int | None = None,
    log: Callable[[str], None] = print,
    plots: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Adapt ``tm`` to the environments of ``splits`` and write the results to ``out``.

    Args:
        tm: the trained model.
        splits: the new data (``adapt_train`` / ``adapt_test``, or ``train`` / ``test``).
        out: output directory (None: nothing written).
        source: name of the data for messages.
        steps: AdaBelief steps per fit (default: the model's ``adapt.steps``).
        time_stride: keep every n-th time point (default: the model's training stride, or 1
            when the data have fewer than 4 points per stride).
        log: message sink.
        plots: write the plots.
        progress: a progress bar over the chunks of fits.

    Returns:
        The metrics (also written to ``out/metrics.json``).

    Raises:
        DataError: data whose state dimension differs from the model's (naming the key).
    """
    t0 = time.perf_counter()
    fit_name, target_name = fit_and_target(splits, source)
    fit = splits[fit_name]
    if fit.n_dims != tm.state_size:
        raise DataError(
            f"{source}: key '{fit_name}/x': expected states of dimension {tm.state_size} (the model's), "
            f"found shape {tuple(fit.x.shape)}"
        )
    cfg = tm.config
    stride = time_stride if time_stride is not None else cfg.data.time_stride
    if time_stride is None and fit.n_times < 4 * stride:
        stride = 1
    ad = fit.stride_time(stride)
    n_steps = steps if steps is not None else cfg.adapt.steps
    log(
        f"adapting {ad.n_envs} environment(s) of {source}:{fit_name} ({ad.n_trajectories} trajectory(ies) x "
        f"{ad.n_times} times; {tm.model.n_experts} experts, {n_steps} steps) ..."
    )
    t_fit = time.perf_counter()
    a = _fit(tm, ad, n_steps, progress)
    fit_seconds = time.perf_counter() - t_fit
    envs = describe(tm, a)
    for row, f in zip(envs, fit.family):
        row["family"] = int(f)
    metrics: dict[str, Any] = {
        "model": tm.source,
        "data": source,
        "fitted_split": fit_name,
        "time_stride": stride,
        "steps": n_steps,
        "adapt": {
            k: getattr(cfg.adapt, k)
            for k in ("lr", "screen_steps", "keep", "context_penalty", "starts_per_expert", "choice_prior")
        },
        "environments": envs,
    }
    target = splits.get(target_name) if target_name is not None else None
    pred = None
    if target is not None:
        m, pred = evaluate_split(tm.model, a.contexts, target, cfg)
        metrics["forecast"] = dict(m, split=target_name)
        for row, v, v2 in zip(envs, m["per_env_rel_mse"], m["per_env_median_traj_rel_mse"]):
            row["forecast_rel_mse"] = v
            row["forecast_median_traj_rel_mse"] = v2
        _judge_forecasts(envs, tm.card.get("metrics") or {})
    agreement = _family_agreement(tm, fit, envs)
    if agreement is not None:
        metrics["family_agreement"] = agreement
    untrusted = [r for r in envs if not r["trusted"]]
    metrics["warnings"] = [f"environment {r['env']}: " + "; ".join(r["why_not"]) for r in untrusted]
    metrics["timing"] = {"fit_seconds": fit_seconds, "total_seconds": time.perf_counter() - t0}
    metrics = jsonable(metrics)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        np.savez(
            out / "contexts.npz",
            adapt=np.asarray(a.contexts),
            adapt_routes=a.experts,
            adapt_family=fit.family,
            train=np.asarray(tm.contexts),
            train_routes=tm.routes,
            train_family=tm.family,
        )
        if plots:
            _plots(out, tm, a, fit if target is None else target, pred, ad, envs)
        metrics["timing"]["total_seconds"] = time.perf_counter() - t0
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _fit(tm: TrainedModel, ad: EnvData, n_steps: int, progress: bool) -> Adaptation:
    """:func:`~mixerdsr.adapt_new` of the model's settings on ``ad`` (a progress bar over the
    chunks of fits when ``progress``)."""
    cfg = tm.config
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=1, desc="adapt", unit="chunk", dynamic_ncols=True, disable=None)  # no bar in a log file

    def advance(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    solver: SolverSettings = cfg.solver
    a = adapt_new(
        tm.model,
        tm.contexts,
        ad.x.astype(np.float32),
        ad.t.astype(np.float32),
        steps=n_steps,
        screen_steps=cfg.adapt.screen_steps,
        keep=cfg.adapt.keep,
        lr=cfg.adapt.lr,
        solver=solver,
        alpha=cfg.train.teacher_forcing,
        context_penalty=cfg.adapt.context_penalty,
        starts_per_expert=cfg.adapt.starts_per_expert,
        choice_prior=cfg.adapt.choice_prior,
        progress=advance,
    )
    if bar is not None:
        bar.close()
    return a


def _family_agreement(tm: TrainedModel, fit: EnvData, envs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """How often the family of an env's expert (and of its nearest training context) is its own
    label, when both the data and the model know families; else None."""
    known = fit.family >= 0
    if not (known.any() and any(f >= 0 for f in tm.family)):
        return None
    by_route = np.array([r["family_by_route"] for r in envs])
    by_context = np.array([r["family_by_context"] for r in envs])
    return {
        "by_route": float(np.mean(by_route[known] == fit.family[known])),
        "by_context": float(np.mean(by_context[known] == fit.family[known])),
        "note": "only meaningful when the new data's family labels use the model's family numbering",
    }


def _plots(out: Path, tm: TrainedModel, a: Adaptation, shown: EnvData, pred, ad: EnvData, envs) -> None:
    from .inference import predict
    from .plots import contexts_by_expert_figure, plot_adapt_forecast, plot_context_pca, save_figure

    if pred is None:
        pred, _ = predict(tm.model, a.contexts, ad.x.astype(np.float32), ad.t.astype(np.float32), tm.config.solver)
        shown = ad
    plot_adapt_forecast(shown, np.asarray(pred), envs, out / "adapt_forecast.png")
    tr = np.asarray(tm.contexts)
    new = np.asarray(a.contexts)
    fam_new = np.array([r["family_by_route"] for r in envs])
    mod = tm.config.model
    if mod.split_context and tm.model.n_experts > 1:  # each expert reads its own slice: one panel each
        w = mod.context_size // tm.model.n_experts
        fig = contexts_by_expert_figure(
            tr,
            tm.routes,
            tm.family,
            new,
            a.experts,
            fam_new,
            [slice(m * w, (m + 1) * w) for m in range(tm.model.n_experts)],
            tm.family_names or None,
        )
        save_figure(fig, out / "adapt_contexts.png")
        return
    both = np.concatenate([tr, new])
    # every context dimension in units of its spread over the training contexts: with split
    # contexts each expert's slice has its own scale, and one large slice would flatten the rest
    sd = tr.std(0)
    scale = np.where(sd > 1e-12 * max(float(sd.max()), 1e-30), sd, 1.0)
    centred = (both - tr.mean(0)) / scale
    _, _, vt = np.linalg.svd((tr - tr.mean(0)) / scale, full_matrices=False)
    pts = centred @ vt[:2].T if vt.shape[0] >= 2 else np.c_[centred @ vt[:1].T, np.zeros(len(both))]
    names = tm.family_names or None
    plot_context_pca(
        out / "adapt_contexts.png",
        pts,
        [
            ("family (new: by route)", np.concatenate([tm.family, fam_new]), names),
            ("expert", np.concatenate([tm.routes, a.experts]), None),
        ],
        markers=np.r_[np.zeros(len(tr), int), np.ones(len(new), int)],
        marker_names=("training", "new"),
        title="contexts: training (circles) and new environments (triangles), first two principal components "
        "of the standardised contexts",
    )


#: a new environment whose forecast error is more than this many times the model's own test
#: error (and above 0.1) is not vouched for: the typical (median) trajectory's relMSE, robust to
#: the few trajectories through states near 0, when the model's card has it; else Eq. 9's relMSE
FORECAST_FACTOR = 10.0
FORECAST_FLOOR = 0.1


def _model_test_error(card_metrics: dict[str, Any]) -> tuple[str, float] | None:
    """``(metric, value)`` of the model's own test error from its card (a run's card holds the
    test split's metrics, a shipped model's card ``test_rel_mse``)."""
    test = card_metrics.get("test") or {}
    for key, value in (("median_traj_rel_mse", test.get("median_traj_rel_mse")), ("rel_mse", test.get("rel_mse"))):
        if isinstance(value, (int, float)) and np.isfinite(value) and value > 0:
            return key, float(value)
    value = card_metrics.get("test_rel_mse")
    return ("rel_mse", float(value)) if isinstance(value, (int, float)) and np.isfinite(value) and value > 0 else None


def _judge_forecasts(envs: list[dict[str, Any]], card_metrics: dict[str, Any]) -> None:
    """Mark the rows whose known forecast error is far worse than the model's test error (or
    not finite) as not trusted, with the reason."""
    ref = _model_test_error(card_metrics)
    for row in envs:
        err = row.get("forecast_rel_mse")
        if err is None or not np.isfinite(err):
            why = "its forecast diverged (no finite error)"
        elif ref is not None:
            key, value = ref
            mine = row.get("forecast_median_traj_rel_mse") if key == "median_traj_rel_mse" else err
            if mine is None or not mine > max(FORECAST_FACTOR * value, FORECAST_FLOOR):
                continue
            what = "typical trajectory's relMSE (median)" if key == "median_traj_rel_mse" else "relMSE"
            why = f"its forecast {what} {mine:.3g} is {mine / value:.1f}x the model's test {what} {value:.3g}"
        else:
            continue
        row["trusted"] = False
        row.setdefault("why_not", []).append(why)
