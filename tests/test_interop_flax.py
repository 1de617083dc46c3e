"""kconv.interop.flax: Flax's own convolutions (linen and NNX) → kconv layers and params.

Flax is the oracle: each case builds a Flax module, initializes it with a random kernel and
a non-zero bias, converts it with ``layer_from_flax`` / ``params_from_flax`` and compares
kconv's output (and gradients) with the module's own, for every padding form, stride,
dilation, group count and kernel layout Flax has. Then the refusals, and whole models.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import kconv
from kconv.interop import FlaxLayers, layer_from_flax, layers_from_flax, params_from_flax

TOL = dict(rtol=1e-5, atol=1e-5)
BIAS = jax.nn.initializers.uniform(1.0)  # a non-zero bias, so a bias slip shows


def _x(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _linen(cls, x, *args, **kwargs):
    """A linen module, its params and its output on ``x``."""
    kwargs.setdefault("bias_init", BIAS)
    module = cls(*args, **kwargs)
    variables = module.init(jax.random.key(0), x)
    return module, variables["params"], module.apply(variables, x)


def _nnx(cls, in_features, x, *args, **kwargs):
    """An NNX module (random bias) and its output on ``x``."""
    module = cls(in_features, *args, rngs=nnx.Rngs(0), **kwargs)
    if module.bias is not None:
        module.bias[...] = jax.random.uniform(jax.random.key(1), module.bias.shape)
    return module, module(x)


def _check(module, params, want, x):
    layer = layer_from_flax(module)
    got = layer(params_from_flax(module, params), x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, **TOL)
    return layer


def _ported(api, transposed, x, features, kernel_size, **kwargs):
    """The layer ported from a linen or NNX module, checked against the module on ``x``."""
    if api == "linen":
        cls = nn.ConvTranspose if transposed else nn.Conv
        module, params, want = _linen(cls, x, features, kernel_size, **kwargs)
    else:
        cls = nnx.ConvTranspose if transposed else nnx.Conv
        (module, want), params = _nnx(cls, x.shape[-1], x, features, kernel_size, **kwargs), None
    return _check(module, params, want, x)


# --- Conv ---------------------------------------------------------------------------------

CONV_CASES = [  # rank, kernel_size, kwargs, kconv padding expected (None: explicit pairs)
    (1, (3,), dict(padding="SAME"), "same"),
    (1, (4,), dict(padding="SAME", strides=3), "same"),
    (1, (3,), dict(padding="CAUSAL", kernel_dilation=2), "causal"),
    (1, (5,), dict(padding="VALID", strides=2), "valid"),
    (1, (3,), dict(padding=2, kernel_dilation=2), "same"),
    (1, (2,), dict(padding="SAME_LOWER"), None),
    (1, (4,), dict(padding=[(3, 0)], strides=2), None),
    (2, (3, 3), dict(padding="same"), "same"),
    (2, (3, 2), dict(padding="CIRCULAR", strides=2), None),
    (2, (4, 3), dict(padding="REFLECT", kernel_dilation=(1, 2)), None),
    (2, (3, 3), dict(padding=((1, 2), 0), strides=(2, 1)), None),
    (2, (3, 3), dict(padding=1, feature_group_count=2), "same"),
    (2, (1, 1), dict(padding=0, use_bias=False), "valid"),
    (3, (2, 3, 2), dict(padding="SAME", strides=2), "same"),
    (3, (3, 3, 3), dict(padding="CIRCULAR", feature_group_count=2), None),
]


# NNX reads the same settings from other attribute names: every other case is enough.
@pytest.mark.parametrize("api, rank, kernel_size, kwargs, padding",
                         [("linen", *case) for case in CONV_CASES]
                         + [("nnx", *case) for case in CONV_CASES[::3]])
def test_conv(api, rank, kernel_size, kwargs, padding):
    x = _x((2,) + (7, 6, 5)[:rank] + (4,))
    layer = _ported(api, False, x, 6, kernel_size, **kwargs)
    assert type(layer) is {1: kconv.Conv1D, 2: kconv.Conv2D, 3: kconv.Conv3D}[rank]
    assert (layer.padding if padding is None or isinstance(layer.padding, str)
            else None) == (padding or layer.padding)
    assert layer.groups == kwargs.get("feature_group_count", 1)
    assert layer.use_bias == kwargs.get("use_bias", True)


def test_conv_edge_padding_modes():
    # Flax pads CIRCULAR / REFLECT by ((K - 1) // 2, K // 2): the layer says so.
    module = nn.Conv(2, (4, 3), padding="REFLECT", kernel_dilation=(1, 2))
    layer = layer_from_flax(module)
    assert layer.padding == ((1, 2), (2, 2)) and layer.padding_mode == "reflect"
    assert layer_from_flax(nnx.Conv(1, 1, 3, padding="CIRCULAR",
                                    rngs=nnx.Rngs(0))).padding_mode == "circular"


def test_conv_extra_batch_dims_and_unbatched():
    # Flax takes any number of leading batch dims (and none); so do kconv's layers.
    x = _x((2, 3, 8, 5))
    module, params, want = _linen(nn.Conv, x, 4, (3,), padding="SAME")
    _check(module, params, want, x)
    module, params, want = _linen(nn.Conv, x[0, 0], 4, (3,), padding="SAME")
    _check(module, params, want, x[0, 0])


# --- Conv with input_dilation: a transposed convolution -----------------------------------

@pytest.mark.parametrize("api", ["linen", "nnx"])
@pytest.mark.parametrize("rank, kwargs", [
    (1, dict(kernel_size=(3,), input_dilation=2, padding=1)),
    (1, dict(kernel_size=(4,), input_dilation=3, padding=0, kernel_dilation=2)),
    (1, dict(kernel_size=(2,), input_dilation=2, padding=[(1, 2)])),  # 1 zero after
    (2, dict(kernel_size=(3, 3), input_dilation=(2, 1), padding=((2, 3), (0, 1)))),
    (2, dict(kernel_size=(3, 2), input_dilation=2, padding=((1, 1), (0, 1)),
             feature_group_count=2)),
    (3, dict(kernel_size=(2, 2, 3), input_dilation=(1, 2, 2), padding=0,
             feature_group_count=4, use_bias=False)),
    (3, dict(kernel_size=(2, 2, 2), input_dilation=2, padding=[(1, 2)] * 3)),
])
def test_conv_input_dilation(api, rank, kwargs):
    x = _x((2,) + (5, 4, 3)[:rank] + (4,))
    kwargs = dict(kwargs)
    kernel_size = kwargs.pop("kernel_size")
    layer = _ported(api, False, x, 8, kernel_size, **kwargs)
    assert isinstance(layer, kconv.layers.ConvTranspose)
    assert layer.strides == tuple(np.broadcast_to(kwargs["input_dilation"], rank))
    assert layer.groups == kwargs.get("feature_group_count", 1)


# --- ConvTranspose ------------------------------------------------------------------------

TRANSPOSE_CASES = [  # rank, kernel_size, kwargs
    (1, (3,), dict(strides=(2,), padding="SAME")),
    (1, (2,), dict(strides=(3,), padding="SAME")),     # k < s: zeros past the kernel
    (1, (2,), dict(strides=(3,), padding="VALID")),
    (1, (3,), dict(strides=(2,), padding="VALID", kernel_dilation=(2,))),
    (1, (3,), dict(strides=(2,), padding=[(2, 2)])),    # = the full output
    (1, (4,), dict(strides=(2,), padding=[(1, 4)])),    # crop 2 in front, 1 zero after
    (1, (3,), dict(strides=(1,), padding=1)),
    (2, (4, 4), dict(strides=(2, 2), padding="SAME")),
    (2, (3, 3), dict(strides=(2, 1), padding="VALID", use_bias=False)),
    (2, (3, 2), dict(strides=(2, 2), padding=((0, 1), (1, 2)))),
    (3, (2, 3, 2), dict(strides=(2, 1, 2), padding="SAME")),
    (3, (3, 3, 3), dict(strides=(1, 2, 1), padding="VALID", kernel_dilation=(1, 1, 2))),
    (3, (2, 2, 2), dict(strides=(2, 2, 2), padding=[(1, 2)] * 3)),  # an output_padding
]


@pytest.mark.parametrize("api, transpose_kernel, rank, kernel_size, kwargs",
                         [("linen", t, *case) for t in (False, True) for case in TRANSPOSE_CASES]
                         + [("nnx", t, *case) for t in (False, True)
                            for case in TRANSPOSE_CASES[::4]])
def test_conv_transpose(api, transpose_kernel, rank, kernel_size, kwargs):
    x = _x((2,) + (5, 4, 3)[:rank] + (3,))
    kwargs = dict(kwargs, transpose_kernel=transpose_kernel)
    layer = _ported(api, True, x, 5, kernel_size, **kwargs)
    assert type(layer) is {1: kconv.Conv1DTranspose, 2: kconv.Conv2DTranspose,
                           3: kconv.Conv3DTranspose}[rank]
    if isinstance(kwargs["padding"], str):  # XLA's strings are Keras's
        assert layer.padding == kwargs["padding"].lower() and layer.output_padding is None


@pytest.mark.parametrize("kernel_size, strides, padding, want", [
    (3, 2, [(2, 2)], "valid"), (3, 2, [(2, 1)], "same"), (2, 3, [(1, 2)], "valid"),
    (1, 2, [(0, 1)], "valid"), (4, 2, [(2, 2)], "same"), (4, 2, [(3, 3)], "valid"),
    (4, 2, [(2, 3)], ((1, 0),)), (5, 1, [(2, 2)], "same"),
])
def test_conv_transpose_amounts_as_keras_strings(kernel_size, strides, padding, want):
    # Amounts that are Keras's "same" / "valid" ones are written as those strings (a
    # config Keras reads), and compute what Flax's amounts do.
    x = _x((1, 5, 2))
    module, params, flax_out = _linen(nn.ConvTranspose, x, 3, (kernel_size,),
                                      strides=(strides,), padding=padding)
    layer = _check(module, params, flax_out, x)
    assert layer.padding == want and layer.output_padding is None


@pytest.mark.parametrize("api", ["linen", "nnx"])
@pytest.mark.parametrize("padding", ["same", "valid", "Same", "SAME_LOWER", "same_lower"])
def test_conv_transpose_other_spellings_are_lax_forward_paddings(api, padding):
    # jax.lax.conv_transpose reads only "SAME" and "VALID" as its own rules; any other
    # string it passes on as a forward convolution's padding of the input, which lax runs
    # at stride 1 (with strides, Flax raises): those amounts, not Keras's transposed
    # strings (an even kernel's "same" was off by one, "valid" 6 longer).
    x = _x((2, 7, 3))
    _ported(api, True, x, 4, (4,), padding=padding)
    _ported(api, True, x, 4, (3,), kernel_dilation=(2,), padding=padding)
    with pytest.raises(ValueError, match=r"has padding='same' with strides \(2,\): jax.lax."
                                         r"conv_transpose takes only 'SAME' and 'VALID'"):
        layer_from_flax(nn.ConvTranspose(4, (4,), strides=(2,), padding="same"))


def test_conv_transpose_kernel_layouts():
    # transpose_kernel=True is Keras's layout as is; without it flipped and swapped.
    x = _x((1, 4, 4, 3))
    for transpose_kernel in (True, False):
        module, params, _ = _linen(nn.ConvTranspose, x, 5, (3, 2), strides=(2, 2),
                                   transpose_kernel=transpose_kernel)
        got = params_from_flax(module, params)["kernel"]
        want = params["kernel"] if transpose_kernel else np.swapaxes(
            params["kernel"][::-1, ::-1], -1, -2)
        np.testing.assert_array_equal(got, want)
        assert got.shape == (3, 2, 5, 3)


# --- gradients ----------------------------------------------------------------------------

@pytest.mark.parametrize("cls, kwargs", [
    (nn.Conv, dict(strides=2, padding="CIRCULAR", feature_group_count=2)),
    (nn.Conv, dict(input_dilation=2, padding=((1, 2), (2, 1)), feature_group_count=2)),
    (nn.ConvTranspose, dict(strides=(2, 2), padding=((1, 3), (0, 2)))),
])
def test_gradients(cls, kwargs):
    # The converted params are a differentiable function of Flax's: gradients with respect
    # to Flax's params and the input, through params_from_flax and the layer, are Flax's.
    x = _x((2, 5, 5, 4))
    module, params, want = _linen(cls, x, 4, (3, 3), **kwargs)
    layer = layer_from_flax(module)
    w = jnp.asarray(_x(want.shape, seed=3))

    def flax_loss(p, x):
        return jnp.sum(module.apply({"params": p}, x) * w)

    def kconv_loss(p, x):
        return jnp.sum(layer(params_from_flax(module, p), x) * w)

    want_grads = jax.grad(flax_loss, argnums=(0, 1))(params, x)
    got_grads = jax.grad(kconv_loss, argnums=(0, 1))(params, x)
    for got, want in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


# --- dtypes, precision, initializers ------------------------------------------------------

def test_dtypes():
    x16 = jnp.asarray(_x((1, 6, 6, 3)), jnp.bfloat16)
    # dtype=None promotes the input with the params: float32 for a bfloat16 input.
    module, params, want = _linen(nn.Conv, x16, 4, (3, 3))
    layer = layer_from_flax(module)
    got = layer(params_from_flax(module, params), x16)
    assert layer.dtype == np.float32 and got.dtype == want.dtype == jnp.float32
    np.testing.assert_allclose(got, want, **TOL)
    # Flax's 16-bit compute with float32 params is Keras's mixed policy.
    module, params, want = _linen(nn.Conv, x16, 4, (3, 3), dtype=jnp.bfloat16,
                                  bias_init=jax.nn.initializers.zeros)
    layer = layer_from_flax(module)
    assert (layer.dtype, layer.param_dtype) == (jnp.bfloat16, np.float32)
    assert layer.get_config()["dtype"] == "mixed_bfloat16"
    got = layer(params_from_flax(module, params), x16)
    assert got.dtype == want.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=2e-2, atol=2e-2)
    # bfloat16 params stay bfloat16.
    module = nnx.Conv(3, 4, (3, 3), dtype=jnp.bfloat16, param_dtype=jnp.bfloat16,
                      rngs=nnx.Rngs(0))
    layer, params = layer_from_flax(module), params_from_flax(module)
    assert layer.param_dtype == jnp.bfloat16 and params["kernel"].dtype == jnp.bfloat16
    assert layer.get_config()["dtype"] == "bfloat16"
    # bfloat16 params with dtype=None: Flax computes a float32 input in float32 and a
    # bfloat16 input in bfloat16; so does the layer.
    module = nnx.Conv(3, 4, (3, 3), param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    layer, params = layer_from_flax(module), params_from_flax(module)
    for x in (x16.astype(jnp.float32), x16):
        got, want = layer(params, x), module(x)
        assert got.dtype == want.dtype == x.dtype
        np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=2e-2, atol=2e-2)


def test_precision_carried():
    module = nn.Conv(4, (3,), precision=jax.lax.Precision.HIGHEST)
    assert layer_from_flax(module).precision == jax.lax.Precision.HIGHEST


def test_default_initializers_are_keras_objects():
    keras = pytest.importorskip("keras")
    layer = layer_from_flax(nn.Conv(8, (3, 3), padding="VALID"))
    assert isinstance(layer.kernel_initializer, kconv.initializers.LecunNormal)
    assert isinstance(layer.bias_initializer, kconv.initializers.Zeros)
    config = layer.get_config()
    assert config["kernel_initializer"]["class_name"] == "LecunNormal"
    keras_layer = keras.layers.Conv2D.from_config(config)  # a config Keras reads
    assert keras_layer.kernel_size == (3, 3) and keras_layer.padding == "valid"
    assert isinstance(layer_from_flax(nnx.ConvTranspose(2, 4, (3,), rngs=nnx.Rngs(0)))
                      .kernel_initializer, kconv.initializers.LecunNormal)


def test_custom_initializers_kept():
    init = jax.nn.initializers.normal(0.02)
    layer = layer_from_flax(nn.Conv(8, (3,), kernel_init=init, bias_init=init))
    assert layer.kernel_initializer is init and layer.bias_initializer is init


@pytest.mark.parametrize("groups", [1, 2])
def test_transposed_initializer_uses_flax_fans(groups):
    # A fresh lecun_normal (not Flax's default object) draws with Flax's fan_in: the
    # transposed layer's kernel must have Flax's spread, 1 / sqrt(k * in / groups), not
    # the one its own (k, out / g, in) layout would give.
    kwargs = (dict(input_dilation=2, feature_group_count=groups, padding=1) if groups > 1
              else dict(strides=(2,)))
    cls = nn.Conv if groups > 1 else nn.ConvTranspose
    module = cls(256, (3,), kernel_init=jax.nn.initializers.lecun_normal(), **kwargs)
    layer = layer_from_flax(module)
    kernel = layer.init(jax.random.key(0), (None, 8, 4))["kernel"]
    assert kernel.shape == (3, 256 // groups, 4)
    np.testing.assert_allclose(np.std(kernel), 1 / np.sqrt(3 * 4 / groups), rtol=0.1)


def test_transposed_initializer_values_in_flax_layout():
    # A deterministic initializer: the layer it initializes computes what the module it
    # initializes computes.
    def iota(key, shape, dtype=jnp.float32):
        return jnp.arange(np.prod(shape), dtype=dtype).reshape(shape) / np.prod(shape)

    x = _x((1, 5, 5, 4))
    for cls, kwargs in ((nn.ConvTranspose, dict(strides=(2, 2))),
                        (nn.Conv, dict(input_dilation=2, feature_group_count=2,
                                       padding=1))):
        module = cls(6, (3, 2), kernel_init=iota, **kwargs)
        want = module.apply(module.init(jax.random.key(0), x), x)
        layer = layer_from_flax(module)
        params = layer.init(jax.random.key(0), x.shape)
        np.testing.assert_allclose(layer(params, x), want, **TOL)


# --- refusals -----------------------------------------------------------------------------

@pytest.mark.parametrize("module, match", [
    (nn.Conv(4, (3, 3), mask=jnp.ones((3, 3, 2, 4))), "kernel mask"),
    (nn.Conv(4, (3,), input_dilation=2, strides=2), r"input_dilation=\(2,\) with strides"),
    (nn.Conv(4, (3,), input_dilation=2), "which jax.lax does not run with an input"),
    (nn.Conv(4, (3,), padding=-1), "negative amounts crop"),
    (nn.Conv(4, (3,), padding="SAME_LOWER", strides=2), "SAME_LOWER"),
    (nn.Conv(4, (3, 3), padding="CAUSAL"), "not run on 2 spatial axes"),
    (nn.Conv(4, (3, 3, 3, 3)), "4 spatial axes"),
    (nn.Conv(4, (3,), conv_general_dilated=jax.lax.conv_general_dilated),
     "its own conv_general_dilated"),
    (nn.ConvTranspose(4, (3,), preferred_element_type=jnp.float32),
     "its own preferred_element_type"),
    (nn.ConvTranspose(4, (3,), strides=(2,), padding="CIRCULAR"), "periods"),
    (nn.ConvTranspose(4, (3,), padding=[(3, 0)]), r"by 3 > K - 1 = 2 in front"),
    (nn.ConvTranspose(4, (3,), strides=(2,), padding=[(0, 4)]), "past the end"),
    (nn.Conv(4, (3, 3), padding=[1, 2, 3]), "Invalid padding format"),
])
def test_refused(module, match):
    with pytest.raises(ValueError, match=match) as info:
        layer_from_flax(module)
    assert str(info.value).startswith("layer_from_flax: nn.")


def test_refused_classes():
    with pytest.raises(TypeError, match="kernel per output position"):
        layer_from_flax(nn.ConvLocal(4, (3,)))

    class MyConv(nn.Conv):
        pass

    with pytest.raises(TypeError, match="a subclass of nn.Conv may compute something"):
        layer_from_flax(MyConv(4, (3,)))
    with pytest.raises(TypeError, match="got Dense"):
        layer_from_flax(nn.Dense(4))
    with pytest.raises(TypeError, match="got Conv2D"):
        layer_from_flax(kconv.Conv2D(4, 3))


def test_params_errors():
    x = _x((1, 6, 3))
    module, params, _ = _linen(nn.Conv, x, 4, (3,))
    assert params_from_flax(module, {"params": params})["kernel"].shape == (3, 3, 4)
    with pytest.raises(TypeError, match="is a linen module: pass its params"):
        params_from_flax(module)
    with pytest.raises(ValueError, match=r"has params \['kernel', 'bias'\], got keys "
                                         r"\['kernel'\]"):
        params_from_flax(module, {"kernel": params["kernel"]})
    with pytest.raises(ValueError, match=r"params\['kernel'\] has shape \(3, 3, 5\), "
                                         r"expected \(3, in_features // 1, 4\) \(with any "
                                         r"stack axes\)"):
        params_from_flax(module, {"kernel": np.zeros((3, 3, 5)), "bias": params["bias"]})
    with pytest.raises(ValueError, match=r"params\['bias'\] has shape \(5,\)"):
        params_from_flax(module, {"kernel": params["kernel"], "bias": np.zeros(5)})
    with pytest.raises(TypeError, match="must be a mapping"):
        params_from_flax(module, [params["kernel"]])
    t = nn.ConvTranspose(4, (3,), transpose_kernel=True)
    with pytest.raises(ValueError, match=r"expected \(3, 4, in_features\)"):
        params_from_flax(t, {"kernel": np.zeros((3, 2, 4)), "bias": np.zeros(4)})
    n = nnx.Conv(3, 4, (3,), rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="holds its params"):
        params_from_flax(n, params)
    with pytest.raises(ValueError, match="^params_from_flax: .* kernel mask"):
        params_from_flax(nn.Conv(4, (3,), mask=np.ones((3, 3, 4))), params)


# --- whole models -------------------------------------------------------------------------

class _Block(nn.Module):
    features: int

    def setup(self):
        self.conv = nn.Conv(self.features, (3, 3), padding="SAME")
        self.norm = nn.BatchNorm()

    def __call__(self, x, train):
        return nn.relu(self.norm(self.conv(x), use_running_average=not train))


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = _Block(8, name="block")(x, train)
        shared = nn.Conv(8, (1, 1), name="shared")
        x = shared(shared(x))
        x = nn.Dropout(0.5, deterministic=not train)(x)
        x = nn.ConvTranspose(4, (2, 2), strides=(2, 2), name="up")(x)
        x = nn.Conv(4, (3, 3), mask=jnp.ones((3, 3, 4, 4)), name="masked")(x)
        return nn.Dense(2)(x.mean(axis=(1, 2)))


def test_layers_from_linen_model():
    x = _x((2, 6, 6, 3))
    net = _Net()
    variables = net.init(jax.random.key(0), x)
    ported = layers_from_flax(net, variables, jax.ShapeDtypeStruct(x.shape, x.dtype))
    assert isinstance(ported, FlaxLayers)
    assert {k: type(v[0]).__name__ for k, v in ported.items()} == {
        "block/conv": "Conv2D", "shared": "Conv2D", "up": "Conv2DTranspose"}
    assert ported.skipped["block/norm"] == "BatchNorm"
    assert ported.skipped["Dense_0"] == "Dense"
    assert ported.skipped["Dropout_0"] == "Dropout"
    assert ported.skipped["masked"].startswith("Conv: nn.Conv(features=4, kernel_size=(3, 3)) "
                                               "has a kernel mask")
    assert "block" not in ported.skipped  # containers are walked, not listed
    # The ported layers, run in the model's order, compute the model's convolutions.
    y = jnp.asarray(_x((2, 6, 6, 8), seed=4))
    layer, params = ported["up"]
    want = nn.ConvTranspose(4, (2, 2), strides=(2, 2)).apply(
        {"params": variables["params"]["up"]}, y)
    np.testing.assert_allclose(layer(params, y), want, **TOL)
    # train=True (a keyword the model branches on) with an rng for the dropout runs too.
    ported = layers_from_flax(net, variables, x, train=True, rngs={"dropout":
                                                                    jax.random.key(1)})
    assert set(ported) == {"block/conv", "shared", "up"}


def test_layers_from_linen_sequential_equals_model():
    x = _x((2, 8, 8, 3))
    model = nn.Sequential([nn.Conv(8, (3, 3), strides=2, padding="CIRCULAR"), nn.relu,
                           nn.ConvTranspose(3, (4, 4), strides=(2, 2), padding="SAME")])
    variables = model.init(jax.random.key(0), x)
    ported = layers_from_flax(model, variables, x)
    assert list(ported) == ["layers_0", "layers_2"] and ported.skipped == {}
    (conv, p0), (up, p2) = ported["layers_0"], ported["layers_2"]
    np.testing.assert_allclose(up(p2, jax.nn.relu(conv(p0, x))), model.apply(variables, x),
                               **TOL)


def test_layers_from_nnx_model():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.stem = nnx.Sequential(nnx.Conv(3, 8, (3, 3), rngs=rngs), nnx.relu)
            self.blocks = nnx.List([nnx.Conv(8, 8, (3, 3), feature_group_count=2, rngs=rngs),
                                    nnx.BatchNorm(8, rngs=rngs)])
            self.up = nnx.ConvTranspose(8, 4, (2, 2), strides=(2, 2), rngs=rngs)
            self.head = nnx.Linear(4, 2, rngs=rngs)

        def __call__(self, x):
            x = self.blocks[1](self.blocks[0](self.stem(x)))
            return self.head(self.up(x).mean(axis=(1, 2)))

    net = Net(nnx.Rngs(0))
    net.eval()
    ported = layers_from_flax(net)
    assert {k: type(v[0]).__name__ for k, v in ported.items()} == {
        "stem/layers/0": "Conv2D", "blocks/0": "Conv2D", "up": "Conv2DTranspose"}
    assert ported.skipped == {"blocks/1": "BatchNorm", "head": "Linear"}
    layer, params = ported["up"]
    y = jnp.asarray(_x((2, 6, 6, 8), seed=2))
    np.testing.assert_allclose(layer(params, y), net.up(y), **TOL)


def test_layers_from_flax_takes_kconv_modules():
    # A model that already uses kconv's modules beside Flax's ports whole.
    from kconv import linen as kl
    from kconv import nnx as knnx

    class Mixed(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = kl.ZeroPadding2D(1, name="pad")(x)
            x = kl.Conv2D(4, 3, lora_rank=1, name="k")(x)
            return nn.Conv(2, (1, 1), name="f")(x)

    x = _x((1, 5, 5, 3))
    variables = Mixed().init(jax.random.key(0), x)
    ported = layers_from_flax(Mixed(), variables, x)
    assert {k: type(v[0]).__name__ for k, v in ported.items()} == {
        "pad": "ZeroPadding2D", "k": "Conv2D", "f": "Conv2D"}
    assert ported["pad"][1] == {} and ported.skipped == {}
    layer, params = ported["k"]
    assert layer.lora_rank == 1 and sorted(params) == ["bias", "kernel", "lora_kernel_a",
                                                       "lora_kernel_b"]
    y = ported["f"][0](ported["f"][1], layer(params, ported["pad"][0]({}, x)))
    np.testing.assert_allclose(y, Mixed().apply(variables, x), **TOL)

    model = nnx.Sequential(knnx.Conv2D(4, 3, in_channels=3, rngs=nnx.Rngs(0)), nnx.relu,
                           knnx.UpSampling2D(2), nnx.Conv(4, 2, (1, 1), rngs=nnx.Rngs(0)))
    ported = layers_from_flax(model)
    assert list(ported) == ["layers/0", "layers/2", "layers/3"] and ported.skipped == {}
    (conv, p0), (up, p2), (last, p3) = ported.values()
    np.testing.assert_allclose(last(p3, up(p2, jax.nn.relu(conv(p0, x)))), model(x), **TOL)


def test_layers_from_linen_lifted_and_subclassed_convs():
    # nn.remat / nn.jit run the module's own function on its own params, nn.vmap maps it
    # over stacked params: ported (the stack's params with their leading axis). A subclass
    # and a transform that may change the params are skipped, with the reason.
    class MyConv(nn.Conv):
        pass

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.remat(nn.Conv)(4, (3,), name="remat")(x)
            x = nn.jit(nn.ConvTranspose)(4, (2,), strides=(2,), name="jit")(x)
            x = MyConv(4, (1,), name="mine")(x)
            x = nn.vmap(nn.ConvTranspose, variable_axes={"params": 0},
                        split_rngs={"params": True}, in_axes=0)(4, (3,), name="vmap")(x)
            return nn.map_variables(nn.Conv, "params", trans_in_fn=lambda v: v,
                                    init=True)(2, (1,), name="mapped")(x)

    x = _x((2, 6, 3))
    variables = Net().init(jax.random.key(0), x)
    ported = layers_from_flax(Net(), variables, x)
    assert list(ported) == ["remat", "jit", "vmap"]
    layer, params = ported["jit"]
    y = jnp.asarray(_x((2, 6, 4), seed=2))
    want = nn.ConvTranspose(4, (2,), strides=(2,)).apply(
        {"params": variables["params"]["jit"]}, y)
    np.testing.assert_allclose(layer(params, y), want, **TOL)
    layer, params = ported["vmap"]
    assert params["kernel"].shape == (2, 3, 4, 4) and params["bias"].shape == (2, 4)
    vmapped = nn.vmap(nn.ConvTranspose, variable_axes={"params": 0},
                      split_rngs={"params": True}, in_axes=0)(4, (3,))
    want = vmapped.apply({"params": variables["params"]["vmap"]}, y)
    np.testing.assert_allclose(jax.vmap(layer)(params, y), want, **TOL)
    assert isinstance(layer_from_flax(vmapped), kconv.Conv1DTranspose)
    assert "a subclass of nn.Conv may compute something else" in ported.skipped["mine"]
    assert ported.skipped["mapped"] == (
        "Map_variablesConv: Map_variablesConv is Conv under a lifted transform that may "
        "change the params of what it holds (Map_variables): port by hand")
    with pytest.raises(TypeError, match=r"got Map_variablesConv; Map_variablesConv is Conv"):
        layer_from_flax(nn.map_variables(nn.Conv, "params", trans_in_fn=lambda v: v)(2, (1,)))


def test_layers_under_map_variables_are_not_ported_with_stored_weights():
    # nn.map_variables changes the params on their way in (here a weight standardization
    # of everything inside the block): the convolutions inside are skipped, not ported
    # with the stored weights, which are not what the model computes with.
    from kconv import linen as kl

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            return kl.Conv1D(2, 1, name="k")(nn.Conv(4, (3,), name="conv")(x))

    def standardize(tree):
        return jax.tree.map(lambda w: (w - w.mean()) / (w.std() + 1e-5), tree)

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.map_variables(Block, "params", trans_in_fn=standardize,
                                 init=True)(name="std")(x)
            x = nn.remat(nn.map_variables(nn.Conv, "params", trans_in_fn=standardize,
                                          init=True))(2, (1,), name="nested")(x)
            return nn.jit(nn.remat(nn.Conv))(2, (1,), name="plain")(x)

    x = _x((1, 6, 3))
    variables = Net().init(jax.random.key(0), x)
    ported = layers_from_flax(Net(), variables, x)
    assert list(ported) == ["plain"]
    assert ported.skipped["nested"].startswith("Map_variablesConv: Map_variablesConv is Conv")
    for name in ("std/conv", "std/k"):
        assert ported.skipped[name].endswith(
            "Map_variablesBlock is Block under a lifted transform that may change the params "
            "of what it holds (Map_variables): port by hand")



def test_layers_under_function_form_map_variables_are_not_ported_with_stored_weights():
    # nn.map_variables applied to a function of a module (as Flax's SpectralNorm is
    # written; a weight standardization of one's own) leaves no mark on the module it
    # runs: those convolutions were ported with the stored kernels (the wrong function:
    # here 2x them). Now skipped with the reason; the same form of nn.remat / nn.jit /
    # nn.vmap still ported, and computing Flax's values.
    from kconv import linen as kl

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            return kl.Conv1D(3, 1, name="k")(nn.Conv(3, (3,), name="conv")(x))

    def double(tree):
        return jax.tree.map(lambda w: 2.0 * w, tree)

    def mapped(c, x):
        return c(x)

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            init = self.is_initializing()
            x = nn.map_variables(mapped, "params", trans_in_fn=double, init=init)(
                nn.Conv(3, (3,), name="a"), x)
            x = nn.map_variables(mapped, "params", trans_in_fn=double, init=init)(
                Block(name="blk"), x)
            x = nn.remat(mapped)(nn.Conv(3, (3,), name="r"), x)
            x = nn.jit(mapped)(nn.Conv(3, (3,), name="j"), x)
            return nn.vmap(mapped, variable_axes={"params": 0}, split_rngs={"params": True},
                           in_axes=0)(nn.Conv(3, (1,), name="v"), x[None])[0]

    x = _x((1, 6, 3))
    variables = Net().init(jax.random.key(0), x)
    ported = layers_from_flax(Net(), variables, x)
    assert list(ported) == ["r", "j", "v"]
    why = ("called inside nn.map_variables (a function of the module), which may change "
           "its params on the way in: port by hand")
    assert ported.skipped == {"a": f"Conv: {why}", "blk/conv": f"Conv: {why}",
                              "blk/k": f"Conv1D: {why}"}
    y = jnp.asarray(_x((1, 6, 3), seed=2))
    for name in ("r", "j"):
        layer, params = ported[name]
        want = nn.Conv(3, (3,)).apply({"params": variables["params"][name]}, y)
        np.testing.assert_allclose(layer(params, y), want, **TOL)
    layer, params = ported["v"]
    want = nn.Conv(3, (1,)).apply(
        {"params": jax.tree.map(lambda w: w[0], variables["params"]["v"])}, y)
    np.testing.assert_allclose(jax.vmap(layer)(params, y[None])[0], want, **TOL)

def _randomized(tree, seed):
    """Every float array of a pytree replaced by normal draws (so that nothing passes by
    being ones, zeros or already normalized)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape), a.dtype)
                        if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def test_linen_spectral_and_weight_norm_ported_with_the_params_they_compute_with():
    # nn.SpectralNorm / nn.WeightNorm rescale the params of the module they wrap at every
    # call (from the stored u and sigma / scale): the convolutions inside are ported with
    # the params Flax hands them in the call described (update_stats=False: eval), read
    # from a jitted run of Flax's own arithmetic; the wrappers are not listed as skipped.
    from kconv import linen as kl

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            x = nn.SpectralNorm(nn.Conv(4, (3, 3)), n_steps=2)(x, update_stats=train)
            x = nn.Dropout(0.5, deterministic=not train)(x)
            x = nn.WeightNorm(nn.ConvTranspose(3, (3, 3), strides=(2, 2)))(nn.relu(x))
            x = nn.SpectralNorm(kl.Conv2D(2, 1, name="k"))(x, update_stats=train)
            return nn.Conv(2, (1, 1), name="plain")(x)

    x = _x((2, 8, 8, 3))
    variables = _randomized(Net().init(jax.random.key(0), x), 3)
    want = Net().apply(variables, x)
    for inputs in (x, jax.ShapeDtypeStruct(x.shape, x.dtype)):
        ported = layers_from_flax(Net(), variables, inputs)
        assert list(ported) == ["Conv_0", "ConvTranspose_0", "k", "plain"]
        assert ported.skipped == {"Dropout_0": "Dropout"}  # the wrappers are not listed
        h = x
        for name, (layer, params) in ported.items():
            h = layer(params, jax.nn.relu(h) if name == "ConvTranspose_0" else h)
        np.testing.assert_allclose(h, want, **TOL)
    # The stored kernels are not what the model computes with (the test could fail).
    stored = variables["params"]["Conv_0"]["kernel"]
    assert not np.allclose(ported["Conv_0"][1]["kernel"], stored, rtol=1e-3)
    # A training call (keys among the inputs, given or as shapes) hands the convolutions
    # the same params: the statistics are updated after they are computed.
    key = jax.random.key(1)
    for rngs in ({"dropout": key}, {"dropout": jax.ShapeDtypeStruct(key.shape, key.dtype)}):
        trained = layers_from_flax(Net(), variables, x, train=True, rngs=rngs)
        for name, (_, params) in ported.items():
            jax.tree.map(np.testing.assert_array_equal, trained[name][1], params)


