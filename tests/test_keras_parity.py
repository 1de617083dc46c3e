"""Keras 3 on the JAX backend as the numerical oracle for the ten convolution layers.

Same weights -> same outputs, same gradients w.r.t. inputs and weights (float32 within
1e-5 relative), same weight names and shapes, same compute_output_shape, same get_config,
and `from_config(keras_layer.get_config())` builds the same layer; regularization losses
and constraint projections equal Keras's.
"""

import functools
import io
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import kconv  # noqa: E402
from kconv.ops import lowering  # noqa: E402
from tests import fuzz_keras  # noqa: E402

CL, CF = "channels_last", "channels_first"


def _plain(**kwargs):
    return lambda m: dict(kwargs)


# (layer class name, kwargs builder taking the module (keras or kconv), input shape)
CASES = [
    ("Conv1D", _plain(filters=4, kernel_size=3), (2, 11, 3)),
    ("Conv1D", _plain(filters=4, kernel_size=3, strides=2, padding="same"), (2, 12, 3)),
    ("Conv1D", _plain(filters=4, kernel_size=3, padding="causal", dilation_rate=2), (2, 11, 3)),
    ("Conv1D", _plain(filters=4, kernel_size=2, padding="causal", data_format=CF), (2, 3, 9)),
    ("Conv1D", _plain(filters=6, kernel_size=3, groups=2, activation="relu"), (2, 10, 4)),
    ("Conv2D", _plain(filters=5, kernel_size=3), (2, 8, 9, 3)),
    ("Conv2D", _plain(filters=5, kernel_size=(3, 2), strides=2, padding="same"), (2, 9, 8, 3)),
    ("Conv2D", _plain(filters=4, kernel_size=2, padding="same", data_format=CF,
                      use_bias=False), (2, 3, 7, 6)),
    ("Conv2D", _plain(filters=4, kernel_size=3, dilation_rate=2, activation="tanh"),
     (2, 9, 9, 2)),
    ("Conv2D", _plain(filters=6, kernel_size=3, groups=3, strides=(1, 2), padding="same",
                      data_format=CF), (2, 6, 7, 7)),
    ("Conv3D", _plain(filters=3, kernel_size=2), (2, 5, 4, 6, 2)),
    ("Conv3D", _plain(filters=4, kernel_size=3, strides=2, padding="same", data_format=CF),
     (1, 2, 5, 6, 5)),
    ("SeparableConv1D", _plain(filters=4, kernel_size=3, depth_multiplier=2), (2, 10, 3)),
    ("SeparableConv1D", _plain(filters=4, kernel_size=3, strides=2, padding="same",
                               data_format=CF), (2, 3, 11)),
    ("SeparableConv2D", _plain(filters=5, kernel_size=3, padding="same", dilation_rate=2),
     (2, 8, 8, 3)),
    ("SeparableConv2D", _plain(filters=4, kernel_size=(2, 3), strides=2, depth_multiplier=3,
                               data_format=CF, activation="sigmoid"), (2, 2, 9, 8)),
    ("DepthwiseConv1D", _plain(kernel_size=3, depth_multiplier=2), (2, 10, 3)),
    ("DepthwiseConv1D", _plain(kernel_size=4, strides=2, padding="same", data_format=CF),
     (2, 3, 11)),
    ("DepthwiseConv2D", _plain(kernel_size=3, padding="same"), (2, 7, 8, 4)),
    ("DepthwiseConv2D", _plain(kernel_size=(3, 2), depth_multiplier=2, dilation_rate=2,
                               data_format=CF, use_bias=False), (2, 3, 9, 8)),
    ("Conv1DTranspose", _plain(filters=4, kernel_size=3, strides=2), (2, 6, 3)),
    ("Conv1DTranspose", _plain(filters=4, kernel_size=4, strides=3, padding="same",
                               output_padding=1), (2, 5, 3)),
    ("Conv1DTranspose", _plain(filters=2, kernel_size=3, dilation_rate=2, data_format=CF),
     (2, 3, 6)),
    ("Conv2DTranspose", _plain(filters=4, kernel_size=3, strides=2, padding="same"),
     (2, 4, 5, 3)),
    ("Conv2DTranspose", _plain(filters=4, kernel_size=(2, 3), strides=(2, 3), padding="valid",
                               output_padding=(1, 2), data_format=CF), (2, 3, 4, 4)),
    ("Conv3DTranspose", _plain(filters=3, kernel_size=2, strides=2), (1, 3, 2, 3, 2)),
    ("Conv3DTranspose", _plain(filters=2, kernel_size=3, strides=2, padding="same",
                               data_format=CF, output_padding=1), (1, 2, 3, 2, 3)),
]

