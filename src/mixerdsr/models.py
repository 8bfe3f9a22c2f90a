"""Trained models as files: a run's model, its training contexts and what they mean.

A *model file* is one ``.npz`` in the checkpoint format (no pickle): the array leaves of
``(model, contexts)`` plus JSON entries holding the run configuration and a card (state size,
training families and their names, routes, the dataset's name and the run's metrics). Every
finished run writes ``model.npz``; the package ships a few under ``mixerdsr/pretrained/``
(:func:`list_pretrained`).
"""

from __future__ import annotations

import dataclasses
import os
from importlib import resources
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._config import Config
from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint_config, save_checkpoint
from .inference import routes
from .mixer import MixER, build_model

__all__ = ["TrainedModel", "save_model", "load_model", "load_pretrained", "list_pretrained", "MODEL_FILE"]

#: the model file every finished run writes into its directory
MODEL_FILE = "model.npz"
_FORMAT = "mixerdsr-model-1"


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """A trained MixER layer with its training environments.

    Attributes:
        model: the MixER layer (weights and gate).
        contexts: training contexts ``[E, d]``.
        config: the run configuration that trained it.
        state_size: state dimension ``D`` of its data.
        family: family index of each training environment ``[E]`` (-1 where unknown).
        family_names: name of each family index (may be empty).
        card: everything else known about it (dataset name, metrics, training time, ...).
        source: where it was loaded from.
    """

    model: MixER
    contexts: Float[Array, "E d"]
    config: Config
    state_size: int
    family: np.ndarray
    family_names: list[str]
    card: dict[str, Any]
    source: str = ""

    @property
    def routes(self) -> np.ndarray:
        """Expert of every training environment ``[E]``."""
        return np.asarray(routes(self.model, self.contexts))

    def family_name(self, f: int) -> str:
        """Name of family ``f`` (``"family f"`` when unnamed, ``"unknown"`` for -1)."""
        if f < 0:
            return "unknown"
        return self.family_names[f] if f < len(self.family_names) else f"family {f}"


def save_model(path: str | os.PathLike, trained: TrainedModel) -> Path:
    """Write a model file (atomically).

    Args:
        path: the ``.npz`` to write.
        trained: the model and its card.

    Returns:
        The path written.
    """
    card = dict(
        trained.card,
        format=_FORMAT,
        state_size=int(trained.state_size),
        n_envs=int(trained.contexts.shape[0]),
        family=np.asarray(trained.family).astype(int).tolist(),
        family_names=list(trained.family_names),
    )
    state = (trained.model, jnp.asarray(trained.contexts))
    out = save_checkpoint(path, state, trained.config.to_dict(), card)
    os.chmod(out, 0o644)  # a file to share (a checkpoint's temporary file is private)
    return out


def _template(cfg: Config, state_size: int, n_envs: int) -> tuple[MixER, jax.Array]:
    model = jax.eval_shape(lambda: build_model(cfg, state_size, jax.random.PRNGKey(0)))
    model = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), model)
    return model, jnp.zeros((n_envs, cfg.model.context_size), jnp.float32)


def load_model(path: str | os.PathLike) -> TrainedModel:
    """Load a model file, or the model of a finished run directory.

    Args:
        path: a model ``.npz`` (written by :func:`save_model` or by a run), or a run directory
            (its ``model.npz``).

    Returns:
        The :class:`TrainedModel`.

    Raises:
        CheckpointError: a missing or foreign file, or a run directory without ``model.npz``
            (a run that has not finished), naming the path.
    """
    p = Path(path)
    if p.is_dir():
        if not (p / MODEL_FILE).is_file():
            hint = (
                "its training has not finished: continue it with `mixerdsr run --resume --out DIR`"
                if (p / "checkpoint.npz").is_file()
                else "it is not a mixerdsr run directory"
            )
            raise CheckpointError(f"{p}: no {MODEL_FILE} in this directory; {hint}")
        p = p / MODEL_FILE
    cfg_dict, card = read_checkpoint_config(p)
    if card.get("format") != _FORMAT:
        raise CheckpointError(
            f"{p}: not a mixerdsr model file (a training checkpoint? load the run directory, "
            f"whose {MODEL_FILE} a finished run writes)"
        )
    cfg = Config.from_dict(cfg_dict, str(p))
    (model, contexts), _, card = load_checkpoint(p, _template(cfg, int(card["state_size"]), int(card["n_envs"])))
    bad = sum(
        int(np.sum(~np.isfinite(np.asarray(leaf))))
        for leaf in jax.tree.leaves(eqx.filter((model, contexts), eqx.is_inexact_array))
    )
    if bad:
        raise CheckpointError(
            f"{p}: {bad} weight(s) or context value(s) are not finite (NaN or inf); the model cannot make "
            "trustworthy forecasts: train it again"
        )
    return TrainedModel(
        model=model,
        contexts=contexts,
        config=cfg,
        state_size=int(card["state_size"]),
        family=np.asarray(card.get("family", [-1] * int(card["n_envs"])), int),
        family_names=[str(n) for n in card.get("family_names", [])],
        card=card,
        source=str(p),
    )


