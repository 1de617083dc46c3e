#!/usr/bin/env python
"""GPU lowerings timed on the device against XLA's convolution, and candidates for more.

On an H200 (RESULTS-gpu.md) the rows where kconv was slower than torch ran XLA:GPU's own
programs, the same for every JAX implementation: W6's float32 forward+backward (a dilated
Conv1D, 3.3× torch), X2's and W5's forward+backward (transposed convolutions' gradients).
This probe measured the lowerings kconv's GPU rule now takes there (``space_to_batch``,
``strided_dual``: kconv/ops/lowering/), and measures candidates, per workload, dtype and
mode (forward, forward+backward), interleaving the variants round-robin:

* ``xla``: the kconv layer with ``conv_lowering("xla")``: XLA's convolution (on a device
  with the 16-bit path), lax's program;
* ``auto``: the kconv layer as it runs on this backend (its rule);
* ``cpu_rule`` (not on the CPU): the lowering kconv's rule picks for XLA:CPU (sub-pixel
  transposed convolution, depthwise taps, width fold, ...), forced onto the device;
* ``space_to_batch`` (a dilated convolution, stride 1): that lowering forced (on the CPU
  too), and ``s2b_kernel`` / ``s2b_input`` with only the kernel's / the input's gradient
  in its phase form, the other lax's (W6 bfloat16 kept 1.03 × lax's forward+backward
  peak with both);
* ``explicit_pad`` (a causal convolution): the input padded by ``jnp.pad``, then the same
  layer with ``padding="valid"`` — how flax and Keras write it. On an H100 their W6 and M3
  bfloat16 forward+backward ran 4–6 % below lax's and kconv's (the convolution given its
  asymmetric padding: 0.89–0.90 against 0.94–0.95 ms, RESULTS-gpu.md), not measured alone.

Each row also has the compiled program's temporaries (``memory_analysis()``).

Each variant's outputs and gradients are checked against ``xla``'s (the harness's
check). Usage, on the device::

    python benchmarks/gpu_probe.py --batch-scale 8 --dtypes float32,bfloat16
    python benchmarks/gpu_probe.py --quick        # tiny shapes on any backend (the test)
    python benchmarks/gpu_probe.py --workloads W7,X1,X4 --modes fwd --hlo hlo.txt

``--hlo`` keeps the optimized programs (which kernels XLA:GPU calls, the transposes and
fusions around them) for reading after the lease: the forward rows slower than torch on
the H100 are XLA:GPU's own programs, and no profile of them was taken yet.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402

import bench_workloads as bw  # noqa: E402
from bench import _jax_target, compare  # noqa: E402
from bench_impls import BUILDERS, make_problem  # noqa: E402
from kconv.ops.shapes import conv_padding  # noqa: E402


@contextlib.contextmanager
def _cpu_rule():
    """Traces kconv as in a CPU-only process: its dispatch then applies the CPU's lowering
    directly, with no platform switch, whatever device the program runs on."""
    import jax

    real = jax.default_backend
    jax.default_backend = lambda: "cpu"
    try:
        yield
    finally:
        jax.default_backend = real


@contextlib.contextmanager
def _space_to_batch(gradients: str = "both"):
    """Every convolution takes ``space_to_batch`` (the probe asks only for dilated stride-1
    workloads), on every backend; with
    ``gradients="kernel"`` (``"input"``) only that gradient in the phase form, the other
    lax's."""
    from kconv.ops import lowering

    real, full = lowering.dispatch.choose, lowering.dispatch._CONV_LOWERINGS["space_to_batch"]
    lowering.dispatch.choose = lambda op, backend, spec: ("space_to_batch" if op == "conv"
                                                          else real(op, backend, spec))
    if gradients != "both":
        primitive = _one_gradient_primitive(gradients)
        lowering.dispatch._CONV_LOWERINGS["space_to_batch"] = (
            lambda x, kernel, *, spec, precision: primitive.bind(x, kernel, spec=spec,
                                                                 precision=precision))
    try:
        yield
    finally:
        lowering.dispatch.choose = real
        lowering.dispatch._CONV_LOWERINGS["space_to_batch"] = full


@functools.cache
def _one_gradient_primitive(gradients: str):
    """XLA's dilated convolution with one gradient in the space-to-batch form."""
    from kconv.ops.lowering import plain, primitives, space_to_batch

    lhs, rhs = primitives._transposes(space_to_batch._space_to_batch_value)
    if gradients == "kernel":
        lhs = plain._plain_input_gradient
    else:
        rhs = plain._plain_kernel_gradient
    return primitives._conv_primitive(f"probe_space_to_batch_{gradients}", plain._xla_conv,
                                      lhs, rhs)


#: Probe-only workloads: dilated (atrous) 2-D and 3-D convolutions.
PROBE_WORKLOADS = {w.id: w for w in (
    bw._w("D2", "Conv2D 3×3 dilation 2 same", "Conv2D", (16, 32, 32, 64), (2, 8, 8, 16),
          extra=True, filters=64, kernel_size=3, dilation_rate=2, padding="same"),
    bw._w("D3", "Conv3D 3×3×3 dilation 2 same", "Conv3D", (2, 16, 16, 16, 16),
          (1, 4, 4, 4, 8), extra=True, filters=32, kernel_size=3, dilation_rate=2,
          padding="same"),
)}


