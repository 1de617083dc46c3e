"""Layers and weights from Flax's own convolutions: :func:`layer_from_flax` builds the kconv
layer that computes what a ``flax.linen.Conv`` / ``ConvTranspose`` or ``flax.nnx.Conv`` /
``ConvTranspose`` computes, :func:`params_from_flax` turns its params into kconv's, and
:func:`layers_from_flax` does both for every such convolution of a whole Flax model.

Flax's ``Conv`` kernel is Keras's layout already, ``(*k, in // groups, features)``; its
``ConvTranspose`` is not: without ``transpose_kernel`` it is a plain convolution of the
stride-dilated input (kernel ``(*k, in, features)``, not flipped), which is Keras's
transposed convolution with the kernel flipped and its channel axes swapped.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kconv import _args
from kconv.interop._padding import keras_padding
from kconv.interop.keras import KerasWeights
from kconv.layers.base import Layer
from kconv.layers.conv import Conv1D, Conv2D, Conv3D
from kconv.layers.conv_transpose import Conv1DTranspose, Conv2DTranspose, Conv3DTranspose
from kconv.ops.shapes import conv_transpose_padding

__all__ = ["FlaxLayers", "layer_from_flax", "layers_from_flax", "params_from_flax"]

_CONV = {1: Conv1D, 2: Conv2D, 3: Conv3D}
_TRANSPOSE = {1: Conv1DTranspose, 2: Conv2DTranspose, 3: Conv3DTranspose}
# Flax's padding strings that pad the input by a fixed rule, and kconv's padding_mode for it.
_EDGE_MODES = {"CIRCULAR": "circular", "REFLECT": "reflect"}
# Settings that change what the module computes in ways kconv's layers have no argument
# for, when they differ from the class's default.
_HOOKS = ("conv_general_dilated", "conv_general_dilated_cls", "promote_dtype",
          "preferred_element_type")


@dataclasses.dataclass(frozen=True)
class _Settings:
    """A Flax convolution's arguments, read the same way from linen and NNX, broadcast to
    the kernel's rank as Flax does."""

    label: str  # "nn.Conv(features=8, kernel_size=(3, 3))", for messages
    transposed: bool
    features: int
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    padding: Any
    input_dilation: tuple[int, ...]
    kernel_dilation: tuple[int, ...]
    groups: int
    use_bias: bool
    transpose_kernel: bool
    module: Any

    @property
    def rank(self) -> int:
        return len(self.kernel_size)

    @property
    def dilated(self) -> tuple[int, ...]:
        """The dilated kernel size ``d * (k - 1) + 1`` per axis."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.kernel_dilation))

    @property
    def dilates_input(self) -> bool:
        """A ``Conv`` with ``input_dilation``: kconv's transposed layer computes it."""
        return not self.transposed and any(d != 1 for d in self.input_dilation)

    @property
    def direct_kernel(self) -> bool:
        """Whether the Flax kernel is a forward kernel over the stride-dilated input (a
        ``ConvTranspose`` without ``transpose_kernel``, a ``Conv`` with ``input_dilation``),
        which kconv's transposed layer takes flipped, its channel axes swapped."""
        return self.dilates_input or self.transposed and not self.transpose_kernel


def _flax() -> tuple[Any, Any]:
    """``flax.linen`` and ``flax.nnx``, imported on first use (``import kconv.interop``
    for Keras files does not load Flax)."""
    from flax import linen, nnx

    return linen, nnx


@functools.cache
def _classes() -> dict[type, tuple[str, bool]]:
    """The Flax classes read, by API: ``{class: (prefix in messages, transposed)}``."""
    linen, nnx = _flax()
    return {linen.Conv: ("nn", False), linen.ConvTranspose: ("nn", True),
            nnx.Conv: ("nnx", False), nnx.ConvTranspose: ("nnx", True)}


@functools.cache
def _defaults(cls: type) -> dict[str, Any]:
    """A Flax class's defaults: linen's dataclass fields, NNX's ``__init__`` keywords."""
    if dataclasses.is_dataclass(cls):
        return {f.name: f.default for f in dataclasses.fields(cls)}
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()}


# linen's lifted transforms that keep each param's values: nn.remat / nn.checkpoint /
# nn.jit run the module's own function on its own params ("CheckpointConv", "JitConv"),
# nn.vmap / nn.scan map it over a stack of params ("VmapConv": params_from_flax moves the
# stack axes to the front). The others (nn.map_variables, ...) may change the params on the
# way in, for the module and for every module inside it.
_READ_LIFTS = ("Checkpoint", "Jit", "Vmap", "Scan")


@functools.cache
def _weight_wrappers() -> tuple[type, ...]:
    """Flax's modules that rescale the params of the module they wrap at every call
    (spectral and weight normalization, linen and NNX): a convolution inside one
    computes with the params the wrapper gives it, not its stored ones."""
    linen, nnx = _flax()
    return linen.SpectralNorm, linen.WeightNorm, nnx.SpectralNorm, nnx.WeightNorm


def _lift(module: Any) -> str | None:
    """The linen lifted transform a module's class comes from (``"Vmap"`` for
    ``nn.vmap(nn.Conv)``'s ``VmapConv``), or ``None``."""
    cls = type(module)
    if cls.__module__ != "flax.linen.transforms" or len(cls.__mro__) < 2:
        return None
    return cls.__name__.removesuffix(cls.__mro__[1].__name__)


def _in_mapped_function() -> bool:
    """Whether the running code is inside linen's ``nn.map_variables`` applied to a function
    of a module (``nn.map_variables(lambda conv, x: conv(x), "params", trans_in_fn=...)
    (conv, x)``, as Flax's ``SpectralNorm`` is written). Unlike the class form
    (``Map_variablesConv``), the function form leaves no mark on the modules it runs: the
    module is cloned into a scope of the transformed variables. Read from the call stack:
    linen's function-form lift runs the transform from one function of its own
    (``decorator_lift_transform``'s ``wrapped_fn``), whose frame holds it."""
    lift = _function_lift()
    target = sys.modules["flax.core.lift"].map_variables
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is lift and frame.f_locals.get("transform") is target:
            return True
        frame = frame.f_back
    return False


@functools.cache
def _function_lift() -> types.CodeType:
    """The code of the function through which linen runs every transform applied to a
    function of a module (``decorator_lift_transform``'s inner ``wrapped_fn``)."""
    outer = _flax()[0].transforms.decorator_lift_transform.__code__
    return next(c for c in outer.co_consts
                if isinstance(c, types.CodeType) and c.co_name == "wrapped_fn")


_MAPPED_REFUSED = ("called inside nn.map_variables (a function of the module), which may "
                   "change its params on the way in: port by hand")


