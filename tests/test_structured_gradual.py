"""Gradual channel pruning: group masks through fit, then shrink."""

import keras
import numpy as np
import pytest

import keras_pruning as kp

pytestmark = pytest.mark.backends

L = keras.layers


def _branching_cnn():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU()(x)
    gate = L.Conv2D(8, 1, activation="sigmoid", name="gate")(x)
    x = L.Add()([x, gate])
    d = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = L.Conv2D(6, 1, name="expand")(d)
    x = L.Concatenate()([x, y])
    x = L.Conv2D(4, 1, name="mix")(x)
    outputs = L.Dense(3, name="head")(L.Flatten()(x))
    return keras.Model(inputs, outputs)


def _fit(model, steps=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((4 * steps, 8, 8, 3)).astype("float32")
    y = rng.random((4 * steps, 3)).astype("float32")
    model.compile(keras.optimizers.SGD(0.01), "mse")
    model.fit(
        x, y, batch_size=4, epochs=1, verbose=0, callbacks=[kp.UpdatePruningStep()]
    )
    return x


def _channels_kept(wrapper_mask, axis):
    m = np.moveaxis(keras.ops.convert_to_numpy(wrapper_mask), axis, 0)
    return m.reshape(m.shape[0], -1).any(axis=1)


def test_masks_whole_groups_and_shrunk_model_computes_the_same():
    schedule = kp.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=6, frequency=2)
    pruned = kp.prune_low_magnitude(_branching_cnn(), schedule, granularity="channel")
    x = _fit(pruned)
    stem = next(w for w in kp.pruning_wrappers(pruned) if w.layer.name == "stem")
    kept = _channels_kept(stem.masks[0], -1)
    assert kept.sum() == 4  # 50% of the Add-coupled group of 8
    bn = next(w for w in kp.pruning_wrappers(pruned) if w.layer.name == "bn")
    gamma_mask = keras.ops.convert_to_numpy(bn.masks[0])
    np.testing.assert_array_equal(gamma_mask, kept)  # the same channels everywhere
    gate = next(w for w in kp.pruning_wrappers(pruned) if w.layer.name == "gate")
    np.testing.assert_array_equal(_channels_kept(gate.masks[0], -1), kept)
    np.testing.assert_array_equal(_channels_kept(gate.masks[0], -2), kept)

    small = kp.strip_pruning(pruned, shrink=True)
    assert small.get_layer("stem").filters == 4
    assert small.get_layer("expand").filters == 3
    assert small.get_layer("mix").filters == 2
    assert small.get_layer("head").units == 3  # the output is never cut
    np.testing.assert_allclose(
        small.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-4
    )
    assert not any(isinstance(layer, kp.PruneLowMagnitude) for layer in small.layers)


def test_pruned_channels_stay_pruned_as_sparsity_grows():
    schedule = kp.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=8, frequency=1)
    pruned = kp.prune_low_magnitude(_branching_cnn(), schedule, granularity="channel")
    stem = next(w for w in kp.pruning_wrappers(pruned) if w.layer.name == "stem")
    callback = kp.UpdatePruningStep()
    callback.set_model(pruned)
    callback.on_train_begin()
    history = []
    for step in range(8):
        callback.on_train_batch_begin(step)
        history.append(_channels_kept(stem.masks[0], -1))
    for before, after in zip(history, history[1:], strict=False):
        assert not np.any(after & ~before)
    assert history[-1].sum() == 2


def test_nested_models_with_the_same_layer_names_shrink_to_the_same_outputs():
    def block(name, channels):
        inputs = keras.Input((8, 8, channels))
        x = L.Conv2D(8, 3, padding="same", activation="relu", name="a")(inputs)
        return keras.Model(inputs, L.Conv2D(4, 1, name="b")(x), name=name)

    inputs = keras.Input((8, 8, 3))
    x = block("second", 4)(block("first", 3)(inputs))
    model = keras.Model(inputs, L.Dense(3)(L.Flatten()(x)))
    schedule = kp.ConstantSparsity(0.5, 0, frequency=2)
    pruned = kp.prune_low_magnitude(model, schedule, granularity="channel")
    x = _fit(pruned)
    small = kp.strip_pruning(pruned, shrink=True)
    assert small.count_params() < model.count_params()
    np.testing.assert_allclose(
        small.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-4
    )


@pytest.mark.parametrize("frozen", ["bn", "expand", "stem"])
def test_frozen_layers_are_masked_and_cut_too(frozen):
    model = _branching_cnn()
    model.get_layer(frozen).trainable = False
    schedule = kp.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=6, frequency=2)
    pruned = kp.prune_low_magnitude(model, schedule, granularity="channel")
    x = _fit(pruned)
    small = kp.strip_pruning(pruned, shrink=True)
    assert small.get_layer("stem").filters == 4
    assert small.get_layer("expand").filters == 3
    np.testing.assert_allclose(
        small.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-4
    )


