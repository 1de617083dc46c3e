"""``kconv.ops``: the pure array core (arrays in, arrays out, Keras argument conventions).

How each op is computed on each platform — XLA's convolution, or on XLA:CPU a faster
equivalent — is :mod:`kconv.ops.lowering`'s rule (``kconv.config.set_conv_lowering``).

Example:
    >>> import jax.numpy as jnp
    >>> from kconv import ops
    >>> ops.conv(jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4)), padding="same").shape
    (2, 8, 8, 4)
    >>> ops.conv_output_shape((None, 8, 8, 3), 4, 3, padding="same")
    (None, 8, 8, 4)
"""

from kconv.ops import lowering, shapes
from kconv.ops.convolution import conv, conv_transpose, depthwise_conv, separable_conv
from kconv.ops.reshape import (
    crop,
    crop_output_shape,
    upsample,
    upsample_output_shape,
    zero_pad,
    zero_pad_output_shape,
)
from kconv.ops.shapes import (
    conv_output_length,
    conv_output_shape,
    conv_transpose_output_length,
    conv_transpose_output_shape,
    depthwise_conv_output_shape,
    separable_conv_output_shape,
)

__all__ = [
    "conv",
    "conv_transpose",
    "depthwise_conv",
    "separable_conv",
    "conv_output_length",
    "conv_output_shape",
    "conv_transpose_output_length",
    "conv_transpose_output_shape",
    "depthwise_conv_output_shape",
    "separable_conv_output_shape",
    "shapes",
    "lowering",
    "crop",
    "zero_pad",
    "upsample",
    "crop_output_shape",
    "zero_pad_output_shape",
    "upsample_output_shape",
]
