"""The Flax tiers (kconv.linen, kconv.nnx) and kconv.optax.constrain against the pure tier:
same outputs and gradients with the same params (also inside Flax's scan, vmap and remat),
sown penalties equal to regularization_losses, constraints equal to projecting by hand."""

import dataclasses
import functools
import inspect
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import kconv
from kconv import linen as kl
from kconv import nnx as kn
from kconv.layers import LAYER_NAMES
from kconv.layers._examples import EXAMPLES
from kconv.optax import constrain

# A cross-section beyond EXAMPLES: other arguments, regularizers and constraints.
EXTRA = [
    ("Conv2D", dict(filters=6, kernel_size=(2, 3), groups=3, data_format="channels_first",
                    kernel_regularizer="l2", activity_regularizer="l1",
                    kernel_constraint="non_neg"), (2, 3, 6, 7)),
    ("SeparableConv1D", dict(filters=3, kernel_size=3, padding="causal",
                             pointwise_regularizer=kconv.regularizers.L1L2(0.1, 0.2),
                             depthwise_constraint=kconv.constraints.MaxNorm(0.5)), (3, 8, 2)),
    ("DepthwiseConv2D", dict(kernel_size=2, depth_multiplier=2, bias_regularizer="l1",
                             bias_constraint="non_neg", activation="relu"), (2, 5, 5, 2)),
    ("Conv3DTranspose", dict(filters=2, kernel_size=2, strides=(1, 2, 1),
                             data_format="channels_first", kernel_regularizer="l1",
                             kernel_constraint=kconv.constraints.UnitNorm(axis=(0, 1, 2))),
     (2, 3, 2, 3, 2)),
    # groups on a transposed conv (beyond Keras): a field like any other for the wrappers.
    ("Conv2DTranspose", dict(filters=6, kernel_size=3, strides=2, padding="same", groups=3,
                             kernel_regularizer="l2"), (2, 4, 5, 6)),
    ("UpSampling2D", dict(size=(2, 3), interpolation="bicubic",
                          data_format="channels_first"), (1, 2, 4, 3)),
]
CASES = [(name, *EXAMPLES[name]) for name in LAYER_NAMES] + EXTRA
IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(CASES)]


