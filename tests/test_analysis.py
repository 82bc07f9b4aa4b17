"""keras_pruning.analysis.sensitivity: one layer pruned at a time, then a plan."""

import keras
import numpy as np
import pytest
from conftest import dense_model

import keras_pruning as kp
from keras_pruning.analysis import SensitivityTable, sensitivity

pytestmark = pytest.mark.backends

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def trained(rng):
    """An MLP that learned a 3-class rule well, and held-out data."""
    x = rng.normal(size=(768, 8)).astype("float32")
    y = (x[:, :3] * [1.0, 2.0, 3.0]).argmax(-1)
    model = dense_model()
    model.compile(
        keras.optimizers.Adam(0.02),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x[:512], y[:512], epochs=15, batch_size=64, verbose=0)
    return model, (x[512:], y[512:])


def test_prunes_one_layer_at_a_time_and_restores_weights(trained):
    model, data = trained
    before = [w.copy() for w in model.get_weights()]
    table = sensitivity(model, data, sparsities=(0.9, 0.0, 0.5), verbose=0)
    assert table.sparsities == (0.0, 0.5, 0.9)
    assert list(table.scores) == ["dense", "dense_1"]
    for layer in table.scores:
        assert table.scores[layer][0] == table.baseline  # 0% changes nothing
    assert table.baseline > 0.8
    # Each score is the model with only that layer pruned: recompute one.
    check = kp.prune_to_sparsity(model, 0.9, layers="dense")
    expected = np.mean(check.predict(data[0], verbose=0).argmax(-1) == data[1])
    assert table.scores["dense"][2] == pytest.approx(expected)
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_custom_metric_and_layer_selection(trained):
    model, data = trained

    def mean_abs_logit(y_true, y_pred):
        return float(np.abs(y_pred).mean())

    table = sensitivity(
        model, data, (0.5,), metric=mean_abs_logit, higher_is_better=False,
        layers="dense_1", verbose=0,
    )  # fmt: skip
    assert table.metric == "mean_abs_logit" and list(table.scores) == ["dense_1"]
    assert table.drop("dense_1") == [
        pytest.approx(table.scores["dense_1"][0] - table.baseline)
    ]


def test_plan_takes_the_largest_sparsity_within_budget():
    table = SensitivityTable(
        baseline=0.90,
        sparsities=(0.25, 0.5, 0.75, 0.9),
        scores={
            "a": [0.90, 0.895, 0.88, 0.70],
            "b": [0.86, 0.90, 0.90, 0.90],
            "c": [0.9] * 4,
        },
        metric="accuracy",
    )
    # "b" fails at 25% already, so later in-budget sparsities do not count.
    assert table.plan(0.01) == {"a": 0.5, "b": 0.0, "c": 0.9}
    assert table.plan(0.05) == {"a": 0.75, "b": 0.9, "c": 0.9}
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="`max_drop` must be a non-negative"):
            table.plan(bad)
    with pytest.raises(TypeError, match=r"`max_drop` must be .*of type str"):
        table.plan("0.1")
    markdown = table.to_markdown()
    assert "| a | 0.9000 | 0.8950 | 0.8800 | 0.7000 |" in markdown
    assert "| layer | 25% | 50% | 75% | 90% |" in markdown


def test_plan_feeds_a_dict_schedule(trained):
    model, data = trained
    plan = sensitivity(model, data, (0.5, 0.8), verbose=0).plan(0.02)
    schedules = {
        name: kp.ConstantSparsity(s, 0, frequency=1) for name, s in plan.items() if s
    }
    if schedules:
        pruned = kp.prune_low_magnitude(model, schedules)
        assert {w.layer.name for w in kp.pruning_wrappers(pruned)} == set(schedules)


