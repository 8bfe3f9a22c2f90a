"""The ``[gate]`` table: how the gate is trained and how routes are seeded."""

from __future__ import annotations

import dataclasses
import typing

from .._settings import AT_LEAST_0, AT_LEAST_1, Range, validate

__all__ = ["GateSettings", "WarmStartSettings"]


@typing.no_type_check  # validates itself, naming the key
@dataclasses.dataclass(frozen=True)
class WarmStartSettings:
    """The warm start, the ``[gate.warm_start]`` table (used with ``gate.router = "warm_start"``).

    For ``warmup`` outer steps every env is routed to one expert and the gate is not updated;
    then the routes are **seeded** from the contexts this shared expert learned (grouped as
    ``method`` says), every expert starts from it (``seed_from``) and every env's context is
    moved into its expert's part. The paper's start clusters near-zero contexts at
    initialisation and, with split contexts, each env's context then only ever learns in the
    part of the expert it was first routed to, which locks those first (noise-driven) routes in;
    contexts learned by one shared expert separate the families instead.

    Attributes:
        warmup: outer steps of the warm-up (0: 100, or a fifth of a shorter run; a third when
            the warm-up chooses the number of experts; :func:`~mixerdsr.routing.auto_warmup`).
        batch: envs per training batch during the warm-up: 0 = the training batch
            (``train.batch_envs``; by default E / M, but at least 16 and at most all envs),
            -1 = all envs, else that many. The warm-up trains one expert; with E / M envs it
            sees a tenth of the data per step that a single meta-learner would with M = 10 (on
            LV, `--experts auto` choosing one expert ended at 2.4x the single meta-learner's
            test MSE with E / 3, the same with all envs).
        seed_from: the experts' weights when the routes are seeded: ``"shared"`` (copies of the
            warm-up's shared expert) or ``"init"`` (every expert back to its initial weights and
            its optimiser moments to zero; the routes and contexts the warm-up found are kept).
            Measured in ``docs/routing.md``.
        fresh_moments: the weights' optimiser starts afresh at the seeding (its moments and
            bias-correction count to zero, the learning-rate schedule kept; the default), instead
            of each expert keeping the moments of the shared expert it was copied from (false:
            how every warm start ran until 2026-12-07; with ``seed_from = "init"``, zeroed
            moments under the old count, whose first steps are several times the rate). Copied
            moments hold the whole set's gradient scale, so an expert left with a small-scale
            family steps far below its rate for about ``1 / (1 - b2)`` steps: on ODEBench-2 the
            test trajectory error fell 3x with fresh moments (``docs/defaults.md``, "A fresh
            optimiser at the seeding").
        grouping: ``"fixed"`` (``model.num_experts`` groups) or ``"silhouette"``
            (``mixerdsr run --experts auto``): the number of experts is chosen at the seeding,
            up to ``model.num_experts``: the number of groups the shared expert's contexts fall
            into most clearly (mean silhouette, :func:`~mixerdsr.routing.choose_count`; see
            ``silhouette_slack``), or one expert when no grouping reaches ``silhouette_min``; the
            other experts are switched off (never routed to, left out of every gate update); or
            ``"eigengap"``: the count is the largest eigengap of the normalised Laplacian of the
            contexts' nearest-neighbour graph (:func:`~mixerdsr.routing.eigengap_count`),
            ``silhouette_min`` and ``silhouette_slack`` unused.
        method: how the contexts are grouped: ``"kmeans"`` (L1 K-means, the best of
            ``restarts``) or ``"spectral"`` (the default: the same K-means on a spectral embedding of the
            contexts' nearest-neighbour graph, :func:`~mixerdsr.routing.spectral_embedding`).
            One family's environments vary along one or two physical parameters, so its
            contexts lie along a curve: K-means cuts a long curve in two and merges two short
            ones, the graph follows it (measured on ODEBench-10B in ``docs/routing.md``). With
            ``grouping = "silhouette"`` the number of groups is still chosen by K-means; the
            chosen number of groups is then formed by this method.
        restarts: K-means restarts (k-means++ starts, the lowest L1 inertia kept).
        neighbours: ``method = "spectral"``: neighbours per environment in the graph (0: the mean
            group size, 3 to 15, :func:`~mixerdsr.routing.auto_neighbours`); ``grouping =
            "eigengap"``: also the count's graph (0: 3, :func:`~mixerdsr.routing.eigengap_count`).
        silhouette_min: ``grouping = "silhouette"``: the mean silhouette a grouping needs to be
            used (0.5: at least "reasonable structure" in Kaufman and Rousseeuw's scale).
        silhouette_slack: ``grouping = "silhouette"``: the largest number of groups whose mean
            silhouette is within this of the highest is chosen (0: the highest). Merging two
            families on one expert costs more than splitting one over two, and on
            ODEBench-10A/10B the silhouette is nearly flat from 7 to 10 groups (figures in
            ``docs/routing.md``).
        single_fit: ``grouping = "silhouette"``: when the warm-up's shared expert already
            forecasts the validation trajectories of every group of contexts with a typical
            relMSE (geometric mean over the group's envs) below this, it stays the only expert
            whatever its contexts look like: closely related systems (LV, GO) share one expert,
            families it cannot fit are split (0 = always by the silhouette; figures in
            ``docs/routing.md``).
    """

    warmup: int = 0
    batch: int = 0
    seed_from: str = "shared"
    fresh_moments: bool = True
    grouping: str = "fixed"
    method: str = "spectral"
    restarts: int = 10
    neighbours: int = 0
    silhouette_min: float = 0.5
    silhouette_slack: float = 0.1
    single_fit: float = 0.5

    def __post_init__(self):
        validate(
            self,
            "gate.warm_start",
            choices={
                "seed_from": ("shared", "init"),
                "grouping": ("fixed", "silhouette", "eigengap"),
                "method": ("kmeans", "spectral"),
            },
            ranges={
                "warmup": AT_LEAST_0,
                "batch": Range(-1),
                "restarts": AT_LEAST_1,
                "neighbours": AT_LEAST_0,
                "silhouette_min": Range(-1, 1),
                "silhouette_slack": Range(0, 2),
                "single_fit": AT_LEAST_0,
            },
        )


