"""to_tflite: every exported file is run in the real interpreter."""

import os
import types

import keras
import numpy as np
import pytest
from export_models import pruned_cnn

import keras_pruning as kp
from keras_pruning.export import model_info, run, to_tflite, verify


@pytest.fixture(scope="module")
def cnn():
    return pruned_cnn()


@pytest.mark.parametrize(
    ("quantize", "target", "sparse", "runtime", "tolerance"),
    [
        (None, "litert", False, "litert", 1e-5),
        ("dynamic", "litert", False, "litert", 0.05),
        ("float16", "litert", False, "litert", 0.01),
        ("int8", "litert", False, "litert", 0.05),
        ("int8", "litert", True, "litert", 0.05),
        (None, "micro", False, "micro", 1e-5),
        ("int8", "micro", False, "micro", 0.05),
    ],
)
def test_exported_files_run_and_match_keras(
    cnn, quantize, target, sparse, runtime, tolerance
):
    pruned, x, y = cnn
    data = to_tflite(
        pruned,
        quantize=quantize,
        representative_data=x if quantize == "int8" else None,
        target=target,
        sparse=sparse,
    )
    info = model_info(data)
    assert bool(info.sparse_tensors) == sparse
    if target == "micro":
        # Fixed batch 1: no dynamic-shape ops.
        assert not {"SHAPE", "STRIDED_SLICE", "PACK"} & set(info.operators)
    result = verify(data, kp.strip_pruning(pruned), x[:16], y=y[:16], runtime=runtime)
    assert result.samples == 16
    assert result.max_abs_error < tolerance * 10
    assert result.mean_abs_error < tolerance
    assert result.argmax_agreement >= 0.9
    assert result.accuracy is not None and result.keras_accuracy is not None


def test_int8_files_take_int8_input_and_are_smaller(cnn):
    pruned, x, _ = cnn
    float_file = to_tflite(pruned)
    int8_file = to_tflite(
        pruned, quantize="int8", representative_data=x, target="micro"
    )
    assert len(int8_file) < len(float_file) / 3.5
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(int8_file)
    assert np.dtype(interpreter.get_input_details(0)["dtype"]) == np.int8
    assert np.dtype(interpreter.get_output_details(0)["dtype"]) == np.int8


def test_strips_wrappers_and_keeps_sparse_weights(cnn):
    pruned, x, _ = cnn
    # The float file holds the masked weights: its outputs match the stripped
    # model, which differs from the dense weights of the wrapped layers.
    data = to_tflite(pruned)
    stripped = kp.strip_pruning(pruned)
    assert verify(data, stripped, x[:4]).max_abs_error < 1e-5


@pytest.mark.parametrize(
    "source",
    ["array", "list", "dataset", "dataset_pairs", "generator", "callable"],
)
def test_representative_data_forms(cnn, source):
    import tensorflow as tf

    pruned, x, y = cnn
    forms = {
        "array": x,
        "list": [x],
        "dataset": tf.data.Dataset.from_tensor_slices(x).batch(8),
        "dataset_pairs": tf.data.Dataset.from_tensor_slices((x, y)).batch(8),
        "generator": (x[i : i + 8] for i in range(0, 64, 8)),
        "callable": lambda: (x[i : i + 8] for i in range(0, 64, 8)),
    }
    data = to_tflite(pruned, quantize="int8", representative_data=forms[source])
    assert verify(data, kp.strip_pruning(pruned), x[:8]).argmax_agreement >= 0.875


def test_writes_path_atomically(cnn, tmp_path):
    pruned, _, _ = cnn
    path = tmp_path / "sub" / "model.tflite"
    data = to_tflite(pruned, path=path)
    assert path.read_bytes() == data
    assert [p.name for p in path.parent.iterdir()] == ["model.tflite"]


def test_failed_export_leaves_no_file(cnn, tmp_path, monkeypatch):
    import tensorflow as tf

    pruned, _, _ = cnn

    class BrokenConverter:
        target_spec = types.SimpleNamespace()

        def convert(self):
            raise RuntimeError("converter exploded")

    monkeypatch.setattr(
        tf.lite.TFLiteConverter, "from_saved_model", lambda path: BrokenConverter()
    )
    path = tmp_path / "model.tflite"
    with pytest.raises(RuntimeError, match="converter failed.*exploded"):
        to_tflite(pruned, path=path)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_survives_a_failed_export(cnn, tmp_path, monkeypatch):
    from keras_pruning import _files

    pruned, _, _ = cnn
    path = tmp_path / "model.tflite"
    path.write_bytes(b"previous")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(_files.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        to_tflite(pruned, path=path, overwrite=True)
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]


