"""Keras 3's LoRA on Conv1D/2D/3D against Keras itself: weight names and shapes, outputs,
gradients, penalties and configs with the same weights; Keras's files of LoRA models load
here (merged kernel, zeroed LoRA weights, as Keras loads them); training freezes the kernel
as Keras does."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import keras  # conftest.py has set KERAS_BACKEND=jax

import kconv
from kconv import interop

TOL = dict(rtol=1e-5, atol=1e-5)
CASES = [
    ("Conv1D", dict(filters=4, kernel_size=3, padding="causal", groups=2), (2, 9, 4), 2, None),
    ("Conv2D", dict(filters=6, kernel_size=3, strides=2, kernel_regularizer="l2",
                    activation="relu"), (2, 9, 9, 3), 2, 4.0),
    ("Conv2D", dict(filters=4, kernel_size=(2, 3), data_format="channels_first",
                    kernel_regularizer=keras.regularizers.L1(0.01)), (2, 3, 7, 8), 1, None),
    ("Conv3D", dict(filters=3, kernel_size=2, padding="same"), (1, 4, 5, 4, 2), 3, 6),
]
IDS = [f"{name}-r{rank}" for name, _, _, rank, _ in CASES]


def _kconv_args(args):
    out = dict(args)
    if isinstance(out.get("kernel_regularizer"), keras.regularizers.Regularizer):
        out["kernel_regularizer"] = keras.saving.serialize_keras_object(
            out["kernel_regularizer"])
    return out


def _keras_lora_layer(name, args, shape, rank, alpha, seed=0):
    layer = getattr(keras.layers, name)(**args, lora_rank=rank, lora_alpha=alpha)
    layer.build(shape)
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(size=w.shape).astype("float32") * 0.3
                       for w in layer.get_weights()])  # B non-zero: the update shows
    return layer


@pytest.mark.parametrize("name,args,shape,rank,alpha", CASES, ids=IDS)
def test_outputs_weights_and_penalties_match_keras(name, args, shape, rank, alpha):
    k = _keras_lora_layer(name, args, shape, rank, alpha)
    ours = getattr(kconv, name)(**_kconv_args(args), lora_rank=rank, lora_alpha=alpha,
                                dtype="float32")
    assert [w.path.split("/")[-1] for w in k.weights] == list(
        ours.init(jax.random.key(0), shape))
    params = dict(zip(ours.init(jax.random.key(0), shape), map(jnp.asarray, k.get_weights())))
    assert {n: p.shape for n, p in params.items()} == {
        n: p.shape for n, p in ours.init(jax.random.key(0), shape).items()}
    x = np.random.default_rng(1).normal(size=shape).astype("float32")
    y = ours(params, x)
    np.testing.assert_allclose(y, np.asarray(k(x)), **TOL)
    # Penalties: Keras sums its trainable weights' only (the frozen kernel is left out).
    np.testing.assert_allclose(ours.regularization_losses(params, y),
                               sum(float(v) for v in k.losses) if k.losses else 0.0, **TOL)
    assert ours.trainable_mask(params) == {w.path.split("/")[-1]: w.trainable
                                           for w in k.weights}
    # Configs both ways.
    config = k.get_config()
    assert config["lora_rank"] == rank and ours.get_config()["lora_rank"] == rank
    assert ours.get_config()["lora_alpha"] == config["lora_alpha"]
    assert getattr(kconv, name).from_config(config) == ours


@pytest.mark.parametrize("name,args,shape,rank,alpha", CASES, ids=IDS)
def test_gradients_match_keras(name, args, shape, rank, alpha):
    k = _keras_lora_layer(name, args, shape, rank, alpha, seed=2)
    ours = getattr(kconv, name)(**_kconv_args(args), lora_rank=rank, lora_alpha=alpha)
    names = list(ours.init(jax.random.key(0), shape))
    x = jnp.asarray(np.random.default_rng(3).normal(size=shape).astype("float32"))
    trainable = [v.value for v in k.trainable_variables]
    frozen = [v.value for v in k.non_trainable_variables]

    def keras_loss(tv, v):
        y, _ = k.stateless_call(tv, frozen, v)
        return jnp.sum(jnp.sin(y))

    g_tv, g_x = jax.grad(keras_loss, argnums=(0, 1))(trainable, x)
    params = dict(zip(names, map(jnp.asarray, k.get_weights())))
    g_p, g_x2 = jax.grad(lambda p, v: jnp.sum(jnp.sin(ours(p, v))), argnums=(0, 1))(params, x)
    np.testing.assert_allclose(g_x2, g_x, **TOL)
    trainable_names = [w.path.split("/")[-1] for w in k.trainable_variables]
    for n, g in zip(trainable_names, g_tv):
        np.testing.assert_allclose(g_p[n], g, **TOL)


def test_enable_lora_like_keras():
    k = keras.layers.Conv2D(5, 3)
    k.build((None, 8, 8, 2))
    k.enable_lora(3, lora_alpha=1.5)
    ours = kconv.Conv2D(5, 3)
    params = ours.init(jax.random.key(0), (None, 8, 8, 2))
    lora, lora_params = ours.enable_lora(3, lora_alpha=1.5, params=params, key=jax.random.key(1))
    assert lora == kconv.Conv2D(5, 3, lora_rank=3, lora_alpha=1.5)
    assert [w.path.split("/")[-1] for w in k.weights] == list(lora_params)
    assert [tuple(w.shape) for w in k.weights] == [p.shape for p in lora_params.values()]
    np.testing.assert_array_equal(lora_params["lora_kernel_b"], 0.0)  # zeros, as Keras
    bound = np.sqrt(6.0 / (3 * 3 * 2))  # He-uniform on the (3, 3, 2, 3) A: fan_in 18
    assert 0 < np.abs(lora_params["lora_kernel_a"]).max() <= bound
    with pytest.raises(ValueError, match="already enabled"):
        lora.enable_lora(2, params=lora_params, key=jax.random.key(2))


def test_lora_arguments_are_checked():
    with pytest.raises(ValueError, match="incompatible with kernel_constraint"):
        kconv.Conv2D(2, 3, lora_rank=2, kernel_constraint="max_norm")
    with pytest.raises(ValueError, match="lora_rank must be a positive integer, got 0"):
        kconv.Conv1D(2, 3, lora_rank=0)
    with pytest.raises(ValueError, match="lora_alpha=2 needs lora_rank"):
        kconv.Conv1D(2, 3, lora_alpha=2)
    with pytest.raises(ValueError, match="lora_alpha must be a positive number"):
        kconv.Conv1D(2, 3, lora_rank=1, lora_alpha=-1)
    # Without LoRA, a config is exactly Keras's: no lora keys.
    assert "lora_rank" not in kconv.Conv2D(2, 3).get_config()


def test_training_freezes_the_kernel_as_keras():
    layer = kconv.Conv2D(4, 3, padding="same", kernel_regularizer="l2")
    base = layer.init(jax.random.key(0), (None, 8, 8, 2))
    lora, params = layer.enable_lora(2, params=base, key=jax.random.key(1))
    x = jax.random.normal(jax.random.key(2), (4, 8, 8, 2))
    target = jax.random.normal(jax.random.key(3), (4, 8, 8, 4))

    def loss(p):
        y = lora(p, x)
        return jnp.mean((y - target) ** 2) + lora.regularization_losses(p, y)

    mask = lora.trainable_mask(params)
    tx = optax.chain(optax.masked(optax.adam(1e-2), mask),
                     optax.masked(optax.set_to_zero(), {n: not m for n, m in mask.items()}))
    state = tx.init(params)
    first = float(loss(params))
    for _ in range(20):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    assert float(loss(params)) < first
    np.testing.assert_array_equal(params["kernel"], base["kernel"])
    assert float(jnp.abs(params["lora_kernel_b"]).max()) > 0


def _keras_lora_step(args, shape, x, seed=4):
    """A constrained Conv2D with LoRA, its weights, and the weights after one SGD step of
    Keras's own optimizer (which trains and projects only trainable weights)."""
    k = _keras_lora_layer("Conv2D", args, shape, 2, None, seed=seed)
    before = dict(zip([w.path.split("/")[-1] for w in k.weights], k.get_weights()))
    optimizer = keras.optimizers.SGD(0.5)
    trainable = [v.value for v in k.trainable_variables]
    frozen = [v.value for v in k.non_trainable_variables]
    grads = jax.grad(lambda tv: jnp.sum(jnp.sin(k.stateless_call(tv, frozen, x)[0])))(trainable)
    optimizer.apply(grads, k.trainable_variables)
    after = dict(zip([w.path.split("/")[-1] for w in k.weights], k.get_weights()))
    return before, after


