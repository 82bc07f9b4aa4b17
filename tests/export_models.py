"""Small pruned models shared by the export tests (built once per process)."""

import functools

import keras
import numpy as np

import keras_pruning as kp


@functools.cache
def pruned_cnn(sparsity=0.8):
    """A Conv16-Pool-Dense64-Dense10 CNN on 28x28x1 with masks at `sparsity`,
    and calibration data. Returns `(pruned_model, x, y)`."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            # Explicit names: the tests read them, and Keras's automatic
            # names depend on what the same process built before.
            keras.layers.Conv2D(16, 3, activation="relu", name="conv2d"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu", name="dense"),
            keras.layers.Dense(10, name="dense_1"),
        ]
    )
    pruned = kp.prune_low_magnitude(
        model, kp.ConstantSparsity(sparsity, 0, frequency=1)
    )
    for wrapper in kp.pruning_wrappers(pruned):
        wrapper.update_masks(sparsity)
    rng = np.random.default_rng(0)
    x = rng.random((64, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, 64)
    return pruned, x, y
