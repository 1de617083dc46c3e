"""kconv.constraints against Keras 3 (JAX backend) as the oracle: projections of random
conv kernels, validation, names, signatures and the config forms; the norms of the
projected weights also against the definitions, in float64 NumPy."""

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
from keras.src import constraints as keras_constraints

from kconv import constraints

RTOL, ATOL = 1e-5, 1e-6


@contextlib.contextmanager
def strict():
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        yield


def _kernel(shape=(3, 3, 4, 8), seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape)
    # Per-filter scales from 0.05 to 5 so that norms fall below, inside and above the
    # bounds of every case.
    scales = np.geomspace(0.05, 5.0, shape[-1]) / np.sqrt(np.prod(shape[:-1]))
    return (w * scales).astype(np.float32)


CASES = [
    ("MaxNorm", {}),
    ("MaxNorm", {"max_value": 1.5, "axis": [0, 1, 2]}),
    ("MaxNorm", {"max_value": 0.5, "axis": -1}),
    ("MaxNorm", {"max_value": 1, "axis": None}),
    ("MinMaxNorm", {}),
    ("MinMaxNorm", {"min_value": 0.5, "max_value": 1.5, "rate": 0.7, "axis": [0, 1, 2]}),
    ("MinMaxNorm", {"min_value": 1.0, "max_value": 2.0, "axis": 3}),
    ("NonNeg", {}),
    ("UnitNorm", {}),
    ("UnitNorm", {"axis": [0, 1, 2]}),
    ("UnitNorm", {"axis": (1, 2)}),
]


def _case_id(case):
    name, kwargs = case
    return name + "".join(f"-{k}={v}" for k, v in kwargs.items())


def _pair(name, **kwargs):
    return getattr(constraints, name)(**kwargs), getattr(keras.constraints, name)(**kwargs)


def _value_cases():
    eager_done = set()
    for case in CASES:
        yield pytest.param(case, "jit", id=_case_id(case) + "-jit")
        if case[0] not in eager_done:  # one eager run per class: the code has no branches
            eager_done.add(case[0])
            yield pytest.param(case, "eager", id=_case_id(case) + "-eager")


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_live_keras_constraints_become_kconv_ones(case):
    """A Keras constraint object given to a layer is read through its config as kconv's
    (hashable, serializable, the same projection)."""
    ours, theirs = _pair(case[0], **case[1])
    assert constraints.get(theirs) == ours
    assert constraints.get(type(theirs)) == type(ours)()


@pytest.mark.parametrize("case, mode", list(_value_cases()))
def test_projection_matches_keras(case, mode):
    ours, theirs = _pair(case[0], **case[1])
    w = _kernel()
    expected = np.asarray(theirs(jnp.asarray(w)))
    fn = ours if mode == "eager" else jax.jit(ours)
    with strict():
        actual = fn(jnp.asarray(w))
    assert actual.shape == w.shape and actual.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=RTOL, atol=ATOL)


def test_projected_norms_follow_the_definitions():
    w = _kernel().astype(np.float64)
    axis = (0, 1, 2)
    norms = np.sqrt((w**2).sum(axis=axis))

    def out_norms(c):
        return np.sqrt((np.asarray(c(w), np.float64) ** 2).sum(axis=axis))

    np.testing.assert_allclose(out_norms(constraints.MaxNorm(1.5, axis)),
                               np.minimum(norms, 1.5), rtol=1e-5)
    np.testing.assert_allclose(out_norms(constraints.UnitNorm(axis)), 1.0, rtol=1e-5)
    expected = 0.7 * np.clip(norms, 0.5, 1.5) + 0.3 * norms
    np.testing.assert_allclose(out_norms(constraints.MinMaxNorm(0.5, 1.5, 0.7, axis)), expected,
                               rtol=1e-5)
    assert (np.asarray(constraints.NonNeg()(w)) >= 0).all()


def test_zero_weights_stay_finite():
    w = jnp.zeros((3, 4))
    for c in (constraints.MaxNorm(), constraints.MinMaxNorm(1.0, 2.0), constraints.UnitNorm()):
        np.testing.assert_array_equal(np.asarray(c(w)), 0.0)


def test_gradient_matches_keras():
    ours, theirs = _pair("MinMaxNorm", min_value=0.5, max_value=1.5, rate=0.7, axis=[0, 1, 2])
    w = jnp.asarray(_kernel(seed=1))
    weights = jnp.asarray(_kernel(seed=2))
    expected = jax.jit(jax.grad(lambda v: jnp.sum(theirs(v) * weights)))(w)
    with strict():
        actual = jax.jit(jax.grad(lambda v: jnp.sum(ours(v) * weights)))(w)
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=RTOL, atol=ATOL)


# --- arguments -------------------------------------------------------------------


def test_axis_lists_are_stored_as_tuples_and_hashable():
    c = constraints.MaxNorm(2, axis=[0, 1, 2])
    assert c.axis == (0, 1, 2)
    assert c == constraints.MaxNorm(2, axis=(0, 1, 2))
    assert hash(c) == hash(constraints.MaxNorm(2, axis=(0, 1, 2)))
    assert constraints.UnitNorm(np.int64(1)).axis == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.axis = 1  # type: ignore[misc]
    out = jax.jit(lambda w, con: con(w), static_argnums=1)(jnp.ones((2, 2, 2, 2)), c)
    assert out.shape == (2, 2, 2, 2)


