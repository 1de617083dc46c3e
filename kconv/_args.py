"""The one canonicalisation core: every argument of every tier is parsed here.

Each function takes the user's value, the argument's name and the label of whoever asks
(``"Conv2D"``, ``"kconv.ops.conv"``), and returns the canonical form, or raises a
``ValueError``/``TypeError`` that names all three, e.g.
``Conv2D: strides must be positive integers, got (2, 0)``.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from kconv import config

DATA_FORMATS = ("channels_last", "channels_first")
#: The convolutions' ``padding_mode`` values (PyTorch's names): what the padded border holds.
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def is_int(value: Any) -> bool:
    # bool is an int subclass; Keras users passing True for a size are making a mistake.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_symbolic(shape: Sequence[Any]) -> bool:
    """Whether ``shape`` holds a symbolic dim (``jax.export``'s shape polymorphism: a
    batch exported as ``"b"``, an image side as ``"h"``)."""
    return any(jax.export.is_symbolic_dim(d) for d in shape)


def at_most(size: Any, limit: Any) -> bool:
    """Whether ``size <= limit`` whatever the symbolic dims in them stand for: ``False``
    where that depends on them (an unbounded batch ``"b"`` is not known to be small; one
    exported with the constraint ``"b <= 8"`` may be)."""
    try:
        return bool(size <= limit)
    except jax.errors.InconclusiveDimensionOperation:
        return False


def int_tuple(
    value: Any, n: int, arg: str, where: str, *, minimum: int = 1, what: str | None = None
) -> tuple[int, ...]:
    """An int or a sequence of ``n`` ints, each ``>= minimum``, as a tuple of ``n`` ints.

    >>> int_tuple(3, 2, "kernel_size", "Conv2D")
    (3, 3)
    >>> int_tuple([1, 2], 2, "strides", "Conv2D")
    (1, 2)
    >>> int_tuple(np.array([3, 3]), 2, "kernel_size", "Conv2D")  # as Keras takes it
    (3, 3)
    """
    kind = what or ("positive integers" if minimum == 1 else f"integers >= {minimum}")
    value = _as_items(value)
    if is_int(value):
        items = (int(value),) * n
    elif isinstance(value, Sequence) and not isinstance(value, str):
        if not all(is_int(v) for v in value):
            raise TypeError(f"{where}: {arg} must be an int or a tuple of {n} ints, "
                            f"got {value!r}")
        if len(value) != n:
            raise ValueError(f"{where}: {arg} must be an int or a tuple of {n} ints, "
                             f"got {value!r}")
        items = tuple(int(v) for v in value)
    else:
        raise TypeError(f"{where}: {arg} must be an int or a tuple of {n} ints, got {value!r}")
    if any(v < minimum for v in items):
        raise ValueError(f"{where}: {arg} must be {kind}, got {value!r}")
    return items


def positive_int(value: Any, arg: str, where: str) -> int:
    """A single positive int.

    >>> positive_int(4, "filters", "Conv2D")
    4
    """
    if not is_int(value):
        raise TypeError(f"{where}: {arg} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{where}: {arg} must be a positive integer, got {value!r}")
    return int(value)


def padding_mode(value: Any, where: str, allowed: Sequence[str]) -> str:
    """A padding string in any case, stored lower case as Keras does.

    >>> padding_mode("SAME", "Conv2D", ("valid", "same"))
    'same'
    """
    if not isinstance(value, str):
        raise TypeError(f"{where}: padding must be one of {tuple(allowed)}, got {value!r}")
    lowered = value.lower()
    if lowered not in allowed:
        raise ValueError(f"{where}: padding must be one of {tuple(allowed)}, got {value!r}")
    return lowered


def data_format(value: Any, where: str) -> str:
    """``None`` resolves to :func:`kconv.config.image_data_format` now; strings in any case.

    >>> data_format("Channels_First", "Conv2D")
    'channels_first'
    """
    if value is None:
        return config.image_data_format()
    if not isinstance(value, str) or value.lower() not in DATA_FORMATS:
        raise ValueError(f"{where}: data_format must be one of {DATA_FORMATS}, got {value!r}")
    return value.lower()


def output_padding(
    value: Any, n: int, strides: tuple[int, ...], where: str, *,
    padding: str | tuple[tuple[int, int], ...] = "valid",
    dilation: tuple[int, ...] | None = None,
) -> tuple[int, ...] | None:
    """``None``, or ``n`` non-negative ints each strictly below the stride (as Keras).

    With explicit ``padding`` amounts (beyond Keras, PyTorch's ``ConvTranspose``), the
    bound is PyTorch's: each below ``max(stride, dilation)``.

    >>> output_padding(1, 2, (2, 2), "Conv2DTranspose")
    (1, 1)
    >>> output_padding(1, 1, (1,), "Conv1DTranspose", padding=((1, 1),), dilation=(2,))
    (1,)
    """
    if value is None:
        return None
    if isinstance(padding, str):
        dilation = None  # Keras's strings: below the stride
    pads = int_tuple(value, n, "output_padding", where, minimum=0)
    limits = strides if dilation is None else tuple(map(max, strides, dilation))
    for p, limit in zip(pads, limits):
        if p >= limit:
            bound = "strides" if dilation is None else "max(strides, dilation_rate)"
            also = "" if dilation is None else f", dilation_rate={dilation}"
            raise ValueError(
                f"{where}: output_padding must be smaller than {bound} on every axis, "
                f"got output_padding={value!r} with strides={strides}{also}"
            )
    return pads


def dtype(value: Any, arg: str, where: str) -> np.dtype | None:
    """``None`` or a floating dtype, as a hashable NumPy dtype.

    >>> dtype("bfloat16", "dtype", "Conv2D").name
    'bfloat16'
    """
    if value is None:
        return None
    import jax.numpy as jnp  # local: keeps this module importable without initialising jax

    try:
        resolved = jnp.dtype(value)
    except TypeError as e:
        raise TypeError(f"{where}: {arg} must be a dtype, got {value!r}") from e
    if not jnp.issubdtype(resolved, jnp.floating):
        raise ValueError(f"{where}: {arg} must be a floating dtype, got {value!r}")
    return resolved


def shape_dims(shape: Any, where: str) -> tuple[Any, ...]:
    """A shape as a tuple of its dims, each ``None`` (unknown), a non-negative int (NumPy
    ints as Python ones) or a symbolic dim (``jax.export``'s ``"b"``, ``"h - 2"``).

    >>> shape_dims([None, np.int64(8), 3], "Conv1D")
    (None, 8, 3)
    """
    what = f"{where}: input_shape must be a sequence of ints (None where unknown)"
    if hasattr(shape, "shape") and hasattr(shape, "dtype"):
        # An example input (Flax's init takes one) would otherwise be read row by row.
        raise TypeError(f"{what}, got an array ({type(shape).__name__}) of shape "
                        f"{tuple(shape.shape)}: "
                        f"pass its .shape")
    if isinstance(shape, (str, bytes, Mapping)) or not isinstance(shape, Iterable):
        raise TypeError(f"{what}, got {shape!r}")
    dims = tuple(shape)
    for d in dims:
        if isinstance(d, jax.core.Tracer):
            raise TypeError(
                f"{what}, got a traced value in {dims}: shapes are static, so under "
                f"jax.jit / jax.eval_shape close over the shape or mark it static "
                f"(static_argnums)")
        if not (d is None or is_int(d) or jax.export.is_symbolic_dim(d)):
            raise TypeError(f"{what}, got {d!r} in {dims}")
        if is_int(d) and d < 0:
            raise ValueError(f"{where}: input_shape dims must be non-negative (None where "
                             f"unknown), got {dims}")
    return tuple(int(d) if is_int(d) else d for d in dims)


def spatial_shape(shape: Any, where: str) -> tuple[Any, ...]:
    """A shape of rank >= 3, ``(batch, spatial..., channels)`` in either data format (see
    :func:`shape_dims`): what the ops' output-shape functions take, the rank unknown.

    >>> spatial_shape((None, 8, 3), "kconv.ops.conv_output_shape")
    (None, 8, 3)
    """
    dims = shape_dims(shape, where)
    if len(dims) < 3:
        raise ValueError(f"{where}: expected an input shape (batch, spatial..., channels) of "
                         f"rank >= 3, got {dims}")
    return dims


def input_shape(shape: Any, rank: int, where: str) -> tuple[Any, ...]:
    """A shape of rank ``rank + 2`` (see :func:`shape_dims`), as a tuple.

    >>> input_shape([None, 8, 3], 1, "Conv1D")
    (None, 8, 3)
    """
    dims = shape_dims(shape, where)
    if len(dims) != rank + 2:
        raise ValueError(
            f"{where}: expected an input_shape of rank {rank + 2} (batch, spatial..., "
            f"channels), got {dims}"
        )
    return dims


def channel_axis(fmt: str, rank: int) -> int:
    """The channel axis counted from the end, valid for any number of leading dims.

    >>> channel_axis("channels_first", 2)
    -3
    """
    return -1 if fmt == "channels_last" else -(rank + 1)


def spatial_axes(fmt: str, rank: int) -> tuple[int, ...]:
    """The spatial axes counted from the end.

    >>> spatial_axes("channels_last", 2)
    (-3, -2)
    """
    if fmt == "channels_last":
        return tuple(range(-rank - 1, -1))
    return tuple(range(-rank, 0))


def _as_items(value: Any) -> Any:
    """A NumPy array as nested lists (Keras takes any sized iterable); anything else as is."""
    return value.tolist() if isinstance(value, np.ndarray) else value


def int_pairs(value: Any, n: int, arg: str, where: str, *,
              bare_pair_1d: bool = True) -> tuple[tuple[int, int], ...]:
    """Keras's cropping/padding forms as ``n`` ``(lo, hi)`` pairs of non-negative ints.

    Accepted, as Keras's Cropping/ZeroPadding layers accept them: an int (the same on both
    sides of every axis); for ``n >= 2``, a sequence of ``n`` entries, each an int
    (symmetric on that axis) or a ``(lo, hi)`` pair, mixed freely; for ``n == 1``, Keras's
    1-D form ``(lo, hi)`` (so ``(1, 2)`` means lo=1, hi=2 there, not two axes), and also
    ``((lo, hi),)`` for code written over N. Dicts, strings, floats and bools are refused.

    With ``bare_pair_1d=False`` (the convolutions' explicit padding, written over N), the
    1-D forms are those of every rank — an int, ``(p,)`` or ``((lo, hi),)`` — and a bare
    ``(lo, hi)`` is refused as ambiguous (``N`` ints elsewhere mean symmetric per axis).

    >>> int_pairs(1, 2, "padding", "ZeroPadding2D")
    ((1, 1), (1, 1))
    >>> int_pairs((1, 2), 2, "padding", "ZeroPadding2D")
    ((1, 1), (2, 2))
    >>> int_pairs(((1, 2), 3), 2, "cropping", "Cropping2D")
    ((1, 2), (3, 3))
    >>> int_pairs((1, 2), 1, "cropping", "Cropping1D")
    ((1, 2),)
    """
    value = _as_items(value)
    if n == 1 and bare_pair_1d:
        forms = "an int or a (lo, hi) pair of ints"
    elif n == 1:
        forms = "an int, a tuple of 1 int, or a tuple of 1 (lo, hi) pair of ints"
    else:
        forms = f"an int, a tuple of {n} ints, or a tuple of {n} entries each an int or a " \
                f"(lo, hi) pair of ints"

    def bad_type() -> TypeError:
        return TypeError(f"{where}: {arg} must be {forms}, got {value!r}")

    def bad_value(why: str) -> ValueError:
        return ValueError(f"{where}: {arg} must be {forms}{why}, got {value!r}")

    def is_seq(v: Any) -> bool:
        return isinstance(v, Sequence) and not isinstance(v, str)

    if is_int(value):
        entries = [value] * n
    elif not is_seq(value):
        raise bad_type()
    elif n == 1 and not bare_pair_1d and len(value) == 2 and all(is_int(v) for v in value):
        raise ValueError(
            f"{where}: {arg}={value!r} is ambiguous for a 1-D convolution: write "
            f"(({value[0]}, {value[1]}),) for lo={value[0]}, hi={value[1]} (or an int / "
            f"(p,) for the same amount on both sides)")
    elif n == 1 and bare_pair_1d and not any(is_seq(_as_items(v)) for v in value):
        if not all(is_int(v) for v in value):
            raise bad_type()
        if len(value) != 2:
            raise bad_value("")
        entries = [tuple(value)]  # Keras's 1-D form: one (lo, hi) pair, unwrapped
    else:
        entries = list(value)
        if len(entries) != n:
            raise bad_value(f" ({len(entries)} entries instead of {n})")
    pairs = []
    for entry in entries:
        entry = _as_items(entry)
        if is_int(entry):
            pairs.append((int(entry), int(entry)))
        elif is_seq(entry) and all(is_int(v) for v in entry):
            if len(entry) != 2:
                raise bad_value(f" (an entry of {len(entry)} ints instead of a pair)")
            pairs.append((int(entry[0]), int(entry[1])))
        else:
            raise bad_type()
    if any(p < 0 for pair in pairs for p in pair):
        raise ValueError(f"{where}: {arg} must be non-negative integers, got {value!r}")
    return tuple(pairs)


def string_choice(value: Any, arg: str, where: str, allowed: Sequence[str]) -> str:
    """One of ``allowed``, in any case, stored lower case (as Keras lowers it).

    >>> string_choice("Bilinear", "interpolation", "UpSampling2D", ("nearest", "bilinear"))
    'bilinear'
    """
    if not isinstance(value, str):
        raise TypeError(f"{where}: {arg} must be one of {tuple(allowed)}, got {value!r}")
    lowered = value.lower()
    if lowered not in allowed:
        raise ValueError(f"{where}: {arg} must be one of {tuple(allowed)}, got {value!r}")
    return lowered


def conv_padding(value: Any, n: int, where: str, allowed: Sequence[str]
                 ) -> str | tuple[tuple[int, int], ...]:
    """A convolution's ``padding``: one of ``allowed`` (any case, stored lower case), or —
    beyond Keras — amounts as ``n`` ``(lo, hi)`` pairs: an int (every side), ``n`` ints
    (symmetric per axis) or ``n`` pairs (1-D: ``((lo, hi),)``; a bare ``(lo, hi)`` is
    refused as ambiguous, see :func:`int_pairs`). A forward convolution pads its input by
    them; a transposed one crops them off its output (PyTorch's ``padding``).

    >>> conv_padding("Same", 2, "Conv2D", ("valid", "same"))
    'same'
    >>> conv_padding((1, 2), 2, "Conv2D", ("valid", "same"))
    ((1, 1), (2, 2))
    >>> conv_padding(((2, 0),), 1, "Conv1D", ("valid", "same", "causal"))
    ((2, 0),)
    """
    if isinstance(value, str):
        return padding_mode(value, where, allowed)
    return int_pairs(value, n, "padding", where, bare_pair_1d=False)


def conv_padding_mode(value: Any, where: str, *, transposed: bool = False) -> str:
    """A convolution's ``padding_mode``: one of :data:`PADDING_MODES`, any case; only
    ``"zeros"`` for a transposed convolution.

    >>> conv_padding_mode("Reflect", "Conv2D")
    'reflect'
    """
    mode = string_choice(value, "padding_mode", where, PADDING_MODES)
    if transposed and mode != "zeros":
        # What a transposed convolution's padding crops off its output, not a border added
        # to its input, so there is nothing to reflect or wrap (PyTorch allows only zeros).
        raise ValueError(f"{where}: padding_mode must be 'zeros' for a transposed "
                         f"convolution (its padding crops the output; there is no input "
                         f"border to fill), got {value!r}")
    return mode


def precision(value: Any, where: str) -> Any:
    """A layer's ``precision`` as ``jax.lax`` takes it (checked by lax's own rule, in an
    abstract call: no arithmetic), a list made a tuple (the layers are hashable).

    >>> precision(["highest", "default"], "Conv2D")
    ('highest', 'default')
    """
    if value is None:
        return None
    if isinstance(value, list):
        value = tuple(value)
    import jax.numpy as jnp  # local: keeps this module importable without initialising jax

    try:
        hash(value)
        jax.eval_shape(lambda a: jax.lax.dot(a, a, precision=value),
                       jax.ShapeDtypeStruct((1,), jnp.float32))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{where}: precision must be None, a jax.lax.Precision or its name "
                         f"('default', 'high', 'highest'), a pair of them, or a "
                         f"jax.lax.DotAlgorithmPreset, got {value!r}") from e
    return value


def as_array(value: Any, arg: str, where: str) -> Any:
    """``value`` as a JAX array (``jnp.asarray``), or a TypeError naming ``where`` and
    ``arg`` for what JAX cannot make one of (a string, ``None``, an object array).

    >>> as_array([[1.0, 2.0]], "inputs", "Conv1D").shape
    (1, 2)
    """
    import jax.numpy as jnp  # local: keeps this module importable without initialising jax

    if isinstance(value, jax.ShapeDtypeStruct):
        raise TypeError(f"{where}: {arg} must be an array, got {value!r} (for shapes alone: "
                        f"jax.eval_shape)")
    try:
        return jnp.asarray(value)
    except (TypeError, ValueError) as e:
        if hasattr(value, "dtype") and hasattr(value, "shape"):
            text = f"of dtype {value.dtype} and shape {tuple(value.shape)}"
        else:
            text = repr(value)
            text = text if len(text) <= 80 else text[:77] + "..."
        raise TypeError(f"{where}: {arg} must be an array of numbers (or nested sequences "
                        f"of them), got {type(value).__name__} {text}") from e


def cast_floating(x: Any, dtype: Any, where: str = "kconv") -> Any:
    """``x`` as a JAX array, cast to ``dtype`` if both are floating (``None`` keeps it).

    The dtype rule of the layers without weights, as Keras's autocast: a floating input
    computes in the layer's dtype, an integer input passes through unchanged.

    >>> import numpy as np
    >>> cast_floating(np.ones(2, np.float32), np.dtype("float16")).dtype
    dtype('float16')
    >>> cast_floating(np.ones(2, np.int32), np.dtype("float16")).dtype
    dtype('int32')
    """
    import jax.numpy as jnp  # local: keeps this module importable without initialising jax

    x = as_array(x, "inputs", where)
    if dtype is not None and jnp.issubdtype(x.dtype, jnp.floating):
        return x.astype(dtype)
    return x
