"""The pure-tier contract of the twelve convolution layers: transforms, gradients, dtypes,
errors, data_format resolution, configs. Numbers are checked against the float64 NumPy
reference (tests/reference.py) or against another independent path, never against the
code itself."""

import dataclasses
import inspect
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import kconv
from kconv.layers import LAYER_NAMES
from kconv.layers._examples import EXAMPLES
from tests import reference as ref

# One small instance of every layer, with an input shape (batch 2).
LAYERS = [
    (kconv.Conv1D(4, 3, padding="causal", dilation_rate=2, activation="tanh"), (2, 9, 3)),
    (kconv.Conv2D(4, (3, 2), strides=2, padding="same", groups=2), (2, 7, 6, 4)),
    (kconv.Conv3D(3, 2, data_format="channels_first"), (2, 2, 4, 3, 4)),
    (kconv.SeparableConv1D(4, 3, depth_multiplier=2, padding="same"), (2, 8, 3)),
    (kconv.SeparableConv2D(3, 3, strides=2, data_format="channels_first"), (2, 2, 7, 7)),
    (kconv.DepthwiseConv1D(3, depth_multiplier=2, activation="relu"), (2, 8, 3)),
    (kconv.DepthwiseConv2D(2, padding="same", dilation_rate=2), (2, 6, 5, 3)),
    (kconv.SeparableConv3D(3, 2, strides=(1, 2, 1), depth_multiplier=2, padding="same"),
     (2, 4, 5, 3, 2)),
    (kconv.DepthwiseConv3D(2, dilation_rate=(1, 2, 1), data_format="channels_first"),
     (2, 3, 3, 5, 4)),
    (kconv.Conv1DTranspose(3, 3, strides=2, output_padding=1), (2, 5, 2)),
    (kconv.Conv2DTranspose(3, 3, strides=2, padding="same", data_format="channels_first"),
     (2, 2, 4, 3)),
    (kconv.Conv3DTranspose(2, 2, strides=(1, 2, 2)), (2, 2, 3, 2, 3)),
]
IDS = [type(layer).__name__ for layer, _ in LAYERS]


def _setup(layer, shape, seed=0):
    params = layer.init(jax.random.key(seed), (None,) + shape[1:])
    # Non-zero biases, so that bias handling is exercised everywhere.
    params = {k: v + 0.1 * jnp.arange(v.size, dtype=v.dtype).reshape(v.shape) / v.size
              for k, v in params.items()}
    x = jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)
    return params, x


