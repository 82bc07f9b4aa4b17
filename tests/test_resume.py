"""Crash and resume: BackupAndRestore and ModelCheckpoint runs end with the
masks and weights of an uninterrupted run."""

import keras
import numpy as np
import pytest
from conftest import dense_model, run_in_fresh_process

import keras_pruning as kp

SCHEDULE = kp.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=24, frequency=2)


def test_backup_and_restore_resumes_a_crashed_run_exactly(tmp_path):
    # A fresh process: op determinism is a process-wide switch.
    report = run_in_fresh_process(
        f"""
        import json, shutil
        import keras, numpy as np, tensorflow as tf
        import keras_pruning as kp

        tf.config.experimental.enable_op_determinism()
        rng = np.random.default_rng(0)
        x = rng.random((64, 8)).astype("float32")
        y = rng.integers(0, 3, 64)
        schedule = kp.PolynomialDecay(0.0, 0.8, 0, 24, frequency=2)

        class Crash(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def on_train_batch_begin(self, batch, logs=None):
                if (self.epoch, batch) == (2, 3):
                    raise RuntimeError("simulated crash")

        def run(backup_dir, order, crash=False):
            keras.utils.set_random_seed(3)
            model = kp.prune_low_magnitude(
                keras.Sequential([
                    keras.Input((8,)),
                    keras.layers.Dense(16, activation="relu"),
                    keras.layers.Dropout(0.3),
                    keras.layers.Dense(3),
                ]),
                schedule,
            )
            model.compile(keras.optimizers.Adam(0.01),
                          "sparse_categorical_crossentropy")
            callbacks = {{
                "backup": keras.callbacks.BackupAndRestore(backup_dir),
                "pruning": kp.UpdatePruningStep(),
            }}
            callbacks = [callbacks[name] for name in order]
            if crash:
                callbacks.append(Crash())
            try:
                model.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0,
                          callbacks=callbacks)
            except RuntimeError:
                return None
            return model

        def state(model):
            wrappers = kp.pruning_wrappers(model)
            return {{
                "steps": [w.pruning_step for w in wrappers],
                "masks": [keras.ops.convert_to_numpy(m) for w in wrappers
                          for m in w.masks],
                "weights": [keras.ops.convert_to_numpy(v) for v in model.weights],
                "optimizer": [keras.ops.convert_to_numpy(v)
                              for v in model.optimizer.variables],
            }}

        root = {str(tmp_path)!r}
        reports = {{}}
        for order in (("backup", "pruning"), ("pruning", "backup")):
            name = "-".join(order)
            straight = state(run(f"{{root}}/{{name}}-straight", order))
            assert run(f"{{root}}/{{name}}", order, crash=True) is None
            crashed_step = json.load(
                open(f"{{root}}/{{name}}/training_metadata.json"))["epoch"]
            resumed = state(run(f"{{root}}/{{name}}", order))
            reports[name] = {{
                "backup_epoch": crashed_step,
                "steps": [straight["steps"], resumed["steps"]],
                "sparsity": [float(1 - m.mean()) for m in resumed["masks"]],
                "equal": {{
                    key: all(np.array_equal(a, b) for a, b in
                             zip(straight[key], resumed[key], strict=True))
                    for key in ("masks", "weights", "optimizer")
                }},
            }}
        print(json.dumps(reports))
        """
    )
    for order in ("backup-pruning", "pruning-backup"):
        result = report[order]
        assert result["backup_epoch"] == 2  # resumed from the end of epoch 2
        assert result["steps"] == [[32, 32], [32, 32]]
        assert result["equal"] == {"masks": True, "weights": True, "optimizer": True}
        assert result["sparsity"] == pytest.approx([0.8, 0.8], abs=0.01)


def _data(n=48):
    rng = np.random.default_rng(0)
    return rng.random((n, 8)).astype("float32"), rng.integers(0, 3, n)


def _compiled():
    keras.utils.set_random_seed(7)
    model = kp.prune_low_magnitude(dense_model(), SCHEDULE)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    return model


def _fit(model, callbacks=(), initial_epoch=0):
    x, y = _data()
    model.fit(
        x,
        y,
        batch_size=4,
        epochs=2,
        initial_epoch=initial_epoch,
        shuffle=False,
        verbose=0,
        callbacks=[kp.UpdatePruningStep(), *callbacks],
    )


def _masked_state(model):
    wrappers = kp.pruning_wrappers(model)
    return (
        [keras.ops.convert_to_numpy(m) for w in wrappers for m in w.masks],
        [a for w in wrappers for a in w.masked_weights()],
        [keras.ops.convert_to_numpy(w.layer.bias) for w in wrappers],
    )


def _assert_same_state(a, b):
    for arrays_a, arrays_b in zip(_masked_state(a), _masked_state(b), strict=True):
        for x, y in zip(arrays_a, arrays_b, strict=True):
            np.testing.assert_array_equal(x, y)


def _stored_kernel_sparsity(model):
    """Fraction of zeros in the kernels as loaded, before any mask is applied."""
    return [
        float(np.mean(keras.ops.convert_to_numpy(w.layer.kernel) == 0))
        for w in kp.pruning_wrappers(model)
    ]


@pytest.mark.parametrize("weights_only", [False, True])
def test_model_checkpoint_holds_sparse_weights_and_resumes_the_schedule(
    tmp_path, weights_only
):
    straight = _compiled()
    _fit(straight)

    suffix = ".weights.h5" if weights_only else ".keras"
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(tmp_path / f"epoch-{{epoch}}{suffix}"), save_weights_only=weights_only
    )
    first = _compiled()
    _fit(first, [checkpoint])
    # Epoch 1 ended at step 12 = end_step / 2: sparsity 0.8 * (1 - (1/2)^3) = 0.7.
    if weights_only:
        resumed = _compiled()
        resumed.optimizer.build(resumed.trainable_variables)
        resumed.load_weights(tmp_path / "epoch-1.weights.h5")
    else:
        resumed = keras.models.load_model(tmp_path / "epoch-1.keras")
    assert [w.pruning_step for w in kp.pruning_wrappers(resumed)] == [12, 12]
    assert _stored_kernel_sparsity(resumed) == pytest.approx([0.7, 0.7], abs=0.01)

    _fit(resumed, initial_epoch=1)
    assert [w.pruning_step for w in kp.pruning_wrappers(resumed)] == [24, 24]
    _assert_same_state(straight, resumed)
    stripped = kp.strip_pruning(resumed)
    kernels = [keras.ops.convert_to_numpy(layer.kernel) for layer in stripped.layers]
    assert [np.mean(k == 0) for k in kernels] == pytest.approx([0.8, 0.8], abs=0.01)


def test_old_weights_file_with_float32_masks_loads(tmp_path):
    import h5py

    model = _compiled()
    _fit(model)
    path = tmp_path / "old.weights.h5"
    model.save_weights(path)
    with h5py.File(path, "r+") as file:
        masks = []
        file.visititems(
            lambda name, item: (
                masks.append(name)
                if isinstance(item, h5py.Dataset) and item.dtype == bool
                else None
            )
        )
        assert len(masks) == 2
        for name in masks:
            values = file[name][()].astype("float32")
            del file[name]
            file[name] = values
    fresh = _compiled()
    fresh.optimizer.build(fresh.trainable_variables)
    fresh.load_weights(path)
    assert all(w.masks[0].dtype == "bool" for w in kp.pruning_wrappers(fresh))
    _assert_same_state(model, fresh)
    assert [w.pruning_step for w in kp.pruning_wrappers(fresh)] == [24, 24]
