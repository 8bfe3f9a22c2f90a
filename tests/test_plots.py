"""Plots and report: readable, labelled, honest (no training; small hand-made arrays)."""

from __future__ import annotations

import numpy as np
import pytest

from mixerdsr import Config, EnvData, load_config
from mixerdsr import plots as P
from mixerdsr.plots import _canvas
from mixerdsr.plots._contexts import context_pca_figure
from mixerdsr.plots._data import dataset_overview_figure
from mixerdsr.plots._report import num, render_report, write_report

PNG = b"\x89PNG"


def three_family_split(n_per_fam: int = 4, n_traj: int = 2, n_times: int = 15, dims: int = 2, seed: int = 0,
                       names: tuple[str, ...] | None = ("pendulum", "decay", "spiral"), n_fams: int = 3) -> EnvData:
    rng = np.random.default_rng(seed)
    fam = np.repeat(np.arange(n_fams), n_per_fam)
    x = 0.5 + rng.uniform(size=(n_fams * n_per_fam, n_traj, n_times, dims))
    t = np.tile(np.linspace(0.0, 2.0, n_times), (n_fams * n_per_fam, 1))
    return EnvData(x=x, t=t, family=fam, family_names=names, split="test")


def fake_metrics(**changes):
    split = {"mse": 0.0123456, "rel_mse": 0.4123456, "tprmse": 60.0, "traj_rel_l2": 0.2, "failed_solves": 0,
             "per_env_rel_mse": [0.05, 0.3, 1.7, 0.02]}
    m = {
        "config": Config().override({"train.outer_steps": 3}).to_dict(),
        "best_step": 2,
        "train": dict(split), "test": dict(split), "adapt_test": dict(split, adapt_seconds=12.3456, routes=[0, 1, 1, 0]),
        "routing": {"experts": [0, 0, 1, 1], "counts": [2, 2], "purity": 1.0, "ari": 1.0, "adapt_experts": [0, 1, 1, 0]},
        "gate_updates": {"ok": 7200, "reseeded": 3, "skipped_empty": 0},
        "timing": {"compile_seconds": 20.123456, "seconds_per_outer_step": 1.98765, "total_seconds": 100.0,
                   "run_seconds": 130.5},
        "parameters": {"active_per_expert": 123456, "total": 246912},
    }
    m.update(changes)
    return m


def history(n_envs: int = 12, n_exp: int = 3, family: np.ndarray | None = None):
    h = []
    for s in range(4):
        rec = {"step": s, "weight_loss": 1.0 / (s + 1), "ctx_loss": 2.0 / (s + 1), "gate_updates": {"ok": 12}}
        if s % 2 == 1:
            rec["val_rel_mse"], rec["val_traj_rel_l2"] = 0.5 / s, 0.2 / s
        if s in (0, 3):
            g = np.full((n_envs, n_exp), 1.0 / n_exp)
            if family is not None and s == 3:
                g = np.eye(n_exp)[np.asarray(family) % n_exp]
            rec["gate_probs"] = g.tolist()
        h.append(rec)
    return h


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------
def test_report_interprets_and_renders_warnings(tmp_path):
    warns = ["test relMSE is dominated by env 3", "2 of 10 solves failed"]
    path = write_report(tmp_path, fake_metrics(warnings=warns), [("Loss", "loss.png")])
    text = path.read_text()
    assert path.name == "report.md"
    lines = text.splitlines()
    for w in warns:
        assert f"- {w}" in lines
    # the warnings come before the numbers
    assert text.index("## Warnings") < text.index("## Reconstruction error")
    assert "No problems detected." not in text
    assert "Eq. 9" in text and "Eq. 10" in text
    assert "Towards Foundational Models for Dynamical System Reconstruction" in text
    assert "{'" not in text and "['" not in text and "[0, " not in text and "[2, 2]" not in text
    assert "7,200 ok" in text and "3 reseeded" in text and "skipped empty" not in text
    assert "0.4123" in text and "0.4123456" not in text
    assert "123,456" in text
    assert "well below 1" in text
    assert "### Loss" in text and "](loss.png)" in text


