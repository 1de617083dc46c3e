"""``padding_mode`` (zeros / reflect / replicate / circular) and explicit padding (an int, N
ints, N ``(lo, hi)`` pairs) on every forward convolution, ops and layers — beyond Keras.

The reference is independent of kconv: the (lo, hi) amounts of a padding string come from
tests/reference.py's own arithmetic (explicit forms are expanded here), the input is padded
with ``np.pad`` in NumPy's mode (``constant`` / ``reflect`` / ``edge`` / ``wrap``), then a
float64 NumPy ``valid`` correlation (tests/reference.py) runs on it."""

import dataclasses
import itertools
import json
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import kconv
from kconv import ops
from kconv.ops import lowering
from tests import reference as ref
from tests.test_layers import _reference as layer_reference

MODES = ("zeros", "reflect", "replicate", "circular")
NUMPY_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
              "circular": "wrap"}
SPATIAL = {1: (7,), 2: (6, 5), 3: (4, 5, 4)}
KERNEL = {1: (3,), 2: (3, 2), 3: (2, 3, 2)}
# Explicit forms per rank: (as the user writes it, the pairs it means).
EXPLICIT = {
    "int": {1: (2, ((2, 2),)), 2: (1, ((1, 1),) * 2), 3: (1, ((1, 1),) * 3)},
    "ints": {1: ((1,), ((1, 1),)), 2: ((2, 1), ((2, 2), (1, 1))),
             3: ((1, 0, 2), ((1, 1), (0, 0), (2, 2)))},
    "pairs": {1: (((3, 1),), ((3, 1),)), 2: (((2, 0), (1, 3)), ((2, 0), (1, 3))),
              3: (((0, 2), (1, 0), (2, 1)), ((0, 2), (1, 0), (2, 1)))},
}
# (strides, dilation, data_format), cycled over the cases so each family and mode meets
# strides > 1, dilation > 1 and both formats.
GEOMETRY = ((1, 1, "channels_last"), (2, 1, "channels_first"), (1, 2, "channels_first"),
            (2, 2, "channels_last"))


def _forms(rank):
    forms = ["valid", "same"] + (["causal"] if rank == 1 else []) + list(EXPLICIT)
    return forms


def _padding(form, rank):
    return EXPLICIT[form][rank][0] if form in EXPLICIT else form


def _pairs(form, rank, spatial, kernel, strides, dilation):
    """The (lo, hi) amounts, from the reference's arithmetic or the table above."""
    if form in EXPLICIT:
        return EXPLICIT[form][rank][1]
    return ref.conv_padding(spatial, kernel, strides, form, dilation)


def _np_pad(x, pairs, mode, data_format):
    """``x`` padded on its spatial axes with ``np.pad`` in ``mode``'s NumPy mode."""
    rank = len(pairs)
    first = 1 if data_format == "channels_last" else 2
    width = [(0, 0)] * x.ndim
    width[first:first + rank] = pairs
    return np.pad(np.asarray(x, np.float64), width, mode=NUMPY_MODE[mode])


def _spatial(x, rank, data_format):
    return x.shape[1:1 + rank] if data_format == "channels_last" else x.shape[2:2 + rank]


def _x(rng, rank, channels, data_format, spatial=None):
    spatial = spatial or SPATIAL[rank]
    shape = (2, *spatial, channels) if data_format == "channels_last" else (
        2, channels, *spatial)
    return rng.standard_normal(shape).astype(np.float32)


def assert_close(actual, expected):
    actual = np.asarray(actual, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = 1.0 + np.max(np.abs(expected), initial=0.0)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale)


# --- ops against the reference ------------------------------------------------------------
def _op_cases():
    index = 0
    for family, rank, (m, mode) in itertools.product(("conv", "depthwise", "separable"),
                                                     (1, 2, 3), enumerate(MODES)):
        for f, form in enumerate(_forms(rank)):
            if rank == 3 and form in ("valid", "ints"):
                continue  # keep the 3-D share small; 1-D/2-D cover these forms
            if family != "conv" and (f + m) % 2:
                continue  # every other form per mode: the four modes cover them all
            if family == "separable" and rank == 3:
                continue  # its depthwise step is depthwise rank 3; the layer test has it
            yield (family, rank, mode, form) + GEOMETRY[index % len(GEOMETRY)]
            index += 1


