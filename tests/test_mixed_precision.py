"""Mixed precision: ``dtype`` bfloat16 / float16 computation with float32 params and float32
accumulation, Keras's dtype-policy names, and float16 sums that must not overflow.

Numbers are checked against the float64 NumPy reference (tests/reference.py) evaluated on
the inputs and params *rounded to the compute dtype*: what is left is the accumulation's
error and the final rounding, which float32 accumulation keeps within a few units of the
compute dtype's rounding (bfloat16 2^-8, float16 2^-11) of the output's scale. A 16-bit
accumulation over the hundreds of terms used here would miss that by an order of
magnitude. Keras 3 (JAX backend) is the oracle for the policies."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kconv
from tests import reference as ref

# Unit roundoff of each compute dtype; the documented tolerance is a multiple of it.
EPS = {"bfloat16": 2.0 ** -8, "float16": 2.0 ** -11}
# |y16 - y64| <= ROUNDINGS * eps * max|y64|: the output's rounding, plus (separable) the
# intermediate's, kept in the compute dtype as Keras does.
ROUNDINGS = 3

# (layer, input shape): reductions of 64-576 terms per output, every family.
CASES = [
    (kconv.Conv2D(8, 3, padding="same", activation="relu"), (2, 6, 6, 64)),
    (kconv.Conv1D(6, 5, groups=2, padding="causal"), (2, 12, 32)),
    (kconv.Conv3D(4, 2, data_format="channels_first"), (1, 16, 4, 4, 4)),
    (kconv.SeparableConv2D(8, 3, depth_multiplier=2), (2, 6, 6, 32)),
    (kconv.DepthwiseConv2D(5, padding="same"), (2, 8, 8, 4)),
    (kconv.DepthwiseConv3D(3), (1, 5, 5, 5, 3)),
    (kconv.Conv2DTranspose(6, 3, strides=2, padding="same"), (2, 4, 4, 64)),
]
IDS = [type(layer).__name__ for layer, _ in CASES]


def _with_dtype(layer, dtype):
    return dataclasses.replace(layer, dtype=dtype)


def _round(a, dtype):
    return np.asarray(jnp.asarray(a).astype(dtype).astype(jnp.float32), np.float64)


def _reference(layer, params, x):
    """Float64: the layer's op, bias and activation on already-rounded arrays."""
    args = dict(strides=layer.strides, padding=layer.padding, data_format=layer.data_format,
                dilation_rate=layer.dilation_rate)
    if isinstance(layer, kconv.layers.ConvTranspose):
        y = ref.conv_transpose(x, params["kernel"], output_padding=layer.output_padding,
                               **args)
    elif isinstance(layer, kconv.layers.SeparableConv):
        y = ref.separable_conv(x, params["depthwise_kernel"], params["pointwise_kernel"],
                               **args)
    elif isinstance(layer, kconv.layers.DepthwiseConv):
        y = ref.depthwise_conv(x, params["kernel"], **args)
    else:
        y = ref.conv(x, params["kernel"], groups=layer.groups, **args)
    shape = (-1,) if layer.data_format == "channels_last" else (-1,) + (1,) * layer.rank
    y = y + params["bias"].reshape(shape)
    return np.maximum(y, 0) if kconv.activations.serialize(layer.activation) == "relu" else y


def _setup(layer, shape, seed=0):
    params = layer.init(jax.random.key(seed), (None,) + shape[1:])
    params = {k: v + 0.1 for k, v in params.items()}  # non-zero biases
    x = jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)
    return params, x


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("layer,shape", CASES, ids=IDS)
def test_16_bit_compute_accumulates_in_float32(layer, shape, dtype):
    params, x = _setup(layer, shape)
    mixed = _with_dtype(layer, dtype)
    assert mixed.dtype == jnp.dtype(dtype) and mixed.param_dtype == jnp.float32
    assert all(p.dtype == jnp.float32 for p in mixed.init(jax.random.key(0), shape).values())
    y = jax.jit(mixed)(params, x)
    assert y.dtype == jnp.dtype(dtype) and y.shape == layer.compute_output_shape(shape)
    rounded = {k: _round(v, dtype) for k, v in params.items()}
    want = _reference(layer, rounded, _round(x, dtype))
    err = np.max(np.abs(np.asarray(y, np.float64) - want)) / np.max(np.abs(want))
    assert err <= ROUNDINGS * EPS[dtype], err
    # And against the float32 path (documented in the README): the inputs' rounding too.
    y32 = layer(params, x)
    err32 = np.max(np.abs(np.asarray(y, np.float64) - np.asarray(y32, np.float64)))
    assert err32 / np.max(np.abs(np.asarray(y32))) <= {"bfloat16": 3e-2, "float16": 4e-3}[dtype]