def _inputs(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _allclose(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


FROM_LAYER_CASES = CASES + [
    ("Conv2D", dict(filters=4, kernel_size=3, lora_rank=2, lora_alpha=3.0), (2, 6, 6, 3)),
    ("Conv1D", dict(filters=4, kernel_size=3, dtype="mixed_bfloat16"), (2, 8, 3)),
    ("SeparableConv2D", dict(filters=4, kernel_size=3, param_dtype="bfloat16"), (2, 6, 6, 3)),
]


@pytest.mark.parametrize("name,args,shape", FROM_LAYER_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(FROM_LAYER_CASES)])
def test_nnx_from_layer_holds_the_params_and_computes_the_layer(name, args, shape):
    """kconv.nnx.from_layer(layer, params): a module of the layer's class and config whose
    variables are those params (in param_dtype), of the kinds and metadata the
    constructor gives (a LoRA kernel a FrozenParam), computing the pure layer."""
    layer = getattr(kconv, name)(**args)
    x = _inputs(shape)
    params = layer.init(jax.random.key(3), shape)
    params = jax.tree.map(lambda p: p + 0.5, params)  # nothing an initializer would make
    module = kn.from_layer(layer, params)
    assert type(module) is getattr(kn, name) and module.layer == layer
    _allclose(module(x), layer(params, x))
    if not layer.has_weights:
        assert nnx.state(module) == nnx.state(getattr(kn, name)(**args))
        return
    built = getattr(kn, name)(**args, in_channels=layer._param_in_channels(params),
                              rngs=nnx.Rngs(0))
    for weight, value in params.items():
        ours, theirs = getattr(module, weight), getattr(built, weight)
        assert type(ours) is type(theirs) and ours.get_metadata() == theirs.get_metadata()
        assert ours[...].dtype == theirs[...].dtype
        np.testing.assert_array_equal(np.asarray(ours[...], np.float32),
                                      np.asarray(jnp.asarray(value, ours[...].dtype),
                                                 np.float32))
    # Trainable as a constructed one: a step moves the Params, never a FrozenParam.
    optimizer = nnx.Optimizer(module, optax.sgd(0.1), wrt=nnx.Param)
    grads = nnx.grad(lambda m: jnp.sum(jnp.sin(m(x))))(module)
    optimizer.update(module, grads)
    for weight in params:
        moved = not np.array_equal(np.asarray(getattr(module, weight)[...], np.float32),
                                   np.asarray(jnp.asarray(params[weight],
                                                          getattr(module, weight)[...].dtype),
                                              np.float32))
        assert moved == isinstance(getattr(module, weight), nnx.Param), weight


def test_nnx_from_layer_errors():
    layer = kconv.Conv2D(4, 3)
    params = layer.init(jax.random.key(0), (None, 6, 6, 3))
    with pytest.raises(ValueError, match=r"kconv.nnx.from_layer\(Conv2D\): params are "
                                         r"missing \['bias'\]"):
        kn.from_layer(layer, {"kernel": params["kernel"]})
    with pytest.raises(ValueError, match=r"from_layer\(Conv2D\): params\['bias'\] has shape"):
        kn.from_layer(layer, {**params, "bias": jnp.ones(5)})
    with pytest.raises(TypeError, match=r"from_layer\(Conv2D\): params must be a dict"):
        kn.from_layer(layer, list(params.values()))
    with pytest.raises(TypeError, match=r"kconv.nnx.from_layer: layer must be a kconv layer"):
        kn.from_layer(kn.Conv2D(4, 3, in_channels=3, rngs=nnx.Rngs(0)), params)
    with pytest.raises(ValueError, match=r"from_layer\(Cropping2D\): the layer has no "
                                         r"weights"):
        kn.from_layer(kconv.Cropping2D(1), params)


@pytest.mark.parametrize("name,args,shape", CASES, ids=IDS)
def test_linen_matches_pure_tier(name, args, shape):
    layer = getattr(kconv, name)(**args)
    module = getattr(kl, name)(**args)
    x = _inputs(shape)
    variables = module.init(jax.random.key(1), x)
    params = variables.get("params", {})
    assert set(variables) <= {"params"}  # init records no penalty
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(
        jnp.shape, layer.init(jax.random.key(0), shape))
    y, state = module.apply({"params": params}, x, mutable=["losses"])
    _allclose(y, layer(params, x))
    if any(getattr(layer, f.name) is not None for f in dataclasses.fields(layer)
           if f.name.endswith("_regularizer")):
        # Exactly one entry per call: the penalty, not its parts.
        (penalty,) = state["losses"]["regularization"]
        _allclose(penalty, layer.regularization_losses(params, y))
        _allclose(kl.total_loss(state["losses"]), layer.regularization_losses(params, y))
    else:
        assert state == {} or not jax.tree.leaves(state)

    def loss_linen(p, v):
        return jnp.sum(jnp.sin(module.apply({"params": p}, v)))

    def loss_pure(p, v):
        return jnp.sum(jnp.sin(layer(p, v)))

    jax.tree.map(_allclose, jax.grad(loss_linen, argnums=(0, 1))(params, x),
                 jax.grad(loss_pure, argnums=(0, 1))(params, x))


@pytest.mark.parametrize("name,args,shape", CASES, ids=IDS)
def test_nnx_matches_pure_tier(name, args, shape):
    layer = getattr(kconv, name)(**args)
    channel_axis = -1 if getattr(layer, "data_format", "channels_last") == "channels_last" \
        else -(layer.rank + 1)
    module = getattr(kn, name)(**args, in_channels=shape[channel_axis], rngs=nnx.Rngs(3))
    assert module.layer == layer
    params = {n: v[...] for n, v in nnx.state(module, nnx.Param).items()}
    expected = layer.init(jax.random.key(0), shape)
    assert {n: v.shape for n, v in params.items()} == {n: v.shape for n, v in expected.items()}
    for n in params:  # Keras's attribute names
        assert getattr(module, n)[...].shape == expected[n].shape
    x = _inputs(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecated sow outside nnx.capture
        y = module(x)
    _allclose(y, layer(params, x))
    y2, penalties = nnx.capture(module, kn.Penalty)(x)
    _allclose(y2, y)
    assert len(jax.tree.leaves(penalties)) == (1 if jax.tree.leaves(penalties) else 0)
    _allclose(kn.regularization_loss(penalties), layer.regularization_losses(params, y))
    _allclose(module.regularization_losses(), layer.regularization_losses(params))
    _allclose(module.regularization_losses(y), layer.regularization_losses(params, y))

    grads = nnx.grad(lambda m, v: jnp.sum(jnp.sin(m(v))))(module, x)
    pure = jax.grad(lambda p: jnp.sum(jnp.sin(layer(p, x))))(params)
    for n, g in nnx.state(grads, nnx.Param).items():
        _allclose(g[...], pure[n])
    _allclose(nnx.jit(lambda m, v: m(v))(module, x), y)


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_signatures_follow_the_pure_tier(name):
    pure = inspect.signature(getattr(kconv, name)).parameters
    nnx_params = inspect.signature(getattr(kn, name)).parameters
    assert list(nnx_params) == list(pure) + ["in_channels", "rngs"]
    linen_params = inspect.signature(getattr(kl, name)).parameters
    assert [p for p in linen_params if p not in ("parent", "name")] == list(pure)
    for p in pure:
        assert linen_params[p].default == pure[p].default == nnx_params[p].default


def test_errors_come_from_the_shared_core():
    with pytest.raises(ValueError, match=r"Conv2D: strides must be positive.*\(2, 0\)"):
        kl.Conv2D(2, 3, strides=(2, 0))
    with pytest.raises(ValueError, match=r"Conv2D: strides must be positive.*\(2, 0\)"):
        kn.Conv2D(2, 3, strides=(2, 0), in_channels=1, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="Conv2D: in_channels and rngs are required"):
        kn.Conv2D(2, 3)
    for rngs in (0, jax.random.key(0)):  # Flax's own Conv fails with an AttributeError
        with pytest.raises(TypeError, match=r"Conv2D: rngs must be an nnx.Rngs"):
            kn.Conv2D(2, 3, in_channels=1, rngs=rngs)
    kn.Cropping2D(1, rngs=nnx.Rngs(0))  # weightless modules accept rngs too
    # Keras's base-Layer keywords: refused with a hint, except linen's own name=.
    with pytest.raises(TypeError, match=r"Conv2D: trainable=False is a Keras Layer argument"):
        kl.Conv2D(2, 3, trainable=False)
    with pytest.raises(TypeError, match=r"Conv2D: name='c' is a Keras Layer argument"):
        kn.Conv2D(2, 3, name="c", in_channels=1, rngs=nnx.Rngs(0))
    assert kl.Conv2D(2, 3, name="c").name == "c"
    # Flax's own names for the arguments: Keras's named instead
    with pytest.raises(TypeError, match=r"^Conv2D: kernel_init=None is Flax's name; kconv's "
                                        r"layers take Keras's: kernel_initializer="):
        kl.Conv2D(2, 3, kernel_init=None)
    with pytest.raises(TypeError, match=r"^Conv2D: features=2 is Flax's name.*filters="):
        kn.Conv2D(features=2, kernel_size=3, in_channels=1, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=r"^Conv2D: in_features=1: .*take in_channels="):
        kn.Conv2D(2, 3, in_features=1, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=r"^Conv2D: kernel_metadata=\{\} is a Flax .*"
                                        r"kernel_initializer=nnx.with_partitioning"):
        kn.Conv2D(2, 3, in_channels=1, kernel_metadata={}, rngs=nnx.Rngs(0))
    module = kl.Conv2D(2, 3)
    with pytest.raises(ValueError, match=r"Conv2D: expected an input of rank"):
        module.init(jax.random.key(0), jnp.ones((3,)))


def test_linen_resolves_data_format_at_construction():
    kconv.config.set_image_data_format("channels_first")
    try:
        module = kl.Conv2D(2, 3)
    finally:
        kconv.config.set_image_data_format(None)
    assert module.data_format == "channels_first"
    variables = module.init(jax.random.key(0), jnp.ones((1, 3, 5, 5)))
    assert variables["params"]["kernel"].shape == (3, 3, 3, 2)


def _project_by_hand(layers_and_params):
    return [layer.constrain(p) for layer, p in layers_and_params]


def test_constrain_pure_layers_matches_projection_by_hand():
    layers = [kconv.Conv2D(3, 2, kernel_constraint=kconv.constraints.MaxNorm(0.3, axis=(0, 1, 2)),
                           bias_constraint="non_neg"),
              kconv.SeparableConv2D(2, 2, depthwise_constraint="unit_norm",
                                    pointwise_constraint=kconv.constraints.MinMaxNorm(
                                        0.1, 0.2, rate=0.5, axis=2))]
    params = [layers[0].init(jax.random.key(0), (None, 6, 6, 2)),
              layers[1].init(jax.random.key(1), (None, 5, 5, 3))]
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.7), params)
    tx = optax.chain(optax.sgd(0.5), constrain(layers))
    updates, _ = tx.update(grads, tx.init(params), params)
    got = optax.apply_updates(params, updates)
    stepped = jax.tree.map(lambda p, g: p - 0.5 * g, params, grads)
    want = _project_by_hand(zip(layers, stepped))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), got, want)
    # A single layer with its dict works too, and params are required.
    single = constrain(layers[0])
    out, _ = single.update(grads[0], single.init(params[0]), params[0])
    by_hand = layers[0].constrain(jax.tree.map(lambda p, g: p + g, params[0], grads[0]))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6),
                 optax.apply_updates(params[0], out), by_hand)
    with pytest.raises(ValueError, match="needs params"):
        single.update(grads[0], single.init(params[0]))


