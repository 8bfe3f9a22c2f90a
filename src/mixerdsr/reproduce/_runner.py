"""Running cells: one JSON per finished cell, each cell in a fresh process."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._budgets import settings
from ._report import _fmt
from ._tables import Cell, cells, preset_of, results_dir, shard_cells


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def cell_record(cell: Cell, budget: str, over: dict[str, Any], res: Any, seconds: float) -> dict[str, Any]:
    """The JSON record of a finished cell: its metrics, routing, validation curve, settings
    ``over``, the run's configuration, and where, when and by which version it ran.

    Args:
        cell: the cell.
        budget: the budget it ran at.
        over: its settings on top of the preset (:func:`settings`).
        res: the :class:`~mixerdsr.RunResult` of its run.
        seconds: wall-clock seconds of the run.
    """
    from .. import __version__

    m = res.metrics
    hist = [json.loads(line) for line in (res.out_dir / "history.jsonl").read_text().splitlines()]
    test, ad, r = m.get("test", {}), m.get("adapt_test", {}), m.get("routing", {})
    counts = r.get("counts") or []
    metrics = {
        "test_rel_mse": test.get("rel_mse"),
        "test_mse": test.get("mse"),
        "test_tprmse": test.get("tprmse"),
        "test_traj_rel_l2": test.get("traj_rel_l2"),
        "adapt_rel_mse": ad.get("rel_mse"),
        "adapt_mse": ad.get("mse"),
        "adapt_tprmse": ad.get("tprmse"),
        "adapt_traj_rel_l2": ad.get("traj_rel_l2"),
        "purity": r.get("purity") if len(counts) > 1 else None,
        "ari": r.get("ari") if len(counts) > 1 else None,
        # experts switched off by the choice of their number are not idle
        "idle_experts": int(sum(c == 0 and on for c, on in zip(counts, r.get("active") or [True] * len(counts)))),
        "chosen_experts": r.get("chosen_experts"),
        "seconds_per_outer_step": m.get("timing", {}).get("seconds_per_outer_step"),
        "best_step": m.get("best_step"),
        "outer_steps_run": m.get("training", {}).get("outer_steps_run"),
        "stop_reason": m.get("training", {}).get("stop_reason"),
        "converged": m.get("training", {}).get("converged"),
    }
    return {
        "cell": cell.name,
        "table": cell.table,
        "data": cell.data,
        "backbone": cell.backbone,
        "variant": cell.variant,
        "seed": cell.seed,
        "budget": budget,
        "metrics": metrics,
        "counts": counts,
        "active_parameters": m.get("parameters", {}).get("active_per_expert"),
        "test_per_env_rel_mse": test.get("per_env_rel_mse"),
        "adapt_per_env_rel_mse": ad.get("per_env_rel_mse"),
        "curve": [
            {
                k: h[k]
                for k in ("step", "weight_loss", "val_rel_mse", "val_mse", "val_traj_rel_l2", "val_d_stsp", "purity")
                if k in h
            }
            for h in hist
        ],
        "warnings": m.get("warnings", []),
        # the number of experts chosen after the warm-up (MixER-auto): count, silhouettes, shared fit
        "experts_chosen": next((h["experts_chosen"] for h in hist if "experts_chosen" in h), None),
        "settings": over,
        "config": m.get("config"),
        "seconds": seconds,
        "machine": f"{platform.node()} {platform.machine()} {platform.processor()}".strip(),
        "date": time.strftime("%Y-%m-%d"),
        "version": __version__,
        "commit": _commit(),
    }


def run_table(
    table: str,
    budget: str = "cpu",
    *,
    seeds: Sequence[int] = (0, 1, 2),
    patterns: Sequence[str] = (),
    results: str | Path = "docs/results",
    runs: str | Path = "runs/reproduce",
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    isolate: bool = True,
    time_budget: float = 0.0,
    shard: tuple[int, int] | None = None,
) -> list[Path]:
    """Run the cells of ``table`` that have no JSON yet; return the JSON paths written.

    Args:
        table: ``fig2``, ``table2``, ``table3``, ``table4`` or ``gate``.
        budget: ``smoke`` (seconds per cell: tiny networks, 2 envs per family, 2 outer steps,
            fixed-step RK4),
            ``cpu`` (about five minutes per cell on 2 CPU cores) or ``paper`` (the paper's 500
            outer steps and gate update after every inner step).
        seeds: training seeds.
        patterns: only cells whose name matches one of these (shell-style).
        results: JSONs go to ``results/<table>/`` (``results/<table>-<budget>/`` unless cpu).
        runs: run directories go to ``runs/<table>-<budget>/<cell>/`` (an interrupted cell
            resumes from its checkpoint there).
        force: run cells whose JSON exists again.
        progress: a bar over the cells with the current cell's name and an ETA.
        log: message sink.
        time_budget: seconds of training per cell (0 = none): a cell stops at the best model
            it reached by then (``train.time_budget``; its JSON's ``stop_reason`` says so).
        isolate: run every cell in a fresh Python process, so that the code JAX compiles for
            one cell is freed before the next (in one process it accumulates until the
            system's limit on memory mappings stops a long table).
        shard: ``(K, N)``: only the K-th of N disjoint parts of the matching cells
            (:func:`shard_cells`; e.g. one part per machine of a job array, all writing to one
            shared ``results`` folder).
    """
    todo = cells(table, seeds, patterns)
    if not todo:
        raise ValueError(f"no cell of {table} matches {list(patterns)} (cells look like {cells(table, seeds)[0].name})")
    if shard is not None:
        todo = shard_cells(todo, *shard)
        log(f"{table}: part {shard[0]} of {shard[1]}: {len(todo)} cell(s)")
    out_dir = results_dir(results, table, budget)
    run_root = Path(runs) / f"{table}-{budget}"
    done = [c for c in todo if (out_dir / f"{c.name}.json").exists() and not force]
    todo = [c for c in todo if c not in done]
    if done:
        log(f"{table}: {len(done)} cell(s) already done (JSON in {out_dir}); {len(todo)} to run")
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=table, unit="cell", dynamic_ncols=True, disable=None)
    written = []
    try:
        for cell in todo:
            if bar is not None:
                bar.set_postfix_str(cell.name, refresh=True)
            # a finished cell run again (--force) starts afresh; an interrupted one resumes
            redo = force and (out_dir / f"{cell.name}.json").exists()
            if isolate:  # the fresh process says what it has to say itself
                record = _in_fresh_process(run_cell, cell, budget, run_root, redo, time_budget)
            else:
                record = run_cell(cell, budget, run_root, redo, time_budget, log)
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / f"{cell.name}.json"
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(record, indent=1))
            tmp.replace(path)  # a cell's JSON is there whole or not at all
            written.append(path)
            m = record["metrics"]
            msg = (
                f"{cell.name}: test relMSE {_fmt(m['test_rel_mse'])} MSE {_fmt(m['test_mse'])}  adapt relMSE "
                f"{_fmt(m['adapt_rel_mse'])} MSE {_fmt(m['adapt_mse'])}  ({record['seconds']:.0f} s)"
            )
            if bar is not None:
                bar.write(msg)
                bar.update(1)
            else:
                log(msg)
    finally:
        if bar is not None:
            bar.close()
    return written


def run_cell(
    cell: Cell,
    budget: str,
    run_root: Path,
    redo: bool = False,
    time_budget: float = 0.0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train and evaluate one cell in ``run_root/<cell>``; return its JSON record.

    An interrupted run there resumes unless ``redo``. One that cannot resume (its settings
    differ from the cell's: :class:`~mixerdsr.training.ResumeError`) is never deleted: it is
    moved to ``<cell>.unresumed-<n>`` beside it, ``log`` says so at once with the reason, and
    the cell starts again. ``time_budget``: seconds of training, 0 = none."""
    from .._config import load_config
    from .._run import run

    over = settings(cell, budget) | ({"train.time_budget": time_budget} if time_budget else {})
    cfg = load_config(preset_of(cell.data), None, over)
    rd = Path(run_root) / cell.name
    resume = (rd / "checkpoint.npz").exists() and not redo
    if not resume:
        shutil.rmtree(rd, ignore_errors=True)
    from ..training import ResumeError

    t0 = time.perf_counter()
    try:
        res = run(cfg, rd, resume=resume, progress=False, log=lambda s: None, plots=budget != "smoke")
    except ResumeError as err:  # another process in the directory, bad data, ...: raised as they are
        kept = _set_aside(rd)
        log(f"{cell.name}: could not resume ({err}); that run is kept in {kept}, the cell starts again")
        res = run(cfg, rd, progress=False, log=lambda s: None, plots=budget != "smoke")
    return cell_record(cell, budget, over, res, time.perf_counter() - t0)


def _set_aside(rd: Path) -> Path:
    """Move the run directory ``rd`` to the first free ``<rd>.unresumed-<n>``; return it."""
    n = 1
    while (kept := rd.with_name(f"{rd.name}.unresumed-{n}")).exists():
        n += 1
    rd.rename(kept)
    return kept


def _in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a new Python process (spawned, not forked: JAX's threads do not survive
    a fork); its exceptions are raised here. The process ends when this one does, however
    this one ends (a killed command must not leave a cell training on in the background)."""
    import concurrent.futures
    import multiprocessing
    import os

    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(_as_child_of, os.getpid(), fn, *args).result()


def _as_child_of(parent: int, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, leaving at once when process ``parent`` is gone."""
    import os
    import threading

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:  # the parent ended: this process was handed to another
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    return fn(*args)
