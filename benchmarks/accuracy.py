"""Section 2, accuracy at sparsity on Fashion-MNIST.

The CNN (Conv32-Pool-Conv64-Pool-Dense128-Dense10) trains dense once, 3
epochs (Adam 1e-3, batch 64). Every method starts from those weights and
prunes for 2 epochs with PolynomialDecay 0 -> s (ramp over the first epoch,
see `_common.pruning_schedule_args`), then is stripped and evaluated:

- `tfmot`: TFMOT 0.8.1 on tf_keras (subprocess, same weights and data);
- `local`: ours, every layer at s;
- `global`: ours, `global_pruning=True` (one threshold across layers);
- `2:4`: ours, `sparsity_m_by_n=(2, 4)`: fixed 50% of the layers it applies
  to, so it runs once and is reported at its own sparsity;
- `channel`: ours, `granularity="channel"`, stripped with `shrink=True`.

A dense control trains the same 2 extra epochs without pruning, in Keras 3
and (in the TFMOT worker) in tf_keras, with the seeds of `local` and `tfmot`:
each library's accuracy can be read against training in its own framework.
Every 2-epoch run with training seed `s` sees the examples in the order
`_common.training_order(n, 2, s)`, on both sides: `local` and `tfmot` runs
of the same seed train on the same batches.
"""

import math
import time

import _common
import keras
import numpy as np

import keras_pruning as kp

SPARSITIES = (0.5, 0.8, 0.9, 0.95)
METHODS = ("tfmot", "local", "global", "2:4", "channel")
_OURS = {
    "local": {},
    "global": {"global_pruning": True},
    "2:4": {"sparsity_m_by_n": (2, 4)},
    "channel": {"granularity": "channel"},
}
DENSE_EPOCHS = 3
PRUNE_EPOCHS = 2
BATCH_SIZE = 64
LEARNING_RATE = 1e-3


def seeds(quick, count=None):
    """Training seeds (each fixes the order of the training examples) of the
    two methods the accuracy target compares, `local` and `tfmot`: one seed
    differs from another by up to about half a point, so a full run compares
    means over three seeds (`count` overrides)."""
    return tuple(range(count if count is not None else 1 if quick else 3))


def sizes(quick):
    """(train, test) examples: all of Fashion-MNIST, or a subset for --quick."""
    return (10_000, 2_000) if quick else (60_000, 10_000)


def _prepare(x):
    return (x[..., None] / 255.0).astype("float32")


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _cnn():
    return _common.build_sequential(keras, _common.CNN_LAYERS, name="cnn")


def _evaluate(model, x, y):
    model.compile(loss=_loss(), metrics=["accuracy"])
    return float(model.evaluate(x, y, batch_size=512, verbose=0)[1])


def _kernel_nonzeros(model):
    return sum(r.nonzeros for r in kp.sparsity_report(model))


def save_weights(model, path):
    """The weights as `layer{i}_w{j}` for the i-th layer that has weights:
    the npz the TFMOT worker loads into the same tf_keras architecture."""
    arrays = {}
    for i, layer in enumerate(layer for layer in model.layers if layer.weights):
        for j, weight in enumerate(layer.get_weights()):
            arrays[f"layer{i}_w{j}"] = weight
    np.savez(path, **arrays)


def _from_dense(dense):
    model = _cnn()
    model.set_weights(dense.get_weights())
    return model


def _fit(model, ordered, callbacks=None):
    """Trains `PRUNE_EPOCHS` epochs on `ordered`, the training examples of
    every epoch one after the other (`_common.training_order`)."""
    x, y = ordered
    model.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )


