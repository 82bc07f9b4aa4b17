"""Shared fixtures: quiet TensorFlow, fixed seeds, a fresh Keras session per test."""

import inspect
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


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
