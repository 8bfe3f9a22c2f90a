"""Run configuration: one frozen settings dataclass per concern, read from sectioned TOML.

A :class:`Config` holds seven sections, each a frozen dataclass that validates itself:
``data`` (:class:`DataSettings`), ``model`` (:class:`ModelSettings`, with the backbone's own
:class:`~mixerdsr.experts.ExpertSettings` in ``model.expert``), ``gate``
(:class:`~mixerdsr.routing.GateSettings`), ``train`` (:class:`TrainSettings`), ``solver``
(:class:`~mixerdsr.rollout.SolverSettings`), ``adapt`` (:class:`AdaptSettings`) and
``evaluation`` (:class:`EvalSettings`). A TOML file mirrors them::

    [model]
    backbone = "ncf"
    num_experts = 2

    [model.ncf]          # the backbone's own settings
    taylor_order = 1

    [gate]
    every = 1

Every setting has one name, ``section.field`` (``gate.every``); overrides use it too
(``load_config(overrides={"gate.every": 12})``). Unknown keys, keys in the wrong section and a
backbone table that is not the run's backbone are errors naming the key and the valid ones.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from ._settings import AT_LEAST_0, AT_LEAST_1, POSITIVE, SEED, Range, SettingError, validate
from .experts import BACKBONES
from .experts._base import AbstractInnerLoopExpert, ExpertSettings
from .experts._integrate import SolverSettings
from .routing import GateSettings

__all__ = [
    "Config",
    "DataSettings",
    "ModelSettings",
    "TrainSettings",
    "AdaptSettings",
    "EvalSettings",
    "load_config",
    "list_presets",
]


@typing.no_type_check  # validates itself, naming the key
@dataclasses.dataclass(frozen=True)
class DataSettings:
    """Which data a run trains on (``[data]``).

    Attributes:
        source: built-in dataset name, a dataset ``.npz`` path, or for series an
            Epilepsy2-style ``.ts`` / SCCTS ``.data`` path.
        seed: generator seed of a built-in dataset (None = the dataset's default).
        test_file: Epilepsy2: a full test ``.ts`` file used as the held-out set.
        standardize: series datasets: per-time-column standardisation with training statistics.
        time_stride: train on every ``time_stride``-th time point.
        val_trajectories: trajectories per training env held out for model selection (0 =
            select on the training data).
        envs_per_family: keep only the first this many environments of each family in every
            split (0 = all): a quick try-out, or the reproduction harness's ``smoke`` budget.
        test_trajectories: keep only the first this many trajectories of each environment of
            the ``test`` and ``adapt_test`` splits (0 = all).
        clean: ODE family datasets: generate with the leak-free protocol (``true``) or the
            paper's (``false``) whatever the family file says (None = as the file says).
    """

    source: str = "odebench-2"
    seed: int | None = None
    test_file: str | None = None
    standardize: bool = True
    time_stride: int = 1
    val_trajectories: int = 1
    envs_per_family: int = 0
    test_trajectories: int = 0
    clean: bool | None = None

    def __post_init__(self):
        validate(
            self,
            "data",
            ranges={
                "seed": SEED,
                "time_stride": AT_LEAST_1,
                "val_trajectories": AT_LEAST_0,
                "envs_per_family": AT_LEAST_0,
                "test_trajectories": AT_LEAST_0,
            },
        )


@typing.no_type_check  # validates itself, naming the key
@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """The MixER layer (``[model]``; the backbone's own settings in ``[model.<backbone>]``).

    Attributes:
        backbone: ``geps``, ``coda``, ``ncf``, ``shplrnn``, ``cavia`` (a single meta-learner:
            ``num_experts = 1``) or a name given to :func:`~mixerdsr.register_expert`.
        num_experts: the number of experts ``M``.
        context_size: full context length ``d_ctx``.
        split_context: each expert sees its own ``d_ctx / M`` slice of the context (needs
            ``d_ctx`` divisible by ``M``).
        shift_context: the slice is shifted by the expert's index (paper's context shifting).
        same_init: all experts start identical.
        expert: the backbone's settings (an instance of ``BACKBONES[backbone].Settings``;
            None = its defaults).
    """

    backbone: str = "geps"
    num_experts: int = 2
    context_size: int = 40
    split_context: bool = True
    shift_context: bool = True
    same_init: bool = True
    expert: Any = None

    def __post_init__(self):
        validate(
            self,
            "model",
            choices={"backbone": tuple(BACKBONES)},
            ranges={"num_experts": AT_LEAST_1, "context_size": AT_LEAST_1},
        )
        settings_cls = BACKBONES[self.backbone].Settings
        if self.expert is None:
            object.__setattr__(self, "expert", settings_cls())
        elif type(self.expert) is not settings_cls:
            raise SettingError(
                "model.expert",
                f"backbone {self.backbone!r} takes {settings_cls.__name__}, found {type(self.expert).__name__}",
            )
        if issubclass(BACKBONES[self.backbone], AbstractInnerLoopExpert) and self.num_experts != 1:
            raise SettingError(
                "model.num_experts",
                f"backbone {self.backbone!r} is a single meta-learner (its contexts come from an inner "
                f"loop, which the gate cannot route): set model.num_experts = 1, found {self.num_experts}",
            )
        if self.split_context and self.context_size % self.num_experts:
            raise SettingError(
                "model.context_size",
                f"{self.context_size} is not divisible by model.num_experts = {self.num_experts}, as context "
                f"splitting needs: set it to a multiple of {self.num_experts} (e.g. "
                f"{-(-self.context_size // self.num_experts) * self.num_experts}; `mixerdsr run --experts M` "
                "without --context-size does that), or model.split_context = false",
            )


@typing.no_type_check  # validates itself, naming the key
@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Training by proximal alternating minimisation (``[train]``).

    Attributes:
        outer_steps: outer steps (each ``inner_steps`` context steps, then weight steps).
        inner_steps: ``K``, inner steps per outer step.
        proximal_beta: weight of the proximal term pulling contexts and weights towards their
            values at the start of the outer step (the paper: 10; 0 by default, see
            ``docs/training.md``).
        lr_contexts, lr_weights: AdaBelief learning rates.
        lr_decay: the weights' rate is multiplied by it at 1/3 and 2/3 of training.
        optimizer: ``"adabelief"`` (the paper's) or ``"adam"``, for contexts and weights.
        clip_norm: the weights' gradient is clipped to this global norm before the optimiser
            (0 = no clipping).
        forcing: vector-field experts: each interval of the time grid is integrated from
            ``a * predicted + (1 - a) * observed`` state, ``a`` rising linearly from ``forcing``
            to 1 (free running) over the first ``forcing_steps`` of the outer steps: short
            segments first, whole rollouts later (generalised teacher forcing for flows).
            1 = free running throughout. Validation and evaluation always run free.
        forcing_steps: the fraction of ``outer_steps`` over which ``a`` reaches 1.
        schedule: ``"steps"`` (the paper's: the rate falls by ``lr_decay`` at 1/3 and 2/3 of
            ``outer_steps``, and every outer step runs) or ``"plateau"`` (the rate falls by
            ``lr_decay`` at each validation plateau; the plateau after ``lr_drops`` drops ends
            training, ``outer_steps`` is then a maximum). See ``mixerdsr._stopping``.
        patience: validation checks without a relative improvement of ``min_improvement``
            that make a plateau (also what ``converged`` in ``metrics.json`` means).
        min_improvement: relative improvement of the best validation relMSE that counts.
        lr_drops: ``"plateau"``: plateaus that lower the rate before the next one stops.
        val_smoothing: the plateau rule judges an exponential moving average of the
            validation score with this weight on the newest one (1 = the raw score; model
            selection always uses the raw score).
        time_budget: seconds of training, all sittings together (0 = no limit): the run stops
            at the best model reached when the budget is spent (``--time-budget 20m``).
        batch_envs: environments per training batch (0 = E / M).
        env_weight_power: ``p``: each environment's loss is multiplied by ``s_e^-p``, where
            ``s_e`` is the mean squared norm of its training states (weights normalised to
            mean 1): 0 (the paper) counts every environment alike, 1 makes the loss scale-free
            across environments as Eq. 9's relMSE is. The gate and validation are unchanged.
            Measured on ODEBench-10B in ``docs/routing.md``.
        teacher_forcing: sequence experts: the generalised teacher-forcing ``alpha`` of the
            training loss (1 = free running); also used to adapt and to report a
            teacher-forced error.
        self_modulation_pool: experts with contextual self-modulation (NCF): contexts per env
            that its loss expands around (itself and its nearest batch members).
        val_every: validation (model selection) every this many outer steps.
        checkpoint_every: checkpoint every this many outer steps.
        seed: training seed.
        low_memory_compile: compile the training step without XLA's CPU fusion emitters: a
            lower compilation peak for slower gradient steps (see ``docs/performance.md``);
            no effect on GPUs.
    """

    outer_steps: int = 300
    inner_steps: int = 12
    proximal_beta: float = 0.0
    lr_contexts: float = 1e-3
    lr_weights: float = 3e-3
    lr_decay: float = 0.4
    optimizer: str = "adabelief"
    clip_norm: float = 1.0
    forcing: float = 1.0
    forcing_steps: float = 0.5
    schedule: str = "steps"
    patience: int = 5
    min_improvement: float = 0.01
    lr_drops: int = 2
    val_smoothing: float = 1.0
    time_budget: float = 0.0
    batch_envs: int = 0
    env_weight_power: float = 0.0
    teacher_forcing: float = 0.5
    self_modulation_pool: int = 2
    val_every: int = 10
    checkpoint_every: int = 25
    seed: int = 0
    low_memory_compile: bool = False

    def __post_init__(self):
        validate(
            self,
            "train",
            choices={"optimizer": ("adabelief", "adam"), "schedule": ("steps", "plateau")},
            ranges={
                **dict.fromkeys(
                    ("outer_steps", "inner_steps", "self_modulation_pool", "val_every", "checkpoint_every"), AT_LEAST_1
                ),
                "proximal_beta": AT_LEAST_0,
                "lr_contexts": POSITIVE,
                "lr_weights": POSITIVE,
                "lr_decay": Range(0, 1, open_low=True),
                "clip_norm": AT_LEAST_0,
                "forcing": Range(0, 1),
                "forcing_steps": Range(0, 1, open_low=True),
                "patience": AT_LEAST_1,
                "min_improvement": Range(0, 1),
                "lr_drops": AT_LEAST_0,
                "val_smoothing": Range(0, 1, open_low=True),
                "time_budget": AT_LEAST_0,
                "batch_envs": AT_LEAST_0,
                "env_weight_power": Range(0, 1),
                "teacher_forcing": Range(0, 1),
                "seed": SEED,
            },
        )
        if self.outer_steps * self.inner_steps >= 2**31:  # optimiser step counts are int32
            raise SettingError(
                "train.outer_steps",
                f"expected outer_steps x inner_steps below 2**31, found {self.outer_steps} x {self.inner_steps} "
                '(use train.time_budget or train.schedule = "plateau" to train until convergence)',
            )


