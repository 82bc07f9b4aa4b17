"""Section 5, scale: wrap, mask update, strip and export time against size.

From the MLP to MobileNetV2 to ResNet50 (`weights=None`, 1000 classes), each
model is wrapped (`prune_low_magnitude`, ConstantSparsity 0.5 updating at
every step), its masks are updated as `UpdatePruningStep` does before a
training step (all wrappers, one step), it is stripped (`strip_pruning`) and
exported (`to_tflite`, float32). Wrap and strip are timed on fresh models;
the figure is the median over repeats. The log-log slope of time against
parameters is 1 for cost linear in the parameters, below 1 for sublinear.
"""

import time

import _common
import keras

import keras_pruning as kp
from keras_pruning import export

OPERATIONS = ("wrap", "mask_update", "strip", "export")


def _builders(quick):
    models = {
        "mlp": lambda: _common.build_sequential(keras, _common.MLP_LAYERS),
        "mobilenetv2_0.35_96": lambda: keras.applications.MobileNetV2(
            alpha=0.35, input_shape=(96, 96, 3), weights=None
        ),
    }
    if not quick:
        models["mobilenetv2_1.0_224"] = lambda: keras.applications.MobileNetV2(
            weights=None
        )
    models["resnet50"] = lambda: keras.applications.ResNet50(weights=None)
    return models


def _timed(function):
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def _schedule():
    return kp.ConstantSparsity(0.5, begin_step=0, frequency=1)


def measure(build, repeats):
    wraps, strips = [], []
    for _ in range(repeats):
        keras.utils.clear_session()
        model = build()
        seconds, pruned = _timed(lambda m=model: kp.prune_low_magnitude(m, _schedule()))
        wraps.append(seconds)
        seconds, _ = _timed(lambda p=pruned: kp.strip_pruning(p))
        strips.append(seconds)
    parameters = int(model.count_params())
    prunable = sum(w.size for w in kp.sparsity_report(model))
    callback = kp.UpdatePruningStep()
    callback.set_model(pruned)
    callback.on_train_begin()
    # Step k updates every mask (frequency 1): the work before a training step.
    updates = _common.interleaved(
        {"update": lambda: callback.on_train_batch_begin(0)}, repeats=max(3, repeats)
    )["update"]
    stripped = kp.strip_pruning(pruned)
    export_seconds, data = _timed(lambda: export.to_tflite(stripped))
    return {
        "parameters": parameters,
        "prunable_weights": prunable,
        "wrappers": len(kp.pruning_wrappers(pruned)),
        "seconds": {
            "wrap": _common.median(wraps),
            "mask_update": _common.median(updates),
            "strip": _common.median(strips),
            "export": export_seconds,
        },
        "tflite_float32_bytes": len(data),
    }


def run(quick):
    repeats = 2 if quick else 3
    rows = {name: measure(build, repeats) for name, build in _builders(quick).items()}
    parameters = [row["parameters"] for row in rows.values()]
    slopes = {
        op: _common.loglog_slope(
            parameters, [row["seconds"][op] for row in rows.values()]
        )
        for op in OPERATIONS
    }
    return {"repeats": repeats, "models": rows, "loglog_slope": slopes}
