"""Random draws that compile quickly on a CPU.

XLA:CPU compiles ``jax.random.normal`` (an inverse error function) in about 1.1 s and a
random-bits kernel for every distinct shape drawn; on a 2-core machine that was most of the
7 s it took to build a 10-expert model. These helpers draw uniform bits once and transform them.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

__all__ = ["normal"]


def normal(key: PRNGKeyArray, shape: tuple[int, ...], dtype=jnp.float32) -> Float[Array, "..."]:
    """Standard normal samples of ``shape`` by the Box-Muller transform of one uniform draw.

    Exactly N(0, 1) distributed (up to float rounding); compiles in about 0.4 s instead of
    1.1 s for ``jax.random.normal`` on a CPU. The values differ from ``jax.random.normal``'s.
    """
    n = math.prod(shape)
    half = (n + 1) // 2
    u = jax.random.uniform(key, (2, half), dtype, minval=jnp.finfo(dtype).tiny, maxval=1.0)
    radius = jnp.sqrt(-2.0 * jnp.log(u[0]))
    angle = (2.0 * math.pi) * u[1]
    return jnp.concatenate([radius * jnp.cos(angle), radius * jnp.sin(angle)])[:n].reshape(shape)
