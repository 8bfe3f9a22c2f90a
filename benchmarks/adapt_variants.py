"""Adaptation's starts and choice rule, measured on finished runs (weights and gate frozen).

For every run directory given, refits its new environments (``adapt_train`` of ``RUN/data.npz``
or of the file the run trained on, forecast on ``adapt_test``) under each named variant of the
``[adapt]`` settings, everything else as the run's configuration, and prints per cell the share
of new environments on their
family's expert (the expert most of the family's training environments use), the forecast MSE,
traj_rel_l2 and the median new environment's relMSE. One JSON per (run, variant) under
``docs/results/adapt-variants/`` (an existing one is reused, so an interrupted sweep continues).

Variants:

- ``base``: the defaults (the zero start and each expert's mean training context; the refined
  fit with the lowest loss is kept);
- ``starts3``: ``adapt.starts_per_expert = 3`` (each expert's mean and two K-means centres of
  its training contexts);
- ``prior1e-3``, ``prior1e-2``: ``adapt.choice_prior`` (the choice keeps the lowest relative
  loss + lambda z^2, z the fit's standardised distance from its expert's training contexts);
- ``starts3-prior1e-2``: both.

    python benchmarks/adapt_variants.py RUN [RUN ...] [--variants base starts3 ...]
    python benchmarks/adapt_variants.py --report
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adapt_lr import _family_share, per_env, refit, save  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "adapt-variants"
VARIANTS: dict[str, dict] = {
    "base": {},
    "starts3": {"starts_per_expert": 3},
    "prior1e-3": {"choice_prior": 1e-3},
    "prior1e-2": {"choice_prior": 1e-2},
    "starts3-prior1e-2": {"starts_per_expert": 3, "choice_prior": 1e-2},
}


def one(run: Path, variant: str, out: Path) -> dict:
    """The adaptation of ``run``'s new environments under ``variant`` (cached)."""
    path = out / f"{run.name}-{variant}.json"
    if path.exists():
        return json.loads(path.read_text())
    m, seconds = refit(run, VARIANTS[variant])
    f = m["forecast"]
    return save(path, {
        "run": str(run),
        "variant": variant,
        "adapt": m["adapt"],
        "seconds": seconds,
        "family_share": _family_share(m),
        "mse": f["mse"],
        "traj_rel_l2": f["traj_rel_l2"],
        "rel_mse": f["rel_mse"],
        "median_rel_mse": float(np.median(per_env(m, "forecast_rel_mse"))),
        "n_diverged": f["n_diverged"],
        "experts": per_env(m, "expert"),
        "families": [e.get("family", -1) for e in m["environments"]],
        "forecast_rel_mse": per_env(m, "forecast_rel_mse"),
        "warnings": len(m["warnings"]),
    })


def report(out: Path) -> None:
    """Per variant: mean over the runs measured of each score, and the runs."""
    recs = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    print("| variant | runs | on family's expert | adapt MSE | traj_rel_l2 | median relMSE | per run: share |")
    print("|---|---|---|---|---|---|---|")
    for v in VARIANTS:
        rs = [r for r in recs if r["variant"] == v]
        if not rs:
            continue

        def mean(k: str, rs: list[dict] = rs) -> float:
            return float(np.mean([r[k] for r in rs if r[k] is not None]))

        shares = ", ".join("-" if r["family_share"] is None else f"{r['family_share']:.2f}" for r in rs)
        print(
            f"| {v} | {len(rs)} | {mean('family_share'):.3f} | {mean('mse'):.3g} | {mean('traj_rel_l2'):.3g} | "
            f"{mean('median_rel_mse'):.3g} | {shares} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", type=Path, help="finished run directories")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--report", action="store_true", help="only print the table from the JSONs")
    a = ap.parse_args()
    if not a.report:
        for v in a.variants:  # variant by variant, so every run has the first ones early
            for run in a.runs:
                r = one(run, v, a.out)
                share = "-" if r["family_share"] is None else f"{r['family_share']:.2f}"
                print(
                    f"{run.name} {v}: share {share} MSE {r['mse']:.3g} traj {r['traj_rel_l2']:.3g} "
                    f"({r['seconds']:.0f} s)",
                    flush=True,
                )
    report(a.out)


if __name__ == "__main__":
    main()