def test_nnx_spectral_and_weight_norm_ported_with_the_params_they_compute_with():
    # nnx.SpectralNorm / nnx.WeightNorm rescale the wrapped module's params in place before
    # every call: the convolution is ported as the next call computes it (a copy of the
    # wrapper called once; the model is not touched). What a wrapper holds deeper is
    # refused with the reason, never ported with stored weights.
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.sn = nnx.SpectralNorm(nnx.Conv(3, 4, (3, 3), rngs=rngs), n_steps=3,
                                       update_stats=False, rngs=rngs)
            self.wn = nnx.WeightNorm(nnx.ConvTranspose(4, 3, (3, 3), strides=2, rngs=rngs),
                                     rngs=rngs)
            self.deep = nnx.SpectralNorm(nnx.Sequential(nnx.Conv(3, 3, (1, 1), rngs=rngs)),
                                         rngs=rngs)
            self.masked = nnx.WeightNorm(nnx.Conv(3, 3, (1, 1), mask=jnp.ones((1, 1, 3, 3)),
                                                  rngs=rngs), rngs=rngs)

        def __call__(self, x):
            return self.wn(nnx.relu(self.sn(x)))

    net = Net(nnx.Rngs(0))
    nnx.update(net, _randomized(nnx.state(net), 4))
    before = jax.tree.map(np.asarray, nnx.state(net))
    ported = layers_from_flax(net)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, nnx.state(net)),
                 before)
    assert list(ported) == ["sn/layer_instance", "wn/layer_instance"]
    assert ported.skipped["deep/layer_instance/layers/0"] == (
        "Conv: inside nnx.SpectralNorm, which rescales its params at every call: port the "
        "module it wraps by hand")
    assert "has a kernel mask" in ported.skipped["masked/layer_instance"]
    assert len(ported.skipped) == 2
    (sn, p_sn), (wn, p_wn) = ported["sn/layer_instance"], ported["wn/layer_instance"]
    x = _x((2, 8, 8, 3))
    np.testing.assert_allclose(wn(p_wn, jax.nn.relu(sn(p_sn, x))), net(x), **TOL)
    assert not np.allclose(p_sn["kernel"], before["sn"]["layer_instance"]["kernel"].value,
                           rtol=1e-3)


