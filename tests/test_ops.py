"""kconv.ops against the independent float64 NumPy reference (tests/reference.py), across
the real cross-product: rank × padding (causal too) × strides × dilation × groups ×
data_format × dtype; transposed convolution also as the VJP of the forward convolution."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kconv import ops
from tests import reference as ref

RANKS = (1, 2, 3)
SPATIAL = {1: (11,), 2: (9, 8), 3: (6, 5, 7)}
KERNEL = {1: (3,), 2: (3, 2), 3: (2, 3, 2)}
FORMATS = ("channels_last", "channels_first")


def _x(rng, rank, channels, data_format, batch=2, spatial=None):
    spatial = spatial or SPATIAL[rank]
    shape = (batch, *spatial, channels) if data_format == "channels_last" else (
        batch, channels, *spatial)
    return rng.standard_normal(shape).astype(np.float32)


def assert_close(actual, expected, dtype=np.float32):
    actual = np.asarray(actual, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = 1.0 + np.max(np.abs(expected), initial=0.0)
    tol = {np.float32: 1e-5, jnp.bfloat16: 2e-2, np.float16: 4e-3}[dtype]
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


def _forward_cases():
    for rank, padding, strides, dilation, groups, fmt in itertools.product(
            RANKS, ("valid", "same", "causal"), (1, 2, 3), (1, 2), (1, 2), FORMATS):
        if padding == "causal" and rank != 1:
            continue
        if rank == 3 and (strides == 3 or groups == 2 and dilation == 2):
            continue  # keep the 3-D share of the suite small; other ranks cover these
        yield rank, padding, strides, dilation, groups, fmt


@pytest.mark.parametrize("rank,padding,strides,dilation,groups,fmt", list(_forward_cases()))
def test_conv_matches_reference(rank, padding, strides, dilation, groups, fmt):
    rng = np.random.default_rng(hash((rank, padding, strides, dilation, groups)) % 2**32)
    cin, filters = 4, 6
    x = _x(rng, rank, cin, fmt)
    w = rng.standard_normal((*KERNEL[rank], cin // groups, filters)).astype(np.float32)
    got = ops.conv(x, w, strides, padding, fmt, dilation)
    want = ref.conv(x, w, strides, padding, fmt, dilation, groups=groups)
    assert_close(got, want)
    assert got.shape == ops.conv_output_shape(x.shape, filters, KERNEL[rank], strides, padding,
                                              fmt, dilation)


@pytest.mark.parametrize("rank,fmt", [(1, "channels_first"), (2, "channels_last"),
                                      (2, "channels_first"), (3, "channels_last")])
@pytest.mark.parametrize("op", ["conv", "depthwise_conv", "separable_conv", "conv_transpose"])
def test_op_bias(op, rank, fmt):
    # The bias (beyond Keras's ops, as PyTorch's conv2d / conv_transpose2d) lands on the
    # channel axis of each layout, after the whole op; 20 output channels, so that a 2-D
    # conv takes "eigen_crop" on a multi-core CPU, and a depthwise one its taps.
    rng = np.random.default_rng(rank + 10)
    x = _x(rng, rank, 4 if op == "conv_transpose" else 5, fmt)
    k = KERNEL[rank]
    if op == "conv":
        args = (rng.standard_normal((*k, 5, 20)),)
        want = ref.conv(x, *args, 1, "same", fmt)
    elif op == "depthwise_conv":
        args = (rng.standard_normal((*k, 5, 4)),)
        want = ref.depthwise_conv(x, *args, 1, "same", fmt)
    elif op == "separable_conv":
        args = (rng.standard_normal((*k, 5, 2)), rng.standard_normal((*(1,) * rank, 10, 20)))
        want = ref.separable_conv(x, *args, 1, "same", fmt)
    else:
        args = (rng.standard_normal((*k, 20, 4)),)
        want = ref.conv_transpose(x, *args, 2, "same", None, fmt)
    args = tuple(a.astype(np.float32) for a in args)
    strides = 2 if op == "conv_transpose" else 1
    b = rng.standard_normal(20).astype(np.float32)
    shape = [1] * (rank + 2)
    shape[-1 if fmt == "channels_last" else 1] = 20
    want = want + b.astype(np.float64).reshape(shape)
    fn = getattr(ops, op)
    assert_close(fn(x, *args, strides, "same", data_format=fmt, bias=b), want)
    assert_close(jax.jit(lambda x, b: fn(x, *args, strides, "same", data_format=fmt,
                                         bias=b))(x, b), want)
    with pytest.raises(ValueError, match=rf"kconv.ops.{op}: bias must have shape \(20,\).*"
                                         r"\(3,\)"):
        fn(x, *args, strides, "same", data_format=fmt, bias=b[:3])


@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16])
@pytest.mark.parametrize("rank", RANKS)
def test_conv_low_precision(rank, dtype):
    rng = np.random.default_rng(rank)
    x = _x(rng, rank, 4, "channels_last")
    w = rng.standard_normal((*KERNEL[rank], 4, 3)).astype(np.float32)
    got = ops.conv(jnp.asarray(x, dtype), jnp.asarray(w, dtype), 1, "same")
    assert got.dtype == dtype
    want = ref.conv(np.asarray(jnp.asarray(x, dtype), np.float64),
                    np.asarray(jnp.asarray(w, dtype), np.float64), 1, "same")
    assert_close(got, want, dtype)


@pytest.mark.parametrize("rank", RANKS)
def test_conv_explicit_padding(rank):
    rng = np.random.default_rng(7)
    x = _x(rng, rank, 3, "channels_last")
    w = rng.standard_normal((*KERNEL[rank], 3, 2)).astype(np.float32)
    pads = ((2, 0), (0, 1), (1, 3))[:rank]
    assert_close(ops.conv(x, w, 2, pads), ref.conv(x, w, 2, pads))


def _transpose_cases():
    for rank, padding, strides, dilation, fmt in itertools.product(
            RANKS, ("valid", "same"), (1, 2, 3), (1, 2), FORMATS):
        if rank == 3 and strides == 3:
            continue
        for op in sorted({None, 0, strides - 1}, key=str):
            yield rank, padding, strides, dilation, op, fmt


@pytest.mark.parametrize("rank,padding,strides,dilation,output_padding,fmt",
                         list(_transpose_cases()))
def test_conv_transpose_matches_reference(rank, padding, strides, dilation, output_padding,
                                          fmt):
    rng = np.random.default_rng(abs(hash((rank, padding, strides, dilation,
                                          output_padding))) % 2**32)
    x = _x(rng, rank, 3, fmt, spatial=tuple(s // 2 + 1 for s in SPATIAL[rank]))
    w = rng.standard_normal((*KERNEL[rank], 5, 3)).astype(np.float32)
    got = ops.conv_transpose(x, w, strides, padding, output_padding, fmt, dilation)
    want = ref.conv_transpose(x, w, strides, padding, output_padding, fmt, dilation)
    assert_close(got, want)
    assert got.shape == ops.conv_transpose_output_shape(
        x.shape, 5, KERNEL[rank], strides, padding, output_padding, fmt, dilation)


@pytest.mark.parametrize("rank,padding,strides,dilation,output_padding,fmt",
                         list(_transpose_cases()))
def test_conv_transpose_is_vjp_of_conv(rank, padding, strides, dilation, output_padding, fmt):
    """Transposed convolution is defined as the VJP of the forward convolution."""
    rng = np.random.default_rng(3)
    x = _x(rng, rank, 3, fmt, spatial=tuple(s // 2 + 1 for s in SPATIAL[rank]))
    w = rng.standard_normal((*KERNEL[rank], 5, 3)).astype(np.float32)
    y = ops.conv_transpose(x, w, strides, padding, output_padding, fmt, dilation)
    # The same kernel read as a forward kernel (*k, in=5, out=3) maps y's shape back to x's.
    forward = lambda z: ops.conv(z, w, strides, padding, fmt, dilation)  # noqa: E731
    primal_out = jax.eval_shape(forward, jax.ShapeDtypeStruct(y.shape, y.dtype))
    if primal_out.shape != x.shape:
        # Keras's `same` with an explicit output_padding can give lengths the forward
        # conv does not map back (e.g. even kernels); no VJP to compare there.
        pytest.skip(f"forward conv of {y.shape} gives {primal_out.shape}, not {x.shape}")
    _, vjp = jax.vjp(forward, jnp.zeros(y.shape, jnp.float32))
    (expected,) = vjp(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(y), np.asarray(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rank,padding,strides,dilation,fmt", [
    c for c in itertools.product(RANKS, ("valid", "same", "causal"), (1, 2), (1, 2), FORMATS)
    if c[1] != "causal" or c[0] == 1])
@pytest.mark.parametrize("depth_multiplier", [1, 2])
def test_depthwise_and_separable_match_reference(rank, padding, strides, dilation, fmt,
                                                 depth_multiplier):
    rng = np.random.default_rng(11)
    cin = 3
    x = _x(rng, rank, cin, fmt)
    dw = rng.standard_normal((*KERNEL[rank], cin, depth_multiplier)).astype(np.float32)
    pw = rng.standard_normal((*(1,) * rank, cin * depth_multiplier, 4)).astype(np.float32)
    got = ops.depthwise_conv(x, dw, strides, padding, fmt, dilation)
    assert_close(got, ref.depthwise_conv_direct(x, dw, strides, padding, fmt, dilation))
    assert got.shape == ops.depthwise_conv_output_shape(x.shape, KERNEL[rank],
                                                        depth_multiplier, strides, padding,
                                                        fmt, dilation)
    got = ops.separable_conv(x, dw, pw, strides, padding, fmt, dilation)
    assert_close(got, ref.separable_conv(x, dw, pw, strides, padding, fmt, dilation))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rank", RANKS)
def test_unbatched_and_extra_leading_dims(rank, fmt):
    rng = np.random.default_rng(5)
    x = _x(rng, rank, 3, fmt, batch=6)
    w = rng.standard_normal((*KERNEL[rank], 3, 2)).astype(np.float32)
    batched = ops.conv(x, w, 1, "same", fmt)
    np.testing.assert_array_equal(ops.conv(x[0], w, 1, "same", fmt), batched[0])
    stacked = ops.conv(x.reshape(2, 3, *x.shape[1:]), w, 1, "same", fmt)
    np.testing.assert_array_equal(stacked, np.asarray(batched).reshape(2, 3,
                                                                      *batched.shape[1:]))
    wt = rng.standard_normal((*KERNEL[rank], 2, 3)).astype(np.float32)
    np.testing.assert_array_equal(ops.conv_transpose(x[1], wt, 2, "same", None, fmt),
                                  ops.conv_transpose(x, wt, 2, "same", None, fmt)[1])


def test_hand_computed_values():
    # `same` puts the odd pad at the end: [1, 2, 3, 4] * [1, 1] -> [3, 5, 7, 4].
    x = jnp.arange(1.0, 5.0).reshape(1, 4, 1)
    np.testing.assert_array_equal(ops.conv(x, jnp.ones((2, 1, 1)), 1, "same")[0, :, 0],
                                  [3.0, 5.0, 7.0, 4.0])
    # Causal, dilation 2, kernel 3 of ones on arange(8): y[t] = x[t] + x[t-2] + x[t-4].
    x = jnp.arange(8.0).reshape(1, 8, 1)
    got = ops.conv(x, jnp.ones((3, 1, 1)), 1, "causal", dilation_rate=2)[0, :, 0]
    np.testing.assert_array_equal(got, [0, 1, 2, 4, 6, 9, 12, 15])
    # Transposed, stride 2, kernel [1, 10]: each input spreads to two outputs.
    x = jnp.array([1.0, 2.0, 3.0]).reshape(1, 3, 1)
    got = ops.conv_transpose(x, jnp.array([1.0, 10.0]).reshape(2, 1, 1), 2)[0, :, 0]
    np.testing.assert_array_equal(got, [1, 10, 2, 20, 3, 30])


def test_output_shape_functions_keep_none():
    assert ops.conv_output_shape((None, None, 7, 3), 4, 3) == (None, None, 5, 4)
    assert ops.conv_transpose_output_shape((None, 3, None), 4, 3, 2,
                                           data_format="channels_first") == (None, 4, None)
    assert ops.conv_output_length(None, 3, 1, "valid") is None
    with pytest.raises(ValueError, match="empty"):
        ops.conv_output_shape((1, 2, 2, 3), 4, 3)


@pytest.mark.parametrize("jit", [False, True])
def test_input_errors_are_clear(jit):
    run = (lambda f: jax.jit(f)) if jit else (lambda f: f)  # noqa: E731
    w = jnp.ones((3, 3, 4, 2))
    with pytest.raises(ValueError, match=r"rank 4.*got shape \(5,\)"):
        run(lambda x: ops.conv(x, w))(jnp.ones((5,)))
    with pytest.raises(ValueError, match="channels"):
        run(lambda x: ops.conv(x, w))(jnp.ones((1, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"window is larger.*\(1, 2, 8, 4\)"):
        run(lambda x: ops.conv(x, w))(jnp.ones((1, 2, 8, 4)))
    with pytest.raises(ValueError, match="kconv.ops.conv_transpose.*output_padding"):
        run(lambda x: ops.conv_transpose(x, jnp.ones((3, 3, 2, 4)), 2,
                                         output_padding=2))(jnp.ones((1, 4, 4, 4)))


def test_argument_errors_are_clear():
    x, w = jnp.ones((1, 8, 8, 4)), jnp.ones((3, 3, 4, 2))
    with pytest.raises(TypeError, match=r"kconv.ops.conv: inputs must be an array .*got str"):
        ops.conv("x", w)
    with pytest.raises(TypeError, match=r"kconv.ops.conv_transpose: kernel must be an array "
                                        r".*got NoneType None"):
        ops.conv_transpose(x, None)
    with pytest.raises(TypeError, match=r"kconv.ops.upsample: inputs must be an array"):
        ops.upsample(None, 2)
    with pytest.raises(TypeError, match=r"kconv.ops.depthwise_conv: kernel must be an array "
                                        r".*got NoneType None"):
        ops.depthwise_conv(x, None)
    with pytest.raises(TypeError, match=r"kconv.ops.separable_conv: depthwise_kernel must be "
                                        r"an array .*got str"):
        ops.separable_conv(x, "k", jnp.ones((1, 1, 4, 2)))
    with pytest.raises(ValueError, match=r"kconv.ops.conv: strides must be positive.*\(2, 0\)"):
        ops.conv(x, w, (2, 0))
    with pytest.raises(ValueError, match="padding must be one of.*'full'"):
        ops.conv(x, w, padding="full")
    with pytest.raises(ValueError, match="padding.*'causal'"):
        ops.conv(x, w, padding="causal")  # causal is 1-D only
    with pytest.raises(ValueError, match="data_format.*'NHWC'"):
        ops.conv(x, w, data_format="NHWC")
    with pytest.raises(ValueError, match="pointwise_kernel"):
        ops.separable_conv(x, jnp.ones((3, 3, 4, 1)), jnp.ones((1, 1, 5, 2)))


def test_shape_functions_check_their_arguments_as_the_layers_do():
    # The public shape functions took what a user types unchecked: any data_format but
    # exactly "channels_last" read as channels_first (None too, which means the default),
    # a zero stride divided by zero, a kernel_size of the wrong length gave another rank.
    assert ops.conv_output_shape((None, 8, 8, 3), 4, 3, data_format=None) == (None, 6, 6, 4)
    assert ops.conv_output_shape((None, 8, 8, 3), 4, 3, data_format="Channels_Last") == (
        None, 6, 6, 4)
    assert ops.conv_transpose_output_shape((None, 8, 8, 3), 4, 3, data_format=None) == (
        None, 10, 10, 4)
    name = "kconv.ops.conv_output_shape"
    for kwargs, error, match in [
        (dict(data_format="NHWC"), ValueError, "data_format must be one of"),
        (dict(strides=0), ValueError, "strides must be positive integers, got 0"),
        (dict(kernel_size=(3,)), ValueError, r"kernel_size must be an int or a tuple of 2"),
        (dict(kernel_size=2.5), TypeError, "kernel_size must be an int"),
        (dict(filters=-1), ValueError, "filters must be a positive integer, got -1"),
        (dict(dilation_rate=0), ValueError, "dilation_rate must be positive integers"),
        (dict(padding="causal"), ValueError, r"padding must be one of \('valid', 'same'\)"),
    ]:
        args = dict(filters=4, kernel_size=3) | kwargs
        with pytest.raises(error, match=f"^{name}: {match}"):
            ops.conv_output_shape((None, 8, 8, 3), **args)
    with pytest.raises(ValueError, match="depth_multiplier must be a positive integer"):
        ops.depthwise_conv_output_shape((None, 8, 8, 3), 3, depth_multiplier=-2)
    with pytest.raises(ValueError, match="output_padding must be smaller than strides"):
        ops.conv_transpose_output_shape((None, 8, 8, 3), 4, 3, strides=2, output_padding=5)
    with pytest.raises(ValueError, match=r"conv_output_length: stride must be a positive"):
        ops.conv_output_length(8, 3, 0, "valid")
    with pytest.raises(ValueError, match=r"conv_output_length: length must be a non-neg"):
        ops.conv_output_length(-1, 3, 1, "same")
    with pytest.raises(ValueError, match=r"padding must be 'valid', 'same', 'causal' or"):
        ops.conv_output_length(8, 3, 1, "full")
    assert ops.conv_output_length(np.int64(8), 3, 1, "valid") == 6


def test_a_kernel_with_an_empty_spatial_dim_is_refused_before_xla():
    x = jnp.ones((1, 6, 6, 3))
    with pytest.raises(ValueError, match=r"kconv.ops.conv: the kernel's spatial dims must be "
                                         r"at least 1, got shape \(0, 3, 3, 4\)"):
        ops.conv(x, jnp.ones((0, 3, 3, 4)))
    with pytest.raises(ValueError, match="kconv.ops.depthwise_conv: the kernel's spatial"):
        ops.depthwise_conv(x, jnp.ones((3, 0, 3, 1)))
    with pytest.raises(ValueError, match="kconv.ops.conv_transpose: the kernel's spatial"):
        ops.conv_transpose(x, jnp.ones((0, 3, 4, 3)))


def test_precision_and_preferred_element_type_checked_by_the_op():
    x, kernel = jnp.ones((1, 6, 6, 3)), jnp.ones((3, 3, 3, 4))
    with pytest.raises(ValueError, match=r"^kconv.ops.conv: precision must be None"):
        ops.conv(x, kernel, precision="ultra")
    with pytest.raises(ValueError, match=r"^kconv.ops.conv_transpose: precision must be"):
        ops.conv_transpose(x, jnp.ones((3, 3, 4, 3)), precision="ultra")
    with pytest.raises(TypeError, match=r"^kconv.ops.depthwise_conv: preferred_element_type "
                                        r"must be a dtype, got 'foo'"):
        ops.depthwise_conv(x, jnp.ones((3, 3, 3, 1)), preferred_element_type="foo")
    assert ops.conv(x, kernel, precision=["highest", "highest"],
                    preferred_element_type=jnp.float32).dtype == jnp.float32
