"""PruneLowMagnitude: the layer that holds masks (TFMOT's pruning_wrapper_test)."""

import json
import re

import keras
import numpy as np
import pytest
from conftest import gradients
from keras import layers

import keras_pruning as kp
from keras_pruning.masks import num_kept

pytestmark = pytest.mark.backends

EVERY_STEP = kp.ConstantSparsity(0.5, 0, frequency=1)


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _ids(variables):
    return [id(v) for v in variables]


def _dense_wrapper(rng, kernel_constraint=None):
    """A built wrapper around Dense("head"), 4 inputs and 3 units, whose kernel
    magnitudes are a permutation of 1..12 with random signs."""
    wrapper = kp.PruneLowMagnitude(
        layers.Dense(3, name="head", kernel_constraint=kernel_constraint)
    )
    wrapper.build((None, 4))
    values = (rng.permutation(12) + 1.0).reshape(4, 3)
    values *= rng.choice([-1.0, 1.0], size=values.shape)
    wrapper.layer.kernel.assign(values.astype("float32"))
    wrapper.layer.bias.assign(rng.normal(size=3).astype("float32"))
    return wrapper


def _plain_dense(kernel, bias):
    """A plain Dense holding `kernel` and `bias`."""
    dense = layers.Dense(kernel.shape[1])
    dense.build((None, kernel.shape[0]))
    dense.set_weights([kernel, bias])
    return dense


def _random_mask(rng, shape):
    mask = rng.random(shape) < 0.5
    mask.flat[0], mask.flat[-1] = True, False  # both kinds, whatever the draw
    return mask


def _start_pruning(model):
    """What fit() does with UpdatePruningStep before the first batch."""
    callback = kp.UpdatePruningStep()
    callback.set_model(model)
    callback.on_train_begin()
    return callback


# --- Layer test: build, symbolic and eager call, weights, config ---------------

LAYER_CASES = [
    pytest.param(lambda: layers.Dense(3), (5,), "float32", 1, id="Dense"),
    pytest.param(lambda: layers.Conv2D(2, 3), (5, 5, 2), "float32", 1, id="Conv2D"),
    pytest.param(lambda: layers.Embedding(7, 3), (4,), "int32", 1, id="Embedding"),
    pytest.param(lambda: layers.LSTM(3), (4, 2), "float32", 2, id="LSTM"),
]


@pytest.mark.parametrize(("make_layer", "shape", "dtype", "num_pruned"), LAYER_CASES)
def test_layer_builds_and_calls_symbolically_and_eagerly(
    rng, make_layer, shape, dtype, num_pruned
):
    layer = make_layer()
    wrapper = kp.PruneLowMagnitude(layer)
    inputs = keras.Input(shape, dtype=dtype)
    symbolic = wrapper(inputs)
    model = keras.Model(inputs, symbolic)
    assert symbolic.shape == layer.compute_output_shape((None, *shape))

    x = rng.integers(0, 7, (2, *shape)) if dtype == "int32" else rng.random((2, *shape))
    x = x.astype(dtype)
    eager = _np(wrapper(x))
    assert eager.shape == (2, *symbolic.shape[1:])
    np.testing.assert_allclose(model.predict(x, verbose=0), eager, rtol=1e-5)
    # Untouched masks are all ones: the wrapper computes what the layer does.
    np.testing.assert_allclose(eager, _np(layer(x)), rtol=1e-5)

    assert wrapper.built and layer.built
    assert len(wrapper.masks) == len(wrapper.thresholds) == num_pruned
    assert len(wrapper.prunable_weights) == num_pruned
    assert _ids(wrapper.trainable_weights) == _ids(layer.trainable_weights)
    assert len(wrapper.non_trainable_weights) == (
        len(layer.non_trainable_weights) + 2 * num_pruned
    )
    assert len(wrapper.weights) == len(layer.weights) + 2 * num_pruned
    own = {id(v) for v in wrapper.non_trainable_weights}
    for weight, mask, threshold in zip(
        wrapper.prunable_weights, wrapper.masks, wrapper.thresholds, strict=True
    ):
        assert id(mask) in own and id(threshold) in own
        assert not mask.trainable and not threshold.trainable
        assert mask.dtype == "bool"
        assert threshold.dtype == "float32"
        assert tuple(mask.shape) == tuple(weight.shape)
        assert tuple(threshold.shape) == ()
        assert np.all(_np(mask))


def test_mask_counts_of_tfmot_layers():
    # TFMOT's testDense, testEmbedding and testConv2D: one mask per layer.
    cases = [
        (layers.Dense(10), (10, 1)),
        (layers.Embedding(10, 10), (10, 1)),
        (layers.Conv2D(4, (3, 3)), (1, 16, 16, 4)),
    ]
    for layer, shape in cases:
        wrapper = kp.PruneLowMagnitude(layer, EVERY_STEP, block_pooling_type="AVG")
        model = keras.Sequential([wrapper])
        model.build(shape)
        assert len(wrapper.masks) == 1
        assert tuple(wrapper.masks[0].shape) == tuple(wrapper.prunable_weights[0].shape)


def _as_json(config):
    return json.loads(json.dumps(config))  # tuples become lists, as in a file


