"""The implementations each workload is timed with: kconv, lax, flax (linen), keras, torch.

Every builder takes the same :class:`Problem` (one workload at one shape and dtype, with the
reference weights in kconv's = Keras's layout, an input and a cotangent) and returns an
:class:`Impl`: the library's own weights (converted from the reference ones), the input in
the library's layout, the function to time, and the converters that bring its output and its
gradients back to the reference layout so that the harness can compare them with kconv's.

How each library is used — the code a user of that library writes:

* **kconv**: ``layer = kconv.Conv2D(**args)``, ``params = layer.init(key, shape)``,
  ``layer(params, x)``.
* **lax**: ``jax.lax.conv_general_dilated`` with the layer's dimension numbers (``NHWC`` /
  ``HWIO``, or ``NCHW`` for channels_first) and ``"SAME"``/``"VALID"`` (causal: explicit
  ``[(d·(k-1), 0)]``); depthwise / separable through ``feature_group_count`` (the Keras
  kernel reshaped to ``(*k, 1, C·dm)``, a free bitcast) and a 1×1 conv;
  transposed through ``jax.lax.conv_transpose(..., transpose_kernel=True)`` on the Keras
  kernel; upsampling ``jnp.repeat`` (nearest) or ``jax.image.resize`` (bilinear, bicubic).
* **flax**: ``flax.linen.Conv`` / ``ConvTranspose(transpose_kernel=True)`` (its kernel is then
  in Keras's ``(*k, out, in)`` layout); depthwise = ``Conv(feature_group_count=C)``; separable
  = depthwise ``Conv`` then a 1×1 ``Conv``; channels_first = transpose to NHWC and back
  (linen has no data_format). Linen has no upsampling layer: a linen user writes
  ``jnp.repeat`` / ``jax.image.resize`` — the lax column's code, timed again (it doubles as
  a noise check: lax and flax should then agree).
* **keras**: the real ``keras.layers.*`` layer, built, weights assigned by name, run as
  ``layer.stateless_call(trainable, non_trainable, x)`` inside ``jax.jit``.
* **torch**: the ``torch.nn`` module, NCHW tensors, eager. Keras's ``same``/``causal`` pads
  are placed exactly: symmetric pads go into the module's ``padding``; asymmetric ones
  (stride-2 ``same``: 0 before, 1 after; causal: all before) are an explicit ``F.pad``
  before a ``padding=0`` module. Transposed: ``ConvTranspose(padding=0)`` computes the full
  transposed convolution, the same numbers Keras gets before its output window is cut, and
  the harness crops Keras's window out of it (for W5, k=3, s=2, ``same``: the full output has
  33 rows, Keras's are rows 0…31; torch's own ``padding=1, output_padding=1`` would give 32
  rows shifted by one). Bilinear: ``nn.Upsample(mode="bilinear", align_corners=False)``
  (half-pixel centres, as Keras/JAX); nearest: ``nn.Upsample(mode="nearest")``. Bicubic is
  not compared (torch's cubic uses a = -0.75, JAX/Keras a = -0.5: different numbers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from bench_workloads import Workload, _tuple

__all__ = ["Problem", "Impl", "Unavailable", "BUILDERS", "make_problem"]


class Unavailable(Exception):
    """This implementation cannot run this workload (the message says why)."""


@dataclasses.dataclass
class Problem:
    workload: Workload
    shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    dtype: str                       # "float32" | "bfloat16"
    params: dict[str, np.ndarray]    # reference weights, float32, kconv/Keras layout
    x: np.ndarray                    # float32, the workload's data_format
    ct: np.ndarray                   # float32 cotangent, shape out_shape
    kconv_layer: Any = None
    jax_device: Any = None
    torch_device: str = "cpu"
    layers: list["Problem"] = dataclasses.field(default_factory=list)  # a model's, in order


@dataclasses.dataclass
class Impl:
    name: str
    backend: str                     # "jax" | "torch"
    weights: Any                     # jax: the pytree fn takes; torch: [(name, Parameter)]
    x: Any                           # the input in the library's layout and dtype
    ct: Any                          # the cotangent, likewise
    fn: Callable                     # jax: fn(weights, x) -> y; torch: fn(x) -> y
    out_to_ref: Callable[[Any], np.ndarray]
    grads_to_ref: Callable[[Any, Any], tuple[dict[str, np.ndarray], np.ndarray]]
    note: str = ""


# ---------------------------------------------------------------------------------------
# Problem

def make_problem(w: Workload, shape: tuple[int, ...], dtype: str, seed: int = 0) -> Problem:
    """Reference weights from kconv's own ``init`` (Keras's initializers), with the bias
    replaced by small random numbers so that the forward check covers it too.

    A model's problem holds one problem per layer (each on the shape the layer before it
    returns; weights named ``"<layer>.<weight>"``, layers counted from 1), its input the
    first layer's and its cotangent the last one's."""
    import jax
    import kconv

    from bench_workloads import output_shape

    if w.layers:
        layers, params, s = [], {}, tuple(shape)
        for i, lw in enumerate(w.layers, 1):
            layers.append(make_problem(lw, s, dtype, seed=seed + i))
            params.update({f"{i}.{k}": v for k, v in layers[-1].params.items()})
            s = layers[-1].out_shape
        return Problem(w, tuple(shape), s, dtype, params, layers[0].x, layers[-1].ct,
                       layers=layers)
    layer = getattr(kconv, w.layer)(**w.args)
    params = layer.init(jax.random.key(seed), shape)
    rng = np.random.default_rng(seed)
    params = {k: np.asarray(v, np.float32) for k, v in params.items()}
    if "bias" in params:
        params["bias"] = (0.1 * rng.standard_normal(params["bias"].shape)).astype(np.float32)
    x = rng.standard_normal(shape).astype(np.float32)
    out_shape = tuple(output_shape(w, shape))
    ct = rng.standard_normal(out_shape).astype(np.float32)
    return Problem(w, tuple(shape), out_shape, dtype, params, x, ct)


def _jnp_dtype(name: str):
    import jax.numpy as jnp
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


def _np(a: Any) -> np.ndarray:
    """Any array (JAX, numpy; bfloat16 too) → float64 numpy."""
    return np.asarray(np.asarray(a).astype(np.float32), np.float64)


def _jax_arrays(p: Problem, tree: Any) -> Any:
    import jax
    import jax.numpy as jnp
    dt = _jnp_dtype(p.dtype)
    return jax.tree.map(lambda a: jax.device_put(jnp.asarray(a, dt), p.jax_device), tree)


def _spatial_axes(w: Workload) -> list[int]:
    r = w.rank
    return list(range(2, 2 + r)) if w.channels_first else list(range(1, 1 + r))


# ---------------------------------------------------------------------------------------
# kconv

def build_kconv(p: Problem) -> Impl:
    import jax.numpy as jnp
    import kconv

    w = p.workload
    extra = {} if p.dtype == "float32" else {"dtype": jnp.bfloat16, "param_dtype": jnp.bfloat16}
    layer = getattr(kconv, w.layer)(**w.args, **extra)

    def fn(params, x):
        return layer(params, x)

    return Impl("kconv", "jax", _jax_arrays(p, dict(p.params)), _jax_arrays(p, p.x),
                _jax_arrays(p, p.ct), fn, _np,
                lambda gw, gx: ({k: _np(v) for k, v in gw.items()}, _np(gx)))


# ---------------------------------------------------------------------------------------
# lax

def _lax_dims(w: Workload) -> tuple[str, str, str]:
    sp = "DHW"[3 - w.rank:]
    lhs = "NC" + sp if w.channels_first else "N" + sp + "C"
    return lhs, sp + "IO", lhs


def _bias(y, b, w: Workload):
    if w.channels_first:
        return y + b.reshape((-1,) + (1,) * w.rank)
    return y + b


def _lax_padding(w: Workload):
    a = w.args
    pad = a.get("padding", "valid")
    if pad == "causal":
        k = _tuple(a["kernel_size"], w.rank)[0]
        d = _tuple(a.get("dilation_rate", 1), w.rank)[0]
        return [(d * (k - 1), 0)]
    return pad.upper()


def _upsample_fn(w: Workload) -> Callable:
    """The code a lax or linen user writes for UpSampling: repeat, or jax.image.resize."""
    import jax
    import jax.numpy as jnp

    size = _tuple(w.args.get("size", 2), w.rank)
    interp = w.args.get("interpolation", "nearest")
    axes = _spatial_axes(w)

    if interp == "nearest":
        def fn(params, x):
            for ax, f in zip(axes, size):
                x = jnp.repeat(x, f, axis=ax)
            return x
    else:
        def fn(params, x):
            shape = list(x.shape)
            for ax, f in zip(axes, size):
                shape[ax] *= f
            return jax.image.resize(x, tuple(shape), interp)
    return fn


def build_lax(p: Problem) -> Impl:
    from jax import lax

    w, a, r = p.workload, p.workload.args, p.workload.rank
    ident = lambda gw, gx: ({k: _np(v) for k, v in gw.items()}, _np(gx))  # noqa: E731
    if w.kind == "upsample":
        return Impl("lax", "jax", {}, _jax_arrays(p, p.x), _jax_arrays(p, p.ct),
                    _upsample_fn(w), _np, ident)
    if a.get("activation") is not None:
        raise Unavailable("activation not wired into the lax baseline")
    dn = _lax_dims(w)
    strides = _tuple(a.get("strides", 1), r)
    dil = _tuple(a.get("dilation_rate", 1), r)
    k = _tuple(a["kernel_size"], r)
    padding = _lax_padding(w)
    c_in = p.shape[1] if w.channels_first else p.shape[-1]

    if w.kind == "conv":
        groups = a.get("groups", 1)

        def fn(params, x):
            y = lax.conv_general_dilated(x, params["kernel"], strides, padding,
                                         rhs_dilation=dil, dimension_numbers=dn,
                                         feature_group_count=groups)
            return _bias(y, params["bias"], w) if "bias" in params else y
    elif w.kind == "depthwise":
        dm = a.get("depth_multiplier", 1)

        def fn(params, x):
            kern = params["kernel"].reshape(*k, 1, c_in * dm)
            y = lax.conv_general_dilated(x, kern, strides, padding, rhs_dilation=dil,
                                         dimension_numbers=dn, feature_group_count=c_in)
            return _bias(y, params["bias"], w) if "bias" in params else y
    elif w.kind == "separable":
        dm = a.get("depth_multiplier", 1)

        def fn(params, x):
            kern = params["depthwise_kernel"].reshape(*k, 1, c_in * dm)
            y = lax.conv_general_dilated(x, kern, strides, padding, rhs_dilation=dil,
                                         dimension_numbers=dn, feature_group_count=c_in)
            y = lax.conv_general_dilated(y, params["pointwise_kernel"], (1,) * r, "VALID",
                                         dimension_numbers=dn)
            return _bias(y, params["bias"], w) if "bias" in params else y
    elif w.kind == "conv_transpose":
        if a.get("output_padding") is not None:
            raise Unavailable("output_padding not expressible with lax.conv_transpose")

        def fn(params, x):
            y = lax.conv_transpose(x, params["kernel"], strides, padding, rhs_dilation=dil,
                                   dimension_numbers=dn, transpose_kernel=True)
            return _bias(y, params["bias"], w) if "bias" in params else y
    else:
        raise AssertionError(w.kind)
    return Impl("lax", "jax", _jax_arrays(p, dict(p.params)), _jax_arrays(p, p.x),
                _jax_arrays(p, p.ct), fn, _np, ident)


# ---------------------------------------------------------------------------------------
# flax.linen

def build_flax(p: Problem) -> Impl:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    w, a, r = p.workload, p.workload.args, p.workload.rank
    ident = lambda gw, gx: ({k: _np(v) for k, v in gw.items()}, _np(gx))  # noqa: E731
    if w.kind == "upsample":
        return Impl("flax", "jax", {}, _jax_arrays(p, p.x), _jax_arrays(p, p.ct),
                    _upsample_fn(w), _np, ident,
                    note="linen has no upsampling layer: jnp.repeat / jax.image.resize, "
                         "the lax code")
    dt = _jnp_dtype(p.dtype)
    common = dict(dtype=dt, param_dtype=dt)
    strides = _tuple(a.get("strides", 1), r)
    dil = _tuple(a.get("dilation_rate", 1), r)
    k = _tuple(a["kernel_size"], r)
    pad = a.get("padding", "valid").upper()
    use_bias = a.get("use_bias", True)
    c_in = p.shape[1] if w.channels_first else p.shape[-1]
    P = p.params
    note = ""

    if w.kind == "conv":
        mods = {"conv": nn.Conv(a["filters"], k, strides, pad, kernel_dilation=dil,
                                feature_group_count=a.get("groups", 1), use_bias=use_bias,
                                **common)}
        tree = {"conv": {"params": {n: P[n] for n in ("kernel", "bias") if n in P}}}
        back = lambda g: dict(g["conv"]["params"])  # noqa: E731
    elif w.kind == "depthwise":
        dm = a.get("depth_multiplier", 1)
        mods = {"conv": nn.Conv(c_in * dm, k, strides, pad, kernel_dilation=dil,
                                feature_group_count=c_in, use_bias=use_bias, **common)}
        tp = {"kernel": P["kernel"].reshape(*k, 1, c_in * dm)}
        if "bias" in P:
            tp["bias"] = P["bias"]
        tree = {"conv": {"params": tp}}

        def back(g):
            out = dict(g["conv"]["params"])
            out["kernel"] = out["kernel"].reshape(*k, c_in, dm)
            return out
    elif w.kind == "separable":
        dm = a.get("depth_multiplier", 1)
        mods = {"dw": nn.Conv(c_in * dm, k, strides, pad, kernel_dilation=dil,
                              feature_group_count=c_in, use_bias=False, **common),
                "pw": nn.Conv(a["filters"], (1,) * r, use_bias=use_bias, **common)}
        tree = {"dw": {"params": {"kernel": P["depthwise_kernel"].reshape(*k, 1, c_in * dm)}},
                "pw": {"params": {"kernel": P["pointwise_kernel"]}}}
        if "bias" in P:
            tree["pw"]["params"]["bias"] = P["bias"]

        def back(g):
            out = {"depthwise_kernel": g["dw"]["params"]["kernel"].reshape(*k, c_in, dm),
                   "pointwise_kernel": g["pw"]["params"]["kernel"]}
            if "bias" in g["pw"]["params"]:
                out["bias"] = g["pw"]["params"]["bias"]
            return out
    elif w.kind == "conv_transpose":
        if a.get("output_padding") is not None:
            raise Unavailable("output_padding not supported by nn.ConvTranspose")
        mods = {"conv": nn.ConvTranspose(a["filters"], k, strides, pad, kernel_dilation=dil,
                                         use_bias=use_bias, transpose_kernel=True, **common)}
        tree = {"conv": {"params": {n: P[n] for n in ("kernel", "bias") if n in P}}}
        back = lambda g: dict(g["conv"]["params"])  # noqa: E731
    else:
        raise AssertionError(w.kind)

    if w.channels_first:
        note = "linen has no data_format: transposed to channels_last and back"
        to_last = (0, *range(2, r + 2), 1)
        to_first = (0, r + 1, *range(1, r + 1))
    names = list(mods)

    def fn(params, x):
        if w.channels_first:
            x = jnp.transpose(x, to_last)
        for n in names:
            x = mods[n].apply(params[n], x)
        if w.channels_first:
            x = jnp.transpose(x, to_first)
        return x

    # The shapes the modules create must be the ones supplied.
    want = jax.tree.map(np.shape, tree)
    got = {}
    h = jax.ShapeDtypeStruct(tuple(p.shape[i] for i in to_last) if w.channels_first
                             else p.shape, dt)
    for n in names:
        v = jax.eval_shape(mods[n].init, jax.random.key(0), h)
        got[n] = jax.tree.map(lambda s: tuple(s.shape), v)
        h = jax.eval_shape(mods[n].apply, v, h)
    if got != want:
        raise AssertionError(f"flax param shapes {got} != supplied {want}")

    return Impl("flax", "jax", _jax_arrays(p, tree), _jax_arrays(p, p.x), _jax_arrays(p, p.ct),
                fn, _np, lambda gw, gx: ({k2: _np(v) for k2, v in back(gw).items()}, _np(gx)),
                note=note)


# ---------------------------------------------------------------------------------------
# keras

def build_keras(p: Problem) -> Impl:
    import jax
    import keras

    if keras.backend.backend() != "jax":
        raise Unavailable(f"keras backend is {keras.backend.backend()!r}, not jax")
    w = p.workload
    layer = getattr(keras.layers, w.layer)(**w.args, dtype=p.dtype)
    layer.build(p.shape)
    names = [v.name for v in layer.weights]
    if sorted(names) != sorted(p.params):
        raise AssertionError(f"keras weights {names} != kconv params {sorted(p.params)}")
    for v in layer.weights:
        v.assign(p.params[v.name].astype(v.dtype) if p.dtype == "float32"
                 else np.asarray(p.params[v.name]))
    trainable_names = [v.name for v in layer.trainable_variables]
    trainable = [jax.device_put(v.value, p.jax_device) for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def fn(tv, x):
        y, _ = layer.stateless_call(tv, non_trainable, x)
        return y

    return Impl("keras", "jax", trainable, _jax_arrays(p, p.x), _jax_arrays(p, p.ct), fn,
                _np, lambda gw, gx: ({n: _np(g) for n, g in zip(trainable_names, gw)},
                                     _np(gx)))


# ---------------------------------------------------------------------------------------
# torch

def _keras_pads(n: int, k: int, s: int, d: int, padding: str) -> tuple[int, int]:
    """(before, after) zero padding Keras applies to one axis of a convolution's input."""
    k_eff = d * (k - 1) + 1
    if padding == "valid":
        return 0, 0
    if padding == "causal":
        return k_eff - 1, 0
    out = -(-n // s)
    total = max((out - 1) * s + k_eff - n, 0)
    return total // 2, total - total // 2


def _keras_tconv_pads(k: int, s: int, d: int, padding: str,
                      output_padding: int | None) -> tuple[int, int]:
    """The (left, right) padding of the stride-dilated input that Keras's JAX backend uses
    for a transposed convolution (keras/src/backend/common/backend_utils.py)."""
    k_eff = (k - 1) * d + 1
    if padding == "valid":
        op = max(k_eff, s) - k_eff if output_padding is None else output_padding
        return k_eff - 1, k_eff - 1 + op
    pad_len = s + k_eff - 2 if output_padding is None else k_eff + k_eff % 2 - 2 + output_padding
    left = min(pad_len // 2 + pad_len % 2, k_eff - 1)
    return left, pad_len - left


def build_torch(p: Problem) -> Impl:
    import torch
    import torch.nn.functional as F
    from torch import nn

    w, a, r = p.workload, p.workload.args, p.workload.rank
    dev = p.torch_device
    tdt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[p.dtype]
    to_first = (0, r + 1, *range(1, r + 1))
    to_last = (0, *range(2, r + 2), 1)

    def tensor(a_np, perm=None):
        # A copy: torch must not share memory with the reference arrays.
        a_np = np.array(a_np if perm is None else np.transpose(a_np, perm), order="C")
        return torch.from_numpy(a_np).to(device=dev, dtype=tdt).contiguous()

    def io_perm():
        return None if w.channels_first else to_first

    def out_to_ref(y):
        y = y.detach().float().cpu().numpy()
        return np.asarray(y if w.channels_first else np.transpose(y, to_last), np.float64)

    # Kernel layouts: Keras (*k, a, b) <-> torch (b, a, *k) for conv, pointwise and
    # transposed kernels alike (torch's transposed weight is (in, out, *k) and Keras's
    # (*k, out, in)).
    k_to_t = (r + 1, r, *range(r))
    t_to_k = (*range(2, r + 2), 1, 0)
    c_in = p.shape[1] if w.channels_first else p.shape[-1]
    spatial = p.shape[2:] if w.channels_first else p.shape[1:-1]
    P = p.params
    mods: list[Any] = []
    pre_pad = None         # F.pad argument, or None
    crop = None            # slices of the output's spatial axes, or None
    note = ""
    # [(kconv name, torch Parameter, grad -> kconv layout)]
    weights: list[tuple[str, Any, Callable]] = []

    def param(t):
        return nn.Parameter(t)

    if w.kind == "upsample":
        interp = a.get("interpolation", "nearest")
        size = _tuple(a.get("size", 2), r)
        if interp == "nearest":
            mods.append(nn.Upsample(scale_factor=size, mode="nearest"))
        elif interp == "bilinear" and r == 2:
            mods.append(nn.Upsample(scale_factor=size, mode="bilinear", align_corners=False))
        else:
            raise Unavailable(f"torch's {interp} kernel differs from JAX/Keras "
                              "(cubic a=-0.75 vs -0.5): not the same computation")
    else:
        if a.get("activation") is not None:
            raise Unavailable("activation not wired into the torch baseline")
        strides = _tuple(a.get("strides", 1), r)
        dil = _tuple(a.get("dilation_rate", 1), r)
        k = _tuple(a["kernel_size"], r)
        padding = a.get("padding", "valid")
        Conv = getattr(nn, f"Conv{r}d")
        use_bias = a.get("use_bias", True)

        if w.kind in ("conv", "depthwise", "separable"):
            pads = [_keras_pads(n, ki, si, di, padding)
                    for n, ki, si, di in zip(spatial, k, strides, dil)]
            if all(lo == hi for lo, hi in pads):
                mod_pad = tuple(lo for lo, _ in pads)
            else:
                mod_pad = (0,) * r
                pre_pad = tuple(v for lo, hi in reversed(pads) for v in (lo, hi))
                note = "asymmetric Keras padding applied with F.pad"
            if w.kind == "conv":
                g = a.get("groups", 1)
                m = Conv(c_in, a["filters"], k, strides, mod_pad, dil, groups=g, bias=use_bias)
                m.weight = param(tensor(P["kernel"], k_to_t))
                weights.append(("kernel", m.weight,
                                lambda t: np.transpose(t, t_to_k)))
                if use_bias:
                    m.bias = param(tensor(P["bias"]))
                    weights.append(("bias", m.bias, lambda t: t))
                mods.append(m)
            else:
                dm = a.get("depth_multiplier", 1)
                kname = "kernel" if w.kind == "depthwise" else "depthwise_kernel"
                dw_bias = use_bias and w.kind == "depthwise"
                m = Conv(c_in, c_in * dm, k, strides, mod_pad, dil, groups=c_in, bias=dw_bias)
                # (*k, C, dm) -> (*k, C*dm) -> (C*dm, 1, *k)
                kk = P[kname].reshape(*k, c_in * dm)
                kk = np.transpose(kk, (r, *range(r)))[:, None]
                m.weight = param(tensor(np.ascontiguousarray(kk)))
                weights.append((kname, m.weight, lambda t, k=k, dm=dm: np.transpose(
                    t[:, 0], (*range(1, r + 1), 0)).reshape(*k, c_in, dm)))
                if dw_bias:
                    m.bias = param(tensor(P["bias"]))
                    weights.append(("bias", m.bias, lambda t: t))
                mods.append(m)
                if w.kind == "separable":
                    pw = Conv(c_in * dm, a["filters"], 1, bias=use_bias)
                    pw.weight = param(tensor(P["pointwise_kernel"], k_to_t))
                    weights.append(("pointwise_kernel", pw.weight,
                                    lambda t: np.transpose(t, t_to_k)))
                    if use_bias:
                        pw.bias = param(tensor(P["bias"]))
                        weights.append(("bias", pw.bias, lambda t: t))
                    mods.append(pw)
        elif w.kind == "conv_transpose":
            ConvT = getattr(nn, f"ConvTranspose{r}d")
            ops = _tuple(a["output_padding"], r) if a.get("output_padding") is not None \
                else (None,) * r
            torch_op, crop = [], []
            for n, ki, si, di, opi in zip(spatial, k, strides, dil, ops):
                k_eff = (ki - 1) * di + 1
                left, right = _keras_tconv_pads(ki, si, di, padding, opi)
                full = (n - 1) * si + k_eff             # torch padding=0, output_padding=0
                extra = max(right - (k_eff - 1), 0)     # Keras wants rows beyond torch's full
                lo = (k_eff - 1) - left
                length = (n - 1) * si + 1 + left + right - k_eff + 1
                torch_op.append(extra)
                crop.append(slice(lo, lo + length))
                assert lo >= 0 and lo + length <= full + extra, (lo, length, full, extra)
            m = ConvT(c_in, a["filters"], k, strides, 0, tuple(torch_op), bias=use_bias,
                      dilation=dil)
            m.weight = param(tensor(P["kernel"], k_to_t))
            weights.append(("kernel", m.weight, lambda t: np.transpose(t, t_to_k)))
            if use_bias:
                m.bias = param(tensor(P["bias"]))
                weights.append(("bias", m.bias, lambda t: t))
            mods.append(m)
            crop = tuple(crop)
            note = "ConvTranspose(padding=0) then Keras's output window cropped"
        else:
            raise AssertionError(w.kind)

    # The parameters were created on the device, in the dtype: no .to() needed.
    crop_idx = None if crop is None else (slice(None), slice(None), *crop)

    def fn(x):
        if pre_pad is not None:
            x = F.pad(x, pre_pad)
        for m in mods:
            x = m(x)
        if crop_idx is not None:
            x = x[crop_idx]
        return x

    def grads_to_ref(gw, gx):
        out: dict[str, np.ndarray] = {}
        for (name, _, back), g in zip(weights, gw):
            out[name] = np.asarray(back(g.detach().float().cpu().numpy()), np.float64)
        return out, out_to_ref(gx)

    x_t = tensor(p.x, io_perm())
    ct_t = tensor(p.ct, io_perm())
    return Impl("torch", "torch", weights, x_t, ct_t, fn, out_to_ref, grads_to_ref, note=note)


# ---------------------------------------------------------------------------------------
# models: each library's layers one after the other, a ReLU between each two

def _build_model(build: Callable[[Problem], Impl], p: Problem) -> Impl:
    """One library's model: its builder's layers composed, with the library's own ReLU
    (``jax.nn.relu``; torch's ``F.relu``) between each two. JAX libraries take the layers'
    weights as a tuple (one entry per layer); torch's weights are the layers' lists in
    order, their names prefixed with the layer's number like the reference's."""
    parts = []
    for sub in p.layers:
        sub.jax_device, sub.torch_device = p.jax_device, p.torch_device
        parts.append(build(sub))
    first, last = parts[0], parts[-1]
    notes = sorted({q.note for q in parts if q.note})

    if first.backend == "jax":
        import jax

        def fn(weights, x):
            for i, (q, wq) in enumerate(zip(parts, weights)):
                x = q.fn(wq, x)
                if i < len(parts) - 1:
                    x = jax.nn.relu(x)
            return x

        def per_part(gw):
            return list(gw)

        weights = tuple(q.weights for q in parts)
    else:
        import torch.nn.functional as F

        def fn(x):
            for i, q in enumerate(parts):
                x = q.fn(x)
                if i < len(parts) - 1:
                    x = F.relu(x)
            return x

        def per_part(gw):  # torch's flat list of gradients, split by layer
            gw, split = list(gw), []
            for q in parts:
                split.append(gw[:len(q.weights)])
                gw = gw[len(q.weights):]
            return split

        weights = [(f"{i}.{name}", t, back) for i, q in enumerate(parts, 1)
                   for name, t, back in q.weights]
    def grads_to_ref(gw, gx):
        """Every layer's weight gradients, named ``"<layer>.<weight>"``; the input's
        gradient in the first layer's layout."""
        grads = per_part(gw)
        out: dict[str, np.ndarray] = {}
        for i, (q, g) in enumerate(zip(parts, grads), 1):
            out.update({f"{i}.{k}": v for k, v in q.grads_to_ref(g, gx)[0].items()})
        return out, first.grads_to_ref(grads[0], gx)[1]

    return Impl(first.name, first.backend, weights, first.x, last.ct, fn, last.out_to_ref,
                grads_to_ref, note="; ".join(notes))


_LAYER_BUILDERS: dict[str, Callable[[Problem], Impl]] = {
    "kconv": build_kconv,
    "lax": build_lax,
    "flax": build_flax,
    "keras": build_keras,
    "torch": build_torch,
}


def _builder(build: Callable[[Problem], Impl]) -> Callable[[Problem], Impl]:
    def build_any(p: Problem) -> Impl:
        return _build_model(build, p) if p.layers else build(p)
    build_any.__name__ = build.__name__
    return build_any


BUILDERS: dict[str, Callable[[Problem], Impl]] = {
    name: _builder(build) for name, build in _LAYER_BUILDERS.items()}

