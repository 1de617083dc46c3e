"""Keras 3 weight initializers as hashable JAX initializer objects.

Each class has Keras 3's name, constructor arguments and defaults, and is a frozen
dataclass, so it is hashable and compares by value (layers holding one can be static
arguments to ``jax.jit``). It is called the ``jax.nn.initializers`` way::

    init(key, shape, dtype=jnp.float32) -> jax.Array

Fans follow Keras's ``compute_fans``: for a kernel of shape ``(*k, a, b)``,
``fan_in = prod(k) * a`` and ``fan_out = prod(k) * b``; a rank-2 shape ``(a, b)`` has
``fan_in = a, fan_out = b``; rank 1 ``(n,)`` has ``fan_in = fan_out = n``; rank 0 has
both ``1``. ``input_axes``/``output_axes`` (Keras 3.11+) replace the rule when both are
given.

Seeds: with ``seed=None`` the values come from ``key``. With an integer ``seed`` the
``key`` argument is ignored and every call returns the same values -- the very values
the same seeded Keras initializer returns on Keras's JAX backend, because the key is
built the way Keras builds it (threefry key data ``[seed, 0]``), not with
``jax.random.key(seed)``.

``get``, ``serialize`` and ``deserialize`` speak Keras 3's config format
(``{"module": "keras.initializers", "class_name": ..., "config": ...,
"registered_name": None}``) and read the older forms too. Every name in
``keras.initializers.ALL_OBJECTS_DICT`` is understood except Keras's abstract
``Initializer`` base and ``STFT``/``stft``/``STFTInitializer`` (the spectrogram
kernel, which needs SciPy windows and is not used by convolution layers).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from kconv import initializers
    >>> init = initializers.get("glorot_uniform")
    >>> init(jax.random.key(0), (3, 3, 16, 32)).shape
    (3, 3, 16, 32)
    >>> initializers.serialize(init)["config"]
    {'seed': None, 'input_axes': None, 'output_axes': None}
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from kconv._registry import KerasObject, Registry, real_number

__all__ = [
    "Initializer",
    "Zeros",
    "Ones",
    "Constant",
    "Identity",
    "RandomNormal",
    "RandomUniform",
    "TruncatedNormal",
    "VarianceScaling",
    "GlorotUniform",
    "GlorotNormal",
    "HeNormal",
    "HeUniform",
    "LecunNormal",
    "LecunUniform",
    "Orthogonal",
    "compute_fans",
    "get",
    "serialize",
    "deserialize",
]

Shape = Union[int, Sequence[int]]
DType = Any

# Standard deviation of a unit normal truncated to [-2, 2]; Keras and jax.nn both
# divide by it so that a truncated draw has the requested standard deviation.
_TRUNCATED_NORMAL_STDDEV = 0.87962566103423978


def compute_fans(
    shape: Sequence[int],
    input_axes: Optional[Sequence[int]] = None,
    output_axes: Optional[Sequence[int]] = None,
) -> tuple[int, int]:
    """Keras's ``(fan_in, fan_out)`` for a weight shape.

    Rank 0: ``(1, 1)``; rank 1 ``(n,)``: ``(n, n)``; rank 2 ``(a, b)``: ``(a, b)``;
    rank ``>= 3`` ``(*k, a, b)``: ``(prod(k) * a, prod(k) * b)``. When both
    ``input_axes`` and ``output_axes`` are given, the fans are the products of those
    axes' sizes instead.

    Args:
        shape: The weight shape.
        input_axes: Optional axes holding the input units.
        output_axes: Optional axes holding the output units.

    Returns:
        ``(fan_in, fan_out)`` as Python ints.

    Example:
        >>> compute_fans((3, 3, 16, 32))
        (144, 288)
        >>> compute_fans((7,))
        (7, 7)
    """
    # Ported from keras.src.initializers.random_initializers.compute_fans. jax.nn's
    # in_axis/out_axis rule agrees only for rank >= 2 without explicit axes.
    shape = tuple(shape)
    if input_axes is not None and output_axes is not None:
        return (
            int(math.prod(shape[a] for a in input_axes)),
            int(math.prod(shape[a] for a in output_axes)),
        )
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return int(shape[0]), int(shape[0])
    receptive_field_size = math.prod(shape[:-2])
    return int(shape[-2] * receptive_field_size), int(shape[-1] * receptive_field_size)


def _as_shape(shape: Shape) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        return (int(shape),)
    return tuple(int(d) for d in shape)


def _axes(owner: str, name: str, value: Any) -> Optional[tuple[int, ...]]:
    """Stores axis lists as tuples so that the initializer stays hashable."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value),)
    try:
        axes = tuple(value)
    except TypeError:
        axes = None
    if axes is None or not all(
        isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axes
    ):
        raise TypeError(
            f"{owner}: argument `{name}` must be None or a sequence of ints, got {value!r}."
        )
    return tuple(int(a) for a in axes)


