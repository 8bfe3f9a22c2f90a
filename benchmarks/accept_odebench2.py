"""Acceptance grid of the paper's Figure 2: ODEBench-2, backbones x gates x seeds.

For every backbone (GEPS, CoDA, NCF) runs MixER-1, MixER-2 with the least-squares gate and
MixER-2 with the gradient gate (the naive MoE baseline) over several seeds with the
``odebench-2`` preset, then prints mean +- std of test relMSE, test MSE, adaptation relMSE and
routing purity, and the routes of the gradient gate. Each run writes a normal run directory
under ``--out`` (a finished run is reused, so an interrupted grid continues where it stopped).

    python benchmarks/accept_odebench2.py --out runs/accept-odebench2 [--backbones geps coda ncf]
        [--seeds 0 1 2] [--outer-steps N] [--variants MixER-2 ...] [--set gate_reassign=0.5 ...]
"""

from __future__ import annotations

import argparse
import json
import time
import tomllib
from pathlib import Path

import numpy as np

import mixerdsr as mx

VARIANTS = {  # name -> config overrides
    "MixER-1": {"model.num_experts": 1, "gate.mode": "lstsq"},
    "MixER-2": {"model.num_experts": 2, "gate.mode": "lstsq"},
    "MixER-2 gradient": {"model.num_experts": 2, "gate.mode": "gradient"},
}


def _ms(values: list[float]) -> str:
    v = np.asarray(values, float)
    return f"{v.mean():.4g} ± {v.std():.2g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/accept-odebench2")
    ap.add_argument("--backbones", nargs="+", default=["geps", "coda", "ncf"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--outer-steps", type=int, default=None, help="override the preset's outer steps")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="extra config overrides (TOML values), e.g. gate.reassign=0.5")
    args = ap.parse_args()
    extra = {k: tomllib.loads(f"v = {v}")["v"] for k, v in (kv.split("=", 1) for kv in args.set)}
    root = Path(args.out)
    rows = []
    for bb in args.backbones:
        for vname in args.variants:
            over = VARIANTS[vname]
            res = []
            for seed in args.seeds:
                d = root / f"{bb}-{vname.replace(' ', '-')}-s{seed}"
                if (d / "metrics.json").exists():
                    m = json.loads((d / "metrics.json").read_text())
                else:
                    cfg = mx.load_config("odebench-2", overrides={
                        "model.backbone": bb, "train.seed": seed, "train.outer_steps": args.outer_steps,
                        **over, **extra})
                    t0 = time.perf_counter()
                    m = mx.run(cfg, d, progress=False, log=lambda s: None, resume=(d / "checkpoint.npz").exists()).metrics
                    print(f"  {bb:5s} {vname:17s} seed {seed}: test relMSE {m['test']['rel_mse']:.4g} "
                          f"relL2 {m['test']['traj_rel_l2']:.3g} MSE {m['test']['mse']:.3g} purity {m['routing']['purity']} routes {m['routing']['counts']} "
                          f"({time.perf_counter() - t0:.0f} s)", flush=True)
                res.append(m)
            rows.append((bb, vname, res))
    print(f"\nODEBench-2, {len(args.seeds)} seeds (mean ± std); relMSE per Eq. 9, relL2 = trajectory relative L2, "
          f"purity vs the 2 families")
    print(f"{'backbone':8s} {'model':17s} {'test relMSE':>18s} {'test relL2':>18s} {'test MSE':>18s} "
          f"{'adapt relMSE':>18s} {'adapt relL2':>18s} {'purity':>12s} {'s/outer step':>12s}  routes (counts per seed)")
    for bb, vname, res in rows:
        print(f"{bb:8s} {vname:17s} {_ms([m['test']['rel_mse'] for m in res]):>18s} "
              f"{_ms([m['test']['traj_rel_l2'] for m in res]):>18s} {_ms([m['test']['mse'] for m in res]):>18s} "
              f"{_ms([m['adapt_test']['rel_mse'] for m in res]):>18s} "
              f"{_ms([m['adapt_test']['traj_rel_l2'] for m in res]):>18s} "
              f"{_ms([m['routing']['purity'] for m in res]):>12s} "
              f"{np.mean([m['timing']['seconds_per_outer_step'] for m in res]):12.3f}  "
              f"{[m['routing']['counts'] for m in res]}")


if __name__ == "__main__":
    main()
