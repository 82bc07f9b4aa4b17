"""End to end: the README's quick start, and TFMOT code migrated by one import."""

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np

import keras_pruning as kp
from keras_pruning.masks import num_kept

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _run(code, cwd):
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def test_readme_quick_start_runs_as_written(tmp_path):
    text = README.read_text()
    section = text.split("## Quick start", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    result = _run(code, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sequential/dense/kernel 80%" in result.stdout
    assert "sequential/dense_1/kernel 80%" in result.stdout
    assert (tmp_path / "pruned.keras").stat().st_size > 0


def test_tfmot_tutorial_code_runs_with_one_import_changed(tmp_path):
    code = textwrap.dedent(
        """
        import keras, numpy as np
        import keras_pruning as tfmot

        prune_low_magnitude = tfmot.sparsity.keras.prune_low_magnitude
        pruning_params = {
            "pruning_schedule": tfmot.sparsity.keras.PolynomialDecay(
                initial_sparsity=0.50, final_sparsity=0.80,
                begin_step=0, end_step=40, frequency=10),
        }
        model = keras.Sequential([
            keras.Input((28, 28)),
            keras.layers.Reshape((28, 28, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ])
        model_for_pruning = prune_low_magnitude(model, **pruning_params)
        model_for_pruning.compile(
            optimizer="adam",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"])
        x = np.random.rand(320, 28, 28).astype("float32")
        y = np.random.randint(0, 10, 320)
        callbacks = [tfmot.sparsity.keras.UpdatePruningStep(),
                     tfmot.sparsity.keras.PruningSummaries(log_dir="logs")]
        model_for_pruning.fit(x, y, batch_size=32, epochs=4, verbose=0,
                              callbacks=callbacks)
        model_for_export = tfmot.sparsity.keras.strip_pruning(model_for_pruning)
        keras.models.save_model(model_for_export, "exported.keras")
        with tfmot.sparsity.keras.prune_scope():
            loaded = keras.models.load_model("exported.keras")
        kernels = [l.kernel for l in loaded.layers if hasattr(l, "kernel")]
        print([[int(np.sum(keras.ops.convert_to_numpy(k) == 0)), int(np.size(k))]
               for k in kernels])
        """
    )
    result = _run(code, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    zeros_and_sizes = json.loads(result.stdout.strip().splitlines()[-1])
    assert [size for _, size in zeros_and_sizes] == [3 * 3 * 8, 13 * 13 * 8 * 10]
    for zeros, size in zeros_and_sizes:
        assert zeros == size - num_kept(size, 0.8)
    assert list((tmp_path / "logs").glob("events.out.tfevents.*"))


def test_cnn_prunes_trains_strips_and_keeps_accuracy():
    rng = np.random.default_rng(0)
    x = rng.random((512, 12, 12, 1)).astype("float32")
    y = (x[:, :6].mean(axis=(1, 2, 3)) > x[:, 6:].mean(axis=(1, 2, 3))).astype("int32")
    model = keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(2),
        ]
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(0.01), loss, metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=5, verbose=0)
    dense_accuracy = model.evaluate(x, y, verbose=0)[1]

    pruned = kp.prune_low_magnitude(
        model, kp.PolynomialDecay(0.0, 0.7, begin_step=0, end_step=48, frequency=8)
    )
    pruned.compile(keras.optimizers.Adam(0.005), loss, metrics=["accuracy"])
    pruned.fit(
        x, y, batch_size=32, epochs=4, verbose=0, callbacks=[kp.UpdatePruningStep()]
    )
    stripped = kp.strip_pruning(pruned)
    stripped.compile(metrics=["accuracy"], loss=loss)
    pruned_accuracy = stripped.evaluate(x, y, verbose=0)[1]

    assert dense_accuracy > 0.85
    assert pruned_accuracy > dense_accuracy - 0.1
    for row in kp.sparsity_report(stripped):
        assert row.zeros == row.size - num_kept(row.size, 0.7)


def test_readme_export_example_runs_after_the_quick_start(tmp_path):
    text = README.read_text()
    blocks = [
        re.search(r"```python\n(.*?)```", text.split(heading, 1)[1], re.S).group(1)
        for heading in (
            "## Quick start",
            "## Export to LiteRT and TensorFlow Lite Micro",
        )
    ]
    result = _run("\n".join(blocks), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "VerifyResult(runtime='micro'" in result.stdout
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == [
        "model.cc",
        "model.h",
        "model_op_resolver.h",
        "report.json",
        "report.md",
    ]
