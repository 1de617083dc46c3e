"""Keras interop without Keras: layer configs, and weight files both ways.

Everything here reads and writes files with ``h5py``, ``zipfile`` and ``json`` only: no
TensorFlow, no Keras import, nothing unpickled and no code from a file ever executed (a
``Lambda`` layer in a ``.keras`` config is data that is skipped and listed).

Formats read:

- Keras 3 ``.weights.h5`` (``model.save_weights``): one group per layer, addressed by
  position (``layers/conv2d_1/vars/0``), the layer's name in the ``vars`` group's ``name``
  attribute. Weights are unnamed and in Keras's order (``kernel, bias`` /
  ``depthwise, pointwise, bias``).
- Keras 3 ``.keras`` (``model.save``): a zip of ``config.json`` (the model config) and
  ``model.weights.h5`` (the layout above).
- Legacy HDF5 ``.h5`` (Keras 2 / tf-keras ``model.save`` and ``save_weights``, and Keras 3's
  legacy writer): ``layer_names`` and per-layer ``weight_names`` attributes
  (``conv2d/kernel:0``); full-model files carry ``model_config``.

A layer's class comes from the model config when the file has one; from the group's
position name in a Keras 3 weights file (Keras names it after the class: ``conv2d_transpose``,
``separable_conv1d_2``); in a legacy weights-only file from the weight names and shapes
(``depthwise_kernel`` + ``pointwise_kernel`` is separable; a ``kernel`` of rank 3 to 5, with
a bias that fits it, is a convolution — which one does not matter, their params are the same
dict). Anything else is skipped and listed in ``.skipped``, never guessed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import tempfile
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from kconv import activations, constraints, initializers, regularizers
from kconv import layers as _layers

__all__ = [
    "KerasWeights", "layer_from_keras", "load_keras_layers", "load_keras_weights",
    "params_from_keras", "save_keras_weights", "to_keras_weights",
]

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ZIP_SIGNATURE = b"PK\x03\x04"

#: Keras class names (and the aliases Keras 2 and 3 accept) -> kconv layer class.
_CLASSES: dict[str, type] = {
    alias: cls for cls in (getattr(_layers, name) for name in _layers.LAYER_NAMES)
    for alias in (cls.__name__,) + cls.keras_aliases}
#: Container classes whose config lists sub-layers under ``layers``.
_CONTAINERS = ("Sequential", "Functional", "Model")
#: Wrappers whose config holds one sub-layer under ``layer`` (and Keras 3's file its weights
#: under a ``layer`` group): a wrapped layer is named along the path (``"td/conv"``).
#: TimeDistributed's inner layer over ``(batch, time, ...)`` is the kconv layer itself,
#: which takes extra leading batch dims. SpectralNormalization's, at inference, is its
#: layer with the stored kernel: Keras (3, and tf-keras 2.13+) normalizes the kernel in
#: place while training (``kernel.assign(kernel / sigma)``) and calls the layer as it is
#: otherwise.
_WRAPPERS = ("TimeDistributed", "SpectralNormalization")
#: A SpectralNormalization wrapper's own weights: the wrapped kernel again (the same
#: variable) and the power iteration's ``vector_u``, training state that inference never
#: reads.
_SPECTRAL_NORM = "SpectralNormalization"


def _snake(class_name: str) -> str:
    # keras.src.utils.naming.to_snake_case, which names the groups of a weights file.
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


_BY_SNAKE = {_snake(name): cls for name, cls in _CLASSES.items() if name in _layers.LAYER_NAMES}
_WRAPPER_BY_SNAKE = {_snake(name): name for name in _WRAPPERS}


# --- configs ------------------------------------------------------------------------

def layer_from_keras(obj: Any, *,
                     custom_objects: Mapping[str, Any] | None = None) -> _layers.Layer:
    """The kconv layer equivalent to a Keras layer, its config, or its serialized form.

    Args:
      obj: a live Keras layer (Keras 3 or tf-keras); a ``{"class_name": ..., "config":
        ...}`` dict as Keras 3, tf-keras 2.x and Keras 2.x write it in model configs; or a
        layer's bare ``get_config()`` dict, whose class is then read from its keys. A
        ``TimeDistributed`` wrapper gives the layer it wraps, which takes the extra time
        dim itself (a leading batch dim); a ``SpectralNormalization`` wrapper the layer it
        wraps too (at inference Keras calls it with its stored kernel, which training
        normalized in place).
      custom_objects: keyword-only, as ``keras.models.load_model`` takes it: the objects
        of your own a config names (a registered activation, initializer, regularizer or
        constraint, which kconv cannot know), by Keras's registered name
        (``"my_pkg>my_act"``) or plain name (``"my_act"``, ``"MyInit"``), each as kconv
        calls it: an activation ``x -> y`` in JAX, an initializer ``(key, shape, dtype)
        -> array`` (or a kconv initializer), a regularizer ``w -> scalar``, a constraint
        ``w -> w``. Names it maps take precedence over kconv's, as in Keras.

    Returns:
      The kconv layer, built by ``Layer.from_config`` (nested initializer, regularizer and
      constraint configs, dtype policies and tf-keras quirks are understood there). A
      layer with weights that Keras holds frozen (``trainable=False``) warns: a kconv
      layer has no trainable flag, so its params are for you to keep out of training.

    Raises:
      ValueError: the class is not one kconv implements, the config has a key kconv
        cannot honour, or names an object of your own that ``custom_objects`` does not map
        (named in the message).

    Example:
        >>> cfg = {"class_name": "Conv2D", "config": {"name": "c", "filters": 4,
        ...        "kernel_size": [3, 3], "padding": "same",
        ...        "dtype": {"class_name": "DTypePolicy", "config": {"name": "float32"}}}}
        >>> layer_from_keras(cfg).compute_output_shape((None, 8, 8, 3))
        (None, 8, 8, 4)
        >>> type(layer_from_keras({"cropping": [[1, 1], [2, 2]]})).__name__
        'Cropping2D'
    """
    return _layer_from_keras(obj, custom_objects, warn_frozen=True)


def _layer_from_keras(obj: Any, custom_objects: Mapping[str, Any] | None,
                      warn_frozen: bool) -> _layers.Layer:
    """:func:`layer_from_keras`; ``warn_frozen=False`` where the caller names the frozen
    layers itself (:func:`load_keras_layers`)."""
    if hasattr(obj, "get_config") and not isinstance(obj, Mapping):
        class_name, config = type(obj).__name__, obj.get_config()
    elif isinstance(obj, Mapping) and "class_name" in obj and "config" in obj:
        class_name, config = obj["class_name"], obj["config"]
    elif isinstance(obj, Mapping) and isinstance(obj.get("layer"), Mapping) \
            and "class_name" in obj["layer"]:
        # A wrapper's bare get_config() (TimeDistributed, SpectralNormalization): its layer.
        return _layer_from_keras(obj["layer"], custom_objects, warn_frozen)
    elif isinstance(obj, Mapping):
        class_name, config = _class_of_config(obj), obj
    else:
        raise TypeError("kconv.interop.layer_from_keras: expected a Keras layer, its "
                        f"get_config() dict or its serialized form, got {type(obj).__name__}")
    if class_name in _WRAPPERS and isinstance(config, Mapping) and "layer" in config:
        # TimeDistributed(layer): the kconv layer itself takes the extra (time) dim;
        # SpectralNormalization(layer): the layer, with the kernel training left in it.
        return _layer_from_keras(config["layer"], custom_objects, warn_frozen)
    cls = _CLASSES.get(class_name)
    if cls is None:
        raise ValueError(f"kconv.interop.layer_from_keras: {class_name!r} is not a layer kconv "
                         f"implements; kconv has {sorted(_layers.LAYER_NAMES)}")
    if isinstance(config, Mapping):
        config = _with_custom_objects(config, custom_objects or {})
    layer = cls.from_config({"class_name": class_name, "config": config})
    if warn_frozen and cls.has_weights and isinstance(config, Mapping) \
            and config.get("trainable") is False:
        warnings.warn(f"kconv.interop.layer_from_keras: Keras holds the {class_name} "
                      f"{config.get('name', '')!r} frozen (trainable=False); kconv's layers "
                      f"have no trainable flag: keep its params where they are (optax."
                      f"set_to_zero on them, chained after the optimizer)", stacklevel=3)
    return layer


# The object-valued keys of a layer config (by name or suffix): what kconv calls each,
# and its family's get.
_OBJECT_KEYS: dict[str, tuple[str, Any]] = {
    "activation": ("an activation x -> y in JAX", activations.get),
    "_initializer": ("an initializer (key, shape, dtype) -> array", initializers.get),
    "_regularizer": ("a regularizer w -> scalar", regularizers.get),
    "_constraint": ("a constraint w -> w", constraints.get),
}


def _object_key(key: str) -> tuple[str, Any] | None:
    return next((what for suffix, what in _OBJECT_KEYS.items()
                 if key == suffix or (suffix.startswith("_") and key.endswith(suffix))), None)


def _object_names(value: Any) -> list[str]:
    """The names an object config goes by, the most specific first: Keras 3's registered
    name (``"pkg>Name"``; a function's is its ``config``), then the plain one."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, Mapping):
        return []
    if value.get("class_name") == "function" and isinstance(value.get("config"), str):
        full = value["config"]
    else:
        full = value.get("registered_name")
        full = full if isinstance(full, str) and full != "function" else None
    plain = value.get("class_name") if value.get("class_name") != "function" else None
    names = [n for n in (full, full.split(">")[-1] if full else None, plain)
             if isinstance(n, str)]
    return list(dict.fromkeys(names))


def _is_users(value: Any) -> bool:
    """Whether an object config names an object of the user's own: registered with Keras
    (``"pkg>name"``), or from a module of theirs."""
    if not isinstance(value, Mapping):
        return False
    module = value.get("module")
    return any(">" in name for name in _object_names(value)) or (
        isinstance(module, str) and not module.startswith(("keras", "tf_keras"))
        and module != "builtins")


def _with_custom_objects(config: Mapping[str, Any],
                         custom_objects: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with each object of the user's own replaced by what ``custom_objects``
    maps its name to; one it does not map raises, naming the key and what to pass."""
    config = dict(config)
    for key, value in config.items():
        what = _object_key(key)
        if what is None:
            continue
        kind, get = what
        names = _object_names(value)
        hit = next((name for name in names if name in custom_objects), None)
        if hit is not None:
            config[key] = custom_objects[hit]
            continue
        hint = (f"pass custom_objects={{{names[-1]!r}: ...}}, {kind} (as "
                f"keras.models.load_model takes custom_objects)") if names else ""
        if _is_users(value):
            raise ValueError(f"kconv.interop.layer_from_keras: {key} is {names[0]!r}, an "
                             f"object of your own, which kconv cannot know: {hint}")
        try:
            get(value)
        except ValueError as e:  # a name kconv does not have: perhaps the user's
            raise ValueError(f"kconv.interop.layer_from_keras: {key}: {e} If it is an "
                             f"object of your own, {hint}") from e
        except TypeError as e:  # a Keras object kconv knows and cannot take (a PReLU)
            raise TypeError(f"kconv.interop.layer_from_keras: {key}: {e}") from e
    return config


def _class_of_config(config: Mapping[str, Any]) -> str:
    """A family class name from the keys and value shapes of a bare layer config."""
    def rank_of(value: Any) -> int:
        return 1 if isinstance(value, int) else len(value)

    def pairs_rank(value: Any) -> int:
        # Keras configs write 1-D amounts as one (lo, hi) pair, N-D ones as N pairs.
        return 1 if isinstance(value, int) or all(isinstance(v, int) for v in value) \
            else len(value)

    if "cropping" in config:
        return f"Cropping{pairs_rank(config['cropping'])}D"
    if "size" in config and "kernel_size" not in config:
        return f"UpSampling{rank_of(config['size'])}D"
    if "padding" in config and "kernel_size" not in config:
        return f"ZeroPadding{pairs_rank(config['padding'])}D"
    if "kernel_size" not in config:
        raise ValueError("kconv.interop.layer_from_keras: cannot tell the layer class of a "
                         f"config with keys {sorted(config)}; pass {{'class_name': ..., "
                         "'config': ...}")
    rank = rank_of(config["kernel_size"])
    if "pointwise_initializer" in config:
        return f"SeparableConv{rank}D"
    if "depth_multiplier" in config:
        return f"DepthwiseConv{rank}D"
    if "output_padding" in config:
        return f"Conv{rank}DTranspose"
    return f"Conv{rank}D"


def _flatten_model_config(config: Any, prefix: str = "") -> dict[str, Mapping[str, Any]]:
    """``{layer path: {"class_name", "config"}}`` for every layer of a model config.

    Containers (Sequential, Functional, Model: anything whose config lists ``layers``) are
    walked, their layers named along the path joined with ``/``.
    """
    out: dict[str, Mapping[str, Any]] = {}
    if isinstance(config, Mapping) and "class_name" in config:
        inner = config.get("config", {})
        layers = inner if isinstance(inner, list) else (
            inner.get("layers") if isinstance(inner, Mapping) else None)
        if layers is None or config["class_name"] in _CLASSES:
            name = inner.get("name", config["class_name"]) if isinstance(inner, Mapping) \
                else config["class_name"]
            out[f"{prefix}{name}"] = config
            return out
        for layer in layers:
            inner_cfg = layer.get("config", {})
            name = inner_cfg.get("name") if isinstance(inner_cfg, Mapping) else None
            sub = inner_cfg if isinstance(inner_cfg, list) else (
                inner_cfg.get("layers") if isinstance(inner_cfg, Mapping) else None)
            if sub is not None and layer.get("class_name") not in _CLASSES:
                out.update(_flatten_model_config(layer, f"{prefix}{name}/"))
            elif layer.get("class_name") in _WRAPPERS and isinstance(
                    inner_cfg.get("layer"), Mapping):
                # A container of one layer (which may be a model, named along the path);
                # the wrapper listed too, for its own weights (SpectralNormalization's).
                out[f"{prefix}{name}"] = layer
                out.update(_flatten_model_config(
                    {"class_name": layer["class_name"], "config": {"layers": [
                        inner_cfg["layer"]]}}, f"{prefix}{name}/"))
            else:
                out[f"{prefix}{name}"] = layer
    return out


# --- reading files --------------------------------------------------------------------

class KerasWeights(dict):
    """``{layer_name: params}`` read from a Keras file, plus what was left out.

    Attributes:
      skipped: ``{layer_name: class name or "unknown"}`` of every layer in the file outside
        the convolution family (Dense, BatchNormalization, Lambda, ...), which are not read.
      frozen: the names of the layers read whose weights Keras does not train
        (``trainable=False``; a frozen model's layers too; layers without weights, such as
        ZeroPadding2D, never: they have nothing to train), in the model's order:
        :func:`load_keras_layers` lists them (a kconv layer has no trainable flag);
        empty elsewhere.

    Example:
        >>> weights = KerasWeights({"conv": {"kernel": np.zeros((3, 3, 1, 4))}},
        ...                        skipped={"dense": "Dense"})
        >>> list(weights), weights.skipped
        (['conv'], {'dense': 'Dense'})
    """

    def __init__(self, items: Mapping[str, Any] = (), skipped: Mapping[str, str] = (),
                 frozen: Iterable[str] = ()):
        super().__init__(items)
        self.skipped = dict(skipped)
        self.frozen = list(frozen)


class _Entry:
    """One layer found in a file: its path name, class (if known) and raw weights."""

    def __init__(self, name: str, class_name: str | None, arrays: list[np.ndarray],
                 names: list[str] | None):
        self.name, self.class_name, self.arrays, self.names = name, class_name, arrays, names


def _sniff(path: str) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise OSError(f"kconv.interop: cannot read {path!r}: {e}") from e
    if head.startswith(_HDF5_SIGNATURE):
        return "hdf5"
    if head.startswith(_ZIP_SIGNATURE):
        return "zip"
    if head.lstrip().startswith(b"{"):
        return "json"
    raise ValueError(f"kconv.interop: {path!r} is neither an HDF5 file (.weights.h5, .h5), "
                     f"a zip archive (.keras) nor the index of sharded weights "
                     f"(.weights.json); it starts with {head!r}")


def _h5py() -> Any:
    # h5py is needed only for files, so it is an optional dependency (kconv[interop]).
    try:
        import h5py
    except ImportError as e:
        raise ImportError("kconv.interop needs h5py to read and write Keras weight files: "
                          "pip install h5py (or kconv[interop])") from e
    return h5py


@contextlib.contextmanager
def _open_h5(source: Any, path: str) -> Iterator[Any]:
    h5py = _h5py()
    try:
        f = h5py.File(source, "r")
    except (OSError, ValueError) as e:
        raise ValueError(f"kconv.interop: {path!r} is not a readable HDF5 file (truncated or "
                         f"corrupt?): {e}") from e
    try:
        yield f
    finally:
        f.close()


def _read(path: Any) -> tuple[list[_Entry], dict[str, Mapping[str, Any]] | None]:
    """The layers found in a file, and its flattened model config (``None`` if it has none)."""
    if _is_live_model(path):
        return _read_live(path)
    path = os.fspath(path)
    if os.path.isdir(path):  # Keras 3's model.save(folder, zipped=False): the .keras, unzipped
        missing = [name for name in ("config.json", "model.weights.h5")
                   if not os.path.isfile(os.path.join(path, name))]
        if missing:
            raise ValueError(f"kconv.interop: {path!r} is a folder but not an unzipped .keras "
                             f"model (Keras's model.save(folder, zipped=False)): no "
                             f"{' or '.join(missing)}; it has {sorted(os.listdir(path))[:8]}")
        with open(os.path.join(path, "config.json"), "rb") as f:
            return _read_archive(path, f.read(), os.path.join(path, "model.weights.h5"))
    kind = _sniff(path)
    if kind == "json":
        merged = _sharded(path)
        try:
            return _read_keras3(merged, path, None), None
        finally:
            merged.close()
    if kind == "zip":
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                if "config.json" not in names or "model.weights.h5" not in names:
                    raise ValueError(f"kconv.interop: {path!r} is a zip but not a .keras "
                                     f"archive (no config.json / model.weights.h5; has "
                                     f"{names[:8]})")
                config = archive.read("config.json")
                weights = io.BytesIO(archive.read("model.weights.h5"))
        except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as e:
            raise ValueError(f"kconv.interop: {path!r} is a corrupt or truncated zip "
                             f"archive: {e}") from e
        return _read_archive(path, config, weights)
    with _open_h5(path, path) as f:
        if "layer_names" in f.attrs or "model_weights" in f:
            return _read_legacy(f, path)
        if "layers" in f or "vars" in f:
            _check_not_a_shard(path)
            return _read_keras3(f, path, None), None
        raise ValueError(f"kconv.interop: {path!r} is HDF5 but not a Keras weights file (no "
                         f"'layers' group, no 'layer_names' attribute); top-level keys "
                         f"{sorted(f)[:8]}")


def _shard_index(path: str) -> tuple[dict[str, Any], list[str]]:
    """A sharded weights index (``model.save_weights("m.weights.json",
    max_shard_size=...)``): its JSON and its shard files, in the order it names them."""
    try:
        with open(path, encoding="utf8") as f:
            index = json.load(f)
        shards = [name for files in index["weight_map"].values()
                  for name in ([files] if isinstance(files, str) else files)]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) \
            as e:
        raise ValueError(f"kconv.interop: {path!r} is JSON but not the index of Keras's "
                         f"sharded weights (a 'weight_map' of groups to shard files): "
                         f"{e!r}") from e
    return index, list(dict.fromkeys(shards))


def _sharded(path: str) -> Any:
    """Keras's sharded weights as one HDF5 file in memory: its shards hold parts of one
    ``.weights.h5`` tree (a layer's weights in one shard, its name in another), merged
    group by group."""
    h5py = _h5py()
    _, shards = _shard_index(path)
    merged = h5py.File(io.BytesIO(), "w")

    def merge(source: Any, target: Any) -> None:
        target.attrs.update(source.attrs)
        for key, item in source.items():
            if isinstance(item, h5py.Group):
                merge(item, target.require_group(key))
            elif key not in target:
                source.copy(item, target, name=key)

    for shard in shards:
        where = os.path.join(os.path.dirname(path), shard)
        with _open_h5(where, where) as f:
            merge(f, merged)
    return merged


def _check_not_a_shard(path: str) -> None:
    """Refuses one shard of sharded weights (it may hold a layer's weights without its
    name, which another shard holds): the index beside it is what to read."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        names = sorted(os.listdir(folder))
    except OSError:  # a folder that cannot be listed holds no index we could read
        return
    for name in names:
        if name.endswith("weights.json"):  # the name Keras requires of a sharded index
            try:
                _, shards = _shard_index(os.path.join(folder, name))
            except (ValueError, OSError):
                continue
            if os.path.basename(path) in shards:
                raise ValueError(f"kconv.interop: {path!r} is one shard of the sharded "
                                 f"weights {os.path.join(folder, name)!r}: read that index")


def _is_live_model(obj: Any) -> bool:
    """A live Keras model (Keras 3 or tf-keras: its layers, weights and config), not a path."""
    return not isinstance(obj, (str, bytes, os.PathLike)) and all(
        hasattr(obj, attr) for attr in ("layers", "weights", "get_config"))


def _source(path: Any) -> str:
    """What messages call the source: the file's path, or the live model."""
    if _is_live_model(path):
        return f"the Keras model {getattr(path, 'name', type(path).__name__)!r}"
    return repr(os.fspath(path))


def _live_layers(layers: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(path name, layer)`` of every layer below a live model's ``layers``: nested models
    and ``TimeDistributed`` wrappers walked and named along the path, as in its files."""
    for layer in layers:
        name = f"{prefix}{layer.name}"
        kind = type(layer).__name__
        if kind in _WRAPPERS and hasattr(layer, "layer"):
            yield from _live_layers([layer.layer], f"{name}/")
        elif kind not in _CLASSES and hasattr(layer, "layers"):
            yield from _live_layers(layer.layers, f"{name}/")
        else:
            yield name, layer


def _read_live(model: Any) -> tuple[list[_Entry], dict[str, Mapping[str, Any]]]:
    """A live model's layers as a file's: each layer's class, weights by their names, and
    a family layer's config (its own ``get_config()``). Walks ``model.layers``, so a
    subclassed model's layers are found too (its file's config does not list them)."""
    entries: list[_Entry] = []
    config: dict[str, Mapping[str, Any]] = {}
    for name, layer in _live_layers(model.layers):
        variables = list(layer.weights)
        cls = _CLASSES.get(type(layer).__name__)
        if cls is not None and cls.has_weights and not variables:
            raise ValueError(f"kconv.interop: {_source(model)}: its layer {name!r} has no "
                             f"weights yet (not built): call the model once, or build it")
        # Keras 3 names a variable "kernel"; tf-keras "conv/kernel:0".
        names = [re.sub(r":\d+$", "", str(v.name).split("/")[-1]) for v in variables]
        entries.append(_Entry(name, type(layer).__name__, [np.asarray(v) for v in variables],
                              names))
        if cls is not None:
            config[name] = {"class_name": type(layer).__name__, "config": layer.get_config()}
    return entries, config


def _read_archive(path: str, config: bytes,
                  weights: Any) -> tuple[list[_Entry], dict[str, Mapping[str, Any]]]:
    """A ``.keras`` model, zipped or not: its ``config.json`` and ``model.weights.h5``."""
    try:
        flat = _flatten_model_config(json.loads(config))
    except json.JSONDecodeError as e:
        raise ValueError(f"kconv.interop: {path!r}: config.json is not valid JSON: {e}") from e
    where = weights if isinstance(weights, str) else f"{path}:model.weights.h5"
    with _open_h5(weights, where) as f:
        return _read_keras3(f, path, flat), flat


def _read_keras3(f: Any, path: str, config: Mapping[str, Any] | None) -> list[_Entry]:
    entries: list[_Entry] = []

    def walk(group: Any, prefix: str, key: str | None, in_list: bool) -> None:
        vars_group = group.get("vars")
        name = key or ""
        if vars_group is not None and "name" in vars_group.attrs:
            name = _text(vars_group.attrs["name"])
        if key is not None:
            full = f"{prefix}{name}"
            class_name = None
            if config is not None and full in config:
                class_name = config[full].get("class_name")
            elif in_list:
                snake = re.sub(r"_\d+$", "", key)
                cls = _BY_SNAKE.get(snake)
                class_name = cls.__name__ if cls is not None else _WRAPPER_BY_SNAKE.get(snake)
            arrays = []
            if vars_group is not None:
                try:
                    order = sorted(vars_group, key=int)
                except ValueError:
                    order = list(vars_group)
                arrays = [_array(vars_group[k]) for k in order]
            children = [k for k in group if k != "vars"]
            if not children or class_name in _CLASSES:
                entries.append(_Entry(full, class_name, arrays, None))
                return
            if arrays:
                entries.append(_Entry(full, class_name, arrays, None))
            prefix = f"{full}/"
        for child in group:
            if child == "vars":
                continue
            if child == "layers" or child.startswith("container"):
                for sub in sorted(group[child], key=_keras_order):
                    walk(group[child][sub], prefix, sub, True)
            elif key is None and child == "optimizer":
                continue  # a .keras archive's optimizer state, not a layer
            else:
                walk(group[child], prefix, child, False)

    try:
        walk(f, "", None, False)
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"kconv.interop: {path!r}: corrupt weights ({e})") from e
    return entries


def _array(dataset: Any) -> np.ndarray:
    """A stored weight as NumPy. HDF5 has no bfloat16: Keras keeps it as 2-byte opaque
    values, marked ``attrs["dtype"] = "bfloat16"`` in a ``.weights.h5`` (its legacy writer
    leaves the mark out; bfloat16 is the only such type it writes)."""
    array = np.asarray(dataset)
    if array.dtype.kind == "V":
        mark = _text(dataset.attrs.get("dtype", "bfloat16"))
        if array.dtype.itemsize != 2 or mark != "bfloat16":
            raise ValueError(f"{dataset.name!r} holds {array.dtype.itemsize}-byte opaque "
                             f"values (dtype mark {mark!r}), which kconv does not read")
        import ml_dtypes  # JAX's own dependency

        array = array.view(ml_dtypes.bfloat16)
    return array


def _keras_order(key: str) -> tuple[str, int]:
    """Sort key of a Keras 3 position name: ``conv2d`` < ``conv2d_1`` < ... < ``conv2d_10``
    (HDF5 lists groups alphabetically, where ``conv2d_10`` would come before ``conv2d_2``)."""
    match = re.fullmatch(r"(.*?)_(\d+)", key)
    return (match.group(1), int(match.group(2))) if match else (key, 0)


def _read_legacy(f: Any, path: str) -> tuple[list[_Entry], dict[str, Mapping[str, Any]] | None]:
    config = None
    raw = f.attrs.get("model_config")
    if raw is not None:
        try:
            config = _flatten_model_config(json.loads(_text(raw)))
        except json.JSONDecodeError as e:
            raise ValueError(f"kconv.interop: {path!r}: model_config is not valid JSON: "
                             f"{e}") from e
    g = f["model_weights"] if "model_weights" in f else f
    entries: list[_Entry] = []
    try:
        for layer_name in [_text(n) for n in g.attrs["layer_names"]]:
            group = g[layer_name]
            owners: dict[str, tuple[list[str], list[np.ndarray]]] = {}
            for weight_name in [_text(n) for n in group.attrs.get("weight_names", [])]:
                parts = weight_name.split("/")
                full = _legacy_owner(layer_name, parts[:-1], config)
                names, arrays = owners.setdefault(full, ([], []))
                names.append(re.sub(r":\d+$", "", parts[-1]))
                arrays.append(_array(group[weight_name]))
            if not owners:
                owners[layer_name] = ([], [])
            for full, (names, arrays) in owners.items():
                class_name = None
                if config is not None and full in config:
                    class_name = config[full].get("class_name")
                entries.append(_Entry(full, class_name, arrays, names))
    except (OSError, KeyError) as e:
        raise ValueError(f"kconv.interop: {path!r}: corrupt or truncated legacy HDF5 weights "
                         f"({e})") from e
    return entries, config


def _legacy_owner(layer_name: str, owner: list[str],
                  config: Mapping[str, Any] | None) -> str:
    """The layer a legacy weight belongs to, named along its path from the top-level
    layer ``layer_name``. tf-keras writes a weight's path from that layer
    (``conv/kernel:0``, nested: ``block/conv/kernel:0``); Keras 3's legacy writer from
    the model, so a ``Sequential``'s weights read ``sequential/conv/kernel``. The path
    after ``layer_name`` names the layer; where it occurs twice (a layer named as its
    model), the config says which is a layer."""
    candidates = [layer_name + "".join(f"/{p}" for p in owner[i + 1:])
                  for i, part in enumerate(owner) if part == layer_name]
    if not candidates:  # a path that does not pass through the layer: below it
        below = "/".join([layer_name, *owner]) if owner else layer_name
        if config is None or below in config or not owner:
            return below
        # Keras 3 names a weight by the scopes it was made in, which need not be the
        # models that hold the layer now: a Functional model nested in another writes
        # 'conv/kernel' under 'outer' for 'outer/inner/conv'; a layer shared by two
        # models is named after the first. The config's one layer under this top-level
        # layer whose path ends as the weight's does (the longest such ending) is it.
        for start in range(len(owner)):
            ending = "/" + "/".join(owner[start:])
            known = [name for name in config
                     if name.startswith(layer_name + "/") and name.endswith(ending)]
            if len(known) == 1:
                return known[0]
        return below
    if config is not None:
        known = [name for name in candidates if name in config]
        if known:
            return known[0]
    return candidates[0]


def _text(value: Any) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _kconv_names(cls: type, names: list[str] | None, count: int, where: str) -> list[str]:
    """kconv's weight names for a layer of class ``cls`` with ``count`` stored weights."""
    if issubclass(cls, _layers.SeparableConv):
        order = ["depthwise_kernel", "pointwise_kernel", "bias"]
    elif issubclass(cls, (_layers.Conv, _layers.ConvTranspose, _layers.DepthwiseConv)):
        order = ["kernel", "bias"]
    else:
        order = []
    if names is not None:
        # Legacy files name their weights; tf-keras's depthwise kernel is Keras 3's kernel.
        mapped = ["kernel" if n == "depthwise_kernel" and order == ["kernel", "bias"] else n
                  for n in names]
        lora = sorted(n for n in mapped if n.startswith("lora_"))  # a live LoRA layer's
        plain = [n for n in mapped if not n.startswith("lora_")]
        if sorted(plain) != sorted(order[: len(plain)]) or len(set(mapped)) != len(mapped) \
                or (lora and (lora != ["lora_kernel_a", "lora_kernel_b"]
                              or not issubclass(cls, _layers.Conv))):
            raise ValueError(f"{where}: expected weights {order} for a {cls.__name__}, found "
                             f"{names}")
        return mapped
    if count > len(order) or (count < len(order) - 1):
        raise ValueError(f"{where}: a {cls.__name__} has the weights {order} (bias optional), "
                         f"the file holds {count}")
    return order[:count]


def _structural_class(entry: _Entry) -> type | None:
    """The family of a legacy weights-only entry, from its weight names and shapes."""
    names = entry.names or []
    shapes = dict(zip(names, (a.shape for a in entry.arrays)))
    bias = shapes.get("bias")
    if set(names) in ({"depthwise_kernel", "pointwise_kernel"},
                      {"depthwise_kernel", "pointwise_kernel", "bias"}):
        rank = len(shapes["depthwise_kernel"]) - 2
        return getattr(_layers, f"SeparableConv{rank}D", None) if rank in (1, 2) else None
    if set(names) in ({"depthwise_kernel"}, {"depthwise_kernel", "bias"}):
        k = shapes["depthwise_kernel"]
        if bias is not None and bias != (k[-2] * k[-1],):
            return None
        return getattr(_layers, f"DepthwiseConv{len(k) - 2}D", None)
    if set(names) in ({"kernel"}, {"kernel", "bias"}):
        k = shapes["kernel"]
        if not 3 <= len(k) <= 5:
            return None
        # conv: filters = k[-1]; transposed: filters = k[-2]; depthwise: k[-2] * k[-1].
        if bias is not None and (len(bias) != 1 or bias[0] not in (k[-1], k[-2],
                                                                    k[-2] * k[-1])):
            return None
        return getattr(_layers, f"Conv{len(k) - 2}D")  # the params of every ConvND family
    return None


def _collect(path: Any, need_config: bool) -> tuple[dict, dict, dict | None]:
    entries, config = _read(path)
    where = f"kconv.interop: {_source(path)}"
    if need_config and config is None:
        raise ValueError(f"{where} carries no model config (a weights-only file); use "
                         "load_keras_weights, or build the layers yourself")
    found: dict[str, tuple[type, dict[str, Any]]] = {}
    skipped: dict[str, str] = {}
    for entry in entries:
        cls = _CLASSES.get(entry.class_name) if entry.class_name else None
        if cls is None and entry.class_name is None and entry.names is not None \
                and config is None:
            cls = _structural_class(entry)
        if cls is None:
            if entry.name:
                skipped[entry.name] = entry.class_name or _owner_class(entry.name, config)
            continue
        names = _kconv_names(cls, entry.names, len(entry.arrays),
                             f"{where}, layer {entry.name!r}")
        found[entry.name] = (cls, {n: a for n, a in zip(names, entry.arrays)})
    for name in [name for name, kind in skipped.items() if kind == _SPECTRAL_NORM]:
        del skipped[name]  # its own weights are training state; its layer is read or listed
    if config is not None:
        for name, layer_cfg in config.items():
            cls = _CLASSES.get(layer_cfg.get("class_name"))
            if cls is not None and cls.has_weights and name not in found:
                raise ValueError(f"{where}: the config has the {layer_cfg['class_name']} "
                                 f"layer {name!r}, but the file holds no weights for it")
            if cls is not None and not cls.has_weights and name not in found:
                found[name] = (cls, {})
        # The model's own layer order (a weights file lists its groups alphabetically).
        order = {name: i for i, name in enumerate(config)}
        found = dict(sorted(found.items(), key=lambda kv: order.get(kv[0], len(order))))
    return found, skipped, config


def _owner_class(name: str, config: Mapping[str, Any] | None) -> str:
    """The class of the layer the config lists that holds ``name`` (a layer's own
    sublayer, which the config does not list: a ``MultiHeadAttention``'s projections), or
    ``"unknown"``."""
    parts = name.split("/")
    for end in range(len(parts) - 1, 0, -1):
        owner = (config or {}).get("/".join(parts[:end]))
        if owner is not None:
            return str(owner.get("class_name"))
    return "unknown"


def _as_jax(params: Mapping[str, np.ndarray]) -> dict[str, Any]:
    import jax.numpy as jnp

    return {name: jnp.asarray(value) for name, value in params.items()}


def load_keras_weights(path: Any) -> KerasWeights:
    """Reads every convolution-family layer's weights from a Keras file.

    Args:
      path: a Keras 3 ``.weights.h5`` or ``.keras`` file (or the folder
        ``model.save(folder, zipped=False)`` writes: the ``.keras``, unzipped), or a legacy
        HDF5 ``.h5`` (Keras 2 / tf-keras, full model or weights only), or the index of
        Keras's sharded weights (``model.save_weights("m.weights.json",
        max_shard_size=...)``: its shards beside it; one shard alone is refused). The
        format is read from the file's first bytes, not its name. Nothing is written. Or a
        live Keras model, read as it is: its layers walked (a subclassed model's too), a
        LoRA layer's weights unmerged.

    Returns:
      A :class:`KerasWeights`: ``{layer_name: params}`` with kconv's (Keras 3's) weight
      names (``kernel``/``bias``; ``depthwise_kernel``/``pointwise_kernel``/``bias``);
      layers of nested models are named along the path (``"block/conv"``), and so is a
      layer inside a ``TimeDistributed`` or ``SpectralNormalization`` wrapper
      (``"td/conv"``; a weights-only Keras 3 file does not say what a wrapper holds:
      skipped; SpectralNormalization's own ``vector_u``, training state, is not read); weightless
      family layers (ZeroPadding2D, ...) map to ``{}`` where the file names their class.
      ``.skipped`` lists the layers outside the family.

    Raises:
      ValueError: the file is not HDF5, zip or a shard index, is truncated or corrupt, or a
        layer's weights do not fit its class (the message names the file and the layer).

    Example:
        >>> import tempfile, os, jax, kconv
        >>> layer = kconv.Conv1D(2, 3)
        >>> params = layer.init(jax.random.key(0), (None, 8, 1))
        >>> path = os.path.join(tempfile.mkdtemp(), "m.weights.h5")
        >>> save_keras_weights(path, {"conv": (layer, params)})
        >>> {k: v.shape for k, v in load_keras_weights(path)["conv"].items()}
        {'kernel': (3, 1, 2), 'bias': (2,)}
    """
    found, skipped, _ = _collect(path, need_config=False)
    return KerasWeights({name: _as_jax(p) for name, (_, p) in found.items()}, skipped)


def load_keras_layers(path: Any, *,
                      custom_objects: Mapping[str, Any] | None = None) -> KerasWeights:
    """Reads every convolution-family layer, config and weights, from a Keras model file.

    Args:
      path: a ``.keras`` archive (or the folder ``model.save(folder, zipped=False)``
        writes) or a legacy full-model ``.h5`` (files that carry the model config; a
        weights-only file raises), or a live Keras model (its layers walked, a subclassed
        model's too; each layer from its own ``get_config()``).
      custom_objects: keyword-only: the objects of your own the layers' configs name (see
        :func:`layer_from_keras`), as ``keras.models.load_model`` takes them.

    Returns:
      A :class:`KerasWeights` of ``{layer_name: (layer, params)}``: the kconv layer built
      from the Keras config (:func:`layer_from_keras`) and its params, each weight checked
      against the shape the config implies. Layers the model config does not list (a
      model class that writes its own config, as KerasHub backbones and Functional
      subclasses do) are in ``.skipped`` under their class, with a ``UserWarning``.
      Layers with weights Keras holds frozen (``trainable=False``) are named in
      ``.frozen``, with a ``UserWarning``: a kconv layer has no trainable flag, so keep
      their params out of the optimizer (``optax.set_to_zero`` on them, chained after it;
      see the example).

    Raises:
      ValueError: no model config, a config layer without weights, a weight whose shape
        does not match the config, or a config kconv cannot honour (naming file, layer and
        key).

    Example:
        >>> import warnings, jax, keras, optax
        >>> from kconv.interop import load_keras_layers
        >>> base = keras.layers.Conv1D(4, 3, name="base")
        >>> base.trainable = False  # fine-tune the head only
        >>> model = keras.Sequential([keras.Input((8, 1)), base,
        ...                           keras.layers.Conv1D(2, 3, name="head")])
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # the warning naming the frozen layer
        ...     ported = load_keras_layers(model)
        >>> list(ported), ported.frozen
        (['base', 'head'], ['base'])
        >>> params = {name: p for name, (layer, p) in ported.items()}
        >>> frozen = {name: jax.tree.map(lambda _: name in ported.frozen, p)
        ...           for name, p in params.items()}
        >>> tx = optax.chain(optax.sgd(0.1), optax.masked(optax.set_to_zero(), frozen))
        >>> grads = jax.tree.map(jax.numpy.ones_like, params)
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> bool((updates["base"]["kernel"] == 0).all()), bool((updates["head"]["bias"] != 0).all())
        (True, True)
    """
    found, skipped, config = _collect(path, need_config=True)
    where = f"kconv.interop: {_source(path)}"
    # A model class with a get_config of its own (every KerasHub backbone; a Functional
    # subclass) writes its arguments, not its layers: their weights are in the file, their
    # configs are not. Listed, never guessed; the live model has them.
    unlisted = [name for name in found if name not in config]
    for name in unlisted:
        skipped[name] = found.pop(name)[0].__name__
    if unlisted:
        warnings.warn(
            f"{where}: the model config does not list the layers {unlisted} (a model class "
            f"that writes its own config, as KerasHub backbones and Functional subclasses "
            f"do), so their configs are unknown; they are in .skipped. Build the model in "
            f"Keras (e.g. keras_hub.models.Backbone.from_preset) and pass it to "
            f"load_keras_layers, or read their weights alone with load_keras_weights",
            stacklevel=2)
    out = {}
    for name, (_, params) in found.items():
        try:
            layer = _layer_from_keras(config[name], custom_objects, warn_frozen=False)
        except (ValueError, TypeError) as e:
            raise type(e)(f"{where}, layer {name!r}: {e}") from e
        if getattr(layer, "lora_rank", None):
            # Keras saves a LoRA layer's merged kernel and, loading it, zeroes the LoRA
            # weights (Conv.load_own_variables): the same here.
            in_channels = layer._param_in_channels(params)
            for lora_name, weight in layer.weights_for_channels(in_channels).items():
                params.setdefault(lora_name, np.zeros(weight.shape, layer.weight_dtype(weight)))
        layer._check_weights(params, f"{where}, layer {name!r}")
        if params:
            # Keras assigns a file's arrays into variables of the layer's weight dtypes:
            # a LoRA layer's merged kernel is saved in the compute dtype (bfloat16 under
            # "mixed_bfloat16") and loaded as a float32 variable.
            own = layer.weights_for_channels(layer._param_in_channels(params))
            params = {n: np.asarray(v).astype(layer.weight_dtype(own[n]), copy=False)
                      for n, v in params.items()}
        out[name] = (layer, _as_jax(params))
    frozen = _frozen(path, config, [name for name, (_, params) in out.items() if params])
    if frozen:
        warnings.warn(
            f"{where}: Keras holds the layers {frozen} frozen (trainable=False); kconv's "
            f"layers have no trainable flag: keep their params where they are (optax."
            f"set_to_zero on them, chained after the optimizer; they are listed in .frozen)",
            stacklevel=2)
    return KerasWeights(out, skipped, frozen)


def _frozen(path: Any, config: Mapping[str, Any], names: list[str]) -> list[str]:
    """Those of ``names`` whose weights Keras does not train: a live model's, those in
    none of its ``trainable_weights``; a file's, a layer whose config says ``trainable:
    false``. (Keras 3 collects a model's trainable weights from each layer's own flag; a
    model's ``trainable = False`` is written into each of its layers' flags too.)"""
    if _is_live_model(path):
        trained = {id(v) for v in path.trainable_weights}
        layers = dict(_live_layers(path.layers))
        return [name for name in names
                if not any(id(v) in trained for v in layers[name].weights)]
    return [name for name in names
            if isinstance(inner := config[name].get("config"), Mapping)
            and inner.get("trainable") is False]


# --- writing --------------------------------------------------------------------------

def to_keras_weights(layer: _layers.Layer, params: Mapping[str, Any]) -> list[np.ndarray]:
    """The list ``keras_layer.set_weights`` takes for these params (Keras's order).

    For a LoRA layer that is ``kernel, bias, lora_kernel_a, lora_kernel_b``, as Keras's
    ``get_weights`` of a layer after ``enable_lora``.

    Example:
        >>> import jax, kconv
        >>> layer = kconv.SeparableConv1D(4, 3)
        >>> params = layer.init(jax.random.key(0), (None, 8, 2))
        >>> [w.shape for w in to_keras_weights(layer, params)]
        [(3, 2, 1), (1, 2, 4), (4,)]
    """
    layer._check_weights(params, f"kconv.interop.to_keras_weights({type(layer).__name__})")
    return [np.asarray(params[name]) for name in (layer._names() if layer.has_weights else [])]


def params_from_keras(layer: _layers.Layer, weights: Any) -> dict[str, Any]:
    """The params of ``layer`` from Keras's ``get_weights()`` list (the inverse of
    :func:`to_keras_weights`): no transposition, Keras's layouts are kconv's.

    Args:
      layer: the kconv layer, e.g. ``layer_from_keras(keras_layer)``.
      weights: the list ``keras_layer.get_weights()`` returns -- arrays in Keras's order:
        the layer's weights as ``init`` names them (``kernel, bias``; ``depthwise_kernel,
        pointwise_kernel, bias``), then ``lora_kernel_a, lora_kernel_b`` after
        ``enable_lora`` -- or the live Keras layer itself (its ``get_weights()`` is read;
        a ``TimeDistributed`` or ``SpectralNormalization`` wrapper's: its layer's).

    Returns:
      ``{weight_name: jax array}``, checked against the layer's config (the count, and
      each shape for the input channels the kernel implies).

    Raises:
      TypeError: ``weights`` is not a list of arrays (a dict is already params).
      ValueError: the count or a shape does not fit the layer's config.

    Example:
        >>> import numpy as np, kconv
        >>> layer = kconv.Conv1D(4, 3)
        >>> weights = [np.ones((3, 2, 4), np.float32), np.zeros(4, np.float32)]
        >>> {name: p.shape for name, p in params_from_keras(layer, weights).items()}
        {'kernel': (3, 2, 4), 'bias': (4,)}
    """
    where = f"kconv.interop.params_from_keras({type(layer).__name__})"
    if type(weights).__name__ in _WRAPPERS and hasattr(weights, "layer"):
        weights = weights.layer  # the wrapped layer's weights are the kconv layer's
    if hasattr(weights, "get_weights"):
        weights = weights.get_weights()
    if isinstance(weights, Mapping) or not isinstance(weights, (list, tuple)):
        raise TypeError(f"{where}: weights must be the list keras_layer.get_weights() "
                        f"returns, got a {type(weights).__name__}"
                        + (" (a dict is params already: pass it to the layer)"
                           if isinstance(weights, Mapping) else ""))
    names = layer._names() if layer.has_weights else []
    if len(weights) != len(names):
        raise ValueError(f"{where}: the layer takes {len(names)} weights {names} "
                         f"(use_bias={getattr(layer, 'use_bias', None)}), got a list of "
                         f"{len(weights)} with shapes {[np.shape(w) for w in weights]}")
    params = {name: np.asarray(w) for name, w in zip(names, weights)}
    layer._check_weights(params, where)
    return _as_jax(params)


def save_keras_weights(path: Any, named_params: Mapping[str, Any], *,
                       containers: Mapping[str, str] | None = None) -> None:
    """Writes a Keras 3 ``.weights.h5`` that Keras's ``model.load_weights`` reads.

    Args:
      path: where to write; must end in ``.weights.h5`` (Keras picks its reader by name).
        Written atomically: to a temporary file in the same folder, then renamed into place,
        so an error or a kill mid-write never leaves a partial file where a good one was.
      named_params: ``{layer_name: (layer, params)}`` (what :func:`load_keras_layers`
        returns), in the order of the equivalent Keras model's layers. A LoRA layer is
        written as Keras writes one: its merged kernel and bias. Keras addresses
        weights by position and class (the second Conv2D is ``conv2d_1``), so the order and
        the classes must be the Keras model's; layers of other classes between them do not
        matter to the names. Their weights are not in the file: for a model that has some
        (BatchNormalization, Dense), Keras's strict ``model.load_weights(path)`` sets the
        convolutions' and then raises that it found no weights for those; load with
        ``skip_mismatch=True``. Layers of nested models are named along the path
        (``"block/conv"``).
      containers: for nested names, the Keras class of each nested model by its path
        (``{"block": "Sequential"}``; ``"Functional"`` for a ``keras.Model(inputs,
        outputs)``), which Keras's file layout names them by; ``"TimeDistributed"`` or
        ``"SpectralNormalization"`` for a wrapper of one layer (``{"td":
        "TimeDistributed"}`` with the layer ``"td/conv"``). A SpectralNormalization's own
        weights are written as Keras lays them out: the kernel, and the power iteration's
        ``vector_u`` at its fixed point (the kernel's leading right singular vector, so
        that Keras's next training step divides by the kernel's spectral norm).

    Example:
        >>> import tempfile, os, jax, kconv
        >>> layers = [kconv.Conv2D(4, 3), kconv.Conv2D(2, 1)]
        >>> p = [layers[0].init(jax.random.key(0), (None, 8, 8, 1)),
        ...      layers[1].init(jax.random.key(1), (None, 6, 6, 4))]
        >>> path = os.path.join(tempfile.mkdtemp(), "model.weights.h5")
        >>> save_keras_weights(path, {"a": (layers[0], p[0]), "b": (layers[1], p[1])})
        >>> sorted(load_keras_weights(path))
        ['a', 'b']
    """
    h5py = _h5py()
    path = os.fspath(path)
    if not path.endswith(".weights.h5"):
        raise ValueError(f"kconv.interop.save_keras_weights: the path must end in "
                         f"'.weights.h5' (Keras's load_weights picks its format by name), "
                         f"got {path!r}")
    containers = dict(containers or {})
    # The model as a tree: {name: (layer, arrays)} leaves, {name: _Container} subtrees.
    root = _Container("Functional")
    for name, item in named_params.items():
        where = f"kconv.interop.save_keras_weights: layer {name!r}"
        if not (isinstance(item, tuple) and len(item) == 2
                and isinstance(item[0], _layers.Layer)):
            raise TypeError(f"{where}: expected a (kconv layer, params) pair, got "
                            f"{type(item).__name__}")
        layer, params = item
        if getattr(layer, "lora_rank", None):
            # Keras's weight files hold a LoRA layer's merged kernel (save_own_variables).
            layer._check_weights(params, where)
            layer, params = dataclasses.replace(layer, lora_rank=None, lora_alpha=None), \
                layer.merge_lora(params)
        *outer, leaf = name.split("/")
        node = root
        for depth in range(len(outer)):
            prefix = "/".join(outer[: depth + 1])
            if prefix not in containers:
                raise ValueError(f"{where}: {prefix!r} is a nested model; pass its Keras "
                                 f"class: containers={{{prefix!r}: 'Sequential', "
                                 f"'Functional' or 'TimeDistributed'}}")
            if node.class_name == _SPECTRAL_NORM:
                raise ValueError(f"{where}: {'/'.join(outer[:depth])!r} is a "
                                 f"SpectralNormalization, which wraps a layer with a kernel, "
                                 f"not the nested model {prefix!r}")
            node = node.children.setdefault(outer[depth], _Container(containers[prefix]))
        if node.class_name in _WRAPPERS and node.children:
            raise ValueError(f"{where}: {'/'.join(outer)!r} is a {node.class_name}, which "
                             f"wraps one layer; it already holds {next(iter(node.children))!r}")
        weight_names = layer._names() if layer.has_weights else []
        if node.class_name == _SPECTRAL_NORM and "kernel" not in weight_names:
            # Keras's SpectralNormalization normalizes a layer's `kernel` (refusing others).
            raise ValueError(f"{where}: {'/'.join(outer)!r} is a SpectralNormalization, "
                             f"which wraps a layer with a kernel; a {type(layer).__name__} "
                             f"has the weights {weight_names}")
        node.children[leaf] = (layer, to_keras_weights(layer, params))
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".kconv-", suffix=".weights.h5.tmp", dir=folder)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.create_group("vars")
            _write_container(f, root)
            f.flush()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


class _Container:
    """A (nested) Keras model while writing: its class and its layers, in order."""

    def __init__(self, class_name: str):
        self.class_name = class_name
        self.children: dict[str, Any] = {}


def _write_container(group: Any, container: _Container) -> None:
    """Writes ``container``'s layers under ``group/layers`` as Keras 3 lays them out (a
    wrapper's one layer under ``group/layer``)."""
    if container.class_name in _WRAPPERS:
        ((name, child),) = container.children.items()
        if container.class_name == _SPECTRAL_NORM:
            kernel = child[1][0]  # Keras's order: kernel first
            for i, array in enumerate((kernel, _spectral_vector(kernel))):
                _write_array(group["vars"], str(i), array)
        _write_layer(group.create_group("layer"), name, child)
        return
    layers_group = group.create_group("layers")
    used: dict[str, int] = {}
    for name, child in container.children.items():
        class_name = child.class_name if isinstance(child, _Container) \
            else type(child[0]).__name__
        snake = _snake(class_name)
        # keras.src.saving.saving_lib._get_unique_name: conv2d, conv2d_1, conv2d_2, ...
        count = used.get(snake, 0)
        used[snake] = count + 1
        _write_layer(layers_group.create_group(snake if count == 0 else f"{snake}_{count}"),
                     name, child)


def _spectral_vector(kernel: np.ndarray) -> np.ndarray:
    """SpectralNormalization's ``vector_u`` (shape ``(1, kernel.shape[-1])``) at the
    fixed point of Keras's power iteration on the kernel as a ``(-1, out)`` matrix: its
    leading right singular vector (the sign does not matter: sigma = v W uᵀ is even in u)."""
    matrix = np.asarray(kernel, np.float64).reshape(-1, kernel.shape[-1])
    _, _, vt = np.linalg.svd(matrix, full_matrices=False)
    return vt[:1].astype(kernel.dtype)


def _write_layer(entry: Any, name: str, child: Any) -> None:
    """Writes one layer (or nested model) into its group ``entry``."""
    vars_group = entry.create_group("vars")
    vars_group.attrs["name"] = name
    if isinstance(child, _Container):
        _write_container(entry, child)
        return
    for i, array in enumerate(child[1]):
        _write_array(vars_group, str(i), array)


def _write_array(group: Any, key: str, array: Any) -> None:
    """One weight, as Keras's ``H5IOStore`` writes it: bfloat16 (no HDF5 type) as its
    2-byte values, marked ``attrs["dtype"] = "bfloat16"``, which Keras reads back."""
    array = np.asarray(array)
    dataset = group.create_dataset(key, data=array)
    if array.dtype.name == "bfloat16":
        dataset.attrs["dtype"] = "bfloat16"
