"""Machinery shared by the four convolution families (dense, transposed, depthwise,
separable): argument canonicalisation, weights, bias, activation and dtype handling.

A family subclass says only what differs: its weights' shapes, how it reads the input
channel count from params, its output shape and which ``kconv.ops`` function it calls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from kconv import _args
from kconv.layers.base import Layer, Weight, resolve_objects, weight_initializer


@dataclasses.dataclass(frozen=True)
class BaseConv(Layer):
    """Common base of the convolution layers (not used directly)."""

    #: weight name -> prefix of its ``*_initializer`` / ``*_regularizer`` / ``*_constraint``.
    weight_args: ClassVar[dict[str, str]] = {}
    #: padding strings this family accepts (``causal`` is added for rank 1 where allowed).
    paddings: ClassVar[tuple[str, ...]] = ("valid", "same")
    causal_1d: ClassVar[bool] = True
    #: transposed convolutions take only ``padding_mode="zeros"`` (their padding crops).
    transposed: ClassVar[bool] = False
    has_weights: ClassVar[bool] = True

    def _canonicalize(self, values: dict[str, Any]) -> dict[str, Any]:
        values = super()._canonicalize(values)
        where, n = type(self).__name__, self.rank
        if "filters" in values:
            values["filters"] = _args.positive_int(values["filters"], "filters", where)
        values["kernel_size"] = _args.int_tuple(values["kernel_size"], n, "kernel_size", where)
        values["strides"] = _args.int_tuple(values["strides"], n, "strides", where)
        values["dilation_rate"] = _args.int_tuple(values["dilation_rate"], n,
                                                  "dilation_rate", where)
        allowed = self.paddings + (("causal",) if n == 1 and self.causal_1d else ())
        values["padding"] = _args.conv_padding(values["padding"], n, where, allowed)
        values["padding_mode"] = _args.conv_padding_mode(values["padding_mode"], where,
                                                         transposed=self.transposed)
        values["data_format"] = _args.data_format(values["data_format"], where)
        if "depth_multiplier" in values:
            values["depth_multiplier"] = _args.positive_int(values["depth_multiplier"],
                                                            "depth_multiplier", where)
        if "groups" in values:  # Conv (Keras) and ConvTranspose (beyond Keras)
            values["groups"] = _args.positive_int(values["groups"], "groups", where)
            if values["filters"] % values["groups"]:
                raise ValueError(f"{where}: filters must be divisible by groups, got "
                                 f"filters={values['filters']}, groups={values['groups']}")
        if not isinstance(values["use_bias"], (bool, np.bool_)):
            raise TypeError(f"{where}: use_bias must be a bool, got {values['use_bias']!r}")
        values["use_bias"] = bool(values["use_bias"])  # a NumPy bool too, as Keras takes
        return resolve_objects(where, values)

    # --- what a family defines ----------------------------------------------------
    def _shapes(self, in_channels: int) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def _param_in_channels(self, params: Mapping[str, jax.Array]) -> int:
        raise NotImplementedError

    def _forward(self, params: Mapping[str, jax.Array], x: jax.Array,
                 accumulation: Any) -> jax.Array:
        """The family's op on ``x``, its bias included: the op adds :meth:`_bias`."""
        raise NotImplementedError

    def _check_in_channels(self, in_channels: int, shape: Any) -> None:
        """Constraints on the input channel count: ``groups`` must divide it."""
        groups = getattr(self, "groups", 1)
        if in_channels % groups:
            raise ValueError(f"{type(self).__name__}: the input channels ({in_channels}) must "
                             f"be divisible by groups={groups}, got {shape}")

    # --- shared -------------------------------------------------------------------
    def _names(self) -> list[str]:
        return [name for name in self.weight_args if name != "bias" or self.use_bias]

    def _weight(self, name: str, shape: tuple[int, ...]) -> Weight:
        prefix = self.weight_args[name]
        return Weight(shape, weight_initializer(getattr(self, f"{prefix}_initializer")),
                      getattr(self, f"{prefix}_regularizer"),
                      getattr(self, f"{prefix}_constraint"))

    def weights(self, input_shape: Sequence[int | None]) -> dict[str, Weight]:
        where = type(self).__name__
        shape = _args.input_shape(input_shape, self.rank, where)
        in_channels = shape[_args.channel_axis(self.data_format, self.rank)]
        if not isinstance(in_channels, int):  # None, or a symbolic dim
            raise ValueError(f"{where}: the channel dimension of the input must be known, "
                             f"got input_shape {tuple(input_shape)} "
                             f"(data_format {self.data_format!r})")
        return self.weights_for_channels(in_channels)

    def weights_for_channels(self, in_channels: int) -> dict[str, Weight]:
        in_channels = _args.positive_int(in_channels, "in_channels", type(self).__name__)
        self._check_in_channels(in_channels, f"in_channels={in_channels}")
        shapes = self._shapes(in_channels)
        return {name: self._weight(name, shapes[name]) for name in self._names()}

    def input_channels(self, x_shape: Sequence[int]) -> int:
        if len(x_shape) < self.rank + 1:
            raise ValueError(
                f"{type(self).__name__}: expected an input of rank {self.rank + 2} (or "
                f"{self.rank + 1} unbatched) with data_format {self.data_format!r}, got "
                f"shape {tuple(x_shape)}")
        return x_shape[_args.channel_axis(self.data_format, self.rank)]

    def _weight_ranks(self) -> dict[str, int]:
        # The shapes' lengths do not depend on the channel count (groups divide it).
        return {name: len(shape) for name, shape in
                self._shapes(getattr(self, "groups", 1)).items()}

    def _weights_from_params(self, params: Mapping[str, jax.Array]) -> dict[str, Weight]:
        return {name: self._weight(name, tuple(params[name].shape))
                for name in self._names() if name in params}

    def _compute_dtype(self, x: jax.Array) -> Any:
        if self.dtype is not None:
            return self.dtype
        # None means the input's dtype; integer inputs compute in param_dtype (as Keras
        # autocasts them to its float policy).
        return x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else self.param_dtype

    def apply(self, params: Mapping[str, jax.Array], x: jax.Array) -> jax.Array:
        """Applies the layer: convolution, then bias, then activation.

        Args:
          params: the dict :meth:`init` returns (Keras weight names).
          x: ``(batch, *spatial, channels)`` or ``(batch, channels, *spatial)``; an
            unbatched input (rank ``N + 1``) and extra leading batch dims work too.

        Returns:
          The output, in the compute dtype (``dtype``, else the input's floating dtype).
          A 16-bit compute dtype (``"bfloat16"``, ``"float16"``, the ``mixed_*`` policies)
          convolves the 16-bit input and weights with float32 accumulation
          (``preferred_element_type``), adds the bias and applies the activation in
          float32, and rounds once at the end: no float16 overflow of partial sums. On
          a GPU or TPU, which accumulate in float32 by themselves, the convolution's
          output and the bias add are in the 16-bit dtype (lax's program; README, "Mixed
          precision").
        """
        where = type(self).__name__
        self._check_params(params, where)
        params = {name: _args.as_array(value, f"params[{name!r}]", where)
                  for name, value in params.items()}
        x = _args.as_array(x, "inputs", where)
        for name, value in (("inputs", x), *((f"params[{k!r}]", v) for k, v in params.items())):
            if jnp.iscomplexobj(value):  # astype would drop the imaginary part silently
                raise TypeError(f"{where}: {name} must be real (floating or integer), got "
                                f"dtype {value.dtype}; Keras's convolution layers compute "
                                f"on real inputs")
        if x.ndim < self.rank + 1:
            raise ValueError(
                f"{where}: expected an input of rank {self.rank + 2} (or {self.rank + 1} "
                f"unbatched) with data_format {self.data_format!r}, got shape {x.shape}")
        axis = _args.channel_axis(self.data_format, self.rank)
        expected = self._param_in_channels(params)
        if x.shape[axis] != expected:
            raise ValueError(
                f"{where}: the params expect {expected} input channels, got an input of "
                f"shape {x.shape} with {x.shape[axis]} channels on axis {axis} "
                f"(data_format {self.data_format!r})")
        self._check_param_shapes(params, expected, where)
        dtype = self._compute_dtype(x)
        accumulation = jnp.float32 if jnp.finfo(dtype).bits < 32 else None
        cast = {name: jnp.asarray(params[name]).astype(dtype) for name in self._names()}
        with jax.named_scope(where):
            y = self._forward(cast, x.astype(dtype), accumulation)
            return self.activation(y).astype(dtype)

    def _check_params(self, params: Mapping[str, jax.Array], where: str) -> None:
        """Exactly the weights this layer takes: a missing one, or one it would ignore
        (a ``bias`` with ``use_bias=False``, LoRA weights on a layer without LoRA, another
        layer's params), raises."""
        self._check_params_type(params, where)
        names = self._names()
        missing = [name for name in names if name not in params]
        unused = sorted(set(params) - set(names))
        if missing or unused:
            what = " and ".join([f"are missing {missing}"] * bool(missing) + [
                f"have {unused}, which the layer does not use"] * bool(unused))
            raise ValueError(f"{where}: params {what}; it takes {names} (use_bias="
                             f"{self.use_bias}{self._params_note()}), got keys {sorted(params)}")

    def _check_weights(self, params: Mapping[str, Any], where: str) -> int:
        self._check_params(params, where)
        first = self._names()[0]
        if len(np.shape(params[first])) != self.rank + 2:
            raise ValueError(f"{where}: params[{first!r}] must have rank {self.rank + 2}, "
                             f"got shape {tuple(np.shape(params[first]))}")
        in_channels = self._param_in_channels({n: np.asarray(v) for n, v in params.items()})
        try:
            self.weights_for_channels(in_channels)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{where}: the weights do not fit the config: {e}") from e
        self._check_param_shapes(params, in_channels, where)
        return in_channels

    def _params_note(self) -> str:
        """More of the config that decides the weight names, for :meth:`_check_params`."""
        return ""

    def _check_param_shapes(self, params: Mapping[str, jax.Array], in_channels: int,
                            where: str) -> None:
        """Every weight has the shape the config implies for ``in_channels``: a kernel of
        another size would convolve silently otherwise."""
        shapes = self._shapes(in_channels)
        for name in self._names():
            shape = tuple(jnp.shape(params[name]))
            if shape != shapes[name]:
                raise ValueError(f"{where}: params[{name!r}] has shape {shape}, where the "
                                 f"layer's config and {in_channels} input channels imply "
                                 f"{shapes[name]}")

    def _bias(self, params: Mapping[str, jax.Array]) -> jax.Array | None:
        """The op's ``bias``: the op adds it (in the accumulation dtype), so that a
        lowering can fuse its own last step with the add."""
        return params["bias"] if self.use_bias else None

    def _op_kwargs(self, accumulation: Any = None) -> dict[str, Any]:
        """The op's keyword arguments; ``accumulation`` is its ``preferred_element_type``."""
        return dict(strides=self.strides, padding=self.padding, data_format=self.data_format,
                    dilation_rate=self.dilation_rate, padding_mode=self.padding_mode,
                    precision=self.precision, preferred_element_type=accumulation,
                    name=type(self).__name__)

    # --- configs --------------------------------------------------------------------
    def _extension_config(self) -> dict[str, Any]:
        return {} if self.padding_mode == "zeros" else {"padding_mode": self.padding_mode}

    def _serialize_arg(self, arg: str, value: Any) -> Any:
        if arg == "padding" and not isinstance(value, str):
            return [list(pair) for pair in value]  # explicit pairs, JSON's form
        return super()._serialize_arg(arg, value)


def conv_signature(rank: int, *, middle: Sequence[tuple[str, Any]],
                   weights: Sequence[str], required: Sequence[str]) -> list[tuple[str, Any]]:
    """A Keras conv constructor signature, in Keras's positional order.

    ``required`` come first (no default), then ``middle`` (the family's shape arguments
    with their rank-specific defaults), then activation/use_bias and the per-weight
    initializer, regularizer and constraint arguments in Keras's order.
    """
    fields: list[tuple[str, Any]] = [(name, dataclasses.MISSING) for name in required]
    fields += list(middle)
    fields += [("activation", None), ("use_bias", True)]
    for prefix in weights:
        fields.append((f"{prefix}_initializer", "zeros" if prefix == "bias"
                       else "glorot_uniform"))
    for prefix in weights:
        fields.append((f"{prefix}_regularizer", None))
    fields.append(("activity_regularizer", None))
    for prefix in weights:
        fields.append((f"{prefix}_constraint", None))
    return fields


def rank_default(rank: int, value: int) -> int | tuple[int, ...]:
    """Keras's default form: a bare int for 1-D layers, a tuple for 2-D and 3-D ones."""
    return value if rank == 1 else (value,) * rank
