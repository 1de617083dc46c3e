"""Transposed convolutions: ``subpixel_transpose`` (the CPU's: a stride-1 convolution to
the output's phases, then depth-to-space) and ``strided_dual`` (the GPU's: XLA's value);
both take the kernel gradient of the strided convolution they are the input gradient of.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from kconv.ops.lowering import dispatch  # imports this module: used at call time
from kconv.ops.lowering.spec import (Array, ConvSpec, _pad_spatial, _reshape_batched,
                                     _spatial_axes)
from kconv.ops.lowering.rule import _TAP_LOOP_FLOATS, _cpu_float
from kconv.ops.lowering.plain import _grouped_transpose_kernel, _xla_conv_transpose
from kconv.ops.lowering.primitives import _conv_primitive, _transposes
from kconv.ops.lowering.tap_loop import _tap_loop
from kconv.ops.lowering.width_fold import _merged_plane_applies, _merged_plane_conv


def _phase_offsets(kernel_size: int, stride: int, pad_lo: int) -> tuple[int, int]:
    """One axis of the sub-pixel form of a transposed convolution (dilation 1).

    Tap ``j`` of input ``i`` lands on output ``o = i * s + j + p`` with
    ``p = pad_lo - (k - 1)``. Output phase ``r = o mod s`` at ``o = q * s + r`` thus reads
    input ``q + m`` with ``m = (r - j - p) / s`` for every tap ``j`` where that division
    is exact: a stride-1 correlation per phase, over offsets ``m``.

    Returns:
      ``(m_lo, T)``: the smallest offset and the number of offsets, over all phases.

    Example:
        >>> _phase_offsets(3, 2, 2)   # Conv2DTranspose(k=3, s=2, "same"): y[2q] uses x[q-1], x[q]
        (-1, 2)
    """
    p = pad_lo - (kernel_size - 1)
    offsets = [-((j + p) // stride) for j in range(kernel_size)]
    return min(offsets), max(offsets) - min(offsets) + 1


def subpixel_transpose(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any
                       ) -> Array:
    """A transposed convolution (dilation 1) as one bilinear primitive whose value and
    tangents are XLA's plain form (3-D: the sub-pixel form, :func:`_phase_conv`,
    :func:`_depth_to_space`), and whose transposes are the fast convolutions below.

    XLA:CPU computes the plain form — a stride-1 convolution of the input dilated by the
    strides (``lhs_dilation``) — fast forward, but its kernel gradient, JAX's transpose of
    it, on its generic loop (W5: forward 1.2 ms, forward+backward 43 ms). The transposes
    here (:func:`_conv_transpose_lhs`, :func:`_conv_transpose_rhs`) are the convolutions
    of the strided convolution this one is the input gradient of: lax's strided
    convolution of the cotangent for the input, and that convolution's own kernel
    gradient (``rhs_dilation``) for the kernel, both fast on XLA:CPU in 1-D and 2-D
    (forward+backward, plain → these: W5 43 → 5.3–6.5 ms; 1-D (16, 256, 64) → 64 filters,
    kernel 3, stride 2: 30 → 2.6 ms).
    In 3-D, float32, both run on XLA:CPU's generic loop; there the two are one
    :func:`_tap_loop` (:func:`_subpixel_joint`).
    A :func:`jax.custom_vjp` would give the same reverse mode but no forward mode, and
    ``jax.custom_jvp`` lets JAX transpose the tangent it is given; a primitive with
    :func:`jax.interpreters.ad.defbilinear` has the value, both tangents and both
    transposes chosen here, and a batching rule, so ``jvp``, ``vmap``, ``grad`` of
    ``grad`` and ``remat`` all work.
    """
    return _conv_transpose_p.bind(x, kernel, spec=spec, precision=precision)


def _conv_transpose_value(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any
                          ) -> Array:
    if spec.rank == 3:
        # 3-D: XLA:CPU's input-dilated 3-D convolution is far slower than the sub-pixel
        # form's stride-1 one (X2, (2, 8, 8, 8, 32) -> 16, 3x3x3, stride 2: 42 -> 0.7 ms);
        # in 1-D and 2-D XLA's forward is as fast or faster (W5 0.7 vs 1.5 ms).
        plan = _subpixel_plan(spec)
        return _depth_to_space(_phase_conv(x, kernel, spec, plan, precision), spec, plan)
    return _xla_conv_transpose(x, kernel, spec=spec, precision=precision)


def _conv_transpose_lhs(ct: Array, x: Any, kernel: Array, *, spec: ConvSpec,
                        precision: Any) -> Array:
    """The input's cotangent: JAX's transpose of the plain form in the input, lax's
    strided convolution of the cotangent (XLA:CPU's fast path)."""
    return _strided_of_cotangent(ct, kernel, x.aval, spec=spec, precision=precision)


def _strided_of_cotangent(ct: Array, kernel: Array, x_like: Any, *,
                          spec: ConvSpec, precision: Any) -> Array:
    """``S(ct, kernel)``: JAX's transpose, in the input, of the plain form — the strided
    convolution whose input gradient the transposed convolution is (linear in both).
    ``x_like`` is the input's aval (inside :func:`jax.shard_map`, with the manual axes it
    varies over, which a cotangent must keep: :func:`~.primitives._transposes`)."""
    return jax.linear_transpose(
        lambda z: _xla_conv_transpose(z, kernel, spec=spec, precision=precision),
        x_like)(ct)[0]


def _conv_transpose_rhs(ct: Array, x: Array, kernel: Any, *, spec: ConvSpec,
                        precision: Any) -> Array:
    """The kernel's cotangent.

    ``<ct, T(x, k)> = <S(ct, k), x>`` where ``S`` is the strided convolution whose input
    gradient ``T`` is, so the kernel gradient is ``S``'s kernel gradient with cotangent
    ``x``: a convolution with ``rhs_dilation`` = strides, which XLA:CPU runs fast in 2-D
    (W5 forward+backward 6.6 → 5.3 ms against the sub-pixel phase convolution's gradient)
    and which computes exactly the kernel's entries: temporaries lax's, where the phase
    layout took ``(s·T / k)^N`` of the kernel (W5 1.02 → 1.00×, X2 1.11 → 1.00×). In 1-D
    and 3-D the phase gradient ran faster (1-D (16, 256, 64) → 64: 2.0 vs 2.6 ms; X2, on
    XLA:CPU's generic 3-D loop: 4.7 vs 8.3 ms, lax's 12.6) but over lax's temporaries.
    Grouped, the sub-pixel form's (JAX's transpose of it): XLA's dilated grouped kernel
    gradient is its grouped loop, while the phase convolution of a depthwise-transposed
    one is ``"depthwise_taps"``.
    """
    like = kernel.aval
    if spec.groups == 1:
        x_like = jax.typeof(x)
        return jax.linear_transpose(
            lambda k: _strided_of_cotangent(ct, k, x_like, spec=spec, precision=precision),
            like)(x)[0]
    plan = _subpixel_plan(spec)
    return jax.linear_transpose(
        lambda k: _depth_to_space(_phase_conv(x, k, spec, plan, precision), spec, plan),
        like)(ct)[0]


def _subpixel_rhs(ct: Array, x: Array, kernel: Any, *, spec: ConvSpec, precision: Any
                  ) -> Array:
    """:func:`subpixel_transpose`'s kernel cotangent outside :func:`_subpixel_loop_pays`
    (16-bit 3-D, 1-D, 2-D, grouped): :func:`_conv_transpose_rhs`, but in 3-D with at most
    :data:`_PLAIN_KERNEL_GRADIENT_MAX_CHANNELS` input channels the plain form's (JAX's
    transpose of XLA's input-dilated convolution).

    In 3-D both run on XLA:CPU's generic loop, and which is faster turns on the input
    channels (kernel gradient alone, stride 2, 3×3×3, plain → strided form, ms;
    ``benchmarks/RULE_SWEEP.md`` T4 and a side probe): 8 → 8 0.95 → 2.44, 16 → 16
    3.8 → 7.2, 16 → 32 6.9 → 8.5, 16 → 64 13.6 → 16.5; 24 → 16 5.1 → 4.4, 32 → 16
    6.8 → 4.4, 32 → 64 27 → 17, 48 → 48 30 → 12.7, 128 → 16 26.8 → 4.9. Temporaries
    equal in every one. In 1-D and 2-D the strided form wins at every size measured.
    """
    if (spec.rank == 3 and spec.groups == 1
            and spec.channels <= _PLAIN_KERNEL_GRADIENT_MAX_CHANNELS):
        return _plain_transpose_kernel_gradient(ct, x, kernel, spec=spec,
                                                precision=precision)
    return _conv_transpose_rhs(ct, x, kernel, spec=spec, precision=precision)


#: See :func:`_subpixel_rhs`.
_PLAIN_KERNEL_GRADIENT_MAX_CHANNELS = 16


_plain_transpose_kernel_gradient = _transposes(_xla_conv_transpose)[1]


def _strided_spec(spec: ConvSpec, ct: Any) -> ConvSpec:
    """The spec of ``S``, the strided convolution whose input gradient the transposed
    convolution ``spec`` is: from the transposed output ``ct``'s shape back to the
    input's, the kernel ``(*k, filters, C)`` read as ``(*k, in, out)``, and the padding
    that makes ``S``'s transpose exactly ``spec``'s (``k - 1`` less each side's)."""
    return dataclasses.replace(
        spec, input_shape=tuple(ct.shape), strides=spec.strides,
        padding=tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in
                      zip(spec.kernel_size, spec.padding)))


