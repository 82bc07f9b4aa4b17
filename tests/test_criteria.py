"""`keras_pruning.criteria`: the scores, and the gradient accumulators of
`criterion="taylor"` and user functions in training."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_pruning as kp
from keras_pruning import criteria
from keras_pruning._global_masks import GlobalMasks
from keras_pruning.masks import magnitude_mask
from keras_pruning.structured._gradients import loss_gradients
from tests.conftest import dense_model, run_in_fresh_process

pytestmark = pytest.mark.backends

# Accumulating without a mask update warns that nothing was pruned.
NO_UPDATE = pytest.mark.filterwarnings("ignore:Training ended at pruning step")
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _data(rng, n=48):
    return rng.normal(size=(n, 8)).astype("float32"), rng.integers(0, 3, n)


def _taylor_model(criterion="taylor", frequency=1000, sparsity=0.5):
    model = kp.prune_low_magnitude(
        dense_model(),
        kp.ConstantSparsity(sparsity, 0, frequency=frequency),
        criterion=criterion,
    )
    model.compile(keras.optimizers.SGD(0.0), LOSS)
    return model


def test_magnitude_and_taylor_follow_their_formulas():
    w = np.array([[1.0, -2.0], [0.5, 3.0]], "float32")
    g = np.array([[-4.0, 0.5], [2.0, 0.0]], "float32")
    np.testing.assert_allclose(ops.convert_to_numpy(criteria.magnitude(w)), np.abs(w))
    np.testing.assert_allclose(
        ops.convert_to_numpy(criteria.taylor(w, g)), [[4.0, 1.0], [1.0, 0.0]]
    )


@pytest.mark.parametrize("value", ["gradient", "Taylor", 3, None, keras.layers.Dense])
def test_unknown_criterion_raises_naming_it(value):
    with pytest.raises(ValueError, match=r"`criterion` must be one of"):
        kp.PruneLowMagnitude(keras.layers.Dense(2), criterion=value)


def test_magnitude_adds_no_gradient_accumulator():
    model = kp.prune_low_magnitude(dense_model())
    assert all(not w._gradients for w in kp.pruning_wrappers(model))
    assert len(model.trainable_weights) == 4


@NO_UPDATE
def test_taylor_accumulates_the_sum_of_the_step_gradients(rng):
    x, y = _data(rng)
    model = _taylor_model()
    callbacks = [kp.UpdatePruningStep()]
    model.fit(x, y, batch_size=16, shuffle=False, verbose=0, callbacks=callbacks)
    kernels = [w.prunable_weights[0] for w in kp.pruning_wrappers(model)]
    expected = loss_gradients(model, kernels, (x, y), LOSS, batch_size=16)
    for wrapper, kernel in zip(kp.pruning_wrappers(model), kernels, strict=True):
        np.testing.assert_allclose(
            ops.convert_to_numpy(wrapper._gradients[0]),
            expected[id(kernel)],
            rtol=1e-4,
            atol=1e-6,
        )


@NO_UPDATE
def test_taylor_masks_keep_the_largest_w_times_g_and_restart_the_sum(rng):
    x, y = _data(rng)
    model = _taylor_model()
    model.fit(x, y, batch_size=16, verbose=0, callbacks=[kp.UpdatePruningStep()])
    wrapper = kp.pruning_wrappers(model)[0]
    w = ops.convert_to_numpy(wrapper.prunable_weights[0])
    g = ops.convert_to_numpy(wrapper._gradients[0])
    wrapper.update_masks(0.5)
    expected, _ = magnitude_mask(np.abs(w * g), 0.5)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(wrapper.masks[0]), ops.convert_to_numpy(expected)
    )
    # Not the magnitude mask: the criterion made a difference.
    assert not np.array_equal(
        ops.convert_to_numpy(wrapper.masks[0]),
        ops.convert_to_numpy(magnitude_mask(w, 0.5)[0]),
    )
    assert not np.any(ops.convert_to_numpy(wrapper._gradients[0]))


def test_taylor_uses_magnitudes_before_any_gradient_is_accumulated():
    layer = kp.PruneLowMagnitude(keras.layers.Dense(4), criterion="taylor")
    layer.build((None, 6))
    layer.update_masks(0.5)
    kernel = ops.convert_to_numpy(layer.layer.kernel)
    nonzero = kernel != 0
    expected, _ = magnitude_mask(np.where(nonzero, kernel, 0), 0.5)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(layer.masks[0]), ops.convert_to_numpy(expected)
    )


@NO_UPDATE
def test_a_user_function_ranks_weights(rng):
    x, y = _data(rng)

    def gradient_size(weights, gradients):
        return ops.abs(gradients)

    model = _taylor_model(criterion=gradient_size)
    model.fit(x, y, batch_size=16, verbose=0, callbacks=[kp.UpdatePruningStep()])
    wrapper = kp.pruning_wrappers(model)[0]
    g = ops.convert_to_numpy(wrapper._gradients[0])
    wrapper.update_masks(0.75)
    expected, _ = magnitude_mask(g, 0.75)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(wrapper.masks[0]), ops.convert_to_numpy(expected)
    )


def test_a_user_function_cannot_revive_pruned_weights(rng):
    layer = kp.PruneLowMagnitude(
        keras.layers.Dense(4), criterion=lambda w, g: w * 0 + 1
    )
    layer.build((None, 6))
    layer.masks[0].assign(np.arange(24).reshape(6, 4) % 2 == 0)
    layer.update_masks(0.5)  # constant scores: 12 ties, the kept ones win
    np.testing.assert_array_equal(
        ops.convert_to_numpy(layer.masks[0]), np.arange(24).reshape(6, 4) % 2 == 0
    )


def _ties_at_zero(block_size=(1, 1), global_pruning=False):
    """A taylor-pruned Dense(4) on 6 inputs: rows 0-1 pruned, rows 2-3 scoring
    1, rows 4-5 kept but scoring 0 (their inputs were always 0, so their
    gradients are 0): at 50% sparsity, zero-score weights tie with pruned ones,
    which come first in index order."""
    layer = kp.PruneLowMagnitude(
        keras.layers.Dense(4),
        criterion="taylor",
        block_size=block_size,
        global_pruning=global_pruning,
    )
    layer.build((None, 6))
    rows = np.arange(6)[:, None] * np.ones((1, 4))
    layer.layer.kernel.assign(np.where(rows < 2, 0.0, 1.0).astype("float32"))
    layer.masks[0].assign(rows >= 2)
    layer._gradients[0].assign(np.where(rows < 4, 1.0, 0.0).astype("float32"))
    return layer


@pytest.mark.parametrize(
    "block_size, global_pruning",
    [((1, 1), False), ((2, 1), False), ((1, 1), True), ((2, 1), True)],
)
def test_pruned_weights_stay_pruned_when_kept_ones_score_zero(
    block_size, global_pruning
):
    layer = _ties_at_zero(block_size, global_pruning)
    if global_pruning:
        GlobalMasks([layer]).update_masks(0.5)
    else:
        layer.update_masks(0.5)
    mask = ops.convert_to_numpy(layer.masks[0])
    assert mask.sum() == 12
    assert not mask[:2].any()
    assert mask[2:4].all()
    # So the kept weights are exactly the nonzero ones, and the threshold is
    # the smallest kept score.
    kernel = ops.convert_to_numpy(layer.layer.kernel)
    np.testing.assert_array_equal(kernel != 0, mask)
    assert float(ops.convert_to_numpy(layer.thresholds[0])) == 0.0


def test_a_user_function_of_the_wrong_shape_raises():
    layer = kp.PruneLowMagnitude(keras.layers.Dense(4), criterion=lambda w, g: w[0])
    layer.build((None, 6))
    with pytest.raises(ValueError, match=r"one score per weight.*shape \(6, 4\)"):
        layer.update_masks(0.5)


def test_non_finite_scores_raise_at_the_update():
    layer = kp.PruneLowMagnitude(keras.layers.Dense(4), criterion="taylor")
    layer.build((None, 6))
    layer._gradients[0].assign(np.full((6, 4), np.inf, "float32"))
    with pytest.raises(ValueError, match=r"pruning scores .* NaN or infinite"):
        layer.update_masks(0.5)


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.0)),
        lambda: keras.optimizers.SGD(0.0, gradient_accumulation_steps=2),
    ],
    ids=["loss_scale", "gradient_accumulation"],
)
def test_optimizers_that_would_corrupt_the_sums_raise(rng, optimizer):
    x, y = _data(rng)
    model = _taylor_model()
    model.compile(optimizer(), LOSS)
    with pytest.raises(ValueError, match=r"sum gradients for their criterion"):
        model.fit(x, y, verbose=0, callbacks=[kp.UpdatePruningStep()])


def test_the_optimizer_check_does_not_need_a_built_model(rng):
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = kp.PruneLowMagnitude(keras.layers.Dense(3), criterion="taylor")

        def call(self, x):
            return self.dense(x)

    x, y = _data(rng)
    model = Subclassed()
    model.compile(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD()), LOSS)
    with pytest.raises(ValueError, match=r"sum gradients for their criterion"):
        model.fit(x, y, verbose=0, callbacks=[kp.UpdatePruningStep()])


def test_a_shared_layer_cannot_accumulate_gradients(rng):
    shared = kp.PruneLowMagnitude(keras.layers.Dense(8), criterion="taylor")
    inputs = keras.Input((8,))
    model = keras.Model(inputs, shared(shared(inputs)))
    model.compile("sgd", "mse")
    x = rng.normal(size=(8, 8)).astype("float32")
    with pytest.raises(ValueError, match=r"called more than once per step"):
        model.fit(x, x, verbose=0, callbacks=[kp.UpdatePruningStep()])


def test_channel_granularity_takes_no_criterion():
    with pytest.raises(ValueError, match=r"takes no `criterion`"):
        kp.prune_low_magnitude(dense_model(), granularity="channel", criterion="taylor")


def test_taylor_pruning_trains_to_the_target_sparsity(rng):
    x, y = _data(rng, 96)
    model = _taylor_model(frequency=2, sparsity=0.75)
    model.optimizer = keras.optimizers.Adam(1e-2)
    model.compile(model.optimizer, LOSS)
    model.fit(
        x, y, batch_size=16, epochs=2, verbose=0, callbacks=[kp.UpdatePruningStep()]
    )
    for wrapper in kp.pruning_wrappers(model):
        mask = ops.convert_to_numpy(wrapper.masks[0])
        assert mask.sum() == round(mask.size * 0.25)
        assert np.all(wrapper.masked_weights()[0][~mask] == 0)


def test_taylor_and_user_criteria_survive_save_and_load(tmp_path, rng):
    x, y = _data(rng)
    model = _taylor_model(frequency=1)
    model.fit(x, y, batch_size=16, verbose=0, callbacks=[kp.UpdatePruningStep()])
    path = tmp_path / "taylor.keras"
    model.save(path)
    result = run_in_fresh_process(
        f"""
        import json, keras, numpy as np, keras_pruning as kp
        model = keras.models.load_model({str(path)!r})
        wrappers = kp.pruning_wrappers(model)
        print(json.dumps({{
            "criteria": [w.criterion for w in wrappers],
            "accumulators": [len(w._gradients) for w in wrappers],
            "masks": [np.asarray(w.masks[0]).tolist() for w in wrappers],
        }}))
        """
    )
    wrappers = kp.pruning_wrappers(model)
    assert result["criteria"] == ["taylor", "taylor"]
    assert result["accumulators"] == [1, 1]
    for mask, wrapper in zip(result["masks"], wrappers, strict=True):
        np.testing.assert_array_equal(mask, ops.convert_to_numpy(wrapper.masks[0]))


def test_a_registered_user_criterion_round_trips_through_the_config():
    @keras.saving.register_keras_serializable(package="tests")
    def inverse_gradient(weights, gradients):
        return 1.0 / (1.0 + ops.abs(gradients))

    layer = kp.PruneLowMagnitude(keras.layers.Dense(4), criterion=inverse_gradient)
    clone = kp.PruneLowMagnitude.from_config(layer.get_config())
    assert clone.criterion is inverse_gradient


@pytest.mark.tensorflow
def test_taylor_sums_agree_on_every_replica_of_a_mirrored_strategy():
    # Two logical CPUs must be set before TensorFlow starts: a fresh process.
    result = run_in_fresh_process(
        """
        import json
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras, numpy as np, keras_pruning as kp
        from keras_pruning.structured._gradients import loss_gradients
        keras.utils.set_random_seed(0)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(64, 8)).astype("float32")
        y = rng.integers(0, 3, 64)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            model = kp.prune_low_magnitude(
                keras.Sequential([keras.Input((8,)), keras.layers.Dense(16),
                                  keras.layers.Dense(3)]),
                kp.ConstantSparsity(0.5, 0, frequency=1000), criterion="taylor")
            model.compile(keras.optimizers.SGD(0.0), loss)
        model.fit(x, y, batch_size=16, shuffle=False, verbose=0,
                  callbacks=[kp.UpdatePruningStep()])
        wrappers = kp.pruning_wrappers(model)
        kernels = [w.prunable_weights[0] for w in wrappers]
        expected = loss_gradients(model, kernels, (x, y), loss, batch_size=16)
        errors = []
        for wrapper, kernel in zip(wrappers, kernels):
            for local in strategy.experimental_local_results(
                    wrapper._gradients[0].value):
                errors.append(float(np.abs(
                    2 * np.asarray(local) - expected[id(kernel)]).max()))
        print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                          "errors": errors}))
        """
    )
    # Each replica holds the sum over the global batch divided by the
    # number of replicas: the ranking is that of the sum.
    assert result["replicas"] == 2
    assert len(result["errors"]) == 4
    assert max(result["errors"]) < 1e-5
