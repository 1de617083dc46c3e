"""``bilinear_stencil``: bilinear upsampling by integer factors as a fixed two-tap stencil
per axis.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from kconv.ops.lowering.spec import Array, UpsampleSpec


def bilinear_stencil(x: Array, *, spec: UpsampleSpec, plain: Callable[[Array], Array]
                     ) -> Array:
    """Linear upsampling by integer factors as the fixed two-tap stencil per axis,
    differentiated through ``plain`` (``jax.image.resize``).

    Equal to ``jax.image.resize(..., "bilinear", antialias=False)`` with half-pixel
    centres: output ``f * j + r`` samples input ``j + t_r``, ``t_r = (r + 0.5) / f - 0.5``,
    from ``x[j]`` and its neighbour towards ``t_r``; at the edges the outside neighbour's
    weight goes to the edge sample (``resize`` renormalises its weights the same way).
    ``resize`` contracts with a dense ``(f * n, n)`` weight matrix per axis, which XLA:CPU
    runs slowly forward (W8 6–30 → 1.7–4 ms), but whose transpose it runs faster than the
    stencil's (interleaving slices), so the tangent of this linear map is ``plain``'s;
    inside a derivative the value is ``plain``'s too: the stencil's first axis (an
    intermediate half the output's size) would sit beside the transpose's copy of the
    cotangent (W8 forward + backward 20 → 24 MiB of temporaries).
    """
    return _stencil_resize_derivative(x, spec, plain)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _stencil_resize_derivative(x: Array, spec: UpsampleSpec,
                               plain: Callable[[Array], Array]) -> Array:
    dtype = spec.dtype if spec.dtype.itemsize >= 4 else np.dtype(np.float32)
    y = x.astype(dtype)
    for axis, factor in zip(spec.axes, spec.factors):
        if factor > 1:
            y = _linear_upsample_axis(y, axis, factor)
    return y.astype(spec.dtype)


@_stencil_resize_derivative.defjvp
def _stencil_resize_jvp(spec: UpsampleSpec, plain: Callable[[Array], Array],
                        primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
    return jax.jvp(plain, primals, tangents)


def _linear_upsample_axis(x: Array, axis: int, factor: int) -> Array:
    n = x.shape[axis]
    first, last = lax.slice_in_dim(x, 0, 1, axis=axis), lax.slice_in_dim(x, n - 1, n,
                                                                          axis=axis)
    before = lax.concatenate([first, lax.slice_in_dim(x, 0, n - 1, axis=axis)], axis)
    after = lax.concatenate([lax.slice_in_dim(x, 1, n, axis=axis), last], axis)
    phases = []
    for r in range(factor):
        t = (r + 0.5) / factor - 0.5
        if t < 0:
            phases.append((1 + t) * x + (-t) * before)
        elif t > 0:
            phases.append((1 - t) * x + t * after)
        else:
            phases.append(x)
    y = jnp.stack(phases, axis=axis + 1)
    shape = list(x.shape)
    shape[axis] = n * factor
    return y.reshape(shape)