def _subpixel_loop_pays(spec: ConvSpec) -> bool:
    """Whether :func:`subpixel_transpose`'s kernel gradient (and, with it, its input
    gradient) takes :func:`_tap_loop`: where ``S`` (:func:`_strided_spec`) would, but
    strided — 3-D, dense, float32 or float16 (X2 in float16 7.7 → 1.3 ms at 1.3 × the
    compile; bfloat16 1.6 ×)."""
    return (spec.rank == 3 and spec.groups == 1 and all(d == 1 for d in spec.dilation)
            and _cpu_float(spec, _TAP_LOOP_FLOATS))


def _subpixel_loop_rhs(ct: Array, x: Array, kernel: Any, *, spec: ConvSpec, precision: Any
                       ) -> Array:
    """:func:`subpixel_transpose`'s kernel cotangent: ``S``'s kernel gradient with
    cotangent ``x`` (:func:`_conv_transpose_rhs`), in 3-D as :func:`_tap_loop`'s."""
    if not _subpixel_loop_pays(spec):
        return _subpixel_rhs(ct, x, kernel, spec=spec, precision=precision)
    return _tap_loop(x, ct, kernel, spec=_strided_spec(spec, ct), precision=precision,
                     input_gradient=False)[1]


def _subpixel_joint(ct: Array, x: Array, kernel: Array, *, spec: ConvSpec, precision: Any
                    ) -> tuple[Array, Array]:
    """Both of :func:`subpixel_transpose`'s cotangents: ``S(ct, kernel)`` and ``S``'s
    kernel gradient with cotangent ``x`` read the same strided windows of ``ct``, so in
    3-D one :func:`_tap_loop` computes both (``forward``)."""
    if not _subpixel_loop_pays(spec):
        return (_conv_transpose_lhs(ct, x, kernel, spec=spec, precision=precision),
                _subpixel_rhs(ct, x, kernel, spec=spec, precision=precision))
    _, kernel_ct, x_ct = _tap_loop(x, ct, kernel, spec=_strided_spec(spec, ct),
                                   precision=precision, input_gradient=False, forward=True)
    return x_ct.astype(x.dtype), kernel_ct


