"""Train a kconv CNN on scikit-learn's handwritten digits — the project's main job.

Run (from the repository root):

    python examples/train_digits.py                 # defaults: ~0.985 test accuracy, ~25 s
    python examples/train_digits.py --epochs 5 --out /tmp/digits --no-progress

What it shows, end to end, with the Flax linen tier (``kconv.linen``) and optax:

- a two-scale CNN built from kconv layers: ``Conv2D`` and ``SeparableConv2D`` at 8×8,
  ``ZeroPadding2D`` and a strided ``DepthwiseConv2D`` down to 4×4, ``UpSampling2D`` back
  to 8×8 to fuse the coarse features with the fine ones, and a ``Conv2D`` as the dense
  classifier head; Keras initializers by name and object (``"he_uniform"``,
  ``kconv.initializers.RandomNormal``);
- Keras weight regularizers (``kconv.regularizers.L2``): each layer sows its penalty into
  the ``"losses"`` collection, ``model.apply(v, x, mutable=["losses"])`` returns it, and
  ``kconv.linen.total_loss`` adds it to the cross-entropy;
- a Keras weight constraint (``kconv.constraints.MaxNorm``) applied after every optimizer
  step by ``kconv.optax.constrain(model, x_example)``, chained after Adam;
- a whole-minibatch ``jax.jit``-ed train step (with ±1-pixel random-shift augmentation),
  a tqdm bar, a seeded stratified train/test split of ``sklearn.datasets.load_digits``
  (8×8 grayscale, bundled, no download), so a run is reproducible;
- a PNG of the per-epoch train loss and train/test accuracy (``OUT/digits_curves.png``);
- an orbax checkpoint of the trained params (``OUT/checkpoint``), restored and checked to
  give the identical test accuracy;
- ``--devices N``: data parallelism, each minibatch split over a mesh of N devices (params
  replicated; ``jax.jit`` partitions the step). On a CPU-only machine the script asks XLA
  for N simulated host devices.

The last line printed is ``test_accuracy=0.XXXX``. ``main(argv)`` returns the results as a
dict, so tests call it in-process.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__" and "--devices" in sys.argv[:-1]:
    # `--devices N` on a CPU-only machine: ask XLA for N host devices; this must happen
    # before JAX starts (a GPU/TPU machine ignores it and uses its real devices).
    _n = sys.argv[sys.argv.index("--devices") + 1]
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={_n}")

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import kconv
from kconv import linen as kl

from _common import (load_digits_images, make_parser, prng_key, restore_checkpoint,
                     save_checkpoint, save_curves, split, train, tree_equal)

NUM_CLASSES = 10


class DigitsCNN(nn.Module):
    """A small two-scale CNN for 8×8×1 digit images, made only of kconv linen layers.

    A fine branch (8×8) and a coarse branch (4×4, reached with zero padding and a strided
    depthwise convolution) are fused U-Net style: the coarse features are brought back to
    8×8 with ``UpSampling2D`` and concatenated with the fine ones. A ``Conv2D`` whose kernel
    covers the whole remaining 4×4 map is the dense classifier head.

    Attributes:
      width: the channel count of the first convolution (later layers use multiples).
      weight_decay: the L2 factor of every kernel's regularizer.
      max_norm: the MaxNorm bound on the first convolution's kernel (per output filter).
    """

    width: int = 16
    weight_decay: float = 1e-4
    max_norm: float = 3.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps images ``(N, 8, 8, 1)`` to class logits ``(N, 10)``."""
        reg = kconv.regularizers.L2(self.weight_decay)
        # Keras's fans count every channel even for a depthwise kernel (fan_in = 3·3·C),
        # so its default glorot_uniform starts depthwise filters ~sqrt(C) too small and the
        # net sits on a plateau at first. He init with the real per-channel fan (3·3) fixes
        # that; the relu convolutions get he_uniform.
        depthwise_init = kconv.initializers.RandomNormal(stddev=(2.0 / 9.0) ** 0.5)
        relu = dict(activation="relu", kernel_initializer="he_uniform", kernel_regularizer=reg)
        w = self.width
        x = kl.Conv2D(w, 3, padding="same", **relu,
                      kernel_constraint=kconv.constraints.MaxNorm(self.max_norm,
                                                                  axis=[0, 1, 2]))(x)
        fine = kl.SeparableConv2D(2 * w, 3, padding="same", activation="relu",
                                  depthwise_initializer=depthwise_init,
                                  pointwise_initializer="he_uniform",
                                  depthwise_regularizer=reg, pointwise_regularizer=reg)(x)
        coarse = kl.ZeroPadding2D(1)(fine)                                    # 10×10
        coarse = kl.DepthwiseConv2D(3, strides=2, activation="relu",
                                    depthwise_initializer=depthwise_init,
                                    depthwise_regularizer=reg)(coarse)        # 4×4
        coarse = kl.Conv2D(2 * w, 1, **relu)(coarse)
        up = kl.UpSampling2D(2)(coarse)                                       # 8×8
        x = jnp.concatenate([fine, up], axis=-1)
        x = kl.Conv2D(2 * w, 3, strides=2, padding="same", **relu)(x)         # 4×4
        x = kl.Conv2D(NUM_CLASSES, 4, kernel_regularizer=reg)(x)              # 1×1×10
        return x.reshape(x.shape[:-3] + (NUM_CLASSES,))


