"""kconv.activations against Keras 3 (JAX backend) as the oracle: values, gradients,
signatures, names and the config forms; sparsemax also against an independent NumPy
reference, because Keras 3.15's sparsemax is wrong whenever the support has more than
one entry (keras-team/keras#23425)."""

import os

os.environ["KERAS_BACKEND"] = "jax"

import contextlib
import functools
import inspect
import warnings

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest
from jax.test_util import check_grads
from keras.src import activations as keras_activations

from kconv import activations

RTOL, ATOL = 1e-5, 1e-6


@contextlib.contextmanager
def strict():
    """kconv code must not rely on implicit dtype or rank promotion."""
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        yield


def _inputs(shape=(4, 6, 8), seed=0):
    rng = np.random.default_rng(seed)
    x = (3.0 * rng.standard_normal(shape)).astype(np.float32)
    # Exact kinks and saturation points of the piecewise activations.
    x.reshape(-1)[:12] = [-6, -3, -1, -0.5, 0, 0.5, 1, 3, 6, -0.25, 0.25, 7]
    return x


# (name, kwargs): every Keras activation, several with non-default arguments.
CASES = [
    ("celu", {}), ("celu", {"alpha": 2.0}),
    ("elu", {}), ("elu", {"alpha": 0.5}),
    ("exponential", {}),
    ("gelu", {}), ("gelu", {"approximate": True}),
    ("glu", {}), ("glu", {"axis": 0}), ("glu", {"axis": 1}),
    ("hard_shrink", {}), ("hard_shrink", {"threshold": 1.0}),
    ("hard_sigmoid", {}),
    ("hard_silu", {}), ("hard_swish", {}),
    ("hard_tanh", {}),
    ("leaky_relu", {}), ("leaky_relu", {"negative_slope": 0.05}),
    ("linear", {}),
    ("log_sigmoid", {}),
    ("log_softmax", {}), ("log_softmax", {"axis": 0}), ("log_softmax", {"axis": (0, 2)}),
    ("mish", {}),
    ("relu", {}),
    ("relu", {"negative_slope": 0.1}),
    ("relu", {"max_value": 6}),
    ("relu", {"max_value": 1.5}),
    ("relu", {"threshold": 0.5}),
    ("relu", {"threshold": -1.0, "max_value": 2.0}),
    ("relu", {"negative_slope": 0.2, "threshold": 0.5}),
    ("relu", {"negative_slope": 0.3, "max_value": 2.0}),
    ("relu", {"negative_slope": 0.3, "max_value": 6.0, "threshold": -0.5}),
    ("relu6", {}),
    ("selu", {}),
    ("sigmoid", {}),
    ("silu", {}), ("swish", {}),
    ("soft_shrink", {}), ("soft_shrink", {"threshold": 1.0}),
    ("softmax", {}), ("softmax", {"axis": 1}), ("softmax", {"axis": (1, 2)}),
    ("softplus", {}),
    ("softsign", {}),
    ("sparse_plus", {}),
    ("sparse_sigmoid", {}),
    ("squareplus", {}), ("squareplus", {"b": 1.0}),
    ("tanh", {}),
    ("tanh_shrink", {}),
    ("threshold", {"threshold": 0.3, "default_value": -1.0}),
]


def _case_id(case):
    name, kwargs = case
    return name + "".join(f"-{k}={v}" for k, v in kwargs.items())


@functools.lru_cache(maxsize=None)
def _keras_output(case_id):
    name, kwargs = dict((_case_id(c), c) for c in CASES)[case_id]
    keras_fn = functools.partial(getattr(keras.activations, name), **kwargs)
    return np.asarray(jax.jit(keras_fn)(_inputs()))


# The activations kconv writes by hand; the others call jax.nn functions, which are
# jitted themselves, so an eager call of those compiles the same program as under jit.
HAND_WRITTEN = {"relu", "soft_shrink", "hard_shrink", "threshold", "tanh_shrink",
                "exponential", "linear"}


