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
# holds the same value; this module depends on jax/numpy only).
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


def _number(owner: str, name: str, value: Any) -> Union[int, float]:
    if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(
        value, (bool, np.bool_)
    ):
        raise TypeError(
            f"{owner}: argument `{name}` must be a real number, got {value!r} "
            f"of type {type(value).__name__}."
        )
    return value.item() if isinstance(value, np.generic) else value


def _norms(w: jax.Array, axis: Axis) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(w), axis=axis, keepdims=True))


class Constraint:
    """Base class of the kconv constraints (Keras's ``keras.constraints.Constraint``).

    Subclasses are frozen dataclasses implementing ``__call__(w) -> w_projected``.

    Example:
        >>> isinstance(NonNeg(), Constraint)
        True
    """

    def __call__(self, w: Any) -> jax.Array:
        raise NotImplementedError(f"{type(self).__name__} does not implement __call__.")

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, as Keras's ``get_config()`` gives them.

        Example:
            >>> UnitNorm(axis=(0, 1)).get_config()
            {'axis': [0, 1]}
        """
        config = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            config[f.name] = list(value) if isinstance(value, tuple) else value
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Constraint":
        """Builds the constraint from a ``get_config()`` dict (Keras's or kconv's).

        Raises:
            TypeError: naming any key the class does not take.

        Example:
            >>> MaxNorm.from_config({"max_value": 3, "axis": [0, 1, 2]})
            MaxNorm(max_value=3, axis=(0, 1, 2))
        """
        accepted = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(config) - accepted)
        if unknown:
            raise TypeError(
                f"{cls.__name__}: unexpected config key(s) {unknown}; "
                f"accepted keys are {sorted(accepted)}."
            )
        return cls(**config)


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
        object.__setattr__(self, "max_value", _number("MaxNorm", "max_value", self.max_value))
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
            object.__setattr__(self, name, _number("MinMaxNorm", name, getattr(self, name)))
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

# Keras 3's ALL_OBJECTS_DICT keys, without the abstract base.
_BY_NAME: dict[str, type[Constraint]] = {cls.__name__: cls for cls in _CLASSES}
_BY_NAME.update(
    {"max_norm": MaxNorm, "min_max_norm": MinMaxNorm, "non_neg": NonNeg, "unit_norm": UnitNorm}
)


def _lookup(name: str) -> type[Constraint]:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(
            f"Unknown constraint {name!r} (names are case-sensitive). "
            f"Valid names: {sorted(_BY_NAME)}."
        ) from None


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
    if not isinstance(constraint, Constraint) or type(constraint) not in _CLASSES:
        raise TypeError(
            f"Cannot serialize constraint {constraint!r}: only kconv constraints "
            "have a Keras config."
        )
    return {
        "module": "keras.constraints",
        "class_name": type(constraint).__name__,
        "config": constraint.get_config(),
        "registered_name": None,
    }


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
    if isinstance(config, str):
        return _lookup(config)()
    if isinstance(config, dict):
        class_name = config.get("class_name")
        if not isinstance(class_name, str):
            raise ValueError(
                f"A constraint config dict needs a string 'class_name'; got {config!r}."
            )
        cls = _lookup(class_name)
        arguments = config.get("config") or {}
        if not isinstance(arguments, dict):
            raise TypeError(
                f"The 'config' of constraint {class_name!r} must be a dict, got {arguments!r}."
            )
        return cls.from_config(arguments)
    raise TypeError(
        "A constraint config must be a name or a dict; got "
        f"{config!r} of type {type(config).__name__}."
    )


def get(identifier: Any) -> Optional[Callable[[Any], jax.Array]]:
    """Returns a constraint for a layer's ``*_constraint`` argument.

    Args:
        identifier: ``None`` (returned as ``None``), a name (built with its
            defaults), a config dict (see :func:`deserialize`), a constraint class
            (instantiated with its defaults), or any callable ``w -> w``, which is
            returned unchanged.

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
    if identifier is None:
        return None
    if isinstance(identifier, (str, dict)):
        return deserialize(identifier)
    if isinstance(identifier, type) and issubclass(identifier, Constraint):
        return identifier()
    if callable(identifier):
        return identifier
    raise TypeError(
        f"Could not interpret constraint identifier {identifier!r} of type "
        f"{type(identifier).__name__}: expected None, a name, a config dict or a callable."
    )