def run(quick, data, folder, tfmot, seed_count=None):
    """Trains every method; returns `(result, models)`, `models` mapping
    `"dense"` and `(method, sparsity)` to stripped Keras models."""
    training_seeds = seeds(quick, seed_count)
    x_train, x_test = _prepare(data["x_train"]), _prepare(data["x_test"])
    y_train, y_test = data["y_train"].astype("int64"), data["y_test"].astype("int64")
    steps_per_epoch = math.ceil(len(x_train) / BATCH_SIZE)
    schedules = {
        s: _common.pruning_schedule_args(steps_per_epoch, s) for s in SPARSITIES
    }

    keras.utils.clear_session()
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    dense = _cnn()
    dense.compile(keras.optimizers.Adam(LEARNING_RATE), _loss())
    dense.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=DENSE_EPOCHS, verbose=0)
    dense_seconds = time.perf_counter() - start
    weights_path = f"{folder}/dense_weights.npz"
    save_weights(dense, weights_path)
    dense_kernels = _kernel_nonzeros(dense)
    models = {"dense": dense}
    rows = {
        "dense": {
            "accuracy": _evaluate(dense, x_test, y_test),
            "sparsity": 0.0,
            "seconds": round(dense_seconds, 1),
        }
    }

    ordered = {}

    def examples(seed):
        if seed not in ordered:
            order = _common.training_order(len(x_train), PRUNE_EPOCHS, seed)
            ordered[seed] = (x_train[order], y_train[order])
        return ordered[seed]

    runs = []
    for seed in training_seeds:
        keras.utils.clear_session()
        keras.utils.set_random_seed(seed)
        control = _from_dense(dense)
        control.compile(keras.optimizers.Adam(LEARNING_RATE), _loss())
        _fit(control, examples(seed))
        runs.append(_evaluate(control, x_test, y_test))
    rows["dense_control"] = {
        **_common.over_seeds(runs, training_seeds),
        "sparsity": 0.0,
        "epochs": DENSE_EPOCHS + PRUNE_EPOCHS,
    }

    results = {method: {} for method in METHODS}
    for method, kwargs in _OURS.items():
        for s in (0.5,) if method == "2:4" else SPARSITIES:
            start = time.perf_counter()
            runs = []
            for seed in training_seeds if method == "local" else (0,):
                keras.utils.clear_session()
                keras.utils.set_random_seed(seed)
                schedule = kp.PolynomialDecay(**schedules[s])
                pruned = kp.prune_low_magnitude(_from_dense(dense), schedule, **kwargs)
                pruned.compile(keras.optimizers.Adam(LEARNING_RATE), _loss())
                _fit(pruned, examples(seed), [kp.UpdatePruningStep()])
                stripped = kp.strip_pruning(pruned, shrink=method == "channel")
                runs.append(_evaluate(stripped, x_test, y_test))
                if seed == 0:  # the model the size and latency sections use
                    models[(method, s)] = stripped
            stripped = models[(method, s)]
            results[method][str(s)] = {
                **_common.over_seeds(
                    runs, training_seeds if method == "local" else (0,)
                ),
                # Kernel weights gone (zero, or removed with their channels).
                "sparsity": 1 - _kernel_nonzeros(stripped) / dense_kernels,
                "parameters": int(stripped.count_params()),
                "seconds": round(time.perf_counter() - start, 1),
            }

    theirs = tfmot(
        {
            "data": f"{folder}/data.npz",
            "accuracy": {
                "weights": weights_path,
                "sparsities": list(SPARSITIES),
                "epochs": PRUNE_EPOCHS,
                "batch_size": BATCH_SIZE,
                "learning_rate": LEARNING_RATE,
                "seeds": list(training_seeds),
                "schedules": {str(s): args for s, args in schedules.items()},
            },
        },
        "accuracy",
    )
    results["tfmot"] = theirs["accuracy"]["methods"]
    result = {
        "setup": {
            "model": "Conv32-Pool-Conv64-Pool-Dense128-Dense10",
            "train_examples": len(x_train),
            "test_examples": len(x_test),
            "dense_epochs": DENSE_EPOCHS,
            "prune_epochs": PRUNE_EPOCHS,
            "batch_size": BATCH_SIZE,
            "optimizer": f"Adam({LEARNING_RATE}), new for each method",
            "seeds": {"local": list(training_seeds), "tfmot": list(training_seeds)},
            "schedules": {str(s): args for s, args in schedules.items()},
            "sparsities": list(SPARSITIES),
            "note": "2:4 prunes 2 of every 4 input-channel weights in the layers "
            "whose input channels divide by 4 (not the first convolution, with "
            "one input channel): it is fixed at 50% of those layers and reported "
            "at its own sparsity only. `sparsity` is the fraction of the dense "
            "model's kernel weights that are zero or removed.",
        },
        "dense": rows["dense"],
        "dense_control": rows["dense_control"],
        "tfmot_dense_control": theirs["accuracy"]["dense_control"],
        "methods": results,
    }
    return result, models
