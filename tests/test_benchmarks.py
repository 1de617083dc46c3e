"""The benchmark harness (benchmarks/bench.py) in --quick mode: it runs, every
implementation agrees with kconv numerically, the report has its tables, and the FLOP
counter is right on hand-computed cases."""

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.util import held_bytes

# Programs as users run them: compiled with XLA's full optimization (conftest.py).
pytestmark = pytest.mark.optimized

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("bench")
    finally:
        sys.path.remove(str(BENCH))


def test_flop_counter_hand_computed(bench):
    bw = importlib.import_module("bench_workloads")
    w = {x.id: x for x in bw.WORKLOADS}
    # W1: Conv2D 64 filters 3x3 same on (16, 32, 32, 64): 2 * N * H * W * F * kh * kw * C.
    assert bw.flops(w["W1"], w["W1"].input_shape, "fwd") == 2 * 16 * 32 * 32 * 64 * 64 * 9
    assert bw.flops(w["W1"], w["W1"].input_shape, "fwdbwd") == 3 * 2 * 16 * 32 * 32 * 64 * 64 * 9
    # W2: stride 2 -> 16x16 outputs, 128 filters.
    assert bw.flops(w["W2"], w["W2"].input_shape, "fwd") == 2 * 16 * 16 * 16 * 128 * 9 * 64
    # W4: depthwise 3x3 (dm 1) + pointwise 64 -> 128.
    assert bw.forward_flops(w["W4"], w["W4"].input_shape) == \
        2 * 16 * 32 * 32 * 64 * 9 + 2 * 16 * 32 * 32 * 64 * 128
    # W5: transposed, counted on the input grid: 2 * N * 16 * 16 * C_in * 9 * F.
    assert bw.forward_flops(w["W5"], w["W5"].input_shape) == 2 * 16 * 16 * 16 * 64 * 9 * 32
    assert bw.output_shape(w["W5"], w["W5"].input_shape) == (16, 32, 32, 32)
    # W6: causal keeps the length: 2 * N * L * F * k * C.
    assert bw.forward_flops(w["W6"], w["W6"].input_shape) == 2 * 8 * 2048 * 64 * 3 * 64
    # W7: Conv3D.
    assert bw.forward_flops(w["W7"], w["W7"].input_shape) == 2 * 2 * 16**3 * 32 * 27 * 16
    # Upsampling has no FLOP count.
    assert bw.flops(w["W8"], w["W8"].input_shape, "fwd") is None
    # A model: its layers' counts, each on the shape the layer before it returns (M1 on
    # (16, 32, 32, 3): 3x3 3->32, 3x3 stride 2 32->64 to 16x16, separable 64 -> 64 on 16x16,
    # transposed 64 -> 32 back to 32x32 (counted on its 16x16 input), 1x1 32 -> 3).
    m1 = w["M1"]
    assert bw.output_shape(m1, m1.input_shape) == (16, 32, 32, 3)
    assert bw.forward_flops(m1, m1.input_shape) == (
        2 * 16 * 32 * 32 * 32 * 9 * 3 + 2 * 16 * 16 * 16 * 64 * 9 * 32
        + 2 * 16 * 16 * 16 * 64 * 9 + 2 * 16 * 16 * 16 * 64 * 64
        + 2 * 16 * 16 * 16 * 64 * 9 * 32 + 2 * 16 * 32 * 32 * 3 * 32)
    assert bw.output_shape(w["M2"], w["M2"].input_shape) == (2, 16, 16, 16, 1)
    m4 = w["M4"]  # 1x1 32 -> 128, depthwise 3x3 on 128 channels, 1x1 128 -> 32
    assert bw.output_shape(m4, m4.input_shape) == (16, 32, 32, 32)
    assert bw.forward_flops(m4, m4.input_shape) == 16 * 32 * 32 * (
        2 * 32 * 128 + 2 * 128 * 9 + 2 * 128 * 32)
    assert [x.id for x in bw.by_id("models")] == ["M1", "M2", "M3", "M4"]
    assert not {x.id for x in bw.by_id("extra")} & {"M1", "M2", "M3", "M4"}
    # Batch scaling multiplies the count.
    assert bw.flops(w["W1"], w["W1"].shape(batch_scale=8), "fwd") == \
        8 * bw.flops(w["W1"], w["W1"].input_shape, "fwd")