# A bias constraint (Keras refuses a kernel constraint with LoRA, and so does kconv).
_CONSTRAINED = dict(filters=4, kernel_size=3, bias_constraint="non_neg")


def _kconv_constrained():
    return kconv.Conv2D(**_CONSTRAINED, lora_rank=2)


def test_freeze_and_constrain_follow_kerass_optimizer_step():
    """One step of Keras's optimizer on a layer with LoRA and a bias constraint: the
    frozen kernel is not updated, the LoRA weights are, the bias is and is projected.
    ``kconv.optax.freeze`` + ``constrain`` give the same weights."""
    shape = (2, 8, 8, 3)
    x = jnp.asarray(np.random.default_rng(5).normal(size=shape).astype("float32"))
    before, after = _keras_lora_step(_CONSTRAINED, shape, x)
    np.testing.assert_array_equal(after["kernel"], before["kernel"])
    layer = _kconv_constrained()
    params = {n: jnp.asarray(v) for n, v in before.items()}
    tx = optax.chain(optax.sgd(0.5), kconv.optax.freeze(layer), kconv.optax.constrain(layer))
    grads = jax.grad(lambda p: jnp.sum(jnp.sin(layer(p, x))))(params)
    updates, _ = tx.update(grads, tx.init(params), params)
    stepped = optax.apply_updates(params, updates)
    for name in after:
        np.testing.assert_allclose(stepped[name], after[name], **TOL, err_msg=name)
    assert not np.allclose(after["lora_kernel_b"], before["lora_kernel_b"])
    assert (before["bias"] < 0).any() and (after["bias"] >= 0).all()  # projected