def _reference(layer, params, x):
    """Float64 reference of a layer: NumPy op + bias + the activation, all independent."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    x = np.asarray(x, np.float64)
    args = dict(strides=layer.strides, padding=layer.padding,
                data_format=layer.data_format, dilation_rate=layer.dilation_rate)
    if isinstance(layer, kconv.layers.ConvTranspose):
        y = ref.conv_transpose(x, p["kernel"], output_padding=layer.output_padding, **args)
    elif isinstance(layer, kconv.layers.SeparableConv):
        y = ref.separable_conv(x, p["depthwise_kernel"], p["pointwise_kernel"], **args)
    elif isinstance(layer, kconv.layers.DepthwiseConv):
        y = ref.depthwise_conv_direct(x, p["kernel"], **args)
    else:
        y = ref.conv(x, p["kernel"], groups=layer.groups, **args)
    if layer.use_bias:
        shape = (-1,) if layer.data_format == "channels_last" else (-1,) + (1,) * layer.rank
        y = y + p["bias"].reshape(shape)
    return {"linear": y, "tanh": np.tanh(y), "relu": np.maximum(y, 0)}[
        kconv.activations.serialize(layer.activation)]


@pytest.mark.parametrize("layer,shape", LAYERS, ids=IDS)
def test_apply_matches_float64_reference(layer, shape):
    params, x = _setup(layer, shape)
    y = layer(params, x)
    want = _reference(layer, params, x)
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-5, atol=1e-5)
    assert y.shape == layer.compute_output_shape(shape)
    assert y.dtype == jnp.float32


@pytest.mark.parametrize("layer,shape", LAYERS, ids=IDS)
def test_transforms(layer, shape):
    params, x = _setup(layer, shape)
    y = layer(params, x)
    tol = dict(rtol=1e-5, atol=1e-5)
    # jit, with the layer as a static (hashable) argument too.
    np.testing.assert_allclose(jax.jit(layer.apply)(params, x), y, **tol)
    np.testing.assert_allclose(
        jax.jit(lambda lyr, p, v: lyr(p, v), static_argnums=0)(layer, params, x), y, **tol)
    # vmap over unbatched (rank N+1) examples; and extra leading batch dims.
    np.testing.assert_allclose(jax.vmap(layer, in_axes=(None, 0))(params, x), y, **tol)
    np.testing.assert_allclose(layer(params, x[0]), y[0], **tol)
    stacked = layer(params, jnp.stack([x, 2 * x]))
    np.testing.assert_allclose(stacked[1], layer(params, 2 * x), **tol)
    # lax.scan over a sequence of batches.
    _, ys = jax.lax.scan(lambda c, xi: (c, layer(params, xi)), 0.0, jnp.stack([x, -x]))
    np.testing.assert_allclose(ys[1], layer(params, -x), **tol)
    # grad, jvp and remat agree with each other.
    loss = lambda p, v: jnp.sum(jnp.sin(layer(p, v)))  # noqa: E731
    g = jax.grad(loss, argnums=(0, 1))(params, x)
    g_remat = jax.grad(jax.checkpoint(loss), argnums=(0, 1))(params, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **tol), g, g_remat)
    tangent = jnp.ones_like(x)
    _, jvp_out = jax.jvp(lambda v: loss(params, v), (x,), (tangent,))
    np.testing.assert_allclose(jvp_out, jnp.sum(g[1] * tangent), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layer,shape", LAYERS, ids=IDS)
def test_export_with_a_symbolic_batch(layer, shape):
    """A layer exported with ``jax.export`` for any batch (``"b"``, as a served model is;
    two leading batch dims ``"a, b"``) computes the float64 reference on the batch it is
    called with, and its exported gradients are the layer's own."""
    from jax import export

    params, _ = _setup(layer, shape)
    rng = np.random.default_rng(3)
    loss = lambda p, v: jnp.sum(jnp.sin(layer(p, v)))  # noqa: E731
    for symbols, batch in (("b", (3,)), (("a", "b"), (2, 3))):
        lead = len(symbols)
        spec = jax.ShapeDtypeStruct(
            export.symbolic_shape(", ".join([*symbols, *map(str, shape[1:])])), jnp.float32)
        value = export.export(jax.jit(layer))(params, spec)
        assert value.out_avals[0].shape[lead:] == layer.compute_output_shape(shape)[1:]
        x = jnp.asarray(rng.standard_normal(batch + shape[1:]), jnp.float32)
        want = _reference(layer, params, x.reshape((-1,) + shape[1:]))
        np.testing.assert_allclose(value.call(params, x), want.reshape(
            batch + want.shape[1:]), rtol=1e-5, atol=1e-5)
    gradients = export.export(jax.jit(jax.grad(loss, argnums=(0, 1))))(params, spec)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
                 gradients.call(params, x), jax.grad(loss, argnums=(0, 1))(params, x))


@pytest.mark.parametrize("layer,shape", LAYERS, ids=IDS)
def test_check_grads(layer, shape):
    # A smooth activation: finite differences across relu's kink are meaningless.
    layer = dataclasses.replace(layer, activation="tanh")
    params, x = _setup(layer, shape)
    # Second order too: grad of grad must keep working through any lowering.
    check_grads(lambda p, v: layer(p, v), (params, x), order=2, modes=("fwd", "rev"),
                atol=5e-2, rtol=5e-2, eps=1e-2)


@pytest.mark.parametrize("layer,shape", LAYERS, ids=IDS)
def test_mixed_precision(layer, shape):
    params, x = _setup(layer, shape)
    low = dataclasses.replace(layer, dtype="bfloat16")
    y = low(params, x)
    assert y.dtype == jnp.bfloat16
    want = _reference(layer, jax.tree.map(lambda a: a.astype(jnp.bfloat16), params),
                      x.astype(jnp.bfloat16))
    np.testing.assert_allclose(np.asarray(y, np.float64), want, rtol=5e-2, atol=5e-2)
    # The input's dtype decides when dtype is None; params stay float32.
    assert layer(params, x.astype(jnp.float16)).dtype == jnp.float16
    assert layer(params, (x > 0).astype(jnp.int32)).dtype == jnp.float32
    bf16 = dataclasses.replace(layer, param_dtype="bfloat16").init(jax.random.key(0),
                                                                   shape)
    assert all(v.dtype == jnp.bfloat16 for v in bf16.values())


