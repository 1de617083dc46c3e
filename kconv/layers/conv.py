"""Conv1D, Conv2D, Conv3D: one N-d class, ``Conv``, and its generated rank aliases."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any

import jax

import jax.numpy as jnp
import numpy as np

from kconv import _args, initializers, ops
from kconv.layers._docs import layer_doc
from kconv.layers.base import Params, Weight, make_rank_class, weight_initializer
from kconv.layers.conv_base import BaseConv, conv_signature, rank_default

__all__ = ["Conv", "Conv1D", "Conv2D", "Conv3D"]


#: The LoRA weights' names, as Keras names them.
LORA_WEIGHTS = ("lora_kernel_a", "lora_kernel_b")


@dataclasses.dataclass(frozen=True)
class Conv(BaseConv):
    """N-d convolution (the family behind Conv1D/2D/3D; use those).

    LoRA (Keras 3's ``lora_rank`` / ``lora_alpha`` / ``enable_lora``): the kernel used is
    ``kernel + (lora_alpha / lora_rank) * lora_kernel_a @ lora_kernel_b``, with
    ``lora_kernel_a`` ``(*kernel_size, in // groups, rank)`` (He-uniform) and
    ``lora_kernel_b`` ``(rank, filters)`` (zeros), both float32, both penalised by
    ``kernel_regularizer``; the kernel itself is frozen (``trainable_mask``) and its
    penalty left out, as Keras does.

    Example:
        >>> import kconv
        >>> isinstance(kconv.Conv3D(8, 3), kconv.layers.Conv), kconv.Conv3D.rank
        (True, 3)
    """

    weight_args = {"kernel": "kernel", "bias": "bias"}

    def _canonicalize(self, values: dict[str, Any]) -> dict[str, Any]:
        values = super()._canonicalize(values)
        where = type(self).__name__
        if values["lora_rank"] is not None:
            values["lora_rank"] = _args.positive_int(values["lora_rank"], "lora_rank", where)
            if values["kernel_constraint"] is not None:
                raise ValueError(f"{where}: lora_rank={values['lora_rank']} is incompatible "
                                 f"with kernel_constraint (as in Keras); remove one, got "
                                 f"kernel_constraint={values['kernel_constraint']!r}")
            alpha = values["lora_alpha"]
            if alpha is None:
                values["lora_alpha"] = values["lora_rank"]  # Keras's default
            elif isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, numbers.Real) \
                    or not alpha > 0:  # NumPy scalars too, as Keras takes them
                raise ValueError(f"{where}: lora_alpha must be a positive number, got "
                                 f"{alpha!r}")
            else:  # a Python number: the config is JSON
                values["lora_alpha"] = (int(alpha) if isinstance(alpha, numbers.Integral)
                                        else float(alpha))
        elif values["lora_alpha"] is not None:
            raise ValueError(f"{where}: lora_alpha={values['lora_alpha']!r} needs lora_rank")
        return values

    # --- LoRA ---------------------------------------------------------------------
    def _names(self) -> list[str]:
        return super()._names() + (list(LORA_WEIGHTS) if self.lora_rank else [])

    def _weight(self, name: str, shape: tuple[int, ...]) -> Weight:
        if name in LORA_WEIGHTS:
            # Keras: He-uniform A, zero B (so training starts at the base kernel), float32
            # "to avoid the risk of underflow or overflow", penalised like the kernel.
            init = initializers.get("he_uniform" if name == "lora_kernel_a" else "zeros")
            return Weight(shape, init, self.kernel_regularizer, None, dtype=jnp.float32)
        weight = super()._weight(name, shape)
        return weight._replace(trainable=False) if name == "kernel" and self.lora_rank \
            else weight

    def enable_lora(self, rank: int, lora_alpha: float | None = None,
                    a_initializer: Any = "he_uniform", b_initializer: Any = "zeros", *,
                    params: Params, key: jax.Array) -> tuple[Conv, Params]:
        """Keras's ``enable_lora`` for a pure layer: the LoRA layer and its params.

        Args:
          rank, lora_alpha, a_initializer, b_initializer: as Keras's ``enable_lora``.
          params: this layer's params (kernel and bias are kept).
          key: a ``jax.random`` key for the LoRA weights.

        Returns:
          ``(layer, params)``: the same layer with ``lora_rank=rank``, and ``params`` plus
          ``lora_kernel_a`` / ``lora_kernel_b``.

        Example:
            >>> import jax, jax.numpy as jnp, kconv
            >>> layer = kconv.Conv2D(8, 3)
            >>> params = layer.init(jax.random.key(0), (None, 9, 9, 4))
            >>> lora, lora_params = layer.enable_lora(2, params=params, key=jax.random.key(1))
            >>> lora_params["lora_kernel_a"].shape, lora_params["lora_kernel_b"].shape
            ((3, 3, 4, 2), (2, 8))
            >>> x = jnp.ones((1, 9, 9, 4))
            >>> bool(jnp.allclose(lora(lora_params, x), layer(params, x)))  # B starts at 0
            True
        """
        where = f"{type(self).__name__}.enable_lora"
        if self.lora_rank:
            raise ValueError(f"{where}: lora is already enabled (lora_rank={self.lora_rank}); "
                             "this can only be done once per layer, as in Keras")
        layer = dataclasses.replace(self, lora_rank=rank, lora_alpha=lora_alpha)
        inits = {"lora_kernel_a": weight_initializer(initializers.get(a_initializer)),
                 "lora_kernel_b": weight_initializer(initializers.get(b_initializer))}
        kernel = params["kernel"]
        shapes = {"lora_kernel_a": tuple(kernel.shape[:-1]) + (layer.lora_rank,),
                  "lora_kernel_b": (layer.lora_rank, self.filters)}
        keys = dict(zip(LORA_WEIGHTS, jax.random.split(key)))
        new = dict(params)
        for name in LORA_WEIGHTS:
            new[name] = jnp.asarray(inits[name](keys[name], shapes[name], jnp.float32),
                                    jnp.float32)
        return layer, new

    def merge_lora(self, params: Mapping[str, jax.Array]) -> Params:
        """The plain ``{kernel, bias}`` params this LoRA layer computes with (the merged
        kernel, which Keras saves in its weight files); other layers' params unchanged.

        Example:
            >>> import jax, kconv
            >>> layer = kconv.Conv1D(2, 3, lora_rank=1)
            >>> sorted(layer.merge_lora(layer.init(jax.random.key(0), (None, 8, 1))))
            ['bias', 'kernel']
        """
        if not self.lora_rank:
            return dict(params)
        out = {name: params[name] for name in super()._names()}
        out["kernel"] = self._lora_kernel(params).astype(params["kernel"].dtype)
        return out

    def _lora_kernel(self, params: Mapping[str, jax.Array]) -> jax.Array:
        scale = self.lora_alpha / self.lora_rank
        return params["kernel"] + scale * jnp.matmul(params["lora_kernel_a"],
                                                    params["lora_kernel_b"])

    def _params_note(self) -> str:
        return f", lora_rank={self.lora_rank}"

    def _extension_config(self) -> dict[str, Any]:
        # Keras writes both only when LoRA is on.
        lora = ({"lora_rank": self.lora_rank, "lora_alpha": self.lora_alpha}
                if self.lora_rank else {})
        return {**lora, **super()._extension_config()}

    def _shapes(self, in_channels: int) -> dict[str, tuple[int, ...]]:
        kernel = self.kernel_size + (in_channels // self.groups, self.filters)
        return {"kernel": kernel, "bias": (self.filters,),
                "lora_kernel_a": kernel[:-1] + (self.lora_rank,),
                "lora_kernel_b": (self.lora_rank, self.filters)}

    def _param_in_channels(self, params: Mapping[str, jax.Array]) -> int:
        return params["kernel"].shape[-2] * self.groups

    def _forward(self, params: Mapping[str, jax.Array], x: jax.Array,
                 accumulation: Any) -> jax.Array:
        # Params arrive in the compute dtype, where Keras merges the LoRA kernel too.
        kernel = self._lora_kernel(params) if self.lora_rank else params["kernel"]
        return ops.conv(x, kernel, bias=self._bias(params), **self._op_kwargs(accumulation))

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
        example=example, keywords=("lora_rank", "lora_alpha", "padding_mode"))
    # Keras takes lora_rank / lora_alpha through **kwargs: keyword-only here, as is
    # padding_mode (beyond Keras).
    return make_rank_class(Conv, rank, name, fields, doc, aliases=(f"Convolution{rank}D",),
                           keywords=(("lora_rank", None), ("lora_alpha", None),
                                     ("padding_mode", "zeros")))


Conv1D = _make(1)
Conv2D = _make(2)
Conv3D = _make(3)