def _seed(*case):
    return zlib.crc32(repr(case).encode())


@pytest.fixture
def xla_lowering():
    # The padding happens before the lowering is chosen, so XLA's convolution (the fastest
    # to compile) checks it; tests/test_lowerings.py checks every other lowering against
    # XLA's, and test_default_lowering_with_padding_modes below runs them padded.
    with kconv.config.conv_lowering("xla"):
        yield


@pytest.mark.usefixtures("xla_lowering")
@pytest.mark.parametrize("family,rank,mode,form,strides,dilation,fmt", list(_op_cases()))
def test_ops_match_np_pad_then_valid(family, rank, mode, form, strides, dilation, fmt):
    rng = np.random.default_rng(_seed(family, rank, mode, form))
    cin = 3
    x = _x(rng, rank, cin, fmt)
    k = KERNEL[rank]
    pairs = _pairs(form, rank, _spatial(x, rank, fmt), k, strides, dilation)
    padded = _np_pad(x, pairs, mode, fmt)
    args = (strides, _padding(form, rank), fmt, dilation)
    if family == "conv":
        w = rng.standard_normal((*k, cin, 4)).astype(np.float32)
        got = ops.conv(x, w, *args, padding_mode=mode)
        want = ref.conv(padded, w, strides, "valid", fmt, dilation)
        shape = ops.conv_output_shape(x.shape, 4, k, strides, args[1], fmt, dilation)
    elif family == "depthwise":
        w = rng.standard_normal((*k, cin, 2)).astype(np.float32)
        got = ops.depthwise_conv(x, w, *args, padding_mode=mode)
        want = ref.depthwise_conv_direct(padded, w, strides, "valid", fmt, dilation)
        shape = ops.depthwise_conv_output_shape(x.shape, k, 2, strides, args[1], fmt, dilation)
    else:
        dw = rng.standard_normal((*k, cin, 2)).astype(np.float32)
        pw = rng.standard_normal((*(1,) * rank, 2 * cin, 4)).astype(np.float32)
        got = ops.separable_conv(x, dw, pw, *args, padding_mode=mode)
        want = ref.separable_conv(padded, dw, pw, strides, "valid", fmt, dilation)
        shape = ops.separable_conv_output_shape(x.shape, 4, k, strides, args[1], fmt,
                                                dilation)
    assert_close(got, want)
    assert got.shape == shape


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pairs", [((5, 7),), ((0, 9),), ((4, 4),)])
def test_pads_wider_than_the_axis_follow_numpy(mode, pairs):
    # An axis of 3: NumPy's reflect and wrap repeat for pads wider than the axis (a reflect
    # pad of 5 reads 1 0 1 2 1 | 0 1 2 ...); kconv follows it.
    x = np.arange(6, dtype=np.float32).reshape(2, 3, 1)
    w = np.array([1.0, 10.0, 100.0], np.float32).reshape(3, 1, 1)
    got = ops.conv(x, w, padding=pairs, padding_mode=mode)
    assert_close(got, ref.conv(_np_pad(x, pairs, mode, "channels_last"), w))


def test_wide_reflect_pad_numbers():
    x = jnp.arange(3.0).reshape(1, 3, 1)
    got = ops.conv(x, jnp.ones((1, 1, 1)), padding=((5, 2),), padding_mode="reflect")
    np.testing.assert_array_equal(got[0, :, 0], [1, 0, 1, 2, 1, 0, 1, 2, 1, 0])


def test_wide_pads_in_2d_channels_first():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 2, 3)).astype(np.float32)
    w = rng.standard_normal((2, 2, 2, 3)).astype(np.float32)
    pairs = ((4, 1), (0, 5))
    for mode in ("reflect", "circular"):
        got = ops.conv(x, w, padding=pairs, data_format="channels_first", padding_mode=mode)
        want = ref.conv(_np_pad(x, pairs, mode, "channels_first"), w,
                        data_format="channels_first")
        assert_close(got, want)


