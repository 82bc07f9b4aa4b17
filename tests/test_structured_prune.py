"""prune_channels: the smaller model keeps the right channels and weights."""

import keras
import numpy as np
import pytest

import keras_pruning as kp
from keras_pruning.structured import importance, prune_channels

pytestmark = pytest.mark.backends

L = keras.layers


def _mlp():
    return keras.Sequential(
        [
            keras.Input((5,)),
            L.Dense(6, activation="relu", name="d1"),
            L.Dense(4, activation="relu", name="d2"),
            L.Dense(2, name="out"),
        ]
    )


def _kept(scores, count):
    return np.sort(np.argsort(-scores, kind="stable")[:count])


def test_l2_keeps_the_channels_with_the_largest_weights_they_touch():
    model = _mlp()
    k1, b1 = (w.numpy() for w in model.get_layer("d1").weights)
    k2, b2 = (w.numpy() for w in model.get_layer("d2").weights)
    k3 = model.get_layer("out").kernel.numpy()
    small = prune_channels(model, 0.5)
    keep1 = _kept((k1**2).sum(0) + (k2**2).sum(1), 3)
    keep2 = _kept((k2**2).sum(0) + (k3**2).sum(1), 2)
    np.testing.assert_array_equal(small.get_layer("d1").kernel, k1[:, keep1])
    np.testing.assert_array_equal(small.get_layer("d1").bias, b1[keep1])
    np.testing.assert_array_equal(small.get_layer("d2").kernel, k2[keep1][:, keep2])
    np.testing.assert_array_equal(small.get_layer("d2").bias, b2[keep2])
    np.testing.assert_array_equal(small.get_layer("out").kernel, k3[keep2])
    assert [layer.units for layer in small.layers] == [3, 2, 2]


def test_l1_and_user_function_rank_by_their_own_scores():
    model = _mlp()
    k1 = model.get_layer("d1").kernel.numpy()
    k2 = model.get_layer("d2").kernel.numpy()
    small = prune_channels(model, 0.5, importance="l1")
    keep = _kept(np.abs(k1).sum(0) + np.abs(k2).sum(1), 3)
    np.testing.assert_array_equal(small.get_layer("d1").kernel, k1[:, keep])

    def max_abs(weights, gradients):
        return keras.ops.max(keras.ops.abs(weights), axis=1)

    small = prune_channels(model, 0.5, importance=max_abs)
    keep = _kept(np.abs(k1).max(0) + np.abs(k2).max(1), 3)
    np.testing.assert_array_equal(small.get_layer("d1").kernel, k1[:, keep])


def test_pure_scores_match_their_formulas():
    w = np.array([[1.0, -2.0], [0.5, 0.5]], "float32")
    g = np.array([[1.0, 1.0], [2.0, -2.0]], "float32")
    np.testing.assert_allclose(importance.l1(w), [3.0, 1.0])
    np.testing.assert_allclose(importance.l2(w), [5.0, 0.5])
    np.testing.assert_allclose(importance.taylor(w, g), [1.0, 0.0])
    np.testing.assert_allclose(importance.bn_scale(np.array([[-3.0], [2.0]])), [3, 2])


def test_bn_scale_ranks_by_gamma():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            L.Conv2D(4, 3, name="c"),
            L.BatchNormalization(name="bn"),
            L.ReLU(),
            L.GlobalAveragePooling2D(),
            L.Dense(2),
        ]
    )
    model.get_layer("bn").gamma.assign([0.1, -3.0, 0.2, 2.0])
    small = prune_channels(model, 0.5, importance="bn_scale")
    np.testing.assert_allclose(small.get_layer("bn").gamma, [-3.0, 2.0])
    with pytest.raises(ValueError, match="no BatchNormalization"):
        prune_channels(_mlp(), 0.5, importance="bn_scale")


def _mlp_loss_gradients(model, x, y):
    """dL/dkernel of `_mlp()` for the mean softmax cross-entropy, by hand."""
    (k1, b1), (k2, b2), (k3, b3) = (
        [keras.ops.convert_to_numpy(w) for w in model.get_layer(n).weights]
        for n in ("d1", "d2", "out")
    )
    z1 = x @ k1 + b1
    z2 = np.maximum(z1, 0) @ k2 + b2
    logits = np.maximum(z2, 0) @ k3 + b3
    p = np.exp(logits - logits.max(1, keepdims=True))
    d3 = (p / p.sum(1, keepdims=True) - np.eye(2)[y]) / len(x)
    d2 = (d3 @ k3.T) * (z2 > 0)
    d1 = (d2 @ k2.T) * (z1 > 0)
    return (k1, x.T @ d1), (k2, np.maximum(z1, 0).T @ d2)


@pytest.mark.parametrize("frozen", [False, True], ids=["trainable", "frozen"])
def test_taylor_uses_loss_gradients_and_needs_data(frozen):
    model = _mlp()
    model.get_layer("d2").trainable = not frozen  # frozen weights get gradients too
    x = np.random.default_rng(0).normal(size=(16, 5)).astype("float32")
    y = np.random.default_rng(1).integers(0, 2, 16)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    (k1, g1), (k2, g2) = _mlp_loss_gradients(model, x, y)
    # Per row of each kernel the channel touches: (sum w * dL/dw)^2.
    scores = (k1 * g1).sum(0) ** 2 + (k2 * g2).sum(1) ** 2
    small = prune_channels(model, 0.5, importance="taylor", data=(x, y), loss=loss)
    np.testing.assert_allclose(small.get_layer("d1").kernel, k1[:, _kept(scores, 3)])
    with pytest.raises(ValueError, match="data=\\(x, y\\)"):
        prune_channels(model, 0.5, importance="taylor", loss=loss)
    with pytest.raises(ValueError, match="needs a loss"):
        prune_channels(model, 0.5, importance="taylor", data=(x, y))


