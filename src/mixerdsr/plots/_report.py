"""``report.md`` of a run: what the numbers are, whether they are good, and the figures.

The report reads only the ``metrics.json`` dictionary (README, "metrics.json keys") and the list
of figures; every key may be missing or ``None`` and is then reported as not available. Numbers
are rounded to 4 significant digits and containers are written as words, never as Python reprs.
Warnings are not computed here: the run orchestration puts them in ``metrics["warnings"]``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["PAPER", "render_report", "write_report"]

#: The MixER paper, whose equation numbers the report uses.
PAPER = (
    "R. D. Nzoyem, G. Stevens, A. Sahota, D. A. W. Barton and T. Deakin, *Towards Foundational Models "
    "for Dynamical System Reconstruction: Hierarchical Meta-Learning via Mixture of Experts* (MixER), "
    "2025, arXiv:2502.05335"
)

#: how the report names backbones whose name is not just the upper-cased key
_BACKBONE_NAMES = {"shplrnn": "hier-shPLRNN"}

_SPLITS = (
    ("train", "train (training envs, training trajectories)"),
    ("test", "test (training envs, new initial conditions)"),
    ("adapt_test", "adaptation (new envs, contexts fitted with frozen weights)"),
)

_GATE = {
    "lstsq": "least-squares gate (Algorithm 1)",
    "gradient": "gradient-trained gate (naive MoE)",
    "frozen": "frozen random gate",
}

_DOWNSTREAM = {
    "dataset": "dataset",
    "data_source": "data source",
    "data": "data from",
    "n_classes": "classes",
    "n_families": "families",
    "n_train": "training series",
    "n_held_out": "held-out series",
    "n_held_out_labelled": "held-out series with a label",
    "context_kmeans_ari": "K-means on the learned contexts: ARI against the classes",
    "context_kmeans_accuracy": "K-means on the learned contexts: matched accuracy",
    "raw_kmeans_ari": "K-means on the raw series: ARI against the classes",
    "raw_kmeans_accuracy": "K-means on the raw series: matched accuracy",
    "context_kmeans_gtinit_ari": "K-means on contexts, started at the class means: ARI",
    "context_kmeans_gtinit_accuracy": "K-means on contexts, started at the class means: accuracy",
    "raw_kmeans_gtinit_ari": "K-means on raw series, started at the class means: ARI",
    "raw_kmeans_gtinit_accuracy": "K-means on raw series, started at the class means: accuracy",
    "logreg_accuracy": "logistic regression on contexts: held-out accuracy",
    "logreg_train_accuracy": "logistic regression on contexts: training accuracy",
    "raw_logreg_accuracy": "logistic regression on the raw series: held-out accuracy",
    "raw_logreg_train_accuracy": "logistic regression on the raw series: training accuracy",
}


# ---------------------------------------------------------------------------------------
# formatting
# ---------------------------------------------------------------------------------------
def num(v: Any, digits: int = 4) -> str:
    """A number for people: ints with thousands separators, floats to ``digits`` significant
    digits, ``None`` as ``n/a``; containers as comma-separated words (never a repr)."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v != 0 and (abs(v) >= 10**digits or abs(v) < 1e-3):
            return f"{v:.{digits - 1}e}"
        s = f"{v:#.{digits}g}"
        s = s.rstrip("0").rstrip(".") if "." in s else s
        return s
    if isinstance(v, Mapping):
        return ", ".join(f"{_words(k)}: {num(x, digits)}" for k, x in v.items()) or "none"
    if isinstance(v, (list, tuple)):
        return ", ".join(num(x, digits) for x in v) or "none"
    if hasattr(v, "tolist"):  # numpy scalars and arrays
        return num(v.tolist(), digits)
    return str(v)


def _words(key: Any) -> str:
    return str(key).replace("_", " ")


def _get(m: Mapping[str, Any] | None, *keys: str) -> Any:
    for k in keys:
        if not isinstance(m, Mapping):
            return None
        m = m.get(k)
    return m


def _counts(c: Any, unit: str = "expert") -> str:
    """``[5, 5]`` as ``expert 0: 5, expert 1: 5``."""
    if not c:
        return "n/a"
    return ", ".join(f"{unit} {i}: {num(n)}" for i, n in enumerate(c))


def _route_counts(routes: Sequence[int] | None, n_experts: int | None) -> str:
    if not routes:
        return "n/a"
    n = max(int(n_experts or 0), max(int(r) for r in routes) + 1)
    c = [0] * n
    for r in routes:
        c[int(r)] += 1
    return _counts(c)