def _shipped() -> dict[str, Any]:
    root = resources.files("mixerdsr") / "pretrained"
    if not root.is_dir():  # pragma: no cover - an installation without the shipped models
        return {}
    return {f.name[: -len(".npz")]: f for f in root.iterdir() if f.name.endswith(".npz")}


def list_pretrained() -> list[tuple[str, str]]:
    """The models shipped with the package: ``[(name, one-line description), ...]``."""
    out = []
    for name, f in sorted(_shipped().items()):
        with resources.as_file(f) as p:
            _, card = read_checkpoint_config(p)
        out.append((name, str(card.get("description", ""))))
    return out


def load_pretrained(name: str) -> TrainedModel:
    """A model shipped with the package (see :func:`list_pretrained` and ``docs/pretrained.md``).

    Args:
        name: e.g. ``"odebench-10b"``.

    Returns:
        The :class:`TrainedModel` (model, training contexts, family names, routes via
        ``.routes``, model card via ``.card``).

    Raises:
        ValueError: no shipped model of that name (the message lists them).
    """
    files = _shipped()
    if name not in files:
        raise ValueError(f"no pretrained model {name!r}; available: {sorted(files)}")
    with resources.as_file(files[name]) as p:
        tm = load_model(p)
    return dataclasses.replace(tm, source=f"pretrained:{name}")


def card_check(tm: TrainedModel) -> tuple[list[float], list[float]]:
    """Re-run the check stored in a model card: adapt to its few stored environments with its
    protocol and forecast their stored test trajectories.

    Returns:
        ``(expected, measured)`` per-environment forecast relMSE (the card's and now).

    Raises:
        KeyError: the card has no ``check``.
    """
    from . import metrics as M
    from .adaptation import adapt_new
    from .inference import predict

    chk = tm.card["check"]
    cfg = tm.config
    a = adapt_new(
        tm.model,
        tm.contexts,
        jnp.asarray(chk["x"], jnp.float32),
        jnp.asarray(chk["t"], jnp.float32),
        steps=int(chk["steps"]),
        screen_steps=int(chk["screen_steps"]),
        keep=int(chk["keep"]),
        lr=cfg.adapt.lr,
        solver=cfg.solver,
        context_penalty=cfg.adapt.context_penalty,
    )
    x_test = np.asarray(chk["x_test"], np.float32)
    pred, _ = predict(tm.model, a.contexts, x_test, np.asarray(chk["t_test"], np.float32), cfg.solver)
    got = np.asarray(M.per_env_rel_mse(jnp.asarray(pred), jnp.asarray(x_test)))
    return [float(v) for v in chk["rel_mse"]], got.tolist()


def resolve_model(spec: str | os.PathLike) -> TrainedModel:
    """A shipped model's name, a run directory or a model file."""
    s = str(spec)
    if s in _shipped():
        if Path(s).exists():
            raise CheckpointError(
                f"{s!r} is both a shipped model and a path here; write ./{s} for the path, or run from another folder "
                "for the shipped model"
            )
        return load_pretrained(s)
    p = Path(s)
    if not p.exists():
        raise CheckpointError(
            f"{s}: neither a pretrained model ({', '.join(sorted(_shipped())) or 'none shipped'}) "
            "nor an existing run directory or model file"
        )
    return load_model(p)
