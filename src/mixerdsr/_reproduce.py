"""Reproduce the paper's tables: cells of (dataset, backbone, variant, seed), one JSON each.

``mixerdsr reproduce TABLE --budget smoke|cpu|paper`` runs every cell of a table whose JSON is
not there yet (``--force`` runs them again), so a table is built up over several sittings and
an interrupted cell continues from its checkpoint; ``--report`` rebuilds the Markdown table
(ours as mean ± std over seeds beside the paper's value) from the JSON files alone.

Tables: ``fig2`` (ODEBench-2: MixER-1, the gradient gate, MixER-2, MixER-auto), ``table2`` (ODEBench-10A),
``table3`` (ODEBench-10B, relMSE and TPRMSE), ``table4`` (LV, GO, SM: MixER-3, the single
meta-learners and CAVIA at the paper's active parameter counts) and ``gate`` (the gate
schedule: an update after every inner step, every 4th, or once per inner loop).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import json
import math
import platform
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TABLES", "BUDGETS", "Cell", "cells", "run_cell", "run_table", "report"]

BUDGETS = ("smoke", "cpu", "paper", "converged")

# ----------------------------------------------------------------------------------------------
# the paper's numbers (MixER paper, Section 4): {(dataset, backbone, variant): {metric: (mean, std)}}
# ----------------------------------------------------------------------------------------------

_T2 = {  # Table 2, ODEBench-10A: test ("train") and adapt relMSE
    ("ncf", "mixer-1"): ((2.05, 0.12), (1.80, 0.28)),
    ("ncf", "mixer-M-grad"): ((1.53, 0.34), (5.28, 1.04)),
    ("ncf", "mixer-M"): ((1.05, 0.09), (2.38, 0.23)),
    ("coda", "mixer-1"): ((0.98, 0.08), (6.91, 1.25)),
    ("coda", "mixer-M-grad"): ((0.76, 0.07), (4.25, 0.15)),
    ("coda", "mixer-M"): ((0.47, 0.06), (15.9, 4.2)),
    ("geps", "mixer-1"): ((2.61, 0.1), (2.20, 0.21)),
    ("geps", "mixer-M-grad"): ((0.58, 0.04), (1.16, 0.09)),
    ("geps", "mixer-M"): ((1.01, 0.05), (1.29, 0.08)),
}
_T3 = {  # Table 3, ODEBench-10B: relMSE test/adapt, then TPRMSE (%) test/adapt
    ("ncf", "mixer-1"): ((0.12, 0.01), (3.20, 0.28), (66.9, 2.1), (40.0, 2.3)),
    ("ncf", "mixer-M-grad"): ((0.29, 0.02), (2.53, 0.20), (36.9, 6.4), (30.0, 3.5)),
    ("ncf", "mixer-M"): ((0.22, 0.60), (1.43, 0.23), (55.6, 4.6), (2.5, 2.8)),
    ("ncf", "mixer-20"): ((0.38, 0.02), (0.54, 0.02), (37.5, 2.4), (20.0, 4.2)),
    ("coda", "mixer-1"): ((0.07, 0.01), (0.34, 0.05), (85.6, 2.7), (50.0, 2.5)),
    ("coda", "mixer-M-grad"): ((0.15, 0.03), (0.72, 0.08), (71.9, 1.6), (42.5, 0.8)),
    ("coda", "mixer-M"): ((0.10, 0.02), (14.8, 4.2), (80.0, 2.5), (25.0, 2.8)),
    ("coda", "mixer-20"): ((0.12, 0.04), (0.38, 0.02), (60.6, 8.0), (27.5, 1.0)),
    ("geps", "mixer-1"): ((0.21, 0.1), (1.24, 0.07), (64.4, 3.9), (37.5, 3.5)),
    ("geps", "mixer-M-grad"): ((0.13, 0.4), (0.49, 0.02), (71.2, 5.4), (50.0, 1.4)),
    ("geps", "mixer-M"): ((0.06, 0.01), (1.43, 0.02), (85.6, 5.4), (32.5, 3.0)),
    ("geps", "mixer-20"): ((0.17, 0.03), (0.92, 0.10), (55.6, 3.2), (35.0, 2.5)),
}
#: Table 4: (active parameters, InD MSE, OoD MSE) with the MSEs in the table's unit
_T4_UNIT = {"lv": 1e-5, "go": 1e-4, "sm": 1e-3}
_T4 = {
    ("lv", "cavia", "single"): (305246, (91.0, 63.6), (120.1, 28.3)),
    ("lv", "coda", "single"): (305793, (1.40, 0.13), (2.19, 0.78)),
    ("lv", "ncf", "single"): (308240, (1.68, 0.32), (1.99, 0.31)),
    ("lv", "ncf", "mixer-M"): (307245, (3.70, 0.4), (4.45, 0.3)),
    ("lv", "coda", "mixer-M"): (307995, (4.00, 0.01), (53.5, 0.4)),
    ("lv", "geps", "mixer-M"): (305112, (14.8, 0.7), (82.4, 0.9)),
    ("go", "cavia", "single"): (130711, (64.0, 14.1), (463.4, 84.9)),
    ("go", "coda", "single"): (135390, (5.06, 0.81), (4.22, 4.21)),
    ("go", "ncf", "single"): (131149, (3.33, 0.14), (2.83, 0.23)),
    ("go", "ncf", "mixer-M"): (130535, (73.5, 21.1), (141.5, 82.8)),
    ("go", "coda", "mixer-M"): (132137, (42.0, 18.9), (49.3, 25.1)),
    ("go", "geps", "mixer-M"): (131747, (22.3, 23.2), (259.7, 45.0)),
    ("sm", "cavia", "single"): (50486, (979.1, 141.2), (859.1, 70.7)),
    ("sm", "coda", "single"): (50547, (156.0, 40.52), (8.28, 0.29)),
    ("sm", "ncf", "single"): (50000, (6.42, 0.41), (2.03, 0.12)),
    ("sm", "ncf", "mixer-M"): (50387, (32.3, 4.2), (64.2, 1.5)),
    ("sm", "coda", "mixer-M"): (51995, (32.8, 3.9), (317.2, 6.0)),
    ("sm", "geps", "mixer-M"): (51312, (27.6, 5.8), (46.3, 2.7)),
}


@dataclasses.dataclass(frozen=True)
class Metric:
    """One reported quantity: its column label, where it is in a cell's JSON and its format."""

    label: str
    key: str  # a key of the cell JSON's "metrics"
    fmt: str = ".3g"
    scale: float = 1.0  # reported value = value / scale (Table 4's units)


