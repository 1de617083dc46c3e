"""A convolutional autoencoder for scikit-learn's 8×8 digits, built from kconv linen layers.

Run (from the repository root):

    python examples/autoencoder.py                  # writes out/autoencoder_reconstructions.png
    python examples/autoencoder.py --epochs 5 --out /tmp/ae --no-progress

What it shows:

- an encoder of strided ``Conv2D`` layers squeezing each 8×8 image into a 2×2×8 code
  (32 numbers for 64 pixels);
- a decoder that really needs the reshaping layers: ``Conv2DTranspose`` (stride 2, valid
  padding: 2×2 → 5×5), ``UpSampling2D`` (5×5 → 10×10), a ``Conv2D``, and ``Cropping2D``
  (10×10 → 8×8) before a sigmoid ``Conv2D`` gives the pixels back;
- training with optax (Adam) on the reconstruction mean squared error, with a jitted
  whole-minibatch step and a tqdm bar;
- a PNG grid of test originals over their reconstructions, and the test MSE next to the
  MSE of always predicting the mean training image (the baseline a model must beat).

``main(argv)`` returns the results as a dict, so tests call it in-process.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from kconv import linen as kl

from _common import (load_digits_images, make_parser, prng_key, save_curves, save_image_grid,
                     split, train)


class Autoencoder(nn.Module):
    """Encoder (8×8×1 → 2×2×``code_channels``) and decoder (back to 8×8×1) of kconv layers.

    Attributes:
      width: the channel count of the outer layers (inner ones use twice as many).
      code_channels: channels of the 2×2 bottleneck.
    """

    width: int = 16
    code_channels: int = 8

    def setup(self) -> None:
        w = self.width
        self.encoder = [
            kl.Conv2D(w, 3, padding="same", activation="relu"),                   # 8×8
            kl.Conv2D(2 * w, 3, strides=2, padding="same", activation="relu"),    # 4×4
            kl.Conv2D(self.code_channels, 3, strides=2, padding="same"),         # 2×2 code
        ]
        self.decoder = [
            kl.Conv2DTranspose(2 * w, 3, strides=2, activation="relu"),          # 5×5
            kl.UpSampling2D(2),                                                  # 10×10
            kl.Conv2D(w, 3, padding="same", activation="relu"),                  # 10×10
            kl.Cropping2D(1),                                                    # 8×8
            kl.Conv2D(1, 3, padding="same", activation="sigmoid"),               # pixels
        ]

    def encode(self, x: jax.Array) -> jax.Array:
        """Images ``(N, 8, 8, 1)`` → codes ``(N, 2, 2, code_channels)``."""
        for layer in self.encoder:
            x = layer(x)
        return x

    def decode(self, z: jax.Array) -> jax.Array:
        """Codes ``(N, 2, 2, code_channels)`` → images ``(N, 8, 8, 1)`` in ``[0, 1]``."""
        for layer in self.decoder:
            z = layer(z)
        return z

    def __call__(self, x: jax.Array) -> jax.Array:
        """Reconstructs images ``(N, 8, 8, 1)``."""
        return self.decode(self.encode(x))


def mse(a: jax.Array, b: jax.Array) -> jax.Array:
    """The mean squared error over every pixel."""
    return jnp.mean((a - b) ** 2)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Trains the autoencoder, saves the reconstruction grid and the loss curve.

    Args:
      argv: command-line arguments (``None``: ``sys.argv[1:]``); see ``--help``.

    Returns:
      A dict with ``test_mse``, ``baseline_mse`` (predicting the mean training image) and
      ``train_mse`` (floats), ``history`` (per-epoch lists ``loss`` — the training MSE —,
      ``test_mse``, ``time``), ``plot`` (the reconstruction grid) and ``curves`` (paths).
    """
    parser = make_parser(__doc__, epochs=30, batch_size=64, lr=1e-2)
    parser.add_argument("--width", type=int, default=16, help="channels of the outer convs")
    args = parser.parse_args(argv)
    out = Path(args.out)

    images, labels = load_digits_images()
    x_train, x_test, _, _ = split(images, labels, test_size=0.2, seed=args.seed)
    mean_image = x_train.mean(axis=0, keepdims=True)
    baseline_mse = float(np.mean((x_test - mean_image) ** 2))

    model = Autoencoder(width=args.width)
    params = jax.jit(model.init)(prng_key(args.seed), x_train[:1])["params"]
    code_shape = model.apply({"params": params}, x_train[:1], method=Autoencoder.encode).shape
    print(f"autoencoder: {sum(p.size for p in jax.tree.leaves(params))} params, "
          f"code {code_shape[1:]} for images {x_train.shape[1:]}")

    steps = max(1, len(x_train) // args.batch_size) * args.epochs
    tx = optax.adam(optax.cosine_decay_schedule(args.lr, steps, alpha=0.05))

    @jax.jit
    def step(state, batch):
        params, opt_state = state
        (x,) = batch
        loss, grads = jax.value_and_grad(
            lambda p: mse(model.apply({"params": p}, x), x))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    @jax.jit
    def evaluate_mse(params, x):
        return mse(model.apply({"params": params}, x), x)

    (params, _), history = train(
        step, (params, tx.init(params)), (x_train,), epochs=args.epochs,
        batch_size=args.batch_size, seed=args.seed, desc="autoencoder",
        evaluate=lambda state: {"test_mse": evaluate_mse(state[0], x_test)},
        progress=not args.no_progress)

    test_mse = float(evaluate_mse(params, x_test))
    train_mse = float(evaluate_mse(params, x_train))
    shown = x_test[:10]
    plot = save_image_grid(out / "autoencoder_reconstructions.png", {
        "original": shown,
        "reconstructed": np.asarray(model.apply({"params": params}, shown)),
    }, title=f"kconv autoencoder on sklearn digits (test MSE {test_mse:.4f})")
    curves = save_curves(out / "autoencoder_curves.png", {
        "reconstruction MSE": {"train": history["loss"], "test": history["test_mse"],
                               "mean-image baseline (test)": [baseline_mse] * args.epochs},
    })
    print(f"plot: {plot}")
    print(f"mean-image baseline test MSE {baseline_mse:.4f}; train MSE {train_mse:.4f}")
    print(f"test_mse={test_mse:.4f}")
    return {"test_mse": test_mse, "train_mse": train_mse, "baseline_mse": baseline_mse,
            "history": history, "plot": plot, "curves": curves}


if __name__ == "__main__":
    main(sys.argv[1:])
