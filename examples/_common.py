"""Shared helpers for the kconv examples: data, batching, the training loop, plots, checkpoints.

Not an example itself. Each example imports it with ``from _common import ...``, which works
both when the example runs as a script (its folder is on ``sys.path``) and when a test puts
``examples/`` on ``sys.path`` first.

Contents:

- :func:`make_parser` — the shared ``--epochs --batch-size --lr --seed --out`` options.
- :func:`prng_key` — a seeded PRNG key that compiles fast on CPU.
- :func:`load_digits_images` / :func:`split` — scikit-learn's bundled 8×8 digits as NHWC
  float images, and a seeded (stratified) train/test split.
- :func:`batch_indices` — a seeded epoch of shuffled, equal-size minibatch indices (equal
  sizes, so a jitted step compiles once).
- :func:`train` — the tqdm-wrapped epoch loop every example uses.
- :func:`save_curves`, :func:`save_image_grid` — matplotlib (Agg backend) PNG writers.
- :func:`save_checkpoint`, :func:`restore_checkpoint` — an orbax round trip of a params
  pytree, and :func:`tree_equal` to compare two pytrees leaf by leaf.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- CLI


def make_parser(description: str, *, epochs: int, batch_size: int, lr: float,
                seed: int = 0, out: str = "out") -> argparse.ArgumentParser:
    """The examples' shared command line: ``--epochs --batch-size --lr --seed --out``.

    Args:
      description: the parser's description (the example's docstring).
      epochs, batch_size, lr, seed, out: the defaults.

    Returns:
      An ``argparse.ArgumentParser`` (an example may add its own options to it), which
      also has ``--no-progress`` to hide the tqdm bar.
    """
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=epochs, help="passes over the data")
    parser.add_argument("--batch-size", type=int, default=batch_size, help="minibatch size")
    parser.add_argument("--lr", type=float, default=lr, help="peak learning rate")
    parser.add_argument("--seed", type=int, default=seed, help="seed for init, split, shuffle")
    parser.add_argument("--out", default=out, help="folder for plots and checkpoints")
    parser.add_argument("--no-progress", action="store_true", help="hide the tqdm bar")
    return parser


# --------------------------------------------------------------------------- randomness


def prng_key(seed: int) -> jax.Array:
    """A typed JAX PRNG key for ``seed`` using the ``"rbg"`` implementation.

    Why not ``jax.random.key(seed)``: JAX's default threefry generator, in its
    ``jax_threefry_partitionable`` form (the default in recent JAX), is slow to *compile* on
    CPU for every differently shaped draw — initializing a model draws one per weight, and
    ``jit(model.init)`` of the digits CNN compiles in ~20 s with threefry against ~3 s with
    ``"rbg"`` on a 2-core machine. ``"rbg"`` is deterministic for a given JAX version and
    backend, which is the reproducibility these examples need. Only the key changes; the
    global JAX configuration is left alone.

    Args:
      seed: the integer seed.

    Returns:
      A key usable everywhere a ``jax.random.key`` is (``split``, Flax ``init``,
      ``nnx.Rngs``).
    """
    return jax.random.key(seed, impl="rbg")


# --------------------------------------------------------------------------- data


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """Loads scikit-learn's bundled handwritten digits (no download).

    Returns:
      ``(images, labels)``: ``images`` float32 of shape ``(1797, 8, 8, 1)`` (NHWC) scaled
      to ``[0, 1]``; ``labels`` int32 of shape ``(1797,)`` with values 0–9.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    return images, digits.target.astype(np.int32)


def split(x: np.ndarray, y: np.ndarray | None = None, *, test_size: float = 0.2,
          seed: int = 0, stratify: bool = True) -> tuple[np.ndarray, ...]:
    """A seeded train/test split (scikit-learn's ``train_test_split``).

    Args:
      x: the inputs, split along the first axis.
      y: optional labels (or targets) split the same way.
      test_size: the held-out fraction.
      seed: the shuffling seed; the same seed gives the same split.
      stratify: keep the class proportions of ``y`` in both halves (needs ``y``).

    Returns:
      ``(x_train, x_test)`` without ``y``, else ``(x_train, x_test, y_train, y_test)``.
    """
    from sklearn.model_selection import train_test_split

    if y is None:
        return tuple(train_test_split(x, test_size=test_size, random_state=seed))
    return tuple(train_test_split(x, y, test_size=test_size, random_state=seed,
                                  stratify=y if stratify else None))


