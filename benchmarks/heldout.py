"""Routing recipes on data no preset was tuned for: the held-out ODEBench sets (issue 34).

Cells: a held-out family set (``benchmarks/heldout/*.toml``) x a recipe x a seed, each run as a
user would, ``mixerdsr run --data SET.npz --experts M --seed S`` plus the recipe's ``--set``
settings, in ``runs/heldout/<cell>/`` (an interrupted cell resumes there); its figures go to one
JSON per cell in ``docs/results/heldout/``. Cells run seed by seed, so the first seed of every
recipe is done first. ``--report`` prints the table from the JSONs alone. A set that names a
built-in dataset (``odebench-2``, ...) runs as ``mixerdsr run --preset NAME --seed S`` plus the
recipe's settings (the preset's number of experts unless the recipe names one), so a candidate
default is measured on the built-in sets with the same code.

Recipes (until 2026-12-07 a user's file built on the ``odebench-2`` preset; the recipes measured
then carry that base, ``OLD_BASE``, explicitly on the held-out sets, so that they run as they
ran; the ``-t1`` recipes and ``mixer-1-t1`` set everything they depend on):

- ``mixer-1``: one expert (the baseline MixER must beat);
- ``paper``: Algorithm 1 as published (centroids start uniform in +-1e-3, an empty cluster
  skips the update; routes from the first step, greedy pairing; with ``OLD_BASE``'s override
  ``gate.reassign = 0.5``, as it ran);
- ``alg1``: Algorithm 1's routing in full on any set, the per-environment override off too (on a
  built-in set: its preset with the paper's routing; the data facts and batch stay the preset's);
- ``defaults``: what a user's file got before 2026-12-07 (``OLD_BASE``: the ``odebench-2``
  preset's settings); on a built-in set, its preset;
- ``warm-r0-shared-t1``: what a user's file got from 2026-12-07 (the global defaults: the warm
  start with copies of the shared expert, spectral seeding, overlap pairing, every time point),
  on batches of E / M (5 on both held-out sets);
- ``warm-r0-shared-t1-b16``: the same on batches of 16, what a user's file gets since the
  default batch became at least 16 environments (2026-12-07, later);
- ``warm-r0-shared-t1-b16-fresh`` and, on a built-in set, ``warm-r0-shared-fresh``: the same with
  the weights' optimiser started afresh at the seeding (``gate.warm_start.fresh_moments``);
- ``warm-r0-init-fresh`` and, on the held-out sets, ``warm-r0-init-t1-b16-fresh``: ``warm-r0`` with
  the experts back to their initial weights at the seeding and the optimiser started afresh;
- ``warm``: a warm start (the automatic warm-up) seeded by spectral grouping, overlap pairing;
- ``warm-r0``: ``warm`` without the per-environment override (``gate.reassign = 0``);
- ``warm-r0-shared``: ``warm-r0`` with the experts seeded as copies of the warm-up's expert;
- ``warm-r0-shared-w5``: ``warm-r0-shared`` with the loss weighting ``train.env_weight_power = 0.5``;
- ``auto``: ``--experts auto:10`` (the count chosen after the warm-up);
- ``auto-warm``: ``auto`` with the ``warm`` recipe's grouping and pairing.

    python benchmarks/heldout.py [--sets heldout-5 heldout-8] [--recipes ...] [--seeds 0 1 2] [--force]
    python benchmarks/heldout.py --report [--sets ...] [--recipes ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = Path(__file__).resolve().parent / "heldout"
RESULTS = ROOT / "docs" / "results" / "heldout"
RUNS = ROOT / "runs" / "heldout"

WARM = ["gate.router=warm_start", "gate.pairing=overlap", "gate.warm_start.method=spectral"]
#: what a user's file got before 2026-12-07: the odebench-2 preset's settings beyond the defaults
#: then (time stride 5, the per-env override, experts restarted at a seeding, routes from the
#: first step with greedy pairing and K-means seeding)
#: (the router only without --experts auto, which turns the warm start on)
OLD_BASE = [
    "data.time_stride=5",
    "gate.reassign=0.5",
    "gate.warm_start.seed_from=init",
    "gate.pairing=greedy",
    "gate.warm_start.method=kmeans",
]
SHARED = [*WARM, "gate.reassign=0", "gate.warm_start.seed_from=shared"]  # warm-r0-shared's settings
#: Algorithm 1's routing in full, on any set (a built-in preset's per-env override off too)
ALG1 = [
    "gate.router=from_start",
    "gate.pairing=greedy",
    "gate.centroid_init=uniform",
    "gate.empty_cluster=skip",
    "gate.reassign=0",
]

RECIPES: dict[str, tuple[str | None, list[str]]] = {  # name -> (--experts, --set items)
    "mixer-1": ("1", []),
    "paper": (None, ["gate.centroid_init=uniform", "gate.empty_cluster=skip"]),
    "alg1": (None, ALG1),
    "defaults": (None, []),
    "warm": (None, WARM),
    "warm-r0": (None, [*WARM, "gate.reassign=0"]),  # without the per-env override (routes flap with it)
    # warm-r0 with the experts seeded as copies of the warm-up's shared expert instead of restarting
    # from their initial weights (the odebench-2 preset's "init", which a user's file inherits)
    "warm-r0-shared": (None, SHARED),
    # warm-r0-shared with each env's loss scaled by its states' mean squared norm^-0.5 (the
    # odebench-10b preset's loss weighting): a small-scale family counts as in Eq. 9's relMSE
    "warm-r0-shared-w5": (None, [*SHARED, "train.env_weight_power=0.5"]),
    # warm-r0-shared on full batches (every env in every step, as MixER-1 trains on sets this size)
    "warm-r0-shared-full": (None, [*SHARED, "train.batch_envs=1000"]),
    # the same on every time point of the data (a user's file no longer inherits ODEBench-2's stride 5),
    # on batches of E / M = 5 (the default batch until it became at least 16 envs on 2026-12-07)
    "warm-r0-shared-t1": (None, [*SHARED, "data.time_stride=1", "train.batch_envs=5"]),
    "mixer-1-t1": ("1", ["data.time_stride=1"]),
    # twice the outer steps: a MixER-M step costs a fraction of a MixER-1 step on these sets
    "warm-r0-shared-t1-o600": (None, [*SHARED, "data.time_stride=1", "train.outer_steps=600", "train.batch_envs=5"]),
    # at least 16 envs per step (E / M gives each of 8 experts about one): the default since 2026-12-07
    "warm-r0-shared-t1-b16": (None, [*SHARED, "data.time_stride=1", "train.batch_envs=16"]),
    # the same with the weights' optimiser started afresh at the seeding (gate.warm_start.fresh_moments)
    "warm-r0-shared-t1-b16-fresh": (
        None,
        [*SHARED, "data.time_stride=1", "train.batch_envs=16", "gate.warm_start.fresh_moments=true"],
    ),
    # the experts back to their initial weights at the seeding, with the fresh optimiser
    "warm-r0-init-t1-b16-fresh": (
        None,
        [
            *WARM,
            "gate.reassign=0",
            "gate.warm_start.seed_from=init",
            "gate.warm_start.fresh_moments=true",
            "data.time_stride=1",
            "train.batch_envs=16",
        ],
    ),
    # warm-r0-shared with the fresh optimiser, on a built-in set
    "warm-r0-shared-fresh": (None, [*SHARED, "gate.warm_start.fresh_moments=true"]),
    # the fresh optimiser after a warm-up of 30 outer steps instead of a fifth of the run (60 on
    # ODEBench-2): more of the run for the routed experts
    "warm-r0-shared-fresh-wu30": (
        None,
        [*SHARED, "gate.warm_start.fresh_moments=true", "gate.warm_start.warmup=30"],
    ),
    # the fresh optimiser with the loss weighting p = 0.5 (warm-r0-shared-w5 had copied moments)
    "warm-r0-shared-fresh-w5": (
        None,
        [*SHARED, "gate.warm_start.fresh_moments=true", "train.env_weight_power=0.5"],
    ),
    # the experts back to their initial weights at the seeding (the routes and contexts the warm-up
    # found kept), with the fresh optimiser that such a restart needs
    "warm-r0-init-fresh": (
        None,
        [*WARM, "gate.reassign=0", "gate.warm_start.seed_from=init", "gate.warm_start.fresh_moments=true"],
    ),
    "auto": ("auto:10", []),  # the eigengap count (the default of --experts auto since 2026-12-06)
    "auto-silhouette": ("auto:10", ["gate.warm_start.grouping=silhouette"]),  # the count before
    "auto-warm": ("auto:10", WARM[1:]),  # the count chosen on the spectral grouping, overlap pairing
    "auto-warm-silhouette": ("auto:10", [*WARM[1:], "gate.warm_start.grouping=silhouette"]),
    # the eigengap count with warm-r0-shared-t1's settings: `--experts auto` on a user's file (its
    # JSONs were made on batches of E / K; it now runs with the default batch, at least 16)
    "auto-t1": ("auto:10", [*SHARED[1:], "data.time_stride=1"]),
    # `--experts auto` as a user's file gets it since the third sitting of 2026-12-07: at least 16
    # envs per step and the fresh optimiser at the seeding
    "auto-t1-b16-fresh": (
        "auto:10",
        [*SHARED[1:], "data.time_stride=1", "train.batch_envs=16", "gate.warm_start.fresh_moments=true"],
    ),
}
#: how every warm start ran until 2026-12-07 (the experts kept the shared expert's optimiser
#: moments at the seeding): pinned on every recipe measured then, so that each reruns as it ran
COPIED_MOMENTS = "gate.warm_start.fresh_moments=false"
RECIPES = {
    name: (m, items if any(i.startswith("gate.warm_start.fresh_moments") for i in items) else [*items, COPIED_MOMENTS])
    for name, (m, items) in RECIPES.items()
}

#: recipes measured since a user's file gets the global defaults (they set all they depend on)
SINCE_NEW_DEFAULTS = {
    "warm-r0-shared-t1",
    "mixer-1-t1",
    "warm-r0-shared-t1-o600",
    "warm-r0-shared-t1-b16",
    "warm-r0-shared-t1-b16-fresh",
    "warm-r0-init-t1-b16-fresh",
    "auto-t1",
    "auto-t1-b16-fresh",
}


def builtin(name: str) -> bool:
    """A built-in dataset (run through its preset) rather than a held-out family file."""
    return not (FAMILIES / f"{name}.toml").exists()


def families(name: str) -> int:
    import tomllib

    return len(tomllib.loads((FAMILIES / f"{name}.toml").read_text())["family"])


def data_file(name: str) -> Path:
    out = RUNS / f"{name}.npz"
    if not out.exists():
        RUNS.mkdir(parents=True, exist_ok=True)
        what = [name] if builtin(name) else ["--families", str(FAMILIES / f"{name}.toml")]
        cmd = ["mixerdsr", "data", "generate", *what, "--out", str(out)]
        subprocess.run([*cmd, "--quiet"], check=True)
    return out


def command(data: str, recipe: str, seed: int) -> list[str]:
    experts, sets = RECIPES[recipe]
    if builtin(data):  # the preset's data facts and number of experts, as `mixerdsr run --preset`
        cmd = ["mixerdsr", "run", "--preset", data] + (["--experts", experts] if experts else [])
    else:
        cmd = ["mixerdsr", "run", "--data", str(data_file(data)), "--experts", experts or str(families(data))]
        if recipe not in SINCE_NEW_DEFAULTS:  # as the recipe ran (later --set items win)
            auto = (experts or "").startswith("auto")
            sets = [*OLD_BASE, *([] if auto else ["gate.router=from_start"]), *sets]
    cmd += ["--seed", str(seed)]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def family_share(data: Path, metrics: dict) -> float | None:
    """Share of the new environments whose expert is the one holding most training
    environments of their family."""
    with np.load(data, allow_pickle=False) as z:
        fam_train, fam_new = z["train/family"], z["adapt_train/family"]
    r = metrics["routing"]
    if "adapt_experts" not in r:
        return None
    ex, new = np.asarray(r["experts"]), np.asarray(r["adapt_experts"])
    home = {f: np.bincount(ex[fam_train == f]).argmax() for f in np.unique(fam_train)}
    known = [i for i, f in enumerate(fam_new) if f in home]  # LV's new envs carry no family (-1)
    return float(np.mean([new[i] == home[fam_new[i]] for i in known])) if known else None


def last_weight_loss(run: Path) -> float | None:
    """The last outer step's weight loss: a run whose losses blew up and stayed up ends far above
    its data's scale (runs before the guard: up to 1e35)."""
    lines = [line for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]
    return json.loads(lines[-1])["weight_loss"] if lines else None


