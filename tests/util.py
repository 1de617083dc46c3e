"""Small helpers shared by test modules (not tests themselves)."""

import contextlib

import jax
import jax.extend
import numpy as np


@contextlib.contextmanager
def x64():
    """float64 enabled inside (for float64 references and ``check_grads``), restored after."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


def equations(jaxpr):
    """Every equation of ``jaxpr`` and of the jaxprs its equations hold (a ``pjit``'s, a
    ``custom_jvp_call``'s, each branch of a ``cond``)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for inner in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(inner, "jaxpr", inner)  # a ClosedJaxpr's own
                if isinstance(inner, jax.extend.core.Jaxpr):
                    yield from equations(inner)


def tup(v, n):
    """An int as ``n`` copies, a sequence as a tuple."""
    return (v,) * n if isinstance(v, int) else tuple(v)


def rand(rng, shape):
    """float32 uniform in [-1, 1) from a NumPy ``Generator``."""
    return rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)


def held_bytes(compiled):
    """The memory a compiled program holds beyond its arguments and outputs: its
    temporaries plus its constants (the memory bar's measure).

    On XLA:CPU (jaxlib 0.10) ``memory_analysis().peak_memory_in_bytes`` is the arguments',
    outputs' and constants' bytes, without the temporaries (a 1 MiB ``np`` constant adds
    1 MiB to it; 12 MiB of temporaries add nothing), and ``temp_size_in_bytes`` leaves the
    constants out: a lowering that trades a temporary for a constant (a 0/1 matrix, a
    table of offsets) is compared on both.
    """
    m = compiled.memory_analysis()
    constants = (m.peak_memory_in_bytes - m.argument_size_in_bytes
                 - m.output_size_in_bytes + m.alias_size_in_bytes)
    assert constants >= 0, m  # XLA:CPU's peak: arguments + outputs + constants
    return m.temp_size_in_bytes + constants
