"""Acceptance runs of the paper's Section 4.3 (Figures 6-7): SCCTS and Epilepsy2 with hier-shPLRNN.

SCCTS: MixER-3 and MixER-1 (``--preset sccts``), each scored by K-means (6 clusters) on the
learned contexts against the six classes (ARI, Hungarian-matched accuracy), routing purity/ARI
against the three families {A,B}, {C,D}, {E,F} and against the drift directions {A,B}, {C,E}, {D,F},
and the raw-series K-means baseline.
Epilepsy2: MixER-2 and MixER-1 (``--preset epilepsy2``), logistic regression trained on the
training contexts and scored on contexts adapted to the 20 held-out series.
A finished run directory is reused, so an interrupted sweep continues where it stopped.

    python benchmarks/accept_series.py --out runs/accept-series [--seeds 0 1 2] [--only sccts|epilepsy2] [--results DIR]
    python benchmarks/accept_series.py --runs runs/sccts-sweep [--results DIR]   # a table of series runs
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import mixerdsr as mx

GRID = {"sccts": (3, 1), "epilepsy2": (2, 1)}
#: SCCTS classes A..F grouped by the direction of their drift: {normal, cyclic}, {increasing
#: trend, upward shift}, {decreasing trend, downward shift} (the paper's families pair C/D, E/F)
DIRECTION = ((0, 1), (2, 4), (3, 5))


def direction_purity(table: list[list[int]]) -> float:
    """Routing purity against :data:`DIRECTION` from an experts x classes count table."""
    t = np.asarray(table)
    grouped = np.stack([t[:, list(g)].sum(1) for g in DIRECTION], 1)
    return float(grouped.max(1).sum() / max(t.sum(), 1))


def write_run(results: str, name: str, metrics: dict, **extra) -> None:
    """One run's scores as ``results/name.json`` (downstream scores, routing, training, timing)."""
    out = Path(results) / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    keep = {k: metrics[k] for k in ("downstream", "routing", "train", "timing") if k in metrics}
    out.write_text(json.dumps({"run": name, **extra, **keep}, indent=1, default=str))


def _ms(values) -> str:
    v = np.asarray([np.nan if x is None else x for x in values], float)
    return f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f}"


