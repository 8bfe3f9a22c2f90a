"""The training loop on the host: outer steps of the compiled training step, validation and model
selection, ``history.jsonl``, checkpoints, resume, and a progress bar."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import metrics as M
from ._config import Config, drop_retired, flatten_settings
from ._jsonio import jsonable
from ._stopping import Stopping
from .checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint
from .data import EnvData
from .evaluation import val_env_rel_mse, val_scores
from .gating import STATUS_NAMES, active_from_gate
from .inference import routes
from .mixer import MixER
from .training import TrainData, TrainState, init_state, make_outer_step, restart_experts, seed_routes_after_warmup

__all__ = ["train", "TrainResult", "check_resume", "read_history", "split_validation"]


_STOP_TEXT = {
    "converged": "the validation score stopped improving (train.schedule = plateau)",
    "time_budget": "the time budget (train.time_budget) is spent; the best model so far is kept",
}


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        state: the final :class:`~mixerdsr.training.TrainState` (what a checkpoint holds).
        model: the selected MixER layer (best validation relMSE; the final one when validation
            never gave a finite score).
        contexts: the training contexts ``[E, d]`` that go with ``model``.
        history: one record per outer step (the lines of ``history.jsonl``).
        timing: ``compile_seconds`` (None when resumed), ``seconds_per_outer_step``,
            ``total_seconds``.
        best_step: the outer step of the selected model.
        data: the training arrays on device (after the time stride and the validation hold-out).
        stop_reason: why training ended: ``"outer_steps"`` (all ran), ``"converged"`` (the
            plateau rule of ``train.schedule = "plateau"``) or ``"time_budget"``.
        converged: the plateau rule ended training, or the last ``train.patience`` validation
            checks brought no relative improvement of ``train.min_improvement``.
    """

    state: TrainState
    model: MixER
    contexts: jax.Array
    history: list[dict[str, Any]]
    timing: dict[str, float | None]
    best_step: int
    data: TrainData
    stop_reason: str = "outer_steps"
    converged: bool = False


