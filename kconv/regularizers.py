"""Keras 3 weight regularizers as hashable JAX penalty functions.

Each class has Keras 3's name, constructor arguments and defaults, and is a frozen
dataclass (hashable, compared by value). Calling one on an array returns the scalar
penalty Keras 3 computes (``keras/src/regularizers/regularizers.py``), in the array's
dtype.

Two Keras quirks are kept so that configs compare equal to Keras's:

* ``L1`` and ``OrthogonalRegularizer`` store their factor as a float32 tensor in
  Keras, so ``L1(0.01).get_config()`` is ``{"l1": 0.009999999776482582}``. kconv
  rounds the factor through float32 at construction for the same config (and the same
  penalty), and so that a config round trip gives back an equal object. ``L2`` and
  ``L1L2`` keep their Python floats, as Keras does.
* ``get("l1_l2")``/``get("l1l2")`` give ``L1L2()``, whose factors default to ``0.0``
  as in Keras 3's ``L1L2`` (Keras 2's ``l1_l2()`` function defaulted to ``0.01``);
  pass ``L1L2(l1=..., l2=...)`` for a non-zero penalty.

Example:
    >>> import jax.numpy as jnp
    >>> from kconv import regularizers
    >>> reg = regularizers.get("l2")
    >>> float(reg(jnp.ones((5, 5))))
    0.25
    >>> regularizers.serialize(reg)["config"]
    {'l2': 0.01}
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from kconv._registry import KerasObject, Registry

__all__ = [
    "Regularizer",
    "L1",
    "L2",
    "L1L2",
    "OrthogonalRegularizer",
    "l1",
    "l2",
    "l1_l2",
    "l1l2",
    "orthogonal_regularizer",
    "get",
    "serialize",
    "deserialize",
]

# keras.config.epsilon(): the floor of the norm in OrthogonalRegularizer's row/column
# normalisation (keras.ops.normalize).
_EPSILON = 1e-7


def _penalty_factor(owner: str, name: str, value: Any) -> float:
    """Keras's ``validate_float_arg``: a finite, non-negative number, as a float."""
    if (
        not isinstance(value, (int, float, np.integer, np.floating))
        or isinstance(value, (bool, np.bool_))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(
            f"{owner}: argument `{name}` must be a non-negative finite number, got {value!r}."
        )
    return float(value)


def _float32(value: float) -> float:
    # Keras keeps this factor as a float32 tensor (ops.convert_to_tensor), so its
    # value -- and the float its get_config() reports -- is rounded to float32.
    return float(np.float32(value))


class Regularizer(KerasObject):
    """Base class of the kconv regularizers (Keras's ``keras.regularizers.Regularizer``).

    Subclasses are frozen dataclasses implementing ``__call__(x) -> scalar``.
    ``get_config()`` returns Keras's ``get_config()`` dict, ``from_config`` inverts it.

    Example:
        >>> isinstance(L1(), Regularizer)
        True
        >>> L1L2(l1=0.5).get_config()
        {'l1': 0.5, 'l2': 0.0}
        >>> L2.from_config({"l2": 0.1})
        L2(l2=0.1)
    """

    def __call__(self, x: Any) -> jax.Array:
        raise NotImplementedError(f"{type(self).__name__} does not implement __call__.")


@dataclasses.dataclass(frozen=True)
class L1(Regularizer):
    """L1 penalty ``l1 * sum(abs(x))``.

    Args:
        l1: Non-negative factor (``None`` means the default). Defaults to ``0.01``;
            stored rounded to float32, as Keras stores it.

    Example:
        >>> print(L1(0.5)(jnp.array([[-1.0, 2.0], [3.0, -4.0]])))
        5.0
    """

    l1: float = 0.01

    def __post_init__(self) -> None:
        l1 = 0.01 if self.l1 is None else self.l1
        object.__setattr__(self, "l1", _float32(_penalty_factor("L1", "l1", l1)))

    def __call__(self, x: Any) -> jax.Array:
        x = jnp.asarray(x)
        return jnp.asarray(self.l1, x.dtype) * jnp.sum(jnp.abs(x))


@dataclasses.dataclass(frozen=True)
class L2(Regularizer):
    """L2 penalty ``l2 * sum(square(x))`` (no factor 1/2).

    Args:
        l2: Non-negative factor (``None`` means the default). Defaults to ``0.01``.

    Example:
        >>> print(L2(2.0)(jnp.ones((5, 5))))
        50.0
    """

    l2: float = 0.01

    def __post_init__(self) -> None:
        l2 = 0.01 if self.l2 is None else self.l2
        object.__setattr__(self, "l2", _penalty_factor("L2", "l2", l2))

    def __call__(self, x: Any) -> jax.Array:
        x = jnp.asarray(x)
        return jnp.asarray(self.l2, x.dtype) * jnp.sum(jnp.square(x))


@dataclasses.dataclass(frozen=True)
class L1L2(Regularizer):
    """Sum of the L1 and L2 penalties ``l1 * sum(abs(x)) + l2 * sum(square(x))``.

    Args:
        l1: Non-negative L1 factor (``None`` means ``0.0``). Defaults to ``0.0``.
        l2: Non-negative L2 factor (``None`` means ``0.0``). Defaults to ``0.0``.

    Example:
        >>> print(L1L2(l1=1.0, l2=0.5)(jnp.array([-2.0, 2.0])))
        8.0
    """

    l1: float = 0.0
    l2: float = 0.0

    def __post_init__(self) -> None:
        l1 = 0.0 if self.l1 is None else self.l1
        l2 = 0.0 if self.l2 is None else self.l2
        object.__setattr__(self, "l1", _penalty_factor("L1L2", "l1", l1))
        object.__setattr__(self, "l2", _penalty_factor("L1L2", "l2", l2))

    def __call__(self, x: Any) -> jax.Array:
        x = jnp.asarray(x)
        regularization = jnp.zeros((), x.dtype)
        # Terms with a zero factor are skipped, as in Keras (an inf/nan weight then
        # does not turn a zero penalty into nan).
        if self.l1 != 0.0:
            l1 = jnp.asarray(self.l1, x.dtype)
            regularization = regularization + l1 * jnp.sum(jnp.abs(x))
        if self.l2 != 0.0:
            l2 = jnp.asarray(self.l2, x.dtype)
            regularization = regularization + l2 * jnp.sum(jnp.square(x))
        return regularization


_ORTHOGONAL_MODES = ("rows", "columns")


@dataclasses.dataclass(frozen=True)
class OrthogonalRegularizer(Regularizer):
    """Penalty pushing the rows (or columns) of a matrix towards orthogonality.

    The rows (``mode="rows"``) or columns are L2-normalised; the penalty is
    ``factor * 0.5 * sum(|<v_i, v_j>|, i != j) / (n * (n - 1) / 2)`` over the ``n``
    normalised vectors, i.e. ``factor`` times the mean absolute cosine over all pairs.
    Rank-2 inputs only, as in Keras. With ``n == 1`` there are no pairs and the
    result is ``nan``, as in Keras.

    Args:
        factor: Non-negative factor. Defaults to ``0.01``; stored rounded to float32,
            as Keras stores it.
        mode: ``"rows"`` or ``"columns"``. Defaults to ``"rows"``.

    Raises:
        ValueError: for a bad ``factor`` or ``mode``, or when called on an array that
            is not rank 2.

    Example:
        >>> reg = OrthogonalRegularizer(factor=1.0)
        >>> print(reg(jnp.eye(3)))
        0.0
        >>> print(reg(jnp.array([[1.0, 0.0], [1.0, 0.0]])))
        1.0
    """

    factor: float = 0.01
    mode: str = "rows"

    def __post_init__(self) -> None:
        factor = _penalty_factor("OrthogonalRegularizer", "factor", self.factor)
        if self.mode not in _ORTHOGONAL_MODES:
            raise ValueError(
                "OrthogonalRegularizer: argument `mode` must be one of "
                f"{_ORTHOGONAL_MODES}, got {self.mode!r}."
            )
        object.__setattr__(self, "factor", _float32(factor))

    def __call__(self, x: Any) -> jax.Array:
        x = jnp.asarray(x)
        if x.ndim != 2:
            raise ValueError(
                "OrthogonalRegularizer: inputs must have rank 2, got an array of "
                f"shape {x.shape}."
            )
        axis = 1 if self.mode == "rows" else 0
        # keras.ops.normalize(x, axis) for order 2: x * min(rsqrt(sum(x**2)), 1/eps).
        inv_norm = jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
        x = x * jnp.minimum(inv_norm, jnp.asarray(1.0 / _EPSILON, x.dtype))
        if self.mode == "rows":
            product = jnp.matmul(x, x.T)
        else:
            product = jnp.matmul(x.T, x)
        size = product.shape[0]
        product_no_diagonal = product * (1.0 - jnp.eye(size, dtype=x.dtype))
        num_pairs = size * (size - 1.0) / 2.0
        return (
            jnp.asarray(self.factor, x.dtype)
            * 0.5
            * jnp.sum(jnp.abs(product_no_diagonal))
            / num_pairs
        )


# Keras's module-level aliases.
l1 = L1
l2 = L2
l1_l2 = L1L2
l1l2 = L1L2
orthogonal_regularizer = OrthogonalRegularizer

_CLASSES: tuple[type[Regularizer], ...] = (L1, L2, L1L2, OrthogonalRegularizer)

# Keras 3's ALL_OBJECTS_DICT keys (without the abstract base): the class names and these,
# plus "l1_l2", the name Keras exports L1L2 under.
_REGISTRY = Registry(
    "regularizer",
    Regularizer,
    _CLASSES,
    {
        "l1": L1,
        "l2": L2,
        "l1l2": L1L2,
        "l1_l2": L1L2,
        "orthogonal_regularizer": OrthogonalRegularizer,
    },
    module="keras.regularizers",
)
_BY_NAME: dict[str, type[Regularizer]] = _REGISTRY.by_name


def serialize(regularizer: Regularizer) -> dict[str, Any]:
    """Keras 3's config dict for a regularizer (``keras.regularizers.serialize``).

    Args:
        regularizer: A kconv regularizer.

    Returns:
        ``{"module": "keras.regularizers", "class_name": ..., "config": {...},
        "registered_name": None}``.

    Raises:
        TypeError: for anything but a kconv regularizer.

    Example:
        >>> serialize(L1())  # doctest: +NORMALIZE_WHITESPACE
        {'module': 'keras.regularizers', 'class_name': 'L1',
         'config': {'l1': 0.009999999776482582}, 'registered_name': None}
    """
    return _REGISTRY.serialize(regularizer)


def deserialize(config: Union[str, dict[str, Any]]) -> Regularizer:
    """Builds a regularizer from a Keras config.

    Accepts Keras 3's form (see :func:`serialize`), the same without ``"module"``,
    the Keras 2 / tf.keras form ``{"class_name": "L2", "config": {"l2": 0.01}}``, and a
    bare name (``"L1"``, ``"l1"``, ``"l1_l2"``, ...; case-sensitive, as in Keras).

    Args:
        config: A name or a config dict.

    Returns:
        The regularizer.

    Raises:
        ValueError: for an unknown name or a dict without ``"class_name"``.
        TypeError: for unexpected config keys or a non-str/dict argument.

    Example:
        >>> deserialize({"class_name": "L1L2", "config": {"l1": 0.0, "l2": 0.1}})
        L1L2(l1=0.0, l2=0.1)
    """
    return _REGISTRY.deserialize(config)


def get(identifier: Any) -> Optional[Callable[[Any], jax.Array]]:
    """Returns a regularizer for a layer's ``*_regularizer`` argument.

    Args:
        identifier: ``None`` (returned as ``None``), a name (built with its
            defaults), a config dict (see :func:`deserialize`), a regularizer class
            (instantiated with its defaults), a Keras regularizer object or class
            (``keras.regularizers.L2(0.01)``: kconv's of the same class and config), or
            any other callable ``x -> scalar``, which is returned unchanged.

    Returns:
        The regularizer, or ``None``.

    Raises:
        ValueError: for an unknown name; the message lists the valid names.
        TypeError: for anything else.

    Example:
        >>> get("l1")
        L1(l1=0.009999999776482582)
        >>> get(None) is None
        True
    """
    return _REGISTRY.get(identifier)
