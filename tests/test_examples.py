"""The examples in examples/: each runs in-process at a small setting (outputs under
``tmp_path``) and does what it claims — files written and valid PNGs, the loss falls,
baselines beaten, the WaveNet causal, the orbax checkpoint restoring the saved params leaf
by leaf — plus one ``slow`` test of train_digits at its default settings (>= 0.97 test
accuracy in well under two minutes) and a check that every example runs as a script."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kconv import linen as kl

# Programs as users run them: compiled with XLA's full optimization (conftest.py).
pytestmark = pytest.mark.optimized

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))

import _common  # noqa: E402
import autoencoder  # noqa: E402
import conv3d  # noqa: E402
import train_digits  # noqa: E402
import wavenet  # noqa: E402


def assert_png(path):
    path = Path(path)
    assert path.is_file(), path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert path.stat().st_size > 1000, f"{path} is suspiciously small"


def assert_trees_equal_leafwise(saved, restored):
    saved_leaves = jax.tree_util.tree_flatten_with_path(saved)[0]
    restored_leaves = jax.tree_util.tree_flatten_with_path(restored)[0]
    assert [p for p, _ in saved_leaves] == [p for p, _ in restored_leaves]
    for (path, a), (_, b) in zip(saved_leaves, restored_leaves):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape, jax.tree_util.keystr(path)
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


# --------------------------------------------------------------------------- _common


def test_examples_compile_with_full_optimization():
    # The rest of the suite compiles with XLA's LLVM backend at -O0 (conftest.py).
    assert jax.config.values["jax_disable_most_optimizations"] is False


def test_batch_indices_equal_sizes_cover_without_repeats():
    batches = _common.batch_indices(10, 3, np.random.default_rng(0))
    assert [len(b) for b in batches] == [3, 3, 3]
    flat = np.concatenate(batches)
    assert len(set(flat.tolist())) == 9 and flat.max() < 10
    assert [len(b) for b in _common.batch_indices(5, 8, np.random.default_rng(0))] == [5]


def test_split_is_seeded_and_stratified():
    x = np.arange(100)[:, None]
    y = np.repeat([0, 1], [80, 20])
    a = _common.split(x, y, test_size=0.25, seed=3)
    b = _common.split(x, y, test_size=0.25, seed=3)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert np.bincount(a[3]).tolist() == [20, 5]


def test_checkpoint_round_trip(tmp_path):
    params = {"a": {"kernel": jnp.arange(6.0).reshape(2, 3)},
              "b": {"bias": jnp.ones((4,), jnp.bfloat16)}}
    path = _common.save_checkpoint(tmp_path / "ckpt", params)
    assert os.path.isabs(path) and Path(path).is_dir()
    assert_trees_equal_leafwise(params, _common.restore_checkpoint(path, params))
    # Saving again over the same folder overwrites it.
    params["a"]["kernel"] = params["a"]["kernel"] + 1
    _common.save_checkpoint(tmp_path / "ckpt", params)
    assert_trees_equal_leafwise(params, _common.restore_checkpoint(path, params))


# --------------------------------------------------------------------------- train_digits


def test_train_digits_small(tmp_path, capsys):
    result = train_digits.main(["--epochs", "3", "--batch-size", "128", "--width", "8",
                                "--out", str(tmp_path), "--no-progress"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"test_accuracy=\d\.\d{4}", lines[-1]), lines[-1]
    assert float(lines[-1].split("=")[1]) == pytest.approx(result["test_accuracy"], abs=5e-5)

    history = result["history"]
    assert len(history["loss"]) == len(history["test_accuracy"]) == 3
    assert history["loss"][-1] < history["loss"][0]
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert result["test_accuracy"] > 0.5  # well above chance (0.1) after three epochs

    assert Path(result["plot"]) == tmp_path / "digits_curves.png"
    assert_png(result["plot"])

    # The checkpoint: saved where promised, restores the params leaf by leaf, and the
    # restored params give the identical test accuracy.
    assert Path(result["checkpoint"]) == (tmp_path / "checkpoint").absolute()
    restored = _common.restore_checkpoint(result["checkpoint"], result["params"])
    assert_trees_equal_leafwise(result["params"], restored)
    assert result["restored_test_accuracy"] == result["test_accuracy"]

    # The MaxNorm constraint held after every step.
    params = result["params"]
    kernel = params["Conv2D_0"]["kernel"]
    assert float(jnp.sqrt(jnp.sum(kernel ** 2, axis=(0, 1, 2))).max()) <= 3.0 + 1e-5

    # The penalty the layers sow is the L2 regularizer of every kernel.
    model = train_digits.DigitsCNN(width=8)
    logits, state = jax.jit(lambda p, x: model.apply({"params": p}, x, mutable=["losses"]))(
        params, jnp.ones((2, 8, 8, 1)))
    assert logits.shape == (2, 10)
    expected = 1e-4 * sum(float(jnp.sum(w ** 2)) for layer in params.values()
                          for name, w in layer.items() if name != "bias")
    assert float(kl.total_loss(state["losses"])) == pytest.approx(expected, rel=1e-4)


def test_random_shift():
    images = jnp.arange(2 * 4 * 4, dtype=jnp.float32).reshape(2, 4, 4, 1)
    assert train_digits.random_shift(jax.random.key(0), images, 0) is images
    shifted = train_digits.random_shift(jax.random.key(0), images, 1)
    assert shifted.shape == images.shape
    # Every output is the image moved by at most one pixel, zeros coming in.
    for img, out in zip(np.asarray(images), np.asarray(shifted)):
        padded = np.pad(img, ((1, 1), (1, 1), (0, 0)))
        assert any(np.array_equal(out, padded[i:i + 4, j:j + 4])
                   for i in range(3) for j in range(3))


@pytest.mark.slow
def test_train_digits_default_settings(tmp_path, capsys):
    start = time.perf_counter()
    result = train_digits.main(["--out", str(tmp_path), "--no-progress"])
    seconds = time.perf_counter() - start
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"test_accuracy=\d\.\d{4}", last), last
    assert result["test_accuracy"] >= 0.97, result["test_accuracy"]
    assert seconds < 120, f"train_digits took {seconds:.1f}s"
    assert_png(result["plot"])


# --------------------------------------------------------------------------- autoencoder


def test_autoencoder_small(tmp_path, capsys):
    result = autoencoder.main(["--epochs", "5", "--out", str(tmp_path), "--no-progress"])
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("test_mse=")
    history = result["history"]
    assert history["loss"][-1] < history["loss"][0]
    assert history["test_mse"][-1] < history["test_mse"][0]
    # Well below always predicting the mean training image.
    assert result["test_mse"] < 0.5 * result["baseline_mse"], result
    assert Path(result["plot"]) == tmp_path / "autoencoder_reconstructions.png"
    assert_png(result["plot"])
    assert_png(result["curves"])


def test_autoencoder_uses_transpose_upsampling_cropping():
    model = autoencoder.Autoencoder(width=4)
    x = jnp.ones((3, 8, 8, 1))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    assert jax.eval_shape(model.apply, variables, x).shape == x.shape
    names = [type(m).__name__ for m in
             autoencoder.Autoencoder(width=4).bind(variables).decoder]
    assert {"Conv2DTranspose", "UpSampling2D", "Cropping2D"} <= set(names)


# --------------------------------------------------------------------------- wavenet


@pytest.fixture(scope="module")
def wavenet_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("wavenet")
    return wavenet.main(["--epochs", "6", "--signals", "128", "--batch-size", "16",
                         "--length", "64", "--out", str(out), "--no-progress"]), out


def test_wavenet_beats_naive_baseline(wavenet_result):
    result, out = wavenet_result
    assert result["history"]["loss"][-1] < result["history"]["loss"][0]
    assert result["test_mse"] < result["baseline_mse"], result
    assert Path(result["plot"]).parent == out
    assert_png(result["plot"])
    assert_png(result["prediction_plot"])


def test_wavenet_is_causal(wavenet_result):
    result, _ = wavenet_result
    model = result["model"]
    signal = jnp.asarray(wavenet.make_signals(1, 48, seed=123)[0, :, 0])

    @jax.jit
    def predict(s):
        return model(s[None, :, None])[0, :, 0]

    jac = np.asarray(jax.jit(jax.jacobian(predict))(signal))  # jac[t, u] = d out[t]/d in[u]
    assert jac.shape == (48, 48)
    assert np.all(jac[np.triu_indices(48, k=1)] == 0.0), "an output depends on a later input"
    # ...while it does depend on the present and (up to the receptive field) the past.
    assert np.all(np.abs(np.diagonal(jac)) > 0)
    rf = result["receptive_field"]
    assert np.all(jac[np.tril_indices(48, k=-rf)] == 0.0)
    assert np.abs(jac[40, 40 - rf + 1]) > 0

    # The same by a finite change: perturbing input t changes no output before t.
    base = np.asarray(predict(signal))
    for t in (0, 17, 47):
        changed = np.asarray(predict(signal.at[t].add(5.0)))
        np.testing.assert_array_equal(changed[:t], base[:t])
        assert not np.array_equal(changed[t:], base[t:])


def test_wavenet_constraint_held(wavenet_result):
    model = wavenet_result[0]["model"]
    for block in model.blocks:
        kernel = block.skip.kernel[...]
        assert float(jnp.sqrt(jnp.sum(kernel ** 2, axis=(0, 1))).max()) <= 3.0 + 1e-5


# --------------------------------------------------------------------------- conv3d


def test_conv3d_small(tmp_path, capsys):
    result = conv3d.main(["--epochs", "8", "--volumes", "240", "--out", str(tmp_path),
                          "--no-progress"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"test_accuracy=\d\.\d{4}", last), last
    history = result["history"]
    assert history["loss"][-1] < history["loss"][0]
    assert result["test_accuracy"] > 0.6, result["test_accuracy"]   # chance is 1/3
    assert_png(result["plot"])
    kernel = result["params"][1]["kernel"]
    assert float(jnp.sqrt(jnp.sum(kernel ** 2, axis=(0, 1, 2, 3))).max()) <= 2.0 + 1e-5


def test_conv3d_volumes():
    volumes, labels = conv3d.make_volumes(30, noise=0.0, seed=1)
    assert volumes.shape == (30, 12, 12, 12, 1) and labels.shape == (30,)
    assert set(labels.tolist()) <= {0, 1, 2}
    # Without noise, the bar's axis is the one along which the object extends furthest.
    for v, y in zip(volumes[..., 0], labels):
        extents = [np.count_nonzero(v.any(axis=tuple(a for a in range(3) if a != k)))
                   for k in range(3)]
        assert extents[y] > max(e for k, e in enumerate(extents) if k != y)


# --------------------------------------------------------------------------- scripts


@pytest.mark.parametrize("script", ["train_digits.py", "autoencoder.py", "wavenet.py",
                                    "conv3d.py"])
def test_runs_as_script(script):
    # `python examples/<script>` from the repository root: `from _common import ...` must
    # resolve through the script's own folder.
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--help"],
                          cwd=EXAMPLES.parent, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for option in ("--epochs", "--batch-size", "--lr", "--seed", "--out"):
        assert option in proc.stdout


def test_train_digits_data_parallel(tmp_path):
    # `--devices 2` on this CPU: the script asks XLA for 2 host devices before JAX starts.
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / "train_digits.py"), "--devices", "2",
                           "--epochs", "3", "--no-progress", "--out", str(tmp_path)],
                          cwd=EXAMPLES.parent, capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "data parallel over 2 devices" in proc.stdout
    accuracy = float(re.fullmatch(r"test_accuracy=(\d\.\d{4})",
                                  proc.stdout.strip().splitlines()[-1]).group(1))
    assert accuracy > 0.5  # 3 epochs: well above chance (0.1)


def test_quickstart_runs():
    # The one-minute tour of the pure tier (README): builds, jits, differentiates, trains.
    proc = subprocess.run([sys.executable, str(EXAMPLES / "quickstart.py")],
                          cwd=EXAMPLES.parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, last = (float(v) for v in re.search(
        r"200 adam steps: loss ([\d.]+) -> ([\d.]+)", proc.stdout).groups())
    assert last < first
    assert proc.stdout.strip().splitlines()[-1].startswith("final_loss=")
