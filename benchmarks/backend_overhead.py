"""Training-step overhead of pruning on each Keras backend.

For TensorFlow, JAX and PyTorch in turn (each in its own process: the backend
is chosen at import), trains a small CNN on Fashion-MNIST-shaped data (random
28x28x1 images, batch 32, Adam, `fit` with each backend's default
compilation) dense and pruned, interleaving the two, and reports the median
of the per-epoch ratios pruned / dense. This machine is noisy (other jobs
share its cores): compare ratios from one run only.

    .venv/bin/python benchmarks/backend_overhead.py [--repeats 7] [--steps 100]
"""

import argparse
import json
import os
import subprocess
import sys

BACKENDS = ("tensorflow", "jax", "torch")


def _measure_here(steps, repeats):
    import keras
    from training_overhead import cnn, measure

    result = measure(cnn, (28, 28, 1), steps, repeats)
    result["versions"] = {"keras": keras.__version__}
    if keras.backend.backend() == "jax":
        import jax

        result["versions"]["jax"] = jax.__version__
    elif keras.backend.backend() == "torch":
        import torch

        result["versions"]["torch"] = torch.__version__
    else:
        import tensorflow as tf

        result["versions"]["tensorflow"] = tf.__version__
    return result


def _measure_in_process(backend, steps, repeats):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, __file__, "--steps", str(steps)]
    command += ["--repeats", str(repeats), "--child"]
    output = subprocess.run(
        command, env=env, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure_here(args.steps, args.repeats)))
        return
    results = {
        "command": "python benchmarks/backend_overhead.py "
        f"--repeats {args.repeats} --steps {args.steps}",
        "cnn": {b: _measure_in_process(b, args.steps, args.repeats) for b in BACKENDS},
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