class Initializer(KerasObject):
    """Base class of the kconv initializers (Keras's ``keras.initializers.Initializer``).

    Subclasses are frozen dataclasses implementing ``__call__(key, shape, dtype)``.
    ``get_config()`` returns Keras's ``get_config()`` dict (axis tuples as lists; the
    presets' fixed ``scale``/``mode``/``distribution`` left out, as in Keras),
    ``from_config`` inverts it.

    Example:
        >>> isinstance(Zeros(), Initializer)
        True
        >>> RandomNormal(stddev=1.0, seed=3).get_config()
        {'mean': 0.0, 'stddev': 1.0, 'seed': 3}
        >>> HeNormal.from_config({"seed": 1}) == HeNormal(seed=1)
        True
    """

    def __call__(
        self, key: Optional[jax.Array], shape: Shape, dtype: DType = jnp.float32
    ) -> jax.Array:
        raise NotImplementedError(f"{type(self).__name__} does not implement __call__.")


def _seeded_key(owner: str, key: Optional[jax.Array], seed: Optional[int]) -> jax.Array:
    if seed is None:
        if key is None:
            raise TypeError(f"{owner}: needs a PRNG key when it has no `seed`; got key=None.")
        return key
    # Keras's JAX backend (random/seed_generator.py draw_seed) turns an int seed into
    # the raw threefry key data [seed, 0]; building the same key makes a seeded kconv
    # initializer return exactly the seeded Keras initializer's values.
    return jax.random.wrap_key_data(
        jnp.array([seed, 0], dtype=jnp.uint32), impl="threefry2x32"
    )


class _RandomInitializer(Initializer):
    """Shared seed validation of the random initializers."""

    def _check_seed(self) -> None:
        seed = self.seed  # type: ignore[attr-defined]
        if seed is None:
            return
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
            raise TypeError(
                f"{type(self).__name__}: argument `seed` must be None or an int, "
                f"got {seed!r} of type {type(seed).__name__}."
            )
        if not 0 <= int(seed) < 2**32:
            # Keras accepts the int but fails when drawing (uint32 overflow).
            raise ValueError(
                f"{type(self).__name__}: argument `seed` must be in [0, 2**32), got {seed!r}."
            )
        object.__setattr__(self, "seed", int(seed))


@dataclasses.dataclass(frozen=True)
class Zeros(Initializer):
    """Initializer that returns zeros.

    Example:
        >>> print(Zeros()(None, (2, 2)))
        [[0. 0.]
         [0. 0.]]
    """

    def __call__(
        self, key: Optional[jax.Array], shape: Shape, dtype: DType = jnp.float32
    ) -> jax.Array:
        return jax.nn.initializers.zeros(key, _as_shape(shape), dtype)


@dataclasses.dataclass(frozen=True)
class Ones(Initializer):
    """Initializer that returns ones.

    Example:
        >>> print(Ones()(None, (3,)))
        [1. 1. 1.]
    """

    def __call__(
        self, key: Optional[jax.Array], shape: Shape, dtype: DType = jnp.float32
    ) -> jax.Array:
        return jax.nn.initializers.ones(key, _as_shape(shape), dtype)


