"""kconv.initializers against Keras 3 (JAX backend) as the oracle: exact values of the
constant initializers, bit-for-bit values of seeded random initializers, sample
statistics against Keras's fan formula (keras' own compute_fans), truncation bounds,
orthogonality, names, signatures, validation and the config forms."""

import os

os.environ["KERAS_BACKEND"] = "jax"

import dataclasses
import inspect
import json
import math

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest
from keras.src import initializers as keras_initializers
from keras.src.initializers.random_initializers import compute_fans as keras_compute_fans

import kconv
from kconv import initializers

CONV_SHAPES = [(3, 3, 16, 32), (5, 8, 4), (2, 2, 2, 3, 6), (12, 7), (9,)]
KEY = jax.random.key(0)

# (kconv class name, kwargs) -> the same Keras initializer; shared by the value,
# serialization and signature tests.
RANDOM_CASES = [
    ("RandomNormal", {}),
    ("RandomNormal", {"mean": 0.5, "stddev": 2.0}),
    ("RandomUniform", {}),
    ("RandomUniform", {"minval": -1.0, "maxval": 3.0}),
    ("TruncatedNormal", {}),
    ("TruncatedNormal", {"mean": -1.0, "stddev": 0.5}),
    ("VarianceScaling", {}),
    ("VarianceScaling", {"scale": 2.0, "mode": "fan_out", "distribution": "uniform"}),
    ("VarianceScaling", {"scale": 0.5, "mode": "fan_avg", "distribution": "untruncated_normal"}),
    ("GlorotUniform", {}),
    ("GlorotNormal", {}),
    ("HeNormal", {}),
    ("HeUniform", {}),
    ("LecunNormal", {}),
    ("LecunUniform", {}),
]
PRESETS = {  # Keras's (scale, mode, distribution) of each named VarianceScaling
    "GlorotUniform": (1.0, "fan_avg", "uniform"),
    "GlorotNormal": (1.0, "fan_avg", "truncated_normal"),
    "HeNormal": (2.0, "fan_in", "truncated_normal"),
    "HeUniform": (2.0, "fan_in", "uniform"),
    "LecunNormal": (1.0, "fan_in", "truncated_normal"),
    "LecunUniform": (1.0, "fan_in", "uniform"),
}


def _case_id(case):
    name, kwargs = case
    return name + "".join(f"-{k}={v}" for k, v in kwargs.items())


def _pair(name, **kwargs):
    return getattr(initializers, name)(**kwargs), getattr(keras.initializers, name)(**kwargs)


# --- values ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int32"])
@pytest.mark.parametrize("name, kwargs", [("Zeros", {}), ("Ones", {}), ("Constant", {}),
                                          ("Constant", {"value": 3}),
                                          ("Constant", {"value": -0.25})])
def test_constant_initializers_match_keras(name, kwargs, dtype):
    ours, theirs = _pair(name, **kwargs)
    for shape in CONV_SHAPES:
        expected = np.asarray(theirs(shape, dtype=dtype))
        actual = ours(KEY, shape, jnp.dtype(dtype))
        assert actual.shape == expected.shape and actual.dtype == expected.dtype
        np.testing.assert_array_equal(np.asarray(actual), expected)


