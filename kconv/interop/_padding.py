"""What the PyTorch and Flax importers share: their padding amounts as Keras's strings."""

from __future__ import annotations

from typing import Any


def keras_padding(pairs: tuple[tuple[int, int], ...], strides: tuple[int, ...],
                  dilation: tuple[int, ...], kernel_size: tuple[int, ...]) -> Any:
    """A forward convolution's ``(lo, hi)`` amounts as Keras's string where one is the same
    function for every input length (the config Keras reads): ``"valid"`` for none,
    ``"same"`` at stride 1 where each axis pads half of an even ``d * (k - 1)`` on both
    sides; else the amounts.

    >>> keras_padding(((1, 1), (2, 2)), (1, 1), (1, 2), (3, 3))
    'same'
    >>> keras_padding(((1, 1),), (2,), (1,), (3,))
    ((1, 1),)
    """
    if not any(lo or hi for lo, hi in pairs):
        return "valid"
    if all(s == 1 and lo == hi and d * (k - 1) == 2 * lo
           for (lo, hi), s, d, k in zip(pairs, strides, dilation, kernel_size)):
        return "same"
    return pairs