# Cases with every kind of weight/activity regularizer and constraint.
PENALTY_CASES = [
    ("Conv2D", lambda m: dict(
        filters=4, kernel_size=3, kernel_regularizer=m.regularizers.L1L2(0.01, 0.02),
        bias_regularizer=m.regularizers.L2(0.3), activity_regularizer=m.regularizers.L1(0.05),
        kernel_constraint=m.constraints.MaxNorm(0.5, axis=[0, 1, 2]),
        bias_constraint=m.constraints.NonNeg()), (3, 7, 7, 2)),
    ("SeparableConv1D", lambda m: dict(
        filters=3, kernel_size=3, depthwise_regularizer="l2", pointwise_regularizer="l1",
        activity_regularizer=m.regularizers.L2(0.1),
        depthwise_constraint=m.constraints.UnitNorm(axis=0),
        pointwise_constraint=m.constraints.MinMaxNorm(0.2, 0.6, rate=0.5, axis=1),
        bias_constraint=m.constraints.NonNeg()), (4, 9, 2)),
    ("DepthwiseConv2D", lambda m: dict(
        kernel_size=2, depth_multiplier=2, depthwise_regularizer=m.regularizers.L1(0.2),
        bias_regularizer="l1", depthwise_constraint=m.constraints.MaxNorm(0.3)),
     (2, 5, 5, 3)),
    ("Conv1DTranspose", lambda m: dict(
        filters=3, kernel_size=3, strides=2, kernel_regularizer="l1l2",
        activity_regularizer="l2", kernel_constraint="non_neg"), (5, 4, 2)),
    ("Conv3D", lambda m: dict(
        filters=2, kernel_size=2, kernel_regularizer=m.regularizers.L2(0.5),
        kernel_constraint=m.constraints.UnitNorm(axis=[0, 1, 2, 3])), (2, 3, 3, 3, 2)),
]

ALL = CASES + PENALTY_CASES
IDS = [f"{c[0]}-{i}" for i, c in enumerate(ALL)]


def _pair(name, kwargs_fn, input_shape, seed=0):
    """A built Keras layer with random weights, and the kconv layer and params for it."""
    keras_layer = getattr(keras.layers, name)(**kwargs_fn(keras))
    keras_layer.build(input_shape)
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal(w.shape).astype(np.float32) * 0.5
               for w in keras_layer.get_weights()]
    keras_layer.set_weights(weights)
    layer = getattr(kconv, name)(**kwargs_fn(kconv))
    names = [w.path.split("/")[-1] for w in keras_layer.weights]
    params = dict(zip(names, map(jnp.asarray, weights)))
    return keras_layer, layer, params


def _rtol_close(actual, expected, rtol=1e-5):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = np.max(np.abs(expected), initial=0.0)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("name,kwargs_fn,input_shape", ALL, ids=IDS)
def test_weights_have_keras_names_and_shapes(name, kwargs_fn, input_shape):
    keras_layer, layer, _ = _pair(name, kwargs_fn, input_shape)
    params = layer.init(jax.random.key(0), (None,) + input_shape[1:])
    expected = {w.path.split("/")[-1]: tuple(w.shape) for w in keras_layer.weights}
    assert {k: v.shape for k, v in params.items()} == expected
    assert list(params) == list(expected)  # Keras's weight order
    assert all(v.dtype == jnp.float32 for v in params.values())