@dataclasses.dataclass(frozen=True)
class Table:
    """A table of the paper: its cells and how to report them.

    ``variants`` maps a variant's name to its label; ``paper(data, backbone, variant)`` gives
    the paper's values in the order of ``metrics`` (None where the paper has none).
    """

    name: str
    title: str
    datasets: tuple[str, ...]
    backbones: tuple[str, ...]
    variants: dict[str, str]
    metrics: tuple[Metric, ...]
    paper: Callable[[str, str, str], Sequence[tuple[float, float] | None] | None]
    #: extra (dataset, backbone, variant) cells beyond the product (Table 4's CAVIA)
    extra: tuple[tuple[str, str, str], ...] = ()
    #: (dataset, backbone, variant) cells of the product left out
    skip: Callable[[str, str, str], bool] = lambda d, b, v: False


def _t2(d, b, v):
    return _T2.get((b, v))


def _t3(d, b, v):
    return _T3.get((b, v))


def _t4(d, b, v):
    row = _T4.get((d, b, v))
    return None if row is None else row[1:]


_REL = (Metric("train", "test_rel_mse"), Metric("adapt", "adapt_rel_mse"))
TABLES: dict[str, Table] = {
    "fig2": Table(
        "fig2",
        "Figure 2: ODEBench-2 (families 25 and 35), test relative L2 error and validation MSE over training",
        ("odebench-2",),
        ("geps", "coda", "ncf"),
        {
            "mixer-1": "MixER-1",
            "mixer-M-grad": "MixER-2 (gradient gate)",
            "mixer-M": "MixER-2",
            "mixer-auto": "MixER-auto (up to 2)",
        },
        (Metric("test rel. L2", "test_traj_rel_l2"), Metric("test relMSE", "test_rel_mse"), Metric("purity", "purity")),
        lambda d, b, v: None,
    ),
    "table2": Table(
        "table2",
        "Table 2: ODEBench-10A, relMSE of the test trajectories of the training envs (train) and the new envs (adapt)",
        ("odebench-10a", "odebench-10a-clean"),  # the paper's protocol, and the leak-free one
        ("ncf", "coda", "geps"),
        {
            "mixer-1": "MixER-1",
            "mixer-M-grad": "MixER-10 (gradient gate)",
            "mixer-M": "MixER-10",
            "mixer-M-alg1": "MixER-10 (Algorithm 1 as published)",
            "mixer-auto": "MixER-auto (up to 10)",
        },
        _REL,
        _t2,
    ),
    "table3": Table(
        "table3",
        "Table 3: ODEBench-10B, relMSE and TPRMSE (share of envs with relMSE below 0.1, %)",
        ("odebench-10b",),
        ("ncf", "coda", "geps"),
        {
            "mixer-1": "MixER-1",
            "mixer-M-grad": "MixER-10 (gradient gate)",
            "mixer-M": "MixER-10",
            "mixer-20": "MixER-20",
            "mixer-M-alg1": "MixER-10 (Algorithm 1 as published)",
            "mixer-auto": "MixER-auto (up to 10)",
        },
        (*_REL, Metric("train TPRMSE %", "test_tprmse", ".1f"), Metric("adapt TPRMSE %", "adapt_tprmse", ".1f")),
        _t3,
    ),
    "table4": Table(
        "table4",
        "Table 4: LV, GO, SM, test MSE of the training envs (InD) and of the new envs (OoD)",
        ("lv", "go", "sm"),
        ("ncf", "coda", "geps"),
        {"single": "single meta-learner", "mixer-M": "MixER-3", "mixer-auto": "MixER-auto (up to 3)"},
        (Metric("InD", "test_mse", ".3g"), Metric("OoD", "adapt_mse", ".3g")),
        _t4,
        extra=tuple((d, "cavia", "single") for d in ("lv", "go", "sm")),
    ),
    "gate": Table(
        "gate",
        "Gate schedule: one update after every inner step (the paper), every 4th, or once per inner loop (K = 12)",
        ("odebench-2", "odebench-10a"),
        ("geps", "coda"),
        {"every-1": "every inner step", "every-4": "every 4th", "every-12": "once per inner loop"},
        (
            Metric("test relMSE", "test_rel_mse"),
            Metric("adapt relMSE", "adapt_rel_mse"),
            Metric("purity", "purity", ".2f"),
            Metric("s / outer step", "seconds_per_outer_step", ".2f"),
        ),
        lambda d, b, v: None,
    ),
}