def _lift_refused(module: Any) -> str:
    cls = type(module)
    return (f"{cls.__name__} is {cls.__mro__[1].__name__} under a lifted transform that may "
            f"change the params of what it holds ({_lift(module)}): port by hand")


def _flax_class(module: Any, where: str) -> tuple[str, bool]:
    cls, classes = type(module), _classes()
    if cls in classes:
        return classes[cls]
    lift = _lift(module)
    if lift in _READ_LIFTS and cls.__mro__[1] in classes:
        return classes[cls.__mro__[1]]
    bases = [f"{classes[c][0]}.{c.__name__}" for c in cls.__mro__[1:] if c in classes]
    hint = (f"; a subclass of {bases[0]} may compute something else: build the kconv layer "
            f"by hand" if bases else "")
    if lift is not None and cls.__mro__[1] in classes:
        hint = f"; {_lift_refused(module)}"
    if isinstance(module, _flax()[0].ConvLocal):
        hint = "; nn.ConvLocal has a kernel per output position, which no kconv layer has"
    raise TypeError(f"{where}: expected a flax.linen Conv or ConvTranspose or a flax.nnx "
                    f"Conv or ConvTranspose module, got {cls.__name__}{hint}")


def _read(module: Any, where: str) -> _Settings:
    api, transposed = _flax_class(module, where)
    get = functools.partial(getattr, module)
    kernel_size = get("kernel_size")
    kernel_size = (kernel_size,) if isinstance(kernel_size, int) else tuple(kernel_size)
    rank = len(kernel_size)
    features = get("features") if api == "nn" else get("out_features")
    label = (f"{api}.{type(module).__name__}(features={features}, "
             f"kernel_size={kernel_size})")
    if not 1 <= rank <= 3:
        raise ValueError(f"{where}: {label} has {rank} spatial axes; kconv's layers have 1 "
                         f"to 3")

    def broadcast(value: Any) -> tuple[int, ...]:  # Flax's maybe_broadcast
        value = 1 if value is None else value
        return (value,) * rank if isinstance(value, int) else tuple(value)

    settings = _Settings(
        label=label, transposed=transposed, features=features, kernel_size=kernel_size,
        strides=broadcast(get("strides")), padding=get("padding"),
        input_dilation=broadcast(getattr(module, "input_dilation", 1)),
        kernel_dilation=broadcast(get("kernel_dilation")),
        groups=getattr(module, "feature_group_count", 1), use_bias=bool(get("use_bias")),
        transpose_kernel=bool(getattr(module, "transpose_kernel", False)), module=module)
    defaults = _defaults(type(module))
    for hook in _HOOKS:
        if hook in defaults and getattr(module, hook) is not defaults[hook]:
            raise ValueError(f"{where}: {label} has its own {hook}={getattr(module, hook)!r}, "
                             f"which kconv's layer would not run; build the layer by hand")
    if get("mask") is not None:
        raise ValueError(f"{where}: {label} has a kernel mask, which kconv's layers do not "
                         f"take (multiplying it into the kernel gives the same outputs, but "
                         f"training would then update the masked entries)")
    return settings


# --- the layer --------------------------------------------------------------------------

def layer_from_flax(module: Any) -> Layer:
    """The kconv layer that computes what a Flax convolution module computes.

    Reads ``flax.linen.Conv`` / ``ConvTranspose`` (the module need not be bound) and
    ``flax.nnx.Conv`` / ``ConvTranspose``: ``features``, ``kernel_size``, ``strides``,
    ``padding``, ``input_dilation``, ``kernel_dilation``, ``feature_group_count``,
    ``use_bias``, ``dtype``, ``param_dtype``, ``precision``, ``kernel_init``,
    ``bias_init`` and a transposed one's ``transpose_kernel``. Flax is channels-last, as
    the layer is. With :func:`params_from_flax`'s params the layer gives the module's
    outputs:

    - ``Conv`` → ``ConvND`` (``groups=feature_group_count``): ``"SAME"`` / ``"VALID"`` /
      ``"CAUSAL"`` as Keras's strings (the same rule as Flax's, which is XLA's), explicit
      amounts as kconv's ``padding`` pairs (Keras's ``"valid"`` / ``"same"`` where one of
      those is the same function for every input length), ``"CIRCULAR"`` / ``"REFLECT"``
      as Flax's amounts ``((K - 1) // 2, K // 2)`` with ``padding_mode="circular"`` /
      ``"reflect"`` (``K = d * (k - 1) + 1``).
    - ``Conv`` with ``input_dilation`` (strides 1, explicit amounts: ``jax.lax`` takes
      no string with it) → ``ConvNDTranspose(strides=input_dilation)``: a convolution of
      the dilated input is a transposed convolution (the amounts as for ``ConvTranspose``).
    - ``ConvTranspose`` → ``ConvNDTranspose``: ``"SAME"`` and ``"VALID"`` are Keras's
      ``"same"`` and ``"valid"`` (XLA's and Keras's transposed padding rules agree, output
      lengths ``n * s`` and ``n * s + max(K - s, 0)``); explicit amounts ``(a, b)``, which
      pad the dilated input, are Keras's ``"same"`` / ``"valid"`` where they are those
      strings' amounts, else kconv's crops ``(K - 1 - a, K - 1 - b)`` of the full output,
      with ``output_padding`` for zeros past its end.

    ``dtype=None`` (Flax: promote the input with the params) becomes ``param_dtype``
    with 32-bit params (that promotion for any input up to float32), and stays ``None``
    (the input's floating dtype) with 16-bit params (that promotion for float32 inputs
    and inputs of the params' dtype). Flax's default
    initializers become Keras's objects (``lecun_normal``, ``zeros``), so the layer's
    config is one Keras reads; other initializers of a linen module are kept as the
    callables they are (a transposed kernel's called in Flax's layout), so the layer
    initializes as the module does. An NNX module does not keep its initializers: its
    layer gets Flax's defaults.

    Refused, with the reason: a kernel ``mask``, ``input_dilation`` with strides or a
    padding string, negative amounts (crops), a transposed ``"CIRCULAR"``, amounts that
    pad a transposed convolution's dilated input by more than ``K - 1`` in front,
    ``"SAME_LOWER"`` with strides, more than 3 spatial axes, a module's own
    ``conv_general_dilated``, ``promote_dtype`` or ``preferred_element_type``,
    ``nn.ConvLocal``, subclasses (their ``__call__`` may compute something else) and the
    classes of linen's other lifted transforms (``nn.map_variables(nn.Conv, ...)``).

    Args:
      module: a ``flax.linen.Conv``, ``flax.linen.ConvTranspose``, ``flax.nnx.Conv`` or
        ``flax.nnx.ConvTranspose`` instance; a linen one under ``nn.remat`` /
        ``nn.checkpoint`` / ``nn.jit`` (the same function) or ``nn.vmap`` (the layer of
        one slice of the stack) too.

    Returns:
      The pure-tier kconv layer.

    Raises:
      TypeError: ``module`` is not one of those classes (or is a subclass).
      ValueError: a setting kconv cannot compute (see above).

    Example:
        >>> import flax.linen as nn, jax, numpy as np
        >>> from kconv.interop import layer_from_flax, params_from_flax
        >>> module = nn.Conv(8, (3, 3), strides=2, padding="CIRCULAR")
        >>> x = np.random.default_rng(0).standard_normal((1, 9, 9, 3)).astype(np.float32)
        >>> variables = module.init(jax.random.key(0), x)
        >>> layer = layer_from_flax(module)
        >>> layer.padding, layer.padding_mode
        (((1, 1), (1, 1)), 'circular')
        >>> params = params_from_flax(module, variables["params"])
        >>> bool(np.allclose(layer(params, x), module.apply(variables, x), atol=1e-5))
        True
        >>> layer_from_flax(nn.ConvTranspose(4, (4, 4), strides=(2, 2))).padding
        'same'
    """
    where = "layer_from_flax"
    return _layer(_read(module, where), where)