def test_bad_arguments_name_the_argument(cnn):
    pruned, x, _ = cnn
    with pytest.raises(TypeError, match="model.*Received"):
        to_tflite("model.keras")
    with pytest.raises(ValueError, match="quantize.*Received: quantize='int4'"):
        to_tflite(pruned, quantize="int4")
    with pytest.raises(ValueError, match="target.*Received: target='mcu'"):
        to_tflite(pruned, target="mcu")
    with pytest.raises(ValueError, match="sparse=True, target='micro'"):
        to_tflite(pruned, target="micro", sparse=True)
    with pytest.raises(ValueError, match="target='micro'.*quantize='dynamic'"):
        to_tflite(pruned, target="micro", quantize="dynamic")
    with pytest.raises(ValueError, match="representative_data=None"):
        to_tflite(pruned, quantize="int8")
    with pytest.raises(TypeError, match="sparse.*Received"):
        to_tflite(pruned, sparse="yes")
    with pytest.raises(TypeError, match="representative_data.*dict"):
        to_tflite(pruned, quantize="int8", representative_data={"x": x})
    with pytest.raises(ValueError, match=r"shapes \[\(28, 28, 1\)\].*\(10,\)"):
        to_tflite(pruned, quantize="int8", representative_data=np.zeros((4, 10)))
    with pytest.raises(TypeError, match="path.*Received"):
        to_tflite(pruned, path=3)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_calibration_data_must_be_finite(cnn, bad):
    pruned, x, _ = cnn
    data = x[:8].copy()
    data[3, 5, 5, 0] = bad
    with pytest.raises(ValueError, match="finite numbers.*in sample 3"):
        to_tflite(pruned, quantize="int8", representative_data=data)


def test_an_int8_request_that_gives_a_float_file_raises(cnn, monkeypatch):
    from keras_pruning.export import _convert

    pruned, x, _ = cnn
    float_file = to_tflite(pruned)
    monkeypatch.setattr(_convert, "_convert", lambda *args: float_file)
    with pytest.raises(RuntimeError, match=r"did not quantize .*\['FLOAT32'\]"):
        to_tflite(pruned, quantize="int8", representative_data=x[:8])


class _ClassIds(keras.layers.Layer):
    def call(self, logits):
        import tensorflow as tf  # keras.ops.argmax needs flex ops in TFLite

        return tf.math.argmax(logits, axis=-1, output_type=tf.int32)


def test_int8_keeps_integer_outputs_integers(cnn):
    _, x, _ = cnn
    inputs = keras.Input((28, 28, 1))
    logits = keras.layers.Dense(3)(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, [logits, _ClassIds()(logits)])
    data = to_tflite(model, quantize="int8", representative_data=x[:16])
    assert model_info(data).output_types == ("INT8", "INT32")


def test_int8_micro_refuses_a_recurrent_loop_and_runs_it_unrolled():
    rng = np.random.default_rng(0)
    x = rng.random((32, 6, 4)).astype("float32")

    def lstm_model(unroll):
        keras.utils.set_random_seed(0)
        return keras.Sequential(
            [
                keras.Input((6, 4)),
                keras.layers.LSTM(8, unroll=unroll, name="lstm"),
                keras.layers.Dense(3),
            ]
        )

    with pytest.raises(ValueError, match="layer 'lstm' of class LSTM"):
        to_tflite(
            lstm_model(False), quantize="int8", representative_data=x, target="micro"
        )
    unrolled = lstm_model(True)
    data = to_tflite(unrolled, quantize="int8", representative_data=x, target="micro")
    result = verify(data, unrolled, x[:8], runtime="micro")
    assert result.max_abs_error < 0.1


def test_model_without_inputs_is_rejected():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="no known inputs"):
        to_tflite(Net())


def test_export_does_not_import_tflite_micro_at_package_import():
    import subprocess
    import sys

    code = (
        "import sys, keras_pruning, keras_pruning.export; "
        "print('tflite_micro' in sys.modules, 'ai_edge_litert' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=300,
    )
    assert result.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("target", ["litert", "micro"])
def test_exports_inference_mode_after_a_layer_that_defaults_to_training(target):
    # Keras's image preprocessing layers default to `training=True`, which a
    # call without `training` spreads to later layers: BatchNormalization
    # would be exported with batch statistics and moving-average updates.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Resizing(8, 8)(inputs)
    x = keras.layers.Conv2D(4, 3)(x)
    norm = keras.layers.BatchNormalization()
    x = norm(x)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    norm.moving_mean.assign(np.full(4, 0.5, "float32"))
    norm.moving_variance.assign(np.full(4, 4.0, "float32"))
    data = to_tflite(model, target=target)
    assert not {"VAR_HANDLE", "ASSIGN_VARIABLE", "SQUARED_DIFFERENCE"} & set(
        model_info(data).operators
    )
    x = np.random.default_rng(0).random((4, 6, 6, 1), dtype="float32")
    assert verify(data, model, x, runtime=target).max_abs_error < 1e-4


def _block_maps(data):
    """`{tensor name: (block_map, block dims)}` of the file's sparse tensors."""
    from keras_pruning.export._flatbuffer import check_tflite_bytes

    model = check_tflite_bytes(data)
    return {
        tensor.name.decode(): (
            list(tensor.sparsity.blockMap),
            [d.denseSize for d in tensor.sparsity.dimMetadata[2:]],
        )
        for tensor in model.subgraphs[0].tensors
        if tensor.sparsity is not None
    }


