"""prune_low_magnitude, strip_pruning and pruning_wrappers on layers and models."""

import io
import zipfile

import h5py
import keras
import numpy as np
import pytest
from conftest import dense_model

import keras_pruning as kp

pytestmark = pytest.mark.backends

EVERY_STEP = kp.ConstantSparsity(0.5, 0, frequency=1)


def _fit(model, x, y, steps=2, batch_size=4):
    model.compile(keras.optimizers.SGD(0.01), "mse")
    model.fit(
        x[: steps * batch_size],
        y[: steps * batch_size],
        batch_size=batch_size,
        epochs=1,
        verbose=0,
        shuffle=False,
        callbacks=[kp.UpdatePruningStep()],
    )


def test_prune_layer_returns_wrapper_with_kwargs():
    wrapped = kp.prune_low_magnitude(keras.layers.Dense(3, name="head"), name="pruned")
    assert isinstance(wrapped, kp.PruneLowMagnitude)
    assert wrapped.name == "pruned"
    assert wrapped.layer.name == "head"


def test_prune_list_of_layers():
    layers = [keras.layers.Dense(2), keras.layers.Conv2D(2, 3)]
    wrapped = kp.prune_low_magnitude(layers, EVERY_STEP)
    assert [type(w) for w in wrapped] == [kp.PruneLowMagnitude] * 2
    assert [w.layer for w in wrapped] == layers
    assert all(w.pruning_schedule is EVERY_STEP for w in wrapped)


def test_default_schedule_is_constant_half_built_per_call():
    first = kp.prune_low_magnitude(dense_model())
    second = kp.prune_low_magnitude(dense_model())
    schedule = kp.pruning_wrappers(first)[0].pruning_schedule
    assert schedule == kp.ConstantSparsity(0.5, 0)
    assert schedule is not kp.pruning_wrappers(second)[0].pruning_schedule


def test_sequential_model_wraps_supported_layers_and_keeps_weights():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(4, 3),
            keras.layers.BatchNormalization(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(2),
        ]
    )
    before = [w.copy() for w in model.get_weights()]
    pruned = kp.prune_low_magnitude(model)
    kinds = [type(layer).__name__ for layer in pruned.layers]
    assert kinds == [
        "PruneLowMagnitude",
        "BatchNormalization",
        "Flatten",
        "Dropout",
        "PruneLowMagnitude",
    ]
    x = np.random.default_rng(0).random((2, 6, 6, 1)).astype("float32")
    np.testing.assert_allclose(
        pruned.predict(x, verbose=0), model.predict(x, verbose=0)
    )
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_functional_model_with_shared_layer_wraps_it_once(rng):
    shared = keras.layers.Dense(4, name="shared")
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2)(shared(shared(inputs)))
    pruned = kp.prune_low_magnitude(keras.Model(inputs, outputs), EVERY_STEP)
    wrappers = kp.pruning_wrappers(pruned)
    assert [w.layer.name for w in wrappers].count("shared") == 1
    x = rng.random((8, 4)).astype("float32")
    _fit(pruned, x, np.zeros((8, 2), "float32"), steps=2)
    # One step counter per model: the layer called twice per batch steps once.
    assert {w.pruning_step for w in wrappers} == {2}


def test_nested_model_is_pruned_recursively(rng):
    inner = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(6), keras.layers.LayerNormalization()],
        name="inner",
    )
    inputs = keras.Input((5,))
    outer = keras.Model(inputs, keras.layers.Dense(2)(inner(inputs)))
    pruned = kp.prune_low_magnitude(outer, EVERY_STEP)
    nested = [layer for layer in pruned.layers if isinstance(layer, keras.Model)]
    assert len(nested) == 1
    assert isinstance(nested[0].layers[0], kp.PruneLowMagnitude)
    assert len(kp.pruning_wrappers(pruned)) == 2
    x = rng.random((8, 5)).astype("float32")
    _fit(pruned, x, np.zeros((8, 2), "float32"))
    assert all(r.sparsity == pytest.approx(0.5) for r in kp.sparsity_report(pruned))
    stripped = kp.strip_pruning(pruned)
    assert kp.pruning_wrappers(stripped) == []
    np.testing.assert_allclose(
        stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6
    )