@pytest.mark.parametrize("make, match", [
    (lambda: constraints.MaxNorm(axis="0"), r"MaxNorm.*`axis`.*'0'"),
    (lambda: constraints.UnitNorm(axis=[0, 1.5]), r"UnitNorm.*`axis`.*1\.5"),
    (lambda: constraints.MaxNorm(max_value="2"), r"MaxNorm.*`max_value`.*'2'"),
    (lambda: constraints.MinMaxNorm(rate=None), r"MinMaxNorm.*`rate`.*None"),
])
def test_type_errors_name_class_argument_and_value(make, match):
    with pytest.raises(TypeError, match=match):
        make()


@pytest.mark.parametrize("name", ["MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm"])
def test_signature_matches_keras(name):
    ours = inspect.signature(getattr(constraints, name)).parameters
    theirs = inspect.signature(getattr(keras.constraints, name)).parameters
    assert [(p.name, p.default) for p in ours.values()] == [
        (p.name, p.default) for p in theirs.values()]


# --- names, get, serialize, deserialize ------------------------------------------

KERAS_NAMES = sorted(set(keras_constraints.ALL_OBJECTS_DICT) - {"Constraint", "constraint"})


@pytest.mark.parametrize("name", KERAS_NAMES)
def test_get_every_keras_name(name):
    ours = constraints.get(name)
    theirs = keras.constraints.get(name)
    assert type(ours).__name__ == type(theirs).__name__
    assert constraints.serialize(ours) == keras.constraints.serialize(theirs)
    assert getattr(constraints, name) is type(ours)


def test_no_extra_names():
    assert set(constraints._BY_NAME) == set(KERAS_NAMES)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_serialization_round_trips_through_keras(case):
    ours, theirs = _pair(case[0], **case[1])
    config = constraints.serialize(ours)
    if isinstance(case[1].get("axis"), tuple):
        # Keras writes the tuple it was given; kconv writes a list, what JSON gives back.
        assert config["config"]["axis"] == list(case[1]["axis"])
        theirs = getattr(keras.constraints, case[0])(**{**case[1], "axis": list(case[1]["axis"])})
    assert config == keras.constraints.serialize(theirs)
    rebuilt = keras.constraints.deserialize(config)
    assert type(rebuilt) is type(theirs) and rebuilt.get_config() == theirs.get_config()
    assert constraints.deserialize(keras.constraints.serialize(theirs)) == ours
    assert constraints.deserialize(json.loads(json.dumps(config))) == ours
    assert constraints.get(config) == ours


def test_keras_layer_config():
    config = keras.layers.Conv2D(4, 3, kernel_constraint=keras.constraints.MaxNorm(3, [0, 1, 2]),
                                 bias_constraint="non_neg").get_config()
    assert constraints.get(config["kernel_constraint"]) == constraints.MaxNorm(3, (0, 1, 2))
    assert constraints.serialize(constraints.get("non_neg")) == config["bias_constraint"]


@pytest.mark.parametrize("config, expected", [
    ({"class_name": "MaxNorm", "config": {"max_value": 3, "axis": 0}}, constraints.MaxNorm(3)),
    ({"class_name": "UnitNorm", "config": {"axis": [0, 1, 2]}}, constraints.UnitNorm((0, 1, 2))),
    ({"class_name": "NonNeg", "config": {}}, constraints.NonNeg()),
    ({"class_name": "non_neg"}, constraints.NonNeg()),
    ({"module": "keras.constraints", "class_name": "MinMaxNorm",
      "config": {"min_value": 0.0, "max_value": 2.0, "rate": 1.0, "axis": 0},
      "registered_name": None}, constraints.MinMaxNorm(max_value=2.0)),
    ("max_norm", constraints.MaxNorm()),
    ("UnitNorm", constraints.UnitNorm()),
])
def test_deserialize_forms(config, expected):
    assert constraints.deserialize(config) == expected


def test_get_passes_through_none_classes_and_callables():
    assert constraints.get(None) is None
    assert constraints.get(constraints.NonNeg) == constraints.NonNeg()
    assert constraints.get(jnp.abs) is jnp.abs
    c = constraints.UnitNorm(1)
    assert constraints.get(c) is c


def test_unknown_names_and_bad_identifiers():
    with pytest.raises(ValueError, match=r"'maxnorm'.*Valid names:.*'max_norm'"):
        constraints.get("maxnorm")
    with pytest.raises(TypeError, match="constraint identifier 2"):
        constraints.get(2)
    with pytest.raises(ValueError, match="class_name"):
        constraints.deserialize({"config": {}})
    with pytest.raises(TypeError, match=r"NonNeg.*'axis'"):
        constraints.deserialize({"class_name": "NonNeg", "config": {"axis": 0}})
    with pytest.raises(TypeError, match="Cannot serialize"):
        constraints.serialize(jnp.abs)
