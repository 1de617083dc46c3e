"""kconv.interop against real Keras files: Keras 3 files written here by Keras itself
(``save_weights``, ``save`` to ``.keras`` and to legacy ``.h5``), and tf-keras legacy HDF5
fixtures (tests/fixtures/make_tf_keras_fixtures.py says how they were made). Round trips
Keras -> kconv -> Keras must give identical outputs; corrupt and hostile files must fail
with errors that name the file and the layer, and loading must write nothing."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings
import zipfile

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kconv
from kconv import interop

import keras  # noqa: E402  (conftest.py has set KERAS_BACKEND=jax)
L = keras.layers
FIXTURES = pathlib.Path(__file__).parent / "fixtures"
TOL = dict(rtol=1e-5, atol=1e-5)


# --- Keras 3 models covering the whole family ----------------------------------------

def _model_1d():
    inp = keras.Input((16, 3), name="signal")
    x = L.Conv1D(4, 3, padding="causal", dilation_rate=2, activation="relu", name="causal")(inp)
    x = L.ZeroPadding1D((1, 2), name="pad1")(x)
    x = L.SeparableConv1D(5, 3, depth_multiplier=2, name="sep1")(x)
    x = L.DepthwiseConv1D(3, depth_multiplier=2, padding="same", name="dw1")(x)
    # Keras's activation layers as activations: their configs are layer dicts.
    x = L.Conv1DTranspose(3, 3, strides=2, output_padding=1, activation=L.LeakyReLU(0.2),
                          name="tr1")(x)
    x = L.Cropping1D((2, 1), name="crop1")(x)
    x = L.UpSampling1D(2, name="up1")(x)
    x = L.Conv1D(2, 1, use_bias=False, name="conv1d_last")(x)
    return keras.Model(inp, x, name="m1d")


def _model_2d():
    block = keras.Sequential([keras.Input((9, 9, 4)),
                              L.Conv2D(4, 3, padding="same", groups=2, name="grouped"),
                              L.DepthwiseConv2D(3, depth_multiplier=2, name="dw2")],
                             name="block")
    inp = keras.Input((10, 10, 2), name="image")
    x = L.ZeroPadding2D(((1, 0), (0, 1)), name="pad2")(inp)
    x = L.Conv2D(4, 3, strides=1, activation="tanh", name="conv")(x)
    x = block(x)
    x = L.SeparableConv2D(5, 3, padding="same", name="sep2",
                          activation=L.ReLU(max_value=1.0, negative_slope=0.1))(x)
    x = L.Conv2DTranspose(3, 3, strides=2, padding="same", use_bias=False, name="tr2")(x)
    x = L.UpSampling2D(2, interpolation="bilinear", name="up2")(x)
    x = L.Cropping2D(((2, 1), (1, 2)), name="crop2")(x)
    x = L.Conv2D(2, 1, name="head_conv")(x)
    return keras.Model(inp, x, name="m2d")


def _model_3d():
    inp = keras.Input((6, 6, 6, 2), name="volume")
    x = L.Conv3D(3, 2, padding="same", activation=L.ELU(0.5), name="c3")(inp)
    x = L.ZeroPadding3D(((1, 0), 1, (0, 1)), name="pad3")(x)
    x = L.Conv3DTranspose(2, 2, strides=(1, 2, 1), name="tr3")(x)
    x = L.Cropping3D(1, name="crop3")(x)
    x = L.UpSampling3D((1, 2, 1), name="up3")(x)
    return keras.Model(inp, x, name="m3d")


def _model_sequential():
    """The commonest Keras model, a top-level Sequential (Keras 3's legacy HDF5 writer puts
    its name in the weights' paths: ``seq/first/kernel``), with a Sequential inside."""
    block = keras.Sequential([keras.Input((8, 8, 4)),
                              L.Conv2D(4, 3, padding="same", name="inner")], name="block")
    return keras.Sequential([keras.Input((10, 10, 2)),
                             L.Conv2D(4, 3, activation="relu", name="first"), block,
                             L.SeparableConv2D(3, 3, name="sep"), L.UpSampling2D(2, name="up"),
                             L.Conv2DTranspose(2, 3, strides=2, name="tr",
                                               activation=L.Softmax(axis=(1, 2)))],
                            name="seq")


MODELS = {"1d": (_model_1d, (2, 16, 3)), "2d": (_model_2d, (2, 10, 10, 2)),
          "3d": (_model_3d, (2, 6, 6, 6, 2)), "seq": (_model_sequential, (2, 10, 10, 2))}


def _randomize(model, seed=0):
    """Random weights everywhere (biases included), so nothing passes by being zero."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype("float32") * 0.5
                       for w in model.get_weights()])


def _keras_model(kind, seed=0):
    make, shape = MODELS[kind]
    keras.utils.set_random_seed(seed)
    model = make()
    _randomize(model, seed)
    x = np.random.default_rng(seed + 100).normal(size=shape).astype("float32")
    return model, x


def _family_layers(model, prefix=""):
    """``[(path name, keras layer)]`` of the conv-family layers, nested models walked."""
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out += _family_layers(layer, f"{prefix}{layer.name}/")
        elif type(layer).__name__ in kconv.layers.LAYER_NAMES:
            out.append((f"{prefix}{layer.name}", layer))
    return out


def _run_chain(named, order, x):
    """Runs the kconv layers ``named[name] = (layer, params)`` in ``order`` on ``x``."""
    for name in order:
        layer, params = named[name]
        x = layer(params, x)
    return x


_SAVED = {}


def _saved(kind, tmp_path_factory):
    """The Keras 3 model of ``kind``, an input, and the three files Keras writes for it."""
    if kind not in _SAVED:
        folder = tmp_path_factory.mktemp(f"keras3-{kind}")
        model, x = _keras_model(kind)
        paths = {"weights": folder / "model.weights.h5", "keras": folder / "model.keras",
                 "legacy": folder / "legacy.h5", "unzipped": folder / "unzipped"}
        model.save_weights(paths["weights"])
        model.save(paths["keras"])
        model.save(paths["unzipped"], zipped=False)  # a folder: the .keras, unzipped
        model.save(paths["legacy"])  # Keras 3's legacy HDF5 writer
        _SAVED[kind] = kind, model, x, paths
    return _SAVED[kind]


@pytest.fixture(scope="module", params=sorted(MODELS))
def saved(request, tmp_path_factory):
    return _saved(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def saved_1d(tmp_path_factory):
    return _saved("1d", tmp_path_factory)


# --- reading Keras 3 files -------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["keras", "legacy", "unzipped"])
def test_load_keras_layers_reproduces_keras_outputs(saved, fmt):
    kind, model, x, paths = saved
    named = interop.load_keras_layers(paths[fmt])
    order = [name for name, _ in _family_layers(model)]
    assert list(named) == order  # the model's layer order
    y = _run_chain(named, order, x)
    np.testing.assert_allclose(y, np.asarray(model(x)), **TOL)
    for name, keras_layer in _family_layers(model):
        layer, params = named[name]
        assert layer == interop.layer_from_keras(keras_layer)
        for ours, theirs in zip(interop.to_keras_weights(layer, params),
                                keras_layer.get_weights()):
            np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("fmt", ["weights", "keras", "legacy", "unzipped"])
def test_load_keras_weights_gives_every_family_layer(saved, fmt):
    kind, model, x, paths = saved
    weights = interop.load_keras_weights(paths[fmt])
    for name, keras_layer in _family_layers(model):
        layer = interop.layer_from_keras(keras_layer)
        if not layer.has_weights:
            assert weights.get(name, {}) == {}
            continue
        params = weights[name]
        got = interop.to_keras_weights(layer, params)
        assert len(got) == len(keras_layer.get_weights())
        for ours, theirs in zip(got, keras_layer.get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    assert all(not name.startswith(("signal", "image", "volume")) for name in weights)


def test_weights_file_names_and_skips(tmp_path):
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(2, 3, name="first")(inp)
    x = L.Conv2D(2, 3, name="second")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(2, name="dense_head")(x)
    model = keras.Model(inp, x)
    model.save_weights(tmp_path / "m.weights.h5")
    weights = interop.load_keras_weights(tmp_path / "m.weights.h5")
    assert sorted(weights) == ["first", "second"]
    assert "dense_head" in weights.skipped and "flat" in weights.skipped


def test_load_keras_layers_names_frozen_layers(tmp_path):
    # A layer Keras holds frozen (trainable=False: its own, or a nested model's, which Keras
    # writes into its layers' configs too) was ported with no word: a plain-JAX loop then
    # trained what Keras leaves alone. Listed in .frozen, with a warning; live and files.
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.Input((8, 2)), L.Conv1D(2, 3, name="a"),
                              L.Conv1D(2, 1, name="b")], name="inner")
    frozen = L.Conv1D(2, 3, padding="same", name="frozen")
    # Weightless layers are never listed: a live model's trains none of their (no)
    # weights (they were all listed), a file's flag on one says nothing.
    model = keras.Sequential([keras.Input((8, 2)), frozen, inner,
                              L.ZeroPadding1D(1, name="pad"),
                              L.UpSampling1D(2, name="up", trainable=False),
                              L.Conv1D(2, 3, name="head")])
    frozen.trainable = False
    inner.trainable = False  # Keras writes it into a's and b's flags too
    inner.get_layer("b").trainable = True  # Keras 3 trains it again: its own flag counts
    assert [v.path for v in model.trainable_weights] == [
        "inner/b/kernel", "inner/b/bias", "sequential/head/kernel", "sequential/head/bias"]
    model.save(tmp_path / "m.keras")
    model.save(tmp_path / "m.h5")
    for source in (model, tmp_path / "m.keras", tmp_path / "m.h5"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ported = interop.load_keras_layers(source)
        assert [str(w.message) for w in caught if w.category is UserWarning] == [
            f"kconv.interop: {interop.keras._source(source)}: Keras holds the layers "
            f"['frozen', 'inner/a'] frozen (trainable=False); kconv's layers have no "
            f"trainable flag: keep their params where they are (optax.set_to_zero on them, "
            f"chained after the optimizer; they are listed in .frozen)"]
        assert list(ported) == ["frozen", "inner/a", "inner/b", "pad", "up", "head"]
        assert ported.frozen == ["frozen", "inner/a"]
    # One layer: layer_from_keras warns of it too (live or its config); once, not per layer
    # in load_keras_layers (checked above: one warning each).
    for source in (frozen, frozen.get_config(), {"class_name": "TimeDistributed", "config": {
            "layer": {"class_name": "Conv1D", "config": frozen.get_config()}}}):
        with pytest.warns(UserWarning, match=r"layer_from_keras: Keras holds the Conv1D "
                                             r"'frozen' frozen \(trainable=False\)"):
            assert interop.layer_from_keras(source) == interop.layer_from_keras(
                {**frozen.get_config(), "trainable": True})
    model.get_layer("inner").trainable = True
    model.get_layer("frozen").trainable = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert interop.load_keras_layers(model).frozen == []
        interop.layer_from_keras(L.ZeroPadding1D(1, trainable=False))  # nothing to train


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_keras3_roundtrip_through_kconv_and_back(kind, tmp_path_factory, tmp_path):
    kind, model, x, paths = _saved(kind, tmp_path_factory)
    named = interop.load_keras_layers(paths["keras"])
    out = tmp_path / "back.weights.h5"
    interop.save_keras_weights(out, named, containers={"block": "Sequential"})
    keras.utils.set_random_seed(123)
    fresh = MODELS[kind][0]()
    fresh.load_weights(out)
    np.testing.assert_array_equal(np.asarray(fresh(x)), np.asarray(model(x)))
    # ... and set_weights with to_keras_weights, layer by layer.
    keras.utils.set_random_seed(321)
    other = MODELS[kind][0]()
    for name, keras_layer in _family_layers(other):
        keras_layer.set_weights(interop.to_keras_weights(*named[name]))
    np.testing.assert_array_equal(np.asarray(other(x)), np.asarray(model(x)))


def test_saved_weights_into_a_model_with_other_weighted_layers(tmp_path):
    # The file has the convolutions' weights only: Keras's strict load_weights sets them and
    # then raises for the BatchNormalization's (as the README says); skip_mismatch=True
    # loads them and leaves the BatchNormalization as it was.
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 3, name="c1")(L.ZeroPadding2D(1, name="pad")(inp))
    h = L.Conv2D(2, 3, name="c2")(L.BatchNormalization(name="bn")(h))
    model = keras.Model(inp, h)
    named = interop.load_keras_layers(model)
    assert list(named) == ["pad", "c1", "c2"] and named.frozen == []
    changed = {name: (layer, jax.tree.map(lambda w: w + 1.0, params))
               for name, (layer, params) in named.items()}
    interop.save_keras_weights(tmp_path / "m.weights.h5", changed)
    bn = [np.asarray(w) for w in model.get_layer("bn").get_weights()]
    with pytest.raises(ValueError, match="bn"):
        model.load_weights(tmp_path / "m.weights.h5")
    model.load_weights(tmp_path / "m.weights.h5", skip_mismatch=True)
    for name in ("c1", "c2"):
        np.testing.assert_array_equal(model.get_layer(name).get_weights()[0],
                                      np.asarray(changed[name][1]["kernel"]))
    for got, want in zip(model.get_layer("bn").get_weights(), bn):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_a_live_model_reads_as_its_files(kind, tmp_path_factory):
    """load_keras_layers / load_keras_weights of the model in memory: what its file gives
    (the same layers, names, order, configs and weights)."""
    kind, model, x, paths = _saved(kind, tmp_path_factory)
    live, from_file = interop.load_keras_layers(model), interop.load_keras_layers(paths["keras"])
    assert list(live) == list(from_file)
    for name, (layer, params) in live.items():
        assert layer == from_file[name][0]
        jax.tree.map(np.testing.assert_array_equal, params, from_file[name][1])
    weights = interop.load_keras_weights(model)
    assert list(weights) == list(interop.load_keras_weights(paths["keras"]))
    np.testing.assert_allclose(_run_chain(live, list(live), x), np.asarray(model(x)), **TOL)


def test_a_live_subclassed_model_with_lora_and_time_distributed():
    """What no file can say: a subclassed model's layers (its config does not list them),
    and a LoRA layer's unmerged weights, read from the model in memory."""
    class Net(keras.Model):
        def __init__(self):
            super().__init__(name="net")
            self.td = L.TimeDistributed(L.Conv2D(3, 3, padding="same", name="frame"),
                                        name="td")
            self.tuned = L.Conv3D(2, 3, lora_rank=2, name="tuned")
            self.head = L.Dense(2, name="head")

        def call(self, x):
            return self.head(self.tuned(self.td(x)))

    model = Net()
    x = np.random.default_rng(5).normal(size=(2, 4, 8, 8, 2)).astype("float32")
    model(x)
    _randomize(model, 5)  # the LoRA weights too: not zero
    named = interop.load_keras_layers(model)
    assert list(named) == ["td/frame", "tuned"] and named.skipped == {"head": "Dense"}
    tuned, params = named["tuned"]
    assert tuned.lora_rank == 2 and float(np.abs(params["lora_kernel_b"]).max()) > 0
    inner = model.tuned(model.td(x))
    np.testing.assert_allclose(_run_chain(named, ["td/frame", "tuned"], x), np.asarray(inner),
                               **TOL)
    with pytest.raises(ValueError, match=r"the Keras model 'net': its layer 'td/frame' has no "
                                         r"weights yet \(not built\): call the model once"):
        interop.load_keras_weights(Net())


@keras.saving.register_keras_serializable("kconv_tests")
class _Backbone(keras.Model):
    """A Functional subclass with a get_config of its own (its arguments, not its
    layers), as every KerasHub backbone is."""

    def __init__(self, filters=4, **kwargs):
        inputs = keras.Input((8, 8, 3))
        x = L.Conv2D(filters, 3, padding="same", name="stem")(inputs)
        x = L.BatchNormalization(name="bn")(x)
        outputs = L.SeparableConv2D(2, 3, name="sep")(x)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.filters = filters

    def get_config(self):
        return {"filters": self.filters, "name": self.name, "trainable": self.trainable}


def test_a_model_whose_config_does_not_list_its_layers(tmp_path):
    """A KerasHub-style model's file (.keras, or a preset folder: config.json with the
    class's own arguments and model.weights.h5) has the weights but not the layers'
    configs: load_keras_layers skips and lists them with a warning naming the way round
    (it raised a bare KeyError), load_keras_weights reads them, the live model gives all."""
    keras.utils.set_random_seed(4)
    model = _Backbone(name="backbone")
    _randomize(model, 4)
    x = np.random.default_rng(4).normal(size=(2, 8, 8, 3)).astype("float32")
    model.save(tmp_path / "backbone.keras")
    model.save(tmp_path / "preset", zipped=False)
    for path in (tmp_path / "backbone.keras", tmp_path / "preset"):
        with pytest.warns(UserWarning, match=r"does not list the layers \['stem', 'sep'\].*"
                                             r"pass it to load_keras_layers"):
            named = interop.load_keras_layers(path)
        assert dict(named) == {}
        assert {k: named.skipped[k] for k in ("stem", "sep")} == {
            "stem": "Conv2D", "sep": "SeparableConv2D"}
        weights = interop.load_keras_weights(path)
        for name in ("stem", "sep"):
            keras_layer = model.get_layer(name)
            layer = interop.layer_from_keras(keras_layer)
            for ours, theirs in zip(interop.to_keras_weights(layer, weights[name]),
                                    keras_layer.get_weights(), strict=True):
                np.testing.assert_array_equal(ours, theirs)
    live = interop.load_keras_layers(model)
    assert list(live) == ["stem", "sep"]
    stem, params = live["stem"]
    np.testing.assert_allclose(stem(params, x), np.asarray(model.get_layer("stem")(x)), **TOL)


def _model_time_distributed(head=True):
    inp = keras.Input((3, 8, 8, 2), name="frames")
    x = L.TimeDistributed(L.Conv2D(4, 3, padding="same", activation="relu",
                                   name="frame_conv"), name="td_conv")(inp)
    x = L.TimeDistributed(L.Conv2DTranspose(2, 3, strides=2, padding="same",
                                            name="frame_up"), name="td_up")(x)
    x = L.Conv3D(2, 3, padding="same", name="c3")(x)
    if not head:
        return keras.Model(inp, x)
    y = L.TimeDistributed(L.Dense(3, name="frame_dense"), name="td_dense")(x)
    return keras.Model(inp, [x, y])


def test_time_distributed_layers(tmp_path):
    """A conv-family layer inside TimeDistributed (video models) is read as the kconv
    layer, named along the path (``"td_conv/frame_conv"``): over ``(batch, time, ...)``
    the kconv layer itself is TimeDistributed's, taking the extra leading dim. A wrapped
    layer outside the family is skipped and listed; a weights-only file, which does not
    say what a wrapper holds, lists them all. Written back with
    ``containers={"td_conv": "TimeDistributed", ...}``, Keras reads the weights."""
    keras.utils.set_random_seed(7)
    model = _model_time_distributed()
    _randomize(model, 7)
    x = np.random.default_rng(7).normal(size=(2, 3, 8, 8, 2)).astype("float32")
    want = np.asarray(model(x)[0])
    order = ["td_conv/frame_conv", "td_up/frame_up", "c3"]
    paths = {"keras": tmp_path / "td.keras", "legacy": tmp_path / "td.h5",
             "weights": tmp_path / "td.weights.h5"}
    model.save(paths["keras"])
    model.save(paths["legacy"])
    model.save_weights(paths["weights"])
    for fmt in ("keras", "legacy"):
        named = interop.load_keras_layers(paths[fmt])
        assert list(named) == order, fmt
        for wrapper, name in (("td_conv", "frame_conv"), ("td_up", "frame_up")):
            assert interop.layer_from_keras(model.get_layer(wrapper)) == named[
                f"{wrapper}/{name}"][0]
        assert named.skipped.get("td_dense/frame_dense") == "Dense", named.skipped
        np.testing.assert_allclose(_run_chain(named, order, x), want, **TOL)
        weights = interop.load_keras_weights(paths[fmt])
        assert list(weights) == order
    weights = interop.load_keras_weights(paths["weights"])
    assert "c3" in weights
    assert {"td_conv/frame_conv", "td_up/frame_up"} <= set(weights.skipped)
    # Back to Keras: a wrapper's one layer under its "layer" group.
    out = tmp_path / "back.weights.h5"
    containers = {"td_conv": "TimeDistributed", "td_up": "TimeDistributed"}
    interop.save_keras_weights(out, named, containers=containers)
    keras.utils.set_random_seed(8)
    fresh = _model_time_distributed(head=False)
    fresh.load_weights(out)
    np.testing.assert_array_equal(np.asarray(fresh(x)), want)
    with pytest.raises(ValueError, match=r"'td_conv' is a TimeDistributed, which wraps one "
                                         r"layer; it already holds 'frame_conv'"):
        interop.save_keras_weights(tmp_path / "two.weights.h5", {
            **named, "td_conv/second": named["c3"]}, containers=containers)


def _model_spectral_norm(head=True):
    inp = keras.Input((8, 8, 3))
    x = L.SpectralNormalization(L.Conv2D(4, 3, padding="same", activation="relu",
                                         name="c"), name="sn_c")(inp)
    x = L.SpectralNormalization(L.Conv2DTranspose(3, 3, strides=2, padding="same",
                                                  name="up"), name="sn_up")(x)
    x = L.SpectralNormalization(L.DepthwiseConv2D(3, depth_multiplier=2, name="dw"),
                                power_iterations=2, name="sn_dw")(x)
    x = L.Conv2D(2, 1, name="plain")(x)
    if not head:
        return keras.Model(inp, x)
    y = L.SpectralNormalization(L.Dense(3, name="d"), name="sn_dense")(x)
    return keras.Model(inp, [x, y])


def test_spectral_normalization_layers(tmp_path):
    """SpectralNormalization (GAN discriminators): at inference Keras calls the wrapped layer
    with its stored kernel, which training normalized in place, so the kconv layer is the
    wrapped one, named along the path (``"sn_c/c"``), from every file kind that says what the
    wrapper holds and from the live model; the wrapper's own weights (the kernel again and
    the power iteration's vector_u) are neither params nor listed as skipped. Written back
    with ``containers={"sn_c": "SpectralNormalization", ...}``, Keras reads the weights, with
    a vector_u from which its power iteration gives the kernel's spectral norm."""
    keras.utils.set_random_seed(11)
    model = _model_spectral_norm()
    _randomize(model, 11)
    x = np.random.default_rng(11).normal(size=(4, 8, 8, 3)).astype("float32")
    # A training step: Keras normalizes each wrapped kernel in place and moves vector_u.
    model.compile("sgd", "mse")
    model.train_on_batch(x, [np.zeros((4, 14, 14, 2)), np.zeros((4, 14, 14, 3))])
    want = np.asarray(model(x)[0])
    order = ["sn_c/c", "sn_up/up", "sn_dw/dw", "plain"]
    paths = {"keras": tmp_path / "sn.keras", "legacy": tmp_path / "sn.h5",
             "weights": tmp_path / "sn.weights.h5"}
    model.save(paths["keras"])
    model.save(paths["legacy"])
    model.save_weights(paths["weights"])
    for source in ("keras", "legacy", "live"):
        named = interop.load_keras_layers(model if source == "live" else paths[source])
        assert list(named) == order, source
        assert "sn_dense/d" in named.skipped and not {"sn_c", "sn_up", "sn_dw"} & set(
            named.skipped), (source, named.skipped)
        np.testing.assert_allclose(_run_chain(named, order, x), want, **TOL)
    for wrapper, name in (("sn_c", "c"), ("sn_up", "up"), ("sn_dw", "dw")):
        keras_wrapper = model.get_layer(wrapper)
        layer, params = named[f"{wrapper}/{name}"]
        assert interop.layer_from_keras(keras_wrapper) == layer
        assert interop.layer_from_keras(keras_wrapper.get_config()) == layer
        for ours, theirs in zip(interop.params_from_keras(layer, keras_wrapper).values(),
                                params.values(), strict=True):
            np.testing.assert_array_equal(ours, theirs)
    weights = interop.load_keras_weights(paths["weights"])
    assert list(weights) == ["plain"]
    assert {"sn_c/c", "sn_up/up", "sn_dw/dw"} <= set(weights.skipped)
    # Back to Keras: each wrapper's kernel and vector_u, its layer under "layer".
    out = tmp_path / "back.weights.h5"
    containers = {w: "SpectralNormalization" for w in ("sn_c", "sn_up", "sn_dw")}
    interop.save_keras_weights(out, named, containers=containers)
    keras.utils.set_random_seed(12)
    fresh = _model_spectral_norm(head=False)
    fresh.load_weights(out)
    np.testing.assert_array_equal(np.asarray(fresh(x)), want)
    for wrapper in containers:
        sn = fresh.get_layer(wrapper)
        kernel = np.asarray(sn.layer.kernel)
        matrix = kernel.reshape(-1, kernel.shape[-1]).astype(np.float64)
        sigma = np.linalg.norm(kernel) / np.linalg.norm(np.asarray(sn.normalized_weights()[1]))
        np.testing.assert_allclose(sigma, np.linalg.norm(matrix, 2), rtol=1e-5)
    with pytest.raises(ValueError, match=r"'sn' is a SpectralNormalization, which wraps a "
                                         r"layer with a kernel; a SeparableConv2D has"):
        sep = kconv.SeparableConv2D(2, 3)
        interop.save_keras_weights(tmp_path / "sep.weights.h5", {
            "sn/sep": (sep, sep.init(jax.random.key(0), (None, 8, 8, 3)))},
            containers={"sn": "SpectralNormalization"})
    with pytest.raises(ValueError, match=r"'sn' is a SpectralNormalization, which wraps a "
                                         r"layer with a kernel, not the nested model 'sn/b'"):
        interop.save_keras_weights(tmp_path / "nest.weights.h5", {"sn/b/c": named["plain"]},
                                   containers={"sn": "SpectralNormalization",
                                               "sn/b": "Sequential"})


def _model_time_distributed_block():
    block = keras.Sequential([keras.Input((8, 8, 2)), L.Conv2D(3, 3, padding="same", name="c"),
                              L.DepthwiseConv2D(3, name="dw")], name="block")
    inp = keras.Input((3, 8, 8, 2))
    return keras.Model(inp, L.TimeDistributed(block, name="td")(inp))


def test_time_distributed_model(tmp_path):
    """TimeDistributed around a nested model: its layers named along the whole path
    (``"td/block/c"``), read from both file kinds and written back."""
    keras.utils.set_random_seed(9)
    model = _model_time_distributed_block()
    _randomize(model, 9)
    x = np.random.default_rng(9).normal(size=(2, 3, 8, 8, 2)).astype("float32")
    order = ["td/block/c", "td/block/dw"]
    for path in (tmp_path / "m.keras", tmp_path / "m.h5"):
        model.save(path)
        named = interop.load_keras_layers(path)
        assert list(named) == order, path
        np.testing.assert_allclose(_run_chain(named, order, x), np.asarray(model(x)), **TOL)
    out = tmp_path / "back.weights.h5"
    interop.save_keras_weights(out, named, containers={"td": "TimeDistributed",
                                                       "td/block": "Sequential"})
    keras.utils.set_random_seed(10)
    fresh = _model_time_distributed_block()
    fresh.load_weights(out)
    np.testing.assert_array_equal(np.asarray(fresh(x)), np.asarray(model(x)))


@keras.saving.register_keras_serializable(package="kconv_test")
class _Halves(keras.initializers.Initializer):
    def __call__(self, shape, dtype=None):
        return keras.ops.full(shape, 0.5, dtype)


@keras.saving.register_keras_serializable(package="kconv_test")
def _twice_tanh(x):
    return 2.0 * keras.ops.tanh(x)



def test_bfloat16_weights_read_and_written_as_keras_marks_them(tmp_path):
    # HDF5 has no bfloat16: Keras writes it as 2-byte opaque values marked
    # attrs["dtype"] = "bfloat16" (its legacy writer unmarked). Reading them crashed in
    # JAX; kconv wrote them unmarked, which Keras's load_weights refused.
    def make():
        inp = keras.Input((7, 3))
        x = L.Conv1D(4, 3, dtype="bfloat16", name="conv")(inp)
        return keras.Model(inp, L.SeparableConv1D(2, 3, dtype="bfloat16", name="sep")(x))

    model = make()
    _randomize(model)
    x = np.random.default_rng(1).normal(size=(2, 7, 3)).astype("float32")
    for name in ("m.weights.h5", "m.keras", "m.h5"):
        model.save_weights(tmp_path / name) if name.endswith(".weights.h5") \
            else model.save(tmp_path / name)
        read = interop.load_keras_weights(tmp_path / name)
        assert {k: {n: a.dtype for n, a in p.items()} for k, p in read.items()} == {
            "conv": {"kernel": jnp.bfloat16, "bias": jnp.bfloat16},
            "sep": dict.fromkeys(["depthwise_kernel", "pointwise_kernel", "bias"],
                                 jnp.bfloat16)}
        np.testing.assert_array_equal(np.asarray(read["conv"]["kernel"], np.float32),
                                      model.get_layer("conv").kernel.numpy().astype(np.float32))
    named = interop.load_keras_layers(tmp_path / "m.keras")
    got = _run_chain(named, ["conv", "sep"], x)
    np.testing.assert_allclose(np.asarray(got, np.float32),
                               np.asarray(model(x), np.float32), rtol=1e-2, atol=1e-2)
    interop.save_keras_weights(tmp_path / "back.weights.h5", named)
    fresh = make()
    fresh.load_weights(tmp_path / "back.weights.h5")
    for a, b in zip(fresh.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_legacy_h5_weights_named_by_other_scopes_than_their_models(tmp_path):
    # Keras 3's legacy writer names a weight by the scopes it was made in: a Functional
    # model nested two deep writes 'c/kernel' under 'g' for 'g/f/c'; a layer shared by two
    # Sequentials is written as 'b1/shared/kernel' under 'b2'. Both were refused ("the file
    # holds no weights for it"); Keras's load_model reads them.
    i = keras.Input((6, 6, 2))
    f = keras.Model(i, L.Conv2D(2, 1, name="c")(i), name="f")
    i = keras.Input((6, 6, 2))
    g = keras.Model(i, f(i), name="g")
    i = keras.Input((6, 6, 2))
    deep = keras.Model(i, L.Conv2D(3, 1, name="c")(g(i)), name="top")
    shared = L.Conv2D(2, 3, padding="same", name="shared")
    b1 = keras.Sequential([keras.Input((6, 6, 2)), shared], name="b1")
    b2 = keras.Sequential([keras.Input((6, 6, 2)), shared,
                           L.Conv2D(2, 1, name="other")], name="b2")
    i = keras.Input((6, 6, 2))
    twice = keras.Model(i, b2(b1(i)), name="twice")
    x = np.random.default_rng(1).normal(size=(1, 6, 6, 2)).astype("float32")
    for model, order in ((deep, ["g/f/c", "c"]), (twice, ["b1/shared", "b2/shared", "b2/other"])):
        _randomize(model)
        model.save(tmp_path / f"{model.name}.h5")
        named = interop.load_keras_layers(tmp_path / f"{model.name}.h5")
        assert sorted(named) == sorted(order)
        np.testing.assert_allclose(_run_chain(named, order, x), model(x), **TOL)


def test_a_legacy_h5_does_not_guess_what_its_config_names(tmp_path):
    # A MultiHeadAttention's output projection (an EinsumDense, kernel (heads, key_dim,
    # dim): a Conv1D's shapes) was listed as a Conv1D from a full-model .h5, whose config
    # says the layer is a MultiHeadAttention.
    inp = keras.Input((5, 8))
    model = keras.Model(inp, L.Conv1D(3, 2, name="conv")(
        L.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")(inp, inp)))
    model.save(tmp_path / "full.h5")
    read = interop.load_keras_weights(tmp_path / "full.h5")
    assert list(read) == ["conv"]
    assert {k: v for k, v in read.skipped.items() if k.startswith("mha")} == dict.fromkeys(
        ["mha/attention_output", "mha/key", "mha/query", "mha/value"], "MultiHeadAttention")


def test_sharded_weights(tmp_path):
    # model.save_weights("m.weights.json", max_shard_size=...) writes an index and shards,
    # each holding part of one .weights.h5 tree (a layer's weights in one, its name in
    # another): read through the index; one shard alone is refused, naming the index.
    def make():
        return keras.Sequential([keras.Input((8, 8, 4)), L.Conv2D(8, 3, name="a"),
                                 L.Conv2D(8, 3, name="b"), L.Conv2D(8, 3, name="c")])

    model = make()
    _randomize(model)
    model.save_weights(tmp_path / "m.weights.json", max_shard_size=0.000003)
    shards = sorted(p.name for p in tmp_path.glob("m_*.weights.h5"))
    assert len(shards) == 3
    named = interop.load_keras_weights(tmp_path / "m.weights.json")
    assert list(named) == ["a", "b", "c"]
    for name, params in named.items():
        layer = model.get_layer(name)
        np.testing.assert_array_equal(params["kernel"], layer.kernel.numpy())
        np.testing.assert_array_equal(params["bias"], layer.bias.numpy())
    with pytest.raises(ValueError, match=r"is one shard of the sharded weights .*m\.weights"
                                         r"\.json': read that index"):
        interop.load_keras_weights(tmp_path / shards[-1])
    (tmp_path / "other.json").write_text('{"not": "an index"}')
    with pytest.raises(ValueError, match="is JSON but not the index of Keras's sharded"):
        interop.load_keras_weights(tmp_path / "other.json")

def test_custom_objects_map_a_models_own_objects(tmp_path):
    """A model with objects of its own (a registered initializer, activation, regularizer):
    refused, naming what to pass, until custom_objects maps them — by registered or plain
    name, as keras.models.load_model takes them; then the layers compute Keras's outputs."""
    model = keras.Sequential([
        keras.Input((8, 8, 2)),
        L.Conv2D(3, 3, kernel_initializer=_Halves(), name="c1"),
        L.Conv2D(2, 3, activation=_twice_tanh, kernel_regularizer=keras.regularizers.L2(0.1),
                 name="c2")])
    _randomize(model, 4)
    x = np.random.default_rng(4).normal(size=(2, 8, 8, 2)).astype("float32")
    for path in (tmp_path / "m.keras", tmp_path / "m.h5"):
        model.save(path)
        with pytest.raises(ValueError, match=r"layer 'c1': .*kernel_initializer is "
                                             r"'kconv_test>_Halves', an object of your own.*"
                                             r"custom_objects=\{'_Halves': \.\.\.\}, an "
                                             r"initializer \(key, shape, dtype\)"):
            interop.load_keras_layers(path)
        halves = lambda key, shape, dtype: jnp.full(shape, 0.5, dtype)  # noqa: E731
        with pytest.raises(ValueError, match=r"layer 'c2': .*activation is "
                                             r"'kconv_test>_twice_tanh'.*an activation x -> y"):
            interop.load_keras_layers(path, custom_objects={"_Halves": halves})
        for names in (("_Halves", "_twice_tanh"), ("kconv_test>_Halves",
                                                   "kconv_test>_twice_tanh")):
            named = interop.load_keras_layers(path, custom_objects={
                names[0]: halves, names[1]: lambda x: 2.0 * jnp.tanh(x)})
            np.testing.assert_allclose(_run_chain(named, ["c1", "c2"], x),
                                       np.asarray(model(x)), **TOL)
            assert named["c1"][0].kernel_initializer is halves
            assert named["c2"][0].kernel_regularizer == kconv.regularizers.L2(0.1)


def test_a_folder_that_is_not_an_unzipped_model(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"is a folder but not an unzipped .keras model "
                                         r".*zipped=False\)\): no model.weights.h5; it has "
                                         r"\['config.json'\]"):
        interop.load_keras_weights(tmp_path)


def test_an_unknown_object_name_says_custom_objects():
    with pytest.raises(ValueError, match=r"activation: Unknown activation 'my_act'.*If it is "
                                         r"an object of your own, pass custom_objects="
                                         r"\{'my_act': \.\.\.\}"):
        interop.layer_from_keras({"class_name": "Conv2D", "config": {
            "filters": 2, "kernel_size": [3, 3], "activation": "my_act"}})
    layer = interop.layer_from_keras({"class_name": "Conv2D", "config": {
        "filters": 2, "kernel_size": [3, 3], "activation": "relu"}},
        custom_objects={"relu": jnp.tanh})  # the user's name comes first, as in Keras
    assert layer.activation is jnp.tanh


def test_kconv_params_saved_for_keras(tmp_path):
    # Params made in kconv (not read from Keras) load into the equivalent Keras model.
    layers = [kconv.Conv2D(4, 3, padding="same", activation="relu"),
              kconv.DepthwiseConv2D(3, depth_multiplier=2),
              kconv.Conv2D(3, 1, use_bias=False),
              kconv.SeparableConv2D(2, 3, padding="same"),
              kconv.Conv2DTranspose(2, 3, strides=2)]
    shape, named = (None, 9, 9, 2), {}
    for i, layer in enumerate(layers):
        params = layer.init(jax.random.key(i), shape)
        params = jax.tree.map(lambda p, i=i: p + 0.1 * (i + 1), params)  # non-zero biases
        named[f"layer{i}"] = (layer, params)
        shape = layer.compute_output_shape(shape)
    path = tmp_path / "kconv.weights.h5"
    interop.save_keras_weights(path, named)
    model = keras.Sequential([keras.Input((9, 9, 2))] + [
        getattr(L, type(layer).__name__).from_config(
            {**layer.get_config(), "name": name}) for name, (layer, _) in named.items()])
    model.load_weights(path)
    x = np.random.default_rng(0).normal(size=(2, 9, 9, 2)).astype("float32")
    np.testing.assert_allclose(np.asarray(model(x)), _run_chain(named, list(named), x), **TOL)


# --- tf-keras legacy fixtures ----------------------------------------------------------

TRUNK = ["pad", "conv", "block/inner_conv", "block/inner_dw", "sep", "up_conv", "upsample",
         "crop"]


def test_tf_keras_full_model_h5_reproduces_tf_keras_outputs():
    named = interop.load_keras_layers(FIXTURES / "tf_keras_model.h5")
    assert sorted(named) == sorted(TRUNK)
    assert named.skipped == {"image": "InputLayer", "pool": "GlobalAveragePooling2D",
                             "head": "Dense"}
    io = np.load(FIXTURES / "tf_keras_io.npz")
    np.testing.assert_allclose(_run_chain(named, TRUNK, io["x"]), io["y"], rtol=1e-4,
                               atol=1e-5)
    conv, _ = named["conv"]
    # tf-keras stores the factor as float32, as it computes with it.
    assert type(conv.kernel_regularizer) is kconv.regularizers.L2
    assert conv.kernel_regularizer.l2 == pytest.approx(0.01)
    assert conv.kernel_constraint == kconv.constraints.MaxNorm(2.0, axis=(0, 1, 2))
    assert named["block/inner_dw"][0].depth_multiplier == 2


def test_tf_keras_weights_only_h5_matches_the_full_model_file():
    full = interop.load_keras_layers(FIXTURES / "tf_keras_model.h5")
    weights = interop.load_keras_weights(FIXTURES / "tf_keras_weights.h5")
    assert sorted(weights) == sorted(n for n in TRUNK if full[n][0].has_weights)
    for name, params in weights.items():
        assert sorted(params) == sorted(full[name][1])
        for key in params:
            np.testing.assert_array_equal(params[key], full[name][1][key])
    assert {"head", "pool"} <= set(weights.skipped)
    with pytest.raises(ValueError, match="carries no model config"):
        interop.load_keras_layers(FIXTURES / "tf_keras_weights.h5")


TF_CONFIGS = json.loads((FIXTURES / "tf_keras_configs.json").read_text())["layers"]


@pytest.mark.parametrize("entry", TF_CONFIGS, ids=[e["class_name"] for e in TF_CONFIGS])
def test_tf_keras_configs(entry):
    cls = getattr(kconv, entry["class_name"])
    from_serialized = interop.layer_from_keras(entry["serialized"])
    assert type(from_serialized) is cls
    assert from_serialized == cls.from_config(entry["get_config"])
    assert from_serialized == interop.layer_from_keras(entry["get_config"])  # class inferred
    # What kconv reports is Keras 3's form of the same layer, which Keras 3 accepts.
    k3 = getattr(L, entry["class_name"]).from_config(from_serialized.get_config())
    assert cls.from_config(k3.get_config()) == from_serialized


def test_tf_keras_config_details():
    by_class = {e["class_name"]: interop.layer_from_keras(e["serialized"]) for e in TF_CONFIGS}
    conv1d = by_class["Conv1D"]
    assert (conv1d.padding, conv1d.data_format, conv1d.dilation_rate) == (
        "causal", "channels_first", (2,))
    assert (jnp.dtype(conv1d.dtype), jnp.dtype(conv1d.param_dtype)) == (jnp.float16,
                                                                      jnp.float32)
    assert jnp.dtype(by_class["Conv3D"].dtype) == jnp.bfloat16
    conv2d = by_class["Conv2D"]
    assert conv2d.groups == 2 and conv2d.kernel_initializer == kconv.initializers.HeNormal(seed=3)
    assert conv2d.kernel_constraint == kconv.constraints.MinMaxNorm(0.5, 1.5, rate=0.5)
    assert by_class["Conv2DTranspose"].output_padding == (1, 0)
    assert by_class["ZeroPadding3D"].padding == ((1, 0), (1, 1), (0, 2))


# --- configs: Keras 2.x forms and what kconv cannot honour -----------------------------

def test_keras2_forms():
    cfg = {"name": "conv2d_1", "trainable": True, "batch_input_shape": [None, 8, 8, 3],
           "dtype": "float32", "filters": 4, "kernel_size": [3, 3], "strides": [1, 1],
           "padding": "SAME", "data_format": "channels_last", "dilation_rate": [1, 1],
           "activation": "relu", "use_bias": True,
           "kernel_initializer": {"class_name": "VarianceScaling",
                                  "config": {"scale": 1.0, "mode": "fan_avg",
                                             "distribution": "uniform", "seed": None}},
           "bias_initializer": {"class_name": "Zeros", "config": {}},
           "kernel_regularizer": {"class_name": "L1L2", "config": {"l1": 0.0, "l2": 0.01}},
           "bias_regularizer": None, "activity_regularizer": None,
           "kernel_constraint": {"class_name": "MaxNorm", "config": {"max_value": 2,
                                                                     "axis": [0, 1, 2]}},
           "bias_constraint": None}
    layer = interop.layer_from_keras({"class_name": "Conv2D", "config": cfg})
    assert layer.padding == "same" and layer.kernel_size == (3, 3)
    assert layer.kernel_regularizer == kconv.regularizers.L1L2(0.0, 0.01)
    assert interop.layer_from_keras({"class_name": "Convolution2D", "config": cfg}) == layer
    policy = {"class_name": "Policy", "config": {"name": "mixed_bfloat16"}}
    mixed = interop.layer_from_keras({"class_name": "Conv2D", "config": {**cfg,
                                                                         "dtype": policy}})
    assert jnp.dtype(mixed.dtype) == jnp.bfloat16 and jnp.dtype(mixed.param_dtype) == jnp.float32


@pytest.mark.parametrize("class_name,config,key", [
    ("SeparableConv2D", {"filters": 2, "kernel_size": 3, "lora_rank": 4}, "lora_rank"),
    ("DepthwiseConv2D", {"kernel_size": 3, "groups": 2}, "groups"),
    ("Conv2DTranspose", {"filters": 2, "kernel_size": 3, "groups": 3}, "groups"),
    ("Conv2D", {"filters": 2, "kernel_size": 3, "mystery": 1}, "mystery"),
])
def test_configs_kconv_cannot_honour_name_the_key(class_name, config, key):
    with pytest.raises(ValueError, match=key):
        interop.layer_from_keras({"class_name": class_name, "config": config})


def test_neutral_quirks_are_accepted():
    assert interop.layer_from_keras({"class_name": "DepthwiseConv2D",
                                     "config": {"kernel_size": 3, "groups": 1}}) \
        == kconv.DepthwiseConv2D(3)
    assert kconv.Conv2D.from_config({"filters": 2, "kernel_size": 3, "lora_rank": None}) \
        == kconv.Conv2D(2, 3)


def test_unknown_classes_are_refused():
    with pytest.raises(ValueError, match="'Dense' is not a layer kconv implements"):
        interop.layer_from_keras(L.Dense(3))
    with pytest.raises(TypeError, match="expected a Keras layer"):
        interop.layer_from_keras(42)


@pytest.mark.parametrize("name", [n for n in kconv.layers.LAYER_NAMES if hasattr(L, n)])
def test_live_keras3_layers(name):
    from kconv.layers._examples import EXAMPLES

    args, _ = EXAMPLES[name]
    keras_layer = getattr(L, name)(**args)
    # Keras's default "float32" policy computes in float32 whatever the input: dtype=float32.
    expected = getattr(kconv, name)(**args, dtype="float32")
    assert interop.layer_from_keras(keras_layer) == expected
    serialized = keras.saving.serialize_keras_object(keras_layer)
    assert interop.layer_from_keras(serialized) == expected
    assert interop.layer_from_keras(keras_layer.get_config()) == expected


# --- hostile and broken files ----------------------------------------------------------

def _snapshot(folder):
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_lambda_in_a_keras_archive_is_never_executed(tmp_path):
    flag = tmp_path / "executed"
    code = f"lambda t: (open({str(flag)!r}, 'w').write('x'), t)[1]"
    inp = keras.Input((6, 6, 1))
    x = L.Conv2D(2, 3, name="c")(inp)
    x = L.Lambda(eval(code), name="evil")(x)  # noqa: S307 - the hostile layer under test
    model = keras.Model(inp, x)
    flag.unlink(missing_ok=True)
    model.save(tmp_path / "evil.keras")
    flag.unlink(missing_ok=True)
    before = _snapshot(tmp_path)
    named = interop.load_keras_layers(tmp_path / "evil.keras")
    assert list(named) == ["c"] and named.skipped["evil"] == "Lambda"
    interop.load_keras_weights(tmp_path / "evil.keras")
    assert not flag.exists()
    assert _snapshot(tmp_path) == before  # nothing written while loading


def test_not_hdf5_nor_zip(tmp_path):
    path = tmp_path / "model.weights.h5"
    path.write_text("this is not a weights file")
    with pytest.raises(ValueError, match=r"model\.weights\.h5.*neither an HDF5 file"):
        interop.load_keras_weights(path)
    with pytest.raises(OSError, match="cannot read"):
        interop.load_keras_weights(tmp_path / "missing.weights.h5")


def test_truncated_files(saved, tmp_path):
    _, _, _, paths = saved
    for fmt in ("weights", "keras", "legacy"):
        data = paths[fmt].read_bytes()
        cut = tmp_path / f"cut-{paths[fmt].name}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(ValueError, match=f"cut-{paths[fmt].name}.*(truncated|corrupt)"):
            interop.load_keras_weights(cut)


def test_hdf5_and_zip_that_are_not_keras(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(ValueError, match="not a Keras weights file"):
        interop.load_keras_weights(tmp_path / "other.h5")
    with zipfile.ZipFile(tmp_path / "other.keras", "w") as z:
        z.writestr("readme.txt", "hi")
    with pytest.raises(ValueError, match="not a .keras archive"):
        interop.load_keras_weights(tmp_path / "other.keras")


def _rewrite_keras(src, dst, edit_config=None, edit_weights=None):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == "config.json" and edit_config:
                data = json.dumps(edit_config(json.loads(data))).encode()
            if item == "model.weights.h5" and edit_weights:
                tmp = dst.parent / "tmp.weights.h5"
                tmp.write_bytes(data)
                with h5py.File(tmp, "r+") as f:
                    edit_weights(f)
                data = tmp.read_bytes()
                tmp.unlink()
            zout.writestr(item, data)


def _set_filters(config, layer_name, filters):
    for layer in config["config"]["layers"]:
        if layer["config"].get("name") == layer_name:
            layer["config"]["filters"] = filters
    return config


def test_weight_shape_that_does_not_match_the_config(saved_1d, tmp_path):
    _, _, _, paths = saved_1d
    bad = tmp_path / "bad.keras"
    _rewrite_keras(paths["keras"], bad, edit_config=lambda c: _set_filters(c, "causal", 7))
    with pytest.raises(ValueError, match=r"bad\.keras.*'causal'.*shape"):
        interop.load_keras_layers(bad)


def test_missing_layer_weights(saved_1d, tmp_path):
    _, _, _, paths = saved_1d
    bad = tmp_path / "missing.keras"

    def drop(f):
        key = next(k for k in f["layers"] if f["layers"][k]["vars"].attrs["name"] == "sep1")
        del f["layers"][key]

    _rewrite_keras(paths["keras"], bad, edit_weights=drop)
    with pytest.raises(ValueError, match=r"missing\.keras.*'sep1'.*no weights"):
        interop.load_keras_layers(bad)
    # Legacy: a weight count that does not fit the class.
    legacy = tmp_path / "legacy.h5"
    shutil.copy(paths["legacy"], legacy)
    with h5py.File(legacy, "r+") as f:
        group = f["model_weights"]["sep1"]
        names = list(group.attrs["weight_names"])
        group.attrs["weight_names"] = names[:1]
    with pytest.raises(ValueError, match=r"legacy\.h5.*'sep1'"):
        interop.load_keras_layers(legacy)


def test_corrupt_config_json(saved_1d, tmp_path):
    _, _, _, paths = saved_1d
    bad = tmp_path / "badjson.keras"
    with zipfile.ZipFile(paths["keras"]) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.namelist():
            zout.writestr(item, b"{not json" if item == "config.json" else zin.read(item))
    with pytest.raises(ValueError, match=r"badjson\.keras.*config\.json is not valid JSON"):
        interop.load_keras_layers(bad)


def test_weight_names_and_counts_that_do_not_fit_the_class(saved_1d, tmp_path):
    """A file whose weights cannot be a layer of its class fails naming the file, the layer
    and what it holds: a legacy file's weight names, a Keras 3 file's weight count."""
    _, _, _, paths = saved_1d
    legacy = tmp_path / "renamed.h5"
    shutil.copy(paths["legacy"], legacy)
    with h5py.File(legacy, "r+") as f:
        group = f["model_weights"]["causal"]
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
        renamed = [n.replace("kernel", "gamma") for n in names]
        for old, new in zip(names, renamed):
            group.move(old, new)
        group.attrs["weight_names"] = renamed
    with pytest.raises(ValueError, match=r"renamed\.h5.*'causal'.*expected weights "
                                         r"\['kernel', 'bias'\].*gamma"):
        interop.load_keras_layers(legacy)

    extra = tmp_path / "extra.keras"

    def add_a_weight(f):
        key = next(k for k in f["layers"] if f["layers"][k]["vars"].attrs["name"] == "causal")
        f["layers"][key]["vars"]["2"] = np.zeros(3, "float32")

    _rewrite_keras(paths["keras"], extra, edit_weights=add_a_weight)
    with pytest.raises(ValueError, match=r"extra\.keras.*'causal'.*\(bias optional\), the "
                                         r"file holds 3"):
        interop.load_keras_layers(extra)


def test_legacy_model_config_that_is_not_json(saved_1d, tmp_path):
    _, _, _, paths = saved_1d
    bad = tmp_path / "badconfig.h5"
    shutil.copy(paths["legacy"], bad)
    with h5py.File(bad, "r+") as f:
        f.attrs["model_config"] = "{not json"
    with pytest.raises(ValueError, match=r"badconfig\.h5.*model_config is not valid JSON"):
        interop.load_keras_layers(bad)


@pytest.mark.parametrize("make, shape", [
    (lambda: L.Conv1D(4, 3, padding="causal", dilation_rate=2), (2, 9, 3)),
    (lambda: L.Conv2D(4, 3, strides=2, groups=2, use_bias=False), (2, 8, 8, 4)),
    (lambda: L.Conv3D(2, 2, data_format="channels_first"), (1, 3, 4, 4, 4)),
    (lambda: L.SeparableConv2D(4, 3, depth_multiplier=2, padding="same"), (2, 7, 7, 3)),
    (lambda: L.DepthwiseConv1D(3, depth_multiplier=2), (2, 9, 3)),
    (lambda: L.Conv2DTranspose(3, 3, strides=2, padding="same"), (2, 5, 5, 2)),
    (lambda: L.ZeroPadding2D(1), (1, 4, 4, 2)),
])
def test_params_from_keras_takes_get_weights_and_reproduces_the_layer(make, shape):
    """Keras's ``get_weights()`` list (or the live layer) becomes params, the inverse of
    ``to_keras_weights``, and the kconv layer then computes the Keras layer's outputs;
    the list passed to the layer itself is refused with that function named (it used to
    fail with NumPy's 'truth value of an array is ambiguous')."""
    keras.utils.set_random_seed(1)
    keras_layer = make()
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    want = np.asarray(keras_layer(x))
    layer = interop.layer_from_keras(keras_layer)
    for weights in (keras_layer.get_weights(), keras_layer):
        params = interop.params_from_keras(layer, weights)
        np.testing.assert_allclose(layer(params, x), want, **TOL)
        for ours, theirs in zip(interop.to_keras_weights(layer, params),
                                keras_layer.get_weights(), strict=True):
            np.testing.assert_array_equal(ours, theirs)
    if layer.has_weights:
        with pytest.raises(TypeError, match=rf"{type(layer).__name__}: params must be a dict "
                                            r".*got a list of \d+ arrays.*params_from_keras"):
            layer(keras_layer.get_weights(), x)


def test_params_from_keras_of_a_lora_layer_and_its_errors():
    keras.utils.set_random_seed(2)
    keras_layer = L.Conv2D(4, 3)
    keras_layer.build((None, 6, 6, 3))
    keras_layer.enable_lora(2)
    keras_layer.lora_kernel_b.assign(np.full((2, 4), 0.1, np.float32))  # not the zero start
    x = np.random.default_rng(1).standard_normal((2, 6, 6, 3)).astype(np.float32)
    layer = interop.layer_from_keras(keras_layer)
    params = interop.params_from_keras(layer, keras_layer)
    assert sorted(params) == ["bias", "kernel", "lora_kernel_a", "lora_kernel_b"]
    np.testing.assert_allclose(layer(params, x), np.asarray(keras_layer(x)), **TOL)

    plain = kconv.Conv2D(4, 3)
    weights = [np.zeros((3, 3, 3, 4), np.float32), np.zeros(4, np.float32)]
    with pytest.raises(ValueError, match=r"params_from_keras\(Conv2D\): the layer takes 2 "
                                         r"weights \['kernel', 'bias'\] \(use_bias=True\), "
                                         r"got a list of 1 with shapes \[\(3, 3, 3, 4\)\]"):
        interop.params_from_keras(plain, weights[:1])
    with pytest.raises(ValueError, match=r"params_from_keras\(Conv2D\): params\['bias'\] has "
                                         r"shape \(5,\)"):
        interop.params_from_keras(plain, [weights[0], np.zeros(5, np.float32)])
    with pytest.raises(TypeError, match=r"got a dict \(a dict is params already"):
        interop.params_from_keras(plain, {"kernel": weights[0], "bias": weights[1]})
    with pytest.raises(TypeError, match=r"Conv2D: params must be a dict .* got None"):
        plain(None, x)


def test_to_keras_weights_refuses_params_that_do_not_fit_the_layer():
    zeros = np.zeros
    with pytest.raises(ValueError, match=r"to_keras_weights\(ZeroPadding2D\): the layer has "
                                         r"no weights, so params must be \{\}; got keys "
                                         r"\['kernel'\]"):
        interop.to_keras_weights(kconv.ZeroPadding2D(1), {"kernel": zeros((3, 3, 2, 4))})
    with pytest.raises(ValueError, match=r"params are missing \['bias'\]; it takes \['kernel', "
                                         r"'bias'\] \(use_bias=True, lora_rank=None\), got "
                                         r"keys \['kernel'\]"):
        interop.to_keras_weights(kconv.Conv2D(4, 3), {"kernel": zeros((3, 3, 2, 4))})
    with pytest.raises(ValueError, match=r"to_keras_weights\(Conv2D\): params\['kernel'\] must "
                                         r"have rank 4, got shape \(3, 3, 4\)"):
        interop.to_keras_weights(kconv.Conv2D(4, 3), {"kernel": zeros((3, 3, 4)),
                                                      "bias": zeros(4)})
    with pytest.raises(ValueError, match=r"to_keras_weights\(Conv2D\): params\['kernel'\] has "
                                         r"shape \(3, 2, 2, 4\), where the layer's config and 2 "
                                         r"input channels imply \(3, 3, 2, 4\)"):
        interop.to_keras_weights(kconv.Conv2D(4, 3), {"kernel": zeros((3, 2, 2, 4)),
                                                      "bias": zeros(4)})


def test_a_bare_config_whose_class_cannot_be_told():
    with pytest.raises(ValueError, match=r"layer_from_keras: cannot tell the layer class of "
                                         r"a config with keys \['name', 'units'\]"):
        interop.layer_from_keras({"name": "dense", "units": 3})


# --- writing: errors and atomicity -----------------------------------------------------

def _two_layers():
    layer = kconv.Conv1D(2, 3)
    return {"a": (layer, layer.init(jax.random.key(0), (None, 8, 1)))}


def test_save_errors(tmp_path):
    with pytest.raises(ValueError, match="must end in '.weights.h5'"):
        interop.save_keras_weights(tmp_path / "m.h5", _two_layers())
    layer, params = _two_layers()["a"]
    with pytest.raises(TypeError, match="expected a \\(kconv layer, params\\) pair"):
        interop.save_keras_weights(tmp_path / "m.weights.h5", {"a": params})
    with pytest.raises(ValueError, match=r"'b' is a nested model; pass its Keras class"):
        interop.save_keras_weights(tmp_path / "m.weights.h5", {"b/a": (layer, params)})
    with pytest.raises(ValueError, match=r"params\['kernel'\] has shape"):
        interop.save_keras_weights(tmp_path / "m.weights.h5",
                                   {"a": (kconv.Conv1D(3, 3), params)})
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.weights.h5"
    interop.save_keras_weights(path, _two_layers())
    good = path.read_bytes()
    calls = {"n": 0}
    real = h5py.Group.create_dataset

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full (simulated)")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    with pytest.raises(OSError, match="simulated"):
        interop.save_keras_weights(path, _two_layers())
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["m.weights.h5"]


def test_killed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "m.weights.h5"
    interop.save_keras_weights(path, _two_layers())
    good = path.read_bytes()
    script = textwrap.dedent(f"""
        import os, signal, h5py, jax, kconv
        from kconv import interop
        real = h5py.Group.create_dataset
        def dying(self, *args, **kwargs):
            out = real(self, *args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)  # killed in the middle of the write
        h5py.Group.create_dataset = dying
        layer = kconv.Conv1D(5, 3)
        interop.save_keras_weights({str(path)!r},
                                   {{"a": (layer, layer.init(jax.random.key(1), (None, 8, 1)))}})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert path.read_bytes() == good
    loaded = interop.load_keras_weights(path)
    assert loaded["a"]["kernel"].shape == (3, 1, 2)


@pytest.mark.parametrize("name", ["Conv2D", "Conv1DTranspose", "SeparableConv1D", "UpSampling2D"])
def test_layer_from_config_takes_every_keras_form(name):
    from kconv.layers._examples import EXAMPLES

    args, _ = EXAMPLES[name]
    keras_layer = getattr(L, name)(**args)
    cls, expected = getattr(kconv, name), getattr(kconv, name)(**args, dtype="float32")
    assert cls.from_config(keras_layer) == expected
    assert cls.from_config(keras.saving.serialize_keras_object(keras_layer)) == expected
    assert cls.from_config(keras_layer.get_config()) == expected
    with pytest.raises(ValueError, match="not a"):
        kconv.Conv3D.from_config(keras.saving.serialize_keras_object(keras_layer))


def test_keras_aliases():
    assert kconv.Conv2D.from_config({"class_name": "Convolution2D",
                                     "config": {"filters": 2, "kernel_size": 3}}) \
        == kconv.Conv2D(2, 3)
    assert interop.layer_from_keras({"class_name": "Deconvolution2D",
                                     "config": {"filters": 2, "kernel_size": 3}}) \
        == kconv.Conv2DTranspose(2, 3)
    assert interop.layer_from_keras({"class_name": "SeparableConvolution1D",
                                     "config": {"filters": 2, "kernel_size": 3}}) \
        == kconv.SeparableConv1D(2, 3)


def test_many_layers_of_one_class_keep_keras_order(tmp_path):
    # Keras names them conv1d, conv1d_1, ..., conv1d_11: HDF5 lists conv1d_10 before
    # conv1d_2, and writing back must not scramble which weights go where.
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((30, 2))] + [
        L.Conv1D(2, 2, name=f"c{i:02d}") for i in range(12)])
    _randomize(model)
    model.save_weights(tmp_path / "m.weights.h5")
    weights = interop.load_keras_weights(tmp_path / "m.weights.h5")
    assert list(weights) == [f"c{i:02d}" for i in range(12)]
    named = {name: (kconv.Conv1D(2, 2), params) for name, params in weights.items()}
    interop.save_keras_weights(tmp_path / "back.weights.h5", named)
    keras.utils.set_random_seed(1)
    fresh = keras.Sequential([keras.Input((30, 2))] + [L.Conv1D(2, 2) for _ in range(12)])
    fresh.load_weights(tmp_path / "back.weights.h5")
    x = np.random.default_rng(0).normal(size=(1, 30, 2)).astype("float32")
    np.testing.assert_array_equal(np.asarray(fresh(x)), np.asarray(model(x)))
