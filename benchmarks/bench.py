#!/usr/bin/env python
"""kconv benchmark harness: kconv against jax.lax, flax.linen, Keras 3 (JAX backend) and
PyTorch on the workloads of ../shared/bench/WORKLOADS.md (W1–W9) plus a few extras (X1–X6)
and four small models (M1–M4: each library's layers composed, a ReLU between each two).

One command writes the whole report:

    python benchmarks/bench.py                  # everything -> benchmarks/RESULTS.md + results.json
    python benchmarks/bench.py --workloads W1,W4 --modes fwd --seconds 2
    python benchmarks/bench.py --quick          # tiny shapes, a few rounds (what the test runs)
    python benchmarks/bench.py --batch-scale 8 --dtype bfloat16   # the GPU table

See benchmarks/README.md for what is measured and how to read the tables.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if str(REPO) not in sys.path:          # kconv from this checkout, even when not pip-installed
    sys.path.insert(1, str(REPO))
if "keras" not in sys.modules:         # must precede the first `import keras`
    os.environ["KERAS_BACKEND"] = "jax"

import numpy as np  # noqa: E402

import bench_workloads as bw  # noqa: E402
from bench_impls import BUILDERS, Unavailable, make_problem  # noqa: E402

ALL_IMPLS = ("kconv", "lax", "flax", "keras", "torch")
JAX_PEERS = ("lax", "flax", "keras")
MODES = ("fwd", "fwdbwd")
MODE_TITLES = {"fwd": "Forward", "fwdbwd": "Forward + backward (grads w.r.t. weights and input)"}
pc = time.perf_counter


# ---------------------------------------------------------------------------------------
# command line

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="benchmarks/bench.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="all",
                    help="comma-separated ids (W1,W4,X2), or 'all', 'base' (W1–W9), 'extra' "
                         "(X1–X6), 'models' (M1–M4)")
    ap.add_argument("--modes", default="fwd,fwdbwd", help="fwd, fwdbwd or both (default)")
    ap.add_argument("--impls", default=",".join(ALL_IMPLS),
                    help="subset of " + ",".join(ALL_IMPLS) + " (kconv is always run as the "
                         "numerical reference, timed only if listed)")
    ap.add_argument("--batch-scale", type=int, default=1, help="multiply every batch size")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--quick", action="store_true",
                    help="tiny shapes and few rounds: checks the harness, times nothing useful")
    ap.add_argument("--seconds", type=float, default=None,
                    help="time budget per (workload, mode) for the timed rounds (default 4; "
                         "--quick: 0)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="maximum timed rounds per (workload, mode) (default 200; --quick: 3)")
    ap.add_argument("--min-rounds", type=int, default=None,
                    help="minimum timed rounds, whatever --seconds says (default 0: one whole "
                         "cycle of the balanced order, 2 × the implementations; --quick: 3)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="untimed calls per implementation after the first (default 2)")
    ap.add_argument("--gap-ms", type=float, default=0.0,
                    help="sleep before each timed call (not timed; default 0). Beware: on a "
                         "busy machine a sleep lets torch's OpenMP workers park, and waking "
                         "them can cost a scheduler time slice (~20 ms) per call")
    ap.add_argument("--lead-in", type=int, default=1,
                    help="untimed calls of the same implementation right before each timed "
                         "call (default 1): each is timed in its own steady state, not in the "
                         "wake of another library's thread pool (0: the bare interleaved order)")
    ap.add_argument("--gemm-n", type=int, default=None,
                    help="size of the reference GEMM (default 2048 on CPU, 8192 on GPU; "
                         "--quick: 256)")
    ap.add_argument("--compile-repeats", type=int, default=None,
                    help="lower + compile measurements per JAX implementation, interleaved, "
                         "each with JAX's caches cleared; the median is reported (default 21; "
                         "--quick: 1)")
    ap.add_argument("--tol", type=float, default=None,
                    help="numerical tolerance (default 1e-4 float32, 5e-2 bfloat16)")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch.set_num_threads (default: os.cpu_count())")
    ap.add_argument("--stop-after", type=float, default=None, metavar="SECONDS",
                    help="start no workload but the first once the run is this old; the report "
                         "covers the workloads finished and names the rest (default: no limit)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"), help="the markdown report")
    ap.add_argument("--json", default=None,
                    help="raw numbers (default: results.json next to --out)")
    args = ap.parse_args(argv)
    q = args.quick
    args.seconds = (0.0 if q else 4.0) if args.seconds is None else args.seconds
    args.rounds = (3 if q else 200) if args.rounds is None else args.rounds
    args.min_rounds = (3 if q else 0) if args.min_rounds is None else args.min_rounds
    args.warmup = (1 if q else 2) if args.warmup is None else args.warmup
    args.compile_repeats = ((1 if q else 21) if args.compile_repeats is None
                            else max(1, args.compile_repeats))
    args.tol = (1e-4 if args.dtype == "float32" else 5e-2) if args.tol is None else args.tol
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in args.modes:
        if m not in MODES:
            ap.error(f"unknown mode {m!r}; known: {', '.join(MODES)}")
    args.impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    for i in args.impls:
        if i not in ALL_IMPLS:
            ap.error(f"unknown implementation {i!r}; known: {', '.join(ALL_IMPLS)}")
    args.workload_list = bw.by_id(args.workloads)
    if args.json is None:
        args.json = str(Path(args.out).with_name("results.json"))
    return args


# ---------------------------------------------------------------------------------------
# environment

def _version(mod: str) -> str:
    try:
        m = __import__(mod)
        return getattr(m, "__version__", "?")
    except Exception as e:  # noqa: BLE001
        return f"not available ({type(e).__name__})"


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _loadavg() -> str | None:
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except (AttributeError, OSError):
        return None


def machine_info() -> dict[str, Any]:
    import jax

    cpu = "?"
    flags: set[str] = set()
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name") and cpu == "?":
            cpu = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "asimd", "sve")
            if f in flags]
    mem = "?"
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal"):
            mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "kconv"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        git = f"{commit}{' + uncommitted changes in kconv/' if dirty else ''}" or "?"
    except Exception:  # noqa: BLE001
        git = "?"
    try:
        import jaxlib
        jaxlib_v = jaxlib.__version__
    except Exception:  # noqa: BLE001
        jaxlib_v = "?"
    return {
        "cpu": cpu, "simd": simd, "cpu_count": os.cpu_count(), "affinity": affinity,
        "ram": mem, "os": platform.platform(), "python": sys.version.split()[0],
        "versions": {"jax": jax.__version__, "jaxlib": jaxlib_v, "flax": _version("flax"),
                     "keras": _version("keras"), "torch": _version("torch"),
                     "numpy": np.__version__, "kconv": _version("kconv")},
        "kconv_git": git,
        "jax_backend": jax.default_backend(), "jax_devices": [str(d) for d in jax.devices()],
        "env": {k: os.environ[k] for k in ("XLA_FLAGS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                            "KERAS_BACKEND", "JAX_PLATFORMS") if k in os.environ},
        "loadavg_start": _loadavg(),
    }


# ---------------------------------------------------------------------------------------
# timing

def balanced_orders(n: int) -> list[list[int]]:
    """The rows of a Williams (balanced Latin) square: each is a rotation of
    0, 1, n-1, 2, n-2, …; over all rows every item comes first, last and at every position
    equally often, and directly follows every other item equally often (odd ``n`` needs the
    reversed rows too: 2n rows). A plain rotation of one fixed order would keep the same
    neighbour in front of each implementation in every round — and the library that ran
    just before matters (torch's OpenMP threads keep spinning for a while after a call)."""
    if n <= 1:
        return [list(range(n))]
    seq, lo, hi = [0], 1, n - 1
    while len(seq) < n:
        seq.append(lo if len(seq) % 2 else hi)
        lo, hi = (lo + 1, hi) if len(seq) % 2 == 0 else (lo, hi - 1)
    rows = [[(x + r) % n for x in seq] for r in range(n)]
    if n % 2:
        rows += [row[::-1] for row in rows]
    return rows


def round_robin(calls: dict[str, Any], rounds: int, min_rounds: int, seconds: float,
                gap_s: float, lead_in: int = 0) -> dict[str, list[float]]:
    """Times every call once per round, in the orders of :func:`balanced_orders`, for at
    least ``min_rounds`` rounds (0: one whole cycle of the orders) and at most ``rounds``;
    after ``seconds`` it stops at the end of a cycle, so the design stays balanced.
    Returns the seconds of each call."""
    names = list(calls)
    samples: dict[str, list[float]] = {n: [] for n in names}
    if not names:
        return samples
    orders = balanced_orders(len(names))
    cycle = len(orders)
    min_rounds = min(rounds, min_rounds or cycle)
    gc_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        start, r = pc(), 0
        while r < rounds:
            if r >= min_rounds and r % cycle == 0 and pc() - start >= seconds:
                break
            for j in orders[r % cycle]:
                name = names[j]
                if gap_s:
                    time.sleep(gap_s)
                for _ in range(lead_in):
                    calls[name]()
                t0 = pc()
                calls[name]()
                samples[name].append(pc() - t0)
            r += 1
    finally:
        if gc_enabled:
            gc.enable()
    return samples


def stats(samples: list[float]) -> dict[str, Any]:
    s = sorted(samples)
    q = statistics.quantiles(s, n=4) if len(s) >= 2 else [s[0], s[0], s[0]]
    return {"median_ms": 1e3 * statistics.median(s), "p25_ms": 1e3 * q[0],
            "p75_ms": 1e3 * q[2], "min_ms": 1e3 * s[0], "n": len(s),
            "samples_ms": [round(1e3 * v, 4) for v in samples]}


def measure_gemm(n: int, dtype: str, args, torch_mod, torch_device: str | None):
    """Median GFLOP/s of an n×n @ n×n GEMM: jitted jnp.dot, and torch.mm when available,
    interleaved like the workloads."""
    import jax
    import jax.numpy as jnp

    dt = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
    ka, kb = jax.random.split(jax.random.key(1))
    a, b = jax.random.normal(ka, (n, n), dt), jax.random.normal(kb, (n, n), dt)
    f = jax.jit(jnp.dot)
    f(a, b).block_until_ready()
    calls = {"jax": lambda: f(a, b).block_until_ready()}
    if torch_mod is not None and torch_device is not None:
        tdt = {"float32": torch_mod.float32, "bfloat16": torch_mod.bfloat16}[dtype]
        ta = torch_mod.from_numpy(np.array(a.astype(jnp.float32))).to(torch_device, tdt)
        tb = torch_mod.from_numpy(np.array(b.astype(jnp.float32))).to(torch_device, tdt)
        sync = torch_mod.cuda.synchronize if torch_device == "cuda" else (lambda: None)

        def tmm():
            torch_mod.mm(ta, tb)
            sync()
        tmm()
        calls["torch"] = tmm
    for c in calls.values():
        c()
    secs = 0.0 if args.quick else 1.5
    samples = round_robin(calls, 100, 3 if args.quick else 8, secs, args.gap_ms / 1e3,
                          args.lead_in)
    return {k: {"gflops": 2 * n ** 3 / statistics.median(v) / 1e9, "median_ms":
                1e3 * statistics.median(v), "n": len(v)} for k, v in samples.items()}


# ---------------------------------------------------------------------------------------
# numerics

def compare(a: np.ndarray, ref: np.ndarray, tol: float) -> dict[str, Any]:
    """|a - ref| <= tol·scale + tol·|ref| everywhere, scale = max(1, max|ref|): rtol and atol
    of ``tol``, the atol relative to the array's magnitude (weight gradients sum thousands
    of terms, so their absolute rounding error grows with their size)."""
    if a.shape != ref.shape:
        return {"ok": False, "err": math.inf, "why": f"shape {a.shape} != {ref.shape}"}
    if a.size == 0:
        return {"ok": True, "err": 0.0}
    scale = max(1.0, float(np.max(np.abs(ref))))
    diff = np.abs(a - ref)
    ok = bool(np.all(diff <= tol * scale + tol * np.abs(ref))) and bool(np.all(np.isfinite(a)))
    return {"ok": ok, "err": float(np.max(diff) / scale)}


def compare_norm(a: np.ndarray, ref: np.ndarray, tol: float) -> dict[str, Any]:
    """‖a − ref‖ ≤ tol·‖ref‖ in the Frobenius norm (``err``: the relative norm)."""
    if a.shape != ref.shape:
        return {"ok": False, "err": math.inf, "why": f"shape {a.shape} != {ref.shape}"}
    a, ref = a.astype(np.float64), ref.astype(np.float64)
    err = float(np.linalg.norm(a - ref) / max(float(np.linalg.norm(ref)), 1e-30))
    return {"ok": bool(err <= tol) and bool(np.all(np.isfinite(a))), "err": err, "norm": True}


def check_outputs(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], tol: float,
                  relu_stack: bool = False):
    """Each array by ``compare``; with ``relu_stack`` (a model: ReLUs between its layers)
    the gradients by ``compare_norm`` at √tol instead. A ReLU whose input lies within
    rounding of 0 passes its cotangent in one implementation and not in another, so a
    stack's gradients differ elementwise by O(1) at a fraction ∝ the rounding ε of its
    units, and in norm by about √ε: measured (benchmarks/relu_rounding.py) 2-5e-4 in
    float32 and 2-5e-2 with TensorFloat-32 products at the GPU tables' sizes, where the
    elementwise test fails correct implementations (torch float32 on M1 at 8x batch
    1e-3 from float64; TF32 2.7e-2). A wrong layer moves the norm by O(1)."""
    parts = {}
    for k in ref:
        if k not in got:
            parts[k] = {"ok": False, "err": math.inf, "why": "missing"}
        elif relu_stack and k.startswith("d"):
            parts[k] = compare_norm(got[k], ref[k], math.sqrt(tol))
        else:
            parts[k] = compare(got[k], ref[k], tol)
    for k in got:
        if k not in ref:
            parts[k] = {"ok": False, "err": math.inf, "why": "unexpected"}
    return {"ok": all(p["ok"] for p in parts.values()),
            "err": max((p["err"] for p in parts.values()), default=0.0), "parts": parts}


