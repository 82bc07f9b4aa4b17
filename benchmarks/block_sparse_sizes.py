"""LiteRT sparse-encoded int8 file sizes: single-weight vs (16, 1)-block masks.

The test CNN (Conv16-Pool-Dense64-Dense10 on 28x28x1) is pruned one-shot with
`prune_to_sparsity` at each sparsity, with single-weight masks and with
`block_size=(16, 1)` (LiteRT's int8 1x16 `FULLY_CONNECTED` block), and
exported with `to_tflite(..., quantize="int8", sparse=True)`.

    .venv/bin/python benchmarks/block_sparse_sizes.py
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_pruning as kp  # noqa: E402
from keras_pruning.export import to_tflite  # noqa: E402


def cnn():
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(16, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(10),
        ]
    )


def main():
    keras.utils.set_random_seed(0)
    model = cnn()
    x = np.random.default_rng(0).random((64, 28, 28, 1)).astype("float32")

    def size(m, sparse):
        return len(to_tflite(m, quantize="int8", representative_data=x, sparse=sparse))

    result = {"dense_encoded": size(model, False)}
    for sparsity in (0.5, 0.8):
        result[f"{sparsity:.0%}"] = {
            "single_weights": size(kp.prune_to_sparsity(model, sparsity), True),
            "block_16x1": size(
                kp.prune_to_sparsity(model, sparsity, block_size=(16, 1)), True
            ),
        }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
