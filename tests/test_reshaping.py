"""Cropping, ZeroPadding and UpSampling (kconv.ops.crop / zero_pad / upsample and the nine
layers) against independent NumPy references: slicing, ``np.pad``, ``np.repeat`` and an
explicit float64 interpolation matrix; every Keras argument form, both data formats,
unbatched and multi-batch inputs, ``jit``/``vmap``/``grad``, and the error contract.
Keras 3 itself is the oracle in tests/test_reshaping_keras.py."""

import functools
import inspect
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

import kconv
from kconv import _args, ops

FORMATS = ("channels_last", "channels_first")
SPATIAL = {1: (7,), 2: (6, 5), 3: (5, 4, 3)}
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos3", "lanczos5")


# --- the independent NumPy references ---------------------------------------------------

def _axes(rank, data_format):
    return tuple(range(1, rank + 1)) if data_format == "channels_last" else tuple(
        range(2, rank + 2))


def np_crop(x, pairs, data_format):
    index = [slice(None)] * x.ndim
    for axis, (lo, hi) in zip(_axes(len(pairs), data_format), pairs):
        index[axis] = slice(lo, x.shape[axis] - hi)
    return x[tuple(index)]


def np_pad(x, pairs, data_format):
    widths = [(0, 0)] * x.ndim
    for axis, pair in zip(_axes(len(pairs), data_format), pairs):
        widths[axis] = pair
    return np.pad(x, widths)


def np_repeat(x, size, data_format):
    for axis, s in zip(_axes(len(size), data_format), size):
        x = np.repeat(x, s, axis=axis)
    return x


