"""Adaptation's learning rate and steps, measured on finished runs (weights and gate frozen).

For every run directory given, refits its new environments (``RUN/data.npz``'s ``adapt_train``,
forecast on ``adapt_test``) with each ``(adapt.lr, adapt.steps)`` of the grid, everything else
as the run's configuration, and prints per cell the forecast MSE, traj_rel_l2 and Eq. 9's
relMSE, the share of new environments on their family's expert (where families are known), the
largest relative fitting loss and the warnings. One JSON per (run, lr, steps) under
``docs/results/adapt-lr/`` (an existing one is reused, so an interrupted sweep continues).

    python benchmarks/adapt_lr.py RUN [RUN ...] [--data FILE.npz] --lr 1e-2 3e-3 1e-3 --steps 500 2000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "adapt-lr"


def _family_share(m: dict) -> float | None:
    """Share of new environments whose expert is the one most of their family's training
    environments use (None when families are unknown)."""
    envs = [e for e in m["environments"] if e.get("family", -1) >= 0]
    if not envs:
        return None
    return float(np.mean([e["family_by_route"] == e["family"] for e in envs]))


def refit(run: Path, changes: dict, data: Path | None = None, steps: int | None = None) -> tuple[dict, float]:
    """Refit ``run``'s new environments with its ``[adapt]`` settings changed by ``changes``:
    ``(the adaptation's metrics, seconds)``. ``data``: default ``RUN/data.npz`` (a built-in
    dataset's run), else the file the run trained on (a user file's run)."""
    from mixerdsr._adapt_job import adapt_job
    from mixerdsr.data import load_dataset
    from mixerdsr.models import resolve_model

    tm = resolve_model(str(run))
    ad = dataclasses.replace(tm.config.adapt, **changes)
    tm = dataclasses.replace(tm, config=dataclasses.replace(tm.config, adapt=ad))
    if data is None:
        data = run / "data.npz" if (run / "data.npz").exists() else Path(tm.config.data.source)
    t0 = time.perf_counter()
    m = adapt_job(tm, load_dataset(data), None, source=str(data), steps=steps, log=lambda s: None, plots=False)
    return m, time.perf_counter() - t0


def per_env(m: dict, key: str) -> list:
    """``key`` of every new environment of an adaptation's metrics ``m``."""
    return [e[key] for e in m["environments"]]


def save(path: Path, rec: dict) -> dict:
    """Write ``rec`` with today's date to ``path`` (one JSON per cell); return it."""
    rec = rec | {"date": time.strftime("%Y-%m-%d")}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec, indent=1))
    return rec


def one(run: Path, lr: float, steps: int, out: Path, data: Path | None = None) -> dict:
    """The adaptation of ``run``'s new environments at this rate and step count (cached)."""
    path = out / f"{run.name}-lr{lr:g}-steps{steps}.json"
    if path.exists():
        return json.loads(path.read_text())
    m, seconds = refit(run, {"lr": lr}, data, steps)
    f = m["forecast"]
    return save(path, {
        "run": str(run), "lr": lr, "steps": steps, "seconds": seconds,
        "mse": f["mse"], "rel_mse": f["rel_mse"], "traj_rel_l2": f["traj_rel_l2"], "n_diverged": f["n_diverged"],
        "family_share": _family_share(m),
        "max_fit_rel_loss": max(per_env(m, "fit_rel_loss")),
        "fit_rel_loss": per_env(m, "fit_rel_loss"),
        "forecast_rel_mse": per_env(m, "forecast_rel_mse"),
        "warnings": len(m["warnings"]),
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="finished run directories")
    ap.add_argument("--data", type=Path, default=None, help="their data file (default: RUN/data.npz)")
    ap.add_argument("--lr", nargs="+", type=float, default=[1e-2, 3e-3, 1e-3])
    ap.add_argument("--steps", nargs="+", type=int, default=[500, 2000])
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    print("| run | lr | steps | adapt MSE | traj_rel_l2 | relMSE | on family's expert | max fit rel loss | warnings | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in a.runs:
        for steps in a.steps:
            for lr in a.lr:
                r = one(run, lr, steps, a.out, a.data)
                share = "-" if r["family_share"] is None else f"{r['family_share']:.2f}"
                print(f"| {run.name} | {lr:g} | {steps} | {r['mse']:.3g} | {r['traj_rel_l2']:.3g} | {r['rel_mse']:.3g} | "
                      f"{share} | {r['max_fit_rel_loss']:.3g} | {r['warnings']} | {r['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