def _explicit_causal_pad(p):
    """The kconv layer of ``p`` (a causal ``Conv1D``, channels last) as a ``jnp.pad`` of its
    input and the same layer with ``padding="valid"``, on the same weights."""
    import jax.numpy as jnp

    w = p.workload
    valid = dataclasses.replace(w, kwargs=tuple(sorted({**w.args, "padding": "valid"}.items())))
    layer = BUILDERS["kconv"](dataclasses.replace(p, workload=valid)).fn
    (k,), (d,) = np.atleast_1d(w.args["kernel_size"]), np.atleast_1d(w.args.get("dilation_rate", 1))
    pads = ((0, 0), conv_padding(None, int(k), 1, "causal", dilation=int(d)), (0, 0))

    def fn(params, x):
        return layer(params, jnp.pad(x, pads))

    return fn


def _compiled(impl, fn, mode):
    """``fn`` in ``impl``'s place, jitted and compiled as the harness times it
    (:func:`bench._jax_target`), and its arguments."""
    import jax

    target, args = _jax_target(dataclasses.replace(impl, fn=fn), mode)
    return jax.jit(target).lower(*args).compile(), args


def _error(a, b) -> float:
    """The harness's numerical check (:func:`bench.compare`): the largest difference over
    the magnitude of ``b``, across the leaves."""
    import jax

    return max(compare(np.asarray(u, np.float64), np.asarray(v, np.float64), 0.0)["err"]
               for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def probe(workload, dtype: str, mode: str, args
          ) -> list[tuple[str, float, float, float]]:
    """``(variant, median ms, error against xla (:func:`_error`), temporaries MiB)`` for one
    workload and mode (the temporaries: ``memory_analysis().temp_size_in_bytes``)."""
    import jax

    from kconv import config

    p = make_problem(workload, workload.shape(quick=args.quick, batch_scale=args.batch_scale),
                     dtype)
    p.jax_device, p.torch_device = jax.devices()[0], "cpu"
    impl = BUILDERS["kconv"](p)
    variants = {}
    with config.conv_lowering("xla"):
        variants["xla"] = _compiled(impl, impl.fn, mode)
    variants["auto"] = _compiled(impl, impl.fn, mode)
    if jax.default_backend() != "cpu":
        with _cpu_rule():
            variants["cpu_rule"] = _compiled(impl, impl.fn, mode)
    args_ = workload.args
    if (max(np.atleast_1d(args_.get("dilation_rate", 1))) > 1
            and max(np.atleast_1d(args_.get("strides", 1))) == 1):
        for gradients, name in (("both", "space_to_batch"), ("kernel", "s2b_kernel"),
                                ("input", "s2b_input")):
            with _space_to_batch(gradients):
                variants[name] = _compiled(impl, impl.fn, mode)
    if args_.get("padding") == "causal":
        variants["explicit_pad"] = _compiled(impl, _explicit_causal_pad(p), mode)
    reference = variants["xla"][0](*variants["xla"][1])
    errors = {name: _error(c(*a), reference) for name, (c, a) in variants.items()}
    for c, a in variants.values():
        for _ in range(args.warmup):
            jax.block_until_ready(c(*a))
    times = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.calls):
        for name in names[r % len(names):] + names[:r % len(names)]:
            c, a = variants[name]
            start = time.perf_counter()
            jax.block_until_ready(c(*a))
            times[name].append(time.perf_counter() - start)
    temps = {name: c.memory_analysis().temp_size_in_bytes / 2 ** 20
             for name, (c, _) in variants.items()}
    if args.hlo:
        with open(args.hlo, "a") as f:
            for name, (c, _) in variants.items():
                f.write(f"==== {workload.id} {dtype} {mode} {name}\n{c.as_text()}\n")
    return [(name, 1e3 * statistics.median(times[name]), errors[name], temps[name])
            for name in names]


def main(argv: list[str] | None = None) -> list[str]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="D2,D3",
                    help="ids of bench_workloads.py or of PROBE_WORKLOADS")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--modes", default="fwd,fwdbwd")
    ap.add_argument("--batch-scale", type=int, default=8)
    ap.add_argument("--calls", type=int, default=60, help="timed rounds (default 60)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny shapes, 2 rounds")
    ap.add_argument("--out", default=None, help="also write the table here")
    ap.add_argument("--hlo", default=None,
                    help="append every variant's optimized program (compiled.as_text()) to "
                         "this file, each under a '==== id dtype mode variant' line")
    args = ap.parse_args(argv)
    if args.quick:
        args.calls, args.warmup, args.batch_scale = 2, 1, 1
    import jax

    lines = [f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), batch × "
             f"{args.batch_scale}, medians of {args.calls} interleaved calls", "",
             "| id | dtype | mode | variant | ms | / xla | max error / scale | temp MiB |",
             "|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    ids = [i.strip().upper() for i in args.workloads.split(",")]
    for w in [PROBE_WORKLOADS[i] if i in PROBE_WORKLOADS else bw.by_id(i)[0] for i in ids]:
        for dtype in args.dtypes.split(","):
            for mode in args.modes.split(","):
                rows = probe(w, dtype, mode, args)
                base = rows[0][1]
                for name, ms, err, temp in rows:
                    lines.append(f"| {w.id} | {dtype} | {mode} | {name} | {ms:.3f} | "
                                 f"{ms / base:.2f} | {err:.1e} | {temp:.1f} |")
                    print(lines[-1], flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return lines


if __name__ == "__main__":
    main()
