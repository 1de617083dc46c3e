"""Global defaults, resolved the way Keras resolves them.

kconv has two global settings. The default image data format is read by a layer once,
when it is constructed, so that a layer object (and its saved config) never changes
meaning afterwards. The convolution lowering (:func:`set_conv_lowering`) never changes
meaning at all, only how the same numbers are computed; it is read when a function is
traced.

Resolution order for :func:`image_data_format`:

1. a value set with :func:`set_image_data_format` in this process;
2. ``"image_data_format"`` in ``$KERAS_HOME/keras.json`` (if ``KERAS_HOME`` is set);
3. ``"image_data_format"`` in ``~/.keras/keras.json``;
4. ``"channels_last"``.

Example:
    >>> import kconv
    >>> kconv.config.set_image_data_format("channels_first")
    >>> kconv.Conv2D(4, 3).data_format
    'channels_first'
    >>> kconv.config.set_image_data_format(None)  # back to keras.json / default
    >>> kconv.config.image_data_format()
    'channels_last'
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator

import jax

__all__ = [
    "image_data_format",
    "set_image_data_format",
    "epsilon",
    "conv_lowering",
    "get_conv_lowering",
    "set_conv_lowering",
]

_DATA_FORMATS = ("channels_last", "channels_first")
_image_data_format: str | None = None

# Keras's fuzz factor (`keras.config.epsilon()`), used by the norm constraints.
_EPSILON = 1e-7


def epsilon() -> float:
    """The fuzz factor Keras uses in norm constraints (``1e-7``).

    Example:
        >>> epsilon()
        1e-07
    """
    return _EPSILON


def _validate(value: object, where: str) -> str:
    if not isinstance(value, str) or value.lower() not in _DATA_FORMATS:
        raise ValueError(
            f"{where}: image_data_format must be one of {_DATA_FORMATS}, got {value!r}"
        )
    return value.lower()


def set_image_data_format(data_format: str | None) -> None:
    """Sets the process-wide default data format for layers built afterwards.

    Args:
      data_format: ``"channels_last"``, ``"channels_first"`` (any case), or ``None`` to
        go back to ``keras.json`` / ``"channels_last"``.

    Example:
        >>> set_image_data_format("channels_last")
        >>> image_data_format()
        'channels_last'
        >>> set_image_data_format(None)
    """
    global _image_data_format
    if data_format is None:
        _image_data_format = None
    else:
        _image_data_format = _validate(data_format, "set_image_data_format")


def _from_keras_json(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        # A missing or unreadable keras.json means "not configured", as in Keras.
        return None
    value = cfg.get("image_data_format") if isinstance(cfg, dict) else None
    if value is None:
        return None
    return _validate(value, path)


def image_data_format() -> str:
    """The default data format: ``"channels_last"`` or ``"channels_first"``.

    Example:
        >>> image_data_format() in ("channels_last", "channels_first")
        True
    """
    if _image_data_format is not None:
        return _image_data_format
    keras_home = os.environ.get("KERAS_HOME")
    candidates = []
    if keras_home:
        candidates.append(os.path.join(keras_home, "keras.json"))
    candidates.append(os.path.join(os.path.expanduser("~"), ".keras", "keras.json"))
    for path in candidates:
        value = _from_keras_json(path)
        if value is not None:
            return value
    return "channels_last"


# --- convolution lowering -------------------------------------------------------------

#: ``"auto"``: each call takes the lowering :func:`kconv.ops.lowering.choose` picks for the
#: platform it runs on; ``"portable"``: the same, with the choice staged into the program
#: for every platform it may be lowered for; ``"xla"``: always XLA's own convolution (the
#: plain path).
CONV_LOWERINGS = ("auto", "portable", "xla")
#: The mode, a JAX user context: part of the key under which ``jax.jit`` caches a traced,
#: lowered and compiled function, so a function traced in one mode is never reused in
#: another, and changing the mode clears nothing (a context entered inside a traced
#: function costs no retrace). Created at import, before anything is traced: a context
#: created during a trace would key that trace's cache entry without it.
_CONV_LOWERING = jax.make_user_context(default_value="auto")


def _validate_lowering(value: object, where: str) -> str:
    if not isinstance(value, str) or value.lower() not in CONV_LOWERINGS:
        raise ValueError(f"{where}: the convolution lowering must be one of "
                         f"{CONV_LOWERINGS}, got {value!r}")
    return value.lower()


def get_conv_lowering() -> str:
    """The current convolution lowering mode: ``"auto"`` (the default), ``"portable"`` or
    ``"xla"``: this thread's :func:`conv_lowering` block if it is in one, else the
    process-wide :func:`set_conv_lowering`.

    Example:
        >>> get_conv_lowering()
        'auto'
    """
    return _CONV_LOWERING.value


def set_conv_lowering(mode: str) -> None:
    """Chooses how kconv's convolutions are computed, process-wide, for functions traced
    afterwards.

    - ``"auto"`` (the default) lets :func:`kconv.ops.lowering.choose` replace XLA's
      convolution where the platform has a faster equivalent (XLA:CPU has several, a CUDA
      GPU two: a dilated convolution's and a transposed one's gradients). In a
      process whose only platform is the CPU (``jax.default_backend() == "cpu"``) the
      choice is made when the function is traced, so the program holds only the CPU
      lowering; in a process with a GPU or TPU it is staged into the program
      (:func:`jax.lax.platform_dependent`), so that each platform the function is compiled
      for gets its own.
    - ``"portable"`` always stages the choice, also on a CPU-only host: for
      ``jax.export`` (or ``.trace(...).lower(lowering_platforms=...)``) to a GPU or TPU from
      a CPU-only process, which under ``"auto"`` would carry the CPU lowering (the same
      numbers, not XLA's convolution). It costs compile time: reverse mode linearizes and
      transposes both branches (SeparableConv2D forward+backward 1.37 → 1.73 × lax's
      lower + compile on the 2-core benchmark machine).
    - ``"xla"`` forces ``lax.conv_general_dilated`` everywhere, e.g. to compare the paths.

    All three give the same numbers up to float rounding.

    The mode is part of ``jax.jit``'s cache key (a :func:`jax.make_user_context`): a
    function jitted before a change retraces on its next call in the new mode, and its
    program for the old mode stays cached for when that mode comes back.

    Args:
      mode: ``"auto"``, ``"portable"`` or ``"xla"`` (any case).

    Raises:
      ValueError: for any other value.

    Example:
        >>> set_conv_lowering("xla")
        >>> get_conv_lowering()
        'xla'
        >>> set_conv_lowering("auto")
    """
    _CONV_LOWERING.set_global(_validate_lowering(mode, "set_conv_lowering"))


@contextlib.contextmanager
def conv_lowering(mode: str) -> Iterator[None]:
    """Context manager: the convolution lowering ``mode`` (:func:`set_conv_lowering`) in
    this thread inside the block, the previous one after.

    It may be entered around the call that traces (``jax.jit(f)(x)``, ``.lower(...)``) or
    inside the traced function, for some of its convolutions only; either way the mode is
    part of ``jax.jit``'s cache key, so ``f`` is traced once per mode, not once per call.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from kconv import ops
        >>> with conv_lowering("xla"):
        ...     y = ops.depthwise_conv(jnp.ones((1, 8, 8, 3)), jnp.ones((3, 3, 3, 1)))
        >>> @jax.jit
        ... def f(x, kernel):
        ...     with conv_lowering("xla"):  # this convolution only, traced once
        ...         return ops.depthwise_conv(x, kernel)
        >>> f(jnp.ones((1, 8, 8, 3)), jnp.ones((3, 3, 3, 1))).shape
        (1, 6, 6, 3)
        >>> get_conv_lowering()
        'auto'
    """
    with _CONV_LOWERING(_validate_lowering(mode, "conv_lowering")):
        yield
