"""Downstream use of learned contexts (paper Section 4.3): clustering and classification.

:func:`run_downstream` is the hook of the main job: it picks the analysis by dataset name
(``meta["name"]``), returns the ``metrics.json["downstream"]`` section and writes the PCA
figures. Datasets without a downstream task return ``(None, [])``.

SCCTS (unsupervised discovery, Figure 6): K-means with 6 clusters on the learned training
contexts, scored against the six true classes by adjusted Rand index and Hungarian-matched
accuracy; the same K-means on the raw (standardised) series as the baseline; expert routes
scored by purity and ARI against the three families {A,B}, {C,D}, {E,F} and the six classes.
K-means is scikit-learn's (k-means++, ``n_init = 10``, seeded with the run seed). The paper's
Figure 6 initialises K-means at the ground-truth class means; that (supervised) variant is
reported too, under ``*_gtinit_*`` keys.

Epilepsy2 (Figure 7): a logistic regression trained on the training contexts (labels = the
file's class labels) and scored on the contexts adapted to the held-out series; the same
classifier on the raw series as a baseline.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics as M
from .data import EnvData

__all__ = ["run_downstream", "sccts_downstream", "epilepsy2_downstream", "kmeans_scores"]


def _pca2(fit_on: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    from sklearn.decomposition import PCA

    k = min(2, fit_on.shape[1], fit_on.shape[0])
    pca = PCA(n_components=k).fit(fit_on)
    out = []
    for a in (fit_on, *arrays):
        p = pca.transform(a)
        out.append(np.pad(p, ((0, 0), (0, 2 - k))))  # a 1-D context still plots
    return out


def kmeans_scores(
    x: np.ndarray, labels: np.ndarray, n_clusters: int, *, seed: int = 0, init_means: np.ndarray | None = None
) -> tuple[dict[str, float], np.ndarray]:
    """K-means on ``x [N, F]`` scored against ``labels``: ``({"ari", "accuracy"}, assignment)``.

    ``init_means`` (``[n_clusters, F]``) starts K-means there (one run) instead of k-means++.
    """
    from sklearn.cluster import KMeans

    if init_means is None:
        km = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed)
    else:
        km = KMeans(n_clusters=n_clusters, init=init_means, n_init=1, random_state=seed)
    assign = km.fit_predict(np.asarray(x, np.float64))
    return {"ari": M.adjusted_rand_index(assign, labels), "accuracy": M.matched_accuracy(assign, labels)}, assign


def _class_means(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.stack([x[labels == c].mean(0) for c in np.unique(labels)])


def _routing(routes: np.ndarray, labels: np.ndarray, n_experts: int) -> dict[str, Any]:
    n_lab = int(labels.max()) + 1 if labels.size else 0
    table = np.zeros((n_experts, n_lab), int)
    np.add.at(table, (routes[labels >= 0], labels[labels >= 0]), 1)
    return {"purity": M.purity(routes, labels), "ari": M.adjusted_rand_index(routes, labels), "table": table.tolist()}


def sccts_downstream(
    train: EnvData,
    contexts: np.ndarray,
    routes: np.ndarray,
    n_experts: int,
    *,
    seed: int = 0,
    superfamily: np.ndarray | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """SCCTS scores; returns ``(metrics, labelings)`` (``labelings``: K-means assignments for plots).

    Keys: ``context_kmeans_ari``, ``context_kmeans_accuracy``, ``raw_kmeans_ari``,
    ``raw_kmeans_accuracy`` (as many clusters as classes present: 6 on the full set), ``*_gtinit_*`` (K-means started at
    the true class means, as Figure 6), ``context_kmeans3_family_ari``/``raw_kmeans3_family_ari``
    (as many clusters as families: 3), ``routing_families`` and ``routing_classes`` (purity, ARI
    and the experts x labels table).
    """
    from .data import SCCTS_SUPERFAMILY

    classes = np.asarray(train.family)
    fams = np.asarray(superfamily) if superfamily is not None else np.asarray(SCCTS_SUPERFAMILY)[classes]
    ctx = np.asarray(contexts, np.float64)
    raw = train.x[:, 0].reshape(train.n_envs, -1).astype(np.float64)
    n_classes, n_fams = len(np.unique(classes)), len(np.unique(fams))  # 6 and 3 on the full set
    out: dict[str, Any] = {"n_classes": n_classes, "n_families": n_fams}
    labelings: dict[str, np.ndarray] = {}
    for name, feats in (("context", ctx), ("raw", raw)):
        s, a = kmeans_scores(feats, classes, n_classes, seed=seed)
        out[f"{name}_kmeans_ari"], out[f"{name}_kmeans_accuracy"] = s["ari"], s["accuracy"]
        labelings[f"{name}_kmeans"] = a
        s, _ = kmeans_scores(feats, classes, n_classes, seed=seed, init_means=_class_means(feats, classes))
        out[f"{name}_kmeans_gtinit_ari"], out[f"{name}_kmeans_gtinit_accuracy"] = s["ari"], s["accuracy"]
        s, _ = kmeans_scores(feats, fams, n_fams, seed=seed)
        out[f"{name}_kmeans3_family_ari"], out[f"{name}_kmeans3_family_accuracy"] = s["ari"], s["accuracy"]
    out["routing_families"] = _routing(routes, fams, n_experts)
    out["routing_classes"] = _routing(routes, classes, n_experts)
    return out, labelings


def epilepsy2_downstream(
    train: EnvData,
    held_out: EnvData,
    contexts: np.ndarray,
    adapted: np.ndarray,
    routes: np.ndarray,
    adapted_routes: np.ndarray,
    n_experts: int,
    *,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Epilepsy2 scores: ``logreg_accuracy`` (held-out contexts), ``logreg_train_accuracy``,
    ``raw_logreg_accuracy``/``raw_logreg_train_accuracy`` (the same on the raw series), routing
    purity/ARI on training and held-out series. Held-out series without labels (``-1``) are
    left out of the held-out scores."""
    from sklearn.linear_model import LogisticRegression

    ytr, yte = np.asarray(train.family), np.asarray(held_out.family)
    known = yte >= 0
    out: dict[str, Any] = {
        "n_train": int(ytr.size),
        "n_held_out": int(yte.size),
        "n_held_out_labelled": int(known.sum()),
    }
    labelings: dict[str, np.ndarray] = {}
    raw_tr = train.x[:, 0].reshape(train.n_envs, -1)
    raw_te = held_out.x[:, 0].reshape(held_out.n_envs, -1)
    for name, ftr, fte in (("", contexts, adapted), ("raw_", raw_tr, raw_te)):
        clf = LogisticRegression(max_iter=5000, random_state=seed).fit(np.asarray(ftr, np.float64), ytr)
        pred = clf.predict(np.asarray(fte, np.float64))
        out[f"{name}logreg_train_accuracy"] = float(clf.score(np.asarray(ftr, np.float64), ytr))
        out[f"{name}logreg_accuracy"] = float(np.mean(pred[known] == yte[known])) if known.any() else None
        labelings[f"{name}logreg_pred"] = pred
    out["routing_train"] = _routing(routes, ytr, n_experts)
    out["routing_held_out"] = _routing(np.asarray(adapted_routes), yte, n_experts)
    return out, labelings