@pytest.mark.parametrize("name,kwargs_fn,input_shape", ALL, ids=IDS)
def test_outputs_and_gradients_match_keras(name, kwargs_fn, input_shape):
    keras_layer, layer, params = _pair(name, kwargs_fn, input_shape)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(input_shape).astype(np.float32)
    expected = np.asarray(keras_layer(x))
    _rtol_close(layer(params, x), expected)
    _rtol_close(jax.jit(layer)(params, x), expected)

    cot = rng.standard_normal(expected.shape).astype(np.float32)
    trainable = [v.value for v in keras_layer.trainable_variables]

    def keras_loss(tv, x):
        y, _ = keras_layer.stateless_call(tv, [], x)
        return jnp.sum(y * cot)

    def kconv_loss(p, x):
        return jnp.sum(layer(p, x) * cot)

    k_grads, k_gx = jax.grad(keras_loss, argnums=(0, 1))(trainable, x)
    g_params, g_x = jax.grad(kconv_loss, argnums=(0, 1))(params, x)
    _rtol_close(g_x, k_gx)
    for var, kg in zip(keras_layer.trainable_variables, k_grads):
        _rtol_close(g_params[var.path.split("/")[-1]], kg)


# Above 16 channels, where kconv computes these layers on XLA:CPU by its own lowerings
# (kconv.ops.lowering), each case pinned to the lowerings it takes: the same Keras oracle,
# end to end, for each of them (the lowering tests compare them with XLA's convolution).
WIDE_CASES = [
    ("Conv2D", dict(filters=24, kernel_size=3, padding="same"), (2, 6, 7, 20),
     [("conv", "eigen_crop")]),
    ("Conv2D", dict(filters=24, kernel_size=3, groups=4, padding="same", data_format=CF,
                    activation="relu"), (2, 20, 6, 5), [("conv", "block_diagonal")]),
    ("Conv1D", dict(filters=20, kernel_size=1, data_format=CF), (2, 24, 9),
     [("conv", "pointwise_dot")]),
    ("DepthwiseConv2D", dict(kernel_size=3, depth_multiplier=2, strides=2, padding="same"),
     (2, 7, 6, 20), [("conv", "depthwise_taps")]),
    ("SeparableConv1D", dict(filters=24, kernel_size=3, dilation_rate=2, data_format=CF),
     (2, 20, 11), [("conv", "depthwise_taps"), ("conv", "pointwise_dot")]),
    ("Conv2DTranspose", dict(filters=18, kernel_size=3, strides=2, padding="same"),
     (2, 4, 5, 20), [("conv_transpose", "subpixel_transpose")]),
    ("Conv3D", dict(filters=20, kernel_size=3, strides=(1, 1, 2), padding="same",
                    data_format=CF), (2, 6, 5, 4, 7), [("conv", "width_fold")]),
    ("Conv3DTranspose", dict(filters=17, kernel_size=2, strides=(1, 2, 2), output_padding=0,
                             padding="same", data_format=CF), (1, 18, 2, 3, 2),
     [("conv_transpose", "subpixel_transpose")]),
]


@pytest.mark.parametrize("name,kwargs,input_shape,lowerings", WIDE_CASES,
                         ids=[f"{c[0]}-{c[3][0][1]}" for c in WIDE_CASES])
def test_wide_layers_match_keras_through_kconv_lowerings(name, kwargs, input_shape,
                                                         lowerings, monkeypatch):
    # "eigen_crop" wants two cores: the rule sees two, whatever runs the tests.
    monkeypatch.setattr(lowering.rule, "_host_cores", lambda: 2)
    keras_layer, layer, params = _pair(name, lambda m: dict(kwargs), input_shape, seed=3)
    rng = np.random.default_rng(4)
    x = rng.standard_normal(input_shape).astype(np.float32)
    expected = np.asarray(keras_layer(x))
    cot = rng.standard_normal(expected.shape).astype(np.float32)
    with lowering.recorded_choices() as calls:
        (_, k_gx, k_grads), (y, g_x, g_params) = fuzz_keras.gradients(
            keras_layer, layer, params, x, cot)
    assert sorted(set(calls)) == sorted(lowerings)
    _rtol_close(y, expected)
    _rtol_close(g_x, k_gx)
    assert list(g_params) == list(k_grads)
    for name, kg in k_grads.items():
        _rtol_close(g_params[name], kg)


@pytest.mark.parametrize("name,kwargs_fn,input_shape", ALL, ids=IDS)
def test_compute_output_shape_matches_keras(name, kwargs_fn, input_shape):
    keras_layer, layer, _ = _pair(name, kwargs_fn, input_shape)
    assert layer.compute_output_shape(input_shape) == tuple(
        keras_layer.compute_output_shape(input_shape))
    unknown_batch = (None,) + tuple(input_shape[1:])
    assert layer.compute_output_shape(unknown_batch) == tuple(
        keras_layer.compute_output_shape(unknown_batch))


