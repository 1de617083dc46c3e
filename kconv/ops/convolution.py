"""Convolutions as pure array functions, with Keras's argument conventions.

This module is the only place in kconv that calls ``jax.lax.conv_general_dilated``
(:func:`_conv_general_dilated`). The ops here validate their arguments and describe the
call as a :class:`kconv.ops.lowering.ConvSpec`; :mod:`kconv.ops.lowering` decides how it
is computed — XLA's convolution, or on XLA:CPU a faster equivalent composition where its
convolution takes a slow path (``kconv.config.set_conv_lowering("xla")`` forces the
former).

All four functions are N-d: the number of spatial dims ``N`` is the kernel's rank minus
two. Inputs are ``(batch, *spatial, channels)`` (``channels_last``) or
``(batch, channels, *spatial)`` (``channels_first``); beyond Keras, an unbatched input of
rank ``N + 1`` and extra leading batch dims are accepted too (the output has the same
leading dims). ``data_format=None`` means :func:`kconv.config.image_data_format`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from kconv import _args
from kconv.ops import lowering, shapes
from kconv.ops.lowering.spec import _dilated, _output_length

__all__ = ["conv", "conv_transpose", "depthwise_conv", "separable_conv"]

Array = jax.Array


class _Axis(NamedTuple):
    """One spatial axis of a convolution, as XLA's operand swap reads it: the input's and
    the kernel's lengths, the stride, the input and kernel dilations, the padding."""

    n: int
    k: int
    s: int
    ld: int
    rd: int
    lo: int
    hi: int

    @property
    def out(self) -> int:
        return max(0, _output_length(_dilated(self.n, self.ld), self.k, self.s, self.lo,
                                     self.hi, self.rd))

    def input_transpose(self) -> _Axis:
        """This axis in the input gradient's convolution, as JAX's transpose rule builds it
        (``_conv_general_dilated_transpose_lhs``: the cotangent against the kernel)."""
        lo = _dilated(self.k, self.rd) - self.lo - 1
        hi = (_dilated(self.n, self.ld) + _dilated(self.k, self.rd) - 1
              - _dilated(self.out, self.s) - lo)
        return _Axis(self.out, self.k, self.ld, self.s, self.rd, lo, hi)

    def kernel_transpose(self) -> _Axis:
        """This axis in the kernel gradient's convolution, as JAX's transpose rule builds it
        (``_conv_general_dilated_transpose_rhs``: the input against the cotangent)."""
        hi = (_dilated(self.out, self.s) - _dilated(self.n, self.ld)
              + _dilated(self.k, self.rd) - self.lo - 1)
        return _Axis(self.n, self.out, self.rd, self.ld, self.s, self.lo, hi)


#: How many derivatives deep kconv keeps the convolutions JAX builds clear of XLA's
#: operand-swap abort: gradients and gradients of gradients (Hessians, gradient penalties).
_GUARDED_ORDER = 2


def _swap_group_axes(axes: Sequence[_Axis]) -> list[int]:
    """The axes XLA:CPU's operand swap (jaxlib 0.10.2's ConvOperandSwapper) would keep as
    "group" axes while swapping this ungrouped convolution's operands: the swap mishandles
    them and the process aborts.

    The swap's test, mirrored: it swaps where the kernel's window is larger than the input's
    (the products of their lengths over the axes it swaps), keeping as they are the axes it
    takes for a "group" axis (input dilation = kernel length, stride = kernel length - 1, no
    padding, no kernel dilation) — but with their window length, the kernel's, against the
    swapped kernel (the input), of another length: "Window dimensions do not match RHS
    shape". A transposed convolution with kernel = stride = 2 and no padding on one axis
    beside a kernel larger than its input on another is one (Conv2DTranspose(30, (3, 2),
    strides=(1, 2), padding="same", output_padding=0) on a (1, 2, 3, C) input). Without the
    swap's lowerability callback the mirror may name axes XLA would leave (conservative)."""
    group, kept, swapped = [], 1, 1
    for i, a in enumerate(axes):
        plain = a.lo == a.hi == 0 and a.rd == 1
        if plain and a.ld == a.k and a.s == a.k - 1:
            group.append(i)
        elif not (plain and a.k == a.n and a.ld == 1 and a.s == 1):
            kept *= a.k
            swapped *= a.k if (a.n == 1 and a.s == 1 and a.rd == 1
                               and a.lo == a.hi == a.k - 1) else a.n
    return group if group and kept > swapped else []