@typing.no_type_check  # validates itself, naming the key
@dataclasses.dataclass(frozen=True)
class AdaptSettings:
    """Adaptation to new environments, weights and gate frozen (``[adapt]``).

    Attributes:
        steps, lr: AdaBelief steps and learning rate per context.
        init: ``"experts"``: fit from the zero context and from each expert's mean training
            context and keep per env the best expert's fit (:func:`~mixerdsr.adapt_new`: each
            env's expert, runner-up and confidence are reported); ``"zeros"``: the paper's
            single start; ``"mean"``: the mean training context.
        screen_steps: with ``init = "experts"``: steps of every start's first fit; the best
            ``keep`` experts' fits of every env continue to ``steps``.
        keep: experts refined per environment.
        joint: one optimiser for all new environments instead of one each (``init`` zeros/mean).
    """

    steps: int = 500
    lr: float = 1e-2
    init: str = "experts"
    screen_steps: int = 25
    keep: int = 2
    joint: bool = False

    def __post_init__(self):
        validate(
            self,
            "adapt",
            choices={"init": ("zeros", "mean", "experts")},
            ranges={"steps": AT_LEAST_1, "lr": POSITIVE, "screen_steps": AT_LEAST_1, "keep": AT_LEAST_1},
        )


@typing.no_type_check  # validates itself, naming the key
@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """Evaluation (``[evaluation]``).

    Attributes:
        tprmse_eps: error threshold of TPRMSE (the share of time steps predicted within it).
    """

    tprmse_eps: float = 0.1

    def __post_init__(self):
        validate(self, "evaluation", ranges={"tprmse_eps": POSITIVE})


