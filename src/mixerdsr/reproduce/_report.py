"""The Markdown tables: ours (mean ± std over seeds) beside the paper's, from the JSON files alone."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ._tables import _T4, _T4_UNIT, Metric, Table, _table, results_dir


def _fmt(v: Any, fmt: str = ".3g") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


# ----------------------------------------------------------------------------------------------
# reporting
# ----------------------------------------------------------------------------------------------


def load_cells(table: str, budget: str = "cpu", results: str | Path = "docs/results") -> list[dict[str, Any]]:
    """The JSON records of ``table`` at ``budget`` (sorted by name)."""
    d = results_dir(results, table, budget)
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


def _setting(rec: dict[str, Any], key: str) -> Any:
    """A cell's setting by its dotted name: from its settings on top of the preset, else its
    configuration (records written before a setting was renamed are read under the new name)."""
    from .._config import _apply, drop_retired, flatten_settings

    source = rec.get("cell", "<record>")
    settings = flatten_settings(drop_retired(_apply({}, rec.get("settings") or {}, source), source))
    if key in settings:
        return settings[key]
    return flatten_settings(drop_retired(rec.get("config") or {}, source)).get(key)


def report(table: str, budget: str = "cpu", results: str | Path = "docs/results") -> str:
    """The Markdown of ``table`` from its JSON files: per (dataset, variant) row and (backbone,
    metric) column, ours as mean ± std over seeds (population std) beside the paper's value."""
    t = _table(table)
    recs = load_cells(table, budget, results)
    if not recs:
        return f"## {t.title}\n\nNo results yet ({results_dir(results, table, budget)} holds no JSON).\n"
    by: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in recs:
        by.setdefault((r["data"], r["backbone"], r["variant"]), []).append(r)
    lines = [f"## {t.title}", ""]
    any_rec = recs[0]
    keys = ("train.outer_steps", "gate.every", "gate.warm_start.warmup", "adapt.steps", "data.time_stride")
    shown = []
    for k in keys:
        vals = {repr(_setting(r, k)) for r in recs}
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
    """Figure 2 from the ``fig2`` JSONs (:func:`mixerdsr.plots.figure2_figure`). Returns the
    PNG's path (default ``results/fig2.png``), or None when there are no results."""
    from ..plots import plot_figure2

    t = _table("fig2")
    recs = [r for r in load_cells("fig2", budget, results) if r["backbone"] in t.backbones]
    if not recs:
        return None
    recs.sort(key=lambda r: t.backbones.index(r["backbone"]))
    out = Path(path) if path is not None else Path(results) / ("fig2.png" if budget == "cpu" else f"fig2-{budget}.png")
    return plot_figure2(recs, t.variants, f"ODEBench-2 ({budget} budget, mean over seeds)", out)