@pytest.mark.parametrize("name,kwargs_fn,input_shape", ALL, ids=IDS)
def test_config_matches_keras(name, kwargs_fn, input_shape):
    keras_layer, layer, _ = _pair(name, kwargs_fn, input_shape)
    keras_config = keras_layer.get_config()
    cls = getattr(kconv, name)
    rebuilt = cls.from_config(keras_config)
    assert rebuilt == cls(**kwargs_fn(kconv), dtype="float32")
    expected = {k: v for k, v in keras_config.items() if k not in ("name", "trainable", "dtype")}
    assert layer.get_config() == expected
    # ...and Keras builds the same layer from kconv's config.
    back = getattr(keras.layers, name).from_config(layer.get_config())
    assert {k: v for k, v in back.get_config().items() if k != "name"} == {
        k: v for k, v in keras_config.items() if k != "name"}


@pytest.mark.parametrize("name, kwargs, input_shape", [
    ("Conv2D", dict(filters=4, kernel_size=3, kernel_initializer=None, bias_initializer=None),
     (None, 6, 6, 3)),
    ("SeparableConv1D", dict(filters=4, kernel_size=3, depthwise_initializer=None,
                             pointwise_initializer=None), (None, 8, 3)),
    ("DepthwiseConv2D", dict(kernel_size=3, bias_initializer=None), (None, 6, 6, 3)),
    ("Conv1DTranspose", dict(filters=2, kernel_size=3, kernel_initializer=None), (None, 8, 3)),
])
def test_none_initializers_are_kept_and_make_glorot_uniform_weights(name, kwargs, input_shape):
    """Keras takes ``*_initializer=None``, writes it as null and makes the weight as
    add_weight's default for a float weight, glorot_uniform (a bias too). Shown on Keras
    (same global seed, None against "glorot_uniform": the same weights) and on kconv (same
    key): a None used to be accepted, then fail at init with a bare TypeError."""
    glorot = {k: "glorot_uniform" for k, v in kwargs.items() if k.endswith("_initializer")}
    built = []
    for args in (kwargs, {**kwargs, **glorot}):
        keras.utils.set_random_seed(3)
        keras_layer = getattr(keras.layers, name)(**args)
        keras_layer.build(input_shape)
        built.append({w.path.split("/")[-1]: np.asarray(w.value) for w in keras_layer.weights})
    for w, theirs in built[0].items():
        np.testing.assert_array_equal(theirs, built[1][w])
    assert np.any(built[0]["bias"] != 0) if "bias_initializer" in kwargs else True

    cls = getattr(kconv, name)
    layer = cls(**kwargs)
    key = jax.random.key(0)
    ours = layer.init(key, input_shape)
    expected = cls(**{**kwargs, **glorot}).init(key, input_shape)
    assert ours.keys() == expected.keys()
    for w in ours:
        np.testing.assert_array_equal(ours[w], expected[w])
    keras_config = getattr(keras.layers, name)(**kwargs).get_config()
    config = layer.get_config()
    assert {k: config[k] for k in glorot} == {k: keras_config[k] for k in glorot} == dict.fromkeys(glorot)
    assert cls.from_config(keras_config) == cls(**kwargs, dtype="float32")


def test_enable_lora_takes_none_initializers_as_keras():
    """Keras's enable_lora passes ``initializers.get(None)`` to add_weight: glorot_uniform."""
    layer = kconv.Conv2D(4, 3)
    params = layer.init(jax.random.key(0), (None, 6, 6, 3))
    key = jax.random.key(1)
    _, got = layer.enable_lora(2, a_initializer=None, b_initializer=None, params=params,
                               key=key)
    _, expected = layer.enable_lora(2, a_initializer="glorot_uniform",
                                    b_initializer="glorot_uniform", params=params, key=key)
    for w in ("lora_kernel_a", "lora_kernel_b"):
        np.testing.assert_array_equal(got[w], expected[w])
    assert np.any(np.asarray(got["lora_kernel_b"]) != 0)


@pytest.mark.parametrize("name,kwargs_fn,input_shape", PENALTY_CASES,
                         ids=[c[0] for c in PENALTY_CASES])
