"""Pure output-shape and padding arithmetic for the convolution family (ints in, ints out).

These functions are what the ops and the layers use, so a layer's
``compute_output_shape`` can never disagree with what its ``apply`` returns. ``None``
dims (unknown batch or spatial sizes) pass through.

Conventions (Keras 3 / TF / XLA), for one spatial axis of length ``n``, kernel ``k``,
stride ``s`` and dilation ``d``, with ``k_eff = d * (k - 1) + 1``:

- ``valid``: no padding, ``floor((n - k_eff) / s) + 1`` outputs.
- ``same``: ``ceil(n / s)`` outputs; total padding ``max((out - 1) * s + k_eff - n, 0)``,
  the odd one at the end.
- ``causal``: ``d * (k - 1)`` on the left only, then ``valid`` (so ``n`` outputs at
  stride 1).
- explicit (beyond Keras): a ``(lo, hi)`` pair per axis (also written as an int for
  every side, or one int per axis). A transposed convolution crops them off its full
  output instead (PyTorch's ``ConvTranspose`` ``padding``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import jax

from kconv import _args

Padding = Union[str, Sequence[tuple[int, int]]]
Shape = tuple[Union[int, None], ...]

__all__ = [
    "conv_output_length",
    "conv_padding",
    "conv_transpose_output_length",
    "conv_transpose_padding",
    "conv_output_shape",
    "conv_transpose_output_shape",
    "depthwise_conv_output_shape",
    "separable_conv_output_shape",
]


def _axis(length: Any, kernel_size: Any, stride: Any, dilation: Any, where: str) -> None:
    """Refuses one axis's settings that no convolution has (a zero stride, a negative
    length), naming the function: these are public, and take what a user types."""
    for value, arg in ((kernel_size, "kernel_size"), (stride, "stride"),
                       (dilation, "dilation")):
        _args.positive_int(value, arg, where)
    if not (length is None or jax.export.is_symbolic_dim(length)
            or (_args.is_int(length) and length >= 0)):
        raise ValueError(f"{where}: length must be a non-negative int or None, got "
                         f"{length!r}")


def _axis_paddings(padding: Padding, n: int, name: str = "kconv.ops.shapes") -> tuple:
    """One padding spec per axis: the string, or that axis's explicit pair (the explicit
    forms of :func:`kconv._args.conv_padding`: an int, ``n`` ints or ``n`` pairs)."""
    if isinstance(padding, str):
        return (padding.lower(),) * n
    return _args.int_pairs(padding, n, "padding", name, bare_pair_1d=False)


def conv_padding(
    length: int | None, kernel_size: int, stride: int, padding: str | tuple[int, int],
    dilation: int = 1,
) -> tuple[int, int]:
    """The ``(lo, hi)`` padding of one spatial axis of a forward convolution.

    Args:
      length: input length; only needed for ``same`` with stride > 1.
      kernel_size, stride, dilation: of this axis.
      padding: ``"valid"``, ``"same"``, ``"causal"`` or an explicit ``(lo, hi)`` pair.

    Example:
        >>> conv_padding(4, 2, 1, "same")   # odd pad at the end, as TF/XLA
        (0, 1)
        >>> conv_padding(10, 3, 1, "causal", dilation=4)
        (8, 0)
    """
    _axis(length, kernel_size, stride, dilation, "kconv.ops.shapes.conv_padding")
    k_eff = dilation * (kernel_size - 1) + 1
    if not isinstance(padding, str):
        lo, hi = padding
        return int(lo), int(hi)
    if padding == "valid":
        return 0, 0
    if padding == "causal":
        return k_eff - 1, 0
    if padding == "same":
        if stride == 1:
            total = k_eff - 1
        elif length is None:
            raise ValueError("same padding with stride > 1 needs a known input length")
        else:
            out = -(-length // stride)
            # max_dim: max as well for a symbolic length (jax.export).
            total = jax.core.max_dim((out - 1) * stride + k_eff - length, 0)
        return total // 2, total - total // 2
    raise ValueError(f"kconv.ops.shapes: padding must be 'valid', 'same', 'causal' or a "
                     f"(lo, hi) pair, got {padding!r}")


def conv_output_length(
    length: int | None, kernel_size: int, stride: int, padding: str | tuple[int, int],
    dilation: int = 1,
) -> int | None:
    """Output length of one spatial axis of a forward convolution (``None`` passes through).

    Example:
        >>> conv_output_length(10, 3, 2, "valid")
        4
        >>> conv_output_length(10, 3, 2, "same")
        5
        >>> conv_output_length(None, 3, 2, "same") is None
        True
    """
    _axis(length, kernel_size, stride, dilation, "kconv.ops.shapes.conv_output_length")
    if length is None:
        return None
    k_eff = dilation * (kernel_size - 1) + 1
    if padding == "same":
        return -(-length // stride)
    lo, hi = conv_padding(length, kernel_size, stride, padding, dilation)
    padded = length + lo + hi
    if _args.at_most(padded, k_eff - 1):
        return 0
    return (padded - k_eff) // stride + 1


def conv_transpose_padding(
    kernel_size: int, stride: int, padding: str | tuple[int, int],
    output_padding: int | None, dilation: int = 1,
) -> tuple[int, int]:
    """``(lo, hi)`` padding of the stride-dilated input that gives Keras's transposed conv.

    A transposed convolution is computed as a stride-1 convolution of the input dilated
    by ``stride`` (``lhs_dilation``) with the spatially flipped kernel; this is the padding
    of that convolution. For ``"valid"`` and ``"same"`` it is Keras's rule
    (``keras/src/backend/common/backend_utils.py``,
    ``_convert_conv_transpose_padding_args_from_keras_to_jax``), which makes the result the
    vector-Jacobian product of the forward convolution with the same arguments.

    ``"causal"`` (1-D, beyond Keras) keeps the first ``n * s`` positions of the full
    output (``output_padding``, ``None``: 0, added at the end): everything beyond the
    input's reach is cropped on the right, so output ``t`` depends only on inputs
    ``0 … t // s`` — the causal transposed convolution of streaming audio models
    (EnCodec's ``SConvTranspose1d(causal=True)``). For ``k_eff >= s`` it is the explicit
    pair ``(0, k_eff - s)``.

    An explicit ``(lo, hi)`` pair (beyond Keras) is PyTorch's ``padding``: ``lo`` and
    ``hi`` are cropped off the two ends of the full output (``"valid"`` with
    ``output_padding=0``), ``output_padding`` (``None``: 0) added at the end — the VJP of
    the forward convolution padded by ``(lo, hi)``. Amounts above ``k_eff - 1`` give
    negative padding here, which crops.

    Example:
        >>> conv_transpose_padding(3, 2, "same", None)
        (2, 1)
        >>> conv_transpose_padding(3, 2, "valid", None)
        (2, 2)
        >>> conv_transpose_padding(4, 2, (1, 1), None)   # nn.ConvTranspose1d(k=4, s=2, p=1)
        (2, 2)
        >>> conv_transpose_padding(4, 2, "causal", None)
        (3, 1)
    """
    _axis(None, kernel_size, stride, dilation, "kconv.ops.shapes.conv_transpose_padding")
    if output_padding is not None and not (_args.is_int(output_padding)
                                           and output_padding >= 0):
        raise ValueError(f"kconv.ops.shapes.conv_transpose_padding: output_padding must be "
                         f"None or a non-negative int, got {output_padding!r}")
    k_eff = dilation * (kernel_size - 1) + 1
    if not isinstance(padding, str):
        lo, hi = padding
        op = 0 if output_padding is None else output_padding
        return k_eff - 1 - int(lo), k_eff - 1 - int(hi) + op
    if padding == "valid":
        op = max(k_eff, stride) - k_eff if output_padding is None else output_padding
        return k_eff - 1, k_eff - 1 + op
    if padding == "causal":
        return k_eff - 1, stride - 1 + (output_padding or 0)
    if padding == "same":
        if output_padding is None:
            pad_len = stride + k_eff - 2
        else:
            pad_len = k_eff + k_eff % 2 - 2 + output_padding
        lo = min(pad_len // 2 + pad_len % 2, k_eff - 1)
        return lo, pad_len - lo
    raise ValueError(f"transposed convolution padding must be 'valid', 'same', 'causal' or a "
                     f"(lo, hi) pair, got {padding!r}")


def conv_transpose_output_length(
    length: int | None, kernel_size: int, stride: int, padding: str | tuple[int, int],
    output_padding: int | None = None, dilation: int = 1,
) -> int | None:
    """Output length of one spatial axis of a transposed convolution (Keras's rule).

    ``valid``: ``(n - 1) * s + k_eff + op`` (``op = None`` means ``max(k_eff, s) - k_eff``);
    ``same``: ``n * s`` if ``op`` is ``None``, else ``(n - 1) * s + k_eff % 2 + op``;
    ``causal``: ``n * s + op`` (``op = None`` means 0); an explicit ``(lo, hi)`` pair (PyTorch's): ``(n - 1) * s + k_eff - lo - hi + op``
    (``op = None`` means 0). It may come out zero or negative for large amounts; the
    callers refuse that.

    Example:
        >>> conv_transpose_output_length(16, 3, 2, "same")
        32
        >>> conv_transpose_output_length(16, 3, 2, "valid")
        33
        >>> conv_transpose_output_length(16, 3, 2, "same", output_padding=0)
        31
        >>> conv_transpose_output_length(16, 4, 2, (1, 1))   # torch: (n - 1) * s - 2p + k
        32
    """
    _axis(length, kernel_size, stride, dilation,
          "kconv.ops.shapes.conv_transpose_output_length")
    if length is None:
        return None
    k_eff = dilation * (kernel_size - 1) + 1
    lo, hi = conv_transpose_padding(kernel_size, stride, padding, output_padding, dilation)
    return (length - 1) * stride + 1 + lo + hi - k_eff + 1


def _split(input_shape: Sequence, data_format: str, name: str) -> tuple[Any, Any, list]:
    shape = _args.spatial_shape(input_shape, name)
    if data_format == "channels_last":
        return shape[0], shape[-1], list(shape[1:-1])
    return shape[0], shape[1], list(shape[2:])


def _settings(input_shape: Sequence, kernel_size: Any, strides: Any, padding: Padding,
              data_format: Any, dilation_rate: Any, name: str) -> tuple:
    """The batch, channels and spatial dims of ``input_shape`` and the settings as the
    layers hold them (checked and canonicalized as their constructors do: these functions
    take what a user types): ``(batch, channels, spatial, fmt, ks, ss, ds, padding)``."""
    fmt = _args.data_format(data_format, name)
    batch, channels, spatial = _split(input_shape, fmt, name)
    n = len(spatial)
    ks = _args.int_tuple(kernel_size, n, "kernel_size", name)
    ss = _args.int_tuple(strides, n, "strides", name)
    ds = _args.int_tuple(dilation_rate, n, "dilation_rate", name)
    allowed = ("valid", "same", "causal") if n == 1 else ("valid", "same")
    padding = _args.conv_padding(padding, n, name, allowed)
    return batch, channels, spatial, fmt, ks, ss, ds, padding


def refused_output(spatial: Sequence, pads: Sequence, out: Sequence) -> bool:
    """Whether a forward convolution's spatial output is one Keras refuses: a length of 0
    or less on any axis, but for a ``"same"`` axis of an empty input (``ceil(0 / stride)
    = 0``: Keras returns the empty output, as lax computes it)."""
    return any(o is not None and _args.at_most(o, 0) and not (p == "same" and n == 0)
               for n, p, o in zip(spatial, pads, out))


def _join(batch: Any, channels: Any, spatial: Sequence, data_format: str) -> Shape:
    if data_format == "channels_last":
        return (batch, *spatial, channels)
    return (batch, channels, *spatial)


def _forward_spatial(
    input_shape: Sequence, spatial: list, ks: tuple, ss: tuple, padding: Padding,
    ds: tuple, name: str,
) -> list:
    pads = _axis_paddings(padding, len(spatial), name)
    out = [conv_output_length(*args) for args in zip(spatial, ks, ss, pads, ds)]
    if refused_output(spatial, pads, out):
        raise ValueError(
            f"{name}: the convolution output would be empty: input shape {tuple(input_shape)}, "
            f"kernel_size {ks}, strides {ss}, padding {padding!r}, dilation_rate {ds} "
            f"give spatial output {tuple(out)}"
        )
    return out


def conv_output_shape(
    input_shape: Sequence, filters: int, kernel_size: Any, strides: Any = 1,
    padding: Padding = "valid", data_format: str = "channels_last", dilation_rate: Any = 1,
    *, name: str = "kconv.ops.conv_output_shape",
) -> Shape:
    """Output shape of :func:`kconv.ops.conv`; rank from ``len(input_shape) - 2``; ``name``
    labels errors.

    Example:
        >>> conv_output_shape((None, 32, 32, 3), 16, 3, strides=2, padding="same")
        (None, 16, 16, 16)
        >>> conv_output_shape((None, 10, 10, 3), 4, 3, padding=((2, 0), 1))
        (None, 10, 10, 4)
        >>> conv_output_shape((8, 3, None, 10), 4, (3, 3), data_format="channels_first")
        (8, 4, None, 8)
    """
    batch, _, spatial, fmt, ks, ss, ds, padding = _settings(
        input_shape, kernel_size, strides, padding, data_format, dilation_rate, name)
    filters = _args.positive_int(filters, "filters", name)
    return _join(batch, filters, _forward_spatial(input_shape, spatial, ks, ss, padding, ds,
                                                  name), fmt)


def depthwise_conv_output_shape(
    input_shape: Sequence, kernel_size: Any, depth_multiplier: int = 1, strides: Any = 1,
    padding: Padding = "valid", data_format: str = "channels_last", dilation_rate: Any = 1,
    *, name: str = "kconv.ops.depthwise_conv_output_shape",
) -> Shape:
    """Output shape of :func:`kconv.ops.depthwise_conv` (``name`` labels errors).

    Example:
        >>> depthwise_conv_output_shape((2, 10, 10, 3), 3, depth_multiplier=2)
        (2, 8, 8, 6)
    """
    batch, channels, spatial, fmt, ks, ss, ds, padding = _settings(
        input_shape, kernel_size, strides, padding, data_format, dilation_rate, name)
    depth_multiplier = _args.positive_int(depth_multiplier, "depth_multiplier", name)
    out = _forward_spatial(input_shape, spatial, ks, ss, padding, ds, name)
    out_channels = None if channels is None else channels * depth_multiplier
    return _join(batch, out_channels, out, fmt)


def separable_conv_output_shape(
    input_shape: Sequence, filters: int, kernel_size: Any, strides: Any = 1,
    padding: Padding = "valid", data_format: str = "channels_last", dilation_rate: Any = 1,
    *, name: str = "kconv.ops.separable_conv_output_shape",
) -> Shape:
    """Output shape of :func:`kconv.ops.separable_conv` (same as a dense convolution's).

    Example:
        >>> separable_conv_output_shape((2, 10, 3), 5, 3, padding="same")
        (2, 10, 5)
    """
    return conv_output_shape(input_shape, filters, kernel_size, strides, padding,
                             data_format, dilation_rate, name=name)


def conv_transpose_output_shape(
    input_shape: Sequence, filters: int, kernel_size: Any, strides: Any = 1,
    padding: Padding = "valid", output_padding: Any = None,
    data_format: str = "channels_last", dilation_rate: Any = 1, *,
    name: str = "kconv.ops.conv_transpose_output_shape",
) -> Shape:
    """Output shape of :func:`kconv.ops.conv_transpose` (Keras's lengths; ``name`` labels
    errors).

    A length can be 0 with Keras's string paddings (``"same"``, an even kernel, one input
    position, ``output_padding=0``: ``k - 2 * (k // 2) = 0``): Keras's layer returns that
    empty output and its shape, and so do the op and this function. Explicit amounts that
    crop the whole output away raise, as PyTorch's ``ConvTranspose`` does.

    Example:
        >>> conv_transpose_output_shape((16, 16, 16, 64), 32, 3, strides=2, padding="same")
        (16, 32, 32, 32)
        >>> conv_transpose_output_shape((None, 5, 3), 2, 4, strides=3, output_padding=1)
        (None, 17, 2)
        >>> conv_transpose_output_shape((None, 8, 8, 3), 2, 4, strides=2, padding=1)
        (None, 16, 16, 2)
    """
    batch, _, spatial, fmt, ks, ss, ds, padding = _settings(
        input_shape, kernel_size, strides, padding, data_format, dilation_rate, name)
    filters = _args.positive_int(filters, "filters", name)
    n = len(spatial)
    ops_ = _args.output_padding(output_padding, n, ss, name, padding=padding, dilation=ds)
    ops_ = (None,) * n if ops_ is None else ops_
    pads = _axis_paddings(padding, n, name)
    out = [conv_transpose_output_length(length, k, s, p, op, d)
           for length, k, s, p, op, d in zip(spatial, ks, ss, pads, ops_, ds)]
    floor = 1 if not isinstance(padding, str) else 0
    if any(o is not None and o < floor for o in out):
        raise ValueError(
            f"{name}: the transposed convolution output would be empty: input shape "
            f"{tuple(input_shape)}, kernel_size {ks}, strides {ss}, padding {padding!r}, "
            f"dilation_rate {ds} give spatial output {tuple(out)}"
        )
    return _join(batch, filters, out, fmt)