def _check_same_wrapper(restored, original):
    assert isinstance(restored, kp.PruneLowMagnitude)
    assert restored is not original
    assert restored.name == original.name
    assert restored.layer.name == original.layer.name
    assert type(restored.layer) is type(original.layer)
    assert restored.layer.units == original.layer.units
    assert restored.pruning_schedule == original.pruning_schedule
    assert restored.pruning_schedule is not original.pruning_schedule
    assert restored.block_size == original.block_size == (1, 1)
    assert restored.block_pooling_type == original.block_pooling_type == "max"
    assert _as_json(restored.get_config()) == _as_json(original.get_config())


def test_config_round_trip_keeps_schedule_and_arguments(rng):
    schedule = kp.PolynomialDecay(0.1, 0.8, 2, 20, power=2, frequency=3)
    wrapper = kp.PruneLowMagnitude(
        layers.Dense(3, name="head"),
        pruning_schedule=schedule,
        block_pooling_type="MAX",
        name="pruned_head",
    )
    wrapper.build((None, 4))
    config = wrapper.get_config()
    assert config["pruning_schedule"]["config"] == schedule.get_config()
    assert config["block_size"] == [1, 1]
    assert config["sparsity_m_by_n"] is None
    json.dumps(config)  # plain JSON, as a .keras file stores it

    from_config = kp.PruneLowMagnitude.from_config(config)
    _check_same_wrapper(from_config, wrapper)

    serialized = keras.saving.serialize_keras_object(wrapper)
    restored = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    _check_same_wrapper(restored, wrapper)

    # Same variables in the same order: weights transfer and outputs agree.
    wrapper.update_masks(0.5)
    assert restored.built  # from the build config
    restored.set_weights(wrapper.get_weights())
    x = rng.random((2, 4)).astype("float32")
    np.testing.assert_allclose(_np(restored(x)), _np(wrapper(x)), rtol=1e-6)


def test_pruned_model_config_round_trip():
    # TFMOT's testPruneModel: four masks, and from_config gives the same config.
    model = keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            layers.Conv2D(2, 3),
            layers.MaxPooling2D((2, 2), (2, 2)),
            layers.Conv2D(2, 3),
            layers.MaxPooling2D((2, 2), (2, 2)),
            layers.Flatten(),
            layers.Dense(8),
            layers.Dropout(0.4),
            layers.Dense(2),
        ]
    )
    pruned = kp.prune_low_magnitude(model, EVERY_STEP)
    assert sum(len(w.masks) for w in kp.pruning_wrappers(pruned)) == 4

    config = pruned.get_config()
    rebuilt = keras.Sequential.from_config(config)
    assert rebuilt.get_config() == config
    assert [type(layer).__name__ for layer in rebuilt.layers] == [
        type(layer).__name__ for layer in pruned.layers
    ]
    assert sum(len(w.masks) for w in kp.pruning_wrappers(rebuilt)) == 4


# --- Names and defaults --------------------------------------------------------


def test_default_name_prefixes_layer_name_and_keeps_it():
    layer = layers.Dense(2, name="head")
    wrapper = kp.PruneLowMagnitude(layer)
    assert wrapper.name == "prune_low_magnitude_head"
    assert wrapper.layer is layer
    wrapper.build((None, 3))
    assert layer.name == "head"
    assert layer.kernel.path.endswith("head/kernel")

    named = kp.PruneLowMagnitude(layers.Dense(2, name="head"), name="pruned")
    assert named.name == "pruned"
    assert named.layer.name == "head"

    # TFMOT's testCustomLayerPrunable: the class's snake_case name, prefixed.
    class CustomLayerPrunable(layers.Layer):
        def build(self, input_shape):
            self.weight = self.add_weight(shape=(input_shape[-1], 2))

        def call(self, inputs):
            return inputs @ self.weight

        def get_prunable_weights(self):
            return [self.weight]

    custom = kp.PruneLowMagnitude(CustomLayerPrunable(), block_pooling_type="MAX")
    assert custom.name == "prune_low_magnitude_custom_layer_prunable"


def test_default_schedule_is_a_new_constant_half_per_wrapper():
    first = kp.PruneLowMagnitude(layers.Dense(2))
    second = kp.PruneLowMagnitude(layers.Dense(2))
    assert first.pruning_schedule == kp.ConstantSparsity(0.5, 0)
    assert second.pruning_schedule == kp.ConstantSparsity(0.5, 0)
    assert first.pruning_schedule is not second.pruning_schedule
    assert first.block_size == (1, 1)
    assert first.block_pooling_type == "avg"
    assert first.pruning_step == -1


# --- Forward pass and gradients -------------------------------------------------


def test_forward_pass_uses_kernel_times_a_hand_set_mask(rng):
    wrapper = _dense_wrapper(rng)
    kernel, bias = _np(wrapper.layer.kernel), _np(wrapper.layer.bias)
    mask = _random_mask(rng, kernel.shape)
    wrapper.masks[0].assign(mask)
    x = rng.normal(size=(5, 4)).astype("float32")

    expected = _np(_plain_dense(kernel * mask, bias)(x))
    np.testing.assert_allclose(_np(wrapper(x)), expected, rtol=1e-6)
    np.testing.assert_allclose(_np(wrapper(x, training=False)), expected, rtol=1e-6)
    assert not np.allclose(expected, _np(_plain_dense(kernel, bias)(x)))
    # The stored kernel is still dense: the mask applies in the forward pass.
    np.testing.assert_array_equal(_np(wrapper.layer.kernel), kernel)


