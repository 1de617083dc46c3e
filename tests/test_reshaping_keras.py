"""Cropping, ZeroPadding and UpSampling against Keras 3 on the JAX backend (the oracle):
outputs, ``get_config`` dicts, ``from_config`` of Keras's configs, output shapes,
constructor signatures, interpolation numbers and the arguments Keras refuses."""

import inspect

import jax.numpy as jnp
import numpy as np
import pytest

import kconv

keras = pytest.importorskip("keras")

FORMATS = ("channels_last", "channels_first")
SPATIAL = {1: (7,), 2: (6, 5), 3: (5, 6, 4)}
KERAS_ONLY_KEYS = ("name", "trainable", "dtype")

# Every argument form Keras accepts, per rank (for Cropping and ZeroPadding alike).
FORMS = {
    1: [2, (1, 3), [0, 2], (2, 0)],
    2: [1, (2, 1), [1, 0], ((1, 2), (0, 1)), [[2, 0], [1, 1]], ((1, 2), 1), (2, (0, 1))],
    3: [1, (2, 1, 0), ((1, 2), (0, 1), (2, 0)), (1, (0, 2), 1), [[1, 0], 2, [0, 1]]],
}


def _cases():
    for rank, forms in FORMS.items():
        for i, form in enumerate(forms):
            # alternate the formats over the forms: every form and every format is covered
            # without the full product (each case costs compiles in Keras and kconv)
            fmt = FORMATS[i % 2]
            yield f"Cropping{rank}D", (form,) if rank == 1 else (form, fmt)
            yield f"ZeroPadding{rank}D", (form, fmt)
    yield "Cropping2D", ()
    yield "Cropping3D", ()
    for rank in (1, 2, 3):
        yield f"ZeroPadding{rank}D", ()
        yield f"UpSampling{rank}D", ()
    yield "UpSampling1D", (3,)
    for i, size in enumerate([3, (1, 2), [2, 3]]):
        yield "UpSampling2D", (size, FORMATS[i % 2])
    for interpolation in ("nearest", "bilinear", "bicubic", "lanczos3", "lanczos5"):
        yield "UpSampling2D", ((2, 3), "channels_first", interpolation)
    yield "UpSampling2D", ((2, 2), "channels_last", "BiLinear")
    for i, size in enumerate([2, (1, 2, 3)]):
        yield "UpSampling3D", (size, FORMATS[i % 2])


CASES = list(_cases())
IDS = [f"{name}{args!r}".replace(" ", "") for name, args in CASES]


def _input(rank, data_format, rng, batch=2, channels=3):
    sp = SPATIAL[rank]
    shape = (batch, *sp, channels) if data_format == "channels_last" else (
        batch, channels, *sp)
    return rng.standard_normal(shape).astype(np.float32)


def _keras_config(layer):
    return {k: v for k, v in layer.get_config().items() if k not in KERAS_ONLY_KEYS}


@pytest.mark.parametrize("name,args", CASES, ids=IDS)
def test_matches_keras(name, args):
    ours, theirs = getattr(kconv, name)(*args), getattr(keras.layers, name)(*args)
    assert ours.get_config() == _keras_config(theirs)
    rebuilt = type(ours).from_config(theirs.get_config())
    assert rebuilt == getattr(kconv, name)(*args, dtype="float32")
    x = _input(ours.rank, ours.data_format, np.random.default_rng(len(args)))
    want = np.asarray(theirs(x))
    got = np.asarray(ours({}, x))
    if getattr(ours, "interpolation", "nearest") == "nearest":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got.dtype == want.dtype
    # None dims (batch, one spatial, channels) pass through as in Keras.
    shape = list(x.shape)
    shape[0] = None
    shape[-1 if ours.data_format == "channels_first" else 1] = None
    assert ours.compute_output_shape(tuple(shape)) == tuple(
        theirs.compute_output_shape(tuple(shape)))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "lanczos3", "lanczos5"])
def test_interpolation_numbers_match_keras(interpolation, fmt):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 4, 5, 2)) * 10).astype(np.float32)
    if fmt == "channels_first":
        x = x.transpose(0, 3, 1, 2)
    for size in ((2, 2), (3, 1)):
        want = keras.layers.UpSampling2D(size, fmt, interpolation)(x)
        got = kconv.UpSampling2D(size, fmt, interpolation)({}, x)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype,values", [("uint8", [255, 0, 0, 255, 255, 0]),
                                          ("int8", [127, -128, 127, -128, 5, 0]),
                                          ("bool", [True, False, False, True, True, False])])