def test_stacked_nnx_convs_scan():
    # NNX's scan over layers: convolutions made under nnx.vmap, run with nnx.scan; the
    # ported stack runs under jax.lax.scan.
    @nnx.vmap(in_axes=0, out_axes=0)
    def make(key):
        return nnx.ConvTranspose(4, 4, (3, 3), padding="SAME", rngs=nnx.Rngs(key))

    stack = make(jax.random.split(jax.random.key(0), 3))

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
    def run(h, conv):
        return jnp.tanh(conv(h))

    x = jnp.asarray(_x((2, 5, 5, 4)))
    want = run(x, stack)
    layer, params = layer_from_flax(stack), params_from_flax(stack)
    assert params["kernel"].shape == (3, 3, 3, 4, 4)
    got, _ = jax.lax.scan(lambda h, p: (jnp.tanh(layer(p, h)), None), x, params)
    np.testing.assert_allclose(got, want, **TOL)
    with pytest.raises(ValueError, match=r"params\['bias'\] has shape \(4,\), expected "
                                         r"\(3, 4\)"):
        params_from_flax(nn.ConvTranspose(4, (3, 3)),
                         {"kernel": params["kernel"], "bias": np.zeros(4)})


@pytest.mark.parametrize("axis", [1, -1])
def test_linen_stack_on_another_axis(axis):
    # nn.vmap(..., variable_axes={"params": axis}) stores the stack on that axis, which
    # linen keeps only in the lifted class: read from there, the stack moved to the front.
    # A stack of 3 beside a 3×3 kernel and no bias: the shapes alone could not tell.
    lifted = nn.vmap(nn.Conv, variable_axes={"params": axis}, split_rngs={"params": True},
                     in_axes=0)

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return lifted(3, (3, 3), use_bias=False, name="stack")(x)

    x = jnp.asarray(_x((3, 2, 5, 5, 3)))
    variables = Net().init(jax.random.key(0), x)
    stored = variables["params"]["stack"]["kernel"]
    layer, params = layers_from_flax(Net(), variables, x)["stack"]
    np.testing.assert_allclose(jax.vmap(layer)(params, x), Net().apply(variables, x), **TOL)
    np.testing.assert_array_equal(params["kernel"], np.moveaxis(stored, axis, 0))
    alone = params_from_flax(lifted(3, (3, 3), use_bias=False), {"kernel": stored})
    np.testing.assert_array_equal(alone["kernel"], params["kernel"])


