"""Reconstruction of the Chaos-3 families: the ``chaos`` preset with one named change at a time.

Each run is ``mixerdsr run --preset chaos --experts M --seed S`` plus the change's ``--set``
items, in ``runs/chaos-probe/<run>/`` (an interrupted run resumes there), and writes one JSON
per run to ``docs/results/chaos/``: the long-term statistics of the test split's free runs
(D_stsp, D_H, valid prediction time, sMAPE, means over the environments whose free runs stay
finite and bounded), how many environments diverged, purity, seconds. ``--report`` prints the
table.

    python benchmarks/chaos_probe.py --change base h64 tf08 --experts 3 --seeds 0
    python benchmarks/chaos_probe.py --report
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results" / "chaos"
RUNS = ROOT / "runs" / "chaos-probe"
#: name -> (what it changes, --set items)
CHANGES: dict[str, tuple[str, list[str]]] = {
    "base": ("the chaos preset as it is (hidden 16, teacher forcing alpha 0.5)", []),
    "h64": ("hidden width 64 (model.shplrnn.hidden)", ["model.shplrnn.hidden=64"]),
    "tf08": ("teacher forcing alpha 0.8: 20 % of each state from the data", ["train.teacher_forcing=0.8"]),
    "tf09": ("teacher forcing alpha 0.9: 10 % of each state from the data", ["train.teacher_forcing=0.9"]),
    "seltraj": ("model selection on the trajectory error (the default)", ["train.select_on=traj_rel_l2"]),
    "seldstsp": ("model selection on the state-space divergence D_stsp", ["train.select_on=d_stsp"]),
    # the batch: E / M = 8 environments per step (how the runs above 2026-12-07's batch change ran)
    # against the default since then, at least 16 (written out, so the run keeps its meaning)
    "b8": ("batches of E / M = 8 environments (the default batch until 2026-12-07)", ["train.batch_envs=8"]),
    "b16": ("batches of 16 environments (the default batch since 2026-12-07)", ["train.batch_envs=16"]),
    # the global defaults' routing in place of the preset's (from the start, greedy, override 0.5)
    "defroute": (
        "the default routing (warm start, overlap pairing, no per-env override)",
        # with the experts' copied optimiser moments, as it ran before fresh_moments became the default
        ["gate.router=warm_start", "gate.pairing=overlap", "gate.reassign=0", "gate.warm_start.fresh_moments=false"],
    ),
    "fresh": (
        "the weights' optimiser started afresh at the warm start's seeding",
        ["gate.warm_start.fresh_moments=true"],
    ),
}


def _items(change: str) -> list[str]:
    return [item for part in change.split("+") for item in CHANGES[part][1]]


def run_one(change: str, experts: int, seed: int) -> dict:
    name = f"m{experts}-{change}-s{seed}"
    out = RUNS / name
    cmd = ["mixerdsr", "run", "--preset", "chaos", "--experts", str(experts), "--seed", str(seed), "--out", str(out)]
    cmd += [a for item in _items(change) for a in ("--set", item)]
    if (out / "checkpoint.npz").exists():
        cmd.append("--resume")
    t0 = time.perf_counter()
    subprocess.run(cmd + ["--quiet"], check=True, capture_output=True, text=True)
    m = json.loads((out / "metrics.json").read_text())
    te = m["test"]
    rec = {
        "run": name,
        "change": change,
        "description": " + ".join(CHANGES[p][0] for p in change.split("+")),
        "experts": experts,
        "seed": seed,
        "command": " ".join(cmd),
        "seconds": time.perf_counter() - t0,
        "n_envs": len(te["per_env_rel_mse"]),
        **{k: te.get(k) for k in ("d_stsp", "d_h", "vpt", "smape", "n_diverged", "mse", "traj_rel_l2")},
        "teacher_forced_mse": te.get("teacher_forced_mse"),
        "adapt": {k: m.get("adapt_test", {}).get(k) for k in ("d_stsp", "d_h", "vpt", "n_diverged", "mse")},
        "purity": (m.get("routing") or {}).get("purity"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(rec, indent=1))
    return rec


def report() -> str:
    rows: dict[tuple[int, str], list[dict]] = {}
    for f in sorted(RESULTS.glob("*.json")):
        r = json.loads(f.read_text())
        rows.setdefault((r["experts"], r["change"]), []).append(r)
    lines = [
        "| M | change | seeds | diverged envs | D_stsp | D_H | VPT | sMAPE | purity | new envs: diverged "
        "| D_stsp | D_H |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def ms(rs: list[dict], k: str, fmt: str = ".3g") -> str:
        v = np.array([np.nan if r.get(k) is None else r[k] for r in rs], float)
        return f"{np.nanmean(v):{fmt}}" + (f" ± {np.nanstd(v):.2g}" if len(v) > 1 else "")

    for (m, change), rs in sorted(rows.items()):
        rs.sort(key=lambda r: r["seed"])
        div = ", ".join(f"{r['n_diverged']}/{r['n_envs']}" for r in rs)
        pur = ", ".join("-" if r["purity"] is None else f"{r['purity']:.2f}" for r in rs)
        lines.append(
            f"| {m} | `{change}` | {','.join(str(r['seed']) for r in rs)} | {div} | {ms(rs, 'd_stsp')} | "
            f"{ms(rs, 'd_h')} | {ms(rs, 'vpt')} | {ms(rs, 'smape', '.0f')} | {pur} | "
            f"{', '.join(str((r.get('adapt') or {}).get('n_diverged', '-')) for r in rs)} | "
            f"{ms([r.get('adapt') or {} for r in rs], 'd_stsp')} | {ms([r.get('adapt') or {} for r in rs], 'd_h')} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--change", nargs="+", default=["base"], help="names of CHANGES; a+b combines two")
    ap.add_argument("--experts", type=int, nargs="+", default=[3])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--report", action="store_true")
    a = ap.parse_args()
    if a.report:
        print(report())
        return
    for seed in a.seeds:
        for m in a.experts:
            for change in a.change:
                if (RESULTS / f"m{m}-{change}-s{seed}.json").exists():
                    continue
                r = run_one(change, m, seed)
                print(
                    f"{r['run']}: diverged {r['n_diverged']}/{r['n_envs']}, D_stsp {r['d_stsp']}, D_H {r['d_h']}, "
                    f"{r['seconds']:.0f} s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
