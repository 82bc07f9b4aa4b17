"""compress_for_micro: TFLM DECODE PRUNE re-encoding of int8 TFLite Micro files."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tflite_micro.python.tflite_micro import runtime
from tflite_micro.tensorflow.lite.micro.compression import model_editor, spec
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from keras_pruning.export import run
from keras_pruning.export._flatbuffer import model_info
from keras_pruning.export._micro_compress import (
    PruneCompressor,
    compress_for_micro,
)

HIDDEN_SHAPE = (64, 13 * 13 * 16)  # TFLite FULLY_CONNECTED kernel: (units, inputs)
LOGITS_SHAPE = (10, 64)


def _zero_smallest(model, sparsity):
    """Magnitude pruning by hand: zero the smallest `sparsity` of each kernel."""
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None or not sparsity:
            continue
        values = keras.ops.convert_to_numpy(kernel)
        threshold = np.quantile(np.abs(values), sparsity)
        layer.kernel.assign(np.where(np.abs(values) > threshold, values, 0.0))


def _to_int8_tflite(model, input_shape, seed, sparse=False):
    """Full-integer conversion of a batch-1 concrete function, int8 in and out."""
    trainable = [
        tf.constant(keras.ops.convert_to_numpy(v)) for v in model.trainable_variables
    ]
    frozen = [
        tf.constant(keras.ops.convert_to_numpy(v))
        for v in model.non_trainable_variables
    ]
    serve = tf.function(
        lambda x: model.stateless_call(trainable, frozen, x, training=False)[0],
        input_signature=[tf.TensorSpec((1, *input_shape), tf.float32)],
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], model
    )
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if sparse:
        converter.optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    rng = np.random.default_rng(seed)
    converter.representative_dataset = lambda: (
        [rng.random((1, *input_shape), dtype=np.float32)] for _ in range(8)
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return bytes(converter.convert())


def _cnn(sparsity):
    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(64, activation="relu", name="hidden"),
            keras.layers.Dense(10, name="logits"),
        ]
    )
    _zero_smallest(model, sparsity)
    return model


def _depthwise(sparsity):
    # A depthwise kernel (1, 5, 5, 256) is quantized along its LAST axis: the
    # decoder's per-channel "alternate axis" path.
    keras.utils.set_random_seed(11)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 4)),
            keras.layers.Conv2D(256, 1, name="expand"),
            keras.layers.DepthwiseConv2D(5, padding="same", name="depthwise"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(10, name="logits"),
        ]
    )
    _zero_smallest(model, sparsity)
    return model


def _clustered(levels=8):
    """The dense CNN with every kernel snapped to `levels` shared values."""
    model = _cnn(0.0)
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is not None:
            values = keras.ops.convert_to_numpy(kernel)
            grid = np.linspace(-np.abs(values).max(), np.abs(values).max(), levels)
            nearest = np.abs(values[..., None] - grid).argmin(-1)
            layer.kernel.assign(grid[nearest].astype("float32"))
    return model


@pytest.fixture(scope="module")
def files():
    """One conversion per model for the whole module."""
    cnn80 = _cnn(0.8)
    return {
        "clustered": _to_int8_tflite(_clustered(), (28, 28, 1), seed=0),
        "s80": _to_int8_tflite(cnn80, (28, 28, 1), seed=0),
        "dense": _to_int8_tflite(_cnn(0.0), (28, 28, 1), seed=0),
        "sparse": _to_int8_tflite(cnn80, (28, 28, 1), seed=0, sparse=True),
        "depthwise": _to_int8_tflite(_depthwise(0.8), (8, 8, 4), seed=1),
    }


@pytest.fixture(scope="module")
def s80(files):
    return compress_for_micro(files["s80"])


def _outputs(data, inputs):
    interpreter = runtime.Interpreter.from_bytes(data)
    outputs = []
    for x in inputs:
        interpreter.set_input(x, 0)
        interpreter.invoke()
        outputs.append(interpreter.get_output(0).copy())
    return outputs


def _int8_inputs(shape, seed, count=4):
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, (1, *shape), dtype=np.int8) for _ in range(count)]


def _tensor(model, shape, dtype=schema.TensorType.INT8):
    (found,) = [
        t for t in model.subgraphs[0].tensors if t.shape == shape and t.dtype == dtype
    ]
    return found


def _reference_decode(mask_bytes, ancillary, shape, dtype, zero_points, axis):
    """Decodes PRUNE data the way TFLM's decode_state_prune.cc does."""
    count = int(np.prod(shape))
    keep = np.unpackbits(np.frombuffer(mask_bytes, np.uint8), count=count)
    values = np.frombuffer(ancillary[16:], dtype)
    assert values.size == keep.sum()
    points = np.asarray(zero_points, dtype)
    flat = np.arange(count)
    if axis == len(shape) - 1:
        channel = flat % points.size  # channels cycle element by element
    else:
        channel = flat // (count // points.size)  # channel-major blocks
    out = points[channel]
    out[keep.astype(bool)] = values
    return out.reshape(shape)