@pytest.mark.parametrize("value, shape", [
    (np.arange(4.0), (4,)),                                  # a bias from priors
    (np.array([[1.0], [-2.0]]), (2, 3)),
    (np.arange(6, dtype=np.int32).reshape(1, 1, 2, 3), (3, 3, 2, 3)),
    ([0.5, -1.5, 2.0], (2, 2, 4, 3)),
])
def test_array_constant_matches_keras(value, shape):
    """Keras 3 takes an array for Constant (cast(value) * ones(shape)) and writes it as a
    "__numpy__" config (a list as a list); kconv refused one (a real number only), so such
    a model's config could not be read."""
    theirs = keras.initializers.Constant(value)
    ours = initializers.Constant(value)
    for dtype in ("float32", "bfloat16"):
        expected = np.asarray(theirs(shape, dtype=dtype))
        actual = ours(KEY, shape, jnp.dtype(dtype))
        assert actual.shape == expected.shape == shape and actual.dtype == expected.dtype
        np.testing.assert_array_equal(np.asarray(actual, np.float32),
                                      np.asarray(expected, np.float32))
    config = initializers.serialize(ours)
    assert config == json.loads(json.dumps(keras.initializers.serialize(theirs)))
    np.testing.assert_array_equal(keras.initializers.deserialize(config)(shape),
                                  theirs(shape))
    assert initializers.deserialize(config) == ours == initializers.get(theirs)
    assert ours == initializers.Constant(np.asarray(value))  # the form is not the value
    assert hash(initializers.deserialize(config)) == hash(ours)
    assert ours != initializers.Constant(np.asarray(value) + 1)
    assert ours.value.flags.writeable is False
    layer = kconv.Conv2D(3, 1, bias_initializer=ours) if np.ndim(value) == 1 and len(
        value) == 3 else None
    if layer is not None:  # hashable and serializable inside a layer too
        assert kconv.Conv2D.from_config(json.loads(json.dumps(layer.get_config()))) == layer
        hash(layer)


def test_array_constant_refuses_what_it_cannot_fill():
    with pytest.raises(ValueError, match=r"Constant: a value of shape \(4,\) does not "
                                         r"broadcast to the weight's shape \(3,\)"):
        initializers.Constant(np.arange(4.0))(KEY, (3,))
    with pytest.raises(TypeError, match=r"Constant: argument `value` must be a real number "
                                        r"or an array of them"):
        initializers.Constant(np.array(["a", "b"]))
    with pytest.raises(TypeError, match=r"Constant: argument `value` must be a real number "
                                        r"or an array of them"):
        initializers.Constant([True, False])


@pytest.mark.parametrize("gain", [1.0, 0.5, 3])
@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (6, 2)])
def test_identity_matches_keras(shape, gain):
    ours, theirs = _pair("Identity", gain=gain)
    expected = np.asarray(theirs(shape, dtype="float32"))
    np.testing.assert_array_equal(np.asarray(ours(None, shape)), expected)
    np.testing.assert_array_equal(expected, gain * np.eye(*shape))


def test_identity_and_orthogonal_reject_bad_ranks():
    with pytest.raises(ValueError, match=r"Identity.*shape=\(3, 3, 2\).*rank 3"):
        initializers.Identity()(None, (3, 3, 2))
    with pytest.raises(ValueError, match=r"Orthogonal.*shape=\(5,\).*rank 1"):
        initializers.Orthogonal()(KEY, (5,))


@pytest.mark.parametrize("case", RANDOM_CASES, ids=_case_id)
def test_seeded_values_equal_keras_seeded_values(case):
    name, kwargs = case
    ours, theirs = _pair(name, seed=1234, **kwargs)
    shape = (3, 3, 16, 32)
    actual = ours(None, shape)
    assert actual.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(actual), np.asarray(theirs(shape, dtype="float32")),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", RANDOM_CASES + [("Constant", {"value": 0.5}), ("Zeros", {}),
                                  ("Orthogonal", {"gain": 2.0}), ("Identity", {"gain": 3.0})],
                         ids=_case_id)