def batch_indices(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of shuffled minibatch indices, all of exactly ``batch_size``.

    The remainder of the shuffled order is dropped (a fresh shuffle each epoch still uses
    every example over time), so a jitted step sees one shape and compiles once. If
    ``batch_size >= n`` the single batch is the whole (shuffled) set.

    Args:
      n: the number of examples.
      batch_size: the minibatch size.
      rng: a NumPy generator (seeded by the caller, for reproducibility).

    Returns:
      A list of int index arrays.
    """
    order = rng.permutation(n)
    if batch_size >= n:
        return [order]
    return [order[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


# --------------------------------------------------------------------------- training


def train(step: Callable[[Any, Any], tuple[Any, Any]], state: Any,
          arrays: Sequence[np.ndarray], *, epochs: int, batch_size: int, seed: int = 0,
          evaluate: Callable[[Any], dict[str, float]] | None = None,
          desc: str = "train", progress: bool = True) -> tuple[Any, dict[str, list[float]]]:
    """The examples' training loop: epochs of shuffled minibatches under a tqdm bar.

    Args:
      step: ``step(state, batch) -> (state, loss)``, typically a ``jax.jit``-ed function;
        ``batch`` is a tuple with one minibatch slice of each array in ``arrays``.
      state: the training state (params and optimizer state, or an NNX graph state...).
      arrays: the training arrays, sliced together along their first axis.
      epochs: number of passes over the data.
      batch_size: the minibatch size (see :func:`batch_indices`).
      seed: the shuffling seed.
      evaluate: optional ``evaluate(state) -> {name: value}``, called after each epoch; its
        values are appended to the history and shown on the bar.
      desc: the progress bar's label.
      progress: show the tqdm bar (on stderr).

    Returns:
      ``(state, history)``, ``history`` a dict of per-epoch lists: ``"loss"`` (mean training
      loss of the epoch's steps), ``"time"`` (seconds since the start) and every key
      ``evaluate`` returns.
    """
    from tqdm.auto import tqdm

    rng = np.random.default_rng(seed)
    n = len(arrays[0])
    steps = len(batch_indices(n, batch_size, np.random.default_rng(0)))
    history: dict[str, list[float]] = {"loss": [], "time": []}
    start = time.perf_counter()
    with tqdm(total=epochs * steps, desc=desc, unit="step", disable=not progress,
              dynamic_ncols=True) as bar:
        for epoch in range(epochs):
            losses = []
            for idx in batch_indices(n, batch_size, rng):
                state, loss = step(state, tuple(a[idx] for a in arrays))
                losses.append(loss)
                bar.update(1)
            history["loss"].append(float(np.mean(jax.device_get(losses))))
            metrics = evaluate(state) if evaluate is not None else {}
            for name, value in metrics.items():
                history.setdefault(name, []).append(float(value))
            history["time"].append(time.perf_counter() - start)
            bar.set_postfix(epoch=epoch + 1, loss=f"{history['loss'][-1]:.4f}",
                            **{k: f"{float(v):.4f}" for k, v in metrics.items()})
    return state, history


# --------------------------------------------------------------------------- plots


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must precede the pyplot import
    import matplotlib.pyplot as plt

    return plt


def save_curves(path: str | os.PathLike, panels: dict[str, dict[str, Sequence[float]]],
                title: str = "") -> str:
    """Saves per-epoch curves as a PNG, one panel per entry of ``panels``.

    Args:
      path: the PNG file to write (its folder is created).
      panels: ``{panel title: {curve label: per-epoch values}}``, e.g.
        ``{"loss": {"train": [...]}, "accuracy": {"train": [...], "test": [...]}}``.
      title: an optional figure title.

    Returns:
      The path written, as a string.
    """
    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    for ax, (name, curves) in zip(axes[0], panels.items()):
        for label, values in curves.items():
            ax.plot(np.arange(1, len(values) + 1), values, marker=".", label=label)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def save_image_grid(path: str | os.PathLike, rows: dict[str, np.ndarray],
                    title: str = "") -> str:
    """Saves rows of grayscale images as a PNG grid (e.g. originals over reconstructions).

    Args:
      path: the PNG file to write (its folder is created).
      rows: ``{row label: images}``, images of shape ``(n, H, W)`` or ``(n, H, W, 1)``;
        every row has the same ``n``.
      title: an optional figure title.

    Returns:
      The path written, as a string.
    """
    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(next(iter(rows.values())))
    fig, axes = plt.subplots(len(rows), n, figsize=(1.1 * n, 1.25 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(np.asarray(images[c]).squeeze(), cmap="gray_r", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def is_png(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file starting with the 8-byte PNG signature."""
    path = Path(path)
    return path.is_file() and path.read_bytes()[:8] == PNG_SIGNATURE


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: str | os.PathLike, params: Any) -> str:
    """Saves a params pytree with orbax (``StandardCheckpointer``), overwriting ``path``.

    Args:
      path: the checkpoint directory (made absolute, as orbax requires).
      params: a pytree of arrays (e.g. ``variables["params"]``).

    Returns:
      The absolute checkpoint path, as a string.
    """
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, params, force=True)
        checkpointer.wait_until_finished()
    return str(path)


def restore_checkpoint(path: str | os.PathLike, like: Any) -> Any:
    """Restores a params pytree saved by :func:`save_checkpoint`.

    Args:
      path: the checkpoint directory.
      like: a pytree with the structure, shapes and dtypes to restore into (the params
        themselves, or ``jax.ShapeDtypeStruct`` leaves).

    Returns:
      The restored pytree (``jax.Array`` leaves).
    """
    import orbax.checkpoint as ocp

    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(Path(path).absolute(), abstract)


def tree_equal(a: Any, b: Any) -> bool:
    """Whether two pytrees have the same structure and bit-identical leaves."""
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    return ta == tb and all(
        np.asarray(x).shape == np.asarray(y).shape and np.asarray(x).dtype == np.asarray(y).dtype
        and np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))
