"""Cropping1D, Cropping2D, Cropping3D: one N-d class, ``Cropping``, and its rank aliases."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax

from kconv import _args, ops
from kconv.layers._docs import reshaping_doc
from kconv.layers.base import Layer, make_rank_class

__all__ = ["Cropping", "Cropping1D", "Cropping2D", "Cropping3D"]


@dataclasses.dataclass(frozen=True)
class Cropping(Layer):
    """N-d cropping (the family behind Cropping1D/2D/3D; use those).

    Example:
        >>> import kconv
        >>> kconv.Cropping2D(((1, 0), (2, 2))).compute_output_shape((None, 8, 8, 3))
        (None, 7, 4, 3)
    """

    # Keras's Cropping1D has no data_format argument: it always crops axis 1 of
    # (batch, steps, features). Cropping2D/3D shadow this with their field.
    data_format = "channels_last"

    def _canonicalize(self, values: dict[str, Any]) -> dict[str, Any]:
        values = super()._canonicalize(values)
        where = type(self).__name__
        pairs = _args.int_pairs(values["cropping"], self.rank, "cropping", where)
        # Keras's configs: Cropping1D reports one flat (lo, hi), the others N pairs.
        values["cropping"] = pairs[0] if self.rank == 1 else pairs
        if "data_format" in values:
            values["data_format"] = _args.data_format(values["data_format"], where)
        return values

    def apply(self, params: Mapping[str, jax.Array], x: jax.Array) -> jax.Array:
        """Crops ``x``; ``params`` is ``{}``. Unbatched and multi-batch inputs work too.

        Raises ``ValueError`` at trace time when an axis would be cropped to nothing.
        """
        where = type(self).__name__
        self._check_params(params, where)
        with jax.named_scope(where):
            return ops.crop(_args.cast_floating(x, self.dtype, where), self.cropping,
                            self.data_format, rank=self.rank, name=where)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        """Keras's output shape; ``None`` dims pass through.

        Example:
            >>> Cropping2D(((1, 2), 3)).compute_output_shape((None, 9, None, 4))
            (None, 6, None, 4)
        """
        where = type(self).__name__
        shape = _args.input_shape(input_shape, self.rank, where)
        return ops.crop_output_shape(shape, self.cropping, self.data_format, name=where)


_DEFAULTS = {1: (1, 1), 2: ((0, 0), (0, 0)), 3: ((1, 1), (1, 1), (1, 1))}


def _make(rank: int) -> type:
    name = f"Cropping{rank}D"
    fields = [("cropping", _DEFAULTS[rank])] + ([("data_format", None)] if rank > 1 else [])
    docs = [("cropping", "cropping_1d" if rank == 1 else "cropping")]
    docs += [("data_format", "data_format")] if rank > 1 else []
    sp = ", ".join(["8"] * rank)
    out = ", ".join(["5"] * rank)
    arg = "(1, 2)" if rank == 1 else "(" + ", ".join(["(1, 2)"] * rank) + ")"
    example = f"""
>>> import jax, jax.numpy as jnp, kconv
>>> layer = kconv.{name}({arg})
>>> layer.init(jax.random.key(0), (None, {sp}, 3))
{{}}
>>> layer({{}}, jnp.ones((2, {sp}, 3))).shape
(2, {out}, 3)
"""
    layout = "(batch, steps, features)" if rank == 1 else \
        "(batch, *spatial, channels) or (batch, channels, *spatial)"
    doc = reshaping_doc(
        f"{rank}-D cropping layer (Keras ``{name}``): trims ``(lo, hi)`` elements off both "
        f"ends of each spatial axis of a ``{layout}`` input.", docs, example=example)
    return make_rank_class(Cropping, rank, name, fields, doc)


Cropping1D = _make(1)
Cropping2D = _make(2)
Cropping3D = _make(3)