def _swap_aborts(axes: Sequence[_Axis]) -> list[list[int]]:
    """The group axes (:func:`_swap_group_axes`) of each convolution that would abort: this
    one and those JAX builds for its derivatives up to :data:`_GUARDED_ORDER` (outside
    kconv's call: its transpose rules); empty where XLA would compile them all."""
    found, forms = [], [list(axes)]
    for order in range(_GUARDED_ORDER + 1):
        for form in forms:
            if all(a.n and a.k and a.out for a in form):  # no convolution for empty arrays
                found += [group] if (group := _swap_group_axes(form)) else []
        if order < _GUARDED_ORDER:
            forms = [[t(a) for a in form] for form in forms if all(a.out for a in form)
                     for t in (_Axis.input_transpose, _Axis.kernel_transpose)]
    return found


def _swap_safe(axes: list[_Axis]) -> list[_Axis]:
    """``axes``, or an equivalent form of the convolution XLA compiles with its derivatives.

    Where :func:`_swap_aborts` finds a convolution that would abort, its group axes, then
    the others, are tried in another form computing the same outputs: the axis's low
    padding moved into the input (``lax.pad``, whose transpose is a slice), one more output
    (sliced off), one unit of its high padding moved into the input, or ``s`` more zeros
    after the input (the extra outputs sliced off). Each changes a length or a padding in
    the transposed convolutions. The first form that clears every convolution is taken, else
    the first that leaves fewer, from which the search goes on (three moves at most). The
    low side stays where it was, so the first outputs are the original ones; input-dilated
    axes only take the extra output."""
    found = _swap_aborts(axes)
    for _ in range(3):
        if not found:
            break
        named = {i for group in found for i in group}
        better = None
        for i in sorted(range(len(axes)), key=lambda i: i not in named):
            a = axes[i]
            moves = [a._replace(hi=a.hi + a.s)]
            if a.ld == 1:
                moves[:0] = [a._replace(n=a.n + a.lo, lo=0)] if a.lo > 0 else []
                moves += [a._replace(n=a.n + 1, hi=a.hi - 1)] if a.hi > 0 else []
                moves += [a._replace(n=a.n + a.s)]
            for move in moves:
                form = [*axes[:i], move, *axes[i + 1:]]
                left = _swap_aborts(form)
                if not left:
                    return form
                if better is None and len(left) < len(found):
                    better = form, left
        if better is None:
            break
        axes, found = better
    return axes


def _conv_general_dilated(
    x: Array, kernel: Array, *, strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]], lhs_dilation: Sequence[int],
    rhs_dilation: Sequence[int],
    dimension_numbers: Any, feature_group_count: int,
    precision: Any, preferred_element_type: Any,
) -> Array:
    # The single call site of lax.conv_general_dilated in the package.
    dn = lax.conv_dimension_numbers(x.shape, kernel.shape, dimension_numbers)
    lhs, rhs, out = dn.lhs_spec[2:], dn.rhs_spec[2:], dn.out_spec[2:]
    # Symbolic spatial lengths (jax.export's shape polymorphism): nothing to decide here.
    known = all(isinstance(n, int) for n in [*(x.shape[d] for d in lhs), *kernel.shape])
    if known and isinstance(padding, str):  # explicit, as lax makes it: the same program
        padding = lax.padtype_to_pads(
            [_dilated(x.shape[d], r) for d, r in zip(lhs, lhs_dilation)],
            [_dilated(kernel.shape[d], r) for d, r in zip(rhs, rhs_dilation)],
            strides, padding)
    axes = [_Axis(x.shape[a], kernel.shape[b], s, ld, rd, lo, hi) for a, b, s, ld, rd, (lo, hi)
            in zip(lhs, rhs, strides, lhs_dilation, rhs_dilation, padding)] if known else []
    guarded = axes if feature_group_count != 1 else _swap_safe(axes)
    if guarded != axes:  # the same values by another form: see _swap_safe
        widths = [(0, 0, 0)] * x.ndim
        for d, a, g in zip(lhs, axes, guarded):  # padding moved into the input, zeros added
            widths[d] = (a.lo - g.lo, g.n - a.n - (a.lo - g.lo), 0)
        if any(w != (0, 0, 0) for w in widths):
            x = lax.pad(x, jnp.zeros((), x.dtype), widths)
        padding = [(g.lo, g.hi) for g in guarded]
    y = lax.conv_general_dilated(
        x, kernel, window_strides=tuple(strides),
        padding=padding if isinstance(padding, str) else tuple(map(tuple, padding)),
        lhs_dilation=tuple(lhs_dilation), rhs_dilation=tuple(rhs_dilation),
        dimension_numbers=dn, feature_group_count=feature_group_count,
        precision=precision, preferred_element_type=preferred_element_type,
    )
    for d, a, g in zip(out, axes, guarded):
        if g.out != a.out:  # a guarded axis's extra outputs
            y = lax.slice_in_dim(y, 0, a.out, axis=d)
    return y