def random_shift(key: jax.Array, images: jax.Array, max_shift: int) -> jax.Array:
    """Shifts each image by a random whole number of pixels in ``[-max_shift, max_shift]``.

    Args:
      key: a JAX PRNG key.
      images: ``(N, H, W, C)`` images; vacated pixels become 0 (background).
      max_shift: the largest shift along each spatial axis (0: no augmentation).

    Returns:
      The shifted images, same shape.
    """
    if max_shift == 0:
        return images
    n, h, w, _ = images.shape
    m = max_shift
    padded = jnp.pad(images, ((0, 0), (m, m), (m, m), (0, 0)))
    offsets = jax.random.randint(key, (n, 2), 0, 2 * m + 1)
    crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, img.shape[-1]))
    return jax.vmap(crop)(padded, offsets)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, max_shift: int = 1):
    """Builds the jitted whole-minibatch train step.

    Args:
      model: the linen model.
      tx: the optax transformation (optimizer, then ``kconv.optax.constrain``).
      max_shift: random-translation augmentation, in pixels (see :func:`random_shift`).

    Returns:
      ``step((params, opt_state, key), (x, y)) -> ((params, opt_state, key), loss)``,
      jitted; the loss is the mean cross-entropy plus the sown regularization penalty.
    """

    def loss_fn(params, x, y):
        logits, state = model.apply({"params": params}, x, mutable=["losses"])
        data_loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return data_loss + kl.total_loss(state["losses"])

    @jax.jit
    def step(state, batch):
        params, opt_state, key = state
        key, shift_key = jax.random.split(key)
        x, y = batch
        x = random_shift(shift_key, x, max_shift)
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, key), loss

    return step


def make_evaluate(model: nn.Module):
    """Builds the jitted evaluation of both accuracies (one compile for both sets).

    Args:
      model: the linen model.

    Returns:
      ``evaluate(params, x_train, y_train, x_test, y_test) -> {"train_accuracy": ...,
      "test_accuracy": ...}`` (scalars), jitted.
    """

    @jax.jit
    def evaluate(params, x_train, y_train, x_test, y_test):
        def accuracy(x, y):
            logits = model.apply({"params": params}, x)
            return jnp.mean(jnp.argmax(logits, axis=-1) == y)

        return {"train_accuracy": accuracy(x_train, y_train),
                "test_accuracy": accuracy(x_test, y_test)}

    return evaluate