def record(cell: str, cmd: list[str], run: Path, data: Path, seconds: float) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    te, ad, r = m["test"], m.get("adapt_test", {}), m["routing"]
    return {
        "cell": cell,
        "command": " ".join(Path(c).name if c.endswith(".npz") else c for c in cmd),
        "purity": r.get("purity"),
        "experts_used": int(np.count_nonzero(r.get("counts", []))),
        "chosen_experts": r.get("chosen_experts"),
        "test_mse": te["mse"],
        "test_rel_mse": te["rel_mse"],
        "test_traj_rel_l2": te.get("traj_rel_l2"),
        "adapt_mse": ad.get("mse"),
        "adapt_rel_mse": ad.get("rel_mse"),
        "adapt_traj_rel_l2": ad.get("traj_rel_l2"),
        "adapt_n_diverged": ad.get("n_diverged", 0),
        "adapt_family_share": family_share(data, m),
        "warnings": len(m.get("warnings", [])),
        "stop_reason": m.get("training", {}).get("stop_reason"),
        "guard_returns": m.get("training", {}).get("steps_taken_back", 0),
        "final_weight_loss": last_weight_loss(run),
        "seconds": seconds,
        "date": time.strftime("%Y-%m-%d"),
    }


def run_cells(sets: list[str], recipes: list[str], seeds: list[int], force: bool = False) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        for data in sets:
            for recipe in recipes:
                cell = f"{data}-{recipe}-s{seed}"
                run = RUNS / cell
                if (RESULTS / f"{cell}.json").exists():
                    if not force:
                        continue
                    if run.exists():  # the earlier run is set aside, never deleted
                        old = RUNS / "earlier" / f"{cell}-{time.strftime('%Y%m%d-%H%M%S')}"
                        old.parent.mkdir(parents=True, exist_ok=True)
                        run.rename(old)
                cmd = command(data, recipe, seed) + ["--out", str(run), "--quiet"]
                if (run / "checkpoint.npz").exists():
                    cmd.append("--resume")
                print(f"{cell}: {' '.join(cmd)}", flush=True)
                t0 = time.perf_counter()
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"{cell}: failed\n{done.stderr[-2000:]}", flush=True)
                    continue
                rec = record(cell, cmd, run, data_file(data), time.perf_counter() - t0)
                (RESULTS / f"{cell}.json").write_text(json.dumps(rec, indent=1))
                print(f"{cell}: purity {rec['purity']} test traj_rel_l2 {rec['test_traj_rel_l2']:.3f}", flush=True)


