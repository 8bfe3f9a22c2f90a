"""Routing with many families: one training run per (dataset, backbone, variant, seed).

Each run writes ``docs/results/routing/<dataset>-<backbone>-<variant>-s<seed>.json`` (metrics,
settings, duration, machine) and is skipped when that file exists, so a table is built up over
several sittings. ``--report`` prints the Markdown table from the JSON files alone.

    python benchmarks/routing.py --data odebench-10a --backbone geps --variants alg1 warm m1 --seeds 0 1 2
    python benchmarks/routing.py --report
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "routing"

#: shared by every variant (the CPU budget: one gate update per inner loop, 250 outer steps)
#: and the paper's proximal weight (``--set train.proximal_beta=1.0 --tag=-beta1`` for the presets' 1)
#: and the experts' copied optimiser moments at a warm start's seeding (the default until 2026-12-07)
COMMON = {
    "gate.every": 12,
    "train.outer_steps": 250,
    "adapt.steps": 200,
    "train.proximal_beta": 10.0,
    "gate.warm_start.fresh_moments": False,
}
VARIANTS = {
    # the paper's Algorithm 1 (K-means from initialisation)
    "alg1": {"gate.router": "from_start", "gate.pairing": "greedy"},
    # routes seeded from a shared expert's contexts
    "warm": {"gate.router": "warm_start", "gate.warm_start.warmup": 100, "gate.pairing": "overlap"},
    # a single meta-learner (MixER-1), on batches of the same size as the others (E/M of the preset)
    "m1": {"model.num_experts": 1, "train.batch_envs": "E/M"},
    # the number of experts chosen after the warm-up (up to the preset's M): --experts auto
    "auto": {
        "gate.router": "warm_start",
        "gate.warm_start.grouping": "silhouette",
        "gate.warm_start.warmup": 100,
        "gate.pairing": "overlap",
    },
}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def run_one(data: str, backbone: str, variant: str, seed: int, force: bool, extra: dict, tag: str = "") -> None:
    from mixerdsr import load_config
    from mixerdsr import run
    from mixerdsr.data import resolve_dataset

    name = f"{data}-{backbone}-{variant}{tag}-s{seed}"
    path = RESULTS / f"{name}.json"
    if path.exists() and not force:
        print(f"{name}: exists, skipped")
        return
    over = {**COMMON, **VARIANTS[variant], **extra, "model.backbone": backbone, "train.seed": seed}
    if over.get("train.batch_envs") == "E/M":
        preset = load_config(data, None, {})
        n_envs = resolve_dataset(preset.data.source, None, progress=False)[0]["train"].n_envs
        over["train.batch_envs"] = max(1, n_envs // preset.model.num_experts)
    cfg = load_config(data, None, over)
    t0 = time.perf_counter()
    out_dir = Path("runs") / "routing" / name
    shutil.rmtree(out_dir, ignore_errors=True)  # an unfinished earlier attempt (its JSON was never written)
    res = run(cfg, out_dir, progress=False, log=lambda s: None)
    m = res.metrics
    hist = [json.loads(line) for line in (res.out_dir / "history.jsonl").read_text().splitlines()]
    r = m["routing"]
    out = {
        "name": name,
        "data": data,
        "backbone": backbone,
        "variant": variant + tag,
        "seed": seed,
        "settings": cfg.flat(),
        "test_rel_mse": m["test"]["rel_mse"],
        "test_mse": m["test"]["mse"],
        "adapt_rel_mse": m.get("adapt_test", {}).get("rel_mse"),
        "purity": r["purity"],
        "ari": r["ari"],
        "counts": r["counts"],
        "idle": int(sum(c == 0 for c, on in zip(r["counts"], r.get("active") or [True] * len(r["counts"])) if on)),
        "chosen_experts": r.get("chosen_experts", len(r["counts"])),
        "adapt_experts": r["adapt_experts"],
        "best_step": m.get("best_step"),
        "test_per_env_rel_mse": m["test"].get("per_env_rel_mse"),
        "purity_path": [h.get("purity") for h in hist],
        "changed_path": [h.get("changed") for h in hist],
        "seconds": time.perf_counter() - t0,
        "machine": f"{platform.node()} {platform.machine()} {platform.processor()}".strip(),
        "date": time.strftime("%Y-%m-%d"),
        "commit": _commit(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(
        f"{name}: test relMSE {out['test_rel_mse']:.3g}  adapt relMSE {out['adapt_rel_mse']:.3g}  "
        f"purity {out['purity']:.2f}  ARI {out['ari']:.2f}  idle {out['idle']}  counts {out['counts']}  "
        f"{out['seconds']:.0f} s",
        flush=True,
    )


def _geo(per_env) -> float | None:
    """Geometric mean of per-env relMSE (robust to the few envs whose forecasts run off)."""
    if not per_env:
        return None
    v = np.asarray(per_env, float)
    return float(np.exp(np.mean(np.log(np.maximum(v, 1e-12))))) if np.all(np.isfinite(v)) else float("inf")


def report() -> None:
    rows: dict[tuple, list] = {}
    for p in sorted(RESULTS.glob("*.json")):
        d = json.loads(p.read_text())
        rows.setdefault((d["data"], d["backbone"], d["variant"]), []).append(d)
    print(
        "| data | backbone | variant | seeds | test relMSE | test MSE | test geo-mean relMSE | adapt relMSE | "
        "purity | ARI | idle | M | selected step |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")

    def ms(v):
        v = np.asarray([x for x in v if x is not None], float)
        return f"{np.mean(v):.3g} ± {np.std(v):.2g}" if len(v) > 1 else (f"{v[0]:.3g}" if len(v) else "-")

    for (data, bb, var), ds in sorted(rows.items()):
        seeds = ",".join(str(d["seed"]) for d in ds)
        print(
            f"| {data} | {bb} | {var} | {seeds} | {ms([d['test_rel_mse'] for d in ds])} | "
            f"{ms([d['test_mse'] for d in ds])} | {ms([_geo(d.get('test_per_env_rel_mse')) for d in ds])} | "
            f"{ms([d['adapt_rel_mse'] for d in ds])} | "
            f"{ms([d['purity'] for d in ds])} | {ms([d['ari'] for d in ds])} | {ms([d['idle'] for d in ds])} | "
            f"{','.join(str(d.get('chosen_experts', len(d['counts']))) for d in ds)} | "
            f"{','.join(str(d.get('best_step')) for d in ds)} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", default=["odebench-10a"])
    ap.add_argument("--backbone", nargs="+", default=["geps"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--set", nargs="*", default=[], help="extra KEY=VALUE settings (numbers parsed)")
    ap.add_argument("--tag", default="", help="suffix of the variant's name for runs with --set")
    ap.add_argument("--force", action="store_true", help="run cells whose JSON exists again")
    ap.add_argument("--report", action="store_true", help="print the table from the JSON files and stop")
    a = ap.parse_args()
    if a.report:
        report()
        return
    extra = {}
    for item in a.set:
        k, _, v = item.partition("=")
        extra[k] = json.loads(v) if v[:1].isdigit() or v[:1] in "-[{" or v in ("true", "false") else v
    for data in a.data:
        for bb in a.backbone:
            for seed in a.seeds:
                for var in a.variants:
                    run_one(data, bb, var, seed, a.force, extra, a.tag)


if __name__ == "__main__":
    main()
