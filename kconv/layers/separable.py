"""SeparableConv1D, SeparableConv2D, SeparableConv3D: ``SeparableConv`` and its aliases.

Keras has no SeparableConv3D; kconv's has the 1-D/2-D siblings' arguments, defaults and
weight names (beyond Keras).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax

from kconv import _args, ops
from kconv.layers._docs import layer_doc
from kconv.layers.base import make_rank_class
from kconv.layers.conv_base import BaseConv, conv_signature, rank_default

__all__ = ["SeparableConv", "SeparableConv1D", "SeparableConv2D", "SeparableConv3D"]


@dataclasses.dataclass(frozen=True)
class SeparableConv(BaseConv):
    """N-d separable convolution (the family behind SeparableConv1D/2D/3D; use those):
    a depthwise convolution, then a pointwise (1×…×1) one mixing the channels.

    Example:
        >>> import kconv
        >>> layer = kconv.SeparableConv2D(16, 3)
        >>> {k: w.shape for k, w in layer.weights_for_channels(4).items()}
        {'depthwise_kernel': (3, 3, 4, 1), 'pointwise_kernel': (1, 1, 4, 16), 'bias': (16,)}
    """

    weight_args = {"depthwise_kernel": "depthwise", "pointwise_kernel": "pointwise",
                   "bias": "bias"}
    # tf-keras's SeparableConv inherits these from Conv and writes them, unused, in configs.
    unused_keras_keys = ("kernel_initializer", "kernel_regularizer", "kernel_constraint")

    def _shapes(self, in_channels: int) -> dict[str, tuple[int, ...]]:
        mid = in_channels * self.depth_multiplier
        return {"depthwise_kernel": self.kernel_size + (in_channels, self.depth_multiplier),
                "pointwise_kernel": (1,) * self.rank + (mid, self.filters),
                "bias": (self.filters,)}

    def _param_in_channels(self, params: Mapping[str, jax.Array]) -> int:
        return params["depthwise_kernel"].shape[-2]

    def _forward(self, params: Mapping[str, jax.Array], x: jax.Array,
                 accumulation: Any) -> jax.Array:
        return ops.separable_conv(x, params["depthwise_kernel"], params["pointwise_kernel"],
                                  bias=self._bias(params), **self._op_kwargs(accumulation))

    def compute_output_shape(self, input_shape: Any) -> tuple:
        """Keras's output shape; ``None`` dims pass through.

        Example:
            >>> SeparableConv1D(5, 3, padding="same").compute_output_shape((None, None, 3))
            (None, None, 5)
        """
        _args.input_shape(input_shape, self.rank, type(self).__name__)
        return ops.separable_conv_output_shape(
            input_shape, self.filters, self.kernel_size, self.strides, self.padding,
            self.data_format, self.dilation_rate, name=type(self).__name__)


def _make(rank: int) -> type:
    name = f"SeparableConv{rank}D"
    middle = [("strides", rank_default(rank, 1)), ("padding", "valid"), ("data_format", None),
              ("dilation_rate", rank_default(rank, 1)), ("depth_multiplier", 1)]
    fields = conv_signature(rank, middle=middle,
                            weights=("depthwise", "pointwise", "bias"),
                            required=("filters", "kernel_size"))
    sp = ", ".join(["16"] * rank)
    k = "3, " * rank
    ones = "1, " * rank
    example = f"""
>>> import jax, jax.numpy as jnp, kconv
>>> layer = kconv.{name}(8, 3, depth_multiplier=2, padding="same")
>>> params = layer.init(jax.random.key(0), (None, {sp}, 4))
>>> {{name: p.shape for name, p in params.items()}}
{{'depthwise_kernel': ({k}4, 2), 'pointwise_kernel': ({ones}8, 8), 'bias': (8,)}}
>>> layer(params, jnp.ones((2, {sp}, 4))).shape
(2, {sp}, 8)
"""
    origin = f"Keras ``{name}``" if rank < 3 else \
        "beyond Keras, the 3-D sibling of ``SeparableConv2D``"
    doc = layer_doc(
        f"{rank}-D separable convolution layer ({origin}): a depthwise "
        f"convolution (strides, padding, dilation) followed by a pointwise one.",
        [a for a, _ in fields], causal=rank == 1,
        weights="``depthwise_kernel`` ``(*kernel_size, in_channels, depth_multiplier)``, "
                "``pointwise_kernel`` ``(*(1,) * N, in_channels * depth_multiplier, "
                "filters)``, ``bias`` ``(filters,)``. ``causal`` padding in 1-D is beyond "
                "Keras.",
        example=example, keywords=("padding_mode",))
    return make_rank_class(SeparableConv, rank, name, fields, doc,
                           aliases=(f"SeparableConvolution{rank}D",) if rank < 3 else (),
                           keywords=(("padding_mode", "zeros"),))


SeparableConv1D = _make(1)
SeparableConv2D = _make(2)
SeparableConv3D = _make(3)
