"""A randomized Keras-parity fuzz: random layer configurations, Keras 3 (JAX backend) the oracle.

Run it after changing a lowering, an argument rule or a shape formula; the suite runs a few
configurations of it (``tests/test_keras_parity.py``), this runs hundreds::

    python -m tests.fuzz_keras --seed 0 --minutes 10 [--only Conv2D,Conv2DTranspose]

Each configuration draws a layer (the ten convolutions and the nine reshaping layers), its
arguments (format, padding, strides, dilation, groups, depth multiplier, output padding,
activation, bias; channels above 16 half the time, where kconv computes the convolutions by
its own lowerings) and an input (spatial sizes down to 1, below the kernel; a batch of 0 at
times). It builds the
Keras layer with random weights, gives kconv the same ones by name, and compares weight
names and shapes, ``compute_output_shape`` (with a known and an unknown batch), the output
(eagerly and under ``jit``) and the gradients of ``sum(y * cotangent)`` with respect to the
input and every weight (float32, within 1e-5 of the largest magnitude plus 1e-5 relative).
Where an output's pre-activation lies within float32 rounding of a kink of the activation
(``relu`` at 0, ``relu6`` at 0 and 6, ...), the two sides may round it to opposite sides of
the kink, and the gradients then differ there by the jump in slope whichever is right: those
are recompared without such outputs (outcome ``"ok, at a kink"``).
If either side refuses the configuration, the other must refuse it too — except where Keras's
layer refuses what kconv accepts on purpose (``strides > 1`` with ``dilation_rate > 1``,
``"causal"`` beyond Conv1D): there kconv is compared with ``keras.ops`` instead.

Every mismatch is printed with a standalone reproducer; the summary gives the outcomes per
layer and the lowerings reached. The exit status is 1 if anything disagreed.

jaxlib 0.10.2's XLA:CPU aborts the whole process compiling some input-dilated
convolutions that Keras's transposed layers hand it (seed 3225, configuration 145: a
``Conv3DTranspose`` with kernel ``(3, 2, 3)``, strides ``(1, 2, 1)``, ``"same"``,
``output_padding=(0, 0, 0)``, on a ``(1, 2, 3, 4, 35)`` input; see the README's lowering
modes). The fuzz traces Keras's forward and gradients first and leaves its layer uncalled
where one of their convolutions is such a program (outcome ``"Keras would abort"``: kconv's
are still run, so kconv aborting would end the run).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import sys
import time
import traceback
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import kconv  # noqa: E402
from kconv.ops import lowering  # noqa: E402
from tests.util import equations  # noqa: E402

CL, CF = "channels_last", "channels_first"
ACTIVATIONS = [None, None, None, "relu", "tanh", "sigmoid", "gelu", "silu", "softplus", "elu",
               "selu", "leaky_relu", "hard_sigmoid", "linear", "softsign", "relu6", "mish"]
CONVOLUTIONS = ["Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
                "Conv3DTranspose", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D",
                "SeparableConv2D"]  # Keras has no Depthwise/SeparableConv3D to compare with
RESHAPING = ["Cropping1D", "Cropping2D", "Cropping3D", "ZeroPadding1D", "ZeroPadding2D",
             "ZeroPadding3D", "UpSampling1D", "UpSampling2D", "UpSampling3D"]
#: How often each layer is drawn, relative to the others.
WEIGHTS = {**{n: 3 for n in CONVOLUTIONS}, **{n: 1 for n in RESHAPING},
           "Conv2D": 5, "Conv2DTranspose": 4, "UpSampling2D": 2}


def _rank(name: str) -> int:
    return next(int(r) for r in "123" if f"{r}D" in name)


def _per_axis(value: Any, n: int) -> tuple[int, ...]:
    return (value,) * n if isinstance(value, int) else tuple(value)


# --- drawing a configuration ----------------------------------------------------------------

def _channels(rng: np.random.Generator) -> int:
    return int(rng.integers(17, 41)) if rng.random() < 0.55 else int(rng.integers(1, 17))


def _ints(rng: np.random.Generator, n: int, lo: int, hi: int) -> int | tuple[int, ...]:
    """An int (every axis) or an n-tuple: Keras accepts both."""
    if rng.random() < 0.4:
        return int(rng.integers(lo, hi + 1))
    return tuple(int(v) for v in rng.integers(lo, hi + 1, size=n))


def _spatial(rng: np.random.Generator, n: int) -> tuple[int, ...]:
    hi = {1: 12, 2: 10, 3: 5}[n]
    sizes = rng.integers(1, hi + 1, size=n)
    if rng.random() < 0.6:  # mostly not tiny
        sizes = np.maximum(sizes, rng.integers(3, hi + 1, size=n))
    return tuple(int(s) for s in sizes)


def _convolution_args(name: str, n: int, c: int, rng: np.random.Generator) -> dict[str, Any]:
    kw: dict[str, Any] = {"kernel_size": _ints(rng, n, 1, 4 if n < 3 else 3)}
    strides = 1 if rng.random() < 0.45 else _ints(rng, n, 1, 3)
    dilation = _ints(rng, n, 1, 3) if rng.random() < 0.3 else 1
    if (rng.random() >= 0.12 and max(_per_axis(strides, n)) > 1
            and max(_per_axis(dilation, n)) > 1):  # mostly within Keras's rule
        strides, dilation = (1, dilation) if rng.random() < 0.5 else (strides, 1)
    if strides != 1 or rng.random() < 0.3:
        kw["strides"] = strides
    if dilation != 1 or rng.random() < 0.2:
        kw["dilation_rate"] = dilation
    paddings = ["valid", "same"] + (["causal"] if name == "Conv1D" else [])
    if n == 1 and rng.random() < 0.05:
        paddings.append("causal")  # beyond Keras on the other 1-D layers
    kw["padding"] = str(rng.choice(paddings))
    if name.startswith("Conv") and "Transpose" not in name:
        groups, filters = 1, _channels(rng)
        if rng.random() < 0.35:
            groups = int(rng.choice([g for g in range(1, 41) if c % g == 0]))
            if rng.random() < 0.08:
                groups = int(rng.integers(2, 6))  # maybe not a divisor: both must refuse
            filters = groups * int(rng.integers(1, max(2, 41 // groups) + 1))
            filters += int(rng.random() < 0.05)  # maybe not a multiple either
        kw["filters"] = filters
        if groups != 1 or rng.random() < 0.2:
            kw["groups"] = groups
    elif "Transpose" in name:
        kw["filters"] = _channels(rng)
        if rng.random() < 0.4:
            strides = _per_axis(kw.get("strides", 1), n)
            if rng.random() < 0.1:
                kw["output_padding"] = _ints(rng, n, 0, 3)  # maybe >= strides: refused
            else:
                pads = tuple(int(rng.integers(0, s)) for s in strides)
                kw["output_padding"] = pads[0] if len(set(pads)) == 1 and rng.random() < 0.3 \
                    else pads
    else:
        if rng.random() < 0.6 or name.startswith("Depthwise"):
            kw["depth_multiplier"] = int(rng.integers(1, 5)) if rng.random() < 0.5 else 1
        if name.startswith("Separable"):
            kw["filters"] = _channels(rng)
    if rng.random() < 0.35:
        kw["use_bias"] = False
    activation = ACTIVATIONS[int(rng.integers(len(ACTIVATIONS)))]
    if activation is not None:
        kw["activation"] = activation
    return kw


def _reshaping_args(name: str, n: int, spatial: tuple[int, ...], rng: np.random.Generator
                    ) -> tuple[dict[str, Any], tuple[int, ...]]:
    kw: dict[str, Any] = {}
    if name.startswith("Cropping"):
        spatial = tuple(s + int(rng.integers(0, 5)) for s in spatial)
        pairs = []
        for s in spatial:
            lo = int(rng.integers(0, s))
            # Now and then a crop of the whole axis or more: both must refuse it.
            hi = int(rng.integers(0, s - lo)) if rng.random() < 0.95 else int(
                rng.integers(0, s + 1))
            pairs.append((lo, hi))
        r = rng.random()
        if n == 1:
            kw["cropping"] = pairs[0] if r < 0.6 else min(pairs[0])
        else:
            kw["cropping"] = (tuple(pairs) if r < 0.4 else
                              tuple(min(p) for p in pairs) if r < 0.7 else
                              min(min(p) for p in pairs))
    elif name.startswith("ZeroPadding"):
        pairs = [tuple(int(v) for v in rng.integers(0, 4, size=2)) for _ in range(n)]
        r = rng.random()
        if r < 0.4:
            kw["padding"] = tuple(pairs) if n > 1 else pairs[0]
        elif r < 0.7:
            kw["padding"] = tuple(p[0] for p in pairs) if n > 1 else pairs[0][0]
        else:
            kw["padding"] = pairs[0][1]
    else:
        kw["size"] = int(rng.integers(1, 5)) if n == 1 else _ints(rng, n, 1, 4 if n == 2 else 3)
        if n == 2:
            kw["interpolation"] = str(rng.choice(
                ["nearest", "bilinear", "bicubic", "lanczos3", "lanczos5", "area", "bilinear",
                 "bicubic"]))
            if rng.random() < 0.1:
                kw["interpolation"] = kw["interpolation"].upper()
    return kw, spatial


@dataclasses.dataclass(frozen=True)
class Config:
    """One drawn configuration: the layer's class name, its arguments, an input shape and
    the seed of its input, weights and cotangent."""
    name: str
    kwargs: dict[str, Any]
    shape: tuple[int, ...]
    seed: int


def draw(name: str, rng: np.random.Generator) -> Config:
    """A random configuration of layer ``name``."""
    n, batch, spatial = _rank(name), int(rng.integers(1, 4)), _spatial(rng, _rank(name))
    fmt = CL if rng.random() < 0.6 else CF
    if name in CONVOLUTIONS:
        c = _channels(rng)
        kw = {**_convolution_args(name, n, c, rng), "data_format": fmt}
    else:
        c = int(rng.integers(1, 41)) if rng.random() < 0.5 else int(rng.integers(1, 5))
        kw, spatial = _reshaping_args(name, n, spatial, rng)
        if n == 1:
            fmt = CL  # the 1-D reshaping layers have no data_format
        else:
            kw["data_format"] = fmt
    seed = int(rng.integers(1 << 30))
    if seed % 25 == 0:  # 4 %: an empty batch (no extra draw: earlier seeds keep their configs)
        batch = 0
    shape = (batch, *spatial, c) if fmt == CL else (batch, c, *spatial)
    return Config(name, kw, shape, seed)


# --- checking one ---------------------------------------------------------------------------

def _disagreement(actual: Any, expected: Any, rtol: float = 1e-5) -> str | None:
    """``None`` if close (non-finite entries must match in place), else what differs."""
    a, e = np.asarray(actual), np.asarray(expected)
    if a.shape != e.shape:
        return f"shape {a.shape} != {e.shape}"
    finite = np.isfinite(e)
    if not np.array_equal(np.isfinite(a), finite):
        return "the non-finite entries differ"
    a, e = a[finite], e[finite]
    if e.size == 0:
        return None
    scale = float(np.max(np.abs(e)))
    err = np.abs(a - e)
    tol = rtol * np.abs(e) + rtol * max(1.0, scale)
    if np.all(err <= tol):
        return None
    i = int(np.argmax(err - tol))
    return f"max |err| {float(err.max()):.3g} (scale {scale:.3g}): {a[i]} vs {e[i]}"


def _beyond_keras(cfg: Config) -> bool:
    """Whether Keras's layer refuses something kconv accepts on purpose."""
    if cfg.name not in CONVOLUTIONS:
        return False
    n, kw = _rank(cfg.name), cfg.kwargs
    strided_dilated = (cfg.name.startswith("Conv")
                       and max(_per_axis(kw.get("strides", 1), n)) > 1
                       and max(_per_axis(kw.get("dilation_rate", 1), n)) > 1)
    return strided_dilated or (kw.get("padding") == "causal" and cfg.name != "Conv1D")