def test_live_keras_initializers_become_kconv_ones(case):
    """keras.initializers.HeNormal(seed=1) given to a layer: Keras calls it as
    (shape, dtype), kconv as (key, shape, dtype), so it is read through its config as
    kconv's own — a Keras seeded initializer's very values, from a hashable kconv object."""
    name, kwargs = case
    seeded = {} if name in ("Constant", "Zeros", "Identity") else {"seed": 7}
    ours, theirs = _pair(name, **kwargs, **seeded)
    assert initializers.get(theirs) == ours
    assert initializers.get(type(theirs)) == getattr(initializers, name)()
    if name == "Identity":  # 2-D only: no conv kernel
        np.testing.assert_array_equal(initializers.get(theirs)(KEY, (3, 4)),
                                      theirs((3, 4), dtype="float32"))
        return
    layer = kconv.Conv2D(8, 3, kernel_initializer=theirs)
    assert layer.kernel_initializer == ours
    np.testing.assert_allclose(layer.init(KEY, (None, 8, 8, 4))["kernel"],
                               theirs((3, 3, 4, 8), dtype="float32"), rtol=1e-6, atol=1e-7)


def test_keras_initializers_kconv_cannot_call_are_refused():
    class Ones(keras.initializers.Initializer):  # a user's: Keras's calling convention
        def __call__(self, shape, dtype=None):
            return keras.ops.ones(shape, dtype)

    for obj in (Ones(), keras.initializers.STFT()):
        with pytest.raises(TypeError, match=r"Conv2D: invalid kernel_initializer .*has no "
                                            r"kconv equivalent, and Keras calls its "
                                            r"initializers as \(shape, dtype\)"):
            kconv.Conv2D(8, 3, kernel_initializer=obj)


@pytest.mark.parametrize("shape", CONV_SHAPES + [()], ids=str)
def test_seeded_fan_rule_equals_keras_on_every_rank(shape):
    # Uniform draws scale with the fans exactly (no rejection sampling), so this pins
    # kconv's fan rule to Keras's on ranks 0 to 5.
    for mode in ("fan_in", "fan_out", "fan_avg"):
        ours, theirs = _pair("VarianceScaling", mode=mode, distribution="uniform", seed=9)
        np.testing.assert_allclose(np.asarray(ours(None, shape)),
                                   np.asarray(theirs(shape, dtype="float32")), rtol=1e-6)


@pytest.mark.parametrize("name", ["HeNormal", "GlorotUniform"])
def test_seeded_bfloat16_values_equal_keras(name):
    ours, theirs = _pair(name, seed=7)
    expected = np.asarray(theirs((3, 3, 16, 32), dtype="bfloat16"), np.float32)
    actual = ours(None, (3, 3, 16, 32), jnp.bfloat16)
    assert actual.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(actual, np.float32), expected)


@pytest.mark.parametrize("shape, gain", [((3, 3, 16, 32), 1.0), ((2, 9), 1.5)])
def test_orthogonal_seeded_equals_keras_and_is_orthogonal(shape, gain):
    ours, theirs = _pair("Orthogonal", gain=gain, seed=3)
    q = np.asarray(ours(None, shape), np.float64)
    np.testing.assert_allclose(q, np.asarray(theirs(shape, dtype="float32")), rtol=1e-5,
                               atol=1e-6)
    m = q.reshape(-1, shape[-1])
    gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    np.testing.assert_allclose(gram, gain**2 * np.eye(len(gram)), atol=1e-5)


# --- statistics ------------------------------------------------------------------


# Conv kernels of ranks 3-5 with >= 36k entries: one draw gives the sample statistics
# to ~0.5%, and one compilation per (shape, distribution) keeps the suite fast. The fan
# rule on small and degenerate shapes is pinned exactly by the seeded Keras comparison.
STAT_SHAPES = {3: (5, 128, 64), 4: (3, 3, 64, 64), 5: (2, 2, 2, 64, 96)}


def _draw(init, shape):
    return np.asarray(init(jax.random.key(42), shape), np.float64)


@pytest.mark.parametrize("name, rank", [
    # Uniform draws on every rank; the truncated normals share one shape (one slow
    # compilation of the truncated-normal sampler); the fan rule is the same code.
    ("GlorotUniform", 4), ("HeUniform", 3), ("LecunUniform", 5),
    ("GlorotNormal", 4), ("HeNormal", 4), ("LecunNormal", 4)])