@dataclasses.dataclass(frozen=True, eq=False)
class Constant(Initializer):
    """Initializer that fills the array with a value: a scalar, or an array broadcast to
    the shape (Keras 3 takes both: ``Constant(np.log(priors))`` for a bias).

    Args:
        value: A Python (or NumPy) scalar, or an array-like of real numbers (stored as a
            read-only NumPy array; its config is Keras's: a list as given as a list, an
            array in Keras's ``{"class_name": "__numpy__", ...}`` form, which is read back
            too). Defaults to ``0.0``.

    Example:
        >>> print(Constant(2.5)(None, (2,)))
        [2.5 2.5]
        >>> print(Constant([1.0, 2.0])(None, (2, 2)))
        [[1. 2.]
         [1. 2.]]
    """

    value: Any = 0.0
    # Whether the value came as a list or tuple, which Keras's config keeps as a list
    # (an array it writes in its "__numpy__" form): the config is written the same way.
    _listed: bool = dataclasses.field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        value = self.value
        object.__setattr__(self, "_listed", isinstance(value, (list, tuple)))
        if isinstance(value, dict) and value.get("class_name") == "__numpy__":
            # Keras's serialized NumPy array (what its get_config writes for one).
            config = value.get("config") or {}
            value = np.asarray(config.get("value"), dtype=config.get("dtype"))
        if isinstance(value, (list, tuple)) or (
                hasattr(value, "__array__") and np.ndim(value) > 0):
            array = np.array(value)
            if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.integer)
                                               or np.issubdtype(array.dtype, np.floating)):
                raise TypeError(f"Constant: argument `value` must be a real number or an "
                                f"array of them, got {value!r}")
            array.setflags(write=False)  # a hashable value: nothing may change it
            object.__setattr__(self, "value", array)
            return
        object.__setattr__(self, "value", real_number("Constant", "value", value))

    def _key(self) -> Any:
        value = self.value
        if isinstance(value, np.ndarray):
            return (value.dtype.str, value.shape, value.tobytes())
        return value

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self._key()))

    def get_config(self) -> dict[str, Any]:
        if isinstance(self.value, np.ndarray) and self._listed:
            return {"value": self.value.tolist()}
        if isinstance(self.value, np.ndarray):
            return {"value": {"class_name": "__numpy__", "config": {
                "value": self.value.tolist(), "dtype": str(self.value.dtype)}}}
        return super().get_config()

    def __call__(
        self, key: Optional[jax.Array], shape: Shape, dtype: DType = jnp.float32
    ) -> jax.Array:
        shape = _as_shape(shape)
        if not isinstance(self.value, np.ndarray):
            return jax.nn.initializers.constant(self.value, dtype)(key, shape, dtype)
        # Keras computes cast(value) * ones(shape), which would silently grow a weight
        # whose shape the value does not broadcast to; here that raises.
        try:
            return jnp.broadcast_to(jnp.asarray(self.value, dtype), shape)
        except ValueError as e:
            raise ValueError(f"Constant: a value of shape {self.value.shape} does not "
                             f"broadcast to the weight's shape {shape}") from e


@dataclasses.dataclass(frozen=True)
class Identity(Initializer):
    """Initializer that returns ``gain`` times the identity matrix (2-D shapes only).

    Non-square shapes get ones on the main diagonal, as ``jnp.eye(rows, cols)``.

    Keras 3's ``Identity`` has no ``get_config``, so its config is ``{}`` and a
    non-default ``gain`` is lost on saving. kconv's config is ``{}`` for the default
    gain too (equal to Keras's), and ``{"gain": g}`` otherwise, which Keras also reads.

    Args:
        gain: Multiplicative factor. Defaults to ``1.0``.

    Example:
        >>> print(Identity(gain=2.0)(None, (2, 3)))
        [[2. 0. 0.]
         [0. 2. 0.]]
    """

    gain: Union[int, float] = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "gain", real_number("Identity", "gain", self.gain))

    def get_config(self) -> dict[str, Any]:
        """``{}`` for the default gain (as Keras), else ``{"gain": gain}``.

        Example:
            >>> Identity().get_config(), Identity(2.0).get_config()
            ({}, {'gain': 2.0})
        """
        return {} if self.gain == 1.0 else {"gain": self.gain}

    def __call__(
        self, key: Optional[jax.Array], shape: Shape, dtype: DType = jnp.float32
    ) -> jax.Array:
        shape = _as_shape(shape)
        if len(shape) != 2:
            raise ValueError(
                "Identity: the identity initializer needs a 2-D shape, got "
                f"shape={shape} of rank {len(shape)}."
            )
        # jax.nn.initializers has no identity initializer.
        return (self.gain * jnp.eye(*shape, dtype=dtype)).astype(dtype)