@pytest.mark.parametrize("layer,shape", LAYERS, ids=IDS)
def test_config_round_trip_and_hash(layer, shape):
    config = layer.get_config()
    assert type(layer).from_config(config) == layer
    assert hash(type(layer).from_config(config)) == hash(layer)
    json.dumps(config)  # plain JSON-able values
    with pytest.raises(dataclasses.FrozenInstanceError):
        layer.padding = "same"
    for variant in (dict(dtype="bfloat16"), dict(param_dtype="bfloat16"),
                    dict(dtype="float16", param_dtype="bfloat16")):
        changed = dataclasses.replace(layer, **variant)
        assert type(layer).from_config(changed.get_config()) == changed
    assert dataclasses.replace(layer, dtype="bfloat16").get_config()["dtype"] == \
        "mixed_bfloat16"


@pytest.mark.parametrize("layer,shape", LAYERS, ids=IDS)
def test_input_errors_at_trace_time(layer, shape):
    params, x = _setup(layer, shape)
    name = type(layer).__name__
    channel_axis = -1 if layer.data_format == "channels_last" else -(layer.rank + 1)
    wrong = list(x.shape)
    wrong[channel_axis] += 1
    for run in (layer, jax.jit(layer)):
        with pytest.raises(ValueError, match=rf"{name}: .*expect.*channels.*{tuple(wrong)}"):
            run(params, jnp.ones(wrong))
        with pytest.raises(ValueError, match=rf"{name}: expected an input of rank"):
            run(params, jnp.ones(x.shape[-layer.rank:]))
    with pytest.raises(ValueError, match=rf"{name}: params are missing"):
        layer({}, x)
    # Params the layer would ignore, or of shapes its config does not imply, raise too
    # (another layer's params, LoRA weights on a layer without LoRA, a wrong kernel size).
    with pytest.raises(ValueError, match=rf"{name}: params have \['stray'\], which the "
                                         r"layer does not use"):
        layer({**params, "stray": jnp.ones(3)}, x)
    for weight, value in params.items():
        shape = (value.shape[0] + 1,) + value.shape[1:]
        for run in (layer, jax.jit(layer)):
            with pytest.raises(ValueError, match=rf"{name}: params\['{weight}'\] has shape "
                                                 rf"{re.escape(str(shape))}, where"):
                run({**params, weight: jnp.ones(shape)}, x)
    # Not arrays at all: named, not JAX's "not a valid JAX array type" / "stage" errors;
    # and Keras's get_weights() list in place of the params dict.
    for bad, text in [("abc", "str 'abc'"), (None, "NoneType None"),
                      (np.empty(x.shape, object), "ndarray of dtype object")]:
        with pytest.raises(TypeError, match=rf"{name}: inputs must be an array .*got {text}"):
            layer(params, bad)
    with pytest.raises(TypeError, match=rf"{name}: inputs must be an array, got "
                                        r"ShapeDtypeStruct.*jax.eval_shape"):
        layer(params, jax.ShapeDtypeStruct(x.shape, x.dtype))
    with pytest.raises(TypeError, match=rf"{name}: params must be a dict .* got a list of "
                                        rf"{len(params)} arrays.*params_from_keras"):
        layer(list(params.values()), x)


@pytest.mark.parametrize("cls", [kconv.Conv2D, kconv.SeparableConv2D])
def test_window_larger_than_input(cls):
    layer = cls(2, 5)
    params = layer.init(jax.random.key(0), (None, 8, 8, 1))
    with pytest.raises(ValueError, match=r"window is larger.*\(1, 3, 8, 1\)"):
        jax.jit(layer)(params, jnp.ones((1, 3, 8, 1)))
    with pytest.raises(ValueError, match=rf"{cls.__name__}: the convolution output would be empty"):
        layer.compute_output_shape((None, 3, 8, 1))


