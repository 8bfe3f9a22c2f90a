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
    router = "warm_start"   # the routing policy; its settings in [gate.warm_start]

    [gate.warm_start]
    warmup = 100

Every setting has one name, ``section.field`` (``gate.every``, ``gate.warm_start.warmup``);
overrides use it too (``load_config(overrides={"gate.every": 12})``). Unknown keys, keys in the
wrong section and a backbone table that is not the run's backbone are errors naming the key and
the valid ones. Files, checkpoints and overrides written before the warm start had its own
table (``gate.warmup``, ``gate.choose``, ``gate.seed_method``, ...) are read with their settings
moved there (:data:`_MOVED`).
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from ._sections import SECTIONS as SECTIONS
from ._sections import AdaptSettings as AdaptSettings
from ._sections import DataSettings as DataSettings
from ._sections import EvalSettings as EvalSettings
from ._sections import ModelSettings as ModelSettings
from ._sections import TrainSettings as TrainSettings
from ._settings import SettingError
from .experts import BACKBONES
from .experts._base import ExpertSettings
from .experts._integrate import SolverSettings
from .routing import GateSettings, WarmStartSettings

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
        grouping = g.warm_start.grouping
        if grouping != "fixed" and g.router != "warm_start" and g.mode == "lstsq" and self.model.num_experts > 1:
            raise SettingError(
                "gate.warm_start.grouping",
                f"{grouping!r} chooses the number of experts from the contexts of the warm-up's shared expert: "
                'set gate.router = "warm_start" (`mixerdsr run --experts auto` does)',
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


#: settings of the ``[gate]`` table that moved to ``[gate.warm_start]`` (old name -> new name);
#: ``gate.warmup > 0`` meant ``gate.router = "warm_start"``, ``gate.warmup = 0`` the paper's routing
_MOVED = {
    "warmup": "warmup",
    "warmup_batch": "batch",
    "seed_from": "seed_from",
    "choose": "grouping",
    "seed_method": "method",
    "seed_restarts": "restarts",
    "seed_neighbours": "neighbours",
    "silhouette_min": "silhouette_min",
    "silhouette_slack": "silhouette_slack",
    "single_fit": "single_fit",
}


def _upgrade_gate(table: dict[str, Any]) -> dict[str, Any]:
    """A ``[gate]`` table with the settings of :data:`_MOVED` in its ``warm_start`` table (a
    moved setting wins over the table's: it was given later, e.g. as an override of a preset);
    an old ``warmup`` decides ``router`` as it did."""
    moved = {new: table.pop(old) for old, new in _MOVED.items() if old in table}
    if moved:
        if "warmup" in moved:
            table["router"] = "warm_start" if moved["warmup"] else "from_start"
            if not moved["warmup"]:
                del moved["warmup"]  # 0 meant "no warm start", which the router now says
        ws = table.get("warm_start")
        table["warm_start"] = {**(dict(ws) if isinstance(ws, Mapping) else {}), **moved}
    return table


#: settings that were removed, by section, with the value that kept them out of the way: a
#: configuration or model file written before their removal still loads when it holds that value
_RETIRED = {"gate": {"grow": False, "grow_every": 20, "grow_tol": 0.05}}


def _drop_retired(table: dict[str, Any], section: str, source: str) -> dict[str, Any]:
    if section == "gate":
        table = _upgrade_gate(table)
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
        if name == "gate":
            table = _gate_table(table, source, build)
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


def _gate_table(table: dict[str, Any], source: str, build: bool) -> dict[str, Any]:
    """Turn ``[gate.warm_start]`` into ``warm_start = WarmStartSettings(...)``."""
    subs = [k for k, v in table.items() if isinstance(v, Mapping) and k != "warm_start"]
    if subs:
        raise ValueError(f"{source}: unknown table(s) {[f'gate.{k}' for k in subs]}; the gate has [gate.warm_start]")
    given = dict(table.get("warm_start") or {})
    _check_keys(given, WarmStartSettings, "gate.warm_start", source)
    if build:
        try:
            table["warm_start"] = WarmStartSettings(**given)
        except SettingError as err:
            raise ValueError(f"{source}: {err}") from None
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
