"""Optimizer first moments of pruned weights: 0 where masks prune, and never
subnormal, after every mask update in `fit`; second moments left alone; which
optimizers then hold pruned weights at 0."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_pruning as kp
from keras_pruning._optimizer_slots import (
    clear_pruned_moments,
    holds_pruned_weights_at_zero,
)
from tests.conftest import dense_model

pytestmark = pytest.mark.backends

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _data(n=64):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 8)).astype("float32"), rng.integers(0, 3, n)


def _slot(optimizer, weight, suffix):
    name = f"{weight.path.replace('/', '_')}_{suffix}"
    (slot,) = [v for v in optimizer.variables if v.name == name]
    return ops.convert_to_numpy(slot)


def _pruned_over_four_updates(optimizer, hold=False):
    """A model trained 16 steps with `optimizer` while sparsity rises to 75%
    over four mask updates (steps 2 to 8): weights are pruned after their
    moments have built up. `hold`: `UpdatePruningStep`'s
    `hold_pruned_weights_at_zero`."""
    x, y = _data()
    schedule = kp.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=8, frequency=2)
    model = kp.prune_low_magnitude(dense_model(), schedule)
    model.compile(optimizer, LOSS)
    callback = kp.UpdatePruningStep(hold_pruned_weights_at_zero=hold)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback])
    return model


@pytest.mark.parametrize(
    "optimizer, cleared, kept",
    [
        (lambda: keras.optimizers.Adam(0.01), ("momentum",), ("velocity",)),
        (lambda: keras.optimizers.SGD(0.01, momentum=0.9), ("momentum",), ()),
        (
            lambda: keras.optimizers.RMSprop(0.01, momentum=0.9),
            ("momentum",),
            ("velocity",),
        ),
        (
            lambda: keras.optimizers.RMSprop(0.01, momentum=0.9, centered=True),
            ("momentum", "average_gradient"),
            ("velocity",),
        ),
        (lambda: keras.optimizers.Adamax(0.01), ("momentum",), ("norm",)),
        (
            lambda: keras.optimizers.Adam(0.01, amsgrad=True),
            ("momentum",),
            ("velocity", "velocity_hat"),
        ),
        (
            lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1),
            ("momentum",),
            ("velocity",),
        ),
        (lambda: keras.optimizers.Nadam(0.01), ("momentum",), ("velocity",)),
        (lambda: keras.optimizers.Lion(0.01), ("momentum",), ()),
        (
            lambda: keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True),
            ("momentum",),
            (),
        ),
        (
            lambda: keras.optimizers.RMSprop(0.01, centered=True),
            ("average_gradient",),
            ("velocity",),
        ),
        (lambda: keras.optimizers.Adagrad(0.1), (), ("accumulator",)),
        (
            lambda: keras.optimizers.Adadelta(1.0),
            (),
            ("accumulated_grad", "accumulated_delta_var"),
        ),
    ],
)
def test_fit_leaves_no_first_moment_and_no_weight_at_pruned_positions(
    optimizer, cleared, kept
):
    model = _pruned_over_four_updates(optimizer())
    # The steps after the last update (step 8) keep zero moments at 0.
    for wrapper in kp.pruning_wrappers(model):
        for weight, mask in zip(wrapper.prunable_weights, wrapper.masks, strict=True):
            pruned = ~ops.convert_to_numpy(mask)
            assert pruned.mean() >= 0.7
            # Zero first moments move a pruned weight no more: it stays at 0.
            assert np.all(ops.convert_to_numpy(weight)[pruned] == 0)
            for suffix in cleared:
                moments = _slot(model.optimizer, weight, suffix)
                assert np.all(moments[pruned] == 0)
                assert np.any(moments[~pruned] != 0)
            # Second moments only decay where the gradient is 0: they are not
            # zeroed, which would slow PyTorch's square root down.
            for suffix in kept:
                moments = _slot(model.optimizer, weight, suffix)
                assert np.all(np.isfinite(moments))
                assert np.any(moments[pruned] > 0)


def _pruned_by_one_step(optimizer):
    """A model trained one step with `optimizer`, masks at 50% from it."""
    model = kp.prune_low_magnitude(
        dense_model(), kp.ConstantSparsity(0.5, 0, frequency=1)
    )
    model.compile(optimizer, LOSS)
    x, y = _data()
    model.fit(
        x, y, batch_size=64, epochs=1, verbose=0, callbacks=[kp.UpdatePruningStep()]
    )
    return model


def test_subnormal_first_moments_are_flushed_and_second_moments_kept():
    model = _pruned_by_one_step(keras.optimizers.Adam(0.01))
    wrapper = kp.pruning_wrappers(model)[0]
    (weight,), (mask,) = wrapper.prunable_weights, wrapper.masks
    stem = weight.path.replace("/", "_")
    slots = {v.name: v for v in model.optimizer.variables}
    kept = ops.convert_to_numpy(mask)
    values = np.where(kept, 0.25, 7.0).astype("float32")
    first = tuple(np.argwhere(kept)[0])
    values[first] = 1e-40  # subnormal in float32
    for suffix in ("momentum", "velocity"):
        slots[f"{stem}_{suffix}"].assign(values)
    clear_pruned_moments(model.optimizer, [wrapper])
    expected = np.where(kept, 0.25, 0.0)
    expected[first] = 0.0
    np.testing.assert_array_equal(
        ops.convert_to_numpy(slots[f"{stem}_momentum"]), expected
    )
    np.testing.assert_array_equal(
        ops.convert_to_numpy(slots[f"{stem}_velocity"]), values
    )


def test_optimizers_with_other_state_are_left_alone():
    # Adagrad's accumulators start at 0.1: 0 would change its updates.
    model = _pruned_by_one_step(keras.optimizers.Adagrad(0.01))
    before = [ops.convert_to_numpy(v) for v in model.optimizer.variables]
    clear_pruned_moments(model.optimizer, kp.pruning_wrappers(model))
    after = [ops.convert_to_numpy(v) for v in model.optimizer.variables]
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old, new)


def test_channel_and_pending_updates_clear_first_moments():
    # Channel masks update for the whole model; a Sequential model without an
    # Input gets the updates of its first step only once that step built it.
    rng = np.random.default_rng(0)
    x = rng.random((16, 6, 6, 3)).astype("float32")
    y = rng.integers(0, 3, 16)
    for build_input, kwargs in ((True, {"granularity": "channel"}), (False, {})):
        layers = [
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Conv2D(4, 3),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
        model = keras.Sequential(
            ([keras.Input((6, 6, 3))] if build_input else []) + layers
        )
        schedule = kp.ConstantSparsity(0.5, 0, frequency=1)
        pruned = kp.prune_low_magnitude(model, schedule, **kwargs)
        pruned.compile(keras.optimizers.Adam(0.01), LOSS)
        pruned.fit(
            x, y, batch_size=8, epochs=1, verbose=0, callbacks=[kp.UpdatePruningStep()]
        )
        checked = 0
        for wrapper in kp.pruning_wrappers(pruned):
            for weight, mask in zip(
                wrapper.prunable_weights, wrapper.masks, strict=True
            ):
                pruned_positions = ~ops.convert_to_numpy(mask)
                if not pruned_positions.any():
                    continue
                moments = _slot(pruned.optimizer, weight, "momentum")
                assert np.all(moments[pruned_positions] == 0)
                assert np.any(moments[~pruned_positions] != 0)
                checked += 1
        assert checked >= 2


class _AdamVariant(keras.optimizers.Adam):
    pass


@pytest.mark.parametrize(
    "optimizer, holds",
    [
        (lambda: keras.optimizers.Adam(), True),
        (lambda: keras.optimizers.AdamW(weight_decay=0.1), True),
        (lambda: keras.optimizers.SGD(momentum=0.9, nesterov=True), True),
        (lambda: keras.optimizers.Adadelta(), True),
        (
            lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.RMSprop()),
            True,
        ),
        (lambda: None, False),
        (lambda: keras.optimizers.Ftrl(), False),
        (lambda: keras.optimizers.Muon(), False),
        (lambda: keras.optimizers.Adafactor(), False),
        (lambda: _AdamVariant(), False),
        (lambda: keras.optimizers.Adam(use_ema=True), False),
        (lambda: keras.optimizers.Adam(gradient_accumulation_steps=2), False),
        (
            lambda: keras.optimizers.LossScaleOptimizer(
                keras.optimizers.SGD(use_ema=True)
            ),
            False,
        ),
    ],
)
def test_which_optimizers_hold_pruned_weights_at_zero(optimizer, holds):
    assert holds_pruned_weights_at_zero(optimizer(), []) is holds


@pytest.mark.parametrize(
    ("regularizer", "holds"),
    [
        (None, True),
        (keras.regularizers.L2(0.01), True),
        (keras.regularizers.L1L2(l1=0.0, l2=0.01), True),
        (keras.regularizers.L1(0.01), False),  # JAX: d|w|/dw = 1 at 0
        (keras.regularizers.L1L2(l1=0.01, l2=0.01), False),
    ],
)
def test_only_regularizers_flat_at_zero_keep_weights_held(regularizer, holds):
    layer = keras.layers.Dense(4, kernel_regularizer=regularizer)
    layer.build((None, 3))
    optimizer = keras.optimizers.SGD()
    assert holds_pruned_weights_at_zero(optimizer, [layer.kernel]) is holds


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.Ftrl(0.5),
        lambda: keras.optimizers.Adam(0.05, use_ema=True, ema_overwrite_frequency=2),
        lambda: keras.optimizers.Adam(0.05, gradient_accumulation_steps=3),
    ],
)
def test_optimizers_that_move_pruned_weights_train_with_masked_weights(optimizer):
    # These optimizers write pruned weights: asked to hold them at 0, fit
    # masks the weights in every step instead, and raises no error.
    model = _pruned_over_four_updates(optimizer(), hold=True)
    moved = 0
    for wrapper in kp.pruning_wrappers(model):
        (weight,), (mask,) = wrapper.prunable_weights, wrapper.masks
        pruned = ~ops.convert_to_numpy(mask)
        assert pruned.mean() >= 0.7
        moved += int(np.count_nonzero(ops.convert_to_numpy(weight)[pruned]))
        # Training calls outside fit() mask them again.
        probe = np.ones((2,) + tuple(wrapper.input.shape[1:]), "float32")
        np.testing.assert_allclose(
            ops.convert_to_numpy(wrapper(probe, training=True)),
            ops.convert_to_numpy(wrapper(probe, training=False)),
        )
    assert moved > 0