def test_subclassed_model_raises_clear_error():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(ValueError, match="subclassed model.*__init__"):
        kp.prune_low_magnitude(Net())


def test_wrappers_inside_subclassed_model_train(rng):
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = kp.prune_low_magnitude(keras.layers.Dense(8), EVERY_STEP)
            self.out = keras.layers.Dense(1)

        def call(self, x):
            return self.out(self.hidden(x))

    model = Net()
    x = rng.random((8, 4)).astype("float32")
    model(x)
    _fit(model, x, np.zeros((8, 1), "float32"))
    wrapper = kp.pruning_wrappers(model)[0]
    assert wrapper.pruning_step == 2
    assert np.mean(keras.ops.convert_to_numpy(wrapper.layer.kernel) == 0) == 0.5


def test_pruning_twice_is_a_clear_error():
    pruned = kp.prune_low_magnitude(dense_model())
    with pytest.raises(ValueError, match="already pruned.*strip_pruning"):
        kp.prune_low_magnitude(pruned)
    with pytest.raises(ValueError, match="already wrapped"):
        kp.prune_low_magnitude(kp.pruning_wrappers(pruned)[0])


@pytest.mark.parametrize("bad", [None, 3, "dense", np.zeros(3), [1, 2]])
def test_non_keras_objects_raise_type_error(bad):
    with pytest.raises(TypeError, match="to_prune.*Received"):
        kp.prune_low_magnitude(bad)


def test_empty_list_and_model_kwargs_are_rejected():
    with pytest.raises(ValueError, match="empty list"):
        kp.prune_low_magnitude([])
    with pytest.raises(ValueError, match="single wrapped layer.*name"):
        kp.prune_low_magnitude(dense_model(), name="x")


def test_block_and_m_by_n_settings_reach_every_wrapper():
    pruned = kp.prune_low_magnitude(
        dense_model(), block_size=(4, 1), block_pooling_type="MAX"
    )
    assert [
        (w.block_size, w.block_pooling_type) for w in kp.pruning_wrappers(pruned)
    ] == [((4, 1), "max")] * 2
    pruned = kp.prune_low_magnitude(dense_model(), sparsity_m_by_n=(2, 4))
    assert [w.sparsity_m_by_n for w in kp.pruning_wrappers(pruned)] == [(2, 4)] * 2


def test_m_by_n_model_with_other_layers_names_them_and_layers_selects_around():
    model = keras.Sequential(
        [
            keras.Input((5,), dtype="int32"),
            keras.layers.Embedding(10, 8, name="embed"),
            keras.layers.Flatten(),
            keras.layers.Dense(4, name="head"),
        ]
    )
    with pytest.raises(ValueError, match="'embed' of class Embedding is not one of"):
        kp.prune_low_magnitude(model, sparsity_m_by_n=(2, 4))
    pruned = kp.prune_low_magnitude(
        model, sparsity_m_by_n=(2, 4), layers=keras.layers.Dense
    )
    assert [w.layer.name for w in kp.pruning_wrappers(pruned)] == ["head"]


def test_unsupported_layer_in_model_names_it():
    model = keras.Sequential([keras.Input((4,)), keras.layers.PReLU(name="act")])
    with pytest.raises(ValueError, match=r"'act' of class PReLU.*get_prunable_weights"):
        kp.prune_low_magnitude(model)


def test_strip_pruning_applies_masks_and_removes_wrappers(rng):
    pruned = kp.prune_low_magnitude(dense_model(), EVERY_STEP)
    x = rng.random((8, 8)).astype("float32")
    _fit(pruned, x, np.zeros((8, 3), "float32"))
    stripped = kp.strip_pruning(pruned)
    assert [type(layer).__name__ for layer in stripped.layers] == ["Dense", "Dense"]
    for layer in stripped.layers:
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.02)
    np.testing.assert_allclose(
        stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6
    )