def test_forward_pass_after_update_masks_matches_masked_plain_layer(rng):
    wrapper = _dense_wrapper(rng)
    kernel, bias = _np(wrapper.layer.kernel), _np(wrapper.layer.bias)
    wrapper.update_masks(0.5)
    mask = _np(wrapper.masks[0])
    x = rng.normal(size=(5, 4)).astype("float32")
    expected = _np(_plain_dense(kernel * mask, bias)(x))
    np.testing.assert_allclose(_np(wrapper(x)), expected, rtol=1e-6)


def test_gradient_of_pruned_weights_is_zero(rng):
    wrapper = _dense_wrapper(rng)
    mask = _random_mask(rng, (4, 3))
    wrapper.masks[0].assign(mask)
    x = rng.random((5, 4)).astype("float32") + 0.5
    for training in (False, True):
        if training:
            _start_pruning(keras.Sequential([keras.Input((4,)), wrapper]))
        grad_kernel, grad_bias = gradients(
            lambda training=training: keras.ops.sum(wrapper(x, training=training)),
            [wrapper.layer.kernel, wrapper.layer.bias],
        )
        assert np.all(grad_kernel[~mask] == 0)
        np.testing.assert_allclose(
            grad_kernel[mask], np.broadcast_to(x.sum(0)[:, None], (4, 3))[mask]
        )
        np.testing.assert_allclose(grad_bias, np.full(3, 5.0))


# --- Inference and training ----------------------------------------------------


def test_inference_never_changes_weights_masks_or_step(rng):
    wrapper = _dense_wrapper(rng)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, wrapper(inputs))
    mask = _random_mask(rng, (4, 3))
    wrapper.masks[0].assign(mask)
    wrapper.thresholds[0].assign(1.5)
    before = [_np(v).copy() for v in wrapper.weights]
    x = rng.normal(size=(8, 4)).astype("float32")

    wrapper(x)
    wrapper(x, training=False)
    model.predict(x, batch_size=4, verbose=0)
    model.compile(keras.optimizers.Adam(0.1), "mse")
    model.evaluate(x, np.zeros((8, 3)), batch_size=4, verbose=0)

    for old, variable in zip(before, wrapper.weights, strict=True):
        np.testing.assert_array_equal(_np(variable), old, err_msg=variable.path)
    assert wrapper.pruning_step == -1


def test_training_without_update_pruning_step_raises(rng):
    wrapper = _dense_wrapper(rng)
    x = rng.normal(size=(4, 4)).astype("float32")
    with pytest.raises(ValueError, match="UpdatePruningStep"):
        wrapper(x, training=True)

    model = keras.Sequential([keras.Input((4,)), wrapper])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    with pytest.raises(ValueError, match="UpdatePruningStep"):
        model.fit(x, np.zeros((4, 3)), batch_size=4, verbose=0)


def test_update_masks_keeps_largest_and_zeroes_the_rest_in_place(rng):
    wrapper = _dense_wrapper(rng)
    kernel, bias = _np(wrapper.layer.kernel), _np(wrapper.layer.bias)
    wrapper.update_masks(0.75)
    mask = _np(wrapper.masks[0])
    np.testing.assert_array_equal(mask, np.abs(kernel) > 9)
    np.testing.assert_array_equal(_np(wrapper.layer.kernel), kernel * mask)
    np.testing.assert_array_equal(_np(wrapper.layer.bias), bias)
    assert float(_np(wrapper.thresholds[0])) == 10.0


def test_update_masks_refuses_non_finite_weights(rng):
    for bad in (np.nan, np.inf, -np.inf):
        wrapper = _dense_wrapper(rng)
        kernel = _np(wrapper.layer.kernel).copy()
        kernel[1, 2] = bad
        wrapper.layer.kernel.assign(kernel)
        message = f"Weight '{wrapper.layer.kernel.path}' of layer 'head' holds NaN"
        with pytest.raises(ValueError, match=re.escape(message)):
            wrapper.update_masks(0.5)
        assert np.all(_np(wrapper.masks[0])), bad


def test_update_masks_rejects_bad_sparsity(rng):
    wrapper = _dense_wrapper(rng)
    for bad in (1.0, -0.1, 1.5, float("nan"), True, "0.5", None):
        with pytest.raises(ValueError, match="`sparsity` must be a float in"):
            wrapper.update_masks(bad)
    assert np.all(_np(wrapper.masks[0]))


# --- Optimizer steps between mask updates --------------------------------------