def test_report_without_warnings_or_optional_parts():
    m = fake_metrics()
    del m["adapt_test"], m["train"]
    m["routing"].update(ari=None, adapt_experts=None)
    m["timing"] = None
    m["parameters"] = {"active_per_expert": None, "total": 10}
    m["test"]["traj_rel_l2"] = None
    text = render_report(m, [])
    assert "## Warnings\n\nNo problems detected." in text
    assert "not evaluated" in text
    assert "ARI: not available" in text
    assert "n/a" in text and "None" not in text and "{'" not in text
    assert "Number of experts" not in text  # a fixed M: nothing chosen
    m["routing"].update(chosen_experts=1, chosen_by="silhouette", silhouette={"2": 0.41})
    assert "- Number of experts: 1 of 2 chosen from the warm-up's contexts" in render_report(m, [])
    assert "2: 0.41" in render_report(m, [])
    for empty in ({}, {"warnings": []}, {"config": None, "routing": None}):
        t = render_report(empty)
        assert "No problems detected." in t and "{'" not in t


def test_report_series_and_downstream():
    seq = {"mse": 0.81234, "rel_mse": 5e3, "tprmse": 0.0, "per_env_rel_mse": [1.0], "failed_solves": 0,
           "teacher_forced_mse": 0.2, "teacher_forced_rel_mse": 3.0}
    ds = {"dataset": "sccts", "n_classes": 6, "context_kmeans_ari": 0.456789, "raw_kmeans_ari": 0.3,
          "routing_families": {"purity": 0.9, "ari": 0.7, "table": [[10, 0, 2], [0, 9, 1]]}}
    text = render_report(fake_metrics(test=seq, train=seq, adapt_test=None, downstream=ds,
                                      config=load_config("sccts").to_dict()), [])
    assert "teacher-forced MSE" in text and "0.8123" in text
    assert "K-means on the learned contexts: ARI against the classes | 0.4568" in text
    assert "| 0 | 10 | 0 | 2 |" in text
    assert "{'" not in text and "[[" not in text


def test_num_formats():
    assert num(0.4123456) == "0.4123"
    assert num(60.0) == "60"
    assert num(7200) == "7,200"
    assert num(None) == "n/a"
    assert num(1.5e-5) == "1.500e-05"
    assert num({"ok": 3}) == "ok: 3" and num([1, 2.5]) == "1, 2.5"
    assert num(np.float32(0.25)) == "0.25"


# ---------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------
def _all_labelled(fig):
    for ax in fig.axes:
        if not ax.axison or ax.get_label() == "<colorbar>":
            continue
        assert ax.get_xlabel().strip() and ax.get_ylabel().strip(), ax.get_title()


