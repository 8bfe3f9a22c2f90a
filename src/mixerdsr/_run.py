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

import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import metrics as M
from ._config import Config
from .checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint
from .data import EnvData, load_dataset, read_meta, save_dataset
from .data._registry import load_run_dataset
from .downstream import run_downstream
from .gating import STATUS_NAMES
from .training import (TrainData, TrainState, adapt_contexts, expert_starts, init_state, make_outer_step, predict,
                       routes, solver_config, split_validation)

__all__ = ["run", "train", "evaluate_split", "TrainResult"]


class TrainResult(dict):
    """Result of :func:`train`: keys ``state`` (final :class:`TrainState`), ``model`` and
    ``contexts`` (the selected, i.e. best-validation, model and training contexts), ``history``
    (list of per-step dicts) and ``timing``."""


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.ndarray, jax.Array)):
        return _jsonable(np.asarray(x).tolist())
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    return x


def _val_rel_mse(model, contexts, x_val, t, cfg: Config) -> float:
    pred, ok = predict(model, contexts, x_val, t, solver_config(cfg))
    if model.kind == "sequence":
        pred, x_val = pred[:, :, 1:], x_val[:, :, 1:]
    return float(M.rel_mse(jnp.asarray(pred), jnp.asarray(x_val)))


def _snapshot_steps(n: int) -> set[int]:
    return {0, max(0, round(0.1 * n) - 1), max(0, round(0.5 * n) - 1), n - 1}


def train(cfg: Config, train_split: EnvData, *, out_dir: str | Path | None = None, resume: bool = False,
          progress: bool = True, log: Callable[[str], None] = print) -> TrainResult:
    """Train a MixER layer on one split with proximal alternating minimisation.

    Args:
        cfg: run configuration.
        train_split: training data (``time_stride`` and the validation hold-out are applied here).
        out_dir: where ``checkpoint.npz`` and ``history.jsonl`` go (None: nothing written).
        resume: continue from ``out_dir/checkpoint.npz`` (same result as an uninterrupted run).
        progress: show a progress bar (loss, validation relMSE, routing counts).
        log: where one-line messages go.

    Returns:
        :class:`TrainResult`.
    """
    tr = train_split.stride_time(cfg.time_stride)
    x_np, xval_np = split_validation(tr.x.astype(np.float32), cfg.val_trajectories)
    data = TrainData(jnp.asarray(x_np), jnp.asarray(tr.t, jnp.float32))
    x_val = jnp.asarray(xval_np if xval_np is not None else x_np)
    state = init_state(cfg, tr.n_envs, tr.n_dims)
    history: list[dict[str, Any]] = []
    out = Path(out_dir) if out_dir is not None else None
    ckpt = out / "checkpoint.npz" if out is not None else None
    hist_path = out / "history.jsonl" if out is not None else None
    if resume and ckpt is not None and ckpt.exists():
        stored, _ = read_checkpoint_config(ckpt)
        mismatch = {k: (stored.get(k), v) for k, v in cfg.to_dict().items()
                    if k not in ("outer_steps", "adapt_steps", "adapt_lr", "adapt_init", "adapt_joint", "checkpoint_every",
                                 "low_memory_compile")
                    and stored.get(k) != v}
        if mismatch:
            raise ValueError(f"{ckpt}: cannot resume, the configuration differs: {mismatch}")
        if stored.get("outer_steps") != cfg.outer_steps:
            raise ValueError(f"{ckpt}: cannot resume with outer_steps={cfg.outer_steps} (checkpoint: "
                             f"{stored.get('outer_steps')}; the learning-rate schedule depends on it)")
        state, _, _ = load_checkpoint(ckpt, state)
        done = int(state.step)
        if hist_path is not None and hist_path.exists():
            history = [json.loads(line) for line in hist_path.read_text().splitlines() if line.strip()]
            history = [h for h in history if h["step"] < done]
        log(f"resumed from {ckpt} at outer step {done}")
    if hist_path is not None:
        hist_path.parent.mkdir(parents=True, exist_ok=True)
        hist_path.write_text("".join(json.dumps(h) + "\n" for h in history))

    step_fn = make_outer_step(cfg, tr.n_envs)
    snaps = _snapshot_steps(cfg.outer_steps)
    start = int(state.step)
    times: list[float] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.outer_steps, initial=start, desc="train", unit="step", dynamic_ncols=True)

    def save() -> None:
        if ckpt is not None:
            save_checkpoint(ckpt, state, cfg.to_dict(), {"step": int(state.step)})

    try:
        for s in range(start, cfg.outer_steps):
            t0 = time.perf_counter()
            state, info = step_fn(state, data)
            info = jax.device_get(info)
            times.append(time.perf_counter() - t0)
            r = np.asarray(routes(state.model, state.contexts))
            status = Counter(STATUS_NAMES[int(v)] for v in info["gate_status"] if v >= 0)
            rec: dict[str, Any] = {
                "step": s, "ctx_loss": float(np.mean(info["ctx_loss"])), "weight_loss": float(np.mean(info["weight_loss"])),
                "failed": int(np.sum(info["failed"])), "gate_updates": dict(status),
                "routes": np.bincount(r, minlength=cfg.experts).tolist(), "seconds": times[-1]}
            if (s + 1) % cfg.val_every == 0 or s == cfg.outer_steps - 1:
                val = _val_rel_mse(state.model, state.contexts, x_val, data.t, cfg)
                rec["val_rel_mse"] = val
                if math.isfinite(val) and val < float(state.best_val):
                    state = state._replace(best_model=state.model, best_contexts=state.contexts,
                                           best_val=jnp.asarray(val, jnp.float32), best_step=jnp.asarray(s, jnp.int32))
            if s in snaps:
                rec["gate_probs"] = np.asarray(jax.vmap(state.model.gate_probs)(state.contexts)).round(4).tolist()
            history.append(rec)
            if hist_path is not None:
                with hist_path.open("a") as f:
                    f.write(json.dumps(_jsonable(rec)) + "\n")
            if ckpt is not None and ((s + 1) % cfg.checkpoint_every == 0 or s == cfg.outer_steps - 1):
                save()
            if bar is not None:
                last_val = next((h["val_rel_mse"] for h in reversed(history) if "val_rel_mse" in h), float("nan"))
                bar.set_postfix(loss=f"{rec['weight_loss']:.3g}", val=f"{last_val:.3g}", routes=rec["routes"], refresh=False)
                bar.update(1)
    except KeyboardInterrupt:
        save()
        if bar is not None:
            bar.close()
        log(f"interrupted at outer step {int(state.step)}; checkpoint saved"
            + (f" to {ckpt}; continue with --resume" if ckpt else ""))
        raise
    if bar is not None:
        bar.close()
    steady = times[1:] if len(times) > 1 else times
    timing = {"compile_seconds": (times[0] - float(np.median(steady))) if len(times) > 1 and start == 0 else None,
              "seconds_per_outer_step": float(np.mean(steady)) if steady else None,
              "total_seconds": float(np.sum(times))}
    use_best = bool(np.isfinite(float(state.best_val)))
    return TrainResult(state=state, model=state.best_model if use_best else state.model,
                       contexts=state.best_contexts if use_best else state.contexts, history=history,
                       timing=timing, best_step=int(state.best_step), data=data)


