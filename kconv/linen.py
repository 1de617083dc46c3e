"""``kconv.linen``: a ``flax.linen.Module`` for every kconv layer.

Each module takes the same constructor arguments as its pure-tier layer (Keras's, plus
``dtype``, ``param_dtype``, ``precision``), keeps its parameters in the ``"params"``
collection under the pure tier's (Keras's) names and shapes, and calls the pure tier's
``apply``: the wrappers parse no argument and do no arithmetic of their own.

The layer's penalty (weight regularizers plus the activity regularizer of this call's
output, exactly :meth:`kconv.layers.Layer.regularization_losses`) is recorded with
``self.sow("losses", "regularization", ...)`` when the layer has any regularizer, one
entry per call; a layer called again (shared) adds its activity penalty only, as Keras
counts a layer's weight penalty once. :func:`total_loss` sums such a collection.

Example:
    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> from kconv import linen as kl
    >>> class Net(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         x = kl.Conv2D(8, 3, padding="same", activation="relu",
    ...                       kernel_regularizer="l2")(x)
    ...         x = kl.ZeroPadding2D(1)(x)
    ...         return kl.DepthwiseConv2D(3)(x)
    >>> variables = Net().init(jax.random.key(0), jnp.ones((1, 8, 8, 3)))
    >>> jax.tree.map(jnp.shape, variables["params"])["Conv2D_0"]
    {'bias': (8,), 'kernel': (3, 3, 3, 8)}
    >>> y, state = Net().apply(variables, jnp.ones((2, 8, 8, 3)), mutable=["losses"])
    >>> y.shape, total_loss(state["losses"]).shape
    ((2, 8, 8, 8), ())
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from kconv import _sown
from kconv import layers as _layers
from kconv.layers._examples import EXAMPLES
from kconv.layers.base import in_dtype, refuse_foreign_args
from kconv.layers.conv import LORA_WEIGHTS

__all__ = ["KconvModule", "total_loss"] + list(_layers.LAYER_NAMES)


def total_loss(losses: Any) -> jax.Array:
    """Sums a ``"losses"`` collection (any pytree of penalties) into one scalar.

    Example:
        >>> total_loss({"a": {"regularization": (jnp.float32(1.5),)}, "b": ()})
        Array(1.5, dtype=float32)
    """
    return sum((jnp.sum(leaf) for leaf in jax.tree.leaves(losses)),
               jnp.zeros((), jnp.float32))


# Every weight name of kconv's layers (Keras's). A param by one of these names that the
# layer's config does not use is a ported weight that does not fit it (a bias for
# use_bias=False); a param by any other name is another module's (nn.share_scope puts a
# wrapper's own params beside those of the layer whose scope it shares).
_WEIGHT_NAMES = frozenset(LORA_WEIGHTS).union(
    *(getattr(_layers, name).weight_args for name in _layers.LAYER_NAMES
      if hasattr(getattr(_layers, name), "weight_args")))


class KconvModule(nn.Module):
    """Base of the generated linen modules: builds the pure layer, then delegates to it.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> m = Conv2D(4, 3)
        >>> isinstance(m, KconvModule), m.layer_cls.__name__
        (True, 'Conv2D')
        >>> variables = m.init(jax.random.key(0), jnp.ones((1, 8, 8, 3)))
        >>> jax.tree.map(jnp.shape, variables["params"])
        {'bias': (4,), 'kernel': (3, 3, 3, 4)}
    """

    layer_cls: Any = dataclasses.field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # Building the pure layer validates every argument now (errors at construction)
        # and canonicalises them; storing the canonical values back keeps a clone (flax
        # clones modules on init/apply) from resolving data_format=None again later.
        layer = self.pure_layer
        for f in dataclasses.fields(type(layer)):
            object.__setattr__(self, f.name, getattr(layer, f.name))
        super().__post_init__()

    @property
    def pure_layer(self) -> _layers.Layer:
        """The pure-tier layer with this module's arguments."""
        cls = type(self).layer_cls
        return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls)})

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        layer = self.pure_layer
        params = {}
        if layer.has_weights:
            weights = layer.weights_for_channels(layer.input_channels(jnp.shape(x)))
            # Params given are taken as they are, for the layer's own checks to name what
            # does not fit or is missing (self.param would raise Flax's ScopeParamShapeError
            # / ScopeParamNotFoundError, which name neither the layer nor its config).
            for name, w in weights.items():
                if self.has_variable("params", name):
                    params[name] = nn.meta.unbox(self.get_variable("params", name))
                elif self.is_mutable_collection("params"):
                    params[name] = self.param(name, in_dtype(w.initializer), w.shape,
                                              layer.weight_dtype(w))
        unused = sorted((set(self.variables.get("params", {})) & _WEIGHT_NAMES) - set(params))
        if unused:  # ported weights the layer's config does not use (a bias, LoRA factors)
            raise ValueError(f"{type(layer).__name__}: the params hold {unused}, which this "
                             f"layer does not use (its weights: {sorted(params)}): its "
                             f"config does not match the weights given")
        y = layer.apply(params, x)
        # Not while initializing: the variables init returns would otherwise carry a
        # penalty that a later apply(..., mutable=["losses"]) appends to (counted twice).
        if _sown.has_penalty(layer) and not self.is_initializing():
            self.sow("losses", "regularization", _sown.call_penalties(layer, params, y),
                     reduce_fn=_sown.weights_once)
        return y


def _make(pure_cls: type) -> type:
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {"layer_cls": pure_cls, "__module__": __name__}
    for f in dataclasses.fields(pure_cls):
        annotations[f.name] = Any
        if f.default is not dataclasses.MISSING:
            namespace[f.name] = dataclasses.field(default=f.default, kw_only=f.kw_only)
    namespace["__annotations__"] = annotations
    namespace["__doc__"] = (
        f"Flax linen ``{pure_cls.__name__}``: the same arguments as "
        f":class:`kconv.{pure_cls.__name__}`, params under the same names; calls its "
        f"``apply``.\n\nExample:\n    >>> import jax, jax.numpy as jnp\n"
        f"    >>> m = {pure_cls.__name__}(**EXAMPLE_ARGS['{pure_cls.__name__}'])\n"
        f"    >>> x = jnp.ones(EXAMPLE_SHAPES['{pure_cls.__name__}'])\n"
        f"    >>> v = m.init(jax.random.key(0), x)\n"
        f"    >>> m.apply(v, x).shape == m.pure_layer.compute_output_shape(x.shape)\n"
        f"    True\n")
    cls = type(pure_cls.__name__, (KconvModule,), namespace)
    # name= is linen's own (the module's scope), as Keras's names a layer.
    refuse_foreign_args(cls, pure_cls.__name__, allowed=("name",))
    return cls


# Small arguments and inputs per layer, used by the generated docstrings' examples.
EXAMPLE_ARGS = {name: args for name, (args, _) in EXAMPLES.items()}
EXAMPLE_SHAPES = {name: shape for name, (_, shape) in EXAMPLES.items()}

for _name in _layers.LAYER_NAMES:
    globals()[_name] = _make(getattr(_layers, _name))
del _name
