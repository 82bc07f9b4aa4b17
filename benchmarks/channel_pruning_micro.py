"""What removing channels buys on a microcontroller: one-shot structured
pruning of a small int8 CNN, run in TFLite Micro and LiteRT.

Reports parameters, MACs, the micro `.tflite` size, the smallest TFLite Micro
arena and the median invoke times, dense and with half the channels of every
group removed (`keras_pruning.structured.prune_channels`). Weights are random:
size and speed do not depend on them. Run it on a quiet machine.

    .venv/bin/python benchmarks/channel_pruning_micro.py [--sparsity 0.5]
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_pruning as kp  # noqa: E402
from keras_pruning.export import min_arena_bytes, to_tflite, verify  # noqa: E402
from keras_pruning.structured import prune_channels  # noqa: E402


def cnn():
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(10),
        ]
    )


def measure(model, x):
    micro = to_tflite(model, quantize="int8", representative_data=x, target="micro")
    return {
        "parameters": model.count_params(),
        "macs": sum(row.macs for row in kp.model_cost(model)),
        "micro_bytes": len(micro),
        "micro_arena_bytes": min_arena_bytes(micro),
        "micro_invoke_ms": verify(micro, model, x, runtime="micro").invoke_ms,
        "litert_invoke_ms": verify(micro, model, x, runtime="litert").invoke_ms,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsity", type=float, default=0.5)
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((200, 28, 28, 1)).astype("float32")
    dense = cnn()
    small = prune_channels(dense, args.sparsity)
    result = {"dense": measure(dense, x), "pruned": measure(small, x)}
    result["speedup_micro"] = (
        result["dense"]["micro_invoke_ms"] / result["pruned"]["micro_invoke_ms"]
    )
    result["arena_ratio"] = (
        result["pruned"]["micro_arena_bytes"] / result["dense"]["micro_arena_bytes"]
    )
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