_conv_transpose_p = _conv_primitive("kconv_conv_transpose", _conv_transpose_value,
                                    _conv_transpose_lhs, _subpixel_loop_rhs, _subpixel_joint,
                                    transposed=True)


@dataclasses.dataclass(frozen=True)
class _SubpixelPlan:
    """Per spatial axis: ``(m_lo, T)`` (:func:`_phase_offsets`), the input's ``(lo, hi)``
    padding (negative: cropping) for the phase convolution, its output length ``Q`` and
    the transposed convolution's output length."""

    offsets: tuple[tuple[int, int], ...]
    input_padding: tuple[tuple[int, int], ...]
    quotients: tuple[int, ...]
    lengths: tuple[int, ...]


def _subpixel_plan(spec: ConvSpec) -> _SubpixelPlan:
    offsets, in_pads, quotients, lengths = [], [], [], []
    for n, k, s, (lo, hi) in zip(spec.spatial, spec.kernel_size, spec.strides,
                                 spec.padding):
        m_lo, taps = _phase_offsets(k, s, lo)
        length = (n - 1) * s + 1 + lo + hi - (k - 1)
        q = -(-length // s)
        offsets.append((m_lo, taps))
        quotients.append(q)
        lengths.append(length)
        # Output q reads inputs q + m_lo … q + m_lo + T - 1; outside [0, n) they are zeros.
        in_pads.append((-m_lo, q - 1 + m_lo + taps - 1 - (n - 1)))
    return _SubpixelPlan(tuple(offsets), tuple(in_pads), tuple(quotients), tuple(lengths))


def _phase_conv(x: Array, kernel: Array, spec: ConvSpec, plan: _SubpixelPlan,
                precision: Any) -> Array:
    """The sub-pixel form's stride-1 convolution: ``(n, *Q, prod(s) * filters)`` phases
    (channels_first: ``(n, prod(s) * filters, *Q)``)."""
    # Negative pads crop the input first; the rest is the convolution's own padding.
    x = _pad_spatial(x, _spatial_axes(spec),
                     [(min(lo, 0), min(hi, 0)) for lo, hi in plan.input_padding])
    phase, kernel = _phase_spec(spec, plan), _phase_kernel(kernel, spec, plan.offsets)
    if _merged_plane_applies(phase):
        # 3-D float32 channels_last: XLA:CPU's 3-D loop would run it (X2 0.93 -> 0.64 ms).
        return _merged_plane_conv(x, kernel, spec=phase, precision=precision)
    # Not width_fold: its two loop fusions come on top of the phase kernel and the
    # depth-to-space, and XLA:CPU compiles them side by side on two threads at most (X2
    # forward 1.6 -> 0.85 ms, but 1.15 -> 1.7-1.8x lax's lower + compile).
    return dispatch._cpu_conv(x, kernel, phase, precision, fold=False)


def _phase_spec(spec: ConvSpec, plan: _SubpixelPlan) -> ConvSpec:
    """The :class:`ConvSpec` of :func:`_phase_conv`'s forward convolution (grouped as the
    transposed one), on the input after its cropping."""
    rank, axes = spec.rank, _spatial_axes(spec)
    shape = list(spec.input_shape)
    for axis, (lo, hi) in zip(axes, plan.input_padding):
        shape[axis] += min(lo, 0) + min(hi, 0)
    taps = tuple(t for _, t in plan.offsets)
    per_group = math.prod(spec.strides) * spec.kernel_shape[-2]
    return ConvSpec(rank=rank, data_format=spec.data_format, input_shape=tuple(shape),
                    kernel_shape=taps + (spec.channels // spec.groups,
                                         spec.groups * per_group),
                    strides=(1,) * rank,
                    padding=tuple((max(lo, 0), max(hi, 0)) for lo, hi in plan.input_padding),
                    dilation=(1,) * rank, groups=spec.groups, dtype=spec.dtype,
                    preferred_element_type=spec.preferred_element_type)


def _phase_kernel(kernel: Array, spec: ConvSpec, offsets: Sequence[tuple[int, int]]
                  ) -> Array:
    """``(*k, filters, C)`` → the forward kernel ``(*T, C, prod(s) * filters)`` whose output
    channel ``(r_1, …, r_N, f)`` holds phase ``r``'s taps, zeros where it has none; with
    groups, ``(*k, F // g, C)`` → ``(*T, C // g, g * prod(s) * F // g)``, output channel
    ``(j, r_1, …, r_N, f)`` (each group's phases contiguous, as lax groups them).

    One matrix product of a 0/1 matrix (:func:`_phase_selection`, a constant) with the
    kernel's taps, then one transpose: XLA:CPU runs the product as a library call, and
    the transpose is the one loop fusion left to compile (the same placement as pads,
    reshapes and reverses was one fusion of those: 24 against 14 ms of its compile on X2's
    kernel). Each entry is one kernel entry times 1 plus zeros — exact, but a NaN or
    infinite kernel entry, times the zeros, makes its filter's other phase entries NaN.
    """
    groups = spec.groups
    per_group, channels = kernel.shape[-2:]
    select = _phase_selection(spec, offsets)
    taps, phases = select.shape[:2]
    placed = lax.dot_general(
        jnp.asarray(select.reshape(taps * phases, -1), kernel.dtype),
        kernel.reshape(-1, per_group * channels), (((1,), (0,)), ((), ())),
        precision=lax.Precision.HIGHEST)
    # (T, s, F/g, g, C/g) -> (T, C/g, g, s, F/g)
    placed = placed.reshape(taps, phases, per_group, groups, channels // groups)
    placed = jnp.transpose(placed, (0, 4, 3, 1, 2))
    return placed.reshape(*(t for _, t in offsets), channels // groups, -1)


def _phase_selection(spec: ConvSpec, offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """The 0/1 matrix ``(prod(T), prod(s), prod(k))`` that places kernel tap ``j`` at phase
    ``r``'s offset index ``t`` (each index a row-major flattening over the axes).

    Along one axis, phase ``r`` applies at offset index ``t`` the tap
    ``j = b + s * (T - 1 - t) + r`` (``b`` a constant, :func:`_phase_offsets`'s
    geometry), where ``0 <= j < k``; every tap lands exactly once.

    Example:
        >>> spec = ConvSpec(1, "channels_last", (1, 4, 1), (3, 1, 1), (2,), ((2, 1),), (1,))
        >>> _phase_selection(spec, [_phase_offsets(3, 2, 2)])[:, :, 1]  # tap 1: phase 1, t 1
        array([[0., 0.],
               [0., 1.]], dtype=float32)
    """
    select = np.ones((1, 1, 1), np.float32)
    for k, s, (lo, _), (m_lo, taps) in zip(spec.kernel_size, spec.strides, spec.padding,
                                           offsets):
        b = -(lo - (k - 1)) - s * m_lo - s * (taps - 1)
        axis = np.zeros((taps, s, k), np.float32)
        for t in range(taps):
            for r in range(s):
                j = b + s * (taps - 1 - t) + r
                if 0 <= j < k:
                    axis[t, r, j] = 1
        select = np.einsum("atj,bsk->abtsjk", select, axis).reshape(
            select.shape[0] * taps, select.shape[1] * s, select.shape[2] * k)
    return select


def _depth_to_space(y: Array, spec: ConvSpec, plan: _SubpixelPlan) -> Array:
    """Phases ``(n, *Q, (g, *s, F // g))`` → ``(n, *(Q * s), F)`` cropped to the output
    lengths (channels_first: ``(n, (g, *s, F // g), *Q)`` → ``(n, F, *(Q * s))``)."""
    rank, strides, quotients, groups = spec.rank, spec.strides, plan.quotients, spec.groups
    n, per_group = y.shape[0], spec.kernel_shape[-2]
    filters = groups * per_group
    cf = spec.data_format == "channels_first"
    if cf:
        y = y.reshape(n, groups, *strides, per_group, *quotients)
        # (n, g, r..., F/g, q...) -> (n, g, F/g, q1, r1, q2, r2, ...)
        perm = [0, 1, rank + 2] + [a for i in range(rank) for a in (rank + 3 + i, 2 + i)]
    else:
        y = y.reshape(n, *quotients, groups, *strides, per_group)
        # (n, q..., g, r..., F/g) -> (n, q1, r1, q2, r2, ..., g, F/g)
        perm = [0] + [a for i in range(rank) for a in (1 + i, 2 + rank + i)] + [
            1 + rank, 2 + 2 * rank]
    y = jnp.transpose(y, perm)
    full = [q * s for q, s in zip(quotients, strides)]
    y = _reshape_batched(y, (n, filters, *full) if cf else (n, *full, filters))
    if tuple(full) != plan.lengths:
        limit = list(y.shape)
        first = 2 if cf else 1
        for i, length in enumerate(plan.lengths):
            limit[first + i] = length
        y = lax.slice(y, (0,) * y.ndim, limit)
    return y


def strided_dual(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any) -> Array:
    """A transposed convolution with XLA's value (and tangents) and the transposes of
    :func:`subpixel_transpose` (the GPU's rule; dense, dilation 1).

    Its kernel gradient is the kernel gradient of the strided convolution it is the input
    gradient of (:func:`_conv_transpose_rhs`), which cuDNN runs on its backward-filter
    kernels; JAX's transpose of the plain form, a kernel gradient of the input-dilated
    convolution, XLA:GPU runs far slower (H200, 8× the batch, forward+backward, lax →
    this, float32 / bfloat16: W5 0.90 → 0.37 / 0.60 → 0.34 ms, X2 2.05 → 0.40 / 1.21 →
    0.41 ms; peak memory 0.09–0.51 × lax's). The forward is XLA's (cuDNN's backward-data
    kernel): lax's program.

    Example:
        >>> spec = ConvSpec(1, "channels_last", (1, 2, 1), (1, 1, 1), (2,), ((0, 1),), (1,))
        >>> strided_dual(jnp.array([[[1.0], [2.0]]]), jnp.ones((1, 1, 1)), spec=spec,
        ...              precision=None)[0, :, 0]
        Array([1., 0., 2., 0.], dtype=float32)
    """
    return _strided_dual_p.bind(x, kernel, spec=spec, precision=precision)


_strided_dual_p = _conv_primitive("kconv_strided_dual", _xla_conv_transpose,
                                  _conv_transpose_lhs, _conv_transpose_rhs, transposed=True)


def flipped_forward(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any) -> Array:
    """A stride-1 grouped transposed convolution as the forward convolution it is: the
    kernel flipped along its spatial axes and regrouped into the forward layout
    (:func:`_grouped_transpose_kernel`), then the CPU's forward rule on
    :func:`_forward_of_transpose`'s spec (for one input channel per group:
    ``depthwise_taps``, whose own transposes are the gradients).

    XLA's grouped convolution (``feature_group_count``), which lax's transposed form is,
    runs few channels per group on its generic loop, and its kernel gradient comes out
    multiplied on a 2-D mesh with the batch replicated over one axis (the README's
    sharding note): both are the forward rule's reasons to leave it, for the same
    convolution.

    Example:
        >>> spec = ConvSpec(1, "channels_last", (1, 3, 2), (2, 1, 2), (1,), ((1, 1),), (1,),
        ...                 groups=2)
        >>> k = jnp.array([[[1.0, 2.0]], [[3.0, 4.0]]])        # (k, F // g, C)
        >>> x = jnp.array([[[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]])
        >>> flipped_forward(x, k, spec=spec, precision=None)[0].tolist()
        [[1.0, 2.0], [3.0, 4.0], [0.0, 0.0], [0.0, 0.0]]
    """
    forward = _forward_of_transpose(spec)
    kernel = _grouped_transpose_kernel(lax.rev(kernel, tuple(range(spec.rank))), spec.groups)
    return dispatch._cpu_conv(x, kernel, forward, precision)


def _forward_of_transpose(spec: ConvSpec) -> ConvSpec:
    """A stride-1 transposed convolution's spec (kernel ``(*k, F // g, C)``) as the
    forward convolution's it computes (kernel ``(*k, C // g, F)``): the padding, which
    pads the input (the stride-dilated input at stride 1), and the dilation are the same."""
    *size, per_group, channels = spec.kernel_shape
    return dataclasses.replace(
        spec, kernel_shape=(*size, channels // spec.groups, per_group * spec.groups))
