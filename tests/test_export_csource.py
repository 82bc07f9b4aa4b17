"""write_c_source: TFLM-style C++ that compiles."""

import pathlib
import re
import shutil
import subprocess

import numpy as np
import pytest
from export_models import pruned_cnn

from keras_pruning.export import to_tflite, write_c_source
from keras_pruning.export._csource import resolver_method


@pytest.fixture(scope="module")
def micro_file():
    pruned, x, _ = pruned_cnn()
    return to_tflite(pruned, quantize="int8", representative_data=x, target="micro")


def test_writes_compilable_aligned_array(micro_file, tmp_path):
    cc, header, resolver = write_c_source(micro_file, tmp_path / "mnist", name="mnist")
    source = pathlib.Path(cc).read_text()
    assert "alignas(16) const unsigned char g_mnist_model_data[] = {" in source
    assert f"const unsigned int g_mnist_model_data_size = {len(micro_file)};" in source
    assert (
        "extern const unsigned char g_mnist_model_data[];"
        in pathlib.Path(header).read_text()
    )
    values = re.findall(r"0x([0-9a-f]{2})", source)
    assert bytes(int(v, 16) for v in values) == micro_file
    assert shutil.which("g++"), "g++ is needed to compile the generated source"
    main = tmp_path / "main.cc"
    main.write_text(
        '#include "mnist.h"\n'
        "int main() { return g_mnist_model_data_size > 0 &&"
        " (reinterpret_cast<unsigned long>(g_mnist_model_data) % 16) == 0 ? 0 : 1; }\n"
    )
    binary = tmp_path / "check"
    subprocess.run(
        ["g++", "-std=c++17", "-Wall", "-Werror", "-o", str(binary), cc, str(main)],
        check=True,
        capture_output=True,
    )
    assert subprocess.run([str(binary)]).returncode == 0
    text = pathlib.Path(resolver).read_text()
    assert "MicroMutableOpResolver<4>" in text
    for method in ("AddConv2D", "AddMaxPool2D", "AddReshape", "AddFullyConnected"):
        assert f"resolver.{method}()" in text


@pytest.mark.parametrize(
    ("operator", "method"),
    [
        ("CONV_2D", "AddConv2D"),
        ("DEPTHWISE_CONV_2D", "AddDepthwiseConv2D"),
        ("FULLY_CONNECTED", "AddFullyConnected"),
        ("MAX_POOL_2D", "AddMaxPool2D"),
        ("RELU6", "AddRelu6"),
        ("TFLM_DECODE", "AddDecode"),
        ("BATCH_MATMUL", "AddBatchMatMul"),
        # Names in TFLM's micro_mutable_op_resolver.h that the rule misses.
        ("PADV2", "AddPadV2"),
        ("CUMSUM", "AddCumSum"),
        ("UNIDIRECTIONAL_SEQUENCE_LSTM", "AddUnidirectionalSequenceLSTM"),
        ("LOG_SOFTMAX", "AddLogSoftmax"),
        ("RESIZE_NEAREST_NEIGHBOR", "AddResizeNearestNeighbor"),
        ("L2_POOL_2D", "AddL2Pool2D"),
    ],
)
def test_resolver_method_names(operator, method):
    assert resolver_method(operator) == method


@pytest.mark.parametrize("name", ["1model", "my-model", "", None])
def test_bad_names_are_rejected(micro_file, tmp_path, name):
    with pytest.raises(ValueError, match="name.*C identifier.*Received"):
        write_c_source(micro_file, tmp_path / "m", name=name)
    assert list(tmp_path.iterdir()) == []


def test_pruned_keras_model_to_compressed_micro_file_and_c_source(micro_file, tmp_path):
    from tflite_micro.python.tflite_micro import runtime

    from keras_pruning.export import compress_for_micro, model_info, run

    compressed, report = compress_for_micro(micro_file)
    assert len(compressed) * 2.5 < len(micro_file)
    assert report.bytes_before == len(micro_file) and report.bytes_after == len(
        compressed
    )
    assert "TFLM_DECODE" in model_info(compressed).operators
    _, x, _ = pruned_cnn()
    # Compressed and plain files give bit-exact outputs in TFLite Micro.
    plain_out, _ = run(micro_file, x[:8], runtime="micro")
    compressed_out, _ = run(compressed, x[:8], runtime="micro")
    np.testing.assert_array_equal(plain_out, compressed_out)
    runtime.Interpreter.from_bytes(compressed).invoke()
    _, _, resolver = write_c_source(compressed, tmp_path / "model")
    assert "resolver.AddDecode()" in pathlib.Path(resolver).read_text()
