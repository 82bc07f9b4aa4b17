"""Section 1, training overhead: pruned step time / dense step time.

For the Fashion-MNIST CNN and MLP and MobileNetV2 (alpha 0.35, 96x96), the
dense model and the same model pruned (PolynomialDecay 0 -> 80%, one mask
update per timed epoch: every 100 steps for the CNN and MLP, TFMOT's default,
and every 10 or 25 steps for MobileNetV2) each train `repeats` epochs of
`steps` steps, interleaved; the ratio is the median of the per-round ratios.
A third contender, the dense model with a callback whose
`on_train_batch_begin` does nothing, shows what any per-batch callback costs
in that Keras. TFMOT's ratios come from the same measurement on tf_keras, in a
subprocess started right after. Memory: masks (and the whole pruning state:
thresholds, TFMOT's step counters) over the weights.
"""

import _common
import keras
import numpy as np

import keras_pruning as kp


def _bytes(variables):
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)


def tasks(quick):
    """What each model measures: steps per timed epoch (also the mask-update
    frequency: 100 is TFMOT's default) and interleaved rounds. One epoch's
    wall time varies by up to 30% on a shared 2-core machine: a full run
    takes the median of 21 rounds for the small models."""
    if quick:
        return [
            {"model": "cnn", "steps": 100, "repeats": 9, "batch_size": 32},
            {"model": "mlp", "steps": 100, "repeats": 9, "batch_size": 32},
            {"model": "mobilenetv2", "steps": 10, "repeats": 3, "batch_size": 32},
        ]
    return [
        {"model": "cnn", "steps": 100, "repeats": 21, "batch_size": 32},
        {"model": "mlp", "steps": 100, "repeats": 21, "batch_size": 32},
        {"model": "mobilenetv2", "steps": 25, "repeats": 7, "batch_size": 32},
    ]


def measure(task, data):
    """Ours: dense and pruned step times, interleaved; pruning state memory."""
    steps, batch = task["steps"], task["batch_size"]
    x, y = _common.overhead_inputs(task, data)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    keras.utils.clear_session()
    keras.utils.set_random_seed(0)
    dense = _common.build_model(keras, task["model"])
    dense.compile(keras.optimizers.Adam(1e-3), loss)
    schedule = kp.PolynomialDecay(
        0.0,
        0.8,
        begin_step=0,
        end_step=steps * (task["repeats"] + 2),
        frequency=steps,  # one mask update in every timed epoch
    )
    pruned = kp.prune_low_magnitude(_common.build_model(keras, task["model"]), schedule)
    pruned.compile(keras.optimizers.Adam(1e-3), loss)
    update = [kp.UpdatePruningStep()]

    def fit(model, callbacks):
        return lambda: model.fit(
            x, y, batch_size=batch, epochs=1, verbose=0, callbacks=callbacks
        )

    times = _common.interleaved(
        {
            "dense": fit(dense, None),
            "dense_noop": fit(dense, [_common.noop_batch_callback(keras)]),
            "pruned": fit(pruned, update),
        },
        task["repeats"],
    )
    weight_bytes = _bytes(dense.weights)
    mask_bytes = _bytes([m for w in kp.pruning_wrappers(pruned) for m in w.masks])
    state_bytes = _bytes(pruned.weights) - weight_bytes
    return {
        "model": task["model"],
        "parameters": int(dense.count_params()),
        "steps": steps,
        "repeats": task["repeats"],
        "dense_step_ms": 1000 * _common.median(times["dense"]) / steps,
        "pruned_step_ms": 1000 * _common.median(times["pruned"]) / steps,
        "ratio": _common.median_ratio(times["pruned"], times["dense"]),
        "ratio_of_medians": _common.median(times["pruned"])
        / _common.median(times["dense"]),
        "noop_callback_ratio": _common.median_ratio(
            times["dense_noop"], times["dense"]
        ),
        "ratio_to_noop_callback": _common.median_ratio(
            times["pruned"], times["dense_noop"]
        ),
        "dense_seconds": times["dense"],
        "pruned_seconds": times["pruned"],
        "dense_noop_seconds": times["dense_noop"],
        "mask_bytes": mask_bytes,
        "state_bytes": state_bytes,
        "weight_bytes": weight_bytes,
        "mask_over_weight_bytes": mask_bytes / weight_bytes,
        "state_over_weight_bytes": state_bytes / weight_bytes,
    }


def run(quick, data, data_path, folder, tfmot):
    """Ours, then TFMOT (`tfmot(spec, name)` runs the worker) right after."""
    todo = tasks(quick)
    ours = {t["model"]: measure(t, data) for t in todo}
    theirs = {
        r["model"]: r
        for r in tfmot({"data": data_path, "overhead": todo}, "overhead")["overhead"]
    }
    return {
        "models": {
            name: {"keras_pruning": ours[name], "tfmot": theirs[name]} for name in ours
        }
    }
