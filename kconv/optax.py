"""``kconv.optax``: Keras's weight constraints (and its frozen weights) as optax
transformations.

Keras projects every constrained weight right after each optimizer step. In optax terms
that is a last transformation in the chain that turns the updates into
``constrain(params + updates) - params``, so that ``optax.apply_updates`` lands inside the
constraint (up to one float rounding of the subtraction).

Example:
    >>> import jax, jax.numpy as jnp, optax, kconv
    >>> layer = kconv.Conv1D(2, 3, kernel_constraint="non_neg")
    >>> params = layer.init(jax.random.key(0), (None, 8, 1))
    >>> tx = optax.chain(optax.sgd(0.1), constrain(layer))
    >>> state = tx.init(params)
    >>> grads = jax.tree.map(jnp.ones_like, params)
    >>> updates, state = tx.update(grads, state, params)
    >>> params = optax.apply_updates(params, updates)
    >>> bool(params["kernel"].min() >= 0)
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax as _optax

from kconv.layers import Layer

__all__ = ["constrain", "constrain_params", "freeze"]

Path = tuple[Any, ...]
Orders = dict[str, tuple[int, ...]]  # a layer's weights' transposes, stack axes to the front


def _key(entry: Any) -> Any:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return getattr(entry, attr)
    return entry


def _is_layer(node: Any) -> bool:
    return isinstance(node, Layer)


def _layers_of(model: Any, example_args: tuple, example_kwargs: dict,
               what: str = "constrain") -> tuple[dict[Path, Layer], dict[Path, Orders]]:
    """``{module path: pure layer}`` for a pure layer, a pytree of them, or a Flax model;
    and, for the layers of a Flax stack whose stack axes do not lead (``nn.vmap``'s
    ``variable_axes={"params": 1}``, ``nnx.vmap``'s ``out_axes=1``), each weight's
    transpose bringing them to the front, where a pure layer takes a stack's."""
    import flax.linen as nn
    from flax import nnx

    from kconv import linen as klinen
    from kconv import nnx as knnx
    from kconv.interop import flax as interop

    if isinstance(model, nnx.Module):
        found, orders = {}, {}
        for path, node in nnx.iter_graph(model):
            if isinstance(node, knnx.KconvModule):
                found[tuple(path)] = node.layer
                weights, at = node._stacked()
                if at:
                    orders[tuple(path)] = {name: _moved_to_front(np.ndim(w), at[name])
                                           for name, w in weights.items() if name in at}
        return found, orders
    if isinstance(model, nn.Module):
        if not example_args and not example_kwargs:
            raise TypeError(f"kconv.optax.{what}: a linen model builds its submodules when "
                            f"called; pass example inputs: {what}(model, x)")
        shapes: dict[str, Any] = {}
        modules, _, _ = interop._linen_modules(
            model, None, example_args, example_kwargs,
            run=lambda: shapes.update(jax.eval_shape(lambda: model.init(
                jax.random.key(0), *example_args, **example_kwargs))))
        found, orders = {}, {}
        for path, module in modules.items():
            if not isinstance(module, klinen.KconvModule):
                continue
            layer = found[path] = module.pure_layer
            lifts = [modules.get(path[:i]) for i in range(1, len(path) + 1)]
            axes = interop._stack_axes(lifts, f"kconv.optax.{what}")
            weights = interop._params_at(shapes, path) if axes and layer.has_weights else {}
            own = layer._weight_ranks()
            order = {name: interop._stack_order(len(w.shape), axes, own[name])
                     for name, w in weights.items() if name in own}
            order = {name: o for name, o in order.items()
                     if o is not None and o != tuple(range(len(o)))}
            if order:
                orders[path] = order
        return found, orders
    flat, _ = jax.tree_util.tree_flatten_with_path(model, is_leaf=_is_layer)
    layers = {tuple(_key(k) for k in path): leaf for path, leaf in flat if _is_layer(leaf)}
    if len(layers) != len(flat):
        raise TypeError(f"kconv.optax.{what}: expected a kconv layer, a pytree of kconv "
                        f"layers, or a linen/nnx model, got {type(model).__name__}")
    return layers, {}


def _moved_to_front(ndim: int, axis: int) -> tuple[int, ...]:
    """The transpose ``jnp.moveaxis(w, axis, 0)`` is."""
    return (axis, *(i for i in range(ndim) if i != axis))


def constrain_params(layers: dict[Path, Layer], params: Any) -> Any:
    """Projects every weight in ``params`` whose layer (by path) has a constraint.

    ``layers`` maps a module path (tuple of keys) to its pure layer; a weight is the leaf
    at ``path + (weight_name,)`` (an NNX ``Param``'s trailing ``.value`` is looked
    through). Other leaves are returned unchanged.

    Example:
        >>> import jax.numpy as jnp, kconv
        >>> layer = kconv.Conv1D(1, 1, bias_constraint="non_neg")
        >>> constrain_params({("a",): layer}, {"a": {"bias": jnp.array([-1.0])}})
        {'a': {'bias': Array([0.], dtype=float32)}}
    """
    return _per_layer(layers, params, _constrain)


def _constrain(layer: Layer, weights: dict[str, Any]) -> dict[str, Any]:
    return layer.constrain(weights)


def _per_layer(layers: dict[Path, Layer], tree: Any,
               fn: Callable[[Layer, dict[str, Any]], dict[str, Any]],
               orders: dict[Path, Orders] | None = None) -> Any:
    """``tree`` with each layer's weights (the leaves at ``path + (name,)``, an NNX
    ``Param``'s trailing ``.value`` looked through) replaced by ``fn(layer, weights)``;
    a weight with an order (``orders[path][name]``) given to ``fn`` transposed by it, its
    stack axes in front, and its result transposed back."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    values = [leaf for _, leaf in leaves]
    for module_path, index in _groups(layers, leaves).items():
        order = (orders or {}).get(module_path, {})
        weights = {n: jnp.transpose(values[i], order[n]) if n in order else values[i]
                   for n, i in index.items()}
        mapped = fn(layers[module_path], weights)
        for name, i in index.items():
            values[i] = (jnp.transpose(mapped[name], np.argsort(order[name]))
                         if name in order else mapped[name])
    return jax.tree_util.tree_unflatten(treedef, values)


def _groups(layers: dict[Path, Layer], leaves: list) -> dict[Path, dict[str, int]]:
    """For each layer path that has weights among ``leaves`` (``(path, leaf)`` pairs),
    its weights' names and positions."""
    groups: dict[Path, dict[str, int]] = {}
    for i, (path, _) in enumerate(leaves):
        if path and type(path[-1]).__name__ == "GetAttrKey" and path[-1].name == "value":
            path = path[:-1]
        keys = tuple(_key(k) for k in path)
        if keys[:-1] in layers:
            groups.setdefault(keys[:-1], {})[keys[-1]] = i
    return groups


def _check_params(layers: dict[Path, Layer], params: Any, what: str,
                  acts: Callable[[Layer], bool]) -> None:
    """Refuses params in which none of the layers this transformation acts on has its
    weights (the whole linen variables, an optimizer over a submodule of the model
    given): the transformation would silently do nothing."""
    wanted = [path for path, layer in layers.items() if acts(layer)]
    found = _groups(layers, jax.tree_util.tree_flatten_with_path(params)[0])
    if wanted and not any(path in found for path in wanted):
        shown = ["/".join(map(str, path)) or "(the top)" for path in wanted[:4]]
        raise ValueError(
            f"kconv.optax.{what}: none of the layers it acts on ({shown}"
            f"{' ...' if len(wanted) > 4 else ''}) has its weights in the params at their "
            f"paths in the model given (a linen model's params are variables['params']; an "
            f"optimizer over a submodule needs {what} of that submodule)")


def freeze(model: Any, *example_args: Any,
           **example_kwargs: Any) -> _optax.GradientTransformation:
    """An optax transformation, chained after the optimizer, that keeps the weights Keras
    freezes (the kernel of a layer with LoRA) where they are: their updates become zeros.

    What ``trainable=False`` does in Keras, for a pure layer (or a pytree of them) or a
    ``flax.linen`` model (with example inputs, as :func:`constrain` takes them), whose
    params hold such weights beside the trained ones. (``kconv.nnx`` modules hold them as
    :class:`kconv.nnx.FrozenParam`, which ``nnx.Optimizer(..., wrt=nnx.Param)`` leaves.)

    Example:
        >>> import jax, jax.numpy as jnp, optax, kconv
        >>> layer = kconv.Conv1D(2, 3, lora_rank=1)
        >>> params = layer.init(jax.random.key(0), (None, 8, 1))
        >>> tx = optax.chain(optax.sgd(0.1), freeze(layer))
        >>> updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
        >>> bool(jnp.all(updates["kernel"] == 0)), bool(jnp.all(updates["bias"] != 0))
        (True, True)
    """
    layers, _ = _found(model, example_args, example_kwargs, "freeze")  # masks: by name

    def keep_frozen(layer: Layer, updates: dict[str, Any]) -> dict[str, Any]:
        trainable = layer.trainable_mask(updates)
        return {name: u if trainable[name] else jax.numpy.zeros_like(u)
                for name, u in updates.items()}

    def init_fn(params: Any) -> _optax.EmptyState:
        _check_params(layers, params, "freeze",  # LoRA freezes the kernel (Keras)
                      lambda layer: bool(getattr(layer, "lora_rank", None)))
        return _optax.EmptyState()

    def update_fn(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        del params
        return _per_layer(layers, updates, keep_frozen), state

    return _optax.GradientTransformation(init_fn, update_fn)


def _found(model: Any, example_args: tuple, example_kwargs: dict,
           what: str) -> tuple[dict[Path, Layer], dict[Path, Orders]]:
    layers, orders = _layers_of(model, example_args, example_kwargs, what)
    if not layers:
        raise ValueError(f"kconv.optax.{what}: found no kconv layer in {type(model).__name__}")
    return layers, orders


def constrain(model: Any, *example_args: Any,
              **example_kwargs: Any) -> _optax.GradientTransformation:
    """An optax transformation, chained after the optimizer, applying kconv constraints.

    Args:
      model: a pure-tier layer (params: its dict); a pytree of layers matching the params
        pytree (``[conv1, conv2]`` for ``[p1, p2]``); a ``kconv.nnx`` model (params: its
        ``nnx.Param`` state, as ``nnx.Optimizer`` passes it); or a ``flax.linen`` model
        built from ``kconv.linen`` modules (params: ``variables["params"]``), in which case
        pass example inputs too, since linen builds submodules only when called.
      *example_args, **example_kwargs: the linen model's example inputs.

    Returns:
      A ``GradientTransformation`` whose ``update`` needs ``params`` and returns
      ``constrain(params + updates) - params``.

    Example:
        >>> import jax, jax.numpy as jnp, optax, kconv
        >>> layer = kconv.Conv1D(2, 3, kernel_constraint="non_neg")
        >>> params = layer.init(jax.random.key(0), (None, 8, 1))
        >>> tx = optax.chain(optax.sgd(0.1), kconv.optax.constrain(layer))
        >>> grads = jax.tree.map(jnp.ones_like, params)
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> bool(optax.apply_updates(params, updates)["kernel"].min() >= 0)
        True
    """
    layers, orders = _found(model, example_args, example_kwargs, "constrain")

    def init_fn(params: Any) -> _optax.EmptyState:
        _check_params(layers, params, "constrain", _has_constraint)
        return _optax.EmptyState()

    def update_fn(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        if params is None:
            raise ValueError("kconv.optax.constrain: update needs params "
                             "(tx.update(grads, state, params))")
        new_params = _optax.apply_updates(params, updates)
        projected = _per_layer(layers, new_params, _constrain, orders)
        return jax.tree.map(lambda p, q: q - p, params, projected), state

    return _optax.GradientTransformation(init_fn, update_fn)


def _has_constraint(layer: Layer) -> bool:
    return any(getattr(layer, f.name, None) is not None
               for f in dataclasses.fields(layer) if f.name.endswith("_constraint"))
