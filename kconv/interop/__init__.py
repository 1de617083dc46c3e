"""Interop: Keras layer configs and weight files both ways; PyTorch and Flax layers and
weights in (one module, or a whole model's).

Nothing here imports Keras, TensorFlow or PyTorch: files are read with ``h5py``, ``zipfile``
and ``json``, tensors through NumPy; nothing is unpickled or executed. Flax is imported
when a Flax function is first called.

Example:
    >>> from kconv import interop
    >>> interop.layer_from_keras({"class_name": "Conv2D",
    ...                           "config": {"filters": 8, "kernel_size": [3, 3]}}).kernel_size
    (3, 3)
"""

from kconv.interop.flax import FlaxLayers, layer_from_flax, layers_from_flax, params_from_flax
from kconv.interop.keras import (
    KerasWeights,
    layer_from_keras,
    load_keras_layers,
    load_keras_weights,
    params_from_keras,
    save_keras_weights,
    to_keras_weights,
)
from kconv.interop.torch import TorchLayers, layer_from_torch, layers_from_torch, params_from_torch

__all__ = [
    "FlaxLayers", "KerasWeights", "TorchLayers", "layer_from_flax", "layer_from_keras",
    "layer_from_torch", "layers_from_flax", "layers_from_torch", "load_keras_layers",
    "load_keras_weights", "params_from_flax", "params_from_keras", "params_from_torch",
    "save_keras_weights", "to_keras_weights",
]