def test_taylor_takes_a_loss_name_or_function_as_a_loss_object():
    x = np.random.default_rng(0).normal(size=(16, 5)).astype("float32")
    y = np.random.default_rng(1).normal(size=(16, 2)).astype("float32")
    kernels = []
    for loss in (
        "mse",
        keras.losses.mean_squared_error,
        keras.losses.MeanSquaredError(),
    ):
        keras.utils.set_random_seed(0)
        small = prune_channels(_mlp(), 0.5, importance="taylor", data=(x, y), loss=loss)
        kernels.append(keras.ops.convert_to_numpy(small.get_layer("d1").kernel))
    np.testing.assert_array_equal(kernels[0], kernels[2])
    np.testing.assert_array_equal(kernels[1], kernels[2])


def test_round_to_keeps_multiples_and_global_pruning_differs_per_group():
    model = keras.Sequential(
        [keras.Input((8,)), L.Dense(32, name="d1"), L.Dense(16, name="d2"), L.Dense(2)]
    )
    small = prune_channels(model, 0.5, round_to=8)
    assert (small.get_layer("d1").units, small.get_layer("d2").units) == (16, 8)
    small = prune_channels(model, 0.6, round_to=8)
    assert small.get_layer("d1").units % 8 == 0 and small.get_layer("d2").units == 8
    # Make d2's channels far more important than d1's: global pruning cuts d1.
    model.get_layer("d1").kernel.assign(model.get_layer("d1").kernel * 0.01)
    model.get_layer("d1").kernel.assign(
        model.get_layer("d1").kernel.numpy() * np.linspace(0.1, 10, 32)
    )
    small = prune_channels(model, 0.5, global_pruning=True)
    assert small.get_layer("d1").units + small.get_layer("d2").units == 24
    assert small.get_layer("d1").units != small.get_layer("d2").units


def test_original_model_is_untouched_and_result_is_plain(tmp_path):
    model = _mlp()
    before = [w.numpy().copy() for w in model.weights]
    small = prune_channels(model, 0.5)
    for old, new in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(old, new.numpy())
    assert not small.compiled
    assert all(type(layer).__module__.startswith("keras") for layer in small.layers)
    assert small.count_params() < model.count_params()


def test_bad_arguments_raise_clear_errors():
    model = _mlp()
    for bad in (1.0, -0.1, "half", True, float("nan")):
        with pytest.raises(ValueError, match="sparsity"):
            prune_channels(model, bad)
    for bad in (0, -8, 2.5, True):
        with pytest.raises(ValueError, match="round_to"):
            prune_channels(model, 0.5, round_to=bad)
    with pytest.raises(ValueError, match="importance"):
        prune_channels(model, 0.5, importance="l3")
    with pytest.raises(TypeError, match="model"):
        prune_channels(L.Dense(3), 0.5)
    with pytest.raises(ValueError, match="strip_pruning"):
        prune_channels(kp.prune_low_magnitude(model), 0.5)

    def wrong_shape(weights, gradients):
        return keras.ops.sum(weights)

    with pytest.raises(ValueError, match="one score per row"):
        prune_channels(model, 0.5, importance=wrong_shape)


def test_a_keras_ops_operation_is_named_as_one_and_can_be_ignored():
    inputs = keras.Input((6,))
    x = L.Dense(8, name="d1")(inputs)
    x = L.Dense(6, name="d2")(x + 3.0)  # a keras.ops add, outside any layer
    model = keras.Model(inputs, L.Dense(2, name="d3")(x))
    name = next(n for n in _operation_names(model) if n.startswith("add"))
    with pytest.raises(ValueError, match=rf"operation '{name}' \(keras.ops Add"):
        prune_channels(model, 0.5)
    small = prune_channels(model, 0.5, ignore=[name])
    assert small.count_params() < model.count_params()  # d2's channels are cut
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    assert small.predict(x, verbose=0).shape == (4, 2)


def _operation_names(model):
    return [
        node.operation.name
        for depth in model._nodes_by_depth.values()
        for node in depth
        if node.operation is not None
    ]


def test_numpy_scalars_are_accepted_as_numbers():
    model = keras.Sequential(
        [keras.Input((4,)), L.Dense(8, name="d1"), L.Dense(2, name="d2")]
    )
    small = prune_channels(model, np.float32(0.5), round_to=np.int64(2))
    assert small.get_layer("d1").units == 4


def test_an_input_of_scalars_keeps_its_batch_axis_unknown():
    features, scalar = keras.Input((4,)), keras.Input(())
    x = L.Concatenate()([L.Dense(8, name="d1")(features), L.Reshape((1,))(scalar)])
    model = keras.Model([features, scalar], L.Dense(2, name="d2")(x))
    small = prune_channels(model, 0.5)
    assert [tuple(t.shape) for t in small.inputs] == [(None, 4), (None,)]
    assert small.get_layer("d1").units == 4
    x = [np.ones((3, 4), "float32"), np.ones((3,), "float32")]
    assert small.predict(x, verbose=0).shape == (3, 2)