def to_ref(impl, mode: str, out) -> dict[str, np.ndarray]:
    """``fwd``: the output; ``fwdbwd``: ``(weights' gradients, input's gradient, output)``
    — the output too, so that the check covers what every implementation computes."""
    if mode == "fwd":
        return {"y": impl.out_to_ref(out)}
    gw, gx = impl.grads_to_ref(out[0], out[1])
    return {**{"d" + k: v for k, v in gw.items()}, "dx": gx, "y": impl.out_to_ref(out[2])}


# ---------------------------------------------------------------------------------------
# one (workload, mode) row

def _jax_target(impl, mode: str):
    """A fresh function object (so that no jit cache is shared between measurements) and
    its arguments.

    ``fwdbwd`` returns the output with the gradients (``jax.vjp``), as torch's
    ``y = f(x); y.backward(ct)`` computes it and a training step needs it: the gradients
    of ``sum(y * ct)`` alone do not use ``y`` for a layer linear in its input and
    weights, and XLA would drop the forward convolution from the program.
    """
    import jax

    fn = impl.fn
    if mode == "fwd":
        def target(w, x):
            return fn(w, x)
        return target, (impl.weights, impl.x)

    def target(w, x, ct):
        y, pullback = jax.vjp(fn, w, x)
        gw, gx = pullback(ct)
        return gw, gx, y
    return target, (impl.weights, impl.x, impl.ct)