def _check_bias(name: str, bias: Any, filters: int) -> None:
    """``bias`` must be ``None`` or ``(filters,)``: said before anything is traced."""
    if bias is not None and jnp.shape(bias) != (filters,):
        raise ValueError(f"{name}: bias must have shape ({filters},), one per output channel, "
                         f"got shape {jnp.shape(bias)}")


class _Call:
    """Validated arguments of one op call: the input folded to one batch dim, and back."""

    def __init__(self, name: str, inputs: Any, kernel: Any, strides: Any, padding: Any,
                 data_format: Any, dilation_rate: Any, *, allowed_padding: tuple[str, ...],
                 padding_mode: Any = "zeros", transposed: bool = False):
        self.name = name
        kernel = _args.as_array(kernel, "kernel", name)
        self.rank = rank = kernel.ndim - 2
        if rank not in (1, 2, 3):
            raise ValueError(f"{name}: kernel must have rank 3, 4 or 5 (N spatial dims + 2), "
                             f"got shape {kernel.shape}")
        if any(k < 1 for k in kernel.shape[:rank]):
            raise ValueError(f"{name}: the kernel's spatial dims must be at least 1, got "
                             f"shape {kernel.shape}")
        self.data_format = _args.data_format(data_format, name)
        self.strides = _args.int_tuple(strides, rank, "strides", name)
        self.dilation = _args.int_tuple(dilation_rate, rank, "dilation_rate", name)
        allowed = allowed_padding if rank == 1 else tuple(
            p for p in allowed_padding if p != "causal")
        self.padding = _args.conv_padding(padding, rank, name, allowed)
        self.padding_mode = _args.conv_padding_mode(padding_mode, name, transposed=transposed)
        x = _args.as_array(inputs, "inputs", name)
        if x.ndim < rank + 1:
            raise ValueError(
                f"{name}: expected an input of rank {rank + 2} "
                f"({_layout(rank, self.data_format)}) or {rank + 1} (unbatched), "
                f"got shape {x.shape}"
            )
        self.lead = x.shape[: x.ndim - rank - 1]
        self.x = x.reshape((math.prod(self.lead),) + x.shape[x.ndim - rank - 1:])
        self.kernel = kernel
        self.channels = self.x.shape[_args.channel_axis(self.data_format, rank)]
        self.spatial = tuple(self.x.shape[a] for a in _args.spatial_axes(self.data_format,
                                                                         rank))
        dtype = jnp.promote_types(self.x.dtype, kernel.dtype)
        self.x, self.kernel = self.x.astype(dtype), kernel.astype(dtype)

    def forward_padding(self, kernel_size: Sequence[int]) -> list[tuple[int, int]]:
        """The forward convolution's explicit (lo, hi) pairs (causal: a left pad).

        With a ``padding_mode`` other than ``"zeros"``, the input is padded here instead
        (``self.x`` replaced by its ``jnp.pad``, in NumPy's matching mode) and the pairs
        returned are all zero, so the lowering sees an unpadded convolution. For
        ``"zeros"`` the lowering gets the amounts, as its fast paths want.
        """
        pads = shapes._axis_paddings(self.padding, self.rank)
        pairs = [shapes.conv_padding(n, k, s, p, d) for n, k, s, p, d in
                 zip(self.spatial, kernel_size, self.strides, pads, self.dilation)]
        if self.padding_mode == "zeros" or not any(lo or hi for lo, hi in pairs):
            return pairs
        axes = _args.spatial_axes(self.data_format, self.rank)
        for n, (lo, hi) in zip(self.spatial, pairs):
            if n == 0 and (lo or hi):
                raise ValueError(
                    f"{self.name}: padding_mode {self.padding_mode!r} cannot pad an empty "
                    f"spatial axis: input spatial shape {self.spatial}, padding {pairs}")
        width = [(0, 0)] * self.x.ndim
        for axis, pair in zip(axes, pairs):
            width[axis] = pair
        # jnp.pad's reflect/edge/wrap are NumPy's, also for pads wider than the axis
        # (reflect and wrap repeat), which is what PyTorch's names mean here.
        self.x = jnp.pad(self.x, width, mode=_NUMPY_PAD_MODES[self.padding_mode])
        return [(0, 0)] * self.rank

    def check_output(self, kernel_size: Sequence[int]) -> None:
        pads = shapes._axis_paddings(self.padding, self.rank)
        out = [shapes.conv_output_length(n, k, s, p, d) for n, k, s, p, d in
               zip(self.spatial, kernel_size, self.strides, pads, self.dilation)]
        if shapes.refused_output(self.spatial, pads, out):
            k_eff = tuple(d * (k - 1) + 1 for k, d in zip(kernel_size, self.dilation))
            raise ValueError(
                f"{self.name}: the window is larger than the (padded) input: input shape "
                f"{self.x.shape[1:] if not self.lead else self.lead + self.x.shape[1:]}, "
                f"kernel_size {tuple(kernel_size)} (dilated: {k_eff}), strides "
                f"{self.strides}, padding {self.padding!r} give spatial output {tuple(out)}"
            )

    def spec(self, kernel: Array, padding: Sequence[tuple[int, int]], groups: int,
             preferred_element_type: Any, bias: Any = None, *,
             precision: Any = None) -> lowering.ConvSpec:
        """The static facts :func:`kconv.ops.lowering.choose` decides on (``precision``
        and ``preferred_element_type`` checked here, naming the op, not in lax)."""
        _args.precision(precision, self.name)
        if preferred_element_type is not None:
            try:
                jnp.dtype(preferred_element_type)
            except TypeError as e:
                raise TypeError(f"{self.name}: preferred_element_type must be a dtype, got "
                                f"{preferred_element_type!r}") from e
        return lowering.ConvSpec(
            rank=self.rank, data_format=self.data_format, input_shape=self.x.shape,
            kernel_shape=kernel.shape, strides=self.strides, padding=tuple(padding),
            dilation=self.dilation, groups=groups, dtype=self.x.dtype,
            preferred_element_type=preferred_element_type, bias=bias is not None)

    def unfold(self, y: Array) -> Array:
        return y.reshape(self.lead + y.shape[1:])


