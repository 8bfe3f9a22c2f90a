"""The main job: train, adapt, evaluate, and write metrics, plots and a report.

``run(config, out_dir)`` is what ``mixerdsr run`` calls. Output directory layout::

    config.toml        the full configuration of the run
    data.npz           the dataset used (generated once; reused on --resume)
    checkpoint.npz     latest training state (weights, contexts, gate, centroids, optimisers, RNG)
    history.jsonl      one JSON line per outer step
    metrics.json       final metrics (keys documented in README.md)
    *.png, report.md   plots and a report that shows them
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import metrics as M
from ._config import Config, DataSettings
from ._diagnostics import diagnose, reading_notes
from ._jsonio import jsonable
from ._rundir import RunLockedError, run_directory, run_lock
from .adaptation import adapt_contexts, adapt_new
from .data import EnvData, check_splits, load_dataset, read_meta, resolve_dataset, save_dataset
from .downstream import run_downstream
from .evaluation import active_parameters, evaluate_split, total_parameters
from .inference import routes
from .mixer import MixER
from .models import MODEL_FILE, TrainedModel, save_model
from .routing import active_from_gate
from .training import check_resume, train

__all__ = ["run", "RunResult", "run_lock", "RunLockedError"]


def _load_data(
    cfg: Config, out: Path, log, progress: bool = True, reuse: bool = False
) -> tuple[dict[str, EnvData], dict[str, Any]]:
    """The run's dataset. ``out/data.npz`` is reused only when resuming (the checkpoint's
    configuration, ``data`` included, was checked first); otherwise the source is loaded or
    generated again and the cached copy replaced."""
    cached = out / "data.npz"
    d = cfg.data
    if reuse and cached.exists():
        return subset_splits(load_dataset(cached), d), read_meta(cached)
    user_file = Path(d.source).suffix == ".npz"
    stamp = out / "data.sha256"
    if user_file and Path(d.source).is_file():
        digest = hashlib.sha256(Path(d.source).read_bytes()).hexdigest()
        if reuse and stamp.exists() and stamp.read_text().strip() != digest:
            raise ValueError(
                f"{d.source} changed since the run in {out} started (its SHA-256 differs from {stamp}); "
                "resume with the original file, or start a new run in another directory"
            )
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(digest + "\n")
    log(f"loading dataset {d.source} ...")
    splits, meta = resolve_dataset(
        d.source,
        d.seed,
        test_file=d.test_file,
        standardize=d.standardize,
        progress=progress,
        envs_per_family=d.envs_per_family,
        test_trajectories=d.test_trajectories,
        clean=d.clean,
    )
    if not user_file:  # a dataset file of the user's is used where it is (its hash is kept)
        save_dataset(cached, splits, meta)
    return subset_splits(splits, d), meta


def subset_splits(splits: dict[str, EnvData], d: DataSettings) -> dict[str, EnvData]:
    """``data.envs_per_family`` and ``data.test_trajectories`` applied to every split."""
    out = {}
    for name, s in splits.items():
        if d.envs_per_family > 0:
            keep = [i for i in range(s.n_envs) if np.sum(s.family[: i + 1] == s.family[i]) <= d.envs_per_family]
            s = s.select_envs(keep)
        if d.test_trajectories > 0 and name in ("test", "adapt_test"):
            s = s.replace(x=s.x[:, : d.test_trajectories])
        out[name] = s
    return out


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What :func:`run` returns.

    Attributes:
        out_dir: the run directory.
        metrics: the content of ``metrics.json`` (keys documented in README.md: ``test``,
            ``adapt_test``, ``routing``, ``timing``, ``warnings``, ...).
        model: the selected MixER layer.
        contexts: its training contexts ``[E, d]``.
        adapted: the contexts fitted to the adaptation environments ``[E', d]`` (None without
            an ``adapt_train`` split).
    """

    out_dir: Path
    metrics: dict[str, Any]
    model: MixER
    contexts: jax.Array
    adapted: jax.Array | None

    @property
    def warnings(self) -> list[str]:
        """What looks wrong in this run, one sentence each (empty when nothing does)."""
        return list(self.metrics.get("warnings", []))


