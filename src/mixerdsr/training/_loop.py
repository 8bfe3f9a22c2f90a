"""The training loop on the host.

Every outer step: the routing policy acts (:meth:`~mixerdsr.routing.RoutingPolicy.before_step`)
-> the compiled step of the policy's phase -> record, take the step back if its losses blew up
(:class:`~mixerdsr._stopping.DivergenceGuard`) -> validate and select, stop or go on,
checkpoint, progress. The policy's, the stopping rule's and the guard's states go in the
checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import metrics as M
from .._config import Config
from .._jsonio import jsonable
from .._stopping import DivergenceGuard, Stopping
from ..checkpoint import load_checkpoint, save_checkpoint
from ..data import EnvData
from ..evaluation import val_env_rel_mse, val_scores
from ..inference import routes
from ..routing import STATUS_NAMES, RouteEvent, policy_of
from ..sharding import place_envs, using_devices
from ._records import TrainResult, _snapshot_steps, check_resume, env_weights, read_history, split_validation
from ._state import TrainData, TrainState, init_state
from ._step import make_outer_step

__all__ = ["train", "prepare_training", "TrainInputs"]


_STOP_TEXT = {
    "converged": "the validation score stopped improving (train.schedule = plateau)",
    "time_budget": "the time budget (train.time_budget) is spent; the best model so far is kept",
    "diverged": "the losses kept blowing up (train.divergence_guard); the best model so far is kept",
}


@dataclasses.dataclass(frozen=True)
class TrainInputs:
    """What training reads from a split, prepared once (:func:`prepare_training`).

    Attributes:
        data: the training arrays on device (:class:`TrainData`: ``x [E, N, T, D]``, ``t [E, T]``,
            the first outer step with gate updates, the env weights).
        x_val: the validation trajectories ``[E, N_val, T, D]`` (the training ones when none
            are held out).
        t: the time grids ``[E, T]`` (``data.t`` may be padded to a multiple of the device count).
        family: ``[E]`` family labels of the envs (-1: unknown).
        n_envs, n_dims: ``E`` and ``D``.
    """

    data: TrainData
    x_val: jax.Array
    t: jax.Array
    family: np.ndarray
    n_envs: int
    n_dims: int


def prepare_training(cfg: Config, train_split: EnvData) -> TrainInputs:
    """The arrays :func:`train` trains on: ``data.time_stride`` applied, the last
    ``data.val_trajectories`` trajectories of every env held out for validation, the env
    weights of ``train.env_weight_power``, and the routing policy's first gate step."""
    tr = train_split.stride_time(cfg.data.time_stride)
    x_np, xval_np = split_validation(tr.x.astype(np.float32), cfg.data.val_trajectories)
    gate_from = jnp.asarray(policy_of(cfg).gate_from(), jnp.int32)
    weight = env_weights(cfg, x_np)
    # over several devices the env axis of the data is split between them (and padded)
    data = TrainData(
        place_envs(x_np),
        place_envs(np.asarray(tr.t, np.float32)),
        gate_from,
        None if weight is None else place_envs(weight),
    )
    x_val = jnp.asarray(xval_np if xval_np is not None else x_np)
    return TrainInputs(data, x_val, jnp.asarray(tr.t, jnp.float32), np.asarray(tr.family), tr.n_envs, tr.n_dims)