def _layer(s: _Settings, where: str) -> Layer:
    get = functools.partial(getattr, s.module)
    param_dtype, dtype = get("param_dtype"), get("dtype")
    if dtype is None and jnp.finfo(param_dtype).bits >= 32:
        # Flax promotes the input with the params; no static kconv dtype is that for every
        # input. With 32-bit params, the params' dtype is it for any input up to float32;
        # with 16-bit params, kconv's None (the input's floating dtype) is it for float32
        # inputs and for inputs of the params' dtype.
        dtype = param_dtype
    common = dict(use_bias=s.use_bias, dtype=dtype, param_dtype=param_dtype,
                  precision=get("precision"),
                  kernel_initializer=_initializer(s, "kernel_init"),
                  bias_initializer=_initializer(s, "bias_init"))
    if not s.transposed and not s.dilates_input:
        padding, mode = _conv_padding(s, where)
        return _CONV[s.rank](s.features, s.kernel_size, s.strides, padding,
                             dilation_rate=s.kernel_dilation, groups=s.groups,
                             padding_mode=mode, **common)
    if s.transposed:
        strides, pads = s.strides, _transpose_pads(s, where)
    else:
        strides, pads = s.input_dilation, _dilated_input_pads(s, where)
    padding, output_padding = _transposed_padding(s, pads, strides, where)
    return _TRANSPOSE[s.rank](s.features, s.kernel_size, strides, padding,
                              output_padding=output_padding, dilation_rate=s.kernel_dilation,
                              groups=s.groups, **common)


def _lax_string(padding: Any) -> Any:
    """Flax's string as ``jax.lax`` reads it (any case for the strings lax handles)."""
    if isinstance(padding, str) and padding.upper() in ("SAME", "VALID", "SAME_LOWER"):
        return padding.upper()
    return padding


def _amounts(s: _Settings, where: str) -> tuple[tuple[int, int], ...]:
    """Flax's explicit amounts as ``(lo, hi)`` pairs, by Flax's own rule."""
    try:
        pairs = _flax()[0].linear.canonicalize_padding(s.padding, s.rank)
    except ValueError as e:
        raise ValueError(f"{where}: {s.label}: {e}") from e
    pairs = tuple((int(lo), int(hi)) for lo, hi in pairs)
    if any(lo < 0 or hi < 0 for lo, hi in pairs):
        raise ValueError(f"{where}: {s.label} has padding={s.padding!r}: negative amounts "
                         f"crop the input, which kconv's convolutions do not (crop first "
                         f"with a Cropping layer)")
    return pairs