@pytest.mark.parametrize("make,message", [
    (lambda: kconv.Conv2D(0, 3), r"Conv2D: filters must be a positive integer, got 0"),
    (lambda: kconv.Conv2D(2.5, 3), r"Conv2D: filters must be a positive integer, got 2.5"),
    (lambda: kconv.Conv2D(2, (1, 0)), r"Conv2D: kernel_size must be positive.*\(1, 0\)"),
    (lambda: kconv.Conv2D(2, (1, 2, 3)), r"Conv2D: kernel_size must be .*2 ints.*\(1, 2, 3\)"),
    (lambda: kconv.Conv3D(2, 3, strides=(2, 0, 1)), r"Conv3D: strides .*\(2, 0, 1\)"),
    (lambda: kconv.Conv1D(2, 3, dilation_rate=-1), r"Conv1D: dilation_rate .*-1"),
    (lambda: kconv.Conv2D(2, 3, padding="full"), r"Conv2D: padding must be one of.*'full'"),
    (lambda: kconv.Conv2D(2, 3, padding="causal"), r"Conv2D: padding .*'causal'"),
    (lambda: kconv.Conv2DTranspose(2, 3, padding="causal"),
     r"Conv2DTranspose: padding .*'causal'"),
    (lambda: kconv.Conv2D(2, 3, data_format="NHWC"), r"Conv2D: data_format .*'NHWC'"),
    (lambda: kconv.Conv2D(3, 3, groups=2), r"Conv2D: filters must be divisible by groups"),
    (lambda: kconv.Conv2D(2, 3, groups=0), r"Conv2D: groups must be a positive integer, got 0"),
    (lambda: kconv.Conv2D(2, 3, activation="nope"), r"Conv2D: invalid activation 'nope'"),
    (lambda: kconv.Conv2D(2, 3, kernel_initializer="nope"),
     r"Conv2D: invalid kernel_initializer 'nope'"),
    (lambda: kconv.Conv2D(2, 3, kernel_regularizer="nope"),
     r"Conv2D: invalid kernel_regularizer 'nope'"),
    (lambda: kconv.Conv2D(2, 3, bias_constraint="nope"),
     r"Conv2D: invalid bias_constraint 'nope'"),
    (lambda: kconv.Conv2D(2, 3, use_bias="yes"), r"Conv2D: use_bias must be a bool, got 'yes'"),
    (lambda: kconv.Conv2D(2, 3, dtype="int32"), r"Conv2D: dtype must be a floating.*int32"),
    (lambda: kconv.Conv2DTranspose(2, 3, strides=2, output_padding=2),
     r"Conv2DTranspose: output_padding must be smaller than strides.*2"),
    (lambda: kconv.Conv2DTranspose(2, 3, output_padding=-1),
     r"Conv2DTranspose: output_padding .*-1"),
    (lambda: kconv.DepthwiseConv2D(3, depth_multiplier=0),
     r"DepthwiseConv2D: depth_multiplier must be a positive integer, got 0"),
    (lambda: kconv.SeparableConv1D(2, "3"), r"SeparableConv1D: kernel_size .*'3'"),
])
def test_argument_errors(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_keras_layer_arguments_are_refused_with_what_to_use(name):
    """Keras's base-Layer keywords (name=, trainable=, input_shape=, ...) are refused with
    a hint, not Python's bare "unexpected keyword argument": a ported trainable=False must
    not pass unnoticed. The signature stays Keras's own arguments."""
    cls = getattr(kconv, name)
    args, _ = EXAMPLES[name]
    for arg, value, hint in [("name", "conv1", r"has no name"),
                             ("trainable", False, r"optax.masked"),
                             ("input_shape", (28, 28, 1), r"layer.init\(key,")]:
        with pytest.raises(TypeError, match=rf"^{name}: {arg}={re.escape(repr(value))} is a "
                                            rf"Keras Layer argument.*{hint}"):
            cls(**args, **{arg: value})
    assert "name" not in inspect.signature(cls).parameters
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        cls(**args, nope=1)


@pytest.mark.parametrize("make,message", [
    # Flax's nn.Conv names
    (lambda: kconv.Conv2D(features=8, kernel_size=3),
     r"^Conv2D: features=8 is Flax's name; kconv's layers take Keras's: filters=\.\.\.$"),
    (lambda: kconv.Conv2D(8, 3, kernel_dilation=2), r"kernel_dilation=2 is Flax's.*dilation_rate="),
    (lambda: kconv.Conv1D(8, 3, feature_group_count=2), r"feature_group_count=2.*groups="),
    (lambda: kconv.SeparableConv2D(8, 3, kernel_init=None),
     r"SeparableConv2D: kernel_init=None is Flax's.*depthwise_initializer="),
    (lambda: kconv.Conv3DTranspose(8, 3, bias_init=None), r"bias_init=None.*bias_initializer="),
    (lambda: kconv.Conv2D(8, 3, out_features=8), r"out_features=8 is Flax NNX's.*filters="),
    (lambda: kconv.Conv1D(8, 3, in_features=3),
     r"Conv1D: in_features=3: a kconv layer reads its input channels.*take in_channels="),
    (lambda: kconv.Conv2D(8, 3, input_dilation=2),
     r"^Conv2D: input_dilation=2 is a Flax convolution's argument, which kconv's layers do "
     r"not have: a convolution of the dilated input is a ConvNDTranspose"),
    (lambda: kconv.Conv2DTranspose(8, 3, transpose_kernel=True), r"transpose_kernel=True .*"
     r"Flax's transpose_kernel=True layout"),
    (lambda: kconv.Conv1D(8, 3, mask=None), r"mask=None .*no kconv layer takes a kernel mask"),
    (lambda: kconv.DepthwiseConv2D(3, bias_metadata={}),
     r"bias_metadata=\{\} .*bias_initializer=nnx.with_partitioning"),
    # PyTorch's nn.ConvNd / nn.Upsample names
    (lambda: kconv.Conv2D(8, 3, stride=2), r"^Conv2D: stride=2 is PyTorch's.*: strides=\.\.\.$"),
    (lambda: kconv.Conv1DTranspose(8, 3, dilation=2), r"dilation=2 is PyTorch's.*dilation_rate="),
    (lambda: kconv.Conv2D(8, 3, bias=False), r"bias=False is PyTorch's.*use_bias="),
    (lambda: kconv.Conv2D(8, 3, out_channels=8), r"out_channels=8 is PyTorch's.*filters="),
    (lambda: kconv.DepthwiseConv1D(3, out_channels=8),
     r"DepthwiseConv1D: out_channels=8 is PyTorch's.*depth_multiplier=\.\.\. \(the output "
     r"channels are the input's times depth_multiplier\)"),
    (lambda: kconv.UpSampling2D(scale_factor=2, mode="bilinear"),
     r"mode='bilinear' is PyTorch's.*interpolation="),
    (lambda: kconv.UpSampling3D(scale_factor=2), r"scale_factor=2 is PyTorch's.*size="),
    (lambda: kconv.Conv2D(8, 3, in_channels=3),
     r"Conv2D: in_channels=3: a kconv layer reads its input channels from the input.*"
     r"kconv.nnx modules take in_channels="),
    # a foreign name for an argument the layer does not have: Python's own error
    (lambda: kconv.UpSampling1D(mode="nearest"), r"unexpected keyword argument 'mode'"),
    (lambda: kconv.Cropping2D(stride=2), r"unexpected keyword argument 'stride'"),
])
def test_flax_and_torch_argument_names_say_keras_s(make, message):
    """Code ported from Flax's or PyTorch's convolutions spells arguments their way: the
    layer names Keras's spelling instead of Python's bare "unexpected keyword argument"
    (the linen modules, and through the pure layer the NNX ones, too)."""
    with pytest.raises(TypeError, match=message):
        make()


def test_numpy_scalars_are_taken_as_python_ones():
    """Arguments read from arrays or configs held in NumPy (np.int64(8), np.False_) give
    the layer the same Python values, hash and config."""
    layer = kconv.Conv2D(np.int64(8), np.int32(3), strides=np.int64(2), use_bias=np.False_)
    assert layer == kconv.Conv2D(8, 3, strides=2, use_bias=False)
    assert hash(layer) == hash(kconv.Conv2D(8, 3, strides=2, use_bias=False))
    assert type(layer.use_bias) is bool and type(layer.filters) is int
    json.dumps(layer.get_config())
    # Keras takes NumPy arrays for its tuple arguments too (standardize_tuple iterates them)
    arrays = kconv.Conv2DTranspose(4, np.array([3, 2]), strides=np.array([2, 1]),
                                   dilation_rate=np.array([1, 1]),
                                   output_padding=np.array([1, 0]))
    assert arrays == kconv.Conv2DTranspose(4, (3, 2), strides=(2, 1), output_padding=(1, 0))
    assert all(type(v) is int for v in arrays.kernel_size + arrays.output_padding)
    json.dumps(arrays.get_config())
    assert kconv.UpSampling3D(np.array([1, 2, 3])).size == (1, 2, 3)
    with pytest.raises(TypeError, match=r"Conv2D: kernel_size must be an int or a tuple of 2 "):
        kconv.Conv2D(4, np.array([3.0, 3.0]))
    with pytest.raises(ValueError, match=r"Conv2D: strides must be an int or a tuple of 2 "):
        kconv.Conv2D(4, 3, strides=np.array([1, 1, 1]))


def test_init_errors():
    with pytest.raises(ValueError, match=r"Conv2D: expected an input_shape of rank 4.*\(8, 8\)"):
        kconv.Conv2D(2, 3).init(jax.random.key(0), (8, 8))
    with pytest.raises(ValueError, match=r"Conv2D: the channel dimension.*None"):
        kconv.Conv2D(2, 3).init(jax.random.key(0), (None, 8, 8, None))
    with pytest.raises(ValueError, match=r"Conv1D: the input channels \(3\).*groups=2"):
        kconv.Conv1D(2, 3, groups=2).init(jax.random.key(0), (None, 8, 3))
    layer, key = kconv.Conv2D(2, 3), jax.random.key(0)
    # An example input (what Flax's init takes) is named, not read row by row
    with pytest.raises(TypeError, match=r"Conv2D: input_shape .* got an array .* of shape "
                                        r"\(2, 8, 8, 3\): pass its .shape"):
        layer.init(key, jnp.ones((2, 8, 8, 3)))
    with pytest.raises(TypeError, match=r"ShapeDtypeStruct\) of shape \(2, 8, 8, 3\)"):
        layer.init(key, jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32))
    # A traced shape (jax.eval_shape / jit of init with the shape as an argument)
    with pytest.raises(TypeError, match=r"Conv2D: .*traced value.*static_argnums"):
        jax.eval_shape(layer.init, key, (None, 8, 8, 3))
    assert jax.eval_shape(lambda k: layer.init(k, (None, 8, 8, 3)), key)["kernel"].shape == (
        3, 3, 3, 2)
    for dims, error in [((None, 8.0, 8, 3), TypeError), ((None, True, 8, 3), TypeError),
                        ((None, -1, 8, 3), ValueError), ("abcd", TypeError)]:
        with pytest.raises(error, match=r"Conv2D: input_shape"):
            layer.init(key, dims)
        with pytest.raises(error, match=r"Conv2D: input_shape"):
            layer.compute_output_shape(dims)  # used to give (None, 6.0, 6, 2) for 8.0
    with pytest.raises(TypeError, match=r"UpSampling2D: input_shape .* got 8.5"):
        kconv.UpSampling2D().compute_output_shape((None, 8.5, 8, 3))
    with pytest.raises(ValueError, match=r"kconv.ops.conv_output_shape: input_shape dims must "
                                         r"be non-negative"):
        kconv.ops.conv_output_shape((None, 8, -8, 3), 4, 3)
    with pytest.raises(TypeError, match=r"Conv2D.init: key must be a jax.random key.* got 0"):
        layer.init(0, (None, 8, 8, 3))
    with pytest.raises(ValueError, match=r"Conv2D: the channel dimension.*known"):
        layer.init(key, jax.export.symbolic_shape("b, 8, 8, c"))