def _keras_ops_oracle(cfg: Config, params: dict[str, Any], x: np.ndarray) -> Any:
    """``keras.ops`` for a configuration Keras's layer refuses; ``None`` if not expressible
    there (a grouped convolution, causal with output_padding)."""
    ops_ = keras.ops
    n, kw = _rank(cfg.name), cfg.kwargs
    fmt, padding = kw["data_format"], kw["padding"]
    s, d = kw.get("strides", 1), kw.get("dilation_rate", 1)
    transposed = "Transpose" in cfg.name
    if padding == "causal" and not transposed:
        left = _per_axis(d, 1)[0] * (_per_axis(kw["kernel_size"], 1)[0] - 1)
        x = ops_.pad(x, [[0, 0], [left, 0], [0, 0]] if fmt == CL else [[0, 0], [0, 0], [left, 0]])
        padding = "valid"
    if cfg.name.startswith("Depthwise"):
        y = ops_.depthwise_conv(x, params["kernel"], s, padding, fmt, d)
    elif cfg.name.startswith("Separable"):
        y = ops_.separable_conv(x, params["depthwise_kernel"], params["pointwise_kernel"], s,
                                padding, fmt, d)
    elif not transposed:
        if kw.get("groups", 1) != 1:
            return None
        y = ops_.conv(x, params["kernel"], s, padding, fmt, d)
    elif padding == "causal":  # the first n * s positions of the "valid" output
        if kw.get("output_padding") is not None:
            return None
        y = ops_.conv_transpose(x, params["kernel"], s, "valid", None, fmt, d)
        keep = (x.shape[1] if fmt == CL else x.shape[2]) * _per_axis(s, 1)[0]
        y = y[:, :keep] if fmt == CL else y[:, :, :keep]
    else:
        y = ops_.conv_transpose(x, params["kernel"], s, padding, kw.get("output_padding"), fmt,
                                d)
    if "bias" in params:
        y = y + (params["bias"] if fmt == CL else params["bias"].reshape((-1,) + (1,) * n))
    return keras.activations.get(kw.get("activation"))(y)


