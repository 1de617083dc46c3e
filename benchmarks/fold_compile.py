"""A dense 3-D convolution's forward on XLA:CPU: compile time against run time, per shape.

Three forms of the same call (float32, channels_last, stride 1, with a bias), side by
side in one run:

- ``xla``: XLA's 3-D convolution (``kconv.config.conv_lowering("xla")``);
- ``rule``: what kconv's CPU rule takes, ``width_fold`` on these calls (the taps of ``W``
  folded into the channels, ``W`` into the batch: two loop fusions around a 2-D library
  convolution);
- ``merged``: ``width_fold._merged_plane_conv`` (the same fold as two library
  convolutions, no loop fusion; the value inside a derivative where its gathered taps fit
  under the output, and the 3-D sub-pixel form's phase convolution).

Per shape: lower + compile from cold caches (``jax.clear_caches()``), the median of
``--repeats`` measurements taken in turns; the run time, the median of ``--calls`` calls
taken round-robin (each right after one untimed call of the same form); each form's
largest difference from XLA's output, relative to its largest entry. It prints a Markdown
table (``--out`` writes it to a file as well):

    python benchmarks/fold_compile.py [--repeats 5] [--calls 30] [--quick] [--out FILE]

What it answers: how far ``width_fold``'s lower + compile sits above XLA's (the compile
line is 1.5 ×) against what it buys in run time, and what the merged plane, which
compiles like XLA's convolution, costs in run time instead (``benchmarks/RULE_SWEEP.md``
and ``RESULTS-models.md`` quote it).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import bench  # noqa: E402
from kconv import config, ops  # noqa: E402
from kconv.ops.lowering import ConvSpec, dispatch, width_fold  # noqa: E402
from kconv.ops.shapes import conv_padding  # noqa: E402

FORMS = ("xla", "rule", "merged")

#: ``(input shape, filters, kernel width, padding)``: few channels to many, three input
#: sizes, a 5-wide kernel, "valid" and two large calls.
GRID = ([(sp + (c,), f, 3, "same") for sp in [(2, 16, 16, 16), (2, 8, 8, 8), (1, 16, 64, 64)]
         for c in (1, 2, 3, 4, 6, 8, 12, 16, 32) for f in (16, 32)]
        + [((2, 16, 16, 16, 4), 16, 5, "same"), ((2, 16, 16, 16, 8), 16, 5, "same"),
           ((2, 16, 16, 16, 4), 16, 3, "valid"), ((2, 16, 16, 16, 8), 32, 3, "valid"),
           ((2, 32, 32, 32, 8), 16, 3, "same"), ((2, 16, 16, 16, 64), 64, 3, "same"),
           ((2, 32, 32, 32, 32), 64, 3, "same")])
QUICK_GRID = [((1, 4, 4, 4, 2), 8, 3, "same"), ((1, 4, 5, 6, 3), 4, 3, "valid")]


def _problem(shape, filters, k, padding):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((k, k, k, shape[-1], filters)) * 0.1, jnp.float32)
    bias = jnp.asarray(rng.standard_normal(filters), jnp.float32)
    pads = tuple(conv_padding(n, k, 1, padding) for n in shape[1:4])
    spec = ConvSpec(3, "channels_last", shape, kernel.shape, (1, 1, 1), pads, (1, 1, 1),
                    bias=True)

    def xla(x, kernel, bias):
        with config.conv_lowering("xla"):
            return ops.conv(x, kernel, padding=padding, bias=bias)

    def rule(x, kernel, bias):
        return ops.conv(x, kernel, padding=padding, bias=bias)

    def merged(x, kernel, bias):
        return width_fold._merged_plane_conv(x, kernel, spec=spec, precision=None) + bias

    with dispatch.recorded_choices() as calls:
        jax.eval_shape(rule, x, kernel, bias)
    return (x, kernel, bias), {"xla": xla, "rule": rule, "merged": merged}, calls[0][1]


def _compile_ms(fn, args) -> float:
    jax.clear_caches()
    start = time.perf_counter()
    jax.jit(fn).lower(*args).compile()
    return (time.perf_counter() - start) * 1e3


def measure(shape, filters, k, padding, repeats: int, calls: int) -> dict:
    """One row: the rule's choice, and per form its lower + compile and run medians (ms)
    and its largest difference from XLA's output."""
    args, fns, choice = _problem(shape, filters, k, padding)
    compile_ms = {name: [] for name in FORMS}
    for r in range(repeats):
        for name in FORMS[r % 3:] + FORMS[:r % 3]:
            compile_ms[name].append(_compile_ms(fns[name], args))
    jitted = {name: jax.jit(fns[name]) for name in FORMS}
    outs = {name: np.asarray(jitted[name](*args)) for name in FORMS}
    scale = max(1.0, float(np.max(np.abs(outs["xla"]))))
    run_ms = {name: [] for name in FORMS}
    for i in range(calls):
        for name in FORMS[i % 3:] + FORMS[:i % 3]:
            jax.block_until_ready(jitted[name](*args))  # its own steady state first
            start = time.perf_counter()
            jax.block_until_ready(jitted[name](*args))
            run_ms[name].append((time.perf_counter() - start) * 1e3)
    return {"shape": shape, "filters": filters, "kernel": k, "padding": padding,
            "choice": choice,
            "compile_ms": {n: statistics.median(v) for n, v in compile_ms.items()},
            "run_ms": {n: statistics.median(v) for n, v in run_ms.items()},
            "error": {n: float(np.max(np.abs(outs[n] - outs["xla"]))) / scale for n in FORMS}}


