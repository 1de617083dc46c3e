"""What the Flax tiers (``kconv.linen``, ``kconv.nnx``) sow of a layer's penalties."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from kconv.layers.base import Layer


def has_penalty(layer: Layer) -> bool:
    """Whether the layer has any regularizer (only then is anything sown)."""
    return any(getattr(layer, f.name) is not None for f in dataclasses.fields(layer)
               if f.name.endswith("_regularizer"))


def call_penalties(layer: Layer, params: Any, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One call's ``(weight penalty, activity penalty)``, for :func:`weights_once`."""
    return layer._weight_penalty(params), layer._activity_penalty(params, y)


def weights_once(sown: tuple, call: tuple[jax.Array, jax.Array]) -> tuple:
    """The ``reduce_fn`` of the sown penalties: one entry per call, the first with the
    weight penalty too. Keras adds a layer's weight penalty once however often the layer
    is called (a shared layer), its activity penalty at every call.

    Example:
        >>> weights_once(weights_once((), (1.0, 0.5)), (1.0, 0.25))
        (1.5, 0.25)
    """
    weights, activity = call
    return (*sown, weights + activity if not sown else activity)