def evaluate_split(model, contexts, split: EnvData, cfg: Config) -> tuple[dict[str, Any], np.ndarray]:
    """MSE, relMSE (Eq. 9), TPRMSE (Eq. 10) and per-env relMSE of a split.

    Returns ``(metrics, pred [E, N, T, D])``. Sequence experts are scored free-running on
    steps 1..T-1 (step 0 is the unscored initial state); their one-step error under the
    training teacher forcing (``alpha = cfg.teacher_forcing``) is added as
    ``teacher_forced_mse`` / ``teacher_forced_rel_mse``.
    """
    x = split.x.astype(np.float32)
    pred, ok = predict(model, contexts, x, split.t.astype(np.float32), solver_config(cfg))
    p, y = (pred[:, :, 1:], x[:, :, 1:]) if model.kind == "sequence" else (pred, x)
    p, y = jnp.asarray(p), jnp.asarray(y)
    per_env = np.asarray(M.per_env_rel_mse(p, y))
    out = {
        "mse": float(M.mse(p, y)),
        "rel_mse": float(M.rel_mse(p, y)),
        "tprmse": float(M.tprmse(p, y, cfg.tprmse_eps)),
        "traj_rel_l2": float(M.traj_rel_l2(p, y)),
        "per_env_rel_mse": per_env.tolist(),
        "failed_solves": int((~ok).sum()),
    }
    if model.kind == "sequence":
        tf, _ = predict(model, contexts, x, split.t.astype(np.float32), solver_config(cfg), alpha=cfg.teacher_forcing)
        tf, yy = jnp.asarray(tf[:, :, 1:]), jnp.asarray(x[:, :, 1:])
        out.update(teacher_forcing=cfg.teacher_forcing, teacher_forced_mse=float(M.mse(tf, yy)),
                   teacher_forced_rel_mse=float(M.rel_mse(tf, yy)))
    return out, pred


def _load_data(cfg: Config, out: Path, log, progress: bool = True) -> tuple[dict[str, EnvData], dict[str, Any]]:
    cached = out / "data.npz"
    if cached.exists():
        return load_dataset(cached), read_meta(cached)
    src = cfg.data
    if src.endswith(".npz"):
        return load_dataset(src), read_meta(src)
    log(f"loading dataset {src} ...")
    splits, meta = load_run_dataset(src, cfg.data_seed, test_file=cfg.test_file, standardize=cfg.standardize,
                                    progress=progress)
    save_dataset(cached, splits, meta)
    return splits, meta


