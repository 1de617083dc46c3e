"""Explicit padding amounts on transposed convolutions (beyond Keras: PyTorch's
``ConvTranspose`` ``padding``): ``lo``/``hi`` cropped off the ends of the full output,
``output_padding`` (``None``: 0, below ``max(stride, dilation)``) added at the end.

Checked against the definition — the input-VJP of the forward convolution padded by
``(lo, hi - output_padding)`` (float64 ``lax.conv_general_dilated``, grouped where the
transposed one is) — against the float64 NumPy scatter reference (``tests/reference.py``),
against PyTorch's ``ConvTranspose{1,2,3}d`` with the same amounts, on XLA:CPU's lowerings
and on the plain path, and by ``check_grads``; then the layers' shapes, configs, Flax
wrappers and errors."""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.test_util import check_grads

import kconv
from kconv import config, ops
from tests import reference as ref
from tests.util import rand as _rand, tup as _tup, x64 as _x64

FORMATS = ("channels_last", "channels_first")
TRANSPOSES = {1: kconv.Conv1DTranspose, 2: kconv.Conv2DTranspose, 3: kconv.Conv3DTranspose}
TOL = dict(rtol=1e-5, atol=1e-5)


def _pairs(padding, n):
    """The test's own reading of the explicit forms: int, N ints or N pairs."""
    if isinstance(padding, int):
        return ((padding, padding),) * n
    return tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)


def _x_shape(rank, channels, fmt, spatial, batch=2):
    return (batch, *spatial, channels) if fmt == "channels_last" else (
        batch, channels, *spatial)


def vjp_definition(x, kernel, strides, padding, output_padding, fmt, dilation, groups=1):
    """The input-VJP, at cotangent ``x``, of the forward convolution from
    ``kernel.shape[-2] * groups`` to ``C`` channels padded by ``(lo, hi - op)`` per axis
    (``op`` = ``output_padding``, ``None``: 0), in float64; its input length is the
    transposed convolution's output length ``(n - 1) * s + k_eff - lo - hi + op``."""
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    rank = kernel.ndim - 2
    if fmt == "channels_first":
        x = np.moveaxis(x, 1, -1)
    ks, s, d = kernel.shape[:rank], _tup(strides, rank), _tup(dilation, rank)
    ops_ = _tup(0 if output_padding is None else output_padding, rank)
    pairs = _pairs(padding, rank)
    lengths = [(n - 1) * st + dl * (k - 1) + 1 - lo - hi + op for n, k, st, dl, (lo, hi), op
               in zip(x.shape[1:-1], ks, s, d, pairs, ops_)]
    pads = [(lo, hi - op) for (lo, hi), op in zip(pairs, ops_)]  # negative: lax crops
    lhs = {1: "NWC", 2: "NHWC", 3: "NDHWC"}[rank]
    z_shape = (x.shape[0], *lengths, kernel.shape[-2] * groups)
    with _x64():
        def forward(z):
            return lax.conv_general_dilated(
                z, jnp.asarray(kernel), s, pads, rhs_dilation=d,
                dimension_numbers=(lhs, lhs[1:-1] + "IO", lhs), feature_group_count=groups,
                precision=lax.Precision.HIGHEST)
        assert jax.eval_shape(forward, jax.ShapeDtypeStruct(z_shape, jnp.float64)).shape \
            == x.shape
        out = np.asarray(jax.jit(lambda ct: jax.vjp(forward, jnp.zeros(z_shape, ct.dtype))[1](
            ct)[0])(jnp.asarray(x)))
    return np.moveaxis(out, -1, 1) if fmt == "channels_first" else out


# --- the op against its definition ----------------------------------------------------

SPATIAL = {1: (5,), 2: (4, 3), 3: (3, 2, 3)}
KERNEL = {1: (3,), 2: (3, 2), 3: (2, 3, 1)}
#: Per rank: symmetric, asymmetric, and amounts above k_eff - 1 (cropping past the taps).
PADDINGS = {1: (1, (2,), ((0, 3),)), 2: (1, (2, 0), ((3, 1), (0, 2))),
            3: (0, (1, 2, 0), ((2, 0), 1, (0, 1)))}