def test_one_element_axis_reflects_as_numpy():
    x = np.full((1, 1, 2), 3.0, np.float32)
    got = ops.depthwise_conv(x, np.ones((3, 2, 1), np.float32), padding="same",
                             padding_mode="reflect")
    np.testing.assert_array_equal(np.asarray(got), np.full((1, 1, 2), 9.0))


def test_empty_axis_cannot_be_filled():
    x = jnp.ones((1, 0, 2))
    with pytest.raises(ValueError, match=r"kconv.ops.conv: padding_mode 'reflect' cannot pad "
                                         r"an empty spatial axis"):
        ops.conv(x, jnp.ones((1, 2, 1)), padding=1, padding_mode="reflect")
    assert ops.conv(x, jnp.ones((1, 2, 1)), padding=1).shape == (1, 2, 1)  # zeros can


def test_mode_names_in_any_case():
    x = jnp.arange(5.0).reshape(1, 5, 1)
    w = jnp.ones((3, 1, 1))
    np.testing.assert_array_equal(ops.conv(x, w, padding="same", padding_mode="REFLECT"),
                                  ops.conv(x, w, padding="same", padding_mode="reflect"))
    assert kconv.Conv1D(1, 3, padding_mode="Circular").padding_mode == "circular"


def test_zeros_matches_explicit_and_string_padding():
    rng = np.random.default_rng(0)
    x = _x(rng, 2, 3, "channels_last", spatial=(7, 6))
    w = rng.standard_normal((3, 3, 3, 2)).astype(np.float32)
    same = ops.conv(x, w, 2, "same")  # (1, 1), (0, 1) here
    np.testing.assert_array_equal(ops.conv(x, w, 2, ((1, 1), (0, 1))), same)
    np.testing.assert_array_equal(ops.conv(x, w, 1, 1), ops.conv(x, w, 1, ((1, 1), (1, 1))))
    np.testing.assert_array_equal(ops.conv(x, w, 1, (2, 0)), ops.conv(x, w, 1, ((2, 2), (0, 0))))


def test_zeros_keeps_the_padding_in_the_lowering_spec(monkeypatch):
    # "zeros" must reach the lowering with its amounts (its fast paths pad themselves);
    # another mode pads the input first and hands over an unpadded convolution.
    specs = []
    original = lowering.conv
    monkeypatch.setattr(lowering, "conv", lambda x, k, spec, **kw: (
        specs.append(spec), original(x, k, spec, **kw))[1])
    x = jnp.ones((1, 8, 8, 3))
    ops.depthwise_conv(x, jnp.ones((3, 3, 3, 1)), padding="same")
    ops.depthwise_conv(x, jnp.ones((3, 3, 3, 1)), padding="same", padding_mode="reflect")
    assert specs[0].padding == ((1, 1), (1, 1)) and specs[0].input_shape == (1, 8, 8, 3)
    assert specs[1].padding == ((0, 0), (0, 0)) and specs[1].input_shape == (1, 10, 10, 3)


@pytest.mark.parametrize("mode", MODES)
def test_default_lowering_with_padding_modes(mode):
    # The CPU lowerings (depthwise taps, pointwise dot) on a padded input, against the
    # reference: a separable conv runs both.
    rng = np.random.default_rng(_seed("lowering", mode))
    x = _x(rng, 2, 3, "channels_last")
    dw = rng.standard_normal((3, 3, 3, 2)).astype(np.float32)
    pw = rng.standard_normal((1, 1, 6, 4)).astype(np.float32)
    with lowering.recorded_choices() as calls:
        got = ops.separable_conv(x, dw, pw, 2, ((2, 1), 1), padding_mode=mode)
    want = ref.separable_conv(_np_pad(x, ((2, 1), (1, 1)), mode, "channels_last"), dw, pw, 2)
    assert_close(got, want)
    if jax.default_backend() == "cpu":
        assert calls == [("conv", "depthwise_taps"), ("conv", "pointwise_dot")]


