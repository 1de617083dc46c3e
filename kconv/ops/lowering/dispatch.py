"""The rule applied: every kconv op's call goes through :func:`conv`, :func:`conv_transpose`
or :func:`upsample`, which take the lowering :func:`~kconv.ops.lowering.rule.choose` picks
(per platform, where the process has an accelerator), add the bias and record the choice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from kconv import config
from kconv.ops.lowering.spec import Array, ConvSpec, UpsampleSpec, XLA, _channel_axis
from kconv.ops.lowering.rule import choose
from kconv.ops.lowering.plain import _xla_conv, _xla_conv_transpose
from kconv.ops.lowering.pointwise_dot import pointwise_dot
from kconv.ops.lowering.primitives import materialized
from kconv.ops.lowering.depthwise_taps import depthwise_taps
from kconv.ops.lowering.grouped import block_diagonal, grouped_split
from kconv.ops.lowering.eigen_crop import eigen_crop
from kconv.ops.lowering.tap_loop import tap_loop
from kconv.ops.lowering.width_fold import width_fold
from kconv.ops.lowering.space_to_batch import space_to_batch
from kconv.ops.lowering.transposed import flipped_forward, strided_dual, subpixel_transpose
from kconv.ops.lowering.bilinear_stencil import bilinear_stencil


_recorders: list[list[tuple[str, str]]] = []


@contextlib.contextmanager
def recorded_choices() -> Iterator[list[tuple[str, str]]]:
    """Records ``(op, lowering)`` for every kconv op traced (or run eagerly) inside.

    The lowering is what the CPU gets (a CUDA GPU gets ``choose(op, "cuda", spec)``, any
    other platform ``"xla"``). Under ``kconv.config.conv_lowering("xla")`` every entry is
    ``"xla"``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from kconv import ops
        >>> with recorded_choices() as calls:
        ...     _ = jax.eval_shape(lambda x: ops.separable_conv(
        ...         x, jnp.ones((3, 3, 8, 1)), jnp.ones((1, 1, 8, 16))), jnp.ones((1, 9, 9, 8)))
        >>> calls
        [('conv', 'depthwise_taps'), ('conv', 'pointwise_dot')]
    """
    calls: list[tuple[str, str]] = []
    _recorders.append(calls)
    try:
        yield calls
    finally:
        _recorders.remove(calls)


def _dispatch(op: str, spec: Any, lowering: Callable[[str, bool], Callable[..., Array]],
              *args: Array) -> Array:
    """The chosen lowerings of one call, applied to ``args``: ``lowering(name, device)`` is
    lowering ``name`` (or ``"xla"``) as the CPU runs it (``device=False``) or as a GPU or
    TPU does (``True``: :func:`_device_plain`); equal calls give the same object."""
    args = _varying_alike(args)
    mode = config.get_conv_lowering()
    cpu_name = XLA if mode == XLA else choose(op, "cpu", spec)
    for calls in _recorders:
        calls.append((op, cpu_name))
    cpu = lowering(cpu_name, False)
    if mode != "portable" and jax.default_backend() == "cpu":
        # A CPU-only process runs every program on XLA:CPU: decide now, so that reverse
        # mode does not linearize and transpose a switch's two branches (W4
        # forward+backward 1.73 -> 1.37x lax's lower + compile).
        return cpu(*args)
    cuda_name = XLA if mode == XLA else choose(op, "cuda", spec)
    branches = {"cpu": cpu, "cuda": lowering(cuda_name, True),
                "default": lowering(XLA, True)}
    if all(fn is cpu for fn in branches.values()):
        return cpu(*args)
    # Decided for the platform the computation is lowered for: only the CPU branch reaches
    # XLA:CPU's compiler, only the CUDA one a CUDA GPU's, the default any other backend's.
    return lax.platform_dependent(*args, **branches)


def _varying_axes(x: Array) -> frozenset:
    """The manual mesh axes ``x`` varies over inside :func:`jax.shard_map` (none outside)."""
    aval = jax.typeof(x)
    mat = getattr(aval, "mat", None)  # newer jax; older ones give the aval a vma
    return frozenset(mat.varying if mat is not None else getattr(aval, "vma", ()))


def _varying_alike(args: tuple[Array, ...]) -> tuple[Array, ...]:
    """``args`` made to vary over the same manual mesh axes (inside :func:`jax.shard_map`
    with ``check_vma``): the union of theirs, as lax's own ops make their operands. The
    lowerings' primitives and transposes then see one kind of operand, and a replicated
    kernel's gradient is summed over the axes its input varies over, as lax's is (the
    transpose of the cast). Outside ``shard_map``, the arguments as they are."""
    axes = [_varying_axes(a) for a in args]
    union = frozenset().union(*axes)
    if all(a == union for a in axes):
        return args
    cast = getattr(lax, "pcast", None)
    vary = (lambda x, names: cast(x, names, to="varying")) if cast is not None \
        else lax.pvary  # older jax
    return tuple(a if axes_ == union else vary(a, tuple(sorted(union - axes_)))
                 for a, axes_ in zip(args, axes))


def _conv_lowerings(plain: Callable[..., Array], lowerings: dict[str, Callable[..., Array]],
                    spec: ConvSpec, precision: Any
                    ) -> Callable[[str, bool], Callable[..., Array]]:
    """:func:`_dispatch`'s ``lowering`` for a convolution, ``(x, kernel[, bias])``: the
    bias added (:func:`_biased`), and on a device the 16-bit path where it applies."""
    narrow = _narrowed_on_device(spec)

    @functools.cache
    def lowering(name: str, device: bool) -> Callable[..., Array]:
        fn = plain if name == XLA else lowerings[name]
        if device and narrow:
            return _device_plain(fn, spec, precision)
        biased = _biased(fn, spec, precision)
        if name in _MATERIALIZED:
            return lambda *args: materialized(biased(*args))
        return biased

    return lambda name, device: lowering(name, device and narrow)


def _biased(fn: Callable[..., Array], spec: ConvSpec, precision: Any) -> Callable[..., Array]:
    """``fn``'s convolution, then the optional bias (``(x, kernel[, bias])``)."""
    return lambda x, kernel, *bias: add_bias(fn(x, kernel, spec=spec, precision=precision),
                                             spec, *bias)


