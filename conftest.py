"""Test-suite set-up shared by tests/ and the doctests in kconv/ and README.md.

Keras is the numerical oracle and must run on JAX; both Keras and kconv read
``$KERAS_HOME/keras.json``, so the suite points KERAS_HOME at a fresh empty folder, where a
developer's own keras.json (say, channels_first) cannot change what the tests see.
"""

import atexit
import os
import shutil
import tempfile

os.environ["KERAS_BACKEND"] = "jax"
os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="kconv-keras-home-")
# One folder per process (pytest-xdist's workers import this too), gone when it exits.
atexit.register(shutil.rmtree, os.environ["KERAS_HOME"], ignore_errors=True)

# Not test modules, and not importable in the suite: a fixture generator that needs
# TensorFlow, and a script meant for a fresh process with 8 simulated devices (it sets
# XLA_FLAGS when imported).
collect_ignore = ["tests/fixtures/make_tf_keras_fixtures.py", "tests/sharding_check.py"]