def _layout(rank: int, data_format: str) -> str:
    spatial = ", ".join(("d1", "d2", "d3")[:rank]) if rank > 1 else "length"
    if data_format == "channels_last":
        return f"batch, {spatial}, channels"
    return f"batch, channels, {spatial}"


_FORWARD_PADDING = ("valid", "same", "causal")
#: ``padding_mode`` (PyTorch's names) -> ``jnp.pad``'s (NumPy's) mode.
_NUMPY_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def conv(
    inputs: Any, kernel: Any, strides: Any = 1, padding: Any = "valid",
    data_format: str | None = None, dilation_rate: Any = 1, *, bias: Any = None,
    padding_mode: str = "zeros", precision: Any = None, preferred_element_type: Any = None,
    name: str = "kconv.ops.conv",
) -> Array:
    """N-d convolution (cross-correlation, as Keras), grouped when the kernel says so.

    Args:
      inputs: ``(batch, *spatial, C)`` or ``(batch, C, *spatial)``; also unbatched, or with
        more leading batch dims.
      kernel: ``(*kernel_size, C // groups, filters)``. ``groups = C // kernel.shape[-2]``
        (as Keras's JAX backend infers it); ``filters`` must divide by it.
      strides: int or tuple of N ints.
      padding: ``"valid"``, ``"same"`` (odd pad at the end), ``"causal"`` (1-D only: left
        pad ``d * (k - 1)``), or explicit amounts (beyond Keras): an int (every side), N
        ints (symmetric per axis) or N ``(lo, hi)`` pairs — for 1-D ``((lo, hi),)``, as a
        bare ``(lo, hi)`` would be ambiguous.
      data_format: ``"channels_last"``, ``"channels_first"`` or ``None`` (global default).
      dilation_rate: int or tuple of N ints.
      bias: ``None`` or ``(filters,)``, added to every output position in the output's
        dtype (beyond Keras, keyword-only; PyTorch's ``conv2d`` has it). Added inside the
        op, a lowering can fuse its own last step with the add: the layers pass theirs
        here.
      padding_mode: what the padding holds (beyond Keras; PyTorch's names), keyword-only:
        ``"zeros"`` (default), ``"reflect"`` (mirrored, the edge not repeated: NumPy's
        ``np.pad`` ``"reflect"``), ``"replicate"`` (the edge repeated: ``"edge"``) or
        ``"circular"`` (wrapped around: ``"wrap"``). The amounts are ``padding``'s; pads
        wider than the axis reflect / wrap again, as NumPy's. With ``"causal"``, only
        zeros and replicate keep ``output[t]`` independent of ``input[t + 1:]``.
      precision: passed to ``lax.conv_general_dilated``.
      preferred_element_type: accumulation/output dtype, passed to lax.
      name: label used in error messages (the layers pass their class name).

    Returns:
      ``(batch, *out_spatial, filters)`` (or channels_first), the inputs' leading dims kept.

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.arange(5.0).reshape(1, 5, 1)
        >>> conv(x, jnp.ones((2, 1, 1)), padding="causal")[0, :, 0]
        Array([0., 1., 3., 5., 7.], dtype=float32)
        >>> conv(jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4)), strides=2, padding="same").shape
        (2, 4, 4, 4)
        >>> # "same" pads (1, 1) here: reflected, the input reads [1, 0, 1, 2, 3, 4, 3].
        >>> conv(x, jnp.ones((3, 1, 1)), padding="same", padding_mode="reflect")[0, :, 0]
        Array([ 2.,  3.,  6.,  9., 10.], dtype=float32)
        >>> conv(x, jnp.ones((1, 1, 1)), padding=((2, 0),), padding_mode="circular")[0, :, 0]
        Array([3., 4., 0., 1., 2., 3., 4.], dtype=float32)
        >>> conv(x, jnp.ones((2, 1, 1)), bias=jnp.array([10.0]))[0, :, 0]
        Array([11., 13., 15., 17.], dtype=float32)
    """
    call = _Call(name, inputs, kernel, strides, padding, data_format, dilation_rate,
                 allowed_padding=_FORWARD_PADDING, padding_mode=padding_mode)
    kernel_size, kernel_in, filters = call.kernel.shape[:-2], call.kernel.shape[-2], \
        call.kernel.shape[-1]
    if kernel_in == 0 or call.channels % kernel_in:
        raise ValueError(
            f"{name}: the input has {call.channels} channels, which is not a multiple of the "
            f"kernel's input channels {kernel_in} (kernel shape {call.kernel.shape}, input "
            f"shape {jnp.shape(inputs)}, data_format {call.data_format!r})"
        )
    groups = call.channels // kernel_in
    if filters % groups:
        raise ValueError(
            f"{name}: the kernel's {filters} filters do not divide into the {groups} groups "
            f"implied by {call.channels} input channels and kernel shape {call.kernel.shape}"
        )
    call.check_output(kernel_size)
    _check_bias(name, bias, filters)
    padding = call.forward_padding(kernel_size)  # pads call.x itself for padding_mode
    spec = call.spec(call.kernel, padding, groups, preferred_element_type, bias,
                     precision=precision)
    return call.unfold(lowering.conv(call.x, call.kernel, spec, precision=precision,
                                     bias=bias))


