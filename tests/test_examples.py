"""The examples run as documented: the case study script and notebook on the
tiny preset, and every shorter example on a few hundred images."""

import importlib
import json
import os
import sys

import keras
import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

import keras_pruning as kp

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def example(name):
    if EXAMPLES not in sys.path:
        sys.path.insert(0, EXAMPLES)
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def case():
    return example("mobilenetv2_fashion_mnist")


def test_case_study_tiny_preset_writes_every_artifact(
    case, fashion_mnist_dir, tmp_path
):
    out = tmp_path / "case_study"
    report = case.main(
        [
            "--preset",
            "tiny",
            "--data",
            fashion_mnist_dir,
            "--out",
            str(out),
            "--verbose",
            "0",
            "--dense-control",
        ]
    )
    assert report["config"]["dense_control"] is True
    assert 0.0 <= report["dense_finetuned_accuracy"] <= 1.0
    assert all(t > 0 for t in report["timings"]["keras_ms_per_sample"].values())
    assert set(report["timings"]["keras_ms_per_sample"]) == {"dense", "pruned"}
    assert json.loads((out / "report.json").read_text()) == json.loads(
        json.dumps(report)
    )
    # The head's two Dense kernels, and nothing else, at exactly 50%.
    assert set(report["sparsity"]) == {"head_dense/kernel", "classifier/kernel"}
    assert all(value == 0.5 for value in report["sparsity"].values())
    params = report["parameters"]
    assert (
        params["nonzero_dense"] - params["nonzero_pruned"]
        == (1280 * 128 + 128 * 10) // 2
    )
    for name, size in report["files"].items():
        assert (out / name).stat().st_size == size > 0
    assert report["micro"]["compressed_bytes"] < report["micro"]["bytes"]
    assert report["micro"]["arena_bytes"] > 0 and report["micro"]["samples"] == 32
    assert report["micro"]["max_abs_error"] < 0.1  # softmax outputs, int8
    assert "g_fashion_model_data" in (out / "model_micro.cc").read_text()
    for plot in ("sparsity.png", "before_after.png"):
        assert (out / plot).read_bytes().startswith(PNG_MAGIC)
    markdown = (out / "report.md").read_text()
    assert "| test accuracy (Keras) |" in markdown and "50.0%" in markdown
    # The exported Keras file is the pruned model, and loads without scopes.
    reloaded = keras.models.load_model(out / "pruned.keras")
    rows = {r.weight: r.sparsity for r in kp.sparsity_report(reloaded)}
    assert rows["head_dense/kernel"] == rows["classifier/kernel"] == 0.5


def test_case_study_prune_all_wraps_the_base_but_not_depthwise(case):
    config = case.make_config("tiny", prune_layers="all")
    pruned = case.prune(
        case.build_model(config), config, case.pruning_schedule(config, 10)
    )
    wrapped = [w.layer for w in kp.pruning_wrappers(pruned)]
    assert sum(isinstance(layer, keras.layers.Conv2D) for layer in wrapped) == 35
    assert not any(isinstance(layer, keras.layers.DepthwiseConv2D) for layer in wrapped)
    assert {"head_dense", "classifier"} <= {layer.name for layer in wrapped}


def test_case_study_model_takes_raw_images(case):
    model = case.build_model(case.make_config("tiny"))
    assert model.input_shape == (None, 28, 28, 1)
    assert model.output_shape == (None, 10)
    probabilities = model.predict(np.full((2, 28, 28, 1), 255.0, "float32"), verbose=0)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"preset": "huge"}, r"`preset` must be one of \['full', 'quick', 'tiny'\]"),
        ({"weights": "random"}, "`weights` must be 'none' or 'imagenet'"),
        ({"prune_layers": "base"}, "`prune_layers` must be 'head' or 'all'"),
        ({"image_size": 28}, "`image_size` must be at least 32"),
        ({"weights": "imagenet", "image_size": 64}, "ImageNet weights exist for"),
        ({"final_sparsity": 1.0}, r"`final_sparsity` must be in \[0, 1\)"),
        ({"epochs": 0}, "`epochs` must be at least 1"),
    ],
)
def test_case_study_rejects_bad_settings(case, overrides, message):
    with pytest.raises(ValueError, match=message):
        case.make_config(**overrides)


def test_case_study_imagenet_defaults_to_an_imagenet_size(case):
    config = case.make_config("quick", weights="imagenet")
    assert config.image_size == 96 and config.weights == "imagenet"


def test_case_study_notebook_runs_on_the_tiny_preset(fashion_mnist_dir, tmp_path):
    notebook = nbformat.read(
        os.path.join(EXAMPLES, "mobilenetv2_fashion_mnist.ipynb"), 4
    )
    parameters = [
        c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])
    ]
    assert len(parameters) == 1
    out = tmp_path / "notebook"
    parameters[
        0
    ].source = f'PRESET = "tiny"\nWEIGHTS = "none"\nDATA = {fashion_mnist_dir!r}\nOUT = {str(out)!r}'
    client = NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": EXAMPLES}},
    )
    client.execute()  # raises CellExecutionError on any failing cell
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["preset"] == "tiny"
    assert report["dense_finetuned_accuracy"] is None  # off on the tiny preset
    assert set(report["sparsity"].values()) == {0.5}
    outputs = [
        o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs
    ]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # samples, schedule, and the two report plots
    text = "".join(o.get("text", "") for o in outputs)
    assert "test accuracy (Keras)" in text and "Artifacts:" in text


