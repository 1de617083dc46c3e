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
    Cropping1D,
    Cropping2D,
    Cropping3D,
    DepthwiseConv1D,
    DepthwiseConv2D,
    DepthwiseConv3D,
    Layer,
    SeparableConv1D,
    SeparableConv2D,
    SeparableConv3D,
    UpSampling1D,
    UpSampling2D,
    UpSampling3D,
    ZeroPadding1D,
    ZeroPadding2D,
    ZeroPadding3D,
)

__version__ = "0.1.0"

# The Flax and optax tiers and interop load on first use (``kconv.nnx.Conv2D``), so
# ``import kconv`` alone never imports Flax: the pure core does not depend on it.
_LAZY_SUBMODULES = ("interop", "linen", "nnx", "optax")


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"kconv.{name}")
    raise AttributeError(f"module 'kconv' has no attribute {name!r}")

__all__ = [
    "activations", "config", "constraints", "initializers", "ops", "regularizers", "Layer",
    "Conv1D", "Conv2D", "Conv3D",
    "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
    "DepthwiseConv1D", "DepthwiseConv2D", "DepthwiseConv3D",
    "SeparableConv1D", "SeparableConv2D", "SeparableConv3D",
    "Cropping1D", "Cropping2D", "Cropping3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
    "UpSampling1D", "UpSampling2D", "UpSampling3D",
]