def _op_cases():
    # rank × padding form × strides in full; output_padding, dilation, data_format and
    # groups rotating, so each meets every stride and form.
    for i, (rank, padding, strides) in enumerate(itertools.product(
            (1, 2, 3), range(3), (1, 2, 3))):
        dilation = (1, 2)[i % 2]
        limit = max(strides, dilation)
        output_padding = (None, 0, limit - 1)[(i // 2) % 3]
        fmt = FORMATS[(i // 3) % 2]
        groups = (1, 2, 4)[(i // 4) % 3]
        yield rank, PADDINGS[rank][padding], strides, output_padding, dilation, fmt, groups


@pytest.mark.parametrize("rank,padding,strides,output_padding,dilation,fmt,groups",
                         list(_op_cases()))
def test_op_is_the_vjp_of_the_padded_forward_conv(rank, padding, strides, output_padding,
                                                   dilation, fmt, groups):
    rng = np.random.default_rng([rank, strides, dilation, groups])
    x = _rand(rng, _x_shape(rank, 4, fmt, SPATIAL[rank]))
    kernel = _rand(rng, KERNEL[rank] + (2, 4))
    args = (strides, padding, output_padding, fmt, dilation)
    f = lambda x, k: ops.conv_transpose(x, k, *args, groups=groups)  # noqa: E731
    y = jax.jit(f)(x, kernel)  # on CPU, a lowering where one applies
    with config.conv_lowering("xla"):  # the plain path (every other backend's)
        plain = jax.jit(f)(x, kernel)
    want = vjp_definition(x, kernel, *args, groups=groups)
    np.testing.assert_allclose(y, want, **TOL)
    np.testing.assert_allclose(plain, want, **TOL)
    shape = ops.conv_transpose_output_shape(x.shape, 2 * groups, KERNEL[rank], strides,
                                            padding, output_padding, fmt, dilation)
    assert y.shape == shape
    if groups == 1:  # the scatter-form NumPy reference (dense only)
        np.testing.assert_allclose(y, ref.conv_transpose(
            x, kernel, strides, _pairs(padding, rank), output_padding, fmt, dilation), **TOL)


@pytest.mark.parametrize("rank", (1, 2, 3))
def test_zero_padding_is_keras_valid(rank):
    # padding=0 with output_padding=op is Keras's "valid" with the same op.
    rng = np.random.default_rng(rank)
    x = _rand(rng, _x_shape(rank, 3, "channels_last", SPATIAL[rank]))
    kernel = _rand(rng, KERNEL[rank] + (2, 3))
    np.testing.assert_array_equal(ops.conv_transpose(x, kernel, 2, 0, 1),
                                  ops.conv_transpose(x, kernel, 2, "valid", 1))
    np.testing.assert_array_equal(ops.conv_transpose(x, kernel, 2, 0),
                                  ops.conv_transpose(x, kernel, 2, "valid", 0))


def test_op_under_vmap_and_unbatched():
    rng = np.random.default_rng(0)
    x, kernel = _rand(rng, (3, 2, 5, 4, 6)), _rand(rng, (3, 3, 2, 6))
    f = lambda x, k: ops.conv_transpose(x, k, 2, ((2, 1), 1), 1)  # noqa: E731
    eager = f(x, kernel)
    assert eager.shape == (3, 2, 9, 8, 2)  # (n - 1) * 2 + 3 - lo - hi + 1
    np.testing.assert_allclose(jax.jit(f)(x, kernel), eager, **TOL)
    np.testing.assert_allclose(jax.vmap(f, (0, None))(x, kernel), eager, **TOL)
    np.testing.assert_allclose(f(x[0, 0], kernel), eager[0, 0], **TOL)


@pytest.mark.parametrize("rank,strides,dilation,padding,groups,fmt,path", [
    (1, 2, 1, ((3, 0),), 1, "channels_last", "auto"),     # sub-pixel derivative, crops
    (2, 2, 1, (1, 2), 1, "channels_first", "auto"),
    (2, 2, 1, 1, 2, "channels_last", "auto"),             # grouped_split
    (2, (2, 1), 2, ((0, 3), 1), 1, "channels_last", "xla"),
    (3, (1, 2, 1), 1, 1, 1, "channels_last", "auto"),
])
def test_gradients(rank, strides, dilation, padding, groups, fmt, path):
    rng = np.random.default_rng(rank)
    spatial = {1: (4,), 2: (3, 3), 3: (2, 3, 2)}[rank]
    kernel_size = {1: (3,), 2: (3, 3), 3: (2, 3, 2)}[rank]
    with _x64(), config.conv_lowering(path):
        x = jnp.asarray(rng.standard_normal(_x_shape(rank, 4, fmt, spatial, batch=1)))
        kernel = jnp.asarray(rng.standard_normal(kernel_size + (2, 4)))
        f = jax.jit(lambda x, k: ops.conv_transpose(
            x, k, strides, padding, data_format=fmt, dilation_rate=dilation, groups=groups))
        check_grads(f, (x, kernel), order=2, modes=["fwd", "rev"], atol=1e-6, rtol=1e-6)


# --- against PyTorch: its amounts, as given ---------------------------------------------

@pytest.mark.parametrize("rank,cin,cout,groups,k,s,d,p,op,n", [
    (2, 4, 6, 1, 3, 2, 1, 1, 1, (3, 4)),           # the usual x2 upsampling, 2n long
    (2, 4, 6, 2, 4, 2, 1, 1, 0, (3, 2)),           # DCGAN's, grouped
    (1, 3, 2, 1, 3, 2, 1, 3, 0, 6),                # p > k - 1: crops past the taps
    (1, 4, 4, 4, 3, 1, 3, 2, 2, 5),                # op < dilation, above the stride
    (2, 3, 5, 1, (3, 2), (2, 3), (1, 2), (2, 1), (1, 2), (3, 3)),
    (3, 2, 4, 2, 3, (2, 1, 2), 1, (1, 0, 2), (1, 0, 0), (2, 3, 2)),
])
def test_matches_torch(rank, cin, cout, groups, k, s, d, p, op, n):
    torch = pytest.importorskip("torch")
    from kconv.interop import params_from_torch

    module_cls = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d,
                  3: torch.nn.ConvTranspose3d}[rank]
    torch.manual_seed(0)
    module = module_cls(cin, cout, k, stride=s, padding=p, output_padding=op, dilation=d,
                        groups=groups).eval()
    x = _rand(np.random.default_rng(1), (2, cin) + _tup(n, rank))
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    layer = TRANSPOSES[rank](cout, k, strides=s, padding=p, output_padding=op,
                             dilation_rate=d, data_format="channels_first", groups=groups)
    params = params_from_torch(layer, module.state_dict(), groups=groups)
    got = layer(params, x)
    assert got.shape == want.shape == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(got, want, **TOL)


# --- layers ---------------------------------------------------------------------------

@pytest.mark.parametrize("make,shape,want", [
    (lambda: kconv.Conv1DTranspose(2, 3, strides=2, padding=1, output_padding=1),
     (None, 5, 3), (None, 10, 2)),
    (lambda: kconv.Conv2DTranspose(2, 4, strides=2, padding=1), (None, 8, None, 3),
     (None, 16, None, 2)),
    (lambda: kconv.Conv2DTranspose(2, 3, padding=((0, 2), 1), data_format="channels_first"),
     (4, 3, 5, 5), (4, 2, 5, 5)),
    (lambda: kconv.Conv3DTranspose(2, 3, strides=(2, 1, 1), padding=(1, 0, 2)),
     (1, 4, 4, 4, 3), (1, 7, 6, 2, 2)),
])
def test_layer_output_shape_and_numbers(make, shape, want):
    layer = make()
    assert layer.compute_output_shape(shape) == want
    concrete = tuple(2 if d is None else d for d in shape)
    params = layer.init(jax.random.key(0), concrete)
    x = _rand(np.random.default_rng(0), concrete)
    y = layer(params, x)
    assert y.shape == layer.compute_output_shape(concrete)
    np.testing.assert_allclose(
        y, ref.conv_transpose(x, params["kernel"], layer.strides, layer.padding,
                              layer.output_padding, layer.data_format, layer.dilation_rate)
        + ref._from_last(np.asarray(params["bias"]).reshape((1,) * (x.ndim - 1) + (-1,)),
                         layer.data_format), **TOL)


def test_layer_config_round_trip():
    layer = kconv.Conv2DTranspose(4, 3, strides=2, padding=(1, (0, 2)), output_padding=1)
    assert layer.padding == ((1, 1), (0, 2))
    config_ = layer.get_config()
    assert config_["padding"] == [[1, 1], [0, 2]]
    assert config_["output_padding"] == (1, 1)
    again = kconv.Conv2DTranspose.from_config(json.loads(json.dumps(config_)))
    assert again == layer
    # Keras's string paddings are serialized as before.
    assert kconv.Conv2DTranspose(4, 3, padding="same").get_config()["padding"] == "same"


def test_flax_wrappers_take_explicit_padding():
    import flax.linen as nn
    from flax import nnx

    import kconv.linen
    import kconv.nnx

    x = jnp.ones((2, 5, 5, 3))
    module = kconv.linen.Conv2DTranspose(4, 3, strides=2, padding=1, output_padding=1)
    variables = module.init(jax.random.key(0), x)
    y = module.apply(variables, x)
    assert isinstance(module, nn.Module) and y.shape == (2, 10, 10, 4)
    pure = kconv.Conv2DTranspose(4, 3, strides=2, padding=1, output_padding=1)
    np.testing.assert_allclose(y, pure(variables["params"], x), **TOL)
    m = kconv.nnx.Conv1DTranspose(4, 3, strides=2, padding=((2, 0),), in_channels=3,
                                  rngs=nnx.Rngs(0))
    assert m(jnp.ones((2, 5, 3))).shape == (2, 9, 4)


@pytest.mark.parametrize("make,error,match", [
    (lambda: kconv.Conv2DTranspose(2, 3, strides=2, padding=1, output_padding=2), ValueError,
     r"Conv2DTranspose: output_padding must be smaller than max\(strides, dilation_rate\) "
     r"on every axis, got output_padding=2 with strides=\(2, 2\), dilation_rate=\(1, 1\)"),
    # Keras's string paddings keep Keras's bound, below the stride.
    (lambda: kconv.Conv1DTranspose(2, 3, dilation_rate=3, output_padding=1), ValueError,
     r"Conv1DTranspose: output_padding must be smaller than strides on every axis, got "
     r"output_padding=1 with strides=\(1,\)"),
    (lambda: kconv.Conv1DTranspose(2, 3, padding=(1, 2)), ValueError,
     r"Conv1DTranspose: padding=\(1, 2\) is ambiguous for a 1-D convolution: write "
     r"\(\(1, 2\),\)"),
    (lambda: kconv.Conv2DTranspose(2, 3, padding=-1), ValueError,
     r"Conv2DTranspose: padding must be non-negative integers, got -1"),
    (lambda: kconv.Conv2DTranspose(2, 3, padding=1.5), TypeError,
     r"Conv2DTranspose: padding must be an int, a tuple of 2 ints, or a tuple of 2 entries"),
    (lambda: kconv.Conv2DTranspose(2, 3, padding=1, padding_mode="reflect"), ValueError,
     r"Conv2DTranspose: padding_mode must be 'zeros' for a transposed convolution"),
    (lambda: kconv.Conv1DTranspose(2, 3, padding=2).compute_output_shape((None, 1, 3)),
     ValueError, r"Conv1DTranspose: the transposed convolution output would be empty: input "
     r"shape \(None, 1, 3\), kernel_size \(3,\), strides \(1,\), padding \(\(2, 2\),\), "
     r"dilation_rate \(1,\) give spatial output \(-1,\)"),
])
def test_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_empty_output_raises_at_trace_time():
    layer = kconv.Conv2DTranspose(2, 3, padding=((2, 2), 0))
    params = layer.init(jax.random.key(0), (1, 1, 4, 3))
    with pytest.raises(ValueError, match=r"Conv2DTranspose: the transposed convolution output "
                                         r"would be empty: input shape \(1, 1, 4, 3\)"):
        jax.eval_shape(layer, params, jnp.ones((1, 1, 4, 3)))
    with pytest.raises(ValueError, match=r"kconv.ops.conv_transpose: the transposed "
                                         r"convolution output would be empty"):
        ops.conv_transpose(jnp.ones((1, 2, 1)), jnp.ones((1, 1, 1)), padding=1)


@pytest.mark.parametrize("cls,fmt,in_shape,want", [
    # Keras 3.15.1's Conv2DTranspose(2, 2, padding="same", output_padding=0) on this input:
    # call and compute_output_shape both give (1, 8, 0, 2).
    (kconv.Conv2DTranspose, "channels_last", (1, 9, 1, 2), (1, 8, 0, 2)),
    (kconv.Conv1DTranspose, "channels_last", (2, 1, 3), (2, 0, 2)),
    (kconv.Conv3DTranspose, "channels_first", (1, 2, 3, 1, 1), (1, 2, 2, 0, 0)),
])
def test_same_padding_empty_output_is_keras_shape(cls, fmt, in_shape, want):
    # "same" with an even kernel, one input position and output_padding 0: Keras's length
    # (n - 1) * s + k - 2 * (k // 2) + op is 0, an empty output, not an error.
    layer = cls(2, 2, padding="same", output_padding=0, data_format=fmt)
    params = layer.init(jax.random.key(0), in_shape)
    assert layer.compute_output_shape(in_shape) == want
    assert layer(params, jnp.ones(in_shape)).shape == want
    assert jax.eval_shape(layer, params, jnp.ones(in_shape)).shape == want


# --- causal (1-D): the first n * s positions of the full output ------------------------

CAUSAL_CASES = [  # k, s, d, output_padding: k_eff above, equal to and below the stride
    (4, 2, 1, None), (3, 2, 1, 1), (2, 2, 1, None), (2, 3, 1, 2), (3, 1, 2, None),
    (3, 2, 2, 0), (1, 4, 1, None),
]


@pytest.mark.parametrize("k,s,d,op", CAUSAL_CASES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_causal_is_the_first_n_times_s_positions(k, s, d, op, fmt):
    rng = np.random.default_rng([k, s, d])
    x = _rand(rng, _x_shape(1, 4, fmt, (5,)))
    kernel = _rand(rng, (k, 3, 4))
    f = lambda x, w: ops.conv_transpose(x, w, s, "causal", op, fmt, d)  # noqa: E731
    y = jax.jit(f)(x, kernel)
    with config.conv_lowering("xla"):
        plain = jax.jit(f)(x, kernel)
    assert y.shape == _x_shape(1, 3, fmt, (5 * s + (op or 0),))
    # The float64 scatter reference: full output from position 0, zero-extended past it.
    k_eff = d * (k - 1) + 1
    want = ref.conv_transpose(x, kernel, s, ((0, k_eff - s),), op, fmt, d)
    np.testing.assert_allclose(y, want, **TOL)
    np.testing.assert_allclose(plain, want, **TOL)


@pytest.mark.parametrize("k,s,d,op", CAUSAL_CASES)
def test_causal_output_never_sees_later_inputs(k, s, d, op):
    rng = np.random.default_rng(k * 10 + s)
    x = _rand(rng, (6, 2))  # unbatched
    kernel = _rand(rng, (k, 2, 2))
    jac = jax.jacobian(lambda v: ops.conv_transpose(v, kernel, s, "causal", op,
                                                    dilation_rate=d))(x)
    # jac[t, f, i, c]: output t may depend on inputs i <= t // s only.
    t, i = np.meshgrid(np.arange(jac.shape[0]), np.arange(jac.shape[2]), indexing="ij")
    later = (i > t // s)[:, None, :, None]
    assert np.all(np.where(np.broadcast_to(later, jac.shape), jac, 0) == 0)
    assert np.any(jac != 0)


def test_causal_matches_torch_cropped_on_the_right():
    torch = pytest.importorskip("torch")
    from kconv.interop import params_from_torch

    torch.manual_seed(0)
    module = torch.nn.ConvTranspose1d(4, 6, 8, stride=4).eval()  # EnCodec's k = 2 * s
    x = _rand(np.random.default_rng(2), (2, 4, 7))
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()[..., :7 * 4]
    layer = kconv.Conv1DTranspose(6, 8, strides=4, padding="causal",
                                  data_format="channels_first")
    np.testing.assert_allclose(layer(params_from_torch(layer, module.state_dict()), x), want,
                               **TOL)


def test_causal_layer_config_and_gradients():
    layer = kconv.Conv1DTranspose(3, 4, strides=2, padding="Causal", groups=1)
    assert layer.padding == "causal" and layer.get_config()["padding"] == "causal"
    assert layer.compute_output_shape((None, None, 2)) == (None, None, 3)
    assert layer.compute_output_shape((None, 7, 2)) == (None, 14, 3)
    assert kconv.Conv1DTranspose.from_config(layer.get_config()) == layer
    rng = np.random.default_rng(0)
    with _x64():
        x = jnp.asarray(rng.standard_normal((1, 4, 2)))
        kernel = jnp.asarray(rng.standard_normal((4, 3, 2)))
        check_grads(jax.jit(lambda x, k: ops.conv_transpose(x, k, 2, "causal")), (x, kernel),
                    order=2, modes=["fwd", "rev"], atol=1e-6, rtol=1e-6)
