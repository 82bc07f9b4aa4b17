"""Training-step overhead of pruning: pruned step time / dense step time.

Measures the same model dense and pruned, interleaved, and reports the median
of repeated epochs (this machine is noisy: compare ratios from one run only).
Also reports mask memory / weight memory.

    .venv/bin/python benchmarks/training_overhead.py [--repeats 7]
"""

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_pruning as kp  # noqa: E402


def mlp():
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(300, activation="relu"),
            keras.layers.Dense(100, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def cnn():
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def _epoch_seconds(model, x, y, callbacks):
    start = time.perf_counter()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=callbacks)
    return time.perf_counter() - start


def measure(build, input_shape, steps, repeats):
    rng = np.random.default_rng(0)
    x = rng.random((32 * steps, *input_shape)).astype("float32")
    y = rng.integers(0, 10, 32 * steps)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    keras.utils.set_random_seed(0)
    dense = build()
    dense.compile("adam", loss)
    keras.utils.set_random_seed(0)
    schedule = kp.PolynomialDecay(
        0.0, 0.8, begin_step=0, end_step=10 * steps, frequency=100
    )
    pruned = kp.prune_low_magnitude(build(), schedule)
    pruned.compile("adam", loss)
    callbacks = [kp.UpdatePruningStep()]
    _epoch_seconds(dense, x, y, None)  # warm-up: tracing
    _epoch_seconds(pruned, x, y, callbacks)
    dense_times, pruned_times = [], []
    for _ in range(repeats):
        dense_times.append(_epoch_seconds(dense, x, y, None))
        pruned_times.append(_epoch_seconds(pruned, x, y, callbacks))
    ratios = [p / d for p, d in zip(pruned_times, dense_times, strict=True)]
    weights = sum(w.size * w.dtype.itemsize for w in dense.get_weights())
    masks = sum(
        int(np.prod(m.shape)) * np.dtype(m.dtype).itemsize
        for wrapper in kp.pruning_wrappers(pruned)
        for m in wrapper.masks
    )
    return {
        "dense_step_ms": 1000 * float(np.median(dense_times)) / steps,
        "pruned_step_ms": 1000 * float(np.median(pruned_times)) / steps,
        "overhead_ratio_median": float(np.median(ratios)),
        "mask_bytes_over_weight_bytes": masks / weights,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    results = {
        "command": f"python benchmarks/training_overhead.py --repeats {args.repeats} "
        f"--steps {args.steps}",
        "versions": {
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
            "python": platform.python_version(),
        },
        "mlp": measure(mlp, (784,), args.steps, args.repeats),
        "cnn": measure(cnn, (28, 28, 1), args.steps, args.repeats),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
