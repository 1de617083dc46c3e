"""The benchmark workloads (../shared/bench/WORKLOADS.md, W1–W9, plus extras X1–X6 and the
small models M1–M4) and their analytic FLOP counts.

A workload is a Keras layer class name, its constructor arguments (the same dict builds the
kconv layer and the Keras layer) and an input shape in the layer's own data format. A model
workload (``layer == "Sequential"``) is a stack of such layers with a ReLU between each two,
as a user composes them: every library runs its own layers one after the other in one
jitted program (torch: eagerly).
Nothing here imports JAX, so the FLOP counter can be checked by hand.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

__all__ = ["Workload", "WORKLOADS", "by_id", "forward_flops", "flops", "output_shape"]


@dataclasses.dataclass(frozen=True)
class Workload:
    id: str
    title: str
    layer: str                      # the Keras / kconv class name, e.g. "Conv2D"
    kwargs: tuple                   # constructor arguments, as sorted (name, value) pairs
    input_shape: tuple[int, ...]    # the full-size input, in the layer's data_format
    quick_shape: tuple[int, ...]    # a tiny input for --quick (the test)
    extra: bool = False             # not in WORKLOADS.md: added by the harness
    layers: tuple["Workload", ...] = ()  # a model's layers (``layer == "Sequential"``)

    @property
    def args(self) -> dict[str, Any]:
        return dict(self.kwargs)

    @property
    def kind(self) -> str:
        name = self.layer
        if self.layers:
            return "model"
        if name.startswith("UpSampling"):
            return "upsample"
        if name.startswith("Separable"):
            return "separable"
        if name.startswith("Depthwise"):
            return "depthwise"
        if name.endswith("Transpose"):
            return "conv_transpose"
        return "conv"

    @property
    def rank(self) -> int:
        if self.layers:
            return self.layers[0].rank
        return int(next(c for c in self.layer if c.isdigit()))

    @property
    def channels_first(self) -> bool:
        if self.layers:
            return self.layers[0].channels_first
        return self.args.get("data_format", "channels_last") == "channels_first"

    def shape(self, quick: bool = False, batch_scale: int = 1) -> tuple[int, ...]:
        s = list(self.quick_shape if quick else self.input_shape)
        s[0] *= batch_scale
        return tuple(s)


def _w(id, title, layer, input_shape, quick_shape, extra=False, **kwargs) -> Workload:
    # Every layer gets its data_format spelled out (where Keras has the argument), so that
    # neither kconv nor Keras reads a keras.json on this machine.
    if layer not in ("Conv1D", "Conv1DTranspose", "DepthwiseConv1D", "SeparableConv1D",
                     "UpSampling1D"):
        kwargs.setdefault("data_format", "channels_last")
    return Workload(id, title, layer, tuple(sorted(kwargs.items())), tuple(input_shape),
                    tuple(quick_shape), extra)


def _model(id, title, input_shape, quick_shape, *layers: tuple[str, dict]) -> Workload:
    """A stack of layers with a ReLU between each two (none after the last). Each layer's
    input shape follows from the one before it, so its own shapes are left empty."""
    stack = tuple(_w(f"{id}.{i + 1}", layer, layer, (), (), **kwargs)
                  for i, (layer, kwargs) in enumerate(layers))
    return Workload(id, title, "Sequential", (), tuple(input_shape), tuple(quick_shape),
                    extra=True, layers=stack)


WORKLOADS: tuple[Workload, ...] = (
    _w("W1", "Conv2D 3×3 same", "Conv2D", (16, 32, 32, 64), (2, 8, 8, 16),
       filters=64, kernel_size=3, strides=1, padding="same"),
    _w("W2", "Conv2D 3×3 stride 2 same", "Conv2D", (16, 32, 32, 64), (2, 8, 8, 16),
       filters=128, kernel_size=3, strides=2, padding="same"),
    _w("W3", "Conv2D 3×3 same, channels_first", "Conv2D", (16, 64, 32, 32), (2, 16, 8, 8),
       filters=64, kernel_size=3, strides=1, padding="same", data_format="channels_first"),
    _w("W4", "SeparableConv2D 3×3 same", "SeparableConv2D", (16, 32, 32, 64), (2, 8, 8, 16),
       filters=128, kernel_size=3, depth_multiplier=1, padding="same"),
    _w("W5", "Conv2DTranspose 3×3 stride 2 same", "Conv2DTranspose", (16, 16, 16, 64),
       (2, 4, 4, 16), filters=32, kernel_size=3, strides=2, padding="same"),
    _w("W6", "Conv1D k3 dilation 4 causal", "Conv1D", (8, 2048, 64), (2, 64, 16),
       filters=64, kernel_size=3, dilation_rate=4, padding="causal"),
    _w("W7", "Conv3D 3×3×3 same", "Conv3D", (2, 16, 16, 16, 16), (1, 4, 4, 4, 8),
       filters=32, kernel_size=3, padding="same"),
    _w("W8", "UpSampling2D ×2 bilinear", "UpSampling2D", (16, 32, 32, 64), (2, 8, 8, 16),
       size=2, interpolation="bilinear"),
    _w("W9", "UpSampling2D ×2 nearest", "UpSampling2D", (16, 32, 32, 64), (2, 8, 8, 16),
       size=2),
    # Extras (not in WORKLOADS.md).
    _w("X1", "DepthwiseConv2D 3×3 same", "DepthwiseConv2D", (16, 32, 32, 64), (2, 8, 8, 16),
       extra=True, kernel_size=3, depth_multiplier=1, padding="same"),
    _w("X2", "Conv3DTranspose 3×3×3 stride 2 same", "Conv3DTranspose", (2, 8, 8, 8, 32),
       (1, 3, 3, 3, 8), extra=True, filters=16, kernel_size=3, strides=2, padding="same"),
    _w("X3", "Conv1D k3 same", "Conv1D", (8, 2048, 64), (2, 64, 16), extra=True,
       filters=64, kernel_size=3, padding="same"),
    _w("X4", "Conv2D 1×1", "Conv2D", (16, 32, 32, 64), (2, 8, 8, 16), extra=True,
       filters=128, kernel_size=1),
    _w("X5", "UpSampling2D ×2 bicubic", "UpSampling2D", (16, 32, 32, 64), (2, 8, 8, 16),
       extra=True, size=2, interpolation="bicubic"),
    _w("X6", "Conv2D 3×3 same, groups 4", "Conv2D", (16, 32, 32, 64), (2, 8, 8, 16),
       extra=True, filters=64, kernel_size=3, padding="same", groups=4),
    # Small models (not in WORKLOADS.md): the layers in the company they keep in a training
    # step, where a library's forward activations are the next layer's saved inputs.
    _model("M1", "2-D encoder–decoder (5 layers)", (16, 32, 32, 3), (2, 8, 8, 3),
           ("Conv2D", dict(filters=32, kernel_size=3, padding="same")),
           ("Conv2D", dict(filters=64, kernel_size=3, strides=2, padding="same")),
           ("SeparableConv2D", dict(filters=64, kernel_size=3, padding="same")),
           ("Conv2DTranspose", dict(filters=32, kernel_size=3, strides=2, padding="same")),
           ("Conv2D", dict(filters=3, kernel_size=1))),
    _model("M2", "3-D encoder–decoder (4 layers)", (2, 16, 16, 16, 4), (1, 4, 4, 4, 2),
           ("Conv3D", dict(filters=16, kernel_size=3, padding="same")),
           ("Conv3D", dict(filters=32, kernel_size=3, strides=2, padding="same")),
           ("Conv3DTranspose", dict(filters=16, kernel_size=3, strides=2, padding="same")),
           ("Conv3D", dict(filters=1, kernel_size=1))),
    _model("M3", "1-D dilated causal stack (5 layers)", (8, 2048, 32), (2, 64, 8),
           *(("Conv1D", dict(filters=64, kernel_size=3, dilation_rate=d, padding="causal"))
             for d in (1, 2, 4, 8)),
           ("Conv1D", dict(filters=32, kernel_size=1))),
    # MobileNetV2's inverted residual block without its batch norms: the depthwise
    # layer's output reaches its own gradients through the ReLU's derivative.
    _model("M4", "2-D inverted residual (3 layers)", (16, 32, 32, 32), (2, 8, 8, 8),
           ("Conv2D", dict(filters=128, kernel_size=1)),
           ("DepthwiseConv2D", dict(kernel_size=3, padding="same")),
           ("Conv2D", dict(filters=32, kernel_size=1))),
)


def by_id(ids: str | None) -> list[Workload]:
    """``"W1,W4"`` → those workloads, in the order given; ``None``/``"all"`` → all;
    ``base`` → W1–W9, ``extra`` → the extras X1–X6, ``models`` → M1–M4."""
    if ids is None or ids.strip().lower() == "all":
        return list(WORKLOADS)
    table = {w.id: w for w in WORKLOADS}
    out = []
    for tok in ids.split(","):
        tok = tok.strip().upper()
        if not tok:
            continue
        if tok == "BASE":
            out += [w for w in WORKLOADS if not w.extra]
        elif tok == "EXTRA":
            out += [w for w in WORKLOADS if w.extra and not w.layers]
        elif tok == "MODELS":
            out += [w for w in WORKLOADS if w.layers]
        elif tok in table:
            out.append(table[tok])
        else:
            raise SystemExit(f"unknown workload {tok!r}; known: {', '.join(table)}, base, "
                             "extra, models")
    return out


# ---- shapes (an independent re-statement of Keras's rules, not kconv's code) ----

def _tuple(v: Any, n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * n


def _split(w: Workload, shape: tuple[int, ...]) -> tuple[int, tuple[int, ...], int]:
    """(batch, spatial dims, channels) of an input shape."""
    if w.channels_first:
        return shape[0], tuple(shape[2:]), shape[1]
    return shape[0], tuple(shape[1:-1]), shape[-1]


def _conv_len(n: int, k: int, s: int, d: int, padding: str) -> int:
    k_eff = d * (k - 1) + 1
    if padding == "valid":
        return (n - k_eff) // s + 1
    return -(-n // s)  # same, causal


def _tconv_len(n: int, k: int, s: int, d: int, padding: str) -> int:
    k_eff = d * (k - 1) + 1
    if padding == "valid":
        return (n - 1) * s + max(k_eff, s)
    return n * s


def spatial_out(w: Workload, spatial: tuple[int, ...]) -> tuple[int, ...]:
    a, r = w.args, w.rank
    if w.kind == "upsample":
        size = _tuple(a.get("size", 2), r)
        return tuple(n * f for n, f in zip(spatial, size))
    k = _tuple(a["kernel_size"], r)
    s = _tuple(a.get("strides", 1), r)
    d = _tuple(a.get("dilation_rate", 1), r)
    pad = a.get("padding", "valid")
    f = _tconv_len if w.kind == "conv_transpose" else _conv_len
    return tuple(f(n, ki, si, di, pad) for n, ki, si, di in zip(spatial, k, s, d))


def out_channels(w: Workload, c_in: int) -> int:
    a = w.args
    if w.kind == "upsample":
        return c_in
    if w.kind == "depthwise":
        return c_in * a.get("depth_multiplier", 1)
    return a["filters"]


def output_shape(w: Workload, shape: tuple[int, ...]) -> tuple[int, ...]:
    if w.layers:
        for layer in w.layers:
            shape = output_shape(layer, shape)
        return tuple(shape)
    n, sp, c = _split(w, shape)
    so, co = spatial_out(w, sp), out_channels(w, c)
    return (n, co, *so) if w.channels_first else (n, *so, co)


def forward_flops(w: Workload, shape: tuple[int, ...]) -> int | None:
    """2 × the multiply-adds of the forward pass (bias and activation not counted);
    ``None`` for the upsampling layers (memory-bound: no meaningful FLOP count).

    conv:        2 · N · prod(out spatial) · filters · prod(kernel) · C_in / groups
    depthwise:   2 · N · prod(out spatial) · C_in · depth_multiplier · prod(kernel)
    separable:   depthwise + 2 · N · prod(out spatial) · C_in · depth_multiplier · filters
    transposed:  2 · N · prod(IN spatial) · C_in · prod(kernel) · filters (each input
                 element meets the whole kernel once; the zeros of the dilated input and the
                 cropped border are not counted)
    model:       the sum of its layers' counts
    """
    if w.layers:                     # a model: its layers' counts, each on its own input
        total = []
        for layer in w.layers:
            total.append(forward_flops(layer, shape))
            shape = output_shape(layer, shape)
        counted = [f for f in total if f is not None]
        return sum(counted) if counted else None
    if w.kind == "upsample":
        return None
    a = w.args
    n, sp, c = _split(w, shape)
    kprod = math.prod(_tuple(a["kernel_size"], w.rank))
    out_sp = math.prod(spatial_out(w, sp))
    if w.kind == "conv":
        return 2 * n * out_sp * a["filters"] * kprod * (c // a.get("groups", 1))
    if w.kind == "depthwise":
        return 2 * n * out_sp * c * a.get("depth_multiplier", 1) * kprod
    if w.kind == "separable":
        dm = a.get("depth_multiplier", 1)
        return 2 * n * out_sp * c * dm * kprod + 2 * n * out_sp * c * dm * a["filters"]
    if w.kind == "conv_transpose":
        return 2 * n * math.prod(sp) * c * kprod * a["filters"]
    raise AssertionError(w.kind)


def flops(w: Workload, shape: tuple[int, ...], mode: str) -> int | None:
    """FLOPs of one call in ``mode``: the forward count, or 3× it for ``fwdbwd``.

    The 3× rule: the backward pass with both gradients is an input-gradient convolution
    and a weight-gradient convolution, each with the forward's multiply-add count.
    """
    f = forward_flops(w, shape)
    if f is None:
        return None
    return f if mode == "fwd" else 3 * f
