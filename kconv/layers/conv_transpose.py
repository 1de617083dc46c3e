"""Conv1DTranspose, Conv2DTranspose, Conv3DTranspose: ``ConvTranspose`` and its aliases."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax

from kconv import _args, ops
from kconv.layers._docs import layer_doc
from kconv.layers.base import make_rank_class
from kconv.layers.conv_base import BaseConv, conv_signature, rank_default

__all__ = ["ConvTranspose", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"]


@dataclasses.dataclass(frozen=True)
class ConvTranspose(BaseConv):
    """N-d transposed convolution (the family behind Conv1D/2D/3DTranspose; use those).

    It is the vector-Jacobian product of the forward convolution with the same kernel,
    strides, padding and dilation: each input position spreads ``kernel`` over the output,
    ``stride`` positions apart (TF/Keras semantics, Keras's output lengths).

    Example:
        >>> import kconv
        >>> layer = kconv.Conv2DTranspose(8, 3, strides=2, padding="same")
        >>> isinstance(layer, kconv.layers.ConvTranspose), layer.compute_output_shape(
        ...     (None, 5, 5, 3))
        (True, (None, 10, 10, 8))
    """

    weight_args = {"kernel": "kernel", "bias": "bias"}
    causal_1d = True  # beyond Keras: the streaming models' causal transposed conv
    transposed = True  # padding_mode "zeros" only (see _args.conv_padding_mode)

    def _canonicalize(self, values: dict[str, Any]) -> dict[str, Any]:
        values = super()._canonicalize(values)
        values["output_padding"] = _args.output_padding(
            values["output_padding"], self.rank, values["strides"], type(self).__name__,
            padding=values["padding"], dilation=values["dilation_rate"])
        return values

    def _shapes(self, in_channels: int) -> dict[str, tuple[int, ...]]:
        # Out before in, as Keras (and as the forward conv it transposes); with groups,
        # the grouped forward conv's (*k, filters // groups, in_channels), as PyTorch.
        return {"kernel": self.kernel_size + (self.filters // self.groups, in_channels),
                "bias": (self.filters,)}

    def _param_in_channels(self, params: Mapping[str, jax.Array]) -> int:
        return params["kernel"].shape[-1]

    def _forward(self, params: Mapping[str, jax.Array], x: jax.Array,
                 accumulation: Any) -> jax.Array:
        return ops.conv_transpose(x, params["kernel"], output_padding=self.output_padding,
                                  groups=self.groups, bias=self._bias(params),
                                  **self._op_kwargs(accumulation))

    def _extension_config(self) -> dict[str, Any]:
        # groups is beyond Keras: written only when used, so Keras configs stay identical.
        groups = {"groups": self.groups} if self.groups != 1 else {}
        return {**groups, **super()._extension_config()}

    def compute_output_shape(self, input_shape: Any) -> tuple:
        """Keras's output shape; ``None`` dims pass through.

        Example:
            >>> Conv2DTranspose(4, 3, strides=2, padding="same").compute_output_shape(
            ...     (None, 8, None, 3))
            (None, 16, None, 4)
        """
        _args.input_shape(input_shape, self.rank, type(self).__name__)
        return ops.conv_transpose_output_shape(
            input_shape, self.filters, self.kernel_size, self.strides, self.padding,
            self.output_padding, self.data_format, self.dilation_rate, name=type(self).__name__)


def _make(rank: int) -> type:
    name = f"Conv{rank}DTranspose"
    shape_args = [("output_padding", None), ("data_format", None)]
    if rank == 3:  # Keras's Conv3DTranspose has data_format before output_padding.
        shape_args.reverse()
    middle = [("strides", rank_default(rank, 1)), ("padding", "valid"), *shape_args,
              ("dilation_rate", rank_default(rank, 1))]
    fields = conv_signature(rank, middle=middle, weights=("kernel", "bias"),
                            required=("filters", "kernel_size"))
    sp_in, sp_out = ", ".join(["8"] * rank), ", ".join(["16"] * rank)
    k = "3, " * rank
    example = f"""
>>> import jax, jax.numpy as jnp, kconv
>>> layer = kconv.{name}(8, 3, strides=2, padding="same")
>>> params = layer.init(jax.random.key(0), (None, {sp_in}, 4))
>>> {{name: p.shape for name, p in params.items()}}
{{'kernel': ({k}8, 4), 'bias': (8,)}}
>>> layer(params, jnp.ones((2, {sp_in}, 4))).shape
(2, {sp_out}, 8)
"""
    doc = layer_doc(
        f"{rank}-D transposed convolution layer (Keras ``{name}``): the gradient of a "
        f"{rank}-D convolution with respect to its input, used to upsample.",
        [a for a, _ in fields], causal=rank == 1,
        weights="``kernel`` ``(*kernel_size, filters // groups, in_channels)`` (out before "
                "in), ``bias`` ``(filters,)``.",
        example=example, keywords=("groups", "padding_mode"), transposed=True)
    # groups (beyond Keras, whose transposed layers have none) is keyword-only.
    return make_rank_class(ConvTranspose, rank, name, fields, doc,
                           aliases=(f"Convolution{rank}DTranspose", f"Deconvolution{rank}D",
                                    f"Deconv{rank}D"),
                           keywords=(("groups", 1), ("padding_mode", "zeros")))


Conv1DTranspose = _make(1)
Conv2DTranspose = _make(2)
Conv3DTranspose = _make(3)
