"""The CPU lowerings of kconv.ops (kconv/ops/lowering/) against the plain
``lax.conv_general_dilated`` / ``jax.image.resize`` path, forced with
``kconv.config.conv_lowering("xla")``: outputs and gradients (w.r.t. input and kernel)
across each lowering's configuration cross-product, low-precision dtypes,
``preferred_element_type``, unbatched inputs, the transformations (jvp, vmap,
grad-of-grad, remat), the choice rule itself (which path a call takes, read from the
lowered StableHLO) and the switch."""

import contextlib
import dataclasses
import functools
import importlib
import io
import itertools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from jax import lax
from jax.ad_checkpoint import checkpoint_name, print_saved_residuals
import numpy as np
import pytest

import kconv
from kconv import config, ops
from kconv.ops import lowering
from tests.util import equations, held_bytes

FORMATS = ("channels_last", "channels_first")
SPATIAL = {1: (11,), 2: (9, 8), 3: (6, 5, 7)}
KERNEL = {1: (3,), 2: (3, 2), 3: (2, 3, 2)}
TOL = {np.dtype(np.float32): 1e-5, np.dtype(jnp.bfloat16): 2e-2, np.dtype(np.float16): 4e-3}


def _x(rng, rank, channels, fmt, batch=2, spatial=None, dtype=np.float32):
    spatial = spatial or SPATIAL[rank]
    shape = (batch, *spatial, channels) if fmt == "channels_last" else (
        batch, channels, *spatial)
    return jnp.asarray(rng.standard_normal(shape), dtype)


def _outputs_and_grads(f, args):
    """``f(*args)`` and the VJP w.r.t. every arg with a fixed cotangent, in one jit."""
    out = jax.eval_shape(f, *args)
    # From NumPy: jax.random in the jitted function would cost more compile time than the
    # convolution itself.
    ct = jnp.asarray(np.random.default_rng(7).standard_normal(out.shape), out.dtype)

    def run(ct, *a):
        y, vjp = jax.vjp(f, *a)
        return (y, *vjp(ct))
    return jax.jit(run)(ct, *args)


def _lowered(f, args, expect):
    """Runs ``f`` on both paths; checks the auto path took ``expect``; returns both."""
    with config.conv_lowering("xla"):
        plain = _outputs_and_grads(f, args)
    with lowering.recorded_choices() as calls:
        auto = _outputs_and_grads(f, args)
    taken = {name for _, name in calls}
    assert expect in taken, (expect, calls)
    return plain, auto


def _assert_close(actual, expected, dtype=np.float32, factor=1.0):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    tol = TOL[np.dtype(dtype)] * factor
    scale = 1.0 + np.max(np.abs(expected), initial=0.0)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


def _check(f, args, expect, dtype=np.float32, factor=1.0):
    plain, auto = _lowered(f, args, expect)
    for a, p in zip(auto, plain):
        assert a.dtype == p.dtype
        _assert_close(a, p, dtype, factor)


def _check_transformed(run, args, expect, mode="auto"):
    """``jax.jit(run)(*args)`` (a pytree of transformed results) on the plain path and
    under ``mode``; checks the lowering ``expect`` (``(op, name)``) was taken and that
    every leaf matches the plain path's."""
    with config.conv_lowering("xla"):
        plain = jax.jit(run)(*args)
    with lowering.recorded_choices() as calls, config.conv_lowering(mode):
        auto = jax.jit(run)(*args)
    assert expect in calls, (expect, calls)
    jax.tree.map(lambda a, p: _assert_close(a, p, factor=3.0), auto, plain)


def _rotate(values, i):
    return values[i % len(values)]


# --- the primitives' abstract evaluation -----------------------------------------------

