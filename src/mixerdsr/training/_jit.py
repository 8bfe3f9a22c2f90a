"""Compiling the outer step, with XLA options where asked."""

from __future__ import annotations

import warnings
from typing import Any

import equinox as eqx
import jax

__all__ = ["LOW_MEMORY_OPTIONS", "jit"]


#: XLA options of ``train.low_memory_compile``: XLA's CPU fusion emitters need most of the
#: memory of compiling the outer step; without them the peak is lower and gradient steps are
#: slower (the legacy emitters do not vectorise loops). Figures in ``docs/performance.md``.
#: Ignored by other backends.
LOW_MEMORY_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


def jit(fn, options: dict[str, Any] | None):
    """``eqx.filter_jit(fn)``, compiled with XLA ``options`` when given. A jaxlib that does not
    know an option gets a warning and the default compilation instead of an error."""
    if not options:
        return eqx.filter_jit(fn)
    plain = eqx.filter_jit(fn)
    jitted = jax.jit(lambda dyn, static: fn(*eqx.combine(dyn, static)), static_argnums=1, compiler_options=options)
    use_plain = False

    def call(*args):
        nonlocal use_plain
        if not use_plain:
            try:
                return jitted(*eqx.partition(args, eqx.is_array))
            except jax.errors.JaxRuntimeError as err:
                if "compile option" not in str(err):
                    raise
                warnings.warn(
                    f"this jaxlib does not support the XLA options {sorted(options)} ({err}); compiling without them",
                    RuntimeWarning,
                    stacklevel=2,
                )
                use_plain = True
        return plain(*args)

    return call