def _value_cases():
    for case in CASES:
        yield pytest.param(case, "jit", id=_case_id(case) + "-jit")
        if case[0] in HAND_WRITTEN:
            yield pytest.param(case, "eager", id=_case_id(case) + "-eager")


@pytest.mark.parametrize("case, mode", list(_value_cases()))
def test_matches_keras(case, mode):
    name, kwargs = case
    x = _inputs()
    expected = _keras_output(_case_id(case))
    fn = functools.partial(getattr(activations, name), **kwargs)
    if mode == "jit":
        fn = jax.jit(fn)
    with strict():
        actual = fn(jnp.asarray(x))
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=RTOL, atol=ATOL)


def test_every_keras_activation_is_covered_by_the_value_tests():
    assert {name for name, _ in CASES} | {"sparsemax"} == set(keras_activations.ALL_OBJECTS_DICT)


GRAD_CASES = [
    ("relu", {}),
    ("relu", {"negative_slope": 0.3, "max_value": 2.0, "threshold": -0.5}),
    ("relu", {"max_value": 6}),
    ("gelu", {}),
    ("elu", {}),
    ("mish", {}),
    ("soft_shrink", {}),
    ("log_softmax", {}),
    ("glu", {}),
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=_case_id)
def test_gradient_matches_keras(case):
    name, kwargs = case
    x = jnp.asarray(_inputs(seed=1))
    weights = jnp.asarray(np.random.default_rng(2).standard_normal(
        getattr(keras.activations, name)(x, **kwargs).shape).astype(np.float32))

    def loss(f):
        return lambda v: jnp.sum(f(v, **kwargs) * weights)

    # Keras's JAX-backend activations are traceable, so jax.grad differentiates them too.
    expected = jax.jit(jax.grad(loss(getattr(keras.activations, name))))(x)
    with strict():
        actual = jax.jit(jax.grad(loss(getattr(activations, name))))(x)
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", ["gelu", "elu", "mish", "log_softmax", "squareplus"])
def test_numerical_gradients_of_smooth_activations(name):
    x = jnp.asarray(np.random.default_rng(3).uniform(0.1, 2.0, (3, 4)), jnp.float64
                    if jax.config.jax_enable_x64 else jnp.float32)
    x = x * jnp.asarray([-1.0, 1.0, -1.0, 1.0], x.dtype)  # stay away from x == 0
    check_grads(getattr(activations, name), (x,), order=1, modes=("rev",), atol=2e-2,
                rtol=2e-2)


# --- sparsemax -------------------------------------------------------------------


def _sparsemax_reference(z, axis=-1):
    """Independent float64 reference: bisection for the tau with sum(max(z - tau, 0)) = 1."""
    z = np.moveaxis(np.asarray(z, np.float64), axis, -1)
    lo = z.max(axis=-1, keepdims=True) - 1.0  # sum >= 1 here
    hi = z.max(axis=-1, keepdims=True)        # sum == 0 here
    for _ in range(200):
        mid = (lo + hi) / 2
        too_low = np.maximum(z - mid, 0).sum(axis=-1, keepdims=True) > 1
        lo, hi = np.where(too_low, mid, lo), np.where(too_low, hi, mid)
    return np.moveaxis(np.maximum(z - (lo + hi) / 2, 0), -1, axis)