# ----------------------------------------------------------------------------------------------
# cells and their settings
# ----------------------------------------------------------------------------------------------


#: a dataset name ending in this is the preset's data generated with the leak-free protocol
CLEAN = "-clean"


def preset_of(data: str) -> str:
    """The preset (and dataset) a table's dataset name stands for: ``odebench-10a-clean`` ->
    ``odebench-10a`` (with ``data.clean = true``)."""
    return data.removesuffix(CLEAN)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of a table: ``(table, dataset, backbone, variant, seed)``."""

    table: str
    data: str
    backbone: str
    variant: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.data}-{self.backbone}-{self.variant}-s{self.seed}"


def cells(table: str, seeds: Sequence[int] = (0, 1, 2), patterns: Sequence[str] = ()) -> list[Cell]:
    """The cells of ``table`` for ``seeds``, restricted to names matching any of ``patterns``
    (shell-style, e.g. ``odebench-10a-geps-*``; none = all), seeds outermost, so that the first
    seed of every cell finishes before the second starts."""
    t = _table(table)
    combos = [(d, b, v) for d in t.datasets for b in t.backbones for v in t.variants if not t.skip(d, b, v)] + list(
        t.extra
    )
    out = [Cell(table, d, b, v, s) for s in seeds for d, b, v in combos]
    if patterns:
        out = [c for c in out if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]
    return out


def _table(name: str) -> Table:
    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}; choose one of {list(TABLES)}")
    return TABLES[name]


#: the ``cpu`` budget of each table (on top of the dataset's preset): what one cell can do in
#: about five minutes on two CPU cores; the paper's schedule is the ``paper`` budget
_CPU = {
    "fig2": {"gate.every": 12, "train.outer_steps": 300},
    "table2": {"gate.every": 12, "train.outer_steps": 250, "gate.warmup": 100, "adapt.steps": 200},
    "table3": {"gate.every": 12, "train.outer_steps": 200, "gate.warmup": 80, "adapt.steps": 200},
    "table4": {"gate.every": 12, "train.outer_steps": 200, "adapt.steps": 200},
    "gate": {"train.outer_steps": 250, "adapt.steps": 200},
}
_PAPER = {"gate.every": 1, "train.outer_steps": 500, "adapt.steps": 500}
#: trained until validation stops improving (``train.schedule = "plateau"``: the rate falls at
#: each plateau of 5 checks without a 1 % gain, the third plateau ends training), at the
#: paper's sizes, the gate updated once per inner loop as at the ``cpu`` budget
_CONVERGED = {
    "gate.every": 12,
    "train.outer_steps": 5000,
    "train.schedule": "plateau",
    "train.patience": 5,
    "train.min_improvement": 0.01,
    "train.lr_drops": 2,
    "adapt.steps": 500,
}
_SMOKE = {
    "train.outer_steps": 2,
    "train.inner_steps": 2,
    "train.val_every": 1,
    "train.checkpoint_every": 100,
    "adapt.steps": 3,
    "adapt.screen_steps": 2,
    "adapt.keep": 1,
    "data.envs_per_family": 2,
    "data.test_trajectories": 4,  # as many as the training envs have: one compiled forecast for both
    "data.val_trajectories": 1,
    "solver.method": "rk4",  # compiles in a fraction of an adaptive solve's time
    "solver.substeps": 1,
}
#: Table 4 at the ``cpu`` budget: every backbone matched to the paper's active parameter count
#: divided by this (at the paper's ~300k on LV, GEPS takes 14 s and NCF-t2 21 s per outer step
#: on 2 CPU cores; CAVIA more). Not below ~25k: NCF's context network (512 -> 32) alone has 16k.
_T4_CPU_SCALE = {"lv": 10, "go": 5, "sm": 2}
#: Table 4: context size per expert (Section 4.2; CAVIA: the two physical parameters varied)
_T4_CONTEXT = {"ncf": 512, "coda": 2, "geps": 2, "cavia": 2}


def settings(cell: Cell, budget: str) -> dict[str, Any]:
    """The settings (dotted names, on top of the dataset's preset) of ``cell`` at ``budget``."""
    from ._config import load_config

    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose one of {list(BUDGETS)}")
    preset = load_config(preset_of(cell.data), None, {})
    n_exp = preset.model.num_experts
    over: dict[str, Any] = {"model.backbone": cell.backbone, "train.seed": cell.seed}
    if cell.data.endswith(CLEAN):
        over["data.clean"] = True
    budgets: dict[str, dict[str, Any]] = {
        "smoke": {},
        "cpu": _CPU[cell.table],
        "paper": _PAPER,
        "converged": _CONVERGED,
    }
    over |= budgets[budget]
    v = cell.variant
    if cell.table == "table4":
        n_exp = 1 if v == "single" else preset.model.num_experts
        over["model.context_size"] = _T4_CONTEXT[cell.backbone] * n_exp
    if v == "mixer-1" or v == "single":
        over["model.num_experts"] = 1
        if budget != "paper" and cell.table != "table4":
            # the same envs per step as each expert of the M-expert variants (the paper: E/1)
            over["train.batch_envs"] = max(1, _n_train_envs(cell.data) // n_exp)
    elif v == "mixer-M-grad":
        over |= {"gate.mode": "gradient", "gate.warmup": 0}
    elif v == "mixer-M-alg1":  # the paper's Algorithm 1 from initialisation, the paper's proximal weight
        over |= {"gate.warmup": 0, "gate.pairing": "greedy", "train.proximal_beta": 10.0, "gate.reassign": 0.0}
    elif v == "mixer-20":
        over["model.num_experts"] = 20
    elif v == "mixer-auto":  # this project's: the number of experts chosen after the warm-up
        over["gate.choose"] = "silhouette"
        if preset.gate.warmup == 0 and "gate.warmup" not in over:
            over["gate.warmup"] = 100 if budget == "paper" else 50
        if cell.table == "table4":  # the warm-up's one expert on all envs, as the single meta-learner
            over["gate.warmup_batch"] = -1
    elif v.startswith("every-"):
        over["gate.every"] = int(v.split("-")[1])
    if cell.table == "table4" and cell.backbone == "cavia" and budget == "cpu":
        # second-order steps through RK4: tasks per meta-batch as many as each MixER-3 expert
        # sees per step (E/3, not all E), 2 RK4 steps per interval (not 4)
        over |= {"train.batch_envs": max(1, _n_train_envs(cell.data) // 3), "model.cavia.substeps": 2}
    if cell.table == "table4" and budget != "smoke":
        target = _t4_target(cell) // (_T4_CPU_SCALE[cell.data] if budget == "cpu" else 1)
        over[f"model.{cell.backbone}.width"] = matched_width(cell.data, over, target)
    if budget == "smoke":
        over |= _SMOKE
        over[f"model.{cell.backbone}.width"] = 8
        over[f"model.{cell.backbone}.depth"] = 2
        if preset.gate.warmup > 0 or over.get("gate.warmup", 0) > 0:
            over["gate.warmup"] = 0 if over.get("gate.warmup") == 0 else 1
        if cell.backbone == "ncf":  # 2 context dims per expert instead of 4 (ODEBench) or 512 (Table 4)
            over["model.context_size"] = 2 * over.get("model.num_experts", n_exp)
    return over


def _t4_target(cell: Cell) -> int:
    """The paper's active parameter count of a Table 4 cell (a single GEPS has no row of its
    own: the MixER-GEPS count, the same per expert)."""
    row = _T4.get((cell.data, cell.backbone, cell.variant)) or _T4[(cell.data, cell.backbone, "mixer-M")]
    return row[0]


@functools.lru_cache(maxsize=None)
def _train_shape(data: str) -> tuple[int, int]:
    """``(envs, state dimension)`` of a built-in dataset's training split (ODE families are
    planned, not integrated: generating ODEBench-10B takes most of a minute)."""
    from .data import plan_families, resolve_dataset
    from .data._familyspec import builtin_family_files, load_family_spec

    if preset_of(data) in builtin_family_files():
        spec = load_family_spec(preset_of(data))
        spec = spec.with_protocol(clean=True) if data.endswith(CLEAN) else spec
        plans = plan_families(spec, splits=["train"])["train"]
        return sum(len(p.params) for p in plans), int(plans[0].ics.shape[1])
    tr = resolve_dataset(data, None, progress=False)[0]["train"]
    return tr.n_envs, tr.n_dims


def _n_train_envs(data: str) -> int:
    return _train_shape(data)[0]


def _active_count(data: str, over: dict[str, Any]) -> int:
    """Active parameters (one expert and its context shift, as the paper counts) of the model
    ``over`` builds on ``data``, from shapes alone."""
    from ._config import load_config

    return _expert_count(load_config(preset_of(data), None, over), _train_shape(data)[1])


def _expert_count(cfg: Any, state_size: int, width: int | None = None) -> int:
    import jax

    from .experts import BACKBONES

    m = cfg.model
    settings = m.expert if width is None else dataclasses.replace(m.expert, width=width)
    c = m.context_size // m.num_experts if m.split_context else m.context_size
    cls = BACKBONES[m.backbone]
    expert = jax.eval_shape(lambda k: cls.from_settings(state_size, c, settings, key=k), jax.random.PRNGKey(0))
    leaves = [leaf for leaf in jax.tree.leaves(expert) if hasattr(leaf, "shape")]
    return int(sum(math.prod(leaf.shape) for leaf in leaves)) + (1 if m.shift_context else 0)


def matched_width(data: str, over: dict[str, Any], target: int) -> int:
    """The hidden width whose active parameter count (one expert, as the paper counts) is
    closest to ``target`` for the backbone and context of ``over`` (Appendix C.3: "we adjust the
    width of the main layer so that the active parameter count matches the baselines")."""
    from ._config import load_config

    cfg, d = load_config(preset_of(data), None, over), _train_shape(data)[1]
    lo, hi = 1, 4096
    while hi - lo > 1:  # the count grows with the width
        mid = (lo + hi) // 2
        if _expert_count(cfg, d, mid) < target:
            lo = mid
        else:
            hi = mid
    return min((lo, hi), key=lambda w: abs(_expert_count(cfg, d, w) - target))


# ----------------------------------------------------------------------------------------------
# running
# ----------------------------------------------------------------------------------------------


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _cell_json(cell: Cell, budget: str, over: dict[str, Any], res: Any, seconds: float) -> dict[str, Any]:
    from . import __version__

    m = res.metrics
    hist = [json.loads(line) for line in (res.out_dir / "history.jsonl").read_text().splitlines()]
    test, ad, r = m.get("test", {}), m.get("adapt_test", {}), m.get("routing", {})
    counts = r.get("counts") or []
    metrics = {
        "test_rel_mse": test.get("rel_mse"),
        "test_mse": test.get("mse"),
        "test_tprmse": test.get("tprmse"),
        "test_traj_rel_l2": test.get("traj_rel_l2"),
        "adapt_rel_mse": ad.get("rel_mse"),
        "adapt_mse": ad.get("mse"),
        "adapt_tprmse": ad.get("tprmse"),
        "adapt_traj_rel_l2": ad.get("traj_rel_l2"),
        "purity": r.get("purity") if len(counts) > 1 else None,
        "ari": r.get("ari") if len(counts) > 1 else None,
        # experts switched off by the choice of their number are not idle
        "idle_experts": int(sum(c == 0 and on for c, on in zip(counts, r.get("active") or [True] * len(counts)))),
        "chosen_experts": r.get("chosen_experts"),
        "seconds_per_outer_step": m.get("timing", {}).get("seconds_per_outer_step"),
        "best_step": m.get("best_step"),
        "outer_steps_run": m.get("training", {}).get("outer_steps_run"),
        "stop_reason": m.get("training", {}).get("stop_reason"),
        "converged": m.get("training", {}).get("converged"),
    }
    return {
        "cell": cell.name,
        "table": cell.table,
        "data": cell.data,
        "backbone": cell.backbone,
        "variant": cell.variant,
        "seed": cell.seed,
        "budget": budget,
        "metrics": metrics,
        "counts": counts,
        "active_parameters": m.get("parameters", {}).get("active_per_expert"),
        "test_per_env_rel_mse": test.get("per_env_rel_mse"),
        "adapt_per_env_rel_mse": ad.get("per_env_rel_mse"),
        "curve": [
            {k: h[k] for k in ("step", "weight_loss", "val_rel_mse", "val_mse", "purity") if k in h} for h in hist
        ],
        "warnings": m.get("warnings", []),
        # the number of experts chosen after the warm-up (MixER-auto): count, silhouettes, shared fit
        "experts_chosen": next((h["experts_chosen"] for h in hist if "experts_chosen" in h), None),
        "settings": over,
        "config": m.get("config"),
        "seconds": seconds,
        "machine": f"{platform.node()} {platform.machine()} {platform.processor()}".strip(),
        "date": time.strftime("%Y-%m-%d"),
        "version": __version__,
        "commit": _commit(),
    }


def run_table(
    table: str,
    budget: str = "cpu",
    *,
    seeds: Sequence[int] = (0, 1, 2),
    patterns: Sequence[str] = (),
    results: str | Path = "docs/results",
    runs: str | Path = "runs/reproduce",
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    isolate: bool = True,
    time_budget: float = 0.0,
) -> list[Path]:
    """Run the cells of ``table`` that have no JSON yet; return the JSON paths written.

    Args:
        table: ``fig2``, ``table2``, ``table3``, ``table4`` or ``gate``.
        budget: ``smoke`` (seconds per cell: tiny networks, 2 envs per family, 2 outer steps,
            fixed-step RK4),
            ``cpu`` (about five minutes per cell on 2 CPU cores) or ``paper`` (the paper's 500
            outer steps and gate update after every inner step).
        seeds: training seeds.
        patterns: only cells whose name matches one of these (shell-style).
        results: JSONs go to ``results/<table>/`` (``results/<table>-<budget>/`` unless cpu).
        runs: run directories go to ``runs/<table>-<budget>/<cell>/`` (an interrupted cell
            resumes from its checkpoint there).
        force: run cells whose JSON exists again.
        progress: a bar over the cells with the current cell's name and an ETA.
        log: message sink.
        time_budget: seconds of training per cell (0 = none): a cell stops at the best model
            it reached by then (``train.time_budget``; its JSON's ``stop_reason`` says so).
        isolate: run every cell in a fresh Python process, so that the code JAX compiles for
            one cell is freed before the next (in one process it accumulates until the
            system's limit on memory mappings stops a long table).
    """
    todo = cells(table, seeds, patterns)
    if not todo:
        raise ValueError(f"no cell of {table} matches {list(patterns)} (cells look like {cells(table, seeds)[0].name})")
    out_dir = _results_dir(results, table, budget)
    run_root = Path(runs) / f"{table}-{budget}"
    done = [c for c in todo if (out_dir / f"{c.name}.json").exists() and not force]
    todo = [c for c in todo if c not in done]
    if done:
        log(f"{table}: {len(done)} cell(s) already done (JSON in {out_dir}); {len(todo)} to run")
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=table, unit="cell", dynamic_ncols=True, disable=None)
    written = []
    try:
        for cell in todo:
            if bar is not None:
                bar.set_postfix_str(cell.name, refresh=True)
            # a finished cell run again (--force) starts afresh; an interrupted one resumes
            redo = force and (out_dir / f"{cell.name}.json").exists()
            if isolate:
                record, note = _in_fresh_process(run_cell, cell, budget, run_root, redo, time_budget)
            else:
                record, note = run_cell(cell, budget, run_root, redo, time_budget)
            if note:
                log(note)
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / f"{cell.name}.json"
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(record, indent=1))
            tmp.replace(path)  # a cell's JSON is there whole or not at all
            written.append(path)
            m = record["metrics"]
            msg = (
                f"{cell.name}: test relMSE {_fmt(m['test_rel_mse'])} MSE {_fmt(m['test_mse'])}  adapt relMSE "
                f"{_fmt(m['adapt_rel_mse'])} MSE {_fmt(m['adapt_mse'])}  ({record['seconds']:.0f} s)"
            )
            if bar is not None:
                bar.write(msg)
                bar.update(1)
            else:
                log(msg)
    finally:
        if bar is not None:
            bar.close()
    return written


def run_cell(
    cell: Cell, budget: str, run_root: Path, redo: bool = False, time_budget: float = 0.0
) -> tuple[dict[str, Any], str | None]:
    """Train and evaluate one cell in ``run_root/<cell>`` (resuming an interrupted run there
    unless ``redo``; ``time_budget``: seconds of training, 0 = none). Returns ``(its JSON
    record, a message or None)``."""
    from ._config import load_config
    from ._run import run

    over = settings(cell, budget) | ({"train.time_budget": time_budget} if time_budget else {})
    cfg = load_config(preset_of(cell.data), None, over)
    rd = Path(run_root) / cell.name
    resume = (rd / "checkpoint.npz").exists() and not redo
    if not resume:
        shutil.rmtree(rd, ignore_errors=True)
    t0 = time.perf_counter()
    note = None
    try:
        res = run(cfg, rd, resume=resume, progress=False, log=lambda s: None, plots=budget != "smoke")
    except ValueError as err:
        if not resume:
            raise
        note = f"{cell.name}: could not resume ({err}); starting again"
        shutil.rmtree(rd, ignore_errors=True)
        res = run(cfg, rd, progress=False, log=lambda s: None, plots=budget != "smoke")
    return _cell_json(cell, budget, over, res, time.perf_counter() - t0), note


def _in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a new Python process (spawned, not forked: JAX's threads do not survive
    a fork); its exceptions are raised here."""
    import concurrent.futures
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def _results_dir(results: str | Path, table: str, budget: str) -> Path:
    if budget == "converged":
        return Path(results) / "converged" / table
    return Path(results) / (table if budget == "cpu" else f"{table}-{budget}")


def _fmt(v: Any, fmt: str = ".3g") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


# ----------------------------------------------------------------------------------------------
# reporting
# ----------------------------------------------------------------------------------------------


def load_cells(table: str, budget: str = "cpu", results: str | Path = "docs/results") -> list[dict[str, Any]]:
    """The JSON records of ``table`` at ``budget`` (sorted by name)."""
    d = _results_dir(results, table, budget)
    out = []
    for p in sorted(d.glob("*.json")):
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{p}: not a readable cell JSON ({err}); remove it or run the cell again") from None
        missing = [
            k
            for k in ("cell", "data", "backbone", "variant", "seed", "metrics")
            if not isinstance(rec, dict) or k not in rec
        ]
        if missing:
            raise ValueError(f"{p}: not a cell JSON (missing {missing}); remove it or run the cell again")
        out.append(rec)
    return out


def _mean_std(vals: list[float | None], fmt: str, scale: float) -> str:
    v = np.asarray([x for x in vals if x is not None], float) / scale
    if len(v) == 0:
        return "-"
    if not np.all(np.isfinite(v)):
        return f"inf/nan ({int(np.sum(~np.isfinite(v)))} of {len(v)})"
    if len(v) == 1:
        return f"{format(v[0], fmt)} (1 seed)"
    return f"{format(float(np.mean(v)), fmt)} ± {format(float(np.std(v)), '.2g' if fmt == '.3g' else fmt)}"


def report(table: str, budget: str = "cpu", results: str | Path = "docs/results") -> str:
    """The Markdown of ``table`` from its JSON files: per (dataset, variant) row and (backbone,
    metric) column, ours as mean ± std over seeds (population std) beside the paper's value."""
    t = _table(table)
    recs = load_cells(table, budget, results)
    if not recs:
        return f"## {t.title}\n\nNo results yet ({_results_dir(results, table, budget)} holds no JSON).\n"
    by: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in recs:
        by.setdefault((r["data"], r["backbone"], r["variant"]), []).append(r)
    lines = [f"## {t.title}", ""]
    any_rec = recs[0]
    keys = ("train.outer_steps", "gate.every", "gate.warmup", "adapt.steps", "data.time_stride")
    shown = []
    for k in keys:
        sec, name = k.split(".")
        vals = {repr(r["settings"].get(k, ((r.get("config") or {}).get(sec) or {}).get(name))) for r in recs}
        if len(vals) > 1:  # differs between cells (e.g. gate.every in the gate schedule table)
            shown.append(f"{k} per cell")
        elif vals != {"None"}:
            shown.append(f"{k} = {vals.pop()}")
    secs = [r["seconds"] for r in recs]
    lines += [
        f"Budget `{budget}` ({', '.join(shown)}; the rest as the dataset's preset). {len(recs)} cells, "
        f"{np.median(secs) / 60:.1f} min per cell (median), machine: {any_rec['machine']}, "
        f"{min(r['date'] for r in recs)} to {max(r['date'] for r in recs)}, "
        f"commits {', '.join(sorted({r['commit'] for r in recs}))}. Each entry: ours mean ± std over seeds "
        "(population std; seeds in brackets) / the paper's.",
        "",
    ]
    if budget == "smoke":
        lines += [
            "**The `smoke` budget only checks that every cell runs (2 outer steps, tiny networks): its numbers "
            "are not comparable to the paper's.**",
            "",
        ]
    backbones = [b for b in (*t.backbones, "cavia") if any(k[1] == b for k in by)]
    for data in t.datasets:
        if not any(k[0] == data for k in by):
            lines += [f"### {data}", "", "No results yet.", ""]
            continue
        unit = f" (x{_T4_UNIT[data]:g})" if table == "table4" else ""
        lines += [f"### {data}{unit}", ""]
        head = ["variant"]
        if table == "table4":
            head.append("active params (ours / paper)")
        for b in backbones:
            head += [f"{b.upper()} {m.label}" for m in t.metrics]
        if table == "table4":
            head = ["variant", "backbone", "active params (ours / paper)"] + [m.label for m in t.metrics]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        variants = list(t.variants)
        for v in variants:
            if table == "table4":
                for b in backbones:
                    rs = by.get((data, b, v))
                    if not rs:
                        continue
                    row = _T4.get((data, b, v))
                    paper = row[1:] if row else None
                    pp = f"{rs[0]['active_parameters']} / {row[0] if row else '-'}"
                    cells_ = [
                        _entry(rs, m, paper[i] if paper else None, _T4_UNIT[data]) for i, m in enumerate(t.metrics)
                    ]
                    label = "CAVIA" if b == "cavia" else t.variants[v]
                    lines.append(f"| {label} | {b.upper()} | {pp} | " + " | ".join(cells_) + " |")
                continue
            row_cells = [t.variants[v]]
            if not any((data, b, v) in by for b in backbones):
                continue
            for b in backbones:
                rs = by.get((data, b, v), [])
                ref = t.paper(data, b, v)
                for i, m in enumerate(t.metrics):
                    row_cells.append(_entry(rs, m, ref[i] if ref else None, m.scale) if rs else "-")
            lines.append("| " + " | ".join(row_cells) + " |")
        lines.append("")
    lines += _also_measured(t, by)
    return "\n".join(lines)


_ALSO = (
    Metric("test MSE", "test_mse"),
    Metric("adapt MSE", "adapt_mse"),
    Metric("test relMSE", "test_rel_mse"),
    Metric("purity", "purity", ".2f"),
    Metric("idle experts", "idle_experts", ".2g"),
    Metric("experts chosen", "chosen_experts", ".2g"),
    Metric("selected step", "best_step", ".0f"),
    Metric("s / outer step", "seconds_per_outer_step", ".2f"),
)


def _also_measured(t: Table, by: dict[tuple[str, str, str], list[dict[str, Any]]]) -> list[str]:
    """Per cell group, what the paper does not report: MSEs, routing, model selection, speed."""
    head = ["data", "backbone", "variant", *(m.label for m in _ALSO), "min / cell"]
    lines = ["### Also measured (ours only)", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = {v: i for i, v in enumerate(t.variants)}
    for (data, b, v), rs in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][1], order.get(kv[0][2], 99))):
        vals = [_mean_std([r["metrics"].get(m.key) for r in rs], m.fmt, 1.0) for m in _ALSO]
        mins = _mean_std([r["seconds"] / 60 for r in rs], ".1f", 1.0)
        lines.append(f"| {data} | {b.upper()} | {t.variants.get(v, v)} | " + " | ".join(vals) + f" | {mins} |")
    lines.append("")
    return lines


