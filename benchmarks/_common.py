"""Pure helpers shared by the benchmark sections and the TFMOT worker.

Nothing here imports Keras or TensorFlow: the TFMOT worker (`tf_keras`, with
`TF_USE_LEGACY_KERAS=1`) imports this module too.
"""

import contextlib
import datetime
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

# Display name -> distribution name, for the versions stamped on every figure.
PACKAGES = {
    "tensorflow": "tensorflow",
    "keras": "keras",
    "tf_keras": "tf-keras",
    "tfmot": "tensorflow-model-optimization",
    "keras_pruning": "keras-pruning",
    "ai-edge-litert": "ai-edge-litert",
    "tflite-micro": "tflite-micro",
    "numpy": "numpy",
}

# The Fashion-MNIST CNN of the accuracy section and the MLP, as
# `[class_name, kwargs]` pairs that both Keras 3 and tf_keras build.
CNN_LAYERS = [
    ["Conv2D", {"filters": 32, "kernel_size": 3, "activation": "relu"}],
    ["MaxPooling2D", {}],
    ["Conv2D", {"filters": 64, "kernel_size": 3, "activation": "relu"}],
    ["MaxPooling2D", {}],
    ["Flatten", {}],
    ["Dense", {"units": 128, "activation": "relu"}],
    ["Dense", {"units": 10}],
]
MLP_LAYERS = [
    ["Flatten", {}],
    ["Dense", {"units": 300, "activation": "relu"}],
    ["Dense", {"units": 100, "activation": "relu"}],
    ["Dense", {"units": 10}],
]
IMAGE_SHAPE = (28, 28, 1)
MOBILENET = {"alpha": 0.35, "input_shape": (96, 96, 3), "classes": 10}


def build_sequential(keras_module, layers, input_shape=IMAGE_SHAPE, name=None):
    """A Sequential model from `[class_name, kwargs]` pairs, in `keras_module`
    (`keras` or `tf_keras`)."""
    return keras_module.Sequential(
        [keras_module.Input(tuple(input_shape))]
        + [getattr(keras_module.layers, cls)(**kwargs) for cls, kwargs in layers],
        name=name,
    )


OVERHEAD_MODELS = ("cnn", "mlp", "mobilenetv2")


def build_model(keras_module, name):
    """One of `OVERHEAD_MODELS`, in `keras_module` (`keras` or `tf_keras`)."""
    if name == "cnn":
        return build_sequential(keras_module, CNN_LAYERS)
    if name == "mlp":
        return build_sequential(keras_module, MLP_LAYERS)
    if name == "mobilenetv2":
        return keras_module.applications.MobileNetV2(
            alpha=MOBILENET["alpha"],
            input_shape=MOBILENET["input_shape"],
            classes=MOBILENET["classes"],
            weights=None,
            classifier_activation=None,
        )
    raise ValueError(
        f"`name` must be one of {OVERHEAD_MODELS}. Received: name={name!r}"
    )


