"""``kconv.nnx``: every kconv layer as a Flax NNX module (Flax's current API).

Each module takes the Keras constructor arguments of its pure-tier layer, plus keyword-only
``in_channels`` (layers with weights need it) and ``rngs`` (accepted by every module, so
model code can pass it uniformly). Weights are ``nnx.Param`` attributes with Keras's names
and shapes (``m.kernel``, ``m.bias``, ``m.depthwise_kernel``, ...) — a weight Keras freezes
(the kernel under LoRA) a :class:`FrozenParam`, which training leaves — and ``m(x)`` calls
the pure tier's ``apply``; the module parses no argument and does no arithmetic itself.

Penalties, the NNX way: inside ``nnx.capture(model, kconv.nnx.Penalty)``, a call of a
layer with any regularizer sows its penalty (weight regularizers plus the activity
regularizer of that call's output, exactly :meth:`kconv.layers.Layer.regularization_losses`)
as a :class:`Penalty` (an ``nnx.Intermediate``), once per call (a call of a layer already
called adds its activity penalty only: Keras counts weight penalties once a layer);
:func:`regularization_loss`
sums the captured state. Outside ``nnx.capture`` nothing is sown (Flax deprecates ``sow``
there), and ``m.regularization_losses(outputs=None)`` gives the pure tier's penalty for the
module's current weights directly.

Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from kconv import nnx as knnx
    >>> conv = knnx.Conv2D(8, 3, padding="same", kernel_regularizer="l2", in_channels=3,
    ...                    rngs=nnx.Rngs(0))
    >>> conv.kernel.shape, conv.bias.shape
    ((3, 3, 3, 8), (8,))
    >>> y, penalties = nnx.capture(conv, knnx.Penalty)(jnp.ones((2, 16, 16, 3)))
    >>> y.shape, regularization_loss(penalties).shape
    ((2, 16, 16, 8), ())
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from kconv import _sown
from kconv import layers as _layers
from kconv.layers._examples import EXAMPLES
from kconv.layers.base import in_dtype

__all__ = ["FrozenParam", "KconvModule", "Penalty", "from_layer", "regularization_loss"] + list(
    _layers.LAYER_NAMES)


class FrozenParam(nnx.Variable):
    """A weight Keras keeps out of training: the kernel of a layer with LoRA (Keras sets it
    ``trainable=False``). Not an ``nnx.Param``, so ``nnx.grad`` and
    ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` leave it as it is; ``nnx.state(model)``
    (a checkpoint) still holds it.

    Example:
        >>> from flax import nnx
        >>> m = Conv1D(2, 3, lora_rank=1, in_channels=1, rngs=nnx.Rngs(0))
        >>> type(m.kernel).__name__, type(m.lora_kernel_a).__name__
        ('FrozenParam', 'Param')
    """


class Penalty(nnx.Intermediate):
    """An ``nnx.Intermediate`` holding the penalties a kconv layer sowed on its calls.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> m = Conv1D(2, 3, activity_regularizer="l2", in_channels=1, rngs=nnx.Rngs(0))
        >>> y, penalties = nnx.capture(m, Penalty)(jnp.ones((4, 8, 1)))
        >>> [type(v).__name__ for v in jax.tree.leaves(
        ...     penalties, is_leaf=lambda v: isinstance(v, nnx.Variable))]
        ['Penalty']
    """


def regularization_loss(penalties: Any) -> jax.Array:
    """Sums the :class:`Penalty` state captured by ``nnx.capture(model, Penalty)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> m = Conv1D(2, 3, kernel_regularizer="l1", in_channels=1, rngs=nnx.Rngs(0))
        >>> y, penalties = nnx.capture(m, Penalty)(jnp.ones((4, 8, 1)))
        >>> bool(regularization_loss(penalties) == m.regularization_losses(y))
        True
    """
    return sum((jnp.sum(leaf) for leaf in jax.tree.leaves(penalties)),
               jnp.zeros((), jnp.float32))


class KconvModule(nnx.Module):
    """Base of the generated NNX modules: holds the pure layer and its ``nnx.Param``s.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> m = Conv2D(4, 3, in_channels=3, rngs=nnx.Rngs(0))
        >>> isinstance(m, KconvModule), type(m.layer).__name__, m.kernel.shape
        (True, 'Conv2D', (3, 3, 3, 4))
    """

    layer_cls: type = _layers.Layer

    def __init__(self, *args: Any, in_channels: int | None = None,
                 rngs: nnx.Rngs | None = None, **kwargs: Any) -> None:
        cls = type(self).layer_cls
        self.layer = cls(*args, **kwargs)  # validates and canonicalises every argument
        if not cls.has_weights:
            return
        if in_channels is None or rngs is None:
            raise TypeError(f"{cls.__name__}: in_channels and rngs are required for a "
                            f"layer with weights, got in_channels={in_channels!r}, "
                            f"rngs={rngs!r}")
        if not isinstance(rngs, nnx.Rngs):  # Flax's own layers fail on .params here
            raise TypeError(f"{cls.__name__}: rngs must be an nnx.Rngs (e.g. "
                            f"nnx.Rngs(0)), got {rngs!r}")
        for name, w in self.layer.weights_for_channels(in_channels).items():
            kind = nnx.Param if w.trainable else FrozenParam
            value = in_dtype(w.initializer)(rngs.params(), w.shape, self.layer.weight_dtype(w))
            setattr(self, name, kind(value))

    def _params(self) -> dict[str, jax.Array]:
        return {name: getattr(self, name)[...] for name in self._param_names()}

    def _param_names(self) -> list[str]:
        names = self.layer._names() if self.layer.has_weights else []
        return [name for name in names
                if isinstance(getattr(self, name, None), (nnx.Param, FrozenParam))]

    def __call__(self, x: jax.Array) -> jax.Array:
        params = self._params()
        y = self.layer.apply(params, x)
        # Only inside nnx.capture: Flax 0.12 deprecates sow() outside it, where the value
        # would also linger on the module as state.
        if _sown.has_penalty(self.layer) and hasattr(self, "__captures__"):
            self.sow(Penalty, "regularization", _sown.call_penalties(self.layer, params, y),
                     reduce_fn=_sown.weights_once)
        return y

    def _stacked(self) -> tuple[dict[str, jax.Array], dict[str, int]]:
        """The weights, a stack's axis (made under ``nnx.vmap`` / ``nnx.scan``) moved to
        the front, and where it was by name (``{}`` for one layer's weights): NNX keeps no
        record of ``out_axes``, so it is read off the shapes."""
        from kconv.interop.flax import _kconv_stack_axes

        params = self._params()
        at = _kconv_stack_axes(self.layer, params, type(self).__name__)
        return {name: jnp.moveaxis(v, at[name], 0) if name in at else v
                for name, v in params.items()}, at

    def regularization_losses(self, outputs: jax.Array | None = None) -> jax.Array:
        """The pure tier's penalty for this module's current weights (and ``outputs``).

        A stack made under ``nnx.vmap`` gives each layer's penalty, summed (its weights'
        stack axis wherever ``out_axes`` put it; the outputs' stack axes leading)."""
        return self.layer.regularization_losses(self._stacked()[0], outputs)

    def constrain(self) -> None:
        """Projects the weights in place with their constraints (as Keras after a step);
        a stack's one layer at a time, wherever ``nnx.vmap``'s ``out_axes`` put it."""
        params, at = self._stacked()
        for name, value in self.layer.constrain(params).items():
            getattr(self, name)[...] = jnp.moveaxis(value, 0, at[name]) if name in at else value


def _make(pure_cls: type) -> type:
    name = pure_cls.__name__
    params = list(inspect.signature(pure_cls).parameters.values())
    params += [inspect.Parameter("in_channels", inspect.Parameter.KEYWORD_ONLY, default=None),
               inspect.Parameter("rngs", inspect.Parameter.KEYWORD_ONLY, default=None)]
    args, shape = EXAMPLES[name]
    extra = f"in_channels={shape[-1]}, " if pure_cls.has_weights else ""
    doc = (f"Flax NNX ``{name}``: the arguments of :class:`kconv.{name}`, plus keyword-only "
           f"``in_channels`` and ``rngs``; weights are ``nnx.Param`` attributes with Keras's "
           f"names.\n\nExample:\n    >>> import jax.numpy as jnp\n    >>> from flax import nnx\n"
           f"    >>> m = {name}(**{args!r}, {extra}rngs=nnx.Rngs(0))\n"
           f"    >>> m(jnp.ones({shape})).shape == m.layer.compute_output_shape({shape})\n"
           f"    True\n")
    cls = type(name, (KconvModule,), {"layer_cls": pure_cls, "__doc__": doc,
                                      "__module__": __name__})
    cls.__signature__ = inspect.Signature(params)
    return cls


for _name in _layers.LAYER_NAMES:
    globals()[_name] = _make(getattr(_layers, _name))
del _name


def from_layer(layer: _layers.Layer, params: Mapping[str, Any] | None = None) -> KconvModule:
    """The NNX module of a pure-tier layer, holding ``params`` as its weights.

    How a ported model gets into NNX: the ``(layer, params)`` pairs of
    :func:`kconv.interop.load_keras_layers` (``layers_from_torch``, ``layers_from_flax``),
    or a layer with the params of :func:`kconv.interop.params_from_keras` (``_torch``,
    ``_flax``), become modules directly, with no random initialisation to overwrite. The params are
    checked against the layer's config (names and shapes, the input channels read off the
    kernel) and stored in the layer's ``param_dtype``; a LoRA layer's kernel becomes a
    :class:`FrozenParam`, as in a module built by its constructor.

    Args:
      layer: a kconv layer (``kconv.Conv2D(...)``, ...).
      params: its params (``{}`` or ``None`` for a layer without weights).

    Returns:
      The ``kconv.nnx`` module of the layer's class and config.

    Example:
        >>> import jax, jax.numpy as jnp, kconv
        >>> layer = kconv.Conv2D(8, 3)
        >>> params = layer.init(jax.random.key(0), (None, 16, 16, 3))
        >>> m = from_layer(layer, params)
        >>> type(m).__name__, m.kernel.shape
        ('Conv2D', (3, 3, 3, 8))
        >>> x = jnp.ones((1, 16, 16, 3))
        >>> bool(jnp.array_equal(m(x), layer(params, x)))
        True
    """
    if not isinstance(layer, _layers.Layer) or type(layer).__name__ not in _layers.LAYER_NAMES:
        raise TypeError(f"kconv.nnx.from_layer: layer must be a kconv layer "
                        f"(kconv.Conv2D(...), ...), got {layer!r}")
    name = type(layer).__name__
    where = f"kconv.nnx.from_layer({name})"
    cls = globals()[name]
    arguments = {f.name: getattr(layer, f.name) for f in dataclasses.fields(layer)}
    in_channels = layer._check_weights({} if params is None else params, where)
    if in_channels is None:
        return cls(**arguments)
    # Built abstractly (no initializer runs), then each weight takes its value.
    module = nnx.eval_shape(lambda: cls(**arguments, in_channels=in_channels,
                                        rngs=nnx.Rngs(0)))
    for weight_name, weight in layer.weights_for_channels(in_channels).items():
        value = jnp.asarray(params[weight_name], layer.weight_dtype(weight))
        setattr(module, weight_name, getattr(module, weight_name).replace(value))
    return module