def test_shown_rel_mse_is_eq9():
    true = np.array([[[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]])  # last state has norm 0: left out
    pred = np.array([[[1.5, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    assert P.shown_rel_mse(pred, true) == pytest.approx((0.25 / 1 + 1 / 4) / 2)
    assert np.isnan(P.shown_rel_mse(pred[:, 2:], true[:, 2:]))


def test_predictions_show_every_family_with_honest_errors(tmp_path):
    split = three_family_split()
    pred = split.x + 0.1
    pred[4:8] += 0.5  # family "decay" is worse
    fig = P.predictions_figure(split, pred, max_envs_per_family=2)
    titles = [ax.get_title() for ax in fig.axes]
    for name in ("pendulum", "decay", "spiral"):
        assert any(name in tt for tt in titles), name
    # two envs per family, spread: first and last env of each family
    for e in (0, 3, 4, 7, 8, 11):
        assert any(f"env {e}:" in tt for tt in titles), e
    for e in (0, 4, 11):
        want = P.shown_rel_mse(pred[e, :1], split.x[e, :1])
        assert any(f"env {e}:" in tt and f"relMSE (Eq. 9) traj 0 {want:.3g}" in tt for tt in titles)
        # beside the drawn trajectory, the env's typical one (the median over all its trajectories)
        med = np.median([P.shown_rel_mse(pred[e, j : j + 1], split.x[e, j : j + 1]) for j in range(split.x.shape[1])])
        if split.x.shape[1] > 1:
            assert any(f"env {e}:" in tt and f"median over its {split.x.shape[1]} trajectories {med:.3g}" in tt
                       for tt in titles)
    _all_labelled(fig)
    # one colour per state dimension, data solid vs model dashed, in a figure legend
    labels = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert {"x0", "x1", "data", "model"} <= set(labels)
    ax0 = fig.axes[0]
    styles = {(ln.get_color(), ln.get_linestyle()) for ln in ax0.get_lines()}
    assert len({c for c, _ in styles}) == 2 and {"-", "--"} <= {s for _, s in styles}
    # the whole legend lies inside the saved image
    small = P.predictions_figure(split, pred, max_families=1, max_envs_per_family=1)
    assert P.save_figure(small, tmp_path / "p.png").read_bytes()[:4] == PNG
    bb = small.legends[0].get_window_extent()
    W, H = small.canvas.get_width_height()
    assert bb.x0 >= 0 and bb.y0 >= 0 and bb.x1 <= W and bb.y1 <= H


def test_predictions_spread_families_sequence_and_1d():
    split = three_family_split(n_per_fam=2, dims=1, names=None)
    pred = split.x.copy()
    pred[:, :, 0] = 100.0  # the unscored initial step of a sequence model
    fig = P.predictions_figure(split, pred, max_families=2, sequence=True)
    titles = " | ".join(ax.get_title() for ax in fig.axes)
    assert "family 0" in titles and "family 2" in titles and "family 1" not in titles
    env_titles = [ax.get_title() for ax in fig.axes if "relMSE" in ax.get_title()]
    assert len(env_titles) == 4 and all("relMSE (Eq. 9) traj 0 0, MSE 0\n" in tt for tt in env_titles)
    assert "phase" not in titles
    assert "2 of 3 families" in fig.get_suptitle()
    with pytest.raises(ValueError, match="shape"):
        P.predictions_figure(split, pred[:, :1])


def test_gate_heatmap_family_ticks_and_colorbar(tmp_path):
    split = three_family_split()
    fam = split.family.copy()
    h = history(len(fam), 3, fam)
    fig = P.gate_heatmaps_figure(h, fam, split.family_names)
    ax0 = fig.axes[0]
    ticks = [t.get_text() for t in ax0.get_yticklabels()]
    assert len(ticks) == 3 and all(t.startswith(n) and "(4" in t for t, n in zip(ticks, split.family_names))
    np.testing.assert_allclose(ax0.get_yticks(), [1.5, 5.5, 9.5])
    cbar_labels = [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert cbar_labels and "gate value" in cbar_labels[0]
    assert all(ax.get_xlabel() == "expert" for ax in fig.axes if ax.get_label() != "<colorbar>")
    # interleaved families are grouped, unnamed ones called "family k"
    mixed = np.array([1, 0, 1, 0, 2, 2, 0, 1, 2, 0, 1, 2])
    fig2 = P.gate_heatmaps_figure(history(12, 3, mixed), mixed, None)
    ticks2 = [t.get_text() for t in fig2.axes[0].get_yticklabels()]
    assert [t[:8] for t in ticks2] == ["family 0", "family 1", "family 2"]
    assert P.gate_heatmaps_figure([{"step": 0}], fam) is None
    assert P.plot_gate_heatmaps(h, tmp_path / "g.png", fam).read_bytes()[:4] == PNG
    # routing that never changed: one panel that says so, not several identical ones
    still = [dict(r, gate_probs=h[0]["gate_probs"]) if "gate_probs" in r else r for r in h]
    fig3 = P.gate_heatmaps_figure(still, fam, split.family_names)
    panels = [ax for ax in fig3.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 1 and "the same at every snapshot" in panels[0].get_title()
    assert "unchanged over training" in fig3.get_suptitle()


def test_losses_and_routes(tmp_path):
    fig = P.losses_figure(history(), best_step=3)  # the selecting score: traj_rel_l2 by default
    _all_labelled(fig)
    assert "traj_rel_l2" in fig.axes[1].get_ylabel()
    assert any("selected" in t.get_text() for t in fig.axes[1].get_legend().get_texts())
    np.testing.assert_allclose(fig.axes[1].get_lines()[0].get_ydata(), [0.2, 0.2 / 3])
    fig = P.losses_figure(history(), best_step=3, select_on="rel_mse")
    assert "Eq. 9" in fig.axes[1].get_ylabel()
    np.testing.assert_allclose(fig.axes[1].get_lines()[0].get_ydata(), [0.5, 0.5 / 3])
    assert P.plot_losses([], tmp_path / "empty.png").read_bytes()[:4] == PNG
    fam = np.array([0, 0, 1, 1, 1])
    fig = P.routes_figure(np.array([0, 0, 1, 1, 0]), fam, 3, ("lv", "go"))
    _all_labelled(fig)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["lv", "go"]
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [2, 0, 0, 1, 2, 0]


def test_plot_run_draws_every_figure(tmp_path, monkeypatch):
    drawn = {}

    def fake_save(fig, path):  # PNG writing itself is covered above; keep this test fast
        drawn[path.name] = fig
        path.write_bytes(PNG)
        return path

    monkeypatch.setattr(_canvas, "save_figure", fake_save)
    train = three_family_split(n_per_fam=1, seed=1, n_fams=2, n_times=8, dims=1)
    splits = {"train": train, "test": train, "adapt_train": three_family_split(n_per_fam=1, seed=2, n_fams=2, dims=1)}
    preds = {"test": train.x * 1.1, "adapt_test": splits["adapt_train"].x * 0.9}
    m = fake_metrics(routing={"experts": [0, 1], "counts": [1, 1], "purity": 1.0, "ari": 1.0}, best_step=3)
    figs = P.plot_run(tmp_path, history(2, 2, train.family), splits, preds, m)
    files = [fn for _, fn in figs]
    assert files == ["loss.png", "gate_heatmaps.png", "routes.png", "test_trajectories.png",
                     "adapt_test_trajectories.png"]
    assert set(drawn) == set(files) and all((tmp_path / fn).exists() for fn in files)
    for fn in ("test_trajectories.png", "adapt_test_trajectories.png"):
        titles = " ".join(ax.get_title() for ax in drawn[fn].axes)
        assert "pendulum" in titles and "decay" in titles and "relMSE (Eq. 9" in titles
    assert "adaptation" in drawn["adapt_test_trajectories.png"].get_suptitle()
    assert any("step 3" in t.get_text() for t in drawn["loss.png"].axes[1].get_legend().get_texts())
    ticks = [t.get_text() for t in drawn["gate_heatmaps.png"].axes[0].get_yticklabels()]
    assert len(ticks) == 2 and ticks[0].startswith("pendulum") and ticks[1].startswith("decay")
    # no adaptation split: those figures are skipped, not an error
    figs = P.plot_run(tmp_path, history(2, 2, train.family), {"train": train, "test": train}, {"test": preds["test"]},
                      dict(m, routing=None, config=None))
    assert [fn for _, fn in figs] == ["loss.png", "gate_heatmaps.png", "test_trajectories.png"]


def test_overview_and_pca_figures_are_labelled():
    split = three_family_split(n_per_fam=2, dims=3)
    fig = dataset_overview_figure(split, max_traj=2, max_families=2)
    _all_labelled(fig)
    titles = [ax.get_title() for ax in fig.axes]
    assert any("pendulum" in t for t in titles) and any("spiral" in t for t in titles)
    assert {"x0", "x1", "x2"} <= {t.get_text() for leg in fig.legends for t in leg.get_texts()}
    pts = np.random.default_rng(0).normal(size=(6, 2))
    fig = context_pca_figure(pts, [("classes", np.array([0, 0, 1, 1, 2, -1]), ("a", "b", "c"))],
                             markers=np.array([0, 1, 0, 1, 0, 1]))
    _all_labelled(fig)
    assert "unknown (held-out)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_route_history_shows_every_env_and_step_with_purity(tmp_path):
    fam = np.array([1, 0, 1, 0])  # not grouped: rows are reordered by family
    hist = [{"step": s, "route": r, "routes": [2, 2], "purity": p}
            for s, (r, p) in enumerate([([0, 0, 0, 0], 0.5), ([1, 0, 1, 0], 1.0), ([1, 0, 1, 0], 1.0)])]
    fig = P.route_history_figure(hist, fam, ("lv", "go"))
    _all_labelled(fig)
    img = fig.axes[0].get_images()[0].get_array()
    np.testing.assert_array_equal(img, [[0, 0, 0], [0, 0, 0], [0, 1, 1], [0, 1, 1]])  # lv rows first, then go
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["lv", "go"]
    np.testing.assert_allclose(fig.axes[1].get_lines()[0].get_ydata(), [0.5, 1.0, 1.0])
    # experts are not drawn in the families' colours of the other figures
    expert_colours = fig.axes[0].get_images()[0].get_cmap().colors
    family_colours = [_canvas._categorical(2)(k) for k in range(2)]
    assert not any(np.allclose(a, b) for a in expert_colours for b in family_colours)
    assert P.plot_route_history(hist, tmp_path / "r.png", fam).read_bytes()[:4] == PNG
    # nothing to draw: a history without routes (older runs) or one expert
    assert P.route_history_figure([{"step": 0, "routes": [4]}]) is None
    assert P.route_history_figure([{"step": 0, "route": [0, 0], "routes": [2]}]) is None
