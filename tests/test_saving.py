"""Saving and loading pruned models: .keras files, weights files, resume."""

import keras
import numpy as np
import pytest
from conftest import dense_model, run_in_fresh_process

import keras_pruning as kp

pytestmark = pytest.mark.backends

SCHEDULE = kp.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=12, frequency=3)


def _data(n=32):
    rng = np.random.default_rng(0)
    return rng.random((n, 8)).astype("float32"), rng.integers(0, 3, n)


def _trained(steps, schedule=SCHEDULE):
    x, y = _data(steps * 4)
    model = kp.prune_low_magnitude(dense_model(), schedule)
    model.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    model.fit(
        x, y, batch_size=4, verbose=0, shuffle=False, callbacks=[kp.UpdatePruningStep()]
    )
    return model


def test_keras_file_loads_in_fresh_process_without_custom_objects(tmp_path):
    model = _trained(steps=6)
    x, _ = _data(8)
    path = tmp_path / "pruned.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", model.predict(x, verbose=0))
    script = f"""
        import json, os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        import keras, numpy as np
        import keras_pruning
        model = keras.models.load_model({str(path)!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        expected = np.load({str(tmp_path / "expected.npy")!r})
        wrappers = keras_pruning.pruning_wrappers(model)
        print(json.dumps({{
            "max_error": float(np.abs(model.predict(x, verbose=0) - expected).max()),
            "steps": [w.pruning_step for w in wrappers],
            "schedule": wrappers[0].pruning_schedule.get_config(),
            "sparsity": [r.sparsity for r in keras_pruning.sparsity_report(model)],
        }}))
        """
    report = run_in_fresh_process(script)
    assert report["max_error"] < 1e-6
    assert report["steps"] == [6, 6]
    assert report["schedule"] == SCHEDULE.get_config()
    expected = [r.sparsity for r in kp.sparsity_report(model)]
    assert report["sparsity"] == pytest.approx(expected)


def test_resume_continues_schedule_like_uninterrupted_run(tmp_path):
    x, y = _data(48)
    fit_args = dict(batch_size=4, verbose=0, shuffle=False)

    keras.utils.set_random_seed(7)
    straight = kp.prune_low_magnitude(dense_model(), SCHEDULE)
    straight.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    straight.fit(x[:20], y[:20], callbacks=[kp.UpdatePruningStep()], **fit_args)
    straight.fit(x[20:], y[20:], callbacks=[kp.UpdatePruningStep()], **fit_args)

    keras.utils.set_random_seed(7)
    first = kp.prune_low_magnitude(dense_model(), SCHEDULE)
    first.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    first.fit(x[:20], y[:20], callbacks=[kp.UpdatePruningStep()], **fit_args)
    first.save(tmp_path / "half.keras")
    resumed = keras.models.load_model(tmp_path / "half.keras")
    assert [w.pruning_step for w in kp.pruning_wrappers(resumed)] == [5, 5]
    resumed.fit(x[20:], y[20:], callbacks=[kp.UpdatePruningStep()], **fit_args)

    assert [w.pruning_step for w in kp.pruning_wrappers(resumed)] == [12, 12]
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert all(
        r.sparsity == pytest.approx(0.75, abs=0.02) for r in kp.sparsity_report(resumed)
    )


def test_weights_file_round_trip_restores_masks_and_step(tmp_path):
    model = _trained(steps=7)
    path = tmp_path / "ckpt.weights.h5"
    model.save_weights(path)
    fresh = kp.prune_low_magnitude(dense_model(), SCHEDULE)
    fresh.load_weights(path)
    assert [w.pruning_step for w in kp.pruning_wrappers(fresh)] == [7, 7]
    for a, b in zip(model.get_weights(), fresh.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_checkpoints_hold_sparse_weights(tmp_path):
    # Adam keeps moving weights after their gradient becomes zero; the mask
    # constraint keeps the stored weights sparse after every update anyway.
    x, y = _data(64)
    model = kp.prune_low_magnitude(
        dense_model(), kp.ConstantSparsity(0.5, 0, frequency=4)
    )
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(tmp_path / "ckpt-{epoch}.weights.h5"), save_weights_only=True
    )
    model.fit(
        x,
        y,
        batch_size=4,
        epochs=2,
        verbose=0,
        callbacks=[checkpoint, kp.UpdatePruningStep()],
    )
    plain = dense_model()
    reloaded = kp.prune_low_magnitude(plain, kp.ConstantSparsity(0.5, 0, frequency=4))
    reloaded.load_weights(tmp_path / "ckpt-1.weights.h5")
    for layer in plain.layers:
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.02)


