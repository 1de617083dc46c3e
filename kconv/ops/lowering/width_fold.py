"""``width_fold``: a dense 3-D convolution as a 2-D one, the taps of its last spatial axis
folded into the channels; and :func:`_merged_plane_conv`, the same fold with no transposes
(the sub-pixel form's phase convolution).
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from kconv.ops.lowering.spec import (Array, ConvSpec, _channel_axis, _reshape_batched,
                                     _spatial_axes, _tap_window_plan)
from kconv.ops.lowering.rule import _cpu_float, _eigen_runs_faster
from kconv.ops.lowering.plain import (_lax_conv, _plain_input_gradient,
                                      _plain_kernel_gradient, _xla_conv)
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
    folded input alive into the backward pass). Inside a derivative the folded input and
    the 2-D output alone would exceed lax's forward+backward temporaries (W7 2.6 against
    1.6 MiB), so the value there is :func:`_merged_plane_conv` where its gathered taps fit
    under the output (:func:`_merged_plane_fits`: few channels, a 3-D network's first
    layers; (2, 16, 16, 16, 4) → 16 forward+backward 7.8 → 4.2 ms), XLA's convolution
    elsewhere (W7: forward+backward is then :func:`tap_loop`'s).
    """
    return _width_fold_p.bind(x, kernel, spec=spec, precision=precision)


#: XLA:CPU (jaxlib 0.10) leaves a concatenation along the minor axis out of the loop
#: fusion from this many elements of that axis on (126 fused, 128 not: a probe over 2–5
#: taps and 24–64 channels): it copies the operands as a library call, and each window's
#: slice and pad is then a loop fusion of its own, slow to compile (a standalone pad of the
#: input: 66 ms of LLVM). So from there :func:`width_fold` stacks its windows on an axis of
#: their own and merges it with the channels (a bitcast), which stays one loop fusion:
#: (2, 8, 8, 8, 64) → 64, 3×3×3, lower + compile 141 → 63 ms (XLA's convolution 37),
#: 48 channels 145 → 75, 128 channels 94 → 59, run time the same. Below the limit the
#: concatenation compiles 2–5 ms faster than the stack.
_MINOR_CONCAT_LIMIT = 128


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
    if spec.data_format == "channels_last" and k_w * spec.channels >= _MINOR_CONCAT_LIMIT:
        # Stacked on an axis of their own and merged: see _MINOR_CONCAT_LIMIT.
        folded = jnp.stack(windows, channel)
        folded = folded.reshape(folded.shape[:channel] + (k_w * spec.channels,))
    else:
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


def _merged_plane_applies(spec: ConvSpec) -> bool:
    """Whether :func:`_merged_plane_conv` computes ``spec``: 3-D, channels_last, dense,
    stride 1 along ``H``, float32 (in float16 its merged-axis convolution compiled slower
    than XLA's 3-D one and rounded differently: W7 91 against 77 ms, 3e-4 relative)."""
    return (spec.rank == 3 and spec.data_format == "channels_last" and spec.groups == 1
            and spec.strides[1] == 1 and _cpu_float(spec, (np.dtype(np.float32),)))