@dataclasses.dataclass(frozen=True)
class RandomNormal(_RandomInitializer):
    """Initializer drawing from a normal distribution.

    Args:
        mean: Mean. Defaults to ``0.0``.
        stddev: Standard deviation. Defaults to ``0.05``.
        seed: ``None`` (use the ``key`` argument) or an int in ``[0, 2**32)``
            (ignore ``key``; same values as the seeded Keras initializer).

    Example:
        >>> init = RandomNormal(stddev=1.0, seed=0)
        >>> bool((init(None, (4,)) == init(jax.random.key(1), (4,))).all())
        True
    """

    mean: Union[int, float] = 0.0
    stddev: Union[int, float] = 0.05
    seed: Optional[int] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", real_number("RandomNormal", "mean", self.mean))
        object.__setattr__(self, "stddev", real_number("RandomNormal", "stddev", self.stddev))
        self._check_seed()

    def __call__(
        self, key: Optional[jax.Array], shape: Shape, dtype: DType = jnp.float32
    ) -> jax.Array:
        key = _seeded_key("RandomNormal", key, self.seed)
        # jax.nn.initializers.normal has no mean; add it as Keras's backend does.
        sample = jax.nn.initializers.normal(self.stddev, dtype)(key, _as_shape(shape), dtype)
        return sample + self.mean


@dataclasses.dataclass(frozen=True)
class TruncatedNormal(_RandomInitializer):
    """Initializer drawing from a normal distribution truncated to ``mean ± 2 * stddev``.

    ``stddev`` is that of the normal before truncation, as in Keras.

    Args:
        mean: Mean. Defaults to ``0.0``.
        stddev: Standard deviation before truncation. Defaults to ``0.05``.
        seed: ``None`` (use the ``key`` argument) or an int in ``[0, 2**32)``.

    Example:
        >>> w = TruncatedNormal(mean=1.0, stddev=0.1)(jax.random.key(0), (1000,))
        >>> bool((jnp.abs(w - 1.0) <= 0.2).all())
        True
    """

    mean: Union[int, float] = 0.0
    stddev: Union[int, float] = 0.05
    seed: Optional[int] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", real_number("TruncatedNormal", "mean", self.mean))
        object.__setattr__(self, "stddev", real_number("TruncatedNormal", "stddev", self.stddev))
        self._check_seed()

    def __call__(
        self, key: Optional[jax.Array], shape: Shape, dtype: DType = jnp.float32
    ) -> jax.Array:
        key = _seeded_key("TruncatedNormal", key, self.seed)
        # jax.nn.initializers.truncated_normal truncates to [-2, 2] like Keras; it has
        # no mean, so add it as Keras's backend does.
        sample = jax.nn.initializers.truncated_normal(self.stddev, dtype)(
            key, _as_shape(shape), dtype
        )
        return sample + self.mean


@dataclasses.dataclass(frozen=True)
class RandomUniform(_RandomInitializer):
    """Initializer drawing uniformly from ``[minval, maxval)``.

    Args:
        minval: Lower bound (inclusive). Defaults to ``-0.05``.
        maxval: Upper bound (exclusive). Defaults to ``0.05``.
        seed: ``None`` (use the ``key`` argument) or an int in ``[0, 2**32)``.

    Example:
        >>> w = RandomUniform(0.0, 1.0)(jax.random.key(0), (1000,))
        >>> bool(((0.0 <= w) & (w < 1.0)).all())
        True
    """

    minval: Union[int, float] = -0.05
    maxval: Union[int, float] = 0.05
    seed: Optional[int] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "minval", real_number("RandomUniform", "minval", self.minval))
        object.__setattr__(self, "maxval", real_number("RandomUniform", "maxval", self.maxval))
        self._check_seed()

    def __call__(
        self, key: Optional[jax.Array], shape: Shape, dtype: DType = jnp.float32
    ) -> jax.Array:
        key = _seeded_key("RandomUniform", key, self.seed)
        # jax.nn.initializers.uniform only draws from [0, scale); this is Keras's draw.
        return jax.random.uniform(
            key, _as_shape(shape), dtype, minval=self.minval, maxval=self.maxval
        )


