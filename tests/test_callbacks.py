"""UpdatePruningStep and PruningSummaries."""

import glob
import warnings

import keras
import numpy as np
import pytest
from conftest import dense_model

import keras_pruning as kp
from keras_pruning._trainer import sync_trainer_state

pytestmark = pytest.mark.backends


def _data(n=16, dim=8, classes=3):
    rng = np.random.default_rng(0)
    return rng.random((n, dim)).astype("float32"), rng.integers(0, classes, n)


def _compiled(schedule, lr=0.01):
    model = kp.prune_low_magnitude(dense_model(), schedule)
    model.compile(keras.optimizers.SGD(lr), "sparse_categorical_crossentropy")
    return model


def test_first_batch_is_step_one_and_steps_carry_over_fits():
    x, y = _data()
    model = _compiled(kp.ConstantSparsity(0.5, begin_step=1, frequency=1000))
    callback = kp.UpdatePruningStep()
    model.fit(x[:4], y[:4], batch_size=4, verbose=0, callbacks=[callback])
    wrappers = kp.pruning_wrappers(model)
    assert [w.pruning_step for w in wrappers] == [1, 1]
    # Pruned at step 1 (begin_step=1), not before.
    assert all(
        r.sparsity == pytest.approx(0.5, abs=0.02) for r in kp.sparsity_report(model)
    )
    model.fit(
        x, y, batch_size=4, epochs=2, verbose=0, callbacks=[kp.UpdatePruningStep()]
    )
    assert [w.pruning_step for w in wrappers] == [9, 9]


def test_batch_that_never_trains_takes_no_step():
    # On data of unknown length, Keras begins one batch more than it trains
    # (on JAX and TensorFlow) when the data runs out.
    x, y = _data()
    asked = []

    class Recording(kp.ConstantSparsity):
        def __call__(self, step):
            asked.append(step)
            return super().__call__(step)

    # Masks first change at step 5: the batch of the first fit that never
    # trains, on JAX and TensorFlow.
    model = _compiled(Recording(0.5, begin_step=5, frequency=100))

    def batches():
        for start in range(0, 16, 4):
            yield x[start : start + 4], y[start : start + 4]

    callback = kp.UpdatePruningStep()
    model.fit(batches(), verbose=0, callbacks=[callback])
    model.fit(batches(), verbose=0, callbacks=[callback])
    assert [w.pruning_step for w in kp.pruning_wrappers(model)] == [8, 8]
    assert sorted(set(asked))[:8] == list(range(1, 9))
    for row in kp.sparsity_report(model):
        assert row.sparsity == pytest.approx(0.5, abs=0.02)


def test_a_loop_that_reports_no_batch_ends_takes_every_step():
    # A custom loop through a CallbackList with params, one batch per epoch,
    # calling on_train_batch_begin and on_epoch_end only.
    x, y = _data()
    model = _compiled(kp.ConstantSparsity(0.5, begin_step=3, frequency=100))
    callbacks = keras.callbacks.CallbackList(
        [kp.UpdatePruningStep()], model=model, epochs=4, steps=1
    )
    callbacks.on_train_begin()
    for epoch in range(4):
        callbacks.on_epoch_begin(epoch)
        callbacks.on_train_batch_begin(0)
        model.train_on_batch(x, y)
        callbacks.on_epoch_end(epoch)
    callbacks.on_train_end()
    assert [w.pruning_step for w in kp.pruning_wrappers(model)] == [4, 4]
    for row in kp.sparsity_report(model):
        assert row.sparsity == pytest.approx(0.5, abs=0.02)


def test_masks_update_only_on_schedule_steps():
    x, y = _data(n=40)
    model = _compiled(
        kp.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=6, frequency=3)
    )
    wrapper = kp.pruning_wrappers(model)[0]
    seen = {}

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            sync_trainer_state(self.model)  # JAX's fit holds the variables
            mask = keras.ops.convert_to_numpy(wrapper.masks[0])
            seen[wrapper.pruning_step] = 1.0 - mask.mean()

    model.fit(
        x, y, batch_size=4, verbose=0, callbacks=[kp.UpdatePruningStep(), Record()]
    )
    schedule = wrapper.pruning_schedule
    assert seen[1] == seen[2] == 0.0
    assert seen[3] == pytest.approx(schedule.sparsity(3), abs=0.01)
    assert seen[4] == seen[5] == seen[3]
    assert seen[6] == pytest.approx(0.75, abs=0.01)
    assert seen[10] == seen[6]


