"""How the program run just before changes a multi-threaded convolution's time on XLA:CPU.

kconv's Conv2D forward on W1 takes ``eigen_crop``: XLA:CPU's Eigen convolution, which
spreads one convolution over the intra-op thread pool, where lax's program is a YNNPACK
call that runs on one core. ``bench.py`` interleaves the implementations round-robin, so
kconv's call often follows two or three single-threaded ones (lax, flax, Keras). This
times kconv's jitted layer right after ``k`` calls of lax's program, and after an idle
gap, with the process's CPU time alongside the wall time, and prints a Markdown table:

    python benchmarks/interleaving.py [--workload W1] [--calls 30]

On the 2-core machine of RESULTS.md the CPU time stays the same (both threads' work)
while the wall time rises towards the single-threaded one after two or more lax calls:
the Eigen workers then share one core for most of the call.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402

import bench  # noqa: E402
import bench_impls  # noqa: E402
import bench_workloads  # noqa: E402


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _call(name: str, problem) -> callable:
    impl = getattr(bench_impls, "build_" + name)(problem)
    target, args = bench._jax_target(impl, "fwd")
    fn = jax.jit(target)
    call = lambda: jax.block_until_ready(fn(*args))  # noqa: E731
    call()
    call()
    return call


def measure(workload: str = "W1", calls: int = 30, before: tuple[int, ...] = (0, 1, 2, 3),
            gaps_ms: tuple[float, ...] = (5.0, 50.0)) -> list[tuple[str, float, float]]:
    """``(what ran before, kconv's median wall ms, its median CPU ms)`` per setting."""
    w = bench_workloads.by_id(workload)[0]
    problem = bench_impls.make_problem(w, w.input_shape, "float32")
    kconv, lax = _call("kconv", problem), _call("lax", problem)
    settings = [(f"{k} lax call{'s' if k != 1 else ''}", k, 0.0) for k in before]
    settings += [(f"3 lax calls, then {gap:g} ms idle", 3, gap / 1e3) for gap in gaps_ms]
    rows = []
    for label, k, gap in settings:
        wall, cpu = [], []
        for _ in range(calls):
            for _ in range(k):
                lax()
            if gap:
                time.sleep(gap)
            c0, t0 = _cpu_s(), time.perf_counter()
            kconv()
            wall.append(time.perf_counter() - t0)
            cpu.append(_cpu_s() - c0)
        rows.append((label, 1e3 * statistics.median(wall), 1e3 * statistics.median(cpu)))
    return rows


def main(argv: list[str] | None = None) -> list[tuple[str, float, float]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="W1")
    ap.add_argument("--calls", type=int, default=30, help="timed kconv calls per setting")
    args = ap.parse_args(argv)
    rows = measure(args.workload, args.calls)
    print(f"| {args.workload} forward, kconv after | wall ms | CPU ms |")
    print("|---|---|---|")
    for label, wall, cpu in rows:
        print(f"| {label} | {wall:.2f} | {cpu:.2f} |")
    return rows


if __name__ == "__main__":
    main()
