"""Independent float64 NumPy reference for Keras 3 convolution semantics.

This module deliberately depends on NumPy only (no jax / scipy / keras), so it
can serve as ground truth for ``kconv``.  Everything is written from the
mathematical definitions, looping over kernel taps; clarity beats speed.

Conventions (identical to Keras 3):

* ``x`` is ``(batch, *spatial, C)`` for ``channels_last`` and
  ``(batch, C, *spatial)`` for ``channels_first``.
* The number of spatial dims ``N`` is inferred from ``kernel.ndim - 2``.
* ``conv`` kernel: ``(*k, C_in // groups, filters)``.
* ``conv_transpose`` kernel: ``(*k, filters, C_in)`` (out before in).
* ``depthwise_conv`` kernel: ``(*k, C_in, depth_multiplier)``; output channel
  ``c * dm + m`` is input channel ``c`` convolved with ``kernel[..., c, m]``.
* ``separable_conv``: depthwise (strides / padding / dilation) followed by a
  pointwise ``(*(1,) * N, C_in * dm, filters)`` 1x1 convolution.

Padding for the forward convolution, per spatial axis, with
``k_eff = d * (k - 1) + 1``:

* ``"valid"``: no padding, ``out = floor((n - k_eff) / s) + 1``.
* ``"same"``: ``out = ceil(n / s)``; total pad
  ``max((out - 1) * s + k_eff - n, 0)``, ``lo = total // 2``, ``hi = total - lo``
  (odd padding goes at the END, as in TF / XLA).
* ``"causal"`` (N == 1 only): left pad ``k_eff - 1``, then valid.
* explicit: a sequence of N ``(lo, hi)`` int pairs (negative values crop).

Transposed convolution is implemented as the scatter definition
``full[i * s + j * d] += x[i] @ kernel[j].T`` (full length
``(n - 1) * s + k_eff``) followed by a window ``out[t] = full[t + c]`` (zero
outside ``full``) whose offset ``c`` and length ``L`` follow Keras's
``_convert_conv_transpose_padding_args_from_keras_to_jax``.
"""

from __future__ import annotations

import itertools
from typing import Optional, Sequence, Tuple, Union

import numpy as np

IntOrSeq = Union[int, Sequence[int]]

__all__ = [
    "conv",
    "conv_transpose",
    "depthwise_conv",
    "separable_conv",
    "conv_output_length",
    "conv_transpose_output_length",
    "conv_padding",
    "conv_transpose_window",
]


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------
def _tuple(value, n: int, name: str) -> Tuple[int, ...]:
    if isinstance(value, (int, np.integer)):
        return (int(value),) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ValueError(f"`{name}` must have {n} elements, got {value!r}")
    return value


def _check_data_format(data_format: str) -> str:
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(f"Invalid data_format: {data_format!r}")
    return data_format


def _to_last(x: np.ndarray, data_format: str) -> np.ndarray:
    if data_format == "channels_first":
        return np.moveaxis(x, 1, -1)
    return x


def _from_last(x: np.ndarray, data_format: str) -> np.ndarray:
    if data_format == "channels_first":
        return np.moveaxis(x, -1, 1)
    return x


def _effective(k: int, d: int) -> int:
    return d * (k - 1) + 1


def _is_explicit(padding) -> bool:
    return not isinstance(padding, str)


def _padding_pairs(padding, n_dims: int):
    pairs = tuple(tuple(int(v) for v in p) for p in padding)
    if len(pairs) != n_dims or any(len(p) != 2 for p in pairs):
        raise ValueError(
            f"Explicit padding must be {n_dims} (lo, hi) pairs, got {padding!r}"
        )
    return pairs