def test_values_an_optimizer_writes_at_pruned_positions_are_never_read(rng):
    wrapper = _dense_wrapper(rng)  # |kernel| is a permutation of 1..12
    kernel, bias = wrapper.layer.kernel, _np(wrapper.layer.bias)
    wrapper.update_masks(0.5)
    mask = _np(wrapper.masks[0])
    sparse = _np(kernel).copy()

    # Drive every pruned entry far above the kept ones, as momentum could.
    push = keras.ops.convert_to_tensor(-(~mask).astype("float32"))
    keras.optimizers.SGD(100.0).apply_gradients([(push, kernel)])
    x = rng.normal(size=(5, 4)).astype("float32")
    expected = _np(_plain_dense(sparse, bias)(x))
    np.testing.assert_allclose(_np(wrapper(x)), expected, rtol=1e-6)
    np.testing.assert_array_equal(wrapper.masked_weights()[0], sparse)

    # The next update ranks the effective weights: nothing pruned is revived,
    # and the pruned entries are zeroed again.
    wrapper.update_masks(0.5)
    np.testing.assert_array_equal(_np(wrapper.masks[0]), mask)
    np.testing.assert_array_equal(_np(kernel), sparse)


def test_fit_with_adam_keeps_effective_weights_sparse_and_masks_stable(rng):
    # Masks update at steps 3 and 6 of 8, with Adam's moments nonzero from
    # step 1: pruned positions get updates, which must never count.
    model = keras.Sequential(
        [keras.Input((4,)), layers.Dense(8, activation="tanh"), layers.Dense(2)]
    )
    schedule = kp.ConstantSparsity(0.5, begin_step=3, frequency=3)
    pruned = kp.prune_low_magnitude(model, schedule)
    wrappers = kp.pruning_wrappers(pruned)
    first_masks = {}

    def record(batch, logs=None):
        if batch == 2:  # step 3, after UpdatePruningStep ran
            first_masks.update({w.name: _np(w.masks[0]).copy() for w in wrappers})

    pruned.compile(keras.optimizers.Adam(0.05), "mse")
    x = rng.normal(size=(32, 4)).astype("float32")
    y = rng.normal(size=(32, 2)).astype("float32")
    pruned.fit(
        x,
        y,
        batch_size=4,
        shuffle=False,
        verbose=0,
        callbacks=[
            kp.UpdatePruningStep(),
            keras.callbacks.LambdaCallback(on_train_batch_begin=record),
        ],
    )
    for wrapper in wrappers:
        assert wrapper.pruning_step == 8
        mask = _np(wrapper.masks[0])
        assert mask.sum() == mask.size // 2
        np.testing.assert_array_equal(mask, first_masks[wrapper.name])
    assert [row.sparsity for row in kp.sparsity_report(pruned)] == [0.5, 0.5]

    predictions = pruned.predict(x, verbose=0)
    stripped = kp.strip_pruning(pruned)
    for wrapper, layer in zip(wrappers, stripped.layers, strict=True):
        assert layer is wrapper.layer
        mask = _np(wrapper.masks[0])
        kernel = _np(layer.kernel)
        assert np.all(kernel[~mask] == 0)
        assert np.all(kernel[mask] != 0)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), predictions, atol=1e-6)


# --- strip ---------------------------------------------------------------------


def test_strip_writes_masked_weights_and_leaves_no_mask_behind(rng):
    wrapper = _dense_wrapper(rng)
    layer = wrapper.layer
    kernel = _np(layer.kernel)
    mask = _random_mask(rng, kernel.shape)
    wrapper.masks[0].assign(mask)

    stripped = wrapper.strip()
    assert stripped is layer
    np.testing.assert_array_equal(_np(layer.kernel), kernel * mask)
    assert layer.kernel.constraint is None
    # The optimizer now moves the formerly pruned weights.
    keras.optimizers.SGD(1.0).apply_gradients([(-keras.ops.ones((4, 3)), layer.kernel)])
    np.testing.assert_allclose(_np(layer.kernel)[~mask], 1.0)


def test_user_constraint_works_while_wrapped_and_after_strip(rng):
    non_neg = keras.constraints.NonNeg()
    wrapper = _dense_wrapper(rng, kernel_constraint=non_neg)
    layer = wrapper.layer
    assert layer.kernel.constraint is non_neg
    optimizer = keras.optimizers.SGD(1.0)
    push_down = keras.ops.full((4, 3), 100.0, "float32")

    wrapper.update_masks(0.5)
    optimizer.apply_gradients([(push_down, layer.kernel)])
    np.testing.assert_array_equal(_np(layer.kernel), np.zeros((4, 3)))

    positive = rng.random((4, 3)).astype("float32") + 1.0
    layer.kernel.assign(positive)
    mask = _random_mask(rng, (4, 3))
    wrapper.masks[0].assign(mask)
    layer = wrapper.strip()
    assert layer.kernel.constraint is non_neg
    np.testing.assert_array_equal(_np(layer.kernel), positive * mask)
    optimizer.apply_gradients([(-keras.ops.ones((4, 3)), layer.kernel)])
    np.testing.assert_allclose(_np(layer.kernel), positive * mask + 1.0)
    optimizer.apply_gradients([(push_down, layer.kernel)])
    np.testing.assert_array_equal(_np(layer.kernel), np.zeros((4, 3)))


# --- Argument validation -------------------------------------------------------


def test_wrapping_a_wrapper_raises():
    wrapper = kp.PruneLowMagnitude(layers.Dense(2, name="head"))
    with pytest.raises(ValueError, match="already wrapped by PruneLowMagnitude"):
        kp.PruneLowMagnitude(wrapper)