def test_constrain_linen_model():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = kl.Conv1D(3, 2, kernel_constraint="non_neg")(x)
            x = kl.UpSampling1D(2)(x)
            return kl.Conv1D(2, 2, bias_constraint=kconv.constraints.MaxNorm(0.1))(x)

    model, x = Net(), jnp.ones((2, 8, 2))
    params = model.init(jax.random.key(0), x)["params"]
    grads = jax.grad(lambda p: jnp.sum(model.apply({"params": p}, x) ** 2))(params)
    tx = optax.chain(optax.sgd(0.3), constrain(model, x))
    updates, _ = tx.update(grads, tx.init(params), params)
    got = optax.apply_updates(params, updates)
    stepped = jax.tree.map(lambda p, g: p - 0.3 * g, params, grads)
    want = {"Conv1D_0": kconv.Conv1D(3, 2, kernel_constraint="non_neg").constrain(
                stepped["Conv1D_0"]),
            "Conv1D_1": kconv.Conv1D(2, 2, bias_constraint=kconv.constraints.MaxNorm(0.1))
            .constrain(stepped["Conv1D_1"])}
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), got, want)
    with pytest.raises(TypeError, match="pass example inputs"):
        constrain(model)


def test_constrain_nnx_model_with_optimizer():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.first = kn.Conv2D(3, 2, kernel_constraint="non_neg", in_channels=1, rngs=rngs)
            self.blocks = nnx.List([kn.DepthwiseConv2D(2, bias_constraint="non_neg",
                                                       in_channels=3, rngs=rngs)])

        def __call__(self, x):
            return self.blocks[0](self.first(x))

    model, x = Net(nnx.Rngs(0)), jnp.ones((2, 6, 6, 1))
    before = {"first": {n: v[...] for n, v in nnx.state(model.first, nnx.Param).items()},
              "block": {n: v[...] for n, v in nnx.state(model.blocks[0], nnx.Param).items()}}
    optimizer = nnx.Optimizer(model, optax.chain(optax.sgd(0.2), constrain(model)),
                              wrt=nnx.Param)
    grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model)
    g_first = {n: v[...] for n, v in nnx.state(grads, nnx.Param)["first"].items()}
    g_block = {n: v[...] for n, v in nnx.state(grads, nnx.Param)["blocks"][0].items()}
    optimizer.update(model, grads)
    want_first = model.first.layer.constrain(
        jax.tree.map(lambda p, g: p - 0.2 * g, before["first"], g_first))
    want_block = model.blocks[0].layer.constrain(
        jax.tree.map(lambda p, g: p - 0.2 * g, before["block"], g_block))
    for n, v in want_first.items():
        np.testing.assert_allclose(getattr(model.first, n)[...], v, rtol=1e-6, atol=1e-6)
    for n, v in want_block.items():
        np.testing.assert_allclose(getattr(model.blocks[0], n)[...], v, rtol=1e-6, atol=1e-6)
    # The module's own constrain() projects in place the same way.
    model.first.kernel[...] = -jnp.abs(model.first.kernel[...])
    model.first.constrain()
    assert float(model.first.kernel[...].max()) == 0.0


