"""The ``mixerdsr`` command line: a thin layer over the Python API.

Commands are grouped; each group is added by one ``_add_<group>_commands(sub)`` function listed in
``COMMAND_GROUPS`` and every command sets ``func`` (``args -> exit code``) with
``set_defaults``. :func:`main` parses and dispatches via ``args.func(args)``.

Bad input (unknown dataset, missing file, invalid TOML or data) prints one line
``error: ...`` on stderr and returns exit code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .. import __version__
from ..checkpoint import CheckpointError
from ..data._envdata import DataError
from ._common import EXIT_USAGE, CLIError, _print_help
from ._data import _add_data_commands
from ._models import _add_contexts_commands, _add_model_commands
from ._reproduce import _add_reproduce_commands
from ._run import _add_run_commands, parse_sets

__all__ = ["build_parser", "main", "parse_sets", "COMMAND_GROUPS", "EXIT_USAGE", "CLIError"]


#: Functions adding one command group each to the top-level subparsers (append to extend).
COMMAND_GROUPS: list[Callable[[Any], None]] = [
    _add_data_commands,
    _add_run_commands,
    _add_contexts_commands,
    _add_model_commands,
    _add_reproduce_commands,
]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; its subparsers action is kept as ``parser.subparsers``."""
    parser = argparse.ArgumentParser(
        prog="mixerdsr", description="Hierarchical dynamical system reconstruction with MixER."
    )
    parser.add_argument("--version", action="version", version=f"mixerdsr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.subparsers = sub  # type: ignore[attr-defined]
    parser.set_defaults(func=_print_help(parser))
    for add in COMMAND_GROUPS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 success, 2 bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse usage errors (2) and --help/--version (0)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    try:
        return int(args.func(args))
    except BrokenPipeError:  # e.g. `mixerdsr data show F.npz | head`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:  # pragma: no cover
            pass
        return 0
    except (CLIError, DataError, CheckpointError, OSError) as err:  # OSError includes FileNotFoundError
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE


def _one_line(err: BaseException) -> str:
    msg = str(err) or type(err).__name__
    if isinstance(err, FileNotFoundError) and err.filename and not str(err).startswith(str(err.filename)):
        msg = f"{err.filename}: no such file"
    return " ".join(msg.split())
