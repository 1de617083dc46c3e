"""The Keras object machinery shared by ``constraints``, ``regularizers`` and ``initializers``.

Each of those modules is a *family* of Keras objects: frozen dataclasses under one base
class, looked up by name, and written to / read from Keras 3's config format. What is
the same in all three lives here:

* :class:`KerasObject`, the mixin of the base classes: ``get_config()`` (the
  dataclass's constructor fields, tuples written as lists) and ``from_config()``
  (rejecting unknown keys with a message naming them).
* :class:`Registry`, parametrised by the family: its noun for messages
  (``"constraint"``), its base class, its serializable classes, its extra names
  (Keras's aliases such as ``"l1_l2"`` or ``"he_normal"``) and Keras's module name
  for the serialized form (``"keras.constraints"``). It provides the ``get``,
  ``serialize`` and ``deserialize`` logic the family's public functions delegate to.

What differs between the families stays in their modules: the classes themselves, the
Keras quirks of their configs (``L1``'s float32 factor, ``Identity``'s ``{}``), the
initializers' seeds and preset fields (``init=False``, so not in the config), and each
family's table of names. Names are case-sensitive in all three, as in Keras.

Example:
    >>> import dataclasses
    >>> class Thing(KerasObject):
    ...     pass
    >>> @dataclasses.dataclass(frozen=True)
    ... class Box(Thing):
    ...     size: tuple = (1, 2)
    >>> things = Registry("thing", Thing, (Box,), {"box": Box}, module="keras.things")
    >>> things.get("box")
    Box(size=(1, 2))
    >>> things.serialize(Box())  # doctest: +NORMALIZE_WHITESPACE
    {'module': 'keras.things', 'class_name': 'Box', 'config': {'size': [1, 2]},
     'registered_name': None}
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any, Callable, Generic, Optional, TypeVar, Union

import numpy as np

_T = TypeVar("_T")
_K = TypeVar("_K", bound="KerasObject")

# Where Keras's own classes and functions live: Keras 3 (``keras.src...``), Keras 2.x
# (``keras....``) and tf-keras.
_KERAS_MODULES = ("keras.", "tf_keras.", "keras_core.", "tensorflow.python.keras.")
# Keys of a Keras layer config that carry no meaning in kconv: its name, whether it
# trains, and the input shape Keras 2 / tf-keras record on a model's first layer.
IGNORED_KERAS_LAYER_KEYS = ("name", "trainable", "batch_input_shape", "batch_shape",
                            "input_shape", "input_dim")


def keras_builtin(obj: Any) -> bool:
    """Whether ``obj`` is a class, function or object defined by Keras itself (not a
    user's subclass of one). Keras is never imported to tell.

    Example:
        >>> keras_builtin(len), keras_builtin(KerasObject())
        (False, False)
    """
    where = obj if isinstance(obj, (type, types.FunctionType)) else type(obj)
    module = getattr(where, "__module__", None)
    return isinstance(module, str) and module.startswith(_KERAS_MODULES)


def real_number(owner: str, name: str, value: Any) -> Union[int, float]:
    """Validates a real-number hyper-parameter (``bool`` is not one); NumPy scalars
    become Python numbers.

    Raises:
      TypeError: naming the owner, the argument and the value.

    Example:
        >>> real_number("MaxNorm", "max_value", np.float32(2.0))
        2.0
        >>> real_number("MaxNorm", "max_value", "2")
        Traceback (most recent call last):
        ...
        TypeError: MaxNorm: argument `max_value` must be a real number, got '2' of type str.
    """
    if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(
        value, (bool, np.bool_)
    ):
        raise TypeError(
            f"{owner}: argument `{name}` must be a real number, got {value!r} "
            f"of type {type(value).__name__}."
        )
    return value.item() if isinstance(value, np.generic) else value


class KerasObject:
    """Mixin of a family's base class: Keras's ``get_config``/``from_config`` pair.

    Subclasses are dataclasses. Fields declared with ``init=False`` (the initializers'
    preset parameters) are neither in the config nor accepted by ``from_config``.

    Example:
        >>> import dataclasses
        >>> @dataclasses.dataclass(frozen=True)
        ... class Clip(KerasObject):
        ...     low: float = 0.0
        ...     axes: tuple = (0, 1)
        >>> Clip().get_config()
        {'low': 0.0, 'axes': [0, 1]}
        >>> Clip.from_config({"low": 1.0}) == Clip(low=1.0)
        True
    """

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, as Keras's ``get_config()`` gives them.

        A tuple value is written as a list (what a JSON round trip of Keras's config
        gives); fields that are not constructor arguments are left out.

        Example:
            >>> from kconv.constraints import UnitNorm
            >>> UnitNorm(axis=(0, 1)).get_config()
            {'axis': [0, 1]}
        """
        config = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.init:
                value = getattr(self, f.name)
                config[f.name] = list(value) if isinstance(value, tuple) else value
        return config

    @classmethod
    def from_config(cls: type[_K], config: dict[str, Any]) -> _K:
        """Builds the object from a ``get_config()`` dict (Keras's or kconv's).

        Raises:
            TypeError: naming any key the class does not take.

        Example:
            >>> from kconv.constraints import MaxNorm
            >>> MaxNorm.from_config({"max_value": 3, "axis": [0, 1, 2]})
            MaxNorm(max_value=3, axis=(0, 1, 2))
            >>> MaxNorm.from_config({"max": 3})  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            TypeError: MaxNorm: unexpected config key(s) ['max']; accepted keys are [...].
        """
        accepted = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        unknown = sorted(set(config) - accepted)
        if unknown:
            raise TypeError(
                f"{cls.__name__}: unexpected config key(s) {unknown}; "
                f"accepted keys are {sorted(accepted)}."
            )
        return cls(**config)


class Registry(Generic[_T]):
    """One family's names and its Keras ``get``/``serialize``/``deserialize`` logic.

    Args:
        noun: The family's singular noun in messages (``"constraint"``).
        base: The family's base class; ``get`` instantiates its subclasses.
        classes: The classes ``serialize`` writes; each is also found by its
            ``__name__``.
        aliases: Further names (Keras's snake-case aliases and old class names).
        module: Keras's module, the serialized form's ``"module"``
            (``"keras.constraints"``).
        keras_callable: Whether Keras's own objects of the family work when called
            as kconv calls its own (constraints and regularizers: on an array, through
            Keras's ops; not initializers: Keras's take ``(shape, dtype)``, kconv's
            ``(key, shape, dtype)``). ``get`` reads a Keras object of a class kconv has
            through its config either way; one of another class it returns unchanged
            where Keras's are callable, and refuses where they are not.

    Attributes:
        by_name: Every name ``deserialize`` and ``get`` understand, and its class.

    Example:
        >>> from kconv import regularizers
        >>> reg = Registry("regularizer", regularizers.Regularizer,
        ...                (regularizers.L2,), {"l2": regularizers.L2},
        ...                module="keras.regularizers")
        >>> sorted(reg.by_name)
        ['L2', 'l2']
        >>> reg.deserialize({"class_name": "L2", "config": {"l2": 0.5}})
        L2(l2=0.5)
        >>> reg.get("L1")
        Traceback (most recent call last):
        ...
        ValueError: Unknown regularizer 'L1' (names are case-sensitive). Valid names: ['L2', 'l2'].
    """

    def __init__(
        self,
        noun: str,
        base: type[_T],
        classes: tuple[type[_T], ...],
        aliases: Mapping[str, type[_T]],
        *,
        module: str,
        keras_callable: bool = True,
    ) -> None:
        self.noun = noun
        self.base = base
        self.classes = tuple(classes)
        self.module = module
        self.keras_callable = keras_callable
        self.by_name: dict[str, type[_T]] = {cls.__name__: cls for cls in self.classes}
        self.by_name.update(aliases)
        # "A constraint config ...", "An initializer config ...".
        self._a_noun = ("An " if noun[0] in "aeiou" else "A ") + noun

    def lookup(self, name: str) -> type[_T]:
        """The class named ``name``.

        Raises:
            ValueError: for an unknown name; the message lists the valid ones.
        """
        try:
            return self.by_name[name]
        except KeyError:
            raise ValueError(
                f"Unknown {self.noun} {name!r} (names are case-sensitive). "
                f"Valid names: {sorted(self.by_name)}."
            ) from None

    def serialize(self, obj: _T) -> dict[str, Any]:
        """Keras 3's config dict of ``obj``, one of the family's classes.

        Raises:
            TypeError: for anything else.
        """
        if not isinstance(obj, self.base) or type(obj) not in self.classes:
            raise TypeError(
                f"Cannot serialize {self.noun} {obj!r}: only kconv {self.noun}s "
                "have a Keras config."
            )
        return {
            "module": self.module,
            "class_name": type(obj).__name__,
            "config": obj.get_config(),  # type: ignore[attr-defined]
            "registered_name": None,
        }

    def deserialize(self, config: Union[str, dict[str, Any]]) -> _T:
        """Builds an object from a name or a Keras 3 / Keras 2 config dict.

        The dict's ``"module"`` and ``"registered_name"`` are not read, so Keras 3's
        form, the same without ``"module"`` and Keras 2's ``{"class_name", "config"}``
        are all accepted; a missing or ``None`` ``"config"`` means the defaults.

        Raises:
            ValueError: for an unknown name or a dict without a string
                ``"class_name"``.
            TypeError: for a non-dict ``"config"``, unexpected config keys, or an
                argument that is neither a str nor a dict.
        """
        if isinstance(config, str):
            return self.lookup(config)()
        if isinstance(config, dict):
            class_name = config.get("class_name")
            if not isinstance(class_name, str):
                raise ValueError(
                    f"{self._a_noun} config dict needs a string 'class_name'; got {config!r}."
                )
            cls = self.lookup(class_name)
            arguments = config.get("config") or {}
            if not isinstance(arguments, dict):
                raise TypeError(
                    f"The 'config' of {self.noun} {class_name!r} must be a dict, "
                    f"got {arguments!r}."
                )
            return cls.from_config(arguments)  # type: ignore[attr-defined]
        raise TypeError(
            f"{self._a_noun} config must be a name or a dict; got "
            f"{config!r} of type {type(config).__name__}."
        )

    def get(self, identifier: Any) -> Optional[Callable[..., Any]]:
        """Resolves a layer's ``*_<noun>`` argument.

        ``None`` gives ``None``; a name or dict is deserialized; a subclass of the
        base is instantiated with its defaults; a Keras object of the family (or its
        class), e.g. ``keras.initializers.HeNormal(seed=1)``, becomes the kconv object
        its config describes; any other callable (a family object or a plain function)
        is returned unchanged.

        Raises:
            ValueError: for an unknown name.
            TypeError: for anything else, and for a Keras object kconv cannot call.
        """
        if identifier is None:
            return None
        if isinstance(identifier, (str, dict)):
            return self.deserialize(identifier)
        if isinstance(identifier, type) and issubclass(identifier, self.base):
            return identifier()
        if keras_builtin(identifier) and (isinstance(identifier, type)
                                          or hasattr(identifier, "get_config")):
            return self._from_keras(identifier)
        if not self.keras_callable and any(
                keras_builtin(c) for c in type(identifier).__mro__[1:]):
            return self._from_keras(identifier)  # a user's subclass of a Keras class
        if callable(identifier):
            return identifier
        raise TypeError(
            f"Could not interpret {self.noun} identifier {identifier!r} of type "
            f"{type(identifier).__name__}: expected None, a name, a config dict or a callable."
        )

    def _from_keras(self, obj: Any) -> Any:
        """A Keras object (or class) of the family as kconv's of the same class and
        config: the same values (the families are tested against Keras's), and a
        hashable, serializable kconv object."""
        cls = obj if isinstance(obj, type) else type(obj)
        if cls.__name__ in self.by_name and keras_builtin(cls):
            config = {} if isinstance(obj, type) else dict(obj.get_config())
            if not isinstance(obj, type):
                # What Keras leaves out of its config but the object holds (Identity's
                # gain: Keras writes {}), read where kconv's class has the argument.
                ours = self.by_name[cls.__name__]
                for f in dataclasses.fields(ours):  # type: ignore[arg-type]
                    if f.init and f.name not in config and hasattr(obj, f.name):
                        config[f.name] = getattr(obj, f.name)
            try:
                return self.deserialize({"class_name": cls.__name__, "config": config})
            except (TypeError, ValueError) as e:
                raise type(e)(f"Cannot read the Keras {self.noun} {obj!r} as kconv's "
                              f"{cls.__name__} (config {config!r}): {e}") from e
        if self.keras_callable and not isinstance(obj, type):
            return obj
        raise TypeError(
            f"The Keras {self.noun} {obj!r} has no kconv equivalent"
            + ("" if self.keras_callable else
               f", and Keras calls its {self.noun}s as (shape, dtype) where kconv calls "
               f"(key, shape, dtype), as JAX does")
            + f": pass a kconv {self.noun} (names: {sorted(self.by_name)[:6]}...) or a "
            f"callable of your own."
        )

