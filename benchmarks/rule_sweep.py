#!/usr/bin/env python
"""kconv's lowering rule against XLA's convolution, on calls beyond the benchmark's workloads.

`bench.py` times fifteen workloads; the rule (:func:`kconv.ops.lowering.choose`) was tuned on
them and on side probes. This sweep checks it where nobody tuned it: a grid of calls around
each of the rule's regions (kernel sizes, strides, dilations, channel counts, ranks,
data formats, batch sizes), each timed with the lowering the rule chooses and with
``kconv.config.conv_lowering("xla")`` (``lax.conv_general_dilated`` / ``jax.image.resize`` as
written), side by side in one process:

- forward and forward+backward (gradients w.r.t. the input and the weights), medians, the two
  interleaved round-robin with one untimed lead-in call each (``bench.round_robin``);
- lower + compile from cold caches, medians of ``--compile-repeats`` turns;
- what the compiled program holds beyond its arguments and outputs, its temporaries and
  constants (``bench._memory``'s held bytes: on XLA:CPU ``temp_size_in_bytes`` leaves the
  constants out, and the reported peak is the arguments, outputs and constants whatever the
  temporaries);
- the numbers: the chosen lowering's output / gradients against XLA's.

Where the rule chooses XLA itself there is nothing to compare and the call is listed only.
Writes ``benchmarks/RULE_SWEEP.md`` and ``benchmarks/rule_sweep.json``:

    python benchmarks/rule_sweep.py                   # the whole grid (~8 min on 2 cores)
    python benchmarks/rule_sweep.py --cases D1,E2 --seconds 1
    python benchmarks/rule_sweep.py --quick           # tiny shapes (what the test runs)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import bench  # noqa: E402  (puts this checkout's kconv on the path)
import numpy as np  # noqa: E402

pc = time.perf_counter

#: Ratios (chosen ÷ XLA's) above which a row is flagged: time beyond this machine's noise
#: (the same program timed twice reads up to ~1.2× apart in one row), lower + compile past
#: the 1.5× kconv holds to, held bytes (temporaries and constants) above XLA's at all.
FLAG_TIME, FLAG_COMPILE, FLAG_HELD = 1.15, 1.5, 1.0


@dataclasses.dataclass(frozen=True)
class Case:
    """One call: ``op`` of ``kconv.ops`` on an input of ``shape`` with ``kernel`` (the op's
    weight layout; ``None`` for upsampling) and keyword arguments ``kw``."""

    id: str
    region: str
    op: str
    shape: tuple[int, ...]
    kernel: tuple[int, ...] | None = None
    kw: dict[str, Any] = dataclasses.field(default_factory=dict)
    bias: bool = True
    dtype: str = "float32"

    def label(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.kw.items())
        kernel = f" k{self.kernel}" if self.kernel else ""
        return f"{self.op} {self.shape}{kernel}{', ' + args if args else ''}" + (
            "" if self.bias or self.op == "upsample" else ", no bias") + (
            "" if self.dtype == "float32" else f", {self.dtype}")

    def sixteen_bit(self) -> bool:
        return self.dtype in ("float16", "bfloat16")


def _c(id, region, op, shape, kernel=None, bias=True, dtype="float32", **kw):  # noqa: A002
    return Case(id, region, op, tuple(shape), None if kernel is None else tuple(kernel),
                kw, bias, dtype)


CF = {"data_format": "channels_first"}
CASES: list[Case] = [
    # pointwise_dot: 1x1 dense convolutions.
    _c("P1", "pointwise_dot", "conv", (8, 32, 32, 64), (1, 1, 64, 128)),
    _c("P2", "pointwise_dot", "conv", (8, 32, 32, 8), (1, 1, 8, 8)),
    _c("P3", "pointwise_dot", "conv", (8, 64, 32, 32), (1, 1, 64, 64), **CF),
    _c("P4", "pointwise_dot", "conv", (8, 1024, 64), (1, 64, 64)),
    _c("P5", "pointwise_dot", "conv", (2, 16, 16, 16, 32), (1, 1, 1, 32, 32)),
    _c("P6", "pointwise_dot", "conv", (8, 32, 32, 64), (1, 1, 64, 64), strides=2),
    _c("P7", "pointwise_dot", "conv", (8, 32, 32, 64), (1, 1, 64, 64), bias=False),
    _c("P8", "pointwise_dot", "conv", (1, 64, 64, 256), (1, 1, 256, 64)),
    # depthwise_taps: one input channel per group.
    _c("D1", "depthwise_taps", "depthwise_conv", (8, 64, 64, 32), (3, 3, 32, 1), padding="same"),
    _c("D2", "depthwise_taps", "depthwise_conv", (8, 32, 32, 64), (5, 5, 64, 1), padding="same"),
    _c("D3", "depthwise_taps", "depthwise_conv", (4, 32, 32, 64), (7, 7, 64, 1), padding="same"),
    _c("D4", "depthwise_taps", "depthwise_conv", (8, 32, 32, 32), (3, 3, 32, 2), padding="same"),
    _c("D5", "depthwise_taps", "depthwise_conv", (8, 64, 64, 32), (3, 3, 32, 1), strides=2,
       padding="same"),
    _c("D6", "depthwise_taps", "depthwise_conv", (8, 32, 32, 64), (3, 3, 64, 1), padding="same",
       dilation_rate=2),
    _c("D7", "depthwise_taps", "depthwise_conv", (8, 64, 32, 32), (3, 3, 64, 1), padding="same",
       **CF),
    _c("D8", "depthwise_taps", "depthwise_conv", (8, 1024, 64), (3, 64, 1), padding="same"),
    _c("D9", "depthwise_taps", "depthwise_conv", (8, 1024, 64), (9, 64, 1), padding="causal"),
    _c("D10", "depthwise_taps", "depthwise_conv", (2, 16, 16, 16, 16), (3, 3, 3, 16, 1),
       padding="same"),
    _c("D11", "depthwise_taps", "depthwise_conv", (8, 34, 34, 64), (3, 3, 64, 1)),
    _c("D12", "depthwise_taps", "depthwise_conv", (4, 16, 16, 512), (3, 3, 512, 1),
       padding="same"),
    _c("D13", "depthwise_taps", "depthwise_conv", (8, 64, 64, 4), (3, 3, 4, 1), padding="same"),
    _c("D14", "depthwise_taps", "depthwise_conv", (8, 32, 32, 64), (2, 2, 64, 1), padding="same"),
    _c("D15", "depthwise_taps", "depthwise_conv", (1, 112, 112, 32), (3, 3, 32, 1),
       padding="same"),
    # block_diagonal / grouped_split: grouped dense convolutions.
    _c("G1", "grouped", "conv", (8, 32, 32, 64), (3, 3, 32, 64), padding="same"),
    _c("G2", "grouped", "conv", (8, 32, 32, 64), (3, 3, 16, 64), padding="same"),
    _c("G3", "grouped", "conv", (8, 16, 16, 128), (3, 3, 16, 128), padding="same"),
    _c("G4", "grouped", "conv", (4, 16, 16, 256), (3, 3, 16, 256), padding="same"),
    _c("G5", "grouped", "conv", (8, 512, 64), (3, 16, 64), padding="same"),
    _c("G6", "grouped", "conv", (2, 8, 8, 8, 32), (3, 3, 3, 16, 32), padding="same"),
    _c("G7", "grouped", "conv", (8, 32, 32, 64), (3, 3, 16, 64), padding="same", strides=2),
    _c("G8", "grouped", "conv", (8, 512, 256), (3, 64, 256), padding="same"),
    _c("G9", "grouped", "conv", (16, 1024, 32), (5, 8, 32), padding="same"),
    # eigen_crop: stride-1 dense 2-D convolutions with a bias.
    _c("E1", "eigen_crop", "conv", (8, 32, 32, 32), (3, 3, 32, 32), padding="same"),
    _c("E2", "eigen_crop", "conv", (8, 64, 64, 3), (3, 3, 3, 32), padding="same"),
    _c("E3", "eigen_crop", "conv", (4, 32, 32, 64), (5, 5, 64, 64), padding="same"),
    _c("E4", "eigen_crop", "conv", (8, 32, 32, 64), (3, 3, 64, 64), padding="same",
       dilation_rate=2),
    _c("E5", "eigen_crop", "conv", (8, 64, 32, 32), (3, 3, 64, 64), padding="same", **CF),
    _c("E6", "eigen_crop", "conv", (8, 34, 34, 64), (3, 3, 64, 64)),
    _c("E7", "eigen_crop", "conv", (8, 32, 32, 17), (3, 3, 17, 17), padding="same"),
    _c("E8", "eigen_crop", "conv", (1, 128, 128, 32), (3, 3, 32, 32), padding="same"),
    _c("E9", "eigen_crop", "conv", (8, 32, 32, 96), (3, 3, 96, 96), padding="same"),
    _c("E10", "eigen_crop", "conv", (8, 16, 16, 128), (3, 3, 128, 64), padding="same"),
    _c("E11", "eigen_crop", "conv", (32, 8, 8, 64), (3, 3, 64, 64), padding="same"),
    _c("E12", "eigen_crop", "conv", (8, 32, 32, 64), (1, 3, 64, 64), padding="same"),
    # width_fold: 3-D dense convolutions.
    _c("F1", "width_fold", "conv", (2, 16, 16, 16, 16), (3, 3, 3, 16, 32), padding="same"),
    _c("F2", "width_fold", "conv", (2, 16, 16, 16, 16), (3, 3, 3, 16, 32), padding="same",
       strides=2),
    _c("F3", "width_fold", "conv", (2, 16, 16, 16, 16), (3, 3, 3, 16, 32), padding="same", **CF),
    _c("F4", "width_fold", "conv", (1, 16, 32, 32, 8), (3, 3, 3, 8, 16), padding="same"),
    _c("F5", "width_fold", "conv", (2, 8, 8, 8, 64), (3, 3, 3, 64, 64), padding="same"),
    _c("F6", "width_fold", "conv", (2, 16, 16, 16, 32), (1, 1, 3, 32, 32), padding="same"),
    _c("F7", "width_fold", "conv", (2, 18, 18, 18, 16), (3, 3, 3, 16, 16)),
    # width_fold with few channels (folded to 16 or fewer: Eigen's 2-D convolution), the
    # first layer of a 3-D network. (tap_loop, XLA's forward with the same gradients, is
    # left to folded inputs above 256 MiB: too big to time here.)
    _c("L1", "width_fold (few channels)", "conv", (2, 16, 16, 16, 4), (3, 3, 3, 4, 8),
       padding="same"),
    _c("L2", "width_fold (few channels)", "conv", (1, 8, 8, 8, 2), (3, 3, 3, 2, 4),
       padding="same"),
    _c("L3", "width_fold (few channels)", "conv", (4, 32, 32, 32, 1), (3, 3, 3, 1, 8),
       padding="same"),
    _c("L4", "width_fold (few channels)", "conv", (2, 16, 16, 16, 4), (3, 3, 3, 4, 8),
       padding="same", strides=2),
    # ... whose gathered taps fit under the output: inside a derivative the merged plane's
    # value (width_fold._merged_plane_fits), M2's first layer and two more.
    _c("L5", "width_fold (few channels)", "conv", (2, 16, 16, 16, 4), (3, 3, 3, 4, 16),
       padding="same"),
    _c("L6", "width_fold (few channels)", "conv", (2, 32, 32, 32, 3), (3, 3, 3, 3, 32),
       padding="same"),
    _c("L7", "width_fold (few channels)", "conv", (2, 16, 16, 16, 6), (3, 3, 5, 6, 64),
       padding="valid", strides=(2, 1, 2)),
    # subpixel_transpose (and grouped_split): transposed convolutions.
    _c("T1", "subpixel_transpose", "conv_transpose", (8, 16, 16, 64), (3, 3, 32, 64), strides=2,
       padding="same"),
    _c("T2", "subpixel_transpose", "conv_transpose", (8, 16, 16, 64), (4, 4, 32, 64), strides=2,
       padding="same"),
    _c("T3", "subpixel_transpose", "conv_transpose", (8, 256, 64), (3, 64, 64), strides=2,
       padding="same"),
    _c("T4", "subpixel_transpose", "conv_transpose", (2, 8, 8, 8, 16), (3, 3, 3, 16, 16),
       strides=2, padding="same"),
    _c("T5", "subpixel_transpose", "conv_transpose", (8, 16, 16, 32), (3, 3, 32, 32), strides=3,
       padding="same"),
    _c("T6", "subpixel_transpose", "conv_transpose", (8, 16, 16, 64), (3, 3, 32, 64), strides=2),
    _c("T7", "subpixel_transpose", "conv_transpose", (8, 16, 16, 64), (3, 3, 32, 64), strides=2,
       padding="same", output_padding=0),
    _c("T8", "subpixel_transpose", "conv_transpose", (8, 64, 16, 16), (3, 3, 32, 64), strides=2,
       padding="same", **CF),
    _c("T9", "subpixel_transpose", "conv_transpose", (8, 16, 16, 8), (3, 3, 8, 8), strides=2,
       padding="same"),
    _c("T10", "grouped", "conv_transpose", (8, 16, 16, 64), (3, 3, 8, 64), strides=2,
       padding="same", groups=4),
    _c("T11", "subpixel_transpose", "conv_transpose", (1, 64, 64, 32), (2, 2, 16, 32),
       strides=2, padding="same"),
    _c("T12", "subpixel_transpose", "conv_transpose", (2, 8, 8, 8, 32), (3, 3, 3, 16, 32),
       strides=2, padding="same"),
    # flipped_forward: stride 1, one input channel per group.
    _c("T13", "flipped_forward", "conv_transpose", (8, 32, 32, 32), (3, 3, 1, 32),
       padding="same", groups=32),
    _c("T14", "flipped_forward", "conv_transpose", (8, 32, 32, 16), (3, 3, 2, 16),
       padding="same", groups=16),
    _c("T15", "flipped_forward", "conv_transpose", (8, 256, 64), (5, 1, 64), padding="valid",
       groups=64, dilation_rate=2),
    # bilinear_stencil: bilinear upsampling.
    _c("U1", "bilinear_stencil", "upsample", (8, 32, 32, 64), size=2, interpolation="bilinear"),
    _c("U2", "bilinear_stencil", "upsample", (8, 32, 32, 64), size=3, interpolation="bilinear"),
    _c("U3", "bilinear_stencil", "upsample", (8, 32, 32, 64), size=(2, 3),
       interpolation="bilinear"),
    _c("U4", "bilinear_stencil", "upsample", (8, 64, 32, 32), size=2, interpolation="bilinear",
       **CF),
    _c("U5", "bilinear_stencil", "upsample", (8, 64, 64, 3), size=2, interpolation="bilinear"),
    _c("U6", "bilinear_stencil", "upsample", (2, 16, 16, 16, 8), size=2,
       interpolation="bilinear"),
    # 16-bit: the layers' call (16-bit operands, float32 accumulation, the output rounded
    # once), through every lowering the rule gives such calls; XLA:CPU widens 16-bit
    # convolutions to float32 itself.
    _c("H1", "16-bit", "conv", (8, 32, 32, 32), (3, 3, 32, 32), dtype="float16",
       padding="same"),
    _c("H2", "16-bit", "conv", (8, 32, 32, 32), (3, 3, 32, 32), dtype="bfloat16",
       padding="same"),
    _c("H3", "16-bit", "conv", (2, 16, 16, 16, 16), (3, 3, 3, 16, 32), dtype="float16",
       padding="same"),
    _c("H4", "16-bit", "conv", (2, 16, 16, 16, 16), (3, 3, 3, 16, 32), dtype="bfloat16",
       padding="same"),
    _c("H5", "16-bit", "conv", (2, 16, 16, 16, 4), (3, 3, 3, 4, 8), dtype="float16",
       padding="same"),
    _c("H6", "16-bit", "conv", (2, 16, 16, 16, 4), (3, 3, 3, 4, 8), dtype="bfloat16",
       padding="same"),
    _c("H7", "16-bit", "depthwise_conv", (8, 64, 64, 32), (3, 3, 32, 1), dtype="float16",
       padding="same"),
    _c("H8", "16-bit", "depthwise_conv", (8, 64, 64, 32), (3, 3, 32, 1), dtype="bfloat16",
       padding="same"),
    _c("H9", "16-bit", "conv", (8, 32, 32, 64), (1, 1, 64, 128), dtype="bfloat16"),
    _c("H10", "16-bit", "conv", (8, 32, 32, 64), (3, 3, 16, 64), dtype="bfloat16",
       padding="same"),
    _c("H11", "16-bit", "conv_transpose", (8, 16, 16, 64), (3, 3, 32, 64), dtype="float16",
       strides=2, padding="same"),
    _c("H12", "16-bit", "conv_transpose", (8, 16, 16, 64), (3, 3, 32, 64), dtype="bfloat16",
       strides=2, padding="same"),
    _c("H13", "16-bit", "conv_transpose", (2, 8, 8, 8, 16), (3, 3, 3, 16, 16),
       dtype="float16", strides=2, padding="same"),
    _c("H14", "16-bit", "upsample", (8, 32, 32, 64), dtype="bfloat16", size=2,
       interpolation="bilinear"),
]


def quick_case(case: Case) -> Case:
    """``case`` on a tiny input: batch 1, each spatial axis at most 8."""
    first = case.kw.get("data_format") == "channels_first"
    shape = list(case.shape)
    spatial = range(2, len(shape)) if first else range(1, len(shape) - 1)
    shape[0] = 1
    for a in spatial:
        shape[a] = min(shape[a], 8)
    return dataclasses.replace(case, shape=tuple(shape))


def build(case: Case, seed: int = 0):
    """``(fn(params, x), params, x, cotangent)`` for ``case``."""
    import jax
    import jax.numpy as jnp

    from kconv import ops

    rng = np.random.default_rng(seed)
    dtype = jnp.dtype(case.dtype)
    x = jnp.asarray(rng.standard_normal(case.shape), dtype)
    params: dict[str, Any] = {}
    if case.op == "upsample":
        def fn(p, x):
            return ops.upsample(x, **case.kw)
    else:
        fan_in = int(np.prod(case.kernel[:-1]))
        params["kernel"] = jnp.asarray(rng.standard_normal(case.kernel) / np.sqrt(fan_in),
                                       dtype)
        if case.bias:
            filters = (case.kernel[-2] * case.kw.get("groups", 1) if case.op == "conv_transpose"
                       else case.kernel[-1] * (case.kernel[-2] if case.op == "depthwise_conv"
                                               else 1))
            params["bias"] = jnp.asarray(rng.standard_normal(filters) * 0.1, dtype)
        op = getattr(ops, case.op)
        # As the layers call a 16-bit op: float32 accumulation, rounded once at the end.
        accumulation = jnp.float32 if case.sixteen_bit() else None

        def fn(p, x):
            return op(x, p["kernel"], bias=p.get("bias"), preferred_element_type=accumulation,
                      **case.kw).astype(dtype)
    y = jax.eval_shape(fn, params, x)
    ct = jnp.asarray(rng.standard_normal(y.shape), dtype)
    return fn, params, x, ct


def _compile(impl, mode: str, lowering: str) -> tuple[Any, float]:
    """``impl``'s program for ``mode`` (``bench._jax_target``) compiled under
    ``conv_lowering(lowering)`` from cold caches, and its lower + compile seconds."""
    import jax

    from kconv import config

    target, args = bench._jax_target(impl, mode)
    with config.conv_lowering(lowering):
        jax.clear_caches()
        t0 = pc()
        compiled = jax.jit(target).lower(*args).compile()
        return compiled, pc() - t0


def _chosen(fn, args) -> list[str]:
    import jax

    from kconv import config
    from kconv.ops import lowering

    with config.conv_lowering("auto"), lowering.recorded_choices() as calls:
        jax.clear_caches()
        jax.eval_shape(fn, *args)
    return [name for _, name in calls]


def _max_error(a, b) -> float:
    """The largest ``bench.compare`` error of ``a``'s leaves against ``b``'s."""
    import jax

    return max(bench.compare(np.asarray(u, np.float64), np.asarray(v, np.float64), 0.0)["err"]
               for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def measure(case: Case, modes, seconds: float, compile_repeats: int) -> dict[str, Any]:
    import jax

    fn, params, x, ct = build(case)
    impl = types.SimpleNamespace(fn=fn, weights=params, x=x, ct=ct)  # bench's Impl fields
    row: dict[str, Any] = {"id": case.id, "region": case.region, "call": case.label(),
                           "chosen": _chosen(fn, (params, x)), "modes": {}}
    if all(name == "xla" for name in row["chosen"]):
        return row
    for mode in modes:
        args = bench._jax_target(impl, mode)[1]
        compiled = {}
        for lowering in ("auto", "xla"):
            compiled[lowering], _ = _compile(impl, mode, lowering)
        out = {k: jax.block_until_ready(c(*args)) for k, c in compiled.items()}
        calls = {k: (lambda c=c: jax.block_until_ready(c(*args))) for k, c in compiled.items()}
        for c in calls.values():
            c()
        samples = bench.round_robin(calls, rounds=400, min_rounds=6, seconds=seconds,
                                    gap_s=0.0, lead_in=1)
        times = {k: 1e3 * statistics.median(v) for k, v in samples.items()}
        turns: dict[str, list[float]] = {"auto": [], "xla": []}
        for r in range(compile_repeats):
            for lowering in (("auto", "xla") if r % 2 == 0 else ("xla", "auto")):
                turns[lowering].append(_compile(impl, mode, lowering)[1])
        memory = {k: bench._memory(c) for k, c in compiled.items()}
        row["modes"][mode] = {
            "ms": times, "n": {k: len(v) for k, v in samples.items()},
            "compile_s": {k: statistics.median(v) for k, v in turns.items()},
            "held_bytes": {k: m.get("held_bytes") for k, m in memory.items()},
            "same_program": bench.hlo_fingerprint(compiled["auto"])
            == bench.hlo_fingerprint(compiled["xla"]),
            "max_error": _max_error(out["auto"], out["xla"]),
            "tolerance": tolerance(case),
        }
        m = row["modes"][mode]
        m["time_ratio"] = times["auto"] / times["xla"]
        m["compile_ratio"] = m["compile_s"]["auto"] / m["compile_s"]["xla"]
        ta, tx = m["held_bytes"]["auto"], m["held_bytes"]["xla"]
        m["held_ratio"] = None if ta is None or tx is None else (
            ta / tx if tx else (1.0 if not ta else float("inf")))
        m["flags"] = flags(m, mode)
    return row


def tolerance(case: Case) -> float:
    """The largest difference between the chosen lowering's numbers and XLA's, relative to
    the largest entry, that is rounding: 1e-4 in float32; in 16-bit both round the same
    float32 sums once, so two units in the last place (2 × the dtype's epsilon)."""
    import jax.numpy as jnp

    return 2 * float(jnp.finfo(case.dtype).eps) if case.sixteen_bit() else 1e-4


def flags(m: dict[str, Any], mode: str) -> list[str]:
    """What in one mode's measurement breaks the rule's promise: chosen ≤ XLA's in time,
    ≤ 1.5 × in compile time, ≤ in held bytes (temporaries and constants) of
    forward+backward (the memory kconv holds to; a forward's extra bytes are listed, not
    flagged)."""
    out = []
    if m["time_ratio"] > FLAG_TIME and not m["same_program"]:
        out.append("time")
    if m["compile_ratio"] > FLAG_COMPILE:
        out.append("compile")
    if mode == "fwdbwd" and m["held_ratio"] is not None and m["held_ratio"] > FLAG_HELD:
        out.append("memory")
    if m["max_error"] > m["tolerance"]:
        out.append("numbers")
    return out


def repaid_after(m: dict[str, Any]) -> str:
    """How many calls the chosen lowering's time saving takes to repay its extra lower +
    compile time: "—" where it compiles no slower, "never" where it saves nothing."""
    extra_ms = 1e3 * (m["compile_s"]["auto"] - m["compile_s"]["xla"])
    if extra_ms <= 0:
        return "—"
    saved_ms = m["ms"]["xla"] - m["ms"]["auto"]
    return "never" if saved_ms <= 0 else f"{math.ceil(extra_ms / saved_ms)} calls"


def _mib(b) -> str:
    return "—" if b is None else f"{b / 2**20:.2f}"


def render(res: dict[str, Any]) -> str:
    mach = res["machine"]
    lines = [
        "# kconv's lowering rule against XLA's convolution",
        "",
        f"Written by `python benchmarks/rule_sweep.py` on {res['date']} (run time "
        f"{res['wall_s'] / 60:.1f} min; kconv checkout {mach.get('kconv_git', '?')}; "
        f"{mach.get('cpu', '?')}, {mach.get('affinity') or mach.get('cpu_count')} cores; "
        f"jax {mach.get('versions', {}).get('jax', '?')}).",
        "",
        "Each call is computed with the lowering `kconv.ops.lowering.choose` picks for it "
        "(**chosen**) and with `kconv.config.conv_lowering(\"xla\")` (XLA's convolution or "
        "`jax.image.resize` as written), in one process: medians of the two interleaved "
        "round-robin (each timed call after one untimed call of the same program), lower + "
        "compile from cold caches (medians), and what the compiled program holds beyond its "
        "arguments and outputs, its temporaries and constants (`bench._memory`'s held "
        "bytes: on XLA:CPU `temp_size_in_bytes` leaves the constants out and "
        "`peak_memory_in_bytes` the temporaries). Ratios are chosen ÷ XLA's. Flags: "
        f"**time** above {FLAG_TIME} (this machine's noise reaches ~1.2 for one program), "
        f"**compile** above {FLAG_COMPILE}, **memory** forward+backward held bytes above "
        "XLA's, **numbers** a difference above 1e-4 of the largest "
        "entry (16-bit rows: 2 × the dtype's epsilon, two units in the last place). ≡: the chosen program is XLA's. *Compile repaid after*: the calls whose "
        "time saving pays back the extra lower + compile time (— where it compiles no "
        "slower).",
        "",
    ]
    for mode, title in (("fwd", "Forward"), ("fwdbwd", "Forward + backward")):
        lines += [f"## {title}", "",
                  "| id | call | chosen | chosen ms | XLA ms | time ÷ | compile ÷ | "
                  "compile repaid after | held MiB (chosen / XLA) | max error | flags |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in res["rows"]:
            m = row["modes"].get(mode)
            if m is None:
                continue
            same = " ≡" if m["same_program"] else ""
            lines.append(
                f"| {row['id']} | {row['call']} | {', '.join(sorted(set(row['chosen'])))} | "
                f"{m['ms']['auto']:.3f} | {m['ms']['xla']:.3f} | "
                f"{m['time_ratio']:.2f}{same} | {m['compile_ratio']:.2f} | "
                f"{repaid_after(m)} | "
                f"{_mib(m['held_bytes']['auto'])} / {_mib(m['held_bytes']['xla'])} | "
                f"{m['max_error']:.1e} | {' '.join(m['flags']) or '—'} |")
        lines.append("")
    plain = [r for r in res["rows"] if not r["modes"]]
    if plain:
        lines += ["## Calls the rule leaves to XLA", "",
                  "| id | region | call |", "|---|---|---|"]
        lines += [f"| {r['id']} | {r['region']} | {r['call']} |" for r in plain]
        lines.append("")
    return "\n".join(lines)


_ANALYSIS_MARK = "<!-- hand-written analysis below: rule_sweep.py keeps it -->"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", help="comma-separated ids (default: all)")
    ap.add_argument("--modes", default="fwd,fwdbwd")
    ap.add_argument("--seconds", type=float, default=1.0, help="timing per case and mode")
    ap.add_argument("--compile-repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="tiny shapes, few samples")
    ap.add_argument("--out", default=str(HERE / "RULE_SWEEP.md"))
    ap.add_argument("--json", default=None, help="default: next to --out, rule_sweep.json")
    a = ap.parse_args(argv)
    cases = CASES
    if a.cases:
        wanted = a.cases.split(",")
        unknown = set(wanted) - {c.id for c in CASES}
        if unknown:
            ap.error(f"--cases: unknown ids {sorted(unknown)}")
        cases = [c for c in CASES if c.id in wanted]
    if a.quick:
        cases = [quick_case(c) for c in cases]
        a.seconds, a.compile_repeats = min(a.seconds, 0.05), min(a.compile_repeats, 1)
    modes = a.modes.split(",")
    start = pc()
    rows = []
    for case in cases:
        row = measure(case, modes, a.seconds, a.compile_repeats)
        rows.append(row)
        summary = "; ".join(
            f"{mode} {m['time_ratio']:.2f} / {m['compile_ratio']:.2f} / "
            f"{m['held_ratio'] if m['held_ratio'] is not None else 0:.2f} "
            f"{' '.join(m['flags'])}"
            for mode, m in row["modes"].items()) or "xla"
        print(f"{row['id']:4s} {','.join(sorted(set(row['chosen']))):20s} {summary}", flush=True)
    res = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "wall_s": pc() - start, "machine": bench.machine_info(), "rows": rows}
    out = Path(a.out)
    kept = ""
    if out.exists() and _ANALYSIS_MARK in out.read_text():
        kept = out.read_text().split(_ANALYSIS_MARK, 1)[1]
    out.write_text(render(res) + ("\n" + _ANALYSIS_MARK + kept if kept else ""))
    Path(a.json or out.with_name("rule_sweep.json")).write_text(
        json.dumps(bench._jsonable(res), indent=1))
    return res


if __name__ == "__main__":
    main()
