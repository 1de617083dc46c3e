"""Test-suite set-up shared by tests/ and the doctests in kconv/ and README.md.

Keras is the numerical oracle and must run on JAX; both Keras and kconv read
``$KERAS_HOME/keras.json``, so the suite points KERAS_HOME at a fresh empty folder, where a
developer's own keras.json (say, channels_first) cannot change what the tests see.
"""

import os
import tempfile

os.environ["KERAS_BACKEND"] = "jax"
os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="kconv-keras-home-")
