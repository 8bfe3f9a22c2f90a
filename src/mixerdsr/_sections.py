"""The settings sections of a run configuration, one frozen dataclass per concern, each
validating itself: ``[data]``, ``[model]``, ``[train]``, ``[adapt]``, ``[evaluation]`` (the
``[gate]`` and ``[solver]`` sections live with their code: :mod:`mixerdsr.routing`,
:mod:`mixerdsr.experts`). :class:`~mixerdsr.Config` composes them."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from ._settings import AT_LEAST_0, AT_LEAST_1, POSITIVE, SEED, Range, SettingError, validate
from .experts import BACKBONES
from .experts._base import AbstractInnerLoopExpert
from .experts._integrate import SolverSettings
from .routing import GateSettings

__all__ = ["DataSettings", "ModelSettings", "TrainSettings", "AdaptSettings", "EvalSettings", "SECTIONS"]

#: with ``train.batch_envs = 0``, every training step takes at least this many environments
#: (all of a smaller set; more where E / M is larger; :meth:`TrainSettings.batch`)
MIN_BATCH_ENVS = 16


@typing.no_type_check  # validates itself, naming the key
@dataclasses.dataclass(frozen=True)
class DataSettings:
    """Which data a run trains on (``[data]``).

    Attributes:
        source: built-in dataset name, a dataset ``.npz`` path, or for series an
            Epilepsy2-style ``.ts`` / SCCTS ``.data`` path.
        seed: generator seed of a built-in dataset (None = the dataset's default).
        test_file: Epilepsy2: a full test ``.ts`` file used as the held-out set.
        standardize: series datasets: per-time-column standardisation with training statistics.
        time_stride: train on every ``time_stride``-th time point.
        val_trajectories: trajectories per training env held out for model selection (0 =
            select on the training data).
        envs_per_family: keep only the first this many environments of each family in every
            split (0 = all): a quick try-out, or the reproduction harness's ``smoke`` budget.
        test_trajectories: keep only the first this many trajectories of each environment of
            the ``test`` and ``adapt_test`` splits (0 = all).
        clean: ODE family datasets: generate with the leak-free protocol (``true``) or the
            paper's (``false``) whatever the family file says (None = as the file says).
    """

    source: str = "odebench-2"
    seed: int | None = None
    test_file: str | None = None
    standardize: bool = True
    time_stride: int = 1
    val_trajectories: int = 1
    envs_per_family: int = 0
    test_trajectories: int = 0
    clean: bool | None = None

    def __post_init__(self):
        validate(
            self,
            "data",
            ranges={
                "seed": SEED,
                "time_stride": AT_LEAST_1,
                "val_trajectories": AT_LEAST_0,
                "envs_per_family": AT_LEAST_0,
                "test_trajectories": AT_LEAST_0,
            },
        )


@typing.no_type_check  # validates itself, naming the key
@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """The MixER layer (``[model]``; the backbone's own settings in ``[model.<backbone>]``).

    Attributes:
        backbone: ``geps``, ``coda``, ``ncf``, ``shplrnn``, ``cavia`` (a single meta-learner:
            ``num_experts = 1``) or a name given to :func:`~mixerdsr.register_expert`.
        num_experts: the number of experts ``M``.
        context_size: full context length ``d_ctx``.
        split_context: each expert sees its own ``d_ctx / M`` slice of the context (needs
            ``d_ctx`` divisible by ``M``).
        shift_context: the slice is shifted by the expert's index (paper's context shifting).
        same_init: all experts start identical.
        expert: the backbone's settings (an instance of ``BACKBONES[backbone].Settings``;
            None = its defaults).
    """

    backbone: str = "geps"
    num_experts: int = 2
    context_size: int = 40
    split_context: bool = True
    shift_context: bool = True
    same_init: bool = True
    expert: Any = None

    def __post_init__(self):
        validate(
            self,
            "model",
            choices={"backbone": tuple(BACKBONES)},
            ranges={"num_experts": AT_LEAST_1, "context_size": AT_LEAST_1},
        )
        settings_cls = BACKBONES[self.backbone].Settings
        if self.expert is None:
            object.__setattr__(self, "expert", settings_cls())
        elif type(self.expert) is not settings_cls:
            raise SettingError(
                "model.expert",
                f"backbone {self.backbone!r} takes {settings_cls.__name__}, found {type(self.expert).__name__}",
            )
        if issubclass(BACKBONES[self.backbone], AbstractInnerLoopExpert) and self.num_experts != 1:
            raise SettingError(
                "model.num_experts",
                f"backbone {self.backbone!r} is a single meta-learner (its contexts come from an inner "
                f"loop, which the gate cannot route): set model.num_experts = 1, found {self.num_experts}",
            )
        if self.split_context and self.context_size % self.num_experts:
            raise SettingError(
                "model.context_size",
                f"{self.context_size} is not divisible by model.num_experts = {self.num_experts}, as context "
                f"splitting needs: set it to a multiple of {self.num_experts} (e.g. "
                f"{-(-self.context_size // self.num_experts) * self.num_experts}; `mixerdsr run --experts M` "
                "without --context-size does that), or model.split_context = false",
            )


@typing.no_type_check  # validates itself, naming the key
@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Training by proximal alternating minimisation (``[train]``).

    Attributes:
        outer_steps: outer steps (each ``inner_steps`` context steps, then weight steps).
        inner_steps: ``K``, inner steps per outer step.
        proximal_beta: weight of the proximal term pulling contexts and weights towards their
            values at the start of the outer step (the paper: 10; 0 by default, see
            ``docs/training.md``).
        lr_contexts, lr_weights: AdaBelief learning rates.
        lr_decay: the weights' rate is multiplied by it at 1/3 and 2/3 of training.
        optimizer: ``"adabelief"`` (the paper's) or ``"adam"``, for contexts and weights.
        clip_norm: the weights' gradient is clipped to this global norm before the optimiser
            (0 = no clipping).
        forcing: vector-field experts: each interval of the time grid is integrated from
            ``a * predicted + (1 - a) * observed`` state, ``a`` rising linearly from ``forcing``
            to 1 (free running) over the first ``forcing_steps`` of the outer steps: short
            segments first, whole rollouts later (generalised teacher forcing for flows).
            1 = free running throughout. Validation and evaluation always run free.
        forcing_steps: the fraction of ``outer_steps`` over which ``a`` reaches 1.
        schedule: ``"steps"`` (the paper's: the rate falls by ``lr_decay`` at 1/3 and 2/3 of
            ``outer_steps``, and every outer step runs) or ``"plateau"`` (the rate falls by
            ``lr_decay`` at each validation plateau; the plateau after ``lr_drops`` drops ends
            training, ``outer_steps`` is then a maximum). See ``mixerdsr._stopping``.
        patience: validation checks without a relative improvement of ``min_improvement``
            that make a plateau (also what ``converged`` in ``metrics.json`` means).
        min_improvement: relative improvement of the best validation score that counts.
        lr_drops: ``"plateau"``: plateaus that lower the rate before the next one stops.
        val_smoothing: the plateau rule judges an exponential moving average of the
            validation score with this weight on the newest one (1 = the raw score; model
            selection always uses the raw score).
        time_budget: seconds of training, all sittings together (0 = no limit): the run stops
            at the best model reached when the budget is spent (``--time-budget 20m``).
        divergence_guard: two outer steps in a row whose mean context or weight loss is
            non-finite or above this many times the median of the last 20 sound steps' are
            taken back: the state returns to where it was before the step preceding them, and
            the rates of contexts and weights are halved (one such step alone is left to
            recover, as most do); they double back after every 20 sound steps in a row, and ten
            halvings in force stop training (``"diverged"``) at the best model so far. 0 = no
            guard. Without it, blown-up losses left whole runs at losses of 1e30
            (``docs/training.md``, "Divergence guard").
        batch_envs: environments per training batch; 0: E / M, the paper's, but at least
            ``MIN_BATCH_ENVS`` (16) and at most all of them (:meth:`batch`).
        env_weight_power: ``p``: each environment's loss is multiplied by ``s_e^-p``, where
            ``s_e`` is the mean squared norm of its training states (weights normalised to
            mean 1): 0 (the paper) counts every environment alike, 1 makes the loss scale-free
            across environments as Eq. 9's relMSE is. The gate and validation are unchanged.
            Measured on ODEBench-10B in ``docs/routing.md``.
        teacher_forcing: sequence experts: the generalised teacher-forcing ``alpha`` of the
            training loss (1 = free running); also used to adapt and to report a
            teacher-forced error.
        self_modulation_pool: experts with contextual self-modulation (NCF): contexts per env
            that its loss expands around (itself and its nearest batch members).
        context_penalty: ``lambda``: the context steps minimise each env's loss plus
            ``lambda * mean|c_e|`` (an L1 prior on the contexts, as the NCF authors train;
            0: none). The mean runs over all ``context_size`` dimensions, so with a split
            context each expert's slice feels ``lambda / M``. Experts trained by an inner loop
            (CAVIA) have no context steps and ignore it. Adaptation has its own,
            ``adapt.context_penalty``.
        select_on: the validation score that selects the model and drives the plateau rule:
            ``"traj_rel_l2"`` (the mean over trajectories of ``||pred - true|| / ||true||``: a
            state near zero cannot dominate it, as it can Eq. 9; the default, measured in
            ``docs/training.md``), ``"rel_mse"`` (Eq. 9, the paper's), ``"mse"``, or
            ``"d_stsp"`` (the validation trajectories' state-space divergence, for chaotic data,
            where any forecast leaves its trajectory after a few Lyapunov times and trajectory
            errors say little about the attractor; needs long validation trajectories). Every
            score is recorded in the history either way.
        val_every: validation (model selection) every this many outer steps.
        checkpoint_every: checkpoint every this many outer steps.
        seed: training seed.
        low_memory_compile: compile the training step without XLA's CPU fusion emitters: a
            lower compilation peak for slower gradient steps (see ``docs/performance.md``);
            no effect on GPUs.
        devices: devices the environments are spread over (0 = every device JAX sees;
            :mod:`mixerdsr.sharding`). Results equal one device's up to the order of
            floating-point sums, and a run resumes on any device count.
        split_experts: over several devices, the gate's all-expert loss pass gives each device
            a share of the experts (each solving every environment) instead of a share of
            every batch of environments: for many experts and small batches.
    """

    outer_steps: int = 300
    inner_steps: int = 12
    proximal_beta: float = 0.0
    lr_contexts: float = 1e-3
    lr_weights: float = 3e-3
    lr_decay: float = 0.4
    optimizer: str = "adabelief"
    clip_norm: float = 1.0
    forcing: float = 1.0
    forcing_steps: float = 0.5
    schedule: str = "steps"
    patience: int = 5
    min_improvement: float = 0.01
    lr_drops: int = 2
    val_smoothing: float = 1.0
    time_budget: float = 0.0
    divergence_guard: float = 1000.0
    batch_envs: int = 0
    env_weight_power: float = 0.0
    teacher_forcing: float = 0.5
    self_modulation_pool: int = 2
    context_penalty: float = 0.0
    select_on: str = "traj_rel_l2"
    val_every: int = 10
    checkpoint_every: int = 25
    seed: int = 0
    low_memory_compile: bool = False
    devices: int = 0
    split_experts: bool = False

    def __post_init__(self):
        validate(
            self,
            "train",
            choices={
                "optimizer": ("adabelief", "adam"),
                "schedule": ("steps", "plateau"),
                "select_on": ("rel_mse", "mse", "traj_rel_l2", "d_stsp"),
            },
            ranges={
                **dict.fromkeys(
                    ("outer_steps", "inner_steps", "self_modulation_pool", "val_every", "checkpoint_every"), AT_LEAST_1
                ),
                "proximal_beta": AT_LEAST_0,
                "context_penalty": AT_LEAST_0,
                "lr_contexts": POSITIVE,
                "lr_weights": POSITIVE,
                "lr_decay": Range(0, 1, open_low=True),
                "clip_norm": AT_LEAST_0,
                "forcing": Range(0, 1),
                "forcing_steps": Range(0, 1, open_low=True),
                "patience": AT_LEAST_1,
                "min_improvement": Range(0, 1),
                "lr_drops": AT_LEAST_0,
                "val_smoothing": Range(0, 1, open_low=True),
                "time_budget": AT_LEAST_0,
                "divergence_guard": AT_LEAST_0,
                "batch_envs": AT_LEAST_0,
                "env_weight_power": Range(0, 1),
                "teacher_forcing": Range(0, 1),
                "seed": SEED,
                "devices": AT_LEAST_0,
            },
        )
        if self.outer_steps * self.inner_steps >= 2**31:  # optimiser step counts are int32
            raise SettingError(
                "train.outer_steps",
                f"expected outer_steps x inner_steps below 2**31, found {self.outer_steps} x {self.inner_steps} "
                '(use train.time_budget or train.schedule = "plateau" to train until convergence)',
            )

    def batch(self, n_envs: int, n_experts: int) -> int:
        """Environments per training batch of ``n_envs`` envs and ``n_experts`` experts:
        ``batch_envs`` when set, else E / M (the paper's) raised to ``MIN_BATCH_ENVS``, and
        never more than all envs.

        With E / M, each expert of a MixER whose E / M is small sees about one of its own
        environments per weight step and its updates are noisy. At least 16 per step was
        measured on small sets (all of them) and on the held-out sets of 25 and 40 (16 instead
        of 5: lower test trajectory error on 5 of 6 runs, 2-3x the time; docs/training.md,
        "Batches", and docs/defaults.md).
        """
        if self.batch_envs:
            return min(self.batch_envs, n_envs)
        return min(n_envs, max(MIN_BATCH_ENVS, n_envs // max(n_experts, 1)))


@typing.no_type_check  # validates itself, naming the key
@dataclasses.dataclass(frozen=True)
class AdaptSettings:
    """Adaptation to new environments, weights and gate frozen (``[adapt]``).

    Attributes:
        steps, lr: AdaBelief steps and learning rate per context (3e-3: measured against 1e-2
            and 1e-3 on finished runs of six datasets, ``docs/adaptation.md``).
        init: ``"experts"``: fit from the zero context and from each expert's mean training
            context and keep per env the best expert's fit (:func:`~mixerdsr.adapt_new`: each
            env's expert, runner-up and confidence are reported); ``"zeros"``: the paper's
            single start; ``"mean"``: the mean training context.
        screen_steps: with ``init = "experts"``: steps of every start's first fit; the best
            ``keep`` experts' fits of every env continue to ``steps``.
        keep: experts refined per environment.
        joint: one optimiser for all new environments instead of one each (``init`` zeros/mean).
        context_penalty: ``lambda * mean|c|`` added to every fit's loss (an L1 prior on the
            contexts; 0: none).
        starts_per_expert: with ``init = "experts"``: starts per expert in use, its mean
            training context and ``n - 1`` centres of a K-means of its training contexts
            (:func:`~mixerdsr.expert_starts`).
        choice_prior: with ``init = "experts"``: ``lambda`` of the choice between the refined
            fits, which keeps the lowest ``relative loss + lambda * z^2`` (``z``: the fit's
            standardised distance from its expert's training contexts; 0: the lowest loss).
    """

    steps: int = 500
    lr: float = 3e-3
    init: str = "experts"
    screen_steps: int = 25
    keep: int = 2
    joint: bool = False
    context_penalty: float = 0.0
    starts_per_expert: int = 1
    choice_prior: float = 0.0

    def __post_init__(self):
        validate(
            self,
            "adapt",
            choices={"init": ("zeros", "mean", "experts")},
            ranges={
                "steps": AT_LEAST_1,
                "lr": POSITIVE,
                "screen_steps": AT_LEAST_1,
                "keep": AT_LEAST_1,
                "context_penalty": AT_LEAST_0,
                "starts_per_expert": AT_LEAST_1,
                "choice_prior": AT_LEAST_0,
            },
        )


@typing.no_type_check  # validates itself, naming the key
@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """Evaluation (``[evaluation]``).

    Attributes:
        tprmse_eps: error threshold of TPRMSE (the share of time steps predicted within it).
    """

    tprmse_eps: float = 0.1

    def __post_init__(self):
        validate(self, "evaluation", ranges={"tprmse_eps": POSITIVE})


#: section name -> settings class
SECTIONS: dict[str, type] = {
    "data": DataSettings,
    "model": ModelSettings,
    "gate": GateSettings,
    "train": TrainSettings,
    "solver": SolverSettings,
    "adapt": AdaptSettings,
    "evaluation": EvalSettings,
}
