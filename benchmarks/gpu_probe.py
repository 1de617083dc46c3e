#!/usr/bin/env python
"""Candidate lowerings for a GPU, timed there against kconv's GPU path (XLA's convolution).

On an H200 (RESULTS-gpu.md) the rows where kconv is slower than torch run XLA:GPU's own
programs, the same for every JAX implementation: W6's float32 forward+backward (a dilated
Conv1D, 3.3× torch), X2's and W5's forward+backward (transposed convolutions' gradients).
A per-backend rule needs a measurement on the device; this probe makes it, per workload,
dtype and mode (forward, forward+backward), interleaving the variants round-robin:

* ``xla``: the kconv layer as it runs on that backend (``conv_lowering("xla")``: XLA's
  convolution, the 16-bit device path included);
* ``cpu_rule``: the same layer with the lowering kconv's rule picks for XLA:CPU (sub-pixel
  transposed convolution, depthwise taps, width fold, ...), forced onto the device;
* ``phases`` (a dilated 1-D convolution with its padding and length divisible by the
  dilation ``d``, as W6): the undilated convolution of ``d`` interleaved phases, the batch
  × ``d`` — cuDNN's fast undilated kernels, forward and gradients.

Each variant's outputs and gradients are checked against ``xla``'s. Usage, on the device::

    python benchmarks/gpu_probe.py --batch-scale 8 --dtypes float32,bfloat16
    python benchmarks/gpu_probe.py --quick        # tiny shapes on any backend (the test)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
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
from bench import _jax_target  # noqa: E402
from bench_impls import BUILDERS, make_problem  # noqa: E402


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


def _phases_fn(layer):
    """A dilated channels_last Conv1D (+ bias) as an undilated one over its ``d`` phases, or
    ``None`` where that does not apply."""
    from jax import lax

    from kconv.ops import shapes

    if (layer.rank != 1 or layer.dilation_rate == (1,) or layer.groups != 1
            or layer.data_format != "channels_last" or not isinstance(layer.padding, str)):
        return None
    (d,) = layer.dilation_rate

    def fn(params, x):
        n, length, c = x.shape
        k = params["kernel"].shape[0]
        lo, hi = shapes.conv_padding(length, k, 1, layer.padding, d)
        if length % d or lo % d or hi % d:
            raise ValueError("phases: length and padding must be multiples of the dilation")
        xp = x.reshape(n, length // d, d, c).transpose(0, 2, 1, 3).reshape(n * d, -1, c)
        y = lax.conv_general_dilated(xp, params["kernel"].astype(x.dtype), (1,),
                                     [(lo // d, hi // d)],
                                     dimension_numbers=("NWC", "WIO", "NWC"))
        y = y.reshape(n, d, -1, y.shape[-1]).transpose(0, 2, 1, 3).reshape(n, -1, y.shape[-1])
        return y + params["bias"].astype(y.dtype) if layer.use_bias else y

    return fn


def _compiled(impl, fn, mode):
    """``fn`` in ``impl``'s place, jitted and compiled as the harness times it
    (:func:`bench._jax_target`), and its arguments."""
    import jax

    target, args = _jax_target(dataclasses.replace(impl, fn=fn), mode)
    return jax.jit(target).lower(*args).compile(), args


def _relative_error(a, b) -> float:
    import jax

    la = [np.asarray(v, np.float64) for v in jax.tree.leaves(a)]
    lb = [np.asarray(v, np.float64) for v in jax.tree.leaves(b)]
    num = sum(float(np.sum((u - v) ** 2)) for u, v in zip(la, lb))
    den = sum(float(np.sum(v ** 2)) for v in lb)
    return (num / max(den, 1e-300)) ** 0.5


def probe(workload, dtype: str, mode: str, args) -> list[tuple[str, float, float]]:
    """``(variant, median ms, relative error against xla)`` for one workload and mode."""
    import jax

    from kconv import config

    p = make_problem(workload, workload.shape(quick=args.quick, batch_scale=args.batch_scale),
                     dtype)
    p.jax_device, p.torch_device = jax.devices()[0], "cpu"
    impl = BUILDERS["kconv"](p)
    variants = {}
    with config.conv_lowering("xla"):
        variants["xla"] = _compiled(impl, impl.fn, mode)
    with _cpu_rule():
        variants["cpu_rule"] = _compiled(impl, impl.fn, mode)
    import kconv

    layer = getattr(kconv, workload.layer)(**workload.args)
    phases = _phases_fn(layer) if isinstance(layer, kconv.Conv1D) else None
    if phases is not None:
        variants["phases"] = _compiled(impl, phases, mode)
    reference = variants["xla"][0](*variants["xla"][1])
    errors = {name: _relative_error(c(*a), reference) for name, (c, a) in variants.items()}
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
    return [(name, 1e3 * statistics.median(times[name]), errors[name]) for name in names]


def main(argv: list[str] | None = None) -> list[str]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="W5,W6,W7,X1,X2")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--modes", default="fwd,fwdbwd")
    ap.add_argument("--batch-scale", type=int, default=8)
    ap.add_argument("--calls", type=int, default=60, help="timed rounds (default 60)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny shapes, 2 rounds")
    ap.add_argument("--out", default=None, help="also write the table here")
    args = ap.parse_args(argv)
    if args.quick:
        args.calls, args.warmup, args.batch_scale = 2, 1, 1
    import jax

    lines = [f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), batch × "
             f"{args.batch_scale}, medians of {args.calls} interleaved calls", "",
             "| id | dtype | mode | variant | ms | / xla | relative error |",
             "|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for w in bw.by_id(args.workloads):
        for dtype in args.dtypes.split(","):
            for mode in args.modes.split(","):
                rows = probe(w, dtype, mode, args)
                base = rows[0][1]
                for name, ms, err in rows:
                    lines.append(f"| {w.id} | {dtype} | {mode} | {name} | {ms:.3f} | "
                                 f"{ms / base:.2f} | {err:.1e} |")
                    print(lines[-1], flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return lines


if __name__ == "__main__":
    main()