def _merged_plane_conv(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any) -> Array:
    """A dense 3-D convolution (:func:`_merged_plane_applies`) as two of XLA:CPU's 2-D
    convolutions, with nothing between them or around them for its compiler to emit.

    1. The taps of ``W`` are gathered into the channels by a convolution over the planes
       ``(N · D, H, W, C)`` (a bitcast) with a 0/1 kernel ``(1, k_w, C, k_w · C)`` — the
       identity on (tap, channel) — which takes ``W``'s stride, dilation and padding:
       ``(N · D, H, W_out, k_w · C)``, every entry one input element times 1 plus zeros
       (exact; an infinite input, times the window's zeros, becomes NaN in that window's
       other channels, where XLA's convolution keeps ±inf).
    2. That is ``(N, D, H · W_out, k_w · C)`` as it lies, and the kernel
       ``(k_d, k_h, k_w · C, F)`` as it lies: a 2-D convolution over ``(D, H · W_out)``
       whose ``H`` taps sit ``W_out`` apart on the merged axis (``rhs_dilation``), its
       zero padding whole rows of ``W_out``; its output ``(N, D_out, H_out · W_out, F)``
       is the 3-D output as it lies.

    :func:`width_fold` moves ``W`` next to the batch instead (a loop fusion of windows and
    a transpose each way, ~10–20 ms of XLA:CPU compile each on these sizes). Here both
    steps are library calls: lower + compile at 1.05–1.15 × XLA's 3-D convolution's. Run
    time, against XLA's 3-D loop, for the sub-pixel form's phase convolutions
    (:func:`~kconv.ops.lowering.transposed._phase_conv`, kernels of 1–3 taps an axis):
    X2's (2, 8, 8, 8, 32) → 128 0.93 → 0.64 ms, (2, 16, 16, 16, 32) → 128 5.1 → 2.9,
    (2, 8, 8, 8, 8) → 64 0.43 → 0.21, (2, 8, 8, 8, 64) → 256 2.0 → 1.6, 3 taps 2.4 → 1.3.
    Against :func:`width_fold`'s transposed form it runs 0.8–1.5 × as long, varying
    with the shape (W7 1.60 against 1.47 ms, ``"valid"`` 1.83 against 1.18, 8 channels
    0.77 against 0.90), so plain 3-D convolutions keep that.
    """
    n, d, h, w, c = x.shape
    k_d, k_h, k_w, _, filters = kernel.shape
    (s_d, _, s_w), (r_d, r_h, r_w) = spec.strides, spec.dilation
    (pad_d, (lo, hi), pad_w) = spec.padding
    taps = k_w * c
    dims = ("NHWC", "HWIO", "NHWC")
    # np, not jnp: a literal constant in the program, not an iota fusion to compile.
    identity = np.eye(taps, dtype=np.float32).reshape(1, k_w, c, taps)
    planes = _lax_conv(x.reshape(n * d, h, w, c), identity, strides=(1, s_w),
                       padding=((0, 0), pad_w), lhs_dilation=(1, 1), rhs_dilation=(1, r_w),
                       dimension_numbers=dims, feature_group_count=1,
                       precision=lax.Precision.HIGHEST, preferred_element_type=None)
    w_out = planes.shape[2]
    y = _lax_conv(_reshape_batched(planes, (n, d, h * w_out, taps)),
                  kernel.reshape(k_d, k_h, taps, filters), strides=(s_d, 1),
                  padding=(pad_d, (lo * w_out, hi * w_out)), lhs_dilation=(1, 1),
                  rhs_dilation=(r_d, r_h * w_out), dimension_numbers=dims,
                  feature_group_count=1, precision=precision,
                  preferred_element_type=spec.preferred_element_type)
    return y.reshape(n, y.shape[1], y.shape[2] // w_out, w_out, filters)


#: What the fold's value inside a derivative may hold beside lax's temporaries, in bytes,
#: for the tap loop's state and constants (its offsets, its ``while`` tuple and counter:
#: 0.7–2 KB measured) and the merged plane's identity: :func:`_merged_plane_fits`.
_LOOP_STATE_BYTES = 4096


def _merged_plane_fits(spec: ConvSpec) -> bool:
    """Whether the value inside a derivative (:func:`_width_fold_derivative_value`) is
    :func:`_merged_plane_conv`: where it applies (:func:`_merged_plane_applies`), to two
    channels or more, and its gathered taps fit under the output — ``k_w · C`` at most
    about ``F``: a 3-D network's first layers.

    XLA's 3-D convolution (the value otherwise) runs these on its generic loop: inside a
    training step, (2, 16, 16, 16, 4) → 16 forward+backward 7.8 → 4.2 ms (lax's 16.8),
    (1, 16, 64, 64, 4) → 16 46 → 21, (2, 32, 32, 32, 3) → 32 57 → 26, at the same lower +
    compile (two library convolutions for one; the fold itself, a loop fusion each way,
    compiled 30–45 ms more, and holds the folded input and its 2-D output).
    The memory bar is lax's forward+backward, which on stride-1 "same" calls holds the
    input, output and kernel once more each (the kernel gradient's transposed copies of
    the input and the cotangent, the input gradient's reversed kernel: ``|x| + |y| +
    |k|`` to the byte on seven shapes); the merged plane's holds an output-sized buffer,
    the tap loop's input-gradient accumulator and its state, the gathered taps sharing
    the output's space where they fit under it. Hence the bounds: the gathered taps and
    the identity under the output, the identity and :data:`_LOOP_STATE_BYTES` under the
    kernel. Checked on 69 calls they admit (2–6 channels, 8–64 filters, kernels 2–5 wide,
    "same" and "valid", strides 2 on ``D`` and ``W``, dilation 2): held bytes 0.60–0.96 ×
    lax's. One input channel is left out: there lax's own held bytes fell below
    ``|x| + |y| + |k|`` and the merged plane's read 1–2 KB over on 4 of 5 shapes. W7 (48
    gathered channels for 32 filters: 2.6 against 1.6 MiB) keeps XLA's value.
    """
    if not _merged_plane_applies(spec) or spec.channels < 2:
        return False
    item = spec.dtype.itemsize
    *_, k_w = spec.kernel_size
    out = spec.output_spatial()
    n, *spatial = spec.input_shape[:-1]
    taps = k_w * spec.channels
    gathered = n * spatial[0] * spatial[1] * out[-1] * taps * item
    identity = taps * taps * 4
    output = n * math.prod(out) * spec.kernel_shape[-1] * item
    kernel = math.prod(spec.kernel_shape) * item
    return gathered + identity <= output and identity + _LOOP_STATE_BYTES <= kernel


def _width_fold_derivative_value(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any
                                 ) -> Array:
    """The fold's value inside a derivative: :func:`_merged_plane_conv` where it fits
    (:func:`_merged_plane_fits`), else XLA's convolution."""
    if _merged_plane_fits(spec):
        return _merged_plane_conv(x, kernel, spec=spec, precision=precision)
    return _xla_conv(x, kernel, spec=spec, precision=precision)


_width_fold_p = _conv_primitive("kconv_width_fold", _width_fold_value,
                                *_tap_loop_transposes(_plain_input_gradient,
                                                      _plain_kernel_gradient),
                                derivative_value=_width_fold_derivative_value)
