"""Atomic writes and overwrite protection (keras_pruning._files and the
writers that use it)."""

import os
import stat

import keras
import numpy as np
import pytest
from conftest import dense_model

import keras_pruning as kp
from keras_pruning import _files, analysis, export


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_write_atomic_writes_bytes_and_text(tmp_path):
    assert export.write_atomic(tmp_path / "a" / "b.bin", b"\x00\x01") == str(
        tmp_path / "a" / "b.bin"
    )
    export.write_atomic(tmp_path / "c.txt", "é\n")
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "c.txt").read_text(encoding="utf-8") == "é\n"
    assert _names(tmp_path) == ["a", "c.txt"]


def test_written_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        path = export.write_atomic(tmp_path / "new.bin", b"x")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
        os.chmod(path, 0o640)  # a replaced file keeps its own
        export.write_atomic(path, b"y", overwrite=True)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    finally:
        os.umask(umask)


def test_existing_file_needs_overwrite_and_is_untouched_without_it(tmp_path):
    path = tmp_path / "model.tflite"
    export.write_atomic(path, b"first")
    with pytest.raises(
        FileExistsError, match=r"model\.tflite already exists.*overwrite=True"
    ):
        export.write_atomic(path, b"second")
    assert path.read_bytes() == b"first"
    export.write_atomic(path, b"second", overwrite=True)
    assert path.read_bytes() == b"second"
    assert _names(tmp_path) == ["model.tflite"]


def test_failure_mid_write_leaves_no_file_and_no_temporary(tmp_path, monkeypatch):
    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(_files.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        export.write_atomic(tmp_path / "model.tflite", b"x" * 1000)
    assert _names(tmp_path) == []


def test_failed_overwrite_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    path.write_text("old")

    def failing_replace(src, dst):
        raise OSError("interrupted")

    monkeypatch.setattr(_files.os, "replace", failing_replace)
    with pytest.raises(OSError, match="interrupted"):
        export.write_atomic(path, "new", overwrite=True)
    assert path.read_text() == "old"
    assert _names(tmp_path) == ["report.json"]


def test_save_model_is_atomic_and_loads(tmp_path, monkeypatch):
    model = dense_model()
    path = tmp_path / "model.keras"
    assert export.save_model(model, path) == str(path)
    reloaded = keras.models.load_model(path)
    x = np.ones((2, 8), "float32")
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), model.predict(x, verbose=0)
    )
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export.save_model(model, path)

    def interrupted_save(self, filepath, **kwargs):
        with open(filepath, "wb") as file:
            file.write(b"PK\x03\x04 truncated zip")
        raise KeyboardInterrupt

    before = path.read_bytes()
    monkeypatch.setattr(keras.Model, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        export.save_model(model, path, overwrite=True)
    with pytest.raises(KeyboardInterrupt):
        export.save_model(model, tmp_path / "new.keras")
    assert path.read_bytes() == before
    assert _names(tmp_path) == ["model.keras"]


def test_save_model_rejects_other_formats(tmp_path):
    with pytest.raises(ValueError, match=r"end in `\.keras`.*model\.h5"):
        export.save_model(dense_model(), tmp_path / "model.h5")


def test_write_c_source_writes_none_of_its_files_when_one_exists(tmp_path):
    data = export.to_tflite(dense_model())
    (tmp_path / "m.h").write_text("user header")
    with pytest.raises(FileExistsError, match=r"m\.h already exists"):
        export.write_c_source(data, tmp_path / "m")
    assert _names(tmp_path) == ["m.h"]
    paths = export.write_c_source(data, tmp_path / "m", overwrite=True)
    assert [os.path.basename(p) for p in paths] == ["m.cc", "m.h", "m_op_resolver.h"]
    assert "g_model_model_data" in (tmp_path / "m.h").read_text()


def test_to_tflite_and_report_check_before_working(tmp_path, monkeypatch):
    model = dense_model()
    (tmp_path / "model.tflite").write_bytes(b"earlier")
    (tmp_path / "report.md").write_text("earlier")

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted although the write was refused")

    monkeypatch.setattr(export._convert, "_export_inference_saved_model", no_conversion)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export.to_tflite(model, path=tmp_path / "model.tflite")
    with pytest.raises(FileExistsError, match=r"report\.md already exists"):
        export.report(model, path=tmp_path)
    assert (tmp_path / "model.tflite").read_bytes() == b"earlier"
    assert (tmp_path / "report.md").read_text() == "earlier"


def test_sensitivity_plot_needs_overwrite(tmp_path):
    model = dense_model()
    data = (np.ones((4, 8), "float32"), np.zeros(4, "int64"))
    plot = tmp_path / "s.png"
    plot.write_bytes(b"earlier")
    with pytest.raises(FileExistsError, match=r"s\.png already exists"):
        analysis.sensitivity(model, data, (0.5,), plot=plot, verbose=0)
    analysis.sensitivity(model, data, (0.5,), plot=plot, overwrite=True, verbose=0)
    assert plot.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("overwrite", [None, 1, "yes"])
def test_overwrite_must_be_a_bool(tmp_path, overwrite):
    with pytest.raises(TypeError, match="`overwrite` must be True or False"):
        export.write_atomic(tmp_path / "a", b"", overwrite=overwrite)


def test_pruned_model_saves_atomically_with_its_masks(tmp_path):
    pruned = kp.prune_low_magnitude(dense_model(), kp.ConstantSparsity(0.5, 0))
    for wrapper in kp.pruning_wrappers(pruned):
        wrapper.update_masks(0.5)
    path = export.save_model(kp.strip_pruning(pruned), tmp_path / "pruned.keras")
    rows = kp.sparsity_report(keras.models.load_model(path))
    assert [r.sparsity for r in rows] == [0.5, 0.5]