def run(cfg: Config, out_dir: str | Path, *, resume: bool = False, progress: bool = True,
        log: Callable[[str], None] = print, splits: dict[str, EnvData] | None = None,
        meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The main job: train, adapt, evaluate, and write everything to ``out_dir``.

    Args:
        cfg: configuration (see :class:`~mixerdsr.Config`).
        out_dir: output directory (created).
        resume: continue an interrupted run in ``out_dir``.
        progress: progress bars.
        log: message sink.
        splits: use these splits instead of loading ``cfg.data``.
        meta: dataset metadata of ``splits`` (its ``name`` picks the downstream analysis).

    Returns:
        The metrics dictionary written to ``metrics.json``.
    """
    from .plots import _training as P

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not resume and (out / "checkpoint.npz").exists():
        raise ValueError(f"{out} already holds a run (checkpoint.npz); pass --resume to continue it "
                         f"or choose another --out")
    (out / "config.toml").write_text(_to_toml(cfg.to_dict()))
    if splits is None:
        splits, meta = _load_data(cfg, out, log, progress)
    if "train" not in splits:
        raise ValueError(f"dataset {cfg.data!r} has no 'train' split (found {list(splits)})")
    t_start = time.perf_counter()
    res = train(cfg, splits["train"], out_dir=out, resume=resume, progress=progress, log=log)
    model, contexts = res["model"], res["contexts"]
    metrics: dict[str, Any] = {"config": cfg.to_dict(), "best_step": res["best_step"]}
    preds: dict[str, np.ndarray] = {}
    for name in ("train", "test"):
        if name in splits:
            m, preds[name] = evaluate_split(model, contexts, splits[name], cfg)
            metrics[name] = m
    adapted = None
    if "adapt_train" in splits:
        ad = splits["adapt_train"].stride_time(cfg.time_stride)
        init, starts = None, None
        if cfg.adapt_init == "mean":
            init = jnp.broadcast_to(jnp.mean(contexts, 0), (ad.n_envs, cfg.context_size))
        elif cfg.adapt_init == "experts":
            starts = expert_starts(model, contexts)
        t0 = time.perf_counter()
        adapted, _ = adapt_contexts(model, ad.x.astype(np.float32), ad.t.astype(np.float32), steps=cfg.adapt_steps,
                                    lr=cfg.adapt_lr, init=init, solver=solver_config(cfg),
                                    joint=cfg.adapt_joint, starts=starts)
        adapt_seconds = time.perf_counter() - t0
        target = splits.get("adapt_test", splits["adapt_train"])
        m, preds["adapt_test"] = evaluate_split(model, adapted, target, cfg)
        m["adapt_seconds"] = adapt_seconds
        m["routes"] = np.asarray(routes(model, adapted)).tolist()
        metrics["adapt_test"] = m
    r = np.asarray(routes(model, contexts))
    fam = splits["train"].family
    metrics["routing"] = {"experts": r.tolist(), "counts": np.bincount(r, minlength=cfg.experts).tolist(),
                          "purity": M.purity(r, fam), "ari": M.adjusted_rand_index(r, fam),
                          "adapt_experts": metrics["adapt_test"]["routes"] if adapted is not None else None}
    gate_counts: Counter = Counter()
    for h in res["history"]:
        gate_counts.update(h.get("gate_updates", {}))
    ar = np.asarray(routes(model, adapted)) if adapted is not None else None
    downstream, ds_figs = run_downstream(out, meta or {}, splits, contexts, r, adapted, ar, n_experts=cfg.experts,
                                         seed=cfg.seed)
    if downstream is not None:
        metrics["downstream"] = downstream
    metrics["gate_updates"] = dict(gate_counts)
    metrics["timing"] = dict(res["timing"], run_seconds=time.perf_counter() - t_start)
    metrics["parameters"] = {"active_per_expert": active_parameters(model), "total": total_parameters(model)}
    metrics = _jsonable(metrics)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    held = splits.get("adapt_test", splits.get("adapt_train"))
    np.savez(out / "contexts.npz", train=np.asarray(contexts), train_routes=r, train_family=fam,
             **({"adapt": np.asarray(adapted), "adapt_routes": ar, "adapt_family": held.family} if adapted is not None else {}))
    figs = P.plot_run(out, res["history"], splits, preds, metrics) + ds_figs
    P.write_report(out, metrics, figs)
    log(f"wrote {out / 'metrics.json'} and {out / 'report.md'}")
    return metrics


def active_parameters(model) -> int:
    """Parameters of one expert (the active count of a top-1 mixture), shift included."""
    import equinox as eqx

    leaves = jax.tree.leaves(eqx.filter(model.experts, eqx.is_array))
    return int(sum(leaf.size // leaf.shape[0] for leaf in leaves)) + (1 if model.shift else 0)


def total_parameters(model) -> int:
    import equinox as eqx

    return int(sum(leaf.size for leaf in jax.tree.leaves(eqx.filter(model, eqx.is_array))))


def _to_toml(d: dict[str, Any]) -> str:
    lines = ["# mixerdsr run configuration (load with --config)"]
    for k, v in d.items():
        if v is None:
            continue
        if isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, str):
            lines.append(f"{k} = {json.dumps(v)}")
        else:
            lines.append(f"{k} = {v!r}")
    return "\n".join(lines) + "\n"
