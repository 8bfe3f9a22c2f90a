"""What a training run keeps and reads back: its result, the validation hold-out, the history
file, and the check that a checkpoint may be resumed with a configuration."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._config import Config, drop_retired, flatten_settings
from ..checkpoint import read_checkpoint_config
from ..mixer import MixER
from ._state import TrainData, TrainState

__all__ = ["TrainResult", "split_validation", "check_resume", "ResumeError", "read_history", "env_weights"]


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
        data: the training arrays on device (after the time stride and the validation hold-out;
            over several devices the env axis is padded to a multiple of the device count).
        stop_reason: why training ended: ``"outer_steps"`` (all ran), ``"converged"`` (the
            plateau rule of ``train.schedule = "plateau"``), ``"time_budget"`` or ``"diverged"``
            (the divergence guard gave up).
        converged: the plateau rule ended training, or the last ``train.patience`` validation
            checks brought no relative improvement of ``train.min_improvement``.
        steps_taken_back: outer steps the divergence guard took back (``train.divergence_guard``).
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
    steps_taken_back: int = 0


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


#: settings a run may resume with changed (a longer time budget continues the same run)
_RESUMABLE = (
    "adapt.",
    "evaluation.",
    "train.checkpoint_every",
    "train.low_memory_compile",
    "train.time_budget",
    "train.devices",
    "train.split_experts",
)


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
    "train.select_on": "rel_mse",
    "solver.sequence_start": "zeros",
    # the routing defaults before 2026-12-07 (the defaults are the warm start since)
    "gate.router": "from_start",
    "gate.pairing": "greedy",
    "gate.warm_start.method": "kmeans",
    # the experts kept the shared expert's optimiser moments at the seeding until 2026-12-07
    "gate.warm_start.fresh_moments": False,
}

#: settings that change training only for sequence backbones (one-step maps); a run of an ODE
#: backbone resumes whatever they say
_SEQUENCE_ONLY = ("solver.sequence_start",)


def _inert(cfg: Config) -> tuple[str, ...]:
    """The settings that cannot change this configuration's training."""
    from ..experts import BACKBONES, AbstractSequenceExpert

    cls = BACKBONES.get(cfg.model.backbone)
    sequence = cls is not None and issubclass(cls, AbstractSequenceExpert)
    g = cfg.gate
    warm = g.router == "warm_start" and g.mode == "lstsq" and cfg.model.num_experts > 1
    return (() if sequence else _SEQUENCE_ONLY) + (() if warm else ("gate.warm_start.",))


class ResumeError(ValueError):
    """A checkpoint that the given configuration would not continue (the message names every
    setting that differs)."""


def check_resume(ckpt: Path, cfg: Config) -> None:
    """Refuse to resume ``ckpt`` with a configuration that would not continue the same run.

    Raises:
        ResumeError: naming the checkpoint and every setting that differs (stored vs given).
    """
    raw, _ = read_checkpoint_config(ckpt)
    if not isinstance(raw.get("train"), dict):
        raise ResumeError(
            f"{ckpt}: cannot resume, the checkpoint's configuration has no [train] section "
            "(written by an older mixerdsr version); start a new run in another directory"
        )
    # a setting added after the checkpoint was written counts as the value that gives the
    # behaviour the checkpoint was trained with (its default, or _INTRODUCED's), so a newer
    # version resumes an older run unless that behaviour changed
    given = cfg.flat()
    defaults = {k: v for k, v in Config().flat().items() if k in given}  # not another backbone's
    stored = defaults | _INTRODUCED | flatten_settings(drop_retired(raw, str(ckpt)))
    skip = _RESUMABLE + _inert(cfg)
    keys = [k for k in {**stored, **given} if not k.startswith(skip) and k != "train.outer_steps"]
    mismatch = {k: (stored.get(k), given.get(k)) for k in keys if stored.get(k) != given.get(k)}
    if mismatch:
        diff = ", ".join(f"{k}: checkpoint {a!r}, given {b!r}" for k, (a, b) in mismatch.items())
        raise ResumeError(f"{ckpt}: cannot resume, the configuration differs ({diff})")
    n = cfg.train.outer_steps
    if stored.get("train.outer_steps") != n:
        raise ResumeError(
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
