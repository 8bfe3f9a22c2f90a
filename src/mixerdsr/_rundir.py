"""The directory a run writes: one process at a time (a lock), and on several hosts a private
copy for every process but the first."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["RunLockedError", "run_lock", "run_directory"]


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


@contextlib.contextmanager
def run_directory(out: Path, resume: bool) -> Iterator[Path]:
    """The directory this process writes the run into, for the duration of the run: ``out``,
    locked (:func:`run_lock`); on a process other than 0 of a run over several hosts, a private
    scratch directory instead, holding what resuming reads (``out``'s checkpoint, history,
    configuration and data; ``out`` shared between hosts), removed at the end."""
    from .sharding import is_primary

    if is_primary():
        with run_lock(out):
            yield out
        return
    scratch = Path(tempfile.mkdtemp(prefix=f"mixerdsr-{out.name}-"))
    try:
        if resume:
            for name in ("checkpoint.npz", "history.jsonl", "config.toml", "data.npz"):
                if (out / name).exists():
                    shutil.copy2(out / name, scratch / name)
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
