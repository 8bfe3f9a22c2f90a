"""Environments spread over several devices: a one-axis mesh and the per-environment map.

Every per-environment computation of the library (the training batch's solves, the gate's
all-expert loss pass, validation, evaluation, adaptation) maps one function over an
environment axis. :func:`env_vmap` is that map: without a mesh it is ``jax.vmap``; inside
:func:`using_devices` with several devices it pads the axis to a multiple of the device
count (copies of the first environment, dropped again from the result, so nothing is lost
and nothing extra is counted), lays it along the mesh's ``"envs"`` axis, and lets JAX's SPMD
partitioner split the work. The training data are laid out the same way
(:func:`place_envs`); expert weights, the gate, contexts ``[E, d]`` and the optimiser states
are small and stay replicated, so the gate's K-means and least squares compute the same
result on every device and a checkpoint does not depend on the device count.

Several hosts: start one process per host with ``jax.distributed.initialize`` (the
``--coordinator`` options of the command line; README, "Several devices or hosts"); the mesh
then spans every host's devices.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "ENV_AXIS",
    "env_mesh",
    "using_devices",
    "env_shards",
    "env_vmap",
    "expert_map",
    "place_envs",
    "replicated",
    "join_processes",
    "is_primary",
]

#: the mesh axis environments are laid along
ENV_AXIS = "envs"

#: True while a split map traces its function
_INSIDE: contextvars.ContextVar[bool] = contextvars.ContextVar("mixerdsr_env_vmap", default=False)


def env_mesh(devices: int = 0) -> Mesh | None:
    """A one-axis mesh (``"envs"``) of the first ``devices`` devices JAX sees (0: all of them,
    every host's after ``jax.distributed.initialize``); None for a single device.

    Raises:
        ValueError: when more devices are asked for than there are.
    """
    found = jax.devices()
    n = len(found) if devices <= 0 else devices
    if n > len(found):
        raise ValueError(
            f"train.devices = {devices}: JAX sees {len(found)} device(s) ({found[0].platform}); "
            "on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N makes N"
        )
    if n == 1:
        return None
    return Mesh(np.array(found[:n]), (ENV_AXIS,), axis_types=(AxisType.Auto,))


@contextlib.contextmanager
def using_devices(devices: int = 0) -> Iterator[Mesh | None]:
    """Within this context the library's computations spread environments over ``devices``
    devices (:func:`env_mesh`; one device: nothing changes). An enclosing mesh is kept."""
    if env_shards() > 1:
        yield None
        return
    mesh = env_mesh(devices)
    if mesh is None:
        yield None
        return
    with jax.set_mesh(mesh):
        yield mesh


def env_shards() -> int:
    """Devices along the active mesh's ``"envs"`` axis (1 without a mesh); in or out of jit."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or ENV_AXIS not in mesh.axis_names:
        return 1
    return int(mesh.shape[ENV_AXIS])


def _pad(a: jax.Array, n: int) -> jax.Array:
    pad = (-a.shape[0]) % n
    return a if pad == 0 else jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)])


def env_vmap(fn: Callable[..., Any], *args: Any) -> Any:
    """``jax.vmap(fn)(*args)`` over the leading (environment) axis of every leaf of ``args``,
    split over the active mesh's devices (see the module's text). Results are the vmap's,
    up to the order of floating-point sums."""
    n = env_shards()
    if n == 1 or _INSIDE.get():  # a map inside a split map: its envs are already on one device
        return jax.vmap(fn)(*args)
    size = jax.tree.leaves(args)[0].shape[0]
    laid = jax.tree.map(lambda a: jax.lax.with_sharding_constraint(_pad(a, n), P(ENV_AXIS)), args)
    token = _INSIDE.set(True)
    try:
        out = jax.vmap(fn)(*laid)
    finally:
        _INSIDE.reset(token)
    return replicated(jax.tree.map(lambda o: o[:size], out))


def expert_map(fn: Callable[[Any], Any], xs: Any, split: bool = False) -> Any:
    """``jax.lax.map(fn, xs)`` over a leading expert axis; with ``split`` and several devices
    each device maps its own share of the experts (padded with copies of the first, dropped
    from the result), and the environment maps inside run whole on that device. For the
    gate's all-expert loss pass when experts are many and the batches of environments small
    (``train.split_experts``)."""
    n = env_shards()
    if n == 1 or not split or _INSIDE.get():
        return jax.lax.map(fn, xs)
    size = jax.tree.leaves(xs)[0].shape[0]

    def parts(a: jax.Array) -> jax.Array:
        a = _pad(a, n)
        return jax.lax.with_sharding_constraint(a.reshape(n, a.shape[0] // n, *a.shape[1:]), P(ENV_AXIS))

    token = _INSIDE.set(True)
    try:
        out = jax.vmap(lambda part: jax.lax.map(fn, part))(jax.tree.map(parts, xs))
    finally:
        _INSIDE.reset(token)
    return replicated(jax.tree.map(lambda o: o.reshape(-1, *o.shape[2:])[:size], out))


def replicated(tree: Any) -> Any:
    """``tree`` (inside jit) with every array on every device of the active mesh: what the
    host reads back (states, losses, predictions) must be whole on each process."""
    if env_shards() == 1:
        return tree
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, P()) if isinstance(a, jax.Array) else a, tree)


def join_processes(coordinator: str, num_processes: int | None = None, process_id: int | None = None) -> None:
    """Join a run over several hosts (``jax.distributed.initialize``), before anything else
    uses JAX. Every host runs the same command with its own ``process_id``; the mesh then
    spans every host's devices, and only process 0 writes files (:func:`is_primary`).

    Args:
        coordinator: ``host:port`` of process 0, or ``"auto"``: JAX reads the cluster's
            environment (SLURM, Open MPI, Kubernetes, Cloud TPU).
        num_processes, process_id: this run's process count and this process's index
            (None with ``"auto"``).
    """
    # CPU devices of different processes talk over TCP (gloo); other backends ignore this
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator == "auto":
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)


def is_primary() -> bool:
    """Whether this process writes files (process 0; always, on one host)."""
    return jax.process_index() == 0


def place_envs(a: Any) -> jax.Array:
    """The array ``a [E, ...]`` on device, split along the active mesh's ``"envs"`` axis with
    its leading axis padded to a multiple of the device count (copies of the first entry:
    code indexes only the first ``E``). Without a mesh: ``jnp.asarray(a)``. Every process of
    a multi-host run passes the whole array; each places its own devices' part."""
    n = env_shards()
    if n == 1:
        return jnp.asarray(a)
    a = np.asarray(a)
    pad = (-a.shape[0]) % n
    if pad:
        a = np.concatenate([a, np.repeat(a[:1], pad, axis=0)])
    mesh = jax.sharding.get_mesh()
    return jax.make_array_from_callback(a.shape, NamedSharding(mesh, P(ENV_AXIS)), lambda idx: a[idx])
