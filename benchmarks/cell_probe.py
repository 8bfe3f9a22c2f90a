"""Probe: one cell of the reproduction harness with some settings changed, to measure what a
change does on the same data, seed and budget as the committed table.

    python benchmarks/cell_probe.py table3 odebench-10b-geps-mixer-M-s0 --tag envw \\
        --set train.env_weights=scale

Writes ``docs/results/probes/<table>/<cell>-<tag>.json`` in the harness's format (the same
fields as ``docs/results/<table>/<cell>.json``, plus the changed settings under ``probe``), so
the two can be compared field by field, and prints the headline figures. A JSON that exists is
not run again (``--force`` to rerun).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import time
from pathlib import Path

import mixerdsr as mx
from mixerdsr import reproduce as R
from mixerdsr import load_config
from mixerdsr.cli import parse_sets


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("table", choices=list(R.TABLES))
    p.add_argument("cells", nargs="+", help="cell names or shell patterns (e.g. 'odebench-10b-geps-*-s0')")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a changed setting")
    p.add_argument("--tag", required=True, help="name of the change (in the file name)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", default="cpu", choices=list(R.BUDGETS))
    p.add_argument("--out", default="docs/results/probes")
    p.add_argument("--force", action="store_true")
    a = p.parse_args()
    change = parse_sets(a.set)
    todo = [c for c in R.cells(a.table, a.seeds) if any(fnmatch.fnmatchcase(c.name, q) for q in a.cells)]
    if not todo:
        raise SystemExit(f"no cell of {a.table} matches {a.cells}")
    out = Path(a.out) / a.table
    out.mkdir(parents=True, exist_ok=True)
    for cell in todo:
        path = out / f"{cell.name}-{a.tag}.json"
        if path.exists() and not a.force:
            print(f"{path} exists; skipped")
            continue
        over = R.settings(cell, a.budget) | change
        cfg = load_config(R.preset_of(cell.data), None, over)
        t0 = time.perf_counter()
        res = mx.run(cfg, Path("runs/probes") / a.table / f"{cell.name}-{a.tag}", progress=False, plots=False, log=lambda s: None)
        rec = R.cell_record(cell, a.budget, over, res, time.perf_counter() - t0) | {"probe": {"tag": a.tag, "set": change}}
        path.write_text(json.dumps(rec, indent=1))
        m = rec["metrics"]
        print(
            f"{cell.name} [{a.tag}]: test relMSE {m['test_rel_mse']:.4g} MSE {m['test_mse']:.4g} adapt relMSE "
            f"{m['adapt_rel_mse']:.4g} MSE {m['adapt_mse']:.4g} purity {m['purity']} step {m['best_step']} "
            f"({rec['seconds']:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
