"""The public API: names, documentation, TFMOT's namespace."""

import inspect

import pytest

import keras_pruning
from keras_pruning.sparsity import keras as tfmot_keras

TFMOT_NAMES = (
    "ConstantSparsity",
    "PolynomialDecay",
    "PrunableLayer",
    "PruneForLatencyOnXNNPack",
    "PruningPolicy",
    "PruningSchedule",
    "PruningSummaries",
    "UpdatePruningStep",
    "prune_low_magnitude",
    "prune_scope",
    "strip_pruning",
)


@pytest.mark.parametrize("name", keras_pruning.__all__)
def test_every_public_name_exists_and_is_documented(name):
    obj = getattr(keras_pruning, name)
    doc = inspect.getdoc(obj)
    assert doc and len(doc.splitlines()[0]) > 10, f"{name} has no summary line"


@pytest.mark.parametrize("name", TFMOT_NAMES)
def test_tfmot_namespace_has_tfmot_names(name):
    assert name in tfmot_keras.__all__
    assert inspect.getdoc(getattr(tfmot_keras, name))


def test_tfmot_namespace_is_reachable_as_attribute():
    tfmot = keras_pruning
    assert tfmot.sparsity.keras.prune_low_magnitude is keras_pruning.prune_low_magnitude
    assert tfmot.sparsity.keras.UpdatePruningStep is keras_pruning.UpdatePruningStep


def test_prune_low_magnitude_keeps_tfmot_signature():
    params = inspect.signature(keras_pruning.prune_low_magnitude).parameters
    # Our additions are keyword-only, so TFMOT's positional calls still work.
    assert [n for n, p in params.items() if p.kind == p.KEYWORD_ONLY] == [
        "layers",
        "granularity",
        "ignore",
        "criterion",
        "global_pruning",
        "allocation",
        "sparsity_bounds",
    ]
    assert [n for n, p in params.items() if p.kind != p.KEYWORD_ONLY] == [
        "to_prune",
        "pruning_schedule",
        "block_size",
        "block_pooling_type",
        "pruning_policy",
        "sparsity_m_by_n",
        "kwargs",
    ]


def test_core_does_not_import_tensorflow_eagerly():
    # Mask maths and wrappers use keras.ops only; TensorFlow is used lazily.
    import ast
    import pathlib

    package = pathlib.Path(keras_pruning.__file__).parent
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        top_level = [
            node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
        ]
        for node in top_level:
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            assert not any(n.split(".")[0] == "tensorflow" for n in names), path


@pytest.mark.parametrize("name", __import__("keras_pruning.export").export.__all__)
def test_every_export_name_is_documented(name):
    import keras_pruning.export

    doc = inspect.getdoc(getattr(keras_pruning.export, name))
    assert doc and len(doc.splitlines()[0]) > 10, f"export.{name} has no summary line"