#: section name -> settings class
SECTIONS: dict[str, type] = {
    "data": DataSettings,
    "model": ModelSettings,
    "gate": GateSettings,
    "train": TrainSettings,
    "solver": SolverSettings,
    "adapt": AdaptSettings,
    "evaluation": EvalSettings,
}


@typing.no_type_check  # validates itself, naming the key
@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a MixER run needs, one section per concern. Defaults follow the paper
    (Appendix C) where it says; each field's meaning is documented on its section's class.

    Build it from TOML (:func:`load_config`), from a nested mapping (:meth:`from_dict`), or in
    Python from sections: ``Config(model=ModelSettings(backbone="coda", num_experts=3))``;
    :meth:`override` changes settings by name (``{"train.seed": 1}``).
    """

    data: DataSettings = dataclasses.field(default_factory=DataSettings)
    model: ModelSettings = dataclasses.field(default_factory=ModelSettings)
    gate: GateSettings = dataclasses.field(default_factory=GateSettings)
    train: TrainSettings = dataclasses.field(default_factory=TrainSettings)
    solver: SolverSettings = dataclasses.field(default_factory=SolverSettings)
    adapt: AdaptSettings = dataclasses.field(default_factory=AdaptSettings)
    evaluation: EvalSettings = dataclasses.field(default_factory=EvalSettings)

    def __post_init__(self):
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise SettingError(name, f"expected a {cls.__name__}, found {type(getattr(self, name)).__name__}")
        g = self.gate
        if g.choose != "fixed" and g.warmup == 0 and g.mode == "lstsq" and self.model.num_experts > 1:
            raise SettingError(
                "gate.choose",
                f"{g.choose!r} chooses the number of experts from the contexts of the warm-up's shared expert: "
                "set gate.warmup > 0 (e.g. 100 outer steps)",
            )

    def to_dict(self) -> dict[str, Any]:
        """The nested mapping of the TOML file: ``{section: {field: value}}``, the backbone's
        settings under ``model[backbone]``."""
        out = {name: _fields(getattr(self, name)) for name in SECTIONS}
        expert = out["model"].pop("expert")
        if expert:
            out["model"][self.model.backbone] = expert
        return out

    def flat(self) -> dict[str, Any]:
        """Every setting by its dotted name: ``{"gate.every": 1, "model.ncf.taylor_order": 2, ...}``."""
        return flatten_settings(self.to_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "<dict>") -> "Config":
        """Build from a nested mapping as :meth:`to_dict` returns (a TOML file's contents).

        Raises:
            ValueError: an unknown section or key, a key outside its section, a table for
                another backbone, or a bad value; the message names ``source`` and the key.
        """
        return _build(d, source, {})

    def override(self, changes: Mapping[str, Any]) -> "Config":
        """A copy with settings changed by dotted name (``{"gate.mode": "frozen"}``); None values
        are ignored. Changing ``model.backbone`` resets the backbone's own settings unless
        ``model.<backbone>.*`` keys are given too."""
        return Config.from_dict(_apply(self.to_dict(), changes, "<override>"), "<override>")


def _fields(obj: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        out[f.name] = _fields(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v
    return out


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def flatten_settings(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested settings mapping (:meth:`Config.to_dict`) by dotted names."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten_settings(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _check_keys(table: Mapping[str, Any], cls: type, section: str, source: str) -> None:
    valid = _field_names(cls)
    unknown = [k for k in table if k not in valid]
    if unknown:
        hints = []
        for k in unknown:
            home = [f"[{s}]" for s, c in SECTIONS.items() if s != section and k in _field_names(c)]
            home += [
                f"[model.{b}]"
                for b, cls in BACKBONES.items()
                if f"model.{b}" != section and k in _field_names(cls.Settings)
            ]
            if home:
                hints.append(f"'{k}' belongs in {' or '.join(home)}")
        hint = f" ({'; '.join(hints)})" if hints else ""
        raise ValueError(
            f"{source}: unknown key(s) {[f'{section}.{k}' for k in unknown]}{hint}; valid in [{section}]: {valid}"
        )


#: settings that were removed, by section, with the value that kept them out of the way: a
#: configuration or model file written before their removal still loads when it holds that value
_RETIRED = {"gate": {"grow": False, "grow_every": 20, "grow_tol": 0.05}}


def _drop_retired(table: dict[str, Any], section: str, source: str) -> dict[str, Any]:
    for key, inert in _RETIRED.get(section, {}).items():
        if key in table:
            if table[key] != inert and key == "grow":
                raise ValueError(
                    f"{source}: config '{section}.{key}' (growing the number of experts) was removed; "
                    'choose the number of experts with --experts auto (gate.choose = "silhouette")'
                )
            del table[key]
    return table


def drop_retired(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A nested settings mapping without the removed settings (:data:`_RETIRED`) that hold
    their inert value; a removed setting that was in use is refused (ValueError)."""
    return {k: _drop_retired(dict(v), k, source) if isinstance(v, Mapping) else v for k, v in d.items()}


def _tables(d: Mapping[str, Any], source: str, build: bool = True) -> dict[str, dict[str, Any]]:
    """The keyword arguments of each section's class, keys checked; ``model.expert`` holds the
    backbone's settings object (``build``) or its table."""
    for key, value in d.items():
        if key not in SECTIONS:
            home = [f"[{s}] {key}" for s, c in SECTIONS.items() if key in _field_names(c)]
            hint = f"; it belongs in a section: {' or '.join(home)}" if home else ""
            raise ValueError(f"{source}: unknown config section or key '{key}'{hint}; sections: {list(SECTIONS)}")
        if not isinstance(value, Mapping):
            raise ValueError(f"{source}: config '{key}' must be a section ([{key}]), found {value!r}")
    tables = {}
    for name, settings_cls in SECTIONS.items():
        table = _drop_retired(dict(d.get(name, {})), name, source)
        if name == "model":
            table = _model_table(table, source, build)
        _check_keys(table, settings_cls, name, source)
        tables[name] = table
    return tables


def _model_table(table: dict[str, Any], source: str, build: bool) -> dict[str, Any]:
    """Turn ``[model.<backbone>]`` into ``expert = <backbone's Settings>``."""
    backbone = table.get("backbone", ModelSettings.backbone)
    if backbone not in BACKBONES:
        raise ValueError(f"{source}: config 'model.backbone': expected one of {list(BACKBONES)}, found {backbone!r}")
    subs = {k: v for k, v in table.items() if isinstance(v, Mapping)}
    for k in subs:
        if k != backbone:
            what = "another backbone" if k in BACKBONES else "not a backbone"
            raise ValueError(
                f"{source}: table [model.{k}] ({what}) does not apply to model.backbone = {backbone!r}; "
                f"its settings go in [model.{backbone}]"
            )
        del table[k]
    if "expert" in table:
        raise ValueError(f"{source}: give the backbone's settings as a table [model.{backbone}], not 'model.expert'")
    settings_cls: type[ExpertSettings] = BACKBONES[backbone].Settings
    given = dict(subs.get(backbone, {}))
    _check_keys(given, settings_cls, f"model.{backbone}", source)
    if not build:
        return table
    try:
        table["expert"] = settings_cls(**given)
    except SettingError as err:  # the expert's settings know no section name of their own
        raise err.in_section(f"model.{backbone}") from None
    return table


def _build(d: Mapping[str, Any], source: str, origins: Mapping[str, str]) -> Config:
    """:meth:`Config.from_dict`; a bad value is reported under the source that gave its key
    (``origins``: dotted name -> file or "command line"), else ``source``."""
    try:
        return Config(**{name: SECTIONS[name](**table) for name, table in _tables(d, source).items()})
    except SettingError as err:
        raise ValueError(f"{origins.get(err.key, source)}: {err}") from None


def _apply(d: dict[str, Any], changes: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``d`` with dotted-name ``changes`` applied (None ignored)."""
    changes = {k: v for k, v in changes.items() if v is not None}
    new_backbone = changes.get("model.backbone")
    if new_backbone is not None and new_backbone != d.get("model", {}).get("backbone", ModelSettings.backbone):
        model = d.setdefault("model", {})
        for k in [k for k, v in model.items() if isinstance(v, Mapping)]:
            del model[k]
    for key, value in changes.items():
        parts = key.split(".")
        if len(parts) < 2 or parts[0] not in SECTIONS:
            raise ValueError(
                f"{source}: '{key}' is not a setting name (expected 'section.field', sections: {list(SECTIONS)})"
            )
        node = d
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"{source}: '{key}' is not a setting name")
        node[parts[-1]] = value
    return d


def _preset_files() -> dict[str, Any]:
    root = resources.files("mixerdsr") / "configs"
    return {p.name[:-5]: p for p in root.iterdir() if p.name.endswith(".toml")}


def list_presets() -> list[str]:
    """Names of the built-in presets (``mixerdsr run --preset NAME``)."""
    return sorted(_preset_files())


def preset_description(name: str) -> str:
    """The first comment line of a built-in preset's file (what it is for)."""
    for line in _preset_files()[name].read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def _read_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{source}: invalid TOML: {err}") from None


def _merge(base: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in new.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = dict(v) if isinstance(v, Mapping) else v
    return base


def load_config(
    preset: str | None = None, path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> Config:
    """Configuration from a preset and/or a TOML file, then overrides.

    Args:
        preset: built-in preset name (see :func:`list_presets`).
        path: a user TOML file; its settings override the preset's.
        overrides: final changes by dotted name (``{"train.seed": 3}``, e.g. from the command
            line); None values are ignored.

    Raises:
        ValueError: unknown preset, missing or invalid file, unknown key or bad value (the
            message names the file and the key).
    """
    d: dict[str, Any] = {}
    source = "<defaults>"
    origins: dict[str, str] = {}  # dotted name -> where its value came from
    if preset is not None:
        files = _preset_files()
        if preset not in files:
            raise ValueError(f"unknown preset {preset!r}; available: {sorted(files)}")
        source = f"preset {preset}"
        d = _read_toml(files[preset].read_text(), source)
        _tables(d, source, build=False)
        origins |= dict.fromkeys(flatten_settings(d), source)
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"config file not found: {p}")
        user = _read_toml(p.read_text(), str(p))
        source = str(p)
        _tables(user, source, build=False)  # the file's unknown keys are reported under its name
        if "backbone" in user.get("model", {}):
            d = _apply(d, {"model.backbone": user["model"]["backbone"]}, source)
        d = _merge(d, user)
        origins |= dict.fromkeys(flatten_settings(user), source)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if given:
        source = "command line" if preset is not None or path is not None else "<override>"
        d = _apply(d, given, source)
        origins |= dict.fromkeys(given, source)
    return _build(d, source, origins)
