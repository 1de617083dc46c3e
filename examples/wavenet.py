"""A small WaveNet: stacked causal dilated Conv1D layers predicting a signal's next sample.

Run (from the repository root):

    python examples/wavenet.py
    python examples/wavenet.py --epochs 3 --out /tmp/wavenet --no-progress

What it shows, with the Flax NNX tier (``kconv.nnx``) and ``nnx.Optimizer``:

- a causal ``Conv1D`` input layer, then residual blocks with dilations 1, 2, 4, 8: each a
  gated activation ``tanh(filter) · sigmoid(gate)`` of two causal dilated ``Conv1D``s (the
  Keras ``activation=`` argument does the tanh and the sigmoid), with 1×1 ``Conv1D``s for
  the residual and skip paths, and a 1×1 head on the summed skips. The receptive field is
  17 samples and no output ever depends on a later input (``padding="causal"``);
- a Keras ``MaxNorm`` constraint on the skip convolutions, applied after each step by
  ``kconv.optax.constrain(model)`` inside ``nnx.Optimizer``;
- training on next-sample prediction of noisy sums of sines (generated with NumPy), with a
  tqdm bar; the test MSE is printed next to the naive baseline (predict the previous
  value) and the noise floor; PNGs show the MSE curves (``OUT/wavenet.png``) and a test
  signal with its predictions (``OUT/wavenet_prediction.png``).

``main(argv)`` returns the results (and the trained model) as a dict, so tests call it
in-process.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import kconv
from kconv import nnx as knnx

from _common import make_parser, prng_key, pyplot, save_curves, train

DILATIONS = (1, 2, 4, 8)


def make_signals(n: int, length: int, *, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    """Noisy sums of three sines with random frequencies, amplitudes and phases.

    Args:
      n: the number of signals.
      length: samples per signal.
      noise: the standard deviation of the added Gaussian noise.
      seed: the NumPy seed.

    Returns:
      float32 array ``(n, length, 1)`` (NWC, one channel).
    """
    rng = np.random.default_rng(seed)
    t = np.arange(length)[None, :, None]
    freq = rng.uniform(0.01, 0.08, size=(n, 1, 3))        # cycles per sample
    amp = rng.uniform(0.2, 0.6, size=(n, 1, 3))
    phase = rng.uniform(0.0, 2 * np.pi, size=(n, 1, 3))
    clean = np.sum(amp * np.sin(2 * np.pi * freq * t + phase), axis=-1, keepdims=True)
    return (clean + noise * rng.standard_normal(clean.shape)).astype(np.float32)


class ResidualBlock(nnx.Module):
    """One gated, dilated, causal WaveNet block with residual and skip 1×1 convolutions."""

    def __init__(self, channels: int, skip_channels: int, dilation: int, *, rngs: nnx.Rngs):
        """Builds the block.

        Args:
          channels: residual-stream channels (in and out).
          skip_channels: channels of the skip output.
          dilation: the dilation of the two causal kernel-2 convolutions.
          rngs: the NNX random streams for the weights.
        """
        conv = dict(padding="causal", dilation_rate=dilation, in_channels=channels, rngs=rngs)
        self.filter = knnx.Conv1D(channels, 2, activation="tanh", **conv)
        self.gate = knnx.Conv1D(channels, 2, activation="sigmoid", **conv)
        self.residual = knnx.Conv1D(channels, 1, in_channels=channels, rngs=rngs)
        self.skip = knnx.Conv1D(skip_channels, 1, in_channels=channels, rngs=rngs,
                                kernel_constraint=kconv.constraints.MaxNorm(3.0, axis=[0, 1]))

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``x (N, T, channels)`` → ``(residual output, skip output)``."""
        z = self.filter(x) * self.gate(x)
        return x + self.residual(z), self.skip(z)