def run(
    cfg: Config,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    splits: dict[str, EnvData] | None = None,
    meta: dict[str, Any] | None = None,
    plots: bool = True,
) -> RunResult:
    """The main job: train, adapt, evaluate, and write everything to ``out_dir``.

    Args:
        cfg: configuration (see :class:`~mixerdsr.Config`).
        out_dir: output directory (created; locked while the run lasts).
        resume: continue an interrupted run in ``out_dir``.
        progress: progress bars.
        log: message sink.
        splits: use these splits instead of loading ``cfg.data.source``.
        meta: dataset metadata of ``splits`` (its ``name`` picks the downstream analysis).
        plots: draw the figures (``report.md`` is written either way).

    Returns:
        A :class:`RunResult`: the metrics written to ``metrics.json`` (whose ``warnings`` say in
        words what looks wrong, :func:`~mixerdsr.diagnose`; also printed and in ``report.md``),
        the model and the contexts.

    Raises:
        ValueError: a run already in ``out_dir`` (without ``resume``), a configuration that
            differs from the checkpoint's (with ``resume``), another process using ``out_dir``,
            or splits that do not fit together.
    """
    from .sharding import is_primary, using_devices

    primary = is_primary()  # several hosts: only process 0 writes out_dir, says and draws
    with run_directory(Path(out_dir), resume) as where, using_devices(cfg.train.devices):
        return _run_locked(
            cfg,
            where,
            resume=resume,
            progress=progress and primary,
            log=log if primary else (lambda s: None),
            splits=splits,
            meta=meta,
            plots=plots and primary,
        )


def _run_locked(
    cfg: Config,
    out: Path,
    *,
    resume: bool,
    progress: bool,
    log: Callable[[str], None],
    splits: dict[str, EnvData] | None,
    meta: dict[str, Any] | None,
    plots: bool = True,
) -> RunResult:
    """:func:`run` once the output directory is locked: check, train, evaluate, adapt, write."""
    from . import plots as P

    splits, meta = _prepare(cfg, out, resume, progress, log, splits, meta)
    t_start = time.perf_counter()
    res = train(cfg, splits["train"], out_dir=out, resume=resume, progress=progress, log=log)
    model, contexts = res.model, res.contexts
    metrics: dict[str, Any] = {
        "config": cfg.to_dict(),
        "best_step": res.best_step,
        "training": {
            "outer_steps_run": int(res.state.step),
            "stop_reason": res.stop_reason,
            "converged": res.converged,
            "steps_taken_back": res.steps_taken_back,
        },
    }
    preds: dict[str, np.ndarray] = {}
    for name in ("train", "test"):
        if name in splits:
            sp = splits[name]
            log(f"evaluating the {name} split ({sp.n_envs} envs x {sp.n_trajectories} trajectories) ...")
            metrics[name], preds[name] = evaluate_split(model, contexts, splits[name], cfg)
    adapted, ar = None, None
    if "adapt_train" in splits:
        adapted, ar, metrics["adapt_test"], preds["adapt_test"] = _adapt_and_evaluate(cfg, model, contexts, splits, log)
    r = np.asarray(routes(model, contexts))
    metrics["routing"] = _routing_metrics(cfg, model, r, ar, splits["train"].family, res.history)
    downstream, ds_figs = run_downstream(
        out, meta or {}, splits, contexts, r, adapted, ar, n_experts=cfg.model.num_experts, seed=cfg.train.seed
    )
    if downstream is not None:
        metrics["downstream"] = downstream
    gate_counts: Counter = Counter()
    for h in res.history:
        gate_counts.update(h.get("gate_updates", {}))
    metrics["gate_updates"] = dict(gate_counts)
    metrics["timing"] = dict(res.timing, run_seconds=time.perf_counter() - t_start)
    metrics["parameters"] = {"active_per_expert": active_parameters(model), "total": total_parameters(model)}
    metrics = jsonable(metrics)
    metrics["warnings"] = diagnose(metrics, res.history)
    metrics["notes"] = reading_notes(metrics)
    for w in metrics["warnings"]:
        log(f"warning: {w}")
    for w in metrics["notes"]:
        log(f"note: {w}")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _save_contexts(out, splits, contexts, r, adapted, ar)
    save_model(out / MODEL_FILE, _trained_model(cfg, model, contexts, splits["train"], meta, metrics))
    log("writing plots and report.md ..." if plots else "writing report.md ...")
    figs = ds_figs
    if plots:
        figs = P.plot_run(out, res.history, splits, preds, metrics, scored_from=model.expert_type.scored_from) + figs
    P.write_report(out, metrics, figs)
    log(f"wrote {out / 'metrics.json'} and {out / 'report.md'}")
    return RunResult(out, metrics, model, contexts, adapted)