def _memory(compiled) -> dict[str, Any]:
    """``memory_analysis()``'s fields, and what the memory table compares: ``held_bytes``,
    the temporaries plus the constants (what a lowering holds beyond its arguments and
    outputs), and ``total_bytes``, that plus the arguments and outputs (an upper bound on
    the true peak).

    On XLA:CPU (jaxlib 0.10) ``peak_memory_in_bytes`` is the arguments', outputs' and
    constants' bytes, without the temporaries (probe: a 1 MiB ``np`` constant adds 1 MiB to
    it, 12 MiB of temporaries nothing), and ``temp_size_in_bytes`` leaves the constants
    out; so the constants are the peak less the arguments and outputs there. Elsewhere the
    peak counts the temporaries too, and the constants are not separated (``None``).
    """
    import jax

    try:
        m = compiled.memory_analysis()
    except Exception as e:  # noqa: BLE001
        return {"error": repr(e)}
    if m is None:
        return {"error": "memory_analysis() returned None"}
    fields = {k: getattr(m, k) for k in dir(m)
              if k.endswith("_in_bytes") and isinstance(getattr(m, k, None), int)}
    io = (fields.get("argument_size_in_bytes", 0) + fields.get("output_size_in_bytes", 0)
          - fields.get("alias_size_in_bytes", 0))
    temp, peak = fields.get("temp_size_in_bytes", 0), fields.get("peak_memory_in_bytes")
    constants = (peak - io if peak is not None and jax.default_backend() == "cpu"
                 else None)
    held = temp + (constants or 0)
    return {"fields": fields, "total_bytes": io + held, "held_bytes": held,
            "temp_bytes": temp, "constant_bytes": constants, "peak_bytes": peak}


