"""Compile time of per-example gradients against one example's gradient, per layer.

``jax.vmap(jax.grad(loss), in_axes=(None, 0))`` makes XLA compute the weight gradient of
every example at once (a grouped convolution); this measures what that costs to compile,
against ``jax.grad(loss)`` of a single example, for the weighted layers' examples of
``kconv/layers/_examples.py``, and prints the README's table (ms of lower + compile, the
median of ``--repeats`` fresh compiles, interleaved).

    python benchmarks/per_example_compile.py [--repeats 3] [--lowering auto|portable|xla]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

import kconv
from kconv.layers import LAYER_NAMES
from kconv.layers._examples import EXAMPLES


def _compile_ms(fn, *args) -> float:
    jax.clear_caches()  # every repeat compiles from scratch
    start = time.perf_counter()
    jax.jit(fn).lower(*args).compile()
    return (time.perf_counter() - start) * 1e3


def measure(name: str, repeats: int) -> tuple[tuple[int, ...], float, float]:
    """``(input shape, one example's gradient ms, per-example gradients ms)``."""
    args, shape = EXAMPLES[name]
    layer = getattr(kconv, name)(**args)
    params = layer.init(jax.random.key(0), shape)
    x = jax.random.normal(jax.random.key(1), shape)

    def loss(p, example):  # one unbatched example, as tests/test_per_example.py
        return jnp.sum(jnp.sin(layer(p, example)) * jnp.cos(example).mean())

    one, per_example = [], []
    for _ in range(repeats):
        one.append(_compile_ms(jax.grad(loss), params, x[0]))
        per_example.append(_compile_ms(jax.vmap(jax.grad(loss), in_axes=(None, 0)),
                                       params, x))
    return shape, statistics.median(one), statistics.median(per_example)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lowering", choices=kconv.config.CONV_LOWERINGS, default="auto")
    options = parser.parse_args()
    kconv.config.set_conv_lowering(options.lowering)
    print("| layer | batch input | one example's gradient | per-example gradients (vmap) |")
    print("|---|---|---|---|")
    for name in LAYER_NAMES:
        if getattr(kconv, name).has_weights:
            shape, one, per_example = measure(name, options.repeats)
            print(f"| {name} | {shape} | {one:.0f} | {per_example:.0f} |", flush=True)


if __name__ == "__main__":
    main()
