"""One small configuration and input shape per layer: used by the Flax tiers' generated
docstring examples and by the tests that sweep every layer."""

EXAMPLES = {
    "Conv1D": (dict(filters=4, kernel_size=3, padding="causal"), (2, 9, 3)),
    "Conv2D": (dict(filters=4, kernel_size=3, strides=2, padding="same"), (2, 8, 8, 3)),
    "Conv3D": (dict(filters=2, kernel_size=2), (2, 4, 4, 4, 3)),
    "SeparableConv1D": (dict(filters=4, kernel_size=3, depth_multiplier=2), (2, 9, 3)),
    "SeparableConv2D": (dict(filters=4, kernel_size=3, padding="same"), (2, 8, 8, 3)),
    "SeparableConv3D": (dict(filters=2, kernel_size=2, padding="same"), (2, 4, 4, 4, 3)),
    "DepthwiseConv1D": (dict(kernel_size=3, depth_multiplier=2), (2, 9, 3)),
    "DepthwiseConv2D": (dict(kernel_size=3, padding="same"), (2, 8, 8, 3)),
    "DepthwiseConv3D": (dict(kernel_size=2, depth_multiplier=2), (2, 4, 4, 4, 3)),
    "Conv1DTranspose": (dict(filters=4, kernel_size=3, strides=2), (2, 5, 3)),
    "Conv2DTranspose": (dict(filters=4, kernel_size=3, strides=2, padding="same"),
                        (2, 4, 4, 3)),
    "Conv3DTranspose": (dict(filters=2, kernel_size=2, strides=2), (2, 3, 3, 3, 3)),
    "Cropping1D": (dict(cropping=(1, 2)), (2, 9, 3)),
    "Cropping2D": (dict(cropping=((1, 0), (2, 1))), (2, 8, 8, 3)),
    "Cropping3D": (dict(cropping=1), (2, 4, 4, 4, 3)),
    "ZeroPadding1D": (dict(padding=2), (2, 9, 3)),
    "ZeroPadding2D": (dict(padding=(1, 2)), (2, 8, 8, 3)),
    "ZeroPadding3D": (dict(padding=1), (2, 4, 4, 4, 3)),
    "UpSampling1D": (dict(size=3), (2, 9, 3)),
    "UpSampling2D": (dict(size=2, interpolation="bilinear"), (2, 8, 8, 3)),
    "UpSampling3D": (dict(size=2), (2, 4, 4, 4, 3)),
}
