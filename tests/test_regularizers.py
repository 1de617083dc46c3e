"""kconv.regularizers against Keras 3 (JAX backend) as the oracle: penalty values and
gradients on random arrays, validation, names, signatures and the config forms; the
penalties also against float64 NumPy formulas."""

import os

os.environ["KERAS_BACKEND"] = "jax"

import contextlib
import dataclasses
import inspect
import json

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest
from keras.src import regularizers as keras_regularizers

from kconv import regularizers

RTOL, ATOL = 1e-5, 1e-6


@contextlib.contextmanager
def strict():
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        yield


def _array(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


CASES = [
    ("L1", {}), ("L1", {"l1": 0.3}),
    ("L2", {}), ("L2", {"l2": 0.2}),
    ("L1L2", {}), ("L1L2", {"l1": 0.1, "l2": 0.2}), ("L1L2", {"l1": 0.1}), ("L1L2", {"l2": 0.1}),
    ("OrthogonalRegularizer", {}),
    ("OrthogonalRegularizer", {"factor": 0.5, "mode": "columns"}),
    ("OrthogonalRegularizer", {"factor": 2.0, "mode": "rows"}),
]
ELEMENTWISE_SHAPES = [(3, 3, 4, 8), (7,)]
MATRIX_SHAPES = [(5, 6), (6, 5)]  # OrthogonalRegularizer: rank 2 only, both orientations


def _case_id(case):
    name, kwargs = case
    return name + "".join(f"-{k}={v}" for k, v in kwargs.items())


def _pair(name, **kwargs):
    return getattr(regularizers, name)(**kwargs), getattr(keras.regularizers, name)(**kwargs)


def _value_cases():
    for case in CASES:
        shapes = MATRIX_SHAPES if case[0] == "OrthogonalRegularizer" else ELEMENTWISE_SHAPES
        for shape in shapes:
            yield pytest.param(case, shape, "jit", id=f"{_case_id(case)}-{shape}-jit")
        # Eagerly too (the Python branches on the factors run either way).
        yield pytest.param(case, shapes[0], "eager", id=f"{_case_id(case)}-{shapes[0]}-eager")


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_live_keras_regularizers_become_kconv_ones(case):
    """A Keras regularizer object given to a layer is read through its config as kconv's
    (hashable, serializable); a user's own Keras subclass stays itself (Keras's calling
    convention is kconv's: an array in, a scalar out)."""
    ours, theirs = _pair(case[0], **case[1])
    assert regularizers.get(theirs) == ours
    assert regularizers.get(type(theirs)) == type(ours)()

    class Twice(keras.regularizers.L2):
        def __call__(self, x):
            return 2 * super().__call__(x)
    mine = Twice(0.1)
    assert regularizers.get(mine) is mine


@pytest.mark.parametrize("case, shape, mode", list(_value_cases()))
def test_penalty_matches_keras(case, shape, mode):
    ours, theirs = _pair(case[0], **case[1])
    x = _array(shape)
    expected = np.asarray(theirs(jnp.asarray(x)))
    fn = ours if mode == "eager" else jax.jit(ours)
    with strict():
        actual = fn(jnp.asarray(x))
    assert actual.shape == () and actual.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=RTOL, atol=ATOL)


def _orthogonal_reference(x, factor, mode):
    v = x if mode == "rows" else x.T
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    cos = np.abs(v @ v.T)
    n = len(v)
    return factor * (cos.sum() - np.trace(cos)) / (n * (n - 1))


def test_penalties_match_float64_formulas():
    x = _array((5, 6), seed=1).astype(np.float64)
    assert float(regularizers.L1(0.3)(x)) == pytest.approx(0.3 * np.abs(x).sum(), rel=1e-6)
    assert float(regularizers.L2(0.2)(x)) == pytest.approx(0.2 * np.square(x).sum(), rel=1e-6)
    assert float(regularizers.L1L2(0.1, 0.2)(x)) == pytest.approx(
        0.1 * np.abs(x).sum() + 0.2 * np.square(x).sum(), rel=1e-6)
    for mode in ("rows", "columns"):
        assert float(regularizers.OrthogonalRegularizer(0.5, mode)(x)) == pytest.approx(
            _orthogonal_reference(x, 0.5, mode), rel=1e-5)