_HLO_DROP = re.compile(r",? ?(metadata|frontend_attributes|sharding|"
                       r"origin|op_name)=(\{[^{}]*(\{[^{}]*\}[^{}]*)*\}|\"[^\"]*\")")
_HLO_NAME = re.compile(r"%[\w.\-]+")


def hlo_fingerprint(compiled) -> str | None:
    """A hash of the optimized HLO with names, metadata and source locations taken out:
    two implementations with the same fingerprint run the same XLA program, so any timing
    difference between them is noise."""
    try:
        text = compiled.as_text()
    except Exception:  # noqa: BLE001
        return None
    body, keep = [], False
    for line in text.splitlines():
        if line.startswith("%") or line.startswith("ENTRY"):
            keep = True
        if keep:
            line = _HLO_DROP.sub("", line)
            if line.startswith("ENTRY"):     # argument names: from the Python pytree paths
                line = re.sub(r"[\w.\-]+: ", "", line)
            body.append(line)
    names: dict[str, str] = {}
    canon = _HLO_NAME.sub(lambda m: names.setdefault(m.group(0), f"%v{len(names)}"),
                          "\n".join(body))
    return hashlib.sha1(canon.encode()).hexdigest()[:12]


def prepare_jax(impl, mode: str) -> tuple[Any, Any, dict[str, Any]]:
    """Compile-time measurements, then the call to time and its first output."""
    import jax

    target, args = _jax_target(impl, mode)
    t0 = pc()
    lowered = jax.jit(target).lower(*args)
    t1 = pc()
    compiled = lowered.compile()
    t2 = pc()
    info = {"lower_s": t1 - t0, "compile_s": t2 - t1, "lower_compile_s": t2 - t0,
            "memory": _memory(compiled), "hlo": hlo_fingerprint(compiled)}
    del compiled, lowered
    target2, _ = _jax_target(impl, mode)
    jf = jax.jit(target2)
    t3 = pc()
    out = jax.block_until_ready(jf(*args))
    info["first_call_s"] = pc() - t3

    def call():
        return jax.block_until_ready(jf(*args))
    return call, out, info


def compile_samples(impls: dict[str, Any], mode: str, repeats: int
                    ) -> dict[str, list[tuple[float, float]]]:
    """``(lower, compile)`` seconds of every JAX implementation, ``repeats`` times.

    One compile per implementation is too noisy to compare two of them here (the same XLA
    program measured twice has differed by 1.5×), so the implementations take turns, the
    order rotating each round, and each measurement starts from ``jax.clear_caches()``:
    cold caches, as in the first call of a fresh process, and the same state for everyone.
    """
    import jax

    names = list(impls)
    out: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names[r % len(names):] + names[:r % len(names)]:
            target, args = _jax_target(impls[n], mode)
            jax.clear_caches()
            t0 = pc()
            lowered = jax.jit(target).lower(*args)
            t1 = pc()
            lowered.compile()
            out[n].append((t1 - t0, pc() - t1))
    return out


def prepare_torch(impl, mode: str, torch_mod, device: str):
    sync = torch_mod.cuda.synchronize if device == "cuda" else (lambda: None)
    if mode == "fwd":
        def call():
            with torch_mod.no_grad():
                y = impl.fn(impl.x)
            sync()
            return y
    else:
        params = [q for _, q, _ in impl.weights]
        xg = impl.x.detach().clone().requires_grad_(True)
        ct = impl.ct

        def call():
            for q in params:
                q.grad = None
            xg.grad = None
            y = impl.fn(xg)
            y.backward(ct)
            sync()
            return [q.grad for q in params], xg.grad, y
    t0 = pc()
    out = call()
    return call, out, {"first_call_s": pc() - t0}


def run_workload(w, args, ctx) -> list[dict[str, Any]]:
    shape = w.shape(quick=args.quick, batch_scale=args.batch_scale)
    prob = make_problem(w, shape, args.dtype, seed=args.seed)
    prob.jax_device = ctx["jax_device"]
    prob.torch_device = ctx["torch_device"] or "cpu"
    wanted = ["kconv"] + [i for i in args.impls if i != "kconv"]
    impls, skipped = {}, dict(ctx["globally_skipped"])
    build_errors: list[str] = []
    for name in wanted:
        if name in skipped:
            continue
        try:
            impls[name] = BUILDERS[name](prob)
        except Unavailable as e:
            skipped[name] = str(e)
        except Exception as e:  # noqa: BLE001
            skipped[name] = f"error while building: {type(e).__name__}: {e}"
            build_errors.append(name)
            traceback.print_exc()
    skipped = {k: v for k, v in skipped.items() if k in args.impls}
    rows = []
    for mode in args.modes:
        row: dict[str, Any] = {
            "workload": w.id, "title": w.title, "layer": w.layer, "args": w.args,
            "extra": w.extra, "mode": mode, "input_shape": list(shape),
            "output_shape": list(prob.out_shape), "dtype": args.dtype,
            "flops": bw.flops(w, shape, mode), "impls": {}, "skipped": dict(skipped),
            "notes": {n: i.note for n, i in impls.items() if i.note and n in args.impls},
            "errors": [n for n in build_errors if n in args.impls],
        }
        calls, ref = {}, None
        for name, impl in impls.items():
            try:
                if impl.backend == "jax":
                    call, out, info = prepare_jax(impl, mode)
                else:
                    call, out, info = prepare_torch(impl, mode, ctx["torch"],
                                                    prob.torch_device)
                got = to_ref(impl, mode, out)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                if name in args.impls:
                    row["skipped"][name] = f"error: {type(e).__name__}: {e}"
                    row.setdefault("errors", []).append(name)
                continue
            del out
            if name == "kconv":
                ref = got
            chk = (check_outputs(got, ref, args.tol, relu_stack=bool(w.layers))
                   if ref is not None else
                   {"ok": False, "err": math.inf, "parts": {}, "why": "no kconv reference"})
            if name in args.impls:
                row["impls"][name] = {"check": chk, "compile": info}
                calls[name] = call
        for _ in range(args.warmup):
            for call in calls.values():
                call()
        samples = round_robin(calls, args.rounds, args.min_rounds, args.seconds,
                              args.gap_ms / 1e3, args.lead_in)
        del calls  # compile_samples clears JAX's caches: the timed functions are done
        jax_timed = {n: impls[n] for n in row["impls"] if impls[n].backend == "jax"}
        for name, pairs in compile_samples(jax_timed, mode, args.compile_repeats).items():
            c = row["impls"][name]["compile"]
            c["first_lower_compile_s"] = c["lower_compile_s"]
            c["samples"] = [list(p) for p in pairs]
            c["lower_s"] = statistics.median(p[0] for p in pairs)
            c["compile_s"] = statistics.median(p[1] for p in pairs)
            c["lower_compile_s"] = statistics.median(sum(p) for p in pairs)
        for name, s in samples.items():
            r = row["impls"][name]
            r.update(stats(s))
            r["gflops"] = row["flops"] / (r["median_ms"] / 1e3) / 1e9 if row["flops"] else None
        summarize(row, ctx["gemm_ref"])
        print_row(row)
        rows.append(row)
    return rows


