"""``mixerdsr reproduce``: the paper's tables, their reports and Figure 2."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import CLIError, _check_out_dir, _duration_arg, _nonneg_int


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from .. import reproduce as R

    _check_out_dir(args.results, "--results")
    _check_out_dir(args.runs, "--runs")
    try:
        if not args.report:
            R.run_table(
                args.table,
                args.budget,
                seeds=args.seeds,
                patterns=args.cells or (),
                results=args.results,
                runs=args.runs,
                force=args.force,
                progress=not args.quiet,
                time_budget=args.time_budget or 0.0,
                shard=args.shard,
            )
        out = R.results_dir(args.results, args.table, args.budget).with_suffix(".md")
        if not R.load_cells(args.table, args.budget, args.results):
            raise CLIError(
                f"no cell JSON in {R.results_dir(args.results, args.table, args.budget)}: nothing to report"
                + (f" ({out} left as it is)" if out.exists() else "")
            )
        text = R.report(args.table, args.budget, args.results)
    except ValueError as err:
        raise CLIError(str(err)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    if args.table == "fig2":
        png = R.figure2(args.budget, args.results)
        if png is not None:
            print(f"wrote {png}")
    print(f"wrote {out}")
    return 0


def _add_reproduce_commands(sub: Any) -> None:
    from ..reproduce import BUDGETS, TABLES

    p = sub.add_parser(
        "reproduce",
        help="reproduce a table or figure of the MixER paper (resumable, one JSON per cell)",
        description="Run every cell (dataset, backbone, variant, seed) of a table of the paper whose "
        "JSON is not in --results yet, then write the Markdown table (ours beside the paper's values) "
        "from the JSONs. Tables: "
        + "; ".join(f"{k}: {t.title.split(':')[0]}" for k, t in TABLES.items())
        + ". An interrupted cell resumes from its checkpoint under --runs.",
    )
    p.add_argument("table", choices=list(TABLES), metavar="TABLE", help=f"one of {', '.join(TABLES)}")
    p.add_argument(
        "--budget",
        choices=BUDGETS,
        default="cpu",
        help="smoke: seconds per cell (tiny networks, 2 envs per family, fixed-step RK4); cpu (default): "
        "about 5 min per cell on 2 CPU cores (fewer outer steps, one gate update per inner loop); paper: the paper's "
        "settings (500 outer steps, gate after every inner step), for a GPU; converged: the paper's sizes trained "
        "until validation stops improving (learning-rate drops on plateaus, at most 5000 outer steps; JSONs in "
        "RESULTS/converged/TABLE/)",
    )
    p.add_argument("--seeds", nargs="+", type=_nonneg_int, default=[0, 1, 2], help="training seeds (default 0 1 2)")
    p.add_argument(
        "--cells", nargs="+", metavar="PATTERN", default=None, help="only cells whose name matches (e.g. 'lv-*-s0')"
    )
    p.add_argument("--force", action="store_true", help="run cells whose JSON exists again")
    p.add_argument("--report", action="store_true", help="only rebuild the table from the JSON files")
    p.add_argument(
        "--results",
        default="results",
        metavar="DIR",
        help="where the JSONs and tables go (DIR/TABLE/; default ./results; the project's own are in docs/results)",
    )
    p.add_argument("--runs", default="runs/reproduce", metavar="DIR", help="where the run directories go")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--time-budget",
        type=_duration_arg,
        default=None,
        help="training time per cell (e.g. 30m): a cell stops at the best model it reached by then",
    )
    p.add_argument(
        "--shard",
        type=_shard_arg,
        default=None,
        metavar="K/N",
        help="run only the K-th of N disjoint parts of the cells (e.g. one per machine of a job array, "
        "--results on a shared folder; --report then builds the table from whatever cells exist)",
    )
    p.set_defaults(func=_cmd_reproduce)


def _shard_arg(value: str) -> tuple[int, int]:
    """``--shard K/N`` with ``1 <= K <= N``."""
    k, sep, n = value.partition("/")
    if sep and k.strip().isdigit() and n.strip().isdigit() and 1 <= int(k) <= int(n):
        return int(k), int(n)
    raise argparse.ArgumentTypeError(f"expected K/N with 1 <= K <= N (e.g. 2/8), got {value!r}")