def test_linen_scanned_block_stack_axis():
    # A plain Conv inside a block that nn.scan stacks on axis 1: the block's lift says
    # where the conv's stack is.
    class Block(nn.Module):
        @nn.compact
        def __call__(self, h, _):
            return jnp.tanh(nn.Conv(4, (3,), bias_init=BIAS, name="conv")(h)), None

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.scan(Block, variable_axes={"params": 1}, split_rngs={"params": True},
                           length=3)(name="blocks")(x, None)[0]

    x = jnp.asarray(_x((2, 7, 4)))
    variables = Net().init(jax.random.key(0), x)
    assert variables["params"]["blocks"]["conv"]["kernel"].shape == (3, 3, 4, 4)
    layer, params = layers_from_flax(Net(), variables, x)["blocks/conv"]
    got, _ = jax.lax.scan(lambda h, p: (jnp.tanh(layer(p, h)), None), x, params)
    np.testing.assert_allclose(got, Net().apply(variables, x), **TOL)


def test_nnx_stack_on_another_axis():
    # NNX keeps no record of nnx.vmap's out_axes: the one axis whose removal leaves the
    # module's own shapes is the stack's; where several fit and 0 is not among them, refused.
    def stack(out_axes, n, in_features, features):
        @nnx.vmap(in_axes=0, out_axes=out_axes)
        def make(key):
            return nnx.Conv(in_features, features, (3, 3), bias_init=BIAS,
                            rngs=nnx.Rngs(key))
        return make(jax.random.split(jax.random.key(0), n))

    x = jnp.asarray(_x((4, 2, 6, 6, 3)))
    for out_axes in (1, -1):
        module = stack(out_axes, 4, 3, 5)
        want = nnx.vmap(lambda m, x: m(x), in_axes=(out_axes, 0))(module, x)
        params = params_from_flax(module)
        assert params["kernel"].shape == (4, 3, 3, 3, 5) and params["bias"].shape == (4, 5)
        np.testing.assert_allclose(jax.vmap(layer_from_flax(module))(params, x), want, **TOL)
    with pytest.raises(ValueError, match=r"nnx.Conv\(features=3, kernel_size=\(3, 3\)\): a "
                                         r"stack of params of shapes .*which 2 out_axes of "
                                         r"nnx.vmap fit alike"):
        params_from_flax(stack(-1, 3, 5, 3))  # (3, 3, 5, 3, 3): the last two fit