@pytest.mark.slow
def test_quick_run_agrees_and_reports(bench, tmp_path):
    out = tmp_path / "RESULTS.md"
    # One strided conv (asymmetric `same` padding), one transposed conv, one upsampling.
    res = bench.main(["--quick", "--workloads", "W2,W5,W8", "--gemm-n", "128",
                      "--rounds", "2", "--out", str(out)])
    expected = {"kconv", "lax", "flax"}
    for lib in ("keras", "torch"):
        try:
            importlib.import_module(lib)
            expected.add(lib)
        except ImportError:
            pass
    assert [(r["workload"], r["mode"]) for r in res["rows"]] == [
        (w, m) for w in ("W2", "W5", "W8") for m in ("fwd", "fwdbwd")]
    for row in res["rows"]:
        assert set(row["impls"]) == expected, (row["workload"], row["skipped"])
        for name, r in row["impls"].items():
            assert r["check"]["ok"], (row["workload"], row["mode"], name, r["check"])
            assert r["n"] >= 2 and r["median_ms"] > 0
            if name != "torch":
                assert r["compile"]["lower_compile_s"] > 0
                assert r["compile"]["memory"]["total_bytes"] > 0
        assert row["numerics_ok"]
    assert res["all_numerics_ok"] and res["all_ok"] and not res["errors"]
    assert res["gemm"]["reference_gflops"] > 0

    text = out.read_text()
    for heading in ("## Machine", "## Reference GEMM", "## Forward\n",
                    "## Forward + backward", "## Compile time", "## Memory",
                    "## Numerical check"):
        assert heading in text, heading
    header = ("| id | workload | kconv ms | lax ms | flax ms |"
              + "".join(f" {i} ms |" for i in ("keras", "torch") if i in expected)
              + " kconv / best JAX peer | kconv / torch | kconv GFLOP/s | % GEMM |")
    assert header in text
    assert "| W5 | Conv2DTranspose 3×3 stride 2 same |" in text
    assert "✗" not in text
    raw = json.loads((tmp_path / "results.json").read_text())
    assert raw["all_numerics_ok"] and len(raw["rows"]) == 6


@pytest.mark.slow
def test_quick_models_agree(bench, tmp_path):
    # The model workloads (each library's layers composed, a ReLU between each two): every
    # implementation's output, input gradient and every layer's weight gradients agree
    # with kconv's — Keras's real layers and torch's modules are the oracles here.
    res = bench.main(["--quick", "--workloads", "models", "--gemm-n", "64", "--rounds", "1",
                      "--out", str(tmp_path / "RESULTS.md")])
    assert [(r["workload"], r["mode"]) for r in res["rows"]] == [
        (w, m) for w in ("M1", "M2", "M3", "M4") for m in ("fwd", "fwdbwd")]
    for row in res["rows"]:
        assert {"kconv", "lax", "flax"} <= set(row["impls"]), row["skipped"]
        for name, r in row["impls"].items():
            assert r["check"]["ok"], (row["workload"], row["mode"], name, r["check"])
            # The gradients are held in norm at √tol (check_outputs' relu_stack), but at
            # these sizes no ReLU input lies within rounding of 0: they agree to rounding.
            assert r["check"]["err"] < 1e-5, (row["workload"], name, r["check"])
        if row["mode"] == "fwdbwd":     # every layer's weights are checked, and the input
            parts = row["impls"]["lax"]["check"]["parts"]
            assert {"y", "dx", "d1.kernel", "d1.bias"} <= set(parts), sorted(parts)
            layers = len(next(w for w in importlib.import_module("bench_workloads").WORKLOADS
                              if w.id == row["workload"]).layers)
            assert f"d{layers}.kernel" in parts
    assert res["all_ok"]


