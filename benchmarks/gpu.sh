#!/usr/bin/env bash
# The GPU tables of benchmarks/RESULTS-gpu.md: the same harness at 8x batch, in float32 and
# in bfloat16, on a CUDA machine with JAX (CUDA plugin), flax, Keras 3 and a CUDA PyTorch.
#
#   bash benchmarks/gpu.sh OUTDIR [DTYPE:WORKLOADS:SECONDS ...]   # from the repository root
#   bash benchmarks/gpu.sh out bfloat16:all:230 float32:X5,X6:60 probe:120
#
# "probe:SECONDS[:WORKLOADS]" runs benchmarks/gpu_probe.py (kconv's GPU path and candidate
# lowerings; by default on D2,D3) within SECONDS, e.g. probe:120:W6,D2,D3, with every
# variant's optimized program in OUTDIR/probe-hlo.txt.
#
# Wheels in .whl/ (those the machine lacks: keras, namex, optree) are installed under
# /tmp/site first, so the script also runs on a machine that cannot reach PyPI. It spends
# about 7 minutes: a smoke check, then each table with a time budget (--stop-after), so a
# slow machine still returns the workloads it finished. float32 runs with --tol 5e-3:
# cuDNN (torch) and XLA:GPU (every JAX implementation) both compute float32 convolutions
# with TensorFloat-32 products by default, in different algorithms, so they agree to
# ~1e-3, not 1e-4.
set -u
OUT=${1:?give an output folder}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.5
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv

# Smoke: kconv on this JAX and backend, against lax, forward and gradient.
timeout 120 python3 - <<'EOF' || exit 1
import os, sys
sys.path.insert(0, os.getcwd())
os.environ.setdefault("KERAS_BACKEND", "jax")
import jax, jax.numpy as jnp, numpy as np, flax, keras, torch
import kconv
print("jax", jax.__version__, jax.devices(), "| flax", flax.__version__, "| keras",
      keras.__version__, "| torch", torch.__version__, torch.cuda.is_available())
x = jax.random.normal(jax.random.key(0), (4, 16, 16, 8))
layer = kconv.layers.Conv2D(16, 3, strides=2, padding="same")
params = layer.init(jax.random.key(1), x.shape)
f = jax.jit(lambda p, x: jnp.sum(layer.apply(p, x) ** 2))
k = params["kernel"]
ref = lambda k, x: jnp.sum((jax.lax.conv_general_dilated(
    x, k, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
    precision="highest") + params["bias"]) ** 2)
g = jax.grad(f, argnums=(0, 1))(params, x)
gr = jax.grad(ref, argnums=(0, 1))(k, x)
for a, b in ((g[0]["kernel"], gr[0]), (g[1], gr[1])):
    err = float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
    print("relative error", err)
    assert err < 5e-3, err
# Mixed bfloat16: the compiled gradient's convolutions (their output types first).
lb = kconv.layers.Conv2D(16, 3, padding="same", dtype="mixed_bfloat16")
pb = lb.init(jax.random.key(2), x.shape)
hlo = jax.jit(jax.grad(lambda p, x: jnp.sum(lb.apply(p, x).astype(jnp.float32) ** 2))
              ).lower(pb, x).compile().as_text()
for line in hlo.splitlines():
    if "conv" in line and "custom-call" in line:
        print("  ", line.strip()[:110])
EOF

# The tables: DTYPE:WORKLOADS:SECONDS each (default both dtypes, every workload), with
# --stop-after SECONDS and a hard limit a minute later.
tables=("${@:2}")
[ ${#tables[@]} -gt 0 ] || tables=(float32:all:170 bfloat16:all:150)
for table in "${tables[@]}"; do
  if [ "${table%%:*}" = probe ]; then   # probe[:SECONDS[:WORKLOADS]]: gpu_probe.py
    IFS=: read -r _ secs ids <<<"$table"
    timeout "${secs:-180}" python3 benchmarks/gpu_probe.py --out "$OUT/probe.md" \
      --hlo "$OUT/probe-hlo.txt" \
      ${ids:+--workloads "$ids"} 2>&1 | tee "$OUT/log-probe.txt"
    continue
  fi
  IFS=: read -r dtype workloads budget <<<"$table"
  tol=(); [ "$dtype" = float32 ] && tol=(--tol 5e-3)
  name="gpu-$dtype${workloads:+-${workloads//,/}}"; name=${name%-all}
  timeout $((budget + 60)) python3 benchmarks/bench.py --batch-scale 8 --dtype "$dtype" \
    --workloads "$workloads" --seconds 1 --compile-repeats 3 "${tol[@]}" \
    --stop-after "$budget" --out "$OUT/RESULTS-$name.md" --json "$OUT/results-$name.json" \
    2>&1 | tee "$OUT/log-$name.txt"
done
