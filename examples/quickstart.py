"""kconv in one minute: build a few layers, jit them, differentiate them, train a step.

Run: python examples/quickstart.py

It builds a small model from kconv's pure-tier layers (a causal dilated Conv1D, a
SeparableConv1D, a Conv1DTranspose), checks each layer against Keras's output-shape rule,
jits the forward pass, takes gradients with jax.grad (including the layers' regularization
penalties), runs a few optax steps with the constraints applied after each update, and
prints what it did.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import optax

import kconv

LAYERS = (
    kconv.Conv1D(16, 3, padding="causal", dilation_rate=2, activation="relu",
                 kernel_regularizer=kconv.regularizers.L2(1e-4)),
    kconv.SeparableConv1D(16, 3, strides=2, padding="same", activation="gelu",
                          depth_multiplier=2, pointwise_constraint=kconv.constraints.MaxNorm(2.0, axis=[0, 1])),
    kconv.Conv1DTranspose(1, 3, strides=2, padding="same"),
)


def init(key: jax.Array, input_shape: tuple) -> list[dict]:
    params, shape = [], input_shape
    for layer, k in zip(LAYERS, jax.random.split(key, len(LAYERS))):
        params.append(layer.init(k, shape))
        shape = layer.compute_output_shape(shape)
    return params


def forward(params: list[dict], x: jax.Array) -> tuple[jax.Array, jax.Array]:
    penalty = jnp.zeros(())
    for layer, p in zip(LAYERS, params):
        x = layer(p, x)
        penalty = penalty + layer.regularization_losses(p, x)
    return x, penalty


def loss_fn(params: list[dict], x: jax.Array, target: jax.Array) -> jax.Array:
    y, penalty = forward(params, x)
    return jnp.mean((y - target) ** 2) + penalty


def main() -> None:
    key = jax.random.key(0)
    t = jnp.linspace(0.0, 8.0 * jnp.pi, 128)
    x = (jnp.sin(t)[None, :, None] * jnp.arange(1.0, 9.0)[:, None, None])  # (8, 128, 1)
    target = jnp.roll(x, -1, axis=1)  # predict the next sample

    params = init(key, (None, 128, 1))
    shape = (None, 128, 1)
    for layer, p in zip(LAYERS, params):
        out = layer.compute_output_shape(shape)
        shapes = {name: tuple(v.shape) for name, v in p.items()}
        print(f"{type(layer).__name__:18s} {str(shape):16s} -> {str(out):16s} {shapes}")
        shape = out

    step_grad = jax.jit(jax.value_and_grad(loss_fn))
    start = time.perf_counter()
    value, grads = step_grad(params, x, target)
    print(f"first jitted loss+grad (compile included): {time.perf_counter() - start:.2f}s, "
          f"loss={float(value):.4f}")

    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init(params)

    @jax.jit
    def train_step(params, opt_state):
        value, grads = jax.value_and_grad(loss_fn)(params, x, target)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        # Keras applies constraints after every optimizer step; so do we.
        params = [layer.constrain(p) for layer, p in zip(LAYERS, params)]
        return params, opt_state, value

    first = float(value)
    for _ in range(200):
        params, opt_state, value = train_step(params, opt_state)
    print(f"200 adam steps: loss {first:.4f} -> {float(value):.4f}")
    norms = jnp.sqrt(jnp.sum(params[1]["pointwise_kernel"] ** 2, axis=(0, 1)))
    print(f"max pointwise column norm after constraint: {float(norms.max()):.3f} (<= 2.0)")
    assert float(value) < first, "training did not reduce the loss"
    print(f"final_loss={float(value):.4f}")


if __name__ == "__main__":
    main()
