"""The pure-tier layers: immutable config objects over ``kconv.ops``."""

from kconv.layers.base import Layer, Weight
from kconv.layers.conv import Conv, Conv1D, Conv2D, Conv3D
from kconv.layers.conv_transpose import (
    Conv1DTranspose,
    Conv2DTranspose,
    Conv3DTranspose,
    ConvTranspose,
)
from kconv.layers.depthwise import DepthwiseConv, DepthwiseConv1D, DepthwiseConv2D
from kconv.layers.separable import SeparableConv, SeparableConv1D, SeparableConv2D

__all__ = [
    "Layer", "Weight",
    "Conv", "Conv1D", "Conv2D", "Conv3D",
    "ConvTranspose", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
    "DepthwiseConv", "DepthwiseConv1D", "DepthwiseConv2D",
    "SeparableConv", "SeparableConv1D", "SeparableConv2D",
]
