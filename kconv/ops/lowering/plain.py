"""XLA's own convolutions, the plain path every lowering is checked against, and their
transposes (lax's gradients).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax import lax

from kconv import _args
from kconv.ops.lowering.spec import Array, ConvSpec
from kconv.ops.lowering.primitives import _transposes


def _lax_conv(x: Array, kernel: Array, **kwargs: Any) -> Array:
    # kconv.ops.convolution holds the package's single lax.conv_general_dilated call and
    # imports this module, so this import waits for the first call.
    from kconv.ops.convolution import _conv_general_dilated

    return _conv_general_dilated(x, kernel, **kwargs)


def dimension_numbers(rank: int, data_format: str, *, kernel_in_axis: int,
                      kernel_out_axis: int) -> lax.ConvDimensionNumbers:
    """lax dimension numbers for a data format and a kernel ``(*k, a, b)`` layout.

    channels_first is expressed here, never by transposing arrays; so is the transposed
    kernel layout ``(*k, filters, in)`` (``kernel_in_axis=rank + 1``).

    Example:
        >>> dimension_numbers(1, "channels_last", kernel_in_axis=1, kernel_out_axis=2)
        ConvDimensionNumbers(lhs_spec=(0, 2, 1), rhs_spec=(2, 1, 0), out_spec=(0, 2, 1))
    """
    spatial = tuple(range(rank))
    if data_format == "channels_last":
        lhs = (0, rank + 1, *range(1, rank + 1))
    else:
        lhs = (0, 1, *range(2, rank + 2))
    return lax.ConvDimensionNumbers(lhs_spec=lhs, rhs_spec=(kernel_out_axis, kernel_in_axis,
                                                            *spatial), out_spec=lhs)


def _xla_conv(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any) -> Array:
    """XLA's convolution; the kernel ``(*k, in, out)``."""
    rank = spec.rank
    padding = spec.padding
    if _args.is_symbolic([p for pair in padding for p in pair]):
        # Symbolic amounts come only from "same" with a stride over a symbolic length
        # (jax.export): lax takes them only as its own "SAME", which is Keras's rule.
        padding = "SAME"
    return _lax_conv(
        x, kernel, strides=spec.strides, padding=padding, lhs_dilation=(1,) * rank,
        rhs_dilation=spec.dilation,
        dimension_numbers=dimension_numbers(rank, spec.data_format, kernel_in_axis=rank,
                                            kernel_out_axis=rank + 1),
        feature_group_count=spec.groups, precision=precision,
        preferred_element_type=spec.preferred_element_type,
    )


def _xla_conv_transpose(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any
                        ) -> Array:
    # A stride-1 convolution of the input dilated by the strides with the flipped kernel,
    # read in its (*k, filters // groups, in) layout through the dimension numbers.
    rank = spec.rank
    kernel = lax.rev(kernel, tuple(range(rank)))
    in_axis, out_axis = rank + 1, rank
    if spec.groups > 1:
        kernel, in_axis, out_axis = _grouped_transpose_kernel(kernel, spec.groups), rank, \
            rank + 1
    return _lax_conv(
        x, kernel, strides=(1,) * rank, padding=spec.padding,
        lhs_dilation=spec.strides, rhs_dilation=spec.dilation,
        dimension_numbers=dimension_numbers(rank, spec.data_format,
                                            kernel_in_axis=in_axis, kernel_out_axis=out_axis),
        feature_group_count=spec.groups, precision=precision,
        preferred_element_type=spec.preferred_element_type,
    )


def _grouped_transpose_kernel(kernel: Array, groups: int) -> Array:
    """A transposed kernel ``(*k, F // g, C)`` as lax's grouped forward kernel
    ``(*k, C // g, F)``: group ``j``'s block ``kernel[..., :, j * C // g:(j + 1) * C // g]``,
    transposed, becomes output columns ``j * F // g … (j + 1) * F // g - 1``.

    lax wants each group's output features contiguous in one axis, and the transposed
    layout holds the group index in the input axis: no dimension numbers express that,
    so it is one kernel-sized transpose (a reshape when ``F // g == 1`` or ``C // g ==
    1``), which XLA fuses with the spatial flip.

    Example:
        >>> k = jnp.arange(4.0).reshape(1, 1, 4)       # (k, F // g = 1, C = 4), g = 2
        >>> _grouped_transpose_kernel(k, 2)[0]          # (C // g = 2, F = 2)
        Array([[0., 2.],
               [1., 3.]], dtype=float32)
    """
    rank = kernel.ndim - 2
    per_group, channels = kernel.shape[-2:]
    # (*k, F/g, g, C/g) -> (*k, C/g, g, F/g): column j * F/g + f is group j's filter f.
    kernel = kernel.reshape(kernel.shape[:rank] + (per_group, groups, channels // groups))
    kernel = jnp.transpose(kernel, (*range(rank), rank + 2, rank + 1, rank))
    return kernel.reshape(kernel.shape[:rank] + (channels // groups, groups * per_group))


#: JAX's transposes of XLA's plain convolution: lax's input and kernel gradients.
_plain_input_gradient, _plain_kernel_gradient = _transposes(_xla_conv)