def test_regularization_losses_match_keras(name, kwargs_fn, input_shape):
    keras_layer, layer, params = _pair(name, kwargs_fn, input_shape)
    x = np.random.default_rng(2).standard_normal(input_shape).astype(np.float32)
    y = keras_layer(x)  # records the activity penalty in keras_layer.losses
    expected = float(sum(np.asarray(loss) for loss in keras_layer.losses))
    got = layer.regularization_losses(params, layer(params, x))
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    weights_only = float(sum(np.asarray(w.regularizer(w.value)) for w in keras_layer.weights
                             if w.regularizer is not None))
    np.testing.assert_allclose(float(layer.regularization_losses(params)), weights_only,
                               rtol=1e-5)
    assert np.asarray(y).shape == layer(params, x).shape


@pytest.mark.parametrize("name,kwargs_fn,input_shape", PENALTY_CASES,
                         ids=[c[0] for c in PENALTY_CASES])
def test_constrain_matches_keras(name, kwargs_fn, input_shape):
    keras_layer, layer, params = _pair(name, kwargs_fn, input_shape)
    projected = layer.constrain(params)
    for var in keras_layer.weights:
        key = var.path.split("/")[-1]
        expected = var.value if var.constraint is None else var.constraint(var.value)
        _rtol_close(projected[key], expected)


@pytest.mark.parametrize("name", ["Conv1D", "Conv2D", "Conv3D", "SeparableConv1D",
                                  "SeparableConv2D", "DepthwiseConv1D", "DepthwiseConv2D",
                                  "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"])
def test_signature_matches_keras(name):
    import inspect

    keras_params = list(inspect.signature(getattr(keras.layers, name).__init__).parameters
                        .values())[1:-1]  # drop self and **kwargs
    ours = list(inspect.signature(getattr(kconv, name)).parameters.values())
    assert [(p.name, p.default) for p in ours[:len(keras_params)]] == [
        (p.name, p.default) for p in keras_params]
    # Then keyword-only: what Keras takes through **kwargs (LoRA on Conv1D/2D/3D), kconv's
    # extensions beyond Keras, then JAX's.
    kwargs = []
    if name in ("Conv1D", "Conv2D", "Conv3D"):
        kwargs += ["lora_rank", "lora_alpha"]
    if name.endswith("Transpose"):
        kwargs += ["groups"]
    kwargs += ["padding_mode"]
    assert [p.name for p in ours[len(keras_params):]] == kwargs + ["dtype", "param_dtype",
                                                                    "precision"]
    assert all(p.kind is p.KEYWORD_ONLY for p in ours[len(keras_params):])


@pytest.mark.parametrize("name,args,kwargs,shape", [
    ("Conv1D", (4, 3), dict(padding="same"), (2, 0, 2)),
    ("Conv2D", (4, 3), dict(padding="same", strides=2), (1, 0, 6, 2)),
    ("Conv2D", (4, 3), dict(padding="same", dilation_rate=2, data_format=CF), (1, 2, 5, 0)),
    ("Conv3D", (4, 3), dict(padding="same"), (1, 0, 0, 4, 2)),
    ("DepthwiseConv1D", (3,), dict(padding="same", depth_multiplier=2), (1, 0, 2)),
    ("DepthwiseConv2D", (3,), dict(padding="same"), (1, 0, 6, 2)),
    ("SeparableConv1D", (4, 3), dict(padding="same", strides=2), (1, 0, 2)),
    ("SeparableConv2D", (4, 3), dict(padding="same"), (1, 5, 0, 2)),
])
def test_same_padding_of_an_empty_axis_is_keras_empty_output(name, args, kwargs, shape):
    # "same" over an input axis of length 0 gives an output axis of length 0 in Keras
    # (ceil(0 / stride)), as a batch of 0 gives a batch of 0; kconv refused it as a window
    # larger than its input. "valid" and "causal" windows that do not fit stay refused, as
    # in Keras (test_window_larger_than_input).
    x = np.zeros(shape, np.float32)
    keras_layer = getattr(keras.layers, name)(*args, **kwargs)
    want = keras_layer(x)
    layer = getattr(kconv, name)(*args, **kwargs)
    params = {w.path.split("/")[-1]: jnp.asarray(w.numpy()) for w in keras_layer.weights}
    got = jax.jit(layer)(params, x)
    assert got.shape == want.shape == layer.compute_output_shape(shape) == \
        keras_layer.compute_output_shape(shape)
    assert got.dtype == want.dtype
    grads = jax.grad(lambda p, x: jnp.sum(layer(p, x)), argnums=(0, 1))(params, x)
    for g, a in zip(jax.tree.leaves(grads), jax.tree.leaves((params, x))):
        assert g.shape == np.shape(a) and not np.any(g)


