"""verify, run and min_arena_bytes in the real LiteRT and TFLite Micro runtimes."""

import sys

import numpy as np
import pytest
from export_models import pruned_cnn

import keras_pruning as kp
from keras_pruning.export import min_arena_bytes, model_info, run, to_tflite, verify


@pytest.fixture(scope="module")
def files():
    pruned, x, y = pruned_cnn()
    return {
        "model": kp.strip_pruning(pruned),
        "x": x,
        "y": y,
        "micro": to_tflite(
            pruned, quantize="int8", representative_data=x, target="micro"
        ),
        "sparse": to_tflite(
            pruned, quantize="int8", representative_data=x, sparse=True
        ),
    }


def test_micro_and_litert_agree_on_the_same_int8_file(files):
    litert, _ = run(files["micro"], files["x"][:8], runtime="litert")
    micro, times = run(files["micro"], files["x"][:8], runtime="micro")
    np.testing.assert_array_equal(litert, micro)
    assert len(times) == 8 and min(times) > 0


def test_verify_reports_accuracy_against_labels(files):
    result = verify(
        files["micro"], files["model"], files["x"], y=files["y"], runtime="micro"
    )
    expected = files["model"].predict(files["x"], verbose=0).argmax(-1)
    assert result.keras_accuracy == pytest.approx(np.mean(expected == files["y"]))
    assert abs(result.accuracy - result.keras_accuracy) <= 1 - result.argmax_agreement
    assert result.invoke_ms > 0


def test_micro_refuses_sparse_files_instead_of_crashing(files):
    assert model_info(files["sparse"]).sparse_tensors
    with pytest.raises(ValueError, match="cannot run TFLite sparse tensors"):
        run(files["sparse"], files["x"][:1], runtime="micro")


@pytest.mark.parametrize("cut", [8, 100, 0.5, 0.99])
@pytest.mark.parametrize("runtime", ["litert", "micro"])
def test_truncated_files_raise_value_error(files, cut, runtime):
    data = files["micro"]
    size = cut if isinstance(cut, int) else int(len(data) * cut)
    with pytest.raises(ValueError, match="truncated or corrupt|not a TFLite"):
        run(data[:size], files["x"][:1], runtime=runtime)


def test_corrupt_and_foreign_bytes_raise_value_error(files):
    with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
        verify(b"GIF89a" + bytes(100), files["model"], files["x"][:1])
    corrupt = bytearray(files["micro"])
    corrupt[8:64] = b"\xff" * 56
    with pytest.raises(ValueError, match="truncated or corrupt"):
        verify(bytes(corrupt), files["model"], files["x"][:1], runtime="micro")
    with pytest.raises(TypeError, match="`data` must be the bytes.*str"):
        model_info("model.tflite")


def test_bad_verify_arguments(files):
    with pytest.raises(ValueError, match="runtime.*Received: runtime='tpu'"):
        verify(files["micro"], files["model"], files["x"][:1], runtime="tpu")
    with pytest.raises(TypeError, match="model.*Received"):
        verify(files["micro"], "model", files["x"][:1])
    with pytest.raises(TypeError, match="x.*Received"):
        verify(files["micro"], files["model"], [[0.0]])
    with pytest.raises(ValueError, match="one label per sample"):
        verify(files["micro"], files["model"], files["x"][:4], y=files["y"][:3])
    infinite = files["x"][:2].copy()
    infinite[1, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="`x` must hold finite numbers"):
        verify(files["micro"], files["model"], infinite)


def test_min_arena_bytes_is_the_smallest_arena_that_runs(files, tmp_path):
    from keras_pruning.export._runtime import _ArenaProbe

    arena = min_arena_bytes(files["micro"])
    assert arena % 16 == 0
    assert 4_000 < arena < 100_000
    path = tmp_path / "m.tflite"
    path.write_bytes(files["micro"])
    # Probed out of process: some too-small arenas crash TFLite Micro.
    probe = _ArenaProbe(str(path), 0)
    try:
        assert probe.fits(arena)
        assert not probe.fits(arena - 16)
    finally:
        probe.close()


def test_arena_probe_survives_a_crashing_runtime(tmp_path):
    from keras_pruning.export._runtime import _ArenaProbe

    probe = _ArenaProbe(str(tmp_path / "unused.tflite"), 0)
    probe.args = [
        sys.executable,
        "-c",
        "import os, sys; sys.stdin.readline(); os.abort()",
    ]
    try:
        assert probe.fits(1024) is False
        assert probe.child is None  # a fresh child takes over at the next probe
    finally:
        probe.close()