def test_a_pruned_channel_stays_pruned_when_a_kept_one_scores_zero():
    model = keras.Sequential(
        [keras.Input((3,)), L.Dense(4, name="hidden"), L.Dense(2, name="out")]
    )
    hidden, out = model.get_layer("hidden"), model.get_layer("out")
    hidden.kernel.assign(np.array([[0.1] * 3, [1.0] * 3, [2.0] * 3, [3.0] * 3]).T)
    schedule = kp.ConstantSparsity(0.25, 0, frequency=1)
    pruned = kp.prune_low_magnitude(model, schedule, granularity="channel")
    wrapper = next(w for w in kp.pruning_wrappers(pruned) if w.layer is hidden)
    callback = kp.UpdatePruningStep()
    callback.set_model(pruned)
    callback.on_train_begin()
    callback.on_train_batch_begin(0)  # channel 0, the smallest, is pruned
    np.testing.assert_array_equal(
        _channels_kept(wrapper.masks[0], -1), [False, True, True, True]
    )
    # Channel 3 now scores 0, as the pruned channel 0 does, which comes first.
    for variable, value in (
        (hidden.kernel, np.array([[0.0] * 3, [1.0] * 3, [2.0] * 3, [0.0] * 3]).T),
        (hidden.bias, np.zeros(4)),
        (out.kernel, np.ones((4, 2)) * np.array([[0], [1], [1], [0]])),
    ):
        variable.assign(value.astype("float32"))
    callback.on_train_batch_begin(1)
    np.testing.assert_array_equal(
        _channels_kept(wrapper.masks[0], -1), [False, True, True, True]
    )


def test_layers_selection_prunes_only_groups_made_by_selected_layers():
    pruned = kp.prune_low_magnitude(
        _branching_cnn(),
        kp.ConstantSparsity(0.5, 0, frequency=1),
        granularity="channel",
        layers=["expand"],
    )
    _fit(pruned, steps=2)
    small = kp.strip_pruning(pruned, shrink=True)
    assert small.get_layer("expand").filters == 3
    assert small.get_layer("stem").filters == 8 and small.get_layer("mix").filters == 4


def test_save_load_resume_keeps_channel_masks(tmp_path):
    schedule = kp.ConstantSparsity(0.5, 0, frequency=1)
    pruned = kp.prune_low_magnitude(_branching_cnn(), schedule, granularity="channel")
    x = _fit(pruned, steps=2)
    pruned.save(tmp_path / "p.keras")
    loaded = keras.models.load_model(tmp_path / "p.keras")
    wrappers = kp.pruning_wrappers(loaded)
    assert {w.granularity for w in wrappers} == {"channel"}
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6
    )
    small = kp.strip_pruning(loaded, shrink=True)
    assert small.get_layer("stem").filters == 4


def test_channel_granularity_errors():
    model = _branching_cnn()
    with pytest.raises(ValueError, match="granularity"):
        kp.prune_low_magnitude(model, granularity="block")
    with pytest.raises(TypeError, match="granularity='channel'"):
        kp.prune_low_magnitude(L.Dense(3), granularity="channel")
    with pytest.raises(TypeError, match="granularity='channel'"):
        kp.prune_low_magnitude([L.Dense(3)], granularity="channel")
    with pytest.raises(ValueError, match="pruning_policy"):
        kp.prune_low_magnitude(
            model, granularity="channel", pruning_policy=kp.PruneForLatencyOnXNNPack()
        )
    with pytest.raises(ValueError, match="ignore"):
        kp.prune_low_magnitude(model, ignore=["stem"])
    only_output = keras.Sequential([keras.Input((4,)), L.Dense(2)])
    with pytest.raises(ValueError, match="no channel group"):
        kp.prune_low_magnitude(only_output, granularity="channel")
    weight_pruned = kp.prune_low_magnitude(model)
    with pytest.raises(ValueError, match="shrink=True"):
        kp.strip_pruning(weight_pruned, shrink=True)
    wrapper = kp.PruneLowMagnitude(L.BatchNormalization(), granularity="channel")
    wrapper.build((None, 4))
    with pytest.raises(ValueError, match="whole model"):
        wrapper.update_masks(0.5)
    with pytest.raises(ValueError, match="channel_sides"):
        kp.PruneLowMagnitude(L.Dense(2), granularity="channel", channel_sides=("up",))