def test_conv_transpose_takes_only_zeros():
    x, w = jnp.ones((1, 4, 2)), jnp.ones((3, 5, 2))
    np.testing.assert_array_equal(ops.conv_transpose(x, w, 2, padding_mode="zeros"),
                                  ops.conv_transpose(x, w, 2))
    for mode in ("reflect", "replicate", "circular"):
        with pytest.raises(ValueError, match=rf"kconv.ops.conv_transpose: padding_mode must "
                                             rf"be 'zeros'.*got '{mode}'"):
            ops.conv_transpose(x, w, 2, padding_mode=mode)
    # Explicit amounts (PyTorch's, cropped off the output) take zeros only too.
    with pytest.raises(ValueError, match=r"kconv.ops.conv_transpose: padding_mode must "
                                         r"be 'zeros'.*got 'reflect'"):
        ops.conv_transpose(x, w, 2, ((1, 1),), padding_mode="reflect")


# --- gradients --------------------------------------------------------------------------
@pytest.mark.usefixtures("xla_lowering")
@pytest.mark.parametrize("mode", MODES)
def test_check_grads_input_and_kernel(mode):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((1, 5, 4, 2)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 2, 2, 3)), jnp.float32)
    dw = jnp.asarray(rng.standard_normal((2, 3, 2, 2)), jnp.float32)
    check_grads(lambda v, k: ops.conv(v, k, 1, ((2, 1), (3, 0)), padding_mode=mode),
                (x, w), order=1, modes=("fwd", "rev"), atol=5e-2, rtol=5e-2, eps=1e-2)
    check_grads(lambda v, k: ops.depthwise_conv(v, k, 2, "same", padding_mode=mode),
                (x, dw), order=1, modes=("rev",), atol=5e-2, rtol=5e-2, eps=1e-2)


def test_reflect_gradient_folds_back_onto_the_input():
    # d(sum of a reflect-padded identity conv)/dx counts how often each input is read:
    # [1, 0, 1, 2, 3, 4, 3] reads x1 and x3 twice.
    x = jnp.arange(5.0).reshape(1, 5, 1)
    grad = jax.grad(lambda v: ops.conv(v, jnp.ones((1, 1, 1)), padding=((1, 1),),
                                       padding_mode="reflect").sum())(x)
    np.testing.assert_array_equal(grad[0, :, 0], [1, 2, 1, 2, 1])


# --- layers -------------------------------------------------------------------------------
LAYER_CASES = [
    (kconv.Conv1D, dict(filters=3, kernel_size=3, padding="causal", dilation_rate=2), 1),
    (kconv.Conv1D, dict(filters=3, kernel_size=3, padding=((2, 1),), strides=2), 1),
    (kconv.Conv2D, dict(filters=4, kernel_size=(3, 2), padding="same", strides=2), 2),
    (kconv.Conv2D, dict(filters=4, kernel_size=3, padding=(1, 2), groups=2,
                        data_format="channels_first"), 2),
    (kconv.Conv3D, dict(filters=2, kernel_size=2, padding=1, dilation_rate=(1, 2, 1)), 3),
    (kconv.SeparableConv1D, dict(filters=3, kernel_size=3, padding="causal",
                                 depth_multiplier=2), 1),
    (kconv.SeparableConv2D, dict(filters=3, kernel_size=3, padding=((0, 2), (1, 1)),
                                 data_format="channels_first"), 2),
    (kconv.SeparableConv3D, dict(filters=2, kernel_size=2, padding="same",
                                 strides=(2, 1, 1)), 3),
    (kconv.DepthwiseConv1D, dict(kernel_size=3, padding="causal", strides=2,
                                 data_format="channels_first"), 1),
    (kconv.DepthwiseConv2D, dict(kernel_size=3, padding=2, depth_multiplier=2,
                                 dilation_rate=2), 2),
    (kconv.DepthwiseConv3D, dict(kernel_size=(2, 3, 2), padding=(1, 0, 1)), 3),
]
LAYER_MODE_CASES = [(cls, kwargs, rank, mode)
                    for cls, kwargs, rank in LAYER_CASES for mode in MODES]
LAYER_IDS = [f"{cls.__name__}-{i // len(MODES)}-{mode}"
             for i, (cls, _, _, mode) in enumerate(LAYER_MODE_CASES)]


def _params(layer, shape, rng):
    # Random weights of the layer's shapes (non-zero bias); no initializer to compile.
    return {name: jnp.asarray(rng.standard_normal(w.shape), jnp.float32)
            for name, w in layer.weights((None,) + tuple(shape[1:])).items()}


