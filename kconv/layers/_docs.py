"""Docstrings of the generated rank classes, assembled from one set of argument texts so
the 1-D, 2-D and 3-D aliases of a family document the same thing in the same words."""

from __future__ import annotations

from collections.abc import Sequence

_ARGS = {
    "filters": "number of output channels.",
    "kernel_size": "int or tuple of N ints: the window size.",
    "strides": "int or tuple of N ints, default 1.",
    "padding": ('``"valid"`` (no padding) or ``"same"`` (output length ``ceil(n / '
                's)``, the odd pad at the end as TF/XLA); any case.'),
    "padding_causal": ('``"valid"``, ``"same"`` (output length ``ceil(n / s)``, the odd '
                       'pad at the end as TF/XLA) or ``"causal"`` (left pad '
                       '``dilation * (kernel - 1)``: ``output[t]`` never sees '
                       '``input[t + 1:]``); any case.'),
    "output_padding": ("``None`` or an int / tuple of N ints, each below the stride: the "
                       "extra length at the end of each spatial axis (Keras's rule)."),
    "data_format": ('``"channels_last"`` or ``"channels_first"``; ``None`` resolves now '
                    "to :func:`kconv.config.image_data_format`."),
    "dilation_rate": "int or tuple of N ints, default 1 (atrous convolution).",
    "groups": "number of channel groups; ``filters`` and the input channels divide by it.",
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
}

_JAX_ARGS = """\
  dtype: computation and output dtype; ``None`` means the input's (keyword-only).
  param_dtype: dtype of the params made by ``init`` (keyword-only, default float32).
  precision: ``jax.lax.Precision`` passed to the convolution (keyword-only)."""


def _describe(arg: str, causal: bool) -> str:
    if arg == "padding" and causal:
        return _ARGS["padding_causal"]
    for suffix in ("initializer", "regularizer", "constraint"):
        if arg.endswith("_" + suffix) and arg != "activity_regularizer":
            return _ARGS[suffix]
    return _ARGS[arg]


def layer_doc(summary: str, args: Sequence[str], *, causal: bool, weights: str,
              example: str) -> str:
    """Builds a Google-style docstring: summary, Args, weights and a doctested example."""
    lines = [summary, "", "Args:"]
    lines += [f"  {arg}: {_describe(arg, causal)}" for arg in args]
    lines.append(_JAX_ARGS)
    lines += ["", f"Weights (Keras's names and layouts): {weights}", "", "Example:"]
    lines += ["    " + line for line in example.strip("\n").splitlines()]
    return "\n".join(lines) + "\n"