def test_presets_std_follows_keras_fan_formula(name, rank):
    shape = STAT_SHAPES[rank]
    scale, mode, distribution = PRESETS[name]
    fan_in, fan_out = keras_compute_fans(shape)
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    target_std = math.sqrt(scale / n)  # after truncation, for the normals
    w = _draw(getattr(initializers, name)(), shape)
    assert abs(w.mean()) < 0.03 * target_std
    assert w.std() == pytest.approx(target_std, rel=0.03)
    if distribution == "uniform":
        limit = math.sqrt(3 * scale / n)
        assert np.abs(w).max() <= limit
        assert np.abs(w).max() > 0.99 * limit
    else:
        bound = 2 * target_std / 0.87962566103423978  # +-2 std of the untruncated normal
        assert np.abs(w).max() <= bound * (1 + 1e-6)
        assert np.abs(w).max() > 0.95 * bound


@pytest.mark.parametrize("mode, distribution", [("fan_avg", "truncated_normal"),
                                                ("fan_out", "untruncated_normal"),
                                                ("fan_in", "uniform")])
def test_variance_scaling_std_with_explicit_axes(mode, distribution):
    shape, input_axes, output_axes = STAT_SHAPES[4], (2,), (3,)
    init = initializers.VarianceScaling(3.0, mode, distribution, input_axes=input_axes,
                                        output_axes=output_axes)
    fan_in, fan_out = keras_compute_fans(shape, input_axes, output_axes)
    assert (fan_in, fan_out) == (64, 64)  # no receptive-field factor with explicit axes
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    w = _draw(init, shape)
    assert w.std() == pytest.approx(math.sqrt(3.0 / n), rel=0.03)


@pytest.mark.parametrize("name, kwargs, mean, std", [
    ("RandomNormal", {"mean": 1.0, "stddev": 0.5}, 1.0, 0.5),
    ("RandomUniform", {"minval": -1.0, "maxval": 3.0}, 1.0, 4 / math.sqrt(12)),
    # A unit normal truncated to [-2, 2] has std 0.8796...
    ("TruncatedNormal", {"mean": -1.0, "stddev": 2.0}, -1.0, 2.0 * 0.87962566103423978),
])
def test_random_initializer_moments_and_bounds(name, kwargs, mean, std):
    w = _draw(getattr(initializers, name)(**kwargs), STAT_SHAPES[4])
    assert w.mean() == pytest.approx(mean, abs=0.03 * std)
    assert w.std() == pytest.approx(std, rel=0.03)
    if name == "RandomUniform":
        assert w.min() >= kwargs["minval"] and w.max() < kwargs["maxval"]
    if name == "TruncatedNormal":
        assert np.abs(w - mean).max() <= 2 * kwargs["stddev"] * (1 + 1e-6)


@pytest.mark.parametrize("shape", [(), (7,), (12, 7), (3, 3, 16, 32), (5, 8, 4),
                                   (2, 2, 2, 3, 6), (3, 0, 4)], ids=str)
def test_compute_fans_matches_keras(shape):
    assert initializers.compute_fans(shape) == keras_compute_fans(shape)
    axes = (tuple(range(len(shape) - 1)), (len(shape) - 1,)) if shape else ((), ())
    assert initializers.compute_fans(shape, *axes) == keras_compute_fans(shape, *axes)


# --- seeds, hashing, jit ---------------------------------------------------------


def test_seed_makes_values_deterministic_and_ignores_key():
    init = initializers.HeNormal(seed=5)
    a = init(jax.random.key(0), (4, 4))
    b = init(jax.random.key(1), (4, 4))
    c = init(None, (4, 4))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
    other = initializers.HeNormal(seed=6)(None, (4, 4))
    assert not np.array_equal(np.asarray(a), np.asarray(other))


