"""Run in a fresh process with 8 simulated CPU devices (tests/test_sharding.py does that):
every kconv layer under ``jax.jit`` with sharded inputs and kernels, against one device.

Prints one JSON object: ``{case: max relative error}`` for the forward outputs and the
gradients w.r.t. params and input, per layer and layout:

- ``data``: the batch split over a 1-D mesh of 8 ("data"), params replicated;
- ``model``: kernels (and biases) split over their output channels on a 1-D mesh of 4,
  the batch replicated;
- ``data+model``: a 2-D mesh (4 x 2): batch over "data", output channels over "model";
- ``data,replicated-over-model``: the 2-D mesh with the batch over "data" and everything
  replicated over "model" — the layout where jax 0.10.2's SPMD partitioner multiplies the
  weight gradient of a grouped convolution (feature_group_count > 1) by the "model" size;
- ``shard_map``: a data-parallel step written per device with :func:`jax.shard_map` over
  the "data" mesh (``check_vma``, the default: a replicated weight's gradient comes out
  summed over the devices, as lax's does; for ``UNCHECKED_CASES`` ``check_vma=False``,
  the per-device gradients summed with ``lax.psum``);
- ``explicit``: the batch over a mesh of ``Explicit`` axes (``jax.make_mesh``'s default)
  entered with ``jax.set_mesh``, forward only (lax's own convolution gradients do not take
  explicit sharding in jax 0.10.2);
- ``flax-annotations``: ``kconv.linen`` / ``kconv.nnx`` modules whose kernel initializer
  carries Flax's sharding annotation (``with_partitioning``), initialized sharded.

The grouped cases run a second time on XLA's own convolution (``<case>-xla``), where that
bug shows; kconv's CPU lowerings avoid feature_group_count and so the bug.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import kconv  # noqa: E402

BATCH = 8
# (name, args, unbatched input shape); output channels divisible by 4.
CASES = [
    ("Conv1D", dict(filters=4, kernel_size=3, padding="causal", dilation_rate=2), (12, 3)),
    ("Conv2D", dict(filters=8, kernel_size=3, strides=2, padding="same"), (9, 9, 3)),
    ("Conv2D", dict(filters=8, kernel_size=3, groups=2, data_format="channels_first"),
     (4, 8, 8)),
    ("Conv3D", dict(filters=4, kernel_size=2), (5, 5, 5, 2)),
    ("SeparableConv1D", dict(filters=4, kernel_size=3, depth_multiplier=2), (10, 2)),
    ("SeparableConv2D", dict(filters=4, kernel_size=3, padding="same"), (8, 8, 4)),
    ("DepthwiseConv1D", dict(kernel_size=3, depth_multiplier=2), (10, 4)),
    ("DepthwiseConv2D", dict(kernel_size=3, padding="same"), (8, 8, 4)),
    ("Conv1DTranspose", dict(filters=4, kernel_size=3, strides=2), (6, 3)),
    ("Conv2DTranspose", dict(filters=4, kernel_size=3, strides=2, padding="same"), (5, 5, 3)),
    ("Conv3DTranspose", dict(filters=4, kernel_size=2, strides=2), (3, 3, 3, 2)),
    ("Cropping2D", dict(cropping=((1, 0), 2)), (8, 8, 3)),
    ("ZeroPadding3D", dict(padding=1), (3, 3, 3, 2)),
    ("UpSampling2D", dict(size=2, interpolation="bilinear"), (5, 5, 3)),
    ("UpSampling1D", dict(size=3), (5, 3)),
    ("SeparableConv3D", dict(filters=4, kernel_size=2, padding="same"), (4, 4, 4, 2)),
    ("DepthwiseConv3D", dict(kernel_size=2, depth_multiplier=2), (4, 4, 4, 4)),
    ("Conv2DTranspose", dict(filters=8, kernel_size=3, strides=2, groups=2), (5, 5, 4)),
    # Stride 1, one input channel per group: kconv's flipped_forward (depthwise_taps).
    ("Conv2DTranspose", dict(filters=16, kernel_size=3, groups=4, padding="same"), (6, 6, 4)),
]

# Grouped convolutions (feature_group_count > 1 on XLA's path): CASES indices also run with
# kconv.config.conv_lowering("xla") on the layouts that batch-replicate over "model".
PLAIN_PATH_CASES = (2, 4, 5, 6, 7, 18)
BUG_LAYOUTS = ("data+model", "data,replicated-over-model")
# CASES indices whose shard_map step runs with check_vma=False (DepthwiseConv2D,
# Conv3DTranspose).
UNCHECKED_CASES = (7, 10)


def output_axis(layer, name: str, ndim: int) -> int | None:
    """The axis of weight ``name`` that indexes output channels (None: replicate)."""
    if name == "bias":
        return 0
    if isinstance(layer, kconv.layers.ConvTranspose):
        return ndim - 2
    if isinstance(layer, kconv.layers.DepthwiseConv):
        return ndim - 2  # (*k, in, dm): output channel c * dm + m, split over c
    if isinstance(layer, kconv.layers.SeparableConv):
        return ndim - 1 if name == "pointwise_kernel" else None
    return ndim - 1


def spec(axis: int | None, ndim: int, mesh_axis: str) -> P:
    if axis is None:
        return P()
    return P(*[mesh_axis if i == axis else None for i in range(ndim)])


def relerr(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))


def run_case(layer, params, x, mesh, x_spec, param_axis: str | None) -> dict[str, float]:
    def loss(p, v):
        return jnp.sum(jnp.sin(layer(p, v)))

    fwd = jax.jit(layer)
    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    y1, (gp1, gx1) = fwd(params, x), grad(params, x)
    xs = jax.device_put(x, NamedSharding(mesh, x_spec))
    ps = {n: jax.device_put(w, NamedSharding(mesh, spec(
        output_axis(layer, n, w.ndim) if param_axis else None, w.ndim, param_axis)))
        for n, w in params.items()}
    y2, (gp2, gx2) = fwd(ps, xs), grad(ps, xs)
    errs = {"out": relerr(y2, y1), "grad_x": relerr(gx2, gx1)}
    for n in params:
        errs[f"grad_{n}"] = relerr(gp2[n], gp1[n])
    return errs


def run_shard_map(layer, params, x, mesh, check_vma: bool) -> dict[str, float]:
    """A data-parallel step in ``jax.shard_map``: each device's slice of the batch, the
    weights replicated; outputs and input gradients per device, weight gradients summed."""
    def loss(p, v):
        return jnp.sum(jnp.sin(layer(p, v)))

    def step(p, v):
        gp, gv = jax.grad(loss, argnums=(0, 1))(p, v)
        if not check_vma:
            gp = jax.lax.psum(gp, "data")
        return layer(p, v), gp, gv

    mapped = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P("data")),
                                   out_specs=(P("data"), P(), P("data")), check_vma=check_vma))
    y1, (gp1, gx1) = jax.jit(layer)(params, x), jax.jit(jax.grad(loss, argnums=(0, 1)))(
        params, x)
    y2, gp2, gx2 = mapped(params, x)
    errs = {"out": relerr(y2, y1), "grad_x": relerr(gx2, gx1)}
    for n in params:
        errs[f"grad_{n}"] = relerr(gp2[n], gp1[n])
    return errs


def run_explicit(layer, params, x, devices) -> dict[str, float]:
    """The forward pass with the batch sharded over an ``Explicit`` mesh axis."""
    mesh = jax.make_mesh((devices.size,), ("data",),
                         axis_types=(jax.sharding.AxisType.Explicit,))
    y1 = jax.jit(layer)(params, x)
    with jax.set_mesh(mesh):
        y2 = jax.jit(layer)(params, jax.device_put(x, NamedSharding(mesh, P("data"))))
        assert tuple(jax.typeof(y2).sharding.spec)[:1] == ("data",), jax.typeof(y2)
    return {"out": relerr(y2, y1)}


def run_flax_partitioned(devices) -> dict[str, dict[str, float]]:
    """kconv's Flax modules with Flax's own sharding annotations on the kernel's output
    channels (``nn.with_partitioning`` / ``nnx.with_partitioning`` as the initializer):
    initialized sharded over a 4-device "model" mesh, the kernels laid out as annotated,
    and the outputs one device's."""
    import flax.linen as nn
    from flax import nnx

    from kconv import linen as kl
    from kconv import nnx as knnx

    x = jax.random.normal(jax.random.key(0), (BATCH, 9, 9, 3))
    results = {}
    # linen: the annotations give the shardings of a jitted init (Flax's recipe).
    mesh = Mesh(devices[:4], ("model",))
    module = kl.Conv2D(8, 3, padding="same", kernel_initializer=nn.with_partitioning(
        nn.initializers.lecun_normal(), (None, None, None, "model")))
    specs = nn.get_partition_spec(jax.eval_shape(module.init, jax.random.key(1), x))
    variables = jax.jit(module.init, out_shardings=jax.tree.map(
        lambda spec: NamedSharding(mesh, spec), specs))(jax.random.key(1), x)
    kernel = variables["params"]["kernel"].value
    assert kernel.sharding.spec == P(None, None, None, "model"), kernel.sharding
    params = jax.device_get(nn.meta.unbox(variables)["params"])
    results["Conv2D-linen/flax-annotations"] = {
        "out": relerr(jax.jit(module.apply)(variables, x), module.pure_layer(params, x))}
    # NNX: weights are created sharded where the mesh is set (Flax's eager sharding).
    mesh = jax.make_mesh((4,), ("model",), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=devices[:4])
    with jax.set_mesh(mesh):
        m = knnx.Conv2DTranspose(8, 3, strides=2, in_channels=3, rngs=nnx.Rngs(0),
                                 kernel_initializer=nnx.with_partitioning(
                                     nnx.initializers.lecun_normal(),
                                     (None, None, "model", None)))
        kernel = m.kernel[...]
        assert kernel.sharding.spec == P(None, None, "model", None), kernel.sharding
        y = nnx.jit(lambda m, x: m(x))(m, x)
    params = {"kernel": np.asarray(kernel), "bias": np.asarray(m.bias[...])}
    results["Conv2DTranspose-nnx/flax-annotations"] = {"out": relerr(y, m.layer(params, x))}
    return results