@pytest.mark.parametrize("api", ["linen", "nnx"])
def test_kconv_module_stack_on_another_axis(api):
    # kconv's own modules under linen's nn.vmap / nnx.vmap with the stack on axis 1.
    from kconv import linen as kl
    from kconv import nnx as kn

    x = jnp.asarray(_x((3, 2, 6, 6, 4)))
    if api == "linen":
        lifted = nn.vmap(kl.SeparableConv2D, variable_axes={"params": 1},
                         split_rngs={"params": True}, in_axes=0)

        class Net(nn.Module):
            @nn.compact
            def __call__(self, x):
                return lifted(5, 3, depth_multiplier=2, bias_initializer="ones",
                              name="sep")(x)

        variables = Net().init(jax.random.key(0), x)
        want, (layer, params) = (Net().apply(variables, x),
                                 layers_from_flax(Net(), variables, x)["sep"])
    else:
        @nnx.vmap(in_axes=0, out_axes=1)
        def make(key):
            return kn.SeparableConv2D(5, 3, depth_multiplier=2, bias_initializer="ones",
                                      in_channels=4, rngs=nnx.Rngs(key))

        module = make(jax.random.split(jax.random.key(0), 3))
        want = nnx.vmap(lambda m, x: m(x), in_axes=(1, 0))(module, x)
        layer, params = layers_from_flax(nnx.Sequential(module, nnx.relu))["layers/0"]
    assert params["depthwise_kernel"].shape == (3, 3, 3, 4, 2)
    np.testing.assert_allclose(jax.vmap(layer)(params, x), want, **TOL)