def test_non_layer_arguments_raise_type_error():
    for bad in (None, "dense", 3, [layers.Dense(2)], keras.constraints.NonNeg()):
        with pytest.raises(TypeError, match="`layer` must be a keras.layers.Layer"):
            kp.PruneLowMagnitude(bad)
    model = keras.Sequential([keras.Input((3,)), layers.Dense(2)], name="tiny")
    with pytest.raises(TypeError, match=r"prune_low_magnitude\(model\).*'tiny'"):
        kp.PruneLowMagnitude(model)


def test_bad_pruning_schedule_raises_type_error():
    for bad in (
        0.5,
        "constant",
        {"target_sparsity": 0.5},
        keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9),
    ):
        with pytest.raises(TypeError, match="`pruning_schedule` must be"):
            kp.PruneLowMagnitude(layers.Dense(2), pruning_schedule=bad)


def test_block_size_validation():
    for bad in ("11", 2, (1,), (1, 1, 1), (1.0, 1), (True, 1), (1, None), None):
        with pytest.raises(TypeError, match="`block_size` must be a pair"):
            kp.PruneLowMagnitude(layers.Dense(2), block_size=bad)
    for bad in ((0, 1), (1, 0), (-1, 2)):
        with pytest.raises(
            ValueError, match=r"`block_size` must be a pair.*Received: block_size="
        ):
            kp.PruneLowMagnitude(layers.Dense(2), block_size=bad)
    assert kp.PruneLowMagnitude(layers.Dense(2), block_size=[1, 1]).block_size == (1, 1)
    assert kp.PruneLowMagnitude(layers.Dense(2), block_size=[16, 1]).block_size == (
        16,
        1,
    )


M_BY_N_MESSAGE = r"`sparsity_m_by_n` must be None or a pair \(m, n\).*1 <= m < n"


@pytest.mark.parametrize("bad", ["2:4", 2, (2,), (2, 4, 8), (2.0, 4), (True, 4)])
def test_sparsity_m_by_n_must_be_a_pair_of_integers(bad):
    with pytest.raises(
        TypeError, match=M_BY_N_MESSAGE + ".*Received: sparsity_m_by_n="
    ):
        kp.PruneLowMagnitude(layers.Dense(2), sparsity_m_by_n=bad)


@pytest.mark.parametrize("bad", [(0, 4), (4, 4), (5, 4), (-1, 2)])
def test_sparsity_m_by_n_needs_one_to_n_minus_one_zeros(bad):
    with pytest.raises(
        ValueError,
        match=M_BY_N_MESSAGE + f".*Received: sparsity_m_by_n={re.escape(str(bad))}",
    ):
        kp.PruneLowMagnitude(layers.Dense(2), sparsity_m_by_n=bad)


def test_sparsity_m_by_n_is_stored_as_a_tuple():
    wrapper = kp.PruneLowMagnitude(layers.Dense(2), sparsity_m_by_n=[1, 3])
    assert wrapper.sparsity_m_by_n == (1, 3)


@pytest.mark.parametrize(
    "make_layer",
    [
        lambda: layers.Embedding(10, 4, name="odd"),
        lambda: layers.LSTM(4, name="odd"),
        lambda: layers.Conv2DTranspose(4, 3, name="odd"),
        lambda: layers.SeparableConv2D(4, 3, name="odd"),
        lambda: layers.MultiHeadAttention(2, 4, name="odd"),
    ],
)
def test_m_by_n_on_a_layer_without_input_channels_names_it(make_layer):
    layer = make_layer()
    with pytest.raises(
        ValueError,
        match=rf"Dense, EinsumDense, Conv1D, Conv2D, Conv3D.*Layer 'odd' of class "
        rf"{type(layer).__name__} is not one of them.*"
        r"Received: sparsity_m_by_n=\(2, 4\)",
    ):
        kp.PruneLowMagnitude(layer, sparsity_m_by_n=(2, 4))


def test_m_by_n_and_block_size_cannot_be_combined():
    with pytest.raises(
        ValueError,
        match=r"cannot be combined.*Received: sparsity_m_by_n=\(2, 4\), "
        r"block_size=\(2, 1\)",
    ):
        kp.PruneLowMagnitude(layers.Dense(2), block_size=(2, 1), sparsity_m_by_n=(2, 4))


@pytest.mark.parametrize(
    ("kwargs", "received"),
    [
        ({"block_size": (2, 1)}, r"block_size=\(2, 1\)"),
        ({"sparsity_m_by_n": (2, 4)}, r"sparsity_m_by_n=\(2, 4\)"),
    ],
)
def test_block_and_m_by_n_masks_need_rank_two_weights(kwargs, received):
    # TFMOT's block masks refuse anything but rank 2; biases have rank 1.
    class BiasPruned(layers.Dense, kp.PrunableLayer):
        def get_prunable_weights(self):
            return [self.kernel, self.bias]

    wrapper = kp.PruneLowMagnitude(BiasPruned(3, name="head"), **kwargs)
    with pytest.raises(
        ValueError,
        match=rf"head/bias' of layer 'head' has shape \(3,\).*rank 2 or more"
        rf".*Received: {received}",
    ):
        wrapper.build((None, 4))


