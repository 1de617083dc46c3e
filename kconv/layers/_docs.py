"""Docstrings of the generated rank classes, assembled from one set of argument texts so
the 1-D, 2-D and 3-D aliases of a family document the same thing in the same words."""

from __future__ import annotations

from collections.abc import Sequence

_ARGS = {
    "filters": "number of output channels.",
    "lora_rank": ("``None`` or the rank of Keras 3's LoRA update of the kernel "
                  "(keyword-only; adds ``lora_kernel_a``/``lora_kernel_b``, freezes "
                  "``kernel``; see ``enable_lora``)."),
    "lora_alpha": ("LoRA scale numerator: the update is ``lora_alpha / lora_rank * A @ B``; "
                   "``None`` means ``lora_rank`` (keyword-only)."),
    "kernel_size": "int or tuple of N ints: the window size.",
    "strides": "int or tuple of N ints, default 1.",
    "padding": ('``"valid"`` (no padding) or ``"same"`` (output length ``ceil(n / '
                's)``, the odd pad at the end as TF/XLA); any case.'),
    "padding_causal": ('``"valid"``, ``"same"`` (output length ``ceil(n / s)``, the odd '
                       'pad at the end as TF/XLA) or ``"causal"`` (left pad '
                       '``dilation * (kernel - 1)``: ``output[t]`` never sees '
                       '``input[t + 1:]``); any case.'),
    "padding_causal_transposed": (
        '``"valid"`` (the full output), ``"same"`` (output length ``n * s``, Keras\'s '
        'crop) or, beyond Keras, ``"causal"`` (the first ``n * s`` positions of the full '
        "output: ``output[t]`` depends only on ``input[:t // s + 1]``, as streaming audio "
        "models' causal transposed convolution); any case."),
    "padding_explicit": ("Beyond Keras, explicit amounts: an int (every side), a tuple of N "
                         "ints (symmetric per axis) or N ``(lo, hi)`` pairs (1-D: "
                         "``((lo, hi),)``; a bare ``(lo, hi)`` is refused as ambiguous); "
                         "stored as N ``(lo, hi)`` pairs."),
    "padding_explicit_transposed": (
        "Beyond Keras, explicit amounts (PyTorch's ``ConvTranspose`` ``padding``): an int "
        "(every side), a tuple of N ints (symmetric per axis) or N ``(lo, hi)`` pairs "
        "(1-D: ``((lo, hi),)``), cropped off the ends of the full (``valid``) output: the "
        "VJP of the forward convolution padded by them; stored as N ``(lo, hi)`` pairs."),
    "padding_mode": ('what the padding holds (beyond Keras; PyTorch\'s names, '
                     'keyword-only): ``"zeros"`` (default), ``"reflect"`` (mirrored, the '
                     'edge not repeated: ``np.pad`` ``"reflect"``), ``"replicate"`` (the '
                     'edge repeated: ``"edge"``) or ``"circular"`` (wrapped: ``"wrap"``); '
                     "the amounts are ``padding``'s. With ``causal``, only ``zeros`` and "
                     "``replicate`` keep ``output[t]`` blind to ``input[t + 1:]``."),
    "padding_mode_transposed": ('only ``"zeros"`` (keyword-only; as PyTorch: a transposed '
                                "convolution's padding crops its output, there is no "
                                "input border to reflect or wrap)."),
    "output_padding": ("``None`` or an int / tuple of N ints, each below the stride: the "
                       "extra length at the end of each spatial axis (Keras's rule). With "
                       "explicit ``padding``, PyTorch's: ``None`` means 0, and each may "
                       "reach below ``max(stride, dilation)``."),
    "data_format": ('``"channels_last"`` or ``"channels_first"``; ``None`` resolves now '
                    "to :func:`kconv.config.image_data_format`."),
    "dilation_rate": "int or tuple of N ints, default 1 (atrous convolution).",
    "groups": "number of channel groups; ``filters`` and the input channels divide by it.",
    "groups_transposed": ("number of channel groups (beyond Keras, as PyTorch's "
                          "``ConvTranspose``; keyword-only, default 1): the VJP of the "
                          "grouped forward convolution from ``filters`` to the input "
                          "channels; both divide by it, and input group ``j`` feeds only "
                          "output group ``j``."),
    "depth_multiplier": "number of depthwise output channels per input channel.",
    "activation": ("a Keras activation name, a callable, or ``None`` (linear); applied "
                   "after the bias, on the whole output."),
    "use_bias": "whether to add a bias (default ``True``).",
    "initializer": "a Keras initializer name, object, config dict or callable.",
    "regularizer": ("``None``, a Keras regularizer name, object, config dict or callable; "
                    "see :meth:`regularization_losses`."),
    "activity_regularizer": ("penalty on the output, divided by the batch size (Keras 3); "
                             "see :meth:`regularization_losses`."),
    "constraint": ("``None``, a Keras constraint name, object, config dict or callable; "
                   "applied by :meth:`constrain`."),
    # The reshaping layers (Cropping, ZeroPadding, UpSampling); see reshaping_doc.
    "cropping": ("an int (the same at both ends of every spatial axis), a tuple of N ints "
                 "(symmetric per axis) or a tuple of N entries each an int or a ``(lo, "
                 "hi)`` pair; stored as N ``(lo, hi)`` pairs. Each axis must keep at least "
                 "one element."),
    "cropping_1d": ("an int (the same at both ends) or a ``(lo, hi)`` pair, trimmed off "
                    "the start and the end of the steps axis; stored as ``(lo, hi)``."),
    "zero_padding": ("an int (the same at both ends of every spatial axis), a tuple of N "
                     "ints (symmetric per axis) or a tuple of N entries each an int or a "
                     "``(lo, hi)`` pair; stored as N ``(lo, hi)`` pairs."),
    "zero_padding_1d": ("an int (the same at both ends) or a ``(lo, hi)`` pair of zeros "
                        "added at the start and the end of the steps axis; stored as "
                        "``(lo, hi)``."),
    "size": "a positive int or a tuple of N positive ints: the factor per spatial axis.",
    "size_1d": "a positive int: how many times each step is repeated.",
    "interpolation": ('``"nearest"`` (an exact repeat), ``"bilinear"``, ``"bicubic"``, '
                      '``"lanczos3"`` or ``"lanczos5"`` (``jax.image.resize``, half-pixel '
                      "centres, as Keras 3); any case."),
    "reshaping_dtype": ("output dtype: floating inputs are cast to it, integer inputs pass "
                        "through (as Keras's autocast); ``None`` keeps the input's "
                        "(keyword-only)."),
    "reshaping_param_dtype": "unused (the layer has no params); accepted for a uniform "
                             "signature (keyword-only).",
    "reshaping_precision": "unused (keyword-only).",
    "interpolation_precision": ("``jax.lax.Precision`` of the interpolation's contractions; "
                                "``None`` means ``HIGHEST``, as Keras (keyword-only)."),
}