def test_unseeded_values_follow_the_key():
    init = initializers.GlorotUniform()
    a, b = init(jax.random.key(0), (4, 4)), init(jax.random.key(1), (4, 4))
    assert not np.array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(init(jax.random.key(0), (4, 4))))
    with pytest.raises(TypeError, match="GlorotUniform.*key"):
        init(None, (4, 4))


def test_legacy_uint32_keys_work():
    a = initializers.RandomNormal()(jax.random.PRNGKey(0), (3,))
    assert a.shape == (3,)


def test_initializers_are_hashable_values_and_jit_static_args():
    assert initializers.GlorotUniform(seed=1) == initializers.GlorotUniform(seed=1)
    assert hash(initializers.GlorotUniform(seed=1)) == hash(initializers.GlorotUniform(seed=1))
    assert initializers.GlorotUniform() != initializers.GlorotNormal()
    assert initializers.GlorotUniform() != initializers.VarianceScaling(1.0, "fan_avg", "uniform")
    assert isinstance(initializers.GlorotUniform(), initializers.VarianceScaling)
    vs = initializers.VarianceScaling(input_axes=[0, 1], output_axes=[2])
    assert vs.input_axes == (0, 1) and hash(vs) == hash(
        initializers.VarianceScaling(input_axes=(0, 1), output_axes=(2,)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        initializers.Zeros().value = 1  # type: ignore[attr-defined]

    @jax.jit
    def build(key):
        return {str(i): i(key, (3, 3)) for i in inits}

    inits = [initializers.HeNormal(), initializers.Orthogonal(seed=2), initializers.Constant(2)]
    out = jax.jit(lambda key, init: init(key, (3, 3)), static_argnums=1)(KEY, inits[0])
    assert out.shape == (3, 3)
    assert set(build(KEY)) == {str(i) for i in inits}


@pytest.mark.parametrize("case", RANDOM_CASES + [("Orthogonal", {"gain": 2.0}),
                                                 ("Identity", {"gain": 2.0}),
                                                 ("Constant", {"value": 1.5}),
                                                 ("Zeros", {}), ("Ones", {})], ids=_case_id)
def test_signature_matches_keras(case):
    name = case[0]
    ours = inspect.signature(getattr(initializers, name)).parameters
    theirs = inspect.signature(getattr(keras.initializers, name)).parameters
    assert [(p.name, p.default) for p in ours.values()] == [
        (p.name, p.default) for p in theirs.values()]


# --- validation ------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"scale": 0.0}, r"VarianceScaling.*`scale`.*0\.0"),
    ({"scale": -1}, r"VarianceScaling.*`scale`.*-1"),
    ({"mode": "fan_sum"}, r"VarianceScaling.*`mode`.*'fan_sum'"),
    ({"mode": "FAN_IN"}, r"VarianceScaling.*`mode`.*'FAN_IN'"),
    ({"distribution": "cauchy"}, r"VarianceScaling.*`distribution`.*'cauchy'"),
    ({"seed": -1}, r"VarianceScaling.*`seed`.*-1"),
    ({"seed": 2**32}, r"VarianceScaling.*`seed`"),
])
def test_variance_scaling_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        initializers.VarianceScaling(**kwargs)


def test_keras_rejects_what_kconv_rejects():
    for kwargs in ({"scale": 0.0}, {"mode": "fan_sum"}, {"mode": "FAN_IN"},
                   {"distribution": "cauchy"}):
        with pytest.raises(ValueError):
            keras.initializers.VarianceScaling(**kwargs)


@pytest.mark.parametrize("distribution", ["normal", "Normal", "UNIFORM", "Truncated_Normal"])
def test_distribution_is_normalised_like_keras(distribution):
    ours = initializers.VarianceScaling(distribution=distribution)
    assert ours.distribution == keras.initializers.VarianceScaling(
        distribution=distribution).distribution


