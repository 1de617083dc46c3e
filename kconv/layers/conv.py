"""Conv1D, Conv2D, Conv3D: one N-d class, ``Conv``, and its generated rank aliases."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax

from kconv import _args, ops
from kconv.layers._docs import layer_doc
from kconv.layers.base import make_rank_class
from kconv.layers.conv_base import BaseConv, conv_signature, rank_default

__all__ = ["Conv", "Conv1D", "Conv2D", "Conv3D"]


@dataclasses.dataclass(frozen=True)
class Conv(BaseConv):
    """N-d convolution (the family behind Conv1D/2D/3D; use those)."""

    weight_args = {"kernel": "kernel", "bias": "bias"}

    def _canonicalize(self, values: dict[str, Any]) -> dict[str, Any]:
        values = super()._canonicalize(values)
        where = type(self).__name__
        values["groups"] = _args.positive_int(values["groups"], "groups", where)
        if values["filters"] % values["groups"]:
            raise ValueError(f"{where}: filters must be divisible by groups, got "
                             f"filters={values['filters']}, groups={values['groups']}")
        return values

    def _check_in_channels(self, in_channels: int, shape: Any) -> None:
        if in_channels % self.groups:
            raise ValueError(f"{type(self).__name__}: the input channels ({in_channels}) must "
                             f"be divisible by groups={self.groups}, got {shape}")

    def _shapes(self, in_channels: int) -> dict[str, tuple[int, ...]]:
        return {"kernel": self.kernel_size + (in_channels // self.groups, self.filters),
                "bias": (self.filters,)}

    def _param_in_channels(self, params: Mapping[str, jax.Array]) -> int:
        return params["kernel"].shape[-2] * self.groups

    def _forward(self, params: Mapping[str, jax.Array], x: jax.Array) -> jax.Array:
        return ops.conv(x, params["kernel"], **self._op_kwargs())

    def compute_output_shape(self, input_shape: Any) -> tuple:
        """Keras's output shape; ``None`` dims pass through.

        Example:
            >>> Conv2D(4, 3, strides=2).compute_output_shape((None, 9, None, 3))
            (None, 4, None, 4)
        """
        _args.input_shape(input_shape, self.rank, type(self).__name__)
        return ops.conv_output_shape(input_shape, self.filters, self.kernel_size,
                                     self.strides, self.padding, self.data_format,
                                     self.dilation_rate, name=type(self).__name__)


def _make(rank: int) -> type:
    name = f"Conv{rank}D"
    middle = [("strides", rank_default(rank, 1)), ("padding", "valid"),
              ("data_format", None), ("dilation_rate", rank_default(rank, 1)), ("groups", 1)]
    fields = conv_signature(rank, middle=middle, weights=("kernel", "bias"),
                            required=("filters", "kernel_size"))
    sp = ", ".join(["16"] * rank)
    k = "3, " * rank
    example = f"""
>>> import jax, jax.numpy as jnp, kconv
>>> layer = kconv.{name}(8, 3, padding="same", activation="relu")
>>> params = layer.init(jax.random.key(0), (None, {sp}, 4))
>>> {{name: p.shape for name, p in params.items()}}
{{'kernel': ({k}4, 8), 'bias': (8,)}}
>>> layer(params, jnp.ones((2, {sp}, 4))).shape
(2, {sp}, 8)
"""
    doc = layer_doc(
        f"{rank}-D convolution layer (Keras ``{name}``): ``filters`` kernels slid over the "
        f"input's {rank} spatial dim{'s' if rank > 1 else ''}, plus bias and activation.",
        [a for a, _ in fields], causal=rank == 1,
        weights="``kernel`` ``(*kernel_size, in_channels // groups, filters)``, "
                "``bias`` ``(filters,)``.",
        example=example)
    return make_rank_class(Conv, rank, name, fields, doc, aliases=(f"Convolution{rank}D",))


Conv1D = _make(1)
Conv2D = _make(2)
Conv3D = _make(3)