def test_model_built_by_first_step_is_pruned_right_after_it():
    x, y = _data(n=4)
    unbuilt = keras.Sequential([keras.layers.Dense(8), keras.layers.Dense(3)])
    model = kp.prune_low_magnitude(unbuilt, kp.ConstantSparsity(0.5, 0, frequency=1))
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=4, verbose=0, callbacks=[kp.UpdatePruningStep()])
    assert [r.sparsity for r in kp.sparsity_report(model)] == [0.5, 0.5]


def test_training_without_callback_names_update_pruning_step():
    x, y = _data()
    model = _compiled(kp.ConstantSparsity(0.5, 0))
    with pytest.raises(ValueError, match="UpdatePruningStep"):
        model.fit(x, y, verbose=0)


@pytest.mark.tensorflow  # PyTorch's trainer refuses steps_per_execution > 1
@pytest.mark.jax
def test_several_steps_per_execution_raise_naming_the_setting():
    x, y = _data()
    model = kp.prune_low_magnitude(dense_model(), kp.ConstantSparsity(0.5, 0))
    model.compile("sgd", "sparse_categorical_crossentropy", steps_per_execution=4)
    with pytest.raises(ValueError, match=r"steps_per_execution=1.*Received: .*=4"):
        model.fit(x, y, verbose=0, callbacks=[kp.UpdatePruningStep()])


def test_inference_needs_no_callback_and_changes_nothing():
    x, _ = _data()
    model = _compiled(kp.ConstantSparsity(0.5, 0))
    before = [w.copy() for w in model.get_weights()]
    model.predict(x, verbose=0)
    model(x, training=False)
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    assert kp.pruning_wrappers(model)[0].pruning_step == -1


def test_manual_loop_with_train_on_batch():
    x, y = _data(n=24)
    model = _compiled(kp.ConstantSparsity(0.75, 0, frequency=2))
    callback = kp.UpdatePruningStep()
    callback.set_model(model)
    callback.on_train_begin()
    for start in range(0, 24, 4):
        callback.on_train_batch_begin(batch=-1)
        model.train_on_batch(x[start : start + 4], y[start : start + 4])
    callback.on_epoch_end(batch=-1)  # TFMOT's custom-loop idiom
    callback.on_train_end()
    assert kp.pruning_wrappers(model)[0].pruning_step == 6
    for row in kp.sparsity_report(model):
        assert row.sparsity == pytest.approx(0.75, abs=0.02)


def test_callback_without_set_model_or_wrappers_is_a_clear_error():
    with pytest.raises(ValueError, match="set_model"):
        kp.UpdatePruningStep().on_train_begin()
    x, y = _data()
    plain = dense_model()
    plain.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="no PruneLowMagnitude layers"):
        plain.fit(x, y, verbose=0, callbacks=[kp.UpdatePruningStep()])


def test_warns_when_training_ends_before_first_mask_update():
    x, y = _data()
    model = _compiled(kp.ConstantSparsity(0.5, 0))  # first update at step 100
    with pytest.warns(UserWarning, match="without any mask update.*frequency"):
        model.fit(x, y, batch_size=4, verbose=0, callbacks=[kp.UpdatePruningStep()])