_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")


@dataclasses.dataclass(frozen=True)
class VarianceScaling(_RandomInitializer):
    """Initializer whose scale adapts to the fans of the weight shape.

    With ``n`` = ``fan_in``, ``fan_out`` or their mean (per ``mode``, at least 1; see
    :func:`compute_fans`), ``"truncated_normal"`` draws from a normal truncated to
    ``± 2`` standard deviations with standard deviation ``sqrt(scale / n)`` *after*
    truncation, ``"untruncated_normal"`` from a normal with that standard deviation,
    and ``"uniform"`` from ``[-limit, limit)`` with ``limit = sqrt(3 * scale / n)``.

    Args:
        scale: Positive scaling factor. Defaults to ``1.0``.
        mode: ``"fan_in"``, ``"fan_out"`` or ``"fan_avg"``. Defaults to ``"fan_in"``.
        distribution: ``"truncated_normal"``, ``"untruncated_normal"`` or
            ``"uniform"`` (any case; ``"normal"`` means ``"truncated_normal"``, as in
            Keras). Defaults to ``"truncated_normal"``.
        seed: ``None`` (use the ``key`` argument) or an int in ``[0, 2**32)``.
        input_axes: Optional axes of the input units (stored as a tuple).
        output_axes: Optional axes of the output units (stored as a tuple). Used only
            when ``input_axes`` is given too, as in Keras.

    Raises:
        ValueError: for ``scale <= 0`` or an unknown ``mode``/``distribution``.

    Example:
        >>> init = VarianceScaling(2.0, "fan_in", "uniform")
        >>> w = init(jax.random.key(0), (3, 3, 16, 32))  # fan_in = 3 * 3 * 16
        >>> bool(jnp.abs(w).max() <= (3 * 2.0 / 144) ** 0.5)
        True
    """

    scale: Union[int, float] = 1.0
    mode: str = "fan_in"
    distribution: str = "truncated_normal"
    seed: Optional[int] = None
    input_axes: Optional[tuple[int, ...]] = None
    output_axes: Optional[tuple[int, ...]] = None

    def __post_init__(self) -> None:
        owner = type(self).__name__
        scale = real_number(owner, "scale", self.scale)
        if not scale > 0:
            raise ValueError(f"{owner}: argument `scale` must be positive, got {scale!r}.")
        if self.mode not in _MODES:
            raise ValueError(
                f"{owner}: argument `mode` must be one of {_MODES}, got {self.mode!r}."
            )
        if not isinstance(self.distribution, str):
            raise ValueError(
                f"{owner}: argument `distribution` must be one of {_DISTRIBUTIONS}, "
                f"got {self.distribution!r}."
            )
        # Keras lower-cases the distribution and reads "normal" as "truncated_normal".
        distribution = self.distribution.lower()
        if distribution == "normal":
            distribution = "truncated_normal"
        if distribution not in _DISTRIBUTIONS:
            raise ValueError(
                f"{owner}: argument `distribution` must be one of {_DISTRIBUTIONS}, "
                f"got {self.distribution!r}."
            )
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "distribution", distribution)
        object.__setattr__(self, "input_axes", _axes(owner, "input_axes", self.input_axes))
        object.__setattr__(self, "output_axes", _axes(owner, "output_axes", self.output_axes))
        self._check_seed()

    def __call__(
        self, key: Optional[jax.Array], shape: Shape, dtype: DType = jnp.float32
    ) -> jax.Array:
        shape = _as_shape(shape)
        key = _seeded_key(type(self).__name__, key, self.seed)
        fan_in, fan_out = compute_fans(shape, self.input_axes, self.output_axes)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}
        variance = self.scale / max(1.0, n[self.mode])
        # jax.nn.initializers.variance_scaling is not used: it cannot express Keras's
        # fan rule for rank 0/1 or explicit axes, and it computes the standard
        # deviation in `dtype` (visibly off for bfloat16). Keras computes it in Python
        # floats and scales a unit draw, which is what happens here.
        if self.distribution == "truncated_normal":
            stddev = math.sqrt(variance) / _TRUNCATED_NORMAL_STDDEV
            return jax.nn.initializers.truncated_normal(stddev, dtype)(key, shape, dtype)
        if self.distribution == "untruncated_normal":
            return jax.nn.initializers.normal(math.sqrt(variance), dtype)(key, shape, dtype)
        limit = math.sqrt(3.0 * variance)
        return jax.random.uniform(key, shape, dtype, minval=-limit, maxval=limit)