# --- inside Flax's own transformations -------------------------------------------------
# Users scan, vmap and remat blocks of these layers; each result is checked against the
# pure tier run member by member, or step by step, on the same params.

class _Block(nn.Module):
    @nn.compact
    def __call__(self, h, _):
        h = kl.Conv2D(4, 3, padding="same", activation="tanh", kernel_regularizer="l2")(h)
        return kl.DepthwiseConv2D(3, padding="same")(h), None


class _ScanNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        scanned = nn.scan(nn.remat(_Block), variable_axes={"params": 0, "losses": 0},
                          split_rngs={"params": True}, length=3)
        h, _ = scanned()(x, None)
        return kl.Conv2DTranspose(2, 3, strides=2, padding="same")(h)


def test_linen_scan_and_remat_of_a_block():
    x = _inputs((2, 6, 5, 4))
    variables = _ScanNet().init(jax.random.key(0), x)
    params = variables["params"]
    (stack_key,) = [k for k in params if k != "Conv2DTranspose_0"]
    conv = kconv.Conv2D(4, 3, padding="same", activation="tanh", kernel_regularizer="l2")
    depthwise = kconv.DepthwiseConv2D(3, padding="same")
    head = kconv.Conv2DTranspose(2, 3, strides=2, padding="same")

    def by_hand(stack, head_params):
        """The three steps as a loop over the stacked params, then the head."""
        h, penalties = x, []
        for i in range(3):
            step = jax.tree.map(lambda a: a[i], stack)
            penalties.append(conv.regularization_losses(step["Conv2D_0"]))
            h = depthwise(step["DepthwiseConv2D_0"], conv(step["Conv2D_0"], h))
        return head(head_params, h), penalties

    want, want_penalties = by_hand(params[stack_key], params["Conv2DTranspose_0"])
    y, state = _ScanNet().apply(variables, x, mutable=["losses"])
    _allclose(y, want)
    _allclose(kl.total_loss(state["losses"]), sum(want_penalties))
    # Gradients through the scanned, rematerialized block against the loop's.
    grads = jax.grad(lambda p: jnp.sum(jnp.sin(_ScanNet().apply({"params": p}, x))))(params)
    want_grads = jax.grad(lambda s, h: jnp.sum(jnp.sin(by_hand(s, h)[0])), argnums=(0, 1))(
        params[stack_key], params["Conv2DTranspose_0"])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
                 (grads[stack_key], grads["Conv2DTranspose_0"]), want_grads)


class _ExportNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = kl.Conv2D(4, 3, strides=2, padding="same", activation="relu",
                      activity_regularizer="l2")(x)
        x = kl.DepthwiseConv2D(3, padding="same")(x)
        x = kl.UpSampling2D(2, interpolation="bilinear")(x)
        return kl.Conv2DTranspose(2, 3, strides=2, padding="same")(kl.Cropping2D(1)(x))