def test_mnist_cnn_polynomial_decay(fashion_mnist_dir):
    module = example("mnist_cnn_polynomial_decay")
    final, dense_accuracy, pruned_accuracy = module.main(
        [
            "--train-samples",
            "512",
            "--test-samples",
            "256",
            "--data",
            fashion_mnist_dir,
            "--verbose",
            "0",
        ]
    )
    for row in kp.sparsity_report(final):
        assert row.sparsity == pytest.approx(0.8, abs=0.005)
    assert 0.0 <= pruned_accuracy <= 1.0 and 0.0 <= dense_accuracy <= 1.0
    assert not kp.pruning_wrappers(final)


def test_tfmot_migration(fashion_mnist_dir):
    module = example("tfmot_migration")
    reloaded, accuracy, sparsity, logdir = module.main(
        ["--train-samples", "512", "--data", fashion_mnist_dir, "--verbose", "0"]
    )
    assert len(sparsity) == 2  # the Conv2D and the Dense kernel
    for value in sparsity.values():
        assert value == pytest.approx(0.8, abs=0.005)
    assert os.listdir(logdir)  # PruningSummaries wrote TensorBoard events
    assert 0.0 <= accuracy <= 1.0


@pytest.mark.parametrize("epochs", ["1", "2"])
def test_custom_training_loop(fashion_mnist_dir, epochs):
    module = example("custom_training_loop")
    final, accuracy, sparsity = module.main(
        ["--train-samples", "256", "--epochs", epochs, "--data", fashion_mnist_dir]
    )
    assert list(sparsity.values()) == [pytest.approx(0.9, abs=1e-3)] * 2
    assert 0.0 <= accuracy <= 1.0


def test_export_to_microcontroller(fashion_mnist_dir, tmp_path):
    module = example("export_to_microcontroller")
    results, paths = module.main(
        [
            "--train-samples", "256", "--test-samples", "16", "--epochs", "2",
            "--data", fashion_mnist_dir, "--out", str(tmp_path), "--verbose", "0",
        ]
    )  # fmt: skip
    plain, compressed = results["plain"], results["compressed"]
    assert compressed["bytes"] < plain["bytes"]
    # DECODE is bit-exact: the same outputs, so the same agreement and accuracy.
    assert compressed["check"].max_abs_error == plain["check"].max_abs_error
    assert compressed["check"].accuracy == plain["check"].accuracy
    assert (tmp_path / "model_compressed.tflite").stat().st_size == compressed["bytes"]
    assert [os.path.basename(p) for p in paths] == [
        "model.cc",
        "model.h",
        "model_op_resolver.h",
    ]


LOTTERY_TINY = [
    "--train-samples", "256", "--test-samples", "128", "--epochs", "1",
    "--rounds", "2", "--rate", "0.5", "--rewind-step", "2", "--verbose", "0",
]  # fmt: skip


def _masks_and_kernels(model):
    for wrapper in kp.pruning_wrappers(model):
        yield (
            keras.ops.convert_to_numpy(wrapper.masks[0]),
            keras.ops.convert_to_numpy(wrapper.prunable_weights[0]),
        )


def test_lottery_ticket_prunes_by_rounds_and_runs_the_control(fashion_mnist_dir):
    module = example("lottery_ticket_fashion_mnist")
    ticket, rows, control = module.main([*LOTTERY_TINY, "--data", fashion_mnist_dir])
    assert [row["round"] for row in rows] == [0, 1, 2]
    # 1 - 0.5 ** r, exact for the kernels of LeNet-300-100.
    assert [row["sparsity"] for row in rows] == [0.0, 0.5, 0.75]
    assert all(0.0 <= row["test_accuracy"] <= 1.0 for row in rows)
    assert 0.0 <= control <= 1.0
    for mask, kernel in _masks_and_kernels(ticket.model):
        assert mask.mean() == 0.25 and np.all(kernel[~mask] == 0)
    # The control ran on the same masks and put the ticket's weights back.
    _, (x_test, y_test) = kp.datasets.fashion_mnist(fashion_mnist_dir)
    restored = ticket.model.evaluate(
        x_test[:128], y_test[:128], verbose=0, return_dict=True
    )["accuracy"]
    assert restored == rows[-1]["test_accuracy"]


def test_lottery_ticket_rewinds_kept_weights_to_the_saved_step(fashion_mnist_dir):
    # With a zero learning rate, training leaves the rewound weights as they
    # are: each kept weight is its value after --rewind-step batches.
    module = example("lottery_ticket_fashion_mnist")
    ticket, rows, control = module.main(
        [*LOTTERY_TINY, "--learning-rate", "0", "--no-control"]
        + ["--data", fashion_mnist_dir]
    )
    assert control is None and rows[-1]["sparsity"] == 0.75
    kernels = [w for w in ticket.rewind_weights if w.ndim == 2]
    for (mask, kernel), saved in zip(
        _masks_and_kernels(ticket.model), kernels, strict=True
    ):
        np.testing.assert_array_equal(kernel, np.where(mask, saved, 0))


def test_examples_own_their_output_files():
    """Every file an example writes through our writers replaces the previous
    run's (`make demo` twice in a row works)."""
    import ast

    writers = {"write_atomic", "write_c_source", "save_model", "to_tflite", "report"}
    for name in sorted(os.listdir(EXAMPLES)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(EXAMPLES, name), encoding="utf-8") as file:
            tree = ast.parse(file.read())
        for call in ast.walk(tree):
            if not (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and call.func.attr in writers
            ):
                continue
            keywords = {k.arg: k.value for k in call.keywords}
            if call.func.attr in ("to_tflite", "report") and "path" not in keywords:
                continue  # writes no file
            overwrite = keywords.get("overwrite")
            assert isinstance(overwrite, ast.Constant) and overwrite.value is True, (
                f"{name}:{call.lineno}: pass overwrite=True"
            )