SYMBOLIC_CASES = LAYERS + [
    (kconv.ZeroPadding2D(((1, 2), 3)), (2, 5, 6, 3)),
    (kconv.Cropping3D(1, data_format="channels_first"), (2, 3, 5, 6, 7)),
    (kconv.UpSampling2D((2, 3), interpolation="bilinear"), (2, 4, 5, 3)),
]


@pytest.mark.parametrize("layer,shape", SYMBOLIC_CASES,
                         ids=[type(layer).__name__ for layer, _ in SYMBOLIC_CASES])
def test_compute_output_shape_of_symbolic_shapes(layer, shape):
    """``jax.export``'s symbolic dims (a batch "b", a side "h") pass through
    compute_output_shape as the traced layer computes them (they used to raise JAX's
    InconclusiveDimensionOperation), and init needs only the channel dim."""
    from jax import export

    spatial = 2 if layer.data_format == "channels_first" else 1
    dims = ["b", *map(str, shape[1:])]
    dims[spatial] = "h"
    symbolic = export.symbolic_shape(", ".join(dims), constraints=[f"h >= {shape[spatial]}"])
    params = layer.init(jax.random.key(0), symbolic)
    traced = jax.eval_shape(layer, params, jax.ShapeDtypeStruct(symbolic, jnp.float32))
    assert layer.compute_output_shape(symbolic) == traced.shape


