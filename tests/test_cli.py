"""The keras-pruning command line."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from export_models import pruned_cnn
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

import keras_pruning as kp
from keras_pruning.cli import main


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    pruned, x, _ = pruned_cnn()
    directory = tmp_path_factory.mktemp("cli")
    pruned.save(directory / "cnn.keras")
    np.save(directory / "calib.npy", x[:32])
    return directory


def test_export_micro_writes_tflite_c_source_and_report(saved, capsys):
    out = saved / "out"
    status = main(
        [
            "export",
            str(saved / "cnn.keras"),
            "--target",
            "micro",
            "--quantize",
            "int8",
            "--calibration",
            str(saved / "calib.npy"),
            "--out",
            str(out),
            "--compress",
        ]
    )
    assert status == 0
    names = sorted(os.listdir(out))
    assert names == [
        "cnn.cc",
        "cnn.h",
        "cnn.tflite",
        "cnn_op_resolver.h",
        "report.json",
        "report.md",
    ]
    written = (out / "cnn.tflite").read_bytes()
    assert "TFLM_DECODE" in kp.export.model_info(written).operators
    # compress_for_micro strips the names TFLite Micro never reads.
    model = schema.ModelT.InitFromPackedBuf(written, 0)
    assert not any(tensor.name for tensor in model.subgraphs[0].tensors)
    assert (
        json.loads((out / "report.json").read_text())["micro"]["argmax_agreement"]
        >= 0.9
    )
    assert str(out / "cnn.tflite") in capsys.readouterr().out


def test_report_prints_per_weight_table(saved, capsys):
    assert main(["report", str(saved / "cnn.keras")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["weight", "shape", "nonzeros", "sparsity"]
    assert [line.split()[0] for line in lines[1:4]] == [
        "conv2d/kernel",
        "dense/kernel",
        "dense_1/kernel",
    ]
    # 144 * 0.2 = 28.8 rounds to 29 kept: 79.9% for the conv kernel.
    assert [line.split()[-1] for line in lines[1:4]] == ["79.9%", "80.0%", "80.0%"]
    assert lines[5].split() == ["layer", "channels", "parameters", "MACs"]
    # conv2d: 26x26 outputs x 16 filters x 9 MACs.
    assert lines[6].split() == ["conv2d", "16", "160", f"{26 * 26 * 16 * 9:,}"]


def test_report_compares_channels_with_a_baseline(saved, tmp_path, capsys):
    from keras_pruning.structured import prune_channels

    model = kp.strip_pruning(pruned_cnn()[0])
    prune_channels(model, 0.5).save(tmp_path / "small.keras")
    base = str(saved / "cnn.keras")
    assert main(["report", str(tmp_path / "small.keras"), "--baseline", base]) == 0
    out = capsys.readouterr().out
    assert "16 -> 8" in out
    assert out.splitlines()[-1].startswith("total: ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "missing.keras"], "model file not found: missing.keras"),
        (["export", "{dir}/calib.npy", "--out", "{dir}/o"], "must be a .keras file"),
        (["export", "{dir}/cnn.keras", "--out", "{dir}/o"], "needs --calibration"),
        (
            [
                "export",
                "{dir}/cnn.keras",
                "--out",
                "{dir}/o",
                "--calibration",
                "nope.npy",
            ],
            "calibration file not found",
        ),
        (
            [
                "export",
                "{dir}/cnn.keras",
                "--out",
                "{dir}/o",
                "--target",
                "litert",
                "--quantize",
                "none",
                "--compress",
            ],
            "--compress applies to --target micro only",
        ),
    ],
)
def test_errors_print_one_line_and_exit_2(saved, capsys, args, message):
    args = [a.format(dir=saved) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_bad_files_and_models_exit_2_before_printing(saved, tmp_path, capsys):
    import keras

    (tmp_path / "corrupt.keras").write_bytes(b"not a zip archive")
    np.save(tmp_path / "scalar.npy", np.float32(1.0))
    keras.Sequential([keras.layers.Dense(2)]).save(tmp_path / "unbuilt.keras")
    cases = [
        (["report", f"{tmp_path}/corrupt.keras"], "not a .keras (zip) archive"),
        (
            ["export", f"{saved}/cnn.keras", "--out", f"{tmp_path}/o"]
            + ["--calibration", f"{tmp_path}/scalar.npy"],
            "must hold one array of samples",
        ),
        (["report", f"{tmp_path}/unbuilt.keras"], "not built"),
    ]
    for args, message in cases:
        assert main(args) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and message in err
    assert not (tmp_path / "o").exists()


def test_console_script_bad_flag_exits_nonzero_without_traceback(saved):
    result = subprocess.run(
        [sys.executable, "-m", "keras_pruning.cli", "export", "--target", "gpu"],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=300,
    )
    assert result.returncode == 2
    assert "invalid choice: 'gpu'" in result.stderr and "Traceback" not in result.stderr


def test_export_refuses_to_replace_files_without_force(saved, tmp_path, capsys):
    args = ["export", str(saved / "cnn.keras"), "--out", str(tmp_path)]
    args += ["--target", "litert", "--quantize", "none"]
    (tmp_path / "report.md").write_text("earlier")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "refusing to replace" in err and "report.md" in err and "--force" in err
    assert os.listdir(tmp_path) == ["report.md"]
    assert main([*args, "--force"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["cnn.tflite", "report.json", "report.md"]
    assert (tmp_path / "report.md").read_text().startswith("# Deployment report")


def test_bad_c_name_is_reported_before_anything_is_written(saved, tmp_path, capsys):
    args = ["export", str(saved / "cnn.keras"), "--out", str(tmp_path / "o")]
    args += ["--quantize", "none", "--name", "1bad"]
    assert main(args) == 2
    assert "`name` must be a C identifier" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_an_out_path_that_is_a_file_exits_2_with_one_line(saved, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file")
    args = ["export", str(saved / "cnn.keras"), "--out", str(tmp_path / "taken")]
    assert main([*args, "--target", "litert", "--quantize", "none"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "taken" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("step", "error"),
    [
        ("report", RuntimeError("TensorFlow Lite Micro cannot load the file")),
        ("write_atomic", OSError("No space left on device")),
    ],
    ids=["report_fails", "write_fails"],
)
def test_a_failure_leaves_no_file(saved, tmp_path, capsys, monkeypatch, step, error):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(kp.export, step, fail)
    args = ["export", str(saved / "cnn.keras"), "--out", str(tmp_path / "o")]
    assert main([*args, "--target", "litert", "--quantize", "none"]) == 2
    assert str(error) in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not os.listdir(tmp_path / "o")