@pytest.mark.parametrize("case", [CASES[1], CASES[3], CASES[5], CASES[9], CASES[10]],
                         ids=_case_id)
def test_gradient_matches_keras(case):
    ours, theirs = _pair(case[0], **case[1])
    x = jnp.asarray(_array((5, 6), seed=2))
    expected = jax.jit(jax.grad(theirs))(x)
    with strict():
        actual = jax.jit(jax.grad(ours))(x)
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=RTOL, atol=ATOL)


def test_orthogonal_regularizer_is_rank_2_only():
    with pytest.raises(ValueError, match=r"OrthogonalRegularizer.*rank 2.*\(3, 3, 4\)"):
        regularizers.OrthogonalRegularizer()(jnp.ones((3, 3, 4)))
    with pytest.raises(ValueError):
        keras.regularizers.OrthogonalRegularizer()(jnp.ones((3, 3, 4)))


def test_orthogonal_regularizer_zero_rows_do_not_produce_nan():
    # keras.ops.normalize caps 1/norm at 1/epsilon, so an all-zero row contributes 0.
    x = np.array([[0.0, 0.0], [1.0, 2.0], [2.0, -1.0]], np.float32)
    ours, theirs = _pair("OrthogonalRegularizer", factor=1.0)
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(theirs(jnp.asarray(x))), atol=1e-7)
    assert float(ours(x)) == pytest.approx(0.0, abs=1e-6)  # rows 2 and 3 are orthogonal


def test_l1l2_skips_zero_terms_like_keras():
    x = jnp.asarray([1.0, jnp.inf])
    assert float(regularizers.L1L2(l1=0.0, l2=0.0)(x)) == 0.0
    assert float(keras.regularizers.L1L2(l1=0.0, l2=0.0)(x)) == 0.0


# --- validation ------------------------------------------------------------------


@pytest.mark.parametrize("make, match", [
    (lambda: regularizers.L1(-1), r"L1.*`l1`.*-1"),
    (lambda: regularizers.L2(float("nan")), r"L2.*`l2`.*nan"),
    (lambda: regularizers.L1L2(l2=float("inf")), r"L1L2.*`l2`.*inf"),
    (lambda: regularizers.L1L2(l1="0.1"), r"L1L2.*`l1`.*'0.1'"),
    (lambda: regularizers.OrthogonalRegularizer(factor=-0.5), r"OrthogonalRegularizer.*`factor`"),
    (lambda: regularizers.OrthogonalRegularizer(mode="diag"),
     r"OrthogonalRegularizer.*`mode`.*'diag'"),
])
def test_validation_errors_name_class_argument_and_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_keras_rejects_the_same_values():
    for make in (lambda: keras.regularizers.L1(-1), lambda: keras.regularizers.L2(float("nan")),
                 lambda: keras.regularizers.OrthogonalRegularizer(mode="diag")):
        with pytest.raises(ValueError):
            make()


def test_none_means_default_like_keras():
    assert regularizers.L1(None) == regularizers.L1()
    assert regularizers.L2(None) == regularizers.L2()
    assert regularizers.L1L2(None, None) == regularizers.L1L2()
    assert keras.regularizers.L1L2(None, None).get_config() == regularizers.L1L2().get_config()


def test_factors_are_rounded_to_float32_like_keras():
    assert regularizers.L1(0.01).l1 == float(np.float32(0.01))
    assert regularizers.OrthogonalRegularizer(0.1).factor == float(np.float32(0.1))
    assert regularizers.L2(0.01).l2 == 0.01  # L2 keeps a Python float in Keras too