# --- the 80 %-sparse CNN ---------------------------------------------------


def test_compressed_cnn_is_bit_exact_in_tflite_micro(files, s80):
    compressed, _ = s80
    inputs = _int8_inputs((28, 28, 1), seed=3)
    expected = _outputs(files["s80"], inputs)
    got = _outputs(compressed, inputs)
    assert all(y.dtype == np.int8 and y.shape == (1, 10) for y in got)
    np.testing.assert_array_equal(np.stack(got), np.stack(expected))
    assert len({y.tobytes() for y in got}) > 1  # the inputs are told apart
    assert "TFLM_DECODE" in model_info(compressed).operators
    assert "TFLM_DECODE" not in model_info(files["s80"]).operators


def test_compressed_cnn_is_at_least_2_5x_smaller(files, s80):
    compressed, report = s80
    # Measured: 177,448 -> 60,640 bytes (2.93x).
    assert len(files["s80"]) >= 2.5 * len(compressed)
    assert report.bytes_before == len(files["s80"])
    assert report.bytes_after == len(compressed)


def test_report_rows_match_the_prune_format_sizes(s80):
    _, report = s80
    # The 640-byte logits kernel pays off too: it saves 240 bytes of file.
    assert [row.shape for row in report.tensors] == [LOGITS_SHAPE, HIDDEN_SHAPE]
    for row in report.tensors:
        count = int(np.prod(row.shape))
        kept = round((1.0 - row.sparsity) * count)
        assert row.dtype == "INT8"
        assert row.sparsity == pytest.approx(0.8, abs=1e-2)
        assert row.bytes_before == count
        # Mask bits, 16-byte header, one byte per kept int8 value.
        assert row.bytes_after == -(-count // 8) + 16 + kept
    assert report.decoded_bytes == sum(r.bytes_before for r in report.tensors)


def test_report_savings_account_for_the_file_size_difference(files):
    _, report = compress_for_micro(files["s80"], strip_strings=False)
    assert all(row.bytes_after < row.bytes_before for row in report.tensors)
    tensor_saving = sum(r.bytes_before - r.bytes_after for r in report.tensors)
    file_saving = report.bytes_before - report.bytes_after
    # The file saves less than the tensors: per tensor, a DECODE operator, the
    # decoded and ancillary tensor entries, their names and alignment padding
    # (measured: 405 bytes for two tensors). The quantization parameters move
    # from the encoded tensor to the decoded one, so they cost nothing: left on
    # the encoded tensor too, they would cost 12 bytes per output channel.
    assert tensor_saving - 256 * len(report.tensors) <= file_saving <= tensor_saving


def test_compressed_file_holds_the_prune_byte_format(files, s80):
    compressed, _ = s80
    original = _tensor(model_editor.read(files["s80"]), HIDDEN_SHAPE)
    model = model_editor.read(compressed)
    decode_ops = [
        op for op in model.subgraphs[0].operators if op.custom_code == "TFLM_DECODE"
    ]
    assert [op.outputs[0].shape for op in decode_ops] == [HIDDEN_SHAPE, LOGITS_SHAPE]
    encoded, ancillary = decode_ops[0].inputs
    assert encoded.dtype == ancillary.dtype == schema.TensorType.UINT8
    # The decoders read the quantization of their output only.
    assert encoded.quantization is None and ancillary.quantization is None
    assert decode_ops[0].outputs[0].quantization == original.quantization
    header = ancillary.buffer.data[:16]
    # Type 2 (PRUNE), DCM version 1, reserved, PRUNE version 1, reserved.
    assert header == bytes([2, 1, 0, 0, 1]) + bytes(11)
    decoded = _reference_decode(
        encoded.buffer.data,
        ancillary.buffer.data,
        HIDDEN_SHAPE,
        np.int8,
        original.quantization.zero_points,
        axis=0,
    )
    np.testing.assert_array_equal(decoded, original.array)
    # Each DECODE output is read by the operator right after it.
    for decode_op in decode_ops:
        (output,) = decode_op.outputs
        position = model.subgraphs[0].operators.index(decode_op)
        assert output in model.subgraphs[0].operators[position + 1].inputs


def test_dense_model_is_returned_unchanged_when_names_are_kept(files):
    data = files["dense"]
    compressed, report = compress_for_micro(data, strip_strings=False)
    assert compressed == data
    assert report.tensors == ()
    assert report.bytes_before == report.bytes_after == len(data)
    assert report.decoded_bytes == 0


# --- strip_strings ----------------------------------------------------------


def _strings(data):
    """What stripping removes: `(tensor names, subgraph names, description,
    signature keys, metadata names)`, with empty strings for absent ones."""
    model = schema.ModelT.InitFromPackedBuf(data, 0)

    def text(value):
        return value.decode() if value else ""

    return (
        [text(t.name) for g in model.subgraphs for t in g.tensors],
        [text(g.name) for g in model.subgraphs],
        text(model.description),
        [text(d.signatureKey) for d in model.signatureDefs or []],
        [text(m.name) for m in model.metadata or []],
    )


def test_names_signatures_and_converter_metadata_are_stripped_by_default(files, s80):
    tensors, subgraphs, description, signatures, metadata = _strings(files["s80"])
    assert all(tensors) and all(subgraphs) and description
    assert signatures == ["serving_default"]
    assert sorted(metadata) == ["CONVERSION_METADATA", "min_runtime_version"]
    compressed, _ = s80
    tensors, subgraphs, description, signatures, metadata = _strings(compressed)
    assert not any(tensors) and not any(subgraphs) and not description
    assert signatures == metadata == []
    # TFLM_DECODE is an operator code, not a name: it stays.
    assert "TFLM_DECODE" in model_info(compressed).operators


def test_strip_strings_false_keeps_names_signatures_and_metadata(files, s80):
    data = files["s80"]
    named, report = compress_for_micro(data, strip_strings=False)
    tensors, subgraphs, description, signatures, metadata = _strings(named)
    original = _strings(data)
    assert set(original[0]) < set(tensors)
    assert {f"{row.name}_decoded" for row in report.tensors} < set(tensors)
    assert (subgraphs, description, signatures) == original[1:4]
    assert sorted(metadata) == sorted(original[4])
    # Stripping saves at least the characters of the tensor names.
    stripped, stripped_report = s80
    assert len(named) - len(stripped) >= sum(len(name) for name in tensors)
    assert len(named) < len(data)
    assert stripped_report.tensors == report.tensors
    inputs = _int8_inputs((28, 28, 1), seed=4, count=3)
    np.testing.assert_array_equal(
        np.stack(_outputs(named, inputs)), np.stack(_outputs(stripped, inputs))
    )


def test_stripping_keeps_metadata_the_converter_did_not_write(files):
    model = model_editor.read(files["s80"])
    model.metadata["user_notes"] = b"kept"
    model_editor.prune_buffers(model)
    compressed, _ = compress_for_micro(bytes(model.build()))
    assert _strings(compressed)[4] == ["user_notes"]
    assert model_editor.read(compressed).metadata == {"user_notes": b"kept"}


def test_stripped_dense_file_gives_identical_outputs_in_litert_and_tflite_micro(
    files,
):
    data = files["dense"]
    stripped, report = compress_for_micro(data)
    assert report.tensors == () and report.decoded_bytes == 0
    assert report.bytes_after == len(stripped)
    assert len(data) - len(stripped) >= sum(len(name) for name in _strings(data)[0])
    assert not any(_strings(stripped)[0])
    x = np.random.default_rng(6).random((4, 28, 28, 1), dtype=np.float32)
    for interpreter in ("litert", "micro"):
        expected, _ = run(data, x, runtime=interpreter)
        got, _ = run(stripped, x, runtime=interpreter)
        np.testing.assert_array_equal(got, expected)
        assert len({y.tobytes() for y in got}) > 1  # the inputs are told apart


def test_an_already_stripped_file_is_returned_unchanged(files):
    stripped, _ = compress_for_micro(files["dense"])
    again, report = compress_for_micro(stripped)
    assert again == stripped
    assert report.bytes_before == report.bytes_after == len(stripped)


def test_min_saving_bytes_skips_tensors_that_save_less(files, s80):
    _, report = s80
    saving = max(row.bytes_before - row.bytes_after for row in report.tensors)
    data = files["s80"]
    compressed, none = compress_for_micro(
        data, min_saving_bytes=saving, strip_strings=False
    )
    assert compressed == data
    assert none.tensors == ()


def test_ram_budget_limits_the_decoded_bytes(files):
    data = files["s80"]
    everything = compress_for_micro(data, min_saving_bytes=0)[1]
    assert len(everything.tensors) >= 1
    hidden = int(np.prod(HIDDEN_SHAPE))
    compressed, report = compress_for_micro(
        data, min_saving_bytes=0, ram_budget_bytes=hidden
    )
    assert HIDDEN_SHAPE in [row.shape for row in report.tensors]
    assert report.decoded_bytes <= hidden
    small = compress_for_micro(data, min_saving_bytes=0, ram_budget_bytes=hidden - 1)
    assert HIDDEN_SHAPE not in [row.shape for row in small[1].tensors]
    assert small[1].decoded_bytes <= hidden - 1
    unchanged, nothing = compress_for_micro(
        data, ram_budget_bytes=0, strip_strings=False
    )
    assert unchanged == data
    assert nothing.tensors == ()
    inputs = _int8_inputs((28, 28, 1), seed=5, count=2)
    np.testing.assert_array_equal(
        np.stack(_outputs(compressed, inputs)), np.stack(_outputs(data, inputs))
    )


# --- per-channel along the last axis (depthwise kernels) ------------------


def test_depthwise_kernel_quantized_on_last_axis_is_bit_exact(files):
    data = files["depthwise"]
    compressed, report = compress_for_micro(data)
    assert (1, 5, 5, 256) in [row.shape for row in report.tensors]
    assert len(compressed) < len(data)
    inputs = _int8_inputs((8, 8, 4), seed=9, count=3)
    np.testing.assert_array_equal(
        np.stack(_outputs(compressed, inputs)), np.stack(_outputs(data, inputs))
    )


# --- the encoder on hand-made tensors -------------------------------------


def _encode(values, dtype, quantization=None):
    tensor = model_editor.Tensor(
        shape=values.shape, dtype=dtype, data=values, quantization=quantization
    )
    return PruneCompressor().compress(tensor, spec.PruningCompression())


def test_encoder_masks_per_channel_zero_points_msb_first():
    values = np.array([[0, 5, 0, 7], [3, 3, 9, 3]], np.int8)
    quantization = model_editor.Quantization(
        scales=[0.1, 0.2], zero_points=[0, 3], axis=0
    )
    result = _encode(values, schema.TensorType.INT8, quantization)
    assert result.encoded_data == bytes([0b0101_0010])
    assert result.ancillary_data == bytes([2, 1, 0, 0, 1]) + bytes(11) + bytes(
        [5, 7, 9]
    )


def test_encoder_cycles_zero_points_on_the_last_axis():
    values = np.array([[1, -2], [4, -2], [1, 6]], np.int8)
    quantization = model_editor.Quantization(
        scales=[0.1, 0.2], zero_points=[1, -2], axis=1
    )
    result = _encode(values, schema.TensorType.INT8, quantization)
    assert result.encoded_data == bytes([0b0010_0100])
    assert result.ancillary_data[16:] == np.array([4, 6], np.int8).tobytes()


def test_encoder_keeps_negative_zero_floats_and_wide_ints():
    floats = np.array([0.0, -0.0, 1.5, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0], np.float32)
    result = _encode(floats, schema.TensorType.FLOAT32)
    assert result.encoded_data == bytes([0b0110_0000, 0b1000_0000])
    assert result.ancillary_data[16:] == floats[[1, 2, 8]].tobytes()
    ints = np.array([0, 70000, 0, -1], np.int32)
    result = _encode(ints, schema.TensorType.INT32)
    assert result.encoded_data == bytes([0b0101_0000])
    assert result.ancillary_data[16:] == ints[[1, 3]].tobytes()


def test_encoder_refuses_what_the_decoder_cannot_rebuild():
    from tflite_micro.tensorflow.lite.micro.compression.compressor import (
        CompressionError,
    )

    with pytest.raises(CompressionError, match="UINT8"):
        _encode(np.zeros(8, np.uint8), schema.TensorType.UINT8)
    nonzero = model_editor.Quantization(scales=[0.5], zero_points=[3])
    with pytest.raises(CompressionError, match="zero points 0 for INT16"):
        _encode(np.zeros(8, np.int16), schema.TensorType.INT16, nonzero)
    middle = model_editor.Quantization(scales=[1.0, 1.0], zero_points=[0, 0], axis=1)
    with pytest.raises(CompressionError, match="quantized_dimension"):
        _encode(np.zeros((2, 2, 2), np.int8), schema.TensorType.INT8, middle)


# --- errors --------------------------------------------------------------


def test_non_bytes_input_is_a_type_error():
    with pytest.raises(TypeError, match="tflite_bytes.*Received.*str"):
        compress_for_micro("model.tflite")


def test_bytes_that_are_not_tflite_are_rejected(files):
    with pytest.raises(ValueError, match="TFL3.*Received: 12 bytes"):
        compress_for_micro(b"not a model!")
    corrupt = files["s80"][:8] + bytes(64)
    with pytest.raises(ValueError, match="tflite_bytes.*Received: 72 bytes"):
        compress_for_micro(corrupt)


def test_sparse_tensors_are_rejected(files):
    assert model_info(files["sparse"]).sparse_tensors
    with pytest.raises(ValueError, match="sparse tensors.*Received: sparse tensors"):
        compress_for_micro(files["sparse"])


def test_unknown_method_and_bad_integers_are_rejected(files):
    data = files["s80"]
    with pytest.raises(ValueError, match="method.*Received: method='huffman'"):
        compress_for_micro(data, method="huffman")
    with pytest.raises(ValueError, match="Received: method=None"):
        compress_for_micro(data, method=None)
    with pytest.raises(ValueError, match="Received: min_saving_bytes=-1"):
        compress_for_micro(data, min_saving_bytes=-1)
    with pytest.raises(TypeError, match="Received: min_saving_bytes=1.5"):
        compress_for_micro(data, min_saving_bytes=1.5)
    with pytest.raises(TypeError, match="Received: ram_budget_bytes=True"):
        compress_for_micro(data, ram_budget_bytes=True)
    with pytest.raises(
        TypeError,
        match="`strip_strings` must be True or False. Received: strip_strings=1",
    ):
        compress_for_micro(data, strip_strings=1)


def test_missing_tflite_micro_says_what_to_install(files, monkeypatch):
    monkeypatch.setitem(sys.modules, "tflite_micro", None)
    with pytest.raises(ImportError, match=r"pip install 'keras-pruning\[export\]'"):
        compress_for_micro(files["s80"])


def test_lut_compresses_clustered_weights_bit_exact(files):
    data = files["clustered"]
    compressed, report = compress_for_micro(data, method="lut")
    assert len(compressed) * 2 < len(data)
    hidden = next(t for t in report.tensors if t.shape == HIDDEN_SHAPE)
    # 8 levels: 3-bit indices, plus the per-channel value tables.
    assert hidden.bytes_after < HIDDEN_SHAPE[0] * HIDDEN_SHAPE[1] * 3 / 8 + 2_000
    inputs = _int8_inputs((28, 28, 1), seed=5)
    for plain, packed in zip(
        _outputs(data, inputs), _outputs(compressed, inputs), strict=True
    ):
        np.testing.assert_array_equal(plain, packed)


def test_prune_does_not_pay_on_dense_clustered_weights(files):
    data = files["clustered"]
    compressed, report = compress_for_micro(data, method="prune", strip_strings=False)
    assert compressed == data and report.tensors == ()


def test_auto_picks_the_smaller_encoding_per_tensor(files):
    clustered, _ = compress_for_micro(files["clustered"], method="auto")
    lut_only, _ = compress_for_micro(files["clustered"], method="lut")
    assert len(clustered) == len(lut_only)
    sparse_auto, _ = compress_for_micro(files["s80"], method="auto")
    sparse_prune, _ = compress_for_micro(files["s80"], method="prune")
    # 80% zeros but ~255 distinct values: PRUNE wins, LUT would need 8 bits.
    assert len(sparse_auto) == len(sparse_prune)
