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

import contextlib
import json
import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import metrics as M
from ._config import Config
from ._diagnostics import collapsed_envs, diagnose
from .checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint
from .data import EnvData, check_splits, load_dataset, read_meta, save_dataset
from .data._registry import load_run_dataset
from .downstream import run_downstream
from .gating import STATUS_NAMES
from .training import (
    TrainData,
    TrainState,
    adapt_contexts,
    expert_starts,
    init_state,
    make_outer_step,
    predict,
    routes,
    solver_config,
    split_validation,
)

__all__ = [
    "run",
    "train",
    "evaluate_split",
    "TrainResult",
    "check_resume",
    "read_history",
    "run_lock",
    "RunLockedError",
]


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


#: settings that may differ when a run is resumed (they do not change training)
_RESUMABLE = ("adapt_steps", "adapt_lr", "adapt_init", "adapt_joint", "checkpoint_every", "low_memory_compile")


def check_resume(ckpt: Path, cfg: Config) -> None:
    """Refuse to resume ``ckpt`` with a configuration that would not continue the same run.

    Raises:
        ValueError: naming the checkpoint and every setting that differs (stored vs given).
    """
    stored, _ = read_checkpoint_config(ckpt)
    mismatch = {
        k: (stored.get(k), v)
        for k, v in cfg.to_dict().items()
        if k not in _RESUMABLE and k != "outer_steps" and stored.get(k) != v
    }
    if mismatch:
        diff = ", ".join(f"{k}: checkpoint {a!r}, given {b!r}" for k, (a, b) in mismatch.items())
        raise ValueError(f"{ckpt}: cannot resume, the configuration differs ({diff})")
    if stored.get("outer_steps") != cfg.outer_steps:
        raise ValueError(
            f"{ckpt}: cannot resume with outer_steps={cfg.outer_steps} (checkpoint: "
            f"{stored.get('outer_steps')}; the learning-rate schedule depends on it)"
        )


