"""Section 6, training overhead on every Keras backend.

The overhead section's measurement (`overhead.measure`: dense, dense with a
no-op per-batch callback, and pruned, interleaved; the median of per-round
ratios) of the CNN and the MLP, run once per backend: TensorFlow, JAX and
PyTorch, each in its own process (the backend is chosen at import), one
after the other in the same minutes. `fit` compiles as each backend does by
default (TensorFlow: `tf.function`; JAX: `jax.jit`; PyTorch: eager).
`python benchmarks/run.py --sections backends` runs it.
"""

import argparse
import json
import os

import _common

BACKENDS = ("tensorflow", "jax", "torch")
MODELS = ("cnn", "mlp")


def tasks(quick):
    """The overhead section's CNN and MLP tasks (100 steps per timed epoch)."""
    import overhead

    return [t for t in overhead.tasks(quick) if t["model"] in MODELS]


def _measure_here(data_path, quick):
    import keras
    import numpy as np
    import overhead

    with np.load(data_path) as archive:
        data = {key: archive[key] for key in archive.files}
    return {
        "backend": keras.backend.backend(),
        "versions": _common.versions(),
        "models": {t["model"]: overhead.measure(t, data) for t in tasks(quick)},
    }


def _measure_in_process(backend, data_path, quick):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    argv = [os.path.abspath(__file__), data_path] + (["--quick"] if quick else [])
    stdout = _common.run_python(argv, env, f"The {backend} measurement")
    return json.loads(stdout.strip().splitlines()[-1])


def run(quick, data_path):
    """`{"backends": {backend: {model: overhead row}}}`, one process each."""
    return {
        "backends": {
            backend: _measure_in_process(backend, data_path, quick)["models"]
            for backend in BACKENDS
        }
    }


def main():
    parser = argparse.ArgumentParser(description="One backend's measurement.")
    parser.add_argument("data", help="npz with x_train and y_train")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(json.dumps(_measure_here(args.data, args.quick)))


if __name__ == "__main__":
    main()