@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_sparsemax_matches_reference(axis, mode):
    x = _inputs(seed=4) / 3.0  # spread ~1: supports of several entries
    fn = functools.partial(activations.sparsemax, axis=axis)
    if mode == "jit":
        fn = jax.jit(fn)
    with strict():
        actual = np.asarray(fn(jnp.asarray(x)))
    np.testing.assert_allclose(actual, _sparsemax_reference(x, axis), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(actual.sum(axis=axis), 1.0, rtol=1e-5)
    assert (actual >= 0).all()
    # The test exercises supports of several entries (where Keras 3.15 is wrong).
    assert (np.count_nonzero(actual, axis=axis) > 1).any()


def test_sparsemax_matches_keras_when_one_entry_survives():
    x = _inputs(seed=5)
    rows = np.arange(x.shape[0])[:, None, None]
    x[rows, np.arange(6)[None, :, None], np.argmax(x, axis=-1)[..., None]] += 20.0
    expected = np.asarray(keras.activations.sparsemax(x))
    np.testing.assert_allclose(np.asarray(activations.sparsemax(x)), expected, rtol=RTOL,
                               atol=ATOL)


def test_sparsemax_gradient_is_finite_and_projects():
    x = jnp.asarray(_inputs(seed=6)[0] / 3.0)
    g = jax.jit(jax.jacobian(activations.sparsemax))(x[0])
    assert np.isfinite(np.asarray(g)).all()
    # The output always sums to one, so the Jacobian's columns sum to zero.
    np.testing.assert_allclose(np.asarray(g).sum(axis=0), 0.0, atol=1e-5)


# --- signatures, names, get / serialize / deserialize ----------------------------


def _parameters(fn):
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", sorted(keras_activations.ALL_OBJECTS_DICT))
def test_signature_matches_keras(name):
    assert _parameters(getattr(activations, name)) == _parameters(
        getattr(keras.activations, name))


@pytest.mark.parametrize("name", sorted(keras_activations.ALL_OBJECTS_DICT))
def test_get_serialize_and_keras_layer_config_agree(name):
    fn = activations.get(name)
    assert fn is getattr(activations, name)
    keras_fn = keras.activations.get(name)
    assert activations.serialize(fn) == keras.activations.serialize(keras_fn)
    # What a Keras layer writes in its config, and what kconv reads back from it.
    layer_config = keras.layers.Dense(2, activation=name).get_config()
    assert activations.serialize(fn) == layer_config["activation"]
    assert activations.get(layer_config["activation"]).__name__ == keras_fn.__name__
    # Keras reads kconv's name back as the same function.
    assert keras.activations.get(activations.serialize(fn)) is keras_fn


@pytest.mark.parametrize("name", ["relu", "gelu", "silu", "hard_silu", "linear"])
def test_deserialize_reads_keras_object_config(name):
    config = keras.saving.serialize_keras_object(keras.activations.get(name))
    assert config["class_name"] == "function" and config["config"] == name
    assert activations.deserialize(config) is activations.get(name)
    assert activations.get(config) is activations.get(name)


def test_deserialize_forms():
    assert activations.deserialize("relu") is activations.relu
    assert activations.deserialize("swish") is activations.silu
    function_form = {"class_name": "function", "config": "tanh"}
    assert activations.deserialize(function_form) is activations.tanh
    # The older form, which keras.activations.deserialize also reads.
    legacy = {"class_name": "relu", "config": None}
    assert keras.activations.deserialize(legacy) is keras.activations.relu
    assert activations.deserialize(legacy) is activations.relu


def test_get_none_and_callables():
    assert activations.get(None) is activations.linear
    assert activations.get(jnp.tanh) is jnp.tanh
    assert keras.layers.Dense(2).get_config()["activation"] == activations.serialize(None)
    assert activations.serialize(None) == "linear"


@pytest.mark.parametrize("name", sorted(keras_activations.ALL_OBJECTS_DICT))
def test_keras_functions_become_kconv_ones(name):
    """A layer given keras.activations.relu holds kconv's relu (hashable, the same values,
    written by name); a foreign function that is not Keras's stays itself."""
    theirs = keras_activations.ALL_OBJECTS_DICT[name]
    assert activations.get(theirs) is activations.get(name)
    assert activations.get(jax.nn.relu) is jax.nn.relu


@pytest.mark.parametrize("fn,name", [(jax.nn.gelu, "gelu"), (jax.nn.leaky_relu, "leaky_relu")])
def test_serialize_warns_where_a_foreign_function_is_not_keras(fn, name):
    """jax.nn.gelu (tanh approximation) and jax.nn.leaky_relu (slope 0.01) are written by
    name, as Keras writes jax.nn.gelu, with a warning: they read back as Keras's."""
    with pytest.warns(UserWarning, match=rf"is written as '{name}'.*other values than "
                                         rf"Keras's '{name}' \(at x = "):
        assert activations.serialize(fn) == name
    if name == "gelu":
        assert keras.activations.serialize(fn) == name  # Keras's own behaviour
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for same in (jax.nn.relu, jax.nn.silu, jax.nn.softmax, jax.nn.glu, jnp.tanh):
            assert activations.serialize(same) == same.__name__


def test_serialize_aliases_and_foreign_callables():
    assert activations.serialize(activations.swish) == "silu"
    assert activations.serialize(activations.hard_swish) == "hard_silu"
    assert activations.serialize(jax.nn.relu) == "relu"

    def my_act(x):
        return x

    assert activations.serialize(my_act) == "my_act"
    with pytest.raises(ValueError, match="lambda"):
        activations.serialize(lambda x: x)
    with pytest.raises(ValueError, match="Cannot serialize"):
        activations.serialize(functools.partial(activations.relu, max_value=1.0))


def test_unknown_name_error_names_the_value_and_lists_valid_names():
    with pytest.raises(ValueError, match="'nope'") as info:
        activations.get("nope")
    assert "'relu'" in str(info.value) and "'sparsemax'" in str(info.value)
    # Keras is case-sensitive; so is kconv, but it says what was probably meant.
    with pytest.raises(ValueError, match="did you mean 'relu'"):
        activations.get("ReLU")
    with pytest.raises(ValueError):
        keras.activations.get("ReLU")


@pytest.mark.parametrize("bad", [3, 2.5, ["relu"]])
def test_get_rejects_non_identifiers(bad):
    with pytest.raises(TypeError, match="activation"):
        activations.get(bad)


@pytest.mark.parametrize("bad", [{"config": "relu"}, {"class_name": "function", "config": 3}])
def test_deserialize_rejects_malformed_dicts(bad):
    with pytest.raises(ValueError, match="class_name"):
        activations.deserialize(bad)


def test_linear_returns_input_unchanged():
    x = [1.0, -2.0]
    assert activations.linear(x) is x
    assert keras.activations.linear(x) is x


def test_exponential_casts_ints_to_float32_like_keras():
    x = np.array([0, 1, 2], np.int32)
    expected = keras.activations.exponential(x)
    actual = activations.exponential(x)
    assert actual.dtype == expected.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=RTOL)