def test_stripped_model_is_uncompiled_and_saves_no_optimizer(rng, tmp_path):
    pruned = kp.prune_low_magnitude(dense_model(), EVERY_STEP)
    _fit(pruned, rng.random((8, 8)).astype("float32"), np.zeros((8, 3), "float32"))
    stripped = kp.strip_pruning(pruned)
    assert pruned.compiled and not stripped.compiled
    path = tmp_path / "stripped.keras"
    stripped.save(path)
    with zipfile.ZipFile(path) as archive:
        data = archive.read("model.weights.h5")
    with h5py.File(io.BytesIO(data)) as weights:
        assert "optimizer" not in weights
        assert "layers" in weights


def test_strip_pruning_of_single_wrapper_and_plain_model():
    wrapper = kp.prune_low_magnitude(keras.layers.Dense(2))
    wrapper.build((None, 3))
    assert kp.strip_pruning(wrapper) is wrapper.layer
    plain = dense_model()
    stripped = kp.strip_pruning(plain)
    assert [type(layer) for layer in stripped.layers] == [
        type(layer) for layer in plain.layers
    ]


def test_strip_pruning_rejects_non_keras_objects():
    with pytest.raises(TypeError, match="model.*Received"):
        kp.strip_pruning("model.keras")


def test_pruning_wrappers_rejects_non_keras_objects():
    with pytest.raises(TypeError, match="model.*Received"):
        kp.pruning_wrappers(42)


def test_wrapping_a_weightless_layer_says_it_has_nothing_to_prune():
    with pytest.raises(ValueError, match="'drop' of class Dropout has no weights"):
        kp.prune_low_magnitude(keras.layers.Dropout(0.5, name="drop"))


def test_functional_model_with_embedding_mask_op_is_pruned():
    inputs = keras.Input((None,), dtype="int32")
    embedded = keras.layers.Embedding(10, 4, mask_zero=True)(inputs)
    model = keras.Model(inputs, keras.layers.LSTM(3)(embedded))
    pruned = kp.prune_low_magnitude(model)
    assert len(kp.pruning_wrappers(pruned)) == 2


def _head_model():
    """A transfer-learning shape: a nested base model, then a Dense head."""
    base = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, name="base_dense")], name="base"
    )
    inputs = keras.Input((6,))
    x = base(inputs)
    x = keras.layers.Dense(5, name="head")(x)
    outputs = keras.layers.Dense(3, name="classifier")(x)
    return keras.Model(inputs, outputs)


def _wrapped(model):
    return {w.layer.name: w.pruning_schedule for w in kp.pruning_wrappers(model)}


@pytest.mark.parametrize(
    "layers",
    [
        ["head", "classifier"],
        lambda layer: layer.name in ("head", "classifier"),
    ],
    ids=["names", "predicate"],
)
def test_layers_selects_which_layers_to_prune(layers):
    schedule = kp.ConstantSparsity(0.7, 0, frequency=1)
    pruned = kp.prune_low_magnitude(_head_model(), schedule, layers=layers)
    assert _wrapped(pruned) == {"head": schedule, "classifier": schedule}


def test_layers_by_class_reaches_into_nested_models():
    pruned = kp.prune_low_magnitude(_head_model(), layers=keras.layers.Dense)
    assert set(_wrapped(pruned)) == {"base_dense", "head", "classifier"}


def test_naming_a_nested_model_selects_all_of_it():
    pruned = kp.prune_low_magnitude(_head_model(), layers="base")
    assert set(_wrapped(pruned)) == {"base_dense"}


def test_a_predicate_picks_single_layers_not_nested_models():
    # The nested model "base" passes the test; its layer does not.
    not_base = lambda layer: layer.name != "base_dense"  # noqa: E731
    pruned = kp.prune_low_magnitude(_head_model(), layers=not_base)
    assert set(_wrapped(pruned)) == {"head", "classifier"}
    sparse = kp.prune_to_sparsity(_head_model(), 0.5, layers=not_base)
    sparsity = {r.weight: r.sparsity for r in kp.sparsity_report(sparse)}
    assert sparsity["base_dense/kernel"] == 0.0
    assert sparsity["head/kernel"] > 0.4 and sparsity["classifier/kernel"] > 0.4