def test_export_with_a_symbolic_batch():
    """Both Flax tiers exported with ``jax.export`` for any batch (``"b"``): the linen
    model's outputs and sown penalties (an activity penalty is divided by the batch size)
    and an nnx module's outputs are the pure tier's on the batch they are called with."""
    from jax import export

    spec = jax.ShapeDtypeStruct(export.symbolic_shape("b, 8, 8, 3"), jnp.float32)
    x = _inputs((5, 8, 8, 3))
    variables = _ExportNet().init(jax.random.key(0), x[:1])
    exported = export.export(jax.jit(functools.partial(_ExportNet().apply, mutable=["losses"])))(
        variables, spec)
    y, state = exported.call(variables, x)
    p = variables["params"]
    h = kconv.Conv2D(4, 3, strides=2, padding="same", activation="relu",
                     activity_regularizer="l2")(p["Conv2D_0"], x)
    penalty = kconv.Conv2D(4, 3, activity_regularizer="l2").regularization_losses(
        p["Conv2D_0"], h)
    h = kconv.UpSampling2D(2, interpolation="bilinear")(
        {}, kconv.DepthwiseConv2D(3, padding="same")(p["DepthwiseConv2D_0"], h))
    want = kconv.Conv2DTranspose(2, 3, strides=2, padding="same")(
        p["Conv2DTranspose_0"], kconv.Cropping2D(1)({}, h))
    _allclose(y, want)
    _allclose(kl.total_loss(state["losses"]), penalty)

    module = kn.SeparableConv2D(4, 3, strides=2, in_channels=3, rngs=nnx.Rngs(0))
    graph, weights = nnx.split(module)
    exported = export.export(jax.jit(lambda w, v: nnx.merge(graph, w)(v)))(weights, spec)
    layer = kconv.SeparableConv2D(4, 3, strides=2)
    params = {name: getattr(module, name)[...] for name in layer.init(
        jax.random.key(0), (None, 8, 8, 3))}
    _allclose(exported.call(weights, x), layer(params, x))


def test_linen_vmap_of_a_layer():
    class Ensemble(nn.Module):
        @nn.compact
        def __call__(self, x):
            members = nn.vmap(kl.Conv3D, variable_axes={"params": 0},
                              split_rngs={"params": True}, in_axes=0)
            return members(3, 2, padding="same")(x)

    x = _inputs((2, 3, 4, 4, 4, 2))
    variables = Ensemble().init(jax.random.key(1), x)
    (params,) = variables["params"].values()
    layer = kconv.Conv3D(3, 2, padding="same")
    y = Ensemble().apply(variables, x)
    for i in range(2):
        _allclose(y[i], layer(jax.tree.map(lambda a: a[i], params), x[i]))
    assert not np.allclose(params["kernel"][0], params["kernel"][1])  # rngs were split


def test_nnx_vmap_ensemble_and_scan_over_layers():
    @nnx.split_rngs(splits=3)
    @nnx.vmap(in_axes=0, out_axes=0)
    def make(rngs):
        return kn.Conv1D(2, 3, padding="causal", dilation_rate=2, in_channels=2, rngs=rngs)

    layers = make(nnx.Rngs(0))
    assert layers.kernel.shape == (3, 3, 2, 2)
    pure = layers.layer
    per_layer = [{n: v[...][i] for n, v in nnx.state(layers, nnx.Param).items()}
                 for i in range(3)]
    x = _inputs((2, 7, 2))

    @nnx.vmap(in_axes=(0, None))
    def each(layer, x):
        return layer(x)
    y = each(layers, x)
    for i in range(3):
        _allclose(y[i], pure(per_layer[i], x))

    @nnx.scan(in_axes=(0, nnx.Carry), out_axes=nnx.Carry)
    def through(layer, h):
        return jnp.tanh(layer(h))
    want = x
    for params in per_layer:
        want = jnp.tanh(pure(params, want))
    _allclose(through(layers, x), want)
    # Remat under nnx.grad: the gradients of the scanned stack against the loop by hand.
    grads = nnx.grad(lambda m: jnp.sum(nnx.remat(through)(m, x) ** 2))(layers)

    def by_hand(stacked):
        h = x
        for i in range(3):
            h = jnp.tanh(pure(jax.tree.map(lambda a: a[i], stacked), h))
        return jnp.sum(h ** 2)
    stacked = {n: v[...] for n, v in nnx.state(layers, nnx.Param).items()}
    want_grads = jax.grad(by_hand)(stacked)
    for n, g in nnx.state(grads, nnx.Param).items():
        np.testing.assert_allclose(g[...], want_grads[n], rtol=1e-5, atol=1e-5)


