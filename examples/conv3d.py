"""A Conv3D classifier of small synthetic volumes: which axis does the bar lie along?

Run (from the repository root):

    python examples/conv3d.py
    python examples/conv3d.py --epochs 3 --volumes 120 --out /tmp/conv3d --no-progress

Each 12×12×12 volume holds one 2×2-thick bar of random length (6–10 voxels) and position
along x, y or z (the three classes), a distracting 2×2×2 blob, and Gaussian noise; the
3-D kernels learn oriented line detectors.

What it shows, with kconv's pure tier (no Flax: layers are config objects, params a
plain list of dicts):

- ``kconv.Conv3D`` layers (a strided one for down-sampling), global max pooling over the
  spatial axes, and a 1×1×1 ``Conv3D`` as the dense classifier head;
- ``layer.init`` / ``layer(params, x)`` / ``layer.compute_output_shape`` and
  ``layer.regularization_losses`` (an L2 kernel penalty added to the loss);
- a ``MaxNorm`` constraint applied after each Adam step by ``kconv.optax.constrain`` given
  the sequence of layers (matching the list of params);
- a jitted whole-minibatch train step, a tqdm bar, a PNG of the curves, the test accuracy.

``main(argv)`` returns the results as a dict, so tests call it in-process.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import kconv

from _common import make_parser, prng_key, save_curves, split, train

SIZE = 12
CLASSES = ("x", "y", "z")

LAYERS = (
    kconv.Conv3D(8, 3, strides=2, padding="same", activation="relu",
                 kernel_initializer="he_uniform",
                 kernel_regularizer=kconv.regularizers.L2(1e-4)),             # 6×6×6×8
    kconv.Conv3D(16, 3, padding="same", activation="relu",
                 kernel_initializer="he_uniform",
                 kernel_constraint=kconv.constraints.MaxNorm(2.0, axis=[0, 1, 2, 3])),
    kconv.Conv3D(len(CLASSES), 1),                                   # head, after pooling
)


def make_volumes(n: int, *, size: int = SIZE, noise: float = 0.35,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy volumes each holding one bar along x, y or z, plus a distracting blob.

    Args:
      n: the number of volumes.
      size: the edge length of each cubic volume.
      noise: the standard deviation of the Gaussian noise (the bar's intensity is 1).
      seed: the NumPy seed.

    Returns:
      ``(volumes, labels)``: float32 ``(n, size, size, size, 1)`` (NDHWC) and int32
      ``(n,)`` with 0, 1, 2 for a bar along axis x, y, z (volume axes 0, 1, 2).
    """
    rng = np.random.default_rng(seed)
    volumes = noise * rng.standard_normal((n, size, size, size)).astype(np.float32)
    labels = rng.integers(0, len(CLASSES), n).astype(np.int32)
    for i, axis in enumerate(labels):
        length = rng.integers(size // 2, size - 1)
        lo = [rng.integers(0, size - 1) for _ in range(3)]            # 2×2 cross-section
        lo[axis] = rng.integers(0, size - length + 1)
        extent = [2, 2, 2]
        extent[axis] = length
        volumes[i, lo[0]:lo[0] + extent[0], lo[1]:lo[1] + extent[1],
                lo[2]:lo[2] + extent[2]] += 1.0
        b = rng.integers(0, size - 1, 3)
        volumes[i, b[0]:b[0] + 2, b[1]:b[1] + 2, b[2]:b[2] + 2] += 1.0
    return volumes[..., None], labels


def init(key: jax.Array, input_shape: tuple) -> list[dict]:
    """Initializes :data:`LAYERS` for inputs of ``input_shape`` (batch dim may be None).

    Returns:
      The params: a list with one dict per layer, keyed by Keras's weight names.
    """
    keys = jax.random.split(key, len(LAYERS))
    shape = input_shape
    params = []
    for layer, k in zip(LAYERS[:-1], keys):
        params.append(layer.init(k, shape))
        shape = layer.compute_output_shape(shape)
    pooled = (shape[0], 1, 1, 1, shape[-1])
    params.append(LAYERS[-1].init(keys[-1], pooled))
    return params


def forward(params: list[dict], x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Volumes ``(N, D, H, W, 1)`` → ``(logits (N, 3), regularization penalty)``."""
    penalty = jnp.zeros(())
    for layer, p in zip(LAYERS[:-1], params):
        x = layer(p, x)
        penalty = penalty + layer.regularization_losses(p, x)
    # Global max pooling over the spatial axes. (The mean would drown the bar: it covers
    # ~2% of the voxels, and the noise drives the ReLU features everywhere else.)
    x = jnp.max(x, axis=(1, 2, 3), keepdims=True)
    logits = LAYERS[-1](params[-1], x)
    return logits.reshape(logits.shape[0], -1), penalty


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Generates the volumes, trains the classifier and reports its test accuracy.

    Args:
      argv: command-line arguments (``None``: ``sys.argv[1:]``); see ``--help``.

    Returns:
      A dict with ``test_accuracy`` (float), ``history`` (per-epoch lists ``loss``,
      ``train_accuracy``, ``test_accuracy``, ``time``), ``plot`` (path) and ``params``.
    """
    parser = make_parser(__doc__, epochs=10, batch_size=32, lr=1e-2)
    parser.add_argument("--volumes", type=int, default=600, help="volumes (train + test)")
    args = parser.parse_args(argv)
    out = Path(args.out)

    volumes, labels = make_volumes(args.volumes, seed=args.seed)
    x_train, x_test, y_train, y_test = split(volumes, labels, test_size=0.25, seed=args.seed)
    # Jitted: one compile for all the initializers rather than one per eager op.
    params = jax.jit(init, static_argnums=1)(prng_key(args.seed),
                                             (None,) + x_train.shape[1:])
    shapes = [{k: v.shape for k, v in p.items()} for p in params]
    print(f"conv3d: {len(x_train)} train / {len(x_test)} test volumes {x_train.shape[1:]}; "
          f"kernels {[s['kernel'] for s in shapes]}")

    steps = max(1, len(x_train) // args.batch_size) * args.epochs
    tx = optax.chain(optax.adam(optax.cosine_decay_schedule(args.lr, steps, alpha=0.05)),
                     kconv.optax.constrain(LAYERS))

    def loss_fn(params, x, y):
        logits, penalty = forward(params, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean() + penalty

    @jax.jit
    def step(state, batch):
        params, opt_state = state
        loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    @jax.jit
    def accuracies(params, x_train, y_train, x_test, y_test):    # one compile for both
        def accuracy(x, y):
            return jnp.mean(jnp.argmax(forward(params, x)[0], axis=-1) == y)

        return {"train_accuracy": accuracy(x_train, y_train),
                "test_accuracy": accuracy(x_test, y_test)}

    data = (x_train, y_train, x_test, y_test)

    (params, _), history = train(step, (params, tx.init(params)), (x_train, y_train),
                                 epochs=args.epochs, batch_size=args.batch_size,
                                 seed=args.seed, desc="conv3d",
                                 evaluate=lambda state: accuracies(state[0], *data),
                                 progress=not args.no_progress)
    test_accuracy = float(accuracies(params, *data)["test_accuracy"])
    plot = save_curves(out / "conv3d_curves.png", {
        "train loss": {"train": history["loss"]},
        "accuracy": {"train": history["train_accuracy"], "test": history["test_accuracy"]},
    }, title="kconv Conv3D: bar orientation in 12³ volumes")
    print(f"plot: {plot}")
    print(f"test_accuracy={test_accuracy:.4f}")
    return {"test_accuracy": test_accuracy, "history": history, "plot": plot,
            "params": params}


if __name__ == "__main__":
    main(sys.argv[1:])