def test_fuzz_runs_and_agrees():
    # tests/fuzz_keras.py (run by hand, hundreds of configurations) on a few of them here:
    # the harness itself works, and on these kconv agrees with Keras.
    out = io.StringIO()
    assert fuzz_keras.run(seed=0, count=8, minutes=2, out=out) == [], out.getvalue()
    assert "8 configurations" in out.getvalue()


def test_fuzz_leaves_out_outputs_at_an_activation_kink():
    # Found by the fuzz (seed 3201): a Conv3DTranspose output whose float64 value is
    # -7.3e-9 comes out of XLA's convolution as +8.1e-8 and out of kconv's sub-pixel form
    # as 0.0, both within float32 rounding; selu's slope is 1.05 above 0 and 1.76 below, so
    # the gradients differ by that jump at that output. The fuzz recompares them without
    # such outputs, and must still agree everywhere else.
    cfg = fuzz_keras.Config(
        "Conv3DTranspose", {"kernel_size": 3, "strides": 2, "dilation_rate": 1,
                            "padding": "same", "filters": 12, "use_bias": False,
                            "activation": "selu", "data_format": "channels_last"},
        (2, 5, 5, 4, 7), 646775872)
    outcome, problems, lowerings = fuzz_keras.check(cfg)
    assert (outcome, problems) == ("ok, at a kink", []), problems
    assert lowerings == {"conv_transpose:subpixel_transpose"}
    # Without the activation there is no kink to leave out: plainly equal.
    plain = fuzz_keras.Config(cfg.name, {**cfg.kwargs, "activation": None}, cfg.shape,
                              cfg.seed)
    assert fuzz_keras.check(plain)[:2] == ("ok", [])


@pytest.mark.parametrize("mode", ["auto", "xla"])
def test_fuzz_leaves_keras_uncalled_where_xla_would_abort(mode):
    # Seed 3225's configuration 145 ended the fuzz: XLA:CPU (jaxlib 0.10.2) aborts the
    # process compiling the input-dilated convolution Keras's layer builds for it. The fuzz
    # now reads that off Keras's traced program and leaves its layer uncalled; kconv's own
    # forward and gradients still run (in either mode: its guard keeps them compilable).
    kwargs = {"filters": 3, "kernel_size": (3, 2, 3), "strides": (1, 2, 1),
              "padding": "same", "output_padding": (0, 0, 0),
              "data_format": "channels_last"}
    cfg = fuzz_keras.Config("Conv3DTranspose", kwargs, (1, 2, 3, 4, 35), 7)
    with kconv.config.conv_lowering(mode):
        assert fuzz_keras.check(cfg)[:2] == ("Keras would abort", [])
    # The same layer without the output padding is an ordinary program: compared.
    plain = fuzz_keras.Config(cfg.name, {**kwargs, "output_padding": None}, cfg.shape, 7)
    assert fuzz_keras.check(plain)[:2] == ("ok", [])
    # The test itself, on the program Keras's layer builds (lax's, Keras's "same" padding)
    # and on kconv's for the same layer under "xla" (guarded): forward and gradients.
    x = jnp.zeros(cfg.shape)
    lax_transpose = functools.partial(jax.lax.conv_transpose, strides=(1, 2, 1),
                                      padding=((1, 1), (0, 0), (1, 1)),
                                      dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    assert fuzz_keras.xla_would_abort(lax_transpose, x, jnp.zeros((3, 2, 3, 35, 3)))
    ours = functools.partial(kconv.ops.conv_transpose, strides=(1, 2, 1), padding="same",
                             output_padding=0)
    with kconv.config.conv_lowering("xla"):
        assert not fuzz_keras.xla_would_abort(
            jax.grad(lambda x, k: jnp.sum(ours(x, k)), argnums=(0, 1)), x,
            jnp.zeros((3, 2, 3, 3, 35)))