def train(
    cfg: Config,
    train_split: EnvData,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train a MixER layer on one split with proximal alternating minimisation.

    Args:
        cfg: run configuration.
        train_split: training data (``data.time_stride`` and the validation hold-out are applied
            here).
        out_dir: where ``checkpoint.npz`` and ``history.jsonl`` go (None: nothing written).
        resume: continue from ``out_dir/checkpoint.npz`` (same result as an uninterrupted run).
        progress: show a progress bar (loss, validation relMSE, routing counts).
        log: where one-line messages go.

    Returns:
        :class:`TrainResult`.
    """
    with using_devices(cfg.train.devices):
        loop = _Loop(cfg, prepare_training(cfg, train_split), out_dir, log)
        if resume:
            loop.resume()
        loop.start_history()
        return loop.run(progress)


class _Loop:
    """One training run's host state: the training state, the routing policy, the stopping
    rule, the compiled steps of each phase, the history and where it is written."""

    def __init__(self, cfg: Config, inputs: TrainInputs, out_dir: str | Path | None, log: Callable[[str], None]):
        self.cfg, self.inputs, self.log = cfg, inputs, log
        self.data = inputs.data
        self.state = init_state(cfg, inputs.n_envs, inputs.n_dims)
        self.policy = policy_of(cfg, inputs.n_dims)
        self.stopping = Stopping.from_settings(cfg.train)
        self.guard = DivergenceGuard(cfg.train.divergence_guard)
        # the states before the last three outer steps (since the last routing change): where the
        # guard returns to (JAX arrays are immutable, so keeping them copies nothing)
        self.before: deque[TrainState] = deque(maxlen=3)
        out = Path(out_dir) if out_dir is not None else None
        self.ckpt = out / "checkpoint.npz" if out is not None else None
        self.hist_path = out / "history.jsonl" if out is not None else None
        self.history: list[dict[str, Any]] = []
        self.times: list[float] = []
        self.steps: dict[Config, Callable] = {}
        self.phase_cfg: dict[str, Config] = {}
        self.known_families = bool(np.all(inputs.family >= 0)) and cfg.model.num_experts > 1
        self.prev_route: np.ndarray | None = None
        self.stop_reason = "outer_steps"
        self.bar: Any = None

    def resume(self) -> None:
        """Continue from the checkpoint, if there is one (its configuration checked first)."""
        if self.ckpt is None or not self.ckpt.exists():
            return
        check_resume(self.ckpt, self.cfg)
        self.state, _, extra = load_checkpoint(self.ckpt, self.state)
        done = int(self.state.step)
        self.stopping.load_state_dict(extra.get("stopping", {}))
        self.guard.load_state_dict(extra.get("guard", {}))
        self.policy.load_state_dict(extra.get("routing", {}), done, self.state.model)
        self.set_lr_scale()
        if self.hist_path is not None and self.hist_path.exists():
            self.history = [h for h in read_history(self.hist_path, self.log) if h["step"] < done]
        if self.history and "route" in self.history[-1]:
            self.prev_route = np.asarray(self.history[-1]["route"])
        self.log(f"resumed from {self.ckpt} at outer step {done}")

    def start_history(self) -> None:
        """``history.jsonl`` holds the records kept so far (none for a new run)."""
        if self.hist_path is not None:
            self.hist_path.parent.mkdir(parents=True, exist_ok=True)
            self.hist_path.write_text("".join(json.dumps(jsonable(h)) + "\n" for h in self.history))

    def save(self) -> None:
        if self.ckpt is not None:
            extra = {
                "step": int(self.state.step),
                "stopping": self.stopping.state_dict(),
                "guard": self.guard.state_dict(),
                "routing": self.policy.state_dict(),
            }
            save_checkpoint(self.ckpt, self.state, self.cfg.to_dict(), extra)

    def step_fn(self) -> Callable:
        """The compiled outer step of the policy's current phase: its settings are worked out
        once per policy state, and phases with the same settings share one compiled step."""
        phase = repr(self.policy.state_dict())
        if phase not in self.phase_cfg:
            self.phase_cfg[phase] = self.policy.step_config(self.cfg, self.inputs.n_envs)
        cfg = self.phase_cfg[phase]
        if cfg not in self.steps:
            self.steps[cfg] = make_outer_step(cfg, self.inputs.n_envs)
        return self.steps[cfg]

    def run(self, progress: bool) -> TrainResult:
        n_steps, start = self.cfg.train.outer_steps, int(self.state.step)
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=n_steps, initial=start, desc="train", unit="step", dynamic_ncols=True, disable=None)
        if start < n_steps:
            self.log("compiling the training step (the first outer step includes compilation) ...")
        try:
            for s in range(start, n_steps):
                event = self.route(s)
                if event is not None:
                    self.before.clear()  # no return across a routing change
                self.before.append(self.state)
                rec = self.advance(s)
                if event is not None:
                    rec |= event.record
                if self.finish(rec, self.take_back(rec)):
                    break
        except KeyboardInterrupt:
            self.save()
            self.close_bar()
            where = f" to {self.ckpt}; continue with --resume" if self.ckpt else ""
            self.log(f"interrupted at outer step {int(self.state.step)}; checkpoint saved{where}")
            raise
        self.close_bar()
        return self.result(start)

    def route(self, s: int) -> RouteEvent | None:
        """The routing policy acts before outer step ``s``; a change of the routing starts
        model selection afresh (among the new structure's models)."""

        def env_fit(st: TrainState) -> np.ndarray:
            return val_env_rel_mse(st.model, st.contexts, self.inputs.x_val, self.inputs.t, self.cfg)

        self.state, event = self.policy.before_step(s, self.state, env_fit)
        if event is None:
            return None
        self.state = self.state._replace(
            best_val=jnp.asarray(jnp.inf, jnp.float32), best_step=jnp.asarray(-1, jnp.int32)
        )
        msg = event.message
        if event.contexts is not None and self.hist_path is not None:  # what the grouping saw, to study it
            np.savez(
                self.hist_path.with_name(f"seeding-{s}.npz"),
                contexts=event.contexts,
                assign=np.asarray(event.assign),
                family=np.asarray(self.inputs.family),
            )
        if self.known_families:
            msg += f", purity {M.purity(event.assign, self.inputs.family):.3g}"
        for line in msg.split("\n"):
            self.log(line)
        return event

    def advance(self, s: int) -> dict[str, Any]:
        """One outer step and its history record (without validation)."""
        t0 = time.perf_counter()
        self.state, info = self.step_fn()(self.state, self.data)
        info = jax.device_get(info)
        self.times.append(time.perf_counter() - t0)
        r = np.asarray(routes(self.state.model, self.state.contexts))
        status = Counter(STATUS_NAMES[int(v)] for v in info["gate_status"] if v >= 0)
        rec: dict[str, Any] = {
            "step": s,
            "ctx_loss": float(np.mean(info["ctx_loss"])),
            "weight_loss": float(np.mean(info["weight_loss"])),
            "failed": int(np.sum(info["failed"])),
            "gate_updates": dict(status),
            "routes": np.bincount(r, minlength=self.cfg.model.num_experts).tolist(),
            "route": r.tolist(),
            "changed": int(np.sum(r != self.prev_route)) if self.prev_route is not None else 0,
            "seconds": self.times[-1],
        }
        if self.known_families:
            rec["purity"] = M.purity(r, self.inputs.family)
            rec["ari"] = M.adjusted_rand_index(r, self.inputs.family)
        self.prev_route = r
        return rec

    def take_back(self, rec: dict[str, Any]) -> str | None:
        """When the guard finds the losses of ``rec``'s step and of the one before blown up,
        return to the state before the step preceding both (the step counter and the best model
        so far stay) with the rates of contexts and weights halved; one blown-up step alone is
        watched (training recovers from most). Returns ``"diverged"`` when the guard gives up."""
        verdict = self.guard.verdict({"ctx": rec["ctx_loss"], "weight": rec["weight_loss"]})
        if verdict is None:
            return None
        if verdict == "watch":
            rec["diverged"] = "blown up once: watched"
            return None
        if len(self.before) < 3:
            rec["diverged"] = "blown up again, not taken back (no sound state since the last routing change)"
            return None
        st, back = self.state, self.before[0]
        self.state = back._replace(
            step=st.step, best_model=st.best_model, best_contexts=st.best_contexts, best_val=st.best_val,
            best_step=st.best_step,
        )  # fmt: skip
        self.before.clear()
        stop = self.guard.took_back()
        self.set_lr_scale()
        rec["diverged"] = f"taken back to the state before outer step {rec['step'] - 2}, rates x{self.guard.scale:g}"
        self.log(
            f"outer step {rec['step']}: the losses blew up twice in a row (weight loss {rec['weight_loss']:.3g}); "
            + rec["diverged"]
        )
        return stop

    def set_lr_scale(self) -> None:
        """The rates' factors: the weights' is the plateau rule's times the divergence guard's,
        the contexts' the guard's."""
        scale = self.stopping.lr_scale * self.guard.scale
        self.data = self.data._replace(
            lr_scale=np.asarray(scale, np.float32), ctx_scale=np.asarray(self.guard.scale, np.float32)
        )

    def finish(self, rec: dict[str, Any], stop: str | None = None) -> bool:
        """Validation and model selection, the stopping rule, the history line, checkpoint and
        progress bar after the outer step of ``rec`` (``stop``: a reason to stop already
        found). Returns whether training stops here."""
        s, n_steps = rec["step"], self.cfg.train.outer_steps
        stop = self.stopping.spent(rec["seconds"]) or stop
        if (s + 1) % self.cfg.train.val_every == 0 or s == n_steps - 1 or stop:
            stop = stop or self.validate(rec, ask_rule=True)
            if stop and "val_rel_mse" not in rec:  # the time budget ended it: validated, no rule
                self.validate(rec, ask_rule=False)
        if s in _snapshot_steps(n_steps):
            rec["gate_probs"] = np.asarray(jax.vmap(self.state.model.gate_probs)(self.state.contexts)).round(4).tolist()
        self.history.append(rec)
        if self.hist_path is not None:
            with self.hist_path.open("a") as f:
                f.write(json.dumps(jsonable(rec)) + "\n")
        if stop:
            self.stop_reason = stop
        if (s + 1) % self.cfg.train.checkpoint_every == 0 or s == n_steps - 1 or bool(stop):
            self.save()
        self.show(rec)
        return bool(stop)

    def validate(self, rec: dict[str, Any], ask_rule: bool) -> str | None:
        """Score the model on the validation trajectories, keep it when it is the best so far,
        and (``ask_rule``) ask the stopping rule (its answer: a stop reason or None)."""
        st = self.state
        scores = val_scores(st.model, st.contexts, self.inputs.x_val, self.inputs.t, self.cfg)
        val = scores[self.cfg.train.select_on]
        stop = self.stopping.validated(val) if ask_rule else None
        self.set_lr_scale()
        rec["lr_scale"] = float(self.data.lr_scale)
        rec.update({f"val_{k}": v for k, v in scores.items()})
        rec["val_score"] = val
        if math.isfinite(val) and val < float(st.best_val):
            self.state = st._replace(
                best_model=st.model,
                best_contexts=st.contexts,
                best_val=jnp.asarray(val, jnp.float32),
                best_step=jnp.asarray(rec["step"], jnp.int32),
            )
        return stop

    def show(self, rec: dict[str, Any]) -> None:
        if self.bar is None:
            return
        last_val = next(
            (h.get("val_score", h["val_rel_mse"]) for h in reversed(self.history) if "val_rel_mse" in h), None
        )
        post = {"loss": f"{rec['weight_loss']:.3g}"}
        if last_val is not None:
            post["val"] = f"{last_val:.3g}"
        self.bar.set_postfix(**post, routes=rec["routes"], refresh=False)
        self.bar.update(1)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def result(self, start: int) -> TrainResult:
        times = self.times
        steady = times[1:] if len(times) > 1 else times
        timing = {
            "compile_seconds": (times[0] - float(np.median(steady))) if len(times) > 1 and start == 0 else None,
            "seconds_per_outer_step": float(np.mean(steady)) if steady else None,
            "total_seconds": float(np.sum(times)),
        }
        st = self.state
        use_best = bool(np.isfinite(float(st.best_val)))
        if self.stop_reason != "outer_steps":
            self.log(f"training stopped after {int(st.step)} outer steps: {_STOP_TEXT[self.stop_reason]}")
        return TrainResult(
            stop_reason=self.stop_reason,
            converged=self.stop_reason == "converged" or (self.stop_reason != "diverged" and self.stopping.converged),
            state=st,
            model=st.best_model if use_best else st.model,
            contexts=st.best_contexts if use_best else st.contexts,
            history=self.history,
            timing=timing,
            best_step=int(st.best_step),
            data=self.data,
            steps_taken_back=self.guard.returns,
        )