def _conv_padding(s: _Settings, where: str) -> tuple[Any, str]:
    """A forward ``Conv``'s padding and padding mode."""
    padding = _lax_string(s.padding)
    if not isinstance(padding, str):
        pairs = _amounts(s, where)
    elif padding in ("SAME", "VALID") or padding == "CAUSAL" and s.rank == 1:
        return padding.lower(), "zeros"
    elif padding in _EDGE_MODES:  # Flax pads the input so, then runs "VALID"
        return tuple(((k - 1) // 2, k // 2) for k in s.dilated), _EDGE_MODES[padding]
    elif padding == "SAME_LOWER":
        if any(st != 1 for st in s.strides):
            raise ValueError(f"{where}: {s.label} has padding='SAME_LOWER' with strides="
                             f"{s.strides}: its amounts depend on the input length, and "
                             f"kconv's 'same' puts the odd one after the input")
        # XLA's amounts at stride 1: K - 1 in all, the odd one before the input.
        pairs = tuple((k // 2, (k - 1) // 2) for k in s.dilated)
    else:
        raise ValueError(f"{where}: {s.label} has padding={s.padding!r}, which Flax does "
                         f"not run on {s.rank} spatial axes")
    return keras_padding(pairs, s.strides, s.kernel_dilation, s.kernel_size), "zeros"


def _dilated_input_pads(s: _Settings, where: str) -> tuple[tuple[int, int], ...]:
    """The amounts a ``Conv`` with ``input_dilation`` pads its dilated input by (explicit:
    ``jax.lax`` runs no padding string with an input dilation)."""
    if any(st != 1 for st in s.strides) or isinstance(s.padding, str):
        what = (f"strides={s.strides}; kconv computes a dilated input as a transposed "
                f"convolution of stride input_dilation, without more"
                if any(st != 1 for st in s.strides) else
                f"padding={s.padding!r}, which jax.lax does not run with an input "
                f"dilation (Flax raises)")
        raise ValueError(f"{where}: {s.label} has input_dilation={s.input_dilation} with "
                         f"{what}")
    return _amounts(s, where)


def _transpose_pads(s: _Settings, where: str) -> Any:
    """A ``ConvTranspose``'s amounts on its dilated input, or ``"SAME"`` / ``"VALID"``."""
    padding = s.padding
    if padding in ("SAME", "VALID"):  # jax.lax.conv_transpose's own rule: these two only
        return padding
    if _lax_string(padding) in ("SAME", "VALID", "SAME_LOWER"):
        # Any other spelling lax passes on as a forward convolution's padding of the
        # dilated input: at stride 1, that rule's amounts; with strides, lax refuses it.
        if any(st != 1 for st in s.strides):
            raise ValueError(f"{where}: {s.label} has padding={padding!r} with strides "
                             f"{s.strides}: jax.lax.conv_transpose takes only 'SAME' and "
                             f"'VALID' (upper case) as its own rules, and runs no other "
                             f"string with strides (Flax raises)")
        return tuple(map(tuple, jax.lax.padtype_to_pads(
            s.dilated, s.dilated, (1,) * s.rank, _lax_string(padding))))
    if isinstance(padding, str):
        why = ("Flax then sums the full output over periods of n * s, which no kconv layer "
               "computes" if padding == "CIRCULAR" else "jax.lax.conv_transpose does not "
               "take it")
        raise ValueError(f"{where}: {s.label} has padding={s.padding!r}: {why}")
    return _amounts(s, where)


def _transposed_padding(s: _Settings, pads: Any, strides: tuple[int, ...], where: str
                        ) -> tuple[Any, tuple[int, ...] | None]:
    """Amounts on the stride-dilated input (the forward convolution that computes the
    transposed one) as kconv's transposed ``padding`` and ``output_padding``."""
    if isinstance(pads, str):
        # XLA's "SAME" / "VALID" for a transposed convolution are Keras's (output
        # lengths n * s and n * s + max(K - s, 0), the same amounts in front).
        return pads.lower(), None
    for name in ("valid", "same"):  # Keras's strings where the amounts are theirs
        if pads == tuple(conv_transpose_padding(k, st, name, None, d) for k, st, d in
                         zip(s.kernel_size, strides, s.kernel_dilation)):
            return name, None
    crops, extra = [], []
    for (before, after), k in zip(pads, s.dilated):
        if before > k - 1:
            raise ValueError(f"{where}: {s.label} has padding={s.padding!r}: padding the "
                             f"dilated input by {before} > K - 1 = {k - 1} in front puts "
                             f"zeros before the transposed convolution's output, which "
                             f"kconv's transposed layers do not")
        crops.append((k - 1 - before, max(k - 1 - after, 0)))
        extra.append(max(after - (k - 1), 0))
    try:
        _args.output_padding(tuple(extra), s.rank, strides, where, padding=tuple(crops),
                             dilation=s.kernel_dilation)
    except ValueError as e:
        raise ValueError(f"{where}: {s.label} has padding={s.padding!r}: it pads {extra} "
                         f"past the end of the full output, but kconv's output_padding "
                         f"stays below max(strides, dilation) = "
                         f"{tuple(map(max, strides, s.kernel_dilation))}") from e
    return tuple(crops), tuple(extra) if any(extra) else None


def _initializer(s: _Settings, arg: str) -> Any:
    """Flax's default initializers as Keras's objects; others as they are (a kernel the
    layer keeps in another layout, called in Flax's and converted)."""
    default = _defaults(type(s.module))[arg]
    value = getattr(s.module, arg, default)  # an NNX module does not keep its initializers
    if value is default:
        return "lecun_normal" if arg == "kernel_init" else "zeros"
    if arg == "kernel_init" and s.direct_kernel:
        return _FlaxLayoutInit(value, s.groups)
    return value


@dataclasses.dataclass(frozen=True)
class _FlaxLayoutInit:
    """A Flax kernel initializer for a layer that keeps the kernel in kconv's transposed
    layout: called with Flax's shape (its fans are Flax's), the result converted as
    :func:`params_from_flax` converts the kernel."""

    init: Callable
    groups: int

    def __call__(self, key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32
                 ) -> jax.Array:
        *k, out_per_group, cin = shape
        flax_shape = (*k, cin // self.groups, out_per_group * self.groups)
        return _to_transposed(self.init(key, flax_shape, dtype), self.groups)


def _to_transposed(kernel: jax.Array, groups: int) -> jax.Array:
    """A forward kernel ``(*k, in // g, out)`` over the stride-dilated input as kconv's
    transposed kernel ``(*k, out // g, in)``: flipped in space, and per group the channel
    axes swapped (group ``j``'s inputs ``j * in_g + i`` and outputs ``j * out_g + o``)."""
    n = kernel.ndim - 2
    *k, cin_g, out = kernel.shape
    flipped = jnp.flip(kernel, axis=tuple(range(n)))
    blocks = flipped.reshape(*k, cin_g, groups, out // groups)
    return blocks.transpose(*range(n), n + 2, n + 1, n).reshape(*k, out // groups,
                                                                 groups * cin_g)


# --- the params -------------------------------------------------------------------------

def params_from_flax(module: Any, params: Any = None) -> dict[str, jax.Array]:
    """The params of :func:`layer_from_flax`'s layer from a Flax convolution's params.

    ``Conv`` kernels ``(*k, in // groups, features)`` are Keras's layout and are kept as
    they are. A ``ConvTranspose`` with ``transpose_kernel=True`` has Keras's layout too,
    ``(*k, features, in)``; without it (Flax's default) its kernel ``(*k, in, features)``
    is a forward kernel over the stride-dilated input, which kconv's transposed layer
    takes flipped in space with the channel axes swapped (so does a ``Conv`` with
    ``input_dilation``, per group). The bias is kept. The params of a stack of the
    module (``nn.scan``, ``nn.vmap``, a module made under ``nnx.vmap``) come with the
    stack axes first, wherever the lift put them: a linen lift's ``variable_axes`` are read
    from its class; NNX keeps no record of ``out_axes``, so the stack is on the one axis
    whose removal leaves the module's own shapes (``0`` where several fit alike and ``0``
    is one of them; refused where it is not; a stack of stacks, ``nnx.vmap`` of
    ``nnx.vmap``, with its stack axes leading). Run the layer under ``jax.lax.scan`` or
    ``jax.vmap`` over them.

    Args:
      module: the ``flax.linen`` or ``flax.nnx`` ``Conv`` / ``ConvTranspose`` (what
        :func:`layer_from_flax` reads; it raises what that raises).
      params: a linen module's params, ``{"kernel": ..., "bias": ...}`` (the subtree of
        ``variables["params"]`` at the module's name; ``{"params": {...}}`` too; boxed by
        ``nn.with_partitioning`` too). An NNX module holds its own: leave it out.

    Returns:
      ``{"kernel": ..., "bias": ...}`` (no ``bias`` without ``use_bias``) as
      ``jax.Array``, in the params' dtype.

    Raises:
      TypeError: ``module`` is not one of those classes; ``params`` missing for a linen
        module, given for an NNX one, or not a mapping.
      ValueError: keys other than ``kernel`` and ``bias``, a missing one, or a kernel
        whose shape does not fit the module (the message names both).

    Example:
        >>> import jax, numpy as np
        >>> from flax import nnx
        >>> from kconv.interop import layer_from_flax, params_from_flax
        >>> module = nnx.ConvTranspose(3, 8, (3, 3), strides=(2, 2), rngs=nnx.Rngs(0))
        >>> layer, params = layer_from_flax(module), params_from_flax(module)
        >>> params["kernel"].shape        # Flax's (3, 3, 3, 8), flipped and swapped
        (3, 3, 8, 3)
        >>> x = np.random.default_rng(0).standard_normal((1, 5, 5, 3)).astype(np.float32)
        >>> bool(np.allclose(layer(params, x), module(x), atol=1e-5))
        True
    """
    where = "params_from_flax"
    return _params(module, params, where, _stack_axes([module], where))


def _params(module: Any, params: Any, where: str, axes: list[int]) -> dict[str, jax.Array]:
    """:func:`params_from_flax`, given the stack axes the linen lifts holding the module
    put its params on (:func:`_stack_axes`, outermost first)."""
    s = _read(module, where)
    _layer(s, where)  # what layer_from_flax refuses, this refuses too
    if isinstance(module, _flax()[1].Module):
        if params is not None:
            raise TypeError(f"{where}: {s.label} is an NNX module, which holds its params: "
                            f"call params_from_flax(module)")
        params = {"kernel": module.kernel[...]}
        if module.bias is not None:
            params["bias"] = module.bias[...]
    elif params is None:
        raise TypeError(f"{where}: {s.label} is a linen module: pass its params, "
                        f"variables['params'][name]")
    if not isinstance(params, Mapping):
        raise TypeError(f"{where}: params must be a mapping of 'kernel' (and 'bias'), got "
                        f"{type(params).__name__}")
    if set(params) == {"params"}:
        params = params["params"]
    params = _flax()[0].meta.unbox(params)  # nn.with_partitioning's boxes
    want = ["kernel", "bias"] if s.use_bias else ["kernel"]
    if sorted(params) != sorted(want):
        raise ValueError(f"{where}: {s.label} (use_bias={s.use_bias}) has params {want}, got "
                         f"keys {sorted(params)}")
    kernel = _args.as_array(params["kernel"], "params['kernel']", where)
    bias = _args.as_array(params["bias"], "params['bias']", where) if s.use_bias else None
    given = {"kernel": tuple(kernel.shape), "bias": None if bias is None else tuple(bias.shape)}
    if kernel.ndim > s.rank + 2:  # a stack of the module (nn.scan, nn.vmap, nnx.vmap)
        if isinstance(module, _flax()[1].Module) and kernel.ndim == s.rank + 3:
            own = {"kernel": tuple(module.kernel_shape), "bias": (s.features,)}
            at = _nnx_stack_axes(
                {"kernel": kernel.shape} | ({} if bias is None else {"bias": bias.shape}),
                lambda shapes: all(own[name] == shape for name, shape in shapes.items()),
                s.label, where)
            kernel, bias = (None if w is None else jnp.moveaxis(w, at.get(name, 0), 0)
                            for name, w in (("kernel", kernel), ("bias", bias)))
        else:
            kernel = _stacks_first(kernel, axes, s.rank + 2)
            bias = None if bias is None else _stacks_first(bias, axes, 1)
    # The stack axes lead now, before the module's own.
    stack = tuple(kernel.shape[:max(kernel.ndim - s.rank - 2, 0)])
    own = tuple(kernel.shape[len(stack):])
    features_axis = -2 if s.transposed and s.transpose_kernel else -1
    if (len(own) != s.rank + 2 or own[:s.rank] != s.kernel_size
            or own[features_axis] != s.features
            or not s.transposed and own[-1] % s.groups):
        raise ValueError(f"{where}: {s.label}: params['kernel'] has shape "
                         f"{given['kernel']}, expected {_expected(s)} (with any stack axes)")
    if s.direct_kernel:
        flat = jax.vmap(functools.partial(_to_transposed, groups=s.groups))(
            kernel.reshape((-1,) + own))
        kernel = flat.reshape(stack + flat.shape[1:])
    out = {"kernel": kernel}
    if s.use_bias:
        if bias.shape != stack + (s.features,):
            raise ValueError(f"{where}: {s.label}: params['bias'] has shape "
                             f"{given['bias']}, expected {stack + (s.features,)} (stack "
                             f"axes first)")
        out["bias"] = bias
    return out


def _stack_axes(lifted: list[Any], where: str) -> list[int]:
    """The axes on which the linen ``nn.vmap`` / ``nn.scan`` module classes among
    ``lifted`` (a module and the modules holding it, outermost first) stack their params
    (``variable_axes={"params": axis}``), in that order; a lift that broadcasts them
    (``None``, ``variable_broadcast="params"``) has none. Linen keeps ``variable_axes``
    only in the closure of the lifted class's methods (``module_class_lift_transform``),
    so it is read from there; a class it cannot be read from is refused, not guessed."""
    axes = []
    for module in lifted:
        if _lift(module) not in ("Vmap", "Scan"):
            continue
        cls = type(module)
        try:
            found = inspect.getclosurevars(cls.__dict__["__call__"]).nonlocals
            bound = inspect.signature(found["transform"]).bind(
                None, *found["trafo_args"], **found["trafo_kwargs"]).arguments
        except (KeyError, TypeError):
            raise ValueError(f"{where}: {cls.__name__}: the variable_axes of its "
                             f"nn.{_lift(module).lower()} cannot be read: port by hand") from None
        in_filter = sys.modules["flax.core.scope"].in_filter
        axis = next((a for f, a in bound.get("variable_axes", {}).items()
                     if in_filter(f, "params")), None)
        if axis is not None and not isinstance(axis, int):
            raise ValueError(f"{where}: {cls.__name__}: its nn.{_lift(module).lower()} maps "
                             f"params along {axis!r}, not one axis: port by hand")
        if axis is not None:
            axes.append(axis)
    return axes


def _nnx_stack_axes(shapes: Mapping[str, tuple[int, ...]],
                    fits: Callable[[dict[str, tuple[int, ...]]], bool], label: str,
                    where: str, remedy: str = "port by hand") -> dict[str, int]:
    """Where an NNX module made under ``nnx.vmap`` / ``nnx.scan`` holds its stack, by
    param name (``shapes``: each param's, one stack axis more than its own). NNX keeps no
    record of ``out_axes``: it is the one ``out_axes`` (one int for every param, as
    ``jax.vmap`` places it; negative: from each param's end) whose removal leaves shapes
    that ``fits`` the module. Where several fit alike (a stack of 3 beside a kernel size of
    3, say), ``out_axes=0`` (nnx.vmap's default) is taken; where that is not among them,
    refused. ``{}`` where none fits (the shape checks name what is wrong)."""
    layouts: dict[tuple[int, ...], dict[str, int]] = {}
    for out_axes in range(-min(map(len, shapes.values())), min(map(len, shapes.values()))):
        axes = {name: out_axes % len(shape) for name, shape in shapes.items()}
        own = {name: shape[:axes[name]] + shape[axes[name] + 1:]
               for name, shape in shapes.items()}
        if fits(own):
            layouts.setdefault(tuple(axes.values()), axes)
    leading = layouts.get(tuple(0 for _ in shapes))
    if len(layouts) > 1 and leading is None:
        raise ValueError(f"{where}: {label}: a stack of params of shapes {dict(shapes)}, "
                         f"which {len(layouts)} out_axes of nnx.vmap fit alike, and NNX "
                         f"keeps no record of which one made them: {remedy}")
    return leading if len(layouts) > 1 else next(iter(layouts.values()), {})


def _stacks_first(w: jax.Array, axes: list[int], own_rank: int) -> jax.Array:
    """``w`` with its stack axes moved to the front (:func:`_stack_order`). Shapes that do
    not fit are left for the shape check to name."""
    order = _stack_order(w.ndim, axes, own_rank)
    return w if order is None else jnp.transpose(w, order)


def _stack_order(ndim: int, axes: Sequence[int], own_rank: int) -> tuple[int, ...] | None:
    """The transpose of a stacked weight of ``ndim`` axes (one layer's: ``own_rank``) that
    brings its stack axes to the front, outermost first: ``axes`` are where the lifts
    holding the module put them (outermost first, each counted in the array as the lifts
    inside it left it); stack axes beyond those (lifts not seen) lead already. ``None``
    where the shape does not fit them."""
    extra = ndim - own_rank
    if extra < len(axes):
        return None
    order = list(range(ndim))
    for lead, axis in enumerate([0] * (extra - len(axes)) + list(axes)):
        here = ndim - lead
        if not -here <= axis < here:
            return None
        order.insert(lead, order.pop(lead + axis % here))
    return tuple(order)


def _expected(s: _Settings) -> str:
    k = ", ".join(map(str, s.kernel_size))
    if s.transposed:
        return (f"({k}, {s.features}, in_features)" if s.transpose_kernel else
                f"({k}, in_features, {s.features})")
    return f"({k}, in_features // {s.groups}, {s.features})"


# --- whole models -----------------------------------------------------------------------

class FlaxLayers(KerasWeights):
    """``{module_path: (layer, params)}`` of a Flax model, plus what was left out.

    Attributes:
      skipped: ``{module_path: why}`` for every leaf module kconv has no layer for: its
        class name (``Dense``, ``BatchNorm``, ...), or the class name and the reason where
        kconv's layer cannot compute this module's setting (e.g. a ``Conv`` with a mask).

    Example:
        >>> from flax import nnx
        >>> model = nnx.Sequential(nnx.Conv(3, 8, (3, 3), rngs=nnx.Rngs(0)), nnx.relu,
        ...                        nnx.Linear(8, 2, rngs=nnx.Rngs(0)))
        >>> ported = layers_from_flax(model)
        >>> list(ported), ported.skipped
        (['layers/0'], {'layers/2': 'Linear'})
    """


def layers_from_flax(model: Any, variables: Any = None, *args: Any,
                     **kwargs: Any) -> FlaxLayers:
    """Every ``Conv`` and ``ConvTranspose`` of a Flax model, as kconv layers with their
    params.

    An NNX model's modules are walked as its graph (``nnx.iter_graph``); a linen model's
    submodules exist only while it runs, so it is run abstractly (``jax.eval_shape``, no
    arithmetic) with ``model.apply(variables, *args, **kwargs)``, recording each module it
    calls. Each convolution becomes ``(layer, params)`` (:func:`layer_from_flax`,
    :func:`params_from_flax`) under its path, the names joined with ``"/"``
    (``"encoder/conv1"``, ``"layers/0"``: where its params are in the variables or the
    NNX state); so does each ``kconv.linen`` / ``kconv.nnx`` module the model holds (its
    pure layer and params as they are). A module called twice (shared weights) is listed
    once; a stack of one (under ``nn.scan``, ``nn.vmap``, ``nnx.vmap``; a block holding
    it under one) once, its params with the stack's axes first (:func:`params_from_flax`;
    a linen block's ``variable_axes`` too); one sharing its scope with another module
    (``nn.share_scope``) is read at that path. A convolution in or under a
    lifted transform that may change its params on the way in (``nn.map_variables``:
    weight standardization, say; of a module class, or of a function the module or a
    module above it is passed to) is skipped, never ported with the stored weights. A
    convolution inside ``SpectralNorm`` or ``WeightNorm`` (linen or NNX), which rescale
    the params of what they wrap at every call, is ported with the params it computes
    with: a linen one's in the call described (``update_stats=False``: eval), from one
    jitted run of Flax's own arithmetic that returns only them (XLA drops the rest of the
    model; inputs given as shapes stand in as zeros); an NNX one's at its next call (a copy of
    the wrapper called once; the model is not touched). What an NNX wrapper holds deeper
    than its ``layer_instance`` is skipped with the reason.

    Args:
      model: a ``flax.nnx.Module``, or a ``flax.linen.Module`` with submodules.
      variables: a linen model's variables (what ``model.init`` returned, with
        ``"params"``); none for an NNX model.
      *args: what ``model.apply`` takes after the variables (a linen model): the inputs
        (arrays, or ``jax.ShapeDtypeStruct``), with ``**kwargs`` such as ``train=False``,
        ``method=``, ``rngs=``; ``mutable=True`` is added unless given (a model that
        updates its batch statistics then runs).

    Returns:
      A :class:`FlaxLayers` of ``{path: (layer, params)}``, with ``.skipped``.

    Raises:
      TypeError: ``model`` is not a Flax module with submodules (for one module use
        :func:`layer_from_flax`); variables or inputs for an NNX model, or no variables
        for a linen one.

    Example:
        >>> import flax.linen as nn, jax, jax.numpy as jnp
        >>> from kconv.interop import layers_from_flax
        >>> class Net(nn.Module):
        ...     @nn.compact
        ...     def __call__(self, x):
        ...         x = nn.relu(nn.Conv(8, (3, 3), name="conv")(x))
        ...         return nn.ConvTranspose(4, (2, 2), strides=(2, 2), name="up")(x)
        >>> x = jnp.ones((1, 8, 8, 3))
        >>> variables = Net().init(jax.random.key(0), x)
        >>> ported = layers_from_flax(Net(), variables, x)
        >>> {path: type(layer).__name__ for path, (layer, params) in ported.items()}
        {'conv': 'Conv2D', 'up': 'Conv2DTranspose'}
    """
    where = "layers_from_flax"
    linen, nnx = _flax()
    if type(model) in _classes():
        raise TypeError(f"{where}: {type(model).__name__} is one convolution: use "
                        f"layer_from_flax and params_from_flax")
    if isinstance(model, nnx.Module):
        if variables is not None or args or kwargs:
            raise TypeError(f"{where}: {type(model).__name__} is an NNX model, which holds "
                            f"its params and needs no inputs: call layers_from_flax(model)")
        modules = {tuple(map(str, path)): node for path, node in nnx.iter_graph(model)
                   if isinstance(node, nnx.Module)}
        params_at = lambda path: None  # noqa: E731 - NNX modules hold theirs
        modules, refused = _nnx_wrapped(modules)
    elif isinstance(model, linen.Module):
        if variables is None:
            raise TypeError(f"{where}: {type(model).__name__} is a linen model: pass the "
                            f"variables model.init returned and the inputs model.apply "
                            f"takes")
        modules, wrapped, mapped = _linen_modules(model, variables, args, kwargs)
        params_at = functools.partial(_params_at, variables)
        refused = {path: _MAPPED_REFUSED for path in mapped}
        if wrapped:  # the wrappers' own variables are read into the params they hand on
            seen = _params_seen(model, variables, args, kwargs, set(wrapped))
            modules = {path: m for path, m in modules.items() if path not in wrapped.values()}
            params_at = lambda path: seen[path] if path in seen else _params_at(  # noqa: E731
                variables, path)
    else:
        raise TypeError(f"{where}: expected a flax.nnx or flax.linen Module, got "
                        f"{type(model).__name__}")
    if len(modules) < 2:
        raise TypeError(f"{where}: {type(model).__name__} has no submodules (a linen "
                        f"model: none that it calls)")
    found, skipped = {}, {}
    for path, module in modules.items():
        name = "/".join(path)
        is_conv = isinstance(module, tuple(_classes()))
        lifts = [modules.get(path[:i]) for i in range(1, len(path) + 1)]  # outermost first
        changer = next((modules[path[:i]] for i in range(len(path), 0, -1)
                        if _lift(modules.get(path[:i])) not in (None, *_READ_LIFTS)), None)
        if path in refused:
            skipped[name] = f"{type(module).__name__}: {refused[path]}"
        elif changer is not None and (is_conv or isinstance(module, _kconv_modules())):
            skipped[name] = f"{type(module).__name__}: {_lift_refused(changer)}"
        elif is_conv:  # a subclass says why it is skipped
            try:
                axes = _stack_axes(lifts, "params_from_flax")
                found[name] = (layer_from_flax(module),
                               _params(module, params_at(path), "params_from_flax", axes))
            except (ValueError, TypeError) as e:
                why = str(e).partition(": ")[2]
                skipped[name] = f"{type(module).__name__}: {why}"
        elif isinstance(module, _kconv_modules()):
            try:
                found[name] = _kconv_layer(module, params_at, path,
                                           _stack_axes(lifts, "layers_from_flax"))
            except ValueError as e:
                skipped[name] = f"{type(module).__name__}: {str(e).partition(': ')[2]}"
        elif path and not any(other[:len(path)] == path and other != path
                              for other in modules):
            skipped[name] = type(module).__name__
    return FlaxLayers(found, skipped)


def _kconv_modules() -> tuple[type, type]:
    """The bases of ``kconv.linen``'s and ``kconv.nnx``'s modules (loaded on first use)."""
    from kconv import linen as kconv_linen
    from kconv import nnx as kconv_nnx

    return kconv_linen.KconvModule, kconv_nnx.KconvModule


def _kconv_layer(module: Any, params_at: Callable, path: tuple[str, ...], axes: list[int]
                 ) -> tuple[Layer, dict[str, Any]]:
    """A ``kconv.linen`` / ``kconv.nnx`` module's pure layer and params, a stack's axes
    moved to the front as :func:`params_from_flax` does (``axes``: a linen one's lifts')."""
    if isinstance(module, _kconv_modules()[1]):
        return module.layer, module._stacked()[0]  # a stack's axis read off its shapes
    layer = module.pure_layer
    params = dict(_flax()[0].meta.unbox(params_at(path))) if layer.has_weights else {}
    # Its own: a module sharing its scope (nn.share_scope) may hold params beside them.
    params = {name: value for name, value in params.items() if name in layer._names()}
    if not params:
        return layer, params
    own = layer._weight_ranks()
    return layer, {name: _stacks_first(jnp.asarray(v), axes, own.get(name, np.ndim(v)))
                   for name, v in params.items()}


def _kconv_stack_axes(layer: Layer, params: Mapping[str, Any], where: str
                      ) -> dict[str, int]:
    """Where the params of a ``kconv.nnx`` module made under ``nnx.vmap`` / ``nnx.scan``
    hold its stack, by weight name (:func:`_nnx_stack_axes`, checked against ``layer``'s
    own shapes); ``{}`` for one layer's weights, or deeper stacks (their axes lead)."""
    own = layer._weight_ranks()
    if not params or not all(np.ndim(v) == own.get(name, -1) + 1 for name, v in params.items()):
        return {}

    def fits(shapes: dict[str, tuple[int, ...]]) -> bool:
        try:
            layer._check_weights({name: np.broadcast_to(np.float32(0), shape)
                                  for name, shape in shapes.items()}, "")
        except (ValueError, TypeError):
            return False
        return True

    return _nnx_stack_axes({name: np.shape(v) for name, v in params.items()}, fits,
                           type(layer).__name__, where,
                           "make the stack with nnx.vmap's out_axes=0")


def _nnx_wrapped(modules: dict[tuple[str, ...], Any]
                 ) -> tuple[dict[tuple[str, ...], Any], dict[tuple[str, ...], str]]:
    """An NNX model's modules with each Flax convolution that an ``nnx.SpectralNorm`` /
    ``nnx.WeightNorm`` wraps replaced by the convolution as its next call computes: the
    wrapper rescales the params in place before every call, so a copy of it is called
    once (on zeros; Flax's own arithmetic) and its convolution read. What such a wrapper
    holds deeper (a Sequential of convolutions, a kconv module) is refused, with the
    reason, by path."""
    nnx = _flax()[1]
    modules, refused = dict(modules), {}
    for path, module in list(modules.items()):
        wrapper = next((modules[path[:i]] for i in range(len(path) - 1, 0, -1)
                        if isinstance(modules.get(path[:i]), _weight_wrappers())), None)
        if wrapper is None or not isinstance(module, (*_classes(), *_kconv_modules())):
            continue
        if path[-1] != "layer_instance" or modules[path[:-1]] is not wrapper or \
                isinstance(module, _kconv_modules()):
            refused[path] = (f"inside nnx.{type(wrapper).__name__}, which rescales its params "
                             f"at every call: port the module it wraps by hand")
            continue
        try:
            s = _read(module, "layers_from_flax")
        except (ValueError, TypeError):
            continue  # what layer_from_flax refuses is skipped with its reason
        copy = nnx.clone(wrapper)
        copy(jnp.zeros((1, *s.dilated, module.in_features), jnp.float32))
        modules[path] = copy.layer_instance
    return modules, refused


def _linen_modules(model: Any, variables: Any, args: tuple, kwargs: dict,
                   run: Callable[[], Any] | None = None
                   ) -> tuple[dict[tuple[str, ...], Any], dict[tuple[str, ...], tuple[str, ...]],
                              set[tuple[str, ...]]]:
    """Every module a linen model calls while it runs, by path (the first call's). A
    module under a lifted transform (``nn.vmap(nn.Conv)``) is recorded as the transform's
    class: its instance runs (outside the model's scope) just before the module inside.
    Also the convolutions (Flax's, kconv's) that run inside an ``nn.SpectralNorm`` /
    ``nn.WeightNorm``, which hands them rescaled params: ``{path: the wrapper's path}``;
    and those that run (in any call) inside a function-form ``nn.map_variables``, which
    may change them on the way in. ``run``: the call watched (``model.init`` for a model
    without variables yet); ``model.apply`` of ``variables`` by default."""
    seen: dict[tuple[str, ...], Any] = {}
    wrapped: dict[tuple[str, ...], tuple[str, ...]] = {}
    mapped: set[tuple[str, ...]] = set()
    lifted: list[Any] = []
    calling: list[Any] = []  # the modules whose methods are running, outermost first

    def record(call: Callable, call_args: tuple, call_kwargs: dict, context: Any) -> Any:
        module = context.module
        if _lift(module) is not None:
            lifted.append(module)
            return call(*call_args, **call_kwargs)
        # The wrappers (nested lifts: several) just before this call are this module's.
        chain = [outer for outer in lifted if outer.name == module.name]
        lifted.clear()
        outer = next((o for o in chain if _lift(o) not in _READ_LIFTS),
                     chain[-1] if chain else module)
        path = tuple(module.path)
        is_conv = isinstance(module, (*_classes(), *_kconv_modules()))
        if is_conv and path and path in seen and not isinstance(
                seen[path], (*_classes(), *_kconv_modules())):
            # nn.share_scope: a module and the convolution whose scope it shares have one
            # path; the convolution is what is read there (its params are the scope's).
            seen[path] = outer
        seen.setdefault(path, outer)
        wrapper = next((m for m in reversed(calling) if isinstance(m, _weight_wrappers())),
                       None)
        if is_conv:
            if wrapper is not None:
                wrapped.setdefault(tuple(module.path), tuple(wrapper.path))
            elif module.path and not chain and _in_mapped_function():
                mapped.add(tuple(module.path))
        calling.append(module)
        try:
            return call(*call_args, **call_kwargs)
        finally:
            calling.pop()

    if run is None:
        leaves, traced, apply = _linen_apply(model, args, kwargs)
        run = functools.partial(jax.eval_shape, apply, variables, [leaves[i] for i in traced])
    with _flax()[0].intercept_methods(record):
        run()
    return seen, wrapped, mapped


def _linen_apply(model: Any, args: tuple, kwargs: dict) -> tuple[list, list[int], Callable]:
    """``model.apply(variables, *args, **kwargs)`` as a function of the variables and the
    array leaves among the inputs (arrays and shapes: traced), with the flattened inputs
    and those leaves' positions; the rest (``train=False``, ``method=``) stays Python
    values the model may branch on. ``mutable=True`` unless given."""
    leaves, tree = jax.tree.flatten((args, {"mutable": True, **kwargs}))
    traced = [i for i, leaf in enumerate(leaves)
              if isinstance(leaf, (jax.Array, np.ndarray, jax.ShapeDtypeStruct))]

    def apply(v: Any, values: list) -> Any:
        full = list(leaves)
        for i, value in zip(traced, values):
            full[i] = value
        call_args, call_kwargs = jax.tree.unflatten(tree, full)
        return model.apply(v, *call_args, **call_kwargs)

    return leaves, traced, apply


def _params_seen(model: Any, variables: Any, args: tuple, kwargs: dict,
                 paths: set[tuple[str, ...]]) -> dict[tuple[str, ...], Any]:
    """The params the modules at ``paths`` compute with in this call (an
    ``nn.SpectralNorm`` / ``nn.WeightNorm`` rescales them on the way in), computed by Flax
    itself: one jitted run that returns only them, so XLA drops the rest of the model. The
    wrappers read only the variables, so inputs given as shapes are zeros of them (keys:
    a key)."""
    leaves, traced, apply = _linen_apply(model, args, kwargs)
    given = [i for i in traced if not isinstance(leaves[i], jax.ShapeDtypeStruct)]

    def collect(v: Any, arrays: list) -> dict[tuple[str, ...], Any]:
        values = dict(zip(given, arrays))
        captured: dict[tuple[str, ...], Any] = {}

        def grab(call: Callable, call_args: tuple, call_kwargs: dict, context: Any) -> Any:
            path = tuple(context.module.path)
            if path in paths and path not in captured and context.method_name == "__call__":
                captured[path] = dict(context.module.variables.get("params", {}))
            return call(*call_args, **call_kwargs)

        with _flax()[0].intercept_methods(grab):
            apply(v, [values[i] if i in values else _stand_in(leaves[i]) for i in traced])
        return captured

    return jax.jit(collect)(variables, [leaves[i] for i in given])


def _stand_in(shape: jax.ShapeDtypeStruct) -> jax.Array:
    """An array of a ``ShapeDtypeStruct``'s shape and dtype: zeros, or a key."""
    if jax.dtypes.issubdtype(shape.dtype, jax.dtypes.prng_key):
        return jax.random.split(jax.random.key(0), shape.shape)
    return jnp.zeros(shape.shape, shape.dtype)


def _params_at(variables: Any, path: tuple[str, ...]) -> Any:
    """The subtree of ``variables["params"]`` at a module's path."""
    node = variables.get("params") if isinstance(variables, Mapping) else None
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    if node is None:
        raise ValueError(f"layers_from_flax: no params under variables['params'] at "
                         f"{'/'.join(path)!r}")
    return node
