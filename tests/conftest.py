"""Shared fixtures: quiet TensorFlow, fixed seeds, a fresh Keras session per test.

The suite runs on TensorFlow. Under `KERAS_BACKEND=jax` or `torch`, the tests
marked `backends` run (files mark themselves with
`pytestmark = pytest.mark.backends`). A test marked with backend names
(`tensorflow`, `jax`, `torch`) runs on those only. Tests that do not run on
the current backend are deselected, not skipped.
"""

import inspect
import json
import os
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

_BACKENDS = ("tensorflow", "jax", "torch")


def _runs_here(item, backend):
    """A test marked with backend names runs on those; one marked `backends`
    on all three; any other test on TensorFlow only."""
    only = [name for name in _BACKENDS if item.get_closest_marker(name) is not None]
    if only:
        return backend in only
    return backend == "tensorflow" or item.get_closest_marker("backends") is not None


def pytest_collection_modifyitems(config, items):
    backend = keras.backend.backend()
    selected = [item for item in items if _runs_here(item, backend)]
    if len(selected) < len(items):
        config.hook.pytest_deselected(
            items=[item for item in items if not _runs_here(item, backend)]
        )
        items[:] = selected


def gradients(loss_of, variables):
    """The gradients of `loss_of()` with respect to `variables`, as NumPy
    arrays, computed the current backend's way."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch([v.value for v in variables])
            loss = loss_of()
        grads = tape.gradient(loss, [v.value for v in variables])
    elif backend == "jax":
        import jax

        def loss_at(values):
            with keras.StatelessScope(
                state_mapping=list(zip(variables, values, strict=True))
            ):
                return loss_of()

        grads = jax.grad(loss_at)([v.value for v in variables])
    else:
        import torch

        grads = torch.autograd.grad(loss_of(), [v.value for v in variables])
    return [keras.ops.convert_to_numpy(g) for g in grads]


def _clear_session():
    # A full gc.collect() costs ~0.5 s with TensorFlow loaded; skip it where
    # this Keras version allows.
    if "free_memory" in inspect.signature(keras.utils.clear_session).parameters:
        keras.utils.clear_session(free_memory=False)
    else:
        keras.utils.clear_session()


@pytest.fixture(autouse=True)
def fresh_session():
    """Clears Keras state and fixes every seed before each test."""
    _clear_session()
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def dense_model(input_dim=8, hidden=16, classes=3):
    """A small Sequential MLP used across test files."""
    return keras.Sequential(
        [
            keras.Input((input_dim,)),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(classes),
        ]
    )


def write_idx(path, array):
    """Writes `array` (uint8, 1-D labels or 3-D images) as an IDX file,
    gzipped when `path` ends in `.gz`."""
    import gzip

    magic = 2051 if array.ndim == 3 else 2049
    header = magic.to_bytes(4, "big") + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as file:
        file.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_fashion_mnist(folder, n_train=64, n_test=32, suffix=".gz", seed=0):
    """A Fashion-MNIST-shaped dataset of random images; returns the arrays."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, np.uint8),
    }
    for stem, array in arrays.items():
        write_idx(os.path.join(folder, stem + suffix), array)
    return arrays


@pytest.fixture(scope="session")
def fashion_mnist_dir(tmp_path_factory):
    """The real Fashion-MNIST (Debian's package, which `make test` installs
    when run as root), or else a small random stand-in in the same format."""
    from keras_pruning.datasets import DEBIAN_FASHION_MNIST

    if os.path.isfile(os.path.join(DEBIAN_FASHION_MNIST, "t10k-labels-idx1-ubyte.gz")):
        return DEBIAN_FASHION_MNIST
    folder = tmp_path_factory.mktemp("fashion-mnist")
    write_fashion_mnist(folder, n_train=600, n_test=300)
    return str(folder)


def run_in_fresh_process(script, backend=None):
    """Runs `script` (dedented) in a new Python process with TensorFlow quiet,
    on Keras backend `backend` (defaults to this process's), and returns the
    JSON value on the last line it prints."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env["KERAS_BACKEND"] = backend or keras.backend.backend()
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])