def test_hashable_values():
    assert regularizers.L1(0.1) == regularizers.L1(0.1)
    assert hash(regularizers.L1L2(0.1, 0.2)) == hash(regularizers.L1L2(0.1, 0.2))
    assert regularizers.L1(0.1) != regularizers.L2(0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        regularizers.L1().l1 = 2.0  # type: ignore[misc]
    out = jax.jit(lambda x, reg: reg(x), static_argnums=1)(jnp.ones(3), regularizers.L2(1.0))
    assert float(out) == 3.0


@pytest.mark.parametrize("name", ["L1", "L2", "L1L2", "OrthogonalRegularizer"])
def test_signature_matches_keras(name):
    ours = inspect.signature(getattr(regularizers, name)).parameters
    theirs = inspect.signature(getattr(keras.regularizers, name)).parameters
    assert [(p.name, p.default) for p in ours.values()] == [
        (p.name, p.default) for p in theirs.values()]


# --- names, get, serialize, deserialize ------------------------------------------

KERAS_NAMES = sorted(set(keras_regularizers.ALL_OBJECTS_DICT) - {"Regularizer", "regularizer"})


@pytest.mark.parametrize("name", KERAS_NAMES)
def test_get_every_keras_name(name):
    ours = regularizers.get(name)
    theirs = keras.regularizers.get(name)
    assert regularizers.serialize(ours) == keras.regularizers.serialize(theirs)


def test_l1_l2_name_means_keras_3_l1l2():
    # Keras 3 exports L1L2 as keras.regularizers.l1_l2, but its get() only knows "l1l2".
    assert regularizers.get("l1_l2") == regularizers.get("l1l2") == regularizers.L1L2()
    assert regularizers.serialize(regularizers.get("l1_l2")) == keras.regularizers.serialize(
        keras.regularizers.l1_l2())
    assert regularizers.l1_l2 is regularizers.L1L2 and regularizers.l1 is regularizers.L1


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_serialization_round_trips_through_keras(case):
    ours, theirs = _pair(case[0], **case[1])
    config = regularizers.serialize(ours)
    assert config == keras.regularizers.serialize(theirs)
    rebuilt = keras.regularizers.deserialize(config)
    assert type(rebuilt) is type(theirs) and rebuilt.get_config() == theirs.get_config()
    assert regularizers.deserialize(keras.regularizers.serialize(theirs)) == ours
    assert regularizers.deserialize(json.loads(json.dumps(config))) == ours
    assert regularizers.get(config) == ours


def test_keras_layer_config():
    config = keras.layers.Conv2D(4, 3, kernel_regularizer="l2",
                                 bias_regularizer=keras.regularizers.L1L2(0.1, 0.2)).get_config()
    assert regularizers.serialize(regularizers.get("l2")) == config["kernel_regularizer"]
    assert regularizers.get(config["bias_regularizer"]) == regularizers.L1L2(0.1, 0.2)


@pytest.mark.parametrize("config, expected", [
    ({"class_name": "L2", "config": {"l2": 0.05}}, regularizers.L2(0.05)),
    ({"class_name": "L1L2", "config": {"l1": 0.0, "l2": 0.1}}, regularizers.L1L2(l2=0.1)),
    ({"class_name": "l1", "config": {"l1": 0.5}}, regularizers.L1(0.5)),
    ({"class_name": "OrthogonalRegularizer", "config": {"factor": 0.1, "mode": "columns"}},
     regularizers.OrthogonalRegularizer(0.1, "columns")),
    ({"module": "keras.regularizers", "class_name": "L1", "config": {"l1": 0.2},
      "registered_name": None}, regularizers.L1(0.2)),
    ("L2", regularizers.L2()),
    ("orthogonal_regularizer", regularizers.OrthogonalRegularizer()),
])
def test_deserialize_forms(config, expected):
    assert regularizers.deserialize(config) == expected


def test_get_passes_through_none_classes_and_callables():
    assert regularizers.get(None) is None
    assert regularizers.get(regularizers.L2) == regularizers.L2()

    def penalty(x):
        return 0.0

    assert regularizers.get(penalty) is penalty
    reg = regularizers.L1(0.5)
    assert regularizers.get(reg) is reg


def test_unknown_names_and_bad_identifiers():
    with pytest.raises(ValueError, match=r"'l3'.*Valid names:.*'l1_l2'"):
        regularizers.get("l3")
    with pytest.raises(ValueError, match="'L1_L2'"):
        regularizers.get("L1_L2")
    with pytest.raises(TypeError, match="regularizer identifier 0.1"):
        regularizers.get(0.1)
    with pytest.raises(ValueError, match="class_name"):
        regularizers.deserialize({"config": {"l1": 0.1}})
    with pytest.raises(TypeError, match=r"L1.*'l2'"):
        regularizers.deserialize({"class_name": "L1", "config": {"l2": 0.1}})
    with pytest.raises(TypeError, match="Cannot serialize"):
        regularizers.serialize(lambda x: 0.0)