def test_causal_output_never_sees_the_future():
    layer = kconv.Conv1D(2, 3, padding="causal", dilation_rate=3)
    params = layer.init(jax.random.key(0), (None, 20, 1))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 20, 1)), jnp.float32)
    jac = jax.jacobian(lambda v: layer(params, v)[0, :, 0])(x)[:, 0, :, 0]
    assert jnp.all(jnp.triu(jac, k=1) == 0)  # d y[t] / d x[s] == 0 for s > t
    assert jnp.any(jnp.tril(jac) != 0)
    cf = kconv.Conv1D(2, 3, padding="causal", dilation_rate=3, data_format="channels_first")
    np.testing.assert_allclose(cf(params, jnp.swapaxes(x, 1, 2)),
                               jnp.swapaxes(layer(params, x), 1, 2), rtol=1e-6, atol=1e-6)


def test_regularization_losses_batch_size_and_unbatched():
    layer = kconv.Conv1D(2, 3, activity_regularizer=kconv.regularizers.L1(1.0),
                         use_bias=False)
    params = layer.init(jax.random.key(0), (None, 6, 1))
    x = jnp.ones((4, 6, 1))
    y = layer(params, x)
    np.testing.assert_allclose(layer.regularization_losses(params, y),
                               np.abs(np.asarray(y)).sum() / 4, rtol=1e-6)
    np.testing.assert_allclose(layer.regularization_losses(params, y[0]),
                               np.abs(np.asarray(y[0])).sum(), rtol=1e-6)
    assert float(layer.regularization_losses(params)) == 0.0
    grads = jax.grad(lambda p: layer.regularization_losses(p, layer(p, x)))(params)
    assert grads["kernel"].shape == params["kernel"].shape