def noop_batch_callback(keras_module):
    """A callback that does nothing before each batch: what any per-batch
    callback costs (`UpdatePruningStep` is one)."""

    class NoopBatchCallback(keras_module.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            pass

    return NoopBatchCallback()


def variable_bytes(variables):
    """Bytes of Keras 3 or tf_keras variables."""
    return sum(
        int(np.prod(v.shape))
        * np.dtype(getattr(v.dtype, "as_numpy_dtype", v.dtype)).itemsize
        for v in variables
    )


def overhead_schedule_args(task):
    """PolynomialDecay 0 -> 80% over the whole measurement, one mask update
    in every timed epoch (`task["steps"]` steps)."""
    steps = task["steps"]
    return {
        "initial_sparsity": 0.0,
        "final_sparsity": 0.8,
        "begin_step": 0,
        "end_step": steps * (task["repeats"] + 2),
        "frequency": steps,
    }


# A schedule that never updates a mask: a model pruned with it pays the
# per-step masking and the per-batch callback, and no mask update.
NEVER_UPDATING_SCHEDULE = {"target_sparsity": 0.8, "begin_step": 10**9}


def measure_overhead(
    task,
    keras_module,
    update_step,
    dense,
    pruned,
    never_updated,
    masks,
    x,
    y,
    held=None,
):
    """The overhead row of one task: `dense`, `dense` with a no-op per-batch
    callback, `pruned` and `never_updated` (the model pruned with
    `ConstantSparsity(**NEVER_UPDATING_SCHEDULE)`), both trained with an
    instance of the library's `update_step` callback class, and `held` if
    given (pruned as `pruned`, trained with
    `update_step(hold_pruned_weights_at_zero=True)`), each train epochs of
    `task["steps"]` steps, interleaved `task["repeats"]` times; ratios are
    medians of per-round ratios. Memory: `masks` and the whole pruning state
    over the weights. `keras_module` is `keras` or `tf_keras`."""
    steps = task["steps"]

    def fit(model, model_callbacks):
        return lambda: model.fit(
            x,
            y,
            batch_size=task["batch_size"],
            epochs=1,
            verbose=0,
            callbacks=model_callbacks,
        )

    contenders = {
        "dense": fit(dense, None),
        "dense_noop": fit(dense, [noop_batch_callback(keras_module)]),
        "pruned": fit(pruned, [update_step()]),
        "never_updated": fit(never_updated, [update_step()]),
    }
    if held is not None:
        contenders["held"] = fit(held, [update_step(hold_pruned_weights_at_zero=True)])
    times = interleaved(contenders, task["repeats"])
    weight_bytes = variable_bytes(dense.weights)
    mask_bytes = variable_bytes(masks)
    state_bytes = variable_bytes(pruned.weights) - weight_bytes
    row = {
        "model": task["model"],
        "parameters": int(dense.count_params()),
        "steps": steps,
        "repeats": task["repeats"],
        "dense_step_ms": 1000 * median(times["dense"]) / steps,
        "pruned_step_ms": 1000 * median(times["pruned"]) / steps,
        "ratio": median_ratio(times["pruned"], times["dense"]),
        "ratio_of_medians": median(times["pruned"]) / median(times["dense"]),
        "noop_callback_ratio": median_ratio(times["dense_noop"], times["dense"]),
        "ratio_to_noop_callback": median_ratio(times["pruned"], times["dense_noop"]),
        "never_updated_ratio": median_ratio(times["never_updated"], times["dense"]),
        "dense_seconds": times["dense"],
        "pruned_seconds": times["pruned"],
        "dense_noop_seconds": times["dense_noop"],
        "never_updated_seconds": times["never_updated"],
        "mask_bytes": mask_bytes,
        "state_bytes": state_bytes,
        "weight_bytes": weight_bytes,
        "mask_over_weight_bytes": mask_bytes / weight_bytes,
        "state_over_weight_bytes": state_bytes / weight_bytes,
    }
    if held is not None:
        row["held_ratio"] = median_ratio(times["held"], times["dense"])
        row["held_seconds"] = times["held"]
    return row


def overhead_inputs(task, data):
    """`(x, y)` for one overhead task: `steps * batch_size` samples of
    Fashion-MNIST, or random 96x96x3 images for MobileNetV2."""
    n = task["steps"] * task["batch_size"]
    if task["model"] == "mobilenetv2":
        rng = np.random.default_rng(0)
        x = rng.random((n, *MOBILENET["input_shape"]), dtype=np.float32)
        return x, rng.integers(0, 10, n)
    x = (data["x_train"][:n, ..., None] / 255.0).astype("float32")
    return x, data["y_train"][:n].astype("int64")


def versions():
    """Versions of Python and of every package in `PACKAGES` (`None` when a
    package is not installed)."""
    found = {"python": platform.python_version()}
    for label, dist in PACKAGES.items():
        try:
            found[label] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[label] = None
    return found


def machine():
    """What the timings ran on."""
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.machine(),
    }


def stamp(result, command, started):
    """`result` with its provenance: the command, versions, machine, the
    finishing time (UTC, ISO 8601) and the seconds since `started`
    (a `time.perf_counter()` value)."""
    return {
        **result,
        "provenance": {
            "command": command,
            "versions": versions(),
            "machine": machine(),
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
            "seconds": round(time.perf_counter() - started, 1),
        },
    }


def interleaved(functions, repeats, warmup=1, clock=time.perf_counter):
    """Times each function in `functions` (a dict name -> callable) `repeats`
    times, interleaved: round `r` calls them in order, or in reverse order
    when `r` is odd, so that a slow drift of the machine hits all alike.
    `warmup` untimed rounds come first (tracing, caches).

    Returns:
        A dict name -> list of `repeats` durations in seconds, in round order.
    """
    if repeats < 1:
        raise ValueError(f"`repeats` must be at least 1. Received: repeats={repeats}")
    names = list(functions)
    for _ in range(warmup):
        for name in names:
            functions[name]()
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            start = clock()
            functions[name]()
            times[name].append(clock() - start)
    return times


