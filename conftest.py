"""Test-suite set-up shared by tests/ and the doctests in kconv/ and README.md.

Keras is the numerical oracle and must run on JAX; both Keras and kconv read
``$KERAS_HOME/keras.json``, so the suite points KERAS_HOME at a fresh empty folder, where a
developer's own keras.json (say, channels_first) cannot change what the tests see.

Most of the suite's time is XLA compiling thousands of small programs whose numbers and
structure it checks (lowering cross-products against XLA's plain convolution, gradients,
transformations), so they compile with ``jax_disable_most_optimizations``: XLA's HLO passes
(fusion, layouts, the buffers ``memory_analysis`` reports) run as always, its LLVM backend
at ``-O0`` — a third less compile time, the same operations. Tests of what users run as
programs (the examples, the notebook, the benchmark harness) are marked ``optimized`` and
compile as users' code does.
"""

import atexit
import os
import shutil
import tempfile

import jax
import pytest

os.environ["KERAS_BACKEND"] = "jax"
os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="kconv-keras-home-")
# One folder per process (pytest-xdist's workers import this too), gone when it exits.
atexit.register(shutil.rmtree, os.environ["KERAS_HOME"], ignore_errors=True)

# Not test modules, and not importable in the suite: a fixture generator that needs
# TensorFlow, and a script meant for a fresh process with 8 simulated devices (it sets
# XLA_FLAGS when imported).
collect_ignore = ["tests/fixtures/make_tf_keras_fixtures.py", "tests/sharding_check.py"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Each test (its fixtures' set-up too, module-scoped ones included) compiles with XLA's
    full optimization if marked ``optimized``, else with its LLVM backend at -O0."""
    jax.config.update("jax_disable_most_optimizations",
                      item.get_closest_marker("optimized") is None)
    yield