@pytest.mark.parametrize("name", ["relu", "gelu", "softmax", "sigmoid", "hard_silu"])
def test_bfloat16_inputs_keep_their_dtype_like_keras(name):
    x = jnp.asarray(_inputs(seed=7), jnp.bfloat16)
    expected = getattr(keras.activations, name)(x)
    actual = getattr(activations, name)(x)
    assert actual.dtype == expected.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(actual, np.float32), np.asarray(expected, np.float32),
                               rtol=1e-2, atol=1e-2)


# --- Keras's activation layers as a layer's activation ---------------------------------

# (Keras layer, kconv's): Conv2D(..., activation=keras.layers.LeakyReLU(0.2)) and kin.
ACTIVATION_LAYERS = [
    (lambda: keras.layers.ReLU(), activations.ReLU()),
    (lambda: keras.layers.ReLU(max_value=6.0, negative_slope=0.1, threshold=0.5),
     activations.ReLU(6.0, 0.1, 0.5)),
    (lambda: keras.layers.ReLU(max_value=6.0), activations.ReLU(max_value=6)),
    (lambda: keras.layers.LeakyReLU(), activations.LeakyReLU()),
    (lambda: keras.layers.LeakyReLU(0.05), activations.LeakyReLU(0.05)),
    (lambda: keras.layers.ELU(), activations.ELU()),
    (lambda: keras.layers.ELU(0.5), activations.ELU(alpha=0.5)),
    (lambda: keras.layers.Softmax(), activations.Softmax()),
    (lambda: keras.layers.Softmax(axis=1), activations.Softmax(1)),
    (lambda: keras.layers.Softmax(axis=(0, 2)), activations.Softmax([0, 2])),
]