def test_constrain_stacked_layers_one_layer_at_a_time():
    """Layers stacked by nn.scan (linen) or nnx.vmap carry their weights with a leading
    axis; their constraints project each layer's slice (a constraint's axis counts one
    layer's axes), as the unstacked layer's own constrain does slice by slice."""
    max_norm = kconv.constraints.MaxNorm(0.5)   # axis 0 of one kernel: its first tap axis

    class Step(nn.Module):
        @nn.compact
        def __call__(self, h, _):
            return kl.Conv2D(4, 3, padding="same", kernel_constraint=max_norm,
                             bias_constraint="non_neg")(h), None

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.scan(Step, variable_axes={"params": 0}, split_rngs={"params": True},
                           length=3)()(x, None)[0]

    x = _inputs((2, 6, 6, 4))
    params = Net().init(jax.random.key(0), x)["params"]
    grads = jax.tree.map(lambda p: jnp.full_like(p, 3.0), params)
    tx = optax.chain(optax.sgd(1.0), constrain(Net(), x))
    updates, _ = tx.update(grads, tx.init(params), params)
    got = optax.apply_updates(params, updates)
    layer = kconv.Conv2D(4, 3, padding="same", kernel_constraint=max_norm,
                         bias_constraint="non_neg")
    (scanned,) = params  # the scan's module name
    stepped = jax.tree.map(lambda p, g: p - g, params[scanned]["Conv2D_0"],
                           grads[scanned]["Conv2D_0"])
    for i in range(3):
        want = layer.constrain(jax.tree.map(lambda a: a[i], stepped))
        for name, value in want.items():
            np.testing.assert_allclose(got[scanned]["Conv2D_0"][name][i], value, rtol=1e-6,
                                       atol=1e-6)

    @nnx.split_rngs(splits=3)
    @nnx.vmap(in_axes=0, out_axes=0)
    def make(rngs):
        return kn.Conv1D(2, 3, kernel_constraint=max_norm, in_channels=2, rngs=rngs)

    stack = make(nnx.Rngs(0))
    stack.kernel[...] = 4.0 * stack.kernel[...]
    before = stack.kernel[...]
    stack.constrain()
    for i in range(3):
        want = stack.layer.constrain({"kernel": before[i], "bias": stack.bias[...][i]})
        np.testing.assert_allclose(stack.kernel[...][i], want["kernel"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("axis", [1, -1])
def test_constrain_a_stack_whose_axis_is_not_first(axis):
    """nn.vmap's variable_axes and nnx.vmap's out_axes may put a stack's axis anywhere in
    its weights: constraints still project one layer's slice at a time (they projected
    slices across the layers, silently, where the axis was not the first)."""
    max_norm = kconv.constraints.MaxNorm(0.5)   # axis 0 of one kernel: its first tap axis
    args = dict(kernel_constraint=max_norm, bias_constraint="non_neg")
    layer = kconv.Conv2D(4, 3, **args)

    def check(got, stepped):
        for i in range(3):
            want = layer.constrain({n: jnp.take(w, i, axis=axis) for n, w in stepped.items()})
            for name, value in want.items():
                _allclose(jnp.take(got[name], i, axis=axis), value)

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.vmap(kl.Conv2D, variable_axes={"params": axis}, in_axes=None,
                           split_rngs={"params": True}, axis_size=3)(4, 3, **args)(x)

    x = _inputs((2, 6, 6, 3))
    params = Net().init(jax.random.key(0), x)["params"]
    grads = jax.tree.map(lambda p: 2.0 * _inputs(p.shape, seed=1), params)
    tx = optax.chain(optax.sgd(1.0), constrain(Net(), x))
    updates, _ = tx.update(grads, tx.init(params), params)
    (name,) = params
    assert params[name]["kernel"].shape[axis] == 3 and params[name]["bias"].shape[axis] == 3
    check(optax.apply_updates(params, updates)[name],
          jax.tree.map(lambda p, g: p - g, params[name], grads[name]))

    @nnx.split_rngs(splits=3)
    @nnx.vmap(in_axes=0, out_axes=axis)
    def make(rngs):
        return kn.Conv2D(4, 3, **args, in_channels=3, rngs=rngs)

    stack = make(nnx.Rngs(0))
    params = nnx.state(stack, nnx.Param)
    grads = jax.tree.map(lambda p: 2.0 * _inputs(p.shape, seed=1), params)
    stepped = {n: stack.kernel[...] - grads["kernel"][...] if n == "kernel" else
               stack.bias[...] - grads["bias"][...] for n in ("kernel", "bias")}
    tx = optax.chain(optax.sgd(1.0), constrain(stack))   # as nnx.Optimizer runs it
    updates, _ = tx.update(grads, tx.init(params), params)
    got = optax.apply_updates(params, updates)
    check({n: got[n][...] for n in stepped}, stepped)
    stack.kernel[...], stack.bias[...] = stepped["kernel"], stepped["bias"]
    stack.constrain()                                     # the module's own, in place
    check({"kernel": stack.kernel[...], "bias": stack.bias[...]}, stepped)


def test_linen_refuses_params_its_layer_does_not_use():
    # Ported weights that do not fit the config (a bias with use_bias=False, LoRA factors
    # on a layer without LoRA, a kernel for a padding layer) were silently ignored.
    x = jnp.ones((1, 6, 6, 3))
    params = kconv.Conv2D(4, 3).init(jax.random.key(0), x.shape)
    with pytest.raises(ValueError, match=r"^Conv2D: the params hold \['bias'\], which this "
                                         r"layer does not use \(its weights: \['kernel'\]\)"):
        kl.Conv2D(4, 3, use_bias=False).apply({"params": params}, x)
    with pytest.raises(ValueError, match=r"^ZeroPadding2D: the params hold \['kernel'\]"):
        kl.ZeroPadding2D(1).apply({"params": {"kernel": params["kernel"]}}, x)
    y = kl.Conv2D(4, 3).apply({"params": params}, x)
    np.testing.assert_array_equal(y, kconv.Conv2D(4, 3)(params, x))


def test_linen_module_under_share_scope_beside_a_wrappers_params():
    # Flax's nn.share_scope idiom: a wrapper adds params of its own (a LoRA A, B) to the
    # scope it shares with the layer. Those are another module's, not a ported weight that
    # does not fit (which still raises: test above).
    class LoRA(nn.Module):
        base: nn.Module

        def setup(self):
            nn.share_scope(self, self.base)

        @nn.compact
        def __call__(self, x):
            a = self.param("A", nn.initializers.normal(0.1), (x.shape[-1], 2))
            b = self.param("B", nn.initializers.normal(0.1), (2, 4))
            return self.base(x) + x @ a @ b

    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 6, 6, 3)), jnp.float32)
    model = LoRA(kl.Conv2D(4, 3, padding="same"))
    variables = model.init(jax.random.key(0), x)
    params = variables["params"]
    assert sorted(params) == ["A", "B", "bias", "kernel"]
    want = kconv.Conv2D(4, 3, padding="same")(
        {"kernel": params["kernel"], "bias": params["bias"]}, x) + x @ params["A"] @ params["B"]
    np.testing.assert_allclose(model.apply(variables, x), want, rtol=1e-6, atol=1e-6)


