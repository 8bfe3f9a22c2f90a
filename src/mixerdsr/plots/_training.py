"""Plots of a training run: loss curves, gate heatmaps, route histogram, predictions.

Every function draws on its own Agg canvas (no pyplot state, no global style change).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["plot_losses", "plot_gate_heatmaps", "plot_routes", "plot_predictions", "plot_run", "write_report"]


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_losses(history: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Training losses (context and weight phases) and validation relMSE against outer step."""
    fig = _figure(9, 3.4)
    ax1, ax2 = fig.subplots(1, 2)
    steps = np.array([h["step"] for h in history])
    for key, label in (("weight_loss", "weights phase"), ("ctx_loss", "contexts phase")):
        v = np.array([h.get(key, np.nan) for h in history], float)
        ax1.plot(steps, v, label=label, lw=1)
    ax1.set_yscale("log")
    ax1.set_xlabel("outer step")
    ax1.set_ylabel("training MSE (Eq. 7)")
    ax1.legend(fontsize=8)
    vs = [(h["step"], h["val_rel_mse"]) for h in history if h.get("val_rel_mse") is not None]
    if vs:
        s, v = zip(*vs)
        ax2.plot(s, v, "o-", ms=3, color="C2")
        ax2.set_yscale("log")
    ax2.set_xlabel("outer step")
    ax2.set_ylabel("validation relMSE (Eq. 9)")
    return _save(fig, Path(path))


def plot_gate_heatmaps(history: Sequence[Mapping[str, Any]], path: str | Path,
                       family: np.ndarray | None = None) -> Path | None:
    """Gate values (softmax of the logits), envs x experts, at the snapshot steps (Figure 8)."""
    snaps = [(h["step"], np.asarray(h["gate_probs"])) for h in history if h.get("gate_probs") is not None]
    if not snaps:
        return None
    n_envs = snaps[0][1].shape[0]
    fig = _figure(2.6 * len(snaps) + 0.8, min(9, 2 + 0.05 * n_envs))
    axes = np.atleast_1d(fig.subplots(1, len(snaps), sharey=True))
    im = None
    for ax, (s, g) in zip(axes, snaps):
        im = ax.imshow(g, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"outer step {s}", fontsize=9)
        ax.set_xlabel("expert")
        ax.set_xticks(range(g.shape[1]))
        if family is not None and len(family) == n_envs:
            edges = np.flatnonzero(np.diff(family)) + 0.5
            for e in edges:
                ax.axhline(e, color="w", lw=0.6)
    axes[0].set_ylabel("environment")
    fig.colorbar(im, ax=list(axes), fraction=0.03)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_routes(routes: np.ndarray, family: np.ndarray, n_experts: int, path: str | Path,
                family_names: Sequence[str] | None = None) -> Path:
    """Histogram of the environments per expert, stacked by family (Figure 5)."""
    fig = _figure(max(4, 0.5 * n_experts + 3), 3.2)
    ax = fig.subplots()
    bottom = np.zeros(n_experts)
    fams = np.unique(family)
    for f in fams:
        c = np.bincount(routes[family == f], minlength=n_experts)
        name = family_names[f] if family_names is not None and 0 <= f < len(family_names) else f"family {f}"
        ax.bar(np.arange(n_experts), c, bottom=bottom, label=name[:28])
        bottom += c
    ax.set_xlabel("expert")
    ax.set_ylabel("environments")
    ax.set_xticks(range(n_experts))
    if len(fams) <= 12:
        ax.legend(fontsize=6, loc="upper right")
    return _save(fig, Path(path))


def plot_predictions(split, pred: np.ndarray, path: str | Path, *, max_families: int = 10, title: str = "",
                     sequence: bool = False) -> Path:
    """Per family: one env's true (solid) and predicted (dashed) trajectories over time, and the
    phase portrait (x0, x1) when the state has two or more dimensions (Figures 10-11)."""
    fams = [int(f) for f in np.unique(split.family)][:max_families]
    two_d = split.n_dims >= 2
    ncols = 2 if two_d else 1
    fig = _figure(4.2 * ncols, 2.3 * len(fams) + 0.5)
    axes = fig.subplots(len(fams), ncols, squeeze=False)
    for row, f in enumerate(fams):
        e = int(np.flatnonzero(split.family == f)[0])
        t = split.t[e]
        s0 = 1 if sequence else 0
        for j in range(min(2, split.n_trajectories)):
            for d in range(min(split.n_dims, 4)):
                c = f"C{d}"
                axes[row, 0].plot(t, split.x[e, j, :, d], color=c, lw=1)
                axes[row, 0].plot(t[s0:], pred[e, j, s0:, d], "--", color=c, lw=1)
            if two_d:
                axes[row, 1].plot(split.x[e, j, :, 0], split.x[e, j, :, 1], color=f"C{j}", lw=1, label="true" if j == 0 else None)
                axes[row, 1].plot(pred[e, j, s0:, 0], pred[e, j, s0:, 1], "--", color=f"C{j}", lw=1,
                                  label="predicted" if j == 0 else None)
        name = split.family_names[f] if split.family_names is not None and 0 <= f < len(split.family_names) else f"family {f}"
        axes[row, 0].set_title(f"{name[:40]} - env {e} (solid: true, dashed: predicted)", fontsize=8)
        axes[row, 0].tick_params(labelsize=7)
        if two_d:
            axes[row, 1].set_title("phase portrait (x0, x1)", fontsize=8)
            axes[row, 1].tick_params(labelsize=7)
            axes[row, 1].legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, Path(path))