def _preset_field(value: Any) -> Any:
    # A fixed VarianceScaling parameter of a named preset: not a constructor argument
    # and not in the config, exactly as in Keras's GlorotUniform & co.
    return dataclasses.field(default=value, init=False, repr=False)


@dataclasses.dataclass(frozen=True)
class GlorotUniform(VarianceScaling):
    """Glorot (Xavier) uniform: ``U[-limit, limit)``, ``limit = sqrt(6 / (fan_in + fan_out))``.

    ``VarianceScaling(1.0, "fan_avg", "uniform")`` under its Keras name.

    Args:
        seed: ``None`` (use the ``key`` argument) or an int in ``[0, 2**32)``.
        input_axes: Optional axes of the input units.
        output_axes: Optional axes of the output units.

    Example:
        >>> w = GlorotUniform()(jax.random.key(0), (5, 8, 4))  # fans 40 and 20
        >>> bool(jnp.abs(w).max() <= (6 / 60) ** 0.5)
        True
    """

    scale: float = _preset_field(1.0)
    mode: str = _preset_field("fan_avg")
    distribution: str = _preset_field("uniform")


@dataclasses.dataclass(frozen=True)
class GlorotNormal(VarianceScaling):
    """Glorot (Xavier) normal: truncated normal, ``stddev = sqrt(2 / (fan_in + fan_out))``.

    ``VarianceScaling(1.0, "fan_avg", "truncated_normal")`` under its Keras name.

    Args:
        seed: ``None`` (use the ``key`` argument) or an int in ``[0, 2**32)``.
        input_axes: Optional axes of the input units.
        output_axes: Optional axes of the output units.

    Example:
        >>> GlorotNormal(seed=1)(None, (3, 3, 16, 32)).shape
        (3, 3, 16, 32)
    """

    scale: float = _preset_field(1.0)
    mode: str = _preset_field("fan_avg")
    distribution: str = _preset_field("truncated_normal")


@dataclasses.dataclass(frozen=True)
class HeNormal(VarianceScaling):
    """He normal: truncated normal with ``stddev = sqrt(2 / fan_in)``.

    ``VarianceScaling(2.0, "fan_in", "truncated_normal")`` under its Keras name.

    Args:
        seed: ``None`` (use the ``key`` argument) or an int in ``[0, 2**32)``.
        input_axes: Optional axes of the input units.
        output_axes: Optional axes of the output units.

    Example:
        >>> HeNormal()(jax.random.key(0), (3, 3, 16, 32)).dtype
        dtype('float32')
    """

    scale: float = _preset_field(2.0)
    mode: str = _preset_field("fan_in")
    distribution: str = _preset_field("truncated_normal")


@dataclasses.dataclass(frozen=True)
class HeUniform(VarianceScaling):
    """He uniform: ``U[-limit, limit)`` with ``limit = sqrt(6 / fan_in)``.

    ``VarianceScaling(2.0, "fan_in", "uniform")`` under its Keras name.

    Args:
        seed: ``None`` (use the ``key`` argument) or an int in ``[0, 2**32)``.
        input_axes: Optional axes of the input units.
        output_axes: Optional axes of the output units.

    Example:
        >>> w = HeUniform()(jax.random.key(0), (2, 2, 2, 3, 6))  # fan_in = 24
        >>> bool(jnp.abs(w).max() <= 0.5)
        True
    """

    scale: float = _preset_field(2.0)
    mode: str = _preset_field("fan_in")
    distribution: str = _preset_field("uniform")


