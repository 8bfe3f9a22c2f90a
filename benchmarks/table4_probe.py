"""Table 4 probe: one cell of the reproduction harness with the proximal weight and/or the
number of outer steps changed, to find where the gap to the paper's LV/GO/SM errors comes from.

    python benchmarks/table4_probe.py lv coda single --beta 1 [--steps 600] [--seed 0]

Writes ``docs/results/table4-probe/<cell>-beta<B>-steps<N>.json`` (test and adaptation MSE,
selected step, seconds) and prints it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import mixerdsr as mx
from mixerdsr import _reproduce as R
from mixerdsr._config import load_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", choices=["lv", "go", "sm"])
    p.add_argument("backbone", choices=["ncf", "coda", "geps", "cavia"])
    p.add_argument("variant", choices=["single", "mixer-M", "mixer-auto"])
    p.add_argument("--beta", type=float, required=True, help="train.proximal_beta")
    p.add_argument("--steps", type=int, default=None, help="train.outer_steps (default: the cpu budget's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="docs/results/table4-probe")
    a = p.parse_args()
    cell = R.Cell("table4", a.data, a.backbone, a.variant, a.seed)
    over = R.settings(cell, "cpu") | {"train.proximal_beta": a.beta}
    if a.steps:
        over["train.outer_steps"] = a.steps
    cfg = load_config(R.preset_of(cell.data), None, over)
    name = f"{cell.name}-beta{a.beta:g}-steps{cfg.train.outer_steps}"
    t0 = time.perf_counter()
    res = mx.run(cfg, Path("runs/table4-probe") / name, progress=False, plots=False, log=lambda s: None)
    m = res.metrics
    rec = {
        "cell": cell.name,
        "proximal_beta": a.beta,
        "outer_steps": cfg.train.outer_steps,
        "test_mse": m["test"]["mse"],
        "adapt_mse": m["adapt_test"]["mse"],
        "best_step": m.get("best_step"),
        "settings": over,
        "seconds": time.perf_counter() - t0,
        "date": time.strftime("%Y-%m-%d"),
        "commit": R._commit(),
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(rec, indent=1))
    print(json.dumps(rec))


if __name__ == "__main__":
    main()