def test_config_round_trip_keeps_block_size_and_m_by_n():
    for kwargs in ({"block_size": (16, 1)}, {"sparsity_m_by_n": (2, 4)}):
        wrapper = kp.PruneLowMagnitude(layers.Dense(3), **kwargs)
        config = _as_json(wrapper.get_config())
        restored = kp.PruneLowMagnitude.from_config(config)
        for name, value in kwargs.items():
            assert getattr(restored, name) == value
            assert isinstance(getattr(restored, name), tuple)
        assert _as_json(restored.get_config()) == config


# --- Block and m-by-n masks -----------------------------------------------------


def _assert_block_structure(mask, block_size):
    """`mask` is constant over every `r x c` block of its last two axes."""
    r, c = block_size
    rows, cols = mask.shape[-2:]
    flat = mask.reshape(-1, rows, cols)
    corners = np.repeat(np.repeat(flat[:, ::r, ::c], r, axis=1), c, axis=2)
    np.testing.assert_array_equal(flat, corners[:, :rows, :cols])


def _assert_m_by_n(values, m, n, axis=-2):
    """Every group of `n` consecutive entries along `axis` has at most `n - m`
    nonzeros, and a full group exactly `n - m` (for a mask)."""
    moved = np.moveaxis(values != 0, axis, -1)
    length = moved.shape[-1]
    full = moved[..., : length - length % n].reshape(*moved.shape[:-1], -1, n)
    assert (full.sum(axis=-1) <= n - m).all()
    return full.sum(axis=-1)


def test_update_masks_prunes_blocks(rng):
    wrapper = kp.PruneLowMagnitude(layers.Dense(4), block_size=(2, 2))
    wrapper.build((None, 6))
    wrapper.layer.kernel.assign(rng.normal(size=(6, 4)).astype("float32"))
    wrapper.update_masks(0.5)
    mask = _np(wrapper.masks[0])
    _assert_block_structure(mask, (2, 2))
    assert mask.sum() == 12  # 3 of 6 blocks
    np.testing.assert_array_equal(_np(wrapper.layer.kernel) != 0, mask)


def test_update_masks_m_by_n_ignores_the_sparsity(rng):
    # Conv3D kernels (rank 5), which TFMOT refuses, group along axis -2.
    wrapper = kp.PruneLowMagnitude(layers.Conv3D(3, 2), sparsity_m_by_n=(2, 4))
    wrapper.build((None, 4, 4, 4, 8))
    wrapper.layer.kernel.assign(rng.normal(size=(2, 2, 2, 8, 3)).astype("float32"))
    for sparsity in (0.0, 0.9):
        wrapper.update_masks(sparsity)
        mask = _np(wrapper.masks[0])
        assert (_assert_m_by_n(mask, 2, 4) == 2).all()
    assert _np(wrapper.thresholds[0]) == np.abs(_np(wrapper.layer.kernel))[mask].min()


def test_einsum_dense_m_by_n_groups_the_summed_axis(rng):
    # "abc,cde->abde": a (c, d, e) kernel summed over c, its axis 0.
    wrapper = kp.PruneLowMagnitude(
        layers.EinsumDense("abc,cde->abde", (None, 2, 3)), sparsity_m_by_n=(1, 2)
    )
    wrapper.build((None, 5, 8))
    wrapper.update_masks(0.5)
    assert (_assert_m_by_n(_np(wrapper.masks[0]), 1, 2, axis=0) == 1).all()


def _fit(model, x, y, steps, **kwargs):
    model.compile(keras.optimizers.Adam(0.01), "mse")
    batch = len(x) // steps
    model.fit(
        x,
        y,
        batch_size=batch,
        shuffle=False,
        verbose=0,
        callbacks=[kp.UpdatePruningStep()],
        **kwargs,
    )