def xla_would_abort(fn: Any, *args: Any) -> bool:
    """Whether compiling ``fn(*args)`` meets the XLA:CPU operand-swap abort (jaxlib 0.10.2)
    in one of its convolutions, by kconv's mirror of XLA's test
    (``kconv.ops.convolution._swap_group_axes``), on the traced program (nothing compiled)."""
    from kconv.ops.convolution import _Axis, _swap_group_axes

    for eqn in equations(jax.make_jaxpr(fn)(*args).jaxpr):
        p = eqn.params
        if (eqn.primitive.name != "conv_general_dilated"
                or p["batch_group_count"] != 1 or p["feature_group_count"] != 1):
            continue  # XLA swaps no grouped convolution
        dn, (x, k) = p["dimension_numbers"], (v.aval.shape for v in eqn.invars)
        axes = [_Axis(x[a], k[b], *rest, lo, hi) for a, b, (lo, hi), *rest in zip(
            dn.lhs_spec[2:], dn.rhs_spec[2:], p["padding"], p["window_strides"],
            p["lhs_dilation"], p["rhs_dilation"])]
        if _swap_group_axes(axes):
            return True
    return False


def _refusal(call: Any) -> Exception | None:
    try:
        call()
    except Exception as e:  # noqa: BLE001 - any refusal counts; the message is reported
        return e
    return None