def test_layers_from_linen_share_scope():
    # nn.share_scope gives a module and the convolution whose scope it shares one path: the
    # convolution was dropped (the module recorded first took the path). Flax's Conv beside
    # a wrapper's own params is refused with its keys; kconv's takes its own.
    from kconv import linen as kl

    def net(make, extra):
        class Inner(nn.Module):
            def setup(self):
                self.conv = make()
                nn.share_scope(self, self.conv)

            @nn.compact
            def __call__(self, x):
                y = self.conv(x)
                return y + self.param("A", nn.initializers.ones, (4,)) if extra else y

        class Net(nn.Module):
            @nn.compact
            def __call__(self, x):
                return nn.Dense(2, name="fc")(Inner(name="inner")(x).mean((1, 2)))

        return Net()

    x = jnp.asarray(_x((1, 8, 8, 3)))
    for make in (lambda: nn.Conv(4, (3, 3), bias_init=BIAS),
                 lambda: kl.Conv2D(4, 3, padding="same", bias_initializer="ones")):
        for extra in (False, True):
            model = net(make, extra)
            variables = model.init(jax.random.key(0), x)
            ported = layers_from_flax(model, variables, x)
            assert ported.skipped.get("fc") == "Dense"
            stored = variables["params"]["inner"]
            if extra and isinstance(make(), nn.Conv):
                assert list(ported) == [] and "got keys ['A', 'bias', 'kernel']" in \
                    ported.skipped["inner"]
                continue
            layer, params = ported["inner"]
            assert sorted(params) == ["bias", "kernel"]
            want = make().apply({"params": {"kernel": stored["kernel"],
                                            "bias": stored["bias"]}}, x)
            np.testing.assert_allclose(layer(params, x), want, **TOL)

    # The other way round: a wrapper given a convolution made beside it moves onto the
    # convolution's scope (Flax's docstring's first example).
    class Twice(nn.Module):
        base: nn.Module

        def setup(self):
            nn.share_scope(self, self.base)

        def __call__(self, x):
            return 2 * self.base(x)

    class Outer(nn.Module):
        @nn.compact
        def __call__(self, x):
            return Twice(nn.Conv(4, (3, 3), bias_init=BIAS))(x)

    variables = Outer().init(jax.random.key(0), x)
    ported = layers_from_flax(Outer(), variables, x)
    assert list(ported) == ["Conv_0"] and ported.skipped == {"Twice_0": "Twice"}
    layer, params = ported["Conv_0"]
    np.testing.assert_allclose(2 * layer(params, x), Outer().apply(variables, x), **TOL)