def test_linen_names_params_that_do_not_fit():
    # Params of the wrong shape, or a missing one, get the layer's own message (Flax's
    # ScopeParamShapeError / ScopeParamNotFoundError named neither the layer nor its config).
    x = jnp.ones((1, 6, 6, 3))
    params = kconv.Conv2D(4, 3).init(jax.random.key(0), x.shape)
    with pytest.raises(ValueError, match=r"^Conv2D: params\['bias'\] has shape \(5,\), where "
                                         r"the layer's config and 3 input channels imply "
                                         r"\(4,\)"):
        kl.Conv2D(4, 3).apply({"params": {**params, "bias": jnp.zeros(5)}}, x)
    with pytest.raises(ValueError, match=r"^Conv2D: the params expect 6 input channels"):
        kl.Conv2D(4, 3).apply({"params": {**params, "kernel": jnp.zeros((3, 3, 6, 4))}}, x)
    with pytest.raises(ValueError, match=r"^Conv2D: params are missing \['bias'\]"):
        kl.Conv2D(4, 3).apply({"params": {"kernel": params["kernel"]}}, x)
    # Partitioned (boxed) params are read through their boxes.
    boxed = {"kernel": nn.Partitioned(params["kernel"], (None, None, None, "model")),
             "bias": params["bias"]}
    np.testing.assert_array_equal(kl.Conv2D(4, 3).apply({"params": boxed}, x),
                                  kconv.Conv2D(4, 3)(params, x))


def test_flax_tiers_keep_params_in_param_dtype_whatever_the_initializer_returns():
    # An initializer that ignores dtype: the pure tier's init casts to param_dtype; linen
    # and NNX kept its float32.
    def float32_ones(key, shape, dtype=jnp.float32):
        return jnp.ones(shape, jnp.float32)

    args = dict(kernel_initializer=float32_ones, param_dtype="bfloat16")
    x = jnp.ones((1, 6, 3))
    pure = kconv.Conv1D(2, 3, **args).init(jax.random.key(0), x.shape)
    linen = kl.Conv1D(2, 3, **args).init(jax.random.key(0), x)["params"]
    module = kn.Conv1D(2, 3, **args, in_channels=3, rngs=nnx.Rngs(0))
    assert pure["kernel"].dtype == linen["kernel"].dtype == module.kernel.dtype == jnp.bfloat16


def test_constrain_and_freeze_refuse_params_where_they_find_no_layer():
    # The whole linen variables instead of variables["params"], or an optimizer over a
    # submodule with constrain of the whole model: no path matched, and the constraint
    # silently did nothing.
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return kl.Conv1D(2, 3, kernel_constraint="non_neg", lora_rank=None)(x)

    x = jnp.ones((1, 6, 3))
    variables = Net().init(jax.random.key(0), x)
    tx = optax.chain(optax.sgd(0.1), constrain(Net(), x))
    tx.init(variables["params"])
    with pytest.raises(ValueError, match=r"kconv.optax.constrain: none of the layers it acts "
                                         r"on \(\['Conv1D_0'\]\) has its weights in the params"):
        tx.init(variables)
    lora = kconv.Conv1D(2, 3, lora_rank=1)
    with pytest.raises(ValueError, match="kconv.optax.freeze: none of the layers"):
        kconv.optax.freeze({"a": lora}).init({"b": lora.init(jax.random.key(0), (None, 6, 3))})


