"""Random draws that compile quickly on a CPU.

XLA:CPU compiles ``jax.random.normal`` (an inverse error function) slowly and a random-bits
kernel for every distinct shape drawn (figures in ``docs/performance.md``). These helpers draw
uniform bits once and transform them.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

__all__ = ["normal"]


def normal(key: PRNGKeyArray, shape: tuple[int, ...], dtype=jnp.float32) -> Float[Array, "..."]:
    """Standard normal samples of ``shape`` by the Box-Muller transform of one uniform draw.

    Exactly N(0, 1) distributed (up to float rounding); compiles faster than
    ``jax.random.normal`` on a CPU. The values differ from ``jax.random.normal``'s.
    """
    n = math.prod(shape)
    half = (n + 1) // 2
    u = jax.random.uniform(key, (2, half), dtype, minval=jnp.finfo(dtype).tiny, maxval=1.0)
    radius = jnp.sqrt(-2.0 * jnp.log(u[0]))
    angle = (2.0 * math.pi) * u[1]
    return jnp.concatenate([radius * jnp.cos(angle), radius * jnp.sin(angle)])[:n].reshape(shape)