@dataclasses.dataclass(frozen=True)
class LecunNormal(VarianceScaling):
    """LeCun normal: truncated normal with ``stddev = sqrt(1 / fan_in)``.

    ``VarianceScaling(1.0, "fan_in", "truncated_normal")`` under its Keras name.

    Args:
        seed: ``None`` (use the ``key`` argument) or an int in ``[0, 2**32)``.
        input_axes: Optional axes of the input units.
        output_axes: Optional axes of the output units.

    Example:
        >>> LecunNormal(seed=3) == LecunNormal(seed=3)
        True
    """

    scale: float = _preset_field(1.0)
    mode: str = _preset_field("fan_in")
    distribution: str = _preset_field("truncated_normal")


@dataclasses.dataclass(frozen=True)
class LecunUniform(VarianceScaling):
    """LeCun uniform: ``U[-limit, limit)`` with ``limit = sqrt(3 / fan_in)``.

    ``VarianceScaling(1.0, "fan_in", "uniform")`` under its Keras name.

    Args:
        seed: ``None`` (use the ``key`` argument) or an int in ``[0, 2**32)``.
        input_axes: Optional axes of the input units.
        output_axes: Optional axes of the output units.

    Example:
        >>> w = LecunUniform()(jax.random.key(0), (12, 4))
        >>> bool(jnp.abs(w).max() <= 0.5)
        True
    """

    scale: float = _preset_field(1.0)
    mode: str = _preset_field("fan_in")
    distribution: str = _preset_field("uniform")


@dataclasses.dataclass(frozen=True)
class Orthogonal(_RandomInitializer):
    """Initializer returning a (scaled) orthogonal matrix, reshaped to the shape.

    The shape ``(*d, cols)`` is treated as a matrix of ``prod(d)`` rows: its columns
    are orthonormal if ``rows >= cols``, its rows otherwise (QR of a normal draw with
    the sign fix of Saxe et al.), times ``gain``.

    Args:
        gain: Multiplicative factor. Defaults to ``1.0``.
        seed: ``None`` (use the ``key`` argument) or an int in ``[0, 2**32)``.

    Raises:
        ValueError: when called with a shape of rank < 2.

    Example:
        >>> q = Orthogonal()(jax.random.key(0), (3, 3))
        >>> print(jnp.round(q.T @ q, 4) + 0.0)
        [[1. 0. 0.]
         [0. 1. 0.]
         [0. 0. 1.]]
    """

    gain: Union[int, float] = 1.0
    seed: Optional[int] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "gain", real_number("Orthogonal", "gain", self.gain))
        self._check_seed()

    def __call__(
        self, key: Optional[jax.Array], shape: Shape, dtype: DType = jnp.float32
    ) -> jax.Array:
        shape = _as_shape(shape)
        if len(shape) < 2:
            raise ValueError(
                "Orthogonal: the orthogonal initializer needs a shape of rank >= 2, got "
                f"shape={shape} of rank {len(shape)}."
            )
        key = _seeded_key("Orthogonal", key, self.seed)
        # Same draw, QR and sign fix as Keras's Orthogonal (so seeded values agree). XLA's
        # QR takes no 16-bit dtype (Keras's raises there): drawn in float32, then rounded.
        work = jnp.float32 if jnp.finfo(dtype).bits < 32 else dtype
        return jax.nn.initializers.orthogonal(self.gain, column_axis=-1, dtype=work)(
            key, shape, work
        ).astype(dtype)


_CLASSES: tuple[type[Initializer], ...] = (
    Constant,
    Identity,
    Ones,
    Zeros,
    GlorotNormal,
    GlorotUniform,
    HeNormal,
    HeUniform,
    LecunNormal,
    LecunUniform,
    Orthogonal,
    RandomNormal,
    RandomUniform,
    TruncatedNormal,
    VarianceScaling,
)

# Lower-case names Keras's get() accepts, and Keras's module-level aliases.
zeros = Zeros
ones = Ones
constant = Constant
identity = Identity
IdentityInitializer = Identity
random_normal = RandomNormal
random_uniform = RandomUniform
truncated_normal = TruncatedNormal
variance_scaling = VarianceScaling
glorot_uniform = GlorotUniform
glorot_normal = GlorotNormal
he_normal = HeNormal
he_uniform = HeUniform
lecun_normal = LecunNormal
lecun_uniform = LecunUniform
orthogonal = Orthogonal
OrthogonalInitializer = Orthogonal