def test_a_shared_layers_weight_penalty_counts_once_as_in_keras():
    # A layer called twice: Keras's model.losses holds its weight penalty once and its
    # activity penalty per call; both Flax tiers counted the weight penalty per call.
    import keras  # conftest.py has set KERAS_BACKEND=jax

    args = dict(padding="same", kernel_regularizer=kconv.regularizers.L2(0.01),
                activity_regularizer="l1")
    x = np.random.default_rng(0).normal(size=(2, 6, 2)).astype(np.float32)
    inp = keras.Input((6, 2))
    shared = keras.layers.Conv1D(2, 3, padding="same", kernel_regularizer=keras.regularizers.L2(
        0.01), activity_regularizer="l1")
    model = keras.Model(inp, shared(shared(inp)))
    params = {"kernel": shared.kernel.numpy(), "bias": shared.bias.numpy()}
    model(x)
    want = float(sum(model.losses))

    class Twice(nn.Module):
        @nn.compact
        def __call__(self, x):
            conv = kl.Conv1D(2, 3, **args)
            return conv(conv(x))

    _, state = Twice().apply({"params": {"Conv1D_0": params}}, x, mutable=["losses"])
    _allclose(kl.total_loss(state["losses"]), want)
    module = kn.from_layer(kconv.Conv1D(2, 3, **args), params)
    _, penalties = nnx.capture(lambda m, x: m(m(x)), kn.Penalty)(module, x)
    _allclose(kn.regularization_loss(penalties), want)


def test_a_layer_tied_across_nn_scan_records_its_weight_penalty_at_every_step():
    # nn.scan with variable_broadcast="params" applies one layer's weights at every step,
    # but Flax gives each step a fresh slice of "losses": each step records as a first
    # call, the weight penalty `length` times (README). Keras's count (its shared layer
    # called 3 times) is the README's way: the weight regularizer left out of the scanned
    # layer and its penalty added once.
    import keras  # conftest.py has set KERAS_BACKEND=jax

    l2 = dict(kernel_regularizer=kconv.regularizers.L2(0.01))
    x = np.random.default_rng(0).normal(size=(2, 6, 2)).astype(np.float32)
    inp = keras.Input((6, 2))
    shared = keras.layers.Conv1D(2, 3, padding="same", activity_regularizer="l1",
                                 kernel_regularizer=keras.regularizers.L2(0.01))
    model = keras.Model(inp, shared(shared(shared(inp))))
    params = {"kernel": shared.kernel.numpy(), "bias": shared.bias.numpy()}
    model(x)
    want = float(sum(model.losses))
    weights_once = float(keras.regularizers.L2(0.01)(shared.kernel))

    def tied(**args):
        class Step(nn.Module):
            @nn.compact
            def __call__(self, h, _):
                return kl.Conv1D(2, 3, padding="same", activity_regularizer="l1", **args)(h), None

        class Tied(nn.Module):
            @nn.compact
            def __call__(self, h):
                return nn.scan(Step, variable_broadcast="params", variable_axes={"losses": 0},
                               split_rngs={"params": False}, length=3)()(h, None)[0]

        _, state = Tied().apply({"params": {"ScanStep_0": {"Conv1D_0": params}}}, x,
                                mutable=["losses"])
        return kl.total_loss(state["losses"])

    np.testing.assert_allclose(tied(**l2), want + 2 * weights_once, rtol=1e-5)
    np.testing.assert_allclose(
        tied() + kconv.Conv1D(2, 3, **l2).regularization_losses(params), want, rtol=1e-5)


def test_penalty_of_an_nnx_stack_is_each_layers():
    # regularization_losses of a module made under nnx.vmap took the stack axis for a
    # batch axis (the activity penalty divided by the stack size too).
    layer = kconv.Conv1D(2, 3, kernel_regularizer="l2", activity_regularizer="l1")

    @nnx.vmap(in_axes=0, out_axes=0)
    def make(key):
        return kn.Conv1D(2, 3, kernel_regularizer="l2", activity_regularizer="l1",
                         in_channels=2, rngs=nnx.Rngs(key))

    stack = make(jax.random.split(jax.random.key(0), 3))
    xs = jax.random.normal(jax.random.key(1), (3, 2, 6, 2))
    ys = nnx.vmap(lambda m, x: m(x))(stack, xs)
    params = {"kernel": stack.kernel[...], "bias": stack.bias[...]}
    want = sum(layer.regularization_losses(jax.tree.map(lambda p: p[i], params), ys[i])
               for i in range(3))
    _allclose(stack.regularization_losses(ys), want)
    _allclose(layer.regularization_losses(params, ys), want)
    _allclose(stack.regularization_losses(), sum(
        layer.regularization_losses(jax.tree.map(lambda p: p[i], params)) for i in range(3)))