def _prepare(
    cfg: Config,
    out: Path,
    resume: bool,
    progress: bool,
    log: Callable[[str], None],
    splits: dict[str, EnvData] | None,
    meta: dict[str, Any] | None,
) -> tuple[dict[str, EnvData], dict[str, Any] | None]:
    """Refuse what cannot run (a finished run without ``resume``, a changed configuration, too
    many experts), load the data, and write ``config.toml``. Returns ``(splits, meta)``."""
    ckpt = out / "checkpoint.npz"
    if resume and ckpt.exists():
        check_resume(ckpt, cfg)  # before anything in the directory is overwritten
    elif not resume and ckpt.exists():
        raise ValueError(
            f"{out} already holds a run (checkpoint.npz); pass --resume to continue it or choose another --out"
        )
    elif resume:
        log(f"nothing to resume in {out} (no checkpoint.npz): starting a new run there")
    if splits is None:
        splits, meta = _load_data(cfg, out, log, progress, reuse=resume)
    if "train" not in splits:
        raise ValueError(f"dataset {cfg.data.source!r} has no 'train' split (found {list(splits)})")
    check_splits(splits, cfg.data.source)
    n_env = splits["train"].n_envs
    if cfg.model.num_experts > n_env:
        raise ValueError(
            f"model.num_experts = {cfg.model.num_experts} is more than the {n_env} training environments of "
            f"{cfg.data.source}: at most one expert per environment can be used (--experts {n_env} or fewer)"
        )
    (out / "config.toml").write_text(_to_toml(cfg.to_dict()))
    return splits, meta


def _adapt_and_evaluate(cfg: Config, model, contexts, splits: dict[str, EnvData], log: Callable[[str], None]):
    """Adapt the new environments (``adapt.init``) and evaluate them on ``adapt_test``.
    Returns ``(contexts [E', d], routes [E'], metrics, predictions)``."""
    ad = splits["adapt_train"].stride_time(cfg.data.time_stride)
    a = cfg.adapt
    x_ad, t_ad = ad.x.astype(np.float32), ad.t.astype(np.float32)
    t0 = time.perf_counter()
    chosen: dict[str, Any] = {}
    if a.init == "experts":
        log(
            f"adapting {ad.n_envs} new environments (every expert's start x {a.screen_steps} steps, "
            f"the best {a.keep} expert(s) each to {a.steps} steps) ..."
        )
        fit = adapt_new(
            model,
            contexts,
            x_ad,
            t_ad,
            steps=a.steps,
            screen_steps=a.screen_steps,
            keep=a.keep,
            lr=a.lr,
            solver=cfg.solver,
            alpha=cfg.train.teacher_forcing,
            context_penalty=a.context_penalty,
            starts_per_expert=a.starts_per_expert,
            choice_prior=a.choice_prior,
        )
        adapted = fit.contexts
        chosen = {
            "runner_up": fit.runner_up.tolist(),
            "runner_up_forced": fit.runner_up_forced.tolist(),
            "confidence": fit.confidence.tolist(),
            "fit_rel_loss": fit.rel_loss.tolist(),
        }
    else:
        init = None
        if a.init == "mean":
            init = jnp.broadcast_to(jnp.mean(contexts, 0), (ad.n_envs, cfg.model.context_size))
        log(f"adapting {ad.n_envs} new environments ({a.steps} steps) ...")
        adapted, _ = adapt_contexts(
            model,
            x_ad,
            t_ad,
            steps=a.steps,
            lr=a.lr,
            init=init,
            solver=cfg.solver,
            joint=a.joint,
            alpha=cfg.train.teacher_forcing,
            context_penalty=a.context_penalty,
        )
    adapt_seconds = time.perf_counter() - t0
    target = splits.get("adapt_test", splits["adapt_train"])
    log(f"evaluating the adapted environments ({adapt_seconds:.1f} s for adaptation) ...")
    m, pred = evaluate_split(model, adapted, target, cfg)
    ar = np.asarray(routes(model, adapted))
    m["adapt_seconds"] = adapt_seconds
    m["routes"] = ar.tolist()
    m.update(chosen)
    return adapted, ar, m, pred


