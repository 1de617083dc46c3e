"""The pure-tier layers: immutable config objects over ``kconv.ops``."""

from kconv.layers.base import Layer, Weight
from kconv.layers.conv import Conv, Conv1D, Conv2D, Conv3D
from kconv.layers.conv_transpose import (
    Conv1DTranspose,
    Conv2DTranspose,
    Conv3DTranspose,
    ConvTranspose,
)
from kconv.layers.cropping import Cropping, Cropping1D, Cropping2D, Cropping3D
from kconv.layers.depthwise import (
    DepthwiseConv,
    DepthwiseConv1D,
    DepthwiseConv2D,
    DepthwiseConv3D,
)
from kconv.layers.separable import (
    SeparableConv,
    SeparableConv1D,
    SeparableConv2D,
    SeparableConv3D,
)
from kconv.layers.upsampling import UpSampling, UpSampling1D, UpSampling2D, UpSampling3D
from kconv.layers.zero_padding import ZeroPadding, ZeroPadding1D, ZeroPadding2D, ZeroPadding3D

__all__ = [
    "Layer", "Weight",
    "Conv", "Conv1D", "Conv2D", "Conv3D",
    "ConvTranspose", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
    "DepthwiseConv", "DepthwiseConv1D", "DepthwiseConv2D", "DepthwiseConv3D",
    "SeparableConv", "SeparableConv1D", "SeparableConv2D", "SeparableConv3D",
    "Cropping", "Cropping1D", "Cropping2D", "Cropping3D",
    "ZeroPadding", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
    "UpSampling", "UpSampling1D", "UpSampling2D", "UpSampling3D",
]

#: The public layer classes, in the order the Flax tiers generate their wrappers.
LAYER_NAMES = (
    "Conv1D", "Conv2D", "Conv3D",
    "SeparableConv1D", "SeparableConv2D", "SeparableConv3D",
    "DepthwiseConv1D", "DepthwiseConv2D", "DepthwiseConv3D",
    "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
    "Cropping1D", "Cropping2D", "Cropping3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
    "UpSampling1D", "UpSampling2D", "UpSampling3D",
)