def depthwise_conv(
    inputs: Any, kernel: Any, strides: Any = 1, padding: Any = "valid",
    data_format: str | None = None, dilation_rate: Any = 1, *, bias: Any = None,
    padding_mode: str = "zeros", precision: Any = None, preferred_element_type: Any = None,
    name: str = "kconv.ops.depthwise_conv",
) -> Array:
    """N-d depthwise convolution: each input channel convolved with its own filters.

    Output channel ``c * depth_multiplier + m`` is input channel ``c`` convolved with
    ``kernel[..., c, m]`` (Keras's layout and order).

    Args:
      inputs: as :func:`conv`, with ``C`` channels.
      kernel: ``(*kernel_size, C, depth_multiplier)``.
      bias: ``None`` or ``(C * depth_multiplier,)``, keyword-only: as :func:`conv`'s.
      strides, padding, data_format, dilation_rate, padding_mode, precision,
      preferred_element_type, name: as :func:`conv`.

    Example:
        >>> import jax.numpy as jnp
        >>> depthwise_conv(jnp.ones((2, 9, 9, 3)), jnp.ones((3, 3, 3, 2))).shape
        (2, 7, 7, 6)
        >>> depthwise_conv(jnp.ones((1, 4, 2)), jnp.ones((3, 2, 1)),
        ...                bias=jnp.array([0.5, -0.5]))[0, :, 1]
        Array([2.5, 2.5], dtype=float32)
        >>> # One pad each side, the edge repeated: the input reads [0, 0, 1, 2, 2].
        >>> x = jnp.arange(3.0).reshape(1, 3, 1)
        >>> depthwise_conv(x, jnp.ones((3, 1, 1)), padding=1, padding_mode="replicate")[0, :, 0]
        Array([1., 3., 5.], dtype=float32)
    """
    kernel = _args.as_array(kernel, "kernel", name)
    call = _Call(name, inputs, kernel, strides, padding, data_format, dilation_rate,
                 allowed_padding=_FORWARD_PADDING, padding_mode=padding_mode)
    if kernel.shape[-2] != call.channels:
        raise ValueError(
            f"{name}: the kernel expects {kernel.shape[-2]} input channels (kernel shape "
            f"{kernel.shape}), got an input of shape {jnp.shape(inputs)} with "
            f"{call.channels} channels (data_format {call.data_format!r})"
        )
    kernel_size = kernel.shape[:-2]
    call.check_output(kernel_size)
    _check_bias(name, bias, kernel.shape[-2] * kernel.shape[-1])
    # (*k, C, dm) -> (*k, 1, C * dm): a reshape (no data movement), so that group c of a
    # C-group convolution holds exactly kernel[..., c, :].
    grouped = call.kernel.reshape(kernel_size + (1, kernel.shape[-2] * kernel.shape[-1]))
    padding = call.forward_padding(kernel_size)  # pads call.x itself for padding_mode
    spec = call.spec(grouped, padding, call.channels, preferred_element_type, bias,
                     precision=precision)
    return call.unfold(lowering.conv(call.x, grouped, spec, precision=precision, bias=bias))