@pytest.mark.parametrize(
    ("block_size", "pooling"), [((16, 1), "avg"), ((4, 2), "max"), ((3, 3), "AVG")]
)
def test_fit_prunes_dense_and_conv_blocks_and_strip_keeps_them(
    rng, block_size, pooling
):
    model = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            layers.Conv2D(8, 3, activation="relu"),
            layers.Flatten(),
            layers.Dense(20, activation="relu"),
            layers.Dense(2),
        ]
    )
    schedule = kp.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=8, frequency=2)
    pruned = kp.prune_low_magnitude(
        model, schedule, block_size=block_size, block_pooling_type=pooling
    )
    x = rng.normal(size=(40, 6, 6, 3)).astype("float32")
    y = rng.normal(size=(40, 2)).astype("float32")
    _fit(pruned, x, y, steps=10)
    masks = [_np(w.masks[0]) for w in kp.pruning_wrappers(pruned)]
    stripped = kp.strip_pruning(pruned)
    r, c = block_size
    kernels = [_np(layer.kernel) for layer in stripped.layers if layer.weights]
    for mask, kernel in zip(masks, kernels, strict=True):
        _assert_block_structure(mask, block_size)
        rows, cols = mask.shape[-2:]
        blocks = (mask.size // (rows * cols)) * -(-rows // r) * -(-cols // c)
        kept = mask.reshape(-1, rows, cols)[:, ::r, ::c].sum()
        assert kept == num_kept(blocks, 0.75)
        np.testing.assert_array_equal(kernel[~mask], 0)
        assert (kernel[mask] != 0).all()


def test_fit_applies_m_by_n_from_begin_step_and_keeps_the_first_mask(rng):
    inputs = keras.Input((6, 6, 8))
    hidden = layers.Conv2D(8, 3, activation="relu")(inputs)
    hidden = layers.EinsumDense("abcd,de->abce", (4, 4, 6))(hidden)
    outputs = layers.Dense(2)(layers.Flatten()(hidden))
    model = keras.Model(inputs, outputs)
    # The schedule's sparsity (0.9) is ignored; updates at steps 3, 5, 7, 9.
    schedule = kp.ConstantSparsity(0.9, begin_step=3, frequency=2)
    pruned = kp.prune_low_magnitude(model, schedule, sparsity_m_by_n=(2, 4))
    wrappers = kp.pruning_wrappers(pruned)
    assert [kp.registry.input_channel_axis(w.layer) for w in wrappers] == [-2] * 3
    x = rng.normal(size=(40, 6, 6, 8)).astype("float32")
    y = rng.normal(size=(40, 2)).astype("float32")
    with pytest.warns(UserWarning, match="at pruning step 2 without any mask update"):
        _fit(pruned, x[:8], y[:8], steps=2)
    assert all(_np(w.masks[0]).all() for w in wrappers)  # step 2 < begin_step
    _fit(pruned, x[8:12], y[8:12], steps=1)
    first = [_np(w.masks[0]) for w in wrappers]
    _fit(pruned, x[12:], y[12:], steps=7)
    assert wrappers[0].pruning_step == 10
    stripped = kp.strip_pruning(pruned)
    kernels = [_np(layer.kernel) for layer in stripped.layers if layer.weights]
    for mask, kept, kernel in zip(
        first, (w.masks[0] for w in wrappers), kernels, strict=True
    ):
        np.testing.assert_array_equal(_np(kept), mask)
        assert (_assert_m_by_n(mask, 2, 4) == 2).all()
        _assert_m_by_n(kernel, 2, 4)
        np.testing.assert_array_equal(kernel[~mask], 0)


def test_block_pooling_type_accepts_both_spellings_only():
    # TFMOT's testPruneWrapperAllowsOnlyValidPoolingType.
    for given, stored in (
        ("avg", "avg"),
        ("max", "max"),
        ("AVG", "avg"),
        ("MAX", "max"),
    ):
        wrapper = kp.PruneLowMagnitude(layers.Dense(10), block_pooling_type=given)
        assert wrapper.block_pooling_type == stored
    for bad in ("MIN", "average", "", None, 1):
        with pytest.raises(ValueError, match="`block_pooling_type` must be one of"):
            kp.PruneLowMagnitude(layers.Dense(10), block_pooling_type=bad)


def test_custom_layer_without_prunable_weights_raises():
    # TFMOT's testCustomLayerNonPrunable.
    class CustomLayer(layers.Layer):
        def build(self, input_shape):
            self.weight = self.add_weight(shape=(input_shape[-1], 4))

        def call(self, inputs):
            return inputs @ self.weight

    layer = CustomLayer(name="custom")
    layer(keras.Input((16,)))
    with pytest.raises(ValueError, match="'custom' of class CustomLayer"):
        kp.PruneLowMagnitude(layer, block_pooling_type="MAX")


# --- Masks of the inputs, and layer state ---------------------------------------


def _embedding_lstm(how):
    if how == "wrapped by hand":
        inputs = keras.Input((None,), dtype="int32")
        embedded = kp.PruneLowMagnitude(layers.Embedding(10, 4, mask_zero=True))(inputs)
        return keras.Model(inputs, layers.LSTM(3)(embedded))
    if how == "sequential":
        model = keras.Sequential(
            [
                keras.Input((None,), dtype="int32"),
                layers.Embedding(10, 4, mask_zero=True),
                layers.LSTM(3),
            ]
        )
    else:
        inputs = keras.Input((None,), dtype="int32")
        outputs = layers.LSTM(3)(layers.Embedding(10, 4, mask_zero=True)(inputs))
        model = keras.Model(inputs, outputs)
    return kp.prune_low_magnitude(model, EVERY_STEP)


@pytest.mark.parametrize("how", ["wrapped by hand", "sequential", "functional"])
def test_wrapped_embedding_propagates_keras_mask_to_lstm(how):
    model = _embedding_lstm(how)
    wrappers = kp.pruning_wrappers(model)
    # prune_low_magnitude(model) wraps the LSTM too: the mask must cross both.
    assert len(wrappers) == (1 if how == "wrapped by hand" else 2)
    embedding = wrappers[0]
    assert isinstance(embedding.layer, layers.Embedding)
    padded = np.array([[1, 2, 3, 0, 0]], "int32")
    np.testing.assert_array_equal(
        _np(embedding.compute_mask(padded)), [[True, True, True, False, False]]
    )
    # Masked time steps are skipped: trailing padding changes nothing.
    short = np.array([[1, 2, 3]], "int32")
    np.testing.assert_allclose(_np(model(padded)), _np(model(short)), rtol=1e-6)
    other = np.array([[1, 2, 3, 4, 5]], "int32")
    assert not np.allclose(_np(model(other)), _np(model(short)))


def test_attention_dropout_masks_differ_between_training_calls(rng):
    query = keras.Input((3, 8))
    attention = layers.MultiHeadAttention(num_heads=2, key_dim=4, dropout=0.5)
    attention(query, query)  # builds it: the wrapper sees the query shape only
    wrapper = kp.PruneLowMagnitude(attention)
    model = keras.Model(query, wrapper(query, query))
    assert len(wrapper.masks) == 4
    x = rng.normal(size=(2, 3, 8)).astype("float32")

    inference = _np(wrapper(x, x, training=False))
    np.testing.assert_allclose(_np(wrapper(x, x)), inference, rtol=1e-6)

    _start_pruning(model)
    seeds = [_np(v).copy() for v in wrapper.layer.non_trainable_variables]
    assert seeds  # the dropout layer's seed generator state
    first = _np(wrapper(x, x, training=True))
    middle = [_np(v).copy() for v in wrapper.layer.non_trainable_variables]
    second = _np(wrapper(x, x, training=True))
    # PyTorch's dropout draws from torch's own generator, not the seed state.
    if keras.backend.backend() != "torch":
        assert any(not np.array_equal(a, b) for a, b in zip(seeds, middle, strict=True))
    assert not np.allclose(first, second)
    assert not np.allclose(first, inference)


@keras.saving.register_keras_serializable(package="test_wrapper")
class _ScaledInTraining(layers.Layer):
    """`x @ kernel`, doubled in training: its `call` takes `training`."""

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], 3))

    def call(self, inputs, training=None):
        outputs = keras.ops.matmul(inputs, self.kernel)
        return outputs * 2.0 if training else outputs

    def get_prunable_weights(self):
        return [self.kernel]


