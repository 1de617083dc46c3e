"""Small helpers shared by test modules (not tests themselves)."""

import contextlib

import jax
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


def tup(v, n):
    """An int as ``n`` copies, a sequence as a tuple."""
    return (v,) * n if isinstance(v, int) else tuple(v)


def rand(rng, shape):
    """float32 uniform in [-1, 1) from a NumPy ``Generator``."""
    return rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
