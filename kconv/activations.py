"""Keras 3 activation functions as pure JAX functions.

Every activation that ``keras.activations`` exports is here, under the same name,
with the same signature and defaults, and computes what Keras 3 computes on its JAX
backend (``keras/src/backend/jax/nn.py``). Where that backend calls ``jax.nn``
directly we call the same function; the few activations Keras writes by hand
(``relu`` with its extra arguments, ``soft_shrink``, ``hard_shrink``, ``threshold``,
``tanh_shrink``, ``sparsemax``, ``exponential``) are written the same way here, with a
comment saying why. One deliberate difference: ``sparsemax`` has the fix for a Keras
bug (see its docstring).

Layers name activations the way Keras configs do: ``get`` turns a name, a Keras
config dict, ``None`` or a callable into a function, and ``serialize`` turns a
function back into the name Keras writes in a layer's ``get_config()``.

Example:
    >>> import jax.numpy as jnp
    >>> from kconv import activations
    >>> f = activations.get("relu")
    >>> print(f(jnp.array([-1.0, 0.0, 2.0])))
    [0. 0. 2.]
    >>> activations.serialize(f)
    'relu'
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from kconv._registry import (
    IGNORED_KERAS_LAYER_KEYS,
    KerasObject,
    Registry,
    keras_builtin,
    real_number,
)

__all__ = [
    "celu",
    "elu",
    "exponential",
    "gelu",
    "glu",
    "hard_shrink",
    "hard_sigmoid",
    "hard_silu",
    "hard_swish",
    "hard_tanh",
    "leaky_relu",
    "linear",
    "log_sigmoid",
    "log_softmax",
    "mish",
    "relu",
    "relu6",
    "selu",
    "sigmoid",
    "silu",
    "soft_shrink",
    "softmax",
    "softplus",
    "softsign",
    "sparse_plus",
    "sparse_sigmoid",
    "sparsemax",
    "squareplus",
    "swish",
    "tanh",
    "tanh_shrink",
    "threshold",
    "ActivationLayer",
    "ELU",
    "LeakyReLU",
    "ReLU",
    "Softmax",
    "get",
    "serialize",
    "deserialize",
]

Axis = Union[int, tuple[int, ...]]


def relu(
    x: Any,
    negative_slope: float = 0.0,
    max_value: Optional[float] = None,
    threshold: float = 0.0,
) -> jax.Array:
    """Rectified linear unit, with Keras's optional slope, ceiling and threshold.

    With the defaults this is ``max(x, 0)``. Otherwise it is ``x`` for
    ``threshold < x <= max_value`` (``max_value`` for larger ``x``) and
    ``negative_slope * (x - threshold)`` for ``x <= threshold``.

    Args:
        x: Input array.
        negative_slope: Slope below ``threshold``. Defaults to ``0.0``.
        max_value: Saturation value, or ``None`` for no ceiling.
        threshold: Value below which the input is damped. Defaults to ``0.0``.

    Returns:
        An array with the shape and dtype of ``x``.

    Example:
        >>> x = jnp.array([-10.0, -5.0, 0.0, 5.0, 10.0])
        >>> print(relu(x))
        [ 0.  0.  0.  5. 10.]
        >>> print(relu(x, negative_slope=0.5))
        [-5.  -2.5  0.   5.  10. ]
        >>> print(relu(x, max_value=5.0))
        [0. 0. 0. 5. 5.]
        >>> print(relu(x, threshold=5.0))
        [ 0.  0.  0.  0. 10.]
    """
    # Written out as in keras.src.activations.activations.ReLU.static_call, branch for
    # branch: jax.nn.relu has no slope/ceiling/threshold, and the branches decide which
    # primitive (leaky_relu, relu6, relu + clip) and hence which gradient at the kinks
    # Keras uses.
    x = jnp.asarray(x)
    if negative_slope != 0.0:
        if max_value is None and threshold == 0:
            return jax.nn.leaky_relu(x, negative_slope=negative_slope)
        if threshold != 0:
            negative_part = jax.nn.relu(-x + threshold)
        else:
            negative_part = jax.nn.relu(-x)
    clip_max = max_value is not None
    if threshold != 0:
        x = jnp.where(x > jnp.asarray(threshold, x.dtype), x, 0)
    elif max_value == 6:
        x = jax.nn.relu6(x)
        clip_max = False
    else:
        x = jax.nn.relu(x)
    if clip_max:
        x = jnp.clip(x, jnp.asarray(0.0, x.dtype), jnp.asarray(max_value, x.dtype))
    if negative_slope != 0.0:
        x = x - negative_slope * negative_part
    return x


def leaky_relu(x: Any, negative_slope: float = 0.2) -> jax.Array:
    """Leaky ReLU: ``x`` for ``x >= 0``, ``negative_slope * x`` otherwise.

    Args:
        x: Input array.
        negative_slope: Slope for negative inputs. Defaults to ``0.2`` (Keras's
            default; ``jax.nn.leaky_relu`` defaults to ``0.01``).

    Example:
        >>> print(leaky_relu(jnp.array([-5.0, 0.0, 5.0])))
        [-1.  0.  5.]
    """
    return jax.nn.leaky_relu(jnp.asarray(x), negative_slope=negative_slope)


def relu6(x: Any) -> jax.Array:
    """ReLU capped at 6: ``min(max(x, 0), 6)``.

    Args:
        x: Input array.

    Example:
        >>> print(relu6(jnp.array([-1.0, 3.0, 9.0])))
        [0. 3. 6.]
    """
    return jax.nn.relu6(jnp.asarray(x))


def softmax(x: Any, axis: Axis = -1) -> jax.Array:
    """Softmax ``exp(x) / sum(exp(x))`` along ``axis``.

    Args:
        x: Input array.
        axis: Axis, or tuple of axes, to normalise over. Defaults to ``-1``.

    Example:
        >>> [round(float(v), 4) for v in softmax(jnp.array([-1.0, 0.0, 1.0]))]
        [0.09, 0.2447, 0.6652]
    """
    return jax.nn.softmax(jnp.asarray(x), axis=axis)


def elu(x: Any, alpha: float = 1.0) -> jax.Array:
    """Exponential linear unit: ``x`` for ``x > 0``, ``alpha * (exp(x) - 1)`` otherwise.

    Args:
        x: Input array.
        alpha: Scale of the negative part. Defaults to ``1.0``.

    Example:
        >>> [round(float(v), 4) for v in elu(jnp.array([-1.0, 0.0, 2.0]))]
        [-0.6321, 0.0, 2.0]
    """
    return jax.nn.elu(jnp.asarray(x), alpha=alpha)


def selu(x: Any) -> jax.Array:
    """Scaled ELU with Klambauer et al.'s constants (``alpha≈1.6733``, ``scale≈1.0507``).

    Args:
        x: Input array.

    Example:
        >>> [round(float(v), 4) for v in selu(jnp.array([-1.0, 0.0, 1.0]))]
        [-1.1113, 0.0, 1.0507]
    """
    return jax.nn.selu(jnp.asarray(x))


def softplus(x: Any) -> jax.Array:
    """Softplus ``log(exp(x) + 1)``.

    Args:
        x: Input array.

    Example:
        >>> [round(float(v), 4) for v in softplus(jnp.array([-1.0, 0.0, 1.0]))]
        [0.3133, 0.6931, 1.3133]
    """
    return jax.nn.softplus(jnp.asarray(x))


def softsign(x: Any) -> jax.Array:
    """Softsign ``x / (abs(x) + 1)``.

    Args:
        x: Input array.

    Example:
        >>> print(softsign(jnp.array([-3.0, 0.0, 1.0])))
        [-0.75  0.    0.5 ]
    """
    return jax.nn.soft_sign(jnp.asarray(x))


def soft_shrink(x: Any, threshold: float = 0.5) -> jax.Array:
    """Soft shrinkage: ``x - threshold`` above ``threshold``, ``x + threshold`` below
    ``-threshold``, ``0`` in between.

    Args:
        x: Input array.
        threshold: Half-width of the zero band. Defaults to ``0.5``.

    Example:
        >>> print(soft_shrink(jnp.array([-2.0, 0.25, 2.0])))
        [-1.5  0.   1.5]
    """
    # jax.nn has no soft_shrink; this is Keras's JAX backend expression.
    x = jnp.asarray(x)
    return jnp.where(
        x > threshold, x - threshold, jnp.where(x < -threshold, x + threshold, 0.0)
    )


def sparse_plus(x: Any) -> jax.Array:
    """SparsePlus: ``0`` for ``x <= -1``, ``(x + 1)**2 / 4`` on ``(-1, 1)``, ``x`` for
    ``x >= 1``.

    Args:
        x: Input array.

    Example:
        >>> print(sparse_plus(jnp.array([-2.0, 0.0, 2.0])))
        [0.   0.25 2.  ]
    """
    return jax.nn.sparse_plus(jnp.asarray(x))


def silu(x: Any) -> jax.Array:
    """SiLU, also called swish: ``x * sigmoid(x)``.

    Args:
        x: Input array.

    Example:
        >>> [round(float(v), 4) for v in silu(jnp.array([-1.0, 0.0, 1.0]))]
        [-0.2689, 0.0, 0.7311]
    """
    return jax.nn.silu(jnp.asarray(x))


# Keras exports the same function under both names and serializes it as "silu".
swish = silu


def squareplus(x: Any, b: float = 4) -> jax.Array:
    """Squareplus ``(x + sqrt(x**2 + b)) / 2``.

    Args:
        x: Input array.
        b: Smoothness parameter. Defaults to ``4``.

    Example:
        >>> [round(float(v), 4) for v in squareplus(jnp.array([-1.0, 0.0, 1.0]))]
        [0.618, 1.0, 1.618]
    """
    return jax.nn.squareplus(jnp.asarray(x), b=b)


def gelu(x: Any, approximate: bool = False) -> jax.Array:
    """Gaussian error linear unit ``x * Phi(x)``.

    Args:
        x: Input array.
        approximate: Use the tanh approximation. Defaults to ``False`` as in Keras
            (``jax.nn.gelu`` defaults to ``True``).

    Example:
        >>> [round(float(v), 4) for v in gelu(jnp.array([-1.0, 0.0, 1.0]))]
        [-0.1587, 0.0, 0.8413]
    """
    return jax.nn.gelu(jnp.asarray(x), approximate=approximate)


def celu(x: Any, alpha: float = 1.0) -> jax.Array:
    """Continuously differentiable ELU: ``x`` for ``x >= 0``,
    ``alpha * (exp(x / alpha) - 1)`` otherwise.

    Args:
        x: Input array.
        alpha: Scale parameter. Defaults to ``1.0``.

    Example:
        >>> [round(float(v), 4) for v in celu(jnp.array([-1.0, 0.0, 1.0]), alpha=2.0)]
        [-0.7869, 0.0, 1.0]
    """
    return jax.nn.celu(jnp.asarray(x), alpha=alpha)


def glu(x: Any, axis: int = -1) -> jax.Array:
    """Gated linear unit: split ``x`` in halves ``a, b`` along ``axis``; ``a * sigmoid(b)``.

    Args:
        x: Input array; its size along ``axis`` must be even.
        axis: Axis to split. Defaults to ``-1``.

    Returns:
        An array whose size along ``axis`` is half that of ``x``.

    Example:
        >>> glu(jnp.ones((2, 6))).shape
        (2, 3)
    """
    return jax.nn.glu(jnp.asarray(x), axis=axis)


def tanh(x: Any) -> jax.Array:
    """Hyperbolic tangent.

    Args:
        x: Input array.

    Example:
        >>> [round(float(v), 4) for v in tanh(jnp.array([-1.0, 0.0, 1.0]))]
        [-0.7616, 0.0, 0.7616]
    """
    return jax.nn.tanh(jnp.asarray(x))


def tanh_shrink(x: Any) -> jax.Array:
    """Tanh shrink ``x - tanh(x)``.

    Args:
        x: Input array.

    Example:
        >>> [round(float(v), 4) for v in tanh_shrink(jnp.array([-1.0, 0.0, 1.0]))]
        [-0.2384, 0.0, 0.2384]
    """
    # jax.nn has no tanh_shrink; this is Keras's JAX backend expression.
    x = jnp.asarray(x)
    return x - jnp.tanh(x)


def hard_tanh(x: Any) -> jax.Array:
    """Hard tanh: ``x`` clipped to ``[-1, 1]``.

    Args:
        x: Input array.

    Example:
        >>> print(hard_tanh(jnp.array([-2.0, 0.5, 2.0])))
        [-1.   0.5  1. ]
    """
    return jax.nn.hard_tanh(jnp.asarray(x))


def hard_shrink(x: Any, threshold: float = 0.5) -> jax.Array:
    """Hard shrinkage: ``x`` where ``abs(x) > threshold``, ``0`` elsewhere.

    Args:
        x: Input array.
        threshold: Half-width of the zero band. Defaults to ``0.5``.

    Example:
        >>> print(hard_shrink(jnp.array([-2.0, 0.25, 2.0])))
        [-2.  0.  2.]
    """
    # jax.nn has no hard_shrink; this is Keras's JAX backend expression.
    x = jnp.asarray(x)
    return jnp.where(jnp.abs(x) > threshold, x, 0.0)


def threshold(x: Any, threshold: float, default_value: float) -> jax.Array:
    """Threshold: ``x`` where ``x > threshold``, ``default_value`` elsewhere.

    Both arguments are required, as in Keras.

    Args:
        x: Input array.
        threshold: Values at or below this are replaced.
        default_value: Replacement value.

    Example:
        >>> print(threshold(jnp.array([-1.0, 0.0, 2.0]), 0.0, -5.0))
        [-5. -5.  2.]
    """
    # jax.nn has no threshold; this is Keras's JAX backend expression.
    x = jnp.asarray(x)
    return jnp.where(x > threshold, x, default_value)


def sigmoid(x: Any) -> jax.Array:
    """Logistic sigmoid ``1 / (1 + exp(-x))``.

    Args:
        x: Input array.

    Example:
        >>> [round(float(v), 4) for v in sigmoid(jnp.array([-1.0, 0.0, 1.0]))]
        [0.2689, 0.5, 0.7311]
    """
    return jax.nn.sigmoid(jnp.asarray(x))


def exponential(x: Any) -> jax.Array:
    """Exponential ``exp(x)``; integer and boolean inputs become float32 first.

    Args:
        x: Input array.

    Example:
        >>> [round(float(v), 4) for v in exponential(jnp.array([0.0, 1.0]))]
        [1.0, 2.7183]
    """
    # Keras (backend/jax/numpy.py `exp`) casts int/bool inputs to floatx (float32)
    # rather than letting jnp.exp pick the default float type.
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.float32)
    return jnp.exp(x)


def hard_sigmoid(x: Any) -> jax.Array:
    """Hard sigmoid ``relu6(x + 3) / 6``: ``0`` below ``-3``, ``1`` above ``3``.

    Args:
        x: Input array.

    Example:
        >>> print(hard_sigmoid(jnp.array([-4.0, 0.0, 1.5, 4.0])))
        [0.   0.5  0.75 1.  ]
    """
    return jax.nn.hard_sigmoid(jnp.asarray(x))


def log_sigmoid(x: Any) -> jax.Array:
    """Log-sigmoid ``-softplus(-x)``.

    Args:
        x: Input array.

    Example:
        >>> [round(float(v), 4) for v in log_sigmoid(jnp.array([-1.0, 0.0, 1.0]))]
        [-1.3133, -0.6931, -0.3133]
    """
    return jax.nn.log_sigmoid(jnp.asarray(x))


def sparse_sigmoid(x: Any) -> jax.Array:
    """Sparse sigmoid: ``0`` for ``x <= -1``, ``(x + 1) / 2`` on ``(-1, 1)``, ``1`` above.

    Args:
        x: Input array.

    Example:
        >>> print(sparse_sigmoid(jnp.array([-2.0, 0.0, 0.5, 2.0])))
        [0.   0.5  0.75 1.  ]
    """
    return jax.nn.sparse_sigmoid(jnp.asarray(x))


def hard_silu(x: Any) -> jax.Array:
    """Hard SiLU, also called hard swish: ``x * relu6(x + 3) / 6``.

    Args:
        x: Input array.

    Example:
        >>> print(hard_silu(jnp.array([-4.0, 0.0, 1.5, 4.0])))
        [-0.     0.     1.125  4.   ]
    """
    return jax.nn.hard_silu(jnp.asarray(x))


# Keras exports the same function under both names and serializes it as "hard_silu".
hard_swish = hard_silu


def linear(x: Any) -> Any:
    """Identity: returns ``x`` unchanged (not even converted to an array), as Keras does.

    Args:
        x: Anything.

    Example:
        >>> print(linear(jnp.array([-1.0, 2.0])))
        [-1.  2.]
    """
    return x


def mish(x: Any) -> jax.Array:
    """Mish ``x * tanh(softplus(x))``.

    Args:
        x: Input array.

    Example:
        >>> [round(float(v), 4) for v in mish(jnp.array([-1.0, 0.0, 1.0]))]
        [-0.3034, 0.0, 0.8651]
    """
    return jax.nn.mish(jnp.asarray(x))


def log_softmax(x: Any, axis: Axis = -1) -> jax.Array:
    """Log-softmax ``x - logsumexp(x)`` along ``axis``.

    Args:
        x: Input array.
        axis: Axis, or tuple of axes, to normalise over. Defaults to ``-1``.

    Example:
        >>> [round(float(v), 4) for v in log_softmax(jnp.array([-1.0, 0.0, 1.0]))]
        [-2.4076, -1.4076, -0.4076]
    """
    return jax.nn.log_softmax(jnp.asarray(x), axis=axis)


def sparsemax(x: Any, axis: int = -1) -> jax.Array:
    """Sparsemax (Martins & Astudillo, 2016): Euclidean projection onto the simplex.

    ``sparsemax(x) = max(x - tau(x), 0)``, with ``tau`` chosen so the result sums to 1
    along ``axis``; unlike softmax, small inputs get exactly zero.

    Note: Keras 3 up to at least 3.15 computes ``tau`` wrongly whenever more than one
    entry is in the support (its outputs then sum to less than 1; keras-team/keras
    issue #23425, fixed by PR #23469). kconv computes the correct ``tau``, so it agrees
    with those Keras versions only when a single entry survives.

    Args:
        x: Input array.
        axis: Axis to normalise over. Defaults to ``-1``.

    Example:
        >>> print(sparsemax(jnp.array([0.0, 1.0, 3.0])))
        [0. 0. 1.]
        >>> print(sparsemax(jnp.array([0.0, 0.5, 1.0])))
        [0.   0.25 0.75]
    """
    # jax.nn has no sparsemax. Algorithm 1 of Martins & Astudillo, laid out as Keras's
    # JAX backend lays it out, except that tau uses the sum of the sorted logits over
    # the support (= the k-th cumulative sum), the fix of keras-team/keras PR #23469.
    # The casts of the rank `r` and the support size `k` keep the arithmetic valid
    # under jax_numpy_dtype_promotion="strict"; they do not change values.
    logits = jnp.asarray(x)
    if not jnp.issubdtype(logits.dtype, jnp.inexact):
        logits = logits.astype(jnp.float32)
    logits_sorted = -jnp.sort(-logits, axis=axis)
    logits_cumsum = jnp.cumsum(logits_sorted, axis=axis)
    r_shape = [1] * logits.ndim
    r_shape[axis] = -1
    r = jnp.arange(1, logits.shape[axis] + 1, dtype=logits.dtype).reshape(r_shape)
    support = logits_sorted - (logits_cumsum - 1) / r > 0
    k = jnp.sum(support, axis=axis, keepdims=True).astype(logits.dtype)
    support_sum = jnp.sum(jnp.where(support, logits_sorted, 0.0), axis=axis, keepdims=True)
    tau = (support_sum - 1) / k
    return jnp.maximum(logits - tau, 0.0)


# Name -> function, exactly the keys of keras.src.activations.ALL_OBJECTS_DICT.
# --- Keras's activation layers, as activations ------------------------------------------
#
# Keras takes a layer as a layer's activation (``Conv2D(64, 3, activation=LeakyReLU(0.2))``,
# a GAN idiom) and writes it to the config as that layer's serialized dict. These classes
# are kconv's for the weightless ones: frozen (hashable), called as the activation, and
# written as Keras writes the layer, so such configs and models port both ways.


class ActivationLayer(KerasObject):
    """Base of Keras's weightless activation layers used as an ``activation``.

    ``from_config`` takes a Keras layer's own config: its base-layer keys (``name``,
    ``trainable``, ``dtype``, ...) are left out (the owning layer's dtype applies).

    Example:
        >>> import kconv
        >>> layer = kconv.Conv2D(8, 3, activation=LeakyReLU(0.2))
        >>> layer.get_config()["activation"]["class_name"]
        'LeakyReLU'
        >>> kconv.Conv2D.from_config(layer.get_config()) == layer
        True
    """

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        """Builds it from the layer's Keras config (its base-layer keys left out)."""
        return super().from_config(
            {k: v for k, v in config.items() if k not in _KERAS_LAYER_KEYS})


# The base-layer keys of a Keras activation layer's config, and its dtype policy (the
# owning layer's dtype applies).
_KERAS_LAYER_KEYS = frozenset(IGNORED_KERAS_LAYER_KEYS) | {"dtype", "autocast", "batch_size"}


def _non_negative(owner: str, name: str, value: Any) -> Union[int, float]:
    value = real_number(owner, name, value)
    if value < 0:  # Keras's ReLU and LeakyReLU refuse these too
        raise ValueError(f"{owner}: argument `{name}` cannot be negative, got {value!r}.")
    return value


@dataclasses.dataclass(frozen=True)
class ReLU(ActivationLayer):
    """Keras's ``ReLU`` layer as an activation: :func:`relu` with its arguments.

    Example:
        >>> act = ReLU(max_value=6.0, negative_slope=0.1)
        >>> print(act(jnp.array([-10.0, 3.0, 10.0])))
        [-1.  3.  6.]
    """

    max_value: Optional[float] = None
    negative_slope: float = 0.0
    threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.max_value is not None:
            object.__setattr__(self, "max_value",
                               _non_negative("ReLU", "max_value", self.max_value))
        for name in ("negative_slope", "threshold"):
            object.__setattr__(self, name, _non_negative("ReLU", name, getattr(self, name)))

    def __call__(self, x: Any) -> jax.Array:
        return relu(x, negative_slope=self.negative_slope, max_value=self.max_value,
                    threshold=self.threshold)


@dataclasses.dataclass(frozen=True)
class LeakyReLU(ActivationLayer):
    """Keras's ``LeakyReLU`` layer as an activation (its default slope is 0.3, where the
    ``leaky_relu`` function's is 0.2; tf-keras's configs name it ``alpha``).

    Example:
        >>> print(LeakyReLU(0.5)(jnp.array([-2.0, 2.0])))
        [-1.  2.]
        >>> LeakyReLU.from_config({"name": "leaky", "alpha": 0.1})  # tf-keras's config
        LeakyReLU(negative_slope=0.1)
    """

    negative_slope: float = 0.3

    def __post_init__(self) -> None:
        object.__setattr__(self, "negative_slope",
                           _non_negative("LeakyReLU", "negative_slope", self.negative_slope))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        """As the base's; tf-keras's ``alpha`` is ``negative_slope`` (Keras 3 takes it)."""
        config = dict(config)
        if "alpha" in config and "negative_slope" not in config:
            config["negative_slope"] = config.pop("alpha")
        return super().from_config(config)

    def __call__(self, x: Any) -> jax.Array:
        return leaky_relu(x, negative_slope=self.negative_slope)


@dataclasses.dataclass(frozen=True)
class ELU(ActivationLayer):
    """Keras's ``ELU`` layer as an activation: :func:`elu` with its ``alpha``.

    Example:
        >>> [round(float(v), 4) for v in ELU(0.5)(jnp.array([-1.0, 2.0]))]
        [-0.3161, 2.0]
    """

    alpha: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", real_number("ELU", "alpha", self.alpha))

    def __call__(self, x: Any) -> jax.Array:
        return elu(x, alpha=self.alpha)


@dataclasses.dataclass(frozen=True)
class Softmax(ActivationLayer):
    """Keras's ``Softmax`` layer as an activation: :func:`softmax` over ``axis`` (an int
    or a tuple of ints).

    Example:
        >>> Softmax(axis=(1, 2))(jnp.zeros((1, 2, 2, 3)))[0, :, :, 0]
        Array([[0.25, 0.25],
               [0.25, 0.25]], dtype=float32)
    """

    axis: Axis = -1

    def __post_init__(self) -> None:
        axis = self.axis
        items = list(axis) if isinstance(axis, (tuple, list)) else [axis]
        if not items or any(isinstance(a, (bool, np.bool_))
                            or not isinstance(a, (int, np.integer)) for a in items):
            raise TypeError(f"Softmax: argument `axis` must be an int or a tuple of ints, "
                            f"got {axis!r}.")
        object.__setattr__(self, "axis", tuple(int(a) for a in items)
                           if isinstance(axis, (tuple, list)) else int(axis))

    def __call__(self, x: Any) -> jax.Array:
        if isinstance(self.axis, tuple) and len(self.axis) > 1:
            # Keras's Softmax layer computes several axes as exp(x - logsumexp(x)), not
            # through the softmax op: the same expression, for its roundings.
            x = jnp.asarray(x)
            return jnp.exp(x - jax.nn.logsumexp(x, axis=self.axis, keepdims=True))
        axis = self.axis[0] if isinstance(self.axis, tuple) else self.axis
        return softmax(x, axis=axis)


_LAYERS = Registry("activation layer", ActivationLayer, (ReLU, LeakyReLU, ELU, Softmax), {},
                   module="keras.layers")


def _from_layer_config(class_name: str, config: Any) -> Callable[..., Any]:
    """The activation a Keras activation layer's config describes: kconv's class of it,
    the function an ``Activation`` layer wraps; a ``PReLU`` (weights) is refused."""
    if class_name == "Activation":
        if not isinstance(config, dict) or "activation" not in config:
            raise ValueError(f"An Activation layer config needs an 'activation'; got "
                             f"{config!r}.")
        return get(config["activation"])
    if class_name == "PReLU":  # a TypeError: no name or custom object makes it a function
        raise TypeError(
            "A PReLU layer as an activation has weights of its own (its alpha), which a "
            "kconv layer's activation, a function, cannot hold: apply the PReLU to the "
            "layer's output instead (activation=None), with its alpha as your own param.")
    return _LAYERS.deserialize({"class_name": class_name, "config": config})


_LAYER_NAMES = frozenset(_LAYERS.by_name) | {"Activation", "PReLU"}


_ACTIVATIONS: dict[str, Callable[..., Any]] = {
    fn.__name__: fn
    for fn in (
        celu,
        elu,
        exponential,
        gelu,
        glu,
        hard_shrink,
        hard_sigmoid,
        hard_silu,
        hard_tanh,
        leaky_relu,
        linear,
        log_sigmoid,
        log_softmax,
        mish,
        relu,
        relu6,
        selu,
        sigmoid,
        silu,
        soft_shrink,
        softmax,
        softplus,
        softsign,
        sparse_plus,
        sparse_sigmoid,
        sparsemax,
        squareplus,
        tanh,
        tanh_shrink,
        threshold,
    )
}
# The name each function is serialized under; built before the aliases are added so
# that swish -> "silu" and hard_swish -> "hard_silu", as in Keras.
_CANONICAL_NAMES: dict[Callable[..., Any], str] = {
    fn: name for name, fn in _ACTIVATIONS.items()
}
_ACTIVATIONS["swish"] = silu
_ACTIVATIONS["hard_swish"] = hard_silu


def _lookup(name: str) -> Callable[..., Any]:
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        pass
    # Keras matches names case-sensitively; say so rather than guess.
    hint = ""
    if name.lower() in _ACTIVATIONS:
        hint = f" (names are case-sensitive; did you mean {name.lower()!r}?)"
    raise ValueError(
        f"Unknown activation {name!r}{hint}. Valid names: {sorted(_ACTIVATIONS)}."
    )


def deserialize(config: Union[str, dict]) -> Callable[..., Any]:
    """Returns the activation function a Keras config names.

    Accepts the forms Keras 3 writes or reads:

    * a name, e.g. ``"relu"`` (what a Keras 3 layer's ``get_config()`` holds);
    * ``{"module": "keras.activations", "class_name": "function", "config": "relu",
      "registered_name": "relu"}`` (``keras.saving.serialize_keras_object``);
    * the older ``{"class_name": "relu", "config": ...}``;
    * a Keras activation layer's, ``{"module": "keras.layers", "class_name": "LeakyReLU",
      "config": {"negative_slope": 0.2, ...}, ...}`` (what Keras writes for
      ``activation=keras.layers.LeakyReLU(0.2)``): kconv's class of that layer
      (:class:`ReLU`, :class:`LeakyReLU`, :class:`ELU`, :class:`Softmax`), or for an
      ``Activation`` layer the function it wraps. A ``PReLU`` (weights of its own) is
      refused with a ``TypeError``.

    Names are case-sensitive, as in Keras.

    Args:
        config: A name or one of the dicts above.

    Returns:
        The kconv activation function.

    Raises:
        ValueError: for an unknown name or a malformed dict.
        TypeError: for anything but a string or a dict, and a ``PReLU`` layer's.

    Example:
        >>> deserialize("swish") is silu
        True
        >>> deserialize({"module": "keras.activations", "class_name": "function",
        ...              "config": "gelu", "registered_name": "gelu"}) is gelu
        True
        >>> deserialize({"module": "keras.layers", "class_name": "LeakyReLU",
        ...              "config": {"name": "leaky_re_lu", "negative_slope": 0.2}})
        LeakyReLU(negative_slope=0.2)
    """
    if isinstance(config, str):
        return _lookup(config)
    if isinstance(config, dict):
        class_name = config.get("class_name")
        if class_name in _LAYER_NAMES:  # a Keras activation layer
            return _from_layer_config(class_name, config.get("config") or {})
        if class_name == "function":
            name = config.get("config")
        else:
            name = class_name
        if not isinstance(name, str):
            raise ValueError(
                "An activation config dict needs a string 'class_name' (or "
                f"class_name='function' and a string 'config'); got {config!r}."
            )
        return _lookup(name)
    raise TypeError(
        "An activation config must be a name or a dict; got "
        f"{config!r} of type {type(config).__name__}."
    )


def get(identifier: Any) -> Callable[..., Any]:
    """Returns an activation function for a layer's ``activation`` argument.

    Args:
        identifier: ``None`` (meaning ``linear``), a name such as ``"relu"``, a Keras
            config dict (see :func:`deserialize`), or any callable, which is returned
            unchanged — but Keras's own functions (``keras.activations.relu``), which
            become kconv's of that name (the same values; hashable, and serialized by
            name as Keras does), and Keras's weightless activation layers
            (``keras.layers.LeakyReLU(0.2)``), which become kconv's class of that layer
            with its config.

    Returns:
        A callable mapping an array to an array.

    Raises:
        ValueError: for an unknown name or a malformed dict; the message lists the
            valid names.
        TypeError: for anything else.

    Example:
        >>> get(None) is linear
        True
        >>> get("relu") is relu
        True
        >>> get(jnp.tanh) is jnp.tanh
        True
    """
    if identifier is None:
        return linear
    if isinstance(identifier, (str, dict)):
        return deserialize(identifier)
    if keras_builtin(identifier) and getattr(identifier, "__name__", None) in _ACTIVATIONS:
        return _ACTIVATIONS[identifier.__name__]
    if keras_builtin(identifier) and type(identifier).__name__ in _LAYER_NAMES \
            and callable(getattr(identifier, "get_config", None)):
        # A live Keras activation layer (keras.layers.LeakyReLU(0.2)): read by its config.
        return _from_layer_config(type(identifier).__name__, identifier.get_config())
    if callable(identifier):
        return identifier
    raise TypeError(
        "Could not interpret activation identifier "
        f"{identifier!r} of type {type(identifier).__name__}: expected None, a name, "
        "a config dict or a callable."
    )


def serialize(activation: Optional[Callable[..., Any]]) -> Union[str, dict[str, Any]]:
    """Returns what Keras 3 writes for an activation in a layer config: its name (a
    Keras activation layer's serialized dict for :class:`ReLU`, :class:`LeakyReLU`,
    :class:`ELU` and :class:`Softmax`).

    ``None`` gives ``"linear"``; a kconv activation gives its Keras name (``swish``
    gives ``"silu"``, ``hard_swish`` gives ``"hard_silu"``, as in Keras). Any other
    function gives its ``__name__``: that round-trips through :func:`get` only if it
    is also a Keras activation name (so ``jax.nn.relu`` serializes as ``"relu"``);
    user functions are not registered anywhere. Keras writes a function by its name the
    same way, even one that computes something else under that name: ``jax.nn.gelu``
    (tanh approximation) is written ``"gelu"``, which reads back as Keras's exact gelu
    (``jax.nn.leaky_relu``, slope 0.01, would read back as Keras's, slope 0.2). kconv
    writes the name as Keras does, and warns where the function's values differ from
    those of Keras's activation of that name.

    Args:
        activation: ``None`` or a callable.

    Returns:
        The name, a string (for an activation layer, Keras's dict of it).

    Raises:
        ValueError: for a callable with no usable ``__name__`` (a lambda, a
            ``functools.partial``, most callable objects).

    Example:
        >>> serialize(swish)
        'silu'
        >>> serialize(None)
        'linear'
        >>> serialize(LeakyReLU(0.2))  # doctest: +NORMALIZE_WHITESPACE
        {'module': 'keras.layers', 'class_name': 'LeakyReLU', 'config': {'negative_slope': 0.2},
         'registered_name': None}
    """
    if activation is None:
        return "linear"
    if isinstance(activation, ActivationLayer):
        return _LAYERS.serialize(activation)
    try:
        return _CANONICAL_NAMES[activation]
    except (KeyError, TypeError):  # TypeError: an unhashable callable object.
        pass
    name = getattr(activation, "__name__", None)
    if callable(activation) and isinstance(name, str) and name.isidentifier():
        if name in _ACTIVATIONS:
            _warn_if_not_keras(activation, name)
        return name
    raise ValueError(
        f"Cannot serialize activation {activation!r}: it is not a kconv activation "
        "and has no function name to store (lambdas and partials have none)."
    )


def _warn_if_not_keras(activation: Callable[..., Any], name: str) -> None:
    """Warns where a foreign function written under a Keras activation's name computes
    other values than that activation (on a probe, eagerly: a function that fails on
    it, or under a trace, is not judged)."""
    x = np.linspace(-7.0, 7.0, 58, dtype=np.float32).reshape(29, 2)  # even: glu
    try:
        with jax.ensure_compile_time_eval():
            theirs = np.asarray(activation(jnp.asarray(x)), np.float64)
            keras = np.asarray(_ACTIVATIONS[name](jnp.asarray(x)), np.float64)
    except Exception:  # any failure: nothing to judge
        return
    if theirs.shape != keras.shape:
        differs = True
        where = ""
    else:
        gap = np.abs(theirs - keras)
        differs = bool((gap > 1e-6 * (1.0 + np.abs(keras))).any())
        i = np.unravel_index(np.argmax(gap), gap.shape)  # where they differ most
        where = (f" (at x = {x[i]:.3g}: {theirs[i]:.6g}, Keras's {keras[i]:.6g})"
                 if differs else "")
    if differs:
        warnings.warn(
            f"activation {activation!r} is written as {name!r}, as Keras writes a function "
            f"(by its name), but computes other values than Keras's {name!r}{where}: a "
            f"layer built from this config computes Keras's {name}. Pass "
            f"kconv.activations.{name} for Keras's, or keep the layer object rather than "
            f"its config.", UserWarning, stacklevel=3)