def test_wrapped_layer_receives_the_training_flag_of_its_context(rng):
    wrapper = kp.PruneLowMagnitude(_ScaledInTraining())
    inputs = keras.Input((4,))
    model = keras.Model(inputs, wrapper(inputs))
    _start_pruning(model)
    mask = _random_mask(rng, (4, 3))
    wrapper.masks[0].assign(mask)
    x = rng.normal(size=(5, 4)).astype("float32")
    inference = x @ (_np(wrapper.layer.kernel) * mask)
    for training, scale in ((False, 1.0), (True, 2.0)):
        # Directly, and from the model's call (the wrapper's call context).
        for outputs in (wrapper(x, training=training), model(x, training=training)):
            np.testing.assert_allclose(_np(outputs), scale * inference, rtol=1e-5)


def test_activity_regularizer_of_wrapped_layer_sees_masked_outputs(rng):
    wrapper = _dense_wrapper(rng)
    wrapper.layer.activity_regularizer = keras.regularizers.L2(0.1)
    kernel, bias = _np(wrapper.layer.kernel), _np(wrapper.layer.bias)
    mask = _random_mask(rng, kernel.shape)
    wrapper.masks[0].assign(mask)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, wrapper(inputs))
    _start_pruning(model)
    x = rng.normal(size=(5, 4)).astype("float32")

    outputs = _np(model(x, training=True))
    expected = _np(_plain_dense(kernel * mask, bias)(x))
    np.testing.assert_allclose(outputs, expected, rtol=1e-6)
    [loss] = model.losses
    # L2 of the outputs, divided by the batch size as Layer.__call__ does.
    np.testing.assert_allclose(_np(loss), 0.1 * np.sum(expected**2) / 5, rtol=1e-5)


def test_update_masks_takes_a_numpy_sparsity():
    layer = kp.PruneLowMagnitude(keras.layers.Dense(4))
    layer.build((None, 6))
    layer.update_masks(np.float32(0.5))
    assert int(np.sum(keras.ops.convert_to_numpy(layer.masks[0]))) == 12


def test_a_stateful_rnn_keeps_its_state_across_calls():
    def model():
        keras.utils.set_random_seed(1)
        return keras.Sequential(
            [
                keras.Input((5, 3), batch_size=4),
                keras.layers.LSTM(6, stateful=True),
                keras.layers.Dense(2),
            ]
        )

    dense = model()
    pruned = kp.prune_low_magnitude(model(), kp.ConstantSparsity(0.5, 0))
    x = np.random.default_rng(0).random((4, 5, 3)).astype("float32")
    for _ in range(3):  # unpruned masks: the same outputs, call after call
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(pruned(x)),
            keras.ops.convert_to_numpy(dense(x)),
            atol=1e-5,
        )


def test_lora_and_quantized_layers_raise_naming_them():
    lora = keras.layers.Dense(4, name="lora")
    lora.build((None, 6))
    lora.enable_lora(2)
    with pytest.raises(ValueError, match=r"'lora' has LoRA enabled"):
        kp.PruneLowMagnitude(lora)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="q")])
    model.quantize("int8")
    with pytest.raises(ValueError, match=r"'q' is quantized \(int8\)"):
        kp.prune_low_magnitude(model)