def _layer_reference(layer, params, x):
    """The layer's float64 output: np.pad, then test_layers' reference of the same layer
    with ``valid`` padding (NumPy op + bias + activation)."""
    fmt = layer.data_format
    pads = layer.padding if not isinstance(layer.padding, str) else ref.conv_padding(
        _spatial(x, layer.rank, fmt), layer.kernel_size, layer.strides, layer.padding,
        layer.dilation_rate)
    valid = dataclasses.replace(layer, padding="valid", padding_mode="zeros")
    return layer_reference(valid, params, _np_pad(x, pads, layer.padding_mode, fmt))


@pytest.mark.usefixtures("xla_lowering")
@pytest.mark.parametrize("cls,kwargs,rank,mode", LAYER_MODE_CASES, ids=LAYER_IDS)
def test_layers_match_np_pad_then_valid(cls, kwargs, rank, mode):
    layer = cls(**kwargs, padding_mode=mode)
    cin = 4
    fmt = layer.data_format
    shape = (2, *SPATIAL[rank], cin) if fmt == "channels_last" else (2, cin, *SPATIAL[rank])
    rng = np.random.default_rng(_seed(cls.__name__, mode))
    params = _params(layer, shape, rng)
    x = rng.standard_normal(shape).astype(np.float32)
    y = jax.jit(layer)(params, x)
    assert_close(y, _layer_reference(layer, params, x))
    assert y.shape[1:] == layer.compute_output_shape((None,) + shape[1:])[1:]


@pytest.mark.parametrize("form,want", [
    (2, ((2, 2),) * 2), ((1, 3), ((1, 1), (3, 3))), ([(0, 1), (2, 3)], ((0, 1), (2, 3))),
    (((0, 1), 2), ((0, 1), (2, 2))), (np.array([[1, 0], [0, 1]]), ((1, 0), (0, 1))),
])
def test_layer_explicit_forms_are_canonical_pairs(form, want):
    layer = kconv.Conv2D(2, 3, padding=form)
    assert layer.padding == want
    assert hash(layer) == hash(kconv.Conv2D(2, 3, padding=want))
    assert layer.compute_output_shape((None, 8, 8, 1)) == (
        None, 8 + sum(want[0]) - 2, 8 + sum(want[1]) - 2, 2)


def test_1d_explicit_forms():
    assert kconv.Conv1D(2, 3, padding=2).padding == ((2, 2),)
    assert kconv.Conv1D(2, 3, padding=[2]).padding == ((2, 2),)
    assert kconv.DepthwiseConv1D(3, padding=((2, 0),)).padding == ((2, 0),)
    assert kconv.SeparableConv1D(2, 3, padding=[[0, 2]]).padding == ((0, 2),)


@pytest.mark.usefixtures("xla_lowering")
@pytest.mark.parametrize("cls", [kconv.Conv1D, kconv.SeparableConv1D, kconv.DepthwiseConv1D])
@pytest.mark.parametrize("mode", ["zeros", "replicate"])
def test_causal_stays_causal_with_zeros_and_replicate(cls, mode):
    # output[t] never depends on input[t + 1:] (reflect and circular read the future: their
    # left border comes from x[1:] and from the end of the sequence).
    layer = cls(*(() if cls is kconv.DepthwiseConv1D else (2,)), 3, padding="causal",
                dilation_rate=2, padding_mode=mode)
    rng = np.random.default_rng(0)
    params = _params(layer, (1, 9, 2), rng)
    x = rng.standard_normal((9, 2)).astype(np.float32)
    # Sample t has everything after position t changed: its outputs up to t must not move.
    changed = np.stack([np.where(np.arange(9)[:, None] > t, x + 1.0, x) for t in range(9)])
    y, y_changed = (np.asarray(layer(params, v)) for v in (x[None], changed))
    assert y.shape[1] == 9
    for t in range(9):
        np.testing.assert_array_equal(y_changed[t, :t + 1], y[0, :t + 1])


def test_causal_with_reflect_reads_the_future():
    layer = kconv.Conv1D(1, 2, padding="causal", padding_mode="reflect", use_bias=False)
    y = layer({"kernel": jnp.array([[[1.0]], [[0.0]]])}, jnp.arange(4.0).reshape(1, 4, 1))
    np.testing.assert_array_equal(y[0, :, 0], [1.0, 0.0, 1.0, 2.0])  # reads [1, 0, 1, 2, 3]


