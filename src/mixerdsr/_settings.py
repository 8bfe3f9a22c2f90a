"""Validation shared by the settings dataclasses (one per concern, each defined beside the code
that uses it: :class:`~mixerdsr.routing.GateSettings`, ``SolverSettings``, the experts'
``Settings``, and the run sections in :mod:`mixerdsr._config`).

A settings object checks itself on construction, so a wrong value fails where it is given,
naming its key (``section.field``) and what was expected.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
import typing
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["Range", "SEED_MAX", "SettingError", "validate"]

SEED_MAX = 2**32 - 1


class SettingError(ValueError):
    """A refused setting value: ``config 'section.field': expected ..., found ...``.

    Attributes:
        key: the setting's dotted name (``section.field``).
        problem: what is wrong, without the key.
    """

    def __init__(self, key: str, problem: str):
        super().__init__(f"config '{key}': {problem}")
        self.key, self.problem = key, problem

    def in_section(self, section: str) -> "SettingError":
        """The same error for the setting's field under another section name."""
        return SettingError(f"{section}.{self.key.rsplit('.', 1)[-1]}", self.problem)


class Range(typing.NamedTuple):
    """Allowed values of a numeric setting: ``lo <= v <= hi`` (None = unbounded), ``lo``
    itself excluded when ``open_low``."""

    lo: float | None
    hi: float | None = None
    open_low: bool = False

    def describe(self, integer: bool) -> str:
        what = "an integer" if integer else "a finite number"
        lo, hi = (str(int(v)) if float(v).is_integer() else f"{v:g}" for v in (self.lo or 0, self.hi or 0))
        if self.lo is not None and self.hi is not None:
            return f"{what} in {'(' if self.open_low else '['}{lo}, {hi}]"
        if self.lo is not None:
            return f"{what} {'>' if self.open_low else '>='} {lo}"
        return what

    def holds(self, v: float | int) -> bool:
        if not math.isfinite(v):
            return False
        if self.lo is not None and (v < self.lo or (self.open_low and v == self.lo)):
            return False
        return self.hi is None or v <= self.hi


#: common ranges
AT_LEAST_1 = Range(1)
AT_LEAST_0 = Range(0)
POSITIVE = Range(0, open_low=True)
SEED = Range(0, SEED_MAX)


def _type_name(tp: Any) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    base = args[0] if args else tp
    name = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(base, str(base))
    return name + (" or nothing (omit the key)" if type(None) in typing.get_args(tp) else "")


def _base_type(tp: Any) -> Any:
    return next((a for a in typing.get_args(tp) if a is not type(None)), tp)


def _type_ok(value: Any, tp: Any) -> bool:
    if value is None:
        return type(None) in typing.get_args(tp)
    base = _base_type(tp)
    if base is float:
        return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if base is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    return isinstance(value, base)


def _annotations(cls: type) -> dict[str, Any]:
    """Evaluated field annotations of ``cls`` and its bases (``typing.get_type_hints`` returns
    nothing for a class marked ``typing.no_type_check``, as the settings classes are: they
    validate themselves instead of leaving it to a runtime type checker)."""
    out: dict[str, Any] = {}
    for c in reversed(cls.__mro__):
        if c is not object:
            out.update(inspect.get_annotations(c, eval_str=True))
    return out


def validate(
    obj: Any,
    section: str,
    *,
    choices: Mapping[str, tuple[str, ...]] | None = None,
    ranges: Mapping[str, Range] | None = None,
) -> None:
    """Check the fields of the frozen dataclass ``obj`` against their annotations, ``choices``
    and ``ranges``; NumPy scalars are converted to Python ones (a float field given an int
    becomes a float).

    Raises:
        SettingError: ``config 'section.field': expected ..., found ...``.
    """
    hints = _annotations(type(obj))
    for f in dataclasses.fields(obj):
        key, value, tp = f"{section}.{f.name}", getattr(obj, f.name), hints[f.name]
        if tp is Any or typing.get_origin(tp) is typing.ClassVar:
            continue
        if not _type_ok(value, tp):
            raise SettingError(key, f"expected {_type_name(tp)}, found {value!r} ({type(value).__name__})")
        base = _base_type(tp)
        if value is not None and base in (int, float, bool) and type(value) is not base:
            object.__setattr__(obj, f.name, base(value))
    for name, ok in (choices or {}).items():
        if getattr(obj, name) not in ok:
            raise SettingError(f"{section}.{name}", f"expected one of {list(ok)}, found {getattr(obj, name)!r}")
    for name, rng in (ranges or {}).items():
        v = getattr(obj, name)
        if v is not None and not rng.holds(v):
            integer = _base_type(hints[name]) is int
            raise SettingError(f"{section}.{name}", f"expected {rng.describe(integer)}, found {v!r}")
