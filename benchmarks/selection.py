"""Which validation score should select the model? (``train.select_on``)

Each cell is ``mixerdsr run`` with one backbone on one dataset, one seed and one selection
score (``rel_mse``: Eq. 9, the paper's; ``mse``; ``traj_rel_l2``), run as a user would in
``runs/selection/<cell>/`` (an interrupted cell resumes there); its figures go to one JSON per
cell in ``docs/results/selection/``. With the ``steps`` schedule the score does not change the
training, only which checkpoint is kept, so the cells of one seed differ only in their choice.

Sets of cells (``--set``):

- ``shplrnn-odebench2``: hier-shPLRNN on ODEBench-2 on every time point
  (``data.time_stride = 1``), seeds 0-4 (issue 36: seed 3 selected outer step 19 by Eq. 9);
- ``geps-odebench2``: the default job (GEPS, MixER-2 on ODEBench-2), seeds 0-4.

    python benchmarks/selection.py [--set shplrnn-odebench2] [--seeds 0 1 2 3 4] [--scores ...]
    python benchmarks/selection.py --report
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results" / "selection"
RUNS = ROOT / "runs" / "selection"
SCORES = ("rel_mse", "mse", "traj_rel_l2")
SETS: dict[str, list[str]] = {  # name -> mixerdsr run arguments
    "shplrnn-odebench2": ["--backbone", "shplrnn", "--set", "data.time_stride=1"],
    "geps-odebench2": [],
}


def run_cell(name: str, score: str, seed: int) -> dict:
    cell = f"{name}-{score}-s{seed}"
    out = RUNS / cell
    cmd = ["mixerdsr", "run", *SETS[name], "--seed", str(seed), "--set", f"train.select_on={score}", "--out", str(out)]
    if (out / "checkpoint.npz").exists():
        cmd.append("--resume")
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    m = json.loads((out / "metrics.json").read_text())
    rec = {
        "cell": cell,
        "set": name,
        "select_on": score,
        "seed": seed,
        "command": " ".join(cmd),
        "best_step": m["best_step"],
        "seconds": time.perf_counter() - t0,
        **{f"{sp}_{k}": m[sp].get(k) for sp in ("test", "adapt_test") for k in ("mse", "rel_mse", "traj_rel_l2")},
        "test_median_traj_rel_mse": m["test"].get("median_traj_rel_mse"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{cell}.json").write_text(json.dumps(rec, indent=1))
    return rec


def report() -> str:
    rows: dict[tuple[str, str], list[dict]] = {}
    for f in sorted(RESULTS.glob("*.json")):
        r = json.loads(f.read_text())
        rows.setdefault((r["set"], r["select_on"]), []).append(r)
    keys = ("test_mse", "test_rel_mse", "test_traj_rel_l2", "adapt_test_rel_mse", "adapt_test_traj_rel_l2")
    lines = [
        "| set | select_on | seeds | selected steps | " + " | ".join(keys) + " (median over seeds [max]) |",
        "|---|---|---|---|" + "---|" * len(keys),
    ]
    for (name, score), rs in sorted(rows.items()):
        rs.sort(key=lambda r: r["seed"])

        def fmt(k: str) -> str:
            v = np.array([np.nan if r[k] is None else r[k] for r in rs], float)
            return f"{np.nanmedian(v):.3g} [{np.nanmax(v):.3g}]"

        steps = ", ".join(str(r["best_step"]) for r in rs)
        lines.append(
            f"| {name} | `{score}` | {','.join(str(r['seed']) for r in rs)} | {steps} | "
            + " | ".join(fmt(k) for k in keys)
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", dest="sets", nargs="+", default=["shplrnn-odebench2"], choices=list(SETS))
    ap.add_argument("--scores", nargs="+", default=list(SCORES), choices=SCORES)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--report", action="store_true")
    a = ap.parse_args()
    if a.report:
        print(report())
        return
    for name in a.sets:
        for seed in a.seeds:
            for score in a.scores:
                if (RESULTS / f"{name}-{score}-s{seed}.json").exists():
                    continue
                r = run_cell(name, score, seed)
                print(
                    f"{r['cell']}: step {r['best_step']}, test relMSE {r['test_rel_mse']:.3g}, "
                    f"traj_rel_l2 {r['test_traj_rel_l2']:.3g}, {r['seconds']:.0f} s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
