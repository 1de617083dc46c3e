"""How each kconv convolution is computed: XLA's own convolution, or an equivalent
composition of lax ops where XLA:CPU's convolution (or its derivative) takes a slow path.

Every op in :mod:`kconv.ops` describes its call as a :class:`ConvSpec` (or
:class:`UpsampleSpec`) and asks :func:`choose` which lowering computes it. A lowering never
changes the numbers beyond float rounding, only the speed, and is checked against the
plain path in ``tests/test_lowerings.py`` (outputs, both gradients, jvp, vmap,
grad-of-grad, remat, jacfwd). Each is built from ``lax``/``jnp`` ops. The depthwise taps and the
transposed convolution are bilinear primitives whose transposes are written out
(:func:`depthwise_taps`, :func:`subpixel_transpose`), the 3-D convolutions' gradients one
loop over the kernel's taps whose two transposes come from one equation
(:func:`~kconv.ops.lowering.tap_loop._tap_loop`,
:func:`~kconv.ops.lowering.primitives._def_joint_tangent`), and the bilinear stencil carries
a :func:`jax.custom_jvp` whose tangent is the same map in the form whose *transpose*
XLA:CPU runs fast, so forward mode, reverse mode and higher orders all work.

One module per concept:

- :mod:`~kconv.ops.lowering.spec` — :class:`ConvSpec`, :class:`UpsampleSpec` and the
  geometry the lowerings share (axes, padding, each kernel tap's input window);
- :mod:`~kconv.ops.lowering.rule` — :func:`choose` and the thresholds it is tuned by;
- :mod:`~kconv.ops.lowering.dispatch` — :func:`conv`, :func:`conv_transpose`,
  :func:`upsample`: the rule applied per call (and per platform), the bias added;
- :mod:`~kconv.ops.lowering.plain` — XLA's own convolutions and lax's gradients;
- :mod:`~kconv.ops.lowering.primitives` — a lowering as a JAX primitive: transposes,
  batching, a value of its own inside a derivative, the joint tangent;
- one module per lowering: :mod:`~kconv.ops.lowering.pointwise_dot`,
  :mod:`~kconv.ops.lowering.depthwise_taps`, :mod:`~kconv.ops.lowering.grouped`
  (``block_diagonal``, ``grouped_split``), :mod:`~kconv.ops.lowering.eigen_crop`,
  :mod:`~kconv.ops.lowering.width_fold`, :mod:`~kconv.ops.lowering.tap_loop`,
  :mod:`~kconv.ops.lowering.space_to_batch`, :mod:`~kconv.ops.lowering.transposed`
  (``subpixel_transpose``, ``strided_dual``), :mod:`~kconv.ops.lowering.bilinear_stencil`.

The rule (:func:`choose`), per call (an empty one — a batch of 0 — always ``"xla"``, and
so is one whose spatial lengths are symbolic — ``jax.export``'s shape polymorphism —
since every lowering's windows need known lengths; a symbolic batch takes the rule below):

- A GPU (``"gpu"``, ``"cuda"``: NVIDIA, cuDNN), floating dtypes, measured on an H200
  at 8× the benchmark batch and re-run on an H100 (``benchmarks/RESULTS-gpu.md``,
  ``benchmarks/gpu_probe.py``):

  1. ``"space_to_batch"`` — a dilated float32 convolution, stride 1 on its dilated axes,
     ``groups == 1``: XLA's forward, its gradients those of the undilated convolution of
     the dilation's interleaved phases, folded into the batch (XLA:GPU runs a dilated
     convolution's gradients on slow kernels: forward+backward W6 4.7 → 0.47 ms, 2-D
     2.9 → 0.49 ms, with less peak memory than lax's; not in 16-bit dtypes, where W6's
     0.86 → 0.34 ms kept 1.03 × lax's peak).
  2. ``"strided_dual"`` — a transposed convolution, a stride above 1, dilation 1,
     ``groups == 1``: XLA's forward (cuDNN's backward-data kernel), its kernel gradient
     that of the strided convolution it is the input gradient of, as
     ``"subpixel_transpose"``'s (forward+backward float32 / bfloat16: W5 0.90 → 0.37 /
     0.60 → 0.34 ms, X2 2.1 → 0.40 / 1.2 → 0.41 ms).
  3. otherwise ``"xla"``, XLA's convolution: lax's own programs.

  A 16-bit convolution with a float32 ``preferred_element_type`` (the layers' mixed
  precision) is computed there in the 16-bit dtype, its bias added, and widened after
  (:func:`~kconv.ops.lowering.dispatch._device_plain`): XLA:GPU has no kernel with 16-bit
  operands and a float32 output, and would run it, and its gradients, as float32
  convolutions (bfloat16 at 8× the benchmark batch: 1.2–1.6× lax's time, W6
  forward+backward 4.8×).
- Any other backend (ROCm, TPU: not measured): ``"xla"``, with the 16-bit path above.
- CPU, but an integer or complex dtype or ``preferred_element_type``: ``"xla"``.
- CPU, forward convolution (``conv``, ``depthwise_conv``, each step of
  ``separable_conv``):

  1. ``"pointwise_dot"`` — a 1×…×1 kernel, ``groups == 1``: one 2-D matrix product
     (after the strided slice). W4's pointwise step, forward / forward+backward:
     1.8 / 9.4 ms → 1.5 / 2.8 ms, and 8 MB fewer temporaries. Strided, XLA's forward
     (the slice's loop fusion made the product no faster and 1.8× the compile) with the
     product's transposes as its gradients (fwd+bwd 0.86 → 0.46 ms). In 1-D and 3-D,
     XLA's forward and input gradient (XLA:CPU makes those convolutions its own Eigen
     matrix product, which the written one, on YNNPACK, ran 1.10–1.59× slower) with the
     product's kernel gradient: fwd+bwd (2, 16, 32, 32, 32) → 64 11.2 → 4.5 ms. The
     kernel gradient is written as it lies, ``(C, filters)`` (autodiff's comes out
     transposed, a copy), and with one filter as a product-and-sum (XLA:CPU feeds a
     matrix-vector dot through copies): no temporaries where lax's hold a copy of the
     cotangent.
  2. ``"depthwise_taps"`` — one input channel per group, ``groups > 1`` (depthwise) and
     kernel taps × depth multiplier ≤ :data:`MAX_DEPTHWISE_TAPS`: a sum over the taps of
     a strided window times per-channel weights. XLA:CPU runs a grouped convolution with
     one channel per group on its generic loop (W4's depthwise step: 7–15× faster
     forward, 5–10× forward+backward, e.g. 23 / 37 → 1.6 / 3.7 ms). A stride-1 forward
     pads its input once where that input is another depthwise layer's taps (a stack)
     or the kernel has 25 taps or more, and each window in the loop otherwise
     (``depthwise_taps._pads_once``).
  3. ``"block_diagonal"`` — several input channels per group, ``1 < groups ≤``
     :data:`MAX_SPLIT_GROUPS`, a dense kernel of at most
     :data:`MAX_BLOCK_DIAGONAL_WEIGHTS`: one dense convolution with each group's kernel
     block on the diagonal of a zero kernel. XLA:CPU runs grouped convolutions on its
     generic loop; the dense one is ``groups`` times the multiply-adds on its fast path,
     one convolution to compile (X6, groups 4 on (16, 32, 32, 64) → 64, 3×3, forward /
     forward+backward: 42 / 556 → 14 / 29 ms, compiled in 1.3 / 1.1× the plain path's
     time; ``grouped_split`` ran 8 / 15 ms but compiled in 4.4 / 2.1×). In 1-D with at
     least 16 input channels per group XLA's grouped forward runs faster: there XLA's
     forward, with the dense convolution's transposes as the gradients.
  4. ``"grouped_split"`` — the same groups, a bigger dense kernel: one dense convolution
     per group on its channel slice, concatenated (groups 4 on (16, 32, 32, 64) → 64,
     3×3: 204 / 4155 → 30 / 44 ms forward / forward+backward).
  5. ``"eigen_crop"`` — a dense 2-D convolution (also ``block_diagonal``'s), stride 1,
     float32 or 16-bit (XLA:CPU widens those to float32), whose call adds a bias (``ConvSpec.bias``: the Conv layers' ``use_bias``)
     and which XLA:CPU hands to YNNPACK (above 16 channels in or out), with input
     channels × filters below :data:`EIGEN_CROP_CHANNEL_PRODUCT`, on at least two cores:
     the output window one row taller than the input, cropped again inside the bias add,
     which XLA:CPU runs on its multi-threaded Eigen convolution instead of YNNPACK's
     single-threaded one (W1 forward 13.5 → 8.5 ms; gradients lax's; inside a
     derivative XLA's value too, the taller output being a temporary beside the
     gradients' own).
  6. ``"width_fold"`` — a dense 3-D convolution, float32 or 16-bit, whose folded input
     (``k_w`` copies of the input) is at most :data:`MAX_WIDTH_FOLD_BYTES`: the last
     spatial axis's taps folded into the channels and that axis into the batch, a 2-D
     convolution over the other two (YNNPACK's above 16 channels in or out, itself
     ``eigen_crop``'s form where that pays; Eigen's below), then the axis moved back.
     XLA:CPU has no fast 3-D convolution (W7 forward 7.1–8.6 → 1.5–2.3 ms; few
     channels, a 3-D network's first layer, (2, 16, 16, 16, 4) → 16 4.2 → 0.59 ms,
     at up to 1.8 × lax's small compile time). Both gradients
     are one loop over the kernel's taps, two matrix products a tap
     (:func:`_tap_loop`: W7 gradients 24.6 → 4.4–4.8 ms, a third of lax's
     temporaries; stride 2 55 → 1.9 ms); the input's gradient alone lax's. Inside a
     derivative the folded input would exceed lax's temporaries: the value there is
     the merged plane's (two 2-D library convolutions) where its gathered taps fit
     under the output — few channels, a 3-D network's first layers: (2, 16, 16, 16, 4)
     → 16 forward+backward 7.8 → 4.2 ms, the model M2's 14.2 → 9.7 — and XLA's
     elsewhere (W7).
  7. ``"tap_loop"`` — any other dense 3-D convolution, float32 or float16 (a folded
     input too big): XLA's forward, the gradients :func:`_tap_loop`'s, as
     ``"width_fold"``'s (which inside a derivative is this program: (2, 16, 16, 16, 4)
     → 8 forward+backward 13.5 → 7.1 ms, a single-channel (4, 32, 32, 32, 1) → 8
     116 → 49 ms).
  8. otherwise ``"xla"``: for 1-D convolutions and strided 2-D ones no rewrite
     measured faster (see ``choose``'s notes).

- CPU, transposed convolution (``groups`` beyond Keras):

  1. ``"grouped_split"`` — several input channels per group, ``1 < groups ≤``
     :data:`MAX_SPLIT_GROUPS`, any strides and dilation: one dense transposed
     convolution per group (``kernel[..., j * C / g:(j + 1) * C / g]`` on its input
     slice), each chosen for again by this rule, concatenated (grouped W5, 4 groups:
     3.2 / 16 → 0.9 / 2.4 ms forward / forward+backward; stride 1: 1.8 / 92 → 0.7 /
     2.0 ms).
  2. ``"subpixel_transpose"`` — a stride above 1 and dilation 1, dense or depthwise (one
     input channel per group, where the sub-pixel form's phase convolution is itself
     ``"depthwise_taps"``): XLA's forward, with gradients that never take the generic
     loop XLA:CPU runs the plain kernel gradient on: the input's is XLA's strided
     convolution of the cotangent, the kernel's that strided convolution's own kernel
     gradient (W5 forward+backward 42 → 5.3 ms), or for a depthwise one the sub-pixel
     form's (a stride-1 convolution to ``prod(strides)`` phases, then depth-to-space;
     64 groups, 129 → 47 ms). In 3-D, float32 or float16, both run on XLA:CPU's generic loop, so
     there the two are one loop over the taps of the same strided windows of the
     cotangent (:func:`_tap_loop`, :func:`_subpixel_joint`: X2 gradients 7.8 → 1.2 ms;
     the input's gradient alone XLA's; in bfloat16 the
     strided form's kernel gradient above 16 input channels, XLA's below). The forward
     is XLA's, unchanged, in 1-D and 2-D; in 3-D it is the sub-pixel form, as XLA:CPU's
     input-dilated 3-D convolution is on its slowest loop (X2 forward 42 → 0.7 ms): the
     phase kernel one product with a 0/1 matrix and a transpose, the phase convolution
     (float32, channels_last) two 2-D convolutions, the width taps gathered into the
     channels by a 0/1 kernel and the rest over the merged ``(D, H · W)`` plane
     (:func:`~kconv.ops.lowering.width_fold._merged_plane_conv`: X2 forward 0.97 →
     0.67 ms against XLA's 3-D loop for the phase convolution, no loop fusion added).
  3. ``"flipped_forward"`` — stride 1, one input channel per group, where the forward
     rule takes the forward convolution this one is (the kernel flipped and regrouped)
     off XLA's grouped convolution: ``"depthwise_taps"``, taps × filters per group ≤ 49
     (Conv2DTranspose(32, 3, groups=32) on
     (8, 32, 32, 32): 7.4 / 16.7 → 0.68 / 1.6 ms forward / forward+backward; with a
     depth multiplier 2 on 16 channels 223 → 1.5 ms forward+backward; 1.0–1.6 × XLA's
     lower + compile), and no ``feature_group_count`` for the 2-D mesh bug to multiply.
  4. otherwise ``"xla"``.
- CPU, ``upsample`` with ``bilinear`` (floating inputs): ``"bilinear_stencil"`` — the
  fixed two-tap half-pixel stencil per axis instead of ``jax.image.resize``'s dense
  weight matrices (W8 forward 6–12 → 1.7–2.2 ms), differentiated through ``resize``
  (inside a derivative ``resize``'s value too).

What a lowering costs: XLA:CPU compiles each loop fusion with LLVM (20–80 ms apiece on
the 2-core machine these numbers come from, a standalone pad, slice or concatenation of
a large array 100–300 ms, a reorder of a few thousand kernel entries 40–60 ms) where its
convolution, a matrix product or a reduction is a library call. Lower + compile over
the plain path's, forward / forward+backward (benchmarks/RESULTS.md, medians of 21; of 9
and 5 in earlier runs): ``depthwise_taps`` 1.3–1.5 / 0.9–1.2× (X1, W4's SeparableConv2D:
+15–25 ms once, against 25–90 ms saved per call: XLA's compile of its one loop fusion of
the taps' windows; its trace and lowering are lax's; medians of 5 have read up to 1.73),
``block_diagonal`` 1.3–1.5 / 0.9–1.0× (X6), ``eigen_crop`` 1.0–1.1 / 1.0× (W1, W3),
``width_fold`` 1.1–1.4 / 1.2–1.3× (W7: its two loop fusions, the folded input and the
output's transpose, compile side by side; the gradients' loop body),
``subpixel_transpose`` 1.0–1.2 / 0.9–1.2× (W5, X2: its tap loop), ``pointwise_dot`` and
``bilinear_stencil`` no slower.
Temporaries of forward+backward (``memory_analysis().temp_size_in_bytes``, plus the
program's constants, which XLA:CPU counts in ``peak_memory_in_bytes`` with the arguments
and outputs but not in the temporaries) are below the plain path's on
W4 (0.33×), X1 (0.49×), X6 (0.53×), W7 (0.32×) and X2 (0.28×), and equal to it
elsewhere (W1, W3, W5 1.00×);
``eigen_crop``'s forward alone keeps one output-sized buffer more (its taller output),
``width_fold``'s the folded input and the 2-D output (W7 2.6 MiB, lax's none).

Where the choice is made (``kconv.config.set_conv_lowering``):

- ``"auto"`` (the default), in a process whose only platform is the CPU
  (``jax.default_backend() == "cpu"``): when the function is traced. Every program such a
  process compiles runs on XLA:CPU, and a program with no platform switch lowers faster
  (reverse mode would linearize and transpose both branches of a switch).
- ``"auto"`` in a process with a GPU or TPU, and ``"portable"`` anywhere: staged with
  :func:`jax.lax.platform_dependent`, so the platform the computation is lowered for
  decides: a function compiled for the CPU of a GPU host gets the CPU lowering, one
  lowered for a CUDA GPU the GPU's, one for any other platform (``jax.export``, even
  from a CPU-only host under ``"portable"``) XLA's convolution.
- ``"xla"``: the plain path everywhere, to compare the two.

The choice is made at trace time either way; :func:`recorded_choices` shows it.

Example:
    >>> spec = ConvSpec(rank=2, data_format="channels_last", input_shape=(16, 32, 32, 64),
    ...                 kernel_shape=(3, 3, 1, 64), strides=(1, 1),
    ...                 padding=((1, 1), (1, 1)), dilation=(1, 1), groups=64,
    ...                 dtype="float32")
    >>> choose("conv", "cpu", spec), choose("conv", "cuda", spec)
    ('depthwise_taps', 'xla')
"""

from kconv.ops.lowering.spec import ConvSpec, UpsampleSpec, XLA
from kconv.ops.lowering.rule import (
    EIGEN_CROP_CHANNEL_PRODUCT,
    MAX_BLOCK_DIAGONAL_WEIGHTS,
    MAX_DEPTHWISE_TAPS,
    MAX_SPLIT_GROUPS,
    MAX_WIDTH_FOLD_BYTES,
    choose,
)
from kconv.ops.lowering.plain import dimension_numbers
from kconv.ops.lowering.dispatch import (
    add_bias,
    conv,
    conv_transpose,
    recorded_choices,
    upsample,
)

__all__ = [
    "ConvSpec",
    "UpsampleSpec",
    "choose",
    "recorded_choices",
    "conv",
    "conv_transpose",
    "upsample",
    "add_bias",
    "dimension_numbers",
    "MAX_DEPTHWISE_TAPS",
    "MAX_SPLIT_GROUPS",
    "MAX_BLOCK_DIAGONAL_WEIGHTS",
    "EIGEN_CROP_CHANNEL_PRODUCT",
    "MAX_WIDTH_FOLD_BYTES",
    "XLA",
]