def report(sets: list[str] | None = None, recipes: list[str] | None = None) -> None:
    """The table of every cell's JSON (mean ± std over seeds), or of ``sets`` x ``recipes``."""
    rows: dict[tuple[str, str], list[dict]] = {}
    for p in sorted(RESULTS.glob("*.json")):
        rec = json.loads(p.read_text())
        stem = rec["cell"].rsplit("-s", 1)[0]  # SET-RECIPE (both may hold hyphens)
        recipe = max((r for r in RECIPES if stem.endswith(f"-{r}")), key=len)
        data = stem[: -len(recipe) - 1]
        if (sets is None or data in sets) and (recipes is None or recipe in recipes):
            rows.setdefault((data, recipe), []).append(rec)
    keys = ["purity", "test_mse", "test_rel_mse", "test_traj_rel_l2", "adapt_rel_mse", "adapt_family_share"]
    print("| set | recipe | seeds | " + " | ".join(keys) + " | experts used |")
    print("|---" * (len(keys) + 4) + "|")
    order = list(RECIPES)
    for (data, recipe), recs in sorted(rows.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1]))):

        def cell(k: str) -> str:
            v = [r[k] for r in recs if r.get(k) is not None]
            return "-" if not v else f"{np.mean(v):.3g} ± {np.std(v):.2g}"

        used = ",".join(str(r["experts_used"]) for r in recs)
        print(f"| {data} | {recipe} | {len(recs)} | " + " | ".join(cell(k) for k in keys) + f" | {used} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", nargs="+", default=None, help="default: heldout-5 heldout-8 (--report: every set)")
    ap.add_argument("--recipes", nargs="+", default=None, choices=list(RECIPES), help="default: every recipe")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--force", action="store_true", help="run cells whose JSON exists again (the old run set aside)")
    args = ap.parse_args()
    if args.report:
        report(args.sets, args.recipes)
    else:
        run_cells(args.sets or ["heldout-5", "heldout-8"], args.recipes or list(RECIPES), args.seeds, args.force)


if __name__ == "__main__":
    sys.exit(main())