def run_python(argv, env, what, timeout=None):
    """Runs `python *argv` with `env`; returns its stdout. RuntimeError with
    the end of its output, naming `what`, if it fails."""
    done = subprocess.run(
        [sys.executable, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{what} failed ({done.returncode}):\n"
            + done.stdout[-4000:]
            + done.stderr[-4000:]
        )
    return done.stdout


def over_seeds(accuracies, seeds):
    """`{"accuracy": mean, "std": sample standard deviation, "accuracies",
    "seeds"}` of one method's runs with different training seeds."""
    values = np.asarray(accuracies, dtype="float64")
    return {
        "accuracy": float(values.mean()),
        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "accuracies": [float(v) for v in values],
        "seeds": list(seeds),
    }


def median(values):
    return float(statistics.median(values))


def median_ratio(numerators, denominators):
    """The median of the per-round ratios `numerators[i] / denominators[i]`:
    each ratio compares two measurements taken in the same minute."""
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError(
            "`numerators` and `denominators` must be non-empty and of equal length. "
            f"Received: {len(numerators)} and {len(denominators)} values"
        )
    return median([n / d for n, d in zip(numerators, denominators, strict=True)])


def entropy_bits(sparsity):
    """Binary entropy `H(s) = -s log2 s - (1 - s) log2(1 - s)`, in bits."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"`sparsity` must be in [0, 1]. Received: sparsity={sparsity}")
    if sparsity in (0.0, 1.0):
        return 0.0
    return -sparsity * math.log2(sparsity) - (1 - sparsity) * math.log2(1 - sparsity)


def floor_bytes(weights, bits=8):
    """The information floor of pruned weights: `nnz * bits + n * H(s)` bits
    for each weight of `n` values with `nnz` nonzeros (`s = 1 - nnz / n`),
    summed, in bytes (rounded up). `weights` is a list of `(n, nnz)` pairs."""
    total = 0.0
    for n, nnz in weights:
        if n <= 0 or not 0 <= nnz <= n:
            raise ValueError(
                f"Each weight needs n > 0 and 0 <= nnz <= n. Received: n={n}, nnz={nnz}"
            )
        total += nnz * bits + n * entropy_bits(1 - nnz / n)
    return int(math.ceil(total / 8))


def pruning_schedule_args(steps_per_epoch, final_sparsity, updates=10):
    """The shared PolynomialDecay arguments of the accuracy section: from 0 to
    `final_sparsity` over about the first epoch, in `updates` mask updates
    (the last one lands exactly on `end_step`, so the final sparsity is
    reached); the rest of the pruning budget fine-tunes at that sparsity."""
    frequency = max(1, steps_per_epoch // updates)
    return {
        "initial_sparsity": 0.0,
        "final_sparsity": final_sparsity,
        "begin_step": 0,
        "end_step": frequency * updates,
        "frequency": frequency,
    }


def training_order(n, epochs, seed):
    """The order in which a training run of the accuracy section sees its
    `n` examples: `epochs` permutations of `range(n)` drawn from `seed`, one
    after the other. Both frameworks train on `x[order]` without shuffling,
    so a Keras 3 run and a tf_keras run with the same seed see the same
    batches in the same order, and their accuracies can be compared seed by
    seed."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.permutation(n) for _ in range(epochs)])


def loglog_slope(xs, ys):
    """The least-squares slope of `log(y)` against `log(x)`: 1 for cost that
    grows linearly with `x`, below 1 for sublinear growth."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError(
            f"Need at least two (x, y) points. Received: {len(xs)} x and {len(ys)} y"
        )
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    spread = sum((x - mx) ** 2 for x in lx)
    if spread == 0:
        raise ValueError("The x values must not all be equal.")
    return sum((x - mx) * (y - my) for x, y in zip(lx, ly, strict=True)) / spread


def write_atomic(path, text):
    """Writes `text` (str or bytes) to `path` through a temporary file in the
    same folder, renamed into place."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    mode = "wb" if isinstance(text, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, mode) as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_json(path, data):
    return write_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
