"""``space_to_batch``: a dilated convolution with XLA's value and the gradients of its
space-to-batch form (the GPU's rule).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax  # noqa: F401  (the doctest)
import jax.numpy as jnp
from jax import lax

from kconv.ops.lowering.spec import Array, ConvSpec, _output_shape, _pad_spatial, _spatial_axes
from kconv.ops.lowering.plain import _xla_conv
from kconv.ops.lowering.primitives import _conv_primitive, _transposes


def space_to_batch(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any) -> Array:
    """A dilated convolution (stride 1 on its dilated axes) with XLA's value (and tangents)
    and gradients through its space-to-batch form (the GPU's rule).

    With dilation ``d`` output ``q·d + r`` reads inputs ``(q + j)·d + r`` only: phase
    ``r`` of the padded input (every ``d``-th element from ``r``) convolved with the
    kernel undilated gives phase ``r`` of the output (:func:`_space_to_batch_value`: the
    input padded, its phases moved into the batch, one undilated convolution, the
    output's phases interleaved back). The transposes of that form are undilated
    convolutions too; a bilinear primitive (:func:`_conv_primitive`) takes them as its
    gradients and keeps XLA's dilated convolution as its value.

    XLA:GPU (jax 0.11, cuDNN) computes a dilated convolution's gradients on slow kernels.
    On an H200 at 8× the benchmark batch, forward+backward, XLA → this, float32 /
    bfloat16: W6 (causal Conv1D, kernel 3, dilation 4) 4.7 → 0.47 / 0.86 → 0.34 ms;
    Conv2D 3×3 dilation 2 on (128, 32, 32, 64) → 64, 2.9 → 0.49 / 0.82 → 0.37; Conv3D
    3×3×3 dilation 2 on (16, 16, 16, 16, 16) → 32, 2.0 → 0.48 / 1.15 → 0.38. W6's peak
    memory 0.68 × lax's in float32 but 1.03 × in bfloat16 (the phase reorders of the input
    and the cotangent, where bfloat16's dilated kernels need little workspace): the GPU
    rule takes this for float32 only. The phase form's forward ran 1.0–1.13× XLA's (its
    reorders), hence XLA's value. On XLA:CPU the form does not pay (W6 2.5 / 8.8 → 2.9 /
    9.0 ms forward / forward+backward; the 2-D one 13 / 42 → 39 / 96 ms), so the CPU
    rule keeps XLA's (3-D takes ``width_fold``; its gradients in this form, Conv3D 3×3×3
    dilation 2 on (2, 16, 16, 16, 16) → 32: 88 → 33 ms, but 1.0 MiB of temporaries
    against lax's 0.05, over the memory bar).

    Example:
        >>> spec = ConvSpec(1, "channels_last", (1, 6, 1), (2, 1, 1), (1,), ((2, 0),), (2,))
        >>> x = jnp.arange(1.0, 7.0).reshape(1, 6, 1)
        >>> jax.grad(lambda k: space_to_batch(x, k, spec=spec, precision=None).sum())(
        ...     jnp.ones((2, 1, 1)))[:, 0, 0]
        Array([10., 21.], dtype=float32)
    """
    return _space_to_batch_p.bind(x, kernel, spec=spec, precision=precision)


def _space_to_batch_value(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any
                          ) -> Array:
    """:func:`space_to_batch`'s form: the input padded (the call's padding, then up to a
    multiple of ``d``), its phases moved into the batch (``N · prod(d)``), convolved with
    no padding or dilation on those axes, the output's phases interleaved back and
    cropped to the call's length; undilated axes are left to the convolution."""
    axes = _spatial_axes(spec)
    dilated = {axis: d for axis, d in zip(axes, spec.dilation) if d > 1}
    x = _pad_spatial(x, axes, [(lo, hi + -(n + lo + hi) % d) if d > 1 else (0, 0)
                               for n, d, (lo, hi) in zip(spec.spatial, spec.dilation,
                                                         spec.padding)])
    # Each dilated axis (P,) split into (P / d, d); the d's moved next to the batch.
    split, phases = [], []
    for axis, size in enumerate(x.shape):
        if axis in dilated:
            split += [size // dilated[axis], dilated[axis]]
            phases.append(len(split) - 1)
        else:
            split.append(size)
    rest = [axis for axis in range(1, len(split)) if axis not in phases]
    x = jnp.transpose(x.reshape(split), (0, *phases, *rest))
    x = x.reshape(-1, *x.shape[1 + len(phases):])
    undilated = dataclasses.replace(
        spec, input_shape=x.shape, dilation=(1,) * spec.rank,
        padding=tuple((0, 0) if d > 1 else pad for d, pad in zip(spec.dilation,
                                                                spec.padding)))
    y = _xla_conv(x, kernel, spec=undilated, precision=precision)
    # (N, *d, ...) -> each phase axis after its axis, merged with it, then cropped.
    m = len(dilated)
    y = y.reshape(spec.input_shape[0], *dilated.values(), *y.shape[1:])
    order, merged = [0], [y.shape[0]]
    for axis in range(1, y.ndim - m):
        order.append(axis + m)
        merged.append(y.shape[axis + m])
        if axis in dilated:
            order.append(1 + list(dilated).index(axis))
            merged[-1] *= dilated[axis]
    y = jnp.transpose(y, order).reshape(merged)
    return lax.slice(y, (0,) * y.ndim, _output_shape(y, spec, spec.output_spatial()))


_space_to_batch_p = _conv_primitive("kconv_space_to_batch", _xla_conv,
                                    *_transposes(_space_to_batch_value))