def test_flax_tiers_freeze_the_kernel_as_keras():
    """The same step in both Flax tiers: NNX holds the frozen kernel as a ``FrozenParam``,
    which ``nnx.Optimizer(wrt=nnx.Param)`` leaves; a linen model's params hold it, which
    ``kconv.optax.freeze(model, x)`` keeps."""
    import flax.linen as nn
    from flax import nnx

    from kconv import linen as kl
    from kconv import nnx as kn

    shape = (2, 8, 8, 3)
    x = jnp.asarray(np.random.default_rng(5).normal(size=shape).astype("float32"))
    before, after = _keras_lora_step(_CONSTRAINED, shape, x)
    args = _kconv_constrained().get_config()
    args.pop("name", None)

    module = kn.Conv2D(**{k: v for k, v in args.items() if k != "lora_alpha"},
                       in_channels=3, rngs=nnx.Rngs(0))
    assert isinstance(module.kernel, kn.FrozenParam)
    for name, value in before.items():
        getattr(module, name)[...] = jnp.asarray(value)
    optimizer = nnx.Optimizer(module, optax.chain(optax.sgd(0.5), kconv.optax.constrain(module)),
                              wrt=nnx.Param)
    grads = nnx.grad(lambda m: jnp.sum(jnp.sin(m(x))))(module)
    assert "kernel" not in grads
    optimizer.update(module, grads)
    for name in after:
        np.testing.assert_allclose(getattr(module, name)[...], after[name], **TOL,
                                   err_msg=name)

    class Net(nn.Module):
        @nn.compact
        def __call__(self, v):
            return kl.Conv2D(**{k: v_ for k, v_ in args.items() if k != "lora_alpha"})(v)

    variables = {"params": {"Conv2D_0": {n: jnp.asarray(v) for n, v in before.items()}}}
    tx = optax.chain(optax.sgd(0.5), kconv.optax.freeze(Net(), x),
                     kconv.optax.constrain(Net(), x))
    params = variables["params"]
    grads = jax.grad(lambda p: jnp.sum(jnp.sin(Net().apply({"params": p}, x))))(params)
    updates, _ = tx.update(grads, tx.init(params), params)
    stepped = optax.apply_updates(params, updates)["Conv2D_0"]
    for name in after:
        np.testing.assert_allclose(stepped[name], after[name], **TOL, err_msg=name)