def read_history(path: Path, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """The records of ``history.jsonl``. A partly written last line (a run killed while writing
    it) is dropped with a message; a damaged line elsewhere is an error naming the line."""
    lines = path.read_text(errors="replace").splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
                raise ValueError("not a record with an integer 'step'")
        except ValueError as err:
            if i == len(lines) - 1:
                log(f"{path}: dropped a partly written last line ({len(line)} characters)")
                break
            raise ValueError(f"{path}: line {i + 1} is not a valid history record ({err})") from None
        out.append(rec)
    return out


def train(
    cfg: Config,
    train_split: EnvData,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainResult:
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
        check_resume(ckpt, cfg)
        state, _, _ = load_checkpoint(ckpt, state)
        done = int(state.step)
        if hist_path is not None and hist_path.exists():
            history = [h for h in read_history(hist_path, log) if h["step"] < done]
        log(f"resumed from {ckpt} at outer step {done}")
    if hist_path is not None:
        hist_path.parent.mkdir(parents=True, exist_ok=True)
        hist_path.write_text("".join(json.dumps(_jsonable(h)) + "\n" for h in history))

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

    if start < cfg.outer_steps:
        log("compiling the training step (the first outer step includes compilation) ...")
    try:
        for s in range(start, cfg.outer_steps):
            t0 = time.perf_counter()
            state, info = step_fn(state, data)
            info = jax.device_get(info)
            times.append(time.perf_counter() - t0)
            r = np.asarray(routes(state.model, state.contexts))
            status = Counter(STATUS_NAMES[int(v)] for v in info["gate_status"] if v >= 0)
            rec: dict[str, Any] = {
                "step": s,
                "ctx_loss": float(np.mean(info["ctx_loss"])),
                "weight_loss": float(np.mean(info["weight_loss"])),
                "failed": int(np.sum(info["failed"])),
                "gate_updates": dict(status),
                "routes": np.bincount(r, minlength=cfg.experts).tolist(),
                "seconds": times[-1],
            }
            if (s + 1) % cfg.val_every == 0 or s == cfg.outer_steps - 1:
                val = _val_rel_mse(state.model, state.contexts, x_val, data.t, cfg)
                rec["val_rel_mse"] = val
                if math.isfinite(val) and val < float(state.best_val):
                    state = state._replace(
                        best_model=state.model,
                        best_contexts=state.contexts,
                        best_val=jnp.asarray(val, jnp.float32),
                        best_step=jnp.asarray(s, jnp.int32),
                    )
            if s in snaps:
                rec["gate_probs"] = np.asarray(jax.vmap(state.model.gate_probs)(state.contexts)).round(4).tolist()
            history.append(rec)
            if hist_path is not None:
                with hist_path.open("a") as f:
                    f.write(json.dumps(_jsonable(rec)) + "\n")
            if ckpt is not None and ((s + 1) % cfg.checkpoint_every == 0 or s == cfg.outer_steps - 1):
                save()
            if bar is not None:
                last_val = next((h["val_rel_mse"] for h in reversed(history) if "val_rel_mse" in h), None)
                post = {"loss": f"{rec['weight_loss']:.3g}"}
                if last_val is not None:
                    post["val"] = f"{last_val:.3g}"
                bar.set_postfix(**post, routes=rec["routes"], refresh=False)
                bar.update(1)
    except KeyboardInterrupt:
        save()
        if bar is not None:
            bar.close()
        log(
            f"interrupted at outer step {int(state.step)}; checkpoint saved"
            + (f" to {ckpt}; continue with --resume" if ckpt else "")
        )
        raise
    if bar is not None:
        bar.close()
    steady = times[1:] if len(times) > 1 else times
    timing = {
        "compile_seconds": (times[0] - float(np.median(steady))) if len(times) > 1 and start == 0 else None,
        "seconds_per_outer_step": float(np.mean(steady)) if steady else None,
        "total_seconds": float(np.sum(times)),
    }
    use_best = bool(np.isfinite(float(state.best_val)))
    return TrainResult(
        state=state,
        model=state.best_model if use_best else state.model,
        contexts=state.best_contexts if use_best else state.contexts,
        history=history,
        timing=timing,
        best_step=int(state.best_step),
        data=data,
    )


def evaluate_split(model, contexts, split: EnvData, cfg: Config) -> tuple[dict[str, Any], np.ndarray]:
    """MSE, relMSE (Eq. 9), TPRMSE (Eq. 10) and per-env relMSE of a split.

    Returns ``(metrics, pred [E, N, T, D])``; ``metrics["collapsed_envs"]`` lists the envs whose
    forecast barely moves while the data does (:func:`~mixerdsr._diagnostics.collapsed_envs`). Sequence experts are scored free-running on
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
        "collapsed_envs": collapsed_envs(np.asarray(p), np.asarray(y), ok),
    }
    if model.kind == "sequence":
        tf, _ = predict(model, contexts, x, split.t.astype(np.float32), solver_config(cfg), alpha=cfg.teacher_forcing)
        tf, yy = jnp.asarray(tf[:, :, 1:]), jnp.asarray(x[:, :, 1:])
        out.update(
            teacher_forcing=cfg.teacher_forcing,
            teacher_forced_mse=float(M.mse(tf, yy)),
            teacher_forced_rel_mse=float(M.rel_mse(tf, yy)),
        )
    return out, pred


def _load_data(
    cfg: Config, out: Path, log, progress: bool = True, reuse: bool = False
) -> tuple[dict[str, EnvData], dict[str, Any]]:
    """The run's dataset. ``out/data.npz`` is reused only when resuming (the checkpoint's
    configuration, ``data`` included, was checked first); otherwise the source is loaded or
    generated again and the cached copy replaced."""
    cached = out / "data.npz"
    if reuse and cached.exists():
        return load_dataset(cached), read_meta(cached)
    src = cfg.data
    if src.endswith(".npz"):
        return load_dataset(src), read_meta(src)
    log(f"loading dataset {src} ...")
    splits, meta = load_run_dataset(
        src, cfg.data_seed, test_file=cfg.test_file, standardize=cfg.standardize, progress=progress
    )
    save_dataset(cached, splits, meta)
    return splits, meta


class RunLockedError(ValueError):
    """Another process holds the run directory."""


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out/.lock`` for the duration of a run, so that two runs
    never write into one directory at once. The operating system releases it when the process
    ends, however it ends (no stale locks).

    Raises:
        RunLockedError: another process holds the lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not a POSIX system: no locking
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    fh = (out / ".lock").open("a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise RunLockedError(
                f"{out}: another mixerdsr run (process {holder}) is using this directory; wait "
                f"for it to finish or choose another --out"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()


def run(
    cfg: Config,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    splits: dict[str, EnvData] | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The main job: train, adapt, evaluate, and write everything to ``out_dir``.

    Args:
        cfg: configuration (see :class:`~mixerdsr.Config`).
        out_dir: output directory (created; locked while the run lasts).
        resume: continue an interrupted run in ``out_dir``.
        progress: progress bars.
        log: message sink.
        splits: use these splits instead of loading ``cfg.data``.
        meta: dataset metadata of ``splits`` (its ``name`` picks the downstream analysis).

    Returns:
        The metrics dictionary written to ``metrics.json``; its ``warnings`` list says in words
        what looks wrong (:func:`~mixerdsr._diagnostics.diagnose`), also printed and in
        ``report.md``.

    Raises:
        ValueError: a run already in ``out_dir`` (without ``resume``), a configuration that
            differs from the checkpoint's (with ``resume``), another process using ``out_dir``,
            or splits that do not fit together.
    """
    out = Path(out_dir)
    with run_lock(out):
        return _run_locked(cfg, out, resume=resume, progress=progress, log=log, splits=splits, meta=meta)


def _run_locked(
    cfg: Config,
    out: Path,
    *,
    resume: bool,
    progress: bool,
    log: Callable[[str], None],
    splits: dict[str, EnvData] | None,
    meta: dict[str, Any] | None,
) -> dict[str, Any]:
    from .plots import _training as P

    ckpt = out / "checkpoint.npz"
    if resume and ckpt.exists():
        check_resume(ckpt, cfg)  # before anything in the directory is overwritten
    elif not resume and ckpt.exists():
        raise ValueError(
            f"{out} already holds a run (checkpoint.npz); pass --resume to continue it or choose another --out"
        )
    if splits is None:
        splits, meta = _load_data(cfg, out, log, progress, reuse=resume)
    if "train" not in splits:
        raise ValueError(f"dataset {cfg.data!r} has no 'train' split (found {list(splits)})")
    check_splits(splits, cfg.data)
    (out / "config.toml").write_text(_to_toml(cfg.to_dict()))
    t_start = time.perf_counter()
    res = train(cfg, splits["train"], out_dir=out, resume=resume, progress=progress, log=log)
    model, contexts = res["model"], res["contexts"]
    metrics: dict[str, Any] = {"config": cfg.to_dict(), "best_step": res["best_step"]}
    preds: dict[str, np.ndarray] = {}
    for name in ("train", "test"):
        if name in splits:
            log(
                f"evaluating the {name} split ({splits[name].n_envs} envs x {splits[name].n_trajectories} "
                "trajectories) ..."
            )
            m, preds[name] = evaluate_split(model, contexts, splits[name], cfg)
            metrics[name] = m
    adapted, ar = None, None
    if "adapt_train" in splits:
        ad = splits["adapt_train"].stride_time(cfg.time_stride)
        init, starts = None, None
        if cfg.adapt_init == "mean":
            init = jnp.broadcast_to(jnp.mean(contexts, 0), (ad.n_envs, cfg.context_size))
        elif cfg.adapt_init == "experts":
            starts = expert_starts(model, contexts)
        n_starts = 1 if starts is None else int(starts.shape[0])
        log(f"adapting {ad.n_envs} new environments ({n_starts} start(s) x {cfg.adapt_steps} steps) ...")
        t0 = time.perf_counter()
        adapted, _ = adapt_contexts(
            model,
            ad.x.astype(np.float32),
            ad.t.astype(np.float32),
            steps=cfg.adapt_steps,
            lr=cfg.adapt_lr,
            init=init,
            solver=solver_config(cfg),
            joint=cfg.adapt_joint,
            starts=starts,
        )
        adapt_seconds = time.perf_counter() - t0
        target = splits.get("adapt_test", splits["adapt_train"])
        log(f"evaluating the adapted environments ({adapt_seconds:.1f} s for adaptation) ...")
        m, preds["adapt_test"] = evaluate_split(model, adapted, target, cfg)
        ar = np.asarray(routes(model, adapted))
        m["adapt_seconds"] = adapt_seconds
        m["routes"] = ar.tolist()
        metrics["adapt_test"] = m
    r = np.asarray(routes(model, contexts))
    fam = splits["train"].family
    metrics["routing"] = {
        "experts": r.tolist(),
        "counts": np.bincount(r, minlength=cfg.experts).tolist(),
        "purity": M.purity(r, fam),
        "ari": M.adjusted_rand_index(r, fam),
        "adapt_experts": ar.tolist() if ar is not None else None,
    }
    gate_counts: Counter = Counter()
    for h in res["history"]:
        gate_counts.update(h.get("gate_updates", {}))
    downstream, ds_figs = run_downstream(
        out, meta or {}, splits, contexts, r, adapted, ar, n_experts=cfg.experts, seed=cfg.seed
    )
    if downstream is not None:
        metrics["downstream"] = downstream
    metrics["gate_updates"] = dict(gate_counts)
    metrics["timing"] = dict(res["timing"], run_seconds=time.perf_counter() - t_start)
    metrics["parameters"] = {"active_per_expert": active_parameters(model), "total": total_parameters(model)}
    metrics = _jsonable(metrics)
    metrics["warnings"] = diagnose(metrics, res["history"])
    for w in metrics["warnings"]:
        log(f"warning: {w}")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    held = splits.get("adapt_test", splits.get("adapt_train"))
    np.savez(
        out / "contexts.npz",
        train=np.asarray(contexts),
        train_routes=r,
        train_family=fam,
        **(
            {"adapt": np.asarray(adapted), "adapt_routes": ar, "adapt_family": held.family}
            if adapted is not None
            else {}
        ),
    )
    log("writing plots and report.md ...")
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
    import tomli_w

    body = tomli_w.dumps({k: v for k, v in d.items() if v is not None})
    return "# mixerdsr run configuration (load with --config)\n" + body
