"""Cropping, zero-padding and upsampling as pure array functions (Keras's conventions).

The three ops are N-d: they act on the ``N`` spatial axes of
``(batch, *spatial, channels)`` (``channels_last``) or ``(batch, channels, *spatial)``
(``channels_first``) inputs, and leave the batch and channel axes alone. ``N`` is
``inputs.ndim - 2`` unless ``rank`` is given; with ``rank``, an unbatched input (rank
``N + 1``) and extra leading batch dims work too (the axes are counted from the end, so
the ops are ``vmap``-friendly). ``data_format=None`` means
:func:`kconv.config.image_data_format`.

Cropping and padding amounts take every form Keras's Cropping/ZeroPadding layers take:
an int; ``N`` ints (symmetric per axis); ``N`` entries each an int or a ``(lo, hi)`` pair;
for ``N = 1``, Keras's 1-D ``(lo, hi)``. See :func:`kconv._args.int_pairs`.

The ``*_output_shape`` functions are the pure shape arithmetic the layers use too
(``None`` dims pass through), so ``compute_output_shape`` cannot disagree with ``apply``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from kconv import _args
from kconv.ops import lowering
from kconv.ops.convolution import _layout

__all__ = [
    "INTERPOLATIONS",
    "crop",
    "zero_pad",
    "upsample",
    "crop_output_shape",
    "zero_pad_output_shape",
    "upsample_output_shape",
]

Array = jax.Array
Shape = tuple[int | None, ...]

#: UpSampling2D's interpolations (Keras 3); all but ``nearest`` go through
#: ``jax.image.resize`` with half-pixel centres, as Keras 3 on JAX does.
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos3", "lanczos5")


class _Spatial:
    """The validated layout of one op call: rank, data format and the spatial axes."""

    def __init__(self, name: str, inputs: Any, rank: Any, data_format: Any):
        self.name = name
        self.x = x = _args.as_array(inputs, "inputs", name)
        self.data_format = _args.data_format(data_format, name)
        if rank is None:
            if x.ndim < 3:
                raise ValueError(f"{name}: expected an input of rank >= 3 (batch, spatial..., "
                                 f"channels), got shape {x.shape}; pass rank= for an "
                                 f"unbatched input")
            rank = x.ndim - 2
        self.rank = _args.positive_int(rank, "rank", name)
        if x.ndim < self.rank + 1:
            raise ValueError(
                f"{name}: expected an input of rank {self.rank + 2} "
                f"({_layout(self.rank, self.data_format)}) or {self.rank + 1} (unbatched), "
                f"got shape {x.shape}")
        self.axes = tuple(x.ndim + a for a in _args.spatial_axes(self.data_format, self.rank))
        self.spatial = tuple(x.shape[a] for a in self.axes)


def crop(
    inputs: Any, cropping: Any, data_format: str | None = None, *, rank: int | None = None,
    name: str = "kconv.ops.crop",
) -> Array:
    """Trims ``(lo, hi)`` elements off both ends of each spatial axis (Keras's Cropping).

    Args:
      inputs: ``(batch, *spatial, channels)`` or ``(batch, channels, *spatial)``; with
        ``rank``, also unbatched or with more leading batch dims.
      cropping: an int, ``N`` ints, or ``N`` entries each an int or a ``(lo, hi)`` pair
        (``(lo, hi)`` for ``N = 1``). Each axis must keep at least one element.
      data_format: ``"channels_last"``, ``"channels_first"`` or ``None`` (global default).
      rank: the number of spatial dims ``N``; default ``inputs.ndim - 2``.
      name: label used in error messages (the layers pass their class name).

    Returns:
      ``inputs[..., lo:n - hi, ...]`` on every spatial axis; same dtype.

    Raises:
      ValueError: at trace time, if the cropping leaves an axis empty (with the shapes).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.arange(6).reshape(1, 6, 1)
        >>> crop(x, (1, 2))[0, :, 0]
        Array([1, 2, 3], dtype=int32)
        >>> crop(jnp.ones((2, 8, 9, 3)), ((1, 2), 3)).shape
        (2, 5, 3, 3)
    """
    call = _Spatial(name, inputs, rank, data_format)
    pairs = _args.int_pairs(cropping, call.rank, "cropping", name)
    _check_cropping(name, call.x.shape, call.spatial, pairs, call.data_format)
    # lax.slice, not x[lo:n - hi]: its limits may be symbolic (jax.export's lengths).
    start, limit = [0] * call.x.ndim, list(call.x.shape)
    for axis, (lo, hi), length in zip(call.axes, pairs, call.spatial):
        start[axis], limit[axis] = lo, length - hi
    return lax.slice(call.x, start, limit)


def _check_cropping(name: str, shape: Sequence, spatial: Sequence, pairs: Sequence,
                    data_format: str) -> None:
    out = tuple(None if n is None else n - lo - hi for n, (lo, hi) in zip(spatial, pairs))
    if any(o is not None and _args.at_most(o, 0) for o in out):
        raise ValueError(
            f"{name}: cropping {tuple(pairs)} must leave at least one element on every "
            f"spatial axis; an input of shape {tuple(shape)} (data_format {data_format!r}, "
            f"spatial dims {tuple(spatial)}) would give spatial dims {out}")


def zero_pad(
    inputs: Any, padding: Any, data_format: str | None = None, *, rank: int | None = None,
    name: str = "kconv.ops.zero_pad",
) -> Array:
    """Adds ``(lo, hi)`` zeros at both ends of each spatial axis (Keras's ZeroPadding).

    Args:
      inputs: as :func:`crop`.
      padding: an int, ``N`` ints, or ``N`` entries each an int or a ``(lo, hi)`` pair
        (``(lo, hi)`` for ``N = 1``).
      data_format, rank, name: as :func:`crop`.

    Returns:
      The padded array (batch and channel axes untouched); same dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> zero_pad(jnp.ones((1, 2, 1)), (1, 2))[0, :, 0]
        Array([0., 1., 1., 0., 0.], dtype=float32)
        >>> zero_pad(jnp.ones((2, 3, 8, 8)), (1, (2, 0)), "channels_first").shape
        (2, 3, 10, 10)
    """
    call = _Spatial(name, inputs, rank, data_format)
    pairs = _args.int_pairs(padding, call.rank, "padding", name)
    widths = [(0, 0)] * call.x.ndim
    for axis, pair in zip(call.axes, pairs):
        widths[axis] = pair
    return jnp.pad(call.x, widths)


def upsample(
    inputs: Any, size: Any, data_format: str | None = None, interpolation: str = "nearest",
    *, rank: int | None = None, precision: Any = None, name: str = "kconv.ops.upsample",
) -> Array:
    """Upsamples each spatial axis by an integer factor (Keras's UpSampling).

    ``nearest`` repeats every element ``size`` times along its axis (``np.repeat``; exact,
    as Keras). The other interpolations resize with ``jax.image.resize`` to
    ``size * length`` per axis, half-pixel centres, no antialiasing — exactly what
    Keras 3's ``UpSampling2D`` computes on the JAX backend. Keras offers them for 2-D
    only; here they work for any ``N`` (``"bilinear"`` is then linear along every axis).

    Args:
      inputs: as :func:`crop`.
      size: a positive int or ``N`` positive ints, the factor per spatial axis.
      data_format, rank, name: as :func:`crop`.
      interpolation: one of ``"nearest"``, ``"bilinear"``, ``"bicubic"``, ``"lanczos3"``,
        ``"lanczos5"`` (any case).
      precision: ``jax.lax.Precision`` of the interpolation contractions; ``None`` means
        ``HIGHEST`` (``jax.image.resize``'s default, which Keras uses). The CPU lowering of
        ``bilinear`` (a stencil of exact elementwise products) computes at ``HIGHEST``,
        which is what XLA:CPU computes at every precision.

    Returns:
      The upsampled array, in the input's dtype. Integer inputs to a non-``nearest``
      interpolation are rounded and clipped to their dtype's range, bool ones resized as
      0/1 and clipped to [0, 1] (Keras's rule).

    Example:
        >>> import jax.numpy as jnp
        >>> upsample(jnp.arange(3.0).reshape(1, 3, 1), 2)[0, :, 0]
        Array([0., 0., 1., 1., 2., 2.], dtype=float32)
        >>> upsample(jnp.ones((2, 4, 5, 3)), (2, 3), interpolation="bilinear").shape
        (2, 8, 15, 3)
    """
    call = _Spatial(name, inputs, rank, data_format)
    factors = _args.int_tuple(size, call.rank, "size", name)
    interpolation = _args.string_choice(interpolation, "interpolation", name, INTERPOLATIONS)
    x = call.x
    if interpolation == "nearest":
        # An exact repeat (Keras uses ops.repeat too, not a nearest-neighbour resize).
        for axis, factor in zip(call.axes, factors):
            if factor != 1:
                x = jnp.repeat(x, factor, axis=axis)
        return x
    dtype = x.dtype
    if dtype == jnp.bool_:
        # Keras resizes a bool image as 0/1 floats and casts back clipped to [0, 1] (so
        # a negative overshoot is False); jax.image.resize itself refuses bool.
        x = x.astype(jnp.float32)
    shape = list(x.shape)
    for axis, factor in zip(call.axes, factors):
        shape[axis] *= factor
    # jax.image.resize only touches the axes whose length changes, so the batch and channel
    # axes (in either data format) pass through, as in Keras's channels_last-only call.
    # Keras passes antialias=False (it changes nothing when upsampling) and no precision,
    # so HIGHEST is its precision.
    def resize(x: Array) -> Array:
        return jax.image.resize(x, tuple(shape), method=interpolation, antialias=False,
                                precision=lax.Precision.HIGHEST if precision is None
                                else precision)

    # On XLA:CPU, bilinear becomes an equal fixed stencil (kconv.ops.lowering).
    spec = lowering.UpsampleSpec(interpolation=interpolation, input_shape=x.shape,
                                 axes=call.axes, factors=factors, dtype=x.dtype)
    return _saturate_cast(lowering.upsample(x, spec, resize), dtype)


def _saturate_cast(y: Array, dtype: Any) -> Array:
    """Back to the input's dtype as ``keras.ops.image.resize`` does: integer targets are
    rounded; values are clipped to the target range (nudged into it where the bound is not
    representable in ``y.dtype``, as ``keras.ops.saturate_cast``)."""
    dtype = np.dtype(dtype)
    if y.dtype == dtype:
        return y
    if jnp.issubdtype(dtype, jnp.integer):
        y = jnp.round(y)

    def limits(dt: np.dtype) -> tuple[Any, Any]:
        if dt == np.bool_:
            return 0, 1
        info = jnp.iinfo(dt) if jnp.issubdtype(dt, jnp.integer) else jnp.finfo(dt)
        return info.min, info.max

    in_dtype = np.dtype(y.dtype)
    (in_min, in_max), (out_min, out_max) = limits(in_dtype), limits(dtype)
    lo = np.asarray(np.maximum(in_min, out_min)).astype(in_dtype)
    if lo < out_min:
        lo = np.nextafter(lo, 0, dtype=in_dtype)
    hi = np.asarray(np.minimum(in_max, out_max)).astype(in_dtype)
    if hi > out_max:
        hi = np.nextafter(hi, 0, dtype=in_dtype)
    return jnp.clip(y, lo, hi).astype(dtype)


# --- output shapes -------------------------------------------------------------------

def _shape_rank(input_shape: Sequence, name: str) -> tuple[tuple, int]:
    shape = _args.spatial_shape(input_shape, name)
    return shape, len(shape) - 2


def _map_spatial(shape: tuple, data_format: str, fn: Any) -> Shape:
    rank = len(shape) - 2
    out = list(shape)
    for i, axis in enumerate(_args.spatial_axes(data_format, rank)):
        out[axis] = None if shape[axis] is None else fn(i, shape[axis])
    return tuple(out)


def crop_output_shape(
    input_shape: Sequence, cropping: Any, data_format: str | None = None, *,
    name: str = "kconv.ops.crop_output_shape",
) -> Shape:
    """Output shape of :func:`crop` (``N = len(input_shape) - 2``; ``None`` passes through).

    Raises ``ValueError`` if a known spatial dim would be cropped to nothing (as Keras).

    Example:
        >>> crop_output_shape((None, 10, None, 3), ((1, 2), 3))
        (None, 7, None, 3)
    """
    shape, rank = _shape_rank(input_shape, name)
    fmt = _args.data_format(data_format, name)
    pairs = _args.int_pairs(cropping, rank, "cropping", name)
    spatial = [shape[a] for a in _args.spatial_axes(fmt, rank)]
    _check_cropping(name, shape, spatial, pairs, fmt)
    return _map_spatial(shape, fmt, lambda i, n: n - sum(pairs[i]))


def zero_pad_output_shape(
    input_shape: Sequence, padding: Any, data_format: str | None = None, *,
    name: str = "kconv.ops.zero_pad_output_shape",
) -> Shape:
    """Output shape of :func:`zero_pad` (``None`` passes through).

    Example:
        >>> zero_pad_output_shape((8, 3, None, 5), (1, (2, 0)), "channels_first")
        (8, 3, None, 7)
    """
    shape, rank = _shape_rank(input_shape, name)
    fmt = _args.data_format(data_format, name)
    pairs = _args.int_pairs(padding, rank, "padding", name)
    return _map_spatial(shape, fmt, lambda i, n: n + sum(pairs[i]))


def upsample_output_shape(
    input_shape: Sequence, size: Any, data_format: str | None = None, *,
    name: str = "kconv.ops.upsample_output_shape",
) -> Shape:
    """Output shape of :func:`upsample` (``None`` passes through).

    Example:
        >>> upsample_output_shape((None, 4, None, 3), 2)
        (None, 8, None, 3)
    """
    shape, rank = _shape_rank(input_shape, name)
    fmt = _args.data_format(data_format, name)
    factors = _args.int_tuple(size, rank, "size", name)
    return _map_spatial(shape, fmt, lambda i, n: n * factors[i])
