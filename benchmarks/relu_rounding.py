"""How far rounding moves a ReLU stack's gradients: the harness's models (M1–M4;
RELU_ROUNDING-xeon.md ran before M4 existed: M1–M3).

The models (``bench_workloads``: layers with a ReLU between each two) are checked by the
harness with their gradients in norm, not elementwise (``bench.check_outputs``): a ReLU
whose input lies within rounding of 0 passes its cotangent in one implementation and
not in another, so a correct implementation's gradients differ from another's by O(1)
at a few entries. This probe measures that, per model, against torch in float64 (the
harness's torch model, its weights and input, widened):

- ``kconv float32``: kconv's forward+backward (XLA:CPU);
- ``torch float32``: torch's, on the CPU;
- ``torch TF32``: torch's with every convolution's operands (forward and backward:
  ``aten.convolution`` and ``aten.convolution_backward``) rounded to TensorFloat-32, 10
  mantissa bits, nearest with ties away from 0 (``cvt.rna.tf32.f32``): what cuDNN and
  XLA:GPU compute by default for float32 convolutions on a GPU.

Per model and form: the largest elementwise error ``|a − ref| / max(1, max|ref|)`` over
the gradients, the largest relative norm ``‖a − ref‖ / ‖ref‖``, and (torch's forms) the
fraction of ReLU inputs on the other side of 0 from float64's. The fraction grows like the
rounding ε, the norm like √ε (a few entries each moved by O(1)); a Markdown table is
printed (``--out`` writes it to a file as well):

    python benchmarks/relu_rounding.py [--batch-scale 8] [--workloads M1,M2,M3] [--quick]

What it answers: whether the GPU tables' ✗ for torch's model gradients (float32 with
TensorFloat-32 products, ``RESULTS-gpu.md``) is rounding at ReLUs or a real difference,
and what tolerance the harness's check of the models should have.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import bench  # noqa: E402
import bench_impls  # noqa: E402
import bench_workloads  # noqa: E402

FORMS = ("kconv float32", "torch float32", "torch TF32")


def round_tf32(t):
    """A float32 tensor rounded to TensorFloat-32 (10 mantissa bits, ties away from 0),
    kept in float32; any other value as it is."""
    import torch

    if not (isinstance(t, torch.Tensor) and t.dtype == torch.float32):
        return t
    bits = t.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def _modes():
    """A torch dispatch mode class, ``Record(tf32)``: it records the input of every ReLU
    (in call order) and, with ``tf32``, rounds every convolution's operands to TF32."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_map

    aten = torch.ops.aten
    convs = (aten.convolution.default, aten.convolution_backward.default)

    class Record(TorchDispatchMode):
        def __init__(self, tf32: bool):
            super().__init__()
            self.tf32, self.relu_inputs = tf32, []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if self.tf32 and func in convs:
                args = tree_map(round_tf32, args)
            if func is aten.relu.default:
                self.relu_inputs.append(args[0].detach().double().cpu().numpy())
            return func(*args, **(kwargs or {}))

    return Record


def _torch_grads(impl, mode) -> dict[str, np.ndarray]:
    """torch's forward+backward of ``impl`` under the dispatch ``mode``, widened."""
    import torch

    with mode:
        _, out, _ = bench.prepare_torch(impl, "fwdbwd", torch, "cpu")
    return {k: v.astype(np.float64) for k, v in bench.to_ref(impl, "fwdbwd", out).items()}


def measure(w, batch_scale: int, quick: bool) -> dict:
    """One model's row: each form's errors against torch in float64."""
    p = bench_impls.make_problem(w, w.shape(quick=quick, batch_scale=batch_scale), "float32")
    build_torch = bench_impls.BUILDERS["torch"]
    kc = bench_impls.BUILDERS["kconv"](p)
    target, args = bench._jax_target(kc, "fwdbwd")
    got = {"kconv float32": {k: v.astype(np.float64) for k, v in
                             bench.to_ref(kc, "fwdbwd", jax.jit(target)(*args)).items()}}
    Record = _modes()
    relus = {}
    for form, tf32 in (("torch float32", False), ("torch TF32", True)):
        rec = Record(tf32)
        got[form] = _torch_grads(build_torch(p), rec)
        relus[form] = rec.relu_inputs
    t64 = build_torch(p)
    for _, q, _ in t64.weights:
        q.data = q.data.double()
    t64.x, t64.ct = t64.x.double(), t64.ct.double()
    rec = Record(False)
    ref = _torch_grads(t64, rec)
    units = sum(r.size for r in rec.relu_inputs)
    row = {"model": w.id, "title": w.title, "shape": p.shape, "relu_units": units, "forms": {}}
    grads = [k for k in ref if k.startswith("d")]
    for form in FORMS:
        elem = max(bench.compare(got[form][k], ref[k], 0.0)["err"] for k in grads)
        norm = max(bench.compare_norm(got[form][k], ref[k], 0.0)["err"] for k in grads)
        flipped = (sum(int(np.sum(np.signbit(a) != np.signbit(b)))
                       for a, b in zip(relus[form], rec.relu_inputs))
                   if form in relus else None)
        row["forms"][form] = {"elementwise": elem, "norm": norm,
                              "flipped": None if flipped is None else flipped / units}
    return row


def render(rows: list[dict], argv: list[str]) -> str:
    L = [f"`python benchmarks/relu_rounding.py {' '.join(argv)}`, "
         f"{datetime.date.today()}, jax {jax.__version__}", "",
         "Gradients of each model (forward+backward, every weight and the input) against "
         "torch in float64: the largest elementwise error |a − ref| / max(1, max|ref|), "
         "the largest relative norm ‖a − ref‖ / ‖ref‖, and the fraction of ReLU inputs on "
         "the other side of 0 from float64's.", "",
         "| model | input | ReLU inputs | " + " | ".join(
             f"{f}: elementwise · norm · flipped" for f in FORMS) + " |",
         "|---|---|---|" + "---|" * len(FORMS)]
    for r in rows:
        cells = [r["model"], "×".join(map(str, r["shape"])), f"{r['relu_units']:,}"]
        for f in FORMS:
            x = r["forms"][f]
            flip = "—" if x["flipped"] is None else f"{x['flipped']:.1e}"
            cells.append(f"{x['elementwise']:.1e} · {x['norm']:.1e} · {flip}")
        L.append("| " + " | ".join(cells) + " |")
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="models", help="model ids (default: all of them)")
    ap.add_argument("--batch-scale", type=int, default=8,
                    help="multiply every batch size (8: the GPU tables' sizes)")
    ap.add_argument("--quick", action="store_true", help="the models' tiny inputs (the tests)")
    ap.add_argument("--out", help="also write the table to this file")
    args = ap.parse_args(argv)
    rows = [measure(w, args.batch_scale, args.quick)
            for w in bench_workloads.by_id(args.workloads)]
    table = render(rows, argv)
    print(table)
    if args.out:
        Path(args.out).write_text(table)
    return rows


if __name__ == "__main__":
    main()
