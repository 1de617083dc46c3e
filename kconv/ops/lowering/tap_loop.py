"""The tap loop: the gradients of a dense convolution as one loop over the kernel's taps
(``tap_loop``; the gradients of ``width_fold`` and of the 3-D ``subpixel_transpose``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from kconv.ops.lowering.spec import Array, ConvSpec, _accumulation_dtype
from kconv.ops.lowering.rule import _tap_loop_pays
from kconv.ops.lowering.plain import _plain_input_gradient, _plain_kernel_gradient, _xla_conv
from kconv.ops.lowering.primitives import _conv_primitive


def _zeros_after(shape: Sequence[int], dtype: Any, after: Array) -> Array:
    """Zeros of ``shape`` that XLA cannot compute before ``after``: a loop's accumulator.

    A broadcast constant has no operands, and XLA:CPU's scheduler may place it anywhere —
    in a model it put the input gradient's accumulator at the program's start, an
    input-sized buffer live through the forward pass and the later layers' backward (the
    3-D model M2's forward+backward temporaries 1.13 × lax's). These zeros read one
    element ``e`` of ``after``: ``|e| · 0`` where ``e`` is finite (XLA folds no float
    product with zero) and the constant where it is not, so +0 whatever ``e`` holds.
    """
    e = lax.reshape(lax.slice(after, (0,) * after.ndim, (1,) * after.ndim), ())
    e = lax.convert_element_type(e, dtype)
    zero = lax.select(lax.is_finite(e), lax.mul(lax.abs(e), np.zeros((), dtype)),
                      np.zeros((), dtype))
    return lax.broadcast(zero, tuple(shape))


def _tap_loop(ct: Array, x: Any, kernel: Any, *, spec: ConvSpec, precision: Any,
              input_gradient: bool = True, kernel_gradient: bool = True,
              forward: bool = False) -> tuple[Array | None, Array | None, Array | None]:
    """The input and/or kernel gradient of a dense convolution (``groups == 1``), and
    optionally its value, as one loop over the kernel's taps, each tap one or two matrix
    products.

    XLA:CPU (jaxlib 0.10) runs both gradients of a 3-D convolution on its generic loop
    (W7's forward+backward 24–29 ms, 12 % of the GEMM). Tap ``t``'s share of them is a
    matrix product each: the kernel gradient's ``kernel[t] = window_t(x)ᵀ · ct`` over all
    output positions, and the input gradient's ``ct · kernel[t]ᵀ`` added into the input
    positions the tap reads. One :func:`jax.lax.scan` over the taps computes both (W7
    forward+backward 4.5 ms, torch's 3.8; lower + compile 1.2–1.3× lax's, one loop body
    to compile where 27 unrolled taps took 2.6×). Per tap it holds one window and one
    product (the input's size each; lax's gradients hold transposed copies of the input
    and the cotangent): the input's zero padding is fused into each window's slice (its
    padding value is one XLA cannot prove loop-invariant, or it hoists the pad out of the
    loop as a padded copy of the input) and the tap's product into the accumulator's
    add. In channels_last the last spatial axis and the channels are one axis, so that
    every window and addition is 4-D (compiles faster, runs 1.7× faster on W7).

    ``forward`` also sums ``window_t(x) · kernel[t]``, the convolution itself, from the
    same windows: a transposed convolution's input gradient is the forward convolution
    of its cotangent, and its kernel gradient that convolution's kernel gradient
    (:func:`_subpixel_joint`).

    ``x`` and ``kernel`` may be :class:`jax.interpreters.ad.UndefinedPrimal` (only their
    shapes are read) where their own gradient is the one asked for. Returns ``(input's
    gradient, kernel's gradient, the convolution)``, each ``None`` unless asked for, the
    gradients in ``x``'s and ``kernel``'s dtypes, the convolution (and every partial sum)
    in :func:`_accumulation_dtype`.
    """
    rank, (channels, filters) = spec.rank, spec.kernel_shape[-2:]
    x_shape, x_dtype = tuple(x.aval.shape), x.aval.dtype
    kernel_shape, kernel_dtype = tuple(kernel.aval.shape), kernel.aval.dtype
    n, out, strides, dilation = x_shape[0], spec.output_spatial(), spec.strides, spec.dilation
    acc = _accumulation_dtype(spec)
    operands = jnp.promote_types(x_dtype, ct.dtype)
    last = spec.data_format == "channels_last"
    # channels_last with stride 1 on the last axis: (N, ..., W, C) viewed as
    # (N, ..., W * C), a bitcast, in which a window along W is one contiguous range.
    merged = last and strides[-1] == 1
    axes = tuple(range(1, rank + 1)) if last else tuple(range(2, rank + 2))
    unit = (1,) * (rank - 1) + (channels if merged else 1,)

    def view_shape(spatial: Sequence[int]) -> tuple[int, ...]:
        if merged:
            return (n, *spatial[:-1], spatial[-1] * channels)
        return (n, *spatial, channels) if last else (n, channels, *spatial)

    ndim = len(view_shape(out))

    def per_dim(values: Sequence[Any], fill: Any) -> list[Any]:
        """One entry per dimension of the view: ``values`` on the spatial axes, ``fill``
        elsewhere."""
        full = [fill] * ndim
        for axis, value in zip(axes, values):
            full[axis] = value
        return full

    # Tap t's window: the padded input from t * dilation, every stride-th element (pads
    # and offsets scaled by ``unit`` on the merged axis).
    spans = [(o - 1) * s + 1 for o, s in zip(out, strides)]
    x_pads = per_dim([(lo * u, hi * u, 0) for (lo, hi), u in zip(spec.padding, unit)],
                     (0, 0, 0))
    # Tap t's product lands on input s * o + t * dilation - lo: interleaved by the
    # strides and padded by the most any tap needs, then sliced at the tap's offset.
    p_lo = [max(0, (k - 1) * d - lo)
            for k, d, (lo, _) in zip(spec.kernel_size, dilation, spec.padding)]
    p_hi = [max(0, lo + length - span)
            for length, span, (lo, _) in zip(spec.spatial, spans, spec.padding)]
    p_pads = per_dim([(lo * u, hi * u, s - 1)
                      for lo, hi, s, u in zip(p_lo, p_hi, strides, unit)], (0, 0, 0))
    ct = ct.astype(operands)
    if last:
        ct = ct.reshape(-1, filters)  # (positions, F)
    contract = (0,) if last else (0, *range(2, rank + 2))
    taps = np.array(list(itertools.product(*map(range, spec.kernel_size))), np.int32)
    # Each tap's offsets in the view, per spatial axis (scan inputs: scalars in the body,
    # so that it holds lax primitives only — jnp arithmetic on them would add a nested
    # jit to trace and lower per operation).
    units = np.array(unit, np.int32)
    window_at = taps * np.array(dilation, np.int32) * units
    product_at = (np.array(p_lo) + np.array([lo for lo, _ in spec.padding])
                  - taps * np.array(dilation)).astype(np.int32) * units
    x_like = view_shape(spec.spatial)
    strided = per_dim(strides, 1)
    if not last:  # the products come out (N, *out, C); the view is (N, C, *out)
        to_first = (0, rank + 1, *range(1, rank + 1))

    def cast(a: Array, dtype: Any) -> Array:
        return a if a.dtype == dtype else lax.convert_element_type(a, dtype)

    def body(totals: tuple[Array | None, Array | None],
             tap: tuple[Array, Sequence[Array], Sequence[Array], Array | None]
             ) -> tuple[tuple[Array | None, Array | None], Array | None]:
        (total, value), (index, window_start, product_start, kernel_t) = totals, tap
        gradient = None
        if kernel_gradient or forward:
            # A padding value XLA cannot prove loop-invariant (it is 0): a constant one
            # has the pad hoisted out of the loop as a padded copy of the input. The
            # condition reads the tap's index, never negative: a tap's offsets may all be
            # one constant (a kernel one tap wide on that axis), which XLA would fold.
            zero = lax.convert_element_type(lax.lt(index, np.int32(0)), x_dtype)
            padded = lax.pad(lax.reshape(x, x_like), zero, x_pads)
            # The offsets are never negative: no index normalisation to trace, lower and
            # compile (W7 forward+backward trace 12.1 -> 9.2 ms, both dynamic slices).
            window = lax.dynamic_slice(padded, per_dim(window_start, np.int32(0)),
                                      view_shape(spans), allow_negative_indices=False)
            if any(s > 1 for s in strides):
                window = lax.slice(window, (0,) * ndim, window.shape, strided)
            window = cast(window, operands)
            if last:
                window = lax.reshape(window, (window.size // channels, channels))
        if kernel_gradient:
            gradient = lax.dot_general(window, ct, ((contract, contract), ((), ())),
                                       precision=precision, preferred_element_type=acc)
        if forward:
            value = lax.add(value, lax.dot_general(
                window, cast(kernel_t, operands),
                (((window.ndim - 1 if last else 1,), (0,)), ((), ())),
                precision=precision, preferred_element_type=acc))
        if input_gradient:
            if kernel_gradient:
                # The kernel gradient's product before the input gradient's, so that the
                # latter reuses the window's buffer (XLA:CPU's scheduler may run them the
                # other way round, both buffers live: 2× the loop's temporaries, above
                # lax's; an optimization_barrier does not survive to its scheduler). A
                # select on an entry of the kernel gradient whose condition is never true
                # (no tap index is negative; a NaN alone never selects) is the dependency.
                entry = lax.reshape(lax.slice(gradient, (0, 0), (1, 1)), ())
                never = lax.bitwise_and(lax.ne(entry, entry), lax.lt(index, np.int32(0)))
                kernel_t = lax.select(lax.broadcast(never, kernel_t.shape),
                                      lax.full_like(kernel_t, 0), kernel_t)
            product = lax.dot_general(ct, cast(kernel_t, operands),
                                      ((((ct.ndim - 1) if last else 1,), (1,)), ((), ())),
                                      precision=precision, preferred_element_type=acc)
            product = (lax.reshape(product, view_shape(out)) if last
                       else lax.transpose(product, to_first))
            padded = lax.pad(product, np.zeros((), acc), p_pads)
            total = lax.add(total, lax.dynamic_slice(
                padded, per_dim(product_start, np.int32(0)), x_like,
                allow_negative_indices=False))
        return (total, value), gradient

    kernels = (jnp.reshape(kernel, (len(taps), channels, filters))
               if input_gradient or forward else None)
    # The value as the products lie: (positions, F) channels last, (N, *out, F) first.
    values = ((math.prod((n, *out)), filters) if last else (n, *out, filters))
    # The taps' indices a constant, not an iota (XLA:CPU writes an iota into a temporary
    # of its own: float16 W7-like calls' gradients 248 bytes above lax's, now 112, the
    # loop's state and counter).
    # The accumulators' zeros read the cotangent (and the input): not computed before
    # them (:func:`_zeros_after`).
    (total, value), gradients = lax.scan(
        body, (_zeros_after(x_like, acc, ct) if input_gradient else None,
               _zeros_after(values, acc, x) if forward else None),
        (jnp.asarray(np.arange(len(taps), dtype=np.int32)),
         tuple(jnp.asarray(a) for a in window_at.T),
         tuple(jnp.asarray(a) for a in product_at.T), kernels))
    dx = total.reshape(x_shape).astype(x_dtype) if input_gradient else None
    dk = gradients.reshape(kernel_shape).astype(kernel_dtype) if kernel_gradient else None
    if forward:
        value = value.reshape(n, *out, filters) if last else jnp.moveaxis(value, -1, 1)
    return dx, dk, value


def _tap_loop_transposes(lhs: Callable[..., Array], rhs: Callable[..., Array]
                         ) -> tuple[Callable[..., Array], Callable[..., Array],
                                    Callable[..., tuple[Array, Array]]]:
    """:func:`_conv_primitive`'s ``lhs``, ``rhs`` and ``joint`` for a convolution whose
    gradients take :func:`_tap_loop` where :func:`_tap_loop_pays`, ``lhs`` and ``rhs``
    elsewhere.

    The input's gradient alone stays ``lhs``: XLA writes its convolution straight into
    the output, where the loop holds one tap's product besides (W7 0.05 → 0.50 MiB of
    temporaries, for 11.8 → 3.7 ms); with the kernel's, lax's temporaries are higher
    than the loop's (transposed copies of the input and the cotangent: W7 1.55 → 0.50).
    """

    def loop_rhs(ct: Array, x: Array, kernel: Any, *, spec: ConvSpec, precision: Any
                 ) -> Array:
        if not _tap_loop_pays(spec):
            return rhs(ct, x, kernel, spec=spec, precision=precision)
        return _tap_loop(ct, x, kernel, spec=spec, precision=precision,
                         input_gradient=False)[1]

    def joint(ct: Array, x: Array, kernel: Array, *, spec: ConvSpec, precision: Any
              ) -> tuple[Array, Array]:
        if not _tap_loop_pays(spec):
            return (lhs(ct, x, kernel, spec=spec, precision=precision),
                    rhs(ct, x, kernel, spec=spec, precision=precision))
        return _tap_loop(ct, x, kernel, spec=spec, precision=precision)[:2]

    return lhs, loop_rhs, joint


def tap_loop(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any) -> Array:
    """A dense 3-D convolution that :func:`width_fold` does not take (its folded input
    would exceed :data:`~kconv.ops.lowering.rule.MAX_WIDTH_FOLD_BYTES`): XLA's
    convolution, with :func:`_tap_loop`'s gradients (:data:`_tap_loop_p`)."""
    return _tap_loop_p.bind(x, kernel, spec=spec, precision=precision)


#: XLA's convolution as the value and tangents, :func:`_tap_loop`'s gradients.
_tap_loop_p = _conv_primitive("kconv_tap_loop", _xla_conv,
                              *_tap_loop_transposes(_plain_input_gradient,
                                                    _plain_kernel_gradient))