def _entry(rs: list[dict[str, Any]], m: Metric, paper: tuple[float, float] | None, scale: float) -> str:
    vals = [r["metrics"].get(m.key) for r in rs]
    ours = _mean_std(vals, m.fmt, scale)
    seeds = ",".join(str(r["seed"]) for r in sorted(rs, key=lambda r: r["seed"]))
    out = f"{ours} [{seeds}]"
    if paper is not None:
        out += f" / {format(paper[0], m.fmt)} ± {format(paper[1], m.fmt)}"
    return out


def figure2(budget: str = "cpu", results: str | Path = "docs/results", path: str | Path | None = None) -> Path | None:
    """Figure 2 from the ``fig2`` JSONs: validation MSE over training (mean over seeds, one panel
    per backbone, one line per variant) above the test relative L2 error per variant. Returns
    the PNG's path (default ``results/fig2.png``), or None when there are no results."""
    recs = load_cells("fig2", budget, results)
    if not recs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = TABLES["fig2"]
    bbs = [b for b in t.backbones if any(r["backbone"] == b for r in recs)]
    fig, axes = plt.subplots(2, len(bbs), figsize=(4.2 * len(bbs), 6.5), squeeze=False)
    colors = {"mixer-1": "tab:blue", "mixer-M-grad": "tab:orange", "mixer-M": "tab:green", "mixer-auto": "tab:purple"}
    for j, b in enumerate(bbs):
        ax, bx = axes[0, j], axes[1, j]
        errs, labels = [], []
        for v, label in t.variants.items():
            rs = [r for r in recs if r["backbone"] == b and r["variant"] == v]
            if not rs:
                continue
            curves: dict[int, list[float]] = {}
            for r in rs:
                for h in r["curve"]:
                    if "val_mse" in h:
                        curves.setdefault(h["step"], []).append(h["val_mse"])
            steps = sorted(curves)
            if steps:
                ax.plot(steps, [np.mean(curves[s]) for s in steps], color=colors.get(v), label=label)
            errs.append([r["metrics"]["test_traj_rel_l2"] for r in rs])
            labels.append(label)
        ax.set_yscale("log")
        ax.set_title(b.upper())
        ax.set_xlabel("outer step")
        ax.set_ylabel("validation MSE")
        ax.legend(fontsize=8)
        pos = np.arange(len(errs))
        bx.bar(
            pos,
            [np.mean(e) for e in errs],
            yerr=[np.std(e) for e in errs],
            color=[colors.get(v) for v in t.variants if any(r["variant"] == v and r["backbone"] == b for r in recs)],
        )
        bx.set_xticks(pos, labels, rotation=15, fontsize=8)
        bx.set_yscale("log")
        bx.set_ylabel("test relative L2 error")
    fig.suptitle(f"ODEBench-2 ({budget} budget, mean over seeds)")
    fig.tight_layout()
    out = Path(path) if path is not None else Path(results) / ("fig2.png" if budget == "cpu" else f"fig2-{budget}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