def split_validation(x: np.ndarray, n_val: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Hold out the last ``n_val`` trajectories of every env for model selection.

    Returns ``(train_x, val_x)``; with fewer than ``n_val + 1`` trajectories, or ``n_val = 0``,
    nothing is held out and ``val_x`` is None (selection then uses the training trajectories).
    """
    if n_val <= 0 or x.shape[1] <= n_val:
        return x, None
    return x[:, :-n_val], x[:, -n_val:]


def _snapshot_steps(n: int) -> set[int]:
    return {0, max(0, round(0.1 * n) - 1), max(0, round(0.5 * n) - 1), n - 1}


#: settings that may differ when a run is resumed (they do not change training)
#: settings a run may resume with changed (a longer time budget continues the same run)
_RESUMABLE = ("adapt.", "evaluation.", "train.checkpoint_every", "train.low_memory_compile", "train.time_budget")


#: settings added after checkpoints were first written, with the value that gives the behaviour
#: of the code before them (their defaults may differ: a checkpoint without ``clip_norm`` was
#: trained unclipped)
_INTRODUCED = {
    "train.optimizer": "adabelief",
    "train.clip_norm": 0.0,
    "train.forcing": 1.0,
    "train.forcing_steps": 0.5,
    "train.schedule": "steps",
    "train.patience": 5,
    "train.min_improvement": 0.01,
    "train.lr_drops": 2,
    "train.val_smoothing": 1.0,
    "train.time_budget": 0.0,
}


def check_resume(ckpt: Path, cfg: Config) -> None:
    """Refuse to resume ``ckpt`` with a configuration that would not continue the same run.

    Raises:
        ValueError: naming the checkpoint and every setting that differs (stored vs given).
    """
    raw, _ = read_checkpoint_config(ckpt)
    if not isinstance(raw.get("train"), dict):
        raise ValueError(
            f"{ckpt}: cannot resume, the checkpoint's configuration has no [train] section "
            "(written by an older mixerdsr version); start a new run in another directory"
        )
    # a setting added after the checkpoint was written counts as the value that gives the
    # behaviour the checkpoint was trained with (its default, or _INTRODUCED's), so a newer
    # version resumes an older run unless that behaviour changed
    given = cfg.flat()
    defaults = {k: v for k, v in Config().flat().items() if k in given}  # not another backbone's
    stored = defaults | _INTRODUCED | flatten_settings(drop_retired(raw, str(ckpt)))
    keys = [k for k in {**stored, **given} if not k.startswith(_RESUMABLE) and k != "train.outer_steps"]
    mismatch = {k: (stored.get(k), given.get(k)) for k in keys if stored.get(k) != given.get(k)}
    if mismatch:
        diff = ", ".join(f"{k}: checkpoint {a!r}, given {b!r}" for k, (a, b) in mismatch.items())
        raise ValueError(f"{ckpt}: cannot resume, the configuration differs ({diff})")
    n = cfg.train.outer_steps
    if stored.get("train.outer_steps") != n:
        raise ValueError(
            f"{ckpt}: cannot resume with train.outer_steps={n} (checkpoint: "
            f"{stored.get('train.outer_steps')}; the learning-rate schedule depends on it)"
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


def _reset_selection(state: TrainState) -> TrainState:
    """Forget the best model so far (the routing changed: choose among the new structure's)."""
    return state._replace(best_val=jnp.asarray(jnp.inf, jnp.float32), best_step=jnp.asarray(-1, jnp.int32))


def settings_for_active(cfg: Config, n_envs: int, n_active: int) -> Config:
    """The training settings once ``n_active`` of the ``M`` experts are active (the number
    chosen after the warm-up): with ``train.batch_envs = 0`` (E / M envs per batch) the batch
    becomes ``E / n_active``, so each active expert sees as many envs per step as in a
    MixER-``n_active`` (with one, as many as a single meta-learner); with one active expert
    the gate is no longer updated (every env is routed to it whatever the gate)."""
    if cfg.train.batch_envs == 0 and n_active < cfg.model.num_experts:
        cfg = cfg.override({"train.batch_envs": max(1, n_envs // n_active)})
    if n_active == 1 and cfg.gate.mode == "lstsq":
        cfg = cfg.override({"gate.mode": "frozen"})
    return cfg


def _n_active(state: TrainState) -> int:
    return int(np.sum(np.asarray(active_from_gate(state.model.gate))))


def env_weights(cfg: Config, x: np.ndarray) -> Any:
    """Each env's factor in the training loss (``train.env_weight_power`` p): None for p = 0,
    else ``s_e^-p`` with ``s_e`` the mean squared norm of env e's training states ``x [E, N, T,
    D]``, normalised to mean 1 (``Float[Array, "E"]``)."""
    p = cfg.train.env_weight_power
    if p == 0:
        return None
    scale = np.mean(np.sum(x.astype(np.float64) ** 2, axis=-1), axis=(1, 2))
    w = np.maximum(scale, 1e-12) ** -p
    return jnp.asarray(w / w.mean(), jnp.float32)


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
        train_split: training data (``data.time_stride`` and the validation hold-out are applied
            here).
        out_dir: where ``checkpoint.npz`` and ``history.jsonl`` go (None: nothing written).
        resume: continue from ``out_dir/checkpoint.npz`` (same result as an uninterrupted run).
        progress: show a progress bar (loss, validation relMSE, routing counts).
        log: where one-line messages go.

    Returns:
        :class:`TrainResult`.
    """
    tr = train_split.stride_time(cfg.data.time_stride)
    x_np, xval_np = split_validation(tr.x.astype(np.float32), cfg.data.val_trajectories)
    gate_from = max(cfg.gate.warmup, 0)
    data = TrainData(
        jnp.asarray(x_np), jnp.asarray(tr.t, jnp.float32), jnp.asarray(gate_from, jnp.int32), env_weights(cfg, x_np)
    )
    x_val = jnp.asarray(xval_np if xval_np is not None else x_np)
    state = init_state(cfg, tr.n_envs, tr.n_dims)
    stopping = Stopping.from_settings(cfg.train)
    history: list[dict[str, Any]] = []
    out = Path(out_dir) if out_dir is not None else None
    ckpt = out / "checkpoint.npz" if out is not None else None
    hist_path = out / "history.jsonl" if out is not None else None
    if resume and ckpt is not None and ckpt.exists():
        check_resume(ckpt, cfg)
        state, _, extra = load_checkpoint(ckpt, state)
        stopping.load_state_dict(extra.get("stopping", {}))
        data = data._replace(lr_scale=np.asarray(stopping.lr_scale, np.float32))
        done = int(state.step)
        if hist_path is not None and hist_path.exists():
            history = [h for h in read_history(hist_path, log) if h["step"] < done]
        log(f"resumed from {ckpt} at outer step {done}")
    if hist_path is not None:
        hist_path.parent.mkdir(parents=True, exist_ok=True)
        hist_path.write_text("".join(json.dumps(jsonable(h)) + "\n" for h in history))

    n_steps = cfg.train.outer_steps
    snaps = _snapshot_steps(n_steps)
    start = int(state.step)
    times: list[float] = []
    seeding = cfg.gate.warmup > 0 and cfg.gate.mode == "lstsq" and cfg.model.num_experts > 1
    warmup = cfg.gate.warmup if seeding else -1
    known_families = bool(np.all(tr.family >= 0)) and cfg.model.num_experts > 1
    prev_route = np.asarray(history[-1]["route"]) if history and "route" in history[-1] else None
    seed_choice: dict[str, Any] | None = None
    # a resumed run whose number of experts was chosen already trains with the chosen number
    chosen = cfg.gate.choose != "fixed" and seeding and start > warmup
    step_fn = make_outer_step(settings_for_active(cfg, tr.n_envs, _n_active(state)) if chosen else cfg, tr.n_envs)
    warm_batch = cfg.gate.warmup_batch
    if seeding and start < warmup and warm_batch != 0:  # the warm-up's one expert on its own batch size
        after_warmup = step_fn
        wb = tr.n_envs if warm_batch == -1 else min(warm_batch, tr.n_envs)
        step_fn = make_outer_step(cfg.override({"train.batch_envs": wb}), tr.n_envs)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_steps, initial=start, desc="train", unit="step", dynamic_ncols=True, disable=None)

    def save() -> None:
        if ckpt is not None:
            save_checkpoint(ckpt, state, cfg.to_dict(), {"step": int(state.step), "stopping": stopping.state_dict()})

    def advance(st: TrainState, s: int) -> tuple[TrainState, dict[str, Any]]:
        """One outer step and its history record (without validation)."""
        nonlocal prev_route
        t0 = time.perf_counter()
        st, info = step_fn(st, data)
        info = jax.device_get(info)
        times.append(time.perf_counter() - t0)
        r = np.asarray(routes(st.model, st.contexts))
        status = Counter(STATUS_NAMES[int(v)] for v in info["gate_status"] if v >= 0)
        rec: dict[str, Any] = {
            "step": s,
            "ctx_loss": float(np.mean(info["ctx_loss"])),
            "weight_loss": float(np.mean(info["weight_loss"])),
            "failed": int(np.sum(info["failed"])),
            "gate_updates": dict(status),
            "routes": np.bincount(r, minlength=cfg.model.num_experts).tolist(),
            "route": r.tolist(),
            "changed": int(np.sum(r != prev_route)) if prev_route is not None else 0,
            "seconds": times[-1],
        }
        if known_families:
            rec["purity"] = M.purity(r, tr.family)
            rec["ari"] = M.adjusted_rand_index(r, tr.family)
        prev_route = r
        return st, rec

    val_mse: dict[int, float] = {}

    def validate(st: TrainState) -> float:
        rel, mse = val_scores(st.model, st.contexts, x_val, data.t, cfg)
        val_mse[int(st.step)] = mse
        return rel

    stop_reason = "outer_steps"

    def finish(rec: dict[str, Any]) -> bool:
        """Validation and model selection, the stopping rule, the history line, checkpoint and
        progress bar after the outer step of ``rec``. Returns whether training stops here."""
        nonlocal state, data, stop_reason
        s = rec["step"]
        stop = stopping.spent(rec["seconds"])
        val = None
        if (s + 1) % cfg.train.val_every == 0 or s == n_steps - 1 or stop:
            val = validate(state)
        if val is not None:
            stop = stop or stopping.validated(val)
            data = data._replace(lr_scale=np.asarray(stopping.lr_scale, np.float32))
            rec["lr_scale"] = stopping.lr_scale
            rec["val_rel_mse"] = val
            if s + 1 in val_mse:
                rec["val_mse"] = val_mse.pop(s + 1)
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
                f.write(json.dumps(jsonable(rec)) + "\n")
        if stop:
            stop_reason = stop
        due = (s + 1) % cfg.train.checkpoint_every == 0 or s == n_steps - 1 or bool(stop)
        if ckpt is not None and due:
            save()
        if bar is not None:
            last_val = next((h["val_rel_mse"] for h in reversed(history) if "val_rel_mse" in h), None)
            post = {"loss": f"{rec['weight_loss']:.3g}"}
            if last_val is not None:
                post["val"] = f"{last_val:.3g}"
            bar.set_postfix(**post, routes=rec["routes"], refresh=False)
            bar.update(1)
        return bool(stop)

    if start < n_steps:
        log("compiling the training step (the first outer step includes compilation) ...")
    try:
        s = start
        while s < n_steps:
            if s == warmup:
                fit = None
                if cfg.gate.choose != "fixed":  # how well the shared expert fits every env already
                    fit = val_env_rel_mse(state.model, state.contexts, x_val, data.t, cfg)
                state, seeded, seed_choice = seed_routes_after_warmup(state, cfg, fit)
                if warm_batch != 0 and start < warmup:
                    step_fn = after_warmup
                if cfg.gate.seed_from == "init":
                    state = restart_experts(state, cfg, tr.n_dims)
                # the model is chosen among the M-expert models, not the warm-up's shared expert
                state = _reset_selection(state)
                counts = np.bincount(np.asarray(seeded), minlength=cfg.model.num_experts).tolist()
                if seed_choice is not None:
                    k_chosen = seed_choice["experts"]
                    best = max(seed_choice["silhouette"].values(), default=float("nan"))
                    worst = max(seed_choice["shared_fit"] or [float("nan")])
                    log(
                        f"{k_chosen} expert(s) chosen after the warm-up (best mean silhouette of the "
                        f"shared expert's context groups {best:.3g}, needed {cfg.gate.silhouette_min:g}; its "
                        f"typical validation relMSE on the worst-fitted group {worst:.3g}, one expert below "
                        f"{cfg.gate.single_fit:g}; {cfg.model.num_experts - k_chosen} switched off)"
                    )
                    counts = counts[:k_chosen]
                    if (after := settings_for_active(cfg, tr.n_envs, k_chosen)) != cfg:
                        step_fn = make_outer_step(after, tr.n_envs)
                msg = f"routes seeded from the contexts after {warmup} warm-up steps: envs per expert {counts}"
                if known_families:
                    msg += f", purity {M.purity(np.asarray(seeded), tr.family):.3g}"
                log(msg)
            state, rec = advance(state, s)
            if s == warmup and seed_choice is not None:
                rec["experts_chosen"] = seed_choice
            s += 1
            if finish(rec):
                break
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
    if stop_reason != "outer_steps":
        log(f"training stopped after {int(state.step)} outer steps: {_STOP_TEXT[stop_reason]}")
    return TrainResult(
        stop_reason=stop_reason,
        converged=stop_reason == "converged" or stopping.converged,
        state=state,
        model=state.best_model if use_best else state.model,
        contexts=state.best_contexts if use_best else state.contexts,
        history=history,
        timing=timing,
        best_step=int(state.best_step),
        data=data,
    )