def run_downstream(
    out: Path,
    meta: Mapping[str, Any],
    splits: Mapping[str, EnvData],
    contexts,
    routes,
    adapted=None,
    adapted_routes=None,
    *,
    n_experts: int,
    seed: int = 0,
) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
    """The downstream section of a run and its figures ``[(caption, file name)]``.

    Chooses the analysis by ``meta["name"]``: ``"sccts"`` or ``"epilepsy2"``; anything else
    gives ``(None, [])``.
    """
    from .plots import plot_context_pca

    name = str(meta.get("name", "")).lower()
    contexts, routes = np.asarray(contexts), np.asarray(routes)
    source = meta.get("source")
    info = {"dataset": name, "data_source": source, "data": "generator" if source == "generator" else "file"}
    if name == "sccts":
        train = splits["train"]
        sup = meta.get("superfamily")
        res, lab = sccts_downstream(
            train, contexts, routes, n_experts, seed=seed, superfamily=None if sup is None else np.asarray(sup)
        )
        (pts,) = _pca2(contexts)
        names = train.family_names
        plot_context_pca(
            out / "contexts_pca.png",
            pts,
            [
                ("true classes", train.family, names),
                (f"K-means on contexts (ARI {res['context_kmeans_ari']:.2f})", lab["context_kmeans"], None),
                (f"expert routes (family ARI {res['routing_families']['ari']:.2f})", routes, None),
            ],
            title="SCCTS: PCA of the learned contexts",
        )
        return {**info, **res}, [("PCA of the learned contexts (cf. paper Figure 6)", "contexts_pca.png")]
    if name == "epilepsy2" and adapted is not None:
        train, held = splits["train"], splits.get("adapt_test", splits["adapt_train"])
        adapted, adapted_routes = np.asarray(adapted), np.asarray(adapted_routes)
        res, lab = epilepsy2_downstream(train, held, contexts, adapted, routes, adapted_routes, n_experts, seed=seed)
        pts_tr, pts_te = _pca2(contexts, adapted)
        pts = np.concatenate([pts_tr, pts_te])
        groups = np.r_[np.zeros(len(pts_tr), int), np.ones(len(pts_te), int)]
        names = train.family_names
        acc = res["logreg_accuracy"]
        plot_context_pca(
            out / "contexts_pca.png",
            pts,
            [
                ("true labels", np.r_[train.family, held.family], names),
                ("expert routes", np.r_[routes, adapted_routes], None),
            ],
            markers=groups,
            title="Epilepsy2: PCA of contexts"
            + (f" (logistic regression held-out accuracy {acc:.2f})" if acc is not None else ""),
        )
        return {**info, **res}, [("PCA of training and held-out contexts (cf. paper Figure 7)", "contexts_pca.png")]
    return None, []
