"""Per-example gradients, ``jax.vmap(jax.grad(...))`` over a batch, for every layer with
weights, against a Python loop over the examples (XLA turns the vmapped weight gradient into
a grouped convolution: the numbers must not change, and compiling it must stay cheap)."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kconv
from kconv.layers import LAYER_NAMES
from kconv.layers._examples import EXAMPLES

WEIGHTED = [name for name in LAYER_NAMES if getattr(kconv, name).has_weights]
EXTRA = [
    ("Conv2D", dict(filters=4, kernel_size=3, strides=2, groups=2, dilation_rate=1,
                    data_format="channels_first"), (3, 4, 7, 7)),
    ("Conv1D", dict(filters=3, kernel_size=3, padding="causal", dilation_rate=2,
                    lora_rank=2), (3, 10, 2)),
    ("Conv2DTranspose", dict(filters=2, kernel_size=3, strides=2, output_padding=1),
     (3, 4, 4, 3)),
]
CASES = [(name, *EXAMPLES[name]) for name in WEIGHTED] + EXTRA


@pytest.mark.parametrize("name,args,shape", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_vmap_grad_equals_a_loop_over_examples(name, args, shape):
    layer = getattr(kconv, name)(**args)
    params = layer.init(jax.random.key(0), shape)
    x = jax.random.normal(jax.random.key(1), shape)

    def loss(p, example):  # one unbatched example (rank N + 1)
        return jnp.sum(jnp.sin(layer(p, example)) * jnp.cos(example).mean())

    per_example = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))
    start = time.perf_counter()
    compiled = per_example.lower(params, x).compile()
    compile_s = time.perf_counter() - start
    got = compiled(params, x)
    grad_one = jax.jit(jax.grad(loss))
    for i in range(shape[0]):
        want = grad_one(params, x[i])
        for key in params:
            np.testing.assert_allclose(got[key][i], want[key], rtol=2e-5, atol=2e-5,
                                       err_msg=f"{name} {key} example {i}")
    # Batched examples through the layer's own batch axis give the same, too.
    via_batch = jax.vmap(jax.grad(lambda p, e: loss(p, e[0])), in_axes=(None, 0))(
        params, x[:, None])
    for key in params:
        np.testing.assert_allclose(via_batch[key], got[key], rtol=2e-5, atol=2e-5)
    assert compile_s < 30, f"compiling per-example gradients of {name} took {compile_s:.1f} s"