def _routing_metrics(cfg: Config, model, r: np.ndarray, ar, family: np.ndarray, history) -> dict[str, Any]:
    """``metrics["routing"]``: the training envs' experts, counts, purity and ARI, the new envs'
    experts, and how the number of experts was chosen (when it was)."""
    out: dict[str, Any] = {
        "experts": r.tolist(),
        "counts": np.bincount(r, minlength=cfg.model.num_experts).tolist(),
        "purity": M.purity(r, family),
        "ari": M.adjusted_rand_index(r, family),
        "adapt_experts": ar.tolist() if ar is not None else None,
    }
    grouping = cfg.gate.warm_start.grouping
    if cfg.gate.router == "warm_start" and grouping != "fixed":
        act = np.asarray(active_from_gate(model.gate))
        out["active"] = act.tolist()
        out["chosen_experts"] = int(act.sum())
        out["chosen_by"] = grouping
    choice = next((h["experts_chosen"] for h in history if "experts_chosen" in h), None)
    if choice is not None:  # how the number of experts was chosen after the warm-up
        out["silhouette"] = choice["silhouette"]
        out["shared_fit"] = choice["shared_fit"]
        if "eigenvalues" in choice:
            out["eigenvalues"] = choice["eigenvalues"]
    return out


def _save_contexts(out: Path, splits: dict[str, EnvData], contexts, r: np.ndarray, adapted, ar) -> None:
    """``contexts.npz``: the training (and adapted) contexts with their routes and families."""
    saved: dict[str, Any] = {"train": np.asarray(contexts), "train_routes": r, "train_family": splits["train"].family}
    if adapted is not None and ar is not None:
        held = splits.get("adapt_test", splits["adapt_train"])
        saved |= {"adapt": np.asarray(adapted), "adapt_routes": ar, "adapt_family": held.family}
    np.savez(out / "contexts.npz", **saved)


def _trained_model(
    cfg: Config, model: MixER, contexts: jax.Array, train: EnvData, meta: dict[str, Any] | None, metrics: dict[str, Any]
) -> TrainedModel:
    """The run's model with its card (what ``mixerdsr adapt --model RUN_DIR`` loads)."""
    meta = meta or {}
    names = list(train.family_names) if train.family_names is not None else []
    card = {
        "data": meta.get("name", cfg.data.source),
        "description": meta.get("description", ""),
        "time_stride": cfg.data.time_stride,
        "dt": float(np.median(np.diff(train.t[0]))) * cfg.data.time_stride if train.n_times > 1 else None,
        "metrics": {
            k: metrics[k] for k in ("test", "adapt_test", "routing", "timing", "best_step", "training") if k in metrics
        },
    }
    return TrainedModel(model, contexts, cfg, train.n_dims, np.asarray(train.family), names, jsonable(card))


def _to_toml(d: dict[str, Any]) -> str:
    import tomli_w

    body = tomli_w.dumps(_drop_none(d))
    return "# mixerdsr run configuration (load with --config)\n" + body


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    """TOML has no null: unset optional settings are left out (their default is None)."""
    return {k: _drop_none(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}