@pytest.mark.parametrize("make, match", [
    (lambda: initializers.RandomNormal(seed="1"), r"RandomNormal.*`seed`.*'1'"),
    (lambda: initializers.HeUniform(seed=1.5), r"HeUniform.*`seed`.*1\.5"),
    # (an array is a Keras 3 Constant value: test_array_constant_matches_keras)
    (lambda: initializers.Constant("1"), r"Constant.*`value`.*'1'"),
    (lambda: initializers.RandomUniform(minval="a"), r"RandomUniform.*`minval`.*'a'"),
    (lambda: initializers.VarianceScaling(input_axes="ab"), r"VarianceScaling.*`input_axes`"),
])
def test_type_errors_name_the_class_and_argument(make, match):
    with pytest.raises(TypeError, match=match):
        make()


def test_numpy_scalars_are_stored_as_python_numbers():
    init = initializers.Constant(np.float32(2.5))
    assert type(init.value) is float and init == initializers.Constant(2.5)
    assert initializers.RandomNormal(seed=np.int64(3)).seed == 3


# --- names, get, serialize, deserialize ------------------------------------------

KERAS_ONLY = {"Initializer", "initializer", "STFT", "stft", "STFTInitializer"}
KERAS_NAMES = sorted(set(keras_initializers.ALL_OBJECTS_DICT) - KERAS_ONLY)


@pytest.mark.parametrize("name", KERAS_NAMES)
def test_get_every_keras_name(name):
    ours = initializers.get(name)
    # keras.initializers.get("constant") raises KeyError in Keras 3.15 (Constant's
    # from_config needs "value"); its default instance is what the name means.
    theirs = (keras.initializers.Constant() if name in ("Constant", "constant")
              else keras.initializers.get(name))
    assert type(ours).__name__ == type(theirs).__name__
    assert initializers.serialize(ours) == keras.initializers.serialize(theirs)


def test_no_extra_names():
    assert set(initializers._BY_NAME) == set(KERAS_NAMES)


SERIALIZE_CASES = RANDOM_CASES + [
    ("RandomNormal", {"seed": 3}),
    ("GlorotUniform", {"seed": 11}),
    ("VarianceScaling", {"seed": 1, "input_axes": [0, 1, 2], "output_axes": [3]}),
    ("HeNormal", {"input_axes": [0], "output_axes": [1]}),
    ("Orthogonal", {}), ("Orthogonal", {"gain": 2.0, "seed": 4}),
    ("Identity", {}),
    ("Constant", {}), ("Constant", {"value": 3}), ("Constant", {"value": -1.5}),
    ("Zeros", {}), ("Ones", {}),
]


@pytest.mark.parametrize("case", SERIALIZE_CASES, ids=_case_id)
def test_serialization_round_trips_through_keras(case):
    name, kwargs = case
    ours, theirs = _pair(name, **kwargs)
    config = initializers.serialize(ours)
    assert config == keras.initializers.serialize(theirs)
    # Keras reads kconv's config back as the equivalent Keras initializer ...
    rebuilt = keras.initializers.deserialize(config)
    assert type(rebuilt) is type(theirs) and rebuilt.get_config() == theirs.get_config()
    # ... kconv reads Keras's config (and its JSON form) back as an equal object.
    assert initializers.deserialize(keras.initializers.serialize(theirs)) == ours
    assert initializers.deserialize(json.loads(json.dumps(config))) == ours
    assert initializers.get(config) == ours


def test_identity_keeps_a_non_default_gain_that_keras_drops():
    ours, theirs = _pair("Identity", gain=0.5)
    assert keras.initializers.serialize(theirs)["config"] == {}  # Keras has no get_config
    config = initializers.serialize(ours)
    assert config["config"] == {"gain": 0.5}
    assert keras.initializers.deserialize(config).gain == 0.5
    assert initializers.deserialize(config) == ours


def test_keras_layer_config_defaults():
    config = keras.layers.Conv2D(4, 3).get_config()
    assert initializers.serialize(initializers.get("glorot_uniform")) == config[
        "kernel_initializer"]
    assert initializers.serialize(initializers.get("zeros")) == config["bias_initializer"]
    assert initializers.get(config["kernel_initializer"]) == initializers.GlorotUniform()


