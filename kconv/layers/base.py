"""What every kconv layer shares: the config-object contract of the pure tier.

A layer is an immutable, hashable description (a frozen dataclass holding exactly the Keras
constructor arguments, canonicalised once, when it is built). Arrays live outside it, in a
plain params dict keyed by Keras's weight names:

- ``init(key, input_shape) -> params`` (``{}`` for layers without weights),
- ``apply(params, x)`` — pure; ``layer(params, x)`` is the same call,
- ``compute_output_shape``, ``get_config`` / ``from_config``,
- ``regularization_losses(params, outputs=None)`` and ``constrain(params)``.

Rank aliases (``Conv1D``, ``Conv2D``, ``Conv3D``) are generated from one N-d family class
by :func:`make_rank_class`, so their signatures cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kconv import _args, activations, constraints, initializers, regularizers
from kconv._registry import IGNORED_KERAS_LAYER_KEYS

Params = dict[str, jax.Array]

# Fields every layer takes as keywords after the Keras arguments (JAX-specific).
_JAX_FIELDS: tuple[tuple[str, Any], ...] = (
    ("dtype", None),
    ("param_dtype", jnp.float32),
    ("precision", None),
)
# Arguments every Keras layer takes through ``**kwargs`` (its base ``Layer``'s), none of
# which a pure layer has, with what does their job here. Refused with that hint rather than
# Python's bare "unexpected keyword argument": a ported ``trainable=False`` must not pass
# unnoticed (nothing would freeze), and ``name=`` is in most Keras code.
_KERAS_LAYER_ARGS = {
    "name": "a pure layer has no name: keep its params under a name of your own "
            "({'conv1': params}); a kconv.linen module takes name= (Flax's)",
    "trainable": "a pure layer holds no weights to freeze: mask their updates "
                 "(optax.masked / optax.multi_transform with optax.set_to_zero; in NNX, "
                 "an nnx.Optimizer's wrt= filter)",
    "input_shape": "the input shape goes to init: layer.init(key, (None, *input_shape))",
    "batch_input_shape": "the input shape goes to init: layer.init(key, batch_input_shape)",
    "batch_shape": "the input shape goes to init: layer.init(key, batch_shape)",
    "input_dim": "the input shape goes to init: layer.init(key, (None, ..., input_dim))",
    "batch_size": "the input shape goes to init: layer.init(key, (batch_size, ...))",
    "autocast": "inputs are cast to dtype= (the compute dtype) whenever it is set",
}


# Other libraries' names for arguments kconv's layers take under Keras's names, as code
# ported from Flax's nn.Conv or PyTorch's nn.ConvNd / nn.Upsample spells them: refused with
# the Keras name (the first of the candidates the layer has) rather than Python's bare
# "unexpected keyword argument".
_FOREIGN_ARGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "features": ("Flax's", ("filters", "depth_multiplier")),
    "out_features": ("Flax NNX's", ("filters", "depth_multiplier")),
    "kernel_dilation": ("Flax's", ("dilation_rate",)),
    "feature_group_count": ("Flax's", ("groups",)),
    "kernel_init": ("Flax's", ("kernel_initializer", "depthwise_initializer")),
    "bias_init": ("Flax's", ("bias_initializer",)),
    "out_channels": ("PyTorch's", ("filters", "depth_multiplier")),
    "stride": ("PyTorch's", ("strides",)),
    "dilation": ("PyTorch's", ("dilation_rate",)),
    "bias": ("PyTorch's", ("use_bias",)),
    "scale_factor": ("PyTorch's", ("size",)),
    "mode": ("PyTorch's", ("interpolation",)),
}


# Flax's nn.Conv / nnx.Conv arguments no kconv layer has, with what does their job.
_FLAX_ONLY_ARGS = {
    "input_dilation": "a convolution of the dilated input is a ConvNDTranspose with "
                      "strides=input_dilation (kconv.interop.layer_from_flax builds it from "
                      "such a Flax module)",
    "transpose_kernel": "a kconv transposed convolution's kernel is (*k, filters, in), Flax's "
                        "transpose_kernel=True layout (kconv.interop.params_from_flax "
                        "converts Flax's default one)",
    "mask": "no kconv layer takes a kernel mask",
    "kernel_metadata": "annotate the weight through its initializer instead: "
                       "kernel_initializer=nnx.with_partitioning(init, names)",
    "bias_metadata": "annotate the weight through its initializer instead: "
                     "bias_initializer=nnx.with_partitioning(init, names)",
}


def refuse_foreign_args(cls: type, where: str, allowed: Sequence[str] = ()) -> None:
    """Wraps ``cls.__init__`` to refuse Keras's base-``Layer`` keywords (but ``allowed``),
    and Flax's and PyTorch's names for its own arguments, with a ``TypeError`` naming
    ``where``, the argument, its value and what to use instead. The signature is unchanged
    (``inspect.signature`` follows ``__wrapped__``)."""
    init = cls.__init__
    accepted = set(inspect.signature(init).parameters)

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        for arg in kwargs.keys() & _KERAS_LAYER_ARGS.keys() - set(allowed):
            raise TypeError(f"{where}: {arg}={kwargs[arg]!r} is a Keras Layer argument that "
                            f"kconv's layers do not take: {_KERAS_LAYER_ARGS[arg]}")
        for arg in sorted(kwargs.keys() - accepted):
            if arg in ("in_channels", "in_features"):
                raise TypeError(f"{where}: {arg}={kwargs[arg]!r}: a kconv layer reads "
                                f"its input channels from the input (layer.init(key, "
                                f"input_shape)); the kconv.nnx modules take in_channels=")
            if arg in _FLAX_ONLY_ARGS:
                raise TypeError(f"{where}: {arg}={kwargs[arg]!r} is a Flax convolution's "
                                f"argument, which kconv's layers do not have: "
                                f"{_FLAX_ONLY_ARGS[arg]}")
            library, names = _FOREIGN_ARGS.get(arg, ("", ()))
            ours = next((name for name in names if name in accepted), None)
            if ours is not None:
                note = (" (the output channels are the input's times depth_multiplier)"
                        if ours == "depth_multiplier" else "")
                raise TypeError(f"{where}: {arg}={kwargs[arg]!r} is {library} name; kconv's "
                                f"layers take Keras's: {ours}=...{note}")
        init(self, *args, **kwargs)

    cls.__init__ = __init__


# Keys some Keras versions write for layers that have no such argument, always at a neutral
# value (tf-keras: ``groups: 1`` on DepthwiseConv, SeparableConv and ConvTranspose, which
# inherit it from Conv; Keras 3.0-3.3: ``lora_rank: None``). Dropped at that value where
# the layer has no such field (ConvTranspose has ``groups``, beyond Keras: it takes the
# key as is); any other value is a config kconv cannot honour: left in, it raises as an
# unknown key.
_NEUTRAL_KERAS_KEYS = {"groups": 1, "lora_rank": None}


class Weight(NamedTuple):
    """One weight of a layer: its shape and the objects that make, penalise and project it.

    ``dtype`` is ``None`` for the layer's ``param_dtype``; ``trainable`` is ``False`` for a
    weight Keras freezes (the kernel under LoRA), whose penalty Keras then leaves out.

    Example:
        >>> import kconv
        >>> weights = kconv.Conv2D(4, 3).weights_for_channels(3)
        >>> {name: w.shape for name, w in weights.items()}
        {'kernel': (3, 3, 3, 4), 'bias': (4,)}
    """

    shape: tuple[int, ...]
    initializer: Callable
    regularizer: Callable | None
    constraint: Callable | None
    dtype: Any = None
    trainable: bool = True


def in_dtype(initializer: Callable) -> Callable:
    """``initializer`` whose result is cast to the dtype asked for, as :meth:`Layer.init`
    casts it (a user's initializer may ignore ``dtype``); the Flax tiers create their
    params with it. Boxed values (``nn.with_partitioning``, ``nnx.with_partitioning``)
    pass as they are.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> ones = in_dtype(lambda key, shape, dtype: jnp.ones(shape, jnp.float32))
        >>> ones(jax.random.key(0), (2,), jnp.bfloat16).dtype
        dtype(bfloat16)
    """
    def init(key: jax.Array, shape: Sequence[int], dtype: Any) -> Any:
        value = initializer(key, shape, dtype)
        return value.astype(dtype) if isinstance(value, jax.Array) else value

    return init


def weight_initializer(initializer: Callable | None) -> Callable:
    """The initializer a weight is made with: ``None`` (which Keras accepts for every
    ``*_initializer`` and keeps in its config) is Keras's ``add_weight`` default for a
    float weight -- every weight here, a bias too -- glorot_uniform."""
    return initializers.GlorotUniform() if initializer is None else initializer


def _wrap(where: str, arg: str, getter: Callable, value: Any) -> Any:
    """Resolves ``value`` with a module's ``get``, re-raising with the layer and argument."""
    try:
        return getter(value)
    except (ValueError, TypeError) as e:
        raise type(e)(f"{where}: invalid {arg} {value!r}: {e}") from e


def _policy_name(value: Any) -> Any:
    """The name of a serialized (dict) or live Keras dtype policy; anything else as is."""
    if isinstance(value, Mapping):
        return value.get("config", {}).get("name", value.get("name"))
    if hasattr(value, "compute_dtype") and hasattr(value, "variable_dtype"):
        return value.name
    return value


def _policy_dtypes(value: Any) -> tuple[Any, Any]:
    """A Keras dtype policy (name or serialized dict) as ``(dtype, param_dtype)``."""
    value = _policy_name(value)
    if value is None:
        return None, None
    name = str(value)
    if name.startswith("mixed_"):
        return name[len("mixed_"):], "float32"
    return name, name


def _compute_dtype(value: Any, where: str) -> tuple[Any, str | None]:
    """The constructor's ``dtype``: a floating dtype (the compute dtype, as in Flax) or a
    Keras mixed-precision policy — ``"mixed_bfloat16"`` / ``"mixed_float16"``, its
    serialized ``DTypePolicy`` dict or a live Keras ``DTypePolicy``: compute in the 16-bit
    type, params in float32. Returns ``(dtype, policy name or None)``."""
    value = _policy_name(value)
    if isinstance(value, str) and value.startswith("mixed_"):
        compute = value[len("mixed_"):]
        if compute not in ("bfloat16", "float16"):
            raise ValueError(f"{where}: dtype must be a floating dtype or a Keras dtype "
                             f"policy ('mixed_bfloat16', 'mixed_float16'), got {value!r}")
        return _args.dtype(compute, "dtype", where), value
    return _args.dtype(value, "dtype", where), None


@dataclasses.dataclass(frozen=True)
class Layer:
    """Base of all kconv layers (pure tier). Subclasses are frozen dataclasses.

    Example:
        >>> import jax, kconv
        >>> layer = kconv.Conv2D(4, 3)  # every layer: init, call, shapes, config
        >>> isinstance(layer, kconv.Layer)
        True
        >>> params = layer.init(jax.random.key(0), (None, 8, 8, 3))
        >>> layer(params, jax.numpy.ones((2, 8, 8, 3))).shape
        (2, 6, 6, 4)
        >>> layer.compute_output_shape((None, 8, 8, 3))
        (None, 6, 6, 4)
    """

    rank: ClassVar[int]
    #: Keras constructor arguments, in Keras's positional order (for get_config).
    keras_args: ClassVar[tuple[str, ...]] = ()
    #: Config keys a Keras version writes for this class although the layer never uses
    #: them (dropped by from_config whatever their value).
    unused_keras_keys: ClassVar[tuple[str, ...]] = ()
    #: Other class names Keras 2 / 3 accept for this layer (``Convolution2D``, ...).
    keras_aliases: ClassVar[tuple[str, ...]] = ()

    # --- construction -------------------------------------------------------------
    def __post_init__(self) -> None:
        values = self._canonicalize({f.name: getattr(self, f.name)
                                     for f in dataclasses.fields(self)})
        for key, value in values.items():
            object.__setattr__(self, key, value)

    def _canonicalize(self, values: dict[str, Any]) -> dict[str, Any]:
        """Returns canonical field values; raises naming the layer, argument and value."""
        where = type(self).__name__
        policy = values["dtype"]
        values["dtype"], mixed = _compute_dtype(policy, where)
        values["param_dtype"] = _args.dtype(values["param_dtype"], "param_dtype", where)
        if _policy_name(policy) is not policy and not mixed and values["dtype"] is not None:
            # A Keras DTypePolicy (live or serialized), not a dtype's name: Keras's meaning,
            # its variables in its dtype too (a bare "bfloat16" is the compute dtype only).
            if values["param_dtype"] not in (np.float32, values["dtype"]):
                raise ValueError(f"{where}: dtype={_policy_name(policy)!r} is a Keras dtype "
                                 f"policy, which keeps the params in its dtype too, got "
                                 f"param_dtype={values['param_dtype'].name!r}")
            values["param_dtype"] = values["dtype"]
        if mixed and values["param_dtype"] != np.float32:
            raise ValueError(f"{where}: dtype={mixed!r} keeps params in float32 (a Keras "
                             f"mixed policy), got param_dtype={values['param_dtype'].name!r}")
        if values["param_dtype"] is None:
            raise ValueError(f"{where}: param_dtype must be a floating dtype, got None")
        values["precision"] = _args.precision(values["precision"], where)
        return values

    # --- the pure-tier contract ---------------------------------------------------
    #: whether instances have weights (the Flax wrappers ask for ``in_channels`` if so).
    has_weights: ClassVar[bool] = False

    def weights(self, input_shape: Sequence[int | None]) -> dict[str, Weight]:
        """The layer's weights for an input shape: ``{name: Weight}`` (``{}`` if none)."""
        return {}

    def weights_for_channels(self, in_channels: int) -> dict[str, Weight]:
        """The layer's weights for inputs with ``in_channels`` channels (``{}`` if none)."""
        return {}

    def input_channels(self, x_shape: Sequence[int]) -> int | None:
        """The channel count of an input of shape ``x_shape`` (any rank >= N + 1), or
        ``None`` for layers whose inputs need no channel count."""
        return None

    def init(self, key: jax.Array, input_shape: Sequence[int | None]) -> Params:
        """Creates the params dict for inputs of ``input_shape`` (batch dim may be None).

        Args:
          key: a ``jax.random`` key; split once per weight, in Keras's weight order.
          input_shape: ``(batch, *spatial, channels)`` (or channels_first).

        Returns:
          ``{weight_name: array}`` with Keras's names and shapes, in ``param_dtype``.
        """
        if not isinstance(key, (jax.Array, np.ndarray)):
            raise TypeError(f"{type(self).__name__}.init: key must be a jax.random key "
                            f"(jax.random.key(0)), got {key!r}")
        weights = self.weights(input_shape)
        if not weights:
            return {}
        keys = jax.random.split(key, len(weights))
        return {name: jnp.asarray(w.initializer(k, w.shape, self.weight_dtype(w)),
                                  self.weight_dtype(w))
                for k, (name, w) in zip(keys, weights.items())}

    def weight_dtype(self, weight: Weight) -> Any:
        """The dtype a weight is stored in: its own, else the layer's ``param_dtype``."""
        return self.param_dtype if weight.dtype is None else weight.dtype

    def trainable_mask(self, params: Mapping[str, jax.Array]) -> dict[str, bool]:
        """``{name: bool}``: which weights Keras trains (all but the kernel under LoRA).

        For ``optax.masked`` / ``optax.multi_transform``, so a plain-JAX loop freezes what
        Keras freezes.

        Example:
            >>> import jax, kconv
            >>> layer = kconv.Conv1D(2, 3, lora_rank=1)
            >>> layer.trainable_mask(layer.init(jax.random.key(0), (None, 8, 1)))
            {'kernel': False, 'bias': True, 'lora_kernel_a': True, 'lora_kernel_b': True}
        """
        weights = self._weights_from_params(params)
        return {name: weights[name].trainable if name in weights else True for name in params}

    def apply(self, params: Mapping[str, jax.Array], x: jax.Array) -> jax.Array:
        """Applies the layer to ``x`` with ``params``; pure, safe under any transform."""
        raise NotImplementedError

    def _check_params(self, params: Mapping[str, jax.Array] | None, where: str) -> None:
        """A layer without weights takes ``{}`` (or ``None``): params it would ignore
        (another layer's, passed by mistake) raise."""
        self._check_params_type(params, where)
        if params:
            raise ValueError(f"{where}: the layer has no weights, so params must be {{}}; got "
                             f"keys {sorted(params)}")

    def _check_weights(self, params: Mapping[str, Any], where: str) -> int | None:
        """Raises unless ``params`` has exactly the names and shapes this layer implies,
        with the input channels read off the params (weights from a file or another
        library come without an input to take them from); returns those channels
        (``None`` for a layer without weights)."""
        self._check_params(params, where)
        return None

    def _check_params_type(self, params: Any, where: str) -> None:
        """Params are a mapping by weight name; Keras's ``get_weights()`` list (the usual
        mistake) gets the function that names its arrays."""
        if isinstance(params, Mapping) or (params is None and not self.has_weights):
            return
        count = f" of {len(params)} arrays" if isinstance(params, (list, tuple)) else ""
        got = "None" if params is None else f"a {type(params).__name__}{count}"
        raise TypeError(f"{where}: params must be a dict of weights by Keras's weight names "
                        f"(what init returns), got {got}; Keras's "
                        f"get_weights() list becomes one with "
                        f"kconv.interop.params_from_keras(layer, weights)")

    def __call__(self, params: Mapping[str, jax.Array], x: jax.Array) -> jax.Array:
        return self.apply(params, x)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple:
        """The output shape for ``input_shape`` (Keras semantics; ``None`` dims kept)."""
        raise NotImplementedError

    def regularization_losses(self, params: Mapping[str, jax.Array],
                              outputs: jax.Array | None = None) -> jax.Array:
        """The penalty Keras would add to the loss for these params (and outputs).

        Weight penalties are ``regularizer(weight)``; the activity penalty, counted only
        when ``outputs`` is given, is ``activity_regularizer(outputs) / batch_size`` (as
        Keras 3 divides it), with ``batch_size`` the product of the leading dims before
        the ``rank + 1`` sample dims (``outputs.shape[0]`` for a batched output).

        Params stacked along leading axes (the layers of an ``nnx.vmap`` / ``nn.scan``
        stack, as :meth:`constrain` takes them) give the sum of each layer's penalty:
        each slice of a weight regularized alone, and the outputs' same leading axes are
        the stack's, not the batch's.
        """
        return self._weight_penalty(params) + self._activity_penalty(params, outputs)

    def _stack_ndim(self, params: Mapping[str, jax.Array]) -> int:
        """How many leading axes of ``params`` stack several layers' weights."""
        ranks = self._weight_ranks()
        return next((max(jnp.ndim(params[name]) - rank, 0) for name, rank in ranks.items()
                     if name in params), 0)

    def _weight_penalty(self, params: Mapping[str, jax.Array]) -> jax.Array:
        """The weight regularizers' part of :meth:`regularization_losses`."""
        total = jnp.zeros((), jnp.float32)
        stack = self._stack_ndim(params)
        for name, weight in self._weights_from_params(params).items():
            # Keras sums the penalties of its trainable weights only.
            if weight.regularizer is not None and weight.trainable:
                value = params[name]
                value = jnp.reshape(value, (-1, *jnp.shape(value)[stack:])) if stack else value
                penalty = jax.vmap(weight.regularizer)(value) if stack else \
                    weight.regularizer(value)
                total = total + jnp.sum(jnp.asarray(penalty, jnp.float32))
        return total

    def _activity_penalty(self, params: Mapping[str, jax.Array],
                          outputs: jax.Array | None) -> jax.Array:
        """The activity regularizer's part of :meth:`regularization_losses` (0 without
        ``outputs``)."""
        activity = getattr(self, "activity_regularizer", None)
        if outputs is None or activity is None:
            return jnp.zeros((), jnp.float32)
        stack = self._stack_ndim(params)
        one = outputs.shape[stack:]  # one layer's outputs
        batch = math.prod(one[: max(len(one) - self.rank - 1, 0)])
        penalty = (jax.vmap(activity)(jnp.reshape(outputs, (-1, *one))) if stack
                   else activity(outputs))
        return jnp.sum(jnp.asarray(penalty, jnp.float32)) / jnp.float32(max(batch, 1))

    def constrain(self, params: Mapping[str, jax.Array]) -> Params:
        """Projects each weight with its constraint (what Keras does after each update).

        Weights stacked along leading axes — the params of layers under ``nn.scan``,
        ``nn.vmap`` or ``nnx.vmap``, one axis per stack — are projected one layer's
        slice at a time: a constraint's ``axis`` counts the axes of one layer's weight.

        Example:
            >>> import jax.numpy as jnp, kconv
            >>> layer = kconv.Conv1D(1, 1, kernel_constraint=kconv.constraints.MaxNorm(1.0))
            >>> stacked = {"kernel": jnp.full((2, 1, 1, 1), 3.0), "bias": jnp.zeros((2, 1))}
            >>> layer.constrain(stacked)["kernel"].ravel()   # each of the two layers' kernels
            Array([1., 1.], dtype=float32)
        """
        out = dict(params)
        ranks = self._weight_ranks()
        for name, weight in self._weights_from_params(params).items():
            if weight.constraint is not None and name in out:
                project = weight.constraint
                for _ in range(jnp.ndim(out[name]) - ranks.get(name, jnp.ndim(out[name]))):
                    project = jax.vmap(project)
                out[name] = project(out[name])
        return out

    def _weights_from_params(self, params: Mapping[str, jax.Array]) -> dict[str, Weight]:
        return {}

    def _weight_ranks(self) -> dict[str, int]:
        """``{name: ndim}`` of one layer's weights (more leading axes are a stack)."""
        return {}

    # --- configs ------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The Keras config: Keras's keys and value forms (JAX keywords only if set).

        ``dtype``, ``param_dtype`` and ``precision`` appear only when they differ from
        their defaults, so the config of a default layer is exactly Keras's argument set.
        ``dtype`` is written as a Keras dtype-policy name (``"float32"``,
        ``"mixed_bfloat16"``) whenever one expresses the pair.
        """
        config = {arg: self._serialize_arg(arg, getattr(self, arg)) for arg in self.keras_args}
        config.update(self._extension_config())
        param_dtype = np.dtype(self.param_dtype).name
        if self.dtype is not None:
            dtype = np.dtype(self.dtype).name
            if dtype == param_dtype:
                config["dtype"] = dtype  # a Keras policy name: compute = variables
            elif param_dtype == "float32":
                config["dtype"] = f"mixed_{dtype}"  # Keras's mixed-precision policy
            else:
                config["dtype"], config["param_dtype"] = dtype, param_dtype
        elif param_dtype != "float32":
            config["param_dtype"] = param_dtype
        if self.precision is not None:
            config["precision"] = self.precision
        return config

    def _extension_config(self) -> dict[str, Any]:
        """Config entries of keyword arguments beyond the Keras constructor, written only
        when they differ from their defaults (so Keras configs stay identical)."""
        return {}

    def _serialize_arg(self, arg: str, value: Any) -> Any:
        if arg == "activation":
            return activations.serialize(value)
        if arg.endswith("_initializer"):
            return None if value is None else initializers.serialize(value)
        if arg.endswith("_regularizer"):
            return None if value is None else regularizers.serialize(value)
        if arg.endswith("_constraint"):
            return None if value is None else constraints.serialize(value)
        return value

    @classmethod
    def from_config(cls, config: Any) -> Layer:
        """Builds a layer from :meth:`get_config`'s dict or a Keras layer's config.

        ``config`` is a ``get_config()`` dict (kconv's or Keras's), the serialized
        ``{"class_name": ..., "config": ...}`` form Keras writes in model configs (its class
        must be this one or a Keras alias of it), or a live Keras layer.

        Keras's ``name`` and ``trainable`` (and Keras 2's ``batch_input_shape``) are dropped
        (a pure layer has neither); a Keras dtype policy (``"float32"``,
        ``"mixed_bfloat16"``, or its serialized ``DTypePolicy`` / tf-keras ``Policy`` dict)
        becomes ``dtype`` (compute) and ``param_dtype`` (variables). Keys some Keras
        versions write at a neutral value for layers without that argument (tf-keras's
        ``groups: 1`` on a DepthwiseConv) are dropped at that value. Any other key raises
        ``ValueError`` naming it.
        """
        if not isinstance(config, Mapping) and hasattr(config, "get_config"):
            config = config.get_config()  # a live Keras layer
        if not isinstance(config, Mapping):
            raise TypeError(f"{cls.__name__}.from_config: expected a config dict, its "
                            f"serialized form or a Keras layer, got {type(config).__name__}")
        if "class_name" in config and "config" in config:
            if config["class_name"] not in (cls.__name__,) + cls.keras_aliases:
                raise ValueError(f"{cls.__name__}.from_config: the config is a "
                                 f"{config['class_name']!r}, not a {cls.__name__}")
            config = config["config"]
        config = dict(config)
        known = {f.name for f in dataclasses.fields(cls)}
        for key in IGNORED_KERAS_LAYER_KEYS + cls.unused_keras_keys:
            config.pop(key, None)
        for key, neutral in _NEUTRAL_KERAS_KEYS.items():
            if key in config and key not in known and config[key] == neutral:
                del config[key]  # any other value is left to raise as an unknown key
        if isinstance(config.get("dtype"), Mapping) or (
                isinstance(config.get("dtype"), str) and "param_dtype" not in config):
            dtype, param_dtype = _policy_dtypes(config.pop("dtype"))
            config["dtype"] = dtype
            if param_dtype is not None:
                config["param_dtype"] = param_dtype
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}.from_config: unknown config key(s) {unknown}; "
                             f"expected a subset of {sorted(known)}")
        return cls(**config)


def make_rank_class(family: type, rank: int, name: str, fields: Sequence[tuple[str, Any]],
                    doc: str, aliases: Sequence[str] = (),
                    keywords: Sequence[tuple[str, Any]] = ()) -> type:
    """Generates the rank-``rank`` alias of an N-d family class.

    ``fields`` are the Keras arguments as ``(name, default)`` pairs in Keras's positional
    order (``dataclasses.MISSING`` for required ones); ``keywords`` (arguments Keras takes
    through ``**kwargs``, like ``lora_rank``, or kconv's extensions) and then the JAX
    keywords are appended as keyword-only fields, so ``inspect.signature`` shows exactly
    Keras's signature plus ``*, <keywords>, dtype, param_dtype, precision``.
    """
    specs: list[Any] = []
    for arg, default in fields:
        if default is dataclasses.MISSING:
            specs.append((arg, Any))
        else:
            specs.append((arg, Any, dataclasses.field(default=default)))
    for arg, default in tuple(keywords) + _JAX_FIELDS:
        specs.append((arg, Any, dataclasses.field(default=default, kw_only=True)))
    cls = dataclasses.make_dataclass(
        name, specs, bases=(family,), frozen=True,
        namespace={"rank": rank, "keras_args": tuple(a for a, _ in fields), "__doc__": doc,
                   "keras_aliases": tuple(aliases)},
    )
    cls.__module__ = "kconv.layers"
    refuse_foreign_args(cls, name)
    return cls


def resolve_objects(where: str, values: dict[str, Any]) -> dict[str, Any]:
    """Resolves activation/initializer/regularizer/constraint args to hashable objects."""
    for arg, value in values.items():
        if arg == "activation":
            values[arg] = _wrap(where, arg, activations.get, value)
        elif arg.endswith("_initializer"):
            values[arg] = _wrap(where, arg, initializers.get, value)
        elif arg.endswith("_regularizer"):
            values[arg] = None if value is None else _wrap(where, arg, regularizers.get, value)
        elif arg.endswith("_constraint"):
            values[arg] = None if value is None else _wrap(where, arg, constraints.get, value)
    return values