def test_integer_inputs_round_and_saturate_as_keras(dtype, values):
    """uint8/int8 round and saturate; bool resizes as 0/1 and casts back as Keras does
    (jax.image.resize itself refuses bool)."""
    x = np.array(values, dtype).reshape(1, 2, 3, 1)
    for interpolation in ("nearest", "bilinear", "bicubic", "lanczos5"):
        want = np.asarray(keras.layers.UpSampling2D((2, 2), interpolation=interpolation)(x))
        got = np.asarray(kconv.UpSampling2D((2, 2), interpolation=interpolation)({}, x))
        assert got.dtype == want.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, want)


def test_mixed_precision_policy_from_keras_config():
    theirs = keras.layers.UpSampling2D((2, 1), interpolation="bilinear",
                                       dtype="mixed_bfloat16")
    ours = kconv.UpSampling2D.from_config(theirs.get_config())
    assert ours.dtype == jnp.bfloat16
    x = np.random.default_rng(1).standard_normal((1, 3, 4, 2)).astype(np.float32)
    want, got = theirs(x), ours({}, x)
    assert got.dtype == want.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


NAMES = [f"{family}{rank}D" for family in ("Cropping", "ZeroPadding", "UpSampling")
         for rank in (1, 2, 3)]


@pytest.mark.parametrize("name", NAMES)
def test_signature_is_kerass(name):
    keras_params = [p for p in inspect.signature(getattr(keras.layers, name)).parameters
                    .values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    ours = inspect.signature(getattr(kconv, name)).parameters
    positional = [p for p in ours.values() if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    assert [(p.name, p.default) for p in positional] == [
        (p.name, p.default) for p in keras_params]
    assert getattr(kconv, name)().get_config() == _keras_config(getattr(keras.layers, name)())


# Keras's own invalid-argument cases (keras/src/layers/reshaping/*_test.py), and a few more.
REFUSED = [
    ("Cropping1D", (1,)), ("Cropping1D", (1, 2, 3)), ("Cropping1D", "1"),
    ("Cropping2D", (1,)), ("Cropping2D", (1, 2, 3)), ("Cropping2D", "1"),
    ("Cropping2D", ((1, 2), (3, 4, 5))), ("Cropping2D", ((1, 2), (3, -4))),
    ("Cropping2D", ((1, 2), "3")), ("Cropping3D", (1, 2)), ("Cropping3D", -1),
    ("ZeroPadding1D", (1,)), ("ZeroPadding1D", (1, 2, 3)), ("ZeroPadding1D", "1"),
    ("ZeroPadding2D", (1,)), ("ZeroPadding2D", (1, 2, 3)), ("ZeroPadding2D", "1"),
    ("ZeroPadding2D", ((1, 2), (3, 4, 5))), ("ZeroPadding2D", ((1, 2), (3, -4))),
    ("ZeroPadding2D", ((1, 2), "3")), ("ZeroPadding3D", (1, 2)),
    ("UpSampling1D", 0), ("UpSampling1D", -2), ("UpSampling1D", 2.5), ("UpSampling1D", "2"),
    ("UpSampling1D", True), ("UpSampling2D", (2, 0)), ("UpSampling3D", (1, 2)),
]


@pytest.mark.parametrize("name,arg", REFUSED, ids=[f"{n}-{a!r}" for n, a in REFUSED])
def test_refuses_what_keras_refuses(name, arg):
    with pytest.raises((ValueError, TypeError)):
        getattr(keras.layers, name)(arg)
    with pytest.raises((ValueError, TypeError), match=f"^{name}: "):
        getattr(kconv, name)(arg)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("cropping", [((3, 6), (0, 0)), ((0, 0), (5, 4)), ((4, 5), 0)])
def test_excessive_cropping_raises_like_keras(cropping, fmt):
    shape = (3, 8, 9, 5) if fmt == "channels_last" else (3, 5, 8, 9)
    x = np.zeros(shape, np.float32)
    with pytest.raises(ValueError):
        keras.layers.Cropping2D(cropping, fmt)(x)
    with pytest.raises(ValueError, match="Cropping2D: cropping"):
        kconv.Cropping2D(cropping, fmt)({}, x)
    with pytest.raises(ValueError, match="Cropping2D: cropping"):
        kconv.Cropping2D(cropping, fmt).compute_output_shape(shape)