def gradients(keras_layer: Any, layer: Any, params: dict[str, Any], x: Any, cotangent: Any,
              *, jit: bool = True) -> tuple[tuple, tuple]:
    """The output and the gradients of ``sum(y * cotangent)`` with respect to the input and
    every trainable weight, of the Keras layer (``stateless_call``, as Keras's JAX trainer
    runs it) and of kconv's with ``params``: ``(y, grad_x, {weight name: gradient})`` for
    each, Keras's first (kconv's alone eagerly when ``jit`` is False)."""
    def keras_loss(trainable, x):
        y, _ = keras_layer.stateless_call(trainable, [], x)
        return jnp.sum(y * cotangent), y

    def kconv_loss(params, x):
        y = layer(params, x)
        return jnp.sum(y * cotangent), y

    def run(loss, weights):
        (_, y), (grads, grad_x) = (jax.jit if jit else (lambda f: f))(
            jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(weights, x)
        return y, grad_x, grads

    y, grad_x, grads = run(kconv_loss, params)
    names = [v.path.split("/")[-1] for v in keras_layer.trainable_variables]
    keras_run = None
    if jit:
        k_y, k_grad_x, k_grads = run(keras_loss,
                                     [v.value for v in keras_layer.trainable_variables])
        keras_run = (k_y, k_grad_x, dict(zip(names, k_grads)))
    return keras_run, (y, grad_x, {k: grads[k] for k in names})


def _shape_or_refusal(call: Any) -> tuple | str:
    """The shape ``call()`` returns, or its error's ``repr``."""
    try:
        return tuple(call())
    except Exception as e:  # noqa: BLE001 - refusals are compared, not raised
        return repr(e)


def check(cfg: Config, *, eager_gradients: bool = False) -> tuple[str, list[str], set[str]]:
    """Compares kconv with Keras on one configuration.

    Returns:
      ``(outcome, problems, lowerings)``: the outcome is ``"ok"``, ``"ok, at a kink"``
      (the gradients agree without the outputs whose pre-activations straddle a kink of
      the activation: :func:`_kink_between`), ``"both refuse"``, ``"Keras would abort"``
      (:func:`xla_would_abort`: kconv's forward and gradients run, uncompared),
      ``"beyond Keras, ok"`` (checked against ``keras.ops``), ``"beyond Keras, unchecked"``
      or ``"mismatch"`` (then ``problems`` says what differs); ``lowerings`` are the
      ``op:lowering`` pairs kconv took.
    """
    rng = np.random.default_rng(cfg.seed)
    x = rng.standard_normal(cfg.shape).astype(np.float32)
    built: dict[str, Any] = {}

    def build_keras() -> None:
        layer = getattr(keras.layers, cfg.name)(**cfg.kwargs)
        layer.build(cfg.shape)
        weights = [rng.standard_normal(w.shape).astype(np.float32) * 0.5
                   for w in layer.get_weights()]
        layer.set_weights(weights)
        built["keras"] = layer
        built["params"] = {w.path.split("/")[-1]: jnp.asarray(v)
                           for w, v in zip(layer.weights, weights)}
        trainable = [v.value for v in layer.trainable_variables]
        if xla_would_abort(jax.value_and_grad(lambda w, x: jnp.sum(
                layer.stateless_call(w, [], x)[0]), argnums=(0, 1)), trainable, x):
            return  # calling it would abort the process: kconv's side alone is run
        built["y"] = np.asarray(layer(x))

    def build_kconv() -> None:
        layer = getattr(kconv, cfg.name)(**cfg.kwargs)
        built["kconv"] = layer
        built["init"] = layer.init(jax.random.key(0), (None,) + cfg.shape[1:])

    keras_error, kconv_error = _refusal(build_keras), _refusal(build_kconv)
    if keras_error is not None:
        if kconv_error is not None:
            return "both refuse", [], set()
        layer, init = built["kconv"], built["init"]
        if _beyond_keras(cfg):
            params = {k: jnp.asarray(rng.standard_normal(v.shape).astype(np.float32) * 0.5)
                      for k, v in init.items()}
            if _refusal(lambda: layer(params, x)) is not None:
                # kconv refuses the input (a window larger than it): keras.ops must too,
                # where it can express the call at all (not grouped).
                outcome: list[Any] = []
                if _refusal(lambda: outcome.append(_keras_ops_oracle(cfg, params, x))):
                    return "both refuse", [], set()
                if outcome == [None]:
                    return "beyond Keras, unchecked", [], set()
                return "mismatch", ["kconv refuses an input keras.ops computes"], set()
            want = _keras_ops_oracle(cfg, params, x)
            if want is None:
                return "beyond Keras, unchecked", [], set()
            problems = [f"{what} vs keras.ops: {msg}" for what, msg in (
                ("output", _disagreement(layer(params, x), want)),
                ("jit output", _disagreement(jax.jit(layer)(params, x), want))) if msg]
            return ("mismatch" if problems else "beyond Keras, ok"), problems, set()
        call_error = _refusal(lambda: layer(init, x))
        if call_error is not None:
            return "both refuse", [], set()
        return "mismatch", [f"Keras refuses, kconv does not: {keras_error!r}"[:400]], set()
    if kconv_error is not None:
        return "mismatch", [f"kconv refuses, Keras does not: {kconv_error!r}"[:400]], set()

    if "y" not in built:  # Keras's program would abort the process: kconv's must run
        layer, params = built["kconv"], built["params"]
        with lowering.recorded_choices() as calls:
            jax.block_until_ready(jax.jit(jax.value_and_grad(
                lambda p, x: jnp.sum(layer(p, x)), argnums=(0, 1)))(params, x))
        return "Keras would abort", [], {f"{op}:{low}" for op, low in calls}
    keras_layer, layer, params, expected = (built["keras"], built["kconv"], built["params"],
                                            built["y"])
    problems = []
    init_shapes = {k: tuple(v.shape) for k, v in built["init"].items()}
    if list(init_shapes.items()) != [(k, tuple(v.shape)) for k, v in params.items()]:
        problems.append(f"weights {init_shapes} != Keras's "
                        f"{ {k: tuple(v.shape) for k, v in params.items()} }")
    for shape in (cfg.shape, (None,) + cfg.shape[1:]):
        want, got = (_shape_or_refusal(lambda: keras_layer.compute_output_shape(shape)),
                     _shape_or_refusal(lambda: layer.compute_output_shape(shape)))
        if want != got and not (isinstance(want, str) and isinstance(got, str)):
            problems.append(f"compute_output_shape{shape}: kconv {got} != Keras {want}")
    cotangent = rng.standard_normal(expected.shape).astype(np.float32)
    with lowering.recorded_choices() as calls:
        y = layer(params, x)
        keras_run, kconv_run = gradients(keras_layer, layer, params, x, cotangent)
    compared = [("output", y, expected), ("jit output", kconv_run[0], expected)]
    gradient_problems = _gradient_problems(keras_run, kconv_run) if expected.size else []
    if eager_gradients:  # the eager path runs each op's own jitted implementation
        eager = gradients(keras_layer, layer, params, x, cotangent, jit=False)[1]
        compared.append(("eager gradient of the input", eager[1], kconv_run[1]))
        compared += [(f"eager gradient of {k}", g, kconv_run[2][k])
                     for k, g in eager[2].items()]
    problems += [f"{what}: {msg}" for what, actual, want in compared
                 if (msg := _disagreement(actual, want))]
    outcome = "ok"
    if gradient_problems and cfg.kwargs.get("activation") is not None:
        kink = _kink_between(cfg, keras_layer, params, x)
        if kink.any():  # recompared without the outputs whose pre-activations straddle it
            masked = np.where(kink, 0.0, cotangent).astype(np.float32)
            gradient_problems = [f"{problem} (outputs at a kink left out)" for problem in
                                 _gradient_problems(*gradients(keras_layer, layer, params,
                                                               x, masked))]
            outcome = "ok, at a kink"
    problems += gradient_problems
    return ("mismatch" if problems else outcome), problems, {f"{op}:{low}" for op, low in calls}


def _gradient_problems(keras_run: tuple, kconv_run: tuple) -> list[str]:
    """What differs between the gradients of two :func:`gradients` runs."""
    compared = [("gradient of the input", kconv_run[1], keras_run[1])]
    compared += [(f"gradient of {k}", kconv_run[2][k], g) for k, g in keras_run[2].items()]
    return [f"{what}: {msg}" for what, actual, want in compared
            if (msg := _disagreement(actual, want))]


def _kink_between(cfg: Config, keras_layer: Any, params: dict[str, Any], x: np.ndarray
                  ) -> np.ndarray:
    """Where the activation's derivative at Keras's pre-activation differs from its
    derivative at kconv's: the two sit on either side of a kink of the activation (``relu``
    and ``selu`` at 0, ``relu6`` at 0 and 6, ...) within float32 rounding of each other.

    There the gradients differ by the jump, whichever side is right: a Conv3DTranspose
    output whose float64 value is -7.3e-9 came out of XLA's convolution as +8.1e-8 and out
    of kconv's sub-pixel form as 0.0, and ``selu``'s slope is 1.05 on one side and 1.76 on
    the other. So the fuzz compares the gradients without those outputs.
    """
    activation = keras_layer.activation
    keras_layer.activation = keras.activations.linear
    try:
        keras_z = np.asarray(keras_layer(x))
    finally:
        keras_layer.activation = activation
    kconv_z = np.asarray(getattr(kconv, cfg.name)(**{**cfg.kwargs, "activation": None})(
        params, x))
    slope = jax.vmap(jax.grad(lambda z: activation(z)))
    keras_slope = np.asarray(slope(jnp.asarray(keras_z.ravel())))
    kconv_slope = np.asarray(slope(jnp.asarray(kconv_z.ravel())))
    jump = np.abs(keras_slope - kconv_slope) > 1e-3 * np.maximum(1.0, np.abs(keras_slope))
    return jump.reshape(keras_z.shape)


def reproducer(cfg: Config) -> str:
    """Standalone code that rebuilds both layers of ``cfg`` and prints their outputs'
    shapes and largest difference."""
    return f'''import os; os.environ["KERAS_BACKEND"] = "jax"
import jax, jax.numpy as jnp, numpy as np, keras, kconv
name, kwargs, shape = {cfg.name!r}, {cfg.kwargs!r}, {cfg.shape!r}
rng = np.random.default_rng({cfg.seed}); x = rng.standard_normal(shape).astype(np.float32)
k = getattr(keras.layers, name)(**kwargs); k.build(shape)
w = [rng.standard_normal(v.shape).astype(np.float32) * 0.5 for v in k.get_weights()]
k.set_weights(w)
params = {{v.path.split("/")[-1]: jnp.asarray(a) for v, a in zip(k.weights, w)}}
want, got = np.asarray(k(x)), np.asarray(getattr(kconv, name)(**kwargs)(params, x))
print(want.shape, got.shape, np.abs(got - want).max() if got.shape == want.shape else None)'''


# --- the run ----------------------------------------------------------------------------------

def run(seed: int = 0, count: int = 600, minutes: float = 15.0,
        only: list[str] | None = None, out: Any = sys.stdout) -> list[tuple[Config, list[str]]]:
    """Checks up to ``count`` random configurations (for at most ``minutes``), prints the
    mismatches and a summary to ``out``, and returns the mismatches."""
    names = only or list(WEIGHTS)
    p = np.array([WEIGHTS.get(n, 1) for n in names], float)
    rng, start = np.random.default_rng(seed), time.monotonic()
    outcomes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    reached: collections.Counter = collections.Counter()
    mismatches = []
    for i in range(count):
        if time.monotonic() - start > 60 * minutes:
            break
        cfg = draw(str(rng.choice(names, p=p / p.sum())), rng)
        try:
            outcome, problems, lowerings = check(cfg, eager_gradients=i % 8 == 0)
        except Exception:  # noqa: BLE001 - a crash of either side is a finding too
            outcome, problems, lowerings = "mismatch", [traceback.format_exc()[-800:]], set()
        outcomes[cfg.name][outcome] += 1
        reached.update(lowerings)
        if problems:
            mismatches.append((cfg, problems))
            print(f"[{i}] MISMATCH {cfg.name} {cfg.kwargs} input {cfg.shape}", file=out)
            for problem in problems:
                print(f"    {problem}", file=out)
            print("    reproducer:\n      " + reproducer(cfg).replace("\n", "\n      "),
                  file=out, flush=True)
        if i % 50 == 49:  # keep the caches of hundreds of distinct programs bounded
            jax.clear_caches()
            keras.backend.clear_session()
    total = sum(sum(c.values()) for c in outcomes.values())
    print(f"{total} configurations in {time.monotonic() - start:.0f} s, seed {seed}", file=out)
    for name in sorted(outcomes):
        print(f"  {name:16s} {dict(outcomes[name])}", file=out)
    print(f"lowerings reached: {dict(sorted(reached.items()))}", file=out)
    print(f"mismatches: {len(mismatches)}", file=out)
    return mismatches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=600, help="configurations at most")
    parser.add_argument("--minutes", type=float, default=15.0, help="time limit")
    parser.add_argument("--only", default="", help="comma-separated layer names")
    args = parser.parse_args()
    only = [n for n in args.only.split(",") if n] or None
    return 1 if run(args.seed, args.count, args.minutes, only) else 0


if __name__ == "__main__":
    sys.exit(main())
