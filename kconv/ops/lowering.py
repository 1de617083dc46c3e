"""How each kconv convolution is computed: XLA's own convolution, or an equivalent
composition of lax ops where XLA:CPU's convolution (or its derivative) takes a slow path.

Every op in :mod:`kconv.ops` describes its call as a :class:`ConvSpec` (or
:class:`UpsampleSpec`) and asks :func:`choose` which lowering computes it. A lowering never
changes the numbers beyond float rounding, only the speed, and is checked against the
plain path in ``tests/test_lowerings.py`` (outputs, both gradients, jvp, vmap,
grad-of-grad, remat). Each is built from ``lax``/``jnp`` ops. The depthwise taps and the
transposed convolution are bilinear primitives whose transposes are written out
(:func:`depthwise_taps`, :func:`subpixel_transpose`), the 3-D convolutions' gradients one
loop over the kernel's taps whose two transposes come from one equation
(:func:`_tap_loop`, :func:`_def_joint_tangent`), and the bilinear stencil carries a
:func:`jax.custom_jvp` whose tangent is the same map in the form whose *transpose*
XLA:CPU runs fast, so forward mode, reverse mode and higher orders all work.

The rule (:func:`choose`), per call:

- A GPU (``"gpu"``, ``"cuda"``: NVIDIA, cuDNN), floating dtypes, measured on an H200
  at 8× the benchmark batch (``benchmarks/RESULTS-gpu.md``, ``benchmarks/gpu_probe.py``):

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
  (:func:`_device_plain`): XLA:GPU has no kernel with 16-bit operands and a float32
  output, and would run it, and its gradients, as float32 convolutions (bfloat16 at 8×
  the benchmark batch: 1.2–1.6× lax's time, W6 forward+backward 4.8×).
- Any other backend (ROCm, TPU: not measured): ``"xla"``, with the 16-bit path above.
- CPU, but an integer or complex dtype or ``preferred_element_type``: ``"xla"``.
- CPU, forward convolution (``conv``, ``depthwise_conv``, each step of
  ``separable_conv``):

  1. ``"pointwise_dot"`` — a 1×…×1 kernel, ``groups == 1``: one 2-D matrix product
     (after the strided slice). W4's pointwise step, forward / forward+backward:
     1.8 / 9.4 ms → 1.5 / 2.8 ms, and 8 MB fewer temporaries. Strided, XLA's forward
     (the slice's loop fusion made the product no faster and 1.8× the compile) with the
     product's transposes as its gradients (fwd+bwd 0.86 → 0.46 ms).
  2. ``"depthwise_taps"`` — one input channel per group, ``groups > 1`` (depthwise) and
     kernel taps × depth multiplier ≤ :data:`MAX_DEPTHWISE_TAPS`: a sum over the taps of
     a strided window times per-channel weights. XLA:CPU runs a grouped convolution with
     one channel per group on its generic loop (W4's depthwise step: 7–15× faster
     forward, 5–10× forward+backward, e.g. 23 / 37 → 1.6 / 3.7 ms).
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
  6. ``"width_fold"`` — a dense 3-D convolution, float32 or 16-bit, whose folded 2-D form is on
     XLA:CPU's fast path (``k_w`` × input channels, or the filters, above 16) and whose
     folded input (``k_w`` copies of the input) is at most
     :data:`MAX_WIDTH_FOLD_BYTES`: the last spatial axis's taps folded into the
     channels and that axis into the batch, a 2-D convolution over the other two
     (itself ``eigen_crop``'s form where that pays), then the axis moved back. XLA:CPU
     has no fast 3-D convolution (W7 forward 7.1–8.6 → 1.5–2.3 ms). Both gradients
     are one loop over the kernel's taps, two matrix products a tap
     (:func:`_tap_loop`: W7 gradients 24.6 → 4.4–4.8 ms, a third of lax's
     temporaries; stride 2 55 → 1.9 ms); the input's gradient alone lax's. Inside a
     derivative the value is XLA's (the folded input would exceed lax's temporaries).
  7. ``"tap_loop"`` — any other dense 3-D convolution, float32 or float16 (few
     channels, or a folded input too big): XLA's forward, the gradients
     :func:`_tap_loop`'s, as ``"width_fold"``'s ((2, 16, 16, 16, 4) → 8 forward+backward
     13.5 → 7.1 ms, a single-channel (4, 32, 32, 32, 1) → 8 116 → 49 ms).
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
     input-dilated 3-D convolution is on its slowest loop (X2 forward 42 → 0.7 ms).
  3. otherwise ``"xla"``.
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
Temporaries of forward+backward (``memory_analysis().temp_size_in_bytes``; XLA:CPU's
``peak_memory_in_bytes`` counts only arguments and outputs) are below the plain path's on
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

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.core import Primitive
from jax.extend.mlir.dialects import stablehlo
from jax.interpreters import ad, batching, mlir

from kconv import config

__all__ = [
    "ConvSpec",
    "UpsampleSpec",
    "choose",
    "recorded_choices",
    "conv",
    "conv_transpose",
    "upsample",
    "MAX_DEPTHWISE_TAPS",
    "MAX_SPLIT_GROUPS",
    "MAX_BLOCK_DIAGONAL_WEIGHTS",
    "EIGEN_CROP_CHANNEL_PRODUCT",
    "MAX_WIDTH_FOLD_BYTES",
    "XLA",
]

Array = jax.Array
XLA = "xla"

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


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """The static facts of one convolution call: all :func:`choose` looks at.

    Attributes:
      rank: the number of spatial dims ``N``.
      data_format: ``"channels_last"`` or ``"channels_first"``.
      input_shape: the input's shape with the batch dims folded into one.
      kernel_shape: ``(*kernel_size, C // groups, filters)``; for a transposed
        convolution ``(*kernel_size, filters // groups, C)``.
      strides, dilation: ``N`` ints each.
      padding: ``N`` explicit ``(lo, hi)`` pairs — of the forward convolution, or for a
        transposed one of the stride-dilated input (``shapes.conv_transpose_padding``).
      groups: the feature group count; for a transposed convolution its own groups
        (``kernel_shape`` ``(*kernel_size, filters // groups, C)``, the VJP of the
        grouped forward convolution from ``filters`` to ``C`` channels).
      dtype: the common dtype of input and kernel.
      preferred_element_type: as ``lax.conv_general_dilated``; ``None`` is the dtype.
      bias: whether the call adds a per-channel bias to the output itself
        (the ops' ``bias``, which the layers pass when ``use_bias``), an
        elementwise consumer XLA fuses with whatever follows the convolution
        (``"eigen_crop"`` needs one for its crop).
    """

    rank: int
    data_format: str
    input_shape: tuple[int, ...]
    kernel_shape: tuple[int, ...]
    strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    groups: int = 1
    dtype: Any = "float32"
    preferred_element_type: Any = None
    bias: bool = False

    def __post_init__(self) -> None:
        canonical = {
            "input_shape": tuple(int(d) for d in self.input_shape),
            "kernel_shape": tuple(int(d) for d in self.kernel_shape),
            "strides": tuple(int(s) for s in self.strides),
            "padding": tuple((int(lo), int(hi)) for lo, hi in self.padding),
            "dilation": tuple(int(d) for d in self.dilation),
            "dtype": np.dtype(self.dtype),
            "preferred_element_type": None if self.preferred_element_type is None
            else np.dtype(self.preferred_element_type),
            "bias": bool(self.bias),
        }
        for name, value in canonical.items():
            object.__setattr__(self, name, value)

    @property
    def kernel_size(self) -> tuple[int, ...]:
        return self.kernel_shape[:-2]

    @property
    def spatial(self) -> tuple[int, ...]:
        """The input's spatial lengths."""
        if self.data_format == "channels_last":
            return self.input_shape[1:-1]
        return self.input_shape[2:]

    @property
    def channels(self) -> int:
        return self.input_shape[-1 if self.data_format == "channels_last" else 1]

    def output_spatial(self) -> tuple[int, ...]:
        """Spatial output lengths of the forward convolution."""
        return tuple((n + lo + hi - (d * (k - 1) + 1)) // s + 1 for n, k, s, (lo, hi), d in
                     zip(self.spatial, self.kernel_size, self.strides, self.padding,
                         self.dilation))

    def output_dtype(self) -> np.dtype:
        return self.preferred_element_type or self.dtype


@dataclasses.dataclass(frozen=True)
class UpsampleSpec:
    """The static facts of one :func:`kconv.ops.upsample` call with an interpolation.

    Attributes:
      interpolation: ``"bilinear"``, ``"bicubic"``, ….
      input_shape: the input's shape.
      axes: the spatial axes (non-negative).
      factors: the integer factor of each of ``axes``.
      dtype: the input's dtype.
    """

    interpolation: str
    input_shape: tuple[int, ...]
    axes: tuple[int, ...]
    factors: tuple[int, ...]
    dtype: Any = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", np.dtype(self.dtype))


# --- the rule ------------------------------------------------------------------------

def choose(op: str, backend: str, spec: ConvSpec | UpsampleSpec) -> str:
    """The lowering that computes one call on one backend (the module docstring's rule).

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
      ``"subpixel_transpose"``, ``"bilinear_stencil"``. ``"eigen_crop"`` (and ``"width_fold"``'s inner 2-D
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
    (a folded 12 → 8, off the fast path) left to XLA, 6.3 ms either way; nested in
    ``block_diagonal`` (W7 with ``groups=4``) 22 → 2.0 ms at 1.8× lax's compile time
    (7.7 ms at 1.2× without the fold: kept, for the 5.6 ms a call), but not in the 3-D
    sub-pixel form (:func:`_phase_conv`: X2 1.6 → 0.85 ms, already at torch's, at 1.7×
    against 1.1×). Its gradients as the transposes of a depth fold (the depth axis into
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
    0.9 → 10 ms). (On XLA:CPU ``memory_analysis().peak_memory_in_bytes`` is argument +
    output bytes whatever the temporaries, so memory is compared here by
    ``temp_size_in_bytes``.)

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
    measured interleaved in one process; the module docstring says why fusions cost).
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
    if backend == "cpu":
        return _RULES[op](spec)
    if backend in ("gpu", "cuda"):
        return _GPU_RULES[op](spec)
    return XLA


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
    1.9–2.0, at 0.8–1.0 × lax's compile), a 2-D convolution XLA:CPU runs on its fast path
    once folded (above 16 channels in or out), and a folded input of at most
    :data:`MAX_WIDTH_FOLD_BYTES`."""
    *_, k_w = spec.kernel_size
    folded = math.prod(spec.input_shape) // spec.spatial[-1] * spec.output_spatial()[-1] * k_w
    return (spec.rank == 3 and _cpu_float(spec)
            and max(k_w * spec.channels, spec.kernel_shape[-1]) > 16
            and folded * spec.dtype.itemsize <= MAX_WIDTH_FOLD_BYTES)


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


# --- dispatch ------------------------------------------------------------------------

_recorders: list[list[tuple[str, str]]] = []


@contextlib.contextmanager
def recorded_choices() -> Iterator[list[tuple[str, str]]]:
    """Records ``(op, lowering)`` for every kconv op traced (or run eagerly) inside.

    The lowering is what the CPU gets (a CUDA GPU gets ``choose(op, "cuda", spec)``, any
    other platform ``"xla"``). Under ``kconv.config.conv_lowering("xla")`` every entry is
    ``"xla"``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from kconv import ops
        >>> with recorded_choices() as calls:
        ...     _ = jax.eval_shape(lambda x: ops.separable_conv(
        ...         x, jnp.ones((3, 3, 8, 1)), jnp.ones((1, 1, 8, 16))), jnp.ones((1, 9, 9, 8)))
        >>> calls
        [('conv', 'depthwise_taps'), ('conv', 'pointwise_dot')]
    """
    calls: list[tuple[str, str]] = []
    _recorders.append(calls)
    try:
        yield calls
    finally:
        _recorders.remove(calls)


def _dispatch(op: str, spec: Any, lowering: Callable[[str, bool], Callable[..., Array]],
              *args: Array) -> Array:
    """The chosen lowerings of one call, applied to ``args``: ``lowering(name, device)`` is
    lowering ``name`` (or ``"xla"``) as the CPU runs it (``device=False``) or as a GPU or
    TPU does (``True``: :func:`_device_plain`); equal calls give the same object."""
    mode = config.get_conv_lowering()
    cpu_name = XLA if mode == XLA else choose(op, "cpu", spec)
    for calls in _recorders:
        calls.append((op, cpu_name))
    cpu = lowering(cpu_name, False)
    if mode != "portable" and jax.default_backend() == "cpu":
        # A CPU-only process runs every program on XLA:CPU: decide now, so that reverse
        # mode does not linearize and transpose a switch's two branches (W4
        # forward+backward 1.73 -> 1.37x lax's lower + compile).
        return cpu(*args)
    cuda_name = XLA if mode == XLA else choose(op, "cuda", spec)
    branches = {"cpu": cpu, "cuda": lowering(cuda_name, True),
                "default": lowering(XLA, True)}
    if all(fn is cpu for fn in branches.values()):
        return cpu(*args)
    # Decided for the platform the computation is lowered for: only the CPU branch reaches
    # XLA:CPU's compiler, only the CUDA one a CUDA GPU's, the default any other backend's.
    return lax.platform_dependent(*args, **branches)


def _conv_lowerings(plain: Callable[..., Array], lowerings: dict[str, Callable[..., Array]],
                    spec: ConvSpec, precision: Any
                    ) -> Callable[[str, bool], Callable[..., Array]]:
    """:func:`_dispatch`'s ``lowering`` for a convolution, ``(x, kernel[, bias])``: the
    bias added (:func:`_biased`), and on a device the 16-bit path where it applies."""
    narrow = _narrowed_on_device(spec)

    @functools.cache
    def lowering(name: str, device: bool) -> Callable[..., Array]:
        fn = plain if name == XLA else lowerings[name]
        if device and narrow:
            return _device_plain(fn, spec, precision)
        return _biased(fn, spec, precision)

    return lambda name, device: lowering(name, device and narrow)


def _biased(fn: Callable[..., Array], spec: ConvSpec, precision: Any) -> Callable[..., Array]:
    """``fn``'s convolution, then the optional bias (``(x, kernel[, bias])``)."""
    return lambda x, kernel, *bias: add_bias(fn(x, kernel, spec=spec, precision=precision),
                                             spec, *bias)


def add_bias(y: Array, spec: ConvSpec, bias: Array | None = None) -> Array:
    """``y + bias`` on the channel axis, in ``y``'s dtype (the accumulation dtype when one
    is asked for: a 16-bit layer adds its bias in float32, as Keras).

    Example:
        >>> spec = ConvSpec(1, "channels_first", (1, 2, 3), (1, 2, 2), (1,), ((0, 0),), (1,))
        >>> add_bias(jnp.zeros((1, 2, 3)), spec, jnp.array([1.0, 2.0]))[0]
        Array([[1., 1., 1.],
               [2., 2., 2.]], dtype=float32)
    """
    if bias is None:
        return y
    # lax, not jnp's ``+``: under autodiff jnp's jitted operator is traced and linearized
    # as a nested function (X1 forward+backward, ~5 ms of tracing).
    return lax.add(y, lax.broadcast_in_dim(jnp.asarray(bias).astype(y.dtype), y.shape,
                                           (_channel_axis(spec),)))


def _device_plain(fn: Callable[..., Array], spec: ConvSpec, precision: Any
                  ) -> Callable[..., Array] | None:
    """``fn`` (XLA's convolution, or the GPU's lowering) of a 16-bit float convolution with
    a wider ``preferred_element_type`` (the layers' float32 accumulation) as a GPU or TPU
    computes it, else ``None`` (the CPU's way).

    Their convolution units accumulate 16-bit products in float32 already, but have no
    kernel with 16-bit operands and a float32 output: XLA:GPU widens the operands and runs
    a float32 convolution, and the transposes (the gradients, whose cotangent is then
    float32) are float32 convolutions too. On an H200, at 8× the benchmark batch in
    bfloat16, that ran W1 forward 0.32 against lax's 0.23 ms and W6 forward+backward 4.8
    against 1.0 ms. So there the convolution's output is the 16-bit dtype, widened after
    (a layer's activation and final rounding stay in float32): up to two roundings more
    than the CPU's path (the output's, the bias add's), the cost of lax's speed.

    The bias, where the call has one, is added before the widening, in the 16-bit dtype
    (as lax, Flax and Keras add it): XLA:GPU then fuses it into cuDNN's convolution, as it
    does lax's, and the widening and a layer's final rounding cancel when no activation
    comes between (:func:`_biased`'s arguments, ``(x, kernel[, bias])``).
    """
    if not _narrowed_on_device(spec):
        return None
    wide = spec.preferred_element_type
    narrow = _biased(fn, dataclasses.replace(spec, preferred_element_type=None), precision)
    return lambda x, kernel, *bias: narrow(x, kernel, *bias).astype(wide)


def _narrowed_on_device(spec: ConvSpec) -> bool:
    """Whether :func:`_device_plain` applies: 16-bit float operands, a wider float
    ``preferred_element_type``."""
    wide = spec.preferred_element_type
    return (wide is not None and jnp.issubdtype(spec.dtype, jnp.floating)
            and jnp.issubdtype(wide, jnp.floating)
            and spec.dtype.itemsize < min(4, wide.itemsize))


def conv(x: Array, kernel: Array, spec: ConvSpec, *, precision: Any = None,
         bias: Array | None = None) -> Array:
    """A forward convolution (dense, grouped or depthwise), lowered by :func:`choose`,
    plus the optional bias (:func:`add_bias`).

    Args:
      x: ``spec.input_shape``.
      kernel: ``(*kernel_size, C // groups, filters)``, the dtype of ``x``.
      spec: the call's facts.
      precision: as ``lax.conv_general_dilated``.
      bias: ``None`` or ``(filters,)``.
    """
    return _dispatch("conv", spec, _conv_lowerings(_xla_conv, _CONV_LOWERINGS, spec, precision),
                     *_with_bias(x, kernel, bias))


def conv_transpose(x: Array, kernel: Array, spec: ConvSpec, *, precision: Any = None,
                   bias: Array | None = None) -> Array:
    """A transposed convolution, lowered by :func:`choose`, plus the optional bias.

    Args:
      x: ``spec.input_shape``.
      kernel: ``(*kernel_size, filters // groups, C)``.
      spec: the call's facts; ``spec.padding`` pads the stride-dilated input.
      precision: as ``lax.conv_general_dilated``.
      bias: ``None`` or ``(filters,)``.
    """
    return _dispatch("conv_transpose", spec,
                     _conv_lowerings(_xla_conv_transpose, _TRANSPOSE_LOWERINGS, spec,
                                     precision),
                     *_with_bias(x, kernel, bias))


def _with_bias(x: Array, kernel: Array, bias: Array | None) -> tuple[Array, ...]:
    return (x, kernel) if bias is None else (x, kernel, jnp.asarray(bias))


def upsample(x: Array, spec: UpsampleSpec, plain: Callable[[Array], Array]) -> Array:
    """An interpolating upsampling, lowered by :func:`choose`; ``plain(x)`` is the
    ``jax.image.resize`` path (kept in :mod:`kconv.ops.reshape`, next to Keras's rules)."""
    stencil = functools.partial(bilinear_stencil, spec=spec, plain=plain)
    return _dispatch("upsample", spec,
                     lambda name, device: plain if name == XLA else stencil, x)


# --- the plain path ------------------------------------------------------------------

def _lax_conv(x: Array, kernel: Array, **kwargs: Any) -> Array:
    # kconv.ops.convolution holds the package's single lax.conv_general_dilated call and
    # imports this module, so this import waits for the first call.
    from kconv.ops.convolution import _conv_general_dilated

    return _conv_general_dilated(x, kernel, **kwargs)


def dimension_numbers(rank: int, data_format: str, *, kernel_in_axis: int,
                      kernel_out_axis: int) -> lax.ConvDimensionNumbers:
    """lax dimension numbers for a data format and a kernel ``(*k, a, b)`` layout.

    channels_first is expressed here, never by transposing arrays; so is the transposed
    kernel layout ``(*k, filters, in)`` (``kernel_in_axis=rank + 1``).

    Example:
        >>> dimension_numbers(1, "channels_last", kernel_in_axis=1, kernel_out_axis=2)
        ConvDimensionNumbers(lhs_spec=(0, 2, 1), rhs_spec=(2, 1, 0), out_spec=(0, 2, 1))
    """
    spatial = tuple(range(rank))
    if data_format == "channels_last":
        lhs = (0, rank + 1, *range(1, rank + 1))
    else:
        lhs = (0, 1, *range(2, rank + 2))
    return lax.ConvDimensionNumbers(lhs_spec=lhs, rhs_spec=(kernel_out_axis, kernel_in_axis,
                                                            *spatial), out_spec=lhs)


def _xla_conv(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any) -> Array:
    """XLA's convolution; the kernel ``(*k, in, out)``."""
    rank = spec.rank
    return _lax_conv(
        x, kernel, strides=spec.strides, padding=spec.padding, lhs_dilation=(1,) * rank,
        rhs_dilation=spec.dilation,
        dimension_numbers=dimension_numbers(rank, spec.data_format, kernel_in_axis=rank,
                                            kernel_out_axis=rank + 1),
        feature_group_count=spec.groups, precision=precision,
        preferred_element_type=spec.preferred_element_type,
    )


def _xla_conv_transpose(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any
                        ) -> Array:
    # A stride-1 convolution of the input dilated by the strides with the flipped kernel,
    # read in its (*k, filters // groups, in) layout through the dimension numbers.
    rank = spec.rank
    kernel = lax.rev(kernel, tuple(range(rank)))
    in_axis, out_axis = rank + 1, rank
    if spec.groups > 1:
        kernel, in_axis, out_axis = _grouped_transpose_kernel(kernel, spec.groups), rank, \
            rank + 1
    return _lax_conv(
        x, kernel, strides=(1,) * rank, padding=spec.padding,
        lhs_dilation=spec.strides, rhs_dilation=spec.dilation,
        dimension_numbers=dimension_numbers(rank, spec.data_format,
                                            kernel_in_axis=in_axis, kernel_out_axis=out_axis),
        feature_group_count=spec.groups, precision=precision,
        preferred_element_type=spec.preferred_element_type,
    )


def _grouped_transpose_kernel(kernel: Array, groups: int) -> Array:
    """A transposed kernel ``(*k, F // g, C)`` as lax's grouped forward kernel
    ``(*k, C // g, F)``: group ``j``'s block ``kernel[..., :, j * C // g:(j + 1) * C // g]``,
    transposed, becomes output columns ``j * F // g … (j + 1) * F // g - 1``.

    lax wants each group's output features contiguous in one axis, and the transposed
    layout holds the group index in the input axis: no dimension numbers express that,
    so it is one kernel-sized transpose (a reshape when ``F // g == 1`` or ``C // g ==
    1``), which XLA fuses with the spatial flip.

    Example:
        >>> k = jnp.arange(4.0).reshape(1, 1, 4)       # (k, F // g = 1, C = 4), g = 2
        >>> _grouped_transpose_kernel(k, 2)[0]          # (C // g = 2, F = 2)
        Array([[0., 2.],
               [1., 3.]], dtype=float32)
    """
    rank = kernel.ndim - 2
    per_group, channels = kernel.shape[-2:]
    # (*k, F/g, g, C/g) -> (*k, C/g, g, F/g): column j * F/g + f is group j's filter f.
    kernel = kernel.reshape(kernel.shape[:rank] + (per_group, groups, channels // groups))
    kernel = jnp.transpose(kernel, (*range(rank), rank + 2, rank + 1, rank))
    return kernel.reshape(kernel.shape[:rank] + (channels // groups, groups * per_group))


def _cpu_conv(x: Array, kernel: Array, spec: ConvSpec, precision: Any, *,
              fold: bool = True) -> Array:
    """The CPU lowering of a forward convolution, called from inside another CPU lowering
    (already on the CPU branch, so no second platform switch); ``fold=False`` keeps a 3-D
    one off :func:`width_fold`."""
    name = choose("conv", "cpu", spec)
    if name == "width_fold" and not fold:
        name = XLA
    fn = _xla_conv if name == XLA else _CONV_LOWERINGS[name]
    return fn(x, kernel, spec=spec, precision=precision)


def _cpu_conv_transpose(x: Array, kernel: Array, spec: ConvSpec, precision: Any) -> Array:
    """:func:`_cpu_conv` for a transposed convolution."""
    name = choose("conv_transpose", "cpu", spec)
    fn = _xla_conv_transpose if name == XLA else _TRANSPOSE_LOWERINGS[name]
    return fn(x, kernel, spec=spec, precision=precision)


# --- helpers -------------------------------------------------------------------------

def _spatial_axes(spec: ConvSpec) -> tuple[int, ...]:
    if spec.data_format == "channels_last":
        return tuple(range(1, spec.rank + 1))
    return tuple(range(2, spec.rank + 2))


def _channel_axis(spec: ConvSpec) -> int:
    return spec.rank + 1 if spec.data_format == "channels_last" else 1


def _pad_spatial(x: Array, axes: Sequence[int], pads: Sequence[tuple[int, int]]) -> Array:
    """Zero (lo, hi) padding of ``axes``; negative amounts crop."""
    if all(lo == hi == 0 for lo, hi in pads):
        return x
    config_ = [(0, 0, 0)] * x.ndim
    for axis, (lo, hi) in zip(axes, pads):
        config_[axis] = (lo, hi, 0)
    return lax.pad(x, np.zeros((), x.dtype), config_)


def _accumulation_dtype(spec: ConvSpec) -> np.dtype:
    # XLA:CPU computes a 16-bit float convolution in float32 and rounds the result once;
    # lowerings that add partial results in jnp arithmetic do the same, so they round the
    # same way instead of once per tap.
    dtype = spec.dtype if spec.dtype.itemsize >= 4 else np.dtype(np.float32)
    if spec.preferred_element_type is not None:
        dtype = jnp.promote_types(dtype, spec.preferred_element_type)
    return np.dtype(dtype)


# --- lowerings of a forward convolution ----------------------------------------------

def pointwise_dot(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any) -> Array:
    """A 1×…×1 convolution (``groups == 1``) as one matrix product
    ``(pixels, C) @ (C, filters)``; strides become a strided slice first.

    XLA:CPU runs a matrix product as a multithreaded GEMM, faster than its convolution of
    the same shape (W4's pointwise step 1.8 → 1.5 ms forward). The operand is 2-D on
    purpose: from a ``dot_general`` over the channel axis of the N-d array, autodiff's
    kernel gradient comes out transposed and XLA:CPU copies the cotangent to feed it
    (W4's pointwise step forward+backward 9.4 ms and 8 MB of temporaries, here 2.8 ms and
    none). channels_first is moved to channels_last around it (XLA:CPU transposes for its
    own convolution too).

    With a stride above 1 the strided slice is a loop fusion of its own: forward, the
    product ran no faster than XLA's convolution and compiled in 1.8–1.9 × its time
    ((8, 32, 32, 64) → 64, stride 2: 0.29–0.31 against 0.25–0.29 ms, 49 against 27 ms of
    lower + compile; ``benchmarks/RULE_SWEEP.md``, P6), while its gradients ran in half
    XLA's time (0.46 against 0.86 ms, 0.7 × the compile, a fifth of the temporaries). So
    a strided one is a bilinear primitive (:data:`_strided_pointwise_p`): XLA's forward,
    this product's transposes.
    """
    if any(s > 1 for s in spec.strides):
        return _strided_pointwise_p.bind(x, kernel, spec=spec, precision=precision)
    return _pointwise_product(x, kernel, spec=spec, precision=precision)


def _pointwise_product(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any
                       ) -> Array:
    """:func:`pointwise_dot`'s matrix product, the strided slice first."""
    axes = _spatial_axes(spec)
    x = _pad_spatial(x, axes, spec.padding)
    if any(s > 1 for s in spec.strides):
        step = [1] * x.ndim
        for axis, s in zip(axes, spec.strides):
            step[axis] = s
        x = lax.slice(x, (0,) * x.ndim, x.shape, step)
    if spec.data_format == "channels_first":
        x = jnp.moveaxis(x, 1, -1)
    channels, filters = kernel.shape[-2:]
    y = lax.dot_general(x.reshape(-1, channels), kernel.reshape(channels, filters),
                        (((1,), (0,)), ((), ())), precision=precision,
                        preferred_element_type=spec.preferred_element_type)
    y = y.reshape(x.shape[:-1] + (filters,))
    return y if spec.data_format == "channels_last" else jnp.moveaxis(y, -1, 1)


def depthwise_taps(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any) -> Array:
    """A convolution with one input channel per group, as a sum over the kernel taps of
    one strided window of the input times that tap's per-channel weights.

    XLA:CPU computes a grouped convolution with few channels per group on its generic
    loop, far from its fast path (W4's depthwise 3×3 step: 23 → 1.6 ms). Elementwise
    products are exact at every ``precision``, as XLA:CPU's convolution is.
    """
    del precision  # elementwise products: every precision is the full one on CPU
    dtype = _accumulation_dtype(spec)
    channels, filters = spec.channels, spec.kernel_shape[-1]
    weights = lax.reshape(lax.convert_element_type(kernel, dtype),
                          (math.prod(spec.kernel_size), channels, filters // channels))
    y = _depthwise_sum(lax.convert_element_type(x, dtype), weights, spec)
    return lax.convert_element_type(y, spec.output_dtype())


def _depthwise_sum(x: Array, weights: Array, spec: ConvSpec) -> Array:
    """``sum_t window_t(x) * weights[t]`` (``weights`` ``(taps, C, dm)``) as one bilinear
    primitive: its value the taps unrolled into one fused loop, its transposes written
    out (:func:`_depthwise_lhs`, :func:`_depthwise_rhs`).

    JAX's own transposes of the unrolled sum cost the kernel gradient one reduction per tap,
    with every tap's window materialised at once (W4: 8 windows, twice the plain path's
    temporaries), so the weights' tangent had been a scan over the taps, under a
    ``custom_jvp`` — and JAX differentiated, partially evaluated and transposed both
    forms, with a second, pass-through scan left behind to carry the taps' offsets. Here
    the transposes are the loops XLA:CPU runs well: the input's a second bilinear
    primitive (:data:`_depthwise_input_p`, whose own transposes are these taps and the
    weights' cotangent), the weights' one variadic reduction with an output per tap (a
    scan over the taps for large kernels: :func:`_depthwise_rhs`). Both unrolled sums are
    emitted as StableHLO by their lowering rules, never traced op by op.
    """
    return _depthwise_p.bind(x, weights, spec=spec)


def _depthwise_lowering(ctx: mlir.LoweringRuleContext, x: Any, weights: Any, *,
                        spec: ConvSpec, fast: bool = False) -> list[Any]:
    """The value, emitted as StableHLO directly: the taps unrolled, each a window of the
    input (:func:`_tap_window_plan`) times the tap's per-channel weights, added up.

    Emitted, not traced: ``mlir.lower_fun`` of the same ops traces them into a jaxpr and
    lowers each as its own cached function, ~45 of them for a 3×3 kernel (X1 forward,
    lowering 14 → 7 ms; lax's 6.5). The program is the same.

    ``fast`` (the value inside a derivative: :func:`_depthwise_jvp`) writes the first
    tap's product after its window as ``weights × window``, not ``window × weights``:
    the same arithmetic (up to float rounding), but XLA:CPU (jaxlib 0.10) then emits a
    vectorized loop, 1.3–5 × faster (X1's forward 1.5 → 0.4 ms, (8, 64, 64, 32) 1.6 →
    0.3, a 4×4 kernel 2.9 → 0.9; never slower among the kernels, strides, dilations and
    multipliers measured), that takes 3–10 ms more to compile — which a forward alone
    cannot afford (X1 1.50 → 1.61 × lax's lower + compile), a derivative's program can
    (W4 forward+backward 8.9 → 6.1 ms, 0.98 × lax's compile).
    """
    (x_aval, _), (y_aval,) = ctx.avals_in, ctx.avals_out
    emit = _Emitter(x_aval.dtype)
    axes, out, channel = _spatial_axes(spec), spec.output_spatial(), _channel_axis(spec)
    _, channels, multiplier = ctx.avals_in[1].shape
    first = _products_first(spec)
    # For dm > 1 the products are taken with the channel axis split into (C, dm) (output
    # channel c * dm + m): the input is broadcast to that, before its windows are cut
    # (products first: each window config gets the new axis, uncut) or after.
    source = x_aval.shape if first else y_aval.shape
    shape, dims, widen = source, (channel,), (lambda config, whole: config)
    if multiplier > 1:
        shape = source[:channel] + (channels, multiplier) + source[channel + 1:]
        dims = (channel, channel + 1)
    if multiplier > 1 and first:
        widen = lambda config, whole: (  # noqa: E731
            None if config is None else [*config[:channel + 1], whole, *config[channel + 1:]])
    split = lambda v: v if multiplier == 1 else stablehlo.broadcast_in_dim(  # noqa: E731
        emit.tensor(shape), v, emit.ints(_skip(len(x_aval.shape), channel + 1)))
    if first:
        x = split(x)
    y = None
    for tap, offsets in enumerate(np.ndindex(*spec.kernel_size)):
        plan = _tap_window_plan(x_aval.shape, axes, offsets, spec, out)
        if plan is None:
            continue
        (start, limit, step), pads = plan
        w = emit.weights(weights, (tap, 0, 0), (tap + 1, channels, multiplier), shape, dims)
        term = stablehlo.multiply(x, w) if first else x
        if start is not None:
            term = stablehlo.slice(term, emit.ints(widen(start, 0)),
                                   emit.ints(widen(limit, multiplier)), emit.ints(widen(step, 1)))
        term = emit.pad(term, widen(pads, (0, 0, 0)))
        if not first:
            term = (stablehlo.multiply(w, split(term)) if fast and y is None
                    else stablehlo.multiply(split(term), w))
        if multiplier > 1:
            term = stablehlo.reshape(emit.tensor(y_aval.shape), term)
        y = emit.add(y, term)
    return [emit.zeros(y_aval.shape) if y is None else y]


def _products_first(spec: ConvSpec) -> bool:
    """Whether the depthwise taps' forward multiplies by each tap's weights before that
    tap's window is cut and padded (as its transpose, the input gradient, always does),
    or after.

    The two are the same numbers, but XLA:CPU (jaxlib 0.10) compiles their fused loops
    to code of very different speed and compile time. Measured (2 cores; products after
    → first): with the channels the minor axis, the loop runs 1.5-5 × faster up to 16
    taps (ms: X1's 3×3 1.66 → 0.47, 16 channels 1.8 → 0.4, 1-D k3 0.43 → 0.22, k5
    0.64 → 0.26, (3, 1) 0.37 → 0.19; 12-16 taps 1.0-1.05 ×), but from 4 taps on costs
    7-14 ms more compile (X1 42 → 55 ms, lax's 26): past the 1.5 × lax's compile time
    kconv holds to. Up to 3 taps (1-D k2, k3, kernels (3, 1) and (1, 3)) it compiles no
    slower, so those take it (1-D k4 did too, a 2×2 kernel not: 56 → 65 ms). With the
    channels first (padding on the minor axes) products first is slower (0.4 → 1.2 ms),
    and so from 25 taps (5×5 3.9 → 4.8, 3×3×3 1.3 → 1.7).
    """
    return spec.data_format == "channels_last" and math.prod(spec.kernel_size) <= 3


def _depthwise_abstract(x: Any, weights: Any, *, spec: ConvSpec, fast: bool = False
                        ) -> jax.core.ShapedArray:
    return jax.core.ShapedArray(_output_shape(x, spec, spec.output_spatial()), x.dtype)


def _depthwise_lhs(ct: Array, x: Any, weights: Array, *, spec: ConvSpec,
                   fast: bool = False) -> Array:
    """The input's cotangent: :data:`_depthwise_input_p` of the cotangent."""
    del x, fast  # its shape is spec.input_shape
    return _depthwise_input_p.bind(ct, weights, spec=spec)


def _depthwise_input_lowering(ctx: mlir.LoweringRuleContext, ct: Any, weights: Any, *,
                              spec: ConvSpec) -> list[Any]:
    """The transpose of the taps in the input, emitted as StableHLO: per tap, the
    cotangent times the tap's weights (summed over the depth multiplier), placed back
    where the tap's window came from by one zero pad (:func:`_tap_window_pads`); all one
    fused loop, as JAX's transpose of the unrolled taps would be. The products come
    before the pads whatever :func:`_products_first` says of the forward: with the
    cotangent padded first, the forward+backward programs took 0.3-2.2 s to compile
    (channels first, 5×5, 3×3×3, X1) where this form takes 0.16-0.21.

    The multiplier's sum is one strided channel slice of the cotangent per ``m``, not a
    reduction: XLA:CPU would materialise a reduction's result per tap.
    """
    (ct_aval, _), (dx_aval,) = ctx.avals_in, ctx.avals_out
    emit = _Emitter(ct_aval.dtype)
    axes, out, channel = _spatial_axes(spec), spec.output_spatial(), _channel_axis(spec)
    _, channels, multiplier = ctx.avals_in[1].shape
    part_shape = list(ct_aval.shape)
    part_shape[channel] = channels
    parts = [ct]  # output channel c * dm + m: the cotangent's channel slice m::dm
    if multiplier > 1:
        step = [1] * len(part_shape)
        step[channel] = multiplier
        parts = [stablehlo.slice(ct, emit.ints([m if a == channel else 0
                                                for a in range(len(part_shape))]),
                                 emit.ints(ct_aval.shape), emit.ints(step))
                 for m in range(multiplier)]
    dx = None
    for tap, offsets in enumerate(np.ndindex(*spec.kernel_size)):
        pads = _tap_window_pads(dx_aval.shape, axes, offsets, spec, out)
        if pads is None:
            continue
        term = None
        for m, part in enumerate(parts):
            w = emit.weights(weights, (tap, 0, m), (tap + 1, channels, m + 1), part_shape,
                             (channel,))
            product = stablehlo.multiply(part, w)
            term = product if term is None else stablehlo.add(term, product)
        dx = emit.add(dx, emit.pad(term, pads))
    return [emit.zeros(dx_aval.shape) if dx is None else dx]


def _depthwise_input_abstract(ct: Any, weights: Any, *, spec: ConvSpec
                              ) -> jax.core.ShapedArray:
    return jax.core.ShapedArray(spec.input_shape, ct.dtype)


def _depthwise_input_lhs(g: Array, ct: Any, weights: Array, *, spec: ConvSpec) -> Array:
    # <G(ct, w), g> = <ct, F(g, w)>: the cotangent's cotangent is the taps of g (inside a
    # derivative of a derivative: the fast loop).
    del ct
    return _depthwise_p.bind(g, weights, spec=spec, fast=True)


def _depthwise_input_rhs(g: Array, ct: Array, weights: Any, *, spec: ConvSpec) -> Array:
    # <G(ct, w), g> = <F(g, w), ct>: the weights' cotangent is F's, with input g.
    return _depthwise_rhs(ct, g, weights, spec=spec)


class _Emitter:
    """StableHLO builders shared by the depthwise lowering rules (one dtype)."""

    def __init__(self, dtype: Any):
        self.element = mlir.dtype_to_ir_type(np.dtype(dtype))
        self.zero = mlir.ir_constant(np.zeros((), dtype))
        self.ints = mlir.dense_int_array

    def tensor(self, shape: Sequence[int]) -> Any:
        return mlir.ir.RankedTensorType.get(list(shape), self.element)

    def weights(self, weights: Any, start: Sequence[int], limit: Sequence[int],
                shape: Sequence[int], dims: Sequence[int]) -> Any:
        """``weights[start:limit]`` (per channel, or per (channel, multiplier)) broadcast
        to ``shape`` along ``dims``."""
        w = stablehlo.slice(weights, self.ints(start), self.ints(limit),
                            self.ints([1] * len(start)))
        w = stablehlo.reshape(self.tensor([shape[d] for d in dims]), w)
        return stablehlo.broadcast_in_dim(self.tensor(shape), w, self.ints(dims))

    def pad(self, value: Any, pads: Sequence[tuple[int, int, int]] | None) -> Any:
        if pads is None:
            return value
        low, high, interior = zip(*pads)
        return stablehlo.pad(value, self.zero, self.ints(low), self.ints(high),
                             self.ints(interior))

    def add(self, total: Any, term: Any) -> Any:
        return term if total is None else stablehlo.add(total, term)

    def zeros(self, shape: Sequence[int]) -> Any:
        return stablehlo.broadcast_in_dim(self.tensor(shape), self.zero, self.ints(()))


def _tap_window_pads(shape: Sequence[int], axes: Sequence[int], offsets: Sequence[int],
                     spec: ConvSpec, out: Sequence[int]) -> list | None:
    """The ``lax.pad`` config that places an output-shaped array where tap ``offsets``'
    window of an input of ``shape`` reads from (the transpose of :func:`_tap_window_plan`);
    ``None`` if that window is all padding. Output ``o`` sits at input ``o * s + j * d -
    lo``: interior padding ``s - 1``, then ``j * d - lo`` before (negative: cropped)."""
    pads = [(0, 0, 0)] * len(shape)
    ranges = _tap_ranges(axes, offsets, spec, out)
    if ranges is None:
        return None
    for axis, j, n, d, s, lo, o, first, last in ranges:
        before = j * d - lo
        pads[axis] = (before, n - before - ((o - 1) * s + 1), s - 1)
    return pads


def _depthwise_rhs(ct: Array, x: Array, weights: Any, *, spec: ConvSpec,
                   fast: bool = False) -> Array:
    """The weights' cotangent: per tap, its input window times the cotangent, summed over
    the batch and space (:func:`_depthwise_tap_sums` where :func:`_tap_sums_pay`, else
    :func:`_depthwise_tap_scan`)."""
    del fast  # the value's loop form: nothing to do with its transposes
    if _tap_sums_pay(spec):
        return _depthwise_tap_sums(ct, x, weights, spec=spec)
    return _depthwise_tap_scan(ct, x, weights, spec=spec)


def _tap_sums_pay(spec: ConvSpec) -> bool:
    """Whether the weights' cotangent is :func:`_depthwise_tap_sums` (else the scan).

    Where XLA:CPU (jaxlib 0.10) compiles the one reduction no slower than the scan, and
    its sums stay float32-accurate. Measured, lower + compile of depthwise
    forward+backward programs (ms, sums / scan / lax's): 1-D k2-k9 79-104 / 94-116 /
    74-90; 2-D 3×3, 3×4, 4×4, (1, 9), 3×5 115-153 / 103-121 / 97-120 (3×3 with a depth
    multiplier 2, strides 2 or the channels first 94-146). Not taken: 2-D kernels of 2-8
    taps, whose reduction XLA compiles to a far larger program (2×2 357 ms, 2×4 821,
    (1, 7) 632; lax's 105), 3-D kernels (2×2×2 201 / 122 / 125), more than
    ``_TAP_SUMS_MAX_TAPS`` taps or sums longer than ``_TAP_SUMS_MAX_CHAIN`` terms.
    """
    out, taps = spec.output_spatial(), math.prod(spec.kernel_size)
    chain = math.prod(out[1:]) if spec.rank > 1 else out[0]
    return (taps <= _TAP_SUMS_MAX_TAPS and chain <= _TAP_SUMS_MAX_CHAIN
            and (spec.rank == 1 or (spec.rank == 2 and taps >= 9)))


#: The most kernel taps whose weight gradients are one variadic reduction
#: (:func:`_depthwise_tap_sums`); above, a scan over the taps. The reduction's compile
#: time grows with the taps on XLA:CPU and its speed does not keep up (lower + compile of
#: depthwise forward+backward programs, ms, sums / scan / lax's, and run time: 3×3
#: 140 / 146 / 113 and 2.9 / 3.4 ms; 5×5 167 / 139 / 116 and 18.3 / 14.9; 7×7
#: 262 / 182 / 119 and 36.3 / 34.1).
_TAP_SUMS_MAX_TAPS = 16

#: The longest sum :func:`_depthwise_tap_sums` leaves to one thread's sequential loop
#: (the output's spatial extent past its first axis; a 1-D output's length): its
#: float32 error grows with it (1.2e-6 of the largest entry at 4096 terms, 5e-6 at
#: 50176), where the scan's YNNPACK reductions stay at ~1e-7. Above, the scan.
_TAP_SUMS_MAX_CHAIN = 2 ** 14


def _split_multiplier(ct: Array, channel: int, channels: int, multiplier: int
                      ) -> tuple[Array, tuple[int, ...]]:
    """The cotangent with its channel axis split into ``(C, dm)`` (output channel
    ``c * dm + m``) when ``dm > 1``, and its axes that index the weights' channels."""
    if multiplier == 1:
        return ct, (channel,)
    ct = lax.reshape(ct, ct.shape[:channel] + (channels, multiplier) + ct.shape[channel + 1:])
    return ct, (channel, channel + 1)


def _depthwise_tap_sums(ct: Array, x: Array, weights: Any, *, spec: ConvSpec) -> Array:
    """The weights' cotangent as one variadic reduction, an output per tap: its window of
    the input times the cotangent, summed along all but the batch, channel and (2-D) the
    first spatial axis; those partial sums are summed after.

    One reduction reads the input and the cotangent once, the windows' slices and pads
    fused into it (none materialised); the partial sums let XLA:CPU split it over its
    threads and keep each sequential sum short (float32 error ~1e-7 of the largest
    entry; per image it was 5e-6 for a 224 × 224 image). Measured (2 cores, ms, sums /
    :func:`_depthwise_tap_scan`, whose taps each materialise their window for YNNPACK's
    multiply-reduce; forward+backward): X1's 3×3 2.1 / 3.1 with 2.25 / 4.0 MiB of
    temporaries (lax's 8.1), strided 0.56 / 1.02, dilated 2.5 / 3.2, depth multiplier 2
    3.7 / 7.7, channels first 3.5 / 3.7, 1-D k5 1.6 / 1.8, one image 0.58 / 0.88, (8,
    112, 112, 32) 6.6 / 13.0. The taps as separate reductions ran 13 ms (XLA:CPU keeps
    every window, 32 MiB); a scan over batch chunks with the taps inside 3.1-5.5.
    """
    axes, out = _spatial_axes(spec), spec.output_spatial()
    channel, (taps, channels, multiplier) = _channel_axis(spec), weights.aval.shape
    ct, by_channel = _split_multiplier(ct, channel, channels, multiplier)
    # Partial sums per image and, from 2-D on, per row of the first spatial axis: each a
    # sum along the rest of the image, in one thread's sequential loop; their sum after
    # is XLA's tree-like one (X1's partial sums, 2.2 MiB; one partial sum per image kept
    # its float32 error at 5e-6 of the gradient's largest entry for a 224 x 224 image,
    # the rows' 1e-7 as XLA's own).
    first = axes[0] + (1 if multiplier > 1 and axes[0] > channel else 0)
    partial = (0, first) if spec.rank > 1 else (0,)
    kept = tuple(sorted(partial + by_channel))
    summed = tuple(a for a in range(ct.ndim) if a not in kept)
    # Behind a barrier, the windows' pads are not the forward's (SeparableConv's
    # forward+backward computes both): XLA would merge the two, then materialise each
    # pad for its two users (W4: 33 MiB more temporaries, 4 x lax's compile time).
    x = lax.optimization_barrier(x)
    products, where = [], []
    for tap, offsets in enumerate(np.ndindex(*spec.kernel_size)):
        plan = _tap_window_plan(x.shape, axes, offsets, spec, out)
        if plan is None:
            continue  # the window is all padding: a zero gradient
        (start, limit, step), pads = plan
        window = x if start is None else lax.slice(x, start, limit, step)
        if pads is not None:
            window = lax.pad(window, np.zeros((), x.dtype), pads)
        if multiplier > 1:
            window = lax.broadcast_in_dim(window, ct.shape, _skip(window.ndim, channel + 1))
        products.append(lax.mul(window, ct))
        where.append(tap)
    gradients = jnp.zeros((taps, channels, multiplier), ct.dtype)
    if not products:
        return gradients
    sums = lax.reduce(products, [np.zeros((), ct.dtype)] * len(products),
                      lambda a, b: tuple(map(lax.add, a, b)), summed)
    per_tap = lax.reduce_sum(jnp.stack(sums), tuple(1 + kept.index(a) for a in partial))
    return gradients.at[np.array(where)].set(
        per_tap.reshape(len(where), channels, multiplier))


def _depthwise_tap_scan(ct: Array, x: Array, weights: Any, *, spec: ConvSpec) -> Array:
    """The weights' cotangent as a scan over the taps, each reducing its input window
    times the cotangent over the batch and space: for kernels of many taps, whose
    :func:`_depthwise_tap_sums` would compile slowly.

    Unrolled as separate reductions, XLA:CPU materialises every tap's window at once (W4:
    8 windows, twice the plain path's peak memory); the scan takes one at a time. The pad
    is inside the loop body, so that XLA fuses it into the window's slice: a padded copy
    outside the loop is a standalone pad, which XLA:CPU compiles slowly (~150 ms for
    X1's input). The optimisation barrier keeps XLA from hoisting the pad out of the loop
    as loop-invariant; it holds the tap's offsets too, or it would be loop-invariant
    itself (X1 forward+backward compile 287 → 137 ms; lax's 136).
    """
    axes, out = _spatial_axes(spec), spec.output_spatial()
    channel, (taps, channels, multiplier) = _channel_axis(spec), weights.aval.shape
    size, step = list(x.shape), [1] * x.ndim
    for axis, o, s in zip(axes, out, spec.strides):
        size[axis], step[axis] = (o - 1) * s + 1, s
    starts = np.array([[j * d for j, d in zip(offsets, spec.dilation)]
                       for offsets in np.ndindex(*spec.kernel_size)], np.int32)
    ct, kept = _split_multiplier(ct, channel, channels, multiplier)
    summed = tuple(a for a in range(ct.ndim) if a not in kept)

    def tap_gradient(carry: None, start: Array) -> tuple[None, Array]:
        x_, ct_, start = lax.optimization_barrier((x, ct, start))
        begin = [np.int32(0)] * x.ndim
        for axis, i in zip(axes, range(spec.rank)):
            begin[axis] = start[i]
        # The starts are never negative: no index normalisation to trace.
        window = lax.dynamic_slice(_pad_spatial(x_, axes, spec.padding), begin, size,
                                   allow_negative_indices=False)
        if any(s > 1 for s in spec.strides):
            window = lax.slice(window, (0,) * x.ndim, size, step)
        if multiplier > 1:
            window = lax.broadcast_in_dim(window, ct.shape, _skip(window.ndim, channel + 1))
        return carry, lax.reduce_sum(lax.mul(window, ct_), summed)

    gradients = lax.scan(tap_gradient, None, starts)[1]
    return lax.reshape(gradients, (taps, channels, multiplier))


def _bind_batch_folded(bind: Callable[[Array, ConvSpec], Array], x: Array, x_dim: int,
                       spec: ConvSpec) -> tuple[Array, int]:
    """A batching rule's shared-weights case: ``x``'s mapped axis folded into the
    convolution's batch axis, ``bind(folded_x, folded_spec)``, and the result unfolded."""
    x = jnp.moveaxis(x, x_dim, 0)
    b, n = x.shape[:2]
    folded = dataclasses.replace(spec, input_shape=(b * n,) + tuple(spec.input_shape[1:]))
    y = bind(x.reshape((b * n,) + x.shape[2:]), folded)
    return y.reshape((b, n) + y.shape[1:]), 0


def _depthwise_batch(primitive: Primitive, args: Sequence[Array], dims: Sequence[Any], *,
                     spec: ConvSpec, **params: Any) -> tuple[Array, int]:
    """Either depthwise primitive again, on a folded call, so that its transposes stay: a
    batched feature map (the input, or the cotangent) with shared weights folds the batch
    axis into the convolution's; batched weights fold it into the channels (a depthwise
    convolution computes each channel alone), the feature map broadcast along it when it
    is shared."""
    a, weights = args
    a_dim, weights_dim = dims
    if weights_dim is None:
        return _bind_batch_folded(
            lambda a, spec: primitive.bind(a, weights, spec=spec, **params), a, a_dim, spec)
    channel = _channel_axis(spec)
    weights = jnp.moveaxis(weights, weights_dim, 1)  # (taps, B, C, dm)
    taps, b, channels, multiplier = weights.shape
    if a_dim is None:
        a = jnp.broadcast_to(jnp.expand_dims(a, channel),
                             a.shape[:channel] + (b,) + a.shape[channel:])
    else:
        a = jnp.moveaxis(a, a_dim, channel)  # the batch axis just before the channels
    a = a.reshape(a.shape[:channel] + (b * a.shape[channel + 1],) + a.shape[channel + 2:])
    input_shape = list(spec.input_shape)
    input_shape[channel] = b * channels
    folded = dataclasses.replace(
        spec, input_shape=tuple(input_shape), groups=b * channels,
        kernel_shape=spec.kernel_shape[:-1] + (b * spec.kernel_shape[-1],))
    y = primitive.bind(a, weights.reshape(taps, b * channels, multiplier), spec=folded,
                       **params)
    y = y.reshape(y.shape[:channel] + (b, y.shape[channel] // b) + y.shape[channel + 1:])
    return jnp.moveaxis(y, channel, 0), 0


def _depthwise_primitive(name: str, abstract: Callable[..., Any],
                         lowering: Callable[..., Any], lhs: Callable[..., Array],
                         rhs: Callable[..., Array]) -> Primitive:
    """A depthwise primitive ``p(a, weights, spec=...)``: bilinear, batched by
    :func:`_depthwise_batch`, evaluated eagerly by compiling it through its lowering."""
    primitive = Primitive(name)
    eager = jax.jit(lambda a, w, **params: primitive.bind(a, w, **params),
                    static_argnames=("spec", "fast"))
    primitive.def_impl(eager)
    primitive.def_abstract_eval(abstract)
    mlir.register_lowering(primitive, lowering)
    ad.defbilinear(primitive, lhs, rhs)
    batching.primitive_batchers[primitive] = functools.partial(_depthwise_batch, primitive)
    return primitive


#: The taps ``F(x, weights)``: :func:`_depthwise_sum`.
_depthwise_p = _depthwise_primitive("kconv_depthwise_taps", _depthwise_abstract,
                                    _depthwise_lowering, _depthwise_lhs, _depthwise_rhs)


def _depthwise_jvp(primals: Sequence[Array], tangents: Sequence[Any], *, spec: ConvSpec,
                   fast: bool = False) -> tuple[Array, Array]:
    """The taps' JVP (bilinear: ``F(dx, w) + F(x, dw)``), every term on the fast loop
    (:func:`_depthwise_lowering`): a derivative's program (training, ``jax.jvp``,
    ``remat``) affords its compile time."""
    del fast
    (x, weights), (x_dot, weights_dot) = primals, tangents
    bind = functools.partial(_depthwise_p.bind, spec=spec, fast=True)
    terms = ([bind(x_dot, weights)] if type(x_dot) is not ad.Zero else []) + (
        [bind(x, weights_dot)] if type(weights_dot) is not ad.Zero else [])
    return bind(x, weights), functools.reduce(lax.add, terms)


ad.primitive_jvps[_depthwise_p] = _depthwise_jvp
#: Their transpose in the input, ``G(ct, weights)`` with ``<F(x, w), ct> = <x, G(ct, w)>``.
_depthwise_input_p = _depthwise_primitive(
    "kconv_depthwise_taps_input", _depthwise_input_abstract, _depthwise_input_lowering,
    _depthwise_input_lhs, _depthwise_input_rhs)


def _output_shape(x: Array, spec: ConvSpec, out: Sequence[int]) -> tuple[int, ...]:
    shape = list(x.shape)
    for axis, o in zip(_spatial_axes(spec), out):
        shape[axis] = o
    shape[_channel_axis(spec)] = spec.kernel_shape[-1]
    return tuple(shape)


def _tap_ranges(axes: Sequence[int], offsets: Sequence[int], spec: ConvSpec,
                out: Sequence[int]) -> list[tuple[int, ...]] | None:
    """Per spatial axis of tap ``offsets``: ``(axis, j, n, d, s, lo, o, first, last)`` —
    the tap index ``j``, input length ``n``, dilation ``d``, stride ``s``, padding ``lo``,
    output length ``o``, and the first and last outputs whose input ``o * s + j * d - lo``
    is inside ``[0, n)``; ``None`` if on some axis every one falls in the padding."""
    ranges = []
    for axis, j, n, d, s, (lo, _), o in zip(axes, offsets, spec.spatial, spec.dilation,
                                            spec.strides, spec.padding, out):
        first, last = max(0, -(-(lo - j * d) // s)), min(o - 1, (n - 1 + lo - j * d) // s)
        if first > last:
            return None
        ranges.append((axis, j, n, d, s, lo, o, first, last))
    return ranges


def _tap_window_plan(shape: Sequence[int], axes: Sequence[int], offsets: Sequence[int],
                     spec: ConvSpec, out: Sequence[int]) -> tuple | None:
    """How to cut the input elements kernel tap ``offsets`` meets, ``x[o * s + j * d - lo]``
    per axis, zero where that falls in the padding, from an input of ``shape``:
    ``((start, limit, step), pads)`` — a strided slice (``None``s: none), then a
    ``lax.pad`` config (``None``: none); ``None`` if the window is all padding.

    Each window is its own slice and zero pad, never a slice of one padded copy of the
    input: XLA:CPU fuses a slice-and-pad into the multiply-add, but compiles a standalone
    pad of a large array slowly (~200 ms for W4's input).
    """
    start, limit, step = [0] * len(shape), list(shape), [1] * len(shape)
    pads = [(0, 0, 0)] * len(shape)
    ranges = _tap_ranges(axes, offsets, spec, out)
    if ranges is None:
        return None
    for axis, j, n, d, s, lo, o, first, last in ranges:
        start[axis] = first * s + j * d - lo
        limit[axis] = last * s + j * d - lo + 1
        step[axis] = s
        pads[axis] = (first, o - 1 - last, 0)
    if all(s == 1 for s in step):
        # One pad with negative (cropping) amounts and no slice: an op fewer per tap to
        # emit; XLA's simplifier makes it the same slice-and-pad.
        crop = [(p[0] - a, p[1] - (n - b), 0) for p, a, b, n in zip(pads, start, limit, shape)]
        return (None, None, None), (None if all(c == (0, 0, 0) for c in crop) else crop)
    return (start, limit, step), (pads if any(p != (0, 0, 0) for p in pads) else None)


def _skip(ndim: int, axis: int) -> tuple[int, ...]:
    """The axes of an ``ndim + 1``-d array other than ``axis``, for ``broadcast_in_dim``."""
    return tuple(a if a < axis else a + 1 for a in range(ndim))


def grouped_split(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any,
                  lower: Callable[..., Array] = _cpu_conv) -> Array:
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

    ``lower`` computes one group: :func:`_cpu_conv`, or for a transposed convolution
    :func:`_cpu_conv_transpose` — its kernel ``(*k, F // g, C)`` holds group ``j`` in the
    same place, the last axis's ``j``-th slice, so the same slicing serves both.
    """
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
    return _cpu_conv(x, dense, single, precision)


def eigen_crop(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any) -> Array:
    """A stride-1 dense 2-D convolution computed over a taller output window and cropped
    back, so that XLA:CPU runs it on its multi-threaded Eigen convolution.

    XLA:CPU (jaxlib 0.10) hands a float32 2-D convolution with more than 16 channels in
    or out to YNNPACK, which runs these sizes on one core; it keeps on Eigen (threaded
    over XLA's intra-op pool) a convolution whose output is taller than its input. So the
    first spatial axis is padded ``in - out + 1`` rows further at its end, and the extra
    output rows are sliced off again. The slice fuses with the bias add after it, which
    is why :func:`choose` takes this only for a call that adds one (``ConvSpec.bias``):
    alone, the slice is a loop fusion of its own (W1 lower + compile 16 → 81 ms; with the
    bias 41 ms, as lax's). W1 ((16, 32, 32, 64) → 64, 3×3 "same") forward 13.5 → 8.5 ms
    on 2 cores; on one core Eigen is 0–15 % slower, so the rule wants two. The cost is
    one output-sized buffer in the forward pass (the taller output; the plain path writes
    into its own output) and ``in - out + 1`` rows of extra multiply-adds.

    A bilinear primitive whose tangents are itself and whose transposes are lax's
    (:data:`_eigen_crop_p`): the input and kernel gradients are the plain convolution's.
    The kernel gradient of the taller form would take a cotangent taller than the input,
    which XLA swaps into a convolution on its generic loop (W1: 0.37 s). Inside a
    derivative the value is XLA's convolution (``derivative_value``): its bias add runs in
    place in the output, where the taller output would be a temporary beside the kernel
    gradient's transposed copies (W1 forward+backward 8.1 → 12.1 MiB; XLA schedules the
    gradients' copies before the crop whatever data dependency is added, as it fuses the
    one element read into the copy).
    """
    return _eigen_crop_p.bind(x, kernel, spec=spec, precision=precision)


def _eigen_crop_value(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any
                      ) -> Array:
    rows = spec.output_spatial()[0]
    (lo, hi), *rest = spec.padding
    taller = dataclasses.replace(spec, padding=((lo, hi + spec.spatial[0] - rows + 1),
                                                *rest))
    y = _xla_conv(x, kernel, spec=taller, precision=precision)
    return lax.slice_in_dim(y, 0, rows, axis=_spatial_axes(spec)[0])


def _transposes(fn: Callable[..., Array]
                ) -> tuple[Callable[..., Array], Callable[..., Array]]:
    """JAX's transposes of a convolution ``fn(x, kernel, spec=, precision=)`` in its input
    and in its kernel, as :func:`_conv_primitive` takes them."""

    def lhs(ct: Array, x: Any, kernel: Array, *, spec: ConvSpec, precision: Any) -> Array:
        like = jax.ShapeDtypeStruct(x.aval.shape, x.aval.dtype)
        return jax.linear_transpose(
            lambda z: fn(z, kernel, spec=spec, precision=precision), like)(ct)[0]

    def rhs(ct: Array, x: Array, kernel: Any, *, spec: ConvSpec, precision: Any) -> Array:
        like = jax.ShapeDtypeStruct(kernel.aval.shape, kernel.aval.dtype)
        return jax.linear_transpose(
            lambda k: fn(x, k, spec=spec, precision=precision), like)(ct)[0]

    return lhs, rhs


#: JAX's transposes of XLA's plain convolution: lax's input and kernel gradients.
_plain_input_gradient, _plain_kernel_gradient = _transposes(_xla_conv)


def _conv_primitive_batch(primitive: Primitive, value: Callable[..., Array],
                          args: Sequence[Array], dims: Sequence[Any], *, spec: ConvSpec,
                          precision: Any) -> tuple[Array, int]:
    """Batched input, shared kernel: the batch axis folded into the convolution's (the
    primitive again, so its transposes stay). A batched kernel: ``value``'s lax ops under
    :func:`jax.vmap` (JAX batches a per-example kernel into a grouped convolution)."""
    x, kernel = args
    x_dim, kernel_dim = dims
    if kernel_dim is None:  # not mapped
        return _bind_batch_folded(
            lambda x, spec: primitive.bind(x, kernel, spec=spec, precision=precision),
            x, x_dim, spec)
    value = functools.partial(value, spec=spec, precision=precision)
    return jax.vmap(value, in_axes=(x_dim, kernel_dim))(x, kernel), 0


def _conv_primitive(name: str, value: Callable[..., Array], plain: Callable[..., Array],
                    lhs: Callable[..., Array], rhs: Callable[..., Array],
                    joint: Callable[..., tuple[Array, Array]] | None = None, *,
                    derivative_value: Callable[..., Array] | None = None) -> Primitive:
    """A convolution primitive ``p(x, kernel, spec=..., precision=...)``: ``value``'s lax
    ops as its evaluation and lowering, ``plain``'s output shape, bilinear with the
    transposes ``lhs`` (input) and ``rhs`` (kernel), batched by
    :func:`_conv_primitive_batch`; with ``joint`` (both transposes from one call), its
    tangent in both operands is one equation whose transpose calls it
    (:func:`_def_joint_tangent`).

    ``derivative_value`` (lax ops, e.g. ``plain``), if given, computes the primal output
    inside a derivative (``jvp``, ``grad``, ``vjp``) in ``value``'s place: for a value
    whose forward temporaries would sit beside the gradients' own (a derivative's
    program schedules the two together), above the plain path's memory.
    """
    primitive = Primitive(name)
    primitive.def_impl(value)

    def abstract(x: Any, kernel: Any, *, spec: ConvSpec, precision: Any
                 ) -> jax.core.ShapedArray:
        out = jax.eval_shape(functools.partial(plain, spec=spec, precision=precision),
                             x, kernel)
        return jax.core.ShapedArray(out.shape, out.dtype)

    primitive.def_abstract_eval(abstract)
    mlir.register_lowering(primitive, mlir.lower_fun(value, multiple_results=False))
    ad.defbilinear(primitive, lhs, rhs)
    batching.primitive_batchers[primitive] = functools.partial(_conv_primitive_batch,
                                                               primitive, value)
    primal = derivative_value or primitive.bind
    if joint is not None:
        _def_joint_tangent(primitive, value, abstract, lhs, rhs, joint, primal)
    elif derivative_value is not None:
        def jvp(primals: Sequence[Array], tangents: Sequence[Any], **params: Any
                ) -> tuple[Array, Any]:
            (x, kernel), (dx, dk) = primals, tangents
            terms = ([primitive.bind(dx, kernel, **params)] if type(dx) is not ad.Zero
                     else []) + ([primitive.bind(x, dk, **params)]
                                 if type(dk) is not ad.Zero else [])
            y = primal(x, kernel, **params)
            return y, (functools.reduce(lax.add, terms) if terms
                       else ad.Zero.from_primal_value(y))
        ad.primitive_jvps[primitive] = jvp
    return primitive


def _def_joint_tangent(primitive: Primitive, value: Callable[..., Array],
                       abstract: Callable[..., Any], lhs: Callable[..., Array],
                       rhs: Callable[..., Array],
                       joint: Callable[..., tuple[Array, Array]],
                       primal: Callable[..., Array]) -> None:
    """Forward mode for a bilinear convolution primitive ``p`` whose two transposes cost
    less computed together (``joint(ct, x, kernel, spec=, precision=)`` returns the input's
    and the kernel's cotangents).

    Reverse mode transposes each equation of the linearized program on its own, so the
    tangent ``p(dx, k) + p(x, dk)`` would be transposed by two separate calls. Here that
    sum is one equation, ``pair(dx, dk, x, k)`` (``pair(a, b, c, d) = p(a, d) + p(c, b)``),
    linear in ``(a, b)`` for known ``(c, d)`` and in ``(c, d)`` for known ``(a, b)``: its
    transpose makes one ``joint`` call where both of a pair are unknown. Its own tangent
    is again a sum of such pairs, so ``jvp``, ``grad`` of ``grad`` and
    Hessian-vector products stay exact; under :func:`jax.vmap` it is ``p`` twice.
    ``primal(x, kernel, **params)`` computes the JVP's primal output (``p.bind``, or
    :func:`_conv_primitive`'s ``derivative_value``).
    """
    pair = Primitive(primitive.name + "_pair")

    def pair_value(a: Array, b: Array, c: Array, d: Array, **params: Any) -> Array:
        return value(a, d, **params) + value(c, b, **params)

    pair.def_impl(pair_value)
    pair.def_abstract_eval(lambda a, b, c, d, **params: abstract(a, d, **params))
    mlir.register_lowering(pair, mlir.lower_fun(pair_value, multiple_results=False))

    def products(first: tuple[Any, Any], second: tuple[Any, Any], params: dict[str, Any]
                 ) -> list[Array]:
        """``p(*first) + p(*second)`` less its zero terms: one ``pair`` when both are
        there (``first`` the input's tangent and the kernel, ``second`` the input and the
        kernel's tangent)."""
        (dx, kernel), (x, dk) = first, second
        if type(dx) is ad.Zero and type(dk) is ad.Zero:
            return []
        if type(dk) is ad.Zero:
            return [primitive.bind(dx, kernel, **params)]
        if type(dx) is ad.Zero:
            return [primitive.bind(x, dk, **params)]
        return [pair.bind(dx, dk, x, kernel, **params)]

    def jvp(primals: Sequence[Array], tangents: Sequence[Any], **params: Any
            ) -> tuple[Array, Any]:
        (x, kernel), (dx, dk) = primals, tangents
        terms = products((dx, kernel), (x, dk), params)
        return primal(x, kernel, **params), functools.reduce(lax.add, terms)

    def pair_jvp(primals: Sequence[Array], tangents: Sequence[Any], **params: Any
                 ) -> tuple[Array, Any]:
        (a, b, c, d), (da, db, dc, dd) = primals, tangents
        terms = products((da, d), (c, db), params) + products((dc, b), (a, dd), params)
        out = pair.bind(a, b, c, d, **params)
        if not terms:
            return out, ad.Zero.from_primal_value(out)
        return out, functools.reduce(lax.add, terms)

    def pair_transpose(ct: Any, a: Any, b: Any, c: Any, d: Any, **params: Any
                       ) -> list[Any]:
        unknown = [ad.is_undefined_primal(v) for v in (a, b, c, d)]
        if type(ct) is ad.Zero:
            return [ad.Zero(v.aval) if u else None for u, v in zip(unknown, (a, b, c, d))]
        args, out = (a, b, c, d), [None] * 4
        # (a, b) multiply the known (d, c): a's cotangent is lhs(ct, ., d), b's
        # rhs(ct, c, .); (c, d) multiply (b, a) the same way.
        for i, j, x, kernel in ((0, 1, c, d), (2, 3, a, b)):
            if unknown[i] and unknown[j]:
                out[i], out[j] = joint(ct, x, kernel, **params)
            elif unknown[i]:
                out[i] = lhs(ct, args[i], kernel, **params)
            elif unknown[j]:
                out[j] = rhs(ct, x, args[j], **params)
        return out

    def pair_batch(args: Sequence[Array], dims: Sequence[Any], **params: Any
                   ) -> tuple[Array, int]:
        def both(a: Array, b: Array, c: Array, d: Array) -> Array:
            return primitive.bind(a, d, **params) + primitive.bind(c, b, **params)
        axes = [None if dim is batching.not_mapped else dim for dim in dims]
        return jax.vmap(both, in_axes=axes)(*args), 0

    ad.primitive_jvps[primitive] = jvp
    ad.primitive_jvps[pair] = pair_jvp
    ad.primitive_transposes[pair] = pair_transpose
    batching.primitive_batchers[pair] = pair_batch


_eigen_crop_p = _conv_primitive("kconv_eigen_crop", _eigen_crop_value, _xla_conv,
                                _plain_input_gradient, _plain_kernel_gradient,
                                derivative_value=_xla_conv)

#: A 1-D :func:`block_diagonal` with wide groups: XLA's grouped convolution as its value
#: and tangents, the dense convolution's transposes as its gradients.
_block_diagonal_dual_p = _conv_primitive("kconv_block_diagonal_dual", _xla_conv, _xla_conv,
                                         *_transposes(_block_diagonal_dense))

#: A strided :func:`pointwise_dot`: XLA's convolution as its value and tangents, the
#: strided matrix product's transposes as its gradients.
_strided_pointwise_p = _conv_primitive("kconv_strided_pointwise", _xla_conv, _xla_conv,
                                       *_transposes(_pointwise_product))


def _tap_loop_pays(spec: ConvSpec) -> bool:
    """Whether a dense convolution's gradients take :func:`_tap_loop`: 3-D, float32 or
    float16 (what XLA:CPU runs on its generic loop and the loop was measured on;
    gradients alone, lax → loop: W7 24.6 → 4.4–4.8 ms; stride 2 55 → 1.9, (2, 32, 32, 32,
    8) → 16 stride 2 222 → 5.8, channels_first stride 2 54 → 4.0; float16 W7 24 → 5.5,
    stride 2 55 → 2.3, at 0.94–1.41 × lax's compile). Not bfloat16: its loop compiles
    1.5–2.6 × lax's (W7 1.6–1.9 ×)."""
    return spec.rank == 3 and spec.groups == 1 and _cpu_float(spec, _TAP_LOOP_FLOATS)


def _tap_loop(ct: Array, x: Any, kernel: Any, *, spec: ConvSpec, precision: Any,
              input_gradient: bool = True, kernel_gradient: bool = True,
              forward: bool = False) -> tuple[Array | None, Array | None, Array | None]:
    """The input and/or kernel gradient of a dense convolution (``groups == 1``), and
    optionally its value, as one loop over the kernel's taps, each tap one or two matrix
    products.

    XLA:CPU (jaxlib 0.10) runs both gradients of a 3-D convolution on its generic loop
    (W7's forward+backward 24–29 ms, 12 % of the GEMM). Tap ``t``'s share of them is a
    matrix product each: the kernel gradient's ``kernel[t] = window_t(x)ᵀ · ct`` over all
    output positions, and the input gradient's ``ct · kernel[t]ᵀ`` added into the input
    positions the tap reads. One :func:`jax.lax.scan` over the taps computes both (W7
    forward+backward 4.5 ms, torch's 3.8; lower + compile 1.2–1.3× lax's, one loop body
    to compile where 27 unrolled taps took 2.6×). Per tap it holds one window and one
    product (the input's size each; lax's gradients hold transposed copies of the input
    and the cotangent): the input's zero padding is fused into each window's slice (its
    padding value is one XLA cannot prove loop-invariant, or it hoists the pad out of the
    loop as a padded copy of the input) and the tap's product into the accumulator's
    add. In channels_last the last spatial axis and the channels are one axis, so that
    every window and addition is 4-D (compiles faster, runs 1.7× faster on W7).

    ``forward`` also sums ``window_t(x) · kernel[t]``, the convolution itself, from the
    same windows: a transposed convolution's input gradient is the forward convolution
    of its cotangent, and its kernel gradient that convolution's kernel gradient
    (:func:`_subpixel_joint`).

    ``x`` and ``kernel`` may be :class:`jax.interpreters.ad.UndefinedPrimal` (only their
    shapes are read) where their own gradient is the one asked for. Returns ``(input's
    gradient, kernel's gradient, the convolution)``, each ``None`` unless asked for, the
    gradients in ``x``'s and ``kernel``'s dtypes, the convolution (and every partial sum)
    in :func:`_accumulation_dtype`.
    """
    rank, (channels, filters) = spec.rank, spec.kernel_shape[-2:]
    x_shape, x_dtype = tuple(x.aval.shape), x.aval.dtype
    kernel_shape, kernel_dtype = tuple(kernel.aval.shape), kernel.aval.dtype
    n, out, strides, dilation = x_shape[0], spec.output_spatial(), spec.strides, spec.dilation
    acc = _accumulation_dtype(spec)
    operands = jnp.promote_types(x_dtype, ct.dtype)
    last = spec.data_format == "channels_last"
    # channels_last with stride 1 on the last axis: (N, ..., W, C) viewed as
    # (N, ..., W * C), a bitcast, in which a window along W is one contiguous range.
    merged = last and strides[-1] == 1
    axes = tuple(range(1, rank + 1)) if last else tuple(range(2, rank + 2))
    unit = (1,) * (rank - 1) + (channels if merged else 1,)

    def view_shape(spatial: Sequence[int]) -> tuple[int, ...]:
        if merged:
            return (n, *spatial[:-1], spatial[-1] * channels)
        return (n, *spatial, channels) if last else (n, channels, *spatial)

    ndim = len(view_shape(out))

    def per_dim(values: Sequence[Any], fill: Any) -> list[Any]:
        """One entry per dimension of the view: ``values`` on the spatial axes, ``fill``
        elsewhere."""
        full = [fill] * ndim
        for axis, value in zip(axes, values):
            full[axis] = value
        return full

    # Tap t's window: the padded input from t * dilation, every stride-th element (pads
    # and offsets scaled by ``unit`` on the merged axis).
    spans = [(o - 1) * s + 1 for o, s in zip(out, strides)]
    x_pads = per_dim([(lo * u, hi * u, 0) for (lo, hi), u in zip(spec.padding, unit)],
                     (0, 0, 0))
    # Tap t's product lands on input s * o + t * dilation - lo: interleaved by the
    # strides and padded by the most any tap needs, then sliced at the tap's offset.
    p_lo = [max(0, (k - 1) * d - lo)
            for k, d, (lo, _) in zip(spec.kernel_size, dilation, spec.padding)]
    p_hi = [max(0, lo + length - span)
            for length, span, (lo, _) in zip(spec.spatial, spans, spec.padding)]
    p_pads = per_dim([(lo * u, hi * u, s - 1)
                      for lo, hi, s, u in zip(p_lo, p_hi, strides, unit)], (0, 0, 0))
    ct = ct.astype(operands)
    if last:
        ct = ct.reshape(-1, filters)  # (positions, F)
    contract = (0,) if last else (0, *range(2, rank + 2))
    taps = np.array(list(itertools.product(*map(range, spec.kernel_size))), np.int32)
    # Each tap's offsets in the view, per spatial axis (scan inputs: scalars in the body,
    # so that it holds lax primitives only — jnp arithmetic on them would add a nested
    # jit to trace and lower per operation).
    units = np.array(unit, np.int32)
    window_at = taps * np.array(dilation, np.int32) * units
    product_at = (np.array(p_lo) + np.array([lo for lo, _ in spec.padding])
                  - taps * np.array(dilation)).astype(np.int32) * units
    x_like = view_shape(spec.spatial)
    strided = per_dim(strides, 1)
    if not last:  # the products come out (N, *out, C); the view is (N, C, *out)
        to_first = (0, rank + 1, *range(1, rank + 1))

    def cast(a: Array, dtype: Any) -> Array:
        return a if a.dtype == dtype else lax.convert_element_type(a, dtype)

    def body(totals: tuple[Array | None, Array | None],
             tap: tuple[Array, Sequence[Array], Sequence[Array], Array | None]
             ) -> tuple[tuple[Array | None, Array | None], Array | None]:
        (total, value), (index, window_start, product_start, kernel_t) = totals, tap
        gradient = None
        if kernel_gradient or forward:
            # A padding value XLA cannot prove loop-invariant (it is 0): a constant one
            # has the pad hoisted out of the loop as a padded copy of the input. The
            # condition reads the tap's index, never negative: a tap's offsets may all be
            # one constant (a kernel one tap wide on that axis), which XLA would fold.
            zero = lax.convert_element_type(lax.lt(index, np.int32(0)), x_dtype)
            padded = lax.pad(lax.reshape(x, x_like), zero, x_pads)
            window = lax.dynamic_slice(padded, per_dim(window_start, np.int32(0)), view_shape(spans))
            if any(s > 1 for s in strides):
                window = lax.slice(window, (0,) * ndim, window.shape, strided)
            window = cast(window, operands)
            if last:
                window = lax.reshape(window, (window.size // channels, channels))
        if kernel_gradient:
            gradient = lax.dot_general(window, ct, ((contract, contract), ((), ())),
                                       precision=precision, preferred_element_type=acc)
        if forward:
            value = lax.add(value, lax.dot_general(
                window, cast(kernel_t, operands),
                (((window.ndim - 1 if last else 1,), (0,)), ((), ())),
                precision=precision, preferred_element_type=acc))
        if input_gradient:
            if kernel_gradient:
                # The kernel gradient's product before the input gradient's, so that the
                # latter reuses the window's buffer (XLA:CPU's scheduler may run them the
                # other way round, both buffers live: 2× the loop's temporaries, above
                # lax's; an optimization_barrier does not survive to its scheduler). A
                # select on an entry of the kernel gradient whose condition is never true
                # (no tap index is negative; a NaN alone never selects) is the dependency.
                entry = lax.reshape(lax.slice(gradient, (0, 0), (1, 1)), ())
                never = lax.bitwise_and(lax.ne(entry, entry), lax.lt(index, np.int32(0)))
                kernel_t = lax.select(lax.broadcast(never, kernel_t.shape),
                                      lax.full_like(kernel_t, 0), kernel_t)
            product = lax.dot_general(ct, cast(kernel_t, operands),
                                      ((((ct.ndim - 1) if last else 1,), (1,)), ((), ())),
                                      precision=precision, preferred_element_type=acc)
            product = (lax.reshape(product, view_shape(out)) if last
                       else lax.transpose(product, to_first))
            padded = lax.pad(product, np.zeros((), acc), p_pads)
            total = lax.add(total, lax.dynamic_slice(padded, per_dim(product_start, np.int32(0)),
                                                     x_like))
        return (total, value), gradient

    kernels = (jnp.reshape(kernel, (len(taps), channels, filters))
               if input_gradient or forward else None)
    # The value as the products lie: (positions, F) channels last, (N, *out, F) first.
    values = ((math.prod((n, *out)), filters) if last else (n, *out, filters))
    # The taps' indices a constant, not an iota (XLA:CPU writes an iota into a temporary
    # of its own: float16 W7-like calls' gradients 248 bytes above lax's, now 112, the
    # loop's state and counter).
    (total, value), gradients = lax.scan(
        body, (jnp.zeros(x_like, acc) if input_gradient else None,
               jnp.zeros(values, acc) if forward else None),
        (jnp.asarray(np.arange(len(taps), dtype=np.int32)),
         tuple(jnp.asarray(a) for a in window_at.T),
         tuple(jnp.asarray(a) for a in product_at.T), kernels))
    dx = total.reshape(x_shape).astype(x_dtype) if input_gradient else None
    dk = gradients.reshape(kernel_shape).astype(kernel_dtype) if kernel_gradient else None
    if forward:
        value = value.reshape(n, *out, filters) if last else jnp.moveaxis(value, -1, 1)
    return dx, dk, value


def _tap_loop_transposes(lhs: Callable[..., Array], rhs: Callable[..., Array]
                         ) -> tuple[Callable[..., Array], Callable[..., Array],
                                    Callable[..., tuple[Array, Array]]]:
    """:func:`_conv_primitive`'s ``lhs``, ``rhs`` and ``joint`` for a convolution whose
    gradients take :func:`_tap_loop` where :func:`_tap_loop_pays`, ``lhs`` and ``rhs``
    elsewhere.

    The input's gradient alone stays ``lhs``: XLA writes its convolution straight into
    the output, where the loop holds one tap's product besides (W7 0.05 → 0.50 MiB of
    temporaries, for 11.8 → 3.7 ms); with the kernel's, lax's temporaries are higher
    than the loop's (transposed copies of the input and the cotangent: W7 1.55 → 0.50).
    """

    def loop_rhs(ct: Array, x: Array, kernel: Any, *, spec: ConvSpec, precision: Any
                 ) -> Array:
        if not _tap_loop_pays(spec):
            return rhs(ct, x, kernel, spec=spec, precision=precision)
        return _tap_loop(ct, x, kernel, spec=spec, precision=precision,
                         input_gradient=False)[1]

    def joint(ct: Array, x: Array, kernel: Array, *, spec: ConvSpec, precision: Any
              ) -> tuple[Array, Array]:
        if not _tap_loop_pays(spec):
            return (lhs(ct, x, kernel, spec=spec, precision=precision),
                    rhs(ct, x, kernel, spec=spec, precision=precision))
        return _tap_loop(ct, x, kernel, spec=spec, precision=precision)[:2]

    return lhs, loop_rhs, joint


def width_fold(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any) -> Array:
    """A dense 3-D convolution as a 2-D one: the taps of the last spatial axis folded
    into the channels, that axis into the batch.

    XLA:CPU (jaxlib 0.10) has no fast 3-D convolution: its loop runs W7
    ((2, 16, 16, 16, 16) → 32, 3×3×3) at 12–16 % of the GEMM. Here one loop fusion cuts
    the ``k_w`` windows of the input along its last spatial axis ``W`` (each its own
    slice and zero pad, as :func:`_tap_window_plan` plans them) and lays them out as
    ``(N · W_out, D, H, k_w · C)``; the kernel ``(k_d, k_h, k_w, C, F)`` is then already
    the 2-D kernel ``(k_d, k_h, k_w · C, F)`` (a bitcast: no kernel reorder to compile);
    the 2-D convolution over ``(D, H)`` takes XLA:CPU's fast path; a second loop fusion
    moves ``W_out`` back (with the caller's bias add). Where :func:`eigen_crop` would pay
    for the 2-D convolution it is computed one row taller and cropped inside that
    fusion, on both cores. W7 forward 7.1–8.6 → 1.8 ms, lower + compile 1.3 × lax's.

    The cost is the folded input, ``k_w`` times the input's size, as forward temporaries
    (W7 2.6 MiB; the plain path has none); :func:`choose` takes this while that stays
    within :data:`MAX_WIDTH_FOLD_BYTES`. A bilinear primitive (:data:`_width_fold_p`)
    whose gradients are :func:`_tap_loop`'s where :func:`_tap_loop_pays` (both in one
    loop where both are asked for), lax's elsewhere (folded gradients would keep the
    folded input alive into the backward pass). Inside a derivative its value is XLA's
    convolution: the folded input and the 2-D output alone exceed lax's forward+backward
    temporaries (W7 2.6 against 1.6 MiB), so forward+backward is :func:`tap_loop`'s.
    """
    return _width_fold_p.bind(x, kernel, spec=spec, precision=precision)


def _width_fold_value(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any
                      ) -> Array:
    *_, w_axis = _spatial_axes(spec)
    channel = _channel_axis(spec)
    (*_, k_w), (*_, width) = spec.kernel_size, spec.spatial
    out = spec.output_spatial()
    # The last spatial axis alone, as a 1-D convolution, for the window plans.
    along_w = ConvSpec(rank=1, data_format="channels_last",
                       input_shape=(1, width, spec.channels), kernel_shape=(k_w, 1, 1),
                       strides=spec.strides[-1:], padding=spec.padding[-1:],
                       dilation=spec.dilation[-1:])
    windows = []
    for j in range(k_w):
        plan = _tap_window_plan(x.shape, (w_axis,), (j,), along_w, out[-1:])
        if plan is None:  # every element of this window is padding
            shape = list(x.shape)
            shape[w_axis] = out[-1]
            windows.append(jnp.zeros(shape, x.dtype))
            continue
        (start, limit, step), pads = plan
        window = x if start is None else lax.slice(x, start, limit, step)
        windows.append(window if pads is None else
                       lax.pad(window, np.zeros((), x.dtype), pads))
    # Channel j * C + c is tap j's channel c: (N, W_out, D, H, k_w * C), one batch axis.
    folded = lax.concatenate(windows, channel)
    d_axis, h_axis = _spatial_axes(spec)[:2]
    folded = jnp.transpose(folded, (0, w_axis, d_axis, h_axis, channel))
    n, d, h = x.shape[0], x.shape[d_axis], x.shape[h_axis]
    folded = folded.reshape(n * out[-1], d, h, k_w * spec.channels)
    filters = spec.kernel_shape[-1]
    plane = ConvSpec(rank=2, data_format="channels_last", input_shape=folded.shape,
                     kernel_shape=(*spec.kernel_size[:2], k_w * spec.channels, filters),
                     strides=spec.strides[:2], padding=spec.padding[:2],
                     dilation=spec.dilation[:2], dtype=spec.dtype,
                     preferred_element_type=spec.preferred_element_type)
    # A crop fuses into the transpose below, as eigen_crop's into its bias add.
    conv2d = _eigen_crop_value if _eigen_runs_faster(plane) else _xla_conv
    y = conv2d(folded, kernel.reshape(plane.kernel_shape), spec=plane, precision=precision)
    y = y.reshape(n, out[-1], *out[:2], filters)  # (N, W_out, D_out, H_out, F)
    order = (0, 2, 3, 1, 4) if spec.data_format == "channels_last" else (0, 4, 2, 3, 1)
    return jnp.transpose(y, order)


_width_fold_p = _conv_primitive("kconv_width_fold", _width_fold_value, _xla_conv,
                                *_tap_loop_transposes(_plain_input_gradient,
                                                      _plain_kernel_gradient),
                                derivative_value=_xla_conv)


def tap_loop(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any) -> Array:
    """A dense 3-D convolution that :func:`width_fold` does not take (its folded 2-D
    form would be off XLA:CPU's fast path, or too big): XLA's convolution, with
    :func:`_tap_loop`'s gradients (:data:`_tap_loop_p`)."""
    return _tap_loop_p.bind(x, kernel, spec=spec, precision=precision)


#: XLA's convolution as the value and tangents, :func:`_tap_loop`'s gradients.
_tap_loop_p = _conv_primitive("kconv_tap_loop", _xla_conv, _xla_conv,
                              *_tap_loop_transposes(_plain_input_gradient,
                                                    _plain_kernel_gradient))


def space_to_batch(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any) -> Array:
    """A dilated convolution (stride 1 on its dilated axes) with XLA's value (and tangents)
    and gradients through its space-to-batch form (the GPU's rule).

    With dilation ``d`` output ``q·d + r`` reads inputs ``(q + j)·d + r`` only: phase
    ``r`` of the padded input (every ``d``-th element from ``r``) convolved with the
    kernel undilated gives phase ``r`` of the output (:func:`_space_to_batch_value`: the
    input padded, its phases moved into the batch, one undilated convolution, the
    output's phases interleaved back). The transposes of that form are undilated
    convolutions too; a bilinear primitive (:func:`_conv_primitive`) takes them as its
    gradients and keeps XLA's dilated convolution as its value.

    XLA:GPU (jax 0.11, cuDNN) computes a dilated convolution's gradients on slow kernels.
    On an H200 at 8× the benchmark batch, forward+backward, XLA → this, float32 /
    bfloat16: W6 (causal Conv1D, kernel 3, dilation 4) 4.7 → 0.47 / 0.86 → 0.34 ms;
    Conv2D 3×3 dilation 2 on (128, 32, 32, 64) → 64, 2.9 → 0.49 / 0.82 → 0.37; Conv3D
    3×3×3 dilation 2 on (16, 16, 16, 16, 16) → 32, 2.0 → 0.48 / 1.15 → 0.38. W6's peak
    memory 0.68 × lax's in float32 but 1.03 × in bfloat16 (the phase reorders of the input
    and the cotangent, where bfloat16's dilated kernels need little workspace): the GPU
    rule takes this for float32 only. The phase form's forward ran 1.0–1.13× XLA's (its
    reorders), hence XLA's value. On XLA:CPU the form does not pay (W6 2.5 / 8.8 → 2.9 /
    9.0 ms forward / forward+backward; the 2-D one 13 / 42 → 39 / 96 ms), so the CPU
    rule keeps XLA's (3-D takes ``width_fold``; its gradients in this form, Conv3D 3×3×3
    dilation 2 on (2, 16, 16, 16, 16) → 32: 88 → 33 ms, but 1.0 MiB of temporaries
    against lax's 0.05, over the memory bar).

    Example:
        >>> spec = ConvSpec(1, "channels_last", (1, 6, 1), (2, 1, 1), (1,), ((2, 0),), (2,))
        >>> x = jnp.arange(1.0, 7.0).reshape(1, 6, 1)
        >>> jax.grad(lambda k: space_to_batch(x, k, spec=spec, precision=None).sum())(
        ...     jnp.ones((2, 1, 1)))[:, 0, 0]
        Array([10., 21.], dtype=float32)
    """
    return _space_to_batch_p.bind(x, kernel, spec=spec, precision=precision)


def _space_to_batch_value(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any
                          ) -> Array:
    """:func:`space_to_batch`'s form: the input padded (the call's padding, then up to a
    multiple of ``d``), its phases moved into the batch (``N · prod(d)``), convolved with
    no padding or dilation on those axes, the output's phases interleaved back and
    cropped to the call's length; undilated axes are left to the convolution."""
    axes = _spatial_axes(spec)
    dilated = {axis: d for axis, d in zip(axes, spec.dilation) if d > 1}
    x = _pad_spatial(x, axes, [(lo, hi + -(n + lo + hi) % d) if d > 1 else (0, 0)
                               for n, d, (lo, hi) in zip(spec.spatial, spec.dilation,
                                                         spec.padding)])
    # Each dilated axis (P,) split into (P / d, d); the d's moved next to the batch.
    split, phases = [], []
    for axis, size in enumerate(x.shape):
        if axis in dilated:
            split += [size // dilated[axis], dilated[axis]]
            phases.append(len(split) - 1)
        else:
            split.append(size)
    rest = [axis for axis in range(1, len(split)) if axis not in phases]
    x = jnp.transpose(x.reshape(split), (0, *phases, *rest))
    x = x.reshape(-1, *x.shape[1 + len(phases):])
    undilated = dataclasses.replace(
        spec, input_shape=x.shape, dilation=(1,) * spec.rank,
        padding=tuple((0, 0) if d > 1 else pad for d, pad in zip(spec.dilation,
                                                                spec.padding)))
    y = _xla_conv(x, kernel, spec=undilated, precision=precision)
    # (N, *d, ...) -> each phase axis after its axis, merged with it, then cropped.
    m = len(dilated)
    y = y.reshape(spec.input_shape[0], *dilated.values(), *y.shape[1:])
    order, merged = [0], [y.shape[0]]
    for axis in range(1, y.ndim - m):
        order.append(axis + m)
        merged.append(y.shape[axis + m])
        if axis in dilated:
            order.append(1 + list(dilated).index(axis))
            merged[-1] *= dilated[axis]
    y = jnp.transpose(y, order).reshape(merged)
    return lax.slice(y, (0,) * y.ndim, _output_shape(y, spec, spec.output_spatial()))


_space_to_batch_p = _conv_primitive("kconv_space_to_batch", _xla_conv, _xla_conv,
                                    *_transposes(_space_to_batch_value))


_CONV_LOWERINGS: dict[str, Callable[..., Array]] = {
    "pointwise_dot": pointwise_dot,
    "space_to_batch": space_to_batch,  # the GPU's
    "depthwise_taps": depthwise_taps,
    "block_diagonal": block_diagonal,
    "grouped_split": grouped_split,
    "eigen_crop": eigen_crop,
    "width_fold": width_fold,
    "tap_loop": tap_loop,
}


# --- transposed convolution ----------------------------------------------------------

def _phase_offsets(kernel_size: int, stride: int, pad_lo: int) -> tuple[int, int]:
    """One axis of the sub-pixel form of a transposed convolution (dilation 1).

    Tap ``j`` of input ``i`` lands on output ``o = i * s + j + p`` with
    ``p = pad_lo - (k - 1)``. Output phase ``r = o mod s`` at ``o = q * s + r`` thus reads
    input ``q + m`` with ``m = (r - j - p) / s`` for every tap ``j`` where that division
    is exact: a stride-1 correlation per phase, over offsets ``m``.

    Returns:
      ``(m_lo, T)``: the smallest offset and the number of offsets, over all phases.

    Example:
        >>> _phase_offsets(3, 2, 2)   # Conv2DTranspose(k=3, s=2, "same"): y[2q] uses x[q-1], x[q]
        (-1, 2)
    """
    p = pad_lo - (kernel_size - 1)
    offsets = [-((j + p) // stride) for j in range(kernel_size)]
    return min(offsets), max(offsets) - min(offsets) + 1


def subpixel_transpose(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any
                       ) -> Array:
    """A transposed convolution (dilation 1) as one bilinear primitive whose value and
    tangents are XLA's plain form (3-D: the sub-pixel form, :func:`_phase_conv`,
    :func:`_depth_to_space`), and whose transposes are the fast convolutions below.

    XLA:CPU computes the plain form — a stride-1 convolution of the input dilated by the
    strides (``lhs_dilation``) — fast forward, but its kernel gradient, JAX's transpose of
    it, on its generic loop (W5: forward 1.2 ms, forward+backward 43 ms). The transposes
    here (:func:`_conv_transpose_lhs`, :func:`_conv_transpose_rhs`) are the convolutions
    of the strided convolution this one is the input gradient of: lax's strided
    convolution of the cotangent for the input, and that convolution's own kernel
    gradient (``rhs_dilation``) for the kernel, both fast on XLA:CPU in 1-D and 2-D
    (forward+backward, plain → these: W5 43 → 5.3–6.5 ms; 1-D (16, 256, 64) → 64 filters,
    kernel 3, stride 2: 30 → 2.6 ms).
    In 3-D, float32, both run on XLA:CPU's generic loop; there the two are one
    :func:`_tap_loop` (:func:`_subpixel_joint`).
    A :func:`jax.custom_vjp` would give the same reverse mode but no forward mode, and
    ``jax.custom_jvp`` lets JAX transpose the tangent it is given; a primitive with
    :func:`jax.interpreters.ad.defbilinear` has the value, both tangents and both
    transposes chosen here, and a batching rule, so ``jvp``, ``vmap``, ``grad`` of
    ``grad`` and ``remat`` all work.
    """
    return _conv_transpose_p.bind(x, kernel, spec=spec, precision=precision)


def _conv_transpose_value(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any
                          ) -> Array:
    if spec.rank == 3:
        # 3-D: XLA:CPU's input-dilated 3-D convolution is far slower than the sub-pixel
        # form's stride-1 one (X2, (2, 8, 8, 8, 32) -> 16, 3x3x3, stride 2: 42 -> 0.7 ms);
        # in 1-D and 2-D XLA's forward is as fast or faster (W5 0.7 vs 1.5 ms).
        plan = _subpixel_plan(spec)
        return _depth_to_space(_phase_conv(x, kernel, spec, plan, precision), spec, plan)
    return _xla_conv_transpose(x, kernel, spec=spec, precision=precision)


def _conv_transpose_lhs(ct: Array, x: Any, kernel: Array, *, spec: ConvSpec,
                        precision: Any) -> Array:
    """The input's cotangent: JAX's transpose of the plain form in the input, lax's
    strided convolution of the cotangent (XLA:CPU's fast path)."""
    like = jax.ShapeDtypeStruct(x.aval.shape, x.aval.dtype)
    return _strided_of_cotangent(ct, kernel, like, spec=spec, precision=precision)


def _strided_of_cotangent(ct: Array, kernel: Array, x_like: jax.ShapeDtypeStruct, *,
                          spec: ConvSpec, precision: Any) -> Array:
    """``S(ct, kernel)``: JAX's transpose, in the input, of the plain form — the strided
    convolution whose input gradient the transposed convolution is (linear in both)."""
    return jax.linear_transpose(
        lambda z: _xla_conv_transpose(z, kernel, spec=spec, precision=precision),
        x_like)(ct)[0]


def _conv_transpose_rhs(ct: Array, x: Array, kernel: Any, *, spec: ConvSpec,
                        precision: Any) -> Array:
    """The kernel's cotangent.

    ``<ct, T(x, k)> = <S(ct, k), x>`` where ``S`` is the strided convolution whose input
    gradient ``T`` is, so the kernel gradient is ``S``'s kernel gradient with cotangent
    ``x``: a convolution with ``rhs_dilation`` = strides, which XLA:CPU runs fast in 2-D
    (W5 forward+backward 6.6 → 5.3 ms against the sub-pixel phase convolution's gradient)
    and which computes exactly the kernel's entries: temporaries lax's, where the phase
    layout took ``(s·T / k)^N`` of the kernel (W5 1.02 → 1.00×, X2 1.11 → 1.00×). In 1-D
    and 3-D the phase gradient ran faster (1-D (16, 256, 64) → 64: 2.0 vs 2.6 ms; X2, on
    XLA:CPU's generic 3-D loop: 4.7 vs 8.3 ms, lax's 12.6) but over lax's temporaries.
    Grouped, the sub-pixel form's (JAX's transpose of it): XLA's dilated grouped kernel
    gradient is its grouped loop, while the phase convolution of a depthwise-transposed
    one is ``"depthwise_taps"``.
    """
    like = jax.ShapeDtypeStruct(kernel.aval.shape, kernel.aval.dtype)
    if spec.groups == 1:
        x_like = jax.ShapeDtypeStruct(x.shape, x.dtype)
        return jax.linear_transpose(
            lambda k: _strided_of_cotangent(ct, k, x_like, spec=spec, precision=precision),
            like)(x)[0]
    plan = _subpixel_plan(spec)
    return jax.linear_transpose(
        lambda k: _depth_to_space(_phase_conv(x, k, spec, plan, precision), spec, plan),
        like)(ct)[0]


def _subpixel_rhs(ct: Array, x: Array, kernel: Any, *, spec: ConvSpec, precision: Any
                  ) -> Array:
    """:func:`subpixel_transpose`'s kernel cotangent outside :func:`_subpixel_loop_pays`
    (16-bit 3-D, 1-D, 2-D, grouped): :func:`_conv_transpose_rhs`, but in 3-D with at most
    :data:`_PLAIN_KERNEL_GRADIENT_MAX_CHANNELS` input channels the plain form's (JAX's
    transpose of XLA's input-dilated convolution).

    In 3-D both run on XLA:CPU's generic loop, and which is faster turns on the input
    channels (kernel gradient alone, stride 2, 3×3×3, plain → strided form, ms;
    ``benchmarks/RULE_SWEEP.md`` T4 and a side probe): 8 → 8 0.95 → 2.44, 16 → 16
    3.8 → 7.2, 16 → 32 6.9 → 8.5, 16 → 64 13.6 → 16.5; 24 → 16 5.1 → 4.4, 32 → 16
    6.8 → 4.4, 32 → 64 27 → 17, 48 → 48 30 → 12.7, 128 → 16 26.8 → 4.9. Temporaries
    equal in every one. In 1-D and 2-D the strided form wins at every size measured.
    """
    if (spec.rank == 3 and spec.groups == 1
            and spec.channels <= _PLAIN_KERNEL_GRADIENT_MAX_CHANNELS):
        return _plain_transpose_kernel_gradient(ct, x, kernel, spec=spec,
                                                precision=precision)
    return _conv_transpose_rhs(ct, x, kernel, spec=spec, precision=precision)


#: See :func:`_subpixel_rhs`.
_PLAIN_KERNEL_GRADIENT_MAX_CHANNELS = 16

_plain_transpose_kernel_gradient = _transposes(_xla_conv_transpose)[1]

def _strided_spec(spec: ConvSpec, ct: Any) -> ConvSpec:
    """The spec of ``S``, the strided convolution whose input gradient the transposed
    convolution ``spec`` is: from the transposed output ``ct``'s shape back to the
    input's, the kernel ``(*k, filters, C)`` read as ``(*k, in, out)``, and the padding
    that makes ``S``'s transpose exactly ``spec``'s (``k - 1`` less each side's)."""
    return dataclasses.replace(
        spec, input_shape=tuple(ct.shape), strides=spec.strides,
        padding=tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in
                      zip(spec.kernel_size, spec.padding)))


def _subpixel_loop_pays(spec: ConvSpec) -> bool:
    """Whether :func:`subpixel_transpose`'s kernel gradient (and, with it, its input
    gradient) takes :func:`_tap_loop`: where ``S`` (:func:`_strided_spec`) would, but
    strided — 3-D, dense, float32 or float16 (X2 in float16 7.7 → 1.3 ms at 1.3 × the
    compile; bfloat16 1.6 ×)."""
    return (spec.rank == 3 and spec.groups == 1 and all(d == 1 for d in spec.dilation)
            and _cpu_float(spec, _TAP_LOOP_FLOATS))


def _subpixel_loop_rhs(ct: Array, x: Array, kernel: Any, *, spec: ConvSpec, precision: Any
                       ) -> Array:
    """:func:`subpixel_transpose`'s kernel cotangent: ``S``'s kernel gradient with
    cotangent ``x`` (:func:`_conv_transpose_rhs`), in 3-D as :func:`_tap_loop`'s."""
    if not _subpixel_loop_pays(spec):
        return _subpixel_rhs(ct, x, kernel, spec=spec, precision=precision)
    return _tap_loop(x, ct, kernel, spec=_strided_spec(spec, ct), precision=precision,
                     input_gradient=False)[1]


def _subpixel_joint(ct: Array, x: Array, kernel: Array, *, spec: ConvSpec, precision: Any
                    ) -> tuple[Array, Array]:
    """Both of :func:`subpixel_transpose`'s cotangents: ``S(ct, kernel)`` and ``S``'s
    kernel gradient with cotangent ``x`` read the same strided windows of ``ct``, so in
    3-D one :func:`_tap_loop` computes both (``forward``)."""
    if not _subpixel_loop_pays(spec):
        return (_conv_transpose_lhs(ct, x, kernel, spec=spec, precision=precision),
                _subpixel_rhs(ct, x, kernel, spec=spec, precision=precision))
    _, kernel_ct, x_ct = _tap_loop(x, ct, kernel, spec=_strided_spec(spec, ct),
                                   precision=precision, input_gradient=False, forward=True)
    return x_ct.astype(x.dtype), kernel_ct


_conv_transpose_p = _conv_primitive("kconv_conv_transpose", _conv_transpose_value,
                                    _xla_conv_transpose, _conv_transpose_lhs,
                                    _subpixel_loop_rhs, _subpixel_joint)


@dataclasses.dataclass(frozen=True)
class _SubpixelPlan:
    """Per spatial axis: ``(m_lo, T)`` (:func:`_phase_offsets`), the input's ``(lo, hi)``
    padding (negative: cropping) for the phase convolution, its output length ``Q`` and
    the transposed convolution's output length."""

    offsets: tuple[tuple[int, int], ...]
    input_padding: tuple[tuple[int, int], ...]
    quotients: tuple[int, ...]
    lengths: tuple[int, ...]


def _subpixel_plan(spec: ConvSpec) -> _SubpixelPlan:
    offsets, in_pads, quotients, lengths = [], [], [], []
    for n, k, s, (lo, hi) in zip(spec.spatial, spec.kernel_size, spec.strides,
                                 spec.padding):
        m_lo, taps = _phase_offsets(k, s, lo)
        length = (n - 1) * s + 1 + lo + hi - (k - 1)
        q = -(-length // s)
        offsets.append((m_lo, taps))
        quotients.append(q)
        lengths.append(length)
        # Output q reads inputs q + m_lo … q + m_lo + T - 1; outside [0, n) they are zeros.
        in_pads.append((-m_lo, q - 1 + m_lo + taps - 1 - (n - 1)))
    return _SubpixelPlan(tuple(offsets), tuple(in_pads), tuple(quotients), tuple(lengths))


def _phase_conv(x: Array, kernel: Array, spec: ConvSpec, plan: _SubpixelPlan,
                precision: Any) -> Array:
    """The sub-pixel form's stride-1 convolution: ``(n, *Q, prod(s) * filters)`` phases
    (channels_first: ``(n, prod(s) * filters, *Q)``)."""
    # Negative pads crop the input first; the rest is the convolution's own padding.
    x = _pad_spatial(x, _spatial_axes(spec),
                     [(min(lo, 0), min(hi, 0)) for lo, hi in plan.input_padding])
    # Not width_fold: its two loop fusions come on top of the sub-pixel form's own two
    # (the phase kernel, the depth-to-space), and XLA:CPU compiles them side by side on
    # two threads at most (X2 forward 1.6 -> 0.85 ms, but 1.15 -> 1.7-1.8x lax's lower +
    # compile).
    return _cpu_conv(x, _phase_kernel(kernel, spec, plan.offsets), _phase_spec(spec, plan),
                     precision, fold=False)


def _phase_spec(spec: ConvSpec, plan: _SubpixelPlan) -> ConvSpec:
    """The :class:`ConvSpec` of :func:`_phase_conv`'s forward convolution (grouped as the
    transposed one), on the input after its cropping."""
    rank, axes = spec.rank, _spatial_axes(spec)
    shape = list(spec.input_shape)
    for axis, (lo, hi) in zip(axes, plan.input_padding):
        shape[axis] += min(lo, 0) + min(hi, 0)
    taps = tuple(t for _, t in plan.offsets)
    per_group = math.prod(spec.strides) * spec.kernel_shape[-2]
    return ConvSpec(rank=rank, data_format=spec.data_format, input_shape=tuple(shape),
                    kernel_shape=taps + (spec.channels // spec.groups,
                                         spec.groups * per_group),
                    strides=(1,) * rank,
                    padding=tuple((max(lo, 0), max(hi, 0)) for lo, hi in plan.input_padding),
                    dilation=(1,) * rank, groups=spec.groups, dtype=spec.dtype,
                    preferred_element_type=spec.preferred_element_type)


def _phase_kernel(kernel: Array, spec: ConvSpec, offsets: Sequence[tuple[int, int]]
                  ) -> Array:
    """``(*k, filters, C)`` → the forward kernel ``(*T, C, prod(s) * filters)`` whose output
    channel ``(r_1, …, r_N, f)`` holds phase ``r``'s taps, zeros where it has none; with
    groups, ``(*k, F // g, C)`` → ``(*T, C // g, g * prod(s) * F // g)``, output channel
    ``(j, r_1, …, r_N, f)`` (each group's phases contiguous, as lax groups them).

    Along one axis, phase ``r`` applies at offset index ``t`` the tap
    ``j = b + s * (T - 1 - t) + r`` (``b`` a constant): a window of ``s * T`` taps of the
    zero-extended kernel, reshaped to ``(T, s)`` and reversed along ``T`` — pads, reshapes
    and a reverse, whose derivatives are as cheap (a gather's would be a scatter).
    """
    rank, groups = spec.rank, spec.groups
    channels = kernel.shape[-1]
    for axis, (k, s, (lo, _), (m_lo, taps)) in enumerate(zip(
            spec.kernel_size, spec.strides, spec.padding, offsets)):
        b = -(lo - (k - 1)) - s * m_lo - s * (taps - 1)
        # Keep taps b … b + s * T - 1 (zeros outside the kernel), as (T, s), t reversed.
        a = 2 * axis  # axes before this one are already split in two
        kernel = _pad_spatial(kernel, (a,), ((-b, b + s * taps - k),))
        kernel = kernel.reshape(kernel.shape[:a] + (taps, s) + kernel.shape[a + 1:])
        kernel = lax.rev(kernel, (a,))
    # (T1, s1, …, TN, sN, F/g, g, C/g) -> (T1 … TN, C/g, g, s1 … sN, F/g)
    kernel = kernel.reshape(kernel.shape[:-1] + (groups, channels // groups))
    perm = (*range(0, 2 * rank, 2), 2 * rank + 2, 2 * rank + 1, *range(1, 2 * rank, 2),
            2 * rank)
    kernel = jnp.transpose(kernel, perm)
    return kernel.reshape(*kernel.shape[:rank], channels // groups, -1)


def _depth_to_space(y: Array, spec: ConvSpec, plan: _SubpixelPlan) -> Array:
    """Phases ``(n, *Q, (g, *s, F // g))`` → ``(n, *(Q * s), F)`` cropped to the output
    lengths (channels_first: ``(n, (g, *s, F // g), *Q)`` → ``(n, F, *(Q * s))``)."""
    rank, strides, quotients, groups = spec.rank, spec.strides, plan.quotients, spec.groups
    n, per_group = y.shape[0], spec.kernel_shape[-2]
    filters = groups * per_group
    cf = spec.data_format == "channels_first"
    if cf:
        y = y.reshape(n, groups, *strides, per_group, *quotients)
        # (n, g, r..., F/g, q...) -> (n, g, F/g, q1, r1, q2, r2, ...)
        perm = [0, 1, rank + 2] + [a for i in range(rank) for a in (rank + 3 + i, 2 + i)]
    else:
        y = y.reshape(n, *quotients, groups, *strides, per_group)
        # (n, q..., g, r..., F/g) -> (n, q1, r1, q2, r2, ..., g, F/g)
        perm = [0] + [a for i in range(rank) for a in (1 + i, 2 + rank + i)] + [
            1 + rank, 2 + 2 * rank]
    y = jnp.transpose(y, perm)
    full = [q * s for q, s in zip(quotients, strides)]
    y = y.reshape(n, filters, *full) if cf else y.reshape(n, *full, filters)
    if tuple(full) != plan.lengths:
        limit = list(y.shape)
        first = 2 if cf else 1
        for i, length in enumerate(plan.lengths):
            limit[first + i] = length
        y = lax.slice(y, (0,) * y.ndim, limit)
    return y


def strided_dual(x: Array, kernel: Array, *, spec: ConvSpec, precision: Any) -> Array:
    """A transposed convolution with XLA's value (and tangents) and the transposes of
    :func:`subpixel_transpose` (the GPU's rule; dense, dilation 1).

    Its kernel gradient is the kernel gradient of the strided convolution it is the input
    gradient of (:func:`_conv_transpose_rhs`), which cuDNN runs on its backward-filter
    kernels; JAX's transpose of the plain form, a kernel gradient of the input-dilated
    convolution, XLA:GPU runs far slower (H200, 8× the batch, forward+backward, lax →
    this, float32 / bfloat16: W5 0.90 → 0.37 / 0.60 → 0.34 ms, X2 2.05 → 0.40 / 1.21 →
    0.41 ms; peak memory 0.09–0.51 × lax's). The forward is XLA's (cuDNN's backward-data
    kernel): lax's program.

    Example:
        >>> spec = ConvSpec(1, "channels_last", (1, 2, 1), (1, 1, 1), (2,), ((0, 1),), (1,))
        >>> strided_dual(jnp.array([[[1.0], [2.0]]]), jnp.ones((1, 1, 1)), spec=spec,
        ...              precision=None)[0, :, 0]
        Array([1., 0., 2., 0.], dtype=float32)
    """
    return _strided_dual_p.bind(x, kernel, spec=spec, precision=precision)


_strided_dual_p = _conv_primitive("kconv_strided_dual", _xla_conv_transpose,
                                  _xla_conv_transpose, _conv_transpose_lhs,
                                  _conv_transpose_rhs)


_TRANSPOSE_LOWERINGS: dict[str, Callable[..., Array]] = {
    "subpixel_transpose": subpixel_transpose,
    "strided_dual": strided_dual,  # the GPU's
    # Each group a dense transposed convolution on its slice (kernel[..., j * C/g:…]).
    "grouped_split": functools.partial(grouped_split, lower=_cpu_conv_transpose),
}


# --- upsampling ----------------------------------------------------------------------

def bilinear_stencil(x: Array, *, spec: UpsampleSpec, plain: Callable[[Array], Array]
                     ) -> Array:
    """Linear upsampling by integer factors as the fixed two-tap stencil per axis,
    differentiated through ``plain`` (``jax.image.resize``).

    Equal to ``jax.image.resize(..., "bilinear", antialias=False)`` with half-pixel
    centres: output ``f * j + r`` samples input ``j + t_r``, ``t_r = (r + 0.5) / f - 0.5``,
    from ``x[j]`` and its neighbour towards ``t_r``; at the edges the outside neighbour's
    weight goes to the edge sample (``resize`` renormalises its weights the same way).
    ``resize`` contracts with a dense ``(f * n, n)`` weight matrix per axis, which XLA:CPU
    runs slowly forward (W8 6–30 → 1.7–4 ms), but whose transpose it runs faster than the
    stencil's (interleaving slices), so the tangent of this linear map is ``plain``'s;
    inside a derivative the value is ``plain``'s too: the stencil's first axis (an
    intermediate half the output's size) would sit beside the transpose's copy of the
    cotangent (W8 forward + backward 20 → 24 MiB of temporaries).
    """
    return _stencil_resize_derivative(x, spec, plain)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _stencil_resize_derivative(x: Array, spec: UpsampleSpec,
                               plain: Callable[[Array], Array]) -> Array:
    dtype = spec.dtype if spec.dtype.itemsize >= 4 else np.dtype(np.float32)
    y = x.astype(dtype)
    for axis, factor in zip(spec.axes, spec.factors):
        if factor > 1:
            y = _linear_upsample_axis(y, axis, factor)
    return y.astype(spec.dtype)


@_stencil_resize_derivative.defjvp
def _stencil_resize_jvp(spec: UpsampleSpec, plain: Callable[[Array], Array],
                        primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
    return jax.jvp(plain, primals, tangents)


def _linear_upsample_axis(x: Array, axis: int, factor: int) -> Array:
    n = x.shape[axis]
    first, last = lax.slice_in_dim(x, 0, 1, axis=axis), lax.slice_in_dim(x, n - 1, n,
                                                                          axis=axis)
    before = lax.concatenate([first, lax.slice_in_dim(x, 0, n - 1, axis=axis)], axis)
    after = lax.concatenate([lax.slice_in_dim(x, 1, n, axis=axis), last], axis)
    phases = []
    for r in range(factor):
        t = (r + 0.5) / factor - 0.5
        if t < 0:
            phases.append((1 + t) * x + (-t) * before)
        elif t > 0:
            phases.append((1 - t) * x + t * after)
        else:
            phases.append(x)
    y = jnp.stack(phases, axis=axis + 1)
    shape = list(x.shape)
    shape[axis] = n * factor
    return y.reshape(shape)
