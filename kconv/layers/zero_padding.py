"""ZeroPadding1D, ZeroPadding2D, ZeroPadding3D: one N-d class, ``ZeroPadding``, and its
rank aliases."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax

from kconv import _args, ops
from kconv.layers._docs import reshaping_doc
from kconv.layers.base import Layer, make_rank_class

__all__ = ["ZeroPadding", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D"]


@dataclasses.dataclass(frozen=True)
class ZeroPadding(Layer):
    """N-d zero padding (the family behind ZeroPadding1D/2D/3D; use those).

    Example:
        >>> import kconv
        >>> kconv.ZeroPadding3D(1).compute_output_shape((None, 4, 4, 4, 2))
        (None, 6, 6, 6, 2)
    """

    def _canonicalize(self, values: dict[str, Any]) -> dict[str, Any]:
        values = super()._canonicalize(values)
        where = type(self).__name__
        pairs = _args.int_pairs(values["padding"], self.rank, "padding", where)
        # Keras's configs: ZeroPadding1D reports one flat (lo, hi), the others N pairs.
        values["padding"] = pairs[0] if self.rank == 1 else pairs
        values["data_format"] = _args.data_format(values["data_format"], where)
        return values

    def apply(self, params: Mapping[str, jax.Array], x: jax.Array) -> jax.Array:
        """Pads ``x`` with zeros; ``params`` is ``{}``. Unbatched and multi-batch inputs
        work too."""
        where = type(self).__name__
        self._check_params(params, where)
        with jax.named_scope(where):
            return ops.zero_pad(_args.cast_floating(x, self.dtype, where), self.padding,
                                self.data_format, rank=self.rank, name=where)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        """Keras's output shape; ``None`` dims pass through.

        Example:
            >>> ZeroPadding2D((1, 2)).compute_output_shape((None, 8, None, 3))
            (None, 10, None, 3)
        """
        where = type(self).__name__
        shape = _args.input_shape(input_shape, self.rank, where)
        return ops.zero_pad_output_shape(shape, self.padding, self.data_format, name=where)


_DEFAULTS = {1: 1, 2: (1, 1), 3: ((1, 1), (1, 1), (1, 1))}


def _make(rank: int) -> type:
    name = f"ZeroPadding{rank}D"
    fields = [("padding", _DEFAULTS[rank]), ("data_format", None)]
    docs = [("padding", "zero_padding_1d" if rank == 1 else "zero_padding"),
            ("data_format", "data_format")]
    # 1-D: Keras's (lo, hi); N-d: one symmetric amount per axis, shown expanded.
    amounts = (1, 2) if rank == 1 else (1, 2, 0)[:rank]
    pairs = (1, 2) if rank == 1 else tuple((a, a) for a in amounts)
    grown = (7,) if rank == 1 else tuple(4 + 2 * a for a in amounts)
    sp = ", ".join(["4"] * rank)
    example = f"""
>>> import jax, jax.numpy as jnp, kconv
>>> layer = kconv.{name}({amounts})
>>> layer.get_config()["padding"]
{pairs}
>>> layer.init(jax.random.key(0), (None, {sp}, 3))
{{}}
>>> layer({{}}, jnp.ones((2, {sp}, 3))).shape
(2, {", ".join(map(str, grown))}, 3)
"""
    doc = reshaping_doc(
        f"{rank}-D zero-padding layer (Keras ``{name}``): adds ``(lo, hi)`` zeros at both "
        f"ends of each spatial axis.", docs, example=example)
    return make_rank_class(ZeroPadding, rank, name, fields, doc)


ZeroPadding1D = _make(1)
ZeroPadding2D = _make(2)
ZeroPadding3D = _make(3)
