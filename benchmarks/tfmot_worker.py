"""TFMOT 0.8.1 on tf_keras: the baseline half of the benchmark.

    TF_USE_LEGACY_KERAS=1 python benchmarks/tfmot_worker.py SPEC.json

`benchmarks/run.py` starts this script in a subprocess (importing TFMOT would
switch `tf.keras` to tf_keras in the benchmark's own process), so TFMOT and
keras-pruning are measured on the same machine in the same minutes. SPEC.json:

- `"data"`: an npz with `x_train` (uint8, n x 28 x 28), `y_train`, `x_test`,
  `y_test`: the Fashion-MNIST arrays the Keras 3 side uses.
- `"overhead"`: a list of `{"model", "steps", "repeats", "batch_size"}`;
  `model` is `"cnn"`, `"mlp"` or `"mobilenetv2"`. Step times of the dense
  and the TFMOT-pruned model, interleaved, as in `overhead.py`.
- `"accuracy"`: `{"weights", "sparsities", "epochs", "batch_size",
  "learning_rate", "seeds", "schedules"}`: the CNN gets the dense weights
  (npz, `layer{i}_w{j}`), is pruned with `PolynomialDecay(**schedules[s])`
  for each sparsity `s`, trained `epochs` with each training seed (on the
  examples in the order of `_common.training_order`), stripped and
  evaluated; the mean over seeds is reported, with a dense control trained
  as long without pruning.
- `"out"`: where the JSON result goes.
"""

import json
import os
import sys
import time

if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    raise SystemExit("tfmot_worker.py must run with TF_USE_LEGACY_KERAS=1")

import _common  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras  # noqa: E402
from tensorflow_model_optimization.python.core.sparsity.keras import (  # noqa: E402
    pruning_wrapper,
)

sparsity = tfmot.sparsity.keras


def _loss():
    return tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def overhead(task, data):
    """Dense and TFMOT-pruned step times, interleaved; pruning state memory."""
    x, y = _common.overhead_inputs(task, data)
    tf_keras.utils.set_random_seed(0)
    dense = _common.build_model(tf_keras, task["model"])
    dense.compile(tf_keras.optimizers.Adam(1e-3), _loss())
    schedule = sparsity.PolynomialDecay(**_common.overhead_schedule_args(task))
    pruned = sparsity.prune_low_magnitude(
        _common.build_model(tf_keras, task["model"]), schedule
    )
    pruned.compile(tf_keras.optimizers.Adam(1e-3), _loss())
    masks = [
        mask
        for layer in pruned.layers
        if isinstance(layer, pruning_wrapper.PruneLowMagnitude)
        for _, mask, _ in layer.pruning_vars
    ]
    never_updated = sparsity.prune_low_magnitude(
        _common.build_model(tf_keras, task["model"]),
        sparsity.ConstantSparsity(**_common.NEVER_UPDATING_SCHEDULE),
    )
    never_updated.compile(tf_keras.optimizers.Adam(1e-3), _loss())
    return _common.measure_overhead(
        task,
        tf_keras,
        sparsity.UpdatePruningStep,
        dense,
        pruned,
        never_updated,
        masks,
        x,
        y,
    )


def _kernel_sparsity(model):
    sizes = zeros = 0
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is not None:
            k = kernel.numpy()
            sizes += k.size
            zeros += int(np.sum(k == 0))
    return zeros / sizes


def _dense_cnn(weights):
    """The CNN in tf_keras with the Keras 3 side's dense `weights`."""
    model = _common.build_sequential(tf_keras, _common.CNN_LAYERS)
    with_weights = [layer for layer in model.layers if layer.weights]
    for i, layer in enumerate(with_weights):
        layer.set_weights(
            [weights[f"layer{i}_w{j}"] for j in range(len(layer.weights))]
        )
    return model


def _evaluate(model, x_test, y_test):
    model.compile(loss=_loss(), metrics=["accuracy"])
    return float(model.evaluate(x_test, y_test, batch_size=512, verbose=0)[1])


def _train(spec, weights, seed, ordered, schedule=None):
    """The dense CNN trained `spec["epochs"]` on `ordered` (the examples of
    training seed `seed`, in the order of `_common.training_order`): pruned
    with `schedule` and stripped, or dense (the control) without."""
    tf_keras.backend.clear_session()
    tf_keras.utils.set_random_seed(seed)
    model = _dense_cnn(weights)
    callbacks = []
    if schedule is not None:
        model = sparsity.prune_low_magnitude(model, pruning_schedule=schedule)
        callbacks = [sparsity.UpdatePruningStep()]
    model.compile(tf_keras.optimizers.Adam(spec["learning_rate"]), _loss())
    x_train, y_train = ordered
    model.fit(
        x_train,
        y_train,
        batch_size=spec["batch_size"],
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )
    return model if schedule is None else sparsity.strip_pruning(model)


def accuracy(spec, data):
    """Prune the dense CNN to each sparsity, fine-tune, strip, evaluate; and
    the dense control."""
    x_train = (data["x_train"][..., None] / 255.0).astype("float32")
    x_test = (data["x_test"][..., None] / 255.0).astype("float32")
    y_train, y_test = data["y_train"].astype("int64"), data["y_test"].astype("int64")
    with np.load(spec["weights"]) as archive:
        weights = {key: archive[key] for key in archive.files}
    seeds = spec["seeds"]
    ordered = {}
    for seed in seeds:
        order = _common.training_order(len(x_train), spec["epochs"], seed)
        ordered[seed] = (x_train[order], y_train[order])
    controls = [
        _evaluate(_train(spec, weights, seed, ordered[seed]), x_test, y_test)
        for seed in seeds
    ]
    results = {}
    for final in spec["sparsities"]:
        start = time.perf_counter()
        schedule = sparsity.PolynomialDecay(**spec["schedules"][str(final)])
        runs = []
        for seed in seeds:
            stripped = _train(spec, weights, seed, ordered[seed], schedule)
            runs.append(_evaluate(stripped, x_test, y_test))
        results[str(final)] = {
            **_common.over_seeds(runs, seeds),
            "sparsity": _kernel_sparsity(stripped),
            "seconds": round(time.perf_counter() - start, 1),
        }
    return {"methods": results, "dense_control": _common.over_seeds(controls, seeds)}


def main(path):
    with open(path) as f:
        spec = json.load(f)
    tf.random.set_seed(0)
    with np.load(spec["data"]) as archive:
        data = {key: archive[key] for key in archive.files}
    result = {"overhead": [], "accuracy": None}
    for task in spec.get("overhead", []):
        tf_keras.backend.clear_session()
        result["overhead"].append(overhead(task, data))
    if spec.get("accuracy"):
        result["accuracy"] = accuracy(spec["accuracy"], data)
    _common.write_json(spec["out"], result)


if __name__ == "__main__":
    main(sys.argv[1])
