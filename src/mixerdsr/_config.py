"""Run configuration: one flat, documented dataclass, readable from TOML presets."""

from __future__ import annotations

import dataclasses
import math
import numbers
import tomllib
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Config", "load_config", "list_presets"]


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a MixER run needs. Defaults follow the paper (Appendix C) where it says.

    Data: ``data`` (built-in name, ``.npz`` path, or for series an Epilepsy2-style ``.ts`` /
    SCCTS ``.data`` path), ``data_seed`` (generator seed; None = the dataset's default),
    ``test_file`` (Epilepsy2: a full test ``.ts`` file used as the held-out set),
    ``standardize`` (series datasets: per-time-column standardisation with training
    statistics), ``time_stride`` (train on every k-th time point), ``val_trajectories``
    (trajectories per training env held out for model selection; 0 = select on training data).

    Model: ``backbone`` (geps|coda|ncf|shplrnn, or a name given to
    :func:`~mixerdsr.register_expert`), ``experts`` (M), ``context_size`` (full d_ctx),
    ``split_context``, ``shift_context``, ``width``, ``depth``, ``same_init`` (all experts start
    identical), ``ncf_taylor_order``, ``ncf_pool`` (contexts per env for NCF self-modulation),
    ``hidden`` (shPLRNN hidden width).

    Gate: ``gate`` (lstsq|gradient|frozen), ``gate_every`` (update after every k-th inner step;
    ``inner_steps`` = once per inner loop), ``kmeans_iters``, ``kmeans_tol``, ``gate_noise``,
    ``centroid_init`` (data|kmeans++|uniform), ``empty_cluster`` (reseed|skip), ``gate_reassign`` (0 = Algorithm 1;
    a ratio in (0, 1]: per-env override of clear misfits, see ``GateConfig.reassign``),
    ``gate_chunk`` (envs per vmapped batch of the gate's all-expert loss pass; 0 = all at once;
    -1 = auto: the training batch size, whose compiled solver kernels the pass then shares with
    the training step (less compile memory), or 32 with ``low_memory_compile``. A vmapped
    adaptive solve runs every member to the slowest one's step count, so on a CPU batches are
    faster than one batch of all envs; an accelerator may prefer 0),
    ``importance_weight`` (gradient gate only).

    Training: ``outer_steps``, ``inner_steps`` (K), ``proximal_beta``, ``lr_contexts``,
    ``lr_weights``, ``lr_decay`` (weights' rate multiplied by it at 1/3 and 2/3 of training),
    ``batch_envs`` (0 = E/M), ``rtol``, ``atol``, ``max_steps``, ``teacher_forcing`` (alpha),
    ``val_every``, ``checkpoint_every``, ``seed``, ``low_memory_compile`` (compile the training
    step without XLA's CPU fusion emitters: a lower compilation peak for slower gradient steps,
    see ``docs/performance.md``; no effect on GPUs).

    Adaptation: ``adapt_steps``, ``adapt_lr``, ``adapt_init`` (``experts``: fit from the zero
    context and from each expert's mean training context, keep per env the fit with the lowest
    loss on the adaptation data; ``zeros``: the paper's single start; ``mean``: the mean training
    context), ``adapt_joint`` (one optimiser for all new environments instead of one each).
    Evaluation: ``tprmse_eps``.
    """

    # data
    data: str = "odebench-2"
    data_seed: int | None = None
    test_file: str | None = None
    standardize: bool = True
    time_stride: int = 1
    val_trajectories: int = 1
    # model
    backbone: str = "geps"
    experts: int = 2
    context_size: int = 40
    split_context: bool = True
    shift_context: bool = True
    width: int = 64
    depth: int = 3
    same_init: bool = True
    ncf_taylor_order: int = 2
    ncf_pool: int = 2
    hidden: int = 16
    # gate
    gate: str = "lstsq"
    gate_every: int = 1
    kmeans_iters: int = 20
    kmeans_tol: float = 1e-3
    gate_noise: float = 1e-4
    centroid_init: str = "data"
    empty_cluster: str = "reseed"
    gate_reassign: float = 0.0
    gate_chunk: int = -1
    importance_weight: float = 0.1
    # training
    outer_steps: int = 300
    inner_steps: int = 12
    proximal_beta: float = 10.0
    lr_contexts: float = 1e-3
    lr_weights: float = 1e-3
    lr_decay: float = 0.4
    batch_envs: int = 0
    rtol: float = 1e-3
    atol: float = 1e-6
    max_steps: int = 4096
    teacher_forcing: float = 0.5
    val_every: int = 10
    checkpoint_every: int = 25
    seed: int = 0
    low_memory_compile: bool = False
    # adaptation / evaluation
    adapt_steps: int = 500
    adapt_lr: float = 1e-2
    adapt_init: str = "experts"
    adapt_joint: bool = False
    tprmse_eps: float = 0.1

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __post_init__(self):
        hints = _field_types()
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), hints[f.name])
        from .experts import BACKBONES  # the registry grows with mixerdsr.register_expert

        for k, ok in {"backbone": tuple(BACKBONES), **_CHOICES}.items():
            if getattr(self, k) not in ok:
                raise ValueError(f"config '{k}': expected one of {list(ok)}, found {getattr(self, k)!r}")
        for k, (lo, hi, what) in _RANGES.items():
            v = getattr(self, k)
            if v is None:
                continue
            low_ok = lo is None or v > lo or (v == lo and k not in _POSITIVE)
            if not (math.isfinite(v) and low_ok and (hi is None or v <= hi)):
                raise ValueError(f"config '{k}': expected {what}, found {v!r}")
        if self.split_context and self.context_size % self.experts:
            raise ValueError(
                f"config 'context_size': {self.context_size} is not divisible by experts = "
                f"{self.experts} (needed for context splitting; set split_context = false)"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>") -> "Config":
        """Build from a (possibly sectioned) mapping; unknown keys are an error."""
        return cls(**_flatten(d, source))


_CHOICES = {
    "gate": ("lstsq", "gradient", "frozen"),
    "centroid_init": ("data", "kmeans++", "uniform"),
    "empty_cluster": ("reseed", "skip"),
    "adapt_init": ("zeros", "mean", "experts"),
}

_SEED_MAX = 2**32 - 1
#: settings whose lowest value in ``_RANGES`` is excluded
_POSITIVE = {"rtol", "atol", "lr_contexts", "lr_weights", "adapt_lr", "tprmse_eps", "lr_decay"}
#: key -> (lowest, highest, description) of numeric settings (None = unbounded).
_RANGES: dict[str, tuple[float | None, float | None, str]] = {
    **{
        k: (1, None, "an integer >= 1")
        for k in (
            "experts",
            "context_size",
            "outer_steps",
            "inner_steps",
            "gate_every",
            "time_stride",
            "width",
            "depth",
            "ncf_pool",
            "hidden",
            "kmeans_iters",
            "max_steps",
            "val_every",
            "checkpoint_every",
            "adapt_steps",
        )
    },
    **{k: (0, None, "an integer >= 0") for k in ("val_trajectories", "ncf_taylor_order", "batch_envs")},
    **{k: (0, _SEED_MAX, f"an integer in 0..{_SEED_MAX}") for k in ("seed", "data_seed")},
    "gate_chunk": (-1, None, "an integer >= -1 (-1 = the training batch size, 0 = all envs at once)"),
    **{
        k: (0, None, "a finite number >= 0") for k in ("kmeans_tol", "gate_noise", "importance_weight", "proximal_beta")
    },
    **{
        k: (0, None, "a finite number > 0")
        for k in ("rtol", "atol", "lr_contexts", "lr_weights", "adapt_lr", "tprmse_eps")
    },
    "lr_decay": (0, 1, "a number in (0, 1]"),
    "gate_reassign": (0, 1, "a number in [0, 1] (0 = off)"),
    "teacher_forcing": (0, 1, "a number in [0, 1]"),
}


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(Config)


def _type_name(tp: Any) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    base = args[0] if args else tp
    name = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(base, str(base))
    return name + (" or nothing (omit the key)" if type(None) in typing.get_args(tp) else "")


def _check_type(key: str, value: Any, tp: Any) -> None:
    """Refuse a value of the wrong type, naming the key (TOML gives int, float, bool, str, lists)."""
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return
    base = next((a for a in args if a is not type(None)), tp)
    if base is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    elif base is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    else:
        ok = isinstance(value, base)
    if not ok:
        raise ValueError(f"config '{key}': expected {_type_name(tp)}, found {value!r} ({type(value).__name__})")


def _flatten(d: dict[str, Any], source: str) -> dict[str, Any]:
    """Flatten TOML sections (``[model]``, ``[train]``...); reject unknown keys and a key given
    twice (in two sections, or in a section and at the top level)."""
    flat: dict[str, Any] = {}
    where: dict[str, str] = {}
    for k, v in d.items():
        items = v.items() if isinstance(v, dict) else [(k, v)]
        for key, value in items:
            place = f"[{k}]" if isinstance(v, dict) else "the top level"
            if key in flat:
                raise ValueError(f"{source}: config key '{key}' is given twice ({where[key]} and {place})")
            flat[key], where[key] = value, place
    names = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(flat) - names)
    if unknown:
        raise ValueError(f"{source}: unknown config key(s) {unknown}; valid keys: {sorted(names)}")
    return flat


def _preset_files() -> dict[str, Any]:
    root = resources.files("mixerdsr") / "configs"
    return {p.name[:-5]: p for p in root.iterdir() if p.name.endswith(".toml")}


def list_presets() -> list[str]:
    """Names of the built-in presets (``mixerdsr run --preset NAME``)."""
    return sorted(_preset_files())


def load_config(preset: str | None = None, path: str | Path | None = None, **overrides: Any) -> Config:
    """Configuration from a preset and/or a TOML file, then keyword overrides (None ignored).

    Args:
        preset: built-in preset name (see :func:`list_presets`).
        path: a user TOML file; its keys override the preset's.
        **overrides: final overrides (e.g. from the command line).
    """
    d: dict[str, Any] = {}
    if preset is not None:
        files = _preset_files()
        if preset not in files:
            raise ValueError(f"unknown preset {preset!r}; available: {sorted(files)}")
        d.update(_flatten(tomllib.loads(files[preset].read_text()), f"preset {preset}"))
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"config file not found: {p}")
        try:
            user = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{p}: invalid TOML: {err}") from None
        d.update(_flatten(user, str(p)))
    d.update({k: v for k, v in overrides.items() if v is not None})
    return Config.from_dict(d)
