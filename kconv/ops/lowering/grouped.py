"""Grouped dense convolutions: ``block_diagonal`` (one dense convolution with a
block-diagonal kernel) and ``grouped_split`` (one dense convolution per group).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
from jax import lax

from kconv.ops.lowering import dispatch  # imports this module: used at call time
from kconv.ops.lowering.spec import Array, ConvSpec, _channel_axis
from kconv.ops.lowering.plain import _xla_conv
from kconv.ops.lowering.primitives import _conv_primitive, _transposes


def grouped_split(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any,
                  lower: Callable[..., Array] | None = None) -> Array:
    """A grouped convolution (transposed, or forward with a dense kernel over
    :data:`MAX_BLOCK_DIAGONAL_WEIGHTS`) with several input channels per group as
    ``groups`` dense convolutions on channel slices, concatenated (each lowered by
    :func:`choose` again, so a 1×…×1 group becomes a matrix product).

    XLA:CPU runs ``feature_group_count > 1`` on its generic loop: for (16, 32, 32, 64) →
    64 channels, 3×3, forward / forward+backward, groups 2: 164 / 1848 → 32 / 103 ms,
    groups 4: 204 / 4155 → 30 / 44 ms, groups 16: 153 / 10777 → 67 / 203 ms. A forward
    convolution with a smaller dense kernel takes :func:`block_diagonal` instead, slower
    to run (X6: 8 / 15 → 14 / 29 ms) but one convolution to compile instead of ``groups``
    slices of the input, kernel and (backward) cotangent, each a loop fusion (X6 lower +
    compile 4.4 / 2.1 → 1.3 / 1.1× the plain path's). Without
    ``feature_group_count`` it also avoids jax 0.10.2's SPMD partitioner bug (the weight
    gradient of a grouped convolution multiplied by the size of a mesh axis the batch is
    replicated over; README, "Beyond one device").

    ``lower`` computes one group: ``dispatch._cpu_conv`` (the default), or for a
    transposed convolution ``dispatch._cpu_conv_transpose`` — its kernel
    ``(*k, F // g, C)`` holds group ``j`` in the same place, the last axis's ``j``-th
    slice, so the same slicing serves both.
    """
    lower = lower or dispatch._cpu_conv
    groups, axis = spec.groups, _channel_axis(spec)
    per_group, filters = spec.channels // groups, spec.kernel_shape[-1] // groups
    shape = list(spec.input_shape)
    shape[axis] = per_group
    # Each part feeds the concatenation, not the bias: no "eigen_crop" for the parts.
    single = dataclasses.replace(spec, input_shape=tuple(shape), groups=1,
                                 kernel_shape=spec.kernel_shape[:-1] + (filters,),
                                 bias=False)
    parts = [lower(lax.slice_in_dim(x, g * per_group, (g + 1) * per_group, axis=axis),
                       lax.slice_in_dim(kernel, g * filters, (g + 1) * filters,
                                        axis=kernel.ndim - 1), single, precision)
             for g in range(groups)]
    return lax.concatenate(parts, axis)


def block_diagonal(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any) -> Array:
    """A grouped convolution with several input channels per group as one dense
    convolution whose kernel holds each group's block on the diagonal, zeros elsewhere
    (lowered by :func:`choose` again, so a 1×…×1 kernel becomes a matrix product).

    ``groups`` times the multiply-adds of the grouped convolution, but on XLA:CPU's dense
    path, which runs them faster than its generic loop runs ``feature_group_count > 1``,
    and the program is one convolution plus the kernel's select (its derivatives: the
    dense convolution's, and the select's transpose on the kernel gradient). X6
    ((16, 32, 32, 64) → 64, 3×3, groups 4), forward / forward+backward: run 42 / 556 →
    14 / 29 ms; lower + compile 44 / 145 → 58 / 155 ms (:func:`grouped_split`'s slices:
    192 / 303 ms, for 8 / 15 ms); peak memory the plain path's, 4 MB fewer temporaries
    backward. The extra terms are exact zeros, so finite inputs give the grouped
    convolution's numbers; an infinite or NaN *input* element, though, spreads NaN
    (``0 × inf``) to every group's outputs at that position, where the grouped
    convolution keeps it in its own group. Without ``feature_group_count`` it also avoids
    jax 0.10.2's SPMD partitioner bug (the weight gradient of a grouped convolution
    multiplied by the size of a mesh axis the batch is replicated over; README, "Beyond
    one device").

    In 1-D with at least :data:`_GROUPED_1D_XLA_FORWARD_MIN_CHANNELS` input channels per
    group, XLA:CPU's grouped forward is the faster one (``benchmarks/RULE_SWEEP.md``,
    forward, block-diagonal → grouped, ms: (8, 512, 64) → 64 groups 4 0.62 → 0.53,
    (8, 512, 128) → 128 groups 8 2.30 → 1.37, (8, 512, 256) → 256 groups 4 7.9 → 3.4;
    with 8 per group 0.64 → 0.73, (16, 1024, 32) k5 1.08 → 1.87), while its gradients
    stay slow (forward+backward 2.9 → 1.7 ms, 9.8 → 4.8; 32 per group 3.8 s → 2.6 ms):
    there the call is a bilinear primitive (:data:`_block_diagonal_dual_p`) with XLA's
    forward and this dense convolution's transposes. In 2-D and 3-D the dense forward
    won at every size measured (0.36–0.55 ×).
    """
    if spec.rank == 1 and spec.kernel_shape[-2] >= _GROUPED_1D_XLA_FORWARD_MIN_CHANNELS:
        return _block_diagonal_dual_p.bind(x, kernel, spec=spec, precision=precision)
    return _block_diagonal_dense(x, kernel, spec=spec, precision=precision)


#: See :func:`block_diagonal`.
_GROUPED_1D_XLA_FORWARD_MIN_CHANNELS = 16


def _block_diagonal_dense(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any
                          ) -> Array:
    """:func:`block_diagonal`'s dense convolution of the block-diagonal kernel."""
    groups = spec.groups
    per_group, filters = kernel.shape[-2], kernel.shape[-1] // groups
    rank = kernel.ndim - 2
    # (*k, C/g, F) -> (*k, 1, C/g, g, F/g), then row block i, column block j kept where
    # i == j: input channel i * C/g + c, output channel j * F/g + f, as lax groups them.
    # A select, not a product with the identity, so that an infinite weight stays in its
    # own group's block. lax ops, not jnp's: each jnp call is a jitted function that is
    # traced and lowered as a nested one (X6 forward trace + lowering 14.7 -> 12.6 ms).
    shape = kernel.shape[:rank] + (groups, per_group, groups, filters)
    spatial = tuple(range(rank))
    blocks = lax.broadcast_in_dim(
        lax.reshape(kernel, kernel.shape[:rank] + (per_group, groups, filters)), shape,
        spatial + (rank + 1, rank + 2, rank + 3))
    diagonal = lax.broadcast_in_dim(np.eye(groups, dtype=bool), shape, (rank, rank + 2))
    dense = lax.select(diagonal, blocks, lax.full(shape, 0, kernel.dtype))
    dense = lax.reshape(dense, kernel.shape[:rank] + (groups * per_group, groups * filters))
    single = dataclasses.replace(spec, groups=1, kernel_shape=dense.shape)
    return dispatch._cpu_conv(x, dense, single, precision)


#: A 1-D :func:`block_diagonal` with wide groups: XLA's grouped convolution as its value
#: and tangents, the dense convolution's transposes as its gradients.
_block_diagonal_dual_p = _conv_primitive("kconv_block_diagonal_dual", _xla_conv,
                                         *_transposes(_block_diagonal_dense))
