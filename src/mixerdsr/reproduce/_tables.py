"""The paper's tables as data: its numbers, the tables' rows and metrics, the cells
(dataset, backbone, variant, seed) and the budgets a cell runs at."""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Sequence
from pathlib import Path

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


def shard_cells(todo: Sequence[Cell], part: int, parts: int) -> list[Cell]:
    """The ``part``-th (1-based) of ``parts`` disjoint parts of ``todo`` (every ``parts``-th
    cell from the ``part``-th on): the parts together are ``todo``, each cell in one part, and
    each part mixes datasets and variants alike (a job array's machines get similar work).

    Raises:
        ValueError: ``part`` not in ``1 .. parts``.
    """
    if not 1 <= part <= parts:
        raise ValueError(f"shard {part}/{parts}: expected K/N with 1 <= K <= N")
    return list(todo[part - 1 :: parts])


def _table(name: str) -> Table:
    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}; choose one of {list(TABLES)}")
    return TABLES[name]


#: the ``cpu`` budget of each table (on top of the dataset's preset): what one cell can do in
#: about five minutes on two CPU cores; the paper's schedule is the ``paper`` budget


def results_dir(results: str | Path, table: str, budget: str) -> Path:
    """Where the JSONs of ``table`` at ``budget`` live under ``results``."""
    if budget == "converged":
        return Path(results) / "converged" / table
    return Path(results) / (table if budget == "cpu" else f"{table}-{budget}")