def add_bias(y: Array, spec: ConvSpec, bias: Array | None = None) -> Array:
    """``y + bias`` on the channel axis, in ``y``'s dtype (the accumulation dtype when one
    is asked for: a 16-bit layer adds its bias in float32, as Keras).

    Example:
        >>> spec = ConvSpec(1, "channels_first", (1, 2, 3), (1, 2, 2), (1,), ((0, 0),), (1,))
        >>> add_bias(jnp.zeros((1, 2, 3)), spec, jnp.array([1.0, 2.0]))[0]
        Array([[1., 1., 1.],
               [2., 2., 2.]], dtype=float32)
    """
    if bias is None:
        return y
    # lax, not jnp's ``+``: under autodiff jnp's jitted operator is traced and linearized
    # as a nested function (X1 forward+backward, ~5 ms of tracing).
    return lax.add(y, lax.broadcast_in_dim(jnp.asarray(bias).astype(y.dtype), y.shape,
                                           (_channel_axis(spec),)))


def _device_plain(fn: Callable[..., Array], spec: ConvSpec, precision: Any
                  ) -> Callable[..., Array] | None:
    """``fn`` (XLA's convolution, or the GPU's lowering) of a 16-bit float convolution with
    a wider ``preferred_element_type`` (the layers' float32 accumulation) as a GPU or TPU
    computes it, else ``None`` (the CPU's way).

    Their convolution units accumulate 16-bit products in float32 already, but have no
    kernel with 16-bit operands and a float32 output: XLA:GPU widens the operands and runs
    a float32 convolution, and the transposes (the gradients, whose cotangent is then
    float32) are float32 convolutions too. On an H200, at 8× the benchmark batch in
    bfloat16, that ran W1 forward 0.32 against lax's 0.23 ms and W6 forward+backward 4.8
    against 1.0 ms. So there the convolution's output is the 16-bit dtype, widened after
    (a layer's activation and final rounding stay in float32): up to two roundings more
    than the CPU's path (the output's, the bias add's), the cost of lax's speed.

    The bias, where the call has one, is added before the widening, in the 16-bit dtype
    (as lax, Flax and Keras add it): XLA:GPU then fuses it into cuDNN's convolution, as it
    does lax's, and the widening and a layer's final rounding cancel when no activation
    comes between (:func:`_biased`'s arguments, ``(x, kernel[, bias])``).
    """
    if not _narrowed_on_device(spec):
        return None
    wide = spec.preferred_element_type
    narrow = _biased(fn, dataclasses.replace(spec, preferred_element_type=None), precision)
    return lambda x, kernel, *bias: narrow(x, kernel, *bias).astype(wide)


def _narrowed_on_device(spec: ConvSpec) -> bool:
    """Whether :func:`_device_plain` applies: 16-bit float operands, a wider float
    ``preferred_element_type``."""
    wide = spec.preferred_element_type
    return (wide is not None and jnp.issubdtype(spec.dtype, jnp.floating)
            and jnp.issubdtype(wide, jnp.floating)
            and spec.dtype.itemsize < min(4, wide.itemsize))


def conv(x: Array, kernel: Array, spec: ConvSpec, *, precision: Any = None,
         bias: Array | None = None) -> Array:
    """A forward convolution (dense, grouped or depthwise), lowered by :func:`choose`,
    plus the optional bias (:func:`add_bias`).

    Args:
      x: ``spec.input_shape``.
      kernel: ``(*kernel_size, C // groups, filters)``, the dtype of ``x``.
      spec: the call's facts.
      precision: as ``lax.conv_general_dilated``.
      bias: ``None`` or ``(filters,)``.

    Example:
        >>> spec = ConvSpec(1, "channels_last", (1, 4, 1), (3, 1, 1), (1,), ((1, 1),), (1,))
        >>> conv(jnp.ones((1, 4, 1)), jnp.ones((3, 1, 1)), spec, bias=jnp.array([0.5]))[0, :, 0]
        Array([2.5, 3.5, 3.5, 2.5], dtype=float32)
    """
    return _dispatch("conv", spec, _conv_lowerings(_xla_conv, _CONV_LOWERINGS, spec, precision),
                     *_with_bias(x, kernel, bias))