def summarize(row: dict[str, Any], gemm_gflops: float | None) -> None:
    med = {n: r["median_ms"] for n, r in row["impls"].items() if "median_ms" in r}
    row["fastest"] = min(med, key=med.get) if med else None
    for n, r in row["impls"].items():
        if n in med:
            r["ratio_to_fastest"] = med[n] / med[row["fastest"]]
            if r.get("gflops") and gemm_gflops:
                r["frac_gemm"] = r["gflops"] / gemm_gflops
    peers = {n: med[n] for n in JAX_PEERS if n in med}
    row["best_jax_peer"] = min(peers, key=peers.get) if peers else None
    k = med.get("kconv")
    row["kconv_over_best_jax"] = k / peers[row["best_jax_peer"]] if k and peers else None
    row["kconv_over_torch"] = k / med["torch"] if k and "torch" in med else None
    row["numerics_ok"] = all(r["check"]["ok"] for r in row["impls"].values())
    k_hlo = row["impls"].get("kconv", {}).get("compile", {}).get("hlo")
    row["same_hlo_as_kconv"] = [n for n, r in row["impls"].items() if n != "kconv" and k_hlo
                                and r["compile"].get("hlo") == k_hlo]
    comp = {n: r["compile"].get("lower_compile_s") for n, r in row["impls"].items()}
    row["kconv_compile_over_lax"] = comp["kconv"] / comp["lax"] \
        if comp.get("kconv") and comp.get("lax") else None