def test_stripped_model_saves_and_loads_as_plain_keras(tmp_path):
    model = _trained(steps=12)
    stripped = kp.strip_pruning(model)
    path = tmp_path / "stripped.keras"
    stripped.save(path)
    loaded = keras.models.load_model(path)
    assert [type(layer).__name__ for layer in loaded.layers] == ["Dense", "Dense"]
    x, _ = _data(4)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )


def test_prune_scope_is_accepted_for_migration(tmp_path):
    model = _trained(steps=3)
    model.save(tmp_path / "m.keras")
    with kp.sparsity.keras.prune_scope():
        loaded = keras.models.load_model(tmp_path / "m.keras")
    assert len(kp.pruning_wrappers(loaded)) == 2


def test_block_size_and_m_by_n_survive_a_fresh_process(tmp_path):
    # TFMOT's get_config leaves sparsity_m_by_n out: a reloaded TFMOT model
    # prunes unstructured. Ours reloads both settings, masks, and keeps the
    # m-by-n mask through more training.
    schedule = kp.ConstantSparsity(0.5, 0, frequency=2)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            kp.PruneLowMagnitude(
                keras.layers.Dense(16, activation="relu"),
                schedule,
                sparsity_m_by_n=(2, 4),
            ),
            kp.PruneLowMagnitude(
                keras.layers.Dense(3),
                schedule,
                block_size=(4, 1),
                block_pooling_type="max",
            ),
        ]
    )
    model.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    x, y = _data(40)
    model.fit(
        x[:16], y[:16], batch_size=4, verbose=0, callbacks=[kp.UpdatePruningStep()]
    )
    path = tmp_path / "structured.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x[16:])
    np.save(tmp_path / "y.npy", y[16:])
    masks = [keras.ops.convert_to_numpy(w.masks[0]) for w in kp.pruning_wrappers(model)]
    script = f"""
        import json, os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        import keras, numpy as np
        import keras_pruning
        model = keras.models.load_model({str(path)!r})
        wrappers = keras_pruning.pruning_wrappers(model)
        loaded = [keras.ops.convert_to_numpy(w.masks[0]).tolist() for w in wrappers]
        model.fit(np.load({str(tmp_path / "x.npy")!r}), np.load({str(tmp_path / "y.npy")!r}),
                  batch_size=4, verbose=0, callbacks=[keras_pruning.UpdatePruningStep()])
        print(json.dumps({{
            "settings": [[type(w.sparsity_m_by_n).__name__, w.sparsity_m_by_n,
                          type(w.block_size).__name__, w.block_size,
                          w.block_pooling_type] for w in wrappers],
            "loaded": loaded,
            "trained": [keras.ops.convert_to_numpy(w.masks[0]).tolist() for w in wrappers],
            "steps": [w.pruning_step for w in wrappers],
        }}))
        """
    report = run_in_fresh_process(script)
    assert report["settings"] == [
        ["tuple", [2, 4], "tuple", [1, 1], "avg"],
        ["NoneType", None, "tuple", [4, 1], "max"],
    ]
    assert report["steps"] == [10, 10]
    for mask, loaded in zip(masks, report["loaded"], strict=True):
        np.testing.assert_array_equal(np.array(loaded), mask)
    # The m-by-n mask stays as it was; the block mask keeps its blocks.
    np.testing.assert_array_equal(np.array(report["trained"][0]), masks[0])
    groups = np.array(report["trained"][0]).T.reshape(16, 2, 4)
    assert (groups.sum(axis=-1) == 2).all()
    blocks = np.array(report["trained"][1]).reshape(4, 4, 3)
    assert (blocks.all(axis=1) | ~blocks.any(axis=1)).all()
    assert blocks.any(axis=1).sum() == 6  # 6 of 12 blocks