def test_linen_wrapper_takes_padding_mode():
    from kconv import linen

    m = linen.Conv1D(1, 3, padding="same", padding_mode="replicate", use_bias=False,
                     kernel_initializer="ones")
    x = jnp.arange(4.0).reshape(1, 4, 1)
    variables = m.init(jax.random.key(0), x)
    np.testing.assert_array_equal(m.apply(variables, x)[0, :, 0], [1.0, 3.0, 6.0, 8.0])


# --- configs ------------------------------------------------------------------------------
FORWARD = [kconv.Conv1D, kconv.Conv2D, kconv.Conv3D, kconv.SeparableConv1D,
           kconv.SeparableConv2D, kconv.SeparableConv3D, kconv.DepthwiseConv1D,
           kconv.DepthwiseConv2D, kconv.DepthwiseConv3D]
TRANSPOSED = [kconv.Conv1DTranspose, kconv.Conv2DTranspose, kconv.Conv3DTranspose]


def _make(cls, **kwargs):
    if cls.__name__.startswith("Depthwise"):
        return cls(3, **kwargs)
    return cls(2, 3, **kwargs)


@pytest.mark.parametrize("cls", FORWARD + TRANSPOSED, ids=lambda c: c.__name__)
def test_padding_mode_omitted_from_config_at_default(cls):
    layer = _make(cls)
    assert layer.padding_mode == "zeros"
    assert "padding_mode" not in layer.get_config()
    assert "padding_mode" not in _make(cls, padding_mode="ZEROS").get_config()


@pytest.mark.parametrize("cls", FORWARD, ids=lambda c: c.__name__)
def test_config_round_trip_through_json(cls):
    pads = tuple((i, 2 - i) for i in range(cls.rank))
    layer = _make(cls, padding=pads, padding_mode="reflect")
    config = layer.get_config()
    assert config["padding"] == [[i, 2 - i] for i in range(cls.rank)]
    assert config["padding_mode"] == "reflect"
    back = cls.from_config(json.loads(json.dumps(config)))
    assert back == layer and hash(back) == hash(layer)
    string = _make(cls, padding="same", padding_mode="circular")
    assert cls.from_config(json.loads(json.dumps(string.get_config()))) == string


def test_conv_config_keeps_lora_beside_padding_mode():
    layer = kconv.Conv2D(4, 3, lora_rank=2, padding_mode="replicate")
    config = layer.get_config()
    assert (config["lora_rank"], config["lora_alpha"], config["padding_mode"]) == (
        2, 2, "replicate")
    assert kconv.Conv2D.from_config(config) == layer


def test_plain_keras_style_config_unchanged():
    config = kconv.Conv2D(4, 3, padding="same").get_config()
    layer = kconv.Conv2D.from_config(dict(config, name="conv2d", trainable=True))
    assert layer.padding == "same" and layer.padding_mode == "zeros"
    assert layer.get_config() == config


def test_replace_revalidates():
    layer = kconv.Conv2D(2, 3)
    assert dataclasses.replace(layer, padding_mode="reflect").padding_mode == "reflect"
    with pytest.raises(ValueError, match="Conv2D: padding_mode"):
        dataclasses.replace(layer, padding_mode="mirror")