def np_block_sum(ct, size, data_format):
    """The VJP of np.repeat: each input element receives the sum of its block."""
    for axis, s in zip(_axes(len(size), data_format), size):
        shape = ct.shape[:axis] + (ct.shape[axis] // s, s) + ct.shape[axis + 1:]
        ct = ct.reshape(shape).sum(axis=axis + 1)
    return ct


def linear_matrix(n, s):
    """Half-pixel linear interpolation of n samples to n * s, as a float64 (n*s, n) matrix.

    Output i samples input position ``(i + 0.5) / s - 0.5``; taps outside ``[0, n)`` are
    dropped and the row renormalised (TF / jax.image.resize / Keras 3 behaviour).
    """
    centres = (np.arange(n * s) + 0.5) / s - 0.5
    w = np.maximum(0.0, 1.0 - np.abs(centres[:, None] - np.arange(n)[None, :]))
    return w / w.sum(axis=1, keepdims=True)


def np_bilinear(x, size, data_format):
    for axis, s in zip(_axes(len(size), data_format), size):
        m = linear_matrix(x.shape[axis], s)
        x = np.moveaxis(np.tensordot(m, np.moveaxis(x, axis, 0), axes=1), 0, axis)
    return x


def _x(rng, rank, data_format, channels=3, batch=2, dtype=np.float32):
    sp = SPATIAL[rank]
    shape = (batch, *sp, channels) if data_format == "channels_last" else (
        batch, channels, *sp)
    return rng.standard_normal(shape).astype(dtype)


# --- argument forms -------------------------------------------------------------------

def _forms(rank):
    """(argument as a user writes it, the (lo, hi) pairs it means) for every Keras form."""
    if rank == 1:
        return [(2, ((2, 2),)), ((1, 3), ((1, 3),)), ((0, 2), ((0, 2),)),
                ([2, 0], ((2, 0),)), (((1, 2),), ((1, 2),)), (np.int64(1), ((1, 1),))]
    pairs = ((1, 2), (0, 1), (2, 0))[:rank]
    sym = (2, 1, 0)[:rank]
    mixed = tuple(p if i % 2 == 0 else sym[i] for i, p in enumerate(pairs))
    mixed_pairs = tuple(p if i % 2 == 0 else (sym[i], sym[i]) for i, p in enumerate(pairs))
    return [(1, ((1, 1),) * rank), (sym, tuple((s, s) for s in sym)),
            (list(sym), tuple((s, s) for s in sym)), (pairs, pairs),
            ([list(p) for p in pairs], pairs), (mixed, mixed_pairs),
            (np.array(pairs), pairs)]


FORM_CASES = [(rank, arg, pairs) for rank in (1, 2, 3) for arg, pairs in _forms(rank)]
FORM_IDS = [f"{rank}d-{arg!r}".replace(" ", "") for rank, arg, _ in FORM_CASES]


@pytest.mark.parametrize("rank,arg,pairs", FORM_CASES, ids=FORM_IDS)
def test_int_pairs_forms(rank, arg, pairs):
    assert _args.int_pairs(arg, rank, "cropping", "Cropping") == pairs


def test_one_d_pair_is_lo_hi_but_two_d_pair_is_per_axis():
    # Keras's quirk: (1, 2) is (lo, hi) for a 1-D layer and (h, w) symmetric for a 2-D one.
    assert kconv.Cropping1D((1, 2)).cropping == (1, 2)
    assert kconv.Cropping2D((1, 2)).cropping == ((1, 1), (2, 2))
    assert kconv.ZeroPadding1D((1, 2)).padding == (1, 2)
    assert kconv.ZeroPadding2D((1, 2)).padding == ((1, 1), (2, 2))


@settings(max_examples=60, deadline=None)
@given(rank=st.integers(2, 3), data=st.data())
def test_int_pairs_random_mixed_forms(rank, data):
    amount = st.integers(0, 5)
    entries = data.draw(st.lists(st.one_of(amount, st.tuples(amount, amount)),
                                 min_size=rank, max_size=rank))
    want = tuple(e if isinstance(e, tuple) else (e, e) for e in entries)
    assert _args.int_pairs(tuple(entries), rank, "padding", "ZeroPadding") == want
    layer = (kconv.ZeroPadding2D if rank == 2 else kconv.ZeroPadding3D)(tuple(entries))
    assert layer.get_config()["padding"] == want


# --- ops against the references -------------------------------------------------------

OP_CASES = [(rank, fmt, arg, pairs) for (rank, arg, pairs), fmt in itertools.product(
    FORM_CASES, FORMATS)]
OP_IDS = [f"{fmt[9:]}-{i}" for (rank, fmt, arg, pairs), i in zip(
    OP_CASES, [i for i in FORM_IDS for _ in FORMATS])]


@pytest.mark.parametrize("rank,fmt,arg,pairs", OP_CASES, ids=OP_IDS)
def test_crop_and_zero_pad_match_numpy(rank, fmt, arg, pairs):
    rng = np.random.default_rng(rank)
    x = _x(rng, rank, fmt)
    got = ops.crop(x, arg, fmt)
    np.testing.assert_array_equal(got, np_crop(x, pairs, fmt))
    assert got.shape == ops.crop_output_shape(x.shape, arg, fmt)
    got = ops.zero_pad(x, arg, fmt)
    np.testing.assert_array_equal(got, np_pad(x, pairs, fmt))
    assert got.shape == ops.zero_pad_output_shape(x.shape, arg, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rank,size", [(1, 3), (1, (2,)), (2, 2), (2, (1, 3)), (2, [3, 2]),
                                       (3, 2), (3, (1, 2, 3))])
