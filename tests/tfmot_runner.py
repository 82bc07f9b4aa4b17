"""Runs TFMOT 0.8.1 pruning on tf_keras, for the parity tests.

Usage: python tfmot_runner.py SPEC.json

Run it in its own process with TF_USE_LEGACY_KERAS=1: importing TFMOT switches
`tf.keras` to tf_keras for the whole process, which must never happen inside
the pytest process (it runs Keras 3). `tests/test_tfmot_parity.py` starts this
script once per module and exchanges data through files:

- `spec["schedules"]`: a list of `{"id", "class", "kwargs", "steps"}`. Each
  TFMOT schedule is evaluated at every step, and `spec["schedules_out"]` (JSON) receives
  `{id: [[should_prune, sparsity], ...]}`.
- `spec["trainings"]`: a list of `{"id", "input_shape", "layers", "schedule",
  "batch_size", "epochs", "data", "weights", "out"}`. A Sequential tf_keras
  model is built from `layers` (`[class_name, kwargs]` pairs), its layers with
  weights receive `weights` (`layer{i}_w{j}` in the npz, in the order of the
  layers that have weights), it is pruned with `tfmot.sparsity.keras` (with
  the optional `"prune_kwargs"`, such as `block_size`), compiled with the
  optional `"optimizer"` (`{"class", "kwargs"}`; default SGD with
  learning_rate=0.0) and fitted with `UpdatePruningStep` on `data`
  (`x`, `y`). `out` (npz) receives, for the i-th pruning wrapper and its j-th
  pruned weight: `mask_{i}_{j}` (float 0/1), `threshold_{i}_{j}`,
  `weight_{i}_{j}` (the weight after training), `step_{i}` (the wrapper's
  `pruning_step`) and `num_masks` (pruned weights per wrapper). Wrappers of
  weightless layers (TFMOT wraps Flatten too) are left out.
"""

import json
import os
import sys

if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    raise SystemExit("tfmot_runner.py must run with TF_USE_LEGACY_KERAS=1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras  # noqa: E402
from tensorflow_model_optimization.python.core.sparsity.keras import (  # noqa: E402
    pruning_wrapper,
)

sparsity = tfmot.sparsity.keras


def make_schedule(spec):
    return getattr(sparsity, spec["class"])(**spec["kwargs"])


def evaluate_schedule(spec):
    """`[[should_prune, sparsity], ...]` at every step of `spec["steps"]`.

    TFMOT's schedules are elementwise TF ops, so one call takes every step,
    as an int64 tensor like the wrapper's `pruning_step`."""
    schedule = make_schedule(spec)
    steps = tf.constant(spec["steps"], dtype=tf.int64)
    should_prune, value = schedule(steps)
    should_prune = should_prune.numpy().tolist()
    value = np.broadcast_to(value.numpy(), steps.shape).tolist()
    return [[bool(p), float(v)] for p, v in zip(should_prune, value, strict=True)]


def train(spec):
    model = tf_keras.Sequential(
        [tf_keras.Input(tuple(spec["input_shape"]))]
        + [getattr(tf_keras.layers, name)(**kwargs) for name, kwargs in spec["layers"]]
    )
    with np.load(spec["weights"]) as weights:
        with_weights = [layer for layer in model.layers if layer.weights]
        for i, layer in enumerate(with_weights):
            layer.set_weights(
                [weights[f"layer{i}_w{j}"] for j in range(len(layer.weights))]
            )
    pruned = sparsity.prune_low_magnitude(
        model,
        pruning_schedule=make_schedule(spec["schedule"]),
        **spec.get("prune_kwargs", {}),
    )
    optimizer = spec.get(
        "optimizer", {"class": "SGD", "kwargs": {"learning_rate": 0.0}}
    )
    pruned.compile(
        optimizer=getattr(tf_keras.optimizers, optimizer["class"])(
            **optimizer["kwargs"]
        ),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    with np.load(spec["data"]) as data:
        x, y = data["x"], data["y"]
    pruned.fit(
        x,
        y,
        batch_size=spec["batch_size"],
        epochs=spec["epochs"],
        shuffle=False,
        verbose=0,
        callbacks=[sparsity.UpdatePruningStep()],
    )
    wrappers = [
        layer
        for layer in pruned.layers
        if isinstance(layer, pruning_wrapper.PruneLowMagnitude)
        and layer.pruning_vars  # TFMOT also wraps weightless layers (Flatten)
    ]
    out = {"num_masks": np.array([len(w.pruning_vars) for w in wrappers])}
    for i, wrapper in enumerate(wrappers):
        out[f"step_{i}"] = np.asarray(wrapper.pruning_step.numpy())
        for j, (weight, mask, threshold) in enumerate(wrapper.pruning_vars):
            out[f"mask_{i}_{j}"] = mask.numpy()
            out[f"threshold_{i}_{j}"] = threshold.numpy()
            out[f"weight_{i}_{j}"] = weight.numpy()
    np.savez(spec["out"], **out)


def main(path):
    with open(path) as f:
        spec = json.load(f)
    tf.random.set_seed(1234)
    results = {s["id"]: evaluate_schedule(s) for s in spec.get("schedules", [])}
    with open(spec["schedules_out"], "w") as f:
        json.dump(results, f)
    for training in spec.get("trainings", []):
        tf_keras.backend.clear_session()
        train(training)


if __name__ == "__main__":
    main(sys.argv[1])