def test_callables_are_accepted():
    def my_init(key, shape, dtype=jnp.float32):
        return jnp.full(shape, 0.5, dtype)

    layer = kconv.Conv1D(2, 3, activation=jnp.abs, kernel_initializer=my_init,
                         kernel_regularizer=lambda w: 3.0 * jnp.sum(w),
                         kernel_constraint=lambda w: jnp.clip(w, 0.0, 0.25))
    params = layer.init(jax.random.key(0), (None, 5, 2))
    np.testing.assert_array_equal(params["kernel"], np.full((3, 2, 2), 0.5))
    np.testing.assert_allclose(layer.regularization_losses(params), 3.0 * 0.5 * 12)
    np.testing.assert_array_equal(layer.constrain(params)["kernel"], np.full((3, 2, 2), 0.25))
    x = -jnp.ones((1, 5, 2))
    np.testing.assert_allclose(layer(params, x), np.full((1, 3, 2), 3.0))
    hash(layer)


class TestDataFormatResolution:
    @pytest.fixture(autouse=True)
    def _isolated(self, tmp_path, monkeypatch):
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        monkeypatch.delenv("KERAS_HOME", raising=False)
        kconv.config.set_image_data_format(None)
        yield
        kconv.config.set_image_data_format(None)

    @staticmethod
    def _write(folder, value):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "keras.json").write_text(json.dumps({"image_data_format": value}))

    def test_order(self, tmp_path, monkeypatch):
        assert kconv.Conv1D(2, 3).data_format == "channels_last"
        self._write(tmp_path / "home" / ".keras", "channels_first")
        assert kconv.Conv1D(2, 3).data_format == "channels_first"
        monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
        self._write(tmp_path / "kh", "channels_last")
        assert kconv.Conv2D(2, 3).data_format == "channels_last"
        kconv.config.set_image_data_format("channels_first")
        assert kconv.Conv3DTranspose(2, 3).data_format == "channels_first"
        assert kconv.Conv2D(2, 3, data_format="channels_last").data_format == "channels_last"

    def test_resolved_at_construction(self):
        layer = kconv.Conv2D(2, 3)
        kconv.config.set_image_data_format("channels_first")
        assert layer.data_format == "channels_last"
        assert layer.get_config()["data_format"] == "channels_last"

    def test_bad_values(self, tmp_path):
        with pytest.raises(ValueError, match="set_image_data_format.*'NCHW'"):
            kconv.config.set_image_data_format("NCHW")
        self._write(tmp_path / "home" / ".keras", "sideways")
        with pytest.raises(ValueError, match="keras.json.*'sideways'"):
            kconv.Conv2D(2, 3)


def test_from_config_rejects_unknown_keys():
    # Keras's DepthwiseConv has no LoRA (its Conv siblings do, and kconv with them).
    with pytest.raises(ValueError,
                       match=r"DepthwiseConv2D.from_config: unknown config key.*'lora_rank'"):
        kconv.DepthwiseConv2D.from_config({"kernel_size": 3, "lora_rank": 4})


def test_precision_is_passed_to_lax():
    layer = kconv.Conv2D(2, 3, precision="highest")
    params = layer.init(jax.random.key(0), (None, 5, 5, 2))
    hlo = jax.jit(layer).lower(params, jnp.ones((1, 5, 5, 2))).as_text()
    assert "HIGHEST" in hlo.upper()