def _axis_padding(n: int, k: int, s: int, d: int, padding, n_dims: int = 1):
    """(lo, hi) padding of one axis for a string padding mode."""
    k_eff = _effective(k, d)
    p = padding.lower()
    if p == "valid":
        return 0, 0
    if p == "same":
        out = -(-n // s)
        total = max((out - 1) * s + k_eff - n, 0)
        return total // 2, total - total // 2
    if p == "causal":
        if n_dims != 1:
            raise ValueError("'causal' padding is only supported for 1-D conv")
        return k_eff - 1, 0
    raise ValueError(f"Invalid padding: {padding!r}")


def conv_padding(spatial, kernel_size, strides, padding, dilation_rate):
    """Per-axis (lo, hi) padding used by the forward convolution."""
    n_dims = len(spatial)
    ks = _tuple(kernel_size, n_dims, "kernel_size")
    ss = _tuple(strides, n_dims, "strides")
    ds = _tuple(dilation_rate, n_dims, "dilation_rate")
    if _is_explicit(padding):
        return _padding_pairs(padding, n_dims)
    return tuple(
        _axis_padding(n, k, s, d, padding, n_dims)
        for n, k, s, d in zip(spatial, ks, ss, ds)
    )


def conv_output_length(n: int, k: int, s: int = 1, padding="valid", d: int = 1):
    """Output length of one spatial axis of a forward convolution.

    ``padding`` may be "valid", "same", "causal" or an explicit (lo, hi) pair.
    Returns an int (may be <= 0 when the input is too small).
    """
    k_eff = _effective(k, d)
    if _is_explicit(padding):
        lo, hi = (int(v) for v in padding)
    else:
        lo, hi = _axis_padding(n, k, s, d, padding, 1)
    return (n + lo + hi - k_eff) // s + 1


def _transpose_axis(n, k, s, padding, output_padding, d):
    """Return (c, L): out[t] = full[t + c] for t in range(L).

    ``padding`` is "valid", "same" (Keras) or an explicit (lo, hi) pair (PyTorch's
    ConvTranspose padding: lo and hi cropped off the full output, output_padding None
    meaning 0, added at the end)."""
    k_eff = _effective(k, d)
    if _is_explicit(padding):
        lo, hi = (int(v) for v in padding)
        op = 0 if output_padding is None else output_padding
        return lo, (n - 1) * s + k_eff - lo - hi + op
    p = padding.lower()
    if p == "valid":
        op = max(k_eff, s) - k_eff if output_padding is None else output_padding
        left = k_eff - 1
        length = (n - 1) * s + k_eff + op
    elif p == "same":
        if output_padding is None:
            pad_len = s + k_eff - 2
            length = n * s
        else:
            pad_len = k_eff + k_eff % 2 - 2 + output_padding
            length = (n - 1) * s + k_eff % 2 + output_padding
        left = min(pad_len // 2 + pad_len % 2, k_eff - 1)
    else:
        raise ValueError(
            f"conv_transpose padding must be 'valid' or 'same', got {padding!r}"
        )
    return k_eff - 1 - left, length


def conv_transpose_window(spatial, kernel_size, strides, padding,
                          output_padding, dilation_rate):
    """Per-axis (offset c, output length L) for conv_transpose."""
    n_dims = len(spatial)
    ks = _tuple(kernel_size, n_dims, "kernel_size")
    ss = _tuple(strides, n_dims, "strides")
    ds = _tuple(dilation_rate, n_dims, "dilation_rate")
    if output_padding is None:
        ops = (None,) * n_dims
    else:
        ops = _tuple(output_padding, n_dims, "output_padding")
    pads = (_padding_pairs(padding, n_dims) if _is_explicit(padding)
            else (padding,) * n_dims)
    return tuple(
        _transpose_axis(n, k, s, p, op, d)
        for n, k, s, p, op, d in zip(spatial, ks, ss, pads, ops, ds)
    )


def conv_transpose_output_length(n: int, k: int, s: int = 1, padding="valid",
                                 output_padding: Optional[int] = None,
                                 d: int = 1) -> int:
    """Output length of one spatial axis of a Keras transposed convolution."""
    return _transpose_axis(n, k, s, padding, output_padding, d)[1]


def _gather_axis(a: np.ndarray, axis: int, idx: np.ndarray) -> np.ndarray:
    """a indexed with idx along axis; out-of-range indices give zeros."""
    size = a.shape[axis]
    valid = (idx >= 0) & (idx < size)
    out = np.take(a, np.clip(idx, 0, max(size - 1, 0)), axis=axis)
    shape = [1] * a.ndim
    shape[axis] = len(idx)
    return out * valid.reshape(shape)


# --------------------------------------------------------------------------
# forward convolution
# --------------------------------------------------------------------------
def conv(x, kernel, strides: IntOrSeq = 1, padding="valid",
         data_format: str = "channels_last", dilation_rate: IntOrSeq = 1,
         groups: int = 1) -> np.ndarray:
    """N-D (grouped) cross-correlation with Keras 3 semantics, float64."""
    _check_data_format(data_format)
    x = _to_last(np.asarray(x, dtype=np.float64), data_format)
    kernel = np.asarray(kernel, dtype=np.float64)
    n_dims = kernel.ndim - 2
    if n_dims not in (1, 2, 3) or x.ndim != n_dims + 2:
        raise ValueError(
            f"Rank mismatch: x.shape={x.shape}, kernel.shape={kernel.shape}"
        )
    ks = kernel.shape[:n_dims]
    c_in = x.shape[-1]
    cg, filters = kernel.shape[-2:]
    if groups < 1 or c_in % groups or filters % groups or c_in // groups != cg:
        raise ValueError(
            f"Incompatible channels: C_in={c_in}, groups={groups}, "
            f"kernel in-channels={cg}, filters={filters}"
        )
    ss = _tuple(strides, n_dims, "strides")
    ds = _tuple(dilation_rate, n_dims, "dilation_rate")
    spatial = x.shape[1:-1]
    pads = conv_padding(spatial, ks, ss, padding, ds)
    out_sizes = [
        (n + lo + hi - _effective(k, d)) // s + 1
        for n, k, s, d, (lo, hi) in zip(spatial, ks, ss, ds, pads)
    ]
    if any(o <= 0 for o in out_sizes):
        raise ValueError(f"Empty convolution output, sizes={out_sizes}")

    fg = filters // groups
    batch = x.shape[0]
    xg = x.reshape(x.shape[:-1] + (groups, cg))
    # kernel (*k, cg, F) -> (*k, G, cg, fg): filter index g * fg + f
    kg = np.moveaxis(kernel.reshape(ks + (cg, groups, fg)), -2, -3)
    out = np.zeros((batch, *out_sizes, groups, fg), dtype=np.float64)
    for taps in itertools.product(*(range(k) for k in ks)):
        patch = xg
        for ax, (j, s, d, (lo, _), o) in enumerate(
            zip(taps, ss, ds, pads, out_sizes)
        ):
            idx = np.arange(o) * s + j * d - lo
            patch = _gather_axis(patch, ax + 1, idx)
        out += np.einsum("...gc,gcf->...gf", patch, kg[taps])
    out = out.reshape(out.shape[:-2] + (filters,))
    return _from_last(out, data_format)


# --------------------------------------------------------------------------
# transposed convolution
# --------------------------------------------------------------------------
def conv_transpose(x, kernel, strides: IntOrSeq = 1, padding="valid",
                   output_padding=None, data_format: str = "channels_last",
                   dilation_rate: IntOrSeq = 1) -> np.ndarray:
    """N-D transposed convolution with Keras 3 (TF) semantics, float64."""
    _check_data_format(data_format)
    x = _to_last(np.asarray(x, dtype=np.float64), data_format)
    kernel = np.asarray(kernel, dtype=np.float64)
    n_dims = kernel.ndim - 2
    if n_dims not in (1, 2, 3) or x.ndim != n_dims + 2:
        raise ValueError(
            f"Rank mismatch: x.shape={x.shape}, kernel.shape={kernel.shape}"
        )
    ks = kernel.shape[:n_dims]
    filters, c_in = kernel.shape[-2:]
    if x.shape[-1] != c_in:
        raise ValueError(
            f"Input channels {x.shape[-1]} != kernel in-channels {c_in}"
        )
    ss = _tuple(strides, n_dims, "strides")
    ds = _tuple(dilation_rate, n_dims, "dilation_rate")
    spatial = x.shape[1:-1]
    windows = conv_transpose_window(spatial, ks, ss, padding, output_padding, ds)

    full_sizes = [
        (n - 1) * s + _effective(k, d) for n, k, s, d in zip(spatial, ks, ss, ds)
    ]
    full = np.zeros((x.shape[0], *full_sizes, filters), dtype=np.float64)
    for taps in itertools.product(*(range(k) for k in ks)):
        contrib = np.einsum("...c,fc->...f", x, kernel[taps])
        index = [slice(None)]
        for j, s, d, n in zip(taps, ss, ds, spatial):
            start = j * d
            index.append(slice(start, start + (n - 1) * s + 1, s))
        index.append(slice(None))
        full[tuple(index)] += contrib

    out = full
    for ax, (c, length) in enumerate(windows):
        out = _gather_axis(out, ax + 1, np.arange(length) + c)
    return _from_last(out, data_format)


# --------------------------------------------------------------------------
# depthwise / separable
# --------------------------------------------------------------------------
def depthwise_conv(x, kernel, strides: IntOrSeq = 1, padding="valid",
                   data_format: str = "channels_last",
                   dilation_rate: IntOrSeq = 1) -> np.ndarray:
    """Depthwise convolution; kernel (*k, C_in, depth_multiplier)."""
    kernel = np.asarray(kernel, dtype=np.float64)
    ks = kernel.shape[:-2]
    c_in, dm = kernel.shape[-2:]
    # A depthwise conv is a grouped conv with groups=C_in, one input channel
    # per group and dm filters per group, filter index c * dm + m.
    grouped = kernel.reshape(ks + (1, c_in * dm))
    return conv(x, grouped, strides=strides, padding=padding,
                data_format=data_format, dilation_rate=dilation_rate,
                groups=c_in)


def depthwise_conv_direct(x, kernel, strides: IntOrSeq = 1, padding="valid",
                          data_format: str = "channels_last",
                          dilation_rate: IntOrSeq = 1) -> np.ndarray:
    """Same as depthwise_conv, written per channel (cross-check helper)."""
    _check_data_format(data_format)
    xl = _to_last(np.asarray(x, dtype=np.float64), data_format)
    kernel = np.asarray(kernel, dtype=np.float64)
    c_in, dm = kernel.shape[-2:]
    outs = []
    for c in range(c_in):
        for m in range(dm):
            outs.append(conv(xl[..., c:c + 1], kernel[..., c:c + 1, m:m + 1],
                             strides=strides, padding=padding,
                             dilation_rate=dilation_rate))
    return _from_last(np.concatenate(outs, axis=-1), data_format)


def separable_conv(x, depthwise_kernel, pointwise_kernel,
                   strides: IntOrSeq = 1, padding="valid",
                   data_format: str = "channels_last",
                   dilation_rate: IntOrSeq = 1) -> np.ndarray:
    """Depthwise conv followed by a pointwise (1x1) conv."""
    pointwise_kernel = np.asarray(pointwise_kernel, dtype=np.float64)
    n_dims = np.ndim(depthwise_kernel) - 2
    if pointwise_kernel.shape[:n_dims] != (1,) * n_dims:
        raise ValueError(
            f"Pointwise kernel must be 1x1, got shape {pointwise_kernel.shape}"
        )
    y = depthwise_conv(x, depthwise_kernel, strides=strides, padding=padding,
                       data_format=data_format, dilation_rate=dilation_rate)
    return conv(y, pointwise_kernel, strides=1, padding="valid",
                data_format=data_format, dilation_rate=1)
