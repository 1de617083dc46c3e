"""``pointwise_dot``: a 1×…×1 dense convolution as one matrix product.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax import lax

from kconv.ops.lowering.spec import (Array, ConvSpec, _accumulation_dtype, _pad_spatial,
                                     _spatial_axes)
from kconv.ops.lowering.plain import _plain_input_gradient, _xla_conv
from kconv.ops.lowering.primitives import _conv_primitive, _transposes


def pointwise_dot(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any) -> Array:
    """A 1×…×1 convolution (``groups == 1``) as one matrix product
    ``(pixels, C) @ (C, filters)``; strides become a strided slice first.

    XLA:CPU runs a matrix product as a multithreaded GEMM, faster than its convolution of
    the same shape (W4's pointwise step 1.8 → 1.5 ms forward). The operand is 2-D on
    purpose: from a ``dot_general`` over the channel axis of the N-d array, autodiff's
    kernel gradient comes out transposed and XLA:CPU copies the cotangent to feed it
    (W4's pointwise step forward+backward 9.4 ms and 8 MB of temporaries, here 2.8 ms and
    none). channels_first is moved to channels_last around it (XLA:CPU transposes for its
    own convolution too).

    With a stride above 1 the strided slice is a loop fusion of its own: forward, the
    product ran no faster than XLA's convolution and compiled in 1.8–1.9 × its time
    ((8, 32, 32, 64) → 64, stride 2: 0.29–0.31 against 0.25–0.29 ms, 49 against 27 ms of
    lower + compile; ``benchmarks/RULE_SWEEP.md``, P6), while its gradients ran in half
    XLA's time (0.46 against 0.86 ms, 0.7 × the compile, a fifth of the temporaries). So
    a strided one is a bilinear primitive (:data:`_strided_pointwise_p`): XLA's forward,
    this product's transposes.

    In 1-D and 3-D, XLA:CPU makes a 1×…×1 convolution a matrix product of its own, on
    Eigen's multi-threaded GEMM, while a ``dot_general`` written here goes to YNNPACK:
    the written product ran 1.10–1.59 × XLA's forward ((8, 1024, 64) → 64 0.57 against
    0.51 ms; (8, 4096, 64) → 128 6.2 against 3.9; (2, 16, 32, 32, 32) → 64 1.7 against
    1.2). There the value and the input gradient are XLA's (:data:`_pointwise_xla_p`)
    and the kernel gradient this product's (XLA's is a convolution behind three
    transposed copies): forward+backward 0.24–0.92 × XLA's (0.32–1.19 × with the written
    product's forward), its temporaries 0.00–0.02 MiB against XLA's 1–2. In 2-D XLA:CPU
    hands the convolution to YNNPACK, and the written product stays (a 2-D 1×1
    convolution as a 1-D one, which XLA makes its Eigen product, ran 0.87–1.67 × this
    one's forward on the sweep's 2-D calls).
    """
    if any(s > 1 for s in spec.strides):
        return _strided_pointwise_p.bind(x, kernel, spec=spec, precision=precision)
    if spec.rank != 2:
        return _pointwise_xla_p.bind(x, kernel, spec=spec, precision=precision)
    return _pointwise_product(x, kernel, spec=spec, precision=precision)


def _pixels(x: Array, spec: ConvSpec) -> Array:
    """The input as the product's ``(N, *out, C)`` operand: padded, the strided slice
    taken, channels last."""
    axes = _spatial_axes(spec)
    x = _pad_spatial(x, axes, spec.padding)
    if any(s > 1 for s in spec.strides):
        step = [1] * x.ndim
        for axis, s in zip(axes, spec.strides):
            step[axis] = s
        x = lax.slice(x, (0,) * x.ndim, x.shape, step)
    return jnp.moveaxis(x, 1, -1) if spec.data_format == "channels_first" else x


def _pointwise_product(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any
                       ) -> Array:
    """:func:`pointwise_dot`'s matrix product, the strided slice first."""
    x = _pixels(x, spec)
    channels, filters = kernel.shape[-2:]
    y = lax.dot_general(x.reshape(-1, channels), kernel.reshape(channels, filters),
                        (((1,), (0,)), ((), ())), precision=precision,
                        preferred_element_type=spec.preferred_element_type)
    y = y.reshape(x.shape[:-1] + (filters,))
    return y if spec.data_format == "channels_last" else jnp.moveaxis(y, -1, 1)


def _pointwise_kernel_gradient(ct: Array, x: Array, kernel: Any, *, spec: ConvSpec,
                               precision: Any) -> Array:
    """The product's kernel gradient written as ``pixelsᵀ · ct``, ``(C, filters)`` as the
    kernel lies. Autodiff's transpose of the product is ``ctᵀ · pixels`` and a transpose
    after it, which XLA:CPU copies even where it moves nothing (with one filter the
    forward+backward temporaries came out 64–256 bytes above lax's, for a Conv3D or
    Conv1D to one channel)."""
    shape, dtype = tuple(kernel.aval.shape), kernel.aval.dtype
    channels, filters = shape[-2:]
    operands = jnp.promote_types(x.dtype, ct.dtype)
    pixels = _pixels(x, spec).astype(operands).reshape(-1, channels)
    if spec.data_format == "channels_first":
        ct = jnp.moveaxis(ct, 1, -1)
    acc = _accumulation_dtype(spec)
    ct = ct.astype(operands).reshape(-1, filters)
    if filters == 1:
        # A matrix-vector product: XLA:CPU gives its dot a (P, 1) cotangent and a (C, 1)
        # result, each a loop fusion of two bitcasts — copies (64 KB of temporaries for a
        # Conv1D of W6's size). As a product-and-sum it is one fusion reading both.
        gradient = jnp.sum(pixels.astype(acc) * ct.astype(acc), axis=0)
    else:
        gradient = lax.dot_general(pixels, ct, (((0,), (0,)), ((), ())),
                                   precision=precision, preferred_element_type=acc)
    return gradient.reshape(shape).astype(dtype)


#: A strided :func:`pointwise_dot`: XLA's convolution as its value and tangents, the
#: strided matrix product's transposes as its gradients.
_strided_pointwise_p = _conv_primitive("kconv_strided_pointwise", _xla_conv,
                                       _transposes(_pointwise_product)[0],
                                       _pointwise_kernel_gradient)

#: An unstrided 1-D or 3-D :func:`pointwise_dot`: XLA's convolution (XLA:CPU's own
#: matrix product) as its value, tangents and input gradient, the written product's
#: kernel gradient.
_pointwise_xla_p = _conv_primitive("kconv_pointwise_xla", _xla_conv, _plain_input_gradient,
                                   _pointwise_kernel_gradient)