def data_parallel(devices: int, batch_size: int):
    """Places minibatches for data parallelism over the first ``devices`` devices.

    Args:
      devices: how many devices to split each minibatch over (1: no placement at all).
      batch_size: the minibatch size, which must divide evenly.

    Returns:
      ``place(batch) -> batch``: each array sharded along its first axis over a 1-D mesh
      ``("data",)``. The params stay replicated, and ``jax.jit`` partitions the step, so the
      result is the single-device one (up to the order of float sums).
    """
    if devices == 1:
        return lambda batch: batch
    if devices < 1 or devices > jax.device_count():
        raise SystemExit(f"--devices {devices}: this process has {jax.device_count()} "
                         f"device(s); on a CPU run the script directly (it then sets "
                         f"XLA_FLAGS=--xla_force_host_platform_device_count={devices})")
    if batch_size % devices:
        raise SystemExit(f"--batch-size {batch_size} must be a multiple of --devices {devices}")
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(jax.devices()[:devices], ("data",))
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    print(f"data parallel over {devices} devices: {[str(d) for d in mesh.devices]}")
    return lambda batch: jax.device_put(batch, sharding)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Trains, plots, checkpoints and restores; prints ``test_accuracy=0.XXXX`` last.

    Args:
      argv: command-line arguments (``None``: ``sys.argv[1:]``); see ``--help``.

    Returns:
      A dict with ``test_accuracy`` and ``train_accuracy`` (floats), ``history`` (per-epoch
      lists ``loss``, ``train_accuracy``, ``test_accuracy``, ``time``), ``plot`` and
      ``checkpoint`` (paths), ``params`` (the trained params), ``restored_test_accuracy``
      and ``seconds`` (training wall time, compile included).
    """
    parser = make_parser(__doc__, epochs=20, batch_size=64, lr=5e-3)
    parser.add_argument("--width", type=int, default=16, help="channels of the first conv")
    parser.add_argument("--shift", type=int, default=1,
                        help="random-translation augmentation in pixels (0: none)")
    parser.add_argument("--devices", type=int, default=1,
                        help="data parallelism: split each minibatch over N devices")
    args = parser.parse_args(argv)
    out = Path(args.out)
    place = data_parallel(args.devices, args.batch_size)

    images, labels = load_digits_images()
    x_train, x_test, y_train, y_test = split(images, labels, test_size=0.2, seed=args.seed)
    print(f"digits: {len(x_train)} train / {len(x_test)} test images of shape "
          f"{x_train.shape[1:]}")

    model = DigitsCNN(width=args.width)
    init_key, shift_key = jax.random.split(prng_key(args.seed))
    params = jax.jit(model.init)(init_key, x_train[:1])["params"]  # one compile, not one per op
    n_params = sum(p.size for p in jax.tree.leaves(params))
    print(f"model: {n_params} params in {len(params)} layers: {', '.join(params)}")

    steps_per_epoch = max(1, len(x_train) // args.batch_size)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, args.lr, warmup_steps=max(1, steps_per_epoch * args.epochs // 20),
        decay_steps=steps_per_epoch * args.epochs, end_value=args.lr * 0.01)
    tx = optax.chain(optax.adam(schedule), kconv.optax.constrain(model, x_train[:1]))
    jitted_step = make_train_step(model, tx, args.shift)
    step = lambda state, batch: jitted_step(state, place(batch))  # noqa: E731
    data = (x_train, y_train, x_test, y_test)
    evaluate = make_evaluate(model)

    start = time.perf_counter()
    (params, _, _), history = train(
        step, (params, tx.init(params), shift_key), (x_train, y_train), epochs=args.epochs,
        batch_size=args.batch_size, seed=args.seed, desc="digits",
        evaluate=lambda state: evaluate(state[0], *data), progress=not args.no_progress)
    seconds = time.perf_counter() - start
    final = evaluate(params, *data)
    test_accuracy = float(final["test_accuracy"])
    train_accuracy = float(final["train_accuracy"])
    print(f"trained {args.epochs} epochs in {seconds:.1f}s: loss {history['loss'][0]:.4f} -> "
          f"{history['loss'][-1]:.4f}, train accuracy {train_accuracy:.4f}")

    kernel = params["Conv2D_0"]["kernel"]
    norms = jnp.sqrt(jnp.sum(kernel ** 2, axis=(0, 1, 2)))
    print(f"MaxNorm constraint: largest first-layer filter norm {float(norms.max()):.3f} "
          f"(<= {model.max_norm})")

    plot = save_curves(out / "digits_curves.png", {
        "train loss (cross-entropy + L2 penalty)": {"train": history["loss"]},
        "accuracy": {"train": history["train_accuracy"], "test": history["test_accuracy"]},
    }, title=f"kconv DigitsCNN on sklearn digits (test accuracy {test_accuracy:.4f})")
    print(f"plot: {plot}")

    checkpoint = save_checkpoint(out / "checkpoint", params)
    restored = restore_checkpoint(checkpoint, params)
    restored_test_accuracy = float(evaluate(restored, *data)["test_accuracy"])
    if not tree_equal(restored, params) or restored_test_accuracy != test_accuracy:
        raise RuntimeError(f"checkpoint round trip changed the params: test accuracy "
                           f"{test_accuracy} -> {restored_test_accuracy}")
    print(f"checkpoint: {checkpoint} (restored: identical params, test accuracy "
          f"{restored_test_accuracy:.4f})")

    print(f"test_accuracy={test_accuracy:.4f}")
    return {"test_accuracy": test_accuracy, "train_accuracy": train_accuracy,
            "history": history, "plot": plot, "checkpoint": checkpoint, "params": params,
            "restored_test_accuracy": restored_test_accuracy, "seconds": seconds}


if __name__ == "__main__":
    main(sys.argv[1:])