_JAX_ARGS = """\
  dtype: computation and output dtype; ``None`` means the input's (keyword-only). A
    16-bit float (or Keras's ``"mixed_bfloat16"`` / ``"mixed_float16"`` policy, which
    also keeps ``param_dtype`` float32) accumulates in float32.
  param_dtype: dtype of the params made by ``init`` (keyword-only, default float32).
  precision: ``jax.lax.Precision`` passed to the convolution (keyword-only)."""


def _describe(arg: str, causal: bool, transposed: bool) -> str:
    if arg == "padding":
        text = _ARGS["padding" + ("_causal" if causal else "")
                     + ("_transposed" if causal and transposed else "")]
        return f"{text} {_ARGS['padding_explicit' + ('_transposed' if transposed else '')]}"
    if arg in ("padding_mode", "groups") and transposed:
        return _ARGS[f"{arg}_transposed"]
    for suffix in ("initializer", "regularizer", "constraint"):
        if arg.endswith("_" + suffix) and arg != "activity_regularizer":
            return _ARGS[suffix]
    return _ARGS[arg]


def layer_doc(summary: str, args: Sequence[str], *, causal: bool, weights: str,
              example: str, keywords: Sequence[str] = (), transposed: bool = False) -> str:
    """Builds a Google-style docstring: summary, Args, weights and a doctested example."""
    lines = [summary, "", "Args:"]
    lines += [f"  {arg}: {_describe(arg, causal, transposed)}"
              for arg in list(args) + list(keywords)]
    lines.append(_JAX_ARGS)
    lines += ["", f"Weights (Keras's names and layouts): {weights}", "", "Example:"]
    lines += ["    " + line for line in example.strip("\n").splitlines()]
    return "\n".join(lines) + "\n"


def reshaping_doc(summary: str, args: Sequence[tuple[str, str]], *, example: str,
                  precision: str = "reshaping_precision") -> str:
    """The docstring of a layer without weights (Cropping, ZeroPadding, UpSampling).

    ``args`` are ``(argument, _ARGS key)`` pairs in Keras's order: the reshaping families
    give one name (``padding``, ``size``) different meanings from the convolutions'.
    """
    lines = [summary, "", "Args:"]
    lines += [f"  {arg}: {_ARGS[key]}" for arg, key in args]
    lines += [f"  dtype: {_ARGS['reshaping_dtype']}",
              f"  param_dtype: {_ARGS['reshaping_param_dtype']}",
              f"  precision: {_ARGS[precision]}"]
    lines += ["", "Weights: none (``init`` returns ``{}``).", "", "Example:"]
    lines += ["    " + line for line in example.strip("\n").splitlines()]
    return "\n".join(lines) + "\n"