def _line(r: dict) -> str:
    c, t, e = r["compile_ms"], r["run_ms"], r["error"]
    return (f"| {r['shape']} → {r['filters']}, {r['kernel']}³, {r['padding']} | {r['choice']} "
            f"| {c['xla']:.0f} / {c['rule']:.0f} / {c['merged']:.0f} "
            f"| {c['rule'] / c['xla']:.2f} | {c['merged'] / c['xla']:.2f} "
            f"| {t['xla']:.2f} / {t['rule']:.2f} / {t['merged']:.2f} "
            f"| {t['merged'] / t['rule']:.2f} | {e['rule']:.0e} / {e['merged']:.0e} |")


def render(rows: list[dict], machine: dict, command: str) -> str:
    """The Markdown table of ``rows`` under a line naming the machine, and a summary."""
    lines = ["# A dense 3-D convolution's forward: compile time against run time", "",
             f"Written by `{command}` on {datetime.date.today()} (the forms and what each "
             "column is: that file's docstring).", "",
             f"Machine: {machine['cpu']}, {machine['affinity'] or machine['cpu_count']} cores; "
             f"jax {machine['versions']['jax']}; kconv {machine['kconv_git']}.", "",
             "| input → filters, kernel, padding | rule | lower + compile ms xla / rule / "
             "merged | rule ÷ xla | merged ÷ xla | run ms xla / rule / merged | merged ÷ "
             "rule | error rule / merged |", "|---|---|---|---|---|---|---|---|"]
    lines += [_line(r) for r in rows]
    ratio = lambda r, a, b: r["compile_ms"][a] / r["compile_ms"][b]  # noqa: E731
    over = [r for r in rows if ratio(r, "rule", "xla") > 1.5]
    lines += ["", f"{len(rows)} calls: the rule's lower + compile "
              f"{min(ratio(r, 'rule', 'xla') for r in rows):.2f}–"
              f"{max(ratio(r, 'rule', 'xla') for r in rows):.2f} × XLA's ({len(over)} over "
              f"1.5), the merged plane's {min(ratio(r, 'merged', 'xla') for r in rows):.2f}–"
              f"{max(ratio(r, 'merged', 'xla') for r in rows):.2f} ×; the merged plane's run "
              f"time {min(r['run_ms']['merged'] / r['run_ms']['rule'] for r in rows):.2f}–"
              f"{max(r['run_ms']['merged'] / r['run_ms']['rule'] for r in rows):.2f} × the "
              f"rule's."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="cold compiles per form")
    ap.add_argument("--calls", type=int, default=30, help="timed calls per form")
    ap.add_argument("--quick", action="store_true", help="two tiny calls (the tests)")
    ap.add_argument("--out", help="also write the table to this file")
    args = ap.parse_args(argv)
    rows = []
    for case in QUICK_GRID if args.quick else GRID:
        rows.append(measure(*case, repeats=args.repeats, calls=args.calls))
        print(_line(rows[-1]), file=sys.stderr, flush=True)  # progress
    command = " ".join(["python benchmarks/fold_compile.py",
                        *(sys.argv[1:] if argv is None else argv)])
    table = render(rows, bench.machine_info(), command)
    print(table, end="")
    if args.out:
        Path(args.out).write_text(table)
    return rows


if __name__ == "__main__":
    main()