def _shape_cases():
    """Geometries around every term of the output-length rule: strides longer than the
    input, windows wider than it (a zero-length output), negative padding, dilation,
    groups, a zero-length axis, both formats, forward and transposed."""
    rng = np.random.default_rng(3)
    cases = []
    for i in range(160):
        rank = 1 + i % 3
        fmt = FORMATS[i // 3 % 2]
        groups = (1, 2, 3)[i // 6 % 3]
        n = tuple(int(v) for v in rng.integers(0 if i % 29 == 0 else 1, 9, rank))
        k = tuple(int(v) for v in rng.integers(1, 5, rank))
        s = tuple(int(v) for v in rng.integers(1, 4, rank))
        d = tuple(int(v) for v in rng.integers(1, 3, rank))
        pad = tuple((int(lo), int(hi)) for lo, hi in rng.integers(-1, 4, (rank, 2)))
        transposed = bool(i % 2)
        long = [(m - 1) * st + 1 if transposed and m else m for m, st in zip(n, s)]
        if all(m + lo + hi >= 0 for m, (lo, hi) in zip(long, pad)):  # lax's rule allows
            cases.append((rank, fmt, groups, n, k, s, d, pad, transposed))
    return cases


@pytest.mark.parametrize("rank,fmt,groups,n,k,s,d,pad,transposed", _shape_cases())
def test_conv_output_shape_is_lax_shape_rule(rank, fmt, groups, n, k, s, d, pad,
                                             transposed):
    # The primitives' abstract evaluation (arithmetic) against lax's own shape rule for
    # the plain convolution each one stands for.
    from kconv.ops.lowering.plain import _xla_conv, _xla_conv_transpose
    from kconv.ops.lowering.spec import ConvSpec, conv_output_shape
    channels, filters = 2 * groups, 3 * groups
    x_shape = (2, *n, channels) if fmt == "channels_last" else (2, channels, *n)
    kernel_shape = (*k, filters // groups, channels) if transposed else (
        *k, channels // groups, filters)
    spec = ConvSpec(rank, fmt, x_shape, kernel_shape, s, pad, d, groups)
    plain = _xla_conv_transpose if transposed else _xla_conv
    expected = jax.eval_shape(
        lambda x, w: plain(x, w, spec=spec, precision=None),
        jax.ShapeDtypeStruct(x_shape, jnp.float32),
        jax.ShapeDtypeStruct(kernel_shape, jnp.float32)).shape
    assert conv_output_shape(x_shape, kernel_shape, spec, transposed=transposed) == expected


# --- pointwise_dot -------------------------------------------------------------------

@pytest.mark.parametrize("rank,fmt,strides,padding,filters", list(itertools.product(
    (1, 2, 3), FORMATS, (1, 2), ("valid", "same", "explicit"), (6, 1))))
def test_pointwise_dot(rank, fmt, strides, padding, filters):
    # filters 1: the kernel gradient as a product-and-sum (a matrix-vector product).
    rng = np.random.default_rng(rank * 7 + strides)
    x = _x(rng, rank, 5, fmt)
    w = jnp.asarray(rng.standard_normal((*(1,) * rank, 5, filters)), jnp.float32)
    pad = ((1, 0), (0, 2), (1, 1))[:rank] if padding == "explicit" else padding
    _check(lambda x, w: ops.conv(x, w, strides, pad, fmt), (x, w), "pointwise_dot")


def _training_step_temporaries(f, *args):
    """Forward+backward temporaries and constants of ``f`` (:func:`held_bytes`): the
    output with the gradients w.r.t. every argument (as a training step returns them),
    compiled, never run."""
    ct = jnp.ones(jax.eval_shape(f, *args).shape)

    def step(*a):
        y, pullback = jax.vjp(f, *a)
        return y, pullback(ct)
    return held_bytes(jax.jit(step).lower(*args).compile())


@pytest.mark.parametrize("shape,filters,strides", [
    ((8, 512, 64), 1, 1), ((2, 8, 8, 8, 16), 1, 1), ((8, 16, 16, 32), 1, 2),
    ((8, 512, 64), 8, 1), ((2, 8, 8, 8, 16), 8, 1)])
def test_pointwise_dot_temporaries_at_most_lax(shape, filters, strides):
    # The memory bar for 1x1 convolutions, one filter included (autodiff's transposed
    # kernel gradient, and XLA:CPU's matrix-vector dot, each cost a copy lax has not).
    rank = len(shape) - 2
    x = jnp.ones(shape)
    w, b = jnp.ones((*(1,) * rank, shape[-1], filters)), jnp.ones(filters)

    def f(x, w, b):
        return ops.conv(x, w, strides, "same", bias=b)
    with config.conv_lowering("xla"):
        expected = _training_step_temporaries(f, x, w, b)
    with lowering.recorded_choices() as calls:
        got = _training_step_temporaries(f, x, w, b)
    assert {name for _, name in calls} == {"pointwise_dot"}
    assert got <= expected, (got, expected)


# --- depthwise_taps ------------------------------------------------------------------

def _depthwise_cases():
    # rank × padding × strides × dilation × data_format, the depth multiplier (or, for
    # block_diagonal, the group count) rotating.
    i = 0
    for rank in (1, 2, 3):
        paddings = ("valid", "same", "explicit") + (("causal",) if rank == 1 else ())
        for padding, strides, dilation, fmt in itertools.product(paddings, (1, 2), (1, 2),
                                                                 FORMATS):
            yield rank, padding, strides, dilation, _rotate((1, 2), i), fmt
            i += 1


@pytest.mark.parametrize("rank,padding,strides,dilation,multiplier,fmt",
                         list(_depthwise_cases()))
def test_depthwise_taps(rank, padding, strides, dilation, multiplier, fmt):
    rng = np.random.default_rng(rank * 100 + strides * 10 + dilation)
    x = _x(rng, rank, 3, fmt)
    w = jnp.asarray(rng.standard_normal((*KERNEL[rank], 3, multiplier)), jnp.float32)
    pad = ((2, 0), (0, 1), (1, 2))[:rank] if padding == "explicit" else padding
    _check(lambda x, w: ops.depthwise_conv(x, w, strides, pad, fmt, dilation), (x, w),
           "depthwise_taps")


@pytest.mark.parametrize("kernel,fmt,first,scan", [
    ((1, 3), "channels_last", True, True), ((3, 1), "channels_last", True, True),
    ((4, 4), "channels_last", False, False), ((5, 4), "channels_last", False, True),
    ((3, 3), "channels_first", False, False), ((3, 1), "channels_first", False, True)])
@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_taps_variants(kernel, fmt, first, scan, multiplier):
    # The forward multiplies before cutting each tap's window (channels last, <= 3 taps)
    # or after; in 2-D the weights' gradient is one reduction for 9-16 taps, a scan over
    # the taps otherwise. The cross-product's 2-D kernel has 6 taps, so the rest is here.
    rng = np.random.default_rng(multiplier)
    x = _x(rng, 2, 3, fmt, spatial=(9, 10))
    w = jnp.asarray(rng.standard_normal((*kernel, 3, multiplier)), jnp.float32)
    spec = lowering.ConvSpec(rank=2, data_format=fmt, input_shape=x.shape,
                             kernel_shape=(*kernel, 1, 3 * multiplier), groups=3,
                             strides=(2, 1), padding=((2, 1), (1, 2)), dilation=(1, 1),
                             dtype=np.dtype(np.float32))
    assert lowering.depthwise_taps._products_first(spec) is first
    grad = jax.make_jaxpr(jax.grad(lambda w: jnp.sum(ops.depthwise_conv(
        x, w, (2, 1), ((2, 1), (1, 2)), fmt) ** 2)))(w)
    assert ("scan" in str(grad)) is scan
    _check(lambda x, w: ops.depthwise_conv(x, w, (2, 1), ((2, 1), (1, 2)), fmt), (x, w),
           "depthwise_taps")


def test_depthwise_derivatives_take_the_fast_loop():
    # Inside a derivative (jvp, vjp, remat, second order) the taps' value is bound with
    # fast=True (its first product written weights x window: a loop XLA:CPU runs faster
    # and compiles slower); the forward alone is not. The same products and sums, up to
    # float rounding (the vectorized loop rounds its multiply-adds its own way).
    rng = np.random.default_rng(8)
    x = _x(rng, 2, 4, "channels_last", spatial=(9, 8))
    w = jnp.asarray(rng.standard_normal((3, 3, 4, 2)), jnp.float32)
    f = lambda x, w: ops.depthwise_conv(x, w, 1, "same")  # noqa: E731

    def fast_params(jaxpr):
        return [eqn.params.get("fast", False) for eqn in jaxpr.jaxpr.eqns
                if eqn.primitive.name == "kconv_depthwise_taps"]
    assert fast_params(jax.make_jaxpr(f)(x, w)) == [False]
    assert fast_params(jax.make_jaxpr(lambda x, w: jax.vjp(f, x, w)[0])(x, w)) == [True]
    assert set(fast_params(jax.make_jaxpr(
        lambda x, w: jax.jvp(f, (x, w), (x, w)))(x, w))) == {True}
    forward = jax.jit(f)(x, w)
    primal, vjp = jax.jit(lambda x, w: jax.vjp(f, x, w))(x, w)
    _assert_close(primal, forward, factor=0.2)
    fast = jax.jit(lambda x, w: jax.vjp(f, x, w)[0]).lower(x, w).as_text()
    plain = jax.jit(f).lower(x, w).as_text()
    assert fast != plain
    first = [line for line in fast.splitlines() if "stablehlo.multiply" in line][0]
    assert "broadcast" not in first.split("multiply")[1].split(",")[1]  # w is the lhs


@pytest.mark.parametrize("shape,scan", [((1, 150, 150, 4), False), ((1, 16400, 2), True)])
def test_depthwise_weight_gradient_accuracy(shape, scan):
    # Long sums: against float64 NumPy, the weights' gradient keeps float32's accuracy
    # (partial sums per image row; a 1-D output longer than 2**14 takes the scan).
    rng = np.random.default_rng(3)
    rank = len(shape) - 2
    x, ct = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    w = rng.standard_normal((3,) * rank + (shape[-1], 1)).astype(np.float32)
    grad = jax.jit(lambda x, w, ct: jax.vjp(
        lambda w: ops.depthwise_conv(x, w, 1, "same"), w)[1](ct)[0])
    assert ("while" in str(grad.lower(x, w, ct).as_text())) is scan
    padded = np.pad(x.astype(np.float64), [(0, 0)] + [(1, 1)] * rank + [(0, 0)])
    expected = np.zeros(w.shape[:-1])
    for tap in np.ndindex(*(3,) * rank):
        window = padded[(slice(None),) + tuple(slice(t, t + n) for t, n in
                                               zip(tap, shape[1:-1]))]
        expected[tap] = (window * ct).reshape(-1, shape[-1]).sum(0)
    actual = np.asarray(grad(x, w, ct), np.float64)[..., 0]
    assert np.max(np.abs(actual - expected)) <= 1e-6 * np.max(np.abs(expected))


@pytest.mark.parametrize("rank,fmt", [(1, "channels_first"), (2, "channels_last")])
def test_depthwise_taps_for_grouped_conv(rank, fmt):
    # One input channel per group through ops.conv (groups == channels, 2 filters each).
    rng = np.random.default_rng(rank)
    x = _x(rng, rank, 4, fmt)
    w = jnp.asarray(rng.standard_normal((*KERNEL[rank], 1, 8)), jnp.float32)
    _check(lambda x, w: ops.conv(x, w, 1, "same", fmt), (x, w), "depthwise_taps")


@pytest.mark.parametrize("fmt,strides,dilation,padding,multiplier,kernel", [
    ("channels_last", (2, 1), 1, "same", 2, (3, 2)),
    ("channels_first", 1, (1, 2), "valid", 3, (3, 2)),
    ("channels_last", 2, 2, ((2, 0), (0, 1)), 1, (3, 2)),
    ("channels_last", (2, 1), 1, "same", 2, (3, 3)),
    ("channels_first", 1, (1, 2), ((2, 0), (0, 1)), 1, (3, 3))])
def test_depthwise_taps_second_order(fmt, strides, dilation, padding, multiplier, kernel):
    # Second order goes through the input transpose's own primitive and its transposes
    # (the taps again, and the weights' gradient with the cotangent as the input: the
    # scan for a 3 × 2 kernel, the one reduction for 3 × 3).
    rng = np.random.default_rng(17)
    x = _x(rng, 2, 3, fmt, spatial=(7, 6))
    w = jnp.asarray(rng.standard_normal((*kernel, 3, multiplier)), jnp.float32)
    tangents = (jnp.asarray(rng.standard_normal(x.shape), jnp.float32),
                jnp.asarray(rng.standard_normal(w.shape), jnp.float32))

    def loss(x, w):
        return jnp.sum(jnp.sin(ops.depthwise_conv(x, w, strides, padding, fmt, dilation)))

    def run(x, w):
        first = jax.grad(loss, argnums=(0, 1))
        return {"grad_of_grad": jax.grad(lambda x, w: sum(jnp.sum(g ** 2) for g in first(x, w)),
                                         argnums=(0, 1))(x, w),
                "hvp": jax.jvp(first, (x, w), tangents)[1]}

    _check_transformed(run, (x, w), ("conv", "depthwise_taps"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_depthwise_taps_vmap_over_weights(fmt):
    # The primitive's batching rule folds batched weights into the channels (the input
    # broadcast along them when shared): values and gradients as the plain path's.
    rng = np.random.default_rng(16)
    x = _x(rng, 2, 3, fmt, spatial=(6, 5))
    w = jnp.asarray(rng.standard_normal((3, 2, 3, 2)), jnp.float32)
    ws, xs = jnp.stack([w, -2 * w, w ** 2]), jnp.stack([x, x + 1, 3 * x])

    def f(x, w):
        return ops.depthwise_conv(x, w, (2, 1), "same", fmt, 1)

    def run(x, w, xs, ws):
        grad = jax.grad(lambda x, w: jnp.sum(jnp.sin(f(x, w))), argnums=(0, 1))
        return {"shared_input": jax.vmap(f, in_axes=(None, 0))(x, ws),
                "both": jax.vmap(f)(xs, ws),
                "shared_input_grad": jax.vmap(grad, in_axes=(None, 0))(x, ws),
                "both_grad": jax.vmap(grad)(xs, ws)}

    _check_transformed(run, (x, w, xs, ws), ("conv", "depthwise_taps"))


@pytest.mark.parametrize("shape,kernel", [
    ((4, 16, 16, 32), (3, 3)), ((4, 16, 16, 32), (5, 5)), ((4, 64, 32), (5,)),
    ((2, 8, 8, 8, 16), (3, 3, 3))])
@pytest.mark.parametrize("stacked", [False, True])
def test_depthwise_taps_computed_once_in_a_training_step(shape, kernel, stacked):
    """Inside a derivative the taps' value (and, in reverse mode, the cotangent reaching
    their transposes) is computed into a buffer of its own (``materialized``): XLA:CPU
    had copied the taps into the input gradient's taps, which read them at shifted
    positions through the loss's derivative (``2 * y``) or another depthwise layer's
    (a stack), once per tap, with the input's padded windows materialised — 3-20 × the
    plain path's temporaries here (and 3-12 × its compile time). The memory bar holds
    with the gradients right; the forward alone is the plain identity."""
    rng = np.random.default_rng(len(shape) + len(kernel))
    channels = shape[-1]
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    w1, w2 = (jnp.asarray(0.5 * rng.standard_normal((*kernel, channels, 1)), jnp.float32)
              for _ in range(2))

    def loss(x, w1, w2):
        y = ops.depthwise_conv(x, w1, 1, "same")
        if stacked:
            y = ops.depthwise_conv(jax.nn.relu(y), w2, 1, "same")
        return jnp.sum(y ** 2)
    grad = jax.grad(loss, argnums=(0, 1, 2))
    compiled = {}
    for mode in ("auto", "xla"):
        with config.conv_lowering(mode):
            compiled[mode] = jax.jit(grad).lower(x, w1, w2).compile()
    assert held_bytes(compiled["auto"]) <= held_bytes(compiled["xla"])
    assert " reduce-window(" in compiled["auto"].as_text()
    for a, p in zip(compiled["auto"](x, w1, w2), compiled["xla"](x, w1, w2)):
        _assert_close(a, p)
    forward = jax.jit(lambda x, w1: ops.depthwise_conv(x, w1, 1, "same"))
    assert "reduce-window" not in forward.lower(x, w1).compile().as_text()


def _pad_once_params(f, *args):
    """The ``pad_once`` of every taps' forward in ``f``'s jaxpr (nested jaxprs too): ``""``
    for the per-window pads."""
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "kconv_depthwise_taps":
                found.append(eqn.params.get("pad_once", ""))
            for value in eqn.params.values():
                inner = getattr(value, "jaxpr", None)
                if inner is not None:
                    walk(getattr(inner, "jaxpr", inner))
    walk(jax.make_jaxpr(f)(*args).jaxpr)
    return found


PAD_FORMS = ("negate_input", "negate_padded")


@pytest.mark.parametrize("rank,padding,multiplier,fmt,dtype,form", [
    (r, p, m, f, dt, _rotate(PAD_FORMS, i))
    for i, (r, p, s, d, m, f) in enumerate(_depthwise_cases()) if s == 1 and p != "valid"
    for dt in ((np.float32, jnp.bfloat16) if i % 5 == 0 else (np.float32,))])
@pytest.mark.parametrize("dilation", [1, 2])
def test_depthwise_taps_padded_once(monkeypatch, rank, padding, multiplier, fmt, dtype,
                                    form, dilation):
    """The taps' forward from one padded copy of the input, negated before or after the
    pad (``pad_once``, forced here): the plain path's numbers."""
    monkeypatch.setattr(lowering.depthwise_taps, "_pads_once", lambda x, spec: form)
    rng = np.random.default_rng(rank * 10 + multiplier + dilation)
    x = _x(rng, rank, 3, fmt, dtype=dtype)
    kernel = (4,) if rank == 1 else KERNEL[rank]  # 1-D k3 multiplies first: no pads
    w = jnp.asarray(rng.standard_normal((*kernel, 3, multiplier)), dtype)
    pad = ((2, 0), (0, 1), (1, 2))[:rank] if padding == "explicit" else padding
    _check_padded_once(
        lambda x, w: ops.depthwise_conv(jnp.tanh(x) * 1.5 - 0.25, w, 1, pad, fmt, dilation),
        (x, w), ("conv", "depthwise_taps"), dtype, (form,))


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("fmt", FORMATS)
def test_depthwise_stack_padded_once(rank, fmt):
    # A depthwise layer on another's taps (through an activation) pads its input once:
    # in 1-D and 2-D it negates the padded copy.
    rng = np.random.default_rng(30 + rank)
    x = _x(rng, rank, 3, fmt)
    kernel = (4,) if rank == 1 else KERNEL[rank]
    w1, w2 = (jnp.asarray(rng.standard_normal((*kernel, c, m)), jnp.float32)
              for c, m in ((3, 2), (6, 1)))
    same = lambda x, w: ops.depthwise_conv(x, w, 1, "same", fmt)  # noqa: E731
    _check_padded_once(lambda x, w1, w2: same(jnp.tanh(same(x, w1)), w2), (x, w1, w2),
                       ("conv", "depthwise_taps"), np.float32,
                       ("", "negate_padded" if rank < 3 else "negate_input"))


def _check_padded_once(f, args, expect, dtype, forms):
    """``f``'s forward takes the padded-once taps (the lowering ``expect``; ``forms``:
    each taps' ``pad_once``) and computes the plain path's numbers."""
    assert _pad_once_params(f, *args) == list(forms)
    with lowering.recorded_choices() as calls:
        compiled = jax.jit(lambda *a: f(*a)).lower(*args).compile()
    assert expect in calls, calls
    with config.conv_lowering("xla"):
        plain = jax.jit(lambda *a: f(*a))(*args)
    _assert_close(compiled(*args), plain, np.dtype(dtype))


def test_depthwise_pads_once_where():
    """Which forwards pad once (``_pads_once``): a depthwise layer on another's taps
    through elementwise operations (not through a matrix product), seen through vmap;
    any input from 25 taps; never strided, unpadded, products-first or inside a
    derivative (whose value has its own loop)."""
    rng = np.random.default_rng(21)
    x = _x(rng, 2, 4, "channels_last", spatial=(9, 8))
    w, w5 = (jnp.asarray(rng.standard_normal((*k, 4, 1)), jnp.float32)
             for k in ((3, 3), (5, 5)))
    same = lambda x, w: ops.depthwise_conv(x, w, 1, "same")  # noqa: E731
    stack = lambda x, w: same(jax.nn.relu(same(x, w) * 2.0), w)  # noqa: E731
    assert _pad_once_params(same, x, w) == [""]
    assert _pad_once_params(lambda x, w: same(jax.nn.relu(x), w), x, w) == [""]
    assert _pad_once_params(stack, x, w) == ["", "negate_padded"]
    assert _pad_once_params(lambda x, w: jax.vmap(stack, (0, None))(x[None], w), x, w) == [
        "", "negate_padded"]
    assert _pad_once_params(lambda x, w: same(jax.nn.relu(ops.separable_conv(
        x, w, jnp.ones((1, 1, 4, 4)), 1, "same")), w), x, w) == ["", ""]
    assert _pad_once_params(same, x, w5) == ["negate_input"]
    assert _pad_once_params(lambda x, w: same(jax.nn.relu(x), w), x, w5) == ["negate_input"]
    assert _pad_once_params(lambda x, w: ops.depthwise_conv(
        jax.nn.relu(same(x, w)), w, 2, "same"), x, w) == ["", ""]
    assert _pad_once_params(lambda x, w: ops.depthwise_conv(
        jax.nn.relu(same(x, w)), w, 1, "valid"), x, w) == ["", ""]
    x1 = jnp.asarray(rng.standard_normal((2, 11, 4)), jnp.float32)
    w1 = jnp.asarray(rng.standard_normal((3, 4, 1)), jnp.float32)
    same1 = lambda x, w: ops.depthwise_conv(x, w, 1, "same")  # noqa: E731
    assert _pad_once_params(lambda x, w: same1(jnp.tanh(same1(x, w)), w), x1, w1) == [
        "", ""]  # products first
    grad = jax.grad(lambda x, w: jnp.sum(stack(x, w) ** 2), argnums=(0, 1))
    assert not any(_pad_once_params(grad, x, w))
    # The first layer's taps computed once, into the second's pad: two loops (the
    # per-window form copied the first's loop into the second's, its pads materialised).
    compiled = jax.jit(stack).lower(x, w).compile()
    fusions = [line for line in compiled.as_text().split("ENTRY")[1].splitlines()
               if "fusion(" in line]
    assert len(fusions) == 2 and "_pad_fusion" in fusions[0], fusions


# --- block_diagonal, grouped_split ---------------------------------------------------

# The depthwise cross-product, with groups 2 / 3 where the depth multiplier rotates 1 / 2.
@pytest.mark.parametrize("rank,padding,strides,dilation,groups,fmt", [
    (r, p, s, d, m + 1, f) for r, p, s, d, m, f in _depthwise_cases()])
def test_block_diagonal(rank, padding, strides, dilation, groups, fmt):
    _check_grouped(rank, padding, strides, dilation, groups, fmt, "block_diagonal")


def _check_grouped(rank, padding, strides, dilation, groups, fmt, expected):
    """A grouped convolution, two channels per group in and out, against the plain path."""
    rng = np.random.default_rng(rank * 100 + strides * 10 + dilation + groups)
    x = _x(rng, rank, 2 * groups, fmt)
    w = jnp.asarray(rng.standard_normal((*KERNEL[rank], 2, 2 * groups)), jnp.float32)
    pad = ((2, 0), (0, 1), (1, 2))[:rank] if padding == "explicit" else padding
    _check(lambda x, w: ops.conv(x, w, strides, pad, fmt, dilation), (x, w), expected)


# The same calls with the dense kernel over the limit: one convolution per group.
@pytest.mark.parametrize("rank,padding,strides,dilation,groups,fmt", [
    (r, p, s, d, m + 1, f) for i, (r, p, s, d, m, f) in enumerate(_depthwise_cases())
    if i % 3 == 0])
def test_grouped_split(monkeypatch, rank, padding, strides, dilation, groups, fmt):
    monkeypatch.setattr(lowering.rule, "MAX_BLOCK_DIAGONAL_WEIGHTS", 0)
    _check_grouped(rank, padding, strides, dilation, groups, fmt, "grouped_split")


def test_block_diagonal_of_pointwise_groups_takes_the_matrix_product():
    rng = np.random.default_rng(3)
    x = _x(rng, 2, 6, "channels_last")
    w = jnp.asarray(rng.standard_normal((1, 1, 2, 9)), jnp.float32)
    _check(lambda x, w: ops.conv(x, w), (x, w), "block_diagonal")
    with lowering.recorded_choices() as calls:
        jax.eval_shape(ops.conv, x, w)
    assert calls == [("conv", "block_diagonal")]
    # One dense 6 -> 9 matrix product, forward and backward: no convolution.
    assert "convolution" not in _hlo(ops.conv, x, w, grad=True)


def test_block_diagonal_keeps_an_infinite_weight_in_its_group():
    # The off-diagonal blocks are selected zeros, not products with an identity
    # (inf * 0 = nan): the other groups' outputs stay finite, as on the plain path.
    x = jnp.ones((1, 4, 4, 4))
    w = jnp.ones((3, 3, 2, 4)).at[1, 1, 0, 0].set(jnp.inf)   # group 0's first filter
    with config.conv_lowering("xla"):
        plain = ops.conv(x, w, 1, "same")
    with lowering.recorded_choices() as calls:
        auto = jax.jit(lambda x, w: ops.conv(x, w, 1, "same"))(x, w)
    assert calls == [("conv", "block_diagonal")]
    np.testing.assert_array_equal(np.isfinite(auto), np.isfinite(plain))
    assert np.isfinite(auto[..., 1:]).all()
    _assert_close(auto[..., 1:], plain[..., 1:])


def test_many_groups_keep_xla():
    spec = lowering.ConvSpec(rank=2, data_format="channels_last", input_shape=(1, 8, 8, 34),
                             kernel_shape=(3, 3, 2, 34), strides=(1, 1),
                             padding=((1, 1), (1, 1)), dilation=(1, 1), groups=17)
    assert lowering.MAX_SPLIT_GROUPS == 16
    assert lowering.MAX_BLOCK_DIAGONAL_WEIGHTS == 2 ** 18
    assert lowering.choose("conv", "cpu", spec) == "xla"
    sixteen = dataclasses.replace(spec, input_shape=(1, 8, 8, 32), kernel_shape=(3, 3, 2, 32),
                                  groups=16)
    assert lowering.choose("conv", "cpu", sixteen) == "block_diagonal"


# --- eigen_crop ----------------------------------------------------------------------

@pytest.fixture
def two_cores(monkeypatch):
    """``"eigen_crop"`` wants two cores: the rule sees two, whatever runs the tests."""
    monkeypatch.setattr(lowering.rule, "_host_cores", lambda: 2)


def _eigen_cases():
    for fmt, padding, dilation, kernel in itertools.product(
            FORMATS, ("valid", "same", "explicit"), (1, 2), ((3, 2), (1, 3))):
        yield fmt, padding, dilation, kernel


@pytest.mark.parametrize("fmt,padding,dilation,kernel", list(_eigen_cases()))
def test_eigen_crop(two_cores, fmt, padding, dilation, kernel):
    rng = np.random.default_rng(hash((fmt, padding, dilation, kernel)) % 2**32)
    x = _x(rng, 2, 5, fmt)
    w = jnp.asarray(rng.standard_normal((*kernel, 5, 20)), jnp.float32)
    b = jnp.asarray(rng.standard_normal(20), jnp.float32)
    pad = ((0, 0), (1, 0)) if padding == "explicit" else padding
    _check(lambda x, w, b: ops.conv(x, w, 1, pad, fmt, dilation, bias=b), (x, w, b),
           "eigen_crop")


def test_eigen_crop_needs_the_bias_and_two_cores(two_cores, monkeypatch):
    x, w, b = jnp.ones((2, 6, 6, 4)), jnp.ones((3, 3, 4, 20)), jnp.ones(20)
    with lowering.recorded_choices() as calls:
        jax.eval_shape(lambda x, w, b: ops.conv(x, w, bias=b), x, w, b)
        jax.eval_shape(lambda x, w: ops.conv(x, w), x, w)
    assert calls == [("conv", "eigen_crop"), ("conv", "xla")]
    monkeypatch.setattr(lowering.rule, "_host_cores", lambda: 1)
    with lowering.recorded_choices() as calls:
        jax.eval_shape(lambda x, w, b: ops.conv(x, w, bias=b), x, w, b)
    assert calls == [("conv", "xla")]
    # An output already taller than the input: XLA's convolution is Eigen's already.
    with lowering.recorded_choices() as calls:
        jax.eval_shape(lambda x, w, b: ops.conv(x, w, padding=((2, 1), (1, 1)), bias=b),
                       x, w, b)
    assert calls == [("conv", "xla")]


# --- width_fold ----------------------------------------------------------------------

def _width_fold_cases():
    # (strides, dilation, kernel): strided on the folded axis and another; dilated; a
    # kernel one tap wide on the folded axis.
    variants = [((1, 1, 1), (1, 1, 1), (2, 3, 3)), ((2, 1, 2), (1, 1, 1), (3, 2, 3)),
                ((1, 1, 1), (2, 1, 2), (2, 2, 3)), ((1, 2, 1), (1, 1, 1), (3, 3, 1))]
    for i, (fmt, padding) in enumerate(itertools.product(FORMATS,
                                                         ("valid", "same", "explicit"))):
        yield (fmt, padding, *_rotate(variants, i), (1, 2)[i % 2])


@pytest.mark.parametrize("channels,filters", [(6, 17), (2, 5), (2, 64)])
@pytest.mark.parametrize("fmt,padding,strides,dilation,kernel,cores",
                         list(_width_fold_cases()))
def test_width_fold(monkeypatch, fmt, padding, strides, dilation, kernel, cores, channels,
                    filters):
    # On two cores the folded 2-D convolution is eigen_crop's; on one, XLA's. With few
    # channels (folded to 16 or fewer, and as many filters) it is Eigen's either way. 2 →
    # 64 channels: inside a derivative (the value _check compares) the merged plane's,
    # channels_last with stride 1 on H (width_fold._merged_plane_fits).
    monkeypatch.setattr(lowering.rule, "_host_cores", lambda: cores)
    rng = np.random.default_rng(hash((fmt, padding, strides, dilation, kernel)) % 2**32)
    x = _x(rng, 3, channels, fmt, spatial=(5, 6, 7))
    w = jnp.asarray(rng.standard_normal((*kernel, channels, filters)), jnp.float32)
    b = jnp.asarray(rng.standard_normal(filters), jnp.float32)
    pad = ((1, 0), (0, 2), (2, 1)) if padding == "explicit" else padding
    _check(lambda x, w, b: ops.conv(x, w, strides, pad, fmt, dilation, bias=b), (x, w, b),
           "width_fold")


def test_width_fold_window_all_padding():
    # Width 2, taps 3 apart: the outer taps read only padding.
    rng = np.random.default_rng(5)
    x = _x(rng, 3, 8, "channels_last", spatial=(4, 3, 2))
    w = jnp.asarray(rng.standard_normal((2, 2, 3, 8, 4)), jnp.float32)
    _check(lambda x, w: ops.conv(x, w, 1, "same", dilation_rate=(1, 1, 3)), (x, w),
           "width_fold")


@pytest.mark.parametrize("channels,kernel,strides", [(48, (3, 3, 3), 1), (43, (2, 1, 3), 2),
                                                    (26, (1, 2, 5), 1)])
def test_width_fold_many_channels_stays_one_fusion(channels, kernel, strides):
    """From ``_MINOR_CONCAT_LIMIT`` folded channels on, the windows are stacked and merged
    (XLA:CPU would leave their concatenation out of the loop fusion, and every window's
    pad a fusion of its own): the same numbers, and no concatenation in the program."""
    assert kernel[-1] * channels >= lowering.width_fold._MINOR_CONCAT_LIMIT
    rng = np.random.default_rng(channels)
    x = _x(rng, 3, channels, "channels_last", spatial=(4, 5, 6))
    w = jnp.asarray(rng.standard_normal((*kernel, channels, 8)), jnp.float32)
    f = lambda x, w: ops.conv(x, w, strides, "same")  # noqa: E731
    _check(f, (x, w), "width_fold")
    program = jax.jit(f).lower(x, w).compile().as_text()
    assert " concatenate(" not in program[program.index("ENTRY"):]


def _fingerprint():
    """``benchmarks/bench.py``'s ``hlo_fingerprint``: the optimized program, names and
    metadata taken out."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    try:
        return importlib.import_module("bench").hlo_fingerprint
    finally:
        sys.path.pop(0)


@pytest.mark.parametrize("case", ["eigen_crop", "width_fold", "bilinear_stencil"])
def test_derivative_value_is_xlas(two_cores, case):
    """Inside a derivative the three lowerings whose forward keeps temporaries take XLA's
    value (``derivative_value``; the stencil's JVP is ``jax.image.resize``'s): the forward
    + backward program returning the output is the plain path's for the 2-D ones, and
    the 3-D one's value is XLA's 3-D convolution (its gradients stay the tap loop's)
    where the merged plane does not fit (next test)."""
    rng = np.random.default_rng(31)
    if case == "eigen_crop":
        x, w = _x(rng, 2, 24, "channels_last", spatial=(9, 8)), rng.standard_normal((3, 3, 24, 20))
        f = lambda x, w: ops.conv(x, w, 1, "same", bias=jnp.ones(20))  # noqa: E731
    elif case == "width_fold":  # 24 gathered channels for 16 filters: not the merged plane
        x, w = _x(rng, 3, 8, "channels_last", spatial=(6, 5, 7)), rng.standard_normal((3, 3, 3, 8, 16))
        f = lambda x, w: ops.conv(x, w, 1, "same", bias=jnp.ones(16))  # noqa: E731
    else:
        x, w = _x(rng, 2, 8, "channels_last", spatial=(6, 5)), rng.standard_normal(3)
        f = lambda x, w: ops.upsample(x * w[0], 2, interpolation="bilinear", rank=2)  # noqa: E731
    w = jnp.asarray(w, jnp.float32)
    ct = jnp.asarray(rng.standard_normal(jax.eval_shape(f, x, w).shape), jnp.float32)

    def step(x, w, ct):
        y, pullback = jax.vjp(f, x, w)
        return y, pullback(ct)
    with config.conv_lowering("auto"), lowering.recorded_choices() as calls:
        jax.clear_caches()
        jax.eval_shape(f, x, w)
    assert [name for _, name in calls] == [case]
    programs = {}
    for mode in ("auto", "xla"):
        with config.conv_lowering(mode):
            programs[mode] = jax.jit(step).lower(x, w, ct).compile()
    fingerprint = _fingerprint()
    if case == "width_fold":
        text = programs["auto"].as_text()
        assert text.count(" while(") == 1  # the gradients' loop
        assert "convolution(" in text and "dim_labels=b012f_012io->b012f" in text
    else:
        assert fingerprint(programs["auto"]) == fingerprint(programs["xla"])
    outs = {mode: jax.jit(step)(x, w, ct) for mode in ("auto",)}
    with config.conv_lowering("xla"):
        outs["xla"] = jax.jit(step)(x, w, ct)
    for a, b in zip(jax.tree.leaves(outs["auto"]), jax.tree.leaves(outs["xla"])):
        _assert_close(a, b, np.float32)


#: Few-channel 3-D convolutions whose value inside a derivative is the merged plane:
#: (input, kernel, filters, strides, padding, dilation). A 3-D network's first layer
#: (M2's), 2–6 channels, "valid", strided on D and W, dilated, kernels 2–5 wide.
_MERGED_DERIVATIVE_CASES = [
    ((2, 16, 16, 16, 4), (3, 3, 3), 16, 1, "same", 1),
    ((2, 16, 16, 16, 2), (3, 3, 3), 64, 1, "same", (2, 2, 1)),
    ((1, 16, 32, 32, 3), (3, 3, 5), 16, 1, "same", (2, 2, 1)),
    ((2, 16, 16, 16, 3), (3, 3, 3), 64, (2, 1, 2), "valid", 1),
    ((2, 8, 8, 8, 6), (2, 2, 2), 64, 1, "same", (2, 2, 1)),
    ((1, 12, 10, 9, 2), (3, 3, 5), 64, 1, "same", 1),
    ((2, 16, 16, 16, 6), (1, 3, 3), 64, (2, 1, 2), "valid", (2, 2, 1)),
]


def _merged_derivative_spec(shape, kernel, filters, strides, padding, dilation):
    """The ``ConvSpec`` ``ops.conv`` hands the rule for one of those calls (channels_last,
    with a bias)."""
    specs, choose = [], lowering.dispatch.choose

    def spy(op, backend, spec):
        specs.append(spec)
        return choose(op, backend, spec)
    lowering.dispatch.choose = spy
    try:
        jax.eval_shape(lambda x, w, b: ops.conv(x, w, strides, padding,
                                                dilation_rate=dilation, bias=b),
                       jax.ShapeDtypeStruct(shape, jnp.float32),
                       jax.ShapeDtypeStruct((*kernel, shape[-1], filters), jnp.float32),
                       jax.ShapeDtypeStruct((filters,), jnp.float32))
    finally:
        lowering.dispatch.choose = choose
    return specs[0]


@pytest.mark.parametrize("shape,kernel,filters,strides,padding,dilation",
                         _MERGED_DERIVATIVE_CASES)
def test_width_fold_derivative_value_merged_plane(two_cores, shape, kernel, filters,
                                                  strides, padding, dilation):
    """Where its gathered taps fit under the output, ``width_fold``'s value inside a
    derivative is the merged plane (two 2-D library convolutions) instead of XLA's 3-D
    loop: the forward+backward program has no 3-D convolution left, one ``while`` loop
    (the gradients'), the plain path's numbers, and its temporaries and constants
    (``held_bytes``) no more than the plain path's."""
    rng = np.random.default_rng(sum(shape) + filters)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    w = jnp.asarray(0.2 * rng.standard_normal((*kernel, shape[-1], filters)), jnp.float32)
    b = jnp.asarray(rng.standard_normal(filters), jnp.float32)
    f = lambda x, w, b: ops.conv(x, w, strides, padding, dilation_rate=dilation, bias=b)  # noqa: E731
    with lowering.recorded_choices() as calls:
        jax.eval_shape(f, x, w, b)
    assert calls == [("conv", "width_fold")]
    spec = _merged_derivative_spec(shape, kernel, filters, strides, padding, dilation)
    assert lowering.width_fold._merged_plane_fits(spec)
    ct = jnp.asarray(rng.standard_normal(jax.eval_shape(f, x, w, b).shape), jnp.float32)

    def step(x, w, b, ct):
        y, pullback = jax.vjp(f, x, w, b)
        return y, pullback(ct)
    compiled = {}
    for mode in ("auto", "xla"):
        with config.conv_lowering(mode):
            compiled[mode] = jax.jit(step).lower(x, w, b, ct).compile()
    text = compiled["auto"].as_text()
    assert "dim_labels=b012f_012io->b012f" not in text  # no 3-D convolution
    assert text.count(" while(") == 1
    assert held_bytes(compiled["auto"]) <= held_bytes(compiled["xla"])
    for a, p in zip(jax.tree.leaves(compiled["auto"](x, w, b, ct)),
                    jax.tree.leaves(compiled["xla"](x, w, b, ct))):
        _assert_close(a, p)


@pytest.mark.parametrize("shape,filters,kernel,fits", [
    ((2, 16, 16, 16, 4), 16, (3, 3, 3), True),     # M2's first layer
    ((2, 16, 16, 16, 16), 32, (3, 3, 3), False),   # W7: 48 gathered channels, 32 filters
    ((2, 16, 16, 16, 8), 16, (3, 3, 3), False),    # 24 gathered channels, 16 filters
    ((2, 16, 16, 16, 1), 64, (3, 3, 3), False),    # one channel (below)
    ((2, 8, 8, 8, 2), 8, (2, 2, 2), False),        # the loop's state above the kernel
])
def test_width_fold_merged_plane_fits(shape, filters, kernel, fits):
    """``_merged_plane_fits``'s edges. One input channel is left to XLA's value: there the
    merged plane measured 1–2 KB over the plain path's held bytes on 4 of 5 shapes (the
    plain path's own, with a kernel of one channel, fall below input + output + kernel)."""
    spec = _merged_derivative_spec(shape, kernel, filters, 1, "same", 1)
    assert lowering.width_fold._merged_plane_fits(spec) is fits


@pytest.mark.parametrize("strides", [1, 2])
def test_width_fold_gradient_programs(strides):
    """The gradients in one loop over the taps — one while loop for both gradients, one
    for the kernel's alone, none for the input's alone: XLA's convolution, the plain
    path's program (the benchmark's "same XLA program" fingerprint: HLO without names
    and metadata)."""
    fingerprint = _fingerprint()
    rng = np.random.default_rng(6)
    x = _x(rng, 3, 6, "channels_last", spatial=(5, 6, 7))
    w = jnp.asarray(rng.standard_normal((3, 3, 3, 6, 17)), jnp.float32)
    forward = lambda x, w: ops.conv(x, w, strides, "same")  # noqa: E731
    grads = [jax.grad(lambda x, w: jnp.sum(forward(x, w) * 1.5), argnums=argnums)
             for argnums in ((0, 1), (1,), (0,))]

    def compiled(f):
        return jax.jit(f).lower(x, w).compile()
    with config.conv_lowering("xla"):
        plain = [compiled(f) for f in (forward, *grads)]
    with lowering.recorded_choices() as calls:
        auto = [compiled(f) for f in (forward, *grads)]
    assert calls == [("conv", "width_fold")] * 4
    assert fingerprint(auto[0]) != fingerprint(plain[0])   # the fold runs forward
    assert [c.as_text().count(" while(") for c in auto[1:]] == [1, 1, 0]
    assert fingerprint(auto[3]) == fingerprint(plain[3])


@pytest.mark.parametrize("shape,filters,fmt,argnums,kernel", [
    ((2, 8, 8, 8, 16), 32, "channels_last", (0, 1), (3, 3, 3)),     # W7's channels
    ((2, 8, 8, 8, 16), 32, "channels_last", (1, 0), (3, 3, 3)),
    ((2, 8, 8, 8, 16), 32, "channels_last", (0,), (3, 3, 3)),       # the kernel's alone
    ((2, 8, 8, 8, 32), 8, "channels_last", (0, 1), (3, 3, 3)),      # fewer filters
    ((2, 16, 8, 8, 8), 16, "channels_first", (0, 1), (3, 3, 3)),
    ((2, 8, 8, 8, 32), 32, "channels_last", (0, 1), (1, 1, 3)),     # one tap wide on D, H
])
def test_tap_loop_temporaries_at_most_lax(shape, filters, fmt, argnums, kernel):
    """The memory bar: forward+backward temporaries no higher than the plain path's."""
    channels = shape[-1] if fmt == "channels_last" else shape[1]
    x, w = jnp.ones(shape), jnp.ones((*kernel, channels, filters))
    ct = jnp.ones(jax.eval_shape(lambda x, w: ops.conv(x, w, 1, "same", fmt), x, w).shape)
    grad = jax.grad(lambda w, x, ct: jnp.sum(ops.conv(x, w, 1, "same", fmt) * ct),
                    argnums=argnums)

    def temps():
        compiled = jax.jit(grad).lower(w, x, ct).compile()
        assert compiled.as_text().count(" while(") == (0 if plain else 1)
        return held_bytes(compiled)
    with config.conv_lowering("xla"):
        plain = True
        expected = temps()
    plain = False
    assert temps() <= expected


def test_tap_loop_accumulators_wait_for_their_cotangent(two_cores):
    """In a stack of layers the loop's input-gradient accumulator is not allocated before
    the cotangent it sums exists: a broadcast of zeros has no operands, and XLA:CPU's
    scheduler put it at the program's start, live through the forward pass and the later
    layers' backward (the benchmarks' M2, a 3-D encoder-decoder: 1.13 × lax's
    temporaries). M2's layers but the last: 2.62 MB against lax's 2.49 before, 1.97 now.
    (On an input 8 × smaller the transposed layer's sub-pixel kernel, 128 KB, would
    outweigh what the loops save.)"""
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((2, 16, 16, 16, 4)), jnp.float32)
    ws = [jnp.asarray(0.1 * rng.standard_normal(s), jnp.float32)
          for s in ((3, 3, 3, 4, 16), (3, 3, 3, 16, 32), (3, 3, 3, 16, 32))]

    def f(x, w1, w2, w3):
        h = jax.nn.relu(ops.conv(x, w1, 1, "same"))
        h = jax.nn.relu(ops.conv(h, w2, 2, "same"))
        return ops.conv_transpose(h, w3, 2, "same")
    with config.conv_lowering("xla"):
        expected = _training_step_temporaries(f, x, *ws)
    with lowering.recorded_choices() as calls:
        got = _training_step_temporaries(f, x, *ws)
    assert ("conv", "tap_loop") in calls or ("conv", "width_fold") in calls, calls
    assert got <= expected, (got, expected)


@pytest.mark.parametrize("channels,filters", [(6, 17), (2, 40)])
def test_tap_loop_pair_derivatives(two_cores, channels, filters):
    """Derivatives through both operands at once, where the tangent is one ``pair``
    equation whose transpose is the joint loop
    (``lowering.primitives._def_joint_tangent``): ``jvp``, ``grad`` of ``grad`` and
    Hessian-vector products w.r.t. input, kernel and bias, ``vmap`` of the
    forward+backward, and ``remat``. 2 → 40 channels: the value inside them the merged
    plane's."""
    rng = np.random.default_rng(21)
    x = _x(rng, 3, channels, "channels_last", spatial=(3, 4, 5))
    w = jnp.asarray(rng.standard_normal((3, 2, 3, channels, filters)), jnp.float32)
    b = jnp.asarray(rng.standard_normal(filters), jnp.float32)
    spec = _merged_derivative_spec(x.shape, w.shape[:3], filters, 1, "same", 1)
    assert lowering.width_fold._merged_plane_fits(spec) is (channels == 2)
    args = (x, w, b)
    tangents = tuple(jnp.asarray(rng.standard_normal(a.shape), a.dtype) for a in args)
    f = lambda x, w, b: ops.conv(x, w, 1, "same", bias=b)  # noqa: E731

    def loss(*a):
        return jnp.sum(jnp.sin(f(*a)))
    everything = (0, 1, 2)

    def transforms(*a):
        grad = jax.grad(loss, argnums=everything)
        return {
            "jvp": jax.jvp(f, a, tangents),
            "grad_of_grad": jax.grad(lambda *c: sum(jnp.sum(g ** 2) for g in grad(*c)),
                                     argnums=everything)(*a),
            "hvp": jax.jvp(grad, a, tangents)[1],
            "vmap_of_grad": jax.vmap(grad)(*(jnp.stack([v, -v]) for v in a)),
            "remat_grad": jax.grad(jax.checkpoint(loss), argnums=everything)(*a),
        }
    _check_transformed(transforms, args, ("conv", "width_fold"))


@pytest.mark.parametrize("fmt,padding,strides", [
    ("channels_last", "same", 1), ("channels_first", "valid", 2),
    ("channels_last", "explicit", (2, 1, 1)), ("channels_first", "same", (1, 1, 2))])
def test_tap_loop_lowering(monkeypatch, fmt, padding, strides):
    """``"tap_loop"``: 3-D convolutions ``width_fold`` leaves (a folded input above
    :data:`MAX_WIDTH_FOLD_BYTES`, here steered to zero)."""
    monkeypatch.setattr(lowering.rule, "MAX_WIDTH_FOLD_BYTES", 0)
    rng = np.random.default_rng(hash((fmt, padding, strides)) % 2**32)
    x = _x(rng, 3, 3, fmt, spatial=(5, 6, 4))
    w = jnp.asarray(rng.standard_normal((3, 2, 3, 3, 5)), jnp.float32)
    pad = ((1, 0), (0, 2), (2, 1)) if padding == "explicit" else padding
    _check(lambda x, w: ops.conv(x, w, strides, pad, fmt), (x, w), "tap_loop")


def _spec_of(f, *args):
    """The :class:`~kconv.ops.lowering.ConvSpec` ``f``'s one kconv call is chosen on."""
    specs, real = [], lowering.dispatch.choose
    lowering.dispatch.choose = lambda op, backend, spec: (specs.append(spec)
                                                          or real(op, backend, spec))
    try:
        jax.eval_shape(lambda *a: f(*a), *args)
    finally:
        lowering.dispatch.choose = real
    return specs[0]


def _tap_loop_cases():
    # (strides, dilation, kernel).
    variants = [((1, 1, 1), (1, 1, 1), (2, 3, 3)), ((2, 1, 2), (1, 1, 1), (3, 2, 3)),
                ((1, 1, 1), (2, 1, 2), (2, 2, 3)), ((1, 2, 1), (1, 1, 1), (3, 3, 1)),
                ((1, 1, 2), (1, 2, 1), (2, 3, 2))]
    combos = itertools.product(FORMATS, ("valid", "same", "explicit"),
                               (np.float32, jnp.bfloat16))
    for i, (fmt, padding, dtype) in enumerate(combos):
        yield (fmt, padding, dtype, *_rotate(variants, i))


@pytest.mark.parametrize("fmt,padding,dtype,strides,dilation,kernel", list(_tap_loop_cases()))
def test_tap_loop(fmt, padding, dtype, strides, dilation, kernel):
    """``_tap_loop``'s gradients (each alone and both together) against lax's, across
    data formats, paddings, strides, dilations and a 16-bit dtype."""
    rng = np.random.default_rng(hash((fmt, padding, strides, dilation, kernel)) % 2**32)
    x = _x(rng, 3, 6, fmt, spatial=(5, 6, 7), dtype=dtype)
    w = jnp.asarray(rng.standard_normal((*kernel, 6, 5)), dtype)
    pads = ((1, 0), (0, 2), (2, 1)) if padding == "explicit" else padding
    f = lambda x, w: ops.conv(x, w, strides, pads, fmt, dilation)  # noqa: E731
    ct = jnp.asarray(rng.standard_normal(jax.eval_shape(f, x, w).shape), dtype)
    with config.conv_lowering("xla"):
        expected = jax.jit(lambda x, w: jax.vjp(f, x, w)[1](ct))(x, w)
    spec = _spec_of(f, x, w)
    loop = lowering.tap_loop._tap_loop
    both = jax.jit(lambda ct, x, w: loop(ct, x, w, spec=spec, precision=None))(
        ct, x, w)
    kernel_only = jax.jit(lambda ct, x, w: lowering.tap_loop._tap_loop(
        ct, x, w, spec=spec, precision=None, input_gradient=False)[1])(ct, x, w)
    for actual, wanted in ((both[0], expected[0]), (both[1], expected[1]),
                           (kernel_only, expected[1])):
        assert actual.dtype == wanted.dtype
        _assert_close(actual, wanted, dtype, factor=2.0)


def _merged_plane_cases():
    # strides (D, W; H's is 1) × dilation × padding × kernel, lengths not multiples of
    # the strides; kernels of one tap along W (no gather to do) and along H.
    paddings = ("valid", "same", ((1, 0), (0, 2), (2, 1)))
    geometry = (((1, 1, 1), (1, 1, 1)), ((2, 1, 2), (1, 1, 1)), ((1, 1, 3), (2, 2, 1)),
                ((3, 1, 1), (1, 2, 2)))
    kernels = ((2, 3, 2), (1, 1, 3), (3, 2, 1))
    for i, ((strides, dilation), padding) in enumerate(itertools.product(geometry, paddings)):
        yield strides, dilation, padding, _rotate(kernels, i)


@pytest.mark.parametrize("strides,dilation,padding,kernel", list(_merged_plane_cases()))
def test_merged_plane_conv(strides, dilation, padding, kernel):
    """``width_fold._merged_plane_conv`` (the 3-D sub-pixel phase convolution's form)
    against lax's 3-D convolution: outputs and both gradients."""
    rng = np.random.default_rng(hash((strides, dilation, str(padding), kernel)) % 2**32)
    x = _x(rng, 3, 5, "channels_last", spatial=(7, 6, 8))
    w = jnp.asarray(rng.standard_normal((*kernel, 5, 4)), jnp.float32)
    f = lambda x, w: ops.conv(x, w, strides, padding, "channels_last", dilation)  # noqa: E731
    spec = _spec_of(f, x, w)
    assert lowering.width_fold._merged_plane_applies(spec)
    with config.conv_lowering("xla"):
        expected = _outputs_and_grads(f, (x, w))
    merged = _outputs_and_grads(
        lambda x, w: lowering.width_fold._merged_plane_conv(x, w, spec=spec, precision=None),
        (x, w))
    for a, e in zip(merged, expected):
        _assert_close(a, e)


@pytest.mark.parametrize("fmt,dtype,merged", [
    ("channels_last", np.float32, True), ("channels_first", np.float32, False),
    ("channels_last", np.float16, False)])
def test_subpixel_phase_convolution_form(monkeypatch, fmt, dtype, merged):
    """The 3-D sub-pixel form's phase convolution: ``_merged_plane_conv`` in float32
    channels_last, else XLA's (never ``width_fold``: compile time), though a plain 3-D
    convolution of its shape folds."""
    x = _x(np.random.default_rng(2), 3, 32, fmt, spatial=(8, 8, 8), dtype=dtype)
    w = jnp.ones((3, 3, 3, 16, 32), dtype)
    folds, planes = [], []
    fold = lowering.dispatch._CONV_LOWERINGS["width_fold"]
    monkeypatch.setitem(lowering.dispatch._CONV_LOWERINGS, "width_fold",
                        lambda *a, **kw: folds.append(kw["spec"]) or fold(*a, **kw))
    plane = lowering.transposed._merged_plane_conv
    monkeypatch.setattr(lowering.transposed, "_merged_plane_conv",
                        lambda *a, **kw: planes.append(kw["spec"]) or plane(*a, **kw))
    with lowering.recorded_choices() as calls:
        jax.jit(lambda x, w: ops.conv_transpose(x, w, 2, "same", data_format=fmt)).lower(x, w)
        assert calls == [("conv_transpose", "subpixel_transpose")] and folds == []
        assert len(planes) == int(merged)
        jax.jit(lambda x, w: ops.conv(x, w, 1, "same", fmt)).lower(
            x, jnp.ones((2, 2, 2, 32, 128), dtype))
    assert calls[1:] == [("conv", "width_fold")] and len(folds) == 1


def test_separable_takes_both_lowerings():
    rng = np.random.default_rng(3)
    x = _x(rng, 2, 4, "channels_last")
    dw = jnp.asarray(rng.standard_normal((3, 3, 4, 2)), jnp.float32)
    pw = jnp.asarray(rng.standard_normal((1, 1, 8, 5)), jnp.float32)
    f = lambda x, dw, pw: ops.separable_conv(x, dw, pw, 1, "same")  # noqa: E731
    plain, auto = _lowered(f, (x, dw, pw), "pointwise_dot")
    for a, p in zip(auto, plain):
        _assert_close(a, p)
    with lowering.recorded_choices() as calls:
        jax.eval_shape(lambda *a: f(*a), x, dw, pw)  # a new function: traced afresh
    assert calls == [("conv", "depthwise_taps"), ("conv", "pointwise_dot")]


# --- the GPU's lowerings, checked on this CPU ------------------------------------------

def _force(monkeypatch, op, name):
    """Every ``op`` call takes lowering ``name`` whatever the rule says (the CPU branch of
    the dispatch): the GPU's lowerings checked on this CPU against the plain path."""
    real = lowering.dispatch.choose
    monkeypatch.setattr(lowering.dispatch, "choose", lambda o, backend, spec: name if o == op
                        else real(o, backend, spec))


def _space_to_batch_cases():
    # rank × data_format × padding × dilation (every axis, or some, with a stride on the
    # others) × groups; lengths not multiples of the dilation (SPATIAL) and ones that are.
    paddings = {1: ("valid", "same", "causal", ((4, 1),)), 2: ("valid", "same", ((2, 0), (0, 1))),
                3: ("valid", "same")}
    for rank, fmt in itertools.product((1, 2, 3), FORMATS):
        for i, padding in enumerate(paddings[rank]):
            for dilation, strides in (((2,) * rank, 1), ((3,) * rank, 1),
                                      ((2, 1, 3)[:rank], (1, 2, 1)[:rank])):
                if rank == 1 and strides != 1:
                    continue
                yield rank, fmt, padding, dilation, strides, 1 + (i + rank) % 2


@pytest.mark.parametrize("rank,fmt,padding,dilation,strides,groups",
                         list(_space_to_batch_cases()))
def test_space_to_batch(monkeypatch, rank, fmt, padding, dilation, strides, groups):
    _force(monkeypatch, "conv", "space_to_batch")
    rng = np.random.default_rng(rank * 100 + sum(dilation) * 10 + groups)
    spatial = SPATIAL[rank] if groups == 1 else (12, 8, 6)[:rank]
    x = _x(rng, rank, 2 * groups, fmt, spatial=spatial)
    w = jnp.asarray(rng.standard_normal((*KERNEL[rank], 2, 3 * groups)), jnp.float32)
    b = jnp.asarray(rng.standard_normal(3 * groups), jnp.float32)
    _check(lambda x, w, b: ops.conv(x, w, strides, padding, fmt, dilation, bias=b),
           (x, w, b), "space_to_batch")


def test_space_to_batch_depthwise_and_long_kernels(monkeypatch):
    _force(monkeypatch, "conv", "space_to_batch")
    rng = np.random.default_rng(21)
    x = _x(rng, 1, 4, "channels_last", spatial=(30,))
    # Depthwise (groups == channels), a kernel wider than the phases, dilation 8.
    _check(lambda x, w: ops.depthwise_conv(x, w, 1, "causal", "channels_last", 4),
           (x, jnp.asarray(rng.standard_normal((3, 4, 2)), jnp.float32)), "space_to_batch")
    _check(lambda x, w: ops.conv(x, w, 1, "same", "channels_last", 8),
           (x, jnp.asarray(rng.standard_normal((5, 4, 3)), jnp.float32)), "space_to_batch")


# --- subpixel_transpose ----------------------------------------------------------------

def _transpose_cases():
    # rank × padding × strides × output_padding (None, 0, stride - 1) × data_format.
    for rank, padding, strides, fmt in itertools.product((1, 2, 3), ("valid", "same"),
                                                         (2, 3), FORMATS):
        if rank == 3 and strides == 3:
            continue  # keep the 3-D share small; ranks 1 and 2 cover stride 3
        for output_padding in sorted({None, 0, strides - 1}, key=str):
            yield rank, padding, strides, output_padding, fmt
    yield 2, "same", (2, 1), None, "channels_last"  # a stride of 1 on one axis
    yield 2, "valid", (1, 3), (0, 1), "channels_first"


@pytest.mark.parametrize("rank,padding,strides,output_padding,fmt", list(_transpose_cases()))
def test_subpixel_transpose(rank, padding, strides, output_padding, fmt):
    rng = np.random.default_rng(rank * 10 + (strides if isinstance(strides, int) else 5))
    x = _x(rng, rank, 3, fmt, spatial=tuple(n // 2 + 1 for n in SPATIAL[rank]))
    w = jnp.asarray(rng.standard_normal((*KERNEL[rank], 4, 3)), jnp.float32)
    _check(lambda x, w: ops.conv_transpose(x, w, strides, padding, output_padding, fmt),
           (x, w), "subpixel_transpose")


def _flipped_forward_cases():
    # rank × data_format × padding (Keras's two; explicit crops of the full output, one
    # past the kernel: the forward's padding negative), dilation and depth multiplier
    # rotating.
    i = 0
    for rank, fmt in itertools.product((1, 2, 3), FORMATS):
        for padding in ("valid", "same", ((3, 0), (1, 1), (0, 2))[:rank]):
            yield rank, fmt, padding, _rotate((1, 2), i), _rotate((1, 2, 2, 1), i)
            i += 1


@pytest.mark.parametrize("rank,fmt,padding,dilation,multiplier", list(_flipped_forward_cases()))
def test_flipped_forward(rank, fmt, padding, dilation, multiplier):
    """A stride-1 transposed convolution with one input channel per group as the forward
    convolution it is (the kernel flipped and regrouped; the forward rule's
    depthwise_taps): outputs and gradients as XLA's grouped transposed convolution."""
    rng = np.random.default_rng(rank * 10 + dilation + multiplier)
    x = _x(rng, rank, 3, fmt, spatial=SPATIAL[rank])
    w = jnp.asarray(rng.standard_normal((*KERNEL[rank], multiplier, 3)), jnp.float32)
    b = jnp.asarray(rng.standard_normal(3 * multiplier), jnp.float32)
    _check(lambda x, w, b: ops.conv_transpose(x, w, 1, padding, None, fmt, dilation,
                                              groups=3, bias=b),
           (x, w, b), "flipped_forward")


@pytest.mark.parametrize("rank,fmt,padding,dilation,multiplier", list(_flipped_forward_cases()))
@pytest.mark.parametrize("form", PAD_FORMS)
def test_flipped_forward_padded_once(monkeypatch, rank, fmt, padding, dilation, multiplier,
                                     form):
    # The forward of a stride-1 depthwise transposed convolution is padded by the kernel's
    # extent less Keras's amounts: negative (a crop) for explicit amounts past it.
    monkeypatch.setattr(lowering.depthwise_taps, "_pads_once", lambda x, spec: form)
    rng = np.random.default_rng(rank * 10 + dilation + multiplier)
    x = _x(rng, rank, 3, fmt)
    kernel = (4,) if rank == 1 else KERNEL[rank]
    w = jnp.asarray(rng.standard_normal((*kernel, multiplier, 3)), jnp.float32)
    _check_padded_once(lambda x, w: ops.conv_transpose(
        jax.nn.relu(x), w, 1, padding, None, fmt, dilation, groups=3), (x, w),
        ("conv_transpose", "flipped_forward"), np.float32, (form,))


def test_flipped_forward_leaves_xla_where_the_forward_rule_does():
    # Stride 1 grouped with several input channels per group and more than 16 groups
    # (the forward rule keeps XLA's grouped convolution), or a kernel past depthwise_taps'
    # 49 taps × multiplier: XLA's transposed convolution, as the forward rule.
    rng = np.random.default_rng(4)
    for channels, kernel, filters, groups in ((36, (3,), 36, 18), (2, (8, 7), 2, 2)):
        x = _x(rng, len(kernel), channels, "channels_last", spatial=(9, 9)[:len(kernel)])
        w = jnp.asarray(rng.standard_normal((*kernel, filters // groups, channels)),
                        jnp.float32)
        with lowering.recorded_choices() as calls:
            jax.eval_shape(lambda x, w: ops.conv_transpose(x, w, 1, "same", groups=groups),
                           x, w)
        assert calls == [("conv_transpose", "xla")]


@pytest.mark.parametrize("rank,padding,strides,output_padding,fmt", [
    c for i, c in enumerate(_transpose_cases()) if i % 2 == 0])
def test_strided_dual(monkeypatch, rank, padding, strides, output_padding, fmt):
    # The GPU's transposed convolution: XLA's forward, the strided convolution's kernel
    # gradient, in every rank (the CPU's 3-D value is the sub-pixel form instead).
    _force(monkeypatch, "conv_transpose", "strided_dual")
    rng = np.random.default_rng(rank * 10 + (strides if isinstance(strides, int) else 5))
    x = _x(rng, rank, 3, fmt, spatial=tuple(n // 2 + 1 for n in SPATIAL[rank]))
    w = jnp.asarray(rng.standard_normal((*KERNEL[rank], 4, 3)), jnp.float32)
    b = jnp.asarray(rng.standard_normal(4), jnp.float32)
    _check(lambda x, w, b: ops.conv_transpose(x, w, strides, padding, output_padding, fmt,
                                              bias=b), (x, w, b), "strided_dual")


@pytest.mark.parametrize("kernel_size,padding", [
    ((1, 1), "same"), ((2, 2), "valid"), ((4, 4), "same"), ((5, 3), "valid")])
def test_subpixel_transpose_kernel_sizes(kernel_size, padding):
    # Kernels smaller than, equal to and larger than the stride: every phase layout.
    rng = np.random.default_rng(sum(kernel_size))
    x = _x(rng, 2, 3, "channels_last", spatial=(5, 4))
    w = jnp.asarray(rng.standard_normal((*kernel_size, 2, 3)), jnp.float32)
    _check(lambda x, w: ops.conv_transpose(x, w, 2, padding), (x, w), "subpixel_transpose")


@pytest.mark.parametrize("kernel_size,strides,padding", [
    ((3,), (2,), ((2, 1),)), ((5,), (3,), ((0, 0),)), ((3, 2), (2, 2), ((2, 1), (1, 1))),
    ((4, 3), (2, 3), ((1, 2), (0, 0))), ((3, 3, 3), (2, 2, 2), ((2, 1),) * 3),
    ((2, 4, 3), (3, 2, 2), ((0, 1), (2, 3), (1, 1)))])
def test_phase_kernel_holds_each_tap_once(kernel_size, strides, padding):
    # The sub-pixel form's (T..., C, phases * F) kernel holds every kernel entry exactly
    # once (no tap lost, none doubled) and zeros elsewhere; where each lands is checked by
    # the transposed convolutions above, against the plain path.
    rank = len(kernel_size)
    spec = lowering.ConvSpec(rank=rank, data_format="channels_last",
                             input_shape=(1, *(6,) * rank, 4), kernel_shape=(*kernel_size, 3, 4),
                             strides=strides, padding=padding, dilation=(1,) * rank)
    kernel = jnp.asarray(np.random.default_rng(rank).standard_normal(spec.kernel_shape),
                         jnp.float32)
    by_pads = np.asarray(lowering.transposed._phase_kernel(kernel, spec,
                                                lowering.transposed._subpixel_plan(spec).offsets))
    assert np.count_nonzero(by_pads) == kernel.size
    np.testing.assert_array_equal(np.sort(by_pads[by_pads != 0]),
                                  np.sort(np.asarray(kernel).ravel()))


def test_subpixel_3d_non_finite_input():
    """An infinite input (README, decisions): every output XLA's convolution leaves finite
    is finite and XLA's here too; the 0/1 products make NaN of the rest."""
    rng = np.random.default_rng(8)
    x = np.array(_x(rng, 3, 3, "channels_last", batch=1, spatial=(4, 4, 4)))
    x[0, 1, 2, 2, 1] = np.inf
    w = jnp.asarray(rng.standard_normal((3, 3, 3, 2, 3)), jnp.float32)
    f = lambda x, w: ops.conv_transpose(x, w, 2, "same")  # noqa: E731
    with config.conv_lowering("xla"):
        plain = np.asarray(jax.jit(f)(x, w))
    with lowering.recorded_choices() as calls:
        auto = np.asarray(jax.jit(f)(x, w))
    assert calls == [("conv_transpose", "subpixel_transpose")]
    finite = np.isfinite(auto)
    assert not np.isfinite(plain).all() and np.array_equal(finite, finite & np.isfinite(plain))
    assert np.isnan(auto[~finite]).all()
    _assert_close(auto[finite], plain[finite])


def _grouped_transpose_cases():
    # Depthwise-transposed (groups == C, the grouped case the rule sends to the sub-pixel
    # form): rank × padding × strides × data_format, output_padding and filters per group
    # rotating.
    i = 0
    for rank, padding, strides, fmt in itertools.product((1, 2, 3), ("valid", "same"),
                                                         (2, 3), FORMATS):
        if rank == 3 and (strides == 3 or fmt == "channels_first"):
            continue  # keep the 3-D share small
        output_padding = _rotate((None, 0, strides - 1), i)
        yield rank, padding, strides, output_padding, _rotate((1, 2), i), fmt
        i += 1
    yield 2, "same", (2, 1), None, 2, "channels_first"  # a stride of 1 on one axis


@pytest.mark.parametrize("rank,padding,strides,output_padding,per_group,fmt",
                         list(_grouped_transpose_cases()))
def test_subpixel_transpose_depthwise(rank, padding, strides, output_padding, per_group,
                                      fmt):
    rng = np.random.default_rng(rank * 10 + per_group)
    x = _x(rng, rank, 3, fmt, spatial=tuple(n // 2 + 1 for n in SPATIAL[rank]))
    w = jnp.asarray(rng.standard_normal((*KERNEL[rank], per_group, 3)), jnp.float32)
    _check(lambda x, w: ops.conv_transpose(x, w, strides, padding, output_padding, fmt,
                                           groups=3), (x, w), "subpixel_transpose")


def _grouped_split_transpose_cases():
    # rank × padding × strides × dilation, data_format, groups and output_padding
    # rotating; each group is then a dense transposed convolution (sub-pixel where
    # strided and undilated).
    i = 0
    for rank in (1, 2, 3):
        for padding, strides, dilation in itertools.product(("valid", "same"), (1, 2, 3),
                                                            (1, 2)):
            if rank == 3 and strides == 3:
                continue  # keep the 3-D share small
            output_padding = _rotate((None, 0, strides - 1), i)
            yield (rank, padding, strides, dilation, output_padding, _rotate((2, 3), i),
                   _rotate(FORMATS, i // 2))
            i += 1


@pytest.mark.parametrize("rank,padding,strides,dilation,output_padding,groups,fmt",
                         list(_grouped_split_transpose_cases()))
def test_grouped_split_transpose(rank, padding, strides, dilation, output_padding, groups,
                                 fmt):
    rng = np.random.default_rng(rank * 100 + strides * 10 + dilation)
    x = _x(rng, rank, 6, fmt, spatial=tuple(n // 2 + 1 for n in SPATIAL[rank]))
    w = jnp.asarray(rng.standard_normal((*KERNEL[rank], 2, 6)), jnp.float32)
    _check(lambda x, w: ops.conv_transpose(x, w, strides, padding, output_padding, fmt,
                                           dilation, groups=groups), (x, w), "grouped_split")


def _optimized_hlo(f, args):
    """``f``'s optimized XLA program with names and metadata taken out (two programs that
    print the same are the same computation)."""
    return _fingerprint()(jax.jit(f).lower(*args).compile())


@pytest.mark.parametrize("argnums", [(0,), (1,), (1, 0)])
@pytest.mark.parametrize("fmt,output_padding", [("channels_last", (1, 0, 1)),
                                                ("channels_first", None)])
def test_subpixel_3d_gradients_alone_and_together(argnums, fmt, output_padding):
    """3-D float32: the kernel's gradient alone from the tap loop, the input's alone
    XLA's strided convolution, both together one loop (``lowering.transposed._subpixel_joint``)."""
    rng = np.random.default_rng(22)
    x = _x(rng, 3, 5, fmt, spatial=(3, 4, 3))
    w = jnp.asarray(rng.standard_normal((3, 2, 3, 4, 5)), jnp.float32)
    f = lambda x, w: ops.conv_transpose(x, w, (2, 1, 2), "same",  # noqa: E731
                                        output_padding=output_padding, data_format=fmt)
    ct = jnp.asarray(rng.standard_normal(jax.eval_shape(f, x, w).shape), jnp.float32)
    grad = jax.grad(lambda x, w: jnp.sum(f(x, w) * ct), argnums=argnums)
    with config.conv_lowering("xla"):
        expected = jax.jit(grad)(x, w)
    with lowering.recorded_choices() as calls:
        compiled = jax.jit(grad).lower(x, w).compile()
    assert calls == [("conv_transpose", "subpixel_transpose")]
    assert compiled.as_text().count(" while(") == (0 if argnums == (0,) else 1)
    for actual, wanted in zip(compiled(x, w), expected):
        _assert_close(actual, wanted)


@pytest.mark.parametrize("channels,plain", [(16, True), (17, False)])
def test_subpixel_3d_kernel_gradient_follows_the_input_channels(channels, plain):
    # In 3-D outside float32 (in float32: lowering.tap_loop._tap_loop) the kernel gradient is XLA's
    # plain one up to 16 input channels, the strided form's above
    # (lowering.transposed._subpixel_rhs): the kernel-gradient program is lax's exactly when the
    # plain form is taken. The values are test_low_precision's.
    rng = np.random.default_rng(channels)
    x = _x(rng, 3, channels, "channels_last", spatial=(3, 4, 3), dtype=jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((3, 3, 3, 5, channels)), jnp.bfloat16)
    ct = jnp.asarray(rng.standard_normal((2, 6, 8, 6, 5)), jnp.bfloat16)

    def kernel_gradient(x, w, ct):
        return jax.grad(lambda w: jnp.sum(ops.conv_transpose(x, w, 2, "same") * ct))(w)

    with config.conv_lowering("xla"):
        xla = _optimized_hlo(kernel_gradient, (x, w, ct))
    with lowering.recorded_choices() as calls:
        auto = _optimized_hlo(kernel_gradient, (x, w, ct))
    assert calls == [("conv_transpose", "subpixel_transpose")]
    assert (auto == xla) is plain


@pytest.mark.parametrize("case", ["pointwise_dot", "pointwise_dot_1d", "pointwise_dot_3d",
                                  "block_diagonal"])
def test_xlas_forward_with_the_lowerings_gradients(case):
    # A strided 1x1 convolution (pointwise_dot), unstrided 1-D and 3-D ones (XLA:CPU makes
    # those its own Eigen matrix product) and a 1-D grouped one with 16 input channels
    # per group (block_diagonal): XLA's forward program, where the rewrite's forward ran
    # no faster, and the rewrite's gradients (not XLA's program).
    rng = np.random.default_rng(3)
    name = case.removesuffix("_1d").removesuffix("_3d")
    fmt = "channels_first" if case == "pointwise_dot_3d" else "channels_last"
    if case == "pointwise_dot":
        x, kernel, strides = _x(rng, 2, 4, "channels_last"), (1, 1, 4, 6), 2
    elif case == "pointwise_dot_1d":
        x, kernel, strides = _x(rng, 1, 4, "channels_last"), (1, 4, 6), 1
    elif case == "pointwise_dot_3d":
        x, kernel, strides = _x(rng, 3, 4, "channels_first"), (1, 1, 1, 4, 6), 1
    else:
        x, kernel, strides = _x(rng, 1, 32, "channels_last"), (3, 16, 6), 1
    w = jnp.asarray(rng.standard_normal(kernel), jnp.float32)
    b = jnp.asarray(rng.standard_normal(6), jnp.float32)

    def forward(x, w, b):
        return ops.conv(x, w, strides, "same", fmt, bias=b)

    ct = jnp.asarray(rng.standard_normal(jax.eval_shape(forward, x, w, b).shape), jnp.float32)

    def gradients(x, w, b):
        return jax.grad(lambda x, w: jnp.sum(forward(x, w, b) * ct), argnums=(0, 1))(x, w)

    programs = {}
    for mode in ("xla", "auto"):
        with config.conv_lowering(mode), lowering.recorded_choices() as calls:
            programs[mode] = [_optimized_hlo(f, (x, w, b)) for f in (forward, gradients)]
        assert {n for _, n in calls} == {"xla" if mode == "xla" else name}
    assert programs["auto"][0] == programs["xla"][0]
    assert programs["auto"][1] != programs["xla"][1]


# 1-D with 16 input channels per group: XLA's grouped forward, the dense gradients
# (lowering.grouped._block_diagonal_dual_p), across padding × strides × dilation × data_format.
@pytest.mark.parametrize("padding,strides,dilation,fmt", list(itertools.product(
    ("valid", "same", "causal"), (1, 2), (1, 2), FORMATS)))
def test_block_diagonal_1d_wide_groups(padding, strides, dilation, fmt):
    rng = np.random.default_rng(strides * 10 + dilation)
    x = _x(rng, 1, 32, fmt)
    w = jnp.asarray(rng.standard_normal((3, 16, 6)), jnp.float32)
    b = jnp.asarray(rng.standard_normal(6), jnp.float32)
    _check(lambda x, w, b: ops.conv(x, w, strides, padding, fmt, dilation, bias=b),
           (x, w, b), "block_diagonal")


@pytest.mark.parametrize("fmt", FORMATS)
def test_subpixel_transpose_grouped_directly(fmt):
    # Several channels per group: the rule splits the groups (measured faster), but the
    # grouped sub-pixel form itself must still compute the same numbers.
    rng = np.random.default_rng(17)
    x = _x(rng, 2, 6, fmt, spatial=(4, 5))
    w = jnp.asarray(rng.standard_normal((3, 2, 2, 6)), jnp.float32)  # groups 3: 2 in, 2 out
    f = lambda x, w: ops.conv_transpose(x, w, 2, "same", data_format=fmt,  # noqa: E731
                                        groups=3)
    with lowering.recorded_choices() as calls:
        jax.eval_shape(f, x, w)
    assert calls == [("conv_transpose", "grouped_split")]
    spec = lowering.ConvSpec(rank=2, data_format=fmt, input_shape=x.shape,
                             kernel_shape=w.shape, strides=(2, 2),
                             padding=((2, 1), (1, 1)), dilation=(1, 1), groups=3)
    with config.conv_lowering("xla"):
        plain = _outputs_and_grads(f, (x, w))
    subpixel = lowering.transposed.subpixel_transpose
    auto = _outputs_and_grads(lambda x, w: subpixel(x, w, spec=spec, precision=None), (x, w))
    for a, p in zip(auto, plain):
        _assert_close(a, p)


# --- bilinear_stencil ------------------------------------------------------------------

@pytest.mark.parametrize("rank,fmt,size", [
    (1, "channels_first", 3), (2, "channels_last", 2), (2, "channels_first", (1, 3)),
    (3, "channels_last", (2, 1, 3))])
def test_bilinear_stencil_matches_resize(rank, fmt, size):
    rng = np.random.default_rng(rank)
    x = _x(rng, rank, 3, fmt)
    _check(lambda x: ops.upsample(x, size, fmt, "bilinear", rank=rank), (x,),
           "bilinear_stencil")


def test_bilinear_stencil_edges_and_length_one():
    # Half-pixel centres: the first and last outputs equal the edge samples' neighbourhood
    # as jax.image.resize computes it; a length-1 axis repeats its one sample.
    x = jnp.array([1.0, 3.0, 7.0]).reshape(1, 3, 1)
    np.testing.assert_allclose(ops.upsample(x, 2, interpolation="bilinear")[0, :, 0],
                               [1.0, 1.5, 2.5, 4.0, 6.0, 7.0], rtol=1e-6)
    _check(lambda x: ops.upsample(x, 4, interpolation="bilinear"),
           (jnp.arange(6.0).reshape(2, 1, 3),), "bilinear_stencil")


# --- dtypes, preferred_element_type, precision, unbatched ---------------------------------

def _one_of_each(rng, dtype, fmt="channels_last"):
    """(name, f, args) for one call of each lowering."""
    x = _x(rng, 2, 4, fmt, dtype=dtype)
    xs = _x(rng, 2, 3, fmt, spatial=(5, 4), dtype=dtype)
    return [
        ("pointwise_dot", lambda x, w: ops.conv(x, w, 1, "valid", fmt),
         (x, jnp.asarray(rng.standard_normal((1, 1, 4, 6)), dtype))),
        # Strided: XLA's value, the matrix product's transposes (_strided_pointwise_p).
        ("pointwise_dot_strided", lambda x, w: ops.conv(x, w, 2, "same", fmt),
         (x, jnp.asarray(rng.standard_normal((1, 1, 4, 6)), dtype))),
        # 3-D: XLA's value and input gradient, the matrix product's kernel gradient.
        ("pointwise_dot_3d", lambda x, w: ops.conv(x, w, 1, "valid", fmt),
         (_x(rng, 3, 4, fmt, dtype=dtype),
          jnp.asarray(rng.standard_normal((1, 1, 1, 4, 6)), dtype))),
        ("depthwise_taps", lambda x, w: ops.depthwise_conv(x, w, 1, "same", fmt),
         (x, jnp.asarray(rng.standard_normal((3, 3, 4, 2)), dtype))),
        ("block_diagonal", lambda x, w: ops.conv(x, w, 1, "same", fmt),
         (x, jnp.asarray(rng.standard_normal((3, 3, 2, 6)), dtype))),   # 2 groups
        # 1-D, 16 channels per group: XLA's value, the dense transposes.
        ("block_diagonal_1d_wide", lambda x, w: ops.conv(x, w, 1, "same", fmt),
         (_x(rng, 1, 32, fmt, dtype=dtype), jnp.asarray(rng.standard_normal((3, 16, 4)),
                                                        dtype))),
        ("eigen_crop", lambda x, w, b: ops.conv(x, w, 1, "same", fmt, bias=b),
         (x, jnp.asarray(rng.standard_normal((3, 3, 4, 20)), dtype),
          jnp.asarray(rng.standard_normal(20), dtype))),
        ("subpixel_transpose", lambda x, w: ops.conv_transpose(x, w, 2, "same",
                                                               data_format=fmt),
         (xs, jnp.asarray(rng.standard_normal((3, 3, 2, 3)), dtype))),
        ("bilinear_stencil", lambda x: ops.upsample(x, 2, fmt, "bilinear", rank=2), (x,)),
        # Stride 1, one input channel per group (4 groups, 2 filters each): the forward
        # convolution it is, through the forward rule (depthwise_taps).
        ("flipped_forward", lambda x, w: ops.conv_transpose(x, w, 1, "same",
                                                            data_format=fmt, groups=4),
         (x, jnp.asarray(rng.standard_normal((3, 3, 2, 4)), dtype))),
        ("width_fold", lambda x, w, b: ops.conv(x, w, 1, "same", fmt, bias=b),
         (_x(rng, 3, 6, fmt, spatial=(3, 4, 5), dtype=dtype),
          jnp.asarray(rng.standard_normal((3, 2, 3, 6, 17)), dtype),
          jnp.asarray(rng.standard_normal(17), dtype))),
        # XLA's value, the tap loop's gradients (where the rule is steered: _steer).
        ("tap_loop", lambda x, w: ops.conv(x, w, (1, 2, 1), "same", fmt),
         (_x(rng, 3, 4, fmt, spatial=(3, 4, 5), dtype=dtype),
          jnp.asarray(rng.standard_normal((3, 2, 3, 4, 8)), dtype))),
        # The GPU's (forced on this CPU: _GPU_LOWERINGS).
        ("space_to_batch", lambda x, w, b: ops.conv(x, w, 1, "same", fmt, (2, 1), bias=b),
         (x, jnp.asarray(rng.standard_normal((3, 3, 4, 5)), dtype),
          jnp.asarray(rng.standard_normal(5), dtype))),
        ("strided_dual", lambda x, w: ops.conv_transpose(x, w, 2, "same", data_format=fmt),
         (xs, jnp.asarray(rng.standard_normal((3, 3, 2, 3)), dtype))),
        # 3-D: the sub-pixel form is the value (and both tangents) too.
        ("subpixel_transpose_3d", lambda x, w: ops.conv_transpose(x, w, 2, "same",
                                                                  data_format=fmt),
         (_x(rng, 3, 3, fmt, spatial=(3, 4, 2), dtype=dtype),
          jnp.asarray(rng.standard_normal((3, 2, 3, 2, 3)), dtype))),
        # 3-D with more than 16 input channels: in 16-bit dtypes the strided form's kernel
        # gradient (in float32 3-D takes the tap loop whatever the channels).
        ("subpixel_transpose_3d_wide", lambda x, w: ops.conv_transpose(x, w, 2, "same",
                                                                       data_format=fmt),
         (_x(rng, 3, 17, fmt, spatial=(2, 3, 2), dtype=dtype),
          jnp.asarray(rng.standard_normal((2, 2, 3, 2, 17)), dtype))),
    ]


#: The GPU's lowerings and their op: forced on this CPU (:func:`_force`) to be checked.
_GPU_LOWERINGS = {"space_to_batch": "conv", "strided_dual": "conv_transpose"}


def _steer(monkeypatch, name):
    """The rule steered to the lowering an example tests where its shape alone would not
    choose it: a GPU lowering forced on this CPU; ``tap_loop`` with ``width_fold``'s
    folded-input bound at zero (the loop's own region is folded inputs above 256 MiB)."""
    if name in _GPU_LOWERINGS:
        _force(monkeypatch, _GPU_LOWERINGS[name], name)
    if name == "tap_loop":
        monkeypatch.setattr(lowering.rule, "MAX_WIDTH_FOLD_BYTES", 0)


def _lowering_of(example):
    """The lowering one of :func:`_one_of_each`'s examples takes (its name less the
    variant's suffix)."""
    return example.split("_3d")[0].split("_1d")[0].removesuffix("_strided")


@pytest.mark.parametrize("name", ["pointwise_dot", "pointwise_dot_strided", "pointwise_dot_3d",
                                  "depthwise_taps", "block_diagonal", "block_diagonal_1d_wide",
                                  "subpixel_transpose", "subpixel_transpose_3d",
                                  "subpixel_transpose_3d_wide",
                                  "bilinear_stencil", "flipped_forward", "eigen_crop",
                                  "width_fold", *_GPU_LOWERINGS])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16])
def test_low_precision(monkeypatch, two_cores, dtype, name):
    _steer(monkeypatch, name)
    rng = np.random.default_rng(11)
    f, args = {n: (f, a) for n, f, a in _one_of_each(rng, dtype)}[name]
    # The plain path also rounds each of its own intermediate results (a 16-bit resize
    # rounds per axis), so the two paths may differ by twice the dtype's tolerance.
    _check(f, args, _lowering_of(name), dtype, factor=2.0)


@pytest.mark.parametrize("name", ["tap_loop", "subpixel_transpose_3d"])
def test_float16_tap_loop(monkeypatch, name):
    """The tap loop's float16 gradients (bfloat16 keeps XLA's: its loop compiles slowly):
    the loop is in the program, and outputs and gradients match the plain path's."""
    _steer(monkeypatch, name)
    rng = np.random.default_rng(13)
    f, args = {n: (f, a) for n, f, a in _one_of_each(rng, np.float16)}[name]
    with config.conv_lowering("auto"):
        text = jax.jit(lambda *a: _outputs_and_grads(f, a)).lower(*args).compile().as_text()
    assert " while(" in text
    _check(f, args, _lowering_of(name), np.float16, factor=2.0)


#: Every example of :func:`_one_of_each`, by name (so a new one is covered by the tests
#: below without being listed again).
_EXAMPLES = [name for name, _, _ in _one_of_each(np.random.default_rng(0), np.float32)]


@pytest.mark.parametrize("name", _EXAMPLES)
def test_forward_mode_and_partial_second_order(monkeypatch, two_cores, name):
    """Every lowering under the transformations that batch or half-differentiate its
    tangent equations: ``jacfwd`` (``vmap`` of ``jvp``) in each argument and in all at
    once, Hessian-vector products in the input alone and in the weights alone, and the
    weights' gradient of the input's gradient (one operand of a bilinear tangent known,
    the other not), each against the plain path's."""
    _steer(monkeypatch, name)
    rng = np.random.default_rng(14)
    f, args = {n: (f, a) for n, f, a in _one_of_each(rng, np.float32)}[name]
    tangents = tuple(jnp.asarray(rng.standard_normal(a.shape), a.dtype) for a in args)
    every = tuple(range(len(args)))

    def head(*a):  # a few outputs, so that the Jacobians stay small
        return jnp.ravel(jnp.sin(f(*a)))[:3]

    def loss(*a):
        return jnp.sum(jnp.sin(f(*a)))

    def transforms(*a):
        out = {"jacfwd_all": jax.jacfwd(head, argnums=every)(*a)}
        for i in every:
            grad_i = jax.grad(loss, argnums=i)
            out[f"jacfwd_{i}"] = jax.jacfwd(head, argnums=i)(*a)
            out[f"hvp_{i}"] = jax.jvp(
                lambda v: grad_i(*a[:i], v, *a[i + 1:]), (a[i],), (tangents[i],))[1]
            for j in every:
                if j != i:  # the j-th argument's gradient of |∂loss/∂a_i|²
                    out[f"grad_{j}_of_grad_{i}"] = jax.grad(
                        lambda v: jnp.sum(grad_i(*a[:j], v, *a[j + 1:]) ** 2))(a[j])
        return out
    with config.conv_lowering("xla"):
        plain = jax.jit(transforms)(*args)
    with lowering.recorded_choices() as calls:
        auto = jax.jit(transforms)(*args)
    assert _lowering_of(name) in {taken for _, taken in calls}, calls
    jax.tree.map(lambda a, p: _assert_close(a, p, factor=3.0), auto, plain)


@pytest.mark.parametrize("name", _EXAMPLES)
def test_empty_arrays_take_xlas_path(monkeypatch, two_cores, name):
    """A batch of 0 (the last, empty batch of a filtered dataset): nothing to compute, so
    every call takes XLA's convolution, which takes empty arrays as they are (the tap loop
    read an element of its cotangent: the 3-D lowerings raised a slice error) — outputs
    and gradients the plain path's. (An empty spatial output is refused with a clear error
    before this, DESIGN.md, but for a "same" axis of an empty input: Keras's empty output,
    test_keras_parity.)"""
    _steer(monkeypatch, name)
    if name in _GPU_LOWERINGS:  # forced past the rule: the lowering itself on empty input
        expected = _lowering_of(name)
    else:
        expected = "xla"
    rng = np.random.default_rng(16)
    f, args = {n: (f, a) for n, f, a in _one_of_each(rng, np.float32)}[name]
    plain, auto = _lowered(f, (args[0][:0], *args[1:]), expected)
    for a, p in zip(auto, plain):
        assert a.shape == p.shape and a.dtype == p.dtype
        np.testing.assert_array_equal(a, p)


@pytest.mark.parametrize("name", _EXAMPLES)
def test_non_finite_values_leave_the_finite_results_xlas(monkeypatch, two_cores, name):
    """An infinite or NaN entry in the input, an infinite one in the first weight: the
    outputs and gradients both paths leave finite agree (README, decisions: which others
    are non-finite, and how, follows each lowering's arithmetic)."""
    _steer(monkeypatch, name)
    rng = np.random.default_rng(17)
    f, args = {n: (f, a) for n, f, a in _one_of_each(rng, np.float32)}[name]
    for which, value in [(0, np.inf), (0, np.nan)] + ([(1, np.inf)] if len(args) > 1 else []):
        bad = np.array(args[which])
        bad[tuple(s // 2 for s in bad.shape)] = value
        plain, auto = _lowered(f, (*args[:which], jnp.asarray(bad), *args[which + 1:]),
                               _lowering_of(name))
        assert not all(np.isfinite(p).all() for p in plain)  # the value reached the results
        for a, p in zip(auto, plain):
            both = np.isfinite(a) & np.isfinite(p)
            _assert_close(np.asarray(a)[both], np.asarray(p)[both])


@pytest.mark.parametrize("name", ["eigen_crop", "width_fold"])
def test_jvp_rules_with_every_tangent_zero(two_cores, name):
    """The JVP rules of the primitives (their own, and that of the joint tangent ``pair``)
    give a symbolic zero when every tangent is zero — JAX skips a rule then, a direct call
    may not."""
    from jax.interpreters import ad
    rng = np.random.default_rng(15)
    f, args = {n: (f, a) for n, f, a in _one_of_each(rng, np.float32)}[name]
    x, w = args[:2]
    value = jax.make_jaxpr(f)(*args)
    tangent = jax.make_jaxpr(lambda x, w, dx, dw: jax.jvp(
        lambda x, w: f(x, w, *args[2:]), (x, w), (dx, dw)))(x, w, x, w)
    eqns = [e for j in (value, tangent) for e in equations(j.jaxpr)
            if e.primitive.name.startswith("kconv_")]
    assert {e.primitive.name for e in eqns} >= {f"kconv_{name}", *(
        ["kconv_width_fold_pair"] if name == "width_fold" else [])}, eqns
    for eqn in eqns:
        primals = [v.aval for v in eqn.invars]
        values = [jnp.asarray(rng.standard_normal(a.shape), a.dtype) for a in primals]
        out, tangent = ad.primitive_jvps[eqn.primitive](
            values, [ad.Zero(a) for a in primals], **eqn.params)
        assert type(tangent) is ad.Zero, (eqn.primitive, tangent)
        assert tangent.aval.shape == out.shape and tangent.aval.dtype == out.dtype


@pytest.mark.parametrize("name", ["pointwise_dot", "pointwise_dot_strided", "pointwise_dot_3d",
                                  "depthwise_taps", "block_diagonal", "block_diagonal_1d_wide",
                                  "subpixel_transpose", "eigen_crop", "width_fold"])
def test_preferred_element_type_and_precision(two_cores, name):
    rng = np.random.default_rng(12)
    cases = {n: (f, a) for n, f, a in _one_of_each(rng, jnp.bfloat16)}
    _, args = cases[name]
    op = {"pointwise_dot": lambda x, w, **kw: ops.conv(x, w, **kw),
          "pointwise_dot_strided": lambda x, w, **kw: ops.conv(x, w, 2, "same", **kw),
          "pointwise_dot_3d": lambda x, w, **kw: ops.conv(x, w, **kw),
          "depthwise_taps": lambda x, w, **kw: ops.depthwise_conv(x, w, 1, "same", **kw),
          "block_diagonal": lambda x, w, **kw: ops.conv(x, w, 1, "same", **kw),
          "block_diagonal_1d_wide": lambda x, w, **kw: ops.conv(x, w, 1, "same", **kw),
          "subpixel_transpose": lambda x, w, **kw: ops.conv_transpose(x, w, 2, "same",
                                                                      **kw),
          "eigen_crop": lambda x, w, b, **kw: ops.conv(x, w, 1, "same", bias=b, **kw),
          "width_fold": lambda x, w, b, **kw: ops.conv(x, w, 1, "same", bias=b, **kw)}[name]
    f = lambda *a: op(*a, preferred_element_type=jnp.float32,  # noqa: E731
                      precision=jax.lax.Precision.HIGHEST)
    plain, auto = _lowered(f, args, _lowering_of(name))
    assert auto[0].dtype == plain[0].dtype == jnp.float32
    # Both accumulate the same bfloat16 products in float32.
    _assert_close(auto[0], plain[0], np.float32, factor=10.0)


def test_integer_inputs_keep_the_plain_path():
    spec = lowering.ConvSpec(rank=2, data_format="channels_last", input_shape=(1, 8, 8, 3),
                             kernel_shape=(3, 3, 1, 3), strides=(1, 1),
                             padding=((1, 1), (1, 1)), dilation=(1, 1), groups=3,
                             dtype="int32")
    assert lowering.choose("conv", "cpu", spec) == "xla"
    x = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.int32).reshape(2, 4, 4, 3)
    with lowering.recorded_choices() as calls:
        y = ops.upsample(x, 2, interpolation="bilinear")
    assert calls == [("upsample", "xla")] and y.dtype == jnp.int32


@pytest.mark.parametrize("name", ["pointwise_dot", "depthwise_taps", "block_diagonal",
                                  "eigen_crop", "subpixel_transpose", "bilinear_stencil",
                                  "width_fold", "tap_loop", *_GPU_LOWERINGS])
def test_unbatched_and_extra_leading_dims(two_cores, monkeypatch, name):
    _steer(monkeypatch, name)
    rng = np.random.default_rng(13)
    fmt = "channels_first" if name in ("depthwise_taps", "bilinear_stencil") else \
        "channels_last"
    f, (x, *rest) = {n: (f, a) for n, f, a in _one_of_each(rng, np.float32, fmt)}[name]
    batched, unbatched, stacked = jax.jit(lambda x, *r: (
        f(x, *r), f(x[0], *r), f(x.reshape(2, 1, *x.shape[1:]), *r)))(x, *rest)
    _assert_close(unbatched, batched[0])
    _assert_close(stacked, batched.reshape(2, 1, *batched.shape[1:]))
    _check(lambda x, *r: f(x[0], *r), (x, *rest), name)


# --- transformations -----------------------------------------------------------------

@pytest.mark.parametrize("mode", ["auto", "portable"])  # decided at trace time / staged
@pytest.mark.parametrize("name", ["pointwise_dot", "depthwise_taps", "block_diagonal",
                                  "eigen_crop", "subpixel_transpose", "subpixel_transpose_3d",
                                  "subpixel_transpose_3d_wide", "pointwise_dot_strided",
                                  "pointwise_dot_3d", "block_diagonal_1d_wide", "tap_loop",
                                  "bilinear_stencil", "width_fold", *_GPU_LOWERINGS])
def test_transformations(two_cores, monkeypatch, name, mode):
    _steer(monkeypatch, name)
    rng = np.random.default_rng(14)
    f, args = {n: (f, a) for n, f, a in _one_of_each(rng, np.float32)}[name]
    tangents = tuple(jnp.asarray(rng.standard_normal(a.shape), a.dtype) for a in args)
    stacked = tuple(jnp.stack([a, 2 * a]) for a in args)

    def loss(*a):
        return jnp.sum(jnp.sin(f(*a)))

    def transforms(*a):
        argnums = tuple(range(len(a)))
        second = jax.grad(lambda *b: jnp.sum(jax.grad(loss, argnums=0)(*b) ** 2),
                          argnums=argnums)(*a)
        shared = (0,) + (None,) * (len(a) - 1)  # a batch of inputs, one set of weights
        return {
            "jvp": jax.jvp(f, a, tangents),
            "vmap": jax.vmap(f)(*stacked),
            "vmap_inputs": jax.vmap(f, in_axes=shared)(stacked[0], *a[1:]),
            "vmap_grad": jax.vmap(jax.grad(loss, argnums=argnums), in_axes=shared)(
                stacked[0], *a[1:]),
            "grad_of_grad": second,
            "hvp": jax.jvp(jax.grad(loss), a, tangents)[1],
            "remat": jax.grad(jax.checkpoint(loss), argnums=argnums)(*a),
        }

    lowered = _lowering_of(name)
    op = ("upsample" if name == "bilinear_stencil" else "conv_transpose"
          if lowered in ("subpixel_transpose", "strided_dual") else "conv")
    _check_transformed(transforms, args, (op, lowered), mode)


def test_remat_policies_and_named_outputs(two_cores):
    # Under jax.checkpoint with a policy the gradients stay XLA's; a name on a layer's
    # output (checkpoint_name) saves it under save_only_these_names whatever lowering made
    # it. JAX's dots_saveable saves dot_general / conv_general_dilated outputs by primitive,
    # so kconv's own primitives (depthwise_taps, the 2-D sub-pixel form) are recomputed
    # under it (README, "Remat policies"); their gradients are unchanged.
    rng = np.random.default_rng(23)
    x = _x(rng, 2, 8, "channels_last", spatial=(8, 8))
    policies = {"dots": jax.checkpoint_policies.dots_saveable,
                "named": jax.checkpoint_policies.save_only_these_names("y")}
    for layer in (kconv.DepthwiseConv2D(3, padding="same"),
                  kconv.Conv2DTranspose(5, 3, strides=2, padding="same"),
                  kconv.Conv2D(20, 3, padding="same")):
        params = layer.init(jax.random.key(0), x.shape)

        def loss(p, x, layer=layer):
            return jnp.sum(jnp.sin(checkpoint_name(layer(p, x), "y")))

        with config.conv_lowering("xla"):
            want = jax.grad(loss, argnums=(0, 1))(params, x)
        with lowering.recorded_choices() as calls:
            for name, policy in policies.items():
                got = jax.grad(jax.checkpoint(loss, policy=policy), argnums=(0, 1))(params, x)
                jax.tree.map(_assert_close, got, want)
        assert any(choice != "xla" for _, choice in calls), (layer, calls)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            print_saved_residuals(jax.checkpoint(loss, policy=policies["named"]), params, x)
        shape = "f32[" + ",".join(map(str, layer.compute_output_shape(x.shape))) + "]"
        assert any(line.startswith(shape) and "'y'" in line
                   for line in out.getvalue().splitlines()), (layer, out.getvalue())


def test_layers_take_the_lowerings(two_cores):
    rng = np.random.default_rng(15)
    x = _x(rng, 2, 4, "channels_last", spatial=(8, 8))
    layers = [kconv.SeparableConv2D(6, 3, padding="same"), kconv.DepthwiseConv2D(3),
              kconv.Conv2DTranspose(5, 3, strides=2, padding="same"),
              kconv.UpSampling2D(2, interpolation="bilinear"),
              kconv.Conv2D(20, 3, padding="same", activation="relu")]
    for layer in layers:
        params = layer.init(jax.random.key(0), x.shape)
        with config.conv_lowering("xla"):
            want = jax.jit(layer)(params, x)
        with lowering.recorded_choices() as calls:
            got = jax.jit(layer)(params, x)
        assert any(name != "xla" for _, name in calls), (layer, calls)
        _assert_close(got, want)
    # Without a bias the crop would be a loop fusion of its own: XLA's convolution.
    dense = kconv.Conv2D(20, 3, padding="same", use_bias=False)
    with lowering.recorded_choices() as calls:
        jax.eval_shape(dense, dense.init(jax.random.key(0), x.shape), x)
    assert calls == [("conv", "xla")]


# --- the rule, the platform switch, the global switch ----------------------------------

def _spec(**kw):
    base = dict(rank=2, data_format="channels_last", input_shape=(16, 32, 32, 64),
                kernel_shape=(3, 3, 64, 64), strides=(1, 1), padding=((1, 1), (1, 1)),
                dilation=(1, 1), groups=1, dtype="float32")
    return lowering.ConvSpec(**{**base, **kw})


def _spec3(**kw):
    """W7's convolution, changed by ``kw``."""
    return _spec(**{**dict(rank=3, input_shape=(2, 16, 16, 16, 16),
                           kernel_shape=(3, 3, 3, 16, 32), strides=(1, 1, 1),
                           padding=((1, 1),) * 3, dilation=(1, 1, 1)), **kw})


@pytest.mark.parametrize("op,spec,cpu", [
    ("conv", _spec(), "xla"),                                        # W1 without its bias
    ("conv", _spec(bias=True), "eigen_crop"),                        # W1, as Conv2D calls it
    ("conv", _spec(bias=True, strides=(2, 2)), "xla"),               # W2
    ("conv", _spec(bias=True, data_format="channels_first",
                   input_shape=(16, 64, 32, 32)), "eigen_crop"),    # W3
    ("conv", _spec(bias=True, dilation=(2, 2), padding=((2, 2), (2, 2))), "eigen_crop"),
    ("conv", _spec(bias=True, input_shape=(16, 32, 32, 128), kernel_shape=(3, 3, 128, 128)),
     "xla"),                                          # YNNPACK uses both cores already
    ("conv", _spec(bias=True, kernel_shape=(3, 3, 64, 255)), "eigen_crop"),
    ("conv", _spec(bias=True, kernel_shape=(3, 3, 64, 256)), "xla"),
    ("conv", _spec(bias=True, input_shape=(16, 32, 32, 16), kernel_shape=(3, 3, 16, 16)),
     "xla"),                                          # XLA:CPU runs it on Eigen already
    ("conv", _spec(bias=True, input_shape=(16, 32, 32, 3), kernel_shape=(3, 3, 3, 17)),
     "eigen_crop"),
    ("conv", _spec(bias=True, dtype="bfloat16", preferred_element_type="float32"),
     "eigen_crop"),                                   # the layers' 16-bit path
    ("conv", _spec(bias=True, dtype="float16"), "eigen_crop"),
    ("conv", _spec(bias=True, dtype="float16", preferred_element_type="bfloat16"), "xla"),
    ("conv", _spec(bias=True, dtype="float64"), "xla"),
    ("conv", _spec(bias=True, kernel_shape=(3, 3, 16, 64), groups=4), "block_diagonal"),
    ("conv", _spec(bias=True, rank=1, input_shape=(8, 2048, 64), kernel_shape=(3, 64, 64),
                   strides=(1,), padding=((1, 1),), dilation=(1,)), "xla"),   # X3
    ("conv", _spec(strides=(2, 2)), "xla"),                          # W2
    ("conv", _spec(data_format="channels_first",
                   input_shape=(16, 64, 32, 32)), "xla"),           # W3
    ("conv", _spec(kernel_shape=(3, 3, 1, 64), groups=64), "depthwise_taps"),   # W4
    ("conv", _spec(kernel_shape=(7, 7, 1, 64), groups=64), "depthwise_taps"),
    ("conv", _spec(kernel_shape=(9, 9, 1, 64), groups=64), "xla"),   # > MAX_DEPTHWISE_TAPS
    ("conv", _spec(kernel_shape=(3, 3, 2, 64), groups=32), "xla"),   # 2 channels per group
    ("conv", _spec(kernel_shape=(3, 3, 1, 32), input_shape=(16, 28, 28, 1)), "xla"),  # C=1
    ("conv", _spec(kernel_shape=(3, 3, 1, 128), groups=64), "depthwise_taps"),  # 9 × 2
    ("conv", _spec(kernel_shape=(5, 5, 1, 128), groups=64), "xla"),  # 25 × 2 > 49
    ("conv", _spec(kernel_shape=(1, 1, 64, 128)), "pointwise_dot"),  # W4
    ("conv", _spec(kernel_shape=(1, 1, 32, 128), groups=2), "block_diagonal"),
    ("conv", _spec(kernel_shape=(3, 3, 16, 64), groups=4), "block_diagonal"),   # X6
    ("conv", _spec(input_shape=(8, 32, 32, 128), kernel_shape=(3, 3, 8, 128), groups=16),
     "block_diagonal"),                                              # 147 k dense weights
    ("conv", _spec(input_shape=(4, 16, 16, 512), kernel_shape=(3, 3, 256, 512), groups=2),
     "grouped_split"),                                   # > MAX_BLOCK_DIAGONAL_WEIGHTS
    ("conv", _spec(rank=1, input_shape=(8, 2048, 64), kernel_shape=(3, 64, 64),
                   strides=(1,), padding=((8, 0),), dilation=(4,)), "xla"),   # W6
    ("conv", _spec3(), "width_fold"),                                 # W7
    ("conv", _spec3(bias=True, data_format="channels_first",
                    input_shape=(2, 16, 16, 16, 16)), "width_fold"),
    ("conv", _spec3(strides=(2, 2, 2), padding=((0, 1),) * 3), "width_fold"),
    ("conv", _spec3(input_shape=(2, 16, 16, 16, 4), kernel_shape=(3, 3, 3, 4, 16)),
     "width_fold"),                       # 3 × 4 → 16: Eigen's 2-D convolution, not XLA's loop
    ("conv", _spec3(input_shape=(2, 16, 16, 16, 1), kernel_shape=(3, 3, 3, 1, 17)),
     "width_fold"),
    ("conv", _spec3(input_shape=(2, 16, 16, 16, 6), kernel_shape=(3, 3, 3, 6, 8)),
     "width_fold"),                                   # 3 × 6 = 18 folded channels
    ("conv", _spec3(dtype="bfloat16"), "width_fold"),
    ("conv", _spec3(dtype="float16", preferred_element_type="float32"), "width_fold"),
    ("conv", _spec3(input_shape=(2, 16, 16, 16, 4), kernel_shape=(3, 3, 3, 4, 16),
                    dtype="float16"), "width_fold"),
    ("conv", _spec3(input_shape=(2, 16, 16, 16, 4), kernel_shape=(3, 3, 3, 4, 16),
                    dtype="bfloat16"), "width_fold"),
    ("conv", _spec3(input_shape=(16, 64, 64, 64, 16), dtype="bfloat16"),
     "xla"),               # 384 MiB folded; the tap loop in bfloat16 compiles 1.5–2.6 × lax's
    ("conv", _spec3(input_shape=(4, 64, 64, 64, 16)), "width_fold"),  # folded: 192 MiB
    ("conv", _spec3(input_shape=(8, 64, 64, 64, 16)), "tap_loop"),  # 384 MiB folded
    ("conv", _spec3(kernel_shape=(3, 3, 3, 4, 32), groups=4), "block_diagonal"),
    ("conv", _spec(kernel_shape=(1, 1, 64, 128), dtype="int8"), "xla"),
    ("conv", _spec(kernel_shape=(1, 1, 64, 128), dtype="bfloat16",
                   preferred_element_type="float32"), "pointwise_dot"),
    ("conv", _spec(kernel_shape=(1, 1, 64, 128), dtype="int8",
                   preferred_element_type="int32"), "xla"),
    ("conv_transpose", _spec(input_shape=(16, 16, 16, 64), kernel_shape=(3, 3, 32, 64),
                             strides=(2, 2), padding=((2, 1), (2, 1))),
     "subpixel_transpose"),                                          # W5
    ("conv_transpose", _spec(input_shape=(16, 16, 16, 64), kernel_shape=(3, 3, 32, 64),
                             padding=((1, 1), (1, 1))), "xla"),      # stride 1
    ("conv_transpose", _spec(input_shape=(16, 16, 16, 64), kernel_shape=(3, 3, 32, 64),
                             strides=(2, 2), dilation=(2, 2), padding=((4, 3), (4, 3))),
     "xla"),                                                         # dilated
    ("conv_transpose", _spec(input_shape=(16, 16, 16, 64), kernel_shape=(3, 3, 8, 64),
                             strides=(2, 2), padding=((2, 1), (2, 1)), groups=4),
     "grouped_split"),                                               # W5, 4 groups
    ("conv_transpose", _spec(input_shape=(16, 16, 16, 64), kernel_shape=(3, 3, 8, 64),
                             padding=((1, 1), (1, 1)), dilation=(2, 2), groups=4),
     "grouped_split"),                                               # stride 1, dilated
    ("conv_transpose", _spec(input_shape=(16, 16, 16, 64), kernel_shape=(3, 3, 1, 64),
                             strides=(2, 2), padding=((2, 1), (2, 1)), groups=32),
     "xla"),                                                         # > MAX_SPLIT_GROUPS
    ("conv_transpose", _spec(input_shape=(16, 16, 16, 64), kernel_shape=(3, 3, 8, 64),
                             strides=(2, 2), padding=((2, 1), (2, 1)), groups=4,
                             dtype="int32"), "xla"),
    ("conv_transpose", _spec(input_shape=(16, 16, 16, 64), kernel_shape=(3, 3, 1, 64),
                             strides=(2, 2), padding=((2, 1), (2, 1)), groups=64),
     "subpixel_transpose"),                                          # depthwise-transposed
    ("conv_transpose", _spec(input_shape=(16, 16, 16, 64), kernel_shape=(5, 5, 4, 64),
                             strides=(2, 2), padding=((3, 2), (3, 2)), groups=64),
     "xla"),                                                         # 9 taps × 4 × 4 > 49
    # Stride 1, one input channel per group: the forward convolution it is, which takes
    # depthwise_taps; past its 49 taps × multiplier, XLA's, as the forward rule.
    ("conv_transpose", _spec(input_shape=(16, 16, 16, 64), kernel_shape=(3, 3, 1, 64),
                             padding=((1, 1), (1, 1)), groups=64), "flipped_forward"),
    ("conv_transpose", _spec(input_shape=(16, 16, 16, 64), kernel_shape=(5, 5, 2, 64),
                             padding=((2, 2), (2, 2)), groups=64), "xla"),   # 25 × 2 > 49
])
def test_choose(two_cores, op, spec, cpu):
    assert lowering.choose(op, "cpu", spec) == cpu
    for backend in ("rocm", "tpu"):  # not measured: XLA's convolution
        assert lowering.choose(op, backend, spec) == "xla"


_W5 = dict(input_shape=(16, 16, 16, 64), kernel_shape=(3, 3, 32, 64), strides=(2, 2),
           padding=((2, 1), (2, 1)))
_W6 = dict(rank=1, input_shape=(8, 2048, 64), kernel_shape=(3, 64, 64), strides=(1,),
           padding=((8, 0),), dilation=(4,))


@pytest.mark.parametrize("op,spec,gpu", [
    ("conv", _spec(bias=True), "xla"),                                # W1
    ("conv", _spec(kernel_shape=(3, 3, 1, 64), groups=64), "xla"),   # W4's depthwise
    ("conv", _spec(**_W6), "space_to_batch"),
    ("conv", _spec(**_W6, bias=True), "space_to_batch"),
    ("conv", _spec(**_W6, bias=True, dtype="bfloat16", preferred_element_type="float32"),
     "xla"),                                              # 1.03x lax's peak memory
    ("conv", _spec(**_W6, dtype="float16"), "xla"),
    ("conv", _spec(**_W6, dtype="float64"), "xla"),
    ("conv", _spec(**{**_W6, "kernel_shape": (3, 1, 64)}, groups=64), "xla"),  # depthwise
    ("conv", _spec(**{**_W6, "dilation": (1,), "padding": ((1, 1),)}), "xla"),  # X3
    ("conv", _spec(**{**_W6, "strides": (2,)}), "xla"),
    ("conv", _spec(**_W6, dtype="int8"), "xla"),
    ("conv", _spec(dilation=(2, 2), padding=((2, 2), (2, 2))), "space_to_batch"),
    ("conv", _spec(dilation=(2, 1), strides=(1, 2), padding=((2, 2), (1, 1))),
     "space_to_batch"),
    ("conv", _spec(dilation=(2, 2), strides=(1, 2), padding=((2, 2), (2, 2))), "xla"),
    ("conv", _spec3(dilation=(2, 2, 2), padding=((2, 2),) * 3), "space_to_batch"),
    ("conv", _spec3(dilation=(1, 2, 1), padding=((1, 1), (2, 2), (1, 1)),
                    kernel_shape=(3, 3, 3, 4, 32), groups=4), "xla"),
    ("conv_transpose", _spec(**_W5), "strided_dual"),
    ("conv_transpose", _spec(**_W5, dtype="float16", preferred_element_type="float32"),
     "strided_dual"),
    ("conv_transpose", _spec3(input_shape=(16, 8, 8, 8, 32), kernel_shape=(3, 3, 3, 16, 32),
                              strides=(2, 2, 2), padding=((2, 1),) * 3), "strided_dual"),
    ("conv_transpose", _spec(**{**_W5, "strides": (1, 2)}), "strided_dual"),
    ("conv_transpose", _spec(**{**_W5, "strides": (1, 1)}), "xla"),
    ("conv_transpose", _spec(**_W5, dilation=(2, 2)), "xla"),
    ("conv_transpose", _spec(**{**_W5, "kernel_shape": (3, 3, 8, 64)}, groups=4), "xla"),
    ("conv_transpose", _spec(**_W5, dtype="int32"), "xla"),
])
def test_choose_gpu(op, spec, gpu):
    for backend in ("gpu", "cuda"):
        assert lowering.choose(op, backend, spec) == gpu


def test_choose_upsample_and_errors():
    spec = lowering.UpsampleSpec("bilinear", (16, 32, 32, 64), (1, 2), (2, 2), "float32")
    assert lowering.choose("upsample", "cpu", spec) == "bilinear_stencil"
    assert lowering.choose("upsample", "tpu", spec) == "xla"
    bicubic = lowering.UpsampleSpec("bicubic", (16, 32, 32, 64), (1, 2), (2, 2), "float32")
    assert lowering.choose("upsample", "cpu", bicubic) == "xla"
    with pytest.raises(ValueError, match="op must be one of"):
        lowering.choose("conv4d", "cpu", spec)


def _hlo(f, *args, platform=None, grad=False):
    """The StableHLO of ``f`` (or of its gradient), lowered for ``platform``."""
    target = jax.grad(lambda *a: jnp.sum(f(*a) * 1.5), argnums=tuple(range(len(args)))) \
        if grad else f
    traced = jax.jit(target).trace(*args)
    lowered = traced.lower(lowering_platforms=(platform,)) if platform else traced.lower()
    return lowered.as_text()


def test_the_path_taken_is_in_the_program():
    rng = np.random.default_rng(16)
    x = _x(rng, 2, 4, "channels_last")
    dw = jnp.asarray(rng.standard_normal((3, 3, 4, 1)), jnp.float32)
    pw = jnp.asarray(rng.standard_normal((1, 1, 4, 6)), jnp.float32)
    tw = jnp.asarray(rng.standard_normal((3, 3, 2, 4)), jnp.float32)
    depthwise = lambda x, w: ops.depthwise_conv(x, w, 1, "same")  # noqa: E731
    pointwise = lambda x, w: ops.conv(x, w)  # noqa: E731
    transpose = lambda x, w: ops.conv_transpose(x, w, 2, "same")  # noqa: E731
    upsample = lambda x: ops.upsample(x, 2, interpolation="bilinear")  # noqa: E731
    # On CPU: no convolution at all for depthwise and pointwise, no dot for bilinear.
    assert "convolution" not in _hlo(depthwise, x, dw, grad=True)
    assert "convolution" not in _hlo(pointwise, x, pw, grad=True)
    assert "dot_general" not in _hlo(upsample, x)
    # The transposed convolution keeps XLA's forward; no gradient needs lhs_dilation.
    dilated = "lhs_dilate = [2, 2]"
    assert dilated in _hlo(transpose, x, tw)
    assert dilated not in _hlo(transpose, x, tw, grad=True)
    # Its kernel gradient is the kernel gradient of the strided convolution it is the input
    # gradient of (rhs_dilation = strides); in 3-D (whose forward is the sub-pixel form),
    # in float32 both gradients are one loop over the taps, no convolution (16-bit:
    # test_subpixel_3d_kernel_gradient_follows_the_input_channels).
    assert "rhs_dilate = [2, 2]" in _hlo(transpose, x, tw, grad=True)
    x3 = jnp.asarray(rng.standard_normal((1, 3, 3, 3, 4)), jnp.float32)
    tw3 = jnp.asarray(rng.standard_normal((3, 3, 3, 2, 4)), jnp.float32)
    gradients = _hlo(transpose, x3, tw3, grad=True)
    assert "stablehlo.while" in gradients and "convolution" not in gradients
    assert "lhs_dilate = [2, 2, 2]" not in _hlo(transpose, x3, tw3)
    # Forward mode evaluates the tangents in the value's form: no input-dilated 3-D loop.
    jvp = jax.jit(lambda x, w: jax.jvp(transpose, (x, w), (x, w))).lower(x3, tw3).as_text()
    assert "lhs_dilate = [2, 2, 2]" not in jvp
    with config.conv_lowering("xla"):
        assert dilated in _hlo(transpose, x, tw, grad=True)
        assert "lhs_dilate = [2, 2, 2]" in _hlo(transpose, x3, tw3, grad=True)
        assert "convolution" in _hlo(depthwise, x, dw)
    # This process runs only on the CPU: "auto" decides at trace time, no platform switch.
    assert jax.default_backend() == "cpu"
    assert "platform_index" not in str(jax.make_jaxpr(jax.grad(
        lambda x, w: jnp.sum(depthwise(x, w)), argnums=(0, 1)))(x, dw))
    # "portable" stages the choice: lowered for a GPU or TPU (no device needed), the plain
    # path, one convolution; lowered for the CPU, the CPU lowering, also in reverse mode.
    with config.conv_lowering("portable"):
        assert "platform_index" in str(jax.make_jaxpr(depthwise)(x, dw))
        for platform in ("cuda", "tpu"):
            assert "convolution" in _hlo(depthwise, x, dw, platform=platform)
            assert "dot_general" in _hlo(upsample, x, platform=platform)
        assert "convolution" not in _hlo(depthwise, x, dw, platform="cpu", grad=True)
        assert dilated not in _hlo(transpose, x, tw, platform="cpu", grad=True)
    # Under "auto", a CPU-only process lowering for a GPU carries the CPU lowering (the
    # same numbers): what "portable" is for.
    assert "convolution" not in _hlo(depthwise, x, dw, platform="cuda")


def test_the_gpu_rule_is_in_the_cuda_program():
    # Lowered for CUDA (no GPU needed) under "portable": a dilated Conv1D with XLA's
    # forward and undilated gradients (space_to_batch); a transposed convolution with
    # XLA's input-dilated forward and the strided convolution's kernel gradient
    # (strided_dual). For the CPU and a TPU their plain forms.
    rng = np.random.default_rng(22)
    x1 = _x(rng, 1, 4, "channels_last", spatial=(16,))
    w1 = jnp.asarray(rng.standard_normal((3, 4, 5)), jnp.float32)
    dilated = lambda x, w: ops.conv(x, w, 1, "causal", "channels_last", 4)  # noqa: E731
    x2 = _x(rng, 2, 4, "channels_last", spatial=(5, 5))
    w2 = jnp.asarray(rng.standard_normal((3, 3, 2, 4)), jnp.float32)
    transpose = lambda x, w: ops.conv_transpose(x, w, 2, "same")  # noqa: E731
    with config.conv_lowering("portable"):
        assert "rhs_dilate = [4]" in _hlo(dilated, x1, w1, platform="cuda")
        assert "rhs_dilate = [4]" not in _hlo(dilated, x1, w1, platform="cuda", grad=True)
        for platform in ("cpu", "tpu"):
            assert "rhs_dilate = [4]" in _hlo(dilated, x1, w1, platform=platform, grad=True)
        assert "lhs_dilate = [2, 2]" in _hlo(transpose, x2, w2, platform="cuda")
        cuda = _hlo(transpose, x2, w2, platform="cuda", grad=True)
        tpu = _hlo(transpose, x2, w2, platform="tpu", grad=True)
        assert "rhs_dilate = [2, 2]" in cuda and "rhs_dilate = [2, 2]" not in tpu
        # The forward is lax's convolution on both.
        convs = [[line.split("=", 1)[1] for line in _hlo(transpose, x2, w2,
                                                         platform=p).splitlines()
                  if "stablehlo.convolution" in line] for p in ("cuda", "tpu")]
        assert len(convs[0]) == 1 and convs[0] == convs[1]


@pytest.mark.parametrize("layer", [
    kconv.Conv2D(6, 3, strides=2, padding="same", dtype="mixed_bfloat16"),
    kconv.Conv2DTranspose(6, 3, strides=2, padding="same", dtype="mixed_bfloat16"),
    kconv.SeparableConv2D(6, 3, padding="same", dtype="float16"),
    kconv.Conv1D(6, 3, padding="causal", dilation_rate=2, dtype="mixed_bfloat16"),
], ids=["Conv2D", "Conv2DTranspose", "SeparableConv2D", "Conv1D-dilated"])
def test_16_bit_convolutions_on_a_gpu_have_16_bit_outputs(layer):
    # Float32 accumulation of 16-bit operands (the layers' mixed precision): XLA:CPU is
    # given preferred_element_type float32; a GPU or TPU the 16-bit convolution, widened
    # after (lowering.dispatch._device_plain), so that no float32 convolution reaches cuDNN, in the
    # gradients either. Lowered for CUDA without a GPU.
    x = _x(np.random.default_rng(19), layer.rank, 4, "channels_last",
           spatial=(6,) * layer.rank)
    params = layer.init(jax.random.key(0), x.shape)
    loss = lambda p, x: jnp.sum(layer(p, x).astype(jnp.float32) ** 2)  # noqa: E731
    half = {"bfloat16": "bf16", "float16": "f16"}[np.dtype(layer.dtype).name]
    with config.conv_lowering("portable"):
        assert "platform_index" in str(jax.make_jaxpr(loss)(params, x))
        for platform, out in (("cuda", half), ("cpu", "f32")):
            for grad in (False, True):
                convs = [line for line in _hlo(loss, params, x, platform=platform,
                                               grad=grad).splitlines()
                         if "stablehlo.convolution" in line]
                # (On the CPU a SeparableConv2D takes depthwise_taps and pointwise_dot.)
                assert convs or platform == "cpu"
                assert all(line.rstrip().endswith(f"x{out}>") for line in convs), \
                    (platform, grad, convs)
        # The bias is added before the widening on the GPU (as lax adds it, so that
        # XLA:GPU fuses it into cuDNN's convolution), after it on the CPU.
        for platform, out in (("cuda", half), ("cpu", "f32")):
            adds = [line for line in _hlo(layer, params, x, platform=platform).splitlines()
                    if "stablehlo.add" in line]
            assert adds and all(line.rstrip().endswith(f"x{out}>") for line in adds), \
                (platform, adds)
    # A CPU-only process under "auto": the CPU's path alone, no switch.
    assert "platform_index" not in str(jax.make_jaxpr(loss)(params, x))
    # Transformations trace both branches of the switch; run here, they give the CPU's
    # numbers (jvp, vmap, grad of grad). SeparableConv2D's branches differ the most (on the
    # CPU depthwise_taps and pointwise_dot, float32 accumulation; elsewhere two 16-bit
    # convolutions).
    if not isinstance(layer, kconv.SeparableConv2D):
        return
    tangent = jax.tree.map(jnp.ones_like, params)
    ggrad = jax.grad(lambda x: sum(jnp.sum(g ** 2)
                                   for g in jax.tree.leaves(jax.grad(loss)(params, x))))
    batched = jax.vmap(layer, in_axes=(None, 0))
    results = {}
    for mode in ("auto", "portable"):
        with config.conv_lowering(mode):
            results[mode] = (jax.jvp(lambda p: loss(p, x), (params,), (tangent,)),
                             batched(params, x[:, None]), ggrad(x))
    for a, b in zip(jax.tree.leaves(results["portable"]), jax.tree.leaves(results["auto"])):
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_the_16_bit_device_path_rounds_the_convolution_once():
    # lowering.dispatch._device_plain's numbers, computed here: the float32 reference on the same
    # 16-bit operands, rounded once to bfloat16 (one rounding more than the CPU's path,
    # whose float32 output is not bfloat16-representable).
    rng = np.random.default_rng(20)
    x = jnp.asarray(rng.standard_normal((2, 7, 7, 8)), jnp.bfloat16)
    k = jnp.asarray(rng.standard_normal((3, 3, 8, 5)), jnp.bfloat16)
    spec = lowering.ConvSpec(2, "channels_last", x.shape, k.shape, (2, 1), ((1, 1), (0, 2)),
                             (1, 2), dtype="bfloat16", preferred_element_type="float32")
    device = lowering.dispatch._device_plain(lowering.plain._xla_conv, spec, None)
    cpu = lowering.plain._xla_conv(x, k, spec=spec, precision=None)
    reference = lowering.plain._xla_conv(x.astype(jnp.float32), k.astype(jnp.float32),
                                   spec=dataclasses.replace(spec, dtype="float32",
                                                            preferred_element_type=None),
                                   precision=lax.Precision.HIGHEST)
    assert device(x, k).dtype == cpu.dtype == jnp.float32
    rounded = reference.astype(jnp.bfloat16)
    np.testing.assert_array_equal(device(x, k), rounded.astype(jnp.float32))
    np.testing.assert_allclose(cpu, reference, rtol=1e-5, atol=1e-5)
    assert not np.array_equal(cpu, device(x, k))
    # With a bias: added to the rounded output in bfloat16 (lax's numbers), then widened.
    bias = jnp.asarray(rng.standard_normal(5), jnp.bfloat16)
    np.testing.assert_array_equal(device(x, k, bias),
                                  (rounded + bias).astype(jnp.float32))
    # Nothing to narrow: float32 operands, no accumulation dtype, or the same width.
    for dtype, wide in (("float32", "float32"), ("bfloat16", None), ("float16", "bfloat16"),
                        ("int8", "int32")):
        narrow = dataclasses.replace(spec, dtype=dtype, preferred_element_type=wide)
        assert lowering.dispatch._device_plain(lowering.plain._xla_conv, narrow,
                                               None) is None, (dtype, wide)


@pytest.mark.parametrize("batch", ["known", "symbolic"])
@pytest.mark.parametrize("mode", ["auto", "portable"])
def test_export_for_several_platforms(mode, batch):
    # jax.export to the CPU and a GPU at once (no GPU needed): "portable" stages the
    # choice, so the CUDA program holds XLA's convolution and the CPU one the lowering;
    # "auto" in this CPU-only process carries the CPU lowering into both. Either artifact
    # runs here with the plain path's numbers, for the batch it was exported with or
    # (symbolic) any.
    from jax import export

    rng = np.random.default_rng(18)
    x = _x(rng, 2, 4, "channels_last")
    w = jnp.asarray(rng.standard_normal((3, 3, 4, 1)), jnp.float32)
    f = lambda x, w: ops.depthwise_conv(x, w, 1, "same")  # noqa: E731
    spec = x if batch == "known" else jax.ShapeDtypeStruct(_symbolic(x.shape, "b"), x.dtype)
    with config.conv_lowering(mode):
        exported = export.export(jax.jit(f), platforms=("cpu", "cuda"))(spec, w)
    assert exported.platforms == ("cpu", "cuda")
    assert ("stablehlo.convolution" in exported.mlir_module()) == (mode == "portable")
    if batch == "symbolic":
        x = _x(rng, 2, 4, "channels_last", batch=3)
    with config.conv_lowering("xla"):
        plain = f(x, w)
    _assert_close(exported.call(x, w), plain)


@pytest.mark.parametrize("name", _EXAMPLES)
def test_inside_shard_map(monkeypatch, two_cores, name):
    """Every lowering inside :func:`jax.shard_map` with ``check_vma`` (its default), the
    input split over a mesh axis and the weights replicated: the primitives' outputs vary
    over the axes their operands do, and their cotangents over those of their primals (the
    lowerings raised type errors — or, transposed at a bare shape, would have summed an
    input gradient over the devices). A one-device mesh types the program as eight would;
    tests/test_sharding.py runs the layers on eight."""
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    _steer(monkeypatch, name)
    rng = np.random.default_rng(21)
    f, args = {n: (f, a) for n, f, a in _one_of_each(rng, np.float32)}[name]
    every = tuple(range(len(args)))
    grads = jax.grad(lambda *a: jnp.sum(jnp.sin(f(*a))), argnums=every)
    weights = (P(),) * (len(args) - 1)
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    mapped = jax.jit(jax.shard_map(lambda *a: (f(*a), grads(*a)), mesh=mesh,
                                   in_specs=(P("data"), *weights),
                                   out_specs=(P("data"), (P("data"), *weights))))
    with lowering.recorded_choices() as calls:
        auto = mapped(*args)
    assert _lowering_of(name) in {taken for _, taken in calls}, calls
    with config.conv_lowering("xla"):
        plain = f(*args), grads(*args)
    jax.tree.map(_assert_close, auto, plain)


@pytest.mark.parametrize("name", _EXAMPLES)
def test_forward_under_explicit_sharding(monkeypatch, two_cores, name):
    """Every lowering's value with the batch sharded over a mesh of ``Explicit`` axes (what
    ``jax.make_mesh`` makes, entered with ``jax.set_mesh``): its output sharded as the
    batch, as lax's is (the 3-D sub-pixel form's reshapes, which fold and unfold the
    batch, raised ``ShardingTypeError``). A one-device mesh types it as eight would.
    (Gradients: lax's own convolution gradients do not take explicit sharding in jax
    0.10.2, so neither path is checked.)"""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    _steer(monkeypatch, name)
    rng = np.random.default_rng(22)
    f, args = {n: (f, a) for n, f, a in _one_of_each(rng, np.float32)}[name]
    mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    with jax.set_mesh(mesh):
        x = jax.device_put(args[0], NamedSharding(mesh, P("data")))
        with lowering.recorded_choices() as calls:
            y = jax.jit(f)(x, *args[1:])
    assert _lowering_of(name) in {taken for _, taken in calls}, calls
    assert tuple(jax.typeof(y).sharding.spec)[:1] == ("data",)
    with config.conv_lowering("xla"):
        _assert_close(y, f(*args))


def _symbolic(shape, symbols, constraints=()):
    """``shape`` with its leading dims named by ``symbols`` (jax.export's polymorphism)."""
    from jax import export

    dims = [*symbols, *map(str, shape[len(symbols):])]
    return export.symbolic_shape(", ".join(dims), constraints=constraints)


@pytest.mark.parametrize("name", _EXAMPLES)
def test_export_with_a_symbolic_batch(monkeypatch, two_cores, name):
    """``jax.export`` with the batch symbolic (``"b"``: what a served model and Keras's
    export want) takes the lowering a known batch does, and the exported value and
    gradients, called on batches of other sizes, are the plain path's. (The spec turned
    every dim into an int, and the depthwise rules built StableHLO types of known dims
    only: every lowering raised.) ``"b <= 8"`` bounds the folded input that ``width_fold``
    needs to know is small."""
    from jax import export

    _steer(monkeypatch, name)
    rng = np.random.default_rng(19)
    f, args = {n: (f, a) for n, f, a in _one_of_each(rng, np.float32)}[name]
    x, weights = args[0], args[1:]
    every = tuple(range(len(args)))
    grads = jax.grad(lambda *a: jnp.sum(jnp.sin(f(*a))), argnums=every)
    x_spec = jax.ShapeDtypeStruct(_symbolic(x.shape, "b", ("b <= 8",)), x.dtype)
    with lowering.recorded_choices() as calls:
        value = export.export(jax.jit(f))(x_spec, *weights)
        gradients = export.export(jax.jit(grads))(x_spec, *weights)
    assert {taken for _, taken in calls} == {_lowering_of(name)}, calls
    for batch in (1, 3):
        a = (jnp.asarray(rng.standard_normal((batch, *x.shape[1:])), x.dtype), *weights)
        with config.conv_lowering("xla"):
            plain = f(*a), grads(*a)
        jax.tree.map(_assert_close, (value.call(*a), gradients.call(*a)), plain)


def test_rule_with_symbolic_dims():
    # A 3-D convolution folds its width only while the folded input is known to stay
    # within MAX_WIDTH_FOLD_BYTES: not for an unbounded batch, for one bounded by 8.
    spec = lambda shape: lowering.ConvSpec(  # noqa: E731
        rank=3, data_format="channels_last", input_shape=shape, kernel_shape=(3, 3, 3, 4, 8),
        strides=(1, 1, 1), padding=((1, 1),) * 3, dilation=(1, 1, 1))
    shape = (2, 16, 16, 16, 4)
    assert lowering.choose("conv", "cpu", spec(shape)) == "width_fold"
    assert lowering.choose("conv", "cpu", spec(_symbolic(shape, "b"))) == "tap_loop"
    bounded = _symbolic(shape, "b", ("b <= 8",))
    assert lowering.choose("conv", "cpu", spec(bounded)) == "width_fold"
    # A symbolic length: XLA's, on every backend and for every op.
    lengths = _symbolic(shape, ("b", "d", "h"))
    for op in ("conv", "conv_transpose"):
        for backend in ("cpu", "cuda"):
            assert lowering.choose(op, backend, spec(lengths)) == "xla"
    upsample = lowering.UpsampleSpec("bilinear", lengths, (1, 2, 3), (2, 2, 2))
    assert lowering.choose("upsample", "cpu", upsample) == "xla"


def test_export_with_symbolic_lengths():
    """Symbolic spatial lengths (a fully convolutional model exported for any image
    size) take XLA's convolution and resize: the lowerings' windows need known lengths.
    The values are lax's, and so are the gradients where lax's own take symbolic lengths
    (lax's transpose of a "valid" or strided "same" convolution does not); "same" with a
    stride reaches lax as its "SAME" (the amounts are symbolic); a crop or a reflected
    border needs the length bounded (``"h >= 4"``), as jax's slices and pads do."""
    from jax import export

    rng = np.random.default_rng(20)
    r = lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.float32)  # noqa: E731
    cases = [  # (f, weights, rank, differentiated)
        (lambda x, w: ops.conv(x, w, 1, "valid"), (r(3, 3, 4, 5),), 2, False),
        (lambda x, w: ops.conv(x, w, 2, "same"), (r(3, 3, 4, 5),), 2, False),
        (lambda x, w: ops.conv(x, w, 1, "same", padding_mode="reflect"), (r(3, 3, 4, 5),),
         2, True),
        (lambda x, w: ops.depthwise_conv(x, w, 1, "same"), (r(3, 3, 4, 2),), 2, True),
        (lambda x, w: ops.conv(x, w, 1, "causal", dilation_rate=2), (r(3, 4, 5),), 1, True),
        (lambda x, w: ops.conv(x, w, 1, "same"), (r(3, 2, 3, 4, 6),), 3, True),
        (lambda x, w: ops.conv_transpose(x, w, 2, "same"), (r(3, 3, 5, 4),), 2, True),
        (lambda x, w: ops.conv_transpose(x, w, 2, "valid"), (r(3, 3, 3, 5, 4),), 3, True),
        (lambda x: ops.upsample(x, 2, interpolation="bilinear"), (), 2, True),
        (lambda x: ops.crop(x, ((1, 2), 1)), (), 2, True),
    ]
    for f, weights, rank, differentiated in cases:
        every = tuple(range(1 + len(weights)))
        grads = jax.grad(lambda *a: jnp.sum(jnp.sin(f(*a))), argnums=every)
        lengths = [f"s{i}" for i in range(rank)]
        spec = jax.ShapeDtypeStruct(export.symbolic_shape(
            ", ".join(["b", *lengths, "4"]), constraints=[f"{s} >= 4" for s in lengths]),
            jnp.float32)
        with lowering.recorded_choices() as calls:
            exported = [export.export(jax.jit(fn))(spec, *weights)
                        for fn in ((f, grads) if differentiated else (f,))]
        assert {taken for _, taken in calls} <= {"xla"}, calls  # a crop dispatches none
        a = (r(2, *(5, 9, 6)[:rank], 4), *weights)
        with config.conv_lowering("xla"):
            plain = (f(*a), grads(*a))[:len(exported)]
        jax.tree.map(_assert_close, tuple(e.call(*a) for e in exported), plain)


def test_switch():
    assert config.get_conv_lowering() == "auto"
    with config.conv_lowering("XLA"):
        assert config.get_conv_lowering() == "xla"
        with lowering.recorded_choices() as calls:
            ops.depthwise_conv(jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 1)))
        assert calls == [("conv", "xla")]
    assert config.get_conv_lowering() == "auto"
    with config.conv_lowering("Portable"):
        assert config.get_conv_lowering() == "portable"
        with lowering.recorded_choices() as calls:
            ops.depthwise_conv(jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 1)))
        assert calls == [("conv", "depthwise_taps")]
    with pytest.raises(ValueError, match=r"set_conv_lowering.*one of "
                                         r"\('auto', 'portable', 'xla'\).*'fast'"):
        config.set_conv_lowering("fast")
    with pytest.raises(ValueError, match=r"conv_lowering.*None"):
        with config.conv_lowering(None):
            pass
    assert config.get_conv_lowering() == "auto"
    # A function jitted before the switch retraces after it (the mode is part of jit's
    # cache key), so the same jitted function takes the other path.
    f = jax.jit(lambda x: ops.depthwise_conv(x, jnp.ones((3, 3, 2, 1))))
    x = jnp.ones((1, 5, 5, 2))
    with lowering.recorded_choices() as calls:
        f(x)
        with config.conv_lowering("xla"):
            f(x)
    assert calls == [("conv", "depthwise_taps"), ("conv", "xla")]


def test_switch_is_part_of_the_jit_cache_key():
    # Each mode's trace is cached under its own key: switching back and forth retraces
    # nothing after the first call in each mode, and neither does a block entered inside
    # the traced function (before, a change cleared JAX's caches: that function retraced
    # and recompiled on every call).
    rng = np.random.default_rng(21)
    x = _x(rng, 2, 4, "channels_last")
    kernel = jnp.asarray(rng.standard_normal((3, 3, 4, 1)), jnp.float32)
    traces = []

    @jax.jit
    def f(x, kernel):
        traces.append(config.get_conv_lowering())
        return ops.depthwise_conv(x, kernel, 1, "same")

    @jax.jit
    def g(x, kernel):
        traces.append("inside")
        with config.conv_lowering("xla"):
            return ops.depthwise_conv(x, kernel, 1, "same")

    with lowering.recorded_choices() as calls:
        for _ in range(2):
            auto = f(x, kernel)
            with config.conv_lowering("xla"):
                plain = f(x, kernel)
            config.set_conv_lowering("xla")
            try:
                assert config.get_conv_lowering() == "xla"
                f(x, kernel)
            finally:
                config.set_conv_lowering("auto")
            inside = [g(x, kernel) for _ in range(3)][-1]
    assert traces == ["auto", "xla", "inside"]
    assert calls == [("conv", "depthwise_taps"), ("conv", "xla"), ("conv", "xla")]
    _assert_close(auto, plain)
    np.testing.assert_array_equal(inside, plain)


def test_switch_block_is_this_threads():
    # A conv_lowering block holds in its own thread; set_conv_lowering is process-wide.
    import threading

    seen = {}
    entered, done = threading.Event(), threading.Event()

    def other():
        with config.conv_lowering("xla"):
            seen["inside"] = config.get_conv_lowering()
            entered.set()
            done.wait(10)

    thread = threading.Thread(target=other)
    thread.start()
    try:
        assert entered.wait(10)
        assert seen["inside"] == "xla"
        assert config.get_conv_lowering() == "auto"
        with lowering.recorded_choices() as calls:
            ops.depthwise_conv(jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 1)))
        assert calls == [("conv", "depthwise_taps")]
    finally:
        done.set()
        thread.join()

    def read():
        seen["process"] = config.get_conv_lowering()

    config.set_conv_lowering("portable")
    try:
        thread = threading.Thread(target=read)
        thread.start()
        thread.join()
    finally:
        config.set_conv_lowering("auto")
    assert seen["process"] == "portable"


@pytest.mark.parametrize("mode", ["auto", "xla"])
@pytest.mark.parametrize("rank", [2, 3])
def test_input_dilated_convolution_that_xla_cpu_aborts_on(rank, mode):
    # jaxlib 0.10.2's XLA:CPU aborts the process compiling these input-dilated convolutions
    # (its operand swap keeps a window dimension of size 2 against an input of 3: "Window
    # dimensions do not match RHS shape"), as Keras's layers and lax.conv_transpose hand
    # them. kconv's one lax.conv_general_dilated call pads such an axis by one more output
    # and slices it off (_swap_safe); the 2-D forward is XLA's under "auto" too.
    # Without it this test's worker dies. Forward against the float64 reference; gradients
    # by the adjoint identity (the layer is linear in its input and in its kernel).
    from tests import reference as ref

    rng = np.random.default_rng(0)
    kernel_size, strides = ((3, 2), (1, 2)) if rank == 2 else ((3, 2, 3), (1, 2, 1))
    layer = getattr(kconv, f"Conv{rank}DTranspose")(
        30, kernel_size, strides=strides, padding="same", output_padding=0, use_bias=False)
    x = rng.standard_normal((1,) + (2, 3, 4)[:rank] + (35,)).astype(np.float32)
    kernel = rng.standard_normal(kernel_size + (30, 35)).astype(np.float32)
    with config.conv_lowering(mode):
        y = jax.jit(layer)({"kernel": kernel}, x)
        ct = rng.standard_normal(y.shape).astype(np.float32)
        grads = jax.jit(jax.grad(lambda p, x: jnp.vdot(layer(p, x), ct), argnums=(0, 1)))(
            {"kernel": kernel}, x)
    want = ref.conv_transpose(x, kernel, strides, "same", output_padding=(0,) * rank)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.vdot(grads[1].astype(np.float64), x), np.vdot(want, ct),
                               rtol=1e-4)
    np.testing.assert_allclose(np.vdot(grads[0]["kernel"].astype(np.float64), kernel),
                               np.vdot(want, ct), rtol=1e-4)


@pytest.mark.parametrize("mode", ["auto", "xla"])
def test_strided_convolution_whose_input_gradient_xla_cpu_aborts_on(mode):
    # The input gradient JAX builds for a forward convolution with kernel = stride = 2 and a
    # low padding of 1 is an input-dilated convolution of kernel 2 without low padding, the
    # axis XLA's operand swap mishandles: beside an axis whose kernel is larger than its
    # input it aborted the process (explicit padding; torch's Conv2d(k=2, s=2, padding=1)).
    # That low padding is moved into the input. Forward against the float64 reference,
    # gradients by the adjoint identity.
    from tests import reference as ref

    rng = np.random.default_rng(0)
    padding = ((1, 1), (1, 1))
    layer = kconv.Conv2D(30, (3, 2), strides=(1, 2), padding=padding, use_bias=False)
    x = rng.standard_normal((1, 2, 4, 35)).astype(np.float32)
    kernel = rng.standard_normal((3, 2, 35, 30)).astype(np.float32)
    with config.conv_lowering(mode):
        y = jax.jit(layer)({"kernel": kernel}, x)
        ct = rng.standard_normal(y.shape).astype(np.float32)
        grads = jax.jit(jax.grad(lambda p, x: jnp.vdot(layer(p, x), ct), argnums=(0, 1)))(
            {"kernel": kernel}, x)
    want = ref.conv(x, kernel, (1, 2), padding)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.vdot(grads[1].astype(np.float64), x), np.vdot(want, ct),
                               rtol=1e-4)
    np.testing.assert_allclose(np.vdot(grads[0]["kernel"].astype(np.float64), kernel),
                               np.vdot(want, ct), rtol=1e-4)


def test_swap_guard_only_where_xla_would_swap():
    # The guard's mirror of XLA's swap test names only axes XLA takes for a "group" axis,
    # and only where it would swap; the guard then changes the least it can. A plain
    # Conv2DTranspose(k=2, s=2), the usual upsampling, and its derivatives are left as
    # they are (no extra output computed).
    from kconv.ops.convolution import _Axis, _swap_group_axes, _swap_safe

    # Conv2DTranspose(30, (3, 2), strides=(1, 2), "same", output_padding=0) on (1, 2, 3, C):
    tall, group = _Axis(2, 3, 1, 1, 1, 1, 1), _Axis(3, 2, 1, 2, 1, 0, 0)
    assert _swap_group_axes([tall, group]) == [1]
    assert _swap_group_axes([tall, group._replace(lo=1, hi=1)]) == []  # padded: no group
    assert _swap_group_axes([tall._replace(n=5), group]) == []  # no larger kernel: no swap
    assert _swap_group_axes([group._replace(k=2, n=2), group]) == []
    assert _swap_safe([tall, group]) == [tall, group._replace(hi=1)]  # one more output
    # Conv2D(30, (3, 2), strides=(1, 2), padding=((1, 1), (1, 1))) on (1, 2, 4, C): its
    # input gradient has the group axis; the low padding goes into the input.
    forward = [tall, _Axis(4, 2, 2, 1, 1, 1, 1)]
    assert _swap_group_axes(forward) == []
    assert _swap_safe(forward) == [tall, _Axis(5, 2, 2, 1, 1, 0, 1)]
    up = [_Axis(8, 2, 1, 2, 1, 1, 1)] * 2
    assert _swap_safe(up) == up


#: Found by a search of kconv's derivatives for XLA:CPU aborts (stop 44): convolutions
#: JAX's transpose rules build outside kconv's call, with explicit (PyTorch-style) padding.
_DERIVATIVE_ABORTS = {
    # the kernel gradient of a transposed convolution (window 2 = its input dilation)
    "transposed, kernel gradient": (
        "conv_transpose", (1, 3, 2, 4), (4, 3, 4, 4), {"strides": (2, 1),
                                                       "padding": ((3, 3), (0, 0))}),
    # the same with a dilation: "auto" gives it to XLA's convolution
    "dilated transposed, kernel gradient": (
        "conv_transpose", (1, 3, 1, 4), (4, 2, 4, 4), {"strides": (2, 1),
                                                       "dilation_rate": (1, 2),
                                                       "padding": ((3, 3), (0, 0))}),
    # the kernel gradient of a strided convolution's input gradient (a second derivative)
    "strided, second derivative": (
        "conv", (1, 2, 5, 4), (4, 3, 4, 4), {"strides": (2, 1),
                                             "padding": ((3, 3), (0, 0))}),
}


@pytest.mark.parametrize("mode", ["auto", "portable", "xla"])
@pytest.mark.parametrize("case", list(_DERIVATIVE_ABORTS))
def test_derivatives_that_xla_cpu_aborts_on(case, mode):
    # jaxlib 0.10.2's XLA:CPU aborted the process compiling these derivatives (plain lax
    # too): kconv's call takes a form whose derivatives, to the second order, have no
    # group axis for XLA's operand swap (_swap_safe). Without it this test's worker dies.
    # Forward against the float64 reference; first derivatives by the adjoint identity;
    # the second-order kernel gradient against forward mode (a jvp, which builds no
    # transposed convolution).
    from tests import reference as ref

    op, x_shape, k_shape, kwargs = _DERIVATIVE_ABORTS[case]
    rng = np.random.default_rng(0)
    x, kernel = (rng.standard_normal(s).astype(np.float32) for s in (x_shape, k_shape))
    f = functools.partial(getattr(ops, op), **kwargs)
    with config.conv_lowering(mode):
        y = jax.jit(f)(x, kernel)
        ct = rng.standard_normal(y.shape).astype(np.float32)
        gx, gk = jax.jit(jax.grad(lambda x, k: jnp.vdot(f(x, k), ct), argnums=(0, 1)))(
            x, kernel)

        def penalty(k):  # |dL/dx|^2, a gradient penalty
            return jnp.sum(jax.grad(lambda x: jnp.vdot(f(x, k), ct))(x) ** 2)

        second = jax.jit(jax.grad(penalty))(kernel)
        v = rng.standard_normal(k_shape).astype(np.float32)
        forward_mode = jax.jit(lambda k, v: jax.jvp(penalty, (k,), (v,))[1])(kernel, v)
    want = getattr(ref, op)(x, kernel, **kwargs)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.vdot(np.asarray(gx, np.float64), x), np.vdot(want, ct),
                               rtol=1e-4)
    np.testing.assert_allclose(np.vdot(np.asarray(gk, np.float64), kernel), np.vdot(want, ct),
                               rtol=1e-4)
    np.testing.assert_allclose(np.vdot(np.asarray(second, np.float64), v), forward_mode,
                               rtol=1e-4)