def _fmt_ratio(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def print_row(row: dict[str, Any]) -> None:
    cells = []
    for n, r in row["impls"].items():
        mark = "✓" if r["check"]["ok"] else "✗"
        cells.append(f"{n} {r.get('median_ms', float('nan')):8.3f}{mark}")
    k = row["impls"].get("kconv", {})
    gf = k.get("gflops")
    print(f"{row['workload']:>3} {row['mode']:<6} " + "  ".join(cells)
          + f" | kconv/bestJAX {_fmt_ratio(row['kconv_over_best_jax'])}"
          + f" kconv/torch {_fmt_ratio(row['kconv_over_torch'])}"
          + (f" | kconv {gf:.1f} GFLOP/s" if gf else "")
          + ("" if row["numerics_ok"] else "  NUMERICS MISMATCH"), flush=True)
    for n, why in row["skipped"].items():
        print(f"    {n}: skipped ({why})", flush=True)


# ---------------------------------------------------------------------------------------
# report

def _ms(v: float) -> str:
    return f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 100 else f"{v:.1f}"


def _mib(b: int) -> str:
    return f"{b / 2**20:.1f}"


#: Everything below this line in an existing report is hand-written analysis of a run (what
#: limits the rows slower than torch, with its measurements): a rerun keeps it.
ANALYSIS_MARKER = "<!-- hand-written analysis below: bench.py keeps it when it rewrites the file -->"


def _kept_analysis(path: Path) -> str:
    if not path.exists():
        return ""
    text = path.read_text()
    i = text.find(ANALYSIS_MARKER)
    return "" if i < 0 else "\n" + text[i:]


def render_markdown(res: dict[str, Any]) -> str:
    m, a = res["machine"], res["settings"]
    impls = [i for i in ALL_IMPLS if i in a["impls"]]
    jax_impls = [i for i in impls if i != "torch"]
    L: list[str] = []
    ns = [x["n"] for r in res["rows"] for x in r["impls"].values() if "n" in x]
    rounds = f"{min(ns)}–{max(ns)}" if ns and min(ns) != max(ns) else str(ns[0]) if ns else "0"
    L += ["# kconv benchmarks", "",
          f"Written by `{res['command']}` on {res['date']} "
          f"(total run time {res['wall_s'] / 60:.1f} min).", "",
          "What is measured and how to read it: [README.md](README.md). Medians of "
          f"{rounds} timed calls per cell (at least one whole cycle of the balanced order; "
          "every sample is in the run's JSON, results.json beside this file, which is not "
          "committed), taken round-robin (each round times every implementation once; "
          "the order rotates through a balanced Latin square, so each implementation follows "
          "every other equally often), after "
          f"{a['warmup']} untimed warm-up calls; "
          + (f"each timed call right after {a['lead_in']} untimed call(s) of the same "
             "implementation (`--lead-in`: its own steady state, not another library's "
             "wake); " if a.get("lead_in") else "")
          + "JAX outputs are `block_until_ready`-ed. "
          f"Each cell: median ms (ratio to the row's fastest); the fastest is bold. "
          f"dtype {a['dtype']}, batch × {a['batch_scale']}"
          + (", **--quick (tiny shapes: the numbers mean nothing)**" if a["quick"] else "")
          + ".", ""]
    if res.get("not_run"):
        L += [f"Not run (the run passed `--stop-after {a['stop_after']:g}` seconds): "
              + ", ".join(res["not_run"]) + ".", ""]
    L += ["## Machine", "", "| | |", "|---|---|",
          f"| CPU | {m['cpu']} ({', '.join(m['simd']) or 'no SIMD flags read'}) |",
          f"| cores | {m['cpu_count']} (usable by this process: {m['affinity']}) |",
          f"| RAM | {m['ram']} |", f"| OS | {m['os']} |", f"| Python | {m['python']} |",
          "| versions | " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + " |",
          f"| kconv checkout | {m['kconv_git']} |",
          f"| jax.devices() | {', '.join(m['jax_devices'])} |",
          f"| torch | device {res['torch_device'] or '—'}, threads {res['torch_threads']} |",
          f"| load average (1, 5, 15 min) at start / end | {m['loadavg_start']} / "
          f"{m.get('loadavg_end')} |"]
    if m["env"]:
        L.append("| environment | " + ", ".join(f"`{k}={v}`" for k, v in m["env"].items())
                 + " |")
    L.append("")
    g = res["gemm"]
    label = {"jax": "jitted `jnp.dot`", "torch": "`torch.mm`"}
    L += ["## Reference GEMM (the practical limit)", "",
          f"{a['dtype']} {g['n']}×{g['n']} @ {g['n']}×{g['n']}, median GFLOP/s, measured at "
          "the start and at the end of the run (interleaved like the workloads):", "",
          "| GEMM | start | end | mean |", "|---|---|---|---|"]
    for k in g["start"]:
        L.append(f"| {label.get(k, k)} | {g['start'][k]['gflops']:.1f} | "
                 f"{g['end'][k]['gflops']:.1f} | {g['means'][k]:.1f} |")
    if "torch" in g["means"] and g["means"]["torch"] < 0.5 * g["means"]["jax"]:
        L += ["", "**Warning**: torch's GEMM ran at less than half JAX's on the same cores. "
              "On a busy (oversubscribed) machine torch's OpenMP threads stall at every "
              "parallel region waiting for a descheduled worker; its column is then not "
              "trustworthy. Rerun on a quiet machine, or with `--torch-threads 1` to see."]
    L += ["", f"Reference: **{g['reference_gflops']:.1f} GFLOP/s** (the faster mean, "
          f"{label.get(g['reference_from'], g['reference_from'])}). The `% GEMM` column "
          "divides the kconv row's GFLOP/s by it; a well-blocked convolution kernel can beat "
          "a library GEMM of this size, so values above 100% are possible.", ""]
    if res["globally_skipped"]:
        L += ["Skipped implementations: " + "; ".join(
            f"**{k}** ({v})" for k, v in res["globally_skipped"].items()), ""]

    for mode in a["modes"]:
        rows = [r for r in res["rows"] if r["mode"] == mode]
        if not rows:
            continue
        L += [f"## {MODE_TITLES[mode]}", ""]
        if mode == "fwdbwd":
            L += ["FLOPs: 3 × the forward count (input-gradient and weight-gradient "
                  "convolutions each cost the forward's multiply-adds). Torch: "
                  "`y.backward(ct)`, gradients set to None before each call; its forward "
                  "column runs under `torch.no_grad()`.", ""]
        L += ["`kconv / best JAX peer`: ≡ after the peer's name when that peer's optimized XLA "
              "program is kconv's (the same program timed twice: the ratio is this machine's "
              "noise).", ""]
        head = ["id", "workload", *[f"{i} ms" for i in impls], "kconv / best JAX peer",
                "kconv / torch", "kconv GFLOP/s", "% GEMM", "same XLA program as kconv",
                "numerics"]
        L += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            cells = [r["workload"] + ("*" if r["extra"] else ""), r["title"]]
            for i in impls:
                x = r["impls"].get(i)
                if x is None or "median_ms" not in x:
                    cells.append("n/a")
                    continue
                c = f"{_ms(x['median_ms'])} ({x['ratio_to_fastest']:.2f}×)"
                cells.append(f"**{c}**" if r["fastest"] == i else c)
            bj = r["best_jax_peer"]
            same = " ≡" if bj and bj in r["same_hlo_as_kconv"] else ""
            cells.append(f"{_fmt_ratio(r['kconv_over_best_jax'])}"
                         + (f" ({bj}{same})" if bj else ""))
            cells.append(_fmt_ratio(r["kconv_over_torch"]))
            k = r["impls"].get("kconv", {})
            cells.append(f"{k['gflops']:.1f}" if k.get("gflops") else "—")
            cells.append(f"{100 * k['frac_gemm']:.0f}%" if k.get("frac_gemm") else "—")
            cells.append(", ".join(r["same_hlo_as_kconv"]) or "—")
            bad = [n for n, x in r["impls"].items() if not x["check"]["ok"]]
            cells.append("✓" if not bad else "✗ " + ", ".join(bad))
            L.append("| " + " | ".join(cells) + " |")
        L.append("")
        notes = sorted({(n, t) for r in rows for n, t in r["notes"].items()})
        skips = sorted({(r["workload"], n, t) for r in rows for n, t in r["skipped"].items()
                        if n not in res["globally_skipped"]})
        if any(r["extra"] for r in rows):
            L.append("\\* extra workload, not in WORKLOADS.md.")
        for n, t in notes:
            L.append(f"- {n}: {t} (where it applies).")
        for wid, n, t in skips:
            L.append(f"- {wid} {n}: n/a — {t}")
        L.append("")

    L += ["## Compile time (JAX)", "",
          "`jax.jit(f).lower(*args).compile()` wall time in seconds (lower + compile): the "
          f"median of {a.get('compile_repeats', 1)} measurement(s) per implementation, taken in "
          "turns (the order rotating) after the timed rounds, each from `jax.clear_caches()` "
          "(cold caches, as a fresh process's first call). In brackets the first-call wall "
          "time of a fresh `jax.jit(f)` before the timed rounds (trace + lower + compile + "
          "run, one measurement, JAX's inner caches warm). Torch: first eager call.",
          ""]
    head = ["id", "mode", *jax_impls, "kconv / lax"] + (["torch first call"] if "torch" in impls
                                                        else [])
    L += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in res["rows"]:
        cells = [r["workload"], r["mode"]]
        for i in jax_impls:
            c = r["impls"].get(i, {}).get("compile")
            cells.append(f"{c['lower_compile_s']:.2f} ({c['first_call_s']:.2f})" if c else "n/a")
        cells.append(_fmt_ratio(r["kconv_compile_over_lax"]))
        if "torch" in impls:
            c = r["impls"].get("torch", {}).get("compile")
            cells.append(f"{c['first_call_s']:.3f}" if c else "n/a")
        L.append("| " + " | ".join(cells) + " |")
    L.append("")

    L += ["## Memory (JAX, jitted)", "",
          "Forward + backward first (the program the memory target is about), then the "
          "forward alone. "
          "From `jax.jit(f).lower(*args).compile().memory_analysis()`, in MiB: "
          "**sum** = argument + output − alias + **held** bytes / XLA's own "
          "`peak_memory_in_bytes` where reported (**held** in brackets): held = temp + "
          "constants, what the lowering keeps beyond its arguments and outputs (the same "
          "arrays for every implementation). On XLA:CPU (jaxlib 0.10) "
          "`peak_memory_in_bytes` is the arguments', outputs' and constants' bytes, "
          "without the temporaries (probes: a 1 MiB constant adds 1 MiB to it, 12 MiB of "
          "temporaries nothing), and `temp_size_in_bytes` leaves the constants out, so "
          "neither alone compares two lowerings that trade one for the other (a 0/1 "
          "matrix as a constant instead of a temporary): **held** does (its constants "
          "are the peak less the arguments and outputs there), and sum is an upper "
          "bound on the true peak.", ""]
    fields = sorted({k for r in res["rows"] for x in r["impls"].values()
                     for k in x.get("compile", {}).get("memory", {}).get("fields", {})})
    head = ["id", "mode", *jax_impls, "kconv / lax (sum)", "kconv / lax (peak)",
            "kconv / lax (held)"]
    L += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_mode = [r for m in ("fwdbwd", "fwd") for r in res["rows"] if r["mode"] == m]
    for r in by_mode:
        cells = [r["workload"], r["mode"]]
        mem = {i: r["impls"].get(i, {}).get("compile", {}).get("memory", {}) for i in jax_impls}
        for i in jax_impls:
            x = mem[i]
            if "total_bytes" not in x:
                cells.append("n/a")
                continue
            peak = f" / {_mib(x['peak_bytes'])}" if x.get("peak_bytes") else ""
            cells.append(f"{_mib(x['total_bytes'])}{peak} ({_mib(x['held_bytes'])})")
        k, lx = mem.get("kconv", {}), mem.get("lax", {})
        if "total_bytes" in k and "total_bytes" in lx:
            cells.append(f"{k['total_bytes'] / lx['total_bytes']:.2f}")
            cells.append(f"{k['peak_bytes'] / lx['peak_bytes']:.2f}"
                         if k.get("peak_bytes") and lx.get("peak_bytes") else "—")
            cells.append(f"{k['held_bytes'] / lx['held_bytes']:.2f}" if lx["held_bytes"]
                         else ("1.00" if not k["held_bytes"] else "∞"))
        else:
            cells += ["—", "—", "—"]
        L.append("| " + " | ".join(cells) + " |")
    L += ["", "Fields `memory_analysis()` reports here: " + ", ".join(f"`{f}`" for f in fields)
          + ".", ""]

    L += ["## Numerical check", "",
          f"Before timing, every implementation's output (forward) or gradients (w.r.t. "
          f"every weight and the input) are compared with kconv's, in kconv's layout: "
          f"|a − kconv| ≤ tol·max(1, max|kconv|) + tol·|kconv| elementwise, tol = "
          f"{a['tol']:g}; a model's gradients (M rows: ReLUs between the layers) in norm, "
          f"‖a − kconv‖ ≤ √tol·‖kconv‖, since a ReLU whose input lies within rounding of 0 "
          "passes its cotangent in one implementation and not in another "
          "(`benchmarks/relu_rounding.py`). Cells: the largest |a − kconv| / max(1, "
          "max|kconv|), for M rows' gradients ‖a − kconv‖ / ‖kconv‖; ≡: the same "
          "optimized XLA program as kconv's (HLO with names and metadata removed).", ""]
    head = ["id", "mode", *[i for i in impls if i != "kconv"]]
    L += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in res["rows"]:
        cells = [r["workload"], r["mode"]]
        for i in impls:
            if i == "kconv":
                continue
            x = r["impls"].get(i)
            if x is None:
                cells.append("n/a")
                continue
            c = x["check"]
            why = "; ".join(f"{k}: {p['why']}" for k, p in c.get("parts", {}).items()
                            if p.get("why"))
            cells.append(("✓ " if c["ok"] else "✗ ") + f"{c['err']:.1e}"
                         + (" ≡" if i in r.get("same_hlo_as_kconv", ()) else "")
                         + (f" ({why})" if why else ""))
        L.append("| " + " | ".join(cells) + " |")
    L.append("")
    return "\n".join(L)


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    return o


# ---------------------------------------------------------------------------------------
# main

def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    t_start = pc()
    import jax

    info = machine_info()
    backend = jax.default_backend()
    ctx: dict[str, Any] = {"jax_device": jax.devices()[0], "torch": None,
                           "torch_device": None, "globally_skipped": {}}
    torch_threads = None
    if "torch" in args.impls:
        try:
            import torch
            if backend == "cpu":
                torch.set_num_threads(args.torch_threads or os.cpu_count() or 1)
                torch_threads = torch.get_num_threads()
                ctx["torch"], ctx["torch_device"] = torch, "cpu"
            elif torch.cuda.is_available():
                ctx["torch"], ctx["torch_device"] = torch, "cuda"
            else:
                ctx["globally_skipped"]["torch"] = (
                    f"JAX runs on {backend} but this torch has no CUDA: a CPU-vs-"
                    f"{backend} ratio would mean nothing")
        except Exception as e:  # noqa: BLE001
            ctx["globally_skipped"]["torch"] = f"torch not importable ({type(e).__name__}: {e})"
    if "keras" in args.impls:
        try:
            import keras
            if keras.backend.backend() != "jax":
                ctx["globally_skipped"]["keras"] = (
                    f"keras was imported with backend {keras.backend.backend()!r} before "
                    "the harness could select jax")
        except Exception as e:  # noqa: BLE001
            ctx["globally_skipped"]["keras"] = f"keras not importable ({type(e).__name__}: {e})"
    if "flax" in args.impls:
        try:
            import flax.linen  # noqa: F401
        except Exception as e:  # noqa: BLE001
            ctx["globally_skipped"]["flax"] = f"flax not importable ({type(e).__name__}: {e})"
    for k, v in ctx["globally_skipped"].items():
        print(f"note: {k} skipped: {v}", flush=True)

    gemm_n = args.gemm_n or (256 if args.quick else 2048 if backend == "cpu" else 8192)
    print(f"machine: {info['cpu']}, {info['cpu_count']} cores, jax {backend}", flush=True)
    gemm_start = measure_gemm(gemm_n, args.dtype, args, ctx["torch"], ctx["torch_device"])
    ctx["gemm_ref"] = gemm_start["jax"]["gflops"]
    print(f"GEMM {gemm_n}: " + ", ".join(f"{k} {v['gflops']:.1f} GFLOP/s"
                                         for k, v in gemm_start.items()), flush=True)
    rows: list[dict[str, Any]] = []
    not_run: list[str] = []
    for i, w in enumerate(args.workload_list):
        if i and args.stop_after is not None and pc() - t_start > args.stop_after:
            not_run = [x.id for x in args.workload_list[i:]]
            print(f"--stop-after {args.stop_after:g}: not run: {', '.join(not_run)}",
                  flush=True)
            break
        rows += run_workload(w, args, ctx)
        if not ctx.get("printed_memory_fields"):
            for r in rows:
                for name, x in r["impls"].items():
                    fields = x.get("compile", {}).get("memory", {}).get("fields")
                    if fields and not ctx.get("printed_memory_fields"):
                        print(f"memory_analysis() fields ({r['workload']} {r['mode']} {name}): "
                              + ", ".join(f"{k}={v}" for k, v in fields.items()), flush=True)
                        ctx["printed_memory_fields"] = True
    gemm_end = measure_gemm(gemm_n, args.dtype, args, ctx["torch"], ctx["torch_device"])
    gemm_means = {k: (gemm_start[k]["gflops"] + gemm_end[k]["gflops"]) / 2 for k in gemm_start}
    gemm_ref_by = max(gemm_means, key=gemm_means.get)
    gemm_ref = gemm_means[gemm_ref_by]
    for r in rows:                      # % GEMM against the mean of both GEMM measurements
        summarize(r, gemm_ref)
    info["loadavg_end"] = _loadavg()
    res = {
        "command": shlex.join(["python", "benchmarks/bench.py", *argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": info,
        "settings": {k: v for k, v in vars(args).items() if k != "workload_list"},
        "torch_device": ctx["torch_device"], "torch_threads": torch_threads,
        "globally_skipped": {k: v for k, v in ctx["globally_skipped"].items()
                             if k in args.impls},
        "gemm": {"n": gemm_n, "start": gemm_start, "end": gemm_end, "means": gemm_means,
                 "reference_gflops": gemm_ref, "reference_from": gemm_ref_by},
        "flop_rule": "conv: 2·MACs of the forward; fwdbwd: 3× forward; upsampling: none",
        "rows": rows, "not_run": not_run,
        "all_numerics_ok": all(r["numerics_ok"] for r in rows),
        "errors": sorted({f"{r['workload']} {r['mode']} {n}" for r in rows for n in r["errors"]}),
    }
    res["all_ok"] = res["all_numerics_ok"] and not res["errors"]
    res["wall_s"] = pc() - t_start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_markdown(res) + _kept_analysis(out))
    Path(args.json).write_text(json.dumps(_jsonable(res), indent=1))
    print(f"wrote {out} and {args.json} ({res['wall_s']:.0f} s)", flush=True)
    if not res["all_numerics_ok"]:
        print("WARNING: some implementations disagree with kconv (see the ✗ cells)",
              flush=True)
    if res["errors"]:
        print("WARNING: some implementations raised: " + "; ".join(res["errors"]), flush=True)
    return res


if __name__ == "__main__":
    result = main()
    sys.exit(0 if result["all_ok"] else 1)
