"""Section 1, training overhead: pruned step time / dense step time.

For the Fashion-MNIST CNN and MLP and MobileNetV2 (alpha 0.35, 96x96), the
dense model and the same model pruned (PolynomialDecay 0 -> 80%, one mask
update per timed epoch: every 100 steps for the CNN and MLP, TFMOT's default,
and every 10 or 25 steps for MobileNetV2) each train `repeats` epochs of
`steps` steps, interleaved; the ratio is the median of the per-round ratios.
A third contender, the dense model with a callback whose
`on_train_batch_begin` does nothing, shows what any per-batch callback costs
in that Keras; a fourth, the model pruned with a schedule that never updates
a mask, what the per-step masking costs without mask updates; a fifth, the
pruned model trained with `UpdatePruningStep(hold_pruned_weights_at_zero=True)`,
the opt-in that masks only gradients. TFMOT's ratios
come from the same measurement on tf_keras, in a subprocess started right
after. Memory: masks (and the whole pruning state:
thresholds, TFMOT's step counters) over the weights.
"""

import warnings

import _common
import keras

import keras_pruning as kp


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
    x, y = _common.overhead_inputs(task, data)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    keras.utils.clear_session()
    keras.utils.set_random_seed(0)
    dense = _common.build_model(keras, task["model"])
    dense.compile(keras.optimizers.Adam(1e-3), loss)
    schedule = kp.PolynomialDecay(**_common.overhead_schedule_args(task))
    pruned = kp.prune_low_magnitude(_common.build_model(keras, task["model"]), schedule)
    pruned.compile(keras.optimizers.Adam(1e-3), loss)
    masks = [m for w in kp.pruning_wrappers(pruned) for m in w.masks]
    never_updated = kp.prune_low_magnitude(
        _common.build_model(keras, task["model"]),
        kp.ConstantSparsity(**_common.NEVER_UPDATING_SCHEDULE),
    )
    never_updated.compile(keras.optimizers.Adam(1e-3), loss)
    held = kp.prune_low_magnitude(_common.build_model(keras, task["model"]), schedule)
    held.compile(keras.optimizers.Adam(1e-3), loss)
    with warnings.catch_warnings():
        # Expected of `never_updated`, at the end of every timed epoch.
        warnings.filterwarnings("ignore", "Training ended at pruning step")
        row = _common.measure_overhead(
            task,
            keras,
            kp.UpdatePruningStep,
            dense,
            pruned,
            never_updated,
            masks,
            x,
            y,
            held=held,
        )
    row["mask_update_ms"] = 1000 * mask_update_seconds(pruned)
    return row


def mask_update_seconds(pruned, repeats=30):
    """The median time of what `UpdatePruningStep` does before a step that
    updates masks: every mask of the model set at 80% sparsity, then the
    optimizer's first moments cleared where they prune; after a first,
    compiling update. Run last: it gives the wrappers a schedule that prunes
    at every step."""
    every_step = kp.ConstantSparsity(0.8, 0, frequency=1)
    for wrapper in kp.pruning_wrappers(pruned):
        wrapper.pruning_schedule = every_step
    callback = kp.UpdatePruningStep()
    callback.set_model(pruned)
    callback.on_train_begin()
    update = {"update": lambda: callback.on_train_batch_begin(0)}
    return _common.median(_common.interleaved(update, repeats)["update"])


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