@typing.no_type_check  # validates itself, naming the key
@dataclasses.dataclass(frozen=True)
class GateSettings:
    """Settings of the gate, the ``[gate]`` table of a run configuration.

    The defaults are the routing measured best on data no preset was tuned for (held-out
    ODEBench families, ``docs/defaults.md``): a warm start on one shared expert, the experts
    seeded as its copies from a spectral grouping of its contexts, overlap pairing. The paper's
    Algorithm 1 is ``router = "from_start"``, ``pairing = "greedy"``, ``centroid_init =
    "uniform"``, ``empty_cluster = "skip"``.

    Attributes:
        mode: how the gate is trained: ``"lstsq"`` (MixER: K-means + least squares,
            Algorithm 1), ``"gradient"`` (a naive mixture of experts: the gate gets the loss's
            gradient) or ``"frozen"`` (never updated).
        every: least-squares update after every ``every``-th inner step (paper: 1; the number
            of inner steps = once per outer step).
        kmeans_iters: maximum Lloyd iterations (paper: 20).
        kmeans_tol: convergence tolerance on the largest centroid change (paper: 1e-3).
        noise: std of the Gaussian noise added to the contexts before the fit (paper: 1e-4).
        centroid_init: centroid initialisation: ``"data"`` (Forgy: distinct random data
            points), ``"kmeans++"`` (L1 k-means++), or ``"uniform"`` (the paper's
            U(-1e-3, 1e-3)).
        empty_cluster: empty-cluster policy: ``"reseed"`` (move the centroid to the farthest
            point) or ``"skip"`` (the paper: skip this update and restart centroids next time).
        reassign: 0 (the paper) or a ratio in (0, 1]: after the cluster-expert pairing, an env
            whose loss under some other expert is below ``reassign`` times its loss under its
            cluster's expert gets that expert as its target instead. Algorithm 1 decides per
            cluster, so an env that K-means keeps among another family's contexts stays on the
            wrong expert for good (its context is then only trained by that expert); this lets
            the per-env losses, which Algorithm 1 computes anyway, overrule a clear misfit.
            Identical experts (as at initialisation) never trigger it, and moves that would
            leave an expert without envs are not made.
        chunk: envs per vmapped batch of the update's all-expert loss pass (0 = all at once;
            -1 = the training batch size, whose compiled solver kernels the pass then shares
            with the training step, or 32 with ``train.low_memory_compile``). A vmapped
            adaptive solve runs every member to the slowest one's step count, so on a CPU
            batches are faster than one batch of all envs; an accelerator may prefer 0.
        importance_weight: ``mode = "gradient"`` only: weight of the load-balancing
            (importance) penalty.
        pairing: how the K-means clusters get their experts: ``"greedy"`` (the paper: in
            cluster order, the not yet taken expert with the lowest median loss) or
            ``"overlap"`` (the expert already routing most of the cluster's envs, matched
            greedily by largest overlap; :func:`overlap_pairing`). Early in training the
            experts' losses differ by less than their noise (contexts barely change the fit
            yet), so the paper's pairing relabels clusters at random and, with split contexts,
            every relabelled env restarts from an untrained context part; ``"overlap"`` changes
            an env's expert only where the clustering itself changed.
        router: when the gate's update runs and how the routes start (the routing policy,
            :func:`~mixerdsr.routing.policy_of`): ``"from_start"`` (the paper: the update from
            the first outer step) or ``"warm_start"`` (every env on one shared expert first, then
            the routes seeded from its contexts; its settings are the table
            ``[gate.warm_start]``, :class:`WarmStartSettings`). Only the least-squares gate
            with several experts has a warm start.
        warm_start: the settings of ``router = "warm_start"`` (also the ones ``mixerdsr run
            --experts auto`` uses when it switches the warm start on).
    """

    mode: str = "lstsq"
    every: int = 1
    kmeans_iters: int = 20
    kmeans_tol: float = 1e-3
    noise: float = 1e-4
    centroid_init: str = "data"
    empty_cluster: str = "reseed"
    reassign: float = 0.0
    chunk: int = -1
    importance_weight: float = 0.1
    pairing: str = "overlap"
    router: str = "warm_start"
    warm_start: WarmStartSettings = dataclasses.field(default_factory=lambda: WarmStartSettings())

    def __post_init__(self):
        validate(
            self,
            "gate",
            choices={
                "mode": ("lstsq", "gradient", "frozen"),
                "centroid_init": ("data", "kmeans++", "uniform"),
                "empty_cluster": ("reseed", "skip"),
                "pairing": ("greedy", "overlap"),
                "router": ("from_start", "warm_start"),
            },
            ranges={
                "every": AT_LEAST_1,
                "kmeans_iters": AT_LEAST_1,
                "kmeans_tol": AT_LEAST_0,
                "noise": AT_LEAST_0,
                "reassign": Range(0, 1),
                "chunk": Range(-1),
                "importance_weight": AT_LEAST_0,
            },
        )
