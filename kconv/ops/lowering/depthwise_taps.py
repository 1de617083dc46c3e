"""``depthwise_taps``: a convolution with one input channel per group as a sum over the
kernel's taps, a bilinear primitive whose transposes are written out.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.core import Primitive
from jax.extend.mlir.dialects import stablehlo
from jax.interpreters import ad, batching, mlir

from kconv import _args
from kconv.ops.lowering.spec import (
    Array,
    ConvSpec,
    _accumulation_dtype,
    _channel_axis,
    _output_aval,
    _output_shape,
    _pad_spatial,
    _skip,
    _spatial_axes,
    _spatial_pad_config,
    _tap_ranges,
    _tap_window_plan,
)
from kconv.ops.lowering.primitives import _bind_batch_folded


def depthwise_taps(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any) -> Array:
    """A convolution with one input channel per group, as a sum over the kernel taps of
    one strided window of the input times that tap's per-channel weights.

    XLA:CPU computes a grouped convolution with few channels per group on its generic
    loop, far from its fast path (W4's depthwise 3×3 step: 23 → 1.6 ms). Elementwise
    products are exact at every ``precision``, as XLA:CPU's convolution is.
    """
    del precision  # elementwise products: every precision is the full one on CPU
    dtype = _accumulation_dtype(spec)
    channels, filters = spec.channels, spec.kernel_shape[-1]
    weights = lax.reshape(lax.convert_element_type(kernel, dtype),
                          (math.prod(spec.kernel_size), channels, filters // channels))
    y = _depthwise_sum(lax.convert_element_type(x, dtype), weights, spec)
    return lax.convert_element_type(y, spec.output_dtype())


def _depthwise_sum(x: Array, weights: Array, spec: ConvSpec) -> Array:
    """``sum_t window_t(x) * weights[t]`` (``weights`` ``(taps, C, dm)``) as one bilinear
    primitive: its value the taps unrolled into one fused loop, its transposes written
    out (:func:`_depthwise_lhs`, :func:`_depthwise_rhs`).

    JAX's own transposes of the unrolled sum cost the kernel gradient one reduction per tap,
    with every tap's window materialised at once (W4: 8 windows, twice the plain path's
    temporaries), so the weights' tangent had been a scan over the taps, under a
    ``custom_jvp`` — and JAX differentiated, partially evaluated and transposed both
    forms, with a second, pass-through scan left behind to carry the taps' offsets. Here
    the transposes are the loops XLA:CPU runs well: the input's a second bilinear
    primitive (:data:`_depthwise_input_p`, whose own transposes are these taps and the
    weights' cotangent), the weights' one variadic reduction with an output per tap (a
    scan over the taps for large kernels: :func:`_depthwise_rhs`). Both unrolled sums are
    emitted as StableHLO by their lowering rules, never traced op by op.
    """
    return _depthwise_p.bind(x, weights, spec=spec, pad_once=_pads_once(x, spec))


def _pads_once(x: Array, spec: ConvSpec) -> str:
    """Whether the taps' forward pads the input once, into a buffer of its own, and cuts
    every tap's window from it, instead of padding each window in the fused loop (``""``),
    and how: ``"negate_input"`` or ``"negate_padded"`` (:func:`_depthwise_value`).

    XLA:CPU compiles the per-window pads into the loop as bounds checks, and copies an
    input computed by elementwise operations into every tap's window, re-evaluating it
    per tap. Where that input is another depthwise layer's taps (a stack, through an
    activation) that is the first layer's whole loop, per tap: a ReLU between two
    ``DepthwiseConv2D(3, padding="same")`` on (16, 32, 32, 64) ran 36 ms at 500 ms of
    compile (lax's 58 ms, 39), a 1-D k5 pair compiled in 311 ms. Padded once, the first
    layer's taps are computed once, into the pad's loop, and the second's loop reads a
    buffer without bounds checks: 2.3 ms at 75 ms of compile, the 1-D pair 58 ms. From
    25 taps the bounds-checked loop compiles slower than the two loops, and runs 3-5 ×
    slower, on any input (an argument: 5×5 on (16, 32, 32, 64) 5.5 → 1.4 ms at 141 → 109
    ms of compile, 7×7 161 → 119, 3×3×3 105 → 73). Strided windows read a quarter of
    the input or less: there padding all of it first ran slower (3×3 stride 2 0.29 →
    0.40 ms).

    Below 25 taps a single layer keeps the per-window pads, though on a computed input
    padding once runs faster: a 3×3 layer on a ReLU's output (16, 32, 32, 64) 3.1 → 0.5
    ms (1-D k5 1.0 → 0.2, 3×3×3 2.4 → 0.4, bfloat16 11 → 0.8), at its own compile time —
    but inside a model the pad's loop cost XLA:CPU 8-21 ms of compile more (M4's
    forward 4.9 against 8.8 ms, at 1.37-1.54 × lax's lower + compile against 1.2; M1's
    1.42 → 1.56), past the 1.5 × line; on an argument ~8 ms more (X1's forward 1.5 →
    1.8 ×). Inside a derivative the value keeps its fast loop (:func:`_depthwise_lowering`:
    ``fast``), which padding once did not speed up.

    The input's origin is read from JAX's tracer (the equations that produced it); where
    that cannot be told (eagerly, inside a ``scan`` body, a nested ``jit``'s argument),
    it counts as an argument. The pad is of the input negated (the sum negated back), or
    negated itself in a 1-D or 2-D stack (:func:`_depthwise_value` says why).
    """
    if (not any(lo or hi for lo, hi in spec.padding) or any(s > 1 for s in spec.strides)
            or _products_first(spec) or _args.is_symbolic(spec.input_shape)):
        return ""
    if _reads_taps(x):
        return "negate_padded" if spec.rank < 3 else "negate_input"
    return "negate_input" if math.prod(spec.kernel_size) >= 25 else ""


def _producer(x: Any) -> Any:
    """The equation that produced the tracer ``x`` (through ``vmap``'s tracers), or None."""
    while hasattr(x, "batch_dim") and hasattr(x, "val"):  # vmap's BatchTracer
        x = x.val
    return getattr(x, "parent", None)


#: Where :func:`_reads_taps` stops: operations XLA computes into a buffer of their own.
_LIBRARY = frozenset({"conv_general_dilated", "dot_general"})


def _reads_taps(x: Any, budget: int = 16) -> bool:
    """Whether ``x`` is computed from the output of another depthwise taps' forward
    through operations on arrays of ``x``'s size (an activation, a bias, a reshape,
    ``materialized``): up to ``budget`` equations back, not past a convolution or a
    matrix product. Reads the equations JAX's tracers were produced by
    (``DynamicJaxprTracer.parent``, jax 0.10); ``False`` where there are none."""
    size = math.prod(getattr(x, "shape", ()))
    pending, seen = [_producer(x)], 0
    while pending and seen < budget:
        equation = pending.pop()
        if equation is None:
            continue
        seen += 1
        name = getattr(getattr(equation, "primitive", None), "name", None)
        if name == "kconv_depthwise_taps":
            return True
        if name is None or name in _LIBRARY:
            continue
        pending += [getattr(t, "parent", None) for t in getattr(equation, "in_tracers", ())
                    if math.prod(getattr(t, "shape", (0,))) == size]
    return False


def _depthwise_lowering(ctx: mlir.LoweringRuleContext, x: Any, weights: Any, *,
                        spec: ConvSpec, fast: bool = False, pad_once: str = ""
                        ) -> list[Any]:
    """The value, emitted as StableHLO directly: the taps unrolled, each a window of the
    input (:func:`_tap_window_plan`) times the tap's per-channel weights, added up
    (:func:`_depthwise_value`).

    Emitted, not traced: ``mlir.lower_fun`` of the same ops traces them into a jaxpr and
    lowers each as its own cached function, ~45 of them for a 3×3 kernel (X1 forward,
    lowering 14 → 7 ms; lax's 6.5). The program is the same.

    ``fast`` (the value inside a derivative: :func:`_depthwise_jvp`) writes the first
    tap's product after its window as ``weights × window``, not ``window × weights``:
    the same arithmetic (up to float rounding), but XLA:CPU (jaxlib 0.10) then emits a
    vectorized loop, 1.3–5 × faster (X1's forward 1.5 → 0.4 ms, (8, 64, 64, 32) 1.6 →
    0.3, a 4×4 kernel 2.9 → 0.9; never slower among the kernels, strides, dilations and
    multipliers measured), that takes 3–10 ms more to compile — which a forward alone
    cannot afford (X1 1.50 → 1.61 × lax's lower + compile), a derivative's program can
    (W4 forward+backward 8.9 → 6.1 ms, 0.98 × lax's compile).

    ``pad_once`` (a forward, :func:`_pads_once`): the windows are cut from one padded
    copy of the input instead of each padded in the loop.
    """
    return _lower(ctx, _depthwise_value, x, weights, spec=spec, fast=fast,
                  pad_once="" if fast else pad_once)


def _lower(ctx: mlir.LoweringRuleContext, build: Callable[..., Any], a: Any, weights: Any,
           **params: Any) -> list[Any]:
    """``build(ops, a, weights, avals, **params)`` lowered: with :class:`_Emitter`'s
    StableHLO, or, where a shape has a symbolic dim (``jax.export``'s shape
    polymorphism: a batch exported as ``"b"``), traced with :class:`_Traced`'s lax ops
    (StableHLO's static ops need every dim known; lax's carry symbolic ones)."""
    avals = (*ctx.avals_in, *ctx.avals_out)
    if not any(_args.is_symbolic(aval.shape) for aval in avals):
        return [build(_Emitter(avals[0].dtype), a, weights, avals, **params)]
    traced = lambda a, weights: build(_Traced(avals[0].dtype), a, weights, avals,  # noqa: E731
                                      **params)
    return mlir.lower_fun(traced, multiple_results=False)(ctx, a, weights)


def _depthwise_value(ops: _Emitter, x: Any, weights: Any, avals: Sequence[Any], *,
                     spec: ConvSpec, fast: bool, pad_once: str) -> Any:
    """The taps' sum (:func:`_depthwise_lowering`) built with ``ops``; with
    ``pad_once`` (:func:`_pads_once`) from one padded copy of the input."""
    x_aval, _, y_aval = avals
    axes, out, channel = _spatial_axes(spec), spec.output_spatial(), _channel_axis(spec)
    _, channels, multiplier = avals[1].shape
    first = _products_first(spec)
    # For dm > 1 the products are taken with the channel axis split into (C, dm) (output
    # channel c * dm + m): the input is broadcast to that, before its windows are cut
    # (products first: each window config gets the new axis, uncut) or after.
    source = x_aval.shape if first else y_aval.shape
    shape, dims, widen = source, (channel,), (lambda config, whole: config)
    if multiplier > 1:
        shape = source[:channel] + (channels, multiplier) + source[channel + 1:]
        dims = (channel, channel + 1)
    if multiplier > 1 and first:
        widen = lambda config, whole: (  # noqa: E731
            None if config is None else [*config[:channel + 1], whole, *config[channel + 1:]])
    split = lambda v: v if multiplier == 1 else ops.broadcast(  # noqa: E731
        v, shape, _skip(len(x_aval.shape), channel + 1))
    in_shape, padded = x_aval.shape, bool(pad_once) and not first
    if padded:
        # The input negated, and the sum: the same products and sums, exactly (signed
        # zeros aside), but the pad is then no standalone pad, which XLA:CPU compiles
        # slowly (X1's input: 175 ms against 55), and it costs nothing (the negation
        # fuses into the pad's loop and the sum's). XLA's simplifier reads the centre
        # tap's window from the pad's operand, the input's computation copied into the
        # taps' loop once more; where that is another depthwise layer's taps (a stack)
        # the padded input is negated instead ("negate_padded"), and no window is a
        # slice of the pad's operand: a ReLU between two 3×3 depthwise layers 19.6 ms at
        # 561 ms of compile, 1-D k5 311 ms, against 2.3 ms / 75 ms and 58 ms. Elsewhere
        # that form compiled up to 8 ms slower (single layers inside M1 and M4, padded
        # once in a probe; a 3×3×3 kernel on a ReLU's output 110 → 125 ms; in 3-D the
        # stack ran no faster).
        config = _spatial_pad_config(len(in_shape), axes, spec.padding)
        x = (ops.neg(ops.pad(x, config)) if pad_once == "negate_padded"
             else ops.pad(ops.neg(x), config))
        in_shape = tuple(n + lo + hi for n, (lo, hi, _) in zip(in_shape, config))
        spec = dataclasses.replace(spec, input_shape=in_shape, padding=((0, 0),) * spec.rank)
    if first:
        x = split(x)
    y = None
    for tap, offsets in enumerate(np.ndindex(*spec.kernel_size)):
        plan = _tap_window_plan(in_shape, axes, offsets, spec, out)
        if plan is None:
            continue
        (start, limit, step), pads = plan
        w = ops.weights(weights, (tap, 0, 0), (tap + 1, channels, multiplier), shape, dims)
        term = ops.mul(x, w) if first else x
        if start is not None:
            term = ops.slice(term, widen(start, 0), widen(limit, multiplier), widen(step, 1))
        term = ops.pad(term, widen(pads, (0, 0, 0)))
        if not first:
            term = (ops.mul(w, split(term)) if fast and y is None
                    else ops.mul(split(term), w))
        if multiplier > 1:
            term = ops.reshape(term, y_aval.shape)
        y = ops.add(y, term)
    if y is None:
        return ops.zeros(y_aval.shape)
    return ops.neg(y) if padded else y


def _products_first(spec: ConvSpec) -> bool:
    """Whether the depthwise taps' forward multiplies by each tap's weights before that
    tap's window is cut and padded (as its transpose, the input gradient, always does),
    or after.

    The two are the same numbers, but XLA:CPU (jaxlib 0.10) compiles their fused loops
    to code of very different speed and compile time. Measured (2 cores; products after
    → first): with the channels the minor axis, the loop runs 1.5-5 × faster up to 16
    taps (ms: X1's 3×3 1.66 → 0.47, 16 channels 1.8 → 0.4, 1-D k3 0.43 → 0.22, k5
    0.64 → 0.26, (3, 1) 0.37 → 0.19; 12-16 taps 1.0-1.05 ×), but from 4 taps on costs
    7-14 ms more compile (X1 42 → 55 ms, lax's 26): past the 1.5 × lax's compile time
    kconv holds to. Up to 3 taps (1-D k2, k3, kernels (3, 1) and (1, 3)) it compiles no
    slower, so those take it (1-D k4 did too, a 2×2 kernel not: 56 → 65 ms). With the
    channels first (padding on the minor axes) products first is slower (0.4 → 1.2 ms),
    and so from 25 taps (5×5 3.9 → 4.8, 3×3×3 1.3 → 1.7).
    """
    return spec.data_format == "channels_last" and math.prod(spec.kernel_size) <= 3


def _depthwise_abstract(x: Any, weights: Any, *, spec: ConvSpec, fast: bool = False,
                        pad_once: str = "") -> jax.core.ShapedArray:
    return _output_aval(x, _output_shape(x, spec, spec.output_spatial()), x.dtype)


def _depthwise_lhs(ct: Array, x: Any, weights: Array, *, spec: ConvSpec,
                   fast: bool = False, pad_once: str = "") -> Array:
    """The input's cotangent: :data:`_depthwise_input_p` of the cotangent."""
    del x, fast, pad_once  # its shape is spec.input_shape
    return _depthwise_input_p.bind(ct, weights, spec=spec)


def _depthwise_input_lowering(ctx: mlir.LoweringRuleContext, ct: Any, weights: Any, *,
                              spec: ConvSpec) -> list[Any]:
    """The transpose of the taps in the input, emitted as StableHLO
    (:func:`_depthwise_input_value`, built as :func:`_lower` says)."""
    return _lower(ctx, _depthwise_input_value, ct, weights, spec=spec)


def _depthwise_input_value(ops: _Emitter, ct: Any, weights: Any, avals: Sequence[Any], *,
                           spec: ConvSpec) -> Any:
    """Per tap, the cotangent times the tap's weights (summed over the depth multiplier),
    placed back where the tap's window came from by one zero pad
    (:func:`_tap_window_pads`); all one fused loop, as JAX's transpose of the unrolled
    taps would be. The products come before the pads whatever :func:`_products_first`
    says of the forward: with the cotangent padded first, the forward+backward programs
    took 0.3-2.2 s to compile (channels first, 5×5, 3×3×3, X1) where this form takes
    0.16-0.21.

    The multiplier's sum is one strided channel slice of the cotangent per ``m``, not a
    reduction: XLA:CPU would materialise a reduction's result per tap.
    """
    ct_aval, _, dx_aval = avals
    axes, out, channel = _spatial_axes(spec), spec.output_spatial(), _channel_axis(spec)
    _, channels, multiplier = avals[1].shape
    part_shape = list(ct_aval.shape)
    part_shape[channel] = channels
    parts = [ct]  # output channel c * dm + m: the cotangent's channel slice m::dm
    if multiplier > 1:
        step = [1] * len(part_shape)
        step[channel] = multiplier
        parts = [ops.slice(ct, [m if a == channel else 0 for a in range(len(part_shape))],
                           ct_aval.shape, step)
                 for m in range(multiplier)]
    dx = None
    for tap, offsets in enumerate(np.ndindex(*spec.kernel_size)):
        pads = _tap_window_pads(dx_aval.shape, axes, offsets, spec, out)
        if pads is None:
            continue
        term = None
        for m, part in enumerate(parts):
            w = ops.weights(weights, (tap, 0, m), (tap + 1, channels, m + 1), part_shape,
                            (channel,))
            term = ops.add(term, ops.mul(part, w))
        dx = ops.add(dx, ops.pad(term, pads))
    return ops.zeros(dx_aval.shape) if dx is None else dx


def _depthwise_input_abstract(ct: Any, weights: Any, *, spec: ConvSpec
                              ) -> jax.core.ShapedArray:
    return _output_aval(ct, spec.input_shape, ct.dtype)


def _depthwise_input_lhs(g: Array, ct: Any, weights: Array, *, spec: ConvSpec) -> Array:
    # <G(ct, w), g> = <ct, F(g, w)>: the cotangent's cotangent is the taps of g (inside a
    # derivative of a derivative: the fast loop).
    del ct
    return _depthwise_p.bind(g, weights, spec=spec, fast=True)


def _depthwise_input_rhs(g: Array, ct: Array, weights: Any, *, spec: ConvSpec) -> Array:
    # <G(ct, w), g> = <F(g, w), ct>: the weights' cotangent is F's, with input g.
    return _depthwise_rhs(ct, g, weights, spec=spec)


class _Emitter:
    """StableHLO builders shared by the depthwise lowering rules (one dtype, static
    shapes)."""

    def __init__(self, dtype: Any):
        self.element = mlir.dtype_to_ir_type(np.dtype(dtype))
        self.zero = mlir.ir_constant(np.zeros((), dtype))
        self.ints = mlir.dense_int_array

    def tensor(self, shape: Sequence[int]) -> Any:
        return mlir.ir.RankedTensorType.get(list(shape), self.element)

    def broadcast(self, value: Any, shape: Sequence[int], dims: Sequence[int]) -> Any:
        return stablehlo.broadcast_in_dim(self.tensor(shape), value, self.ints(dims))

    def reshape(self, value: Any, shape: Sequence[int]) -> Any:
        return stablehlo.reshape(self.tensor(shape), value)

    def slice(self, value: Any, start: Sequence[int], limit: Sequence[int],
              step: Sequence[int]) -> Any:
        return stablehlo.slice(value, self.ints(start), self.ints(limit), self.ints(step))

    def mul(self, a: Any, b: Any) -> Any:
        return stablehlo.multiply(a, b)

    def neg(self, a: Any) -> Any:
        return stablehlo.negate(a)

    def pad(self, value: Any, pads: Sequence[tuple[int, int, int]] | None) -> Any:
        if pads is None:
            return value
        low, high, interior = zip(*pads)
        return stablehlo.pad(value, self.zero, self.ints(low), self.ints(high),
                             self.ints(interior))

    def add(self, total: Any, term: Any) -> Any:
        return term if total is None else stablehlo.add(total, term)

    def weights(self, weights: Any, start: Sequence[int], limit: Sequence[int],
                shape: Sequence[int], dims: Sequence[int]) -> Any:
        """``weights[start:limit]`` (per channel, or per (channel, multiplier)) broadcast
        to ``shape`` along ``dims``."""
        w = self.slice(weights, start, limit, [1] * len(start))
        return self.broadcast(self.reshape(w, [shape[d] for d in dims]), shape, dims)

    def zeros(self, shape: Sequence[int]) -> Any:
        return self.broadcast(self.zero, shape, ())


class _Traced(_Emitter):
    """:class:`_Emitter`'s builders as lax ops, whose shapes may hold symbolic dims."""

    def __init__(self, dtype: Any):
        self.zero = np.zeros((), dtype)

    def broadcast(self, value: Any, shape: Sequence[int], dims: Sequence[int]) -> Any:
        return lax.broadcast_in_dim(value, tuple(shape), tuple(dims))

    def reshape(self, value: Any, shape: Sequence[int]) -> Any:
        return lax.reshape(value, tuple(shape))

    def slice(self, value: Any, start: Sequence[int], limit: Sequence[int],
              step: Sequence[int]) -> Any:
        return lax.slice(value, tuple(start), tuple(limit), tuple(step))

    def mul(self, a: Any, b: Any) -> Any:
        return lax.mul(a, b)

    def neg(self, a: Any) -> Any:
        return lax.neg(a)

    def pad(self, value: Any, pads: Sequence[tuple[int, int, int]] | None) -> Any:
        return value if pads is None else lax.pad(value, self.zero, pads)

    def add(self, total: Any, term: Any) -> Any:
        return term if total is None else lax.add(total, term)


def _tap_window_pads(shape: Sequence[int], axes: Sequence[int], offsets: Sequence[int],
                     spec: ConvSpec, out: Sequence[int]) -> list | None:
    """The ``lax.pad`` config that places an output-shaped array where tap ``offsets``'
    window of an input of ``shape`` reads from (the transpose of :func:`_tap_window_plan`);
    ``None`` if that window is all padding. Output ``o`` sits at input ``o * s + j * d -
    lo``: interior padding ``s - 1``, then ``j * d - lo`` before (negative: cropped)."""
    pads = [(0, 0, 0)] * len(shape)
    ranges = _tap_ranges(axes, offsets, spec, out)
    if ranges is None:
        return None
    for axis, j, n, d, s, lo, o, first, last in ranges:
        before = j * d - lo
        pads[axis] = (before, n - before - ((o - 1) * s + 1), s - 1)
    return pads


def _depthwise_rhs(ct: Array, x: Array, weights: Any, *, spec: ConvSpec,
                   fast: bool = False, pad_once: str = "") -> Array:
    """The weights' cotangent: per tap, its input window times the cotangent, summed over
    the batch and space (:func:`_depthwise_tap_sums` where :func:`_tap_sums_pay`, else
    :func:`_depthwise_tap_scan`)."""
    del fast, pad_once  # the value's loop form: nothing to do with its transposes
    if _tap_sums_pay(spec):
        return _depthwise_tap_sums(ct, x, weights, spec=spec)
    return _depthwise_tap_scan(ct, x, weights, spec=spec)


def _tap_sums_pay(spec: ConvSpec) -> bool:
    """Whether the weights' cotangent is :func:`_depthwise_tap_sums` (else the scan).

    Where XLA:CPU (jaxlib 0.10) compiles the one reduction no slower than the scan, and
    its sums stay float32-accurate. Measured, lower + compile of depthwise
    forward+backward programs (ms, sums / scan / lax's): 1-D k2-k9 79-104 / 94-116 /
    74-90; 2-D 3×3, 3×4, 4×4, (1, 9), 3×5 115-153 / 103-121 / 97-120 (3×3 with a depth
    multiplier 2, strides 2 or the channels first 94-146). Not taken: 2-D kernels of 2-8
    taps, whose reduction XLA compiles to a far larger program (2×2 357 ms, 2×4 821,
    (1, 7) 632; lax's 105), 3-D kernels (2×2×2 201 / 122 / 125), more than
    ``_TAP_SUMS_MAX_TAPS`` taps or sums longer than ``_TAP_SUMS_MAX_CHAIN`` terms.
    """
    out, taps = spec.output_spatial(), math.prod(spec.kernel_size)
    chain = math.prod(out[1:]) if spec.rank > 1 else out[0]
    return (taps <= _TAP_SUMS_MAX_TAPS and chain <= _TAP_SUMS_MAX_CHAIN
            and (spec.rank == 1 or (spec.rank == 2 and taps >= 9)))


#: The most kernel taps whose weight gradients are one variadic reduction
#: (:func:`_depthwise_tap_sums`); above, a scan over the taps. The reduction's compile
#: time grows with the taps on XLA:CPU and its speed does not keep up (lower + compile of
#: depthwise forward+backward programs, ms, sums / scan / lax's, and run time: 3×3
#: 140 / 146 / 113 and 2.9 / 3.4 ms; 5×5 167 / 139 / 116 and 18.3 / 14.9; 7×7
#: 262 / 182 / 119 and 36.3 / 34.1).
_TAP_SUMS_MAX_TAPS = 16


#: The longest sum :func:`_depthwise_tap_sums` leaves to one thread's sequential loop
#: (the output's spatial extent past its first axis; a 1-D output's length): its
#: float32 error grows with it (1.2e-6 of the largest entry at 4096 terms, 5e-6 at
#: 50176), where the scan's YNNPACK reductions stay at ~1e-7. Above, the scan.
_TAP_SUMS_MAX_CHAIN = 2 ** 14


def _split_multiplier(ct: Array, channel: int, channels: int, multiplier: int
                      ) -> tuple[Array, tuple[int, ...]]:
    """The cotangent with its channel axis split into ``(C, dm)`` (output channel
    ``c * dm + m``) when ``dm > 1``, and its axes that index the weights' channels."""
    if multiplier == 1:
        return ct, (channel,)
    ct = lax.reshape(ct, ct.shape[:channel] + (channels, multiplier) + ct.shape[channel + 1:])
    return ct, (channel, channel + 1)


def _depthwise_tap_sums(ct: Array, x: Array, weights: Any, *, spec: ConvSpec) -> Array:
    """The weights' cotangent as one variadic reduction, an output per tap: its window of
    the input times the cotangent, summed along all but the batch, channel and (2-D) the
    first spatial axis; those partial sums are summed after.

    One reduction reads the input and the cotangent once, the windows' slices and pads
    fused into it (none materialised); the partial sums let XLA:CPU split it over its
    threads and keep each sequential sum short (float32 error ~1e-7 of the largest
    entry; per image it was 5e-6 for a 224 × 224 image). Measured (2 cores, ms, sums /
    :func:`_depthwise_tap_scan`, whose taps each materialise their window for YNNPACK's
    multiply-reduce; forward+backward): X1's 3×3 2.1 / 3.1 with 2.25 / 4.0 MiB of
    temporaries (lax's 8.1), strided 0.56 / 1.02, dilated 2.5 / 3.2, depth multiplier 2
    3.7 / 7.7, channels first 3.5 / 3.7, 1-D k5 1.6 / 1.8, one image 0.58 / 0.88, (8,
    112, 112, 32) 6.6 / 13.0. The taps as separate reductions ran 13 ms (XLA:CPU keeps
    every window, 32 MiB); a scan over batch chunks with the taps inside 3.1-5.5.
    """
    axes, out = _spatial_axes(spec), spec.output_spatial()
    channel, (taps, channels, multiplier) = _channel_axis(spec), weights.aval.shape
    ct, by_channel = _split_multiplier(ct, channel, channels, multiplier)
    # Partial sums per image and, from 2-D on, per row of the first spatial axis: each a
    # sum along the rest of the image, in one thread's sequential loop; their sum after
    # is XLA's tree-like one (X1's partial sums, 2.2 MiB; one partial sum per image kept
    # its float32 error at 5e-6 of the gradient's largest entry for a 224 x 224 image,
    # the rows' 1e-7 as XLA's own).
    first = axes[0] + (1 if multiplier > 1 and axes[0] > channel else 0)
    partial = (0, first) if spec.rank > 1 else (0,)
    kept = tuple(sorted(partial + by_channel))
    summed = tuple(a for a in range(ct.ndim) if a not in kept)
    # Behind a barrier, the windows' pads are not the forward's (SeparableConv's
    # forward+backward computes both): XLA would merge the two, then materialise each
    # pad for its two users (W4: 33 MiB more temporaries, 4 x lax's compile time).
    x = lax.optimization_barrier(x)
    products, where = [], []
    for tap, offsets in enumerate(np.ndindex(*spec.kernel_size)):
        plan = _tap_window_plan(x.shape, axes, offsets, spec, out)
        if plan is None:
            continue  # the window is all padding: a zero gradient
        (start, limit, step), pads = plan
        window = x if start is None else lax.slice(x, start, limit, step)
        if pads is not None:
            window = lax.pad(window, np.zeros((), x.dtype), pads)
        if multiplier > 1:
            window = lax.broadcast_in_dim(window, ct.shape, _skip(window.ndim, channel + 1))
        products.append(lax.mul(window, ct))
        where.append(tap)
    gradients = jnp.zeros((taps, channels, multiplier), ct.dtype)
    if not products:
        return gradients
    sums = lax.reduce(products, [np.zeros((), ct.dtype)] * len(products),
                      lambda a, b: tuple(map(lax.add, a, b)), summed)
    per_tap = lax.reduce_sum(jnp.stack(sums), tuple(1 + kept.index(a) for a in partial))
    return gradients.at[np.array(where)].set(
        per_tap.reshape(len(where), channels, multiplier))


def _depthwise_tap_scan(ct: Array, x: Array, weights: Any, *, spec: ConvSpec) -> Array:
    """The weights' cotangent as a scan over the taps, each reducing its input window
    times the cotangent over the batch and space: for kernels of many taps, whose
    :func:`_depthwise_tap_sums` would compile slowly.

    Unrolled as separate reductions, XLA:CPU materialises every tap's window at once (W4:
    8 windows, twice the plain path's peak memory); the scan takes one at a time. The pad
    is inside the loop body, so that XLA fuses it into the window's slice: a padded copy
    outside the loop is a standalone pad, which XLA:CPU compiles slowly (~150 ms for
    X1's input). The optimisation barrier keeps XLA from hoisting the pad out of the loop
    as loop-invariant; it holds the tap's offsets too, or it would be loop-invariant
    itself (X1 forward+backward compile 287 → 137 ms; lax's 136).
    """
    axes, out = _spatial_axes(spec), spec.output_spatial()
    channel, (taps, channels, multiplier) = _channel_axis(spec), weights.aval.shape
    size, step = list(x.shape), [1] * x.ndim
    for axis, o, s in zip(axes, out, spec.strides):
        size[axis], step[axis] = (o - 1) * s + 1, s
    starts = np.array([[j * d for j, d in zip(offsets, spec.dilation)]
                       for offsets in np.ndindex(*spec.kernel_size)], np.int32)
    ct, kept = _split_multiplier(ct, channel, channels, multiplier)
    summed = tuple(a for a in range(ct.ndim) if a not in kept)

    def tap_gradient(carry: None, start: Array) -> tuple[None, Array]:
        x_, ct_, start = lax.optimization_barrier((x, ct, start))
        begin = [np.int32(0)] * x.ndim
        for axis, i in zip(axes, range(spec.rank)):
            begin[axis] = start[i]
        # The starts are never negative: no index normalisation to trace.
        window = lax.dynamic_slice(_pad_spatial(x_, axes, spec.padding), begin, size,
                                   allow_negative_indices=False)
        if any(s > 1 for s in spec.strides):
            window = lax.slice(window, (0,) * x.ndim, size, step)
        if multiplier > 1:
            window = lax.broadcast_in_dim(window, ct.shape, _skip(window.ndim, channel + 1))
        return carry, lax.reduce_sum(lax.mul(window, ct_), summed)

    gradients = lax.scan(tap_gradient, None, starts)[1]
    return lax.reshape(gradients, (taps, channels, multiplier))


def _depthwise_batch(primitive: Primitive, args: Sequence[Array], dims: Sequence[Any], *,
                     spec: ConvSpec, **params: Any) -> tuple[Array, int]:
    """Either depthwise primitive again, on a folded call, so that its transposes stay: a
    batched feature map (the input, or the cotangent) with shared weights folds the batch
    axis into the convolution's; batched weights fold it into the channels (a depthwise
    convolution computes each channel alone), the feature map broadcast along it when it
    is shared."""
    a, weights = args
    a_dim, weights_dim = dims
    if weights_dim is None:
        return _bind_batch_folded(
            lambda a, spec: primitive.bind(a, weights, spec=spec, **params), a, a_dim, spec)
    channel = _channel_axis(spec)
    weights = jnp.moveaxis(weights, weights_dim, 1)  # (taps, B, C, dm)
    taps, b, channels, multiplier = weights.shape
    if a_dim is None:
        a = jnp.broadcast_to(jnp.expand_dims(a, channel),
                             a.shape[:channel] + (b,) + a.shape[channel:])
    else:
        a = jnp.moveaxis(a, a_dim, channel)  # the batch axis just before the channels
    a = a.reshape(a.shape[:channel] + (b * a.shape[channel + 1],) + a.shape[channel + 2:])
    input_shape = list(spec.input_shape)
    input_shape[channel] = b * channels
    folded = dataclasses.replace(
        spec, input_shape=tuple(input_shape), groups=b * channels,
        kernel_shape=spec.kernel_shape[:-1] + (b * spec.kernel_shape[-1],))
    y = primitive.bind(a, weights.reshape(taps, b * channels, multiplier), spec=folded,
                       **params)
    y = y.reshape(y.shape[:channel] + (b, y.shape[channel] // b) + y.shape[channel + 1:])
    return jnp.moveaxis(y, channel, 0), 0


def _depthwise_primitive(name: str, abstract: Callable[..., Any],
                         lowering: Callable[..., Any], lhs: Callable[..., Array],
                         rhs: Callable[..., Array]) -> Primitive:
    """A depthwise primitive ``p(a, weights, spec=...)``: bilinear, batched by
    :func:`_depthwise_batch`, evaluated eagerly by compiling it through its lowering."""
    primitive = Primitive(name)
    eager = jax.jit(lambda a, w, **params: primitive.bind(a, w, **params),
                    static_argnames=("spec", "fast", "pad_once"))
    primitive.def_impl(eager)
    primitive.def_abstract_eval(abstract)
    mlir.register_lowering(primitive, lowering)
    ad.defbilinear(primitive, lhs, rhs)
    batching.primitive_batchers[primitive] = functools.partial(_depthwise_batch, primitive)
    return primitive


#: The taps ``F(x, weights)``: :func:`_depthwise_sum`.
_depthwise_p = _depthwise_primitive("kconv_depthwise_taps", _depthwise_abstract,
                                    _depthwise_lowering, _depthwise_lhs, _depthwise_rhs)


def _depthwise_jvp(primals: Sequence[Array], tangents: Sequence[Any], *, spec: ConvSpec,
                   fast: bool = False, pad_once: str = "") -> tuple[Array, Array]:
    """The taps' JVP (bilinear: ``F(dx, w) + F(x, dw)``), every term on the fast loop
    (:func:`_depthwise_lowering`): a derivative's program (training, ``jax.jvp``,
    ``remat``) affords its compile time."""
    del fast, pad_once
    (x, weights), (x_dot, weights_dot) = primals, tangents
    bind = functools.partial(_depthwise_p.bind, spec=spec, fast=True)
    terms = ([bind(x_dot, weights)] if type(x_dot) is not ad.Zero else []) + (
        [bind(x, weights_dot)] if type(weights_dot) is not ad.Zero else [])
    return bind(x, weights), functools.reduce(lax.add, terms)


ad.primitive_jvps[_depthwise_p] = _depthwise_jvp


#: Their transpose in the input, ``G(ct, weights)`` with ``<F(x, w), ct> = <x, G(ct, w)>``.
_depthwise_input_p = _depthwise_primitive(
    "kconv_depthwise_taps_input", _depthwise_input_abstract, _depthwise_input_lowering,
    _depthwise_input_lhs, _depthwise_input_rhs)