# ---------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------
def _header(m: Mapping[str, Any]) -> list[str]:
    data = _get(m, "config", "data", "source") or "unknown data"
    bb = _get(m, "config", "model", "backbone")
    backbone = _BACKBONE_NAMES.get(str(bb), str(bb or "?").upper())
    experts = _get(m, "config", "model", "num_experts")
    mode = _get(m, "config", "gate", "mode")
    gate = _GATE.get(str(mode), f"gate {mode or '?'}")
    lines = [
        f"# mixerdsr run: {data}, {backbone} experts, MixER-{experts if experts is not None else '?'}, {gate}",
        "",
        f"Equations and figures are numbered as in {PAPER}.",
        "",
    ]
    settings = {
        k: _get(m, "config", *path)
        for k, path in (
            ("outer_steps", ("train", "outer_steps")),
            ("context_size", ("model", "context_size")),
            ("seed", ("train", "seed")),
        )
    }
    bits = [f"{_words(k)} {num(v)}" for k, v in settings.items() if v is not None]
    if bits:
        lines += ["Settings: " + ", ".join(bits) + " (the full configuration is in `config.toml`).", ""]
    return lines


def _warnings(m: Mapping[str, Any]) -> list[str]:
    w = m.get("warnings")
    if isinstance(w, str):
        w = [w]
    w = [str(x).strip() for x in (w or []) if str(x).strip()]
    lines = ["## Warnings", ""]
    lines += [f"- {x}" for x in w] if w else ["No problems detected."]
    notes = [str(x) for x in (m.get("notes") or [])]
    if notes:
        lines += ["", "Notes on reading the figures:", ""] + [f"- {x}" for x in notes]
    return lines + [""]


def _eps(m: Mapping[str, Any]) -> float:
    e = _get(m, "config", "evaluation", "tprmse_eps")
    return float(e) if isinstance(e, (int, float)) else 0.1


def _verdict(rel: Any, eps: float) -> str:
    if not isinstance(rel, (int, float)) or not math.isfinite(rel):
        return "not available"
    if rel < eps:
        return f"good: below the {num(eps)} threshold of Eq. 10"
    if rel < 1:
        return f"fair: below 1 but above the {num(eps)} threshold"
    return "poor: errors as large as the states themselves or larger"


def _is_sequence(m: Mapping[str, Any]) -> bool:
    return any(isinstance(m.get(s), Mapping) and "teacher_forced_mse" in m[s] for s, _ in _SPLITS)


def _summary(m: Mapping[str, Any]) -> list[str]:
    eps = _eps(m)
    seq = _is_sequence(m)
    lines = ["## Summary", ""]
    for s, label in _SPLITS[1:]:
        sm = m.get(s)
        if not isinstance(sm, Mapping):
            lines.append(f"- {label.split(' (')[0]}: not evaluated (no such split in this dataset).")
            continue
        if seq:
            lines.append(
                f"- {label}: free-running MSE {num(sm.get('mse'))}, teacher-forced MSE "
                f"{num(sm.get('teacher_forced_mse'))}."
            )
        else:
            lines.append(
                f"- {label}: relMSE (Eq. 9) {num(sm.get('rel_mse'))} ({_verdict(sm.get('rel_mse'), eps)}); "
                f"the typical trajectory's {num(sm.get('median_traj_rel_mse'))} (median); trajectory rel. L2 "
                f"{num(sm.get('traj_rel_l2'))}; TPRMSE (Eq. 10) {num(sm.get('tprmse'))} % of envs below {num(eps)}"
                + (f"; {sm['n_diverged']} env(s) diverged, left out of the means" if sm.get("n_diverged") else "")
                + "."
            )
    r = m.get("routing") or {}
    if r:
        lines.append(
            f"- routing of the training envs: {_counts(r.get('counts'))}; purity {num(r.get('purity'))}, "
            f"ARI {num(r.get('ari')) if r.get('ari') is not None else 'n/a (no family labels)'}."
        )
    return lines + [""]