def test_no_warning_once_masks_were_updated():
    x, y = _data()
    model = _compiled(kp.ConstantSparsity(0.5, 0, frequency=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model.fit(x, y, batch_size=4, verbose=0, callbacks=[kp.UpdatePruningStep()])


class _HoldingProbe(keras.callbacks.Callback):
    """Records, at every batch, whether the wrappers hold pruned weights at 0."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def on_train_batch_end(self, batch, logs=None):
        self.seen.update(
            w._pruned_held_at_zero for w in kp.pruning_wrappers(self.model)
        )


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.Adam(0.05),
        lambda: keras.optimizers.SGD(0.1, momentum=0.9),
        lambda: keras.optimizers.RMSprop(0.01, momentum=0.5),
        lambda: keras.optimizers.Adagrad(0.1),
    ],
)
def test_holding_pruned_weights_at_zero_trains_exactly_as_masking_them(optimizer):
    x, y = _data(n=48)
    trained = {}
    for hold in (True, False):
        keras.utils.set_random_seed(0)
        schedule = kp.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=12, frequency=3)
        model = kp.prune_low_magnitude(dense_model(), schedule)
        model.compile(optimizer(), "sparse_categorical_crossentropy")
        probe = _HoldingProbe()
        callback = kp.UpdatePruningStep(hold_pruned_weights_at_zero=hold)
        model.fit(
            x,
            y,
            batch_size=8,
            epochs=3,
            shuffle=False,
            verbose=0,
            callbacks=[callback, probe],
        )
        assert probe.seen == {hold}
        trained[hold] = [keras.ops.convert_to_numpy(v) for v in model.weights]
    assert kp.sparsity_report(model)[0].sparsity == pytest.approx(0.8, abs=0.02)
    for held, masked in zip(trained[True], trained[False], strict=True):
        np.testing.assert_array_equal(held, masked)


class _WriteAPrunedWeight(keras.callbacks.Callback):
    """Writes 1 into the first pruned position of the first kernel at batch 3."""

    def on_train_batch_begin(self, batch, logs=None):
        if batch != 3:
            return
        sync_trainer_state(self.model)
        wrapper = kp.pruning_wrappers(self.model)[0]
        kernel = keras.ops.convert_to_numpy(wrapper.layer.kernel)
        pruned = ~keras.ops.convert_to_numpy(wrapper.masks[0])
        kernel[tuple(np.argwhere(pruned)[0])] = 1.0
        wrapper.layer.kernel.assign(kernel)


def test_a_pruned_weight_written_during_fit_is_a_clear_error():
    x, y = _data(n=48)
    model = _compiled(kp.ConstantSparsity(0.5, 0, frequency=4))
    with pytest.raises(ValueError, match="are not 0 everywhere their masks prune"):
        model.fit(
            x,
            y,
            batch_size=8,
            verbose=0,
            callbacks=[
                kp.UpdatePruningStep(hold_pruned_weights_at_zero=True),
                _WriteAPrunedWeight(),
            ],
        )
    # Masking the weights in every step (the default) allows it.
    model = _compiled(kp.ConstantSparsity(0.5, 0, frequency=4))
    callback = kp.UpdatePruningStep()
    model.fit(
        x, y, batch_size=8, verbose=0, callbacks=[callback, _WriteAPrunedWeight()]
    )


def test_turning_holding_off_traces_the_training_step_again():
    # Trained by two fits, the second with a callback that writes pruned
    # weights: the same whether the first fit held them at 0 or not, so the
    # second fit's step masks the weights, whatever the first one traced.
    x, y = _data(n=48)
    trained = []
    for hold_first in (True, False):
        keras.utils.set_random_seed(0)
        model = _compiled(kp.ConstantSparsity(0.5, 0, frequency=2))
        first = kp.UpdatePruningStep(hold_pruned_weights_at_zero=hold_first)
        model.fit(x, y, batch_size=8, shuffle=False, verbose=0, callbacks=[first])
        second = kp.UpdatePruningStep(hold_pruned_weights_at_zero=False)
        model.fit(
            x,
            y,
            batch_size=8,
            shuffle=False,
            verbose=0,
            callbacks=[second, _WriteAPrunedWeight()],
        )
        trained.append(kp.pruning_wrappers(model)[0].masked_weights()[0])
    np.testing.assert_array_equal(trained[0], trained[1])


def test_held_weights_survive_masks_changed_between_fits():
    # Adam's momentum builds up, then masks change outside fit(): the next
    # fit starts with the newly pruned weights and their first moments at 0.
    x, y = _data(n=48)
    model = kp.prune_low_magnitude(dense_model(), kp.ConstantSparsity(0.5, 0))
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    callback = kp.UpdatePruningStep(hold_pruned_weights_at_zero=True)
    model.fit(x, y, batch_size=8, verbose=0, callbacks=[callback])
    for wrapper in kp.pruning_wrappers(model):
        wrapper.update_masks(0.8)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback])
    for wrapper in kp.pruning_wrappers(model):
        kernel = keras.ops.convert_to_numpy(wrapper.layer.kernel)
        pruned = ~keras.ops.convert_to_numpy(wrapper.masks[0])
        assert pruned.mean() >= 0.75 and np.all(kernel[pruned] == 0)


def _sharing_a_path():
    # Two functional sub-models with a layer named "fc" each: both kernels'
    # paths are "fc/kernel".
    def block(name):
        inputs = keras.Input((8,))
        return keras.Model(inputs, keras.layers.Dense(8, name="fc")(inputs), name=name)

    inputs = keras.Input((8,))
    added = keras.layers.Add()([block("a")(inputs), block("b")(inputs)])
    return keras.Model(inputs, keras.layers.Dense(3)(added))


@pytest.mark.parametrize(
    "build",
    [
        lambda: keras.Sequential(
            [
                keras.Input((8,)),
                keras.layers.Dense(
                    16, kernel_regularizer=keras.regularizers.OrthogonalRegularizer()
                ),
                keras.layers.Dense(3),
            ]
        ),
        lambda: keras.Sequential(
            [
                keras.Input((8,)),
                # JAX's gradient of |w| at 0 is 1.
                keras.layers.Dense(16, kernel_regularizer=keras.regularizers.L1(0.01)),
                keras.layers.Dense(3),
            ]
        ),
        lambda: keras.Sequential(
            [
                keras.Input((8,)),
                keras.layers.Dense(16, kernel_constraint=keras.constraints.MaxNorm(1)),
                keras.layers.Dense(3),
            ]
        ),
        _sharing_a_path,
    ],
)
def test_weights_that_more_than_gradients_move_are_not_held(build):
    # A regularizer with a gradient at 0, a constraint, or slots that the
    # moment clearing cannot tell apart: the step masks the weights instead.
    x, y = _data(n=48)
    schedule = kp.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=6, frequency=2)
    model = kp.prune_low_magnitude(build(), schedule)
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    probe = _HoldingProbe()
    callback = kp.UpdatePruningStep(hold_pruned_weights_at_zero=True)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback, probe])
    assert probe.seen == {False}


def test_pruned_weights_written_between_fits_are_zeroed_at_the_first_batch():
    x, y = _data(n=48)
    model = _compiled(kp.ConstantSparsity(0.5, 0, frequency=6))
    callback = kp.UpdatePruningStep(hold_pruned_weights_at_zero=True)
    model.fit(x, y, batch_size=8, verbose=0, callbacks=[callback])  # steps 1-6
    wrapper = kp.pruning_wrappers(model)[0]
    pruned = ~keras.ops.convert_to_numpy(wrapper.masks[0])
    kernel = keras.ops.convert_to_numpy(wrapper.layer.kernel)
    kernel[pruned] = 5.0
    wrapper.layer.kernel.assign(kernel)
    # Outside fit(), a training call masks the weights.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x, training=True)),
        keras.ops.convert_to_numpy(model(x, training=False)),
    )
    # Steps 7-11 update no mask: the first batch zeroes them.
    model.fit(x[:40], y[:40], batch_size=8, verbose=0, callbacks=[callback])
    assert wrapper.pruning_step == 11
    kernel = keras.ops.convert_to_numpy(wrapper.layer.kernel)
    assert np.all(kernel[~keras.ops.convert_to_numpy(wrapper.masks[0])] == 0)
    assert not np.any(kernel == 5.0)


def _read_scalars(log_dir):
    import tensorflow as tf

    scalars = {}
    for path in sorted(glob.glob(f"{log_dir}/events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append(
                    (event.step, float(tf.make_ndarray(value.tensor)))
                )
    return scalars


def test_pruning_summaries_logs_unique_tags_and_final_state(tmp_path):
    x, y = _data(n=24)
    model = kp.prune_low_magnitude(
        keras.Sequential(
            [keras.Input((5, 4)), keras.layers.LSTM(4), keras.layers.Dense(3)]
        ),
        kp.PolynomialDecay(0.0, 0.5, 0, 6, frequency=2),
    )
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(
        np.random.default_rng(0).random((24, 5, 4)).astype("float32"),
        y,
        batch_size=4,
        epochs=2,
        verbose=0,
        callbacks=[kp.UpdatePruningStep(), kp.PruningSummaries(tmp_path)],
    )
    scalars = _read_scalars(tmp_path)
    sparsity_tags = sorted(tag for tag in scalars if tag.endswith("/sparsity"))
    # LSTM kernel and recurrent kernel get distinct tags, plus the Dense kernel.
    assert len(sparsity_tags) == 3
    assert len({tag.rsplit("/", 2)[-2] for tag in sparsity_tags}) == 3
    for tag in sparsity_tags:
        steps, values = zip(*scalars[tag], strict=True)
        assert steps[-1] == 12  # the final state, logged at train end
        assert values[-1] == pytest.approx(0.5, abs=0.02)
        final_threshold = scalars[tag.replace("/sparsity", "/threshold")][-1][1]
        assert final_threshold > 0  # the smallest kept magnitude


@pytest.mark.parametrize("update_freq", ["batch", 0, -1, True, 1.5])
def test_pruning_summaries_rejects_bad_update_freq(tmp_path, update_freq):
    with pytest.raises(ValueError, match="update_freq.*Received"):
        kp.PruningSummaries(tmp_path, update_freq=update_freq)


@pytest.mark.parametrize("log_dir", ["", None, 3])
def test_pruning_summaries_rejects_bad_log_dir(log_dir):
    with pytest.raises(TypeError, match="log_dir.*Received"):
        kp.PruningSummaries(log_dir)


def test_pruning_summaries_every_n_batches(tmp_path):
    x, y = _data(n=24)
    model = _compiled(kp.ConstantSparsity(0.5, 0, frequency=1))
    model.fit(
        x,
        y,
        batch_size=4,
        verbose=0,
        callbacks=[
            kp.UpdatePruningStep(),
            kp.PruningSummaries(tmp_path, update_freq=2),
        ],
    )
    scalars = _read_scalars(tmp_path)
    tag = next(t for t in scalars if t.endswith("/sparsity"))
    assert [step for step, _ in scalars[tag]] == [2, 4, 6, 6]
    # Read during training (on JAX, from the trainer's state).
    assert [value for _, value in scalars[tag]] == pytest.approx([0.5] * 4, abs=0.02)


def test_callbacks_keep_keras_async_dispatch(tmp_path):
    # An on_train_batch_end override makes Keras fetch the logs after every
    # step, unless the callback is async-safe: UpdatePruningStep's only
    # counts; PruningSummaries adds one only when asked to log per batch.
    def dispatches_async(callback):
        return keras.callbacks.CallbackList([callback])._async_train

    assert dispatches_async(kp.UpdatePruningStep()) == dispatches_async(
        keras.callbacks.Callback()
    )
    default = keras.callbacks.Callback.on_train_batch_end
    per_epoch = kp.PruningSummaries(tmp_path)
    assert per_epoch.on_train_batch_end.__func__ is default
    per_batch = kp.PruningSummaries(tmp_path, update_freq=5)
    assert per_batch.on_train_batch_end.__func__ is not default


def _two_layer_update(model, step):
    """Runs the callback's batch hook until `step`, as fit() would."""
    callback = kp.UpdatePruningStep()
    callback.set_model(model)
    callback.on_train_begin()
    for batch in range(step):
        callback.on_train_batch_begin(batch)
    return callback


def test_layers_due_together_get_the_masks_each_would_get_alone():
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            kp.PruneLowMagnitude(
                keras.layers.Dense(16), kp.ConstantSparsity(0.5, 0, frequency=2)
            ),
            kp.PruneLowMagnitude(
                keras.layers.Dense(3), kp.ConstantSparsity(0.75, 0, frequency=2)
            ),
        ]
    )
    wrappers = kp.pruning_wrappers(model)
    weights = [keras.ops.convert_to_numpy(v).copy() for v in model.weights]

    _two_layer_update(model, 2)  # both are due at step 2
    together = [keras.ops.convert_to_numpy(v) for v in model.weights]
    for variable, value in zip(model.weights, weights, strict=True):
        variable.assign(value)
    for wrapper, sparsity in zip(wrappers, (0.5, 0.75), strict=True):
        wrapper.update_masks(sparsity)
    alone = [keras.ops.convert_to_numpy(v) for v in model.weights]

    for a, b in zip(together, alone, strict=True):
        np.testing.assert_array_equal(a, b)
    masks = [keras.ops.convert_to_numpy(w.masks[0]) for w in wrappers]
    assert [1.0 - m.mean() for m in masks] == pytest.approx([0.5, 0.75], abs=0.02)


def test_non_finite_weight_of_one_layer_changes_no_mask_of_any():
    model = kp.prune_low_magnitude(
        dense_model(), kp.ConstantSparsity(0.5, 0, frequency=1)
    )
    first, second = kp.pruning_wrappers(model)
    kernel = keras.ops.convert_to_numpy(second.layer.kernel).copy()
    kernel[0, 0] = np.nan
    second.layer.kernel.assign(kernel)
    with pytest.raises(ValueError, match="NaN or infinite"):
        _two_layer_update(model, 1)
    for wrapper in (first, second):
        assert keras.ops.convert_to_numpy(wrapper.masks[0]).all()
