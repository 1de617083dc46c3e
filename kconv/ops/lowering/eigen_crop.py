"""``eigen_crop``: a stride-1 dense 2-D convolution computed one output row taller, so
that XLA:CPU runs it on its multi-threaded Eigen convolution.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jax import lax

from kconv.ops.lowering.spec import Array, ConvSpec, _spatial_axes
from kconv.ops.lowering.plain import _plain_input_gradient, _plain_kernel_gradient, _xla_conv
from kconv.ops.lowering.primitives import _conv_primitive


def eigen_crop(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any) -> Array:
    """A stride-1 dense 2-D convolution computed over a taller output window and cropped
    back, so that XLA:CPU runs it on its multi-threaded Eigen convolution.

    XLA:CPU (jaxlib 0.10) hands a float32 2-D convolution with more than 16 channels in
    or out to YNNPACK, which runs these sizes on one core; it keeps on Eigen (threaded
    over XLA's intra-op pool) a convolution whose output is taller than its input. So the
    first spatial axis is padded ``in - out + 1`` rows further at its end, and the extra
    output rows are sliced off again. The slice fuses with the bias add after it, which
    is why :func:`choose` takes this only for a call that adds one (``ConvSpec.bias``):
    alone, the slice is a loop fusion of its own (W1 lower + compile 16 → 81 ms; with the
    bias 41 ms, as lax's). W1 ((16, 32, 32, 64) → 64, 3×3 "same") forward 13.5 → 8.5 ms
    on 2 cores; on one core Eigen is 0–15 % slower, so the rule wants two. The cost is
    one output-sized buffer in the forward pass (the taller output; the plain path writes
    into its own output) and ``in - out + 1`` rows of extra multiply-adds.

    A bilinear primitive whose tangents are itself and whose transposes are lax's
    (:data:`_eigen_crop_p`): the input and kernel gradients are the plain convolution's.
    The kernel gradient of the taller form would take a cotangent taller than the input,
    which XLA swaps into a convolution on its generic loop (W1: 0.37 s). Inside a
    derivative the value is XLA's convolution (``derivative_value``): its bias add runs in
    place in the output, where the taller output would be a temporary beside the kernel
    gradient's transposed copies (W1 forward+backward 8.1 → 12.1 MiB; XLA schedules the
    gradients' copies before the crop whatever data dependency is added, as it fuses the
    one element read into the copy).
    """
    return _eigen_crop_p.bind(x, kernel, spec=spec, precision=precision)


def _eigen_crop_value(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any
                      ) -> Array:
    rows = spec.output_spatial()[0]
    (lo, hi), *rest = spec.padding
    taller = dataclasses.replace(spec, padding=((lo, hi + spec.spatial[0] - rows + 1),
                                                *rest))
    y = _xla_conv(x, kernel, spec=taller, precision=precision)
    return lax.slice_in_dim(y, 0, rows, axis=_spatial_axes(spec)[0])


_eigen_crop_p = _conv_primitive("kconv_eigen_crop", _eigen_crop_value,
                                _plain_input_gradient, _plain_kernel_gradient,
                                derivative_value=_xla_conv)