def main() -> None:
    devices = np.array(jax.devices())
    if devices.size < 8:
        sys.exit(f"need 8 devices, got {devices.size}: set XLA_FLAGS first")
    meshes = {
        "data": (Mesh(devices, ("data",)), P("data"), None),
        "model": (Mesh(devices[:4], ("model",)), P(), "model"),
        "data+model": (Mesh(devices.reshape(4, 2), ("data", "model")), P("data"), "model"),
        "data,replicated-over-model": (Mesh(devices.reshape(4, 2), ("data", "model")),
                                       P("data"), None),
    }
    results = {}
    for i, (name, args, shape) in enumerate(CASES):
        layer = getattr(kconv, name)(**args)
        x = jax.random.normal(jax.random.key(i), (BATCH,) + shape)
        params = layer.init(jax.random.key(100 + i), x.shape)
        for layout, (mesh, x_spec, param_axis) in meshes.items():
            if param_axis and not params:
                continue
            results[f"{name}-{i}/{layout}"] = run_case(layer, params, x, mesh, x_spec,
                                                       param_axis)
            if i in PLAIN_PATH_CASES and layout in BUG_LAYOUTS:
                # XLA's grouped convolution (no CPU lowering), where the upstream bug shows.
                with kconv.config.conv_lowering("xla"):
                    results[f"{name}-{i}-xla/{layout}"] = run_case(
                        layer, params, x, mesh, x_spec, param_axis)
        results[f"{name}-{i}/shard_map"] = run_shard_map(layer, params, x, meshes["data"][0],
                                                         check_vma=i not in UNCHECKED_CASES)
        results[f"{name}-{i}/explicit"] = run_explicit(layer, params, x, devices)
    results.update(run_flax_partitioned(devices))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