# Every key of keras.src.initializers.ALL_OBJECTS_DICT except the abstract base and STFT:
# the class names and these.
_REGISTRY = Registry(
    "initializer",
    Initializer,
    _CLASSES,
    {
        "zeros": Zeros,
        "zero": Zeros,
        "ones": Ones,
        "one": Ones,
        "constant": Constant,
        "identity": Identity,
        "IdentityInitializer": Identity,
        "random_normal": RandomNormal,
        "normal": RandomNormal,
        "random_uniform": RandomUniform,
        "uniform": RandomUniform,
        "truncated_normal": TruncatedNormal,
        "variance_scaling": VarianceScaling,
        "glorot_uniform": GlorotUniform,
        "glorot_normal": GlorotNormal,
        "he_normal": HeNormal,
        "he_uniform": HeUniform,
        "lecun_normal": LecunNormal,
        "lecun_uniform": LecunUniform,
        "orthogonal": Orthogonal,
        "OrthogonalInitializer": Orthogonal,
    },
    module="keras.initializers",
    keras_callable=False,
)
_BY_NAME: dict[str, type[Initializer]] = _REGISTRY.by_name


def serialize(initializer: Initializer) -> dict[str, Any]:
    """Keras 3's config dict for an initializer (``keras.initializers.serialize``).

    Axis tuples are written as lists (what a JSON round trip gives).

    Args:
        initializer: A kconv initializer.

    Returns:
        ``{"module": "keras.initializers", "class_name": ..., "config": {...},
        "registered_name": None}``.

    Raises:
        TypeError: for anything but a kconv initializer (a plain function has no
            Keras config).

    Example:
        >>> serialize(HeNormal(seed=1))  # doctest: +NORMALIZE_WHITESPACE
        {'module': 'keras.initializers', 'class_name': 'HeNormal',
         'config': {'seed': 1, 'input_axes': None, 'output_axes': None},
         'registered_name': None}
    """
    return _REGISTRY.serialize(initializer)


def deserialize(config: Union[str, dict[str, Any]]) -> Initializer:
    """Builds an initializer from a Keras config.

    Accepts Keras 3's form (see :func:`serialize`), the same without ``"module"``,
    the Keras 2 / tf.keras form ``{"class_name": "GlorotUniform", "config": {...}}``,
    and a bare name (class name or Keras alias such as ``"he_normal"``). Names are
    case-sensitive, as in Keras.

    Args:
        config: A name or a config dict.

    Returns:
        The initializer.

    Raises:
        ValueError: for an unknown name or a dict without ``"class_name"``.
        TypeError: for unexpected config keys or a non-str/dict argument.

    Example:
        >>> deserialize({"class_name": "GlorotUniform", "config": {"seed": None}})
        GlorotUniform(seed=None, input_axes=None, output_axes=None)
        >>> deserialize("zeros")
        Zeros()
    """
    return _REGISTRY.deserialize(config)


def get(identifier: Any) -> Optional[Callable[..., jax.Array]]:
    """Returns an initializer for a layer's ``*_initializer`` argument.

    Args:
        identifier: ``None`` (returned as ``None``, as in Keras), a name, a config
            dict (see :func:`deserialize`), an initializer class (instantiated with
            its defaults), a Keras initializer object or class
            (``keras.initializers.HeNormal(seed=1)``: kconv's of the same class and
            config, the same values), or any other callable
            ``(key, shape, dtype) -> array``, which is returned unchanged.

    Returns:
        The initializer, or ``None``.

    Raises:
        ValueError: for an unknown name; the message lists the valid names.
        TypeError: for anything else, and for a Keras initializer of a class kconv
            does not have (Keras calls initializers as ``(shape, dtype)``).

    Example:
        >>> get("he_normal")
        HeNormal(seed=None, input_axes=None, output_axes=None)
        >>> get(Ones)
        Ones()
    """
    return _REGISTRY.get(identifier)