def separable_conv(
    inputs: Any, depthwise_kernel: Any, pointwise_kernel: Any, strides: Any = 1,
    padding: Any = "valid", data_format: str | None = None, dilation_rate: Any = 1, *,
    bias: Any = None, padding_mode: str = "zeros", precision: Any = None,
    preferred_element_type: Any = None, name: str = "kconv.ops.separable_conv",
) -> Array:
    """N-d separable convolution: a depthwise convolution, then a 1×…×1 pointwise one.

    Strides, padding and dilation apply to the depthwise step, as in Keras, and so does
    ``padding_mode``. With ``preferred_element_type``, both steps accumulate in it; the
    intermediate is rounded to the operands' dtype in between, as Keras computes it.

    Args:
      inputs: as :func:`conv`, with ``C`` channels.
      depthwise_kernel: ``(*kernel_size, C, depth_multiplier)``.
      pointwise_kernel: ``(*(1,) * N, C * depth_multiplier, filters)``.
      bias: ``None`` or ``(filters,)``, keyword-only, added after the pointwise step: as
        :func:`conv`'s.
      strides, padding, data_format, dilation_rate, padding_mode, precision,
      preferred_element_type, name: as :func:`conv`.

    Example:
        >>> import jax.numpy as jnp
        >>> separable_conv(jnp.ones((2, 9, 3)), jnp.ones((3, 3, 2)), jnp.ones((1, 6, 5)),
        ...                padding="same").shape
        (2, 9, 5)
    """
    pointwise_kernel = _args.as_array(pointwise_kernel, "pointwise_kernel", name)
    depthwise_kernel = _args.as_array(depthwise_kernel, "depthwise_kernel", name)
    rank = depthwise_kernel.ndim - 2
    expected = (1,) * rank + (depthwise_kernel.shape[-2] * depthwise_kernel.shape[-1],)
    if pointwise_kernel.shape[:-1] != expected:
        raise ValueError(
            f"{name}: pointwise_kernel must have shape {expected + ('filters',)} for a "
            f"depthwise_kernel of shape {depthwise_kernel.shape}, got {pointwise_kernel.shape}"
        )
    _check_bias(name, bias, pointwise_kernel.shape[-1])  # before the depthwise step
    y = depthwise_conv(inputs, depthwise_kernel, strides, padding, data_format, dilation_rate,
                       padding_mode=padding_mode, precision=precision,
                       preferred_element_type=preferred_element_type, name=name)
    # The intermediate is kept in the operands' dtype (as Keras does), so that a 16-bit
    # pointwise step multiplies 16-bit operands; each step accumulates as asked.
    y = y.astype(jnp.promote_types(jnp.asarray(inputs).dtype, depthwise_kernel.dtype))
    # "same" is "valid" for a 1×…×1 kernel at stride 1 (no padding), and also takes the
    # empty axis of a "same" depthwise step's empty output (refused_output).
    return conv(y, pointwise_kernel, 1, "same", data_format, 1, bias=bias,
                precision=precision, preferred_element_type=preferred_element_type, name=name)