def test_partitioned_linen_params():
    # Variables boxed by Flax's sharding annotations (nn.with_partitioning) port as well.
    from kconv import linen as kl

    def annotated(names):
        return nn.with_partitioning(nn.initializers.lecun_normal(), names)

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(4, (3,), kernel_init=annotated((None, None, "model")), name="f")(x)
            return kl.Conv1D(2, 3, kernel_initializer=annotated((None, None, "model")),
                             name="k")(x)

    x = _x((2, 7, 3))
    variables = Net().init(jax.random.key(0), x)
    assert isinstance(variables["params"]["f"]["kernel"], nn.Partitioned)
    ported = layers_from_flax(Net(), variables, x)
    assert list(ported) == ["f", "k"] and ported.skipped == {}
    (f, pf), (k, pk) = ported["f"], ported["k"]
    np.testing.assert_allclose(k(pk, f(pf, x)), Net().apply(variables, x), **TOL)


def test_layers_from_flax_errors():
    with pytest.raises(TypeError, match="one convolution: use layer_from_flax"):
        layers_from_flax(nnx.Conv(1, 2, 3, rngs=nnx.Rngs(0)))
    with pytest.raises(TypeError, match="one convolution"):
        layers_from_flax(nn.Conv(2, (3,)), {}, np.zeros((1, 4, 1)))
    with pytest.raises(TypeError, match="NNX model, which holds its params"):
        layers_from_flax(nnx.Sequential(nnx.Conv(1, 2, 3, rngs=nnx.Rngs(0))), {})
    with pytest.raises(TypeError, match="pass the variables"):
        layers_from_flax(nn.Sequential([nn.Conv(2, (3,))]))
    with pytest.raises(TypeError, match="expected a flax.nnx or flax.linen Module"):
        layers_from_flax(kconv.Conv2D(2, 3))
    with pytest.raises(TypeError, match="has no submodules"):
        layers_from_flax(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))


def test_layer_repr_fields_are_keras():
    # The converted layer is an ordinary kconv layer: its config round-trips.
    layer = layer_from_flax(nn.Conv(8, (3, 3), strides=2, padding=((1, 2), (0, 1)),
                                    feature_group_count=2))
    again = type(layer).from_config(layer.get_config())
    assert dataclasses.asdict(again) == dataclasses.asdict(layer)
