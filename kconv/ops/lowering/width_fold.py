"""``width_fold``: a dense 3-D convolution as a 2-D one, the taps of its last spatial axis
folded into the channels.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from kconv.ops.lowering.spec import Array, ConvSpec, _channel_axis, _spatial_axes, _tap_window_plan
from kconv.ops.lowering.rule import _eigen_runs_faster
from kconv.ops.lowering.plain import _plain_input_gradient, _plain_kernel_gradient, _xla_conv
from kconv.ops.lowering.primitives import _conv_primitive
from kconv.ops.lowering.eigen_crop import _eigen_crop_value
from kconv.ops.lowering.tap_loop import _tap_loop_transposes


def width_fold(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any) -> Array:
    """A dense 3-D convolution as a 2-D one: the taps of the last spatial axis folded
    into the channels, that axis into the batch.

    XLA:CPU (jaxlib 0.10) has no fast 3-D convolution: its loop runs W7
    ((2, 16, 16, 16, 16) → 32, 3×3×3) at 12–16 % of the GEMM. Here one loop fusion cuts
    the ``k_w`` windows of the input along its last spatial axis ``W`` (each its own
    slice and zero pad, as :func:`_tap_window_plan` plans them) and lays them out as
    ``(N · W_out, D, H, k_w · C)``; the kernel ``(k_d, k_h, k_w, C, F)`` is then already
    the 2-D kernel ``(k_d, k_h, k_w · C, F)`` (a bitcast: no kernel reorder to compile);
    the 2-D convolution over ``(D, H)`` takes XLA:CPU's fast path; a second loop fusion
    moves ``W_out`` back (with the caller's bias add). Where :func:`eigen_crop` would pay
    for the 2-D convolution it is computed one row taller and cropped inside that
    fusion, on both cores. W7 forward 7.1–8.6 → 1.8 ms, lower + compile 1.3 × lax's.

    The cost is the folded input, ``k_w`` times the input's size, as forward temporaries
    (W7 2.6 MiB; the plain path has none); :func:`choose` takes this while that stays
    within :data:`MAX_WIDTH_FOLD_BYTES`. A bilinear primitive (:data:`_width_fold_p`)
    whose gradients are :func:`_tap_loop`'s where :func:`_tap_loop_pays` (both in one
    loop where both are asked for), lax's elsewhere (folded gradients would keep the
    folded input alive into the backward pass). Inside a derivative its value is XLA's
    convolution: the folded input and the 2-D output alone exceed lax's forward+backward
    temporaries (W7 2.6 against 1.6 MiB), so forward+backward is :func:`tap_loop`'s.
    """
    return _width_fold_p.bind(x, kernel, spec=spec, precision=precision)


def _width_fold_value(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any
                      ) -> Array:
    *_, w_axis = _spatial_axes(spec)
    channel = _channel_axis(spec)
    (*_, k_w), (*_, width) = spec.kernel_size, spec.spatial
    out = spec.output_spatial()
    # The last spatial axis alone, as a 1-D convolution, for the window plans.
    along_w = ConvSpec(rank=1, data_format="channels_last",
                       input_shape=(1, width, spec.channels), kernel_shape=(k_w, 1, 1),
                       strides=spec.strides[-1:], padding=spec.padding[-1:],
                       dilation=spec.dilation[-1:])
    windows = []
    for j in range(k_w):
        plan = _tap_window_plan(x.shape, (w_axis,), (j,), along_w, out[-1:])
        if plan is None:  # every element of this window is padding
            shape = list(x.shape)
            shape[w_axis] = out[-1]
            windows.append(jnp.zeros(shape, x.dtype))
            continue
        (start, limit, step), pads = plan
        window = x if start is None else lax.slice(x, start, limit, step)
        windows.append(window if pads is None else
                       lax.pad(window, np.zeros((), x.dtype), pads))
    # Channel j * C + c is tap j's channel c: (N, W_out, D, H, k_w * C), one batch axis.
    folded = lax.concatenate(windows, channel)
    d_axis, h_axis = _spatial_axes(spec)[:2]
    folded = jnp.transpose(folded, (0, w_axis, d_axis, h_axis, channel))
    n, d, h = x.shape[0], x.shape[d_axis], x.shape[h_axis]
    folded = folded.reshape(n * out[-1], d, h, k_w * spec.channels)
    filters = spec.kernel_shape[-1]
    plane = ConvSpec(rank=2, data_format="channels_last", input_shape=folded.shape,
                     kernel_shape=(*spec.kernel_size[:2], k_w * spec.channels, filters),
                     strides=spec.strides[:2], padding=spec.padding[:2],
                     dilation=spec.dilation[:2], dtype=spec.dtype,
                     preferred_element_type=spec.preferred_element_type)
    # A crop fuses into the transpose below, as eigen_crop's into its bias add.
    conv2d = _eigen_crop_value if _eigen_runs_faster(plane) else _xla_conv
    y = conv2d(folded, kernel.reshape(plane.kernel_shape), spec=plane, precision=precision)
    y = y.reshape(n, out[-1], *out[:2], filters)  # (N, W_out, D_out, H_out, F)
    order = (0, 2, 3, 1, 4) if spec.data_format == "channels_last" else (0, 4, 2, 3, 1)
    return jnp.transpose(y, order)


_width_fold_p = _conv_primitive("kconv_width_fold", _width_fold_value, _xla_conv,
                                *_tap_loop_transposes(_plain_input_gradient,
                                                      _plain_kernel_gradient),
                                derivative_value=_xla_conv)