def series_runs(root: Path, results: str | None) -> None:
    """One row per series run directory under ``root`` (``mixerdsr run --preset sccts|epilepsy2
    ...`` with its changes). SCCTS: context K-means against the classes, routing against the
    directions; Epilepsy2: logistic regression on the contexts against the raw series'."""
    runs = [
        (d, json.loads((d / "metrics.json").read_text())) for d in sorted(p.parent for p in root.glob("*/metrics.json"))
    ]
    sccts = [(d, m) for d, m in runs if "context_kmeans_ari" in m["downstream"]]
    other = [(d, m) for d, m in runs if "context_kmeans_ari" not in m["downstream"]]
    if sccts:
        print("| run | context K-means ARI | accuracy | gt-init ARI | raw K-means ARI | routes vs directions | s |")
        print("|---|---|---|---|---|---|---|")
    for d, m in sccts:
        ds = m["downstream"]
        route = direction_purity(ds["routing_classes"]["table"])
        print(
            f"| {d.name} | {ds['context_kmeans_ari']:.3f} | {ds['context_kmeans_accuracy']:.3f} | "
            f"{ds['context_kmeans_gtinit_ari']:.3f} | {ds['raw_kmeans_ari']:.3f} | {route:.3f} | "
            f"{m['timing']['run_seconds']:.0f} |"
        )
    if other:
        print("| run | held-out accuracy (contexts) | train accuracy | raw-series held-out accuracy | routes | s |")
        print("|---|---|---|---|---|---|")
    for d, m in other:
        ds = m["downstream"]
        print(
            f"| {d.name} | {ds['logreg_accuracy']:.3f} | {ds['logreg_train_accuracy']:.3f} | "
            f"{ds['raw_logreg_accuracy']:.3f} | {m['routing']['counts']} | {m['timing']['run_seconds']:.0f} |"
        )
    if results:
        for d, m in runs:
            write_run(results, d.name, m, config=(d / "config.toml").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/accept-series")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--only", choices=sorted(GRID), default=None)
    ap.add_argument("--outer-steps", type=int, default=None)
    ap.add_argument("--results", default=None, help="also write one JSON per run here (downstream scores, timing)")
    ap.add_argument("--runs", default=None, help="only tabulate the series runs (SCCTS or Epilepsy2) under this folder")
    args = ap.parse_args()
    if args.runs:
        series_runs(Path(args.runs), args.results)
        return
    results: dict[tuple[str, int], list[dict]] = {}
    for preset, ms in GRID.items():
        if args.only and preset != args.only:
            continue
        for m_exp in ms:
            for seed in args.seeds:
                d = Path(args.out) / f"{preset}-M{m_exp}-s{seed}"
                if (d / "metrics.json").exists():
                    m = json.loads((d / "metrics.json").read_text())
                else:
                    cfg = mx.load_config(
                        preset,
                        overrides={
                            "model.num_experts": m_exp,
                            "train.seed": seed,
                            "train.outer_steps": args.outer_steps,
                        },
                    )
                    t0 = time.perf_counter()
                    m = mx.run(
                        cfg, d, progress=False, log=lambda s: None, resume=(d / "checkpoint.npz").exists()
                    ).metrics
                    ds = m["downstream"]
                    keys = (
                        "context_kmeans_ari",
                        "context_kmeans_accuracy",
                        "raw_kmeans_ari",
                        "logreg_accuracy",
                        "logreg_train_accuracy",
                    )
                    print(
                        f"  {preset} M{m_exp} seed {seed}: "
                        + "  ".join(f"{k} {ds[k]:.3f}" for k in keys if ds.get(k) is not None)
                        + f"  routes {m['routing']['counts']} ({time.perf_counter() - t0:.0f} s)",
                        flush=True,
                    )
                if args.results:
                    write_run(args.results, f"{preset}-M{m_exp}-s{seed}", m)
                results.setdefault((preset, m_exp), []).append(m)
    if any(p == "sccts" for p, _ in results):
        print(f"\nSCCTS ({len(args.seeds)} seeds, mean ± std): K-means (6) vs the 6 classes; routes vs the 3 families")
        print(
            f"{'model':9s} {'ctx ARI':>14s} {'ctx acc':>14s} {'ctx ARI gt-init':>15s} {'route fam purity':>17s} "
            f"{'route fam ARI':>14s} {'route dir purity':>17s} {'free-run MSE':>14s} {'TF MSE':>14s}  s/step"
        )
        raw = None
        for (p, m_exp), res in results.items():
            if p != "sccts":
                continue
            ds = [r["downstream"] for r in res]
            raw = ds
            print(
                f"MixER-{m_exp:<3d} {_ms([d['context_kmeans_ari'] for d in ds]):>14s} "
                f"{_ms([d['context_kmeans_accuracy'] for d in ds]):>14s} "
                f"{_ms([d['context_kmeans_gtinit_ari'] for d in ds]):>15s} "
                f"{_ms([d['routing_families']['purity'] for d in ds]):>17s} "
                f"{_ms([d['routing_families']['ari'] for d in ds]):>14s} "
                f"{_ms([direction_purity(d['routing_classes']['table']) for d in ds]):>17s} "
                f"{_ms([r['train']['mse'] for r in res]):>14s} "
                f"{_ms([r['train']['teacher_forced_mse'] for r in res]):>14s}"
                f"  {np.mean([r['timing']['seconds_per_outer_step'] for r in res]):.3f}"
            )
        print(
            f"{'raw K-means':11s} ARI {_ms([d['raw_kmeans_ari'] for d in raw])}  accuracy "
            f"{_ms([d['raw_kmeans_accuracy'] for d in raw])}  "
            f"(gt-init ARI {_ms([d['raw_kmeans_gtinit_ari'] for d in raw])})"
        )
        print("routing tables (experts x families), seed by seed:")
        for (p, m_exp), res in results.items():
            if p == "sccts":
                print(f"  MixER-{m_exp}: " + "  ".join(str(r["downstream"]["routing_families"]["table"]) for r in res))
    if any(p == "epilepsy2" for p, _ in results):
        print(
            f"\nEpilepsy2 ({len(args.seeds)} seeds, mean ± std): logistic regression on contexts, 60 train / "
            f"held-out series"
        )
        print(
            f"{'model':9s} {'held-out acc':>14s} {'train acc':>14s} {'raw held-out':>14s} {'free-run MSE':>14s}  s/step"
        )
        for (p, m_exp), res in results.items():
            if p != "epilepsy2":
                continue
            ds = [r["downstream"] for r in res]
            print(
                f"MixER-{m_exp:<3d} {_ms([d['logreg_accuracy'] for d in ds]):>14s} "
                f"{_ms([d['logreg_train_accuracy'] for d in ds]):>14s} "
                f"{_ms([d['raw_logreg_accuracy'] for d in ds]):>14s} "
                f"{_ms([r['train']['mse'] for r in res]):>14s}  "
                f"{np.mean([r['timing']['seconds_per_outer_step'] for r in res]):.3f}"
            )


if __name__ == "__main__":
    main()