@pytest.mark.parametrize("name", ["freeze", "constrain"])
def test_optax_transformations_name_themselves_in_errors(name):
    import flax.linen as nn

    make = getattr(kconv.optax, name)
    with pytest.raises(TypeError, match=rf"kconv.optax.{name}: a linen model builds its "
                                        rf"submodules when called; pass example inputs"):
        make(nn.Dense(3))
    with pytest.raises(ValueError, match=rf"kconv.optax.{name}: found no kconv layer in "
                                         r"list"):
        make([])
    with pytest.raises(TypeError, match=rf"kconv.optax.{name}: expected a kconv layer"):
        make({"a": kconv.Conv1D(1, 1), "b": 3})


def _lora_model(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(4, 3, name="base")(inp)
    x = keras.layers.Conv2D(2, 3, name="tuned", lora_rank=2)(x)
    return keras.Model(inp, x)


def test_a_lora_fine_tuned_keras_model_loads(tmp_path):
    model = _lora_model()
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype("float32") * 0.3
                       for w in model.get_weights()])
    x = rng.normal(size=(2, 10, 10, 3)).astype("float32")
    want = np.asarray(model(x))
    model.save(tmp_path / "lora.keras")
    model.save_weights(tmp_path / "lora.weights.h5")
    named = interop.load_keras_layers(tmp_path / "lora.keras")
    tuned, params = named["tuned"]
    assert tuned.lora_rank == 2
    np.testing.assert_array_equal(params["lora_kernel_a"], 0.0)  # as Keras loads it
    y = tuned(params, named["base"][0](named["base"][1], x))
    np.testing.assert_allclose(y, want, **TOL)
    # The weights file holds the merged kernel: a plain Conv2D computes the same.
    weights = interop.load_keras_weights(tmp_path / "lora.weights.h5")
    plain = kconv.Conv2D(2, 3)
    np.testing.assert_allclose(plain(weights["tuned"], kconv.Conv2D(4, 3)(weights["base"], x)),
                               want, **TOL)


def test_a_mixed_precision_lora_file_loads_in_the_weight_dtypes(tmp_path):
    # Keras saves a LoRA layer's merged kernel in its compute dtype (bfloat16 under
    # "mixed_bfloat16") and loads it into a float32 variable; kconv returned the bfloat16
    # array for a layer whose param_dtype is float32 (a later merge_lora rounded to it).
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 3))
    model = keras.Model(inp, keras.layers.Conv2D(4, 3, lora_rank=2, dtype="mixed_bfloat16",
                                                 name="tuned")(inp))
    model.save(tmp_path / "mixed.keras")
    reloaded = keras.models.load_model(tmp_path / "mixed.keras")
    layer, params = interop.load_keras_layers(tmp_path / "mixed.keras")["tuned"]
    keras_weights = {w.path.split("/")[-1]: w for w in reloaded.get_layer("tuned").weights}
    assert {n: str(a.dtype) for n, a in params.items()} == {
        n: str(w.dtype) for n, w in keras_weights.items()} and len(params) == 4
    for name, w in keras_weights.items():
        np.testing.assert_array_equal(params[name], np.asarray(w.value))
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(layer(params, x), np.float32),
                                  np.asarray(reloaded(x), np.float32))
    assert layer.merge_lora(params)["kernel"].dtype == jnp.float32


def test_lora_params_go_back_to_keras(tmp_path):
    layer = kconv.Conv2D(2, 3, lora_rank=2)
    base = kconv.Conv2D(4, 3)
    params = layer.init(jax.random.key(0), (None, 8, 8, 4))
    params["lora_kernel_b"] = jax.random.normal(jax.random.key(1), (2, 2))
    base_params = base.init(jax.random.key(2), (None, 10, 10, 3))
    x = np.random.default_rng(0).normal(size=(2, 10, 10, 3)).astype("float32")
    want = layer(params, base(base_params, x))
    # set_weights on a LoRA Keras layer: all four, Keras's order.
    model = _lora_model(seed=5)
    model.get_layer("base").set_weights(interop.to_keras_weights(base, base_params))
    model.get_layer("tuned").set_weights(interop.to_keras_weights(layer, params))
    np.testing.assert_allclose(np.asarray(model(x)), want, **TOL)
    # A weights file: the merged kernel, which Keras's load_weights reads.
    path = tmp_path / "back.weights.h5"
    interop.save_keras_weights(path, {"base": (base, base_params), "tuned": (layer, params)})
    fresh = _lora_model(seed=6)
    fresh.load_weights(path)
    np.testing.assert_allclose(np.asarray(fresh(x)), want, **TOL)