def test_writes_a_png_plot(trained, tmp_path):
    model, data = trained
    path = tmp_path / "sensitivity.png"
    sensitivity(model, data, (0.5,), plot=path, verbose=0)
    assert path.read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"sparsities": (0.5, 1.0)},
            ValueError,
            r"`sparsities` must be a float in \[0, 1\)",
        ),
        ({"sparsities": 0.5}, TypeError, "`sparsities` must be a list"),
        ({"sparsities": ()}, ValueError, "`sparsities` is empty"),
        ({"metric": "f1"}, ValueError, r"`metric` must be one of \('accuracy',\)"),
        ({"layers": "missing"}, ValueError, r"names layers .* does not have"),
        ({"layers": keras.layers.Conv2D}, ValueError, "No prunable layers selected"),
        ({"plot": "out.svg"}, ValueError, "`plot` must be a path ending in .png"),
        ({"verbose": 2}, ValueError, "`verbose` must be 0 or 1"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, message):
    data = (np.zeros((4, 8), "float32"), np.zeros(4))
    with pytest.raises(error, match=message):
        sensitivity(dense_model(), data, **kwargs)


def test_bad_data_and_models():
    x = np.zeros((4, 8), "float32")
    with pytest.raises(TypeError, match="`data` must be a pair"):
        sensitivity(dense_model(), x)
    with pytest.raises(ValueError, match="as many labels as samples"):
        sensitivity(dense_model(), (x, np.zeros(3)))
    with pytest.raises(ValueError, match="not built"):
        sensitivity(keras.Sequential([keras.layers.Dense(2)]), (x, np.zeros(4)))
    with pytest.raises(ValueError, match=r"one label .*shape \(4, 3, 3\)"):
        sensitivity(dense_model(), (x, np.zeros((4, 3, 3))))
    with pytest.raises(ValueError, match="strip_pruning"):
        sensitivity(kp.prune_low_magnitude(dense_model()), (x, np.zeros(4)))
    with pytest.raises(TypeError, match="`model` must be a Sequential or functional"):
        sensitivity(keras.layers.Dense(2), (x, np.zeros(4)))


def test_accuracy_reads_one_hot_labels_and_a_single_probability():
    _, accuracy = kp.analysis._metric_function("accuracy")
    logits = np.array([[2.0, 0.0, 1.0], [0.0, 3.0, 1.0]])
    assert accuracy(np.array([0, 2]), logits) == 0.5
    assert accuracy(np.eye(3)[[0, 2]], logits) == 0.5
    assert accuracy(np.array([1, 0, 1]), np.array([[0.9], [0.2], [0.4]])) == 2 / 3
    assert accuracy(np.array([1, 0, 1]), np.array([0.9, 0.2, 0.4])) == 2 / 3
    per_step = np.stack([logits, logits[::-1]])  # (2 sequences, 2 steps, 3)
    assert accuracy(np.array([[0, 2], [1, 1]]), per_step) == 0.5


def test_a_nan_score_is_out_of_budget():
    table = SensitivityTable(0.3, (0.25, 0.5), {"a": [0.3, float("nan")]}, "loss")
    assert table.plan(0.01) == {"a": 0.25}


def test_models_with_several_inputs_are_analysed():
    first, second = keras.Input((4,)), keras.Input((4,))
    joined = keras.layers.Concatenate()([first, second])
    model = keras.Model([first, second], keras.layers.Dense(3, name="d")(joined))
    rng = np.random.default_rng(0)
    xa, xb = rng.normal(size=(2, 16, 4)).astype("float32")
    y = rng.integers(0, 3, 16)
    table = sensitivity(model, ([xa, xb], y), sparsities=(0.5,))
    expected = kp.prune_to_sparsity(model, 0.5).predict([xa, xb], verbose=0)
    assert table.scores["d"] == [np.mean(expected.argmax(-1) == y)]
    with pytest.raises(ValueError, match=r"Received: \[12, 16\] samples"):
        sensitivity(model, ([xa[:12], xb], y))


def test_layers_of_nested_models_with_one_name_raise():
    def block(name):
        return keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(4, name="fc")], name=name
        )

    inputs = keras.Input((4,))
    model = keras.Model(inputs, block("second")(block("first")(inputs)))
    x = np.zeros((8, 4), "float32")
    with pytest.raises(ValueError, match=r"share the names \['fc'\]"):
        sensitivity(model, (x, np.zeros(8, "int64")))