def conv_transpose(
    inputs: Any, kernel: Any, strides: Any = 1, padding: str = "valid",
    output_padding: Any = None, data_format: str | None = None, dilation_rate: Any = 1, *,
    groups: int = 1, bias: Any = None, padding_mode: str = "zeros", precision: Any = None,
    preferred_element_type: Any = None, name: str = "kconv.ops.conv_transpose",
) -> Array:
    """N-d transposed convolution, with Keras's output lengths and ``output_padding``.

    It is the vector-Jacobian product of the forward convolution with the same kernel,
    strides, padding and dilation (TF/Keras semantics): input position ``i`` and kernel tap
    ``j`` contribute to output position ``i * stride + j * dilation - pad_lo``. It is
    computed as a stride-1 convolution of the input dilated by ``strides``
    (``lhs_dilation``) with the spatially reversed kernel, read through dimension numbers
    in its ``(*k, filters, in)`` layout (no transposition) — on XLA:CPU, for strides above
    1, as the equivalent sub-pixel form instead (see :mod:`kconv.ops.lowering`).

    With ``groups > 1`` (beyond Keras, as PyTorch's ``ConvTranspose``): the VJP of the
    grouped forward convolution from ``filters`` to ``C`` channels with the same kernel;
    input channels ``[j * C / g, (j + 1) * C / g)`` feed only outputs
    ``[j * filters / g, (j + 1) * filters / g)``, through ``kernel[..., :, j * C / g:…]``.
    It is one ``feature_group_count`` convolution, the kernel regrouped to lax's
    ``(*k, C / g, filters)`` (on XLA:CPU: one dense transposed convolution per group).

    Args:
      inputs: as :func:`conv`, with ``C`` channels.
      kernel: ``(*kernel_size, filters // groups, C)`` — out before in, as Keras
        (``(*kernel_size, filters, C)`` for ``groups=1``).
      strides: int or tuple of N ints.
      padding: ``"valid"`` or ``"same"`` (Keras's); in 1-D ``"causal"`` (beyond Keras:
        the first ``n * s`` positions of the full output, so output ``t`` depends only on
        inputs ``0 … t // s``, as streaming audio models' causal transposed convolution;
        see :func:`kconv.ops.shapes.conv_transpose_padding`); or explicit amounts
        (beyond Keras, PyTorch's ``ConvTranspose`` ``padding``): an int (every side), N
        ints (symmetric per axis) or N ``(lo, hi)`` pairs (1-D: ``((lo, hi),)``), cropped
        off the two ends of each axis of the full output — the VJP of the forward
        convolution padded by them. Output length
        ``(n - 1) * s + d * (k - 1) + 1 - lo - hi + output_padding``.
      output_padding: ``None`` or an int / N ints: extra length at the end of each axis
        (see :func:`kconv.ops.shapes.conv_transpose_output_length`). Each below the
        stride; with explicit ``padding``, below ``max(stride, dilation)`` (as PyTorch).
        ``None`` means 0 with ``"causal"`` and explicit ``padding``.
      data_format, dilation_rate: as :func:`conv`.
      groups: keyword-only, default 1: the number of channel groups; ``C`` must divide by
        it, and the output has ``kernel.shape[-2] * groups`` channels.
      bias: ``None`` or ``(kernel.shape[-2] * groups,)``, keyword-only: as :func:`conv`'s
        (PyTorch's ``conv_transpose2d`` has it).
      padding_mode: keyword-only; only ``"zeros"``, anything else raises ``ValueError``.
        A transposed convolution's padding crops its output rather than bordering its
        input, so reflect/replicate/circular have no meaning (PyTorch, too, allows only
        zeros). Taken so code written over all four ops can pass one set of keywords.
      precision, preferred_element_type, name: as :func:`conv`.

    Example:
        >>> import jax.numpy as jnp
        >>> conv_transpose(jnp.ones((1, 3, 1)), jnp.ones((2, 1, 1)), strides=2)[0, :, 0]
        Array([1., 1., 1., 1., 1., 1.], dtype=float32)
        >>> conv_transpose(jnp.ones((2, 16, 16, 64)), jnp.ones((3, 3, 32, 64)), strides=2,
        ...                padding="same").shape
        (2, 32, 32, 32)
        >>> # PyTorch's padding=1: one position cropped off each end of the full output.
        >>> conv_transpose(jnp.ones((1, 3, 1)), jnp.ones((3, 1, 1)), strides=2,
        ...                padding=1)[0, :, 0]
        Array([1., 2., 1., 2., 1.], dtype=float32)
        >>> # 2 groups: input channel 0 reaches outputs 0-1 only, channel 1 outputs 2-3.
        >>> kernel = jnp.array([[[1.0, 10.0], [2.0, 20.0]]])   # (k=1, filters // 2, C=2)
        >>> conv_transpose(jnp.array([[[1.0, 1.0]]]), kernel, groups=2)[0, 0]
        Array([ 1.,  2., 10., 20.], dtype=float32)
    """
    call = _Call(name, inputs, kernel, strides, padding, data_format, dilation_rate,
                 allowed_padding=_FORWARD_PADDING, padding_mode=padding_mode,
                 transposed=True)
    rank, kernel = call.rank, call.kernel
    groups = _args.positive_int(groups, "groups", name)
    if kernel.shape[-1] != call.channels:
        raise ValueError(
            f"{name}: the kernel expects {kernel.shape[-1]} input channels (kernel shape "
            f"{kernel.shape}, layout (*kernel_size, filters // groups, in_channels)), got an "
            f"input of shape {jnp.shape(inputs)} with {call.channels} channels "
            f"(data_format {call.data_format!r})"
        )
    if call.channels % groups:
        raise ValueError(
            f"{name}: the input channels ({call.channels}) must be divisible by "
            f"groups={groups} (input shape {jnp.shape(inputs)}, kernel shape {kernel.shape})"
        )
    kernel_size = kernel.shape[:-2]
    _check_bias(name, bias, kernel.shape[-2] * groups)
    checked = _args.output_padding(output_padding, rank, call.strides, name,
                                   padding=call.padding, dilation=call.dilation)
    out_pad = checked if checked is not None else (None,) * rank
    axis_pads = shapes._axis_paddings(call.padding, rank)
    if not isinstance(call.padding, str):
        # Only explicit amounts can crop the whole output away; say so here, not in XLA.
        shapes.conv_transpose_output_shape(
            call.x.shape, kernel.shape[-2] * groups, kernel_size, call.strides,
            call.padding, checked, call.data_format, call.dilation, name=name)
    pads = [shapes.conv_transpose_padding(k, s, p, op, d) for k, s, p, op, d in
            zip(kernel_size, call.strides, axis_pads, out_pad, call.dilation)]
    spec = call.spec(kernel, pads, groups, preferred_element_type, bias,
                     precision=precision)
    return call.unfold(lowering.conv_transpose(call.x, kernel, spec, precision=precision,
                                               bias=bias))
