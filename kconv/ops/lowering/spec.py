"""The facts of one call that the rule decides on (:class:`ConvSpec`, :class:`UpsampleSpec`)
and the geometry the lowerings share: spatial and channel axes, padding, and which input
elements each kernel tap's window reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from kconv import _args

#: The array type of every lowering module's signatures.
Array = jax.Array


XLA = "xla"


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """The static facts of one convolution call: all :func:`choose` looks at.

    Attributes:
      rank: the number of spatial dims ``N``.
      data_format: ``"channels_last"`` or ``"channels_first"``.
      input_shape: the input's shape with the batch dims folded into one.
      kernel_shape: ``(*kernel_size, C // groups, filters)``; for a transposed
        convolution ``(*kernel_size, filters // groups, C)``.
      strides, dilation: ``N`` ints each.
      padding: ``N`` explicit ``(lo, hi)`` pairs — of the forward convolution, or for a
        transposed one of the stride-dilated input (``shapes.conv_transpose_padding``).
      groups: the feature group count; for a transposed convolution its own groups
        (``kernel_shape`` ``(*kernel_size, filters // groups, C)``, the VJP of the
        grouped forward convolution from ``filters`` to ``C`` channels).
      dtype: the common dtype of input and kernel.
      preferred_element_type: as ``lax.conv_general_dilated``; ``None`` is the dtype.
      bias: whether the call adds a per-channel bias to the output itself
        (the ops' ``bias``, which the layers pass when ``use_bias``), an
        elementwise consumer XLA fuses with whatever follows the convolution
        (``"eigen_crop"`` needs one for its crop).

    Example:
        >>> spec = ConvSpec(2, "channels_last", (8, 16, 16, 3), (3, 3, 3, 32), (2, 2),
        ...                 ((0, 1), (0, 1)), (1, 1))
        >>> spec.kernel_size, spec.spatial, spec.channels, spec.output_spatial()
        ((3, 3), (16, 16), 3, (8, 8))
    """

    rank: int
    data_format: str
    input_shape: tuple[int, ...]
    kernel_shape: tuple[int, ...]
    strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    groups: int = 1
    dtype: Any = "float32"
    preferred_element_type: Any = None
    bias: bool = False

    def __post_init__(self) -> None:
        canonical = {
            "input_shape": tuple(_dim(d) for d in self.input_shape),
            "kernel_shape": tuple(int(d) for d in self.kernel_shape),
            "strides": tuple(int(s) for s in self.strides),
            "padding": tuple((_dim(lo), _dim(hi)) for lo, hi in self.padding),
            "dilation": tuple(int(d) for d in self.dilation),
            "dtype": np.dtype(self.dtype),
            "preferred_element_type": None if self.preferred_element_type is None
            else np.dtype(self.preferred_element_type),
            "bias": bool(self.bias),
        }
        for name, value in canonical.items():
            object.__setattr__(self, name, value)

    @property
    def kernel_size(self) -> tuple[int, ...]:
        return self.kernel_shape[:-2]

    @property
    def spatial(self) -> tuple[int, ...]:
        """The input's spatial lengths."""
        if self.data_format == "channels_last":
            return self.input_shape[1:-1]
        return self.input_shape[2:]

    @property
    def channels(self) -> int:
        return self.input_shape[-1 if self.data_format == "channels_last" else 1]

    def output_spatial(self) -> tuple[int, ...]:
        """Spatial output lengths of the forward convolution."""
        return tuple(_output_length(n, k, s, lo, hi, d) for n, k, s, (lo, hi), d in
                     zip(self.spatial, self.kernel_size, self.strides, self.padding,
                         self.dilation))

    def output_dtype(self) -> np.dtype:
        return self.preferred_element_type or self.dtype


@dataclasses.dataclass(frozen=True)
class UpsampleSpec:
    """The static facts of one :func:`kconv.ops.upsample` call with an interpolation.

    Attributes:
      interpolation: ``"bilinear"``, ``"bicubic"``, ….
      input_shape: the input's shape.
      axes: the spatial axes (non-negative).
      factors: the integer factor of each of ``axes``.
      dtype: the input's dtype.

    Example:
        >>> from kconv.ops.lowering import choose
        >>> choose("upsample", "cpu", UpsampleSpec("bilinear", (2, 16, 16, 8), (1, 2), (2, 2)))
        'bilinear_stencil'
    """

    interpolation: str
    input_shape: tuple[int, ...]
    axes: tuple[int, ...]
    factors: tuple[int, ...]
    dtype: Any = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", np.dtype(self.dtype))


def _dim(d: Any) -> Any:
    """A dimension as an ``int``, or as it is where it is symbolic (``jax.export``'s
    shape polymorphism: a batch exported as ``"b"``)."""
    return d if _args.is_symbolic((d,)) else int(d)


def _output_aval(like: Any, shape: Sequence[Any], dtype: Any) -> Any:
    """A primitive's output aval: ``shape`` and ``dtype``, varying over the manual mesh axes
    its operand ``like`` varies over (inside :func:`jax.shard_map`; the operands were
    made alike: :func:`~kconv.ops.lowering.dispatch._varying_alike`), sharded as ``like``
    along the batch axis and along no other (lax's convolution's rule)."""
    return like.update(shape=tuple(shape), dtype=np.dtype(dtype), weak_type=False,
                       sharding=like.sharding.update(spec=_batch_spec(like.sharding,
                                                                      len(shape))))


def _batch_spec(sharding: Any, ndim: int) -> jax.sharding.PartitionSpec:
    """An ``ndim``-d array's spec sharded as ``sharding`` (an aval's) along the batch
    (first) axis only: what a convolution's output is under explicit sharding
    (``jax.set_mesh`` of a mesh of ``Explicit`` axes, ``jax.make_mesh``'s default), and
    what a reshape that splits the batch back out of a folded axis must say (it cannot be
    inferred there)."""
    batch = tuple(sharding.spec)[:1] or (None,)
    return jax.sharding.PartitionSpec(*batch, *[None] * (ndim - 1))


def _reshape_batched(x: Array, shape: Sequence[int]) -> Array:
    """``x.reshape(shape)`` for a reshape that keeps the batch (first) axis whole: under
    explicit sharding it says the output keeps the batch's sharding, which JAX cannot
    infer where the reshape splits the batch out of a folded axis or merges transposed
    ones (``ShardingTypeError``); otherwise the plain reshape."""
    sharding = jax.typeof(x).sharding
    if not any(_batch_spec(sharding, 1)):
        return x.reshape(shape)
    return lax.reshape(x, tuple(shape), out_sharding=_batch_spec(sharding, len(shape)))


def _spatial_axes(spec: ConvSpec) -> tuple[int, ...]:
    if spec.data_format == "channels_last":
        return tuple(range(1, spec.rank + 1))
    return tuple(range(2, spec.rank + 2))


def _channel_axis(spec: ConvSpec) -> int:
    return spec.rank + 1 if spec.data_format == "channels_last" else 1


def _pad_spatial(x: Array, axes: Sequence[int], pads: Sequence[tuple[int, int]]) -> Array:
    """Zero (lo, hi) padding of ``axes``; negative amounts crop."""
    if all(lo == hi == 0 for lo, hi in pads):
        return x
    return lax.pad(x, np.zeros((), x.dtype), _spatial_pad_config(x.ndim, axes, pads))


def _spatial_pad_config(ndim: int, axes: Sequence[int], pads: Sequence[tuple[int, int]]
                        ) -> list[tuple[int, int, int]]:
    """The ``lax.pad`` config of (lo, hi) amounts on ``axes`` of an ``ndim``-d array."""
    config = [(0, 0, 0)] * ndim
    for axis, (lo, hi) in zip(axes, pads):
        config[axis] = (lo, hi, 0)
    return config


def _accumulation_dtype(spec: ConvSpec) -> np.dtype:
    # XLA:CPU computes a 16-bit float convolution in float32 and rounds the result once;
    # lowerings that add partial results in jnp arithmetic do the same, so they round the
    # same way instead of once per tap.
    dtype = spec.dtype if spec.dtype.itemsize >= 4 else np.dtype(np.float32)
    if spec.preferred_element_type is not None:
        dtype = jnp.promote_types(dtype, spec.preferred_element_type)
    return np.dtype(dtype)


def _output_shape(x: Array, spec: ConvSpec, out: Sequence[int]) -> tuple[int, ...]:
    shape = list(x.shape)
    for axis, o in zip(_spatial_axes(spec), out):
        shape[axis] = o
    shape[_channel_axis(spec)] = spec.kernel_shape[-1]
    return tuple(shape)


def _dilated(n: int, d: int) -> int:
    """An axis of length ``n`` dilated by ``d`` (``d - 1`` zeros between neighbours)."""
    return 0 if n == 0 else (n - 1) * d + 1


def _output_length(n: int, k: int, s: int, lo: int, hi: int, d: int) -> int:
    """A convolution's output length along one axis: the padded input less the dilated
    kernel, in strides (negative where the window is wider than the padded input)."""
    return (n + lo + hi - _dilated(k, d)) // s + 1


def conv_output_shape(x_shape: Sequence[int], kernel_shape: Sequence[int], spec: ConvSpec,
                      *, transposed: bool = False) -> tuple[int, ...]:
    """The output shape of XLA's plain convolution of an input of ``x_shape`` with a kernel
    of ``kernel_shape`` under ``spec`` (``transposed``: the transposed convolution, its
    input dilated by the strides), as ``lax.conv_general_dilated`` infers it.

    A primitive's abstract evaluation runs at every bind; this arithmetic costs
    microseconds where tracing the plain convolution under :func:`jax.eval_shape` took
    about half a millisecond a call (M2's forward trace 9.0 -> 6.1 ms).

    Example:
        >>> spec = ConvSpec(2, "channels_last", (1, 5, 5, 3), (3, 3, 3, 8), (2, 2),
        ...                 ((1, 1), (1, 1)), (1, 1))
        >>> conv_output_shape((4, 5, 5, 3), (3, 3, 3, 8), spec)
        (4, 3, 3, 8)
        >>> conv_output_shape((4, 3, 3, 8), (3, 3, 3, 8), spec, transposed=True)
        (4, 5, 5, 3)
    """
    kernel_size, (kernel_in, kernel_out) = kernel_shape[:-2], kernel_shape[-2:]
    shape = list(x_shape)
    for axis, k, s, (lo, hi), d in zip(_spatial_axes(spec), kernel_size, spec.strides,
                                       spec.padding, spec.dilation):
        if transposed:  # the input dilated by the strides, then a stride-1 convolution
            n, s = _dilated(shape[axis], s), 1
        else:
            n = shape[axis]
        shape[axis] = max(0, _output_length(n, k, s, lo, hi, d))  # lax's: never negative
    # A transposed kernel is (*k, filters // groups, C).
    shape[_channel_axis(spec)] = kernel_in * spec.groups if transposed else kernel_out
    return tuple(shape)


def _tap_ranges(axes: Sequence[int], offsets: Sequence[int], spec: ConvSpec,
                out: Sequence[int]) -> list[tuple[int, ...]] | None:
    """Per spatial axis of tap ``offsets``: ``(axis, j, n, d, s, lo, o, first, last)`` —
    the tap index ``j``, input length ``n``, dilation ``d``, stride ``s``, padding ``lo``,
    output length ``o``, and the first and last outputs whose input ``o * s + j * d - lo``
    is inside ``[0, n)``; ``None`` if on some axis every one falls in the padding."""
    ranges = []
    for axis, j, n, d, s, (lo, _), o in zip(axes, offsets, spec.spatial, spec.dilation,
                                            spec.strides, spec.padding, out):
        first, last = max(0, -(-(lo - j * d) // s)), min(o - 1, (n - 1 + lo - j * d) // s)
        if first > last:
            return None
        ranges.append((axis, j, n, d, s, lo, o, first, last))
    return ranges


def _tap_window_plan(shape: Sequence[int], axes: Sequence[int], offsets: Sequence[int],
                     spec: ConvSpec, out: Sequence[int]) -> tuple | None:
    """How to cut the input elements kernel tap ``offsets`` meets, ``x[o * s + j * d - lo]``
    per axis, zero where that falls in the padding, from an input of ``shape``:
    ``((start, limit, step), pads)`` — a strided slice (``None``s: none), then a
    ``lax.pad`` config (``None``: none); ``None`` if the window is all padding.

    Each window is its own slice and zero pad, not a slice of one padded copy of the
    input: XLA:CPU fuses a slice-and-pad into the multiply-add, but compiles a standalone
    pad of a large array slowly (~200 ms for W4's input). (The depthwise taps' forward
    pads its input once where that is another depthwise layer's output, or from 25 taps,
    the pad fused with a negation: ``depthwise_taps._pads_once``; ``spec`` is then the
    padded input's.)
    """
    start, limit, step = [0] * len(shape), list(shape), [1] * len(shape)
    pads = [(0, 0, 0)] * len(shape)
    ranges = _tap_ranges(axes, offsets, spec, out)
    if ranges is None:
        return None
    for axis, j, n, d, s, lo, o, first, last in ranges:
        start[axis] = first * s + j * d - lo
        limit[axis] = last * s + j * d - lo + 1
        step[axis] = s
        pads[axis] = (first, o - 1 - last, 0)
    if all(s == 1 for s in step):
        # One pad with negative (cropping) amounts and no slice: an op fewer per tap to
        # emit; XLA's simplifier makes it the same slice-and-pad.
        crop = [(p[0] - a, p[1] - (n - b), 0) for p, a, b, n in zip(pads, start, limit, shape)]
        return (None, None, None), (None if all(c == (0, 0, 0) for c in crop) else crop)
    return (start, limit, step), (pads if any(p != (0, 0, 0) for p in pads) else None)


def _skip(ndim: int, axis: int) -> tuple[int, ...]:
    """The axes of an ``ndim + 1``-d array other than ``axis``, for ``broadcast_in_dim``."""
    return tuple(a if a < axis else a + 1 for a in range(ndim))
