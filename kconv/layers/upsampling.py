"""UpSampling1D, UpSampling2D, UpSampling3D: one N-d class, ``UpSampling``, and its rank
aliases."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax

from kconv import _args, ops
from kconv.layers._docs import reshaping_doc
from kconv.layers.base import Layer, make_rank_class
from kconv.ops.reshape import INTERPOLATIONS

__all__ = ["UpSampling", "UpSampling1D", "UpSampling2D", "UpSampling3D"]


@dataclasses.dataclass(frozen=True)
class UpSampling(Layer):
    """N-d upsampling (the family behind UpSampling1D/2D/3D; use those).

    Example:
        >>> import kconv
        >>> kconv.UpSampling1D(3).compute_output_shape((None, 5, 2))
        (None, 15, 2)
    """

    # Keras's UpSampling1D has neither data_format nor interpolation, and UpSampling3D has
    # no interpolation: they always repeat, channels_last for 1-D. The rank classes that
    # have these arguments shadow the defaults with their fields.
    data_format = "channels_last"
    interpolation = "nearest"

    def _canonicalize(self, values: dict[str, Any]) -> dict[str, Any]:
        values = super()._canonicalize(values)
        where = type(self).__name__
        if self.rank == 1:
            # Keras's UpSampling1D takes a bare int only, and reports it as one.
            values["size"] = _args.positive_int(values["size"], "size", where)
        else:
            values["size"] = _args.int_tuple(values["size"], self.rank, "size", where)
        if "data_format" in values:
            values["data_format"] = _args.data_format(values["data_format"], where)
        if "interpolation" in values:
            values["interpolation"] = _args.string_choice(
                values["interpolation"], "interpolation", where, INTERPOLATIONS)
        return values

    def apply(self, params: Mapping[str, jax.Array], x: jax.Array) -> jax.Array:
        """Upsamples ``x``; ``params`` is ``{}``. Unbatched and multi-batch inputs work too.

        The output has the input's dtype (after the ``dtype`` cast of floating inputs);
        integer inputs to a non-``nearest`` interpolation are rounded and clipped (Keras).
        """
        where = type(self).__name__
        self._check_params(params, where)
        with jax.named_scope(where):
            return ops.upsample(_args.cast_floating(x, self.dtype, where), self.size,
                                self.data_format, self.interpolation, rank=self.rank,
                                precision=self.precision, name=where)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        """Keras's output shape; ``None`` dims pass through.

        Example:
            >>> UpSampling2D((2, 3)).compute_output_shape((None, 4, None, 5))
            (None, 8, None, 5)
        """
        where = type(self).__name__
        shape = _args.input_shape(input_shape, self.rank, where)
        return ops.upsample_output_shape(shape, self.size, self.data_format, name=where)


def _make(rank: int) -> type:
    name = f"UpSampling{rank}D"
    fields: list[tuple[str, Any]] = [("size", 2 if rank == 1 else (2,) * rank)]
    docs = [("size", "size_1d" if rank == 1 else "size")]
    if rank > 1:
        fields.append(("data_format", None))
        docs.append(("data_format", "data_format"))
    if rank == 2:
        fields.append(("interpolation", "nearest"))
        docs.append(("interpolation", "interpolation"))
    sp = ", ".join(["3"] * rank)
    out = ", ".join(["6"] * rank)
    example = f"""
>>> import jax, jax.numpy as jnp, kconv
>>> layer = kconv.{name}()
>>> layer.init(jax.random.key(0), (None, {sp}, 4))
{{}}
>>> layer({{}}, jnp.ones((2, {sp}, 4))).shape
(2, {out}, 4)
"""
    if rank == 1:
        example += """\
>>> kconv.UpSampling1D(3)({}, jnp.arange(2.0).reshape(2, 1))[:, 0]
Array([0., 0., 0., 1., 1., 1.], dtype=float32)
"""
    if rank == 2:
        example += """\
>>> x = jnp.array([0.0, 1.0]).reshape(1, 1, 2, 1)
>>> kconv.UpSampling2D((1, 2), interpolation="bilinear")({}, x)[0, 0, :, 0]
Array([0.  , 0.25, 0.75, 1.  ], dtype=float32)
"""
    what = "repeats each step ``size`` times" if rank == 1 else (
        "repeats each element ``size[i]`` times along spatial axis ``i``" if rank == 3 else
        "repeats rows and columns ``size`` times, or interpolates")
    doc = reshaping_doc(
        f"{rank}-D upsampling layer (Keras ``{name}``): {what}.", docs, example=example,
        precision="interpolation_precision" if rank == 2 else "reshaping_precision")
    return make_rank_class(UpSampling, rank, name, fields, doc)


UpSampling1D = _make(1)
UpSampling2D = _make(2)
UpSampling3D = _make(3)
