"""Grouped transposed convolutions (``groups`` on ConvNDTranspose and
``kconv.ops.conv_transpose``, beyond Keras): checked against their definition, the VJP
w.r.t. its input of the grouped forward convolution from ``filters`` to ``in_channels``
channels with the same kernel ``(*k, filters // groups, in_channels)`` (float64
``lax.conv_general_dilated`` with ``feature_group_count``), against the float64 NumPy
reference with the equivalent block-diagonal dense kernel, against PyTorch's
``ConvTranspose{1,2,3}d(groups=...)``, and by ``check_grads``; then the layers' shapes,
configs, errors, and strides > 1 together with dilation > 1 on every convolution layer."""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.test_util import check_grads

import kconv
from kconv import config, interop, ops
from tests import reference as ref
from tests.util import rand as _rand, tup as _tup, x64 as _x64

FORMATS = ("channels_last", "channels_first")
SPATIAL = {1: (5,), 2: (4, 3), 3: (3, 2, 3)}
KERNEL = {1: (3,), 2: (3, 2), 3: (2, 2, 1)}
TRANSPOSES = {1: kconv.Conv1DTranspose, 2: kconv.Conv2DTranspose, 3: kconv.Conv3DTranspose}
TOL = dict(rtol=1e-5, atol=1e-5)


def _x_shape(rank, channels, fmt, batch=2, spatial=None):
    spatial = spatial or SPATIAL[rank]
    return (batch, *spatial, channels) if fmt == "channels_last" else (
        batch, channels, *spatial)


def vjp_reference(x, kernel, strides=1, padding="valid", output_padding=None,
                  data_format="channels_last", dilation_rate=1, groups=1):
    """The definition: the input-VJP of the grouped forward convolution from ``filters``
    to ``C`` channels with ``kernel`` ``(*k, filters // groups, C)`` (forward layout
    ``(*k, in // groups, out)``), in float64, at cotangent ``x``; Keras's output window
    (``tests/reference.py``) gives the forward convolution's input length and padding."""
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    rank = kernel.ndim - 2
    if data_format == "channels_first":
        x = np.moveaxis(x, 1, -1)
    ks, s, d = kernel.shape[:rank], _tup(strides, rank), _tup(dilation_rate, rank)
    spatial = x.shape[1:-1]
    windows = ref.conv_transpose_window(spatial, ks, s, padding, output_padding, d)
    # Output t of the transposed conv is position t + c of the full result, where input i
    # and tap j land at i * s + j * d: the forward conv reads input o * s + j * d - c.
    pads = [(c, max(0, (n - 1) * st + dl * (k - 1) + 1 - length - c))
            for n, k, st, dl, (c, length) in zip(spatial, ks, s, d, windows)]
    lhs = {1: "NWC", 2: "NHWC", 3: "NDHWC"}[rank]
    numbers = (lhs, lhs[1:-1] + "IO", lhs)
    z_shape = (x.shape[0], *(length for _, length in windows), kernel.shape[-2] * groups)
    with _x64():
        def forward(z):
            return lax.conv_general_dilated(
                z, jnp.asarray(kernel), s, pads, rhs_dilation=d, dimension_numbers=numbers,
                feature_group_count=groups, precision=lax.Precision.HIGHEST)
        y = jax.eval_shape(forward, jax.ShapeDtypeStruct(z_shape, jnp.float64))
        assert y.shape == x.shape, (y.shape, x.shape)
        # One compiled program (eager, each primitive would compile on its own).
        out = np.asarray(jax.jit(lambda ct: jax.vjp(forward, jnp.zeros(z_shape, ct.dtype))[1](
            ct)[0])(jnp.asarray(x)))
    return np.moveaxis(out, -1, 1) if data_format == "channels_first" else out


