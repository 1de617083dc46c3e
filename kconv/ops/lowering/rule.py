"""The rule: which lowering computes one call on one backend (:func:`choose`), and the
thresholds it is tuned by. What each clause was measured on is in :func:`choose`'s
docstring and :mod:`kconv.ops.lowering`'s.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from kconv import _args
from kconv.ops.lowering.spec import XLA, ConvSpec, UpsampleSpec, conv_output_shape


#: The most multiply-adds per output element (kernel taps × depth multiplier) that
#: :func:`choose` computes as shifted multiply-adds; more keep XLA's convolution, so that
#: the traced program (and its compile time) stays small.
MAX_DEPTHWISE_TAPS = 49


#: The most groups :func:`choose` computes as dense convolutions (``block_diagonal`` or
#: ``grouped_split``); more keep XLA's grouped convolution, so that the program stays
#: small.
MAX_SPLIT_GROUPS = 16


#: The most weights (kernel taps × input channels × filters) of the dense kernel
#: ``block_diagonal`` builds; a grouped convolution whose dense kernel would be bigger takes
#: ``grouped_split``. The dense kernel costs ``groups`` times the multiply-adds and the
#: memory of the grouped one: (4, 16, 16, 512) → 512, 3×3 (2.4 M weights), groups 16,
#: forward 13 ms on XLA's grouped loop, 33 ms dense, 18 MB more temporaries; 128 → 128
#: (147 k weights) groups 4 / 16, forward 49 / 46 → 21 / 18 ms, 1 MB more.
MAX_BLOCK_DIAGONAL_WEIGHTS = 2 ** 18


#: ``"eigen_crop"`` is taken while input channels × filters is below this. From 128 × 128
#: on (and at 64 × 256) XLA:CPU's YNNPACK convolution already keeps both cores of the
#: 2-core machine busy, and Eigen's ran 0.95–1.09× its time; below, 0.46–0.78× (e.g.
#: 17 × 17 0.46, 32 × 128 0.54, 64 × 128 0.57, 64 × 64 0.61–0.68, 128 × 64 0.65,
#: 96 × 96 0.78, on 16–32² inputs).
EIGEN_CROP_CHANNEL_PRODUCT = 128 * 128


#: The largest folded input (bytes) ``"width_fold"`` builds: ``k_w`` copies of a 3-D
#: convolution's input, held for the forward pass (the plain path holds none).
MAX_WIDTH_FOLD_BYTES = 2 ** 28


def choose(op: str, backend: str, spec: ConvSpec | UpsampleSpec) -> str:
    """The lowering that computes one call on one backend (the rule in
    :mod:`kconv.ops.lowering`'s docstring).

    Args:
      op: ``"conv"`` (every forward convolution, grouped and depthwise included),
        ``"conv_transpose"`` or ``"upsample"``.
      backend: a JAX platform name: ``"cpu"``, ``"gpu"``, ``"cuda"``, ``"rocm"``,
        ``"tpu"``, ….
      spec: the call's :class:`ConvSpec` (:class:`UpsampleSpec` for ``"upsample"``).

    Returns:
      ``"xla"`` (``lax.conv_general_dilated`` / ``jax.image.resize`` as written) or the
      name of a lowering: ``"pointwise_dot"``, ``"depthwise_taps"``, ``"block_diagonal"``,
      ``"grouped_split"``, ``"eigen_crop"``, ``"width_fold"``, ``"tap_loop"``,
      ``"subpixel_transpose"``, ``"flipped_forward"``, ``"bilinear_stencil"``. ``"eigen_crop"`` (and ``"width_fold"``'s inner 2-D
      convolution) also depends on the cores this process may run on (two or more).

    Rewrites measured on XLA:CPU and left out of the rule (forward / forward+backward,
    plain → rewrite): a dense 2-D convolution as patches + one matrix product (W1
    6.8 → 29 ms forward, 3.6× the peak memory); ``eigen_crop`` without a bias to fuse
    the crop into (a loop fusion of its own: W1 lower + compile 16 → 81 ms), and for the
    gradients (the input's would keep an output-sized buffer past lax's temporaries; the
    kernel's, with a cotangent taller than the input, XLA swaps into its generic loop:
    0.37 s); the batch split into independent convolutions (XLA:CPU runs them one after
    the other: two W1 convolutions 26.4 ms against one's 13.4); a strided one as
    space-to-depth + a stride-1 one (W2 5.7 / 27 → 17 / 72 ms);
    channels_first transposed to channels_last around the convolution (W3: no change,
    XLA:CPU does it itself); 1-D as 2-D over a unit height (W6 1.4 / 4.5 → 1.4 / 6.4 ms);
    3-D as 2-D convolutions over the depth taps (the depth folded into the batch), W7
    ``(2, 16, 16, 16, 16)`` → 16, 3×3×3, forward / forward+backward ratios to the plain
    path: the taps summed under plain autodiff 0.14 / 0.09 or folded into channels
    0.10 / 0.06, but 3.5–4× its temporaries (autodiff keeps every tap's window and partial
    gradient alive); a ``custom_vjp`` with the taps in a ``fori_loop`` (input gradient)
    and a chained unrolled kernel gradient 0.2 / 0.15–0.19 with half the temporaries, but
    1.85× the lower+compile time (forward alone ~10×), no forward mode (``jvp`` raises:
    a ``custom_vjp`` cannot be transposed inside a ``custom_jvp`` tangent) and a kernel
    gradient whose float32 error grows with ``N · D · H · W`` through XLA's fast 2-D path
    (2.3e-5 relative at (8, 32, 32, 32, 8) → 64, where the plain path stays near 1e-6);
    the forward alone that way behind a primitive with lax's gradients (forward+backward
    lax's program), W7 10.5 → 3.0–3.2 ms, but 1.8–2.2× lax's compile time (the kernel's
    per-tap slices or its reorder are loop fusions) and 3 MiB of forward temporaries —
    hence ``width_fold``, which folds the *last* axis's taps, the one next to the
    kernel's input channels, so the kernel needs no reorder (W7 7.5 → 2.2 ms, 1.15–1.4×
    the compile time; folding the depth axis into the batch instead would save the
    transposes but reorder the kernel). Measured with ``width_fold`` (forward, plain →
    fold, ms): channels_first 7.9 → 2.7; stride 2 1.6 → 0.8; dilation 2 40 → 2.8;
    (2, 32, 32, 32, 32) → 64 140 → 68 (40 MiB of forward temporaries); (1, 16, 64, 64, 8)
    → 16 28.5 → 6.9; kernel (3, 3, 1) 5.9 → 1.5, (1, 1, 3) 2.2 → 1.3; 4 → 8 channels
    (a folded 12 → 8, on Eigen's 2-D convolution) 4.1 → 0.53 (on the Intel machine of
    ``benchmarks/RESULTS-xeon.md``; an earlier session had read 6.3 ms either way and
    left such calls to XLA); nested in
    ``block_diagonal`` (W7 with ``groups=4``) 22 → 2.0 ms at 1.8× lax's compile time
    (7.7 ms at 1.2× without the fold: kept, for the 5.6 ms a call), but not in the 3-D
    sub-pixel form (:func:`_phase_conv`: X2 1.6 → 0.85 ms, already at torch's, at 1.7×
    against 1.1×), whose phase convolution takes the fold without transposes
    (:func:`~kconv.ops.lowering.width_fold._merged_plane_conv`: two library
    convolutions, 1.05–1.15× XLA's compile; for plain 3-D convolutions it ran 0.8–1.5×
    the fold's time, so they keep the fold). Its gradients as the transposes of a depth fold (the depth axis into
    the batch, a bitcast of the cotangent), W7 forward+backward, this session's probe,
    lax's 26–33 ms and 1.55 MiB of temporaries: the depth taps folded into the input
    channels 6.0–7.4 ms, 4.0 MiB, 1.4× the compile; one 2-D convolution per depth tap
    3.6 ms (below torch's 4.4), 3.5 MiB, 1.6× (XLA:CPU keeps the taps' buffers live
    together): over lax's temporaries, which the memory target forbids. Hence
    :func:`_tap_loop`: one :func:`jax.lax.scan` over the 27 taps, two matrix products
    each, no buffer but one window and one product (4.4 ms, 0.50 MiB, 1.25× the compile;
    the 27 taps unrolled 2.1 ms but 13.7 MiB and 2.6×; the two gradients in two loops
    1.47× — each ``while`` loop costs XLA:CPU ~40 ms to compile — hence one loop for both,
    :func:`_def_joint_tangent`; 5-D windows instead of the merged ``(W · C)`` axis 7.8 ms,
    1.35×). The same fold one rank down, a 2-D convolution as a 1-D one (which XLA:CPU
    runs on Eigen, both cores), did not pay: W2 (stride 2) 7.9 → 7.2 ms at 4.2× the
    compile time and 12 MiB of temporaries;
    a single-channel input as depthwise taps (its plain convolution is fast; backward
    0.9 → 10 ms). (On XLA:CPU ``memory_analysis().peak_memory_in_bytes`` is argument,
    output and constant bytes whatever the temporaries, and ``temp_size_in_bytes`` leaves
    the constants out, so memory is compared here by the two added: temporaries and
    constants.)

    Grouped transposed convolutions, on grouped W5 (input (16, 16, 16, 64), 32 filters,
    3×3, stride 2, ``"same"``), forward / forward+backward, ``"xla"`` → ``grouped_split``
    → the grouped sub-pixel derivative (its phase convolution split too): ``groups=4``
    3.2 / 16 → 0.9 / 2.4 → 4.8 / 7.2 ms (compile 140 → 360 → 220 ms), ``groups=8``
    5.4 / 16 → 1.5 / 4.0 → 7.4 / 9.6 ms, ``groups=16`` 28 / 36 → 1.9 / 5.6 ms (compile
    190 → 1300 ms), channels_first ``groups=4`` 3.8 / 17 → 1.1 / 2.4 ms. The sub-pixel
    forward is XLA's grouped one, on its generic loop; splitting keeps every group on the
    fast dense path. Depthwise-transposed (``groups == C``; 64 filters): ``"xla"`` 45 /
    129 → sub-pixel 42 / 47 ms (earlier runs: 128 filters 205 → 170 ms forward+backward,
    1-D (16, 256, 64) 163 → 67 ms).

    Compile time (lower + compile over the plain path's, forward / forward+backward,
    measured interleaved in one process; :mod:`kconv.ops.lowering`'s docstring says why
    fusions cost).
    Kept: ``block_diagonal`` for forward grouped convolutions (X6 4.4–5.0 / 2.0–2.6 →
    1.3–1.9 / 1.0–1.1×; run 8 / 15 → 14 / 29 ms, lax 42 / 556); ``depthwise_taps``'
    weight-gradient scan padding inside its body (forward+backward X1 2.3–2.5 → 1.6–1.7×,
    W4 2.1–2.2 → 1.2–1.7×, 4.5 MB fewer temporaries); no platform switch in a CPU-only
    process under ``"auto"`` (staged → decided at trace time, median of 5 interleaved: W4
    2.02 → 1.78 / 1.73 → 1.37, X1 1.90 → 1.75 / 1.67 → 1.53, X2 1.39 → 1.28 / 1.28 →
    1.13, W8 forward+backward 1.47 → 1.10); ``depthwise_taps`` as one bilinear primitive
    with its transposes written out (:func:`_depthwise_sum`; before it a ``custom_jvp``
    whose scan JAX differentiated, partially evaluated and transposed: X1
    forward+backward trace 28 → 13–16 ms, lower + compile 1.44–1.67 → 1.10–1.23 × lax's,
    W4 1.30–1.38 → 0.96–1.04 ×), its value emitted as StableHLO
    (:func:`_depthwise_lowering`; X1 forward lowering 14 → 8 ms, lax's 7.7), and its
    input transpose a primitive of its own, emitted the same way
    (:data:`_depthwise_input_p`; X1 forward+backward trace 15.6 → 12.4 ms, lowering
    22.5 → 18.6, lax's 13.3 and 12.1); the
    transposed convolution's kernel gradient as the strided convolution's
    (:func:`_conv_transpose_rhs`; before it, the sub-pixel
    phase gradient reordered by a pads-and-reshapes loop fusion, W5 forward+backward
    171 ms, then by a matrix product with a 0/1 selection matrix, 108 ms; now 0.83× lax's
    133). Still above 1.5×: ``depthwise_taps`` forward (X1, W4), whose trace and lowering
    are now lax's: its one loop fusion of nine windows compiles ~20–25 ms longer than
    XLA's library call (X1 56 vs 32 ms). Dropped, on X1 unless named: the tap windows over
    the merged ``(n, h, w * c)`` axes (the same 83 ms compile), one pad then nine slices
    (355 vs 81 ms: XLA does not fuse a pad with nine users), per-row pads (324 ms), the
    padded copy built by ``dynamic_update_slice`` into zeros (2.9× the one-fusion form's),
    the taps split over two or three fusions (XLA:CPU does not compile them faster side by
    side), a loop over the kernel rows (161 ms); the weight gradient, instead of the scan
    (0.35–0.43 s compile, 8–9 ms, 8.5 MB temporaries), as one reduction of the stacked
    windows (0.83 s, 49 ms, 68 MB), nine reductions (0.62 s, 14 ms, 30 MB) or nine batched
    dot products (0.59 s, 10 ms, 30 MB); the scan slicing the product of the padded input
    and the tap's weights (1.6 → 2.6×), its optimisation barrier on the input alone (XLA
    hoists the pad out of the loop: X1 forward+backward compile 137 → 287 ms); the
    switch inside a :func:`jax.custom_jvp` whose tangent is switched too, so that reverse
    mode never linearizes the switch (X1 forward+backward lowering 89 → 87 ms).

    Memory and forward mode, the transposed convolution: as a ``custom_jvp`` its tangents
    had to be written in the form whose transpose JAX derives, so one form served both
    modes. In 3-D the input tangent in the sub-pixel form (a fast ``jvp``, 3.6 ms on X2)
    transposed into a phase reorder of the cotangent, 1.84× lax's temporaries; in XLA's
    plain form, 1.11×, but a ``jvp`` on the input-dilated loop (76 ms); and the kernel
    tangent in the sub-pixel form computed ``(s·T / k)^N`` the kernel's entries (W5
    1.02×, X2 1.11× lax's temporaries). ``jax.custom_derivatives.linear_call`` (evaluate
    one form, transpose another) has no batching rule and jax 0.10 has no
    ``custom_transpose``; a primitive with bilinear transposes
    (:func:`subpixel_transpose`) has both: ``jvp`` 3.6 ms, temporaries lax's. Measured
    and dropped on the way: one phase convolution per group of phases with the same taps
    (temporaries 0.98 / 0.93×, but 2.2 / 3.3× lax's compile time), the phase convolution
    over two halves of the batch (XLA keeps both halves' copies live: no change).

    Example:
        >>> spec = ConvSpec(rank=2, data_format="channels_last", input_shape=(16, 16, 16, 64),
        ...                 kernel_shape=(3, 3, 32, 64), strides=(2, 2),
        ...                 padding=((2, 1), (2, 1)), dilation=(1, 1))
        >>> choose("conv_transpose", "cpu", spec), choose("conv_transpose", "tpu", spec)
        ('subpixel_transpose', 'xla')
    """
    if op not in _RULES:
        raise ValueError(f"choose: op must be one of {tuple(_RULES)}, got {op!r}")
    spatial = ([spec.input_shape[a] for a in spec.axes] if isinstance(spec, UpsampleSpec)
               else spec.spatial)
    if _args.is_symbolic(spatial):
        # A symbolic length (jax.export's shape polymorphism) leaves the lowerings' window
        # geometry unknown; XLA's convolution and resize take it. A symbolic batch is
        # every lowering's.
        return XLA
    if _empty(op, spec):
        # Nothing to compute: XLA's convolution and resize take empty arrays as they are,
        # where a lowering may read an element (the tap loop's accumulators do).
        return XLA
    if backend == "cpu":
        return _RULES[op](spec)
    if backend in ("gpu", "cuda"):
        return _GPU_RULES[op](spec)
    return XLA


def _empty(op: str, spec: ConvSpec | UpsampleSpec) -> bool:
    """Whether the call's input, kernel or output has no elements (a batch of 0, say)."""
    if 0 in spec.input_shape:
        return True
    if op == "upsample":
        return False
    out = conv_output_shape(spec.input_shape, spec.kernel_shape, spec,
                            transposed=op == "conv_transpose")
    return 0 in spec.kernel_shape or 0 in out


def _floating(spec: ConvSpec) -> bool:
    dtypes = [spec.dtype] + ([spec.preferred_element_type]
                             if spec.preferred_element_type is not None else [])
    return all(jnp.issubdtype(d, jnp.floating) for d in dtypes)


#: The floating dtypes XLA:CPU (jaxlib 0.10) computes in float32 (it widens 16-bit
#: convolutions: a float16 or bfloat16 one runs at float32's speed, on the same paths).
_CPU_FLOATS = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(jnp.bfloat16))


#: Those the tap loop's gradients take: bfloat16's loop compiles 1.5–2.6 × lax's.
_TAP_LOOP_FLOATS = (np.dtype(np.float32), np.dtype(np.float16))


def _cpu_float(spec: ConvSpec, dtypes: Sequence[np.dtype] = _CPU_FLOATS) -> bool:
    """Whether the operands are one of ``dtypes`` and the output is theirs or float32
    (the layers' 16-bit path accumulates in float32: ``preferred_element_type``)."""
    return spec.dtype in dtypes and spec.output_dtype() in (spec.dtype, np.dtype(np.float32))


def _choose_conv(spec: ConvSpec) -> str:
    if not _floating(spec):
        return XLA
    kernel_in = spec.kernel_shape[-2]
    if spec.groups == 1 and all(k == 1 for k in spec.kernel_size):
        return "pointwise_dot"
    multiplier = spec.kernel_shape[-1] // spec.groups
    if (kernel_in == 1 and spec.groups > 1
            and math.prod(spec.kernel_size) * multiplier <= MAX_DEPTHWISE_TAPS):
        return "depthwise_taps"
    if kernel_in > 1 and 1 < spec.groups <= MAX_SPLIT_GROUPS:
        dense = math.prod(spec.kernel_size) * spec.channels * spec.kernel_shape[-1]
        return "block_diagonal" if dense <= MAX_BLOCK_DIAGONAL_WEIGHTS else "grouped_split"
    if spec.groups == 1 and _eigen_crop_pays(spec):
        return "eigen_crop"
    if spec.groups == 1 and _width_fold_pays(spec):
        return "width_fold"
    if spec.groups == 1 and _tap_loop_pays(spec):
        return "tap_loop"
    return XLA


def _eigen_crop_pays(spec: ConvSpec) -> bool:
    """Whether a dense convolution takes :func:`eigen_crop`: a bias added in the call
    (its crop fuses into the add) and :func:`_eigen_runs_faster`."""
    return spec.bias and _eigen_runs_faster(spec)


def _eigen_runs_faster(spec: ConvSpec) -> bool:
    """Whether a dense convolution, computed one row taller and cropped in a loop fusion
    that follows it anyway, runs faster on Eigen: 2-D, stride 1, float32 or 16-bit
    (:func:`_cpu_float`; W1 in float16 with float32 accumulation, forward 13.1 → 7.0–8.1
    ms, bfloat16 14.3 → 8.4, at 0.95–1.11 × lax's compile), one that XLA:CPU hands to
    YNNPACK (above 16 channels in or out, no output axis longer than the input's),
    ``C × filters`` below :data:`EIGEN_CROP_CHANNEL_PRODUCT`, and at least two cores."""
    filters = spec.kernel_shape[-1]
    return (spec.rank == 2 and all(s == 1 for s in spec.strides) and _cpu_float(spec)
            and max(spec.channels, filters) > 16
            and all(o <= n for o, n in zip(spec.output_spatial(), spec.spatial))
            and spec.channels * filters < EIGEN_CROP_CHANNEL_PRODUCT
            and _host_cores() >= 2)


def _width_fold_pays(spec: ConvSpec) -> bool:
    """Whether a dense convolution takes :func:`width_fold`: 3-D, float32 or 16-bit
    (:func:`_cpu_float`; W7 forward in float16 6.3–7.1 → 1.5–1.6 ms, bfloat16 6.4–6.7 →
    1.9–2.0, at 0.8–1.0 × lax's compile), and a folded input of at most
    :data:`MAX_WIDTH_FOLD_BYTES`.

    Whatever the channels: folded to 16 or fewer (and as many filters) the 2-D
    convolution is Eigen's, multi-threaded, not YNNPACK's — and still 4–14 × XLA's 3-D
    loop (the first layer of a 3-D network: (2, 16, 16, 16, 4) → 16 4.2 → 0.59 ms,
    (4, 32, 32, 32, 1) → 8 27.5 → 3.7, 5×5×5 on 2 channels 11.6 → 0.76), at 1.3–1.8 ×
    lax's lower + compile for these small programs (lax's 24–31 ms, the fold's two loop
    fusions 13–19 ms more: repaid within 2–40 calls)."""
    *_, k_w = spec.kernel_size
    folded = math.prod(spec.input_shape) // spec.spatial[-1] * spec.output_spatial()[-1] * k_w
    return (spec.rank == 3 and _cpu_float(spec)
            and _args.at_most(folded * spec.dtype.itemsize, MAX_WIDTH_FOLD_BYTES))


@functools.lru_cache(maxsize=None)
def _host_cores() -> int:
    """The cores this process may run on: XLA:CPU's intra-op pool spans them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS, Windows)
        return os.cpu_count() or 1


def _choose_conv_transpose(spec: ConvSpec) -> str:
    if not _floating(spec):
        return XLA
    if spec.channels // spec.groups > 1 and 1 < spec.groups <= MAX_SPLIT_GROUPS:
        return "grouped_split"  # each group is chosen for again, as a dense one
    # The sub-pixel form's geometry and the forward form's spec live with them (that
    # module imports this one).
    from kconv.ops.lowering.transposed import (_forward_of_transpose, _phase_spec,
                                               _subpixel_plan)
    if spec.groups > 1 and all(s == 1 for s in spec.strides):
        # At stride 1 a grouped one (here: one input channel per group, or more than 16
        # groups) is a forward convolution: its rule's choice where that is not XLA's
        # grouped one (depthwise_taps).
        forward = _choose_conv(_forward_of_transpose(spec))
        return "flipped_forward" if forward != XLA else XLA
    # With dilation the phase kernels would be mostly zeros; such calls are rare.
    if any(d > 1 for d in spec.dilation) or all(s == 1 for s in spec.strides):
        return XLA
    if spec.groups == 1:
        return "subpixel_transpose"
    # Grouped, the phase convolution is grouped too: its kernel gradient beats XLA's only
    # where it is depthwise itself (one input channel per group) and takes depthwise_taps.

    phase = _phase_spec(spec, _subpixel_plan(spec))
    return "subpixel_transpose" if _choose_conv(phase) == "depthwise_taps" else XLA


def _choose_upsample(spec: UpsampleSpec) -> str:
    if spec.interpolation == "bilinear" and jnp.issubdtype(spec.dtype, jnp.floating):
        return "bilinear_stencil"
    return XLA


_RULES: dict[str, Callable[[Any], str]] = {
    "conv": _choose_conv,
    "conv_transpose": _choose_conv_transpose,
    "upsample": _choose_upsample,
}


def _choose_conv_gpu(spec: ConvSpec) -> str:
    dilated = [s for s, d in zip(spec.strides, spec.dilation) if d > 1]
    # float32 only: in bfloat16 (W6) the phase form ran 2.4x faster but at 1.03x lax's
    # peak memory (the bar is lax's), where in float32 it is below it (0.68x).
    if (spec.dtype == np.float32 and spec.output_dtype() == np.float32
            and spec.groups == 1 and dilated and all(s == 1 for s in dilated)):
        return "space_to_batch"
    return XLA


def _choose_conv_transpose_gpu(spec: ConvSpec) -> str:
    if (_floating(spec) and spec.groups == 1 and all(d == 1 for d in spec.dilation)
            and any(s > 1 for s in spec.strides)):
        return "strided_dual"
    return XLA


_GPU_RULES: dict[str, Callable[[Any], str]] = {
    "conv": _choose_conv_gpu,
    "conv_transpose": _choose_conv_transpose_gpu,
    "upsample": lambda spec: XLA,
}


def _tap_loop_pays(spec: ConvSpec) -> bool:
    """Whether a dense convolution's gradients take :func:`_tap_loop`: 3-D, float32 or
    float16 (what XLA:CPU runs on its generic loop and the loop was measured on;
    gradients alone, lax → loop: W7 24.6 → 4.4–4.8 ms; stride 2 55 → 1.9, (2, 32, 32, 32,
    8) → 16 stride 2 222 → 5.8, channels_first stride 2 54 → 4.0; float16 W7 24 → 5.5,
    stride 2 55 → 2.3, at 0.94–1.41 × lax's compile). Not bfloat16: its loop compiles
    1.5–2.6 × lax's (W7 1.6–1.9 ×)."""
    return spec.rank == 3 and spec.groups == 1 and _cpu_float(spec, _TAP_LOOP_FLOATS)