def test_upsample_nearest_is_an_exact_repeat(rank, size, fmt):
    x = _x(np.random.default_rng(0), rank, fmt)
    got = ops.upsample(x, size, fmt)
    factors = _args.int_tuple(size, rank, "size", "test")
    np.testing.assert_array_equal(got, np_repeat(x, factors, fmt))
    assert got.shape == ops.upsample_output_shape(x.shape, size, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rank,size", [(1, 3), (2, (2, 3)), (3, (2, 1, 3))])
def test_upsample_linear_matches_interpolation_matrix(rank, size, fmt):
    x = _x(np.random.default_rng(1), rank, fmt)
    factors = _args.int_tuple(size, rank, "size", "test")
    got = ops.upsample(x, size, fmt, "bilinear")
    np.testing.assert_allclose(got, np_bilinear(x.astype(np.float64), factors, fmt),
                               rtol=1e-5, atol=1e-6)


def test_ops_infer_rank_and_take_rank_for_unbatched_inputs():
    x = jnp.arange(2 * 6 * 5 * 3, dtype=jnp.float32).reshape(2, 6, 5, 3)
    np.testing.assert_array_equal(ops.crop(x[0], 1, rank=2), ops.crop(x, 1)[0])
    np.testing.assert_array_equal(ops.zero_pad(x[0], 1, rank=2), ops.zero_pad(x, 1)[0])
    np.testing.assert_array_equal(ops.upsample(x[0], 2, rank=2), ops.upsample(x, 2)[0])


# --- Keras's own hard-coded examples (keras/src/layers/reshaping/*_test.py) -----------

@pytest.mark.parametrize("cropping,expected", [((1, 2), (1, 3)), ((1, 1), (1, 4)),
                                               (1, (1, 4)), ((0, 1), (0, 4)),
                                               ((1, 0), (1, 5))])
def test_keras_cropping1d_examples(cropping, expected):
    x = np.random.default_rng(0).random((3, 5, 7))
    np.testing.assert_array_equal(kconv.Cropping1D(cropping)({}, x),
                                  jnp.asarray(x[:, expected[0]:expected[1], :]))


KERAS_CROPPING2D = [(((1, 2), (3, 4)), ((1, 5), (3, 5))), (((2, 2), (2, 2)), ((2, 5), (2, 7))),
                    ((2, 2), ((2, 5), (2, 7))), (2, ((2, 5), (2, 7))),
                    (((0, 2), (0, 4)), ((0, 5), (0, 5))), (((1, 0), (3, 0)), ((1, 7), (3, 9))),
                    (((1, 0), (3, 4)), ((1, 7), (3, 5))), (((1, 2), (3, 0)), ((1, 5), (3, 9)))]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("cropping,ranges", KERAS_CROPPING2D)
def test_keras_cropping2d_examples(cropping, ranges, fmt):
    (a, b), (c, d) = ranges
    if fmt == "channels_first":
        x = np.random.default_rng(0).random((3, 5, 7, 9)).astype(np.float32)
        want = x[:, :, a:b, c:d]
    else:
        x = np.random.default_rng(0).random((3, 7, 9, 5)).astype(np.float32)
        want = x[:, a:b, c:d, :]
    np.testing.assert_array_equal(kconv.Cropping2D(cropping, fmt)({}, x), want)


_KERAS_D1 = [((1, 2), (1, 5)), ((0, 2), (0, 5)), ((1, 0), (1, 7))]
_KERAS_D2 = [((3, 4), (3, 5)), ((0, 4), (0, 5)), ((3, 0), (3, 9))]
_KERAS_D3 = [((5, 6), (5, 7)), ((0, 6), (0, 7)), ((5, 0), (5, 13))]
# Keras's product: all 27 combinations channels_last; channels_first on the 3 diagonals
# (each combination costs a compile; the per-axis logic is format-independent).
KERAS_CROPPING3D = [(*c, "channels_last") for c in itertools.product(
    _KERAS_D1, _KERAS_D2, _KERAS_D3)] + [(*c, "channels_first") for c in zip(
        _KERAS_D1, _KERAS_D2, _KERAS_D3)]


@pytest.mark.parametrize("d1,d2,d3,fmt", KERAS_CROPPING3D)
def test_keras_cropping3d_examples(d1, d2, d3, fmt):
    rng = np.random.default_rng(0)
    cropping = (d1[0], d2[0], d3[0])
    (a, b), (c, d), (e, f) = d1[1], d2[1], d3[1]
    if fmt == "channels_first":
        x = rng.random((3, 5, 7, 9, 13)).astype(np.float32)
        want = x[:, :, a:b, c:d, e:f]
    else:
        x = rng.random((3, 7, 9, 13, 5)).astype(np.float32)
        want = x[:, a:b, c:d, e:f, :]
    np.testing.assert_array_equal(kconv.Cropping3D(cropping, fmt)({}, x), want)


@pytest.mark.parametrize("cropping", [((2, 2), (2, 2), (2, 2)), (2, 2, 2), 2])
def test_keras_cropping3d_symmetric_examples(cropping):
    x = np.random.default_rng(0).random((3, 7, 9, 13, 5)).astype(np.float32)
    np.testing.assert_array_equal(kconv.Cropping3D(cropping)({}, x), x[:, 2:5, 2:7, 2:11, :])


@pytest.mark.parametrize("fmt", FORMATS)
def test_keras_zero_padding_examples(fmt):
    rng = np.random.default_rng(0)
    x = rng.random((1, 2, 3)).astype(np.float32)
    y = np.asarray(kconv.ZeroPadding1D((1, 2), fmt)({}, x))
    inner = y[:, 1:-2, :] if fmt == "channels_last" else y[:, :, 1:-2]
    np.testing.assert_array_equal(inner, x)
    axis = 1 if fmt == "channels_last" else 2
    assert np.count_nonzero(y) == np.count_nonzero(x) and y.shape[axis] == x.shape[axis] + 3
    x = rng.random((1, 2, 3, 4)).astype(np.float32)
    y = np.asarray(kconv.ZeroPadding2D(((1, 2), (3, 4)), fmt)({}, x))
    inner = y[:, 1:-2, 3:-4, :] if fmt == "channels_last" else y[:, :, 1:-2, 3:-4]
    np.testing.assert_array_equal(inner, x)
    for padding in (((2, 2), (2, 2)), (2, 2), 2):
        y = np.asarray(kconv.ZeroPadding2D(padding, fmt)({}, x))
        inner = y[:, 2:-2, 2:-2, :] if fmt == "channels_last" else y[:, :, 2:-2, 2:-2]
        np.testing.assert_array_equal(inner, x)
        assert np.count_nonzero(y) == np.count_nonzero(x)


def test_keras_upsampling_examples():
    x = np.arange(12).reshape((2, 2, 3))
    want = np.array([[[0, 1, 2], [0, 1, 2], [3, 4, 5], [3, 4, 5]],
                     [[6, 7, 8], [6, 7, 8], [9, 10, 11], [9, 10, 11]]])
    np.testing.assert_array_equal(kconv.UpSampling1D(2)({}, x), want)
    np.testing.assert_array_equal(kconv.UpSampling1D(3)({}, np.ones((2, 1, 5))),
                                  np.ones((2, 3, 5)))
    x = np.arange(12).reshape((2, 2, 1, 3))
    want = np.array([[[[0, 1, 2], [0, 1, 2]], [[3, 4, 5], [3, 4, 5]]],
                     [[[6, 7, 8], [6, 7, 8]], [[9, 10, 11], [9, 10, 11]]]])
    np.testing.assert_array_equal(kconv.UpSampling2D((1, 2), "channels_last")({}, x), want)
    np.testing.assert_array_equal(
        kconv.UpSampling2D((1, 2), "channels_first")({}, x.transpose(0, 3, 1, 2)),
        want.transpose(0, 3, 1, 2))
    x = np.arange(12).reshape((2, 1, 2, 1, 3))
    y = np.asarray(kconv.UpSampling3D((2, 2, 2), "channels_last")({}, x))
    row = lambda a, b: [[a, a], [a, a], [b, b], [b, b]]  # noqa: E731
    want = np.array([[row([0, 1, 2], [3, 4, 5])] * 2, [row([6, 7, 8], [9, 10, 11])] * 2])
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(
        kconv.UpSampling3D(2, "channels_first")({}, x.transpose(0, 4, 1, 2, 3)),
        want.transpose(0, 4, 1, 2, 3))


# The values Keras 3 (JAX backend) gives for UpSampling2D((2, 2), interpolation=...) of
# [[0, 1], [4, 2]] (channels_last, one channel); tests/test_reshaping_keras.py checks the
# same against a live Keras.
KERAS_INTERPOLATION_VALUES = {
    "nearest": [[0, 0, 1, 1], [0, 0, 1, 1], [4, 4, 2, 2], [4, 4, 2, 2]],
    "bilinear": [[0.0, 0.25, 0.75, 1.0], [1.0, 1.0625, 1.1875, 1.25],
                 [3.0, 2.6875, 2.0625, 1.75], [4.0, 3.5, 2.5, 2.0]],
    "bicubic": [[-0.46453294, -0.09096638, 0.64979, 1.0233566],
                [0.79516816, 0.9069898, 1.1287245, 1.2405463],
                [3.2930675, 2.8858674, 2.0784185, 1.6712186],
                [4.5527687, 3.8838239, 2.5573533, 1.8884085]],
    "lanczos3": [[-0.96976614, -0.3464495, 0.46906072, 1.0923773],
                 [0.8785959, 1.0016673, 1.1626865, 1.2857577],
                 [3.296882, 2.7654624, 2.0701847, 1.5387647],
                 [5.145244, 4.113579, 2.7638102, 1.7321448]],
    "lanczos5": [[-1.2497007, -0.47756612, 0.37400657, 1.1461412],
                 [0.9160647, 1.0407968, 1.1783615, 1.3030937],
                 [3.3046467, 2.715371, 2.0654697, 1.4761939],
                 [5.470412, 4.2337337, 2.8698246, 1.6331465]],
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_interpolation_values_keras_produces(interpolation, fmt):
    x = np.array([[0.0, 1.0], [4.0, 2.0]], np.float32)
    want = np.array(KERAS_INTERPOLATION_VALUES[interpolation], np.float32)
    layer = kconv.UpSampling2D(2, fmt, interpolation.upper())
    batched = x[None, :, :, None] if fmt == "channels_last" else x[None, None]
    y = np.asarray(layer({}, batched)).reshape(4, 4)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


# --- the layers: forms × formats, shapes, configs --------------------------------------

def _layer_cases():
    for rank, arg, pairs in FORM_CASES:
        for fmt in FORMATS if rank > 1 else ("channels_last", "channels_first"):
            yield "Cropping", rank, arg, pairs, fmt
            yield "ZeroPadding", rank, arg, pairs, fmt


def _build(family, rank, arg, fmt):
    cls = getattr(kconv, f"{family}{rank}D")
    if family == "Cropping" and rank == 1:
        return cls(arg)  # Keras's Cropping1D has no data_format: channels_last only
    return cls(arg, fmt)


LAYER_CASES = [c for c in _layer_cases() if not (c[0] == "Cropping" and c[1] == 1 and
                                                  c[4] == "channels_first")]


@pytest.mark.parametrize("family,rank,arg,pairs,fmt", LAYER_CASES)
def test_crop_and_pad_layers_match_numpy(family, rank, arg, pairs, fmt):
    layer = _build(family, rank, arg, fmt)
    assert layer.init(jax.random.key(0), (None, 4, 3)) == {}
    x = _x(np.random.default_rng(rank), rank, fmt)
    want = (np_crop if family == "Cropping" else np_pad)(x, pairs, fmt)
    got = layer({}, x)
    np.testing.assert_array_equal(got, want)
    assert layer.compute_output_shape(x.shape) == got.shape
    config = layer.get_config()
    key = "cropping" if family == "Cropping" else "padding"
    assert config[key] == (pairs[0] if rank == 1 else pairs)  # Keras's expanded form
    assert type(layer).from_config(config) == layer
    assert hash(type(layer).from_config(config)) == hash(layer)


UPSAMPLING_CASES = [(1, 3, (3,), "channels_last"), (1, 2, (2,), "channels_last")] + [
    (rank, size, factors, fmt) for fmt in FORMATS for rank, size, factors in [
        (2, 2, (2, 2)), (2, (1, 3), (1, 3)), (2, [3, 2], (3, 2)),
        (3, 2, (2, 2, 2)), (3, (1, 2, 3), (1, 2, 3))]]


@pytest.mark.parametrize("rank,size,factors,fmt", UPSAMPLING_CASES)
def test_upsampling_layers_match_numpy(rank, size, factors, fmt):
    cls = getattr(kconv, f"UpSampling{rank}D")
    layer = cls(size) if rank == 1 else cls(size, fmt)
    x = _x(np.random.default_rng(rank), rank, fmt)
    got = layer({}, x)
    np.testing.assert_array_equal(got, np_repeat(x, factors, fmt))
    assert layer.compute_output_shape(x.shape) == got.shape
    assert layer.get_config()["size"] == (size if rank == 1 else factors)
    assert cls.from_config(layer.get_config()) == layer
    np.testing.assert_array_equal(jax.jit(layer)({}, x), got)


@pytest.mark.parametrize("fmt", FORMATS)
def test_compute_output_shape_keeps_none(fmt):
    def shape(spatial, channels=3):
        return (None, *spatial, channels) if fmt == "channels_last" else (
            None, channels, *spatial)
    assert kconv.Cropping2D(((1, 2), 3), fmt).compute_output_shape(
        shape((None, 9))) == shape((None, 3))
    assert kconv.ZeroPadding3D((1, 2, (0, 3)), fmt).compute_output_shape(
        shape((4, None, 5), None)) == shape((6, None, 8), None)
    assert kconv.UpSampling2D((2, 3), fmt).compute_output_shape(
        shape((None, 4))) == shape((None, 12))
    assert kconv.ZeroPadding1D((1, 2), fmt).compute_output_shape(shape((None,))) == \
        shape((None,))
    assert kconv.Cropping1D((1, 2)).compute_output_shape((2, None, 7)) == (2, None, 7)
    assert kconv.UpSampling1D(4).compute_output_shape((None, 3, None)) == (None, 12, None)


def test_data_format_none_resolves_at_construction():
    kconv.config.set_image_data_format("channels_first")
    try:
        layers = [kconv.Cropping2D(1), kconv.ZeroPadding1D(), kconv.UpSampling3D()]
    finally:
        kconv.config.set_image_data_format(None)
    assert all(layer.data_format == "channels_first" for layer in layers)
    assert kconv.Cropping1D().data_format == "channels_last"
    assert kconv.UpSampling1D().data_format == "channels_last"
    assert "data_format" not in kconv.Cropping1D().get_config()
    assert "data_format" not in kconv.UpSampling1D().get_config()


def test_signatures_are_kerass_plus_keyword_only_jax_fields():
    jax_fields = ["dtype", "param_dtype", "precision"]
    want = {
        "Cropping1D": ["cropping"], "Cropping2D": ["cropping", "data_format"],
        "Cropping3D": ["cropping", "data_format"],
        "ZeroPadding1D": ["padding", "data_format"],
        "ZeroPadding2D": ["padding", "data_format"],
        "ZeroPadding3D": ["padding", "data_format"],
        "UpSampling1D": ["size"], "UpSampling2D": ["size", "data_format", "interpolation"],
        "UpSampling3D": ["size", "data_format"],
    }
    for name, args in want.items():
        params = inspect.signature(getattr(kconv, name)).parameters
        assert list(params) == args + jax_fields, name
        assert all(params[a].kind is inspect.Parameter.KEYWORD_ONLY for a in jax_fields)


# --- dtypes ---------------------------------------------------------------------------

def test_dtype_casts_floating_inputs_and_keeps_integers():
    x = np.arange(24, dtype=np.int32).reshape(1, 4, 6, 1)
    for layer in (kconv.Cropping2D(1, dtype="bfloat16"), kconv.ZeroPadding2D(1),
                  kconv.UpSampling2D(2, dtype="float16")):
        assert layer({}, x).dtype == jnp.int32
        assert layer({}, x.astype(np.float32)).dtype == (layer.dtype or jnp.float32)


@pytest.mark.parametrize("interpolation", ["bicubic", "lanczos5"])
def test_integer_interpolation_rounds_and_saturates(interpolation):
    x = np.array([255, 0, 0, 255, 255, 0], np.uint8).reshape(1, 1, 6, 1)
    y = kconv.UpSampling2D((1, 2), interpolation=interpolation)({}, x)
    assert y.dtype == jnp.uint8
    raw = jax.image.resize(x.astype(np.float32), (1, 1, 12, 1), interpolation,
                           antialias=False)
    np.testing.assert_array_equal(y, np.clip(np.round(np.asarray(raw)), 0, 255))


# --- transforms: unbatched, leading dims, vmap, jit, grad -----------------------------

TRANSFORM_LAYERS = [kconv.Cropping1D((1, 2)), kconv.Cropping2D(((1, 0), 2), "channels_first"),
                    kconv.Cropping3D(1), kconv.ZeroPadding1D((0, 2), "channels_first"),
                    kconv.ZeroPadding2D((1, (2, 0))), kconv.ZeroPadding3D(1, "channels_first"),
                    kconv.UpSampling1D(3), kconv.UpSampling2D((2, 3), "channels_first",
                                                              "bilinear"),
                    kconv.UpSampling3D((1, 2, 2), "channels_last")]


@pytest.mark.parametrize("layer", TRANSFORM_LAYERS, ids=lambda layer: repr(layer))
def test_unbatched_leading_dims_vmap_and_jit(layer):
    x = _x(np.random.default_rng(2), layer.rank, layer.data_format, batch=4)
    y = np.asarray(layer({}, x))
    # Crop, pad and nearest repeat only move values: equal bit for bit whatever the batch.
    # Interpolation is arithmetic whose XLA fusion may differ with the batch size: 1 ulp.
    exact = getattr(layer, "interpolation", "nearest") == "nearest"
    same = np.testing.assert_array_equal if exact else functools.partial(
        np.testing.assert_allclose, rtol=1e-6, atol=1e-6)
    same(layer({}, x[1]), y[1])
    many = layer({}, x.reshape((2, 2) + x.shape[1:]))
    same(many, y.reshape((2, 2) + y.shape[1:]))
    same(jax.vmap(layer, in_axes=(None, 0))({}, x), y)
    np.testing.assert_allclose(jax.jit(layer)({}, x), y, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rank", (1, 2, 3))
def test_crop_and_pad_gradients_are_each_others_adjoint(rank, fmt):
    rng = np.random.default_rng(3)
    x = _x(rng, rank, fmt)
    pairs = ((1, 2), (0, 1), (2, 0))[:rank]
    y, vjp = jax.vjp(lambda v: ops.crop(v, pairs, fmt), x)
    ct = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(vjp(ct)[0], np_pad(ct, pairs, fmt))
    y, vjp = jax.vjp(lambda v: ops.zero_pad(v, pairs, fmt), x)
    ct = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(vjp(ct)[0], np_crop(ct, pairs, fmt))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rank,size", [(1, (3,)), (2, (2, 3)), (3, (2, 1, 2))])
def test_upsample_nearest_gradient_is_block_sum(rank, size, fmt):
    rng = np.random.default_rng(4)
    x = _x(rng, rank, fmt)
    y, vjp = jax.vjp(lambda v: ops.upsample(v, size, fmt), x)
    ct = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_allclose(vjp(ct)[0], np_block_sum(ct.astype(np.float64), size, fmt),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fmt", FORMATS)
def test_upsample_bilinear_gradient_is_matrix_transpose(fmt):
    rng = np.random.default_rng(5)
    x = _x(rng, 2, fmt)
    layer = kconv.UpSampling2D((2, 3), fmt, "bilinear")
    y = layer({}, x)
    ct = rng.standard_normal(y.shape)
    grad = jax.grad(lambda v: jnp.sum(layer({}, v) * ct.astype(np.float32)))(x)
    # d/dx sum(ct * Mh x Mw^T) = Mh^T ct Mw, per sample and channel, in float64.
    h, w = _axes(2, fmt)
    mh = linear_matrix(x.shape[h], 2)
    mw = linear_matrix(x.shape[w], 3)
    ct_hw = np.moveaxis(ct, (h, w), (-2, -1))
    want = np.moveaxis(mh.T @ ct_hw @ mw, (-2, -1), (h, w))
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("interpolation", ["bicubic", "lanczos5"])
def test_upsample_check_grads(interpolation):
    x = jnp.asarray(np.random.default_rng(6).standard_normal((1, 2, 3, 1)), jnp.float32)
    check_grads(lambda v: ops.upsample(v, (2, 3), "channels_last", interpolation), (x,),
                order=1, modes=("rev",), atol=2e-2, rtol=2e-2)


# --- errors ---------------------------------------------------------------------------

BAD_ARGUMENTS = [
    (kconv.Cropping1D, {"cropping": (1,)}, ValueError),
    (kconv.Cropping1D, {"cropping": (1, 2, 3)}, ValueError),
    (kconv.Cropping1D, {"cropping": "1"}, TypeError),
    (kconv.Cropping1D, {"cropping": -1}, ValueError),
    (kconv.Cropping1D, {"cropping": {0: 1, 1: 2}}, TypeError),
    (kconv.Cropping2D, {"cropping": (1,)}, ValueError),
    (kconv.Cropping2D, {"cropping": (1, 2, 3)}, ValueError),
    (kconv.Cropping2D, {"cropping": ((1, 2), (3, 4, 5))}, ValueError),
    (kconv.Cropping2D, {"cropping": ((1, 2), (3, -4))}, ValueError),
    (kconv.Cropping2D, {"cropping": ((1, 2), "3")}, TypeError),
    (kconv.Cropping2D, {"cropping": (1.5, 2)}, TypeError),
    (kconv.Cropping3D, {"cropping": {"a": 1}}, TypeError),
    (kconv.Cropping3D, {"cropping": (1, 2)}, ValueError),
    (kconv.ZeroPadding1D, {"padding": (1,)}, ValueError),
    (kconv.ZeroPadding1D, {"padding": True}, TypeError),
    (kconv.ZeroPadding2D, {"padding": ((1, 2), (3, -4))}, ValueError),
    (kconv.ZeroPadding2D, {"padding": {"top": 1}}, TypeError),
    (kconv.ZeroPadding3D, {"padding": (1, 2, 3, 4)}, ValueError),
    (kconv.ZeroPadding3D, {"padding": 2.0}, TypeError),
    (kconv.UpSampling1D, {"size": 0}, ValueError),
    (kconv.UpSampling1D, {"size": -2}, ValueError),
    (kconv.UpSampling1D, {"size": 2.5}, TypeError),
    (kconv.UpSampling1D, {"size": "2"}, TypeError),
    (kconv.UpSampling1D, {"size": True}, TypeError),
    (kconv.UpSampling1D, {"size": (2,)}, TypeError),
    (kconv.UpSampling2D, {"size": (2, 0)}, ValueError),
    (kconv.UpSampling2D, {"size": (2, 2, 2)}, ValueError),
    (kconv.UpSampling2D, {"size": {"h": 2}}, TypeError),
    (kconv.UpSampling2D, {"interpolation": "area"}, ValueError),
    (kconv.UpSampling2D, {"interpolation": None}, TypeError),
    (kconv.UpSampling3D, {"size": (1, 2)}, ValueError),
    (kconv.Cropping2D, {"data_format": "NHWC"}, ValueError),
]


@pytest.mark.parametrize("cls,kwargs,error", BAD_ARGUMENTS,
                         ids=[f"{c.__name__}-{k}" for c, k, _ in BAD_ARGUMENTS])
def test_bad_arguments_name_layer_argument_and_value(cls, kwargs, error):
    (arg, value), = kwargs.items()
    with pytest.raises(error) as info:
        cls(**kwargs)
    message = str(info.value)
    assert message.startswith(f"{cls.__name__}: {arg} ")
    assert repr(value) in message


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("fmt", FORMATS)
def test_cropping_everything_raises_at_trace_time_with_shapes(fmt, jit):
    layer = kconv.Cropping2D(((3, 3), 0), fmt)
    x = jnp.ones((2, 6, 7, 3) if fmt == "channels_last" else (2, 3, 6, 7))
    call = jax.jit(layer) if jit else layer
    with pytest.raises(ValueError, match=r"Cropping2D: cropping \(\(3, 3\), \(0, 0\)\) "
                                         r"must leave .*" + str(x.shape).replace(
                                             "(", r"\(").replace(")", r"\)")):
        call({}, x)
    with pytest.raises(ValueError, match=r"Cropping2D: .*would give spatial dims \(0, 7\)"):
        layer.compute_output_shape(x.shape)
    with pytest.raises(ValueError, match=r"Cropping1D: .*\(2, 2, 3\).*\(-1,\)"):
        kconv.Cropping1D((2, 1))({}, jnp.ones((2, 2, 3)))


def test_wrong_input_rank_raises_with_shapes():
    with pytest.raises(ValueError, match=r"UpSampling3D: expected an input of rank 5 .* "
                                         r"got shape \(4, 4, 3\)"):
        kconv.UpSampling3D()({}, jnp.ones((4, 4, 3)))
    with pytest.raises(ValueError, match=r"ZeroPadding2D: expected an input_shape of rank 4"):
        kconv.ZeroPadding2D().compute_output_shape((None, 4, 3))
    with pytest.raises(ValueError, match=r"kconv.ops.crop: expected an input of rank >= 3"):
        ops.crop(jnp.ones((4, 3)), 1)


@pytest.mark.parametrize("name", [n for n in kconv.layers.LAYER_NAMES
                                  if not getattr(kconv, n).has_weights])
def test_params_of_a_layer_without_weights(name):
    """``{}`` or ``None``; anything else (another layer's params, passed by mistake) raises
    naming the keys, eagerly and at trace time."""
    rank = int(name[-2])
    layer = getattr(kconv, name)(1) if not name.startswith("UpSampling") else getattr(
        kconv, name)(2)
    x = jnp.ones((1, *SPATIAL[rank], 2))
    want = layer({}, x)
    np.testing.assert_array_equal(layer(None, x), want)
    for run in (layer, jax.jit(layer)):
        with pytest.raises(ValueError, match=rf"{name}: the layer has no weights, so params "
                                             r"must be \{\}; got keys \['kernel'\]"):
            run({"kernel": jnp.ones(3)}, x)
    with pytest.raises(TypeError, match=rf"{name}: params must be a dict .* got a list of 0 "):
        layer([], x)  # Keras's get_weights() of a weightless layer
    with pytest.raises(TypeError, match=rf"{name}: inputs must be an array .* got NoneType"):
        layer({}, None)
