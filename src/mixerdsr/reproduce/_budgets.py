"""What a cell runs: the settings of each budget and variant on top of the dataset's preset,
and the widths that match the paper's active parameter counts."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

from .._sections import MIN_BATCH_ENVS
from ._tables import _T4, BUDGETS, CLEAN, Cell, preset_of

_CPU = {
    "fig2": {"gate.every": 12, "train.outer_steps": 300},
    "table2": {"gate.every": 12, "train.outer_steps": 250, "gate.warm_start.warmup": 100, "adapt.steps": 200},
    "table3": {"gate.every": 12, "train.outer_steps": 200, "gate.warm_start.warmup": 80, "adapt.steps": 200},
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
#: Table 4 at the paper's sizes (``converged``, ``paper``): network shapes of the published runs
#: where they are known and differ from ours, the width then matched to the parameter count;
#: keyed by ``(data, backbone)`` for every variant or ``(data, backbone, variant)`` for one.
#: LV CoDA: the CoDA authors' 3 hidden layers (of 224) instead of 2 (of 316) at the same count;
#: converged, seed 0: test MSE 2.41e-5 instead of 6.76e-5 (results.md, Converged).
#: Single NCF (the NCF authors' runs behind the NCF* row): data and context networks of 3
#: layers (context r -> r/4 -> 64 -> 64, data D -> 64 -> 64 -> 64), a main network of 4 layers
#: of 64, contexts of 1024 (LV: 308,226 parameters, published 308,240 with learnable Swish
#: slopes) and 256 (SM: 49,986 for 50,000); GO: the same with layers of 122 and contexts of 256
#: (context 256 -> 64 -> 122 -> 122). LV MixER-NCF: the same networks with each expert's 512
#: contexts (512 -> 480 -> 64 -> 64, main network of 66: 307,189 for the published 307,245). The
#: MixER paper's shallow branches hold the count in a main network of about 500, 18 s per outer
#: step here against 0.9 (2026-12-07); GO and SM MixER-NCF keep them (they need a GPU either way).
_NCF_AUTHORS = {"model.ncf.embed": 64, "model.ncf.branch_depth": 3, "model.ncf.depth": 4}
_T4_SHAPE: dict[tuple[str, ...], dict[str, Any]] = {
    ("lv", "coda"): {"model.coda.depth": 4},
    ("lv", "ncf", "single"): _NCF_AUTHORS | {"model.context_size": 1024, "model.ncf.context_hidden": 256},
    ("lv", "ncf", "mixer-M"): _NCF_AUTHORS | {"model.ncf.context_hidden": 480},
    ("sm", "ncf", "single"): _NCF_AUTHORS | {"model.context_size": 256, "model.ncf.context_hidden": 64},
    ("go", "ncf", "single"): _NCF_AUTHORS
    | {"model.context_size": 256, "model.ncf.context_hidden": 64, "model.ncf.embed": 122},
}
#: Table 4: context size per expert (Section 4.2; CAVIA: the two physical parameters varied)
_T4_CONTEXT = {"ncf": 512, "coda": 2, "geps": 2, "cavia": 2}


#: a variant is a label in its table plus these settings on top of the dataset's preset (what
#: depends on the preset, the table or the budget is added by ``_variant``)
VARIANTS: dict[str, dict[str, Any]] = {
    "mixer-M": {},
    "mixer-1": {"model.num_experts": 1},
    "single": {"model.num_experts": 1},
    "mixer-M-grad": {"gate.mode": "gradient", "gate.router": "from_start"},
    # the paper's Algorithm 1 from initialisation, with the paper's proximal weight
    "mixer-M-alg1": {
        "gate.router": "from_start",
        "gate.pairing": "greedy",
        "train.proximal_beta": 10.0,
        "gate.reassign": 0.0,
    },
    "mixer-20": {"model.num_experts": 20},
    # this project's: the number of experts chosen after a warm-up
    "mixer-auto": {"gate.router": "warm_start", "gate.warm_start.grouping": "eigengap"},
}
#: ``mixer-auto``'s warm-up where neither the preset nor the budget sets one (outer steps)
_AUTO_WARMUP = {"paper": 100, "cpu": 50, "converged": 50, "smoke": 50}


@dataclasses.dataclass(frozen=True)
class BackboneChoice:
    """What the harness gives one backbone in a table at a budget, beyond the variant.

    Attributes:
        settings: settings on top of the rest.
        batch_divisor: ``train.batch_envs`` = training envs // this (0: unchanged).
        context_per_expert: ``model.context_size`` = this x the number of experts (0: unchanged).
    """

    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    batch_divisor: int = 0
    context_per_expert: int = 0


#: ``(table or "*", backbone, budget)`` -> the harness's choices for that backbone
BACKBONE_CHOICES: dict[tuple[str, str, str], BackboneChoice] = {
    # second-order steps through RK4: tasks per meta-batch as many as each MixER-3 expert sees
    # per step (E/3, not all E), 2 RK4 steps per interval (not 4)
    ("table4", "cavia", "cpu"): BackboneChoice({"model.cavia.substeps": 2}, batch_divisor=3),
    # 2 context dims per expert instead of 4 (ODEBench) or 512 (Table 4)
    ("*", "ncf", "smoke"): BackboneChoice(context_per_expert=2),
}


def settings(cell: Cell, budget: str, published_shape: bool = True) -> dict[str, Any]:
    """The settings (dotted names, on top of the dataset's preset) of ``cell`` at ``budget``
    (``published_shape=False``: Table 4 at the paper's sizes in this project's network shapes,
    without ``_T4_SHAPE``)."""
    from .._config import load_config

    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose one of {list(BUDGETS)}")
    preset = load_config(preset_of(cell.data), None, {})
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
    over |= _variant(cell, budget, preset, over)
    n_exp = over.get("model.num_experts", preset.model.num_experts)
    choice = BACKBONE_CHOICES.get((cell.table, cell.backbone, budget)) or BACKBONE_CHOICES.get(
        ("*", cell.backbone, budget), BackboneChoice()
    )
    over |= choice.settings
    if budget != "smoke":
        # the warm starts of the tables in docs/ kept the shared expert's optimiser moments at
        # the seeding (the default until 2026-12-07): pinned, so that they rerun as made
        over.setdefault("gate.warm_start.fresh_moments", False)
    n_envs = _n_train_envs(cell.data)
    if choice.batch_divisor:
        over["train.batch_envs"] = max(1, n_envs // choice.batch_divisor)
    # the paper's E / M envs per batch: at its budget and in Algorithm 1's variant (also where the
    # default trains small sets on all), and on sets of more than 16 envs as the tables in docs/
    # were made, before the default became at least 16 envs per step
    papers = budget == "paper" or cell.variant == "mixer-M-alg1"
    as_made = budget != "smoke" and n_envs > MIN_BATCH_ENVS
    if (papers or as_made) and cell.variant != "mixer-auto":
        over.setdefault("train.batch_envs", max(1, n_envs // n_exp))
    if cell.table == "table4" and budget == "converged":
        # every training env in every step, as the published single meta-learners train (the
        # paper's MixER: E / M); LV CoDA MixER-3, converged, seed 0: test MSE 3.32e-5 against
        # 1.57e-3 with batches of 3 (docs/training.md, "Batches")
        over["train.batch_envs"] = n_envs
    if cell.table == "table4" and budget in ("converged", "paper") and published_shape:
        over |= _T4_SHAPE.get((cell.data, cell.backbone, cell.variant), _T4_SHAPE.get((cell.data, cell.backbone), {}))
    if cell.table == "table4" and budget != "smoke":
        target = paper_active_parameters(cell) // (_T4_CPU_SCALE[cell.data] if budget == "cpu" else 1)
        over[f"model.{cell.backbone}.width"] = matched_width(cell.data, over, target)
    if budget == "smoke":
        over |= _SMOKE | {f"model.{cell.backbone}.width": 8, f"model.{cell.backbone}.depth": 2}
        if over.get("gate.router", preset.gate.router) == "warm_start":
            over["gate.warm_start.warmup"] = 1
    if choice.context_per_expert:
        over["model.context_size"] = choice.context_per_expert * n_exp
    return over


def _variant(cell: Cell, budget: str, preset: Any, over: dict[str, Any]) -> dict[str, Any]:
    """The settings of ``cell``'s variant (``VARIANTS``, ``every-N``, and what depends on the
    preset, the table and the budget ``over`` holds so far)."""
    v = cell.variant
    if v.startswith("every-"):
        return {"gate.every": int(v.split("-")[1])}
    out = dict(VARIANTS[v])
    single = out.get("model.num_experts") == 1
    if cell.table == "table4":
        out["model.context_size"] = _T4_CONTEXT[cell.backbone] * (1 if single else preset.model.num_experts)
    elif single and budget != "paper":
        # the same envs per step as each expert of the M-expert variants (the paper: E/1)
        out["train.batch_envs"] = max(1, _n_train_envs(cell.data) // preset.model.num_experts)
    if v == "mixer-auto":
        if preset.gate.router != "warm_start" and "gate.warm_start.warmup" not in over:
            out["gate.warm_start.warmup"] = _AUTO_WARMUP[budget]
        if cell.table == "table4":  # the warm-up's one expert on all envs, as the single meta-learner
            out["gate.warm_start.batch"] = -1
    return out


def paper_active_parameters(cell: Cell) -> int:
    """The paper's active parameter count of a Table 4 cell (a single GEPS has no row of its
    own: the MixER-GEPS count, the same per expert)."""
    row = _T4.get((cell.data, cell.backbone, cell.variant)) or _T4[(cell.data, cell.backbone, "mixer-M")]
    return row[0]


@functools.lru_cache(maxsize=None)
def _train_shape(data: str) -> tuple[int, int]:
    """``(envs, state dimension)`` of a built-in dataset's training split (ODE families are
    planned, not integrated: generating ODEBench-10B takes most of a minute)."""
    from ..data import plan_families, resolve_dataset
    from ..data._familyspec import builtin_family_files, load_family_spec

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
    from .._config import load_config

    return _expert_count(load_config(preset_of(data), None, over), _train_shape(data)[1])


def _expert_count(cfg: Any, state_size: int, width: int | None = None) -> int:
    import jax

    from ..experts import BACKBONES

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
    from .._config import load_config

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