def test_block_16x1_dense_model_exports_block_encoded_and_runs_in_litert():
    """Keras's (16, 1) block, 16 consecutive inputs of one output of an
    `(input, output)` kernel, is LiteRT's int8 1x16 block in its
    `(output, input)` layout: FULLY_CONNECTED reads it with no DENSIFY."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((64, 64)).astype("float32")
    y = rng.integers(0, 10, 64)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    pruned = kp.prune_low_magnitude(
        model, kp.ConstantSparsity(0.8, 0, frequency=1), block_size=(16, 1)
    )
    pruned.compile("adam", "sparse_categorical_crossentropy")
    pruned.fit(x, y, batch_size=16, verbose=0, callbacks=[kp.UpdatePruningStep()])
    final = kp.strip_pruning(pruned)
    dense = to_tflite(final, quantize="int8", representative_data=x)
    sparse = to_tflite(final, quantize="int8", representative_data=x, sparse=True)

    assert len(sparse) < 0.7 * len(dense)
    assert model_info(sparse).operators == ("FULLY_CONNECTED",)  # no DENSIFY
    maps = _block_maps(sparse)
    assert len(maps) == 2
    assert all(block == ([1], [16]) for block in maps.values())
    # The block-sparse file computes exactly what the dense-encoded one does.
    dense_out, _ = run(dense, x[:16])
    sparse_out, _ = run(sparse, x[:16])
    np.testing.assert_array_equal(sparse_out, dense_out)
    result = verify(sparse, final, x[:16])
    assert result.max_abs_error < 0.05 and result.mean_abs_error < 0.01


def test_block_1x16_in_keras_layout_is_not_litert_block():
    """The transposed block (16 outputs of one input) is random sparsity to the
    converter: a compressed row encoding, densified at load."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32)])
    x = np.random.default_rng(0).random((16, 64)).astype("float32")
    sparse_model = kp.prune_to_sparsity(model, 0.8, block_size=(1, 16))
    sparse = to_tflite(
        sparse_model, quantize="int8", representative_data=x, sparse=True
    )
    assert "DENSIFY" in model_info(sparse).operators
    assert all(block == ([], []) for block in _block_maps(sparse).values())


def _two_inputs_two_outputs():
    """Inputs of different widths and scales, and outputs of different sizes:
    any mix-up of their order shows."""
    keras.utils.set_random_seed(0)
    a, b = keras.Input((5,), name="a"), keras.Input((4,), name="b")
    hidden = keras.layers.Concatenate()([a, keras.layers.Rescaling(10.0)(b)])
    outputs = [keras.layers.Dense(3)(hidden), keras.layers.Dense(2)(hidden)]
    rng = np.random.default_rng(0)
    x = [rng.random((32, 5), "float32"), rng.random((32, 4), "float32")]
    return keras.Model([a, b], outputs), x


@pytest.mark.parametrize(
    ("quantize", "target", "runtime", "tolerance"),
    [
        (None, "litert", "litert", 1e-4),
        (None, "micro", "micro", 1e-4),
        ("int8", "litert", "litert", 0.3),
        ("int8", "micro", "micro", 0.3),
    ],
)
def test_inputs_and_outputs_are_matched_by_name(quantize, target, runtime, tolerance):
    import tensorflow as tf

    model, x = _two_inputs_two_outputs()
    sources = [x, tf.data.Dataset.from_tensor_slices(tuple(x)).batch(8)]
    for source in sources if quantize else [None]:
        data = to_tflite(
            model, quantize=quantize, representative_data=source, target=target
        )
        files = [data]
        if target == "micro":  # which strips the signature that names them
            files.append(kp.export.compress_for_micro(data, min_saving_bytes=0)[0])
        for file in files:
            first, _ = run(file, x, runtime=runtime)
            expected = keras.ops.convert_to_numpy(model(x)[0])
            np.testing.assert_allclose(first, expected, atol=tolerance)
            assert verify(file, model, x, runtime=runtime).max_abs_error < tolerance


def test_integer_inputs_run_as_they_are():
    keras.utils.set_random_seed(0)
    ids = keras.Input((6,), dtype="int32")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(50, 8)(ids))
    model = keras.Model(ids, keras.layers.Dense(3)(pooled))
    x = np.random.default_rng(0).integers(0, 50, (16, 6)).astype("int32")
    for quantize, tolerance in ((None, 1e-5), ("dynamic", 0.05)):
        data = to_tflite(model, quantize=quantize)
        assert verify(data, model, x).max_abs_error < tolerance


def test_inputs_with_an_unknown_axis_run_at_their_own_length():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, 8))
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Dense(4)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(pooled))
    x = np.random.default_rng(0).random((16, 10, 8), "float32")
    data = to_tflite(model, quantize="int8", representative_data=x)
    assert verify(data, model, x).max_abs_error < 0.05
