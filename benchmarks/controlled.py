"""Controlled runs: one harness cell with one named change of settings, one JSON per run.

    python benchmarks/controlled.py lv-coda-single --change beta0 --seed 0
    python benchmarks/controlled.py lv-coda-single --change force0 --budget converged --time-budget 20m
    python benchmarks/controlled.py --list

Each run trains the cell at the ``cpu`` budget (the harness's sizes and outer steps; or
``--budget converged``: the paper's sizes with the plateau schedule, JSONs in
``docs/results/controlled-converged/``) with the change's settings on top, and writes
``<out>/<cell>-<change>-s<seed>.json``:
the cell JSON of the reproduction harness (metrics, curve of training loss and validation MSE,
seconds) plus ``change`` and its ``description``. A run whose JSON exists is skipped, so a list
of runs can be restarted after an interruption. ``--report`` prints the table of all JSONs
(Markdown: mean and population std over seeds of test MSE, adapt MSE, seconds per outer step).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import mixerdsr as mx
from mixerdsr import reproduce as R
from mixerdsr.cli._common import _duration_arg
from mixerdsr.reproduce import _budgets

FULLSIZE = "<fullsize>"
#: name -> (what it changes, settings on top of the cell's cpu-budget settings)
CHANGES: dict[str, tuple[str, dict]] = {
    "baseline": ("the cell as the harness runs it", {}),
    "beta0": ("no proximal term (train.proximal_beta = 0)", {"train.proximal_beta": 0.0}),
    "noval": ("train on every trajectory, select on them (data.val_trajectories = 0)", {"data.val_trajectories": 0}),
    "nodecay": ("constant learning rate (train.lr_decay = 1)", {"train.lr_decay": 1.0}),
    "adam": ("Adam instead of AdaBelief (train.optimizer = adam)", {"train.optimizer": "adam"}),
    "clip1": ("weights' gradient clipped to norm 1 (train.clip_norm = 1)", {"train.clip_norm": 1.0}),
    "lr3e-3": ("weights' learning rate 3e-3", {"train.lr_weights": 3e-3}),
    "lr1e-2": ("weights' learning rate 1e-2", {"train.lr_weights": 1e-2}),
    "clip0.1": ("weights' gradient clipped to norm 0.1 (train.clip_norm = 0.1)", {"train.clip_norm": 0.1}),
    "beta1": ("proximal weight 1 (train.proximal_beta = 1)", {"train.proximal_beta": 1.0}),
    "beta10": ("proximal weight 10, the paper's (train.proximal_beta = 10)", {"train.proximal_beta": 10.0}),
    "old": (
        "the recipe before the clipping fix: AdaBelief 1e-3 unclipped, proximal weight 1",
        {"train.proximal_beta": 1.0, "train.clip_norm": 0.0, "train.lr_weights": 1e-3},
    ),
    "ctxlr1e-2": ("contexts' learning rate 1e-2", {"train.lr_contexts": 1e-2}),
    "force0": (
        "interval forcing from 0 to free running over the first half (train.forcing = 0)",
        {"train.forcing": 0.0, "train.forcing_steps": 0.5},
    ),
    "force05": (
        "interval forcing from 0.5 to free running over the first half (train.forcing = 0.5)",
        {"train.forcing": 0.5, "train.forcing_steps": 0.5},
    ),
    "force0q": (
        "interval forcing from 0 to free running over the first quarter (train.forcing = 0, forcing_steps = 0.25)",
        {"train.forcing": 0.0, "train.forcing_steps": 0.25},
    ),
    "force0-200": (
        "interval forcing from 0 to free running over the first 200 of 5000 outer steps (the converged budget)",
        {"train.forcing": 0.0, "train.forcing_steps": 0.04},
    ),
    "rk4-1": (
        "fixed-step RK4, one step per interval of the time grid (solver.method = rk4, substeps = 1)",
        {"solver.method": "rk4", "solver.substeps": 1},
    ),
    "depth4-224": (
        "the CoDA authors' LV network shape: 3 hidden layers of 224 (model.coda.depth = 4, width = 224; "
        "the same parameter count as the converged budget's 2 x 316)",
        {"model.coda.depth": 4, "model.coda.width": 224},
    ),
    "depth3": (
        "2 hidden layers (model.coda.depth = 3; the width matched to the cell's parameter count): the shape "
        "before the converged budget took the CoDA authors' on LV",
        {"model.coda.depth": 3},
    ),
    "batch9": (
        "every training env in every batch (train.batch_envs = 9: full batch for LV's 9 envs, as MixER-1 trains)",
        {"train.batch_envs": 9},
    ),
    "batch9-shape": (
        "full batches (train.batch_envs = 9) in the budget's network shape (converged: LV CoDA's 3 hidden layers)",
        {"train.batch_envs": 9},
    ),
    "selmse": (
        "model selection and the plateau rule on validation MSE (train.select_on = mse)",
        {"train.select_on": "mse"},
    ),
    "seltraj": (
        "model selection and the plateau rule on validation traj_rel_l2 (train.select_on = traj_rel_l2)",
        {"train.select_on": "traj_rel_l2"},
    ),
    "patience10": (
        "the plateau rule waits 10 validation checks instead of 5 before each rate drop (train.patience = 10)",
        {"train.patience": 10},
    ),
    "steps1500": (
        "1500 outer steps with the rate dropped at 1/3 and 2/3 (train.schedule = steps), "
        "the shipped odebench-10b model's schedule",
        {"train.schedule": "steps", "train.outer_steps": 1500},
    ),
    "ctxl1": (
        "an L1 prior on the contexts, 1e-3 * mean|c| per env, in training and adaptation, as the NCF authors "
        "train (train.context_penalty = adapt.context_penalty = 1e-3)",
        {"train.context_penalty": 1e-3, "adapt.context_penalty": 1e-3},
    ),
    "fullsize": ("the published parameter count (no cpu-budget scaling of the width)", {FULLSIZE: True}),
}


def _name(cell: str, change: str, seed: int) -> str:
    return f"{cell}-{change}-s{seed}"


def find_cell(cell_name: str, seed: int) -> R.Cell:
    """The harness cell ``<cell_name>-s<seed>`` of any table (Table 4 first)."""
    for table in ("table4", *R.TABLES):
        for cell in R.cells(table, [seed]):
            if cell.name == f"{cell_name}-s{seed}":
                return cell
    raise SystemExit(f"no harness cell is named {cell_name}-s{seed}")


def run_one(cell_name: str, change: str, seed: int, out: Path, budget: str = "cpu", time_budget: float = 0.0) -> dict:
    cell = find_cell(cell_name, seed)
    data, backbone = cell.data, cell.backbone
    extra = {}
    for part in change.split("+"):
        extra |= CHANGES[part][1]
    over = R.settings(cell, budget) | extra | ({"train.time_budget": time_budget} if time_budget else {})
    if over.pop(FULLSIZE, False):
        over[f"model.{backbone}.width"] = R.matched_width(data, over, R.paper_active_parameters(cell))
    elif cell.table == "table4" and f"model.{backbone}.depth" in extra and f"model.{backbone}.width" not in extra:
        # a change of depth keeps the cell's parameter count: the width is matched again
        scale = _budgets._T4_CPU_SCALE[data] if budget == "cpu" else 1
        over[f"model.{backbone}.width"] = R.matched_width(data, over, R.paper_active_parameters(cell) // scale)
    cfg = mx.load_config(R.preset_of(cell.data), None, over)
    name = _name(cell_name, change, seed)
    rd = Path("runs/controlled" if budget == "cpu" else f"runs/controlled-{budget}") / name
    t0 = time.perf_counter()
    # an interrupted run resumes from its checkpoint (the settings are the same by construction)
    resume = (rd / "checkpoint.npz").exists()
    res = mx.run(cfg, rd, resume=resume, progress=False, plots=False, log=lambda s: None)
    rec = R.cell_record(cell, budget, over, res, time.perf_counter() - t0)
    rec["change"] = change
    rec["description"] = " + ".join(CHANGES[p][0] for p in change.split("+"))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(rec, indent=1))
    return rec


def report(out: Path, baselines: Path = Path("docs/results")) -> str:
    """The Markdown table of every JSON in ``out``: per cell and change, mean ± population std
    over seeds of the test and adaptation MSE, the test trajectory error, seconds per outer step.
    Where a cell has no ``baseline`` run of its own, the harness's JSON of the cell under
    ``baselines/<table>/`` stands for it (the same settings)."""
    rows: dict[tuple[str, str], list[dict]] = {}
    for f in sorted(out.glob("*.json")):
        r = json.loads(f.read_text())
        rows.setdefault((r["cell"].rsplit("-s", 1)[0], r["change"]), []).append(r)
    # a cell without a baseline run of its own: the harness's JSON of the same cell (same settings)
    for cell, seed in sorted({(c, r["seed"]) for (c, _), rs in rows.items() for r in rs}):
        if any(r["seed"] == seed for r in rows.get((cell, "baseline"), [])):
            continue
        found = find_cell(cell, seed)
        harness = baselines / found.table / f"{found.name}.json"
        if harness.exists():
            rows.setdefault((cell, "baseline"), []).append(json.loads(harness.read_text()))
    lines = [
        "| cell | change | seeds | test MSE | adapt MSE | test relMSE | test traj_rel_l2 | s / outer step |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def ms(rs: list[dict], key: str) -> str:
        v = np.array([np.nan if r["metrics"][key] is None else r["metrics"][key] for r in rs], float)
        return f"{v.mean():.3g}" + (f" ± {v.std():.2g}" if len(v) > 1 else "")

    for (cell, change), rs in sorted(rows.items()):
        seeds = ",".join(str(r["seed"]) for r in sorted(rs, key=lambda r: r["seed"]))
        sps = np.mean([r["metrics"]["seconds_per_outer_step"] for r in rs])
        lines.append(
            f"| {cell} | `{change}` | {seeds} | {ms(rs, 'test_mse')} | {ms(rs, 'adapt_mse')} | "
            f"{ms(rs, 'test_rel_mse')} | {ms(rs, 'test_traj_rel_l2')} | {sps:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cell", nargs="?", help="a Table 4 cell without its seed, e.g. lv-coda-single")
    p.add_argument("--change", nargs="+", default=["baseline"], help="names of CHANGES; a+b combines two")
    p.add_argument("--seed", type=int, nargs="+", default=[0])
    p.add_argument("--out", help="where the JSONs go (default docs/results/controlled[-BUDGET])")
    p.add_argument("--budget", default="cpu", choices=["cpu", "converged"])
    p.add_argument("--time-budget", default="0", help="training time per run (e.g. 20m), 0 = none")
    p.add_argument("--list", action="store_true", help="list the changes")
    p.add_argument("--report", action="store_true", help="print the table of the JSONs in --out")
    a = p.parse_args()
    out = Path(a.out or ("docs/results/controlled" if a.budget == "cpu" else f"docs/results/controlled-{a.budget}"))
    time_budget = 0.0 if a.time_budget == "0" else _duration_arg(a.time_budget)
    if a.list:
        for k, (d, s) in CHANGES.items():
            print(f"{k:16s} {d}  {s}")
        return
    if a.report:
        print(report(out))
        return
    for seed in a.seed:
        for change in a.change:
            if (out / f"{_name(a.cell, change, seed)}.json").exists():
                continue
            rec = run_one(a.cell, change, seed, out, a.budget, time_budget)
            m = rec["metrics"]
            print(
                f"{rec['cell']} {change}: test MSE {m['test_mse']:.3g}, adapt MSE {m['adapt_mse']:.3g}, "
                f"{rec['seconds']:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