def plot_run(out: Path, history, splits, preds: Mapping[str, np.ndarray], metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    """All plots of a run; returns ``[(caption, file name), ...]``."""
    figs: list[tuple[str, str]] = []
    plot_losses(history, out / "loss.png")
    figs.append(("Training loss and validation relative MSE", "loss.png"))
    tr = splits["train"]
    if plot_gate_heatmaps(history, out / "gate_heatmaps.png", tr.family) is not None:
        figs.append(("Gate values (envs x experts) during training", "gate_heatmaps.png"))
    r = np.asarray(metrics["routing"]["experts"])
    plot_routes(r, tr.family, metrics["config"]["experts"], out / "routes.png", tr.family_names)
    figs.append(("Environments per expert, by family", "routes.png"))
    seq = metrics["config"]["backbone"] == "shplrnn"
    for name, split_name in (("test", "test"), ("adapt_test", "adapt_test")):
        if name in preds:
            sp = splits.get(split_name) or splits["adapt_train"]
            fn = f"{name}_trajectories.png"
            plot_predictions(sp, preds[name], out / fn, title=f"{name}: true vs predicted", sequence=seq)
            figs.append((f"{name}: true (solid) and predicted (dashed) trajectories per family", fn))
    return figs


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _downstream_lines(ds: Mapping[str, Any]) -> list[str]:
    """Scores as a table, each routing table (experts x labels) as its own table."""
    lines = ["## Downstream", "", "| score | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v) if isinstance(v, float) else v} |" for k, v in ds.items() if not isinstance(v, dict)]
    for k, v in ds.items():
        if isinstance(v, dict) and "table" in v:
            table = v["table"]
            n = len(table[0]) if table else 0
            lines += ["", f"**{k}**: purity {_fmt(v.get('purity'))}, ARI {_fmt(v.get('ari'))}", "",
                      "| expert | " + " | ".join(f"label {j}" for j in range(n)) + " |", "|---" * (n + 1) + "|"]
            lines += [f"| {i} | " + " | ".join(str(c) for c in row) + " |" for i, row in enumerate(table)]
    return lines + [""]


def write_report(out: Path, metrics: Mapping[str, Any], figs: list[tuple[str, str]]) -> Path:
    """``report.md``: metrics tables and the plots."""
    cfg = metrics["config"]
    lines = [f"# mixerdsr run: {cfg['data']}, {cfg['backbone']}, MixER-{cfg['experts']}, gate {cfg['gate']}", ""]
    seq = any("teacher_forced_mse" in metrics.get(s, {}) for s in ("train", "test", "adapt_test"))
    if seq:  # relMSE is ill-posed on standardised series (states near 0): show the errors that mean something
        lines += ["| split | free-running MSE | teacher-forced MSE |", "|---|---|---|"]
    else:
        lines += ["| split | MSE | relMSE (Eq. 9) | trajectory rel. L2 | TPRMSE (%) | failed solves |",
                  "|---|---|---|---|---|---|"]
    for s in ("train", "test", "adapt_test"):
        if s in metrics:
            m = metrics[s]
            if seq:
                lines.append(f"| {s} | {_fmt(m['mse'])} | {_fmt(m.get('teacher_forced_mse'))} |")
            else:
                lines.append(f"| {s} | {_fmt(m['mse'])} | {_fmt(m['rel_mse'])} | {_fmt(m.get('traj_rel_l2'))} | "
                             f"{_fmt(m['tprmse'])} | {m['failed_solves']} |")
    r = metrics["routing"]
    lines += ["", f"Routing: experts used {r['counts']}; purity {_fmt(r['purity'])}; ARI {_fmt(r['ari'])} "
              f"(against family labels). Gate updates: {metrics.get('gate_updates', {})}.", ""]
    t = metrics["timing"]
    lines += [f"Timing: compile {_fmt(t.get('compile_seconds'))} s, {_fmt(t.get('seconds_per_outer_step'))} s per outer "
              f"step, training {_fmt(t.get('total_seconds'))} s, whole run {_fmt(t.get('run_seconds'))} s. "
              f"Model selected at outer step {metrics.get('best_step')}. Active parameters per expert: "
              f"{metrics['parameters']['active_per_expert']}.", ""]
    if "downstream" in metrics:
        lines += _downstream_lines(metrics["downstream"])
    for cap, fn in figs:
        lines += [f"## {cap}", "", f"![{cap}]({fn})", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