def _errors(m: Mapping[str, Any]) -> list[str]:
    eps = _eps(m)
    present = [(s, label) for s, label in _SPLITS if isinstance(m.get(s), Mapping)]
    lines = ["## Reconstruction error", ""]
    if not present:
        return lines + ["No split was evaluated.", ""]
    if _is_sequence(m):
        lines += [
            (
                "Sequence experts on standardised series: the relMSE of Eq. 9 divides by states near 0 and is "
                "not meaningful here, so the plain MSE (lower is better, 0 = perfect) is reported, free-running "
                "(the main error) and with teacher forcing (one step ahead)."
            ),
            "",
            "| split | free-running MSE | teacher-forced MSE | failed solves |",
            "|---|---|---|---|",
        ]
        for s, label in present:
            sm = m[s]
            lines.append(
                f"| {label} | {num(sm.get('mse'))} | {num(sm.get('teacher_forced_mse'))} | "
                f"{num(sm.get('failed_solves'))} |"
            )
        return lines + [""]
    lines += [
        (
            "How to read it. **relMSE** (Eq. 9) is the mean over all states of the squared error divided by the "
            "state's squared norm: 0 is perfect, and a good model has relMSE well below 1 (1 means errors as large "
            "as the states). "
            f"**TPRMSE** (Eq. 10) is the percentage of environments whose own relMSE is below {num(eps)}: "
            "higher is better, 100 % is best. "
            "**Trajectory rel. L2** (mean over trajectories of ||x̂ − x|| / ||x||) is not dominated by states near 0; "
            "**MSE** is the plain mean squared error, in the data's units."
        ),
        "",
        "| split | relMSE (Eq. 9) | median trajectory's relMSE | TPRMSE (Eq. 10, %) | trajectory rel. L2 | MSE "
        "| diverged envs | failed solves |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s, label in present:
        sm = m[s]
        lines.append(
            f"| {label} | {num(sm.get('rel_mse'))} | {num(sm.get('median_traj_rel_mse'))} | {num(sm.get('tprmse'))} "
            f"| {num(sm.get('traj_rel_l2'))} | {num(sm.get('mse'))} | {num(sm.get('n_diverged', 0))} | "
            f"{num(sm.get('failed_solves'))} |"
        )
    lines.append("")
    for s, label in present:
        pe = m[s].get("per_env_rel_mse")
        vals = [(i, float(v)) for i, v in enumerate(pe or []) if isinstance(v, (int, float))]
        if not vals:
            continue
        finite = sorted(v for _, v in vals if math.isfinite(v))
        worst = sorted(vals, key=lambda iv: -iv[1] if math.isfinite(iv[1]) else -math.inf)[:3]
        med = statistics.median(finite) if finite else float("nan")
        below = sum(v < eps for _, v in vals)
        lines.append(
            f"- {label.split(' (')[0]}, per env relMSE: median {num(med)}, {below} of {len(vals)} envs "
            f"below {num(eps)}; highest: " + ", ".join(f"env {i} ({num(v)})" for i, v in worst) + "."
        )
    return lines + [""]


def _routing(m: Mapping[str, Any]) -> list[str]:
    r = m.get("routing")
    lines = ["## Routing", ""]
    if not isinstance(r, Mapping):
        return lines + ["No routing recorded.", ""]
    lines.append(f"- Training envs per expert: {_counts(r.get('counts'))}.")
    if r.get("chosen_experts") is not None:
        sil = r.get("silhouette") or {}
        if r.get("chosen_by") == "eigengap":
            how = "from the warm-up's contexts (largest eigengap of their neighbour graph)"
            lam = r.get("eigenvalues") or []
            detail = f"; smallest Laplacian eigenvalues: {', '.join(num(v) for v in lam)}" if lam else ""
        else:
            how = "from the warm-up's contexts (highest mean silhouette)"
            detail = (
                f"; mean silhouette by number of groups: {', '.join(f'{k}: {num(v)}' for k, v in sil.items())}"
                if sil
                else ""
            )
        lines.append(
            f"- Number of experts: {r['chosen_experts']} of {len(r.get('counts') or [])} chosen {how}{detail}."
        )
    lines.append(
        f"- Purity {num(r.get('purity'))}: the share of envs whose family is the most common one on their "
        "expert (1 = every expert serves a single family)."
    )
    if r.get("ari") is None:
        lines.append("- ARI: not available (the training envs have no family labels).")
    else:
        lines.append(
            f"- ARI {num(r.get('ari'))}: adjusted Rand index of the routes against the family labels "
            "(1 = routes match the families exactly, about 0 = chance)."
        )
    if r.get("adapt_experts"):
        n_exp = _get(m, "config", "model", "num_experts")
        lines.append(f"- Adaptation envs per expert: {_route_counts(r.get('adapt_experts'), n_exp)}.")
        lines += _adapt_choice(m.get("adapt_test") or {})
    gu = m.get("gate_updates")
    if isinstance(gu, Mapping) and any(gu.values()):
        parts = [f"{num(v)} {_words(k)}" for k, v in gu.items() if v]
        lines.append(f"- Gate updates: {', '.join(parts)}.")
    elif gu is not None:
        lines.append("- Gate updates: none (gradient or frozen gate, or a single expert).")
    return lines + [""]


def _adapt_choice(ad: Mapping[str, Any]) -> list[str]:
    """The expert each new environment was fitted with, the runner-up and the confidence."""
    conf, runner, route = ad.get("confidence"), ad.get("runner_up"), ad.get("routes")
    if conf is None or runner is None or route is None:
        return []
    rel = ad.get("per_env_rel_mse") or [None] * len(route)
    lines = [
        "",
        "New environments: each was fitted from every expert's start and kept its best expert; confidence "
        "= 1 - (best loss / runner-up expert's loss): near 0 when two experts explain the data equally well.",
        "",
        "| env | expert | runner-up | confidence | adapt relMSE |",
        "|---:|---:|---:|---:|---:|",
    ]
    forced = ad.get("runner_up_forced") or [False] * len(route)
    for e, (m_e, r_e, c_e, v) in enumerate(zip(route, runner, conf, rel)):
        ru = "-" if r_e < 0 else f"{r_e}*" if e < len(forced) and forced[e] else str(r_e)
        lines.append(f"| {e} | {m_e} | {ru} | {num(c_e, 2)} | {num(v)} |")
    if any(forced):
        lines += ["", "\\* no fit ended with another expert, so the runner-up was fitted with its route forced."]
    return lines + [""]


def _cost(m: Mapping[str, Any]) -> list[str]:
    t = m.get("timing") or {}
    p = m.get("parameters") or {}
    lines = ["## Cost and model selection", ""]
    if t:
        lines.append(
            f"- Time: compile {num(t.get('compile_seconds'))} s, {num(t.get('seconds_per_outer_step'))} s per "
            f"outer step, training {num(t.get('total_seconds'))} s, whole run {num(t.get('run_seconds'))} s."
        )
    for s, label in _SPLITS[2:]:
        if isinstance(m.get(s), Mapping) and m[s].get("adapt_seconds") is not None:
            lines.append(f"- Adaptation took {num(m[s]['adapt_seconds'])} s.")
    if p:
        lines.append(
            f"- Parameters: {num(p.get('active_per_expert'))} active per environment (one expert), "
            f"{num(p.get('total'))} in total."
        )
    if m.get("best_step") is not None:
        lines.append(f"- Model selected at outer step {num(m.get('best_step'))} (lowest validation relMSE).")
    return lines + [""] if len(lines) > 2 else []


def _downstream(ds: Mapping[str, Any]) -> list[str]:
    lines = [
        "## Downstream",
        "",
        (
            "Scores of the learned contexts as features (ARI: 1 = perfect clustering, about 0 = chance; "
            "accuracy: 1 = all correct), next to the same method on the raw series."
        ),
        "",
        "| score | value |",
        "|---|---|",
    ]
    tables = []
    for k, v in ds.items():
        if isinstance(v, Mapping) and "table" in v:
            tables.append((k, v))
        elif isinstance(v, Mapping):
            lines.append(f"| {_DOWNSTREAM.get(k, _words(k))} | {num(v)} |")
        else:
            lines.append(f"| {_DOWNSTREAM.get(k, _words(k))} | {num(v)} |")
    for k, v in tables:
        table = v.get("table") or []
        n = max((len(row) for row in table), default=0)
        lines += [
            "",
            (
                f"**{_words(k)}**: purity {num(v.get('purity'))}, ARI {num(v.get('ari'))}; "
                "rows are experts, columns labels, cells counts of envs."
            ),
            "",
        ]
        if n:
            lines += ["| expert | " + " | ".join(f"label {j}" for j in range(n)) + " |", "|---" * (n + 1) + "|"]
            lines += [f"| {i} | " + " | ".join(num(c) for c in row) + " |" for i, row in enumerate(table)]
    return lines + [""]


def render_report(metrics: Mapping[str, Any], figs: Sequence[tuple[str, str]] = ()) -> str:
    """The text of ``report.md`` for a ``metrics.json`` dictionary and ``[(caption, file), ...]``."""
    m = metrics or {}
    lines = _header(m) + _warnings(m) + _summary(m) + _errors(m) + _routing(m) + _cost(m)
    if isinstance(m.get("downstream"), Mapping):
        lines += _downstream(m["downstream"])
    if figs:
        lines += ["## Figures", ""]
        for cap, fn in figs:
            lines += [f"### {cap}", "", f"![{Path(fn).stem.replace('_', ' ')}]({fn})", ""]
    return "\n".join(lines)


def write_report(out: Path, metrics: Mapping[str, Any], figs: list[tuple[str, str]]) -> Path:
    """Write ``out/report.md`` (see :func:`render_report`) and return its path."""
    path = Path(out) / "report.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(metrics, figs))
    return path
