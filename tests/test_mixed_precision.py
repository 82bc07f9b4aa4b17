"""Pruning under the `mixed_float16` and `mixed_bfloat16` dtype policies:
prune, fit, strip, save and export."""

import keras
import numpy as np
import pytest

import keras_pruning as kp
from keras_pruning import export, masks

POLICIES = ["mixed_float16", "mixed_bfloat16"]


@pytest.fixture(params=POLICIES)
def policy(request):
    keras.config.set_dtype_policy(request.param)
    try:
        yield request.param
    finally:
        keras.config.set_dtype_policy("float32")


def _model():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3),
            keras.layers.Activation("linear", dtype="float32"),
        ]
    )


def _data(n=64):
    rng = np.random.default_rng(0)
    return rng.random((n, 8, 8, 1)).astype("float32"), rng.integers(0, 3, n)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_apply_mask_keeps_the_compute_dtype(dtype):
    weights = keras.ops.cast(np.array([[1.5, -2.0], [0.25, 3.0]]), dtype)
    mask = np.array([[True, False], [False, True]])
    masked = masks.apply_mask(weights, mask)
    assert keras.backend.standardize_dtype(masked.dtype) == dtype
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(keras.ops.cast(masked, "float32")),
        [[1.5, 0.0], [0.0, 3.0]],
    )


def test_prune_fit_strip_save_and_export(policy, tmp_path):
    x, y = _data()
    pruned = kp.prune_low_magnitude(
        _model(), kp.PolynomialDecay(0.0, 0.75, 0, 8, frequency=2)
    )
    wrappers = kp.pruning_wrappers(pruned)
    for wrapper in wrappers:
        assert wrapper.dtype_policy.name == policy
        assert wrapper.compute_dtype == policy.removeprefix("mixed_")
        # Masks are one byte per weight and never autocast; weights stay float32.
        assert [m.dtype for m in wrapper.masks] == ["bool"] * len(wrapper.masks)
        assert all(w.dtype == "float32" for w in wrapper.prunable_weights)
    pruned.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    if policy == "mixed_float16":
        assert isinstance(pruned.optimizer, keras.optimizers.LossScaleOptimizer)
    history = pruned.fit(
        x, y, batch_size=8, epochs=2, verbose=0, callbacks=[kp.UpdatePruningStep()]
    )
    assert np.all(np.isfinite(history.history["loss"]))
    assert [w.pruning_step for w in wrappers] == [16, 16, 16]
    for report in kp.sparsity_report(pruned):
        assert report.zeros == report.size - masks.num_kept(report.size, 0.75)

    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), pruned.predict(x, verbose=0)
    )
    assert [m.dtype for w in kp.pruning_wrappers(loaded) for m in w.masks] == [
        "bool"
    ] * 3

    stripped = kp.strip_pruning(pruned)
    assert stripped.layers[0].dtype_policy.name == policy
    kernel = keras.ops.convert_to_numpy(stripped.layers[2].kernel)
    assert np.mean(kernel == 0) == pytest.approx(0.75, abs=1e-3)
    expected = stripped.predict(x, verbose=0)

    data = export.to_tflite(stripped, path=tmp_path / "model.tflite")
    result = export.verify(data, stripped, x)
    assert result.argmax_agreement == 1.0
    # float16 rounds to 3 decimal digits, bfloat16 to 2.
    assert result.max_abs_error < 0.05 * float(np.abs(expected).max())
    int8 = export.to_tflite(pruned, quantize="int8", representative_data=x)
    assert export.verify(int8, stripped, x).argmax_agreement >= 0.9