def conv_transpose(x: Array, kernel: Array, spec: ConvSpec, *, precision: Any = None,
                   bias: Array | None = None) -> Array:
    """A transposed convolution, lowered by :func:`choose`, plus the optional bias.

    Args:
      x: ``spec.input_shape``.
      kernel: ``(*kernel_size, filters // groups, C)``.
      spec: the call's facts; ``spec.padding`` pads the stride-dilated input.
      precision: as ``lax.conv_general_dilated``.
      bias: ``None`` or ``(filters,)``.

    Example:
        >>> spec = ConvSpec(1, "channels_last", (1, 2, 1), (2, 1, 1), (2,), ((1, 1),), (1,))
        >>> conv_transpose(jnp.array([[[1.0], [2.0]]]), jnp.ones((2, 1, 1)), spec)[0, :, 0]
        Array([1., 1., 2., 2.], dtype=float32)
    """
    return _dispatch("conv_transpose", spec,
                     _conv_lowerings(_xla_conv_transpose, _TRANSPOSE_LOWERINGS, spec,
                                     precision),
                     *_with_bias(x, kernel, bias))


def _with_bias(x: Array, kernel: Array, bias: Array | None) -> tuple[Array, ...]:
    return (x, kernel) if bias is None else (x, kernel, jnp.asarray(bias))


def upsample(x: Array, spec: UpsampleSpec, plain: Callable[[Array], Array]) -> Array:
    """An interpolating upsampling, lowered by :func:`choose`; ``plain(x)`` is the
    ``jax.image.resize`` path (kept in :mod:`kconv.ops.reshape`, next to Keras's rules).

    Example:
        >>> spec = UpsampleSpec("bilinear", (1, 2, 2, 1), (1, 2), (2, 2))
        >>> plain = lambda x: jax.image.resize(x, (1, 4, 4, 1), "bilinear")
        >>> x = jnp.arange(4.0).reshape(1, 2, 2, 1)
        >>> bool(jnp.allclose(upsample(x, spec, plain), plain(x)))
        True
    """
    stencil = functools.partial(bilinear_stencil, spec=spec, plain=plain)
    return _dispatch("upsample", spec,
                     lambda name, device: plain if name == XLA else stencil, x)


def _cpu_conv(x: Array, kernel: Array, spec: ConvSpec, precision: Any, *,
              fold: bool = True) -> Array:
    """The CPU lowering of a forward convolution, called from inside another CPU lowering
    (already on the CPU branch, so no second platform switch); ``fold=False`` keeps a 3-D
    one off :func:`width_fold`."""
    name = choose("conv", "cpu", spec)
    if name == "width_fold" and not fold:
        name = XLA
    fn = _xla_conv if name == XLA else _CONV_LOWERINGS[name]
    y = fn(x, kernel, spec=spec, precision=precision)
    return materialized(y) if name in _MATERIALIZED else y


def _cpu_conv_transpose(x: Array, kernel: Array, spec: ConvSpec, precision: Any) -> Array:
    """:func:`_cpu_conv` for a transposed convolution."""
    name = choose("conv_transpose", "cpu", spec)
    fn = _xla_conv_transpose if name == XLA else _TRANSPOSE_LOWERINGS[name]
    return fn(x, kernel, spec=spec, precision=precision)


_CONV_LOWERINGS: dict[str, Callable[..., Array]] = {
    "pointwise_dot": pointwise_dot,
    "space_to_batch": space_to_batch,  # the GPU's
    "depthwise_taps": depthwise_taps,
    "block_diagonal": block_diagonal,
    "grouped_split": grouped_split,
    "eigen_crop": eigen_crop,
    "width_fold": width_fold,
    "tap_loop": tap_loop,
}


#: The lowerings whose value is a chain of cheap elementwise operations, which XLA:CPU
#: would copy into every consumer and, for one reading it at shifted positions (another
#: depthwise convolution's taps, their transposes), once per position: their output
#: (with the bias) goes through :func:`~.primitives.materialized`.
_MATERIALIZED = frozenset({"depthwise_taps"})


_TRANSPOSE_LOWERINGS: dict[str, Callable[..., Array]] = {
    "subpixel_transpose": subpixel_transpose,
    "strided_dual": strided_dual,  # the GPU's
    "flipped_forward": flipped_forward,
    # Each group a dense transposed convolution on its slice (kernel[..., j * C/g:…]).
    "grouped_split": functools.partial(grouped_split, lower=_cpu_conv_transpose),
}