@pytest.mark.parametrize("config, expected", [
    ({"class_name": "GlorotUniform", "config": {"seed": None}}, initializers.GlorotUniform()),
    ({"class_name": "glorot_uniform", "config": {}}, initializers.GlorotUniform()),
    ({"class_name": "Zeros"}, initializers.Zeros()),
    ({"class_name": "Zeros", "config": None}, initializers.Zeros()),
    ({"class_name": "VarianceScaling",
      "config": {"scale": 2.0, "mode": "fan_in", "distribution": "normal", "seed": None}},
     initializers.VarianceScaling(2.0, "fan_in", "truncated_normal")),
    ({"class_name": "TruncatedNormal", "config": {"mean": 0.0, "stddev": 0.02, "seed": 7}},
     initializers.TruncatedNormal(stddev=0.02, seed=7)),
    ({"class_name": "Constant", "config": {"value": 0.1}}, initializers.Constant(0.1)),
    ({"class_name": "IdentityInitializer", "config": {"gain": 2.0}}, initializers.Identity(2.0)),
    ({"class_name": "OrthogonalInitializer", "config": {"gain": 1.0, "seed": None}},
     initializers.Orthogonal()),
    ("he_normal", initializers.HeNormal()),
    ("one", initializers.Ones()),
    ("zero", initializers.Zeros()),
    ("normal", initializers.RandomNormal()),
    ("uniform", initializers.RandomUniform()),
])
def test_deserialize_keras2_and_bare_forms(config, expected):
    assert initializers.deserialize(config) == expected
    theirs = keras.initializers.deserialize(config) if isinstance(config, dict) else (
        keras.initializers.get(config))
    assert type(theirs).__name__ == type(expected).__name__


def test_get_passes_through_none_classes_and_callables():
    assert initializers.get(None) is None
    assert initializers.get(initializers.Ones) == initializers.Ones()
    fn = jax.nn.initializers.lecun_normal()
    assert initializers.get(fn) is fn
    init = initializers.HeNormal(seed=1)
    assert initializers.get(init) is init


def test_unknown_names_and_bad_identifiers():
    with pytest.raises(ValueError, match=r"'glorot'.*Valid names:.*'glorot_uniform'"):
        initializers.get("glorot")
    with pytest.raises(ValueError, match="GLOROT_UNIFORM"):
        initializers.get("GLOROT_UNIFORM")
    with pytest.raises(ValueError, match="'STFT'"):
        initializers.get("STFT")
    with pytest.raises(TypeError, match="initializer identifier 3"):
        initializers.get(3)
    with pytest.raises(ValueError, match="class_name"):
        initializers.deserialize({"config": {}})
    with pytest.raises(TypeError, match=r"GlorotUniform.*'bogus'"):
        initializers.deserialize({"class_name": "GlorotUniform", "config": {"bogus": 1}})
    with pytest.raises(TypeError, match="must be a dict"):
        initializers.deserialize({"class_name": "Zeros", "config": "x"})
    with pytest.raises(TypeError, match="Cannot serialize"):
        initializers.serialize(jax.nn.initializers.zeros)


def test_orthogonal_in_16_bit_dtypes():
    # XLA's QR has no 16-bit dtype (Keras's Orthogonal raises NotImplementedError there):
    # the float32 matrix, rounded.
    init = kconv.initializers.Orthogonal(seed=3)
    want = init(None, (3, 3, 3, 4), jnp.float32)
    for dtype in (jnp.bfloat16, jnp.float16):
        got = init(None, (3, 3, 3, 4), dtype)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, want.astype(dtype))
    params = kconv.Conv2D(4, 3, kernel_initializer="orthogonal", param_dtype="bfloat16").init(
        jax.random.key(0), (None, 8, 8, 3))
    assert params["kernel"].dtype == jnp.bfloat16
