"""Keras 3 weight constraints as hashable JAX projections.

Each class has Keras 3's name, constructor arguments and defaults, and is a frozen
dataclass (hashable, compared by value). Calling one on a weight array returns the
projected array, computed as Keras 3 does (``keras/src/constraints/constraints.py``),
including Keras's fuzz factor ``1e-7`` (``keras.config.epsilon()``) added to the norm.

Norms are taken over ``axis``: for a ``Dense`` kernel ``(input_dim, units)`` use
``axis=0``; for a channels-last conv kernel ``(*kernel_size, in, filters)`` use the
tuple of all axes but the last, e.g. ``(0, 1, 2)`` in 2-D, to constrain each filter.
A list ``axis`` is stored as a tuple so that the object stays hashable, and
serialized back as a list (what a JSON round trip of Keras's config gives).

Example:
    >>> import jax.numpy as jnp
    >>> from kconv import constraints
    >>> c = constraints.get("max_norm")  # MaxNorm(max_value=2, axis=0)
    >>> w = c(jnp.array([[3.0], [4.0]]))  # a column of norm 5
    >>> round(float(jnp.linalg.norm(w)), 4)
    2.0
    >>> constraints.serialize(constraints.MaxNorm(3, axis=[0, 1, 2]))["config"]
    {'max_value': 3, 'axis': [0, 1, 2]}
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from kconv._registry import KerasObject, Registry, real_number

__all__ = [
    "Constraint",
    "MaxNorm",
    "MinMaxNorm",
    "NonNeg",
    "UnitNorm",
    "max_norm",
    "min_max_norm",
    "non_neg",
    "unit_norm",
    "get",
    "serialize",
    "deserialize",
]

Axis = Union[None, int, tuple[int, ...]]

# keras.config.epsilon(), added to the norm before dividing (kconv.config.epsilon()
# holds the same value; this module does not import kconv.config).
_EPSILON = 1e-7


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _axis(owner: str, value: Any) -> Axis:
    """``None``, an int, or a tuple of ints (lists become tuples, for hashing)."""
    if value is None:
        return None
    if _is_int(value):
        return int(value)
    if isinstance(value, (list, tuple)) and all(_is_int(a) for a in value):
        return tuple(int(a) for a in value)
    raise TypeError(
        f"{owner}: argument `axis` must be an int, a sequence of ints or None, got {value!r}."
    )


def _norms(w: jax.Array, axis: Axis) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(w), axis=axis, keepdims=True))


class Constraint(KerasObject):
    """Base class of the kconv constraints (Keras's ``keras.constraints.Constraint``).

    Subclasses are frozen dataclasses implementing ``__call__(w) -> w_projected``.
    ``get_config()`` returns Keras's ``get_config()`` dict (a tuple ``axis`` as a
    list), ``from_config`` inverts it.

    Example:
        >>> isinstance(NonNeg(), Constraint)
        True
        >>> UnitNorm(axis=(0, 1)).get_config()
        {'axis': [0, 1]}
        >>> MaxNorm.from_config({"max_value": 3, "axis": [0, 1, 2]})
        MaxNorm(max_value=3, axis=(0, 1, 2))
    """

    def __call__(self, w: Any) -> jax.Array:
        raise NotImplementedError(f"{type(self).__name__} does not implement __call__.")


@dataclasses.dataclass(frozen=True)
class MaxNorm(Constraint):
    """Rescales each weight vector whose L2 norm exceeds ``max_value`` down to it.

    ``w * clip(norm, 0, max_value) / (epsilon + norm)``, norms over ``axis``.

    Args:
        max_value: Largest allowed norm. Defaults to ``2``.
        axis: Axis or axes of each weight vector. Defaults to ``0``.

    Example:
        >>> w = jnp.array([[3.0, 0.6], [4.0, 0.8]])  # column norms 5 and 1
        >>> [round(float(n), 4) for n in jnp.linalg.norm(MaxNorm(2.0)(w), axis=0)]
        [2.0, 1.0]
    """

    max_value: Union[int, float] = 2
    axis: Axis = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_value", real_number("MaxNorm", "max_value", self.max_value))
        object.__setattr__(self, "axis", _axis("MaxNorm", self.axis))

    def __call__(self, w: Any) -> jax.Array:
        w = jnp.asarray(w)
        norms = _norms(w, self.axis)
        desired = jnp.clip(norms, 0, self.max_value)
        return w.astype(norms.dtype) * (desired / (_EPSILON + norms))


@dataclasses.dataclass(frozen=True)
class MinMaxNorm(Constraint):
    """Moves the L2 norm of each weight vector into ``[min_value, max_value]``.

    The new norm is ``rate * clip(norm, min_value, max_value) + (1 - rate) * norm``:
    ``rate=1`` enforces the bounds, a smaller rate only moves towards them.

    Args:
        min_value: Smallest allowed norm. Defaults to ``0.0``.
        max_value: Largest allowed norm. Defaults to ``1.0``.
        rate: Enforcement rate in ``[0, 1]``. Defaults to ``1.0``.
        axis: Axis or axes of each weight vector. Defaults to ``0``.

    Example:
        >>> w = jnp.array([[0.3, 6.0], [0.4, 8.0]])  # column norms 0.5 and 10
        >>> [round(float(n), 4) for n in jnp.linalg.norm(MinMaxNorm(1.0, 2.0)(w), axis=0)]
        [1.0, 2.0]
    """

    min_value: Union[int, float] = 0.0
    max_value: Union[int, float] = 1.0
    rate: Union[int, float] = 1.0
    axis: Axis = 0

    def __post_init__(self) -> None:
        for name in ("min_value", "max_value", "rate"):
            object.__setattr__(self, name, real_number("MinMaxNorm", name, getattr(self, name)))
        object.__setattr__(self, "axis", _axis("MinMaxNorm", self.axis))

    def __call__(self, w: Any) -> jax.Array:
        w = jnp.asarray(w)
        norms = _norms(w, self.axis)
        desired = (
            self.rate * jnp.clip(norms, self.min_value, self.max_value)
            + (1 - self.rate) * norms
        )
        return w.astype(norms.dtype) * (desired / (_EPSILON + norms))


@dataclasses.dataclass(frozen=True)
class NonNeg(Constraint):
    """Clips negative weights to zero.

    Example:
        >>> print(NonNeg()(jnp.array([-1.0, 2.0])))
        [0. 2.]
    """

    def __call__(self, w: Any) -> jax.Array:
        return jnp.maximum(jnp.asarray(w), 0)


@dataclasses.dataclass(frozen=True)
class UnitNorm(Constraint):
    """Rescales each weight vector to unit L2 norm: ``w / (epsilon + norm)``.

    Args:
        axis: Axis or axes of each weight vector. Defaults to ``0``.

    Example:
        >>> [round(float(v), 4) for v in UnitNorm(axis=1)(jnp.array([[3.0, 4.0]]))[0]]
        [0.6, 0.8]
    """

    axis: Axis = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "axis", _axis("UnitNorm", self.axis))

    def __call__(self, w: Any) -> jax.Array:
        w = jnp.asarray(w)
        norms = _norms(w, self.axis)
        return w.astype(norms.dtype) / (_EPSILON + norms)


# Keras's module-level aliases.
max_norm = MaxNorm
min_max_norm = MinMaxNorm
non_neg = NonNeg
unit_norm = UnitNorm

_CLASSES: tuple[type[Constraint], ...] = (MaxNorm, MinMaxNorm, NonNeg, UnitNorm)

# Keras 3's ALL_OBJECTS_DICT keys, without the abstract base: the class names and these.
_REGISTRY = Registry(
    "constraint",
    Constraint,
    _CLASSES,
    {"max_norm": MaxNorm, "min_max_norm": MinMaxNorm, "non_neg": NonNeg, "unit_norm": UnitNorm},
    module="keras.constraints",
)
_BY_NAME: dict[str, type[Constraint]] = _REGISTRY.by_name


def serialize(constraint: Constraint) -> dict[str, Any]:
    """Keras 3's config dict for a constraint (``keras.constraints.serialize``).

    Args:
        constraint: A kconv constraint.

    Returns:
        ``{"module": "keras.constraints", "class_name": ..., "config": {...},
        "registered_name": None}``; a tuple ``axis`` is written as a list.

    Raises:
        TypeError: for anything but a kconv constraint.

    Example:
        >>> serialize(UnitNorm())  # doctest: +NORMALIZE_WHITESPACE
        {'module': 'keras.constraints', 'class_name': 'UnitNorm', 'config': {'axis': 0},
         'registered_name': None}
    """
    return _REGISTRY.serialize(constraint)


def deserialize(config: Union[str, dict[str, Any]]) -> Constraint:
    """Builds a constraint from a Keras config.

    Accepts Keras 3's form (see :func:`serialize`), the same without ``"module"``,
    the Keras 2 / tf.keras form ``{"class_name": "MaxNorm", "config": {...}}``, and a
    bare name (``"MaxNorm"``, ``"max_norm"``, ...; case-sensitive, as in Keras).

    Args:
        config: A name or a config dict.

    Returns:
        The constraint.

    Raises:
        ValueError: for an unknown name or a dict without ``"class_name"``.
        TypeError: for unexpected config keys or a non-str/dict argument.

    Example:
        >>> deserialize({"class_name": "MaxNorm", "config": {"max_value": 3, "axis": 0}})
        MaxNorm(max_value=3, axis=0)
    """
    return _REGISTRY.deserialize(config)


def get(identifier: Any) -> Optional[Callable[[Any], jax.Array]]:
    """Returns a constraint for a layer's ``*_constraint`` argument.

    Args:
        identifier: ``None`` (returned as ``None``), a name (built with its
            defaults), a config dict (see :func:`deserialize`), a constraint class
            (instantiated with its defaults), a Keras constraint object or class
            (``keras.constraints.MaxNorm(2)``: kconv's of the same class and config), or
            any other callable ``w -> w``, which is returned unchanged.

    Returns:
        The constraint, or ``None``.

    Raises:
        ValueError: for an unknown name; the message lists the valid names.
        TypeError: for anything else.

    Example:
        >>> get("non_neg")
        NonNeg()
        >>> get(UnitNorm)
        UnitNorm(axis=0)
    """
    return _REGISTRY.get(identifier)
