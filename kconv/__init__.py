"""kconv: the Keras convolution layer family for JAX, as pure functions over param pytrees.

Tiers: :mod:`kconv.ops` (pure array functions) → the layers re-exported here (immutable
config objects with ``init``/``apply``) → Flax wrappers.

Example:
    >>> import jax, jax.numpy as jnp, kconv
    >>> layer = kconv.Conv2D(16, 3, padding="same", activation="relu")
    >>> params = layer.init(jax.random.key(0), (None, 28, 28, 1))
    >>> jax.jit(layer)(params, jnp.ones((8, 28, 28, 1))).shape
    (8, 28, 28, 16)
"""

from kconv import activations, config, constraints, initializers, ops, regularizers
from kconv.layers import (
    Conv1D,
    Conv1DTranspose,
    Conv2D,
    Conv2DTranspose,
    Conv3D,
    Conv3DTranspose,
    DepthwiseConv1D,
    DepthwiseConv2D,
    Layer,
    SeparableConv1D,
    SeparableConv2D,
)

__version__ = "0.1.0"

__all__ = [
    "activations", "config", "constraints", "initializers", "ops", "regularizers", "Layer",
    "Conv1D", "Conv2D", "Conv3D",
    "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
    "DepthwiseConv1D", "DepthwiseConv2D",
    "SeparableConv1D", "SeparableConv2D",
]
