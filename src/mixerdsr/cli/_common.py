"""What every command shares: the error type, argument types, number formatting, the compilation cache."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

EXIT_USAGE = 2


class CLIError(Exception):
    """A user-facing error: printed as ``error: <message>``, exit code 2."""


def _nonneg_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {s!r}")
    return v


def _pos_int(s: str) -> int:
    v = _nonneg_int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def _check_out_dir(path: Any, flag: str) -> None:
    """Refuse, before any work, an output folder that is an existing file."""
    if path is not None and os.path.exists(path) and not os.path.isdir(path):
        raise CLIError(f"{flag} {path} is a file, not a folder; name a folder (it is created if missing)")


def _num(v: Any, spec: str = ".4g") -> str:
    """A metric for the console: ``n/a`` for a missing or non-finite value."""
    return format(v, spec) if isinstance(v, (int, float)) and v == v and abs(v) != float("inf") else "n/a"


def _print_help(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    return run


# ----------------------------------------------------------------------------------------------
# data commands
# ----------------------------------------------------------------------------------------------


def _compilation_cache() -> None:
    """JAX's persistent compilation cache and the exported fitting functions (:mod:`._aot`) in
    the user's cache directory, so that a second ``mixerdsr adapt`` neither traces nor compiles
    them again (``MIXERDSR_CACHE_DIR`` overrides the place; an empty value switches it off)."""
    import jax

    where = os.environ.get("MIXERDSR_CACHE_DIR")
    if where == "":
        return
    if where is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        where = os.path.join(base, "mixerdsr", "jax")
    try:
        os.makedirs(where, exist_ok=True)
    except OSError:  # pragma: no cover - a read-only home: run without the cache
        return
    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    from .. import _aot

    _aot.enable(os.path.join(where, "exported"))  # traced functions too (tracing an ODE fit takes seconds)


def _print_names(items: list[tuple[str, str]]) -> None:
    """``name  description`` lines, names padded to one width."""
    width = max((len(n) for n, _ in items), default=0)
    for name, desc in items:
        print(f"{name:<{width}}  {desc}")


def _duration_arg(value: str) -> float:
    """``--time-budget``: seconds from ``90``, ``90s``, ``20m`` or ``1.5h``."""
    v = value.strip().lower()
    scale = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(v[-1:], None)
    try:
        seconds = float(v[:-1] if scale else v) * (scale or 1.0)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 20m or 1.5h, got {value!r}")
    return seconds