def block_diagonal(kernel, groups):
    """``(*k, F // g, C)`` → the dense ``(*k, F, C)`` kernel of the same map."""
    per_group, channels = kernel.shape[-2:]
    dense = np.zeros(kernel.shape[:-2] + (per_group * groups, channels), kernel.dtype)
    cg = channels // groups
    for j in range(groups):
        dense[..., j * per_group:(j + 1) * per_group, j * cg:(j + 1) * cg] = \
            kernel[..., :, j * cg:(j + 1) * cg]
    return dense


# --- the op against its definition ----------------------------------------------------

def _op_cases():
    # rank × groups (2, 4, depthwise: 8 = C) × strides × padding in full; dilation,
    # output_padding, data_format and filters per group rotating (each value meets every
    # stride, padding and group count).
    for i, (rank, groups, strides, padding) in enumerate(itertools.product(
            (1, 2, 3), (2, 4, 8), (1, 2, 3), ("valid", "same"))):
        dilation = (1, 2)[(i // 2) % 2]
        output_padding = (None, 0, strides - 1)[(i // 2 + i // 6) % 3]
        fmt = FORMATS[(i // 3) % 2]
        per_group = (1, 2, 3)[(i // 2) % 3]
        yield rank, groups, strides, padding, dilation, output_padding, fmt, per_group


@pytest.mark.parametrize("rank,groups,strides,padding,dilation,output_padding,fmt,per_group",
                         list(_op_cases()))
def test_op_is_the_vjp_of_the_grouped_forward_conv(rank, groups, strides, padding, dilation,
                                                    output_padding, fmt, per_group):
    rng = np.random.default_rng([rank, groups, strides, dilation, per_group])
    x = _rand(rng, _x_shape(rank, 8, fmt))
    kernel = _rand(rng, KERNEL[rank] + (per_group, 8))
    args = (strides, padding, output_padding, fmt, dilation)
    f = lambda x, k: ops.conv_transpose(x, k, *args, groups=groups)  # noqa: E731
    y = jax.jit(f)(x, kernel)  # on CPU, a lowering (grouped_split, subpixel_transpose)
    with config.conv_lowering("xla"):  # the plain path (every other backend's)
        plain = jax.jit(f)(x, kernel)
    assert y.shape[-1 if fmt == "channels_last" else 1] == per_group * groups
    want = vjp_reference(x, kernel, *args, groups=groups)
    np.testing.assert_allclose(y, want, **TOL)
    np.testing.assert_allclose(plain, want, **TOL)
    # The same map as the NumPy reference with the block-diagonal dense kernel.
    np.testing.assert_allclose(
        y, ref.conv_transpose(x, block_diagonal(kernel, groups), *args), **TOL)


@pytest.mark.parametrize("rank,fmt,strides,dilation", [
    (1, "channels_last", 2, 2), (2, "channels_first", (2, 3), (2, 1)),
    (3, "channels_last", (1, 2, 2), (2, 1, 1))])
def test_op_groups_one_is_the_dense_op(rank, fmt, strides, dilation):
    # groups=1: the kernel (*k, filters, C) and the same numbers as before groups existed.
    rng = np.random.default_rng(rank)
    x, kernel = _rand(rng, _x_shape(rank, 3, fmt)), _rand(rng, KERNEL[rank] + (4, 3))
    args = (strides, "same", None, fmt, dilation)
    np.testing.assert_array_equal(ops.conv_transpose(x, kernel, *args, groups=1),
                                  ops.conv_transpose(x, kernel, *args))
    np.testing.assert_allclose(ops.conv_transpose(x, kernel, *args),
                               vjp_reference(x, kernel, *args), **TOL)


def test_op_under_jit_vmap_and_unbatched():
    rng = np.random.default_rng(0)
    x, kernel = _rand(rng, (3, 2, 5, 4, 6)), _rand(rng, (3, 3, 2, 6))
    f = lambda x, k: ops.conv_transpose(x, k, 2, "same", groups=3)  # noqa: E731
    eager = f(x, kernel)
    np.testing.assert_allclose(jax.jit(f)(x, kernel), eager, **TOL)
    np.testing.assert_allclose(jax.vmap(f, (0, None))(x, kernel), eager, **TOL)
    np.testing.assert_allclose(f(x[0, 0], kernel), eager[0, 0], **TOL)


@pytest.mark.parametrize("rank,groups,per_group,strides,dilation,padding,fmt,order,path", [
    # On CPU: split into groups, each with the sub-pixel derivative (a custom_jvp)
    (1, 2, 2, 2, 1, "valid", "channels_last", 2, "auto"),
    # depthwise-transposed: the grouped sub-pixel derivative
    (2, 4, 1, 2, 1, "same", "channels_first", 2, "auto"),
    (2, 2, 1, (2, 1), 2, "same", "channels_last", 1, "auto"),  # strided and dilated
    # the plain path: one feature_group_count convolution, the kernel regrouped
    (3, 2, 1, (1, 2, 1), 1, "valid", "channels_last", 1, "xla"),
    (2, 2, 2, 2, 1, "same", "channels_first", 1, "xla"),
])
def test_gradients(rank, groups, per_group, strides, dilation, padding, fmt, order, path):
    rng = np.random.default_rng(rank * 10 + groups)
    channels = 4
    spatial = {1: (4,), 2: (3, 3), 3: (2, 3, 2)}[rank]
    kernel_size = {1: (3,), 2: (2, 3), 3: (2, 2, 1)}[rank]
    with _x64(), config.conv_lowering(path):
        x = jnp.asarray(rng.standard_normal(_x_shape(rank, channels, fmt, 1, spatial)))
        kernel = jnp.asarray(rng.standard_normal(kernel_size + (per_group, channels)))
        f = jax.jit(lambda x, k: ops.conv_transpose(
            x, k, strides, padding, data_format=fmt, dilation_rate=dilation, groups=groups))
        check_grads(f, (x, kernel), order=order, modes=["fwd", "rev"], atol=1e-6,
                    rtol=1e-6)
        # Input gradient = the grouped forward conv of the cotangent (the VJP's VJP).
        y, vjp = jax.vjp(lambda v: f(v, kernel), x)
        ct = jnp.asarray(rng.standard_normal(y.shape))
        fwd_fmt = "NWC" if rank == 1 else "NHWC" if rank == 2 else "NDHWC"
        assert vjp(ct)[0].shape == x.shape
        if fmt == "channels_last":
            window = ref.conv_transpose_window(spatial, kernel_size, _tup(strides, rank),
                                               padding, None, _tup(dilation, rank))
            pads = [(c, max(0, (n - 1) * s + d * (k - 1) + 1 - length - c))
                    for n, k, s, d, (c, length) in zip(
                        spatial, kernel_size, _tup(strides, rank), _tup(dilation, rank),
                        window)]
            forward = lax.conv_general_dilated(
                ct, kernel, _tup(strides, rank), pads, rhs_dilation=_tup(dilation, rank),
                dimension_numbers=(fwd_fmt, fwd_fmt[1:-1] + "IO", fwd_fmt),
                feature_group_count=groups, precision=lax.Precision.HIGHEST)
            np.testing.assert_allclose(vjp(ct)[0], forward, rtol=1e-10, atol=1e-10)


# --- against PyTorch ------------------------------------------------------------------

@pytest.mark.parametrize("rank,cin,cout,groups,k,s,d,op,n", [
    (2, 4, 6, 2, 3, 2, 1, 1, (3, 4)),
    (2, 8, 4, 4, (2, 3), (2, 3), (2, 1), (1, 0), (3, 2)),
    (2, 6, 6, 6, 3, 3, 2, 2, (2, 3)),      # depthwise-transposed
    (1, 4, 8, 4, 4, 2, 1, 0, 5),
    (3, 4, 2, 2, 2, (1, 2, 2), 1, (0, 1, 1), (2, 2, 3)),
])
def test_matches_torch(rank, cin, cout, groups, k, s, d, op, n):
    torch = pytest.importorskip("torch")
    module_cls = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d,
                  3: torch.nn.ConvTranspose3d}[rank]
    torch.manual_seed(0)
    module = module_cls(cin, cout, k, stride=s, dilation=d, output_padding=op,
                        groups=groups, bias=False).eval()
    x = _rand(np.random.default_rng(1), (2, cin) + _tup(n, rank))
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    weight = module.weight.detach().numpy()  # (in, out // groups, *k)
    kernel = np.moveaxis(weight, (0, 1), (-1, -2))  # (*k, out // groups, in)
    # torch padding=0 is Keras "valid" with the same output_padding.
    got = ops.conv_transpose(x, kernel, s, "valid", op, "channels_first", d, groups=groups)
    np.testing.assert_allclose(got, want, **TOL)
    layer = TRANSPOSES[rank](cout, k, strides=s, output_padding=op, dilation_rate=d,
                             data_format="channels_first", use_bias=False, groups=groups)
    np.testing.assert_allclose(layer({"kernel": kernel}, x), want, **TOL)


# --- layers ---------------------------------------------------------------------------

LAYER_CASES = [
    (kconv.Conv1DTranspose(6, 3, strides=2, output_padding=1, groups=2, activation="tanh"),
     (2, 5, 4)),
    (kconv.Conv1DTranspose(4, 2, strides=3, padding="same", groups=4,
                           data_format="channels_first"), (2, 4, 3)),
    (kconv.Conv2DTranspose(8, 3, strides=2, padding="same", groups=4), (2, 4, 3, 8)),
    (kconv.Conv2DTranspose(4, (3, 2), strides=(2, 1), dilation_rate=(1, 2), groups=2,
                           data_format="channels_first"), (2, 6, 3, 4)),
    (kconv.Conv2DTranspose(6, 3, strides=2, dilation_rate=2, padding="same", groups=6),
     (2, 3, 4, 6)),
    (kconv.Conv3DTranspose(4, 2, strides=(1, 2, 1), groups=2, activation="relu"),
     (2, 2, 3, 2, 4)),
]
LAYER_IDS = [f"{type(layer).__name__}-g{layer.groups}-{i}"
             for i, (layer, _) in enumerate(LAYER_CASES)]


@pytest.mark.parametrize("layer,shape", LAYER_CASES, ids=LAYER_IDS)
def test_layer_matches_reference(layer, shape):
    shapes = jax.eval_shape(lambda key: layer.init(key, (None,) + shape[1:]),
                            jax.random.key(0))
    in_channels = shape[-1 if layer.data_format == "channels_last" else 1]
    assert shapes["kernel"].shape == layer.kernel_size + (layer.filters // layer.groups,
                                                          in_channels)
    assert shapes["bias"].shape == (layer.filters,)
    rng = np.random.default_rng(0)
    params = {"kernel": _rand(rng, shapes["kernel"].shape),
              "bias": np.linspace(-0.5, 0.5, layer.filters, dtype=np.float32)}
    x = _rand(rng, shape)
    y = jax.jit(layer)(params, x)
    want = vjp_reference(x, params["kernel"], layer.strides, layer.padding,
                         layer.output_padding, layer.data_format, layer.dilation_rate,
                         layer.groups)
    bias = np.asarray(params["bias"], np.float64)
    want = want + (bias.reshape((-1,) + (1,) * layer.rank)
                   if layer.data_format == "channels_first" else bias)
    want = np.asarray(layer.activation(jnp.asarray(want, jnp.float32)))
    np.testing.assert_allclose(y, want, **TOL)
    assert y.shape == layer.compute_output_shape(shape)


def test_layer_config_round_trip():
    layer = kconv.Conv2DTranspose(8, 3, strides=2, padding="same", groups=4)
    config = layer.get_config()
    assert config["groups"] == 4
    assert kconv.Conv2DTranspose.from_config(json.loads(json.dumps(config))) == layer
    assert interop.layer_from_keras({"class_name": "Conv2DTranspose",
                                     "config": config}) == layer
    # groups=1 stays out, so the config is exactly Keras's argument set.
    plain = kconv.Conv2DTranspose(8, 3).get_config()
    assert "groups" not in plain
    assert set(plain) == set(kconv.Conv2DTranspose.keras_args)


def test_tf_keras_configs_with_groups_load():
    # tf-keras writes groups (inherited from Conv) on its transposed layers, at 1.
    tf_config = {"name": "conv2d_transpose", "trainable": True, "dtype": "float32",
                 "filters": 3, "kernel_size": [3, 3], "strides": [2, 2], "padding": "same",
                 "data_format": "channels_last", "dilation_rate": [1, 1], "groups": 1,
                 "activation": "linear", "use_bias": True, "output_padding": None}
    loaded = kconv.Conv2DTranspose.from_config(tf_config)
    assert loaded == kconv.Conv2DTranspose(3, 3, strides=2, padding="same", dtype="float32")
    assert loaded.groups == 1 and "groups" not in loaded.get_config()
    grouped = interop.layer_from_keras({"class_name": "Conv2DTranspose",
                                        "config": {**tf_config, "groups": 3}})
    assert grouped.groups == 3 and grouped.get_config()["groups"] == 3


def test_flax_wrappers_take_groups():
    from flax import nnx

    from kconv import linen as kl
    from kconv import nnx as kn

    layer = kconv.Conv1DTranspose(4, 3, strides=2, groups=2)
    x = _rand(np.random.default_rng(0), (2, 5, 6))
    module = kl.Conv1DTranspose(4, 3, strides=2, groups=2)
    variables = module.init(jax.random.key(0), x)
    assert variables["params"]["kernel"].shape == (3, 2, 6)
    np.testing.assert_allclose(module.apply(variables, x), layer(variables["params"], x),
                               **TOL)
    m = kn.Conv1DTranspose(4, 3, strides=2, groups=2, in_channels=6, rngs=nnx.Rngs(0))
    assert m.kernel[...].shape == (3, 2, 6)
    np.testing.assert_allclose(m(x), layer({"kernel": m.kernel[...], "bias": m.bias[...]},
                                           x), **TOL)
    with pytest.raises(ValueError, match=r"Conv1DTranspose: the input channels \(5\) must "
                                         r"be divisible by groups=2"):
        kn.Conv1DTranspose(4, 3, groups=2, in_channels=5, rngs=nnx.Rngs(0))


# --- errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("make,error,match", [
    (lambda: kconv.Conv2DTranspose(6, 3, groups=4), ValueError,
     r"^Conv2DTranspose: filters must be divisible by groups, got filters=6, groups=4$"),
    (lambda: kconv.Conv1DTranspose(2, 3, groups=0), ValueError,
     r"^Conv1DTranspose: groups must be a positive integer, got 0$"),
    (lambda: kconv.Conv3DTranspose(2, 3, groups="2"), TypeError,
     r"^Conv3DTranspose: groups must be a positive integer, got '2'$"),
    (lambda: kconv.Conv3DTranspose(4, 2, groups=4).init(jax.random.key(0), (1, 2, 2, 2, 6)),
     ValueError, r"^Conv3DTranspose: the input channels \(6\) must be divisible by "
                 r"groups=4, got in_channels=6$"),
    (lambda: kconv.Conv2DTranspose(4, 3, groups=4)({"kernel": jnp.ones((3, 3, 1, 6)),
                                                    "bias": jnp.ones(4)},
                                                   jnp.ones((1, 3, 3, 6))),
     ValueError, r"^Conv2DTranspose: the input channels \(6\) must be divisible by "
                 r"groups=4 \(input shape \(1, 3, 3, 6\), kernel shape \(3, 3, 1, 6\)\)$"),
    (lambda: ops.conv_transpose(jnp.ones((1, 4, 6)), jnp.ones((3, 1, 6)), groups=4),
     ValueError, r"^kconv.ops.conv_transpose: the input channels \(6\) must be divisible by "
                 r"groups=4"),
    (lambda: ops.conv_transpose(jnp.ones((1, 4, 6)), jnp.ones((3, 1, 6)), groups=-2),
     ValueError, r"^kconv.ops.conv_transpose: groups must be a positive integer, got -2$"),
    (lambda: ops.conv_transpose(jnp.ones((1, 4, 6)), jnp.ones((3, 1, 4)), groups=2),
     ValueError, r"the kernel expects 4 input channels .*\(\*kernel_size, filters // groups, "
                 r"in_channels\)"),
])
def test_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


# --- strides > 1 together with dilation > 1, every layer (beyond Keras) ---------------

def _reference_of(layer, params, x):
    args = dict(strides=layer.strides, padding=layer.padding, data_format=layer.data_format,
                dilation_rate=layer.dilation_rate)
    if isinstance(layer, kconv.layers.ConvTranspose):
        return vjp_reference(x, params["kernel"], output_padding=layer.output_padding,
                             groups=layer.groups, **args)
    if isinstance(layer, kconv.layers.SeparableConv):
        return ref.separable_conv(x, params["depthwise_kernel"], params["pointwise_kernel"],
                                  **args)
    if isinstance(layer, kconv.layers.DepthwiseConv):
        return ref.depthwise_conv(x, params["kernel"], **args)
    return ref.conv(x, params["kernel"], groups=layer.groups, **args)


def _strided_dilated_cases():
    # Every family and rank; padding alternating (each family meets both).
    for rank in (1, 2, 3):
        s, d = {1: (2, 2), 2: ((2, 3), (2, 1)), 3: ((2, 1, 2), (1, 2, 2))}[rank]
        fmt = "channels_first" if rank == 2 else "channels_last"
        pads = itertools.cycle(("valid", "same") if rank != 2 else ("same", "valid"))
        kw = dict(strides=s, dilation_rate=d, data_format=fmt, use_bias=False)
        yield getattr(kconv, f"Conv{rank}D")(4, 2, groups=2, padding=next(pads), **kw)
        yield getattr(kconv, f"Conv{rank}DTranspose")(4, 2, groups=2, padding=next(pads),
                                                      **kw)
        yield getattr(kconv, f"Conv{rank}DTranspose")(3, 2, padding=next(pads), **kw)
        yield getattr(kconv, f"DepthwiseConv{rank}D")(2, depth_multiplier=2,
                                                      padding=next(pads), **kw)
        yield getattr(kconv, f"SeparableConv{rank}D")(3, 2, padding=next(pads), **kw)


@pytest.mark.parametrize("layer", list(_strided_dilated_cases()),
                         ids=lambda layer: f"{type(layer).__name__}-{layer.padding}-"
                                           f"g{getattr(layer, 'groups', 1)}")
def test_strides_with_dilation_on_every_layer(layer):
    spatial = {1: (9,), 2: (9, 7), 3: (7, 5, 6)}[layer.rank]
    shape = _x_shape(layer.rank, 4, layer.data_format, spatial=spatial)
    rng = np.random.default_rng(layer.rank)
    # Params of the shapes init gives (NumPy's random numbers compile nothing).
    params = {name: _rand(rng, w.shape) for name, w in layer.weights(shape).items()}
    x = _rand(rng, shape)
    y = jax.jit(layer)(params, x)
    np.testing.assert_allclose(y, _reference_of(layer, params, x), **TOL)
    assert y.shape == layer.compute_output_shape(shape)