def test_precision_checked_at_construction_and_hashable():
    # precision="ultra" built and initialized, failing only when applied with lax's
    # message; a list made the layer unhashable.
    with pytest.raises(ValueError, match=r"^Conv2D: precision must be None, a jax.lax."
                                         r"Precision or its name .* got 'ultra'"):
        kconv.Conv2D(4, 3, precision="ultra")
    with pytest.raises(ValueError, match="^ZeroPadding2D: precision must be"):
        kconv.ZeroPadding2D(1, precision="ultra")
    layer = kconv.Conv2D(4, 3, precision=["highest", "highest"])
    assert layer.precision == ("highest", "highest") and hash(layer) == hash(
        kconv.Conv2D(4, 3, precision=("highest", "highest")))
    assert kconv.Conv2D(4, 3, precision=jax.lax.Precision.HIGH).precision is \
        jax.lax.Precision.HIGH


def test_lora_alpha_takes_numpy_scalars_as_keras_does():
    for alpha in (np.float32(2.0), np.int64(2), np.float16(2.0)):
        layer = kconv.Conv2D(4, 3, lora_rank=2, lora_alpha=alpha)
        assert layer.lora_alpha == 2 and type(layer.lora_alpha) in (int, float)
        json.dumps(layer.get_config())
    for alpha in (True, np.float32(0.0), np.float32("nan"), "2"):
        with pytest.raises(ValueError, match="lora_alpha must be a positive number"):
            kconv.Conv2D(4, 3, lora_rank=2, lora_alpha=alpha)


def test_weights_that_are_not_arrays_and_complex_values():
    # A list kernel was a bare AttributeError ('list' object has no attribute 'shape');
    # complex inputs and weights were cast to real, the imaginary part dropped.
    x = np.ones((1, 5, 5, 2), np.float32)
    for layer in (kconv.Conv2D(3, 3), kconv.DepthwiseConv2D(3), kconv.SeparableConv2D(3, 3),
                  kconv.Conv2DTranspose(3, 3)):
        params = layer.init(jax.random.key(0), x.shape)
        name = layer._names()[0]
        as_list = dict(params, **{name: np.asarray(params[name]).tolist()})
        np.testing.assert_allclose(layer(as_list, x), layer(params, x), rtol=1e-6)
        for bad in (None, "abc"):
            with pytest.raises(TypeError, match=rf"^{type(layer).__name__}: params\['{name}'\] "
                                                r"must be an array"):
                layer(dict(params, **{name: bad}), x)
        with pytest.raises(TypeError, match=rf"^{type(layer).__name__}: inputs must be real"):
            layer(params, x + 1j)
        with pytest.raises(TypeError, match=rf"params\['{name}'\] must be real"):
            layer(dict(params, **{name: params[name] * 1j}), x)


def test_a_keras_dtype_policy_object_means_what_it_means_in_keras():
    # dtype=keras.DTypePolicy("bfloat16") kept float32 params and wrote "mixed_bfloat16":
    # Keras's layer (and kconv's from_config of its config) keeps bfloat16 params.
    import keras  # conftest.py has set KERAS_BACKEND=jax

    policy = keras.DTypePolicy("bfloat16")
    ours = kconv.Conv1D(2, 3, dtype=policy)
    theirs = keras.layers.Conv1D(2, 3, dtype=policy)
    theirs.build((None, 7, 3))
    assert ours.param_dtype == ours.dtype == jnp.bfloat16
    assert ours.init(jax.random.key(0), (None, 7, 3))["kernel"].dtype == theirs.kernel.dtype
    assert ours == kconv.interop.layer_from_keras(theirs) == kconv.Conv1D(
        2, 3, dtype={"class_name": "DTypePolicy", "config": {"name": "bfloat16"}})
    assert ours.get_config()["dtype"] == "bfloat16"
    mixed = kconv.Conv1D(2, 3, dtype=keras.DTypePolicy("mixed_bfloat16"))
    assert (mixed.dtype, mixed.param_dtype) == (jnp.bfloat16, jnp.float32)
    assert kconv.Conv1D(2, 3, dtype="bfloat16").param_dtype == jnp.float32  # Flax's meaning
    with pytest.raises(ValueError, match=r"dtype='bfloat16' is a Keras dtype policy, which "
                                         r"keeps the params in its dtype too"):
        kconv.Conv1D(2, 3, dtype=policy, param_dtype="float16")
