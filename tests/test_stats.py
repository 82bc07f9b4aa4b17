"""sparsity_report on pruned, stripped and plain models."""

import keras
import numpy as np
import pytest
from conftest import dense_model

import keras_pruning as kp

pytestmark = pytest.mark.backends


def test_report_counts_effective_weights_of_wrappers():
    pruned = kp.prune_low_magnitude(dense_model(8, 10, 4))
    first, second = kp.pruning_wrappers(pruned)
    first.update_masks(0.3)
    second.update_masks(0.75)
    report = kp.sparsity_report(pruned)
    assert [(r.layer, r.shape, r.size) for r in report] == [
        (first.name, (8, 10), 80),
        (second.name, (10, 4), 40),
    ]
    assert [r.zeros for r in report] == [24, 30]
    assert [r.nonzeros for r in report] == [56, 10]
    assert report[1].sparsity == pytest.approx(0.75)


def test_report_of_plain_model_reads_prunable_weights_only():
    model = keras.Sequential(
        [
            keras.Input((4, 4, 2)),
            keras.layers.Conv2D(3, 2, use_bias=True),
            keras.layers.BatchNormalization(),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    conv = model.layers[0]
    kernel = np.ones(conv.kernel.shape, "float32")
    kernel[..., 0] = 0.0
    conv.kernel.assign(kernel)
    report = kp.sparsity_report(model)
    assert [r.weight for r in report] == [
        conv.kernel.path,
        model.layers[-1].kernel.path,
    ]
    assert report[0].zeros == kernel.size // 3
    assert report[1].zeros == 0


def test_report_of_stripped_model_matches_pruned():
    pruned = kp.prune_low_magnitude(dense_model())
    for wrapper in kp.pruning_wrappers(pruned):
        wrapper.update_masks(0.6)
    before = [(r.size, r.zeros) for r in kp.sparsity_report(pruned)]
    after = [(r.size, r.zeros) for r in kp.sparsity_report(kp.strip_pruning(pruned))]
    assert before == after


def test_report_of_unbuilt_layer_and_empty_weights():
    assert kp.sparsity_report(keras.layers.Dense(3)) == []
    row = kp.WeightSparsity("l", "w", (0,), 0, 0)
    assert row.sparsity == 0.0


def test_report_rejects_non_keras_objects():
    with pytest.raises(TypeError, match="model.*Received"):
        kp.sparsity_report([1, 2, 3])