def test_models_gradients_checked_in_norm(bench):
    # check_outputs(relu_stack=True), the models' check: a gradient entry moved by O(1)
    # (a ReLU on the other side of 0) fails the elementwise test but not the norm at √tol;
    # a wrong gradient (entries swapped), a wrong shape or a changed output fails both.
    rng = np.random.default_rng(0)
    ref = {"dx": rng.standard_normal(100_000), "d1.kernel": rng.standard_normal((3, 3, 8)),
           "y": rng.standard_normal(64)}
    flipped = {**ref, "dx": ref["dx"].copy()}
    flipped["dx"][17] += 2.0
    assert not bench.check_outputs(flipped, ref, 1e-4)["ok"]
    chk = bench.check_outputs(flipped, ref, 1e-4, relu_stack=True)
    assert chk["ok"] and chk["parts"]["dx"]["norm"] and "norm" not in chk["parts"]["y"]
    assert chk["parts"]["dx"]["err"] == pytest.approx(2.0 / np.linalg.norm(ref["dx"]))
    wrong = {**ref, "d1.kernel": ref["d1.kernel"][::-1]}
    assert not bench.check_outputs(wrong, ref, 1e-4, relu_stack=True)["ok"]
    assert not bench.check_outputs({**ref, "dx": ref["dx"][:-1]}, ref, 1e-4,
                                   relu_stack=True)["ok"]
    assert not bench.check_outputs({**ref, "y": ref["y"] * (1 + 1e-3)}, ref, 1e-4,
                                   relu_stack=True)["ok"]


