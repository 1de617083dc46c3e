"""Layers and weights from PyTorch: :func:`layer_from_torch` builds the kconv layer of a
live torch module (its convolutions, zero padding and upsampling), :func:`params_from_torch`
turns the ``state_dict()`` of an ``nn.Conv1d/2d/3d`` or ``nn.ConvTranspose1d/2d/3d`` into
kconv params.

PyTorch is never imported: kconv does not depend on it. Tensors are recognised by their
``detach`` method and read with ``.detach().cpu().numpy()``; NumPy arrays (or anything
``np.asarray`` takes) work too, so saved weights convert on a machine without torch.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kconv import _args
from kconv.interop._padding import keras_padding
from kconv.interop.keras import KerasWeights
from kconv.layers.base import Layer
from kconv.layers.conv import Conv, Conv1D, Conv2D, Conv3D
from kconv.layers.conv_transpose import (
    Conv1DTranspose,
    Conv2DTranspose,
    Conv3DTranspose,
    ConvTranspose,
)
from kconv.layers.cropping import Cropping, Cropping1D, Cropping2D, Cropping3D
from kconv.layers.depthwise import DepthwiseConv
from kconv.layers.separable import SeparableConv
from kconv.layers.upsampling import UpSampling, UpSampling1D, UpSampling2D, UpSampling3D
from kconv.layers.zero_padding import (
    ZeroPadding,
    ZeroPadding1D,
    ZeroPadding2D,
    ZeroPadding3D,
)

__all__ = ["TorchLayers", "layer_from_torch", "layers_from_torch", "params_from_torch"]

_WHERE = "params_from_torch"
_SUPPORTED = ("Conv1D/2D/3D (from nn.Conv1d/2d/3d), Conv1D/2D/3DTranspose (from "
              "nn.ConvTranspose1d/2d/3d) and DepthwiseConv1D/2D (from nn.Conv1d/2d with "
              "groups == in_channels); the weightless ZeroPadding, Cropping and UpSampling "
              "layers take an empty state dict")
_WEIGHTLESS = (ZeroPadding, Cropping, UpSampling)
# Where a torch module keeps its weight in a state dict: as is, or as the factors of a
# reparametrization that the module multiplies out in its forward pass (the first key of
# each form has the weight's shape).
_WEIGHT_FORMS = {
    ("weight",): "the weight",
    ("weight_g", "weight_v"): "nn.utils.weight_norm",
    ("parametrizations.weight.original0", "parametrizations.weight.original1"):
        "nn.utils.parametrizations.weight_norm",
    ("weight_orig", "weight_u", "weight_v"): "nn.utils.spectral_norm",
    ("parametrizations.weight.original", "parametrizations.weight.0._u",
     "parametrizations.weight.0._v"): "nn.utils.parametrizations.spectral_norm",
}
_KEYS = {"bias", *(key for form in _WEIGHT_FORMS for key in form)}


def params_from_torch(layer: Layer, state_dict: Any, *, prefix: str = "",
                      in_channels: int | None = None,
                      groups: int | None = None) -> dict[str, jax.Array]:
    """The kconv params of ``layer`` from a PyTorch convolution's ``state_dict()``.

    Layouts (torch → kconv, which is Keras's layout):

    - ``nn.ConvNd`` → ``ConvND``: weight ``(out, in // groups, *k)`` → kernel
      ``(*k, in // groups, filters)``; ``groups`` carries over (``ConvND(groups=g)``).
    - ``nn.ConvTransposeNd`` → ``ConvNDTranspose``: weight ``(in, out // groups, *k)`` →
      kernel ``(*k, filters // groups, in)``, with no spatial flip: both libraries define
      the transposed convolution as the gradient of the forward one with the same kernel.
      ``groups`` carries over (``ConvNDTranspose(..., groups=g)``, beyond Keras); into a
      layer without groups, a grouped torch weight (pass ``groups=module.groups``) becomes
      the exactly equivalent dense kernel ``(*k, filters, in)``, block-diagonal with zeros
      between the groups: the same function at ``groups`` times the FLOPs.
    - ``nn.ConvNd`` with ``groups == in_channels`` and ``out_channels == in_channels *
      depth_multiplier`` → ``DepthwiseConvND``: weight ``(in * dm, 1, *k)`` → kernel
      ``(*k, in, dm)``. Torch's groups are contiguous output blocks, so torch output
      channel ``c * dm + m`` is kconv's: input channel ``c`` with ``kernel[..., c, m]``.
    - ``bias`` ``(out,)`` is kept as is (kconv's ``bias``); kernels do not depend on
      ``data_format``.
    - Reparametrized weights load as the weight the module computes from them in eval
      mode: weight norm (``nn.utils.weight_norm``'s ``weight_g`` / ``weight_v``, or
      ``nn.utils.parametrizations.weight_norm``'s ``parametrizations.weight.original0`` /
      ``original1``; the audio models' HiFi-GAN, EnCodec, DAC) as ``g * v / ||v||``, the
      norm over every axis but the one ``g`` keeps (any ``dim``, ``None`` too), and
      spectral norm (``weight_orig`` / ``weight_u`` / ``weight_v``, or
      ``parametrizations.weight.original`` / ``parametrizations.weight.0._u`` / ``._v``)
      as ``weight / (u . W v)`` with the stored vectors (``W`` the weight along ``dim``,
      the axis as long as ``u``; where two axes are, torch's default: 1 for a transposed
      convolution, else 0). A module in training mode runs one more power iteration
      first: call ``module.eval()`` to compare.

    For ``kconv.linen`` / ``kconv.nnx`` models, convert with the pure layer of the same
    arguments: the Flax wrappers use the same names and shapes.

    Padding conventions. The weights convert exactly; whether the *layers* then compute
    the same function depends on padding, where the libraries differ. With
    ``k_eff = d * (k - 1) + 1`` per axis (kernel size ``k``, dilation ``d``, stride ``s``):

    - Forward ``valid`` is torch ``padding=0``.
    - Forward ``same`` pads ``P = max((ceil(n / s) - 1) * s + k_eff - n, 0)`` in total,
      ``P // 2`` in front and the rest (the odd one) at the END (TF/XLA); torch's integer
      ``padding=p`` pads ``p`` on both sides. At stride 1, ``P = k_eff - 1``: for odd
      ``k_eff`` this is torch ``padding=d * (k - 1) // 2``; for any ``k_eff`` it is torch
      ``padding="same"`` (which also puts the extra pad at the end). Strided, ``P``
      depends on the input length ``n``, and ``same`` equals torch ``padding=P // 2`` only
      when ``P`` is even (``k=3, s=2``: odd ``n``); otherwise Keras pads
      ``(P // 2, P // 2 + 1)`` and no torch integer padding computes the same windows
      (torch rejects ``padding="same"`` with strides). To run a torch conv's exact
      padding, build the kconv layer with
      ``padding=p`` (an int, or N ints: symmetric per axis, beyond Keras).
    - ``causal`` (1-D) pads ``d * (k - 1)`` on the left, then ``valid``; in torch pad by
      hand (``F.pad(x, (d * (k - 1), 0))``) with ``padding=0``.
    - ``padding_mode``: kconv's has torch's names and meanings (``"zeros"``,
      ``"reflect"``, ``"replicate"``, ``"circular"``); with ``padding=p`` it is torch's.
    - Transposed: torch's output length is ``(n - 1) * s - 2 * p + k_eff + output_padding``
      and its output starts ``p`` positions into the full (uncropped) result. Keras
      ``valid`` is ``(n - 1) * s + k_eff + op`` from position 0: torch ``padding=0,
      output_padding=op`` (``op=None`` means ``max(k_eff, s) - k_eff``). Keras ``same``
      (``op=None``) is ``n * s`` long: torch ``padding=(k_eff - s) // 2,
      output_padding=0`` when ``k_eff - s`` is even and ``>= 0`` (``k=4, s=2``: ``p=1``;
      ``k=3, s=1``: ``p=1``), torch ``padding=0, output_padding=s - k_eff`` when
      ``k_eff <= s``, and nothing when ``k_eff - s`` is odd and positive: for
      ``k=3, s=2`` Keras keeps full positions ``0 .. 2n - 1`` while the usual torch
      ``padding=1, output_padding=1`` keeps ``1 .. 2n``, the same length shifted by one.
      Keras ``same`` with ``output_padding=0`` is torch ``padding=k_eff // 2,
      output_padding=0`` (``k=3, s=2``: ``p=1``, length ``2n - 1``). Any torch setting
      runs exactly when the kconv layer is built with torch's own amounts (beyond Keras):
      ``ConvNDTranspose(..., padding=p, output_padding=op)`` crops ``p`` off both ends
      of the full output like torch, with torch's ``output_padding`` rule (``None`` means
      0; below ``max(s, d)``, where Keras's string paddings want it below ``s``).

    channels_first: torch is channels-first; a kconv layer with
    ``data_format="channels_first"`` takes torch-layout inputs (and gives torch-layout
    outputs) directly.

    Args:
      layer: a pure-tier kconv layer: ``Conv1D/2D/3D``, ``Conv1D/2D/3DTranspose``,
        ``DepthwiseConv1D/2D`` (or a weightless one). Its ``kernel_size``, ``filters`` (or
        ``depth_multiplier``), ``groups`` and ``use_bias`` are checked against the weights.
      state_dict: ``module.state_dict()`` (or the module itself): ``weight`` (or its
        weight-norm or spectral-norm factors, or ``torch.nn.utils.prune``'s original and
        mask) and, when the module has a bias, ``bias``, as torch tensors or NumPy arrays.
        A module whose weights are reparametrized gives the weight and bias its forward
        computes in eval mode, read from the module: a parametrization of its own
        (``torch.nn.utils.parametrize``: ``orthogonal``, a user's, a chain of several),
        which no state dict describes, and spectral norm along another axis than torch's
        default, which a state dict does not record, included. A weightless layer
        (``ZeroPadding``, ``Cropping``, ``UpSampling``: what :func:`layer_from_torch` makes
        of torch's padding and upsampling modules) takes their empty state dict and gives
        ``{}``.
      prefix: keyword-only; the keys' common prefix, e.g. ``"conv."`` or ``"features.0."``
        (a missing final ``"."`` is added). Keys outside it are ignored, so a whole model's
        state dict can be passed; keys under it other than ``weight``/``bias`` raise.
      in_channels: keyword-only, optional: the torch module's ``in_channels``, checked.
      groups: keyword-only, optional: the torch module's ``groups`` (it is not in a state
        dict). Checked for ``ConvND`` and a grouped ``ConvNDTranspose`` (against
        ``layer.groups``) and ``DepthwiseConvND`` (must be the input channel count);
        required for a grouped ``nn.ConvTransposeNd`` loaded into a layer without groups.

    Returns:
      ``{"kernel": ..., "bias": ...}`` (no ``bias`` when ``use_bias=False``), with kconv's
      shapes, as ``jax.Array`` in ``layer.param_dtype`` (copies: torch's later in-place
      updates, an optimizer's step, do not reach them); ``{}`` for a weightless layer.

    Raises:
      TypeError: ``layer`` is not a supported kconv layer, ``state_dict`` is neither a
        mapping nor a module, or a value is not numeric.
      ValueError: a missing ``weight`` (or a factor of it), unknown keys, factors whose
        shapes do not fit each other, a ``bias`` the layer does not have
        (or lacks), or shapes that do not fit the layer (rank, kernel size, filters,
        channels, groups); the message names the key and both shapes. Any key under
        ``prefix`` for a weightless layer.

    Example:
        >>> import numpy as np, kconv
        >>> from kconv.interop.torch import params_from_torch
        >>> state = {"conv.weight": np.ones((16, 3, 5, 5)),   # nn.Conv2d(3, 16, 5)
        ...          "conv.bias": np.zeros(16)}
        >>> params = params_from_torch(kconv.Conv2D(16, 5), state, prefix="conv.")
        >>> {name: p.shape for name, p in params.items()}
        {'kernel': (5, 5, 3, 16), 'bias': (16,)}
        >>> # = nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1,
        >>> #                      bias=False), with torch's padding amounts
        >>> up = kconv.Conv2DTranspose(8, 3, strides=2, padding=1, output_padding=1,
        ...                            use_bias=False)
        >>> params_from_torch(up, {"weight": np.ones((16, 8, 3, 3))})["kernel"].shape
        (3, 3, 8, 16)
        >>> # = nn.Conv1d(4, 8, 3, groups=4, bias=False)
        >>> dw = kconv.DepthwiseConv1D(3, depth_multiplier=2, use_bias=False)
        >>> params_from_torch(dw, {"weight": np.ones((8, 1, 3))}, groups=4)["kernel"].shape
        (3, 4, 2)
        >>> # = nn.utils.weight_norm(nn.Conv1d(1, 2, 2, bias=False)): g * v / ||v||
        >>> norm = {"weight_g": np.array([[[1.0]], [[2.0]]]),
        ...         "weight_v": np.array([[[3.0, 4.0]], [[1.0, 0.0]]])}
        >>> params_from_torch(kconv.Conv1D(2, 2, use_bias=False), norm)["kernel"][:, 0, :]
        Array([[0.6, 2. ],
               [0.8, 0. ]], dtype=float32)
    """
    state_dict = _as_mapping(layer, state_dict, prefix)
    if isinstance(layer, _WEIGHTLESS):
        return _no_weights(layer, state_dict, prefix)
    family = _family(layer)
    state = _select(layer, state_dict, prefix)
    wkey, weight = _weight(layer, family, state, _norm_prefix(prefix))
    bkey = _norm_prefix(prefix) + "bias"  # keys as the user sees them
    if weight.ndim != layer.rank + 2:
        raise ValueError(
            f"{_WHERE}: {_describe(layer)}: {wkey!r} has shape {weight.shape} "
            f"(rank {weight.ndim}); a torch {_torch_name(family, layer.rank)} weight has rank "
            f"{layer.rank + 2}: expected {_expected(layer, family)}")
    if tuple(weight.shape[2:]) != layer.kernel_size:
        raise ValueError(
            f"{_WHERE}: {_describe(layer)}: {wkey!r} has shape {weight.shape}, "
            f"kernel size {tuple(weight.shape[2:])}, but the layer has kernel_size "
            f"{layer.kernel_size}: expected {_expected(layer, family)}")
    groups = _check_int(groups, "groups", layer)
    in_channels = _check_int(in_channels, "in_channels", layer)
    if family is Conv:
        kernel, out = _conv_kernel(layer, weight, wkey, in_channels, groups)
    elif family is ConvTranspose:
        kernel, out = _transpose_kernel(layer, weight, wkey, in_channels, groups)
    else:
        kernel, out = _depthwise_kernel(layer, weight, wkey, in_channels, groups)
    # Copies (jnp.array): on the CPU jnp.asarray may alias a NumPy buffer, and a torch
    # tensor's .numpy() is the tensor's own memory: torch's in-place updates (an optimizer's
    # step) would change the params kconv returned.
    params = {"kernel": jnp.array(kernel, layer.param_dtype, copy=True)}
    if "bias" in state:
        bias = _read(layer, state["bias"], bkey)
        if bias.shape != (out,):
            raise ValueError(
                f"{_WHERE}: {_describe(layer)}: {bkey!r} has shape {bias.shape}, "
                f"expected ({out},) for {wkey!r} of shape {weight.shape}")
        params["bias"] = jnp.array(bias, layer.param_dtype, copy=True)
    return params


# --- the three layouts -----------------------------------------------------------------

def _spatial_first(w: np.ndarray) -> np.ndarray:
    """``(a, b, *k)`` → ``(*k, b, a)``: torch's channel axes after the spatial ones."""
    n = w.ndim - 2
    return np.transpose(w, tuple(range(2, n + 2)) + (1, 0))


def _conv_kernel(layer: Conv, w: np.ndarray, key: str, in_channels: int | None,
                 groups: int | None) -> tuple[np.ndarray, int]:
    out, in_per_group = w.shape[:2]
    if groups is not None and groups != layer.groups:
        raise ValueError(
            f"{_WHERE}: {_describe(layer)}: the torch module has groups={groups} but the "
            f"layer has groups={layer.groups} ({key!r} has shape {w.shape}); build the "
            f"layer with groups={groups}")
    if out != layer.filters:
        raise ValueError(
            f"{_WHERE}: {_describe(layer)}: {key!r} has shape {w.shape}, out_channels "
            f"{out}, but the layer has filters={layer.filters}: expected "
            f"{_expected(layer, Conv)}")
    if in_channels is not None and in_channels != in_per_group * layer.groups:
        raise ValueError(
            f"{_WHERE}: {_describe(layer)}: in_channels={in_channels} does not match "
            f"{key!r} of shape {w.shape}: in_channels // groups = {in_per_group} with "
            f"groups={layer.groups} means {in_per_group * layer.groups} input channels")
    # (out, in // g, *k) -> (*k, in // g, out): both libraries split the input and the
    # output channels into contiguous group blocks, so groups need no reordering.
    return _spatial_first(w), out


def _transpose_kernel(layer: ConvTranspose, w: np.ndarray, key: str,
                      in_channels: int | None, groups: int | None) -> tuple[np.ndarray, int]:
    cin, out_per_group = w.shape[:2]
    if layer.groups != 1 and groups is not None and groups != layer.groups:
        raise ValueError(
            f"{_WHERE}: {_describe(layer)}: the torch module has groups={groups} but the "
            f"layer has groups={layer.groups} ({key!r} has shape {w.shape}); build the "
            f"layer with groups={groups}")
    g = layer.groups if layer.groups != 1 else 1 if groups is None else groups
    if out_per_group * g != layer.filters:
        hint = ("" if groups is not None or layer.groups != 1
                or layer.filters % out_per_group else
                f"; if the torch module is grouped, pass groups=module.groups "
                f"(here {layer.filters // out_per_group}?)")
        raise ValueError(
            f"{_WHERE}: {_describe(layer)}: {key!r} has shape {w.shape}, out_channels // "
            f"groups = {out_per_group}, which with groups={g} gives {out_per_group * g} "
            f"output channels, but the layer has filters={layer.filters}: expected "
            f"{_expected(layer, ConvTranspose, g)}{hint}")
    if cin % g:
        raise ValueError(
            f"{_WHERE}: {_describe(layer)}: groups={g} does not divide the "
            f"{cin} input channels of {key!r} (shape {w.shape})")
    if in_channels is not None and in_channels != cin:
        raise ValueError(
            f"{_WHERE}: {_describe(layer)}: in_channels={in_channels} does not match "
            f"{key!r} of shape {w.shape} ({cin} input channels)")
    # (in, out // g, *k) -> (*k, out // g, in), no flip (both are the VJP of the forward
    # conv with this kernel); both libraries split the input and the output channels into
    # contiguous group blocks, so a grouped layer takes it as is.
    dense = _spatial_first(w)
    if g == layer.groups:
        return dense, layer.filters
    # A layer without groups: group j maps input channels [j * cin_g, (j + 1) * cin_g)
    # to outputs [j * out_g, (j + 1) * out_g), so the dense kernel is block-diagonal over
    # (out, in) with zeros between the groups.
    cin_g = cin // g
    kernel = np.zeros(layer.kernel_size + (layer.filters, cin), dense.dtype)
    for j in range(g):
        outs = slice(j * out_per_group, (j + 1) * out_per_group)
        ins = slice(j * cin_g, (j + 1) * cin_g)
        kernel[..., outs, ins] = dense[..., :, ins]
    return kernel, layer.filters


def _depthwise_kernel(layer: DepthwiseConv, w: np.ndarray, key: str,
                      in_channels: int | None, groups: int | None) -> tuple[np.ndarray, int]:
    out, in_per_group = w.shape[:2]
    dm = layer.depth_multiplier
    if in_per_group != 1:
        raise ValueError(
            f"{_WHERE}: {_describe(layer)}: {key!r} has shape {w.shape}, in_channels // "
            f"groups = {in_per_group}, but a depthwise convolution has groups == "
            f"in_channels (1 input channel per group): expected {_expected(layer, DepthwiseConv)}")
    if out % dm:
        raise ValueError(
            f"{_WHERE}: {_describe(layer)}: {key!r} has shape {w.shape}: out_channels {out} "
            f"is not a multiple of depth_multiplier={dm}: expected "
            f"{_expected(layer, DepthwiseConv)}")
    channels = out // dm
    for name, value in (("in_channels", in_channels), ("groups", groups)):
        if value is not None and value != channels:
            raise ValueError(
                f"{_WHERE}: {_describe(layer)}: {name}={value} does not match {key!r} of "
                f"shape {w.shape}: with depth_multiplier={dm} it holds {channels} input "
                f"channels (a depthwise conv has groups == in_channels == {channels})")
    # (C * dm, 1, *k): torch output channel c * dm + m is group c's m-th filter, which is
    # kconv's kernel[..., c, m]; (*k, 1, C * dm) -> (*k, C, dm) is a reshape.
    kernel = _spatial_first(w).reshape(layer.kernel_size + (channels, dm))
    return kernel, out


# --- validation helpers ---------------------------------------------------------------

def _family(layer: Any) -> type:
    if isinstance(layer, type):
        raise TypeError(f"{_WHERE}: expected a kconv layer instance, got the class "
                        f"{layer.__name__}; build it with the torch module's arguments, "
                        f"e.g. {layer.__name__}(filters, kernel_size, ...)")
    for family in (Conv, ConvTranspose, DepthwiseConv):
        if isinstance(layer, family):
            return family
    kind = "kconv layer" if isinstance(layer, Layer) else "object"
    hint = ""
    if isinstance(layer, SeparableConv):
        hint = (f"; torch has no separable conv: convert its depthwise nn.Conv{layer.rank}d "
                f"with DepthwiseConv{layer.rank}D and its 1x1 nn.Conv{layer.rank}d with "
                f"Conv{layer.rank}D, then use their kernels as depthwise_kernel and "
                f"pointwise_kernel")
    raise TypeError(f"{_WHERE}: unsupported {kind} {type(layer).__name__}; supported are the "
                    f"pure-tier kconv layers {_SUPPORTED}{hint}")


def _norm_prefix(prefix: str) -> str:
    return prefix if not prefix or prefix.endswith(".") else prefix + "."


def _as_mapping(layer: Any, state_dict: Any, prefix: Any) -> Mapping[str, Any]:
    """The state dict itself, or a live torch module's ``state_dict()``."""
    if not isinstance(prefix, str):
        raise TypeError(f"{_WHERE}: prefix must be a str, got {prefix!r}")
    if not isinstance(state_dict, Mapping) and callable(getattr(state_dict, "state_dict", None)):
        # A module (torch is not imported: by its method); torch.compile's, its module's.
        module = _compiled(state_dict)
        state_dict = _forward_weights(layer, module)
        if state_dict is None:
            state_dict = module.state_dict()
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"{_WHERE}: {_describe(layer)}: state_dict must be a mapping of "
                        f"names to tensors (or the torch module), got "
                        f"{type(state_dict).__name__}")
    return state_dict


# The modules of torch's hooks that compute a weight before each forward: the old weight
# norm and spectral norm APIs, and pruning (the weight times a mask).
_REPARAMETRIZING_HOOKS = ("torch.nn.utils.weight_norm", "torch.nn.utils.spectral_norm",
                          "torch.nn.utils.prune")


def _forward_weights(layer: Any, module: Any) -> dict[str, Any] | None:
    """The weight and bias a live module's forward computes with in eval mode, where they
    are reparametrized (``None`` where not): under ``torch.nn.utils.parametrize`` (torch's
    weight norm, spectral norm, orthogonal, a user's, a chain of several: the module
    computes them on access) or the hooks of the old weight-norm and spectral-norm APIs
    and of pruning (each recomputes its tensor before the forward: computed the same way).
    Read from the module itself, not its state dict: the state dict does not say what a
    parametrization of the user's computes, nor along which axis spectral norm divides.
    The parametrizations are put in eval mode for the read (spectral norm's power
    iteration, which would move its stored vectors, runs in training mode only), then
    back in their mode."""
    reparametrizing = [hook for hook in getattr(module, "_forward_pre_hooks", {}).values()
                       if type(hook).__module__ in _REPARAMETRIZING_HOOKS]
    hooks = {_hooked_name(hook): hook for hook in reparametrizing}
    chains = getattr(module, "parametrizations", None)
    if not hooks and chains is None:
        return None
    if len(hooks) < len(reparametrizing) or (hooks and chains is not None):
        raise ValueError(f"{_WHERE}: {_describe(layer)}: the module's weights are "
                         f"reparametrized by several hooks, or by hooks and "
                         f"torch.nn.utils.parametrize together: port them by hand")
    steps = [step for chain in (chains.values() if chains is not None else ()) for step in chain]
    modes = [step.training for step in steps]
    try:
        for step in steps:
            step.train(False)
        values = {}
        for name in ("weight", "bias"):
            hook = hooks.get(name)
            if hook is None:
                value = getattr(module, name)
            elif type(hook).__module__ == "torch.nn.utils.prune":
                value = hook.apply_mask(module)
            elif type(hook).__name__ == "SpectralNorm":
                value = hook.compute_weight(module, do_power_iteration=False)
            else:
                value = hook.compute_weight(module)
            if value is not None:
                values[name] = value.detach()
        return values
    finally:
        for step, mode in zip(steps, modes):
            step.train(mode)


def _hooked_name(hook: Any) -> str:
    """The tensor a reparametrizing hook computes (``"weight"``)."""
    return getattr(hook, "name", None) or getattr(hook, "_tensor_name", "")


def _no_weights(layer: Layer, state_dict: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """``{}`` for a weightless layer, whose torch module's state dict is empty too."""
    prefix = _norm_prefix(prefix)
    keys = sorted(key for key in state_dict if isinstance(key, str) and key.startswith(prefix))
    if keys:
        hint = "; for one layer of a larger model pass prefix=" if not prefix else ""
        raise ValueError(f"{_WHERE}: {_describe(layer)} has no weights, but the state_dict "
                         f"has {keys[:8]}{' ...' if len(keys) > 8 else ''}"
                         f"{f' under prefix {prefix!r}' if prefix else ''}{hint}")
    return {}


def _select(layer: Layer, state_dict: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    prefix = _norm_prefix(prefix)
    state = {key[len(prefix):]: value for key, value in state_dict.items()
             if isinstance(key, str) and key.startswith(prefix)}
    for name in ("weight", "bias"):  # pruned (torch.nn.utils.prune): the original times a mask
        orig, mask = name + "_orig", name + "_mask"
        if orig in state and mask in state:
            values = [_read(layer, state.pop(key), prefix + key) for key in (orig, mask)]
            state[name] = values[0] * values[1].astype(values[0].dtype)
    unknown = sorted(key for key in state if key not in _KEYS)
    if unknown:
        shown = [prefix + key for key in unknown[:8]]
        more = f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
        candidates = sorted({key[: -len(form[0])] for key in state_dict for form in _WEIGHT_FORMS
                             if isinstance(key, str) and key.endswith("." + form[0])}
                            - {prefix})
        hint = (f"; for one layer of a larger model pass prefix=, one of {candidates[:8]}"
                if candidates else "")
        if any(key.startswith("parametrizations.") for key in unknown):
            hint += ("; a parametrization of the module's own (torch.nn.utils.parametrize): "
                     "pass the module, whose weight and bias are computed on access")
        raise ValueError(f"{_WHERE}: {_describe(layer)}: unknown state_dict keys {shown}{more}"
                         f" (a torch conv has only 'weight' (or its weight-norm or "
                         f"spectral-norm factors, or pruning's original and mask) and 'bias'"
                         f"{f' under prefix {prefix!r}' if prefix else ''}){hint}")
    if not set(state) - {"bias"}:
        keys = sorted(map(str, state_dict))
        raise ValueError(f"{_WHERE}: {_describe(layer)}: missing key {prefix + 'weight'!r}; "
                         f"the state_dict has keys {keys[:8]}"
                         f"{' ...' if len(keys) > 8 else ''}")
    if ("bias" in state) != layer.use_bias:
        if layer.use_bias:
            raise ValueError(f"{_WHERE}: {_describe(layer)}: missing key {prefix + 'bias'!r} "
                             f"but the layer has use_bias=True (the torch module was built "
                             f"with bias=False? then build the layer with use_bias=False)")
        raise ValueError(f"{_WHERE}: {_describe(layer)}: the state_dict has "
                         f"{prefix + 'bias'!r} but the layer has use_bias=False (build it "
                         f"with use_bias=True)")
    return state


def _weight(layer: Layer, family: type, state: Mapping[str, Any],
            prefix: str) -> tuple[str, np.ndarray]:
    """The torch weight (its key as the user sees it, and its value): stored as is, or
    multiplied out of its weight-norm or spectral-norm factors as the module does in eval
    mode (torch's own formulas, in float64)."""
    present = tuple(sorted(set(state) - {"bias"}))
    form = next((form for form in _WEIGHT_FORMS if sorted(form) == list(present)), None)
    if form is None:
        forms = "; ".join(f"{name}: {' + '.join(map(repr, form))}"
                          for form, name in _WEIGHT_FORMS.items())
        raise ValueError(
            f"{_WHERE}: {_describe(layer)}: the weight keys "
            f"{[prefix + key for key in present]} are none of the forms a torch module "
            f"keeps its weight in ({forms})"
            + ("; a parametrization of the module's own (torch.nn.utils.parametrize): pass "
               "the module, whose weight is computed on access"
               if any(key.startswith("parametrizations.") for key in present) else ""))
    key = prefix + form[0]
    values = [_read(layer, state[name], prefix + name) for name in form]
    if len(form) == 1:
        return key, values[0]
    if len(form) == 2:  # weight norm: g * v / ||v||, the norm over every axis but g's own
        return prefix + form[1], _weight_norm(layer, *values, *(prefix + k for k in form))
    return key, _spectral_norm(layer, family, *values, *(prefix + k for k in form))


def _weight_norm(layer: Layer, g: np.ndarray, v: np.ndarray, gkey: str,
                 vkey: str) -> np.ndarray:
    """``torch._weight_norm(v, g, dim)``: ``dim`` is the one axis ``g`` keeps (``g`` of
    shape ``()`` for ``dim=None``: the whole tensor's norm). Where ``g``'s only kept axis
    has length 1, its norm over the other axes is that over all: the same either way."""
    if g.ndim and (g.ndim != v.ndim
                   or any(a not in (1, b) for a, b in zip(g.shape, v.shape))
                   or sum(a != 1 for a in g.shape) > 1):
        raise ValueError(
            f"{_WHERE}: {_describe(layer)}: weight norm's {gkey!r} has shape {g.shape}, "
            f"which is not a magnitude per slice of {vkey!r} (shape {v.shape}): expected () "
            f"or {v.shape[0]} in one axis and 1 in the others, e.g. "
            f"{(v.shape[0],) + (1,) * (v.ndim - 1)}")
    v = v.astype(np.float64)
    axes = tuple(i for i in range(v.ndim) if not g.ndim or g.shape[i] != v.shape[i]
                 or v.shape[i] == 1)
    norm = np.sqrt(np.sum(v * v, axis=axes, keepdims=True))
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero v: NaN, as torch's
        return v * (g.astype(np.float64) / norm)


def _spectral_norm(layer: Layer, family: type, w: np.ndarray, u: np.ndarray, v: np.ndarray,
                   wkey: str, ukey: str, vkey: str) -> np.ndarray:
    """``w / sigma`` with ``sigma = u . (W v)`` from the stored power-iteration vectors,
    ``W`` the weight with axis ``dim`` moved first and the rest flattened (eval mode: a
    module in training mode runs one more power iteration first). ``dim`` is the axis as
    long as ``u``; where two are, torch's default: 1 for a transposed convolution, else 0."""
    dims = [d for d in range(w.ndim)
            if u.shape == (w.shape[d],) and v.shape == (w.size // max(w.shape[d], 1),)]
    default = 1 if family is ConvTranspose else 0
    if not dims or (len(dims) > 1 and default not in dims):
        raise ValueError(
            f"{_WHERE}: {_describe(layer)}: spectral norm's {ukey!r} (shape {u.shape}) and "
            f"{vkey!r} (shape {v.shape}) do not fit {wkey!r} (shape {w.shape}) along "
            f"{'one axis' if not dims else f'one axis only (axes {dims} fit)'}: expected "
            f"({w.shape[default]},) and ({w.size // max(w.shape[default], 1)},) for torch's "
            f"default dim={default}")
    dim = default if default in dims else dims[0]
    w = w.astype(np.float64)
    matrix = np.moveaxis(w, dim, 0).reshape(w.shape[dim], -1)
    sigma = u.astype(np.float64) @ (matrix @ v.astype(np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        return w / sigma


def _read(layer: Layer, value: Any, key: str) -> np.ndarray:
    """A torch tensor (detected by ``detach``, torch is not imported) or array as NumPy."""
    try:
        if callable(getattr(value, "detach", None)):
            value = value.detach()
            if str(getattr(value, "dtype", "")) == "torch.bfloat16":
                value = value.float()  # NumPy has no bfloat16; float32 holds it exactly
            value = value.cpu().numpy()
        array = np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{_WHERE}: {_describe(layer)}: cannot read {key!r} "
                        f"({type(value).__name__}) as an array: {e}") from e
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) \
            or np.iscomplexobj(array):
        raise TypeError(f"{_WHERE}: {_describe(layer)}: {key!r} must hold real numbers, got "
                        f"{type(value).__name__} of dtype {array.dtype}")
    return array


def _check_int(value: Any, arg: str, layer: Layer) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{_WHERE}: {_describe(layer)}: {arg} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{_WHERE}: {_describe(layer)}: {arg} must be positive, got {value!r}")
    return int(value)


def _describe(layer: Any) -> str:
    if not hasattr(layer, "kernel_size"):  # a weightless layer, or not a layer at all
        return type(layer).__name__
    args = [f"filters={layer.filters}"] if hasattr(layer, "filters") else []
    args.append(f"kernel_size={layer.kernel_size}")
    if hasattr(layer, "depth_multiplier"):
        args.append(f"depth_multiplier={layer.depth_multiplier}")
    if getattr(layer, "groups", 1) != 1:
        args.append(f"groups={layer.groups}")
    return f"{type(layer).__name__}({', '.join(args)})"


def _torch_name(family: type, rank: int) -> str:
    return f"nn.ConvTranspose{rank}d" if family is ConvTranspose else f"nn.Conv{rank}d"


def _expected(layer: Any, family: type, groups: int = 1) -> str:
    """The torch weight shape the layer fits, with the unknown input channels as ``in``."""
    k = ", ".join(map(str, layer.kernel_size))
    if family is Conv:
        per = "in" if layer.groups == 1 else f"in // {layer.groups}"
        return f"({layer.filters}, {per}, {k}) (out_channels, in_channels // groups, *kernel_size)"
    if family is ConvTranspose:
        per = layer.filters // groups if layer.filters % groups == 0 else "?"
        return f"(in, {per}, {k}) (in_channels, out_channels // groups, *kernel_size)"
    return (f"(in * {layer.depth_multiplier}, 1, {k}) (in_channels * depth_multiplier, 1, "
            f"*kernel_size)")


# --- the layer of a live module ---------------------------------------------------------

# torch's convolution classes (``torch.nn.modules.conv``) by name, and kconv's.
_TORCH_CLASSES: dict[str, type] = {
    "Conv1d": Conv1D, "Conv2d": Conv2D, "Conv3d": Conv3D, "ConvTranspose1d": Conv1DTranspose,
    "ConvTranspose2d": Conv2DTranspose, "ConvTranspose3d": Conv3DTranspose}
# torch's weightless modules that kconv's reshaping layers compute (by module and name),
# with the rank their class fixes (``nn.Upsample`` fixes none).
_TORCH_PADS = {f"{kind}Pad{rank}d": rank for kind in ("Zero", "Constant") for rank in (1, 2, 3)}
_TORCH_EDGE_PADS = {f"{kind}Pad{rank}d": mode for kind, mode in (
    ("Reflection", "reflect"), ("Replication", "replicate"), ("Circular", "circular"))
    for rank in (1, 2, 3)}
_TORCH_UPSAMPLES = {"Upsample": None, "UpsamplingNearest2d": 2, "UpsamplingBilinear2d": 2}
# Every torch class layer_from_torch reads, by torch's module (subclasses are refused).
_TORCH_MODULES = {"torch.nn.modules.conv": _TORCH_CLASSES,
                  "torch.nn.modules.upsampling": _TORCH_UPSAMPLES,
                  "torch.nn.modules.padding": {**_TORCH_PADS, **_TORCH_EDGE_PADS}}
_ZERO_PADDING = {1: ZeroPadding1D, 2: ZeroPadding2D, 3: ZeroPadding3D}
_CROPPING = {1: Cropping1D, 2: Cropping2D, 3: Cropping3D}
_UPSAMPLING = {1: UpSampling1D, 2: UpSampling2D, 3: UpSampling3D}
# torch's interpolation modes that fix the rank, and the kconv interpolation of each mode
# kconv computes exactly at integer factors: "nearest-exact" and "area" (an adaptive
# average pool) read the same one input element per output element as "nearest" there, and
# "bilinear" without align_corners is Keras's half-pixel bilinear.
_MODE_RANKS = {"linear": 1, "bilinear": 2, "bicubic": 2, "trilinear": 3}
_MODES = {"nearest": "nearest", "nearest-exact": "nearest", "area": "nearest",
          "bilinear": "bilinear"}


def layer_from_torch(module: Any, *, data_format: str | None = None,
                     rank: int | None = None) -> Layer:
    """The kconv layer that computes what a PyTorch module computes.

    Convolutions: reads the module's arguments (``out_channels``, ``kernel_size``,
    ``stride``, ``padding``, ``dilation``, ``groups``, ``bias``, ``padding_mode``, and a
    transposed one's ``output_padding``) and builds the kconv layer with torch's own
    padding amounts (beyond Keras where they are not Keras's strings), so that with
    :func:`params_from_torch`'s params it computes the module's function exactly, for any
    setting: ``nn.ConvNd`` → ``ConvND`` (``groups`` carried over; a depthwise module, too,
    is ``ConvND(groups=in_channels)``, which the depthwise lowerings run; torch's amounts
    as Keras's ``"valid"`` or ``"same"`` where one of those is the same function for
    every input length: none, or at stride 1 half of an even ``d * (k - 1)``), and
    ``nn.ConvTransposeNd`` → ``ConvNDTranspose``. A module under torch's weight norm,
    spectral norm, pruning or a parametrization of the user's is its convolution (the
    weights its forward computes: :func:`params_from_torch`). Torch's settings are read as
    its forward reads them: a plain int set on the module afterwards (``module.stride =
    2``) for every axis, and the amounts of a ``padding_mode`` other than ``"zeros"`` as
    torch computed them when the module was made. Forward hooks other than those
    reparametrizations are not run by the layer: they are named in a warning (a hook that
    returns a value changes what the module computes). A module in another floating dtype than
    float32 (``.half()``, ``.to(torch.bfloat16)``, ``.double()``) computes in its weights'
    dtype, so the layer gets that ``dtype`` and ``param_dtype`` (Keras's policy of that
    name; float64 needs ``jax_enable_x64``, as any float64 JAX array does). A
    ``torch.compile``'d module is the module it compiles (``params_from_torch`` takes
    either).

    The weightless modules a ported model has between its convolutions (their
    ``params_from_torch`` is ``{}``):

    - ``nn.ZeroPadNd`` and ``nn.ConstantPadNd`` with ``value=0`` → ``ZeroPaddingND``; with
      amounts all at most 0 (torch crops with negative padding) → ``CroppingND``. Torch
      lists the amounts from the last axis back, ``(left, right, top, bottom, ...)``;
      kconv's are per spatial axis in order, ``((top, bottom), (left, right))``.
    - ``nn.Upsample`` (and ``nn.UpsamplingNearest2d``) with integer ``scale_factor`` →
      ``UpSamplingND(size=scale_factor)``: modes ``"nearest"``, ``"nearest-exact"`` and
      ``"area"`` (at integer factors all three repeat each element), and 2-D
      ``"bilinear"`` with ``align_corners`` false (Keras's half-pixel bilinear). A
      nearest ``nn.Upsample`` with one factor works on any rank: pass ``rank``.

    Refused, with the reason: torch's reflection, replication and circular padding
    modules (a kconv convolution pads that way itself: fold the amounts into the next
    convolution's ``padding`` with its ``padding_mode``), a non-zero ``value``, padding
    that pads some sides and crops others, ``nn.Upsample(size=...)``, non-integer factors,
    ``align_corners=True`` (``nn.UpsamplingBilinear2d``), and the ``"linear"``,
    ``"trilinear"`` and ``"bicubic"`` modes (kconv's 1-D and 3-D upsampling repeats, as
    Keras's does; torch's cubic kernel is not Keras's). Torch is not imported: the
    module is read by its attributes.

    Args:
      module: a torch ``nn.Conv1d/2d/3d``, ``nn.ConvTranspose1d/2d/3d``,
        ``nn.ZeroPad1d/2d/3d``, ``nn.ConstantPad1d/2d/3d``, ``nn.Upsample`` or
        ``nn.UpsamplingNearest2d`` instance. A subclass of one (its ``forward`` may compute
        something else) is refused: build the layer by hand (and load its weights with
        :func:`params_from_torch`).
      data_format: keyword-only: the kconv layer's (``None``: kconv's default, usually
        ``"channels_last"``; ``"channels_first"`` takes torch-layout inputs as they are).
        ``UpSampling1D`` and ``Cropping1D`` are channels-last only, as Keras's.
      rank: keyword-only: the number of spatial axes, for the one module that does not fix
        it (``nn.Upsample`` in a nearest mode with one ``scale_factor``); checked against
        the module's where it does.

    Returns:
      The pure-tier kconv layer.

    Raises:
      TypeError: ``module`` is not one of those classes (or is a subclass, or a lazy
        module not yet built).
      ValueError: a setting kconv cannot express (none of torch 2's convolution ones: see
        above for the others), a ``rank`` the module contradicts or lacks.

    Example:
        >>> import torch, jax, numpy as np
        >>> from kconv.interop import layer_from_torch, params_from_torch
        >>> module = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1, padding_mode="reflect")
        >>> layer = layer_from_torch(module, data_format="channels_first")
        >>> layer.filters, layer.strides, layer.padding, layer.padding_mode
        (8, (2, 2), ((1, 1), (1, 1)), 'reflect')
        >>> params = params_from_torch(layer, module.state_dict())
        >>> x = np.random.default_rng(0).standard_normal((1, 3, 9, 9)).astype(np.float32)
        >>> want = module(torch.from_numpy(x)).detach().numpy()
        >>> bool(np.allclose(layer(params, x), want, atol=1e-5))
        True
        >>> layer_from_torch(torch.nn.ZeroPad2d((1, 2, 3, 4))).padding  # (left, right, top, bottom)
        ((3, 4), (1, 2))
        >>> layer_from_torch(torch.nn.Upsample(scale_factor=2), rank=2).size
        (2, 2)
    """
    if rank is not None:
        rank = _args.positive_int(rank, "rank", "layer_from_torch")
    layer = _layer(module, data_format, rank)
    _warn_hooks(module)
    return layer


def _layer(module: Any, data_format: str | None, rank: int | None) -> Layer:
    """:func:`layer_from_torch`'s layer, without its checks of the module's hooks."""
    module = _compiled(module)
    cls = type(module)
    if cls.__module__ == "torch.nn.modules.padding" and cls.__name__ in _TORCH_PADS:
        return _from_pad(module, _fixed_rank(module, _TORCH_PADS[cls.__name__], rank),
                         data_format)
    if cls.__module__ == "torch.nn.modules.upsampling" and cls.__name__ in _TORCH_UPSAMPLES:
        return _from_upsample(module, data_format, rank)
    if cls.__module__ == "torch.nn.modules.padding" and cls.__name__ in _TORCH_EDGE_PADS:
        mode = _TORCH_EDGE_PADS[cls.__name__]
        pairs = _pad_pairs(module, int(cls.__name__[-2]))
        raise ValueError(
            f"layer_from_torch: {_module_repr(module)}: kconv has no layer that pads in "
            f"{mode!r} mode (Keras has none), but its convolutions pad that way themselves: "
            f"for this module and the convolution after it (its own padding 0), build that "
            f"convolution with padding={pairs}, padding_mode={mode!r}")
    layer_cls = _torch_class(module)
    _fixed_rank(module, layer_cls.rank, rank)
    get = functools.partial(_ints, module, layer_cls.rank)
    padding, mode = module.padding, module.padding_mode
    edge = getattr(module, "_reversed_padding_repeated_twice", None)
    if issubclass(layer_cls, Conv) and mode != "zeros" and edge is not None:
        # Torch pads in these modes by the amounts it computed when the module was made
        # (from the last axis back), not by .padding, which it reads for zeros only.
        flat = tuple(int(p) for p in edge)
        padding = keras_padding(tuple(zip(flat[-2::-2], flat[::-2])), get("stride"),
                                get("dilation"), get("kernel_size"))
    elif not isinstance(padding, str) and issubclass(layer_cls, Conv):
        padding = keras_padding(tuple((p, p) for p in get("padding")), get("stride"),
                                get("dilation"), get("kernel_size"))
    elif not isinstance(padding, str):
        padding = get("padding")
    kwargs: dict[str, Any] = dict(
        strides=get("stride"), padding=padding, data_format=data_format,
        dilation_rate=get("dilation"), use_bias=module.bias is not None,
        **_module_dtype(module))
    if issubclass(layer_cls, Conv):
        kwargs.update(groups=module.groups, padding_mode=mode)
    else:
        if mode != "zeros":  # torch refuses it too
            raise ValueError(f"layer_from_torch: {type(module).__name__} has padding_mode="
                             f"{mode!r}; a transposed convolution pads with zeros only")
        kwargs.update(output_padding=get("output_padding"), groups=module.groups)
    return layer_cls(module.out_channels, get("kernel_size"), **kwargs)


def _ints(module: Any, rank: int, name: str) -> tuple[int, ...]:
    """A convolution module's per-axis setting as a tuple: torch's constructor stores
    tuples, but its forward takes a plain int set afterwards (``module.stride = 2``) too,
    and a one-element tuple (which the constructor keeps as given) for every axis."""
    value = getattr(module, name)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value),) * rank
    try:
        values = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        values = ()
    if len(values) == 1:
        return values * rank
    if len(values) != rank:
        raise ValueError(f"layer_from_torch: {_module_repr(module)}: {name}={value!r} is not "
                         f"an int or {rank} ints, one per spatial axis")
    return values


def _warn_hooks(module: Any) -> None:
    """Warn of forward hooks (a hook may return another output or input) that the layer
    does not run; those that reparametrize the weights (weight norm, spectral norm,
    pruning) are read by :func:`params_from_torch`."""
    inner = _compiled(module)  # a torch.compile wrapper runs its own hooks, then the module's
    hooks = [hook for holder in ([module] if inner is module else [module, inner])
             for name in ("_forward_pre_hooks", "_forward_hooks")
             for hook in getattr(holder, name, {}).values()
             if type(hook).__module__ not in _REPARAMETRIZING_HOOKS]
    if hooks:
        names = ", ".join(getattr(hook, "__qualname__", type(hook).__name__) for hook in hooks)
        warnings.warn(f"layer_from_torch: {_module_repr(inner)} has forward hooks "
                      f"({names}) that the kconv layer does not run: where one returns a "
                      f"value, the module computes something else (remove them, or apply "
                      f"their function around the layer)", UserWarning, stacklevel=3)


# torch's floating dtypes (by name: torch is not imported) as JAX's.
_TORCH_DTYPES = {"torch.float32": "float32", "torch.float16": "float16",
                 "torch.bfloat16": "bfloat16", "torch.float64": "float64"}


def _module_dtype(module: Any) -> dict[str, str]:
    """``dtype`` and ``param_dtype``: the weight's, which a torch module computes in.

    A module made ``.half()`` or ``.to(torch.bfloat16)`` holds its weights in that dtype and
    takes inputs of it only; the layer computes and keeps its params in it too (Keras's
    ``"bfloat16"`` policy). ``float32`` is kconv's default and stays unwritten.
    """
    chains = getattr(module, "parametrizations", None)
    if chains is not None and "weight" in chains:  # not computed: training mode would
        weight = next(chains["weight"].parameters())  # run a spectral norm's power iteration
    else:
        weight = getattr(module, "weight", None)
    name = _TORCH_DTYPES.get(str(getattr(weight, "dtype", "")))
    if weight is not None and name is None:
        raise ValueError(f"layer_from_torch: {_module_repr(module)} holds its weight in "
                         f"{weight.dtype}; kconv's layers compute in a floating dtype "
                         f"(float16, bfloat16, float32 or float64)")
    return {} if name in (None, "float32") else {"dtype": name, "param_dtype": name}


def _module_repr(module: Any) -> str:
    try:
        settings = module.extra_repr()
    except (TypeError, ValueError, AttributeError):  # torch's own fails on some settings
        settings = "..."
    return f"nn.{type(module).__name__}({settings})"


def _fixed_rank(module: Any, fixed: int, rank: int | None) -> int:
    """The module's rank, which a ``rank`` given must equal."""
    if rank is not None and rank != fixed:
        raise ValueError(f"layer_from_torch: rank={rank}, but {_module_repr(module)} works "
                         f"on {fixed} spatial axes")
    return fixed


def _with_format(module: Any, layer_cls: type, data_format: str | None, arg: Any,
                 **kwargs: Any) -> Layer:
    """``layer_cls(arg, data_format=..., **kwargs)``; Keras's ``UpSampling1D`` and ``Cropping1D``
    have no ``data_format`` (channels-last only), so a channels-first one is refused."""
    fmt = _args.data_format(data_format, "layer_from_torch")
    if any(f.name == "data_format" for f in dataclasses.fields(layer_cls)):
        return layer_cls(arg, data_format=fmt, **kwargs)
    if fmt == "channels_first":
        raise ValueError(
            f"layer_from_torch: {_module_repr(module)} with data_format='channels_first': "
            f"kconv's {layer_cls.__name__}, as Keras's, takes channels-last inputs only; "
            f"pass data_format='channels_last' and move the channel axis last")
    return layer_cls(arg, **kwargs)


def _pad_pairs(module: Any, rank: int) -> tuple[tuple[int, int], ...]:
    """A torch padding module's amounts per spatial axis in order: torch lists them from
    the last axis back, ``(left, right, top, bottom, ...)``; short tuples pad the last axes
    only."""
    flat = tuple(int(p) for p in module.padding)
    if len(flat) % 2 or len(flat) > 2 * rank:
        raise ValueError(
            f"layer_from_torch: {_module_repr(module)} has {len(flat)} padding amounts; "
            f"the {rank} spatial axes take at most {2 * rank} (more pad the channel or batch "
            f"axis, which kconv's padding layers do not)")
    flat += (0,) * (2 * rank - len(flat))
    return tuple((flat[2 * (rank - 1 - i)], flat[2 * (rank - 1 - i) + 1]) for i in range(rank))


def _from_pad(module: Any, rank: int, data_format: str | None) -> Layer:
    value = float(module.value)
    if value != 0.0:
        raise ValueError(f"layer_from_torch: {_module_repr(module)} pads with {value!r}; "
                         f"kconv's ZeroPadding{rank}D, as Keras's, pads with zeros only")
    pairs = _pad_pairs(module, rank)
    amounts = [p for pair in pairs for p in pair]
    if all(p >= 0 for p in amounts):
        layer_cls, arg = _ZERO_PADDING[rank], pairs
    elif all(p <= 0 for p in amounts):  # torch crops with negative padding
        layer_cls, arg = _CROPPING[rank], tuple((-lo, -hi) for lo, hi in pairs)
    else:
        raise ValueError(
            f"layer_from_torch: {_module_repr(module)} pads some sides and crops others "
            f"(negative amounts); kconv's ZeroPadding{rank}D and Cropping{rank}D do one "
            f"each: build the two layers, the padding amounts then the negated negative "
            f"ones, per spatial axis in order {pairs}")
    return _with_format(module, layer_cls, data_format, arg[0] if rank == 1 else arg)


def _from_upsample(module: Any, data_format: str | None, rank: int | None) -> Layer:
    name, mode = type(module).__name__, module.mode
    if module.size is not None:
        raise ValueError(
            f"layer_from_torch: {_module_repr(module)} resizes to a fixed size; kconv's "
            f"UpSampling layers, as Keras's, scale by integer factors: use "
            f"nn.Upsample(scale_factor=...)")
    given = module.scale_factor
    # A tuple (one element too) is one factor per spatial axis: torch's interpolate refuses
    # an input of another rank; a bare number scales every axis of any input.
    per_axis = isinstance(given, (tuple, list))
    factors = tuple(given) if per_axis else (given,)
    if not all(float(f).is_integer() and f >= 1 for f in factors):
        raise ValueError(f"layer_from_torch: {_module_repr(module)}: kconv's UpSampling "
                         f"layers, as Keras's, scale by positive integer factors")
    factors = tuple(int(f) for f in factors)
    known = [(_TORCH_UPSAMPLES[name], f"nn.{name}"), (_MODE_RANKS.get(mode), f"mode={mode!r}"),
             (len(factors) if per_axis else None, f"scale_factor={factors}")]
    known = [(r, why) for r, why in known if r is not None]
    if len({r for r, _ in known}) > 1:
        raise ValueError(f"layer_from_torch: {_module_repr(module)}: "
                         f"{' but '.join(f'{why} is {r}-D' for r, why in known)}")
    if not known and rank is None:
        raise ValueError(
            f"layer_from_torch: {_module_repr(module)} upsamples every spatial axis of "
            f"whatever it is given, so its rank is not in the module: pass rank=1, 2 or 3")
    layer_rank = _fixed_rank(module, known[0][0], rank) if known else rank
    if layer_rank > 3:
        raise ValueError(f"layer_from_torch: rank={rank}: kconv's UpSampling layers have 1 "
                         f"to 3 spatial axes")
    if mode not in _MODES or (mode == "bilinear" and module.align_corners):
        reason = {
            "bicubic": "torch's cubic kernel (a = -0.75) is not Keras's (a = -0.5, "
                       "UpSampling2D's 'bicubic')",
            "linear": "kconv's UpSampling1D, as Keras's, repeats only ('nearest')",
            "trilinear": "kconv's UpSampling3D, as Keras's, repeats only ('nearest')",
        }.get(mode, "align_corners=True samples the corners, where kconv's (Keras's) "
                    "bilinear takes half-pixel centres (align_corners=False)"
              if mode == "bilinear" else f"mode {mode!r} is not one kconv computes")
        raise ValueError(f"layer_from_torch: {_module_repr(module)}: {reason}")
    size = factors * layer_rank if len(factors) == 1 else factors
    if layer_rank == 2:
        return _with_format(module, UpSampling2D, data_format, size,
                            interpolation=_MODES[mode])
    return _with_format(module, _UPSAMPLING[layer_rank], data_format,
                        size[0] if layer_rank == 1 else size)


class TorchLayers(KerasWeights):
    """``{module_name: (layer, params)}`` of a torch model, plus what was left out.

    Attributes:
      skipped: ``{module_name: why}`` for every leaf module kconv has no layer for: its
        class name (``ReLU``, ``BatchNorm2d``, ``Linear``, ...), or the class name and the
        reason where kconv's layer cannot compute this module's setting (e.g.
        ``"ReflectionPad2d: ..."``, which says how to fold it into the next convolution).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.ReflectionPad2d(1), torch.nn.Conv2d(3, 8, 3))
        >>> ported = layers_from_torch(model)
        >>> list(ported), ported.skipped["0"][:49]
        (['1'], 'ReflectionPad2d: nn.ReflectionPad2d((1, 1, 1, 1))')
    """


def layers_from_torch(model: Any, *, data_format: str | None = None,
                      rank: int | None = None) -> TorchLayers:
    """Every convolution, zero padding and upsampling module of a torch model, as kconv
    layers with their params.

    The model's modules are walked depth first (``named_children``), containers
    (``nn.Sequential``, ``nn.ModuleList``, your own ``nn.Module`` classes) entered, and
    each module :func:`layer_from_torch` reads becomes ``(layer, params)`` under its
    qualified name, the prefix of its keys in ``model.state_dict()`` (``"enc.0"``,
    ``"blocks.2.conv"``; a ``torch.compile``'d model is named as the module it compiles,
    without ``_orig_mod.``, as :func:`params_from_torch` reads it); its params are
    :func:`params_from_torch`'s. The torch model's
    ``forward`` (what runs between these layers, in which order) is not read: a Flax
    model written to the same plan takes them by name.

    Args:
      model: a torch ``nn.Module`` with submodules.
      data_format: keyword-only: every layer's (see :func:`layer_from_torch`).
      rank: keyword-only: the rank of the modules that do not fix theirs (a nearest
        ``nn.Upsample`` with one ``scale_factor``); without it they are in ``.skipped``.

    Returns:
      A :class:`TorchLayers` of ``{module_name: (layer, params)}``, with ``.skipped`` (a
      module whose weights :func:`params_from_torch` cannot read too, with the reason).

    Raises:
      TypeError: ``model`` is not a torch module with submodules (for one module use
        :func:`layer_from_torch`).

    Example:
        >>> import torch
        >>> from kconv.interop import layers_from_torch
        >>> model = torch.nn.Sequential(
        ...     torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        ...     torch.nn.Upsample(scale_factor=2, mode="bilinear"),
        ...     torch.nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1))
        >>> ported = layers_from_torch(model)
        >>> {name: type(layer).__name__ for name, (layer, params) in ported.items()}
        {'0': 'Conv2D', '2': 'UpSampling2D', '3': 'Conv2DTranspose'}
        >>> ported.skipped
        {'1': 'ReLU'}
    """
    model = _compiled(model)  # named as the module it compiles, as params_from_torch reads it
    children = getattr(model, "named_children", None)
    if not callable(children) or not callable(getattr(model, "state_dict", None)):
        raise TypeError(f"layers_from_torch: expected a torch nn.Module, got "
                        f"{type(model).__name__}")
    if next(iter(children()), None) is None:
        raise TypeError(f"layers_from_torch: {type(model).__name__} has no submodules; for "
                        f"one module use layer_from_torch")
    if rank is not None:
        rank = _args.positive_int(rank, "rank", "layers_from_torch")
    found, skipped = {}, {}

    def walk(module: Any, prefix: str) -> None:
        for name, child in module.named_children():
            path = prefix + name
            if _reads(child):
                try:
                    layer = layer_from_torch(child, data_format=data_format,
                                             rank=rank if _rank_free(child) else None)
                    found[path] = (layer, params_from_torch(layer, child))
                except ValueError as e:  # what kconv cannot compute, or weights it cannot read
                    skipped[path] = f"{type(child).__name__}: {str(e).partition(': ')[2]}"
            elif next(iter(child.named_children()), None) is not None:
                walk(child, path + ".")
            else:
                skipped[path] = _why_not(child)

    walk(model, "")
    return TorchLayers(found, skipped)


def _reads(module: Any) -> bool:
    """Whether :func:`layer_from_torch` reads the module's class (not a subclass)."""
    cls = type(module)
    if cls.__name__ in _TORCH_MODULES.get(cls.__module__, ()):
        return True
    try:
        _torch_class(module)
    except TypeError:
        return False
    return True


def _why_not(module: Any) -> str:
    """A leaf module's class name, with the reason where it is almost one kconv reads (a
    subclass of one, a lazy convolution not yet built)."""
    name = type(module).__name__
    try:
        _torch_class(module)
    except TypeError as e:
        why = str(e).removeprefix("layer_from_torch: ")
        _, subclass, hint = why.partition(f"got {name}; ")
        if subclass:
            return f"{name}: {hint}"
        return name if why.endswith(f"got {name}") else f"{name}: {why}"
    return name


def _rank_free(module: Any) -> bool:
    """An ``nn.Upsample`` that fixes no rank: a nearest-type mode and one factor."""
    factors = getattr(module, "scale_factor", None)
    return (type(module).__name__ == "Upsample" and module.mode not in _MODE_RANKS
            and not (isinstance(factors, (tuple, list)) and len(factors) > 1))


def _compiled(module: Any) -> Any:
    """The module ``torch.compile(module)`` compiles (its ``OptimizedModule`` runs the
    module's own forward, whose state dict is the module's under ``_orig_mod.``), or
    ``module`` itself."""
    cls = type(module)
    if cls.__name__ == "OptimizedModule" and cls.__module__.startswith("torch._dynamo") \
            and hasattr(module, "_orig_mod"):
        return module._orig_mod
    return module


def _torch_class(module: Any) -> type:
    """The kconv class of a torch convolution module, by its class — torch's own, or the
    class torch's parametrizations (weight norm, spectral norm) derive from it."""
    cls = type(module)
    if cls.__module__ == "torch.nn.utils.parametrize" and cls.__name__.startswith(
            "Parametrized"):
        cls = cls.__mro__[1]
    if cls.__module__ == "torch.nn.modules.conv" and cls.__name__ in _TORCH_CLASSES:
        return _TORCH_CLASSES[cls.__name__]
    if cls.__module__ == "torch.nn.modules.conv" and cls.__name__.startswith("Lazy"):
        raise TypeError(f"layer_from_torch: {cls.__name__} has no weights yet (in_channels="
                        f"{getattr(module, 'in_channels', None)!r}): call the module once, "
                        f"then it is an nn.{cls.__name__[len('Lazy'):]}")
    bases = [c.__name__ for c in cls.__mro__[1:]
             if c.__name__ in _TORCH_MODULES.get(c.__module__, ())]
    hint = (f"; a subclass of nn.{bases[0]} may compute something else in its forward: "
            f"build the kconv layer by hand and load its weights with params_from_torch"
            if bases else "")
    raise TypeError(f"layer_from_torch: expected an nn.Conv1d/2d/3d, "
                    f"nn.ConvTranspose1d/2d/3d, nn.ZeroPad1d/2d/3d, nn.ConstantPad1d/2d/3d, "
                    f"nn.Upsample or nn.UpsamplingNearest2d instance, got {cls.__name__}{hint}")
