"""DepthwiseConv1D, DepthwiseConv2D, DepthwiseConv3D: ``DepthwiseConv`` and its aliases.

Keras has no DepthwiseConv3D; kconv's has the 1-D/2-D siblings' arguments, defaults and
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

__all__ = ["DepthwiseConv", "DepthwiseConv1D", "DepthwiseConv2D", "DepthwiseConv3D"]


@dataclasses.dataclass(frozen=True)
class DepthwiseConv(BaseConv):
    """N-d depthwise convolution (the family behind DepthwiseConv1D/2D/3D; use those).

    Output channel ``c * depth_multiplier + m`` is input channel ``c`` convolved with
    ``kernel[..., c, m]``.

    Example:
        >>> import kconv
        >>> layer = kconv.DepthwiseConv1D(3, depth_multiplier=2)
        >>> isinstance(layer, kconv.layers.DepthwiseConv), layer.compute_output_shape(
        ...     (None, 10, 4))
        (True, (None, 8, 8))
    """

    weight_args = {"kernel": "depthwise", "bias": "bias"}

    def _shapes(self, in_channels: int) -> dict[str, tuple[int, ...]]:
        return {"kernel": self.kernel_size + (in_channels, self.depth_multiplier),
                "bias": (in_channels * self.depth_multiplier,)}

    def _param_in_channels(self, params: Mapping[str, jax.Array]) -> int:
        return params["kernel"].shape[-2]

    def _forward(self, params: Mapping[str, jax.Array], x: jax.Array,
                 accumulation: Any) -> jax.Array:
        return ops.depthwise_conv(x, params["kernel"], bias=self._bias(params),
                                  **self._op_kwargs(accumulation))

    def compute_output_shape(self, input_shape: Any) -> tuple:
        """Keras's output shape; ``None`` dims pass through.

        Example:
            >>> DepthwiseConv2D(3, depth_multiplier=2).compute_output_shape((None, 9, 9, 3))
            (None, 7, 7, 6)
        """
        _args.input_shape(input_shape, self.rank, type(self).__name__)
        return ops.depthwise_conv_output_shape(
            input_shape, self.kernel_size, self.depth_multiplier, self.strides, self.padding,
            self.data_format, self.dilation_rate, name=type(self).__name__)


def _make(rank: int) -> type:
    name = f"DepthwiseConv{rank}D"
    middle = [("strides", rank_default(rank, 1)), ("padding", "valid"),
              ("depth_multiplier", 1), ("data_format", None),
              ("dilation_rate", rank_default(rank, 1))]
    fields = conv_signature(rank, middle=middle, weights=("depthwise", "bias"),
                            required=("kernel_size",))
    sp = ", ".join(["16"] * rank)
    k = "3, " * rank
    example = f"""
>>> import jax, jax.numpy as jnp, kconv
>>> layer = kconv.{name}(3, depth_multiplier=2, padding="same")
>>> params = layer.init(jax.random.key(0), (None, {sp}, 4))
>>> {{name: p.shape for name, p in params.items()}}
{{'kernel': ({k}4, 2), 'bias': (8,)}}
>>> layer(params, jnp.ones((2, {sp}, 4))).shape
(2, {sp}, 8)
"""
    origin = f"Keras ``{name}``" if rank < 3 else \
        "beyond Keras, the 3-D sibling of ``DepthwiseConv2D``"
    doc = layer_doc(
        f"{rank}-D depthwise convolution layer ({origin}): each input channel is "
        f"convolved with its own ``depth_multiplier`` kernels.",
        [a for a, _ in fields], causal=rank == 1,
        weights="``kernel`` ``(*kernel_size, in_channels, depth_multiplier)``, ``bias`` "
                "``(in_channels * depth_multiplier,)``. ``causal`` padding in 1-D is beyond "
                "Keras.",
        example=example, keywords=("padding_mode",))
    return make_rank_class(DepthwiseConv, rank, name, fields, doc,
                           keywords=(("padding_mode", "zeros"),))


DepthwiseConv1D = _make(1)
DepthwiseConv2D = _make(2)
DepthwiseConv3D = _make(3)