def test_tf32_rounding_against_frexp(bench):
    # relu_rounding.round_tf32 (the GPU's float32 convolution operands, emulated): 11
    # significant bits, nearest with ties away from 0, written with np.frexp in float64.
    import torch

    probe = importlib.import_module("relu_rounding")
    x = np.random.default_rng(1).standard_normal(10_000).astype(np.float32) * 1e3
    x[:4] = [1 + 2.0 ** -11, -(1 + 2.0 ** -11), 1 + 3 * 2.0 ** -11, 0.0]   # ties, a zero
    m, e = np.frexp(x.astype(np.float64))
    want = np.ldexp(np.sign(m) * np.floor(np.abs(m) * 2.0 ** 11 + 0.5) / 2.0 ** 11, e)
    got = probe.round_tf32(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(got, want)
    assert got[0] == 1 + 2.0 ** -10 and got[1] == -(1 + 2.0 ** -10)


@pytest.mark.slow
def test_relu_rounding_probe(bench, capsys):
    # benchmarks/relu_rounding.py (quoted in RESULTS-gpu.md) on M1's tiny input: kconv and
    # torch in float32 agree with float64, TF32 operands move the gradients (the rounding
    # is applied in the backward convolutions too), and the table has its row.
    probe = importlib.import_module("relu_rounding")
    (row,) = probe.main(["--quick", "--batch-scale", "1", "--workloads", "M1"])
    f = row["forms"]
    assert f["kconv float32"]["norm"] < 1e-5 and f["torch float32"]["norm"] < 1e-5
    assert 1e-5 < f["torch TF32"]["norm"] < 1e-2
    assert f["torch float32"]["flipped"] == 0 and f["kconv float32"]["flipped"] is None
    # ReLUs after layers 1-4 of 2×8×8×3: 8×8×32, 4×4×64 (stride 2), 4×4×64, 8×8×32, twice.
    assert row["relu_units"] == 2 * (8 * 8 * 32 + 4 * 4 * 64 + 4 * 4 * 64 + 8 * 8 * 32)
    assert "| M1 | 2×8×8×3 |" in capsys.readouterr().out


def test_stop_after_reports_the_finished_workloads(bench, tmp_path):
    # --stop-after (the GPU script's time budget): the first workload always runs, none
    # starts after the budget, and the report names those left out.
    out = tmp_path / "RESULTS.md"
    res = bench.main(["--quick", "--workloads", "W8,W9,W2", "--modes", "fwd",
                      "--impls", "kconv,lax", "--gemm-n", "64", "--rounds", "1",
                      "--stop-after", "0", "--out", str(out)])
    assert [r["workload"] for r in res["rows"]] == ["W8"]
    assert res["not_run"] == ["W9", "W2"]
    assert "Not run (the run passed `--stop-after 0` seconds): W9, W2." in out.read_text()


def test_round_robin_orders_and_lead_in(bench):
    # Every timed call comes right after `lead_in` untimed calls of the same
    # implementation; over one cycle each implementation is timed once per round and
    # follows every other equally often.
    log = []
    calls = {name: (lambda name=name: log.append(name)) for name in "abc"}
    samples = bench.round_robin(calls, rounds=6, min_rounds=6, seconds=0.0, gap_s=0.0,
                                lead_in=2)
    assert {n: len(v) for n, v in samples.items()} == {"a": 6, "b": 6, "c": 6}
    assert len(log) == 3 * 6 * 3
    runs = [log[i:i + 3] for i in range(0, len(log), 3)]
    assert all(len(set(r)) == 1 for r in runs)  # two lead-in calls, then the timed one
    timed = [r[0] for r in runs]
    follows = {(p, q) for p, q in zip(timed, timed[1:]) if p != q}
    assert follows == {(p, q) for p in "abc" for q in "abc" if p != q}


@pytest.mark.parametrize("workload", [*(f"W{i}" for i in range(1, 10)),
                                      *(f"X{i}" for i in range(1, 7)),
                                      *(f"M{i}" for i in range(1, 4))])
def test_kconv_temporaries_at_most_lax(bench, workload, monkeypatch):
    # The memory requirement, on the benchmark's own shapes: forward+backward
    # temporaries and constants (held_bytes: XLA:CPU's peak counts arguments, outputs and
    # constants, its temp_size the temporaries) of kconv's lowering no larger than the
    # obvious lax program's. Compiled, never run. The
    # program returns the output with the gradients (bench._jax_target), so a lowering
    # whose forward keeps temporaries (eigen_crop's taller output, width_fold's folded
    # input, the bilinear stencil's first axis) is measured beside the backward's.
    import jax

    from kconv.ops import lowering

    monkeypatch.setattr(lowering.rule, "_host_cores", lambda: 2)  # the rule of a 2-core host

    impls = importlib.import_module("bench_impls")
    w = importlib.import_module("bench_workloads").by_id(workload)[0]
    problem = impls.make_problem(w, w.input_shape, "float32")
    held = {}
    for name in ("kconv", "lax"):
        target, args = bench._jax_target(impls.BUILDERS[name](problem), "fwdbwd")
        compiled = jax.jit(target).lower(*args).compile()
        held[name] = held_bytes(compiled)
    assert held["kconv"] <= held["lax"], held


def test_gpu_probe_agrees_with_xla(bench, tmp_path):
    # benchmarks/gpu_probe.py (the GPU sessions' probe), on tiny shapes here: every variant
    # computes XLA's outputs and gradients; dilated ones have the space_to_batch variant,
    # causal ones (W6) the explicit pad.
    probe = importlib.import_module("gpu_probe")
    hlo = tmp_path / "hlo.txt"
    lines = probe.main(["--quick", "--workloads", "W6,X2,D2", "--dtypes", "float32",
                        "--modes", "fwdbwd", "--hlo", str(hlo)])
    rows = [line.split(" | ") for line in lines if line[:3] in ("| W", "| X", "| D")]
    dilated = ("xla", "auto", "space_to_batch", "s2b_kernel", "s2b_input")
    assert [(r[0], r[3]) for r in rows] == [
        *(("| W6", v) for v in (*dilated, "explicit_pad")), ("| X2", "xla"), ("| X2", "auto"),
        *(("| D2", v) for v in dilated)]
    assert all(float(r[6]) < 1e-5 and float(r[7].rstrip(" |")) >= 0 for r in rows), rows
    programs = hlo.read_text().split("==== ")[1:]     # --hlo: one optimized program per row
    assert [p.split("\n")[0] for p in programs] == [
        f"{r[0][2:]} float32 fwdbwd {r[3]}" for r in rows]
    assert all("HloModule" in p for p in programs)


def test_interleaving_probe_runs(bench, capsys):
    # benchmarks/interleaving.py (quoted in RESULTS.md): one timed call per setting, and its
    # Markdown table; the times themselves are not checked (speed is the benchmarks' job).
    probe = importlib.import_module("interleaving")
    rows = probe.main(["--calls", "1"])
    assert [label for label, _, _ in rows] == [
        "0 lax calls", "1 lax call", "2 lax calls", "3 lax calls",
        "3 lax calls, then 5 ms idle", "3 lax calls, then 50 ms idle"]
    assert all(wall > 0 and cpu >= 0 for _, wall, cpu in rows)
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "| W1 forward, kconv after | wall ms | CPU ms |" and len(table) == 8


def test_fold_compile_probe_agrees_with_xla(bench, capsys):
    # benchmarks/fold_compile.py (quoted in RESULTS-models.md): on its two tiny calls the
    # rule takes width_fold, the three forms agree with XLA's output, and its table has a
    # row per call; the times themselves are not checked (speed is the benchmarks' job).
    probe = importlib.import_module("fold_compile")
    rows = probe.main(["--quick", "--repeats", "1", "--calls", "1"])
    assert [r["choice"] for r in rows] == ["width_fold", "width_fold"]
    assert all(r["error"][form] < 1e-5 for r in rows for form in probe.FORMS)
    assert all(r["compile_ms"][form] > 0 and r["run_ms"][form] > 0
               for r in rows for form in probe.FORMS)
    table = capsys.readouterr().out.splitlines()
    assert table[6].startswith("| input → filters") and len(table) == 12


def test_rule_sweep_covers_every_cpu_lowering_and_agrees(bench, tmp_path, monkeypatch):
    # benchmarks/rule_sweep.py: its grid reaches every lowering the CPU rule can choose
    # (checked by tracing alone), and on tiny shapes each chosen lowering computes XLA's
    # outputs and gradients; the report has both tables.
    import jax.numpy as jnp

    from kconv.ops import lowering

    monkeypatch.setattr(lowering.rule, "_host_cores", lambda: 2)  # eigen_crop's rule wants two
    sweep = importlib.import_module("rule_sweep")
    chosen = set()
    for case in sweep.CASES:
        fn, params, x, _ = sweep.build(sweep.quick_case(case))
        chosen |= set(sweep._chosen(fn, (params, x)))
    # (tap_loop's own region, folded inputs above 256 MiB, is too big to time here: its
    # choice is in tests/test_lowerings.py's rule table, its gradients are width_fold's.)
    assert chosen >= {"pointwise_dot", "depthwise_taps", "block_diagonal", "grouped_split",
                      "eigen_crop", "width_fold", "subpixel_transpose", "bilinear_stencil"}

    out = tmp_path / "RULE_SWEEP.md"
    ids = ["P7", "D4", "G2", "E2", "F1", "T10", "U3", "H2", "H7", "H13"]
    res = sweep.main(["--quick", "--cases", ",".join(ids), "--out", str(out)])
    assert [r["id"] for r in res["rows"]] == ids
    for row in res["rows"]:
        assert set(row["modes"]) == {"fwd", "fwdbwd"}, row
        # float32 rows: XLA's numbers to 1e-5; 16-bit rows (the layers' call, float32
        # accumulation rounded once): one unit in the last place (the dtype's epsilon).
        case = next(c for c in sweep.CASES if c.id == row["id"])
        ulp = float(jnp.finfo(case.dtype).eps) if case.sixteen_bit() else 1e-5
        for mode, m in row["modes"].items():
            assert m["max_error"] <= ulp, (row["id"], mode, m["max_error"])
            assert "numbers" not in m["flags"] and min(m["ms"].values()) > 0
    text = out.read_text()
    assert "## Forward\n" in text and "## Forward + backward\n" in text
    assert "| G2 | conv (1, 8, 8, 64) k(3, 3, 16, 64), padding=same | block_diagonal |" in text