@pytest.mark.parametrize("layer,shape", CASES[:4], ids=IDS[:4])
def test_16_bit_gradients_are_float32_and_close(layer, shape):
    # Linear: a relu's mask flips where bfloat16 rounds an output across zero, each flip
    # a whole term of the kernel gradient; that is the activation's, not the convolution's.
    layer = dataclasses.replace(layer, activation=None)
    params, x = _setup(layer, shape)
    mixed = _with_dtype(layer, "mixed_bfloat16")
    ct = jnp.asarray(np.random.default_rng(5).standard_normal(
        layer.compute_output_shape(shape)), jnp.float32)

    def loss(lay):
        return lambda p, v: jnp.sum(lay(p, v).astype(jnp.float32) * ct)

    g16 = jax.jit(jax.grad(loss(mixed)))(params, x)
    g32 = jax.jit(jax.grad(loss(layer)))(params, x)
    for name in params:
        assert g16[name].dtype == jnp.float32
        scale = np.max(np.abs(np.asarray(g32[name])))
        err = np.max(np.abs(np.asarray(g16[name]) - np.asarray(g32[name]))) / scale
        assert err <= 3e-2, (name, err)  # bfloat16 inputs, cotangent and outputs


def test_keras_policy_names():
    layer = kconv.Conv2D(4, 3, dtype="mixed_bfloat16")
    assert (layer.dtype, layer.param_dtype) == (jnp.bfloat16, jnp.float32)
    assert layer.get_config()["dtype"] == "mixed_bfloat16"
    half = kconv.DepthwiseConv1D(3, dtype="mixed_float16")
    assert (half.dtype, half.param_dtype) == (jnp.float16, jnp.float32)
    assert kconv.Conv2D.from_config(layer.get_config()) == layer
    # The constructor's dtype is the compute dtype (Flax's meaning); params stay float32.
    assert kconv.Conv2D(4, 3, dtype="bfloat16").param_dtype == jnp.float32
    # A Keras config's plain policy name means both, as in Keras.
    keras_cfg = {**kconv.Conv2D(4, 3).get_config(), "dtype": "bfloat16"}
    assert kconv.Conv2D.from_config(keras_cfg).param_dtype == jnp.bfloat16


@pytest.mark.parametrize("kwargs,match", [
    (dict(dtype="mixed_int8"), r"Conv2D: dtype must be a floating dtype or a Keras dtype "
                               r"policy.*'mixed_int8'"),
    (dict(dtype="mixed_bfloat16", param_dtype="bfloat16"),
     r"Conv2D: dtype='mixed_bfloat16' keeps params in float32.*param_dtype=.*bfloat16"),
    (dict(dtype="int32"), r"Conv2D: dtype must be a floating dtype.*'int32'"),
])
def test_bad_policies_raise(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        kconv.Conv2D(4, 3, **kwargs)


def _keras():
    import keras

    return keras


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_matches_keras_policies(policy):
    keras = _keras()
    dtype = policy[len("mixed_"):]
    x = np.random.default_rng(1).standard_normal((2, 7, 7, 16)).astype("float32")
    keras_layer = keras.layers.SeparableConv2D(8, 3, padding="same", dtype=policy)
    keras_layer.build(x.shape)
    layer = kconv.interop.layer_from_keras(keras_layer)
    assert (layer.dtype, layer.param_dtype) == (jnp.dtype(dtype), jnp.float32)
    params = {w.path.split("/")[-1]: jnp.asarray(w.numpy()) for w in keras_layer.weights}
    want = np.asarray(keras_layer(x), np.float64)
    got = layer(params, x)
    assert got.dtype == jnp.dtype(dtype)
    err = np.max(np.abs(np.asarray(got, np.float64) - want)) / np.max(np.abs(want))
    assert err <= 2 * ROUNDINGS * EPS[dtype], err  # two roundings apart at most


def test_float16_sums_do_not_overflow_where_keras_does_not():
    # Every product is 300 * 300 = 90000 > float16's max (65504), but they cancel over the
    # channels: the true output is 300, which float32 accumulation computes exactly.
    keras = _keras()
    x = np.full((1, 6, 64), 300.0, np.float32)
    kernel = np.zeros((2, 64, 1), np.float32)
    kernel[0, :, 0] = np.where(np.arange(64) % 2, -300.0, 300.0)
    kernel[1, 0, 0] = 1.0
    want = ref.conv(x.astype(np.float64), kernel.astype(np.float64))
    np.testing.assert_array_equal(want, 300.0)
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.float16(300.0) * np.float16(300.0))  # 16-bit: overflows
    layer = kconv.Conv1D(1, 2, use_bias=False, dtype="mixed_float16")
    got = np.asarray(jax.jit(layer)({"kernel": jnp.asarray(kernel)}, x), np.float64)
    np.testing.assert_array_equal(got, want)
    keras_layer = keras.layers.Conv1D(1, 2, use_bias=False, dtype="mixed_float16")
    keras_layer.build(x.shape)
    keras_layer.set_weights([kernel])
    keras_out = np.asarray(keras_layer(x), np.float64)
    # Wherever Keras's float16 policy gives a finite number, so does kconv.
    assert np.all(np.isfinite(got[np.isfinite(keras_out)]))


def test_flax_wrappers_take_the_policy():
    from flax import linen as nn

    module = kconv.linen.Conv2D(4, 3, dtype="mixed_bfloat16")
    x = jnp.ones((1, 5, 5, 3))
    variables = module.init(jax.random.key(0), x)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
    assert module.apply(variables, x).dtype == jnp.bfloat16
    assert isinstance(module, nn.Module)