# --- errors -------------------------------------------------------------------------------
ERRORS = [
    (lambda: kconv.Conv2D(2, 3, padding_mode="mirror"), ValueError,
     r"Conv2D: padding_mode must be one of \('zeros', 'reflect', 'replicate', 'circular'\), "
     r"got 'mirror'"),
    (lambda: kconv.SeparableConv1D(2, 3, padding_mode=1), TypeError,
     r"SeparableConv1D: padding_mode must be one of .*got 1"),
    (lambda: ops.depthwise_conv(jnp.ones((1, 5, 1)), jnp.ones((3, 1, 1)),
                                padding_mode="symmetric"), ValueError,
     r"kconv.ops.depthwise_conv: padding_mode must be one of .*got 'symmetric'"),
    (lambda: kconv.Conv2DTranspose(2, 3, padding_mode="reflect"), ValueError,
     r"Conv2DTranspose: padding_mode must be 'zeros' for a transposed convolution.*"
     r"got 'reflect'"),
    (lambda: kconv.Conv1DTranspose(2, 3, padding_mode="circular"), ValueError,
     r"Conv1DTranspose: padding_mode must be 'zeros'.*got 'circular'"),
    (lambda: kconv.Conv3DTranspose(2, 3, padding=1, padding_mode="replicate"), ValueError,
     r"Conv3DTranspose: padding_mode must be 'zeros' for a transposed convolution.*got "
     r"'replicate'"),
    (lambda: kconv.Conv3DTranspose(2, 3, padding="causal"), ValueError,
     r"Conv3DTranspose: padding must be one of \('valid', 'same'\), got 'causal'"),
    (lambda: kconv.Conv2D(2, 3, padding=-1), ValueError,
     r"Conv2D: padding must be non-negative integers, got -1"),
    (lambda: kconv.DepthwiseConv2D(3, padding=((1, -2), (0, 0))), ValueError,
     r"DepthwiseConv2D: padding must be non-negative integers, got \(\(1, -2\), \(0, 0\)\)"),
    (lambda: ops.conv(jnp.ones((1, 5, 5, 1)), jnp.ones((3, 3, 1, 1)), padding=(1, -1)),
     ValueError, r"kconv.ops.conv: padding must be non-negative integers, got \(1, -1\)"),
    (lambda: kconv.Conv2D(2, 3, padding=(1, 2, 3)), ValueError,
     r"Conv2D: padding must be an int, a tuple of 2 ints.*\(3 entries instead of 2\), "
     r"got \(1, 2, 3\)"),
    (lambda: kconv.Conv3D(2, 3, padding=((1, 2, 3), 0, 0)), ValueError,
     r"Conv3D: padding must be .*instead of a pair\), got \(\(1, 2, 3\), 0, 0\)"),
    (lambda: kconv.Conv2D(2, 3, padding=1.5), TypeError,
     r"Conv2D: padding must be an int, .*got 1.5"),
    (lambda: kconv.SeparableConv2D(2, 3, padding=((1, 1), "same")), TypeError,
     r"SeparableConv2D: padding must be an int, .*got \(\(1, 1\), 'same'\)"),
    (lambda: kconv.Conv1D(2, 3, padding=(1, 2)), ValueError,
     r"Conv1D: padding=\(1, 2\) is ambiguous for a 1-D convolution: write \(\(1, 2\),\)"),
    (lambda: kconv.DepthwiseConv1D(3, padding=[0, 3]), ValueError,
     r"DepthwiseConv1D: padding=\[0, 3\] is ambiguous .*\(\(0, 3\),\)"),
    (lambda: ops.separable_conv(jnp.ones((1, 5, 1)), jnp.ones((3, 1, 1)), jnp.ones((1, 1, 1)),
                                padding=(2, 2)), ValueError,
     r"kconv.ops.separable_conv: padding=\(2, 2\) is ambiguous"),
    (lambda: kconv.Conv1D(2, 3, padding=((1, 2), (3, 4))), ValueError,
     r"Conv1D: padding must be an int, a tuple of 1 int, or a tuple of 1 \(lo, hi\) pair.*"
     r"\(2 entries instead of 1\)"),
    (lambda: kconv.Conv2D(2, 3, padding="causal"), ValueError,
     r"Conv2D: padding must be one of \('valid', 'same'\), got 'causal'"),
    (lambda: ops.conv_output_shape((None, 8, 3), 2, 3, padding=(1, 2)), ValueError,
     r"kconv.ops.conv_output_shape: padding=\(1, 2\) is ambiguous"),
]


@pytest.mark.parametrize("make,error,match", ERRORS, ids=[m for _, _, m in ERRORS])
def test_errors_name_the_layer_argument_and_value(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_explicit_window_larger_than_padded_input():
    with pytest.raises(ValueError, match=r"Conv1D.*window is larger than the \(padded\) "
                                         r"input.*padding \(\(1, 0\),\)"):
        kconv.Conv1D(1, 5, padding=((1, 0),))(
            {"kernel": jnp.ones((5, 1, 1)), "bias": jnp.zeros(1)}, jnp.ones((1, 3, 1)))