def test_bounds_given_to_a_nested_model_bound_its_layers():
    bounds = {"base": (0.0, 0.25)}
    pruned = kp.prune_low_magnitude(
        _head_model(), global_pruning=True, sparsity_bounds=bounds
    )
    assert {w.layer.name: w.sparsity_bounds for w in kp.pruning_wrappers(pruned)} == {
        "base_dense": (0.0, 0.25),
        "head": None,
        "classifier": None,
    }
    sparse = kp.prune_to_sparsity(
        _head_model(), 0.5, global_pruning=True, sparsity_bounds=bounds
    )
    sparsity = {r.weight: r.sparsity for r in kp.sparsity_report(sparse)}
    assert sparsity["base_dense/kernel"] <= 0.25


def test_an_unselected_subclassed_submodel_stays_as_it_is():
    class Backbone(keras.Model):
        def __init__(self):
            super().__init__(name="backbone")
            self.dense = keras.layers.Dense(8)

        def call(self, x):
            return self.dense(x)

    backbone = Backbone()
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(backbone(inputs)))
    pruned = kp.prune_low_magnitude(model, layers="head")
    assert set(_wrapped(pruned)) == {"head"}
    assert any(layer is backbone for layer in pruned.layers)
    with pytest.raises(ValueError, match="subclassed"):
        kp.prune_low_magnitude(model, layers=keras.layers.Dense)


def test_dict_schedule_gives_layers_their_own_sparsity(rng):
    model = _head_model()
    head = kp.ConstantSparsity(0.5, 0, frequency=1)
    rest = kp.ConstantSparsity(0.75, 0, frequency=1)
    pruned = kp.prune_low_magnitude(
        model, {"head": head, keras.layers.Dense: rest, "classifier": head}
    )
    # First matching key wins: "classifier" is a Dense, so it gets `rest`.
    assert _wrapped(pruned) == {"base_dense": rest, "head": head, "classifier": rest}
    _fit(pruned, rng.random((8, 6)).astype("float32"), np.zeros((8, 3), "float32"))
    sparsity = {
        r.weight: r.sparsity for r in kp.sparsity_report(kp.strip_pruning(pruned))
    }
    assert sparsity == {
        "base/base_dense/kernel": 0.75,
        "head/kernel": 0.5,
        "classifier/kernel": pytest.approx(0.75, abs=0.05),
    }


def test_unselected_unsupported_layers_are_left_alone():
    inputs = keras.Input((4,))
    x = keras.layers.PReLU(name="prelu")(inputs)  # trainable, not prunable
    outputs = keras.layers.Dense(2, name="out")(x)
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match="PReLU"):
        kp.prune_low_magnitude(model)
    assert set(_wrapped(kp.prune_low_magnitude(model, layers="out"))) == {"out"}


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"layers": 3}, TypeError, "`layers` must hold layer names.*Received: 3"),
        ({"layers": []}, ValueError, "`layers` is empty"),
        ({"pruning_schedule": {}}, ValueError, "must map at least one layer"),
        ({"pruning_schedule": {"head": 0.5}}, TypeError, "must be PruningSchedule"),
        (
            {"pruning_schedule": {"head": EVERY_STEP}, "layers": "head"},
            ValueError,
            "either `layers` or a dict",
        ),
    ],
)
def test_bad_layer_selection_names_the_argument(kwargs, error, message):
    with pytest.raises(error, match=message):
        kp.prune_low_magnitude(_head_model(), **kwargs)


def test_layer_selection_needs_a_model():
    with pytest.raises(TypeError, match="select layers of a model"):
        kp.prune_low_magnitude(keras.layers.Dense(2), layers="dense")
