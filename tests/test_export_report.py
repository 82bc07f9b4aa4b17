"""report: sizes, arena, latency and accuracy of a pruned model's exports."""

import json
import math

import numpy as np
import pytest
from export_models import pruned_cnn

import keras_pruning as kp
from keras_pruning.export import information_floor_bytes, report
from keras_pruning.export._report import write_report


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    pruned, x, y = pruned_cnn()
    out = tmp_path_factory.mktemp("report")
    return report(
        pruned, x=x[:32], y=y[:32], baseline=kp.strip_pruning(pruned), path=out
    ), out


def test_information_floor_formula():
    rows = [kp.WeightSparsity("l", "w", (100,), 100, 80)]
    entropy = -(0.8 * math.log2(0.8) + 0.2 * math.log2(0.2))
    assert information_floor_bytes(rows) == math.ceil((20 * 8 + 100 * entropy) / 8)
    dense = [kp.WeightSparsity("l", "w", (10,), 10, 0)]
    assert information_floor_bytes(dense) == 10


def test_report_measures_files_arena_and_runtimes(full_report):
    result, out = full_report
    assert [row["sparsity"] for row in result["layers"]] == pytest.approx(
        [0.8] * 3, abs=0.01
    )
    files = result["files"]
    floor = result["information_floor_int8"]
    # The targets of the export issue, on an 80%-sparse int8 CNN.
    assert files["micro_int8_compressed"] <= 1.3 * floor
    assert files["micro_int8"] >= 2.5 * files["micro_int8_compressed"]
    assert files["litert_int8_sparse"] < files["litert_int8"] < files["tflite_float32"]
    micro = result["micro"]
    assert micro["bytes"] == files["micro_int8"]
    assert micro["arena_bytes"] < micro["compressed_arena_bytes"]
    assert micro["argmax_agreement"] >= 0.9 and micro["invoke_ms"] > 0
    assert result["litert"]["invoke_ms"] > 0
    assert result["accuracy"]["baseline"] == result["accuracy"]["pruned"]
    assert json.loads((out / "report.json").read_text()) == result
    markdown = (out / "report.md").read_text()
    assert "| micro_int8_compressed |" in markdown and "TFLite Micro arena" in markdown


def test_report_without_data_measures_float_files(tmp_path):
    pruned, _, _ = pruned_cnn()
    path = tmp_path / "m.keras"
    kp.strip_pruning(pruned).save(path)
    result = report(str(path))
    assert result["files"]["keras"] == path.stat().st_size
    assert set(result["files"]) == {"keras", "tflite_float32"}
    assert "micro" not in result
    assert result["cost"]["params"][1] == kp.strip_pruning(pruned).count_params()


def test_report_compares_compute_with_the_baseline(tmp_path):
    from keras_pruning.structured import prune_channels

    dense = kp.strip_pruning(pruned_cnn()[0])
    small = prune_channels(dense, 0.5)
    result = report(small, baseline=dense, path=tmp_path)
    conv = next(r for r in result["cost"]["layers"] if r["layer"] == "conv2d")
    assert conv["channels"] == [16, 8]
    before, after = result["cost"]["macs"]
    assert after < before
    assert "| conv2d | Conv2D | 16 → 8 |" in (tmp_path / "report.md").read_text()


def test_report_json_writes_infinite_errors_as_null(full_report, tmp_path):
    result, _ = full_report
    overflowed = {**result, "litert": {**result["litert"], "max_abs_error": math.inf}}
    write_report(overflowed, tmp_path)
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["litert"]["max_abs_error"] is None
    assert written["micro"] == result["micro"]


def test_report_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        report(str(tmp_path / "missing.keras"))
    (tmp_path / "junk.keras").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a loadable Keras file"):
        report(str(tmp_path / "junk.keras"))
    with pytest.raises(TypeError, match="model.*Received"):
        report(np.zeros(3))