class WaveNet(nnx.Module):
    """Causal input conv, a stack of :class:`ResidualBlock`s, and a 1×1 output head."""

    def __init__(self, channels: int = 16, skip_channels: int = 32,
                 dilations: tuple[int, ...] = DILATIONS, *, rngs: nnx.Rngs):
        """Builds the model.

        Args:
          channels: residual-stream channels.
          skip_channels: channels of the summed skip connections.
          dilations: one residual block per dilation.
          rngs: the NNX random streams for the weights.
        """
        self.input = knnx.Conv1D(channels, 2, padding="causal", in_channels=1, rngs=rngs)
        self.blocks = nnx.List([ResidualBlock(channels, skip_channels, d, rngs=rngs)
                                for d in dilations])
        self.hidden = knnx.Conv1D(skip_channels, 1, activation="relu",
                                  in_channels=skip_channels, rngs=rngs)
        self.output = knnx.Conv1D(1, 1, in_channels=skip_channels, rngs=rngs)
        self.receptive_field = 2 + sum(dilations)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Signals ``(N, T, 1)`` → predictions ``(N, T, 1)``; output ``t`` predicts input
        ``t + 1`` from inputs ``≤ t`` only."""
        x = self.input(x)
        skips = 0.0
        for block in self.blocks:
            x, skip = block(x)
            skips = skips + skip
        return self.output(self.hidden(jax.nn.relu(skips)))


def mse(a: jax.Array, b: jax.Array) -> jax.Array:
    """The mean squared error."""
    return jnp.mean((a - b) ** 2)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Trains the WaveNet on next-sample prediction and compares it with the naive baseline.

    Args:
      argv: command-line arguments (``None``: ``sys.argv[1:]``); see ``--help``.

    Returns:
      A dict with ``test_mse``, ``baseline_mse`` (predict the previous value) and
      ``noise_mse`` (the noise variance, the best any predictor can do) as floats,
      ``history`` (per-epoch lists ``loss``, ``test_mse``, ``time``), ``plot`` and
      ``prediction_plot`` (paths),
      ``model`` (the trained :class:`WaveNet`) and ``receptive_field``.
    """
    parser = make_parser(__doc__, epochs=20, batch_size=32, lr=3e-3)
    parser.add_argument("--signals", type=int, default=256, help="training signals")
    parser.add_argument("--length", type=int, default=128, help="samples per signal")
    parser.add_argument("--channels", type=int, default=16, help="residual channels")
    parser.add_argument("--noise", type=float, default=0.05, help="noise standard deviation")
    args = parser.parse_args(argv)
    out = Path(args.out)

    train_signals = make_signals(args.signals, args.length + 1, noise=args.noise, seed=args.seed)
    test_signals = make_signals(max(16, args.signals // 4), args.length + 1, noise=args.noise,
                                seed=args.seed + 10_000)
    x_train, y_train = train_signals[:, :-1], train_signals[:, 1:]
    x_test, y_test = test_signals[:, :-1], test_signals[:, 1:]
    baseline_mse = float(np.mean((x_test - y_test) ** 2))    # predict the previous value

    # Built under nnx.jit: one compile for all the initializers, not one per eager op.
    model = nnx.jit(lambda: WaveNet(args.channels, 2 * args.channels,
                                    rngs=nnx.Rngs(prng_key(args.seed))))()
    n_params = sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    print(f"wavenet: {n_params} params, dilations {DILATIONS}, receptive field "
          f"{model.receptive_field} samples; {len(x_train)} train / {len(x_test)} test "
          f"signals of {args.length} samples")

    steps = max(1, len(x_train) // args.batch_size) * args.epochs
    tx = optax.chain(optax.adam(optax.cosine_decay_schedule(args.lr, steps, alpha=0.05)),
                     kconv.optax.constrain(model))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(lambda m: mse(m(x), y))(model)
        optimizer.update(model, grads)
        return loss

    def step(state, batch):
        return state, train_step(*state, *batch)

    @nnx.jit
    def evaluate_mse(model, x, y):
        return mse(model(x), y)

    predict = nnx.jit(lambda model, x: model(x))

    _, history = train(step, (model, optimizer), (x_train, y_train), epochs=args.epochs,
                       batch_size=args.batch_size, seed=args.seed, desc="wavenet",
                       evaluate=lambda state: {"test_mse": evaluate_mse(state[0], x_test,
                                                                        y_test)},
                       progress=not args.no_progress)
    test_mse = float(evaluate_mse(model, x_test, y_test))

    prediction = np.asarray(predict(model, x_test[:1]))[0, :, 0]
    plot = save_curves(out / "wavenet.png", {
        "next-sample MSE per epoch": {"train": history["loss"], "test": history["test_mse"],
                                      "naive baseline (test)": [baseline_mse] * args.epochs},
    })
    prediction_plot = _save_prediction_plot(out / "wavenet_prediction.png", y_test[0, :, 0],
                                            prediction, x_test[0, :, 0])
    print(f"plots: {plot}, {prediction_plot}")
    print(f"noise floor {args.noise ** 2:.5f}, naive (previous value) test MSE "
          f"{baseline_mse:.5f}, wavenet {baseline_mse / test_mse:.1f}x better")
    print(f"test_mse={test_mse:.5f}")
    return {"test_mse": test_mse, "baseline_mse": baseline_mse, "noise_mse": args.noise ** 2,
            "history": history, "plot": plot, "prediction_plot": prediction_plot,
            "model": model, "receptive_field": model.receptive_field}


def _save_prediction_plot(path: Path, target: np.ndarray, prediction: np.ndarray,
                          previous: np.ndarray) -> str:
    """Plots one test signal's targets, the naive prediction and the model's; returns path."""
    plt = pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(10, 3.2))
    ax.plot(target, "k.", markersize=3, label="next sample (target)")
    ax.plot(previous, color="tab:gray", alpha=0.6, label="naive: previous sample")
    ax.plot(prediction, color="tab:red", label="wavenet")
    ax.set_xlabel("t")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


if __name__ == "__main__":
    main(sys.argv[1:])