@pytest.mark.parametrize("make,ours", ACTIVATION_LAYERS,
                         ids=[repr(ours) for _, ours in ACTIVATION_LAYERS])
def test_keras_activation_layers_match_keras(make, ours):
    """Values and gradients as the Keras layer's; its live object, its config and kconv's
    config (what Keras reads back) all give kconv's class, hashable and equal."""
    theirs = make()
    x = _inputs()
    np.testing.assert_allclose(ours(x), theirs(x), rtol=RTOL, atol=ATOL)
    ct = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    grad = jax.grad(lambda x: jnp.sum(ours(x) * ct))(x)
    np.testing.assert_allclose(grad, jax.grad(lambda x: jnp.sum(theirs(x) * ct))(x),
                               rtol=RTOL, atol=ATOL)
    serialized = keras.saving.serialize_keras_object(theirs)
    assert activations.get(theirs) == activations.get(serialized) == ours
    assert hash(activations.get(theirs)) == hash(ours)
    back = keras.saving.deserialize_keras_object(activations.serialize(ours))
    assert type(back) is type(theirs)
    np.testing.assert_array_equal(back(x), theirs(x))


def test_keras_activation_layer_configs_from_tf_keras_and_the_activation_layer():
    tf_keras = {"class_name": "LeakyReLU",
                "config": {"name": "leaky_re_lu", "trainable": True, "dtype": "float32",
                           "alpha": 0.1}}
    assert activations.get(tf_keras) == activations.LeakyReLU(0.1)
    assert activations.get(keras.saving.serialize_keras_object(
        keras.layers.Activation("gelu"))) is activations.gelu
    assert activations.get(keras.layers.Activation(keras.activations.tanh)) is activations.tanh
    assert activations.get({"class_name": "ReLU", "config": None}) == activations.ReLU()


@pytest.mark.parametrize("bad,error,match", [
    (lambda: keras.layers.PReLU(), TypeError,
     r"A PReLU layer as an activation has weights of its own.*apply the PReLU to the "
     r"layer's output instead"),
    (lambda: {"class_name": "PReLU", "config": {}}, TypeError, r"PReLU"),
    (lambda: {"class_name": "LeakyReLU", "config": {"negative_slope": -0.1}}, ValueError,
     r"LeakyReLU: argument `negative_slope` cannot be negative, got -0.1"),
    (lambda: {"class_name": "ReLU", "config": {"max_value": -1}}, ValueError,
     r"ReLU: argument `max_value` cannot be negative"),
    (lambda: {"class_name": "ReLU", "config": {"negative_slope": None}}, TypeError,
     r"ReLU: argument `negative_slope` must be a real number, got None"),
    (lambda: {"class_name": "ELU", "config": {"alpha": "1"}}, TypeError,
     r"ELU: argument `alpha` must be a real number"),
    (lambda: {"class_name": "Softmax", "config": {"axis": 1.0}}, TypeError,
     r"Softmax: argument `axis` must be an int or a tuple of ints, got 1.0"),
    (lambda: {"class_name": "Softmax", "config": {"axes": 1}}, TypeError,
     r"Softmax: unexpected config key\(s\) \['axes'\]"),
    (lambda: {"class_name": "Activation", "config": {}}, ValueError,
     r"An Activation layer config needs an 'activation'"),
])
def test_keras_activation_layer_errors(bad, error, match):
    with pytest.raises(error, match=match):
        activations.get(bad())
