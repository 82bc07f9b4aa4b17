"""Structured pruning on real architectures, through save, load and TFLite."""

import keras
import numpy as np
import pytest
from conftest import run_in_fresh_process

import keras_pruning as kp
from keras_pruning.export import min_arena_bytes, to_tflite, verify
from keras_pruning.structured import dependency_groups, prune_channels

L = keras.layers


def _masked_equals_shrunk(model, x, sparsity=0.5, atol=1e-4):
    """Masks channels once through the callback, then compares with the
    shrunk model; returns the shrunk model."""
    pruned = kp.prune_low_magnitude(
        model, kp.ConstantSparsity(sparsity, 0, frequency=1), granularity="channel"
    )
    callback = kp.UpdatePruningStep()
    callback.set_model(pruned)
    callback.on_train_begin()
    callback.on_train_batch_begin(0)
    small = kp.strip_pruning(pruned, shrink=True)
    expected = keras.ops.convert_to_numpy(pruned(x, training=False))
    got = keras.ops.convert_to_numpy(small(x, training=False))
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, atol=atol * scale)
    assert small.count_params() < model.count_params()
    return small


@pytest.mark.parametrize("alpha", [0.35, 1.0])
def test_mobilenetv2_inverted_residual_adds_are_coupled(alpha):
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), alpha=alpha, classes=10
    )
    groups = {g.producers: g for g in dependency_groups(model)}
    # Each Add joins the projection of its block with the previous block's.
    coupled = groups[("block_1_project", "block_2_project")]
    assert coupled.prunable
    assert ("block_3_expand", "kernel", -2, "in") in {
        (m.layer, m.weight, m.axis, m.role) for m in coupled.members
    }
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    small = _masked_equals_shrunk(model, x)
    assert small.get_layer("Conv1").filters < model.get_layer("Conv1").filters


def test_resnet50_shrinks_and_matches_the_masked_model():
    model = keras.applications.ResNet50(
        weights=None, input_shape=(32, 32, 3), classes=5
    )
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    small = _masked_equals_shrunk(model, x)
    assert small.count_params() < 0.5 * model.count_params()


def _case_study_model():
    base = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(32, 32, 3), alpha=0.35
    )
    inputs = keras.Input((32, 32, 3))
    x = L.GlobalAveragePooling2D()(base(inputs))
    x = L.Dense(128, activation="relu", name="head_dense")(x)
    x = L.Dropout(0.2)(x)
    outputs = L.Dense(10, name="classifier")(x)
    return keras.Model(inputs, outputs)


def test_case_study_model_keeps_its_nested_base(tmp_path):
    model = _case_study_model()
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    small = _masked_equals_shrunk(model, x)
    assert isinstance(small.layers[1], keras.Model)  # the base stays nested
    assert small.get_layer("head_dense").units == 64
    assert small.get_layer("classifier").units == 10


def _small_cnn():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            L.Conv2D(32, 3, name="c1"),
            L.BatchNormalization(),
            L.ReLU(),
            L.MaxPooling2D(),
            L.Conv2D(32, 3, name="c2"),
            L.BatchNormalization(),
            L.ReLU(),
            L.GlobalAveragePooling2D(),
            L.Dense(10, name="out"),
        ]
    )


def test_shrunk_model_loads_in_a_fresh_process(tmp_path):
    small = prune_channels(_small_cnn(), 0.5)
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32")
    small.save(tmp_path / "small.keras")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", small.predict(x, verbose=0))
    script = f"""
        import json, os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        import keras, numpy as np
        model = keras.models.load_model({str(tmp_path / "small.keras")!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        expected = np.load({str(tmp_path / "expected.npy")!r})
        print(json.dumps({{
            "error": float(np.abs(model.predict(x, verbose=0) - expected).max()),
            "filters": [l.filters for l in model.layers if hasattr(l, "filters")],
        }}))
        """
    report = run_in_fresh_process(script)
    assert report["error"] < 1e-6
    assert report["filters"] == [16, 16]


def test_shrunk_int8_model_runs_in_litert_and_micro_with_a_smaller_arena():
    rng = np.random.default_rng(0)
    x = rng.random((32, 28, 28, 1)).astype("float32")
    dense = _small_cnn()
    small = prune_channels(dense, 0.5)
    files = {}
    for name, model in (("dense", dense), ("small", small)):
        files[name] = to_tflite(
            model, quantize="int8", representative_data=x, target="micro"
        )
    for runtime in ("litert", "micro"):
        check = verify(files["small"], small, x, runtime=runtime)
        assert check.argmax_agreement >= 0.9
    assert len(files["small"]) < 0.7 * len(files["dense"])
    assert min_arena_bytes(files["small"]) < min_arena_bytes(files["dense"])
